//! # gantry-kernels
//!
//! Raw compute on plain slices. This crate knows nothing about tensors or autograd: every kernel
//! takes input buffers, a small plain descriptor of the geometry (for example [`conv::Conv2dGeom`])
//! and an output buffer it writes.
//!
//! Code is organised **one folder per op**; each folder holds the op's descriptors in `mod.rs`
//! and its naive, obviously-correct scalar version in `reference.rs`. The reference versions are
//! the ground truth that every faster kernel (SIMD CPU, CUDA) is tested against, so they favour
//! clarity over speed: plain nested loops, sums accumulated in `f64`, and at most a `rayon` split
//! over an outer dimension.
//!
//! Every kernel is generic over [`Float`] (`f32` and `f64`), so gradient checks can run in `f64`.
//!
//! Kernels check their buffer lengths with `assert!`: they are the layer below the validated
//! tensor API (`gantry-core`), which turns bad user input into `Result` errors before calling them.

pub mod batch_norm;
pub mod conv;
pub mod copy;
pub mod cuda_rt;
pub mod elementwise;
pub mod float;
pub mod gemm;
pub mod loss;
pub mod optim;
pub mod peak;
pub mod reduce;
pub mod resample;
mod scratch;

pub use float::Float;

/// Every reference kernel in one namespace: `gantry_kernels::reference::conv2d_forward`, ….
pub mod reference {
    pub use crate::batch_norm::reference::*;
    pub use crate::conv::reference::*;
    pub use crate::copy::reference::*;
    pub use crate::elementwise::reference::*;
    pub use crate::gemm::reference::*;
    pub use crate::loss::reference::*;
    pub use crate::optim::reference::*;
    pub use crate::reduce::reference::*;
    pub use crate::resample::reference::*;
}

/// Row-major (C order) strides of a shape, in elements.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Calls `f(dst_index, src_offset)` for every element of `shape` in row-major order, where
/// `src_offset = offset + Σ index[d] * strides[d]`. The odometer walk shared by the strided
/// kernels (copies, broadcasting, reductions).
pub(crate) fn for_each_strided(
    shape: &[usize],
    offset: usize,
    strides: &[usize],
    mut f: impl FnMut(usize, usize),
) {
    assert_eq!(
        shape.len(),
        strides.len(),
        "shape and strides differ in rank"
    );
    let count: usize = shape.iter().product();
    if count == 0 {
        return;
    }
    let mut index = vec![0usize; shape.len()];
    let mut src = offset;
    for dst in 0..count {
        f(dst, src);
        // Advance the odometer: bump the last digit, carrying into earlier ones.
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            src += strides[d];
            if index[d] < shape[d] {
                break;
            }
            src -= strides[d] * shape[d];
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[5]), vec![1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn strided_walk_visits_transpose_order() {
        // A 2x3 matrix read through transposed strides gives its transpose.
        let mut seen = vec![];
        for_each_strided(&[3, 2], 0, &[1, 3], |dst, src| seen.push((dst, src)));
        let src: Vec<usize> = seen.iter().map(|p| p.1).collect();
        assert_eq!(src, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn strided_walk_of_scalar_visits_once() {
        let mut n = 0;
        for_each_strided(&[], 7, &[], |_, src| {
            assert_eq!(src, 7);
            n += 1
        });
        assert_eq!(n, 1);
    }
}
