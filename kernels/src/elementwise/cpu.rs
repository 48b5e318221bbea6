//! Fast elementwise kernels: the reference loops, split over threads in chunks.
//!
//! Each chunk runs the reference's per-element formulas (`UnaryOp::apply` and `derivative`,
//! written out per op for the simple unary ops so that they vectorise: keep those copies in
//! step with the originals), so results are identical to the reference bit for bit, which
//! the tests check on values that include NaN and ±0; the gain is that all cores work, and
//! that the common same-shape and
//! scalar cases of a binary op skip the reference's general strided walk (which builds an
//! offset per element). Chunks are large enough (16 Ki elements) that rayon's scheduling is
//! noise, and small enough to spread a 64x64 feature map batch over every core.

use super::{reference, BinaryOp, BroadcastGeom, UnaryOp};
use crate::Float;
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `out[i] = op(x[i])`, in parallel chunks.
pub fn unary<T: Float>(op: UnaryOp, x: &[T], out: &mut [T]) {
    assert_eq!(
        x.len(),
        out.len(),
        "{}: input and output lengths differ",
        op.name()
    );
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| unary_chunk(op, Mapped(x, o)));
}

/// `v[i] = op(v[i])` on one thread: for a tile a kernel is about to store (the fused
/// activations of [`crate::conv::Epilogue`]). Same formulas, so the same bits as [`unary`].
pub fn unary_in_place<T: Float>(op: UnaryOp, v: &mut [T]) {
    unary_chunk(op, InPlace(v));
}

/// A loop that applies one per-element function, from an input into an output or in place;
/// generic over the function, so that each op's closure is inlined into its own loop.
trait Each<T> {
    fn each(self, f: impl Fn(T) -> T);
}

struct Mapped<'a, T>(&'a [T], &'a mut [T]);
struct InPlace<'a, T>(&'a mut [T]);

impl<T: Copy> Each<T> for Mapped<'_, T> {
    #[inline(always)]
    fn each(self, f: impl Fn(T) -> T) {
        for (o, &v) in self.1.iter_mut().zip(self.0) {
            *o = f(v);
        }
    }
}

impl<T: Copy> Each<T> for InPlace<'_, T> {
    #[inline(always)]
    fn each(self, f: impl Fn(T) -> T) {
        for v in self.0.iter_mut() {
            *v = f(*v);
        }
    }
}

/// One chunk of [`unary`]. The ops that are a compare or one arithmetic step are written
/// out, their constant converted once, as selects the compiler vectorises; through
/// `UnaryOp::apply` each element took a jump through the variant table (measured: leaky
/// relu and its gradient, scalar, were 10% of a DCGAN training step's CPU time). The
/// formulas are `apply`'s, so the results are identical bit for bit.
fn unary_chunk<T: Float>(op: UnaryOp, l: impl Each<T>) {
    match op {
        UnaryOp::Relu => l.each(|v| {
            if v > T::ZERO || v.is_nan() {
                v
            } else {
                T::ZERO
            }
        }),
        UnaryOp::LeakyRelu(s) => {
            let s = T::from_f64(s);
            l.each(|v| if v > T::ZERO { v } else { v * s })
        }
        UnaryOp::AddScalar(c) => {
            let c = T::from_f64(c);
            l.each(|v| v + c)
        }
        UnaryOp::MulScalar(c) => {
            let c = T::from_f64(c);
            l.each(|v| v * c)
        }
        _ => l.each(|v| op.apply(v)),
    }
}

/// `dx[i] = dy[i] · op'(x[i])`, in parallel chunks.
pub fn unary_backward<T: Float>(op: UnaryOp, x: &[T], y: &[T], dy: &[T], dx: &mut [T]) {
    let n = dx.len();
    assert!(
        x.len() == n && y.len() == n && dy.len() == n,
        "{}_backward: buffer lengths differ",
        op.name()
    );
    dx.par_chunks_mut(CHUNK).enumerate().for_each(|(c, d)| {
        let r = c * CHUNK..c * CHUNK + d.len();
        unary_backward_chunk(op, &x[r.clone()], &y[r.clone()], &dy[r], d);
    });
}

/// One chunk of [`unary_backward`], written out per op as [`unary_chunk`] is, with
/// `UnaryOp::derivative`'s formulas.
fn unary_backward_chunk<T: Float>(op: UnaryOp, x: &[T], y: &[T], dy: &[T], d: &mut [T]) {
    #[inline(always)]
    fn each<T: Copy>(d: &mut [T], [x, y, dy]: [&[T]; 3], f: impl Fn(T, T, T) -> T) {
        let n = d.len();
        let (x, y, dy) = (&x[..n], &y[..n], &dy[..n]);
        for (i, d) in d.iter_mut().enumerate() {
            *d = f(x[i], y[i], dy[i]);
        }
    }
    let (zero, one) = (T::ZERO, T::ONE);
    match op {
        UnaryOp::Relu => each(d, [x, y, dy], |x, _, g| {
            g * if x > zero { one } else { zero }
        }),
        UnaryOp::LeakyRelu(s) => {
            let s = T::from_f64(s);
            each(d, [x, y, dy], |x, _, g| g * if x > zero { one } else { s })
        }
        UnaryOp::Tanh => each(d, [x, y, dy], |_, y, g| g * (one - y * y)),
        UnaryOp::Sigmoid => each(d, [x, y, dy], |_, y, g| g * (y * (one - y))),
        UnaryOp::AddScalar(_) => each(d, [x, y, dy], |_, _, g| g * one),
        UnaryOp::MulScalar(c) => {
            let c = T::from_f64(c);
            each(d, [x, y, dy], |_, _, g| g * c)
        }
        _ => each(d, [x, y, dy], |x, y, g| g * op.derivative(x, y)),
    }
}

