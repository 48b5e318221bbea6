//! Batch normalisation.

use super::{check_float, check_same};
use crate::{Error, Result, Tensor};
use gantry_kernels::batch_norm::BatchNormGeom;

/// The statistics a training-mode batch norm computed (constants, no gradient): per-channel
/// mean and *biased* variance. A running-statistics update wants the unbiased variance,
/// `var · m / (m − 1)` with `m` = [`BatchStats::count`].
#[derive(Clone, Debug)]
pub struct BatchStats {
    pub mean: Tensor,
    pub var: Tensor,
    /// Elements per channel the statistics were taken over (`n · h · w`).
    pub count: usize,
}

impl Tensor {
    fn bn_geom(&self, op: &'static str) -> Result<BatchNormGeom> {
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
        Ok(BatchNormGeom {
            n: d[0],
            c: d[1],
            inner: d[2..].iter().product(),
        })
    }

    fn check_channel_vec(op: &'static str, what: &str, t: Option<&Tensor>, c: usize) -> Result<()> {
        match t {
            Some(t) if t.dims() != [c] => Err(Error::shape(
                op,
                format!("{what} must have shape [{c}], got {}", t.shape()),
            )),
            _ => Ok(()),
        }
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
        let op = "batch_norm";
        let geom = self.bn_geom(op)?;
        Self::check_channel_vec(op, "weight", weight, geom.c)?;
        Self::check_channel_vec(op, "bias", bias, geom.c)?;
        let mut all = vec![self];
        all.extend(weight);
        all.extend(bias);
        check_same(op, &all)?;
        if geom.per_channel() <= 1 {
            return Err(Error::shape(
                op,
                format!(
                    "training needs more than one value per channel, got input {}",
                    self.shape()
                ),
            ));
        }
        let (mean, var) = self.storage().batch_norm_stats(&geom)?;
        let y = self.storage().batch_norm_forward(
            (&mean, &var),
            (
                weight.map(|w| w.storage()).as_deref(),
                bias.map(|b| b.storage()).as_deref(),
            ),
            eps,
            &geom,
        )?;
        let stats = BatchStats {
            mean: Tensor::from_storage(mean, [geom.c]),
            var: Tensor::from_storage(var, [geom.c]),
            count: geom.per_channel(),
        };
        let out = self.bn_op(y, &stats, weight, bias, eps, true, geom);
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
        let op = "batch_norm";
        let geom = self.bn_geom(op)?;
        Self::check_channel_vec(op, "running mean", Some(mean), geom.c)?;
        Self::check_channel_vec(op, "running variance", Some(var), geom.c)?;
        Self::check_channel_vec(op, "weight", weight, geom.c)?;
        Self::check_channel_vec(op, "bias", bias, geom.c)?;
        let mut all = vec![self, mean, var];
        all.extend(weight);
        all.extend(bias);
        check_same(op, &all)?;
        let y = self.storage().batch_norm_forward(
            (&mean.storage(), &var.storage()),
            (
                weight.map(|w| w.storage()).as_deref(),
                bias.map(|b| b.storage()).as_deref(),
            ),
            eps,
            &geom,
        )?;
        let stats = BatchStats {
            mean: mean.detach(),
            var: var.detach(),
            count: geom.per_channel(),
        };
        Ok(self.bn_op(y, &stats, weight, bias, eps, false, geom))
    }

    /// Records the batch-norm node. Inputs are `[x, weight?, bias?]`.
    #[allow(clippy::too_many_arguments)]
    fn bn_op(
        &self,
        y: crate::storage::Storage,
        stats: &BatchStats,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        training: bool,
        geom: BatchNormGeom,
    ) -> Tensor {
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let (has_w, has_b) = (weight.is_some(), bias.is_some());
        let (mean, var) = (stats.mean.clone(), stats.var.clone());
        Tensor::from_op(y, self.shape().clone(), "batch_norm", &inputs, move |ctx| {
            let x = &ctx.inputs[0];
            let w = has_w.then(|| &ctx.inputs[1]);
            let (dx, dw, db) = x.storage().batch_norm_backward(
                &ctx.grad.storage(),
                (&mean.storage(), &var.storage()),
                w.map(|w| w.storage()).as_deref(),
                eps,
                training,
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
        })
    }
}
