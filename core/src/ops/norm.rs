//! Batch normalisation.

use super::{check_float, check_same};
use crate::{Error, Result, Tensor};
use gantry_kernels::batch_norm::BatchNormGeom;
use gantry_kernels::elementwise::UnaryOp;

/// The per-channel statistics a batch norm normalised with: the batch's own mean and *biased*
/// variance in training mode (constants, no gradient), or the given running statistics in
/// evaluation mode. A running-statistics update wants the unbiased variance,
/// `var · m / (m − 1)` with `m` = [`BatchStats::count`].
#[derive(Clone, Debug)]
pub struct BatchStats {
    pub mean: Tensor,
    pub var: Tensor,
    /// Elements per channel the statistics were taken over (`n · h · w`).
    pub count: usize,
}

impl Tensor {
    /// Validates the input and the optional affine parameters (and `extra` per-channel
    /// tensors, named), and returns the geometry.
    fn bn_check(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        extra: &[(&str, &Tensor)],
    ) -> Result<BatchNormGeom> {
        let op = "batch_norm";
        check_float(op, self)?;
        if self.rank() < 2 {
            return Err(Error::shape(
                op,
                format!(
                    "input must be [n, c, …] with at least 2 dimensions, got {}",
                    self.shape()
                ),
            ));
        }
        let d = self.dims();
        let geom = BatchNormGeom {
            n: d[0],
            c: d[1],
            inner: d[2..].iter().product(),
        };
        let named = [("weight", weight), ("bias", bias)];
        let per_channel = extra.iter().map(|&(n, t)| (n, Some(t))).chain(named);
        let mut all = vec![self];
        for (what, t) in per_channel {
            let Some(t) = t else { continue };
            if t.dims() != [geom.c] {
                return Err(Error::shape(
                    op,
                    format!("{what} must have shape [{}], got {}", geom.c, t.shape()),
                ));
            }
            all.push(t);
        }
        check_same(op, &all)?;
        Ok(geom)
    }

