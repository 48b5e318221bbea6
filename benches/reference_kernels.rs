//! Throughput of the reference kernels: the floor every fast kernel is measured against.
//!
//! `cargo bench --bench reference_kernels`. Throughput is reported in elements/s where one
//! "element" is one flop (a multiply-add counts as two), so `Gelem/s` reads as GFLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gantry::kernels::gemm::GemmGeom;
use gantry::kernels::reference;
use std::hint::black_box;

mod common;
use common::{dcgan_d2, filled};

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference_gemm");
    group.sample_size(10);
    for n in [64usize, 256] {
        let g = GemmGeom::new(1, n, n, n);
        let (a, b) = (filled(n * n), filled(n * n));
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function(BenchmarkId::from_parameter(format!("{n}^3")), |bench| {
            bench.iter(|| reference::matmul(black_box(&a), black_box(&b), &mut out, &g))
        });
    }
    group.finish();
}

fn conv(c: &mut Criterion) {
    // The DCGAN discriminator's second layer (64 → 128 channels, 32x32 → 16x16, 4x4 kernel,
    // stride 2, padding 1) at batch 1.
    let g = dcgan_d2(1);
    let (x, w, dy) = (
        filled(g.input_len()),
        filled(g.weight_len()),
        filled(g.output_len_total()),
    );
    let mut group = c.benchmark_group("reference_conv_dcgan_d2_batch1");
    group.sample_size(10);
    group.throughput(Throughput::Elements(g.flops() as u64));
    let mut y = vec![0.0f32; g.output_len_total()];
    group.bench_function("forward", |b| {
        b.iter(|| reference::conv2d_forward(black_box(&x), &w, None, &mut y, &g))
    });
    let mut dx = vec![0.0f32; g.input_len()];
    group.bench_function("backward_data", |b| {
        b.iter(|| reference::conv2d_backward_data(black_box(&dy), &w, &mut dx, &g))
    });
    let mut dw = vec![0.0f32; g.weight_len()];
    group.bench_function("backward_weight", |b| {
        b.iter(|| reference::conv2d_backward_weight(black_box(&x), &dy, &mut dw, &g))
    });
    group.finish();
}

criterion_group!(benches, gemm, conv);
criterion_main!(benches);
