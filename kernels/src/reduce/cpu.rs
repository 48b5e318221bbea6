//! Fast sums over axes: the shapes training reduces (a bias gradient sums `[n, c, h·w]`
//! over `n` and `h·w`; a linear layer's over rows) in parallel, with the reference's f64
//! accumulation. Shapes whose kept axes are not one contiguous block fall back to the
//! reference's general walk.
//!
//! After merging neighbouring axes that are both reduced or both kept (and dropping axes of
//! length 1), such a sum is `out[j] = Σ_{o < a} Σ_{i < c} x[(o·b + j)·c + i]`: `a` outer
//! reduced, `b` kept, `c` inner reduced elements. With long inner runs (`c ≥ 16`), each
//! output sums its runs with eight f64 partial sums (independent adds, so they pipeline);
//! otherwise each block of outputs adds whole rows of `b` into f64 accumulators, in order.
//! Either way the result does not depend on the thread count, and it differs from the
//! reference's one-at-a-time f64 sum only by f64 rounding (far below f32's).

use super::reference;
use crate::Float;
use rayon::prelude::*;

/// `out = Σ over axes of x`, as [`reference::sum_axes`].
pub fn sum_axes<T: Float>(x: &[T], shape: &[usize], axes: &[usize], out: &mut [T]) {
    reference::check_sum(x.len(), shape, axes, out.len());
    let Some([a, b, c]) = outer_kept_inner(shape, axes) else {
        return reference::sum_axes(x, shape, axes, out);
    };
    if x.is_empty() {
        out.fill(T::ZERO);
        return;
    }
    if c >= 16 {
        out.par_iter_mut().enumerate().for_each(|(j, o)| {
            let mut acc = [0f64; 8];
            for r in 0..a {
                let run = &x[(r * b + j) * c..][..c];
                let mut chunks = run.chunks_exact(8);
                for ch in &mut chunks {
                    for (s, v) in acc.iter_mut().zip(ch) {
                        *s += v.to_f64();
                    }
                }
                for (s, v) in acc.iter_mut().zip(chunks.remainder()) {
                    *s += v.to_f64();
                }
            }
            *o = T::from_f64(acc.iter().sum());
        });
    } else {
        // Blocks of 256 outputs; each adds its slice of every row, row after row.
        out.par_chunks_mut(256).enumerate().for_each(|(blk, o)| {
            let j0 = blk * 256;
            let mut acc = vec![0f64; o.len() * c];
            for r in 0..a {
                let row = &x[(r * b + j0) * c..][..o.len() * c];
                for (s, v) in acc.iter_mut().zip(row) {
                    *s += v.to_f64();
                }
            }
            for (dst, sums) in o.iter_mut().zip(acc.chunks_exact(c.max(1))) {
                *dst = T::from_f64(sums.iter().sum());
            }
        });
    }
}

/// `[a, b, c]` when `shape` reduced over `axes` is `a` reduced × `b` kept × `c` reduced
/// elements (any of them 1), else `None`.
fn outer_kept_inner(shape: &[usize], axes: &[usize]) -> Option<[usize; 3]> {
    // Stage 0: outer reduced axes; 1: kept; 2: inner reduced.
    let (mut dims, mut stage) = ([1usize; 3], 0);
    for (d, &len) in shape.iter().enumerate() {
        if len == 1 {
            continue;
        }
        let reduced = axes.contains(&d);
        stage = match (stage, reduced) {
            (0, true) => 0,
            (0 | 1, false) => 1,
            (1 | 2, true) => 2,
            _ => return None,
        };
        dims[stage] *= len;
    }
    Some(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduce::reduced_shape;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn equal_to_the_reference_within_f64_rounding(
            shape in proptest::collection::vec(0usize..40, 1..5),
            mask in any::<u8>(), seed in any::<u64>(),
        ) {
            let axes: Vec<usize> = (0..shape.len()).filter(|d| mask >> d & 1 == 1).collect();
            let len: usize = shape.iter().product();
            let mut s = seed | 1;
            let x: Vec<f32> = (0..len)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
                .collect();
            let out_len: usize = reduced_shape(&shape, &axes).iter().product();
            let (mut got, mut want) = (vec![f32::NAN; out_len], vec![0f32; out_len]);
            sum_axes(&x, &shape, &axes, &mut got);
            reference::sum_axes(&x, &shape, &axes, &mut want);
            // Both sum the same f64 values in different orders: they can differ by f64
            // rounding of the sum, which may move the f32 result by one rounding step.
            let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let mut mag = vec![0f32; out_len];
            reference::sum_axes(&ax, &shape, &axes, &mut mag);
            for i in 0..out_len {
                let tol = f32::EPSILON * want[i].abs() + 1e-12 * mag[i];
                prop_assert!((got[i] - want[i]).abs() <= tol,
                    "{shape:?} over {axes:?} [{i}]: {} vs {}", got[i], want[i]);
            }
        }
    }

    #[test]
    fn a_bias_gradients_shape_and_the_fallback() {
        // [n, c, h, w] over (0, 2, 3), and (0, 2) of a rank-3 shape with a kept inner axis,
        // which takes the reference's walk.
        for (shape, axes) in [
            (vec![3, 5, 7, 9], vec![0, 2, 3]),
            (vec![4, 3, 5], vec![0, 2]),
        ] {
            let x: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| (i % 7) as f32 - 3.0)
                .collect();
            let n: usize = reduced_shape(&shape, &axes).iter().product();
            let (mut got, mut want) = (vec![0f32; n], vec![0f32; n]);
            sum_axes(&x, &shape, &axes, &mut got);
            reference::sum_axes(&x, &shape, &axes, &mut want);
            assert_eq!(got, want, "{shape:?} over {axes:?}");
        }
        assert_eq!(outer_kept_inner(&[2, 3, 4, 5], &[0, 2]), None);
        assert_eq!(
            outer_kept_inner(&[2, 3, 4, 5], &[0, 2, 3]),
            Some([2, 3, 20])
        );
        assert_eq!(outer_kept_inner(&[2, 1, 4], &[0, 1]), Some([2, 4, 1]));
    }
}
