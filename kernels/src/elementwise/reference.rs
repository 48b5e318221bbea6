//! Reference elementwise kernels: one plain loop each.

use super::{BinaryOp, BroadcastGeom, UnaryOp};
use crate::Float;

/// `out[i] = op(x[i])`.
pub fn unary<T: Float>(op: UnaryOp, x: &[T], out: &mut [T]) {
    assert_eq!(
        x.len(),
        out.len(),
        "{}: input and output lengths differ",
        op.name()
    );
    for (o, &v) in out.iter_mut().zip(x) {
        *o = op.apply(v);
    }
}

/// Backward of a unary op: `dx[i] = dy[i] * op'(x[i])`, where `y = op(x)` is the forward output.
pub fn unary_backward<T: Float>(op: UnaryOp, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    let n = dx.len();
    assert!(
        x.len() == n && y.len() == n && dy.len() == n,
        "{}_backward: buffer lengths differ",
        op.name()
    );
    for i in 0..n {
        dx[i] = dy[i] * op.derivative(x[i], y[i]);
    }
}

/// `out = op(lhs, rhs)` with NumPy broadcasting; `geom` gives each operand's strides as seen
/// from the (contiguous) output.
pub fn binary<T: Float>(op: BinaryOp, lhs: &[T], rhs: &[T], geom: &BroadcastGeom, out: &mut [T]) {
    assert_eq!(out.len(), geom.out_len(), "{}: output length", op.name());
    let mut rhs_offsets = Vec::with_capacity(out.len());
    crate::for_each_strided(&geom.out_shape, 0, &geom.rhs_strides, |_, r| {
        rhs_offsets.push(r)
    });
    crate::for_each_strided(&geom.out_shape, 0, &geom.lhs_strides, |i, l| {
        out[i] = op.apply(lhs[l], rhs[rhs_offsets[i]]);
    });
}

/// PReLU's buffer lengths: the three `[n, c, inner]` buffers, and `c` weights or one.
pub(crate) fn check_prelu(op: &str, lens: [usize; 3], weights: usize, [n, c, inner]: [usize; 3]) {
    assert!(
        lens.iter().all(|&l| l == n * c * inner),
        "{op}: buffer lengths {lens:?} for [{n}, {c}, {inner}]"
    );
    assert!(
        weights == c || weights == 1,
        "{op}: {weights} weights for {c} channels"
    );
}

/// PReLU over an `[n, c, inner]` buffer: `y = x` where `x > 0`, else `weight[c] * x`.
/// `weight` has `c` entries, or a single entry shared by every channel.
pub fn prelu_forward<T: Float>(
    x: &[T],
    weight: &[T],
    n: usize,
    c: usize,
    inner: usize,
    y: &mut [T],
) {
    check_prelu(
        "prelu",
        [x.len(), y.len(), y.len()],
        weight.len(),
        [n, c, inner],
    );
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        let w = weight[if weight.len() == 1 {
            0
        } else {
            (i / inner) % c
        }];
        *o = if v > T::ZERO { v } else { w * v };
    }
}

