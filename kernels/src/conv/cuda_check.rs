//! Every rung of the CUDA convolution ladder against [`reference`](super::reference), on a GPU:
//! forward, backward-data and backward-weight over awkward geometries (odd sizes, strides 1–3,
//! padding, dilation, batch 1, channel counts that are not multiples of 8, K spanning many
//! tiles), forward and backward-data again with a bias and activation fused into their
//! epilogues, plus the tensor-core matmul with every transpose. `gantry check --device cuda`
//! prints these rows and `tests/cuda_parity.rs` asserts them.
//!
//! The tensor-core rungs multiply inputs rounded to bf16/f16/tf32, so their reference is the
//! reference convolution of the same rounded inputs ([`TcType::round`]): what remains is the
//! order and precision of the f32 sums. The error of a case is the largest |gpu − reference|
//! divided by 1 + max |reference|. f32 rungs must stay below 1e-4 (as every other op in
//! `gantry check`); tensor-core rungs below 5e-4, since the tensor cores' adders do not round
//! to nearest like an FMA (the error still grows with K, not with a wrong index, which gives
//! errors of order one).

use super::cuda::{tc, CudaConv, TcType};
use super::{reference, Conv2dGeom};
use crate::cuda_rt::{Gpu, Result};
use crate::elementwise::{cuda as ew, BinaryOp, BroadcastGeom, UnaryOp};
use crate::gemm::GemmGeom;

/// One checked pass of one rung on one geometry.
#[derive(Clone, Debug)]
pub struct LadderReport {
    pub rung: &'static str,
    pub pass: &'static str,
    pub geom: String,
    pub max_error: f64,
    pub tolerance: f64,
}

impl LadderReport {
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

/// A small deterministic generator (the kernels crate has no `rand`).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn values(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| (self.next() % 20_001) as f32 / 10_000.0 - 1.0)
            .collect()
    }
}

/// `[n, c_in, h, w, c_out, kh, kw, stride, pad, dilation]` → a geometry.
fn geom(v: [usize; 10]) -> Option<Conv2dGeom> {
    let [n, c_in, h, w, c_out, kh, kw, s, p, d] = v;
    Conv2dGeom {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: [s, s],
        pad: [p, p],
        dilation: [d, d],
        h_out: 0,
        w_out: 0,
    }
    .with_conv_output()
}

/// The geometries every rung is checked on: fixed awkward ones, a DCGAN-like strided layer
/// with K over many tiles, and random ones.
pub fn geometries(seed: u64) -> Vec<Conv2dGeom> {
    let mut out: Vec<Conv2dGeom> = [
        [2, 3, 9, 7, 5, 3, 3, 1, 1, 1], // 3 channels (padded to 8), odd sizes
        [1, 12, 11, 13, 20, 4, 4, 2, 1, 1], // DCGAN-style 4x4 stride 2, batch 1
        [2, 5, 14, 10, 3, 3, 2, 3, 0, 1], // stride 3, no padding, rectangular kernel
        [2, 4, 11, 12, 6, 3, 3, 1, 2, 2], // dilation 2
        [3, 16, 4, 4, 9, 4, 4, 1, 0, 1], // the whole input in one window
        [2, 64, 16, 16, 130, 4, 4, 2, 1, 1], // K = 1024, N past one 128 tile
        [1, 9, 1, 1, 17, 1, 1, 1, 0, 1], // 1x1 input and kernel (a matmul)
    ]
    .into_iter()
    .filter_map(geom)
    .collect();
    let mut rng = Lcg(seed);
    while out.len() < 12 {
        let k = 1 + rng.below(4);
        let v = [
            1 + rng.below(3),
            1 + rng.below(20),
            k + rng.below(12),
            k + rng.below(12),
            1 + rng.below(40),
            k,
            1 + rng.below(4),
            1 + rng.below(3),
            rng.below(k),
            1 + rng.below(2),
        ];
        out.extend(geom(v));
    }
    out
}

fn describe(g: &Conv2dGeom) -> String {
    format!(
        "x [{}, {}, {}, {}], w [{}, {}, {}, {}], s {}, p {}, d {}",
        g.n, g.c_in, g.h, g.w, g.c_out, g.c_in, g.kh, g.kw, g.stride[0], g.pad[0], g.dilation[0]
    )
}

fn error(gpu_out: &[f32], reference: &[f64]) -> f64 {
    let scale = 1.0 + reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if gpu_out.len() != reference.len() {
        return f64::INFINITY;
    }
    let worst = gpu_out
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(
            0.0f64,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        );
    worst / scale
}

