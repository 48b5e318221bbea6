//! Throughput of the fast CPU kernels beside the rungs below them, at DCGAN sizes.
//!
//! `cargo bench --bench fast_kernels [FILTER]`. Throughput is in elements/s where one
//! "element" is one flop for GEMM and conv (so `Gelem/s` reads as GFLOP/s) and one tensor
//! element for the memory-bound kernels (batch norm, Adam). `gantry bench gemm|conv` prints
//! the same comparisons as a table with the fraction of the measured FMA peak.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gantry::kernels::batch_norm::{cpu as bn, BatchNormGeom};
use gantry::kernels::conv::ConvVariant;
use gantry::kernels::elementwise::{cpu as ew, UnaryOp};
use gantry::kernels::gemm::{cpu as gemm_cpu, GemmGeom};
use gantry::kernels::optim::{cpu as optim_cpu, reference as optim_ref, AdamStep};
use std::hint::black_box;

mod common;
use common::{dcgan_d2, filled};

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group.sample_size(10);
    for n in [256usize, 1024] {
        let g = GemmGeom::new(1, n, n, n);
        let (a, b) = (filled(n * n), filled(n * n));
        let mut out = vec![0.0f32; n * n];
        group.throughput(Throughput::Elements(g.flops() as u64));
        group.bench_function(BenchmarkId::new("simd", format!("{n}^3")), |bench| {
            bench.iter(|| gemm_cpu::matmul(black_box(&a), black_box(&b), &mut out, &g))
        });
    }
    group.finish();
}

/// The DCGAN discriminator's second layer (64 → 128 channels, 32x32 → 16x16, 4x4 kernel,
/// stride 2, padding 1) at batch 16: each pass, for the im2col rung and the implicit GEMM.
fn conv(c: &mut Criterion) {
    let g = dcgan_d2(16);
    let (x, w, dy) = (
        filled(g.input_len()),
        filled(g.weight_len()),
        filled(g.output_len_total()),
    );
    let (mut y, mut dx, mut dw) = (
        vec![0.0f32; g.output_len_total()],
        vec![0.0f32; g.input_len()],
        vec![0.0f32; g.weight_len()],
    );
    let mut group = c.benchmark_group("conv_dcgan_d2_batch16");
    group.sample_size(10);
    group.throughput(Throughput::Elements(g.flops() as u64));
    for v in [ConvVariant::Im2colGemm, ConvVariant::ImplicitGemm] {
        let name = format!("{v:?}");
        group.bench_function(BenchmarkId::new("forward", &name), |b| {
            b.iter(|| v.forward(black_box(&x), &w, None, &mut y, &g))
        });
        group.bench_function(BenchmarkId::new("backward_data", &name), |b| {
            b.iter(|| v.backward_data(black_box(&dy), &w, &mut dx, &g))
        });
        group.bench_function(BenchmarkId::new("backward_weight", &name), |b| {
            b.iter(|| v.backward_weight(black_box(&x), &dy, &mut dw, &g))
        });
    }
    group.finish();
}

/// Batch norm (training) then LeakyReLU(0.2) on D2's output at batch 64, forward and backward:
/// fused, and as the two kernels in turn.
fn batch_norm_act(c: &mut Criterion) {
    let g = BatchNormGeom {
        n: 64,
        c: 128,
        inner: 256,
    };
    let act = UnaryOp::LeakyRelu(0.2);
    let (x, dy) = (filled(g.len()), filled(g.len()));
    let (w, b) = (vec![1.1f32; g.c], vec![0.1f32; g.c]);
    let (mut mean, mut var) = (vec![0.0f32; g.c], vec![0.0f32; g.c]);
    bn::batch_norm_stats(&x, &g, &mut mean, &mut var);
    let (mut z, mut y, mut dz, mut dx) = (
        vec![0.0f32; g.len()],
        vec![0.0f32; g.len()],
        vec![0.0f32; g.len()],
        vec![0.0f32; g.len()],
    );
    let (mut dw, mut db) = (vec![0.0f32; g.c], vec![0.0f32; g.c]);
    let affine = (Some(&w[..]), Some(&b[..]));
    let mut group = c.benchmark_group("batch_norm_leaky_relu_d2_batch64");
    group.sample_size(20);
    group.throughput(Throughput::Elements(g.len() as u64));
    group.bench_function("forward/fused", |bench| {
        bench.iter(|| {
            bn::batch_norm_forward(
                &x,
                &mean,
                &var,
                affine.0,
                affine.1,
                1e-5,
                Some(act),
                &g,
                &mut y,
            )
        })
    });
    group.bench_function("forward/separate", |bench| {
        bench.iter(|| {
            bn::batch_norm_forward(&x, &mean, &var, affine.0, affine.1, 1e-5, None, &g, &mut z);
            ew::unary(act, &z, &mut y);
        })
    });
    group.bench_function("backward/fused", |bench| {
        bench.iter(|| {
            bn::batch_norm_backward(
                &x,
                &dy,
                &mean,
                &var,
                affine,
                1e-5,
                true,
                Some(act),
                &g,
                &mut dx,
                &mut dw,
                &mut db,
            )
        })
    });
    group.bench_function("backward/separate", |bench| {
        bench.iter(|| {
            ew::unary_backward(act, &z, &y, &dy, &mut dz);
            bn::batch_norm_backward(
                &x, &dz, &mean, &var, affine, 1e-5, true, None, &g, &mut dx, &mut dw, &mut db,
            )
        })
    });
    group.finish();
}

/// One Adam step over a DCGAN generator's parameter sizes: fused over all of them, and one
/// reference call per tensor.
fn adam(c: &mut Criterion) {
    let sizes = [
        819_200, 512, 512, 2_097_152, 256, 256, 524_288, 128, 128, 131_072, 64, 64, 3_072,
    ];
    let total: usize = sizes.iter().sum();
    let h = AdamStep {
        lr: 2e-4,
        beta1: 0.5,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 10,
    };
    let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| filled(n)).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| filled(n)).collect();
    let (mut m, mut v) = (vec![0.0f32; total], vec![0.01f32; total]);
    let mut group = c.benchmark_group("adam_dcgan_generator");
    group.sample_size(20);
    group.throughput(Throughput::Elements(total as u64));
    group.bench_function("fused", |bench| {
        bench.iter(|| {
            let (mut m_rest, mut v_rest) = (&mut m[..], &mut v[..]);
            let mut segments = Vec::with_capacity(sizes.len());
            for (p, g) in params.iter_mut().zip(&grads) {
                let (m_here, m_next) = std::mem::take(&mut m_rest).split_at_mut(p.len());
                let (v_here, v_next) = std::mem::take(&mut v_rest).split_at_mut(p.len());
                (m_rest, v_rest) = (m_next, v_next);
                segments.push(optim_cpu::AdamSegment {
                    param: p,
                    grad: g,
                    m: m_here,
                    v: v_here,
                    step: h,
                });
            }
            optim_cpu::adam_step_fused(segments)
        })
    });
    group.bench_function("per_tensor_reference", |bench| {
        bench.iter(|| {
            let mut at = 0;
            for (p, g) in params.iter_mut().zip(&grads) {
                let r = at..at + p.len();
                optim_ref::adam_step(p, g, &mut m[r.clone()], &mut v[r], &h);
                at += p.len();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, gemm, conv, batch_norm_act, adam);
criterion_main!(benches);
