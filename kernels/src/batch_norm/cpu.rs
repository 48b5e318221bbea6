//! Fast batch normalisation: parallel over channels, contiguous runs, no per-element index
//! arithmetic.
//!
//! Channel `k`'s values are `n` contiguous runs of `inner` elements, one per sample, at
//! `(b·c + k)·inner`. Statistics and the backward sums walk those runs for one channel per
//! task, accumulating in `f64` like the reference. The elementwise passes fold the
//! per-channel arithmetic into f32 coefficients: forward `y = (x − μ)·α + b` with `α = w/σ`;
//! backward (training) `dx = (dy − mean(dy))·α + (x − μ)·γ`, with `γ` folding in the
//! `mean(dy·x̂)` term. Centring first (rather than PyTorch's `x·α + β`) avoids cancellation
//! when `α` is large (a channel of near-constant values). Results equal the reference to within f32 rounding.

use super::BatchNormGeom;
use crate::elementwise::UnaryOp;
use crate::Float;
use rayon::prelude::*;

/// The runs of channel `k`: `(start, end)` index ranges.
fn runs(g: &BatchNormGeom, k: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    (0..g.n).map(move |b| {
        let s = (b * g.c + k) * g.inner;
        s..s + g.inner
    })
}

/// `Σ f(i)` over `i < n`, for `N` sums at once, in eight `f64` lanes each: one running
/// sum is a chain of dependent adds, one per 4 cycles or so, where eight lanes vectorise
/// (measured: batch-norm statistics and gradient sums, so chained, were 4.5% of a DCGAN
/// training step). The order differs from a running sum's only in `f64` rounding.
#[inline(always)]
fn lane_sums<const N: usize>(n: usize, f: impl Fn(usize) -> [f64; N]) -> [f64; N] {
    let mut acc = [[0f64; 8]; N];
    let whole = n / 8 * 8;
    for i in (0..whole).step_by(8) {
        for l in 0..8 {
            for (a, v) in acc.iter_mut().zip(f(i + l)) {
                a[l] += v;
            }
        }
    }
    let mut out = acc.map(|a| a.iter().sum::<f64>());
    for i in whole..n {
        for (o, v) in out.iter_mut().zip(f(i)) {
            *o += v;
        }
    }
    out
}

/// Per-channel mean and biased variance (two passes per channel, `f64` sums).
pub fn batch_norm_stats<T: Float>(x: &[T], g: &BatchNormGeom, mean: &mut [T], var: &mut [T]) {
    assert_eq!(x.len(), g.len(), "batch_norm: input length");
    assert!(
        mean.len() == g.c && var.len() == g.c,
        "batch_norm: statistics length"
    );
    let count = g.per_channel() as f64;
    let stats: Vec<(f64, f64)> = (0..g.c)
        .into_par_iter()
        .map(|k| {
            let sum: f64 = runs(g, k)
                .map(|r| {
                    let x = &x[r];
                    lane_sums(x.len(), |i| [x[i].to_f64()])[0]
                })
                .sum();
            let mu = sum / count;
            let sq: f64 = runs(g, k)
                .map(|r| {
                    let x = &x[r];
                    lane_sums(x.len(), |i| [(x[i].to_f64() - mu).powi(2)])[0]
                })
                .sum();
            (mu, sq / count)
        })
        .collect();
    for (k, (mu, v)) in stats.into_iter().enumerate() {
        mean[k] = T::from_f64(mu);
        var[k] = T::from_f64(v);
    }
}

/// Channel `k`'s forward coefficients `(μ, α, b)` of `y = (x − μ)·α + b`, rounded to `T`
/// exactly as the forward pass rounds them (the fused backward recomputes `y` bit for bit).
fn forward_coef<T: Float>(
    mean: &[T],
    var: &[T],
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    eps: f64,
    k: usize,
) -> (T, T, T) {
    let alpha = weight.map_or(1.0, |w| w[k].to_f64()) / (var[k].to_f64() + eps).sqrt();
    (mean[k], T::from_f64(alpha), bias.map_or(T::ZERO, |b| b[k]))
}

