//! `BatchNorm2d`.

use crate::init::{constant, positive};
use crate::module::{Mode, Module, Slot};
use gantry_core::{no_grad, DType, Device, Error, Result, Tensor, UnaryOp};

/// Batch normalisation over the channels of `[n, c, h, w]`, as PyTorch's `nn.BatchNorm2d`.
///
/// - **Training** ([`Mode::Train`]): normalises with the batch's mean and *biased* variance, then
///   updates the running statistics with the *unbiased* variance,
///   `running ← (1 − m)·running + m·batch`, where `m` is the momentum (0.1), or `1 /
///   num_batches_tracked` (a cumulative average) when the momentum is `None`; and counts
///   `num_batches_tracked` (an i64 scalar, as in PyTorch's checkpoints).
/// - **Evaluation** ([`Mode::Eval`]): normalises with the running statistics.
///
/// Without running statistics ([`BatchNorm2d::without_running_stats`]) both modes use the
/// batch's. The affine weight starts at 1 and the bias at 0.
pub struct BatchNorm2d {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    running: Option<Running>,
    momentum: Option<f64>,
    eps: f64,
}

struct Running {
    mean: Tensor,
    var: Tensor,
    num_batches_tracked: Tensor,
}

impl BatchNorm2d {
    /// Affine, with running statistics, momentum 0.1, eps 1e-5 (PyTorch's defaults).
    pub fn new(channels: usize) -> Result<Self> {
        positive("BatchNorm2d", "channels", channels)?;
        let c = [channels];
        Ok(BatchNorm2d {
            weight: Some(constant(&c, 1.0)?),
            bias: Some(constant(&c, 0.0)?),
            running: Some(Running {
                mean: Tensor::zeros(c, DType::F32, Device::Cpu)?,
                var: Tensor::ones(c, DType::F32, Device::Cpu)?,
                num_batches_tracked: Tensor::zeros((), DType::I64, Device::Cpu)?,
            }),
            momentum: Some(0.1),
            eps: 1e-5,
        })
    }
    /// `None` gives the cumulative moving average.
    pub fn with_momentum(mut self, momentum: Option<f64>) -> Self {
        self.momentum = momentum;
        self
    }
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// No learnable weight and bias (PyTorch's `affine=False`).
    pub fn without_affine(mut self) -> Self {
        self.weight = None;
        self.bias = None;
        self
    }
    /// No running statistics (PyTorch's `track_running_stats=False`).
    pub fn without_running_stats(mut self) -> Self {
        self.running = None;
        self
    }
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    pub fn running_mean(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| &r.mean)
    }
    pub fn running_var(&self) -> Option<&Tensor> {
        self.running.as_ref().map(|r| &r.var)
    }
    /// How many training batches have updated the running statistics.
    pub fn num_batches_tracked(&self) -> Option<u64> {
        let r = self.running.as_ref()?;
        r.num_batches_tracked.to_scalar().ok().map(|v| v as u64)
    }

    fn update_running(
        &self,
        r: &Running,
        batch_mean: &Tensor,
        batch_var: &Tensor,
        count: usize,
    ) -> Result<()> {
        let tracked = r.num_batches_tracked.to_vec::<i64>()?[0] + 1;
        r.num_batches_tracked
            .set(&Tensor::from_vec(vec![tracked], (), Device::Cpu)?)?;
        if gantry_core::graph::capturing() {
            if self.momentum.is_none() {
                return Err(Error::invalid(
                    "BatchNorm2d",
                    "momentum None (a cumulative average) changes its blend factor every \
                     batch, which a captured CUDA graph cannot follow; set a momentum",
                ));
            }
            // The counter lives on the host; a replay runs no host code, so count there.
            let counter = r.num_batches_tracked.clone();
            gantry_core::graph::on_replay(move || {
                let n = counter.to_vec::<i64>()?[0] + 1;
                counter.set(&Tensor::from_vec(vec![n], (), Device::Cpu)?)
            });
        }
        let m = self.momentum.unwrap_or(1.0 / tracked as f64);
        // The running variance is the unbiased one: the biased batch variance times m/(m−1).
        let unbias = count as f64 / (count as f64 - 1.0);
        let blend = |running: &Tensor, batch: &Tensor, scale: f64| -> Result<()> {
            if let Device::Cuda(_) = running.device() {
                // On the device, in f32 as PyTorch's CUDA kernel does, and into the running
                // tensor's own buffer (`set` copies in place), so that no step waits for the
                // host and a captured graph can hold the update.
                let new = no_grad(|| {
                    running
                        .mul_scalar(1.0 - m)?
                        .add(&batch.detach().mul_scalar(m * scale)?)
                })?;
                return running.set(&new);
            }
            let new: Vec<f64> = running
                .to_f64_vec()?
                .iter()
                .zip(batch.to_f64_vec()?)
                .map(|(&old, b)| (1.0 - m) * old + m * b * scale)
                .collect();
            let t = Tensor::from_vec(new, running.shape().clone(), Device::Cpu)?;
            running.set(&t.to_dtype(running.dtype())?.to_device(running.device())?)
        };
        blend(&r.mean, batch_mean, 1.0)?;
        blend(&r.var, batch_var, unbias)
    }
}