fn rounded(t: Option<TcType>, v: &[f32]) -> Vec<f64> {
    v.iter()
        .map(|&x| t.map_or(x, |t| t.round(x)) as f64)
        .collect()
}

/// Runs every rung `gpu` supports on [`geometries`] and the tensor-core matmul.
pub fn check_ladder(gpu: &Gpu, seed: u64) -> Result<Vec<LadderReport>> {
    let mut rng = Lcg(seed ^ 0x9e37_79b9);
    let mut reports = Vec::new();
    for g in geometries(seed) {
        let x = rng.values(g.input_len());
        let w = rng.values(g.weight_len());
        let bias = rng.values(g.c_out);
        let dy = rng.values(g.output_len_total());
        // A transposed convolution's bias, over backward-data's c_in channels.
        let bias_in = rng.values(g.c_in);
        let (xd, wd, bd, dyd, bid) = (
            gpu.upload_f32(&x)?,
            gpu.upload_f32(&w)?,
            gpu.upload_f32(&bias)?,
            gpu.upload_f32(&dy)?,
            gpu.upload_f32(&bias_in)?,
        );
        for rung in CudaConv::ALL {
            if !rung.supported(gpu) {
                continue;
            }
            let t = rung.tensor_core();
            let (xr, wr, dyr) = (rounded(t, &x), rounded(t, &w), rounded(t, &dy));
            let br: Vec<f64> = bias.iter().map(|&b| b as f64).collect();
            let mut y = vec![0.0f64; g.output_len_total()];
            reference::conv2d_forward(&xr, &wr, Some(&br), &mut y, &g);
            let mut dx = vec![0.0f64; g.input_len()];
            reference::conv2d_backward_data(&dyr, &wr, &mut dx, &g);
            let mut dw = vec![0.0f64; g.weight_len()];
            reference::conv2d_backward_weight(&xr, &dyr, &mut dw, &g);
            // The fused epilogues: forward then leaky relu; a transposed convolution's
            // forward (backward-data, its bias, tanh).
            let (leaky, tanh) = (UnaryOp::LeakyRelu(0.2), UnaryOp::Tanh);
            let y_act: Vec<f64> = y.iter().map(|&v| leaky.apply(v)).collect();
            let plane = g.h * g.w;
            let dx_act: Vec<f64> = (dx.iter().enumerate())
                .map(|(i, &v)| tanh.apply(v + bias_in[i / plane % g.c_in] as f64))
                .collect();
            let got = [
                rung.forward(gpu, &xd, &wd, Some(&bd), &g)?,
                rung.backward_data(gpu, &dyd, &wd, &g)?,
                rung.backward_weight(gpu, &xd, &dyd, &g)?,
                rung.forward_fused(gpu, &xd, &wd, Some(&bd), Some(leaky), &g)?,
                rung.backward_data_fused(gpu, &dyd, &wd, Some(&bid), Some(tanh), &g)?,
            ];
            // The fused passes against the same rung's plain pass followed by the separate
            // elementwise kernels (the ops the fusion replaces): every value's bits equal
            // (the row's error is the count of values that differ).
            let separate_fwd = {
                let y = rung.forward(gpu, &xd, &wd, Some(&bd), &g)?;
                let out = ew::unary(gpu, leaky, &y, g.output_len_total())?;
                gpu.recycle(y);
                out
            };
            let separate_bd = {
                let dx = rung.backward_data(gpu, &dyd, &wd, &g)?;
                let dims = [g.n, g.c_in, g.h, g.w];
                let geom = BroadcastGeom::new(&dims, &[1, g.c_in, 1, 1]).expect("broadcasts");
                let biased = ew::binary(gpu, BinaryOp::Add, &dx, &bid, &geom)?;
                let out = ew::unary(gpu, tanh, &biased, g.input_len())?;
                gpu.recycle(dx);
                gpu.recycle(biased);
                out
            };
            let bit_rows = [
                (
                    "fused forward = separate ops (values differing)",
                    separate_fwd,
                    3,
                ),
                (
                    "fused backward_data = separate ops (values differing)",
                    separate_bd,
                    4,
                ),
            ];
            for (pass, separate, i) in bit_rows {
                let n = if i == 3 {
                    g.output_len_total()
                } else {
                    g.input_len()
                };
                let (a, b) = (gpu.download(&got[i], n)?, gpu.download(&separate, n)?);
                let differ = a.iter().zip(&b).filter(|(a, b)| a.to_bits() != b.to_bits());
                reports.push(LadderReport {
                    rung: rung.name(),
                    pass,
                    geom: describe(&g),
                    max_error: differ.count() as f64,
                    tolerance: 0.0,
                });
                gpu.recycle(separate);
            }
            let tolerance = if t.is_some() { 5e-4 } else { 1e-4 };
            let passes = [
                "forward",
                "backward_data",
                "backward_weight",
                "forward + bias + leaky_relu",
                "backward_data + bias + tanh",
            ];
            for ((pass, want), out) in passes.into_iter().zip([y, dx, dw, y_act, dx_act]).zip(got) {
                let host = gpu.download(&out, want.len())?;
                reports.push(LadderReport {
                    rung: rung.name(),
                    pass,
                    geom: describe(&g),
                    max_error: error(&host, &want),
                    tolerance,
                });
                gpu.recycle(out);
            }
        }
        for b in [xd, wd, bd, dyd, bid] {
            gpu.recycle(b);
        }
    }
    if gpu.arch() >= (8, 0) {
        for (batch, m, k, n, ta, tb) in [
            (1, 37, 70, 19, false, false),
            (2, 5, 9, 130, true, false),
            (3, 129, 33, 8, false, true),
            (1, 64, 100, 64, true, true),
        ] {
            let geom = GemmGeom {
                batch,
                m,
                k,
                n,
                trans_a: ta,
                trans_b: tb,
            };
            let a = rng.values(batch * m * k);
            let b = rng.values(batch * k * n);
            let (ad, bd) = (gpu.upload_f32(&a)?, gpu.upload_f32(&b)?);
            for t in [TcType::Tf32, TcType::Bf16, TcType::F16] {
                let (ar, br) = (rounded(Some(t), &a), rounded(Some(t), &b));
                let mut want = vec![0.0f64; batch * m * n];
                crate::gemm::reference::matmul(&ar, &br, &mut want, &geom);
                let c = tc::matmul(gpu, t, &ad, &bd, &geom)?;
                reports.push(LadderReport {
                    rung: CudaConv::TensorCore(t).name(),
                    pass: "matmul",
                    geom: format!("{batch} × ({m} × {k}) · ({k} × {n}), trans {ta}/{tb}"),
                    max_error: error(&gpu.download(&c, want.len())?, &want),
                    tolerance: 5e-4,
                });
                gpu.recycle(c);
            }
            gpu.recycle(ad);
            gpu.recycle(bd);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_geometries_are_valid_and_awkward() {
        let gs = geometries(7);
        assert!(gs.len() >= 12);
        for g in &gs {
            assert!(g.h_out > 0 && g.w_out > 0, "{g:?}");
        }
        assert!(gs.iter().any(|g| g.c_in % 8 != 0 && g.stride[0] > 1));
        assert!(gs.iter().any(|g| g.n == 1));
        assert!(gs.iter().any(|g| g.dilation[0] > 1));
        // K of backward-data spans many 32-value tiles somewhere.
        assert!(gs.iter().any(|g| g.c_out * g.kh * g.kw > 1000));
    }

    #[test]
    fn the_error_measure_sees_a_wrong_value() {
        assert_eq!(error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((error(&[1.0, 2.5], &[1.0, 2.0]) - 0.5 / 3.0).abs() < 1e-12);
        assert!(error(&[f32::NAN], &[1.0]).is_infinite());
    }

    #[test]
    fn rounding_matches_the_types() {
        let v = 1.0 + 2f32.powi(-9) + 2f32.powi(-12);
        assert_eq!(TcType::Bf16.round(v), 1.0);
        assert_eq!(TcType::F16.round(v), 1.0 + 2f32.powi(-9));
        assert_eq!(TcType::Tf32.round(v), 1.0 + 2f32.powi(-9));
        // tf32 ties away from zero.
        assert_eq!(
            TcType::Tf32.round(1.0 + 2f32.powi(-11)),
            1.0 + 2f32.powi(-10)
        );
        assert_eq!(
            TcType::Tf32.round(-(1.0 + 2f32.powi(-11))),
            -(1.0 + 2f32.powi(-10))
        );
        assert!(TcType::F16.round(70_000.0).is_infinite());
        assert_eq!(TcType::Bf16.round(70_000.0), 70_144.0);
        assert!(TcType::Tf32.round(f32::NAN).is_nan());
    }
}
