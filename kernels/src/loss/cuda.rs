//! CUDA per-element losses (`loss.cu`).

use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, n64, CudaError, Gpu, Result, Source};
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "loss",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("loss.cu")
    ),
};

type Pair = (CudaSlice<f32>, CudaSlice<f32>);

pub fn bce_with_logits(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    n: usize,
) -> Result<CudaSlice<f32>> {
    let mut out = gpu.alloc_f32(n)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "bce_with_logits",
        grid_1d(n),
        [x, t, &mut out, &n64(n)]
    )?;
    Ok(out)
}

/// `(dx, dtarget)`.
pub fn bce_with_logits_backward(
    gpu: &Gpu,
    [x, t, dy]: [&CudaSlice<f32>; 3],
    n: usize,
) -> Result<Pair> {
    let (mut dx, mut dt) = (gpu.alloc_f32(n)?, gpu.alloc_f32(n)?);
    cuda_launch!(
        gpu,
        SOURCE,
        "bce_with_logits_backward",
        grid_1d(n),
        [x, t, dy, &mut dx, &mut dt, &n64(n)]
    )?;
    Ok((dx, dt))
}

/// BCE on probabilities; an error when one lies outside [0, 1] (this reads a flag back, so it
/// waits for the stream).
pub fn bce(gpu: &Gpu, p: &CudaSlice<f32>, t: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    let mut out = gpu.alloc_f32(n)?;
    let mut bad = gpu.zeros::<i32>(1)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "bce",
        grid_1d(n),
        [p, t, &mut out, &mut bad, &n64(n)]
    )?;
    if gpu.download(&bad, 1)?[0] != 0 {
        return Err(CudaError(
            "bce: every input must be a probability in [0, 1] (pass logits to bce_with_logits)"
                .into(),
        ));
    }
    Ok(out)
}

/// `(dprobabilities, dtarget)`.
pub fn bce_backward(gpu: &Gpu, [p, t, dy]: [&CudaSlice<f32>; 3], n: usize) -> Result<Pair> {
    let (mut dp, mut dt) = (gpu.alloc_f32(n)?, gpu.alloc_f32(n)?);
    cuda_launch!(
        gpu,
        SOURCE,
        "bce_backward",
        grid_1d(n),
        [p, t, dy, &mut dp, &mut dt, &n64(n)]
    )?;
    Ok((dp, dt))
}