impl Module for BatchNorm2d {
    fn kind(&self) -> &'static str {
        "BatchNorm2d"
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_act(x, mode, None)
    }

    fn forward_then(&self, x: &Tensor, mode: Mode, act: UnaryOp) -> Result<Option<Tensor>> {
        self.forward_act(x, mode, Some(act)).map(Some)
    }

    fn slots(&self) -> Vec<Slot<'_>> {
        let mut s = Vec::new();
        s.extend(self.weight.as_ref().map(|t| Slot::param("weight", t)));
        s.extend(self.bias.as_ref().map(|t| Slot::param("bias", t)));
        if let Some(r) = &self.running {
            s.push(Slot::buffer("running_mean", &r.mean));
            s.push(Slot::buffer("running_var", &r.var));
            s.push(Slot::buffer("num_batches_tracked", &r.num_batches_tracked));
        }
        s
    }
}

impl BatchNorm2d {
    /// The forward pass, with the activation `act` fused into it when given.
    fn forward_act(&self, x: &Tensor, mode: Mode, act: Option<UnaryOp>) -> Result<Tensor> {
        if x.rank() != 4 {
            return Err(Error::shape(
                "BatchNorm2d",
                format!("expected a 4-d input [n, c, h, w], got {}", x.shape()),
            ));
        }
        let (w, b) = (self.weight.as_ref(), self.bias.as_ref());
        match (&self.running, mode) {
            (Some(r), Mode::Eval) => x.batch_norm_eval_act(&r.mean, &r.var, w, b, self.eps, act),
            (running, _) => {
                let (y, stats) = x.batch_norm_train_act(w, b, self.eps, act)?;
                if let (Some(r), Mode::Train) = (running, mode) {
                    self.update_running(r, &stats.mean, &stats.var, stats.count)?;
                }
                Ok(y)
            }
        }
    }
}

/// Instance normalisation of `[n, c, h, w]`, as PyTorch's `nn.InstanceNorm2d` with its defaults
/// (`affine=False`, `track_running_stats=False`): each image's each channel is normalised by
/// its own mean and biased variance, in training and evaluation alike, so the layer has no
/// state unless [`InstanceNorm2d::with_affine`] adds PyTorch's `weight` (1) and `bias` (0).
///
/// The style-transfer and CycleGAN generators use it where DCGAN uses batch norm: the
/// statistics of one image do not leak into another's output.
pub struct InstanceNorm2d {
    channels: usize,
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl InstanceNorm2d {
    /// Without affine parameters, eps 1e-5 (PyTorch's defaults).
    pub fn new(channels: usize) -> Result<Self> {
        positive("InstanceNorm2d", "channels", channels)?;
        Ok(InstanceNorm2d {
            channels,
            weight: None,
            bias: None,
            eps: 1e-5,
        })
    }
    /// With a learnt per-channel `weight` and `bias` (`affine=True`).
    pub fn with_affine(mut self) -> Result<Self> {
        let c = [self.channels];
        self.weight = Some(constant(&c, 1.0)?);
        self.bias = Some(constant(&c, 0.0)?);
        Ok(self)
    }
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    pub fn weight(&self) -> Option<&Tensor> {
        self.weight.as_ref()
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    fn forward_act(&self, x: &Tensor, act: Option<UnaryOp>) -> Result<Tensor> {
        if x.rank() != 4 || x.dims()[1] != self.channels {
            return Err(Error::shape(
                "InstanceNorm2d",
                format!(
                    "expected a 4-d input [n, {}, h, w], got {}",
                    self.channels,
                    x.shape()
                ),
            ));
        }
        x.instance_norm_act(self.weight.as_ref(), self.bias.as_ref(), self.eps, act)
    }
}

impl Module for InstanceNorm2d {
    fn kind(&self) -> &'static str {
        "InstanceNorm2d"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        self.forward_act(x, None)
    }
    fn forward_then(&self, x: &Tensor, _: Mode, act: UnaryOp) -> Result<Option<Tensor>> {
        self.forward_act(x, Some(act)).map(Some)
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        let mut s = Vec::new();
        s.extend(self.weight.as_ref().map(|t| Slot::param("weight", t)));
        s.extend(self.bias.as_ref().map(|t| Slot::param("bias", t)));
        s
    }
}
