//! CUDA batch norm (`batch_norm.cu`): per-channel statistics and the backward's sums take a
//! block per channel; the normalisation (with the fused activation) is elementwise.

use super::BatchNormGeom;
use crate::cuda_launch;
use crate::cuda_rt::{block_per_item, grid_1d, n64, ptr_or_null, Gpu, Result, Source};
use crate::elementwise::cuda::unary_code;
use crate::elementwise::UnaryOp;
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "batch_norm",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("batch_norm.cu")
    ),
};

fn act_code(act: Option<UnaryOp>) -> (i32, f32) {
    act.map_or((-1, 0.0), unary_code)
}

/// Per-channel mean and biased variance.
pub fn stats(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    g: &BatchNormGeom,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let (mut m, mut v) = (gpu.alloc_f32(g.c)?, gpu.alloc_f32(g.c)?);
    if g.c > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "bn_stats",
            block_per_item(g.c),
            [x, &mut m, &mut v, &n64(g.n), &n64(g.c), &n64(g.inner)]
        )?;
    }
    Ok((m, v))
}

/// `act(w·(x − mean)/sqrt(var + eps) + b)`.
pub fn forward(
    gpu: &Gpu,
    [x, mean, var]: [&CudaSlice<f32>; 3],
    (w, b): (Option<&CudaSlice<f32>>, Option<&CudaSlice<f32>>),
    eps: f64,
    act: Option<UnaryOp>,
    g: &BatchNormGeom,
) -> Result<CudaSlice<f32>> {
    let len = g.len();
    let mut y = gpu.alloc_f32(len)?;
    let (code, p) = act_code(act);
    let (wp, bp) = (ptr_or_null(gpu, w), ptr_or_null(gpu, b));
    if len > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "bn_forward",
            grid_1d(len),
            [
                x,
                mean,
                var,
                &wp,
                &bp,
                &(eps as f32),
                &code,
                &p,
                &mut y,
                &n64(g.c),
                &n64(g.inner),
                &n64(len)
            ]
        )?;
    }
    Ok(y)
}

/// `(dx, dweight, dbias)`; with `act`, `dy` is the gradient of the activation's output.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    [x, dy, mean, var]: [&CudaSlice<f32>; 4],
    (w, b): (Option<&CudaSlice<f32>>, Option<&CudaSlice<f32>>),
    eps: f64,
    training: bool,
    act: Option<UnaryOp>,
    g: &BatchNormGeom,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
    let (mut dx, mut dw, mut db) = (
        gpu.alloc_f32(g.len())?,
        gpu.alloc_f32(g.c)?,
        gpu.alloc_f32(g.c)?,
    );
    let (code, p) = act_code(act);
    let (wp, bp) = (ptr_or_null(gpu, w), ptr_or_null(gpu, b));
    if g.c > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "bn_backward",
            block_per_item(g.c),
            [
                x,
                dy,
                mean,
                var,
                &wp,
                &bp,
                &(eps as f32),
                &i32::from(training),
                &code,
                &p,
                &mut dx,
                &mut dw,
                &mut db,
                &n64(g.n),
                &n64(g.c),
                &n64(g.inner)
            ]
        )?;
    }
    Ok((dx, dw, db))
}
