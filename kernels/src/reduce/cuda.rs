//! CUDA reductions (`reduce.cu`): sums over any set of axes and the maximum along one axis.

use crate::cuda_launch;
use crate::cuda_rt::{block_per_item, grid_1d, n64, Gpu, Result, Source, Strides, BLOCK};
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "reduce",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("reduce.cu")
    ),
};

/// Sums `x` (of `shape`) over `axes`; the output has the reduced shape (`reduced_shape`).
pub fn sum_axes(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    shape: &[usize],
    axes: &[usize],
) -> Result<CudaSlice<f32>> {
    let strides = crate::contiguous_strides(shape);
    let (mut kept, mut kept_st, mut red, mut red_st) = (vec![], vec![], vec![], vec![]);
    for d in 0..shape.len() {
        if axes.contains(&d) {
            red.push(shape[d]);
            red_st.push(strides[d]);
        } else {
            kept.push(shape[d]);
            kept_st.push(strides[d]);
        }
    }
    let (outputs, r) = (
        kept.iter().product::<usize>(),
        red.iter().product::<usize>(),
    );
    let k = Strides::new("sum", &kept, &kept_st, &kept_st)?;
    let rd = Strides::new("sum", &red, &red_st, &red_st)?;
    let mut out = gpu.alloc_f32(outputs)?;
    if outputs == 0 {
        return Ok(out);
    }
    if r >= BLOCK as usize {
        cuda_launch!(
            gpu,
            SOURCE,
            "sum_block",
            block_per_item(outputs),
            [&k, &rd, x, &mut out, &n64(r)]
        )?;
    } else {
        cuda_launch!(
            gpu,
            SOURCE,
            "sum_thread",
            grid_1d(outputs),
            [&k, &rd, x, &mut out, &n64(r), &n64(outputs)]
        )?;
    }
    Ok(out)
}

/// Values and indices of the maximum along `axis`.
pub fn max_axis(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    shape: &[usize],
    axis: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<u32>)> {
    let (outer, len, inner) = super::split_at_axis(shape, axis);
    let mut v = gpu.alloc_f32(outer * inner)?;
    let mut i = gpu.zeros::<u32>(outer * inner)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "max_axis",
        grid_1d(outer * inner),
        [x, &mut v, &mut i, &n64(outer), &n64(len), &n64(inner)]
    )?;
    Ok((v, i))
}

/// The gradient of [`max_axis`]: `dy` goes where each maximum was, zeros elsewhere.
pub fn max_axis_backward(
    gpu: &Gpu,
    dy: &CudaSlice<f32>,
    indices: &CudaSlice<u32>,
    shape: &[usize],
    axis: usize,
) -> Result<CudaSlice<f32>> {
    let (outer, len, inner) = super::split_at_axis(shape, axis);
    let mut dx = gpu.zeros_f32(outer * len * inner)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "max_axis_backward",
        grid_1d(outer * inner),
        [dy, indices, &mut dx, &n64(outer), &n64(len), &n64(inner)]
    )?;
    Ok(dx)
}
