//! Losses: those of `gantry-core` (`bce_with_logits`, `bce`, `mse`, `l1`, each with a
//! [`Reduction`]) and label smoothing for the discriminator.

pub use gantry_core::loss::*;
use gantry_core::{Error, Result, Tensor};

/// [`bce_with_logits`] with one-sided label smoothing (Salimans et al. 2016): targets are
/// scaled by `1 − smoothing`, so real labels 1 become `1 − smoothing` and fake labels 0 stay 0.
/// `smoothing = 0` is plain `bce_with_logits`.
pub fn bce_with_logits_smoothed(
    logits: &Tensor,
    target: &Tensor,
    smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    if !(0.0..1.0).contains(&smoothing) {
        return Err(Error::invalid(
            "bce_with_logits_smoothed",
            format!("smoothing must be in [0, 1), got {smoothing}"),
        ));
    }
    let target = if smoothing == 0.0 {
        target.clone()
    } else {
        target.mul_scalar(1.0 - smoothing)?
    };
    bce_with_logits(logits, &target, reduction)
}
