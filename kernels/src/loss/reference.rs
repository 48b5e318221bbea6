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
}