/// `out = op(lhs, rhs)` with broadcasting. Same-shape operands and a scalar on either side
/// run as flat parallel loops; other broadcasts fall back to the reference walk.
pub fn binary<T: Float>(op: BinaryOp, lhs: &[T], rhs: &[T], geom: &BroadcastGeom, out: &mut [T]) {
    let n = geom.out_len();
    assert_eq!(out.len(), n, "{}: output length", op.name());
    if lhs.len() == n && rhs.len() == n {
        // Equal lengths with the output means neither operand is broadcast.
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
            let base = c * CHUNK;
            for (j, v) in o.iter_mut().enumerate() {
                *v = op.apply(lhs[base + j], rhs[base + j]);
            }
        });
    } else if lhs.len() == n && rhs.len() == 1 {
        let r = rhs[0];
        out.par_chunks_mut(CHUNK)
            .zip(lhs.par_chunks(CHUNK))
            .for_each(|(o, l)| o.iter_mut().zip(l).for_each(|(v, &a)| *v = op.apply(a, r)));
    } else if rhs.len() == n && lhs.len() == 1 {
        let l = lhs[0];
        out.par_chunks_mut(CHUNK)
            .zip(rhs.par_chunks(CHUNK))
            .for_each(|(o, r)| o.iter_mut().zip(r).for_each(|(v, &b)| *v = op.apply(l, b)));
    } else {
        reference::binary(op, lhs, rhs, geom, out);
    }
}

/// Planes per parallel task: at least [`CHUNK`] elements each.
fn planes_per_task(inner: usize) -> usize {
    CHUNK.div_ceil(inner.max(1))
}

/// PReLU over `[n, c, inner]`, as [`reference::prelu_forward`] (the same formula, so the same
/// bits), whole channel planes per parallel task, at least 16 Ki elements each.
pub fn prelu_forward<T: Float>(
    x: &[T],
    weight: &[T],
    n: usize,
    c: usize,
    inner: usize,
    y: &mut [T],
) {
    reference::check_prelu(
        "prelu",
        [x.len(), y.len(), y.len()],
        weight.len(),
        [n, c, inner],
    );
    if x.is_empty() {
        return;
    }
    let ppt = planes_per_task(inner);
    y.par_chunks_mut(ppt * inner)
        .zip(x.par_chunks(ppt * inner))
        .enumerate()
        .for_each(|(t, (y, x))| {
            for (p, (y, x)) in y.chunks_mut(inner).zip(x.chunks(inner)).enumerate() {
                let w = weight[if weight.len() == 1 {
                    0
                } else {
                    (t * ppt + p) % c
                }];
                for (o, &v) in y.iter_mut().zip(x) {
                    *o = if v > T::ZERO { v } else { w * v };
                }
            }
        });
}

