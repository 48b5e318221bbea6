//! The DCGAN training loop and its run folder.
//!
//! One step is the paper's (and pytorch/examples'):
//!
//! 1. **D step**: `loss_D = BCE(D(x), 1) + BCE(D(G(z).detach()), 0)`; Adam steps D only.
//! 2. **G step**: `loss_G = BCE(D(G(z)), 1)`, the non-saturating generator loss, through the
//!    just-updated D; the gradient reaches D's weights too, but G's optimizer steps G only.
//!
//! A run folder holds:
//!
//! ```text
//! runs/<name>/
//!   samples/step_000500.png     a grid from a fixed noise batch (generator in eval mode)
//!   checkpoint/latest           the name of the newest complete checkpoint folder
//!   checkpoint/step_000500/     generator.safetensors, discriminator.safetensors,
//!                               opt_g.safetensors, opt_d.safetensors, state.json
//!   metrics.csv                 step,epoch,loss_d,loss_g,d_x,d_g_z,images_per_s
//! ```
//!
//! The folder is [`crate::run::Run`]'s, shared with the SRGAN trainer: a checkpoint folder is
//! written completely before `latest` is switched to it (atomically), so an interruption at
//! any moment leaves the previous checkpoint usable. `state.json` holds
//! the step, the configuration and the noise generator's state: with the data order drawn
//! from `(seed, epoch)`, that is everything a resumed run needs to continue exactly where the
//! checkpoint was taken (bit for bit on the CPU).

use crate::data::{Dataset, Loader};
use crate::dcgan::{dcgan_pair, DcganConfig, Discriminator, Generator};
use crate::grid::save_grid;
use crate::run::{non_finite, rng_from_json, rng_to_json, Run};
use gantry_core::{
    no_grad, with_precision, DType, Device, Error, GradStore, Precision, Result, Rng, Tensor,
};
use gantry_nn::checkpoint;
use gantry_nn::loss::{bce_with_logits_smoothed, Reduction};
use gantry_nn::{Adam, AdamConfig, LossScaler, Mode, Module, Optimizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: DcganConfig,
    pub batch_size: usize,
    /// Adam's learning rate for both networks (the paper: 2e-4).
    pub lr: f64,
    /// Adam's betas (the paper: 0.5, 0.999).
    pub betas: (f64, f64),
    /// Total optimisation steps (one D and one G update each).
    pub steps: u64,
    pub seed: u64,
    /// Write a sample grid every this many steps (and at the end).
    pub sample_every: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Images in the sample grid.
    pub samples: usize,
    /// One-sided label smoothing of the real targets (0 = none).
    pub label_smoothing: f64,
    /// Where the networks train. Not part of a checkpoint: a run may resume on another device.
    pub device: Device,
    /// What convolutions multiply in (see `gantry_core::precision`): f32, or tf32/bf16/f16
    /// inputs with f32 accumulation and f32 master weights. f16 turns on dynamic loss scaling.
    pub precision: Precision,
    /// On a CUDA device, capture the training step into a CUDA graph after
    /// [`GRAPH_WARMUP_STEPS`] ordinary steps and replay it (see [`CudaGraphStep`]). Ignored on
    /// the CPU, and with f16, whose loss scaling decides on the host whether to skip a step.
    /// Like `device`, not part of a checkpoint.
    pub cuda_graph: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: DcganConfig::default(),
            batch_size: 64,
            lr: 2e-4,
            betas: (0.5, 0.999),
            steps: 1000,
            seed: 0,
            sample_every: 200,
            checkpoint_every: 500,
            samples: 64,
            label_smoothing: 0.0,
            device: Device::Cpu,
            precision: Precision::F32,
            cuda_graph: true,
        }
    }
}

impl TrainConfig {
    fn to_json(&self) -> Value {
        let m = &self.model;
        json!({
            "image_size": m.image_size, "nc": m.nc, "nz": m.nz, "ngf": m.ngf, "ndf": m.ndf,
            "batch_size": self.batch_size, "lr": self.lr, "beta1": self.betas.0,
            "beta2": self.betas.1, "steps": self.steps, "seed": self.seed,
            "sample_every": self.sample_every, "checkpoint_every": self.checkpoint_every,
            "samples": self.samples, "label_smoothing": self.label_smoothing,
            "precision": self.precision.name(),
        })
    }

