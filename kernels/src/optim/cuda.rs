//! CUDA optimizer steps (`optim.cu`): Adam over every parameter in one launch, and SGD.

use super::{AdamStep, SgdStep};
use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, n64, ptr_or_null, Gpu, Result, Source, BLOCK};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, LaunchConfig};

pub const SOURCE: Source = Source {
    name: "optim",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("optim.cu")
    ),
};

/// One parameter of [`adam_step_fused`], as `optim.cu`'s `struct AdamSegment`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AdamSegment {
    param: u64,
    grad: u64,
    moment_offset: u64,
    len: u64,
    neg_step: f32,
    bc2_sqrt: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps: f32,
    weight_decay: f32,
    pad: f32,
}

// SAFETY: `repr(C)`, integers and floats only, laid out as `struct AdamSegment` in `optim.cu`.
unsafe impl DeviceRepr for AdamSegment {}

/// One Adam step for every parameter at once: parameter `i` (`params[i]`, `len` values) with
/// gradient `grads[i]` keeps its moments at `moment_offsets[i]..` of the flat `m` and `v`.
/// The per-parameter constants go to the device as one small table.
pub fn adam_step_fused(
    gpu: &Gpu,
    params: &mut [&mut CudaSlice<f32>],
    grads: &[&CudaSlice<f32>],
    (m, v): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
    segments: &[(usize, usize, AdamStep)],
) -> Result<()> {
    let stream = gpu.stream();
    let mut table = Vec::with_capacity(params.len());
    let mut longest = 0;
    for ((p, g), &(offset, len, h)) in params.iter_mut().zip(grads).zip(segments) {
        longest = longest.max(len);
        table.push(AdamSegment {
            param: p.device_ptr(stream).0,
            grad: g.device_ptr(stream).0,
            moment_offset: offset as u64,
            len: len as u64,
            neg_step: -h.step_size() as f32,
            bc2_sqrt: h.bias_correction2_sqrt() as f32,
            one_minus_b1: (1.0 - h.beta1) as f32,
            b2: h.beta2 as f32,
            one_minus_b2: (1.0 - h.beta2) as f32,
            eps: h.eps as f32,
            weight_decay: h.weight_decay as f32,
            pad: 0.0,
        });
    }
    if table.is_empty() || longest == 0 {
        return Ok(());
    }
    let table = gpu.upload(&table)?;
    let cfg = LaunchConfig {
        grid_dim: (grid_1d(longest).grid_dim.0.min(1024), table.len() as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    cuda_launch!(gpu, SOURCE, "adam_fused", cfg, [&table, m, v])
}

/// One SGD step in place.
pub fn sgd_step(
    gpu: &Gpu,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    buf: Option<&mut CudaSlice<f32>>,
    h: &SgdStep,
    n: usize,
) -> Result<()> {
    let b = ptr_or_null(gpu, buf.as_deref());
    let (neg_lr, wd, mu, keep) = (
        -h.lr as f32,
        h.weight_decay as f32,
        h.momentum as f32,
        (1.0 - h.dampening) as f32,
    );
    cuda_launch!(
        gpu,
        SOURCE,
        "sgd",
        grid_1d(n),
        [
            p,
            g,
            &b,
            &neg_lr,
            &wd,
            &mu,
            &keep,
            &i32::from(h.nesterov),
            &i32::from(h.first),
            &n64(n)
        ]
    )
}
