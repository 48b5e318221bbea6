//! Loss functions.

use crate::ops::{check_float, check_same};
use crate::{Error, Result, Tensor};

/// How per-element losses are combined, as PyTorch's `reduction=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The per-element losses, in the input's shape.
    None,
    /// Their mean (a 0-d tensor).
    #[default]
    Mean,
    /// Their sum (a 0-d tensor).
    Sum,
}

impl Reduction {
    fn apply(self, t: Tensor) -> Result<Tensor> {
        match self {
            Reduction::None => Ok(t),
            Reduction::Mean => t.mean_all(),
            Reduction::Sum => t.sum_all(),
        }
    }
}

fn check_pair(op: &'static str, input: &Tensor, target: &Tensor) -> Result<()> {
    check_same(op, &[input, target])?;
    check_float(op, input)?;
    if input.shape() != target.shape() {
        return Err(Error::shape(
            op,
            format!(
                "input shape {} differs from target shape {}",
                input.shape(),
                target.shape()
            ),
        ));
    }
    Ok(())
}

/// Binary cross-entropy on logits (the discriminator's raw scores), computed in the stable
/// form `max(x, 0) − x·t + ln(1 + e^−|x|)`: equal to `BCE(sigmoid(x), t)` but finite for any
/// logit. Targets may be soft (in `[0, 1]`); both arguments get gradients.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let op = "bce_with_logits";
    check_pair(op, logits, target)?;
    let per_elem = logits.storage().bce_with_logits(&target.storage())?;
    let loss = Tensor::from_op(
        per_elem,
        logits.shape().clone(),
        op,
        &[logits, target],
        |ctx| {
            let (x, t) = (&ctx.inputs[0], &ctx.inputs[1]);
            let (dx, dt) = x
                .storage()
                .bce_with_logits_backward(&t.storage(), &ctx.grad.storage())?;
            Ok(vec![
                Some(Tensor::from_storage(dx, x.shape().clone())),
                Some(Tensor::from_storage(dt, t.shape().clone())),
            ])
        },
    );
    reduction.apply(loss)
}

/// Binary cross-entropy on probabilities (the output of a sigmoid), as PyTorch's
/// `binary_cross_entropy`: `−(t·ln p + (1 − t)·ln(1 − p))` with each log floored at −100, so a
/// saturated probability costs 100 rather than infinity. Every `p` must lie in `[0, 1]` (an error
/// otherwise). Prefer [`bce_with_logits`], which is stable for any score.
pub fn bce(probs: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    let op = "bce";
    check_pair(op, probs, target)?;
    let per_elem = probs.storage().bce(&target.storage())?;
    let loss = Tensor::from_op(
        per_elem,
        probs.shape().clone(),
        op,
        &[probs, target],
        |ctx| {
            let (p, t) = (&ctx.inputs[0], &ctx.inputs[1]);
            let (dp, dt) = p
                .storage()
                .bce_backward(&t.storage(), &ctx.grad.storage())?;
            Ok(vec![
                Some(Tensor::from_storage(dp, p.shape().clone())),
                Some(Tensor::from_storage(dt, t.shape().clone())),
            ])
        },
    );
    reduction.apply(loss)
}

/// Mean squared error `(input − target)²`, reduced.
pub fn mse(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_pair("mse", input, target)?;
    reduction.apply(input.sub(target)?.sqr()?)
}

/// Absolute error `|input − target|`, reduced (gradient 0 where they are equal, as PyTorch).
pub fn l1(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_pair("l1", input, target)?;
    reduction.apply(input.sub(target)?.abs()?)
}