    /// Parses the `config` object of a checkpoint's `state.json`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |k: &str| {
            Error::invalid(
                "resume",
                format!("state.json: missing or bad config field {k}"),
            )
        };
        let u = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        let f = |k: &str| v[k].as_f64().ok_or_else(|| bad(k));
        Ok(TrainConfig {
            model: DcganConfig {
                image_size: u("image_size")? as usize,
                nc: u("nc")? as usize,
                nz: u("nz")? as usize,
                ngf: u("ngf")? as usize,
                ndf: u("ndf")? as usize,
            },
            batch_size: u("batch_size")? as usize,
            lr: f("lr")?,
            betas: (f("beta1")?, f("beta2")?),
            steps: u("steps")?,
            seed: u("seed")?,
            sample_every: u("sample_every")?,
            checkpoint_every: u("checkpoint_every")?,
            samples: u("samples")? as usize,
            label_smoothing: f("label_smoothing")?,
            device: Device::Cpu,
            // Checkpoints written before mixed precision existed trained in f32.
            precision: match v["precision"].as_str() {
                None => Precision::F32,
                Some(p) => p.parse().map_err(|_| bad("precision"))?,
            },
            cuda_graph: true,
        })
    }
}

/// What one step computed, still on its device ([`Dcgan::step_tensors`]).
pub struct StepTensors {
    pub loss_d: Tensor,
    pub loss_g: Tensor,
    pub d_x: Tensor,
    pub d_g_z: Tensor,
}

impl StepTensors {
    /// The values on the host; an error naming the network whose loss is not finite.
    pub fn read(&self) -> Result<StepStats> {
        let loss_d = self.loss_d.to_scalar()?;
        if !loss_d.is_finite() {
            return Err(non_finite("discriminator", loss_d));
        }
        let loss_g = self.loss_g.to_scalar()?;
        if !loss_g.is_finite() {
            return Err(non_finite("generator", loss_g));
        }
        Ok(StepStats {
            step: 0,
            epoch: 0,
            loss_d,
            loss_g,
            d_x: self.d_x.to_scalar()?,
            d_g_z: self.d_g_z.to_scalar()?,
            images_per_s: 0.0,
        })
    }
}

/// Ordinary steps before the step is captured: the first fills the device's buffer pool and
/// loads every kernel, the second confirms that a step at these shapes allocates nothing new
/// (a capture cannot allocate).
pub const GRAPH_WARMUP_STEPS: u64 = 2;

/// The DCGAN step as a CUDA graph ([`gantry_core::graph`]): the batch and the noise live in
/// fixed device buffers, refilled before each replay; the losses come back in fixed tensors.
///
/// The first [`GRAPH_WARMUP_STEPS`] steps run eagerly, the next is captured (and run), and
/// every later one is a replay. A batch of another size runs eagerly. The noise is drawn from
/// the same generator in the same order either way, so a graphed run computes what an eager
/// one does.
#[derive(Default)]
pub struct CudaGraphStep {
    eager_steps: u64,
    captured: Option<Captured>,
}

struct Captured {
    graph: gantry_core::graph::CapturedGraph,
    real: Tensor,
    z: Tensor,
    out: StepTensors,
}

impl CudaGraphStep {
    /// One step of `net`, eager, captured or replayed.
    pub fn step(
        &mut self,
        net: &mut Dcgan,
        real: &Tensor,
        rng: &mut Rng,
        smoothing: f64,
    ) -> Result<StepStats> {
        if net.scalers.is_some() {
            return Err(Error::invalid(
                "train (cuda graph)",
                "f16 loss scaling decides on the host whether to skip each step, which a \
                 captured graph cannot; train f16 without CUDA graphs",
            ));
        }
        let device = net.device();
        let z = net.noise(real.dims()[0], rng)?;
        if let Some(c) = &mut self.captured {
            if c.real.dims() == real.dims() {
                c.real.set(real)?;
                c.z.set(&z)?;
                c.graph.replay()?;
                return c.out.read();
            }
        } else if self.eager_steps >= GRAPH_WARMUP_STEPS {
            let (real, z) = (real.to_device(device)?, z.to_device(device)?);
            let (graph, out) =
                gantry_core::graph::capture(device, || net.step_tensors(&real, &z, smoothing))?;
            let c = self.captured.insert(Captured {
                graph,
                real,
                z,
                out,
            });
            return c.out.read();
        }
        self.eager_steps += 1;
        net.step_with_noise(real, &z, smoothing)
    }

