//! Reference data-movement kernels.

use crate::Float;

/// Gather: `dst` (contiguous, shape `shape`) gets `src[offset + Σ index[d] * strides[d]]`.
///
/// With permuted strides this is a transpose; with a 0 stride, a broadcast; with an offset and
/// the source's own strides, a narrow (slice).
pub fn gather_strided<T: Copy>(
    src: &[T],
    offset: usize,
    strides: &[usize],
    shape: &[usize],
    dst: &mut [T],
) {
    assert_eq!(
        dst.len(),
        shape.iter().product::<usize>(),
        "gather: output length"
    );
    crate::for_each_strided(shape, offset, strides, |i, s| dst[i] = src[s]);
}

/// Scatter: `dst[offset + Σ index[d] * strides[d]] = src[i]` for the contiguous `src` of shape
/// `shape` (or `+=` with `accumulate`, for overlapping destinations such as the backward of a
/// broadcast); other elements of `dst` are left as they are. The inverse of [`gather_strided`].
pub fn scatter_strided<T: Float>(
    src: &[T],
    dst: &mut [T],
    offset: usize,
    strides: &[usize],
    shape: &[usize],
    accumulate: bool,
) {
    assert_eq!(
        src.len(),
        shape.iter().product::<usize>(),
        "scatter: input length"
    );
    if accumulate {
        crate::for_each_strided(shape, offset, strides, |i, d| dst[d] += src[i]);
    } else {
        crate::for_each_strided(shape, offset, strides, |i, d| dst[d] = src[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_then_scatter_back() {
        // x = [[0,1,2,3],[4,5,6,7]]; columns 1..3
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let mut part = [0.0; 4];
        gather_strided(&x, 1, &[4, 1], &[2, 2], &mut part);
        assert_eq!(part, [1.0, 2.0, 5.0, 6.0]);
        let mut back = [0.0f32; 8];
        scatter_strided(&part, &mut back, 1, &[4, 1], &[2, 2], false);
        assert_eq!(back, [0.0, 1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 0.0]);
    }

    #[test]
    fn broadcast_with_zero_stride() {
        let mut out = [0.0f64; 6];
        gather_strided(&[1.0, 2.0, 3.0], 0, &[0, 1], &[2, 3], &mut out);
        assert_eq!(out, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        let mut acc = [0.0f64; 3];
        scatter_strided(&out, &mut acc, 0, &[0, 1], &[2, 3], true);
        assert_eq!(acc, [2.0, 4.0, 6.0]);
    }
}
