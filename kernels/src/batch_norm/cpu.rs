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
use crate::Float;
use rayon::prelude::*;

/// The runs of channel `k`: `(start, end)` index ranges.
fn runs(g: &BatchNormGeom, k: usize) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    (0..g.n).map(move |b| {
        let s = (b * g.c + k) * g.inner;
        s..s + g.inner
    })
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
                .map(|r| x[r].iter().map(|v| v.to_f64()).sum::<f64>())
                .sum();
            let mu = sum / count;
            let sq: f64 = runs(g, k)
                .map(|r| x[r].iter().map(|v| (v.to_f64() - mu).powi(2)).sum::<f64>())
                .sum();
            (mu, sq / count)
        })
        .collect();
    for (k, (mu, v)) in stats.into_iter().enumerate() {
        mean[k] = T::from_f64(mu);
        var[k] = T::from_f64(v);
    }
}

/// `y = (x − mean) / √(var + eps) · weight + bias`, per channel.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward<T: Float>(
    x: &[T],
    mean: &[T],
    var: &[T],
    weight: Option<&[T]>,
    bias: Option<&[T]>,
    eps: f64,
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
    y.par_chunks_mut(g.inner)
        .enumerate()
        .for_each(|(plane, out)| {
            let k = plane % g.c;
            let alpha = weight.map_or(1.0, |w| w[k].to_f64()) / (var[k].to_f64() + eps).sqrt();
            let a = T::from_f64(alpha);
            let b = bias.map_or(T::ZERO, |b| b[k]);
            let mu = mean[k];
            let src = &x[plane * g.inner..(plane + 1) * g.inner];
            for (o, &v) in out.iter_mut().zip(src) {
                *o = (v - mu) * a + b;
            }
        });
}

/// Batch-norm backward; see the reference for the formulas.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward<T: Float>(
    x: &[T],
    dy: &[T],
    mean: &[T],
    var: &[T],
    weight: Option<&[T]>,
    eps: f64,
    training: bool,
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
    let count = g.per_channel() as f64;
    // Per channel: Σdy and Σdy·x̂ (x̂ = (x − μ)/σ), then the coefficients of
    // dx = (dy − mean(dy))·α + (x − μ)·γ.
    let coef: Vec<(f64, f64, [f64; 3])> = (0..g.c)
        .into_par_iter()
        .map(|k| {
            let mu = mean[k].to_f64();
            let inv_std = 1.0 / (var[k].to_f64() + eps).sqrt();
            let (mut s_dy, mut s_dyx) = (0f64, 0f64);
            for r in runs(g, k) {
                for (d, v) in dy[r.clone()].iter().zip(&x[r]) {
                    let d = d.to_f64();
                    s_dy += d;
                    s_dyx += d * (v.to_f64() - mu);
                }
            }
            let s_dy_xhat = s_dyx * inv_std;
            let scale = weight.map_or(1.0, |w| w[k].to_f64()) * inv_std;
            let abc = if training {
                // dx = scale·(dy − Σdy/m − x̂·Σ(dy·x̂)/m), x̂ = (x − μ)·inv_std
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
                let [a, gm, d] = coef[k].2;
                let mu = mean[k];
                let (a, gm, d) = (T::from_f64(a), T::from_f64(gm), T::from_f64(d));
                let r = plane * g.inner..(plane + 1) * g.inner;
                for ((o, &dyv), &xv) in out.iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
                    *o = (dyv - d) * a + (xv - mu) * gm;
                }
            });
    }
    for (k, (dw, db, _)) in coef.into_iter().enumerate() {
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
            // Same f64 sums, grouped per sample run: equal after rounding to f32 but for ties.
            close(&m1, &m2, "mean")?;
            close(&v1, &v2, "var")?;

            let (mut y1, mut y2) = (vec![0f32; g.len()], vec![0f32; g.len()]);
            batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, &g, &mut y1);
            reference::batch_norm_forward(&x, &m1, &v1, w, b, 1e-5, &g, &mut y2);
            close(&y1, &y2, "y")?;

            let (mut dx1, mut dw1, mut db1) = (vec![0f32; g.len()], vec![0f32; c], vec![0f32; c]);
            let (mut dx2, mut dw2, mut db2) = (vec![0f32; g.len()], vec![0f32; c], vec![0f32; c]);
            batch_norm_backward(&x, &dy, &m1, &v1, w, 1e-5, training, &g, &mut dx1, &mut dw1, &mut db1);
            reference::batch_norm_backward(&x, &dy, &m1, &v1, w, 1e-5, training, &g, &mut dx2, &mut dw2, &mut db2);
            close(&dx1, &dx2, "dx")?;
            close(&dw1, &dw2, "dweight")?;
            close(&db1, &db2, "dbias")?;
        }
    }
}