/// PReLU backward: `dx = dy` or `weight[c] * dy`; `dweight[c] = Σ dy * x` over the elements of
/// channel `c` with `x <= 0` (summed into one entry for a shared weight).
#[allow(clippy::too_many_arguments)]
pub fn prelu_backward<T: Float>(
    x: &[T],
    weight: &[T],
    dy: &[T],
    n: usize,
    c: usize,
    inner: usize,
    dx: &mut [T],
    dweight: &mut [T],
) {
    check_prelu(
        "prelu_backward",
        [x.len(), dy.len(), dx.len()],
        weight.len(),
        [n, c, inner],
    );
    assert_eq!(
        dweight.len(),
        weight.len(),
        "prelu_backward: weight gradient length"
    );
    let mut acc = vec![0f64; weight.len()];
    for i in 0..x.len() {
        let k = if weight.len() == 1 {
            0
        } else {
            (i / inner) % c
        };
        if x[i] > T::ZERO {
            dx[i] = dy[i];
        } else {
            dx[i] = weight[k] * dy[i];
            acc[k] += (dy[i] * x[i]).to_f64();
        }
    }
    for (d, a) in dweight.iter_mut().zip(acc) {
        *d = T::from_f64(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_ops_match_hand_values() {
        let x = [-2.0f64, -0.5, 0.0, 1.5];
        let mut y = [0.0; 4];
        unary(UnaryOp::Relu, &x, &mut y);
        assert_eq!(y, [0.0, 0.0, 0.0, 1.5]);
        unary(UnaryOp::LeakyRelu(0.2), &x, &mut y);
        assert_eq!(y, [-0.4, -0.1, 0.0, 1.5]);
        unary(UnaryOp::Abs, &x, &mut y);
        assert_eq!(y, [2.0, 0.5, 0.0, 1.5]);
        unary(UnaryOp::Sigmoid, &[0.0f64], &mut y[..1]);
        assert_eq!(y[0], 0.5);
        unary(UnaryOp::PowScalar(2.0), &x, &mut y);
        assert_eq!(y, [4.0, 0.25, 0.0, 2.25]);
    }

    #[test]
    fn relu_propagates_nan_like_pytorch() {
        let mut y = [0.0f32; 2];
        unary(UnaryOp::Relu, &[f32::NAN, -f32::NAN], &mut y);
        assert!(y[0].is_nan() && y[1].is_nan());
        unary(UnaryOp::LeakyRelu(0.2), &[f32::NAN, 1.0], &mut y);
        assert!(y[0].is_nan());
    }

    #[test]
    fn pow_partials_are_zero_at_the_singular_points() {
        use crate::elementwise::BinaryOp;
        // d(0^0)/da = 0 (exponent 0), d(0^2)/db = 0 (base 0, exponent >= 0).
        assert_eq!(BinaryOp::PowGradBase.apply(0.0f64, 0.0), 0.0);
        assert_eq!(BinaryOp::PowGradBase.apply(3.0f64, 2.0), 6.0);
        assert_eq!(BinaryOp::PowGradExponent.apply(0.0f64, 2.0), 0.0);
        assert_eq!(BinaryOp::PowGradExponent.apply(1.0f64, 5.0), 0.0);
        assert!((BinaryOp::PowGradExponent.apply(2.0f64, 3.0) - 8.0 * 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn sigmoid_does_not_overflow() {
        assert_eq!(super::super::sigmoid(-1000.0f32), 0.0);
        assert_eq!(super::super::sigmoid(1000.0f32), 1.0);
    }

    #[test]
    fn kink_derivatives_follow_pytorch() {
        assert_eq!(UnaryOp::Relu.derivative(0.0f64, 0.0), 0.0);
        assert_eq!(UnaryOp::LeakyRelu(0.2).derivative(0.0f64, 0.0), 0.2);
        assert_eq!(UnaryOp::Abs.derivative(0.0f64, 0.0), 0.0);
    }

    #[test]
    fn broadcasting_adds_row_and_column() {
        // [2,1] + [3] -> [2,3]
        let geom = BroadcastGeom::new(&[2, 1], &[3]).unwrap();
        assert_eq!(geom.out_shape, vec![2, 3]);
        let mut out = [0.0f32; 6];
        binary(
            BinaryOp::Add,
            &[10.0, 20.0],
            &[1.0, 2.0, 3.0],
            &geom,
            &mut out,
        );
        assert_eq!(out, [11.0, 12.0, 13.0, 21.0, 22.0, 23.0]);
        assert!(BroadcastGeom::new(&[2, 3], &[2]).is_none());
    }

    #[test]
    fn prelu_per_channel() {
        // n=1, c=2, inner=2; channel 0 slope 0.1, channel 1 slope 0.5
        let x = [-1.0f64, 2.0, -4.0, 3.0];
        let w = [0.1, 0.5];
        let mut y = [0.0; 4];
        prelu_forward(&x, &w, 1, 2, 2, &mut y);
        assert_eq!(y, [-0.1, 2.0, -2.0, 3.0]);
        let (mut dx, mut dw) = ([0.0; 4], [0.0; 2]);
        prelu_backward(&x, &w, &[1.0; 4], 1, 2, 2, &mut dx, &mut dw);
        assert_eq!(dx, [0.1, 1.0, 0.5, 1.0]);
        assert_eq!(dw, [-1.0, -4.0]);
    }

    /// The ops that claim it take the same derivative from the output as from the input, on
    /// awkward values: signed zeros, infinities, NaN, subnormals, and slopes 0, −0, tiny, 1.
    #[test]
    fn derivative_from_output_holds_where_claimed() {
        let xs = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE / 4.0,
            -f32::MIN_POSITIVE / 4.0,
            3.5e-3,
            -7.25,
        ];
        let ops = [
            UnaryOp::Relu,
            UnaryOp::Tanh,
            UnaryOp::Sigmoid,
            UnaryOp::LeakyRelu(0.0),
            UnaryOp::LeakyRelu(-0.0),
            UnaryOp::LeakyRelu(1e-30),
            UnaryOp::LeakyRelu(0.2),
            UnaryOp::LeakyRelu(1.0),
        ];
        for op in ops {
            assert!(op.derivative_from_output(), "{op:?}");
            for x in xs {
                let y = op.apply(x);
                let (from_x, from_y) = (op.derivative(x, y), op.derivative(y, y));
                assert!(
                    from_x.to_bits() == from_y.to_bits() || (from_x.is_nan() && from_y.is_nan()),
                    "{op:?} at {x}: {from_x} from the input, {from_y} from the output"
                );
            }
        }
        for op in [
            UnaryOp::LeakyRelu(-0.1),
            UnaryOp::Exp,
            UnaryOp::Abs,
            UnaryOp::MulScalar(2.0),
        ] {
            assert!(!op.derivative_from_output(), "{op:?}");
        }
    }
}
