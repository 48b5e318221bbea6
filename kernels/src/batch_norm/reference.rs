//! Reference batch normalisation (two passes over the data; `f64` accumulation).

use super::BatchNormGeom;
use crate::Float;

/// Per-channel mean and *biased* variance (divided by `n · inner`, as the normalisation uses).
pub fn batch_norm_stats<T: Float>(x: &[T], g: &BatchNormGeom, mean: &mut [T], var: &mut [T]) {
    assert_eq!(x.len(), g.len(), "batch_norm: input length");
    assert!(
        mean.len() == g.c && var.len() == g.c,
        "batch_norm: statistics length"
    );
    let count = g.per_channel() as f64;
    let mut sum = vec![0f64; g.c];
    for (i, v) in x.iter().enumerate() {
        sum[g.channel(i)] += v.to_f64();
    }
    let mu: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let mut sq = vec![0f64; g.c];
    for (i, v) in x.iter().enumerate() {
        let k = g.channel(i);
        sq[k] += (v.to_f64() - mu[k]).powi(2);
    }
    for k in 0..g.c {
        mean[k] = T::from_f64(mu[k]);
        var[k] = T::from_f64(sq[k] / count);
    }
}

/// `y = (x − mean[c]) / √(var[c] + eps) · weight[c] + bias[c]` (weight 1 and bias 0 if absent).
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
    for (i, (o, v)) in y.iter_mut().zip(x).enumerate() {
        let k = g.channel(i);
        let xhat = (v.to_f64() - mean[k].to_f64()) / (var[k].to_f64() + eps).sqrt();
        let (w, b) = (
            weight.map_or(1.0, |w| w[k].to_f64()),
            bias.map_or(0.0, |b| b[k].to_f64()),
        );
        *o = T::from_f64(xhat * w + b);
    }
}

/// Batch-norm backward. With `training`, `mean`/`var` are the batch's own statistics and
/// the gradient flows through them too:
///
/// `dx = w·σ⁻¹ · (dy − mean(dy) − x̂ · mean(dy · x̂))`, the per-channel means over `n · inner`.
///
/// Without, they are constants (evaluation mode): `dx = w·σ⁻¹·dy`. In both cases
/// `dweight = Σ dy · x̂` and `dbias = Σ dy`.
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
    let inv_std: Vec<f64> = var
        .iter()
        .map(|v| 1.0 / (v.to_f64() + eps).sqrt())
        .collect();
    let xhat = |i: usize| (x[i].to_f64() - mean[g.channel(i)].to_f64()) * inv_std[g.channel(i)];
    let (mut sum_dy, mut sum_dy_xhat) = (vec![0f64; g.c], vec![0f64; g.c]);
    for (i, d) in dy.iter().enumerate() {
        let k = g.channel(i);
        sum_dy[k] += d.to_f64();
        sum_dy_xhat[k] += d.to_f64() * xhat(i);
    }
    let count = g.per_channel() as f64;
    for i in 0..g.len() {
        let k = g.channel(i);
        let scale = weight.map_or(1.0, |w| w[k].to_f64()) * inv_std[k];
        let d = if training {
            dy[i].to_f64() - sum_dy[k] / count - xhat(i) * sum_dy_xhat[k] / count
        } else {
            dy[i].to_f64()
        };
        dx[i] = T::from_f64(scale * d);
    }
    for k in 0..g.c {
        dweight[k] = T::from_f64(sum_dy_xhat[k]);
        dbias[k] = T::from_f64(sum_dy[k]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_channel() {
        // n=2, c=2, inner=1: channel 0 sees {1, 3}, channel 1 sees {2, 6}.
        let g = BatchNormGeom {
            n: 2,
            c: 2,
            inner: 1,
        };
        let x = [1.0f64, 2.0, 3.0, 6.0];
        let (mut m, mut v) = ([0.0; 2], [0.0; 2]);
        batch_norm_stats(&x, &g, &mut m, &mut v);
        assert_eq!(m, [2.0, 4.0]);
        assert_eq!(v, [1.0, 4.0]);
        let mut y = [0.0; 4];
        batch_norm_forward(
            &x,
            &m,
            &v,
            Some(&[2.0, 1.0]),
            Some(&[0.0, 10.0]),
            0.0,
            &g,
            &mut y,
        );
        assert_eq!(y, [-2.0, 9.0, 2.0, 11.0]);
    }

    #[test]
    fn training_gradient_of_sum_is_zero() {
        // The normalised output of a channel sums to a constant (0 · w + n · b), so with
        // dy = 1 the input gradient vanishes in training mode.
        let g = BatchNormGeom {
            n: 3,
            c: 1,
            inner: 2,
        };
        let x = [0.3f64, -1.0, 2.0, 0.5, 0.1, 4.0];
        let (mut m, mut v) = ([0.0; 1], [0.0; 1]);
        batch_norm_stats(&x, &g, &mut m, &mut v);
        let (mut dx, mut dw, mut db) = ([1.0; 6], [0.0; 1], [0.0; 1]);
        batch_norm_backward(
            &x,
            &[1.0; 6],
            &m,
            &v,
            Some(&[3.0]),
            1e-5,
            true,
            &g,
            &mut dx,
            &mut dw,
            &mut db,
        );
        assert!(dx.iter().all(|d| d.abs() < 1e-12), "{dx:?}");
        assert!(dw[0].abs() < 1e-12);
        assert_eq!(db[0], 6.0);
    }
}