/// `y = act((x − mean) / √(var + eps) · weight + bias)`, per channel. `act`, if given, is the
/// activation that follows the norm, fused so that the normalised values are never stored:
/// one read of `x` and one write of `y` instead of two of each.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward<T: Float>(
    x: &[T],
    mean: &[T],
    var: &[T],
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    eps: f64,
    act: Option<UnaryOp>,
    g: &BatchNormGeom,
    y: &mut [T],
) {
    assert!(
        x.len() == g.len() && y.len() == g.len(),
        "batch_norm: buffer lengths"
    );
    if g.inner == 0 {
        return;
    }
    let coef = |k| forward_coef(mean, var, weight, bias, eps, k);
    // The activation is built inside each closure from a literal variant, so its
    // per-element `match` folds away even where `normalize` is not inlined.
    match act {
        None => normalize(x, g, y, coef, |z| z),
        Some(UnaryOp::Relu) => normalize(x, g, y, coef, |z| UnaryOp::Relu.apply(z)),
        Some(UnaryOp::LeakyRelu(s)) => {
            normalize(x, g, y, coef, move |z| UnaryOp::LeakyRelu(s).apply(z))
        }
        Some(op) => normalize(x, g, y, coef, move |z| op.apply(z)),
    }
}

/// The forward's planes (a sample's channel each) in parallel, with the activation `f`
/// monomorphised into the loop.
fn normalize<T: Float>(
    x: &[T],
    g: &BatchNormGeom,
    y: &mut [T],
    coef: impl Fn(usize) -> (T, T, T) + Sync,
    f: impl Fn(T) -> T + Sync,
) {
    y.par_chunks_mut(g.inner)
        .enumerate()
        .for_each(|(plane, out)| {
            let (mu, a, b) = coef(plane % g.c);
            let src = &x[plane * g.inner..(plane + 1) * g.inner];
            for (o, &v) in out.iter_mut().zip(src) {
                *o = (v - mu) * a + b;
            }
            // A second sweep over the plane while it is in L1: two simple loops vectorise
            // where one with the activation's select inside does not.
            for o in out.iter_mut() {
                *o = f(*o);
            }
        });
}

/// Batch-norm backward; see the reference for the formulas. With `act`, `dy` is the gradient
/// of the activation's output, and the norm's output `z` is recomputed from `x` (bit for bit
/// as the forward computed it) to take the activation's derivative on the fly: the gradient
/// `dz = dy·act'(z)` is never stored.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    x: &[T],
    dy: &[T],
    mean: &[T],
    var: &[T],
    affine: (Option<&[T]>, Option<&[T]>),
    eps: f64,
    training: bool,
    act: Option<UnaryOp>,
    g: &BatchNormGeom,
    dx: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
) {
    assert!(
        x.len() == g.len() && dy.len() == g.len() && dx.len() == g.len(),
        "batch_norm_backward: lengths"
    );
    assert!(
        dweight.len() == g.c && dbias.len() == g.c,
        "batch_norm_backward: parameter lengths"
    );
    let (weight, bias) = affine;
    let coef = |k| forward_coef(mean, var, weight, bias, eps, k);
    let args = BackwardArgs {
        x,
        dy,
        mean,
        var,
        weight,
        eps,
        training,
        g,
    };
    // `dz(dy, z) = dy·act'(z)`, with the op built inside the closure as in the forward.
    #[inline(always)]
    fn dz<T: Float>(op: UnaryOp, d: T, z: T) -> T {
        d * op.derivative(z, op.apply(z))
    }
    match act {
        None => backward(&args, coef, |d, _| d, dx, dweight, dbias),
        Some(UnaryOp::Relu) => backward(
            &args,
            coef,
            |d, z| dz(UnaryOp::Relu, d, z),
            dx,
            dweight,
            dbias,
        ),
        Some(UnaryOp::LeakyRelu(s)) => backward(
            &args,
            coef,
            move |d, z| dz(UnaryOp::LeakyRelu(s), d, z),
            dx,
            dweight,
            dbias,
        ),
        Some(op) => backward(&args, coef, move |d, z| dz(op, d, z), dx, dweight, dbias),
    }
}

struct BackwardArgs<'a, T> {
    x: &'a [T],
    dy: &'a [T],
    mean: &'a [T],
    var: &'a [T],
    weight: Option<&'a [T]>,
    eps: f64,
    training: bool,
    g: &'a BatchNormGeom,
}

