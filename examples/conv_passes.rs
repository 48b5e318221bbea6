//! Per-pass times of the DCGAN and SRResNet layers (batch 64 / 16): forward, backward-data
//! and backward-weight, for the default implicit GEMM and its `rewrite` variant, each the
//! fastest of 11 runs, interleaved so that a noisy machine affects both alike.
//!
//!     cargo run --release --example conv_passes [LAYER]
//!
//! (`gantry bench conv` is the benchmark of record; this splits its fwd_bwd figure by pass.)
use gantry::kernels::conv::cpu::rewrite;
use gantry::kernels::conv::{cpu, Conv2dGeom};
use std::time::Instant;
fn geom(
    n: usize,
    c_in: usize,
    hw: usize,
    c_out: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Conv2dGeom {
    Conv2dGeom {
        n,
        c_in,
        h: hw,
        w: hw,
        c_out,
        kh: k,
        kw: k,
        stride: [s, s],
        pad: [p, p],
        dilation: [1, 1],
        h_out: 0,
        w_out: 0,
    }
    .with_conv_output()
    .unwrap()
}
fn med(mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[0]
}
fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    let layers = [
        ("G2", geom(64, 256, 8, 512, 4, 2, 1)),
        ("G3", geom(64, 128, 16, 256, 4, 2, 1)),
        ("G4", geom(64, 64, 32, 128, 4, 2, 1)),
        ("G5", geom(64, 3, 64, 64, 4, 2, 1)),
        ("D1", geom(64, 3, 64, 64, 4, 2, 1)),
        ("D2", geom(64, 64, 32, 128, 4, 2, 1)),
        ("D3", geom(64, 128, 16, 256, 4, 2, 1)),
        ("D4", geom(64, 256, 8, 512, 4, 2, 1)),
        ("SR", geom(16, 64, 96, 64, 3, 1, 1)),
    ];
    for (name, g) in layers {
        if !name.contains(&filter) {
            continue;
        }
        let x: Vec<f32> = (0..g.input_len())
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let w: Vec<f32> = (0..g.weight_len())
            .map(|i| ((i * 104729) % 1000) as f32 * 1e-3)
            .collect();
        let dy: Vec<f32> = (0..g.output_len_total())
            .map(|i| ((i * 31) % 1000) as f32 * 1e-3)
            .collect();
        let mut y = vec![0f32; g.output_len_total()];
        let mut dx = vec![0f32; g.input_len()];
        let mut dw = vec![0f32; g.weight_len()];
        let gf = g.flops() / 1e6;
        let f = med(|| cpu::conv2d_forward(&x, &w, None, &mut y, &g));
        let fr = med(|| rewrite::conv2d_forward(&x, &w, None, &mut y, &g));
        let bd = med(|| cpu::conv2d_backward_data(&dy, &w, &mut dx, &g));
        let bdr = med(|| rewrite::conv2d_backward_data(&dy, &w, &mut dx, &g));
        let bw = med(|| cpu::conv2d_backward_weight(&x, &dy, &mut dw, &g));
        let bwr = med(|| rewrite::conv2d_backward_weight(&x, &dy, &mut dw, &g));
        println!("{name}: fwd {f:.2} ({:.0} GF/s) rewrite {fr:.2} | bwd_data {bd:.2} ({:.0}) rewrite {bdr:.2} | bwd_weight {bw:.2} ({:.0}) rewrite {bwr:.2}", gf / f, gf / bd, gf / bw);
    }
}
