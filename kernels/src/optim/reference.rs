//! Reference optimizer updates: one plain loop per step.

use super::{AdamStep, SgdStep};
use crate::Float;

/// PyTorch's `lerp(a, b, w)`: `a + w·(b − a)` for `|w| < ½`, else `b − (b − a)·(1 − w)`
/// (the second form is exact at `w = 1`).
#[inline]
fn lerp<T: Float>(a: T, b: T, w: T) -> T {
    if w.abs() < T::from_f64(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (T::ONE - w)
    }
}

/// One Adam step in place over `param`, with moments `m` (first) and `v` (second):
///
/// ```text
/// g ← g + wd·θ                          (if weight_decay ≠ 0)
/// m ← lerp(m, g, 1 − β₁)
/// v ← β₂·v + (1 − β₂)·g²
/// θ ← θ − step_size · m / (√v / √(1 − β₂^t) + ε)      step_size = lr / (1 − β₁^t)
/// ```
///
/// ε is added after the square root, as in PyTorch (not inside it, as in some papers).
pub fn adam_step<T: Float>(param: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], h: &AdamStep) {
    let n = param.len();
    assert!(
        grad.len() == n && m.len() == n && v.len() == n,
        "adam_step: lengths"
    );
    let wd = T::from_f64(h.weight_decay);
    let one_minus_b1 = T::from_f64(1.0 - h.beta1);
    let b2 = T::from_f64(h.beta2);
    let one_minus_b2 = T::from_f64(1.0 - h.beta2);
    let bc2_sqrt = T::from_f64(h.bias_correction2_sqrt());
    let eps = T::from_f64(h.eps);
    let neg_step = T::from_f64(-h.step_size());
    for i in 0..n {
        let mut g = grad[i];
        if h.weight_decay != 0.0 {
            g += wd * param[i];
        }
        m[i] = lerp(m[i], g, one_minus_b1);
        v[i] = v[i] * b2 + one_minus_b2 * g * g;
        let denom = v[i].sqrt() / bc2_sqrt + eps;
        param[i] += neg_step * (m[i] / denom);
    }
}

/// One SGD step in place, with an optional momentum buffer `buf` (needed when
/// `momentum ≠ 0`):
///
/// ```text
/// g ← g + wd·θ
/// b ← g (first step) or μ·b + (1 − dampening)·g
/// g ← g + μ·b (nesterov) or b
/// θ ← θ − lr·g
/// ```
pub fn sgd_step<T: Float>(param: &mut [T], grad: &[T], buf: Option<&mut [T]>, h: &SgdStep) {
    let n = param.len();
    assert_eq!(grad.len(), n, "sgd_step: lengths");
    let wd = T::from_f64(h.weight_decay);
    let mu = T::from_f64(h.momentum);
    let keep = T::from_f64(1.0 - h.dampening);
    let neg_lr = T::from_f64(-h.lr);
    let mut buf = buf;
    if let Some(b) = buf.as_deref() {
        assert_eq!(b.len(), n, "sgd_step: momentum buffer length");
    }
    for i in 0..n {
        let mut g = grad[i];
        if h.weight_decay != 0.0 {
            g += wd * param[i];
        }
        if let Some(b) = buf.as_deref_mut() {
            b[i] = if h.first { g } else { b[i] * mu + keep * g };
            g = if h.nesterov { g + mu * b[i] } else { b[i] };
        }
        param[i] += neg_lr * g;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_each_weight_by_about_lr() {
        // At step 1 the bias-corrected update is lr · g / (|g| + ε'), i.e. about ±lr.
        let h = AdamStep {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            step: 1,
        };
        let mut p = [1.0f64, -2.0, 0.5];
        let g = [0.3, -4.0, 1e-3];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        adam_step(&mut p, &g, &mut m, &mut v, &h);
        for (i, (pi, start)) in p.iter().zip([1.0, -2.0, 0.5]).enumerate() {
            let expected = start - 0.01 * g[i].signum() * g[i].abs() / (g[i].abs() + 1e-8);
            assert!((pi - expected).abs() < 1e-9, "{i}: {pi} vs {expected}");
        }
        assert!((m[1] - (-0.4)).abs() < 1e-12 && (v[1] - 0.016).abs() < 1e-12);
    }

    #[test]
    fn sgd_momentum_and_nesterov_follow_their_recurrences() {
        let mut h = SgdStep {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            first: true,
        };
        let (mut p, mut b) = ([1.0f64], [0.0]);
        sgd_step(&mut p, &[2.0], Some(&mut b), &h); // b = 2, p = 1 − 0.2
        h.first = false;
        sgd_step(&mut p, &[2.0], Some(&mut b), &h); // b = 3.8, p = 0.8 − 0.38
        assert!((b[0] - 3.8).abs() < 1e-12 && (p[0] - 0.42).abs() < 1e-12);
        h.nesterov = true;
        sgd_step(&mut p, &[1.0], Some(&mut b), &h); // b = 4.42, g = 1 + 3.978
        assert!((p[0] - (0.42 - 0.1 * (1.0 + 0.9 * 4.42))).abs() < 1e-12);
    }
}