    /// Whether the step has been captured.
    pub fn is_captured(&self) -> bool {
        self.captured.is_some()
    }
}

/// What one step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub step: u64,
    pub epoch: u64,
    pub loss_d: f64,
    pub loss_g: f64,
    /// Mean D(x) on the real batch (a probability).
    pub d_x: f64,
    /// Mean D(G(z)) on the fake batch, before the D update.
    pub d_g_z: f64,
    pub images_per_s: f64,
}

/// Things the trainer tells its caller about (the CLI draws a progress bar from them).
pub enum Event<'a> {
    Started {
        start_step: u64,
        total_steps: u64,
        batches_per_epoch: usize,
    },
    Step(&'a StepStats),
    Sample(&'a Path),
    Checkpoint(&'a Path),
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: u64,
    pub last_sample: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
}

/// The networks and optimizers of a run.
pub struct Dcgan {
    pub g: Generator,
    pub d: Discriminator,
    pub opt_g: Adam,
    pub opt_d: Adam,
    pub precision: Precision,
    /// f16 only: one scaler per network, as each has its own backward pass and optimizer.
    pub scalers: Option<[LossScaler; 2]>,
}

impl Dcgan {
    /// Fresh DCGAN-initialised networks (weights drawn from `(seed)`).
    pub fn new(config: &TrainConfig) -> Result<Self> {
        let mut rng = Rng::with_stream(config.seed, 1);
        let (g, d) = dcgan_pair(config.model, &mut rng)?;
        // Drawn on the host from the seed, then moved: the same weights on every device.
        gantry_nn::ModuleExt::to_device(&g, config.device)?;
        gantry_nn::ModuleExt::to_device(&d, config.device)?;
        let adam = AdamConfig {
            lr: config.lr,
            betas: config.betas,
            ..Default::default()
        };
        let opt_g = Adam::new(gantry_nn::ModuleExt::named_parameters(&g), adam)?;
        let opt_d = Adam::new(gantry_nn::ModuleExt::named_parameters(&d), adam)?;
        let scalers = (config.precision == Precision::F16).then(Default::default);
        Ok(Dcgan {
            g,
            d,
            opt_g,
            opt_d,
            precision: config.precision,
            scalers,
        })
    }

    /// One D and one G update on a real batch. `rng` draws the noise.
    pub fn step(&mut self, real: &Tensor, rng: &mut Rng, smoothing: f64) -> Result<StepStats> {
        let z = self.noise(real.dims()[0], rng)?;
        self.step_with_noise(real, &z, smoothing)
    }

    /// [`Dcgan::step`] with the noise given: both are moved to the networks' device.
    fn step_with_noise(&mut self, real: &Tensor, z: &Tensor, smoothing: f64) -> Result<StepStats> {
        let device = self.device();
        let (real, z) = (real.to_device(device)?, z.to_device(device)?);
        self.step_tensors(&real, &z, smoothing)?.read()
    }

    /// The noise of one step, drawn on the host (so that every device and the graph replay,
    /// which refills a fixed buffer with it, see the same values).
    fn noise(&self, n: usize, rng: &mut Rng) -> Result<Tensor> {
        let nz = self.g.config.nz;
        Tensor::randn([n, nz, 1, 1], 0.0, 1.0, DType::F32, Device::Cpu, rng)
    }

    /// The step on device tensors, with nothing read back: what a CUDA graph captures. The
    /// returned tensors hold the losses and mean probabilities.
    pub fn step_tensors(
        &mut self,
        real: &Tensor,
        z: &Tensor,
        smoothing: f64,
    ) -> Result<StepTensors> {
        let _precision = with_precision(self.precision);
        let n = real.dims()[0];
        let device = self.device();
        let ones = Tensor::ones([n], DType::F32, device)?;
        let zeros = Tensor::zeros([n], DType::F32, device)?;
        let mean_prob = |logits: &Tensor| logits.sigmoid()?.mean_all();

        // D step: real batch and detached fakes, as two separate batches (separate BN stats).
        let fake = self.g.forward(z, Mode::Train)?;
        let real_logits = self.d.forward(real, Mode::Train)?;
        let fake_logits = self.d.forward(&fake.detach(), Mode::Train)?;
        let loss_d =
            bce_with_logits_smoothed(&real_logits, &ones, smoothing, Reduction::Mean)?.add(
                &bce_with_logits_smoothed(&fake_logits, &zeros, 0.0, Reduction::Mean)?,
            )?;
        let (d_x, d_g_z) = (mean_prob(&real_logits)?, mean_prob(&fake_logits)?);
        let grads_d = self.backward(&loss_d, 0)?;
        drop((real_logits, fake_logits));
        if let Some(grads) = grads_d {
            self.opt_d.step(&grads)?;
        }

        // G step: the non-saturating loss through the updated D.
        let loss_g = bce_with_logits_smoothed(
            &self.d.forward(&fake, Mode::Train)?,
            &ones,
            0.0,
            Reduction::Mean,
        )?;
        if let Some(grads) = self.backward(&loss_g, 1)? {
            self.opt_g.step(&grads)?;
        }
        Ok(StepTensors {
            loss_d: loss_d.detach(),
            loss_g: loss_g.detach(),
            d_x,
            d_g_z,
        })
    }

    /// The gradients of `loss` for network `which` (0 = D, 1 = G). With loss scaling, the
    /// backward runs on the scaled loss and the gradients come back unscaled, or `None` when
    /// they overflowed (the step is skipped; the scaler has lowered its scale).
    fn backward(&mut self, loss: &Tensor, which: usize) -> Result<Option<GradStore>> {
        let Some(scalers) = &mut self.scalers else {
            return loss.backward().map(Some);
        };
        let mut grads = scalers[which].scale_loss(loss)?.backward()?;
        let params = if which == 0 {
            gantry_nn::ModuleExt::named_parameters(&self.d)
        } else {
            gantry_nn::ModuleExt::named_parameters(&self.g)
        };
        Ok(scalers[which]
            .unscale(&mut grads, &params)?
            .then_some(grads))
    }

    /// Steps skipped for overflowing f16 gradients (D, G); zero without loss scaling.
    pub fn skipped_steps(&self) -> [u64; 2] {
        self.scalers
            .as_ref()
            .map_or([0, 0], |s| [s[0].skipped(), s[1].skipped()])
    }

    /// Where the networks live.
    pub fn device(&self) -> Device {
        gantry_nn::ModuleExt::named_parameters(&self.g)
            .first()
            .map_or(Device::Cpu, |(_, t)| t.device())
    }

    fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(&self.g, dir.join("generator.safetensors"))?;
        checkpoint::save(&self.d, dir.join("discriminator.safetensors"))?;
        self.opt_g.save(&dir.join("opt_g.safetensors"))?;
        if let Some(s) = &self.scalers {
            let mut tensors = Vec::new();
            for (net, s) in ["d", "g"].iter().zip(s) {
                for (name, t) in s.state_tensors()? {
                    tensors.push((format!("{net}.{name}"), t));
                }
            }
            gantry_nn::checkpoint::save_tensors(dir.join("scalers.safetensors"), &tensors, None)?;
        }
        self.opt_d.save(&dir.join("opt_d.safetensors"))
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load(&self.g, dir.join("generator.safetensors"))?;
        checkpoint::load(&self.d, dir.join("discriminator.safetensors"))?;
        self.opt_g.load(&dir.join("opt_g.safetensors"))?;
        if let Some(s) = &mut self.scalers {
            let file = gantry_nn::checkpoint::load_tensors(dir.join("scalers.safetensors"))?;
            for (net, s) in ["d", "g"].iter().zip(s.iter_mut()) {
                let prefix = format!("{net}.");
                let own: Vec<(String, Tensor)> = file
                    .tensors
                    .iter()
                    .filter_map(|(n, t)| Some((n.strip_prefix(&prefix)?.to_string(), t.clone())))
                    .collect();
                s.load_state_tensors(&own)?;
            }
        }
        self.opt_d.load(&dir.join("opt_d.safetensors"))
    }
}

pub use crate::run::{latest_checkpoint, read_state};

const METRICS_HEADER: &str = "step,epoch,loss_d,loss_g,d_x,d_g_z,images_per_s";

/// Trains a DCGAN on `data` in the run folder `run`. With `resume`, continues from the run's
/// latest checkpoint (its configuration wins over `config`, except for `steps`, which may be
/// raised to train longer).
pub fn train(
    config: &TrainConfig,
    data: Arc<dyn Dataset>,
    run: &Path,
    resume: bool,
    mut on_event: impl FnMut(Event),
) -> Result<Summary> {
    let t0 = Instant::now();
    let mut config = config.clone();
    let mut net;
    let mut rng;
    let mut step;
    let mut run = if resume {
        let (r, dir, state, at) = Run::resume(run, METRICS_HEADER)?;
        let steps = config.steps;
        let device = config.device;
        let cuda_graph = config.cuda_graph;
        config = TrainConfig::from_json(&state["config"])?;
        config.steps = config.steps.max(steps);
        config.device = device;
        config.cuda_graph = cuda_graph;
        net = Dcgan::new(&config)?;
        net.load(&dir)?;
        step = at;
        rng = rng_from_json(&state["rng"])?;
        r
    } else {
        let r = Run::create(run, METRICS_HEADER)?;
        net = Dcgan::new(&config)?;
        rng = Rng::with_stream(config.seed, 2);
        step = 0;
        r
    };
    let m = config.model;
    if (data.channels(), data.image_size()) != (m.nc, m.image_size) {
        return Err(Error::invalid(
            "train",
            format!(
                "the data has {} channel(s) of {s}x{s} but the model wants {} of {t}x{t}",
                data.channels(),
                m.nc,
                s = data.image_size(),
                t = m.image_size
            ),
        ));
    }
    let fixed_noise = Tensor::randn(
        [config.samples, m.nz, 1, 1],
        0.0,
        1.0,
        DType::F32,
        config.device,
        &mut Rng::with_stream(config.seed, 3),
    )?;

    // Graphs on a GPU, unless turned off or f16 (see `TrainConfig::cuda_graph`).
    let mut graphed =
        (config.cuda_graph && matches!(config.device, Device::Cuda(_)) && net.scalers.is_none())
            .then(CudaGraphStep::default);
    let bpe = (data.len() / config.batch_size.max(1)) as u64;
    on_event(Event::Started {
        start_step: step,
        total_steps: config.steps,
        batches_per_epoch: bpe as usize,
    });
    let mut summary = Summary {
        steps: step,
        last_sample: None,
        last_checkpoint: None,
        seconds: 0.0,
    };
    while step < config.steps {
        let epoch = step / bpe.max(1);
        let loader = Loader::new(
            data.clone(),
            config.batch_size,
            config.seed,
            epoch,
            (step % bpe.max(1)) as usize,
        )?;
        for real in loader {
            let real = real?;
            let t = Instant::now();
            let result = match &mut graphed {
                Some(g) => g.step(&mut net, &real, &mut rng, config.label_smoothing),
                None => net.step(&real, &mut rng, config.label_smoothing),
            };
            let mut stats = result.map_err(|e| run.stopped_at(e, step + 1))?;
            step += 1;
            stats.step = step;
            stats.epoch = epoch;
            stats.images_per_s = real.dims()[0] as f64 / t.elapsed().as_secs_f64();
            run.metrics_row(&format!(
                "{},{},{:.6},{:.6},{:.6},{:.6},{:.1}",
                stats.step,
                stats.epoch,
                stats.loss_d,
                stats.loss_g,
                stats.d_x,
                stats.d_g_z,
                stats.images_per_s
            ))?;
            on_event(Event::Step(&stats));
            let last = step == config.steps;
            if step % config.sample_every.max(1) == 0 || last {
                let path = run.sample_path(step);
                let images = no_grad(|| net.g.forward(&fixed_noise, Mode::Eval))?;
                save_grid(&images, &path)?;
                on_event(Event::Sample(&path));
                summary.last_sample = Some(path);
            }
            if step % config.checkpoint_every.max(1) == 0 || last {
                let state = json!({
                    "step": step,
                    "epoch": epoch,
                    "rng": rng_to_json(&rng),
                    "data": data.describe(),
                    "config": config.to_json(),
                });
                let dir = run.checkpoint(step, &state, |dir| net.save(dir))?;
                on_event(Event::Checkpoint(&dir));
                summary.last_checkpoint = Some(dir);
            }
            if last {
                break;
            }
        }
    }
    summary.steps = step;
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
