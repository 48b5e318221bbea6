//! Reference reductions. Sums accumulate in `f64` whatever the element type, so the reference
//! is at least as accurate as anything tested against it.

use super::{reduced_shape, split_at_axis};
use crate::Float;

/// A sum's buffer lengths: `x` holds `shape`, `out` the shape with `axes` reduced.
pub(crate) fn check_sum(x_len: usize, shape: &[usize], axes: &[usize], out_len: usize) {
    assert_eq!(x_len, shape.iter().product::<usize>(), "sum: input length");
    assert_eq!(
        out_len,
        reduced_shape(shape, axes).iter().product::<usize>(),
        "sum: output length"
    );
}

/// Sums the contiguous `x` of shape `shape` over `axes`; `out` has the shape with those axes set
/// to 1 (keepdim layout).
pub fn sum_axes<T: Float>(x: &[T], shape: &[usize], axes: &[usize], out: &mut [T]) {
    check_sum(x.len(), shape, axes, out.len());
    let out_shape = reduced_shape(shape, axes);
    // Walk the input in order; each element lands in the output cell whose index has the
    // reduced coordinates dropped, i.e. read the output with stride 0 along reduced axes.
    let out_strides: Vec<usize> = crate::contiguous_strides(&out_shape)
        .into_iter()
        .enumerate()
        .map(|(d, s)| if axes.contains(&d) { 0 } else { s })
        .collect();
    let mut acc = vec![0f64; out.len()];
    crate::for_each_strided(shape, 0, &out_strides, |i, o| acc[o] += x[i].to_f64());
    for (o, a) in out.iter_mut().zip(acc) {
        *o = T::from_f64(a);
    }
}

/// Maximum of `x` (shape `shape`) along `axis`: values and the index of the first maximum
/// (NaN counts as the maximum, as in PyTorch). Outputs have `axis` removed or kept as 1 (same
/// data layout).
pub fn max_axis<T: Float>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    values: &mut [T],
    indices: &mut [u32],
) {
    let (outer, len, inner) = split_at_axis(shape, axis);
    assert!(len > 0, "max: reducing an empty axis");
    assert_eq!(x.len(), outer * len * inner, "max: input length");
    assert!(
        values.len() == outer * inner && indices.len() == outer * inner,
        "max: output length"
    );
    for o in 0..outer {
        for j in 0..inner {
            let mut best = 0;
            for i in 1..len {
                let (v, b) = (
                    x[(o * len + i) * inner + j],
                    x[(o * len + best) * inner + j],
                );
                if !b.is_nan() && (v > b || v.is_nan()) {
                    best = i;
                }
            }
            values[o * inner + j] = x[(o * len + best) * inner + j];
            indices[o * inner + j] = best as u32;
        }
    }
}

/// Backward of [`max_axis`]: routes `dy` to the chosen index, zero elsewhere.
pub fn max_axis_backward<T: Float>(
    dy: &[T],
    indices: &[u32],
    shape: &[usize],
    axis: usize,
    dx: &mut [T],
) {
    let (outer, len, inner) = split_at_axis(shape, axis);
    assert_eq!(
        dx.len(),
        outer * len * inner,
        "max_backward: gradient length"
    );
    dx.fill(T::ZERO);
    for o in 0..outer {
        for j in 0..inner {
            let i = indices[o * inner + j] as usize;
            dx[(o * len + i) * inner + j] = dy[o * inner + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_chosen_axes() {
        // x = [[1,2,3],[4,5,6]]
        let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut rows = [0.0; 2];
        sum_axes(&x, &[2, 3], &[1], &mut rows);
        assert_eq!(rows, [6.0, 15.0]);
        let mut cols = [0.0; 3];
        sum_axes(&x, &[2, 3], &[0], &mut cols);
        assert_eq!(cols, [5.0, 7.0, 9.0]);
        let mut all = [0.0; 1];
        sum_axes(&x, &[2, 3], &[0, 1], &mut all);
        assert_eq!(all, [21.0]);
    }

    #[test]
    fn max_picks_first_maximum() {
        // x = [[1,5,5],[7,0,2]] along axis 1
        let x = [1.0f64, 5.0, 5.0, 7.0, 0.0, 2.0];
        let (mut v, mut i) = ([0.0; 2], [0u32; 2]);
        max_axis(&x, &[2, 3], 1, &mut v, &mut i);
        assert_eq!(v, [5.0, 7.0]);
        assert_eq!(i, [1, 0]);
        let mut dx = [9.0; 6];
        max_axis_backward(&[1.0, 2.0], &i, &[2, 3], 1, &mut dx);
        assert_eq!(dx, [0.0, 1.0, 0.0, 2.0, 0.0, 0.0]);
        // along axis 0
        let (mut v, mut i) = ([0.0; 3], [0u32; 3]);
        max_axis(&x, &[2, 3], 0, &mut v, &mut i);
        assert_eq!(v, [7.0, 5.0, 5.0]);
        assert_eq!(i, [1, 0, 0]);
    }

    #[test]
    fn max_propagates_nan() {
        let x = [1.0f32, f32::NAN, 3.0];
        let (mut v, mut i) = ([0.0; 1], [0u32; 1]);
        max_axis(&x, &[3], 0, &mut v, &mut i);
        assert!(v[0].is_nan());
        assert_eq!(i[0], 1);
    }
}