/// Elements of `dz` formed at a time in the backward's sums.
const BLOCK: usize = 256;

/// The backward's two passes, with `dz(dy, z)` the gradient reaching the norm's output.
fn backward<T: Float>(
    a: &BackwardArgs<'_, T>,
    coef: impl Fn(usize) -> (T, T, T) + Sync,
    dz: impl Fn(T, T) -> T + Sync,
    dx: &mut [T],
    dweight: &mut [T],
    dbias: &mut [T],
) {
    let (x, dy, g) = (a.x, a.dy, a.g);
    let count = g.per_channel() as f64;
    // Per channel: Σdz and Σdz·x̂ (x̂ = (x − μ)/σ), then the coefficients of
    // dx = (dz − mean(dz))·α + (x − μ)·γ.
    let sums: Vec<(f64, f64, [f64; 3])> = (0..g.c)
        .into_par_iter()
        .map(|k| {
            let mu = a.mean[k].to_f64();
            let inv_std = 1.0 / (a.var[k].to_f64() + a.eps).sqrt();
            let (fmu, fa, fb) = coef(k);
            let (mut s_dy, mut s_dyx) = (0f64, 0f64);
            // dz is formed a block at a time in a stack buffer, then summed: two simple loops
            // vectorise where one with the activation's select inside does not.
            let mut block = [T::ZERO; BLOCK];
            for r in runs(g, k) {
                for (dyb, xb) in dy[r.clone()].chunks(BLOCK).zip(x[r].chunks(BLOCK)) {
                    let block = &mut block[..dyb.len()];
                    for ((o, &d), &v) in block.iter_mut().zip(dyb).zip(xb) {
                        *o = dz(d, (v - fmu) * fa + fb);
                    }
                    let [a, b] = lane_sums(block.len(), |i| {
                        let d = block[i].to_f64();
                        [d, d * (xb[i].to_f64() - mu)]
                    });
                    s_dy += a;
                    s_dyx += b;
                }
            }
            let s_dy_xhat = s_dyx * inv_std;
            let scale = a.weight.map_or(1.0, |w| w[k].to_f64()) * inv_std;
            let abc = if a.training {
                // dx = scale·(dz − Σdz/m − x̂·Σ(dz·x̂)/m), x̂ = (x − μ)·inv_std
                let gamma = -scale * inv_std * s_dy_xhat / count;
                [scale, gamma, s_dy / count]
            } else {
                [scale, 0.0, 0.0]
            };
            (s_dy_xhat, s_dy, abc)
        })
        .collect();
    if g.inner > 0 {
        dx.par_chunks_mut(g.inner)
            .enumerate()
            .for_each(|(plane, out)| {
                let k = plane % g.c;
                let [sa, gm, d] = sums[k].2;
                let mu = a.mean[k];
                let (sa, gm, d) = (T::from_f64(sa), T::from_f64(gm), T::from_f64(d));
                let (fmu, fa, fb) = coef(k);
                let r = plane * g.inner..(plane + 1) * g.inner;
                let (dy, x) = (&dy[r.clone()], &x[r]);
                for ((o, &dyv), &xv) in out.iter_mut().zip(dy).zip(x) {
                    *o = dz(dyv, (xv - fmu) * fa + fb);
                }
                for (o, &xv) in out.iter_mut().zip(x) {
                    *o = (*o - d) * sa + (xv - mu) * gm;
                }
            });
    }
    for (k, (dw, db, _)) in sums.into_iter().enumerate() {
        dweight[k] = T::from_f64(dw);
        dbias[k] = T::from_f64(db);
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference;
    use super::*;
    use proptest::prelude::*;

    fn close(a: &[f32], b: &[f32], what: &str) -> std::result::Result<(), TestCaseError> {
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            prop_assert!(
                (x - y).abs() <= 2e-5 * scale,
                "{}[{}]: {} vs {}",
                what,
                i,
                x,
                y
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Awkward geometries: batch 1, one channel, odd planes, 1x1 planes.
        #[test]
        fn equal_to_the_reference(n in 1usize..5, c in 1usize..7, inner in 1usize..40, training in any::<bool>(), affine in any::<bool>(), seed in any::<u64>()) {
            let g = BatchNormGeom { n, c, inner };
            let mut s = seed | 1;
            let mut rnd = |scale: f32, shift: f32| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale + shift
            };
            let x: Vec<f32> = (0..g.len()).map(|_| rnd(4.0, 1.5)).collect();
            let dy: Vec<f32> = (0..g.len()).map(|_| rnd(2.0, 0.0)).collect();
            let w: Vec<f32> = (0..c).map(|_| rnd(1.0, 1.0)).collect();
            let b: Vec<f32> = (0..c).map(|_| rnd(1.0, 0.0)).collect();
            let (w, b) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };

            let (mut m1, mut v1, mut m2, mut v2) = (vec![0f32; c], vec![0f32; c], vec![0f32; c], vec![0f32; c]);
            batch_norm_stats(&x, &g, &mut m1, &mut v1);
            reference::batch_norm_stats(&x, &g, &mut m2, &mut v2);
            // Same f64 sums, grouped per sample run and in eight lanes: equal after rounding
            // to f32 but for ties.
            close(&m1, &m2, "mean")?;
            close(&v1, &v2, "var")?;

            let (mut y1, mut y2) = (vec![0f32; g.len()], vec![0f32; g.len()]);
            batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, None, &g, &mut y1);
            reference::batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, &g, &mut y2);
            close(&y1, &y2, "y")?;

            let (mut dx1, mut dw1, mut db1) = (vec![0f32; g.len()], vec![0f32; c], vec![0f32; c]);
            let (mut dx2, mut dw2, mut db2) = (vec![0f32; g.len()], vec![0f32; c], vec![0f32; c]);
            batch_norm_backward(&x, &dy, &m1, &v1, (w, b), 1e-5, training, None, &g, &mut dx1, &mut dw1, &mut db1);
            reference::batch_norm_backward(&x, &dy, &m1, &v1, w, 1e-5, training, &g, &mut dx2, &mut dw2, &mut db2);
            close(&dx1, &dx2, "dx")?;
            close(&dw1, &dw2, "dweight")?;
            close(&db1, &db2, "dbias")?;

            // Fused with an activation: bit for bit the unfused fast kernels, and close to the
            // reference composition.
            let act = [UnaryOp::Relu, UnaryOp::LeakyRelu(0.2), UnaryOp::Tanh][(seed % 3) as usize];
            let mut fused = vec![0f32; g.len()];
            batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, Some(act), &g, &mut fused);
            let mut z_then_act = vec![0f32; g.len()];
            crate::elementwise::cpu::unary(act, &y1, &mut z_then_act);
            prop_assert_eq!(bits(&fused), bits(&z_then_act));
            let mut r = vec![0f32; g.len()];
            reference::batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, &g, &mut y2);
            crate::elementwise::reference::unary(act, &y2, &mut r);
            close(&fused, &r, "act(y)")?;

            let (mut fdx, mut fdw, mut fdb) = (vec![0f32; g.len()], vec![0f32; c], vec![0f32; c]);
            batch_norm_backward(&x, &dy, &m1, &v1, (w, b), 1e-5, training, Some(act), &g, &mut fdx, &mut fdw, &mut fdb);
            let mut dz = vec![0f32; g.len()];
            crate::elementwise::cpu::unary_backward(act, &y1, &fused, &dy, &mut dz);
            batch_norm_backward(&x, &dz, &m1, &v1, (w, b), 1e-5, training, None, &g, &mut dx1, &mut dw1, &mut db1);
            prop_assert_eq!(bits(&fdx), bits(&dx1));
            prop_assert_eq!(bits(&fdw), bits(&dw1));
            prop_assert_eq!(bits(&fdb), bits(&db1));
            let mut rdz = vec![0f32; g.len()];
            crate::elementwise::reference::unary_backward(act, &y2, &r, &dy, &mut rdz);
            reference::batch_norm_backward(&x, &rdz, &m1, &v1, w, 1e-5, training, &g, &mut dx2, &mut dw2, &mut db2);
            close(&fdx, &dx2, "dx (fused)")?;
            close(&fdw, &dw2, "dweight (fused)")?;
            close(&fdb, &db2, "dbias (fused)")?;
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
