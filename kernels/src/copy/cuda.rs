//! CUDA strided copies (`copy.cu`): a view to a contiguous buffer and back.

use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, n64, Gpu, Result, Source, Strides};
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "copy",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("copy.cu")
    ),
};

/// The view `(offset, strides, shape)` of `src` as a contiguous buffer.
pub fn gather(
    gpu: &Gpu,
    src: &CudaSlice<f32>,
    offset: usize,
    strides: &[usize],
    shape: &[usize],
) -> Result<CudaSlice<f32>> {
    let n = shape.iter().product();
    let s = Strides::new("gather", shape, strides, strides)?;
    let mut dst = gpu.alloc_f32(n)?;
    if n > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "gather_strided",
            grid_1d(n),
            [&s, &n64(offset), src, &mut dst, &n64(n)]
        )?;
    }
    Ok(dst)
}

/// Writes (or with `accumulate`, adds) the contiguous `src` into the view of `dst`.
pub fn scatter(
    gpu: &Gpu,
    dst: &mut CudaSlice<f32>,
    src: &CudaSlice<f32>,
    offset: usize,
    strides: &[usize],
    shape: &[usize],
    accumulate: bool,
) -> Result<()> {
    let n = shape.iter().product();
    let s = Strides::new("scatter", shape, strides, strides)?;
    if n > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "scatter_strided",
            grid_1d(n),
            [&s, &n64(offset), src, dst, &i32::from(accumulate), &n64(n)]
        )?;
    }
    Ok(())
}

/// A buffer of `n` copies of `value`.
pub fn fill(gpu: &Gpu, value: f32, n: usize) -> Result<CudaSlice<f32>> {
    let mut dst = gpu.alloc_f32(n)?;
    if n > 0 {
        cuda_launch!(gpu, SOURCE, "fill", grid_1d(n), [&mut dst, &value, &n64(n)])?;
    }
    Ok(dst)
}