    /// Batch norm in training mode: normalises each channel (dimension 1) with the batch's own
    /// mean and biased variance, then scales by `weight` and shifts by `bias` (both `[c]`,
    /// optional). Returns the output and the batch statistics.
    pub fn batch_norm_train(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<(Tensor, BatchStats)> {
        self.batch_norm_train_act(weight, bias, eps, None)
    }

    /// [`Tensor::batch_norm_train`] followed by the activation `act` (`relu`, `leaky_relu`, …),
    /// as one op: the normalised values are neither stored nor read back, forward or backward.
    /// Equal to the two ops in sequence.
    pub fn batch_norm_train_act(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<(Tensor, BatchStats)> {
        let geom = self.bn_check(weight, bias, &[])?;
        if geom.per_channel() <= 1 {
            return Err(Error::shape(
                "batch_norm",
                format!(
                    "training needs more than one value per channel, got input {}",
                    self.shape()
                ),
            ));
        }
        let (mean, var) = self.storage().batch_norm_stats(&geom)?;
        let stats = BatchStats {
            mean: Tensor::from_storage(mean, [geom.c]),
            var: Tensor::from_storage(var, [geom.c]),
            count: geom.per_channel(),
        };
        let out = self.normalize(&stats, (weight, bias), eps, true, act, geom)?;
        Ok((out, stats))
    }

    /// Batch norm in evaluation mode, with given (running) statistics; the gradient treats them
    /// as constants.
    pub fn batch_norm_eval(
        &self,
        mean: &Tensor,
        var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.batch_norm_eval_act(mean, var, weight, bias, eps, None)
    }

    /// [`Tensor::batch_norm_eval`] followed by the activation `act`, as one op.
    pub fn batch_norm_eval_act(
        &self,
        mean: &Tensor,
        var: &Tensor,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let extra = [("running mean", mean), ("running variance", var)];
        let geom = self.bn_check(weight, bias, &extra)?;
        let stats = BatchStats {
            mean: mean.detach(),
            var: var.detach(),
            count: geom.per_channel(),
        };
        self.normalize(&stats, (weight, bias), eps, false, act, geom)
    }

    /// Normalises with `stats`, applies `act`, and records the node; inputs are
    /// `[x, weight?, bias?]`. With `training`, the backward pass also differentiates through
    /// the batch statistics.
    fn normalize(
        &self,
        stats: &BatchStats,
        (weight, bias): (Option<&Tensor>, Option<&Tensor>),
        eps: f64,
        training: bool,
        act: Option<UnaryOp>,
        geom: BatchNormGeom,
    ) -> Result<Tensor> {
        let (mean, var) = (stats.mean.clone(), stats.var.clone());
        let y = self.storage().batch_norm_forward(
            (&mean.storage(), &var.storage()),
            (
                weight.map(|w| w.storage()).as_deref(),
                bias.map(|b| b.storage()).as_deref(),
            ),
            eps,
            act,
            &geom,
        )?;
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        Ok(Tensor::from_op(
            y,
            self.shape().clone(),
            if act.is_some() {
                "batch_norm_act"
            } else {
                "batch_norm"
            },
            &inputs,
            move |ctx| {
                let x = &ctx.inputs[0];
                let w = has_w.then(|| &ctx.inputs[1]);
                let b = has_b.then(|| &ctx.inputs[1 + has_w as usize]);
                let (dx, dw, db) = x.storage().batch_norm_backward(
                    &ctx.grad.storage(),
                    (&mean.storage(), &var.storage()),
                    (
                        w.map(|w| w.storage()).as_deref(),
                        b.map(|b| b.storage()).as_deref(),
                    ),
                    eps,
                    training,
                    act,
                    &geom,
                )?;
                let mut grads = vec![Some(Tensor::from_storage(dx, x.shape().clone()))];
                if has_w {
                    grads.push(Some(Tensor::from_storage(dw, [geom.c])));
                }
                if has_b {
                    grads.push(Some(Tensor::from_storage(db, [geom.c])));
                }
                Ok(grads)
            },
        ))
    }
}

impl Tensor {
    /// Instance norm (`F.instance_norm` without running statistics): every `(sample, channel)`
    /// plane of `[n, c, …]` is normalised by its own mean and biased variance, then scaled by
    /// `weight` and shifted by `bias` (both `[c]`, optional), then `act` is applied.
    ///
    /// As in PyTorch, this *is* a training-mode batch norm of the input viewed as
    /// `[1, n·c, …]`: each plane is one "channel". So it runs on the batch-norm kernels (CPU and
    /// CUDA) and their backward, which differentiates through the per-plane statistics. The
    /// affine step is a broadcast multiply-add after it, because the weights are per channel,
    /// not per plane; without it the activation is fused into the norm.
    pub fn instance_norm_act(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let op = "instance_norm";
        check_float(op, self)?;
        let d = self.dims().to_vec();
        if d.len() < 3 {
            return Err(Error::shape(
                op,
                format!(
                    "input must be [n, c, …] with at least one spatial dimension, got {}",
                    self.shape()
                ),
            ));
        }
        let (n, c) = (d[0], d[1]);
        let inner: usize = d[2..].iter().product();
        if inner <= 1 {
            return Err(Error::shape(
                op,
                format!(
                    "needs more than one spatial element per plane, got input {}",
                    self.shape()
                ),
            ));
        }
        for (what, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t {
                if t.dims() != [c] {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{what} must have shape [{c}] for input {}, got {}",
                            self.shape(),
                            t.shape()
                        ),
                    ));
                }
            }
        }
        let planes = self.reshape([1, n * c, inner])?;
        let affine = weight.is_some() || bias.is_some();
        let fused = if affine { None } else { act };
        let (y, _) = planes.batch_norm_train_act(None, None, eps, fused)?;
        let mut y = y.reshape(d.as_slice())?;
        if affine {
            // `[c]` → `[c, 1, …]`, which broadcasts over `[n, c, …]`.
            let mut per_channel = vec![c];
            per_channel.extend(std::iter::repeat_n(1, d.len() - 2));
            if let Some(w) = weight {
                y = y.mul(&w.reshape(per_channel.as_slice())?)?;
            }
            if let Some(b) = bias {
                y = y.add(&b.reshape(per_channel.as_slice())?)?;
            }
            if let Some(act) = act {
                y = y.unary(act)?;
            }
        }
        Ok(y)
    }

    /// [`Tensor::instance_norm_act`] without an activation.
    pub fn instance_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        self.instance_norm_act(weight, bias, eps, None)
    }
}
