//! Reference loss kernels.

use crate::elementwise::sigmoid;
use crate::Float;

/// Binary cross-entropy on logits, per element, in the stable form
/// `max(x, 0) − x·t + ln(1 + e^−|x|)`, which equals `−t·ln σ(x) − (1 − t)·ln(1 − σ(x))`
/// without ever taking the log of 0 or overflowing `e^x`.
pub fn bce_with_logits<T: Float>(x: &[T], t: &[T], out: &mut [T]) {
    assert!(
        x.len() == t.len() && out.len() == x.len(),
        "bce_with_logits: lengths"
    );
    for i in 0..x.len() {
        let (xi, ti) = (x[i], t[i]);
        let relu = if xi > T::ZERO { xi } else { T::ZERO };
        out[i] = relu - xi * ti + (-xi.abs()).exp().ln_1p();
    }
}

/// Backward of [`bce_with_logits`]: `dx = dy · (σ(x) − t)`, `dt = −dy · x`.
pub fn bce_with_logits_backward<T: Float>(x: &[T], t: &[T], dy: &[T], dx: &mut [T], dt: &mut [T]) {
    let n = x.len();
    assert!(
        t.len() == n && dy.len() == n && dx.len() == n && dt.len() == n,
        "bce_with_logits_backward: lengths"
    );
    for i in 0..n {
        dx[i] = dy[i] * (sigmoid(x[i]) - t[i]);
        dt[i] = -dy[i] * x[i];
    }
}

/// The floor PyTorch puts under the logarithms of [`bce`], so a probability of exactly 0 or 1
/// costs 100 instead of infinity.
pub const BCE_LOG_FLOOR: f64 = -100.0;

/// Binary cross-entropy on probabilities `p ∈ [0, 1]`, per element:
/// `−(t·max(ln p, −100) + (1 − t)·max(ln(1 − p), −100))`, as PyTorch's `binary_cross_entropy`.
/// Returns `false` (and leaves the rest of `out` unspecified) if some `p` lies outside `[0, 1]`
/// or is NaN, which the caller reports.
pub fn bce<T: Float>(p: &[T], t: &[T], out: &mut [T]) -> bool {
    assert!(p.len() == t.len() && out.len() == p.len(), "bce: lengths");
    let floor = T::from_f64(BCE_LOG_FLOOR);
    for i in 0..p.len() {
        let (pi, ti) = (p[i], t[i]);
        if !(pi >= T::ZERO && pi <= T::ONE) {
            return false;
        }
        let log_p = pi.ln().max_nan(floor);
        let log_q = (-pi).ln_1p().max_nan(floor);
        out[i] = (ti - T::ONE) * log_q - ti * log_p;
    }
    true
}

/// Backward of [`bce`], as PyTorch computes it: `dp = dy · (p − t) / max(p·(1 − p), 1e-12)`
/// (the clamp keeps the gradient finite at `p ∈ {0, 1}`), and `dt = dy · (max(ln(1 − p), −100) −
/// max(ln p, −100))`, the exact derivative of the loss in `t`.
pub fn bce_backward<T: Float>(p: &[T], t: &[T], dy: &[T], dp: &mut [T], dt: &mut [T]) {
    let n = p.len();
    assert!(
        t.len() == n && dy.len() == n && dp.len() == n && dt.len() == n,
        "bce_backward: lengths"
    );
    let floor = T::from_f64(BCE_LOG_FLOOR);
    let tiny = T::from_f64(1e-12);
    for i in 0..n {
        let (pi, ti) = (p[i], t[i]);
        dp[i] = dy[i] * (pi - ti) / ((T::ONE - pi) * pi).max_nan(tiny);
        dt[i] = dy[i] * ((-pi).ln_1p().max_nan(floor) - pi.ln().max_nan(floor));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_textbook_form_and_stays_finite() {
        let x = [-3.0f64, 0.0, 2.5];
        let t = [0.0, 1.0, 0.3];
        let mut out = [0.0; 3];
        bce_with_logits(&x, &t, &mut out);
        for i in 0..3 {
            let s = 1.0 / (1.0 + (-x[i]).exp());
            let textbook = -t[i] * s.ln() - (1.0 - t[i]) * (1.0 - s).ln();
            assert!((out[i] - textbook).abs() < 1e-12);
        }
        // Large logits: the textbook form gives inf/NaN, the stable form is exact.
        let mut big = [0.0f32; 2];
        bce_with_logits(&[100.0f32, -100.0], &[0.0, 1.0], &mut big);
        assert_eq!(big, [100.0, 100.0]);
    }

    #[test]
    fn bce_matches_the_textbook_form_and_floors_the_logs() {
        let p = [0.1f64, 0.5, 0.93];
        let t = [0.0, 1.0, 0.3];
        let mut out = [0.0; 3];
        assert!(bce(&p, &t, &mut out));
        for i in 0..3 {
            let textbook = -t[i] * p[i].ln() - (1.0 - t[i]) * (1.0 - p[i]).ln();
            assert!((out[i] - textbook).abs() < 1e-12);
        }
        let mut edge = [0.0f32; 2];
        assert!(bce(&[0.0f32, 1.0], &[1.0, 0.0], &mut edge));
        assert_eq!(edge, [100.0, 100.0]);
        assert!(!bce(&[1.5f32], &[1.0], &mut [0.0]));
        assert!(!bce(&[f32::NAN], &[1.0], &mut [0.0]));
    }
}