/// PReLU backward, as [`reference::prelu_backward`]: `dx` bit for bit; the weight gradient
/// from the same products (in `T`, widened to f64), summed in f64 with eight partial sums per
/// plane and then plane after plane per channel, so it differs from the reference only by
/// f64 rounding.
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
    let lens = [x.len(), dy.len(), dx.len()];
    reference::check_prelu("prelu_backward", lens, weight.len(), [n, c, inner]);
    assert_eq!(
        dweight.len(),
        weight.len(),
        "prelu_backward: weight gradient length"
    );
    let planes = n * c;
    let mut sums = vec![0f64; planes];
    if !x.is_empty() {
        let ppt = planes_per_task(inner);
        dx.par_chunks_mut(ppt * inner)
            .zip(x.par_chunks(ppt * inner))
            .zip(dy.par_chunks(ppt * inner))
            .zip(sums.par_chunks_mut(ppt))
            .enumerate()
            .for_each(|(t, (((dx, x), dy), sums))| {
                let planes = dx
                    .chunks_mut(inner)
                    .zip(x.chunks(inner))
                    .zip(dy.chunks(inner));
                for (p, ((dx, x), dy)) in planes.enumerate() {
                    let w = weight[if weight.len() == 1 {
                        0
                    } else {
                        (t * ppt + p) % c
                    }];
                    let mut acc = [0f64; 8];
                    for (i, ((d, &v), &g)) in dx.iter_mut().zip(x).zip(dy).enumerate() {
                        // `!(v > 0)`, not `v <= 0`: NaN takes this branch, as in the reference.
                        if v > T::ZERO {
                            *d = g;
                        } else {
                            *d = w * g;
                            acc[i % 8] += (g * v).to_f64();
                        }
                    }
                    sums[p] = acc.iter().sum();
                }
            });
    }
    for (k, d) in dweight.iter_mut().enumerate() {
        let total: f64 = if weight.len() == 1 {
            sums.iter().sum()
        } else {
            sums.iter().skip(k).step_by(c).sum()
        };
        *d = T::from_f64(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
            })
            .collect()
    }

    /// `values` with NaN, +0 and −0 sprinkled in (the kinks and the NaN pass-through).
    fn awkward(n: usize, seed: u64) -> Vec<f32> {
        let mut v = values(n, seed);
        for (i, x) in v.iter_mut().enumerate() {
            match (i as u64 ^ seed) % 13 {
                0 => *x = f32::NAN,
                1 => *x = 0.0,
                2 => *x = -0.0,
                _ => {}
            }
        }
        v
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn equal_to_the_reference_bit_for_bit(n in 1usize..40_000, seed in any::<u64>(), which in 0usize..4) {
            let x = awkward(n, seed);
            let y = awkward(n, seed ^ 7);
            // Every op written out in `unary_chunk` / `unary_backward_chunk`, and one that is
            // not (exp).
            let ops = [
                UnaryOp::Tanh,
                UnaryOp::Relu,
                UnaryOp::LeakyRelu(0.2),
                UnaryOp::Sigmoid,
                UnaryOp::AddScalar(0.3),
                UnaryOp::MulScalar(-1.7),
                UnaryOp::Exp,
            ];
            for op in ops {
                let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
                unary(op, &x, &mut a);
                reference::unary(op, &x, &mut b);
                prop_assert_eq!(bits(&a), bits(&b), "{:?}", op);
                unary_backward(op, &x, &a, &y, &mut b);
                let mut want = vec![0f32; n];
                reference::unary_backward(op, &x, &a, &y, &mut want);
                prop_assert_eq!(bits(&b), bits(&want), "{:?} backward", op);
            }

            let bops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
            let bop = bops[which];
            for (ls, rs) in [(vec![n], vec![n]), (vec![n], vec![1]), (vec![1], vec![n]), (vec![n, 1], vec![1, 3])] {
                let geom = BroadcastGeom::new(&ls, &rs).unwrap();
                let l = values(ls.iter().product(), seed ^ 3);
                let r: Vec<f32> = values(rs.iter().product(), seed ^ 5).iter().map(|v| v + 4.0).collect();
                let (mut got, mut want) = (vec![0f32; geom.out_len()], vec![0f32; geom.out_len()]);
                binary(bop, &l, &r, &geom, &mut got);
                reference::binary(bop, &l, &r, &geom, &mut want);
                prop_assert_eq!(bits(&got), bits(&want));
            }
        }

        #[test]
        fn prelu_as_the_reference(
            n in 1usize..4, c in 1usize..6, inner in prop_oneof![1usize..40, 16_000usize..20_000],
            shared in any::<bool>(), seed in any::<u64>(),
        ) {
            let len = n * c * inner;
            let (x, dy) = (awkward(len, seed), values(len, seed ^ 9));
            let w = values(if shared { 1 } else { c }, seed ^ 11);
            let (mut got, mut want) = (vec![0f32; len], vec![0f32; len]);
            prelu_forward(&x, &w, n, c, inner, &mut got);
            reference::prelu_forward(&x, &w, n, c, inner, &mut want);
            prop_assert_eq!(bits(&got), bits(&want));

            let (mut dw, mut dw_want) = (vec![f32::NAN; w.len()], vec![0f32; w.len()]);
            prelu_backward(&x, &w, &dy, n, c, inner, &mut got, &mut dw);
            reference::prelu_backward(&x, &w, &dy, n, c, inner, &mut want, &mut dw_want);
            prop_assert_eq!(bits(&got), bits(&want), "dx");
            // The same f64 products summed in another order: f64 rounding, which may move
            // the f32 result by one rounding step. NaN inputs make NaN on both sides.
            let xs: Vec<f32> = x.iter().map(|v| if v.is_nan() { 0.0 } else { v.abs() }).collect();
            let ys: Vec<f32> = dy.iter().map(|v| v.abs()).collect();
            let (mut scratch, mut mag) = (vec![0f32; len], vec![0f32; w.len()]);
            reference::prelu_backward(&xs.iter().map(|v| -v).collect::<Vec<_>>(), &w, &ys, n, c, inner, &mut scratch, &mut mag);
            for k in 0..w.len() {
                let (g, e) = (dw[k], dw_want[k]);
                prop_assert!(
                    (g.is_nan() && e.is_nan()) || (g - e).abs() <= f32::EPSILON * e.abs() + 1e-12 * mag[k].abs(),
                    "weight gradient [{k}]: {g} vs {e}"
                );
            }
        }
    }
}
