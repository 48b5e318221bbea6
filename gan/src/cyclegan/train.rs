//! The CycleGAN trainer, on the shared run folder ([`crate::run`]).
//!
//! Two generators, `g_ab` (A→B) and `g_ba` (B→A), and two discriminators, `d_a` (real A or
//! translated into A?) and `d_b`. One step, on a batch `a` from domain A and an unrelated batch
//! `b` from domain B (the authors' order and weights, least-squares GAN):
//!
//! 1. **Generators**, one Adam over both:
//!    `‖d_b(g_ab(a)) − 1‖² + ‖d_a(g_ba(b)) − 1‖²` (adversarial)
//!    `+ λ·(|g_ba(g_ab(a)) − a|₁ + |g_ab(g_ba(b)) − b|₁)` (cycle consistency, λ = 10)
//!    `+ λ·λ_id·(|g_ab(b) − b|₁ + |g_ba(a) − a|₁)` (identity, λ_id = 0.5).
//! 2. **Discriminators**, one Adam over both:
//!    `½(‖d_a(a) − 1‖² + ‖d_a(pool_a(g_ba(b)))‖²) + ½(the same for d_b)`,
//!    where each pool answers with the new translation or, half the time once it holds 50,
//!    an older one it swaps out (Shrivastava et al.'s history buffer), so the discriminators
//!    do not forget the generators' earlier mistakes.
//!
//! Adam (2e-4, β 0.5, 0.999); the learning rate is constant to `decay_from` and then falls
//! linearly to 0 at the last step. Batches and the pool's choices are drawn from
//! `(seed, step)`, and checkpoints hold the pools, so a resumed run continues exactly.
//!
//! ```text
//! runs/<name>/
//!   metrics.csv                 step,lr,adv_ab,adv_ba,cycle_a,cycle_b,idt_a,idt_b,loss_d_a,loss_d_b,images_per_s
//!   samples/step_000500.png     rows of  a | g_ab(a) | g_ba(g_ab(a)) | b | g_ba(b) | g_ab(g_ba(b))
//!   checkpoint/step_000500/     generator_ab/ba, discriminator_a/b, opt_g, opt_d, pool_a/b
//!                               (.safetensors) and state.json
//! ```

use super::{PatchDiscriminator, PatchDiscriminatorConfig, ResnetGenerator, ResnetGeneratorConfig};
use crate::data::Dataset;
use crate::grid::{make_grid, save_png};
use crate::run::{non_finite, weights_file, Run};
use gantry_core::{no_grad, Device, Error, Result, Rng, Tensor};
use gantry_nn::checkpoint::{self, load_tensors, save_tensors};
use gantry_nn::loss::{l1, mse, Reduction};
use gantry_nn::{Adam, AdamConfig, Mode, Module, ModuleExt, Optimizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq)]
pub struct CycleGanConfig {
    pub generator: ResnetGeneratorConfig,
    pub discriminator: PatchDiscriminatorConfig,
    pub image_size: usize,
    /// 1 in the paper.
    pub batch_size: usize,
    pub lr: f64,
    pub betas: (f64, f64),
    pub steps: u64,
    /// The step after which the learning rate decays linearly to 0 (the paper: half way).
    pub decay_from: u64,
    /// λ, the cycle-consistency weight (10).
    pub lambda_cycle: f64,
    /// The identity weight relative to λ (0.5: the identity term weighs 5).
    pub lambda_identity: f64,
    /// Translations each history pool keeps (50; 0 turns the pools off).
    pub pool_size: usize,
    pub seed: u64,
    pub sample_every: u64,
    pub checkpoint_every: u64,
    /// Not part of a checkpoint: a run may resume on another device.
    pub device: Device,
}

impl Default for CycleGanConfig {
    fn default() -> Self {
        CycleGanConfig {
            generator: ResnetGeneratorConfig::default(),
            discriminator: PatchDiscriminatorConfig::default(),
            image_size: 256,
            batch_size: 1,
            lr: 2e-4,
            betas: (0.5, 0.999),
            steps: 10_000,
            decay_from: 5_000,
            lambda_cycle: 10.0,
            lambda_identity: 0.5,
            pool_size: 50,
            seed: 0,
            sample_every: 500,
            checkpoint_every: 500,
            device: Device::Cpu,
        }
    }
}

impl CycleGanConfig {
    fn to_json(&self) -> Value {
        let (g, d) = (&self.generator, &self.discriminator);
        json!({
            "channels": g.channels_in, "ngf": g.ngf, "blocks": g.blocks,
            "ndf": d.ndf, "d_layers": d.layers, "image_size": self.image_size,
            "batch_size": self.batch_size, "lr": self.lr, "beta1": self.betas.0,
            "beta2": self.betas.1, "steps": self.steps, "decay_from": self.decay_from,
            "lambda_cycle": self.lambda_cycle, "lambda_identity": self.lambda_identity,
            "pool_size": self.pool_size, "seed": self.seed, "sample_every": self.sample_every,
            "checkpoint_every": self.checkpoint_every,
        })
    }

    /// Parses the `config` object of a checkpoint's `state.json`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |k: &str| Error::invalid("resume", format!("state.json: bad config field {k}"));
        let u = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        let f = |k: &str| v[k].as_f64().ok_or_else(|| bad(k));
        let channels = u("channels")? as usize;
        Ok(CycleGanConfig {
            generator: ResnetGeneratorConfig {
                channels_in: channels,
                channels_out: channels,
                ngf: u("ngf")? as usize,
                blocks: u("blocks")? as usize,
            },
            discriminator: PatchDiscriminatorConfig {
                channels,
                ndf: u("ndf")? as usize,
                layers: u("d_layers")? as usize,
            },
            image_size: u("image_size")? as usize,
            batch_size: u("batch_size")? as usize,
            lr: f("lr")?,
            betas: (f("beta1")?, f("beta2")?),
            steps: u("steps")?,
            decay_from: u("decay_from")?,
            lambda_cycle: f("lambda_cycle")?,
            lambda_identity: f("lambda_identity")?,
            pool_size: u("pool_size")? as usize,
            seed: u("seed")?,
            sample_every: u("sample_every")?,
            checkpoint_every: u("checkpoint_every")?,
            device: Device::Cpu,
        })
    }

    /// The learning rate for `step` (1-based): constant, then linear to 0 at `steps`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step <= self.decay_from || self.steps <= self.decay_from {
            return self.lr;
        }
        let left = self.steps.saturating_sub(step) as f64 + 1.0;
        self.lr * left / (self.steps - self.decay_from + 1) as f64
    }

    fn check(&self) -> Result<()> {
        let s = self.image_size;
        if s == 0 || !s.is_multiple_of(4) || self.discriminator.patch_grid(s).is_none() {
            return Err(Error::invalid(
                "train cyclegan",
                format!(
                    "image size {s}: it must be divisible by 4 and at least {} for a \
                     {}-layer PatchGAN",
                    8 << self.discriminator.layers.saturating_sub(1),
                    self.discriminator.layers
                ),
            ));
        }
        if self.batch_size == 0 || self.generator.channels_in != self.discriminator.channels {
            return Err(Error::invalid(
                "train cyclegan",
                format!(
                    "batch size {} and channels {} / {}",
                    self.batch_size, self.generator.channels_in, self.discriminator.channels
                ),
            ));
        }
        Ok(())
    }
}

/// Shrivastava et al.'s history of generated images, as the CycleGAN authors use it.
pub struct ImagePool {
    capacity: usize,
    images: Vec<Tensor>,
}

impl ImagePool {
    pub fn new(capacity: usize) -> Self {
        ImagePool {
            capacity,
            images: Vec::new(),
        }
    }

    /// What the discriminator sees in place of `batch` (`[n, c, h, w]`, detached): image by
    /// image, while the pool fills, the new image (kept); after, with probability ½, a stored
    /// one (replaced by the new), else the new one.
    pub fn query(&mut self, batch: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let batch = batch.detach();
        if self.capacity == 0 {
            return Ok(batch);
        }
        let n = batch.dims()[0];
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let img = batch.narrow(0, i, 1)?;
            if self.images.len() < self.capacity {
                self.images.push(img.clone());
                out.push(img);
            } else if rng.uniform() < 0.5 {
                let k = rng.below(self.capacity as u32) as usize;
                out.push(std::mem::replace(&mut self.images[k], img));
            } else {
                out.push(img);
            }
        }
        Tensor::concat(&out.iter().collect::<Vec<_>>(), 0)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .images
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{i:03}"), t.clone()))
            .collect();
        save_tensors(path, &tensors, None)
    }

    fn load(&mut self, path: &Path, device: Device) -> Result<()> {
        let mut file = load_tensors(path)?.tensors;
        file.sort_by(|a, b| a.0.cmp(&b.0));
        self.images = file
            .into_iter()
            .map(|(_, t)| t.to_device(device))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// What one step measured (the weighted terms, as they enter the losses).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CycleStepStats {
    pub step: u64,
    pub lr: f64,
    /// `‖d_b(g_ab(a)) − 1‖²` and `‖d_a(g_ba(b)) − 1‖²`.
    pub adv_ab: f64,
    pub adv_ba: f64,
    /// `λ·|g_ba(g_ab(a)) − a|₁` and `λ·|g_ab(g_ba(b)) − b|₁`.
    pub cycle_a: f64,
    pub cycle_b: f64,
    /// `λ·λ_id·|g_ba(a) − a|₁` and `λ·λ_id·|g_ab(b) − b|₁`.
    pub idt_a: f64,
    pub idt_b: f64,
    pub loss_d_a: f64,
    pub loss_d_b: f64,
    pub images_per_s: f64,
}

impl CycleStepStats {
    pub fn adversarial(&self) -> f64 {
        self.adv_ab + self.adv_ba
    }
    pub fn cycle(&self) -> f64 {
        self.cycle_a + self.cycle_b
    }
    pub fn identity(&self) -> f64 {
        self.idt_a + self.idt_b
    }
    pub fn discriminator(&self) -> f64 {
        self.loss_d_a + self.loss_d_b
    }
}

/// Things the trainer tells its caller about.
pub enum CycleEvent<'a> {
    Started { start_step: u64, total_steps: u64 },
    Step(&'a CycleStepStats),
    Sample(&'a Path),
    Checkpoint(&'a Path),
}

/// The four networks, their two optimizers and the two pools.
pub struct CycleGan {
    pub g_ab: ResnetGenerator,
    pub g_ba: ResnetGenerator,
    pub d_a: PatchDiscriminator,
    pub d_b: PatchDiscriminator,
    pub opt_g: Adam,
    pub opt_d: Adam,
    pub pool_a: ImagePool,
    pub pool_b: ImagePool,
    config: CycleGanConfig,
}

/// Prefixes `named_parameters` so two networks can share one optimizer.
fn prefixed(prefix: &str, m: &dyn Module) -> Vec<(String, Tensor)> {
    m.named_parameters()
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t))
        .collect()
}

impl CycleGan {
    /// Fresh networks for `config` (weights drawn from the seed on the host, then moved).
    pub fn new(config: &CycleGanConfig) -> Result<Self> {
        config.check()?;
        let mut rng = Rng::with_stream(config.seed, 1);
        let g_ab = ResnetGenerator::new(config.generator, &mut rng)?;
        let g_ba = ResnetGenerator::new(config.generator, &mut rng)?;
        let d_a = PatchDiscriminator::new(config.discriminator, &mut rng)?;
        let d_b = PatchDiscriminator::new(config.discriminator, &mut rng)?;
        for m in [&g_ab as &dyn Module, &g_ba, &d_a, &d_b] {
            m.to_device(config.device)?;
        }
        let adam = AdamConfig {
            lr: config.lr,
            betas: config.betas,
            ..Default::default()
        };
        let mut g_params = prefixed("g_ab", &g_ab);
        g_params.extend(prefixed("g_ba", &g_ba));
        let mut d_params = prefixed("d_a", &d_a);
        d_params.extend(prefixed("d_b", &d_b));
        Ok(CycleGan {
            opt_g: Adam::new(g_params, adam)?,
            opt_d: Adam::new(d_params, adam)?,
            g_ab,
            g_ba,
            d_a,
            d_b,
            pool_a: ImagePool::new(config.pool_size),
            pool_b: ImagePool::new(config.pool_size),
            config: config.clone(),
        })
    }

    /// One step (1-based `step`: it sets the learning rate and seeds the pools' choices) on a
    /// batch from each domain.
    pub fn step(&mut self, a: &Tensor, b: &Tensor, step: u64) -> Result<CycleStepStats> {
        let c = &self.config;
        let device = c.device;
        let (a, b) = (&a.to_device(device)?, &b.to_device(device)?);
        let lr = c.lr_at(step);
        self.opt_g.set_lr(lr);
        self.opt_d.set_lr(lr);
        let mut stats = CycleStepStats {
            step,
            lr,
            ..Default::default()
        };
        let check = |which: &str, v: f64| {
            if v.is_finite() {
                Ok(v)
            } else {
                Err(non_finite(which, v))
            }
        };
        // Least squares against a constant target: the mean of (x − target)².
        let ls = |x: &Tensor, target: f64| -> Result<Tensor> {
            mse(
                x,
                &Tensor::full(target, x.shape(), x.dtype(), device)?,
                Reduction::Mean,
            )
        };

        // 1. Generators.
        let fake_b = self.g_ab.forward(a, Mode::Train)?;
        let fake_a = self.g_ba.forward(b, Mode::Train)?;
        let rec_a = self.g_ba.forward(&fake_b, Mode::Train)?;
        let rec_b = self.g_ab.forward(&fake_a, Mode::Train)?;
        let adv_ab = ls(&self.d_b.forward(&fake_b, Mode::Train)?, 1.0)?;
        let adv_ba = ls(&self.d_a.forward(&fake_a, Mode::Train)?, 1.0)?;
        let lambda = c.lambda_cycle;
        let cycle_a = l1(&rec_a, a, Reduction::Mean)?.mul_scalar(lambda)?;
        let cycle_b = l1(&rec_b, b, Reduction::Mean)?.mul_scalar(lambda)?;
        let mut loss_g = adv_ab.add(&adv_ba)?.add(&cycle_a)?.add(&cycle_b)?;
        if c.lambda_identity > 0.0 {
            let w = lambda * c.lambda_identity;
            let idt_b =
                l1(&self.g_ab.forward(b, Mode::Train)?, b, Reduction::Mean)?.mul_scalar(w)?;
            let idt_a =
                l1(&self.g_ba.forward(a, Mode::Train)?, a, Reduction::Mean)?.mul_scalar(w)?;
            stats.idt_a = idt_a.to_scalar()?;
            stats.idt_b = idt_b.to_scalar()?;
            loss_g = loss_g.add(&idt_a)?.add(&idt_b)?;
        }
        stats.adv_ab = adv_ab.to_scalar()?;
        stats.adv_ba = adv_ba.to_scalar()?;
        stats.cycle_a = cycle_a.to_scalar()?;
        stats.cycle_b = cycle_b.to_scalar()?;
        check("generator", loss_g.to_scalar()?)?;
        // The gradient reaches the discriminators' weights too; only opt_g steps, and those
        // gradients are dropped with `grads`.
        let grads = loss_g.backward()?;
        drop((loss_g, adv_ab, adv_ba, cycle_a, cycle_b, rec_a, rec_b));
        self.opt_g.step(&grads)?;
        drop(grads);

        // 2. Discriminators, on the real batch and pooled (detached) translations.
        let mut rng = Rng::with_stream(c.seed, 0xc7c1_0000 + step);
        let old_b = self.pool_b.query(&fake_b, &mut rng)?;
        let old_a = self.pool_a.query(&fake_a, &mut rng)?;
        let half =
            |real: Tensor, fake: Tensor| -> Result<Tensor> { real.add(&fake)?.mul_scalar(0.5) };
        let loss_d_a = half(
            ls(&self.d_a.forward(a, Mode::Train)?, 1.0)?,
            ls(&self.d_a.forward(&old_a, Mode::Train)?, 0.0)?,
        )?;
        let loss_d_b = half(
            ls(&self.d_b.forward(b, Mode::Train)?, 1.0)?,
            ls(&self.d_b.forward(&old_b, Mode::Train)?, 0.0)?,
        )?;
        stats.loss_d_a = check("discriminator A", loss_d_a.to_scalar()?)?;
        stats.loss_d_b = check("discriminator B", loss_d_b.to_scalar()?)?;
        let grads = loss_d_a.add(&loss_d_b)?.backward()?;
        self.opt_d.step(&grads)?;
        Ok(stats)
    }

    /// `a | g_ab(a) | g_ba(g_ab(a)) | b | g_ba(b) | g_ab(g_ba(b))`, a row per image pair, in
    /// `[-1, 1]` (generators in eval mode, which for instance norm is the same computation).
    pub fn sample_rows(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        no_grad(|| {
            let device = self.g_ab.device();
            let (a, b) = (a.to_device(device)?, b.to_device(device)?);
            let fake_b = self.g_ab.translate(&a)?;
            let rec_a = self.g_ba.translate(&fake_b)?;
            let fake_a = self.g_ba.translate(&b)?;
            let rec_b = self.g_ab.translate(&fake_a)?;
            let n = a.dims()[0].min(b.dims()[0]);
            let mut tiles = Vec::with_capacity(6 * n);
            for i in 0..n {
                for t in [&a, &fake_b, &rec_a, &b, &fake_a, &rec_b] {
                    tiles.push(t.narrow(0, i, 1)?);
                }
            }
            Tensor::concat(&tiles.iter().collect::<Vec<_>>(), 0)?.to_device(Device::Cpu)
        })
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(&self.g_ab, dir.join("generator_ab.safetensors"))?;
        checkpoint::save(&self.g_ba, dir.join("generator_ba.safetensors"))?;
        checkpoint::save(&self.d_a, dir.join("discriminator_a.safetensors"))?;
        checkpoint::save(&self.d_b, dir.join("discriminator_b.safetensors"))?;
        self.opt_g.save(&dir.join("opt_g.safetensors"))?;
        self.opt_d.save(&dir.join("opt_d.safetensors"))?;
        self.pool_a.save(&dir.join("pool_a.safetensors"))?;
        self.pool_b.save(&dir.join("pool_b.safetensors"))
    }

    pub fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load(&self.g_ab, dir.join("generator_ab.safetensors"))?;
        checkpoint::load(&self.g_ba, dir.join("generator_ba.safetensors"))?;
        checkpoint::load(&self.d_a, dir.join("discriminator_a.safetensors"))?;
        checkpoint::load(&self.d_b, dir.join("discriminator_b.safetensors"))?;
        self.opt_g.load(&dir.join("opt_g.safetensors"))?;
        self.opt_d.load(&dir.join("opt_d.safetensors"))?;
        let device = self.config.device;
        self.pool_a.load(&dir.join("pool_a.safetensors"), device)?;
        self.pool_b.load(&dir.join("pool_b.safetensors"), device)
    }
}

/// Which way to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    AToB,
    BToA,
}

impl Direction {
    pub fn parse(s: &str) -> Result<Direction> {
        match s {
            "a2b" => Ok(Direction::AToB),
            "b2a" => Ok(Direction::BToA),
            _ => Err(Error::invalid(
                "--direction",
                format!("{s:?} is not a2b or b2a"),
            )),
        }
    }
    /// The checkpoint file of the generator that translates this way.
    pub fn file_name(self) -> &'static str {
        match self {
            Direction::AToB => "generator_ab.safetensors",
            Direction::BToA => "generator_ba.safetensors",
        }
    }
}

/// Loads a generator from a `.safetensors` file, a checkpoint folder or a run folder (its
/// latest checkpoint), its configuration read from the tensors.
pub fn load_translator(p: &Path, direction: Direction) -> Result<ResnetGenerator> {
    let file = weights_file(p, direction.file_name())?;
    let tensors = load_tensors(&file)?;
    let config = ResnetGenerator::infer_config(&tensors.tensors)
        .map_err(|e| Error::invalid("translate", format!("{}: {e}", file.display())))?;
    let g = ResnetGenerator::new(config, &mut Rng::new(0))?;
    checkpoint::load_state_dict(&g, &tensors.tensors).map_err(|e| match e {
        Error::Invalid { op, msg } => Error::Invalid {
            op,
            msg: format!("{}: {msg}", file.display()),
        },
        e => e,
    })?;
    Ok(g)
}

/// `n` images of a domain for step `step`: indices and horizontal flips drawn from
/// `(seed, stream, step)`.
pub fn draw_batch(
    data: &dyn Dataset,
    n: usize,
    seed: u64,
    stream: u64,
    step: u64,
) -> Result<Tensor> {
    let (c, s) = (data.channels(), data.image_size());
    let per = c * s * s;
    let mut rng = Rng::with_stream(seed, (stream << 40) + step);
    let mut buf = vec![0f32; n * per];
    for out in buf.chunks_mut(per) {
        let i = rng.below(data.len() as u32) as usize;
        data.load(i, out)?;
        if rng.uniform() < 0.5 {
            for row in out.chunks_mut(s) {
                row.reverse();
            }
        }
    }
    Tensor::from_vec(buf, [n, c, s, s], Device::Cpu)
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct CycleSummary {
    pub steps: u64,
    pub last: Option<CycleStepStats>,
    pub last_sample: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
}

const METRICS_HEADER: &str =
    "step,lr,adv_ab,adv_ba,cycle_a,cycle_b,idt_a,idt_b,loss_d_a,loss_d_b,images_per_s";

/// The images of the sample grids: up to 4 of each domain's `held_out` set if given, else the
/// first training images.
fn sample_inputs(domain: &dyn Dataset, held_out: Option<&dyn Dataset>) -> Result<Tensor> {
    let d = held_out.unwrap_or(domain);
    let n = d.len().min(4);
    let (c, s) = (d.channels(), d.image_size());
    let mut buf = vec![0f32; n * c * s * s];
    for (i, out) in buf.chunks_mut(c * s * s).enumerate() {
        d.load(i, out)?;
    }
    Tensor::from_vec(buf, [n, c, s, s], Device::Cpu)
}

/// Trains in the run folder `run` on unpaired domains `a` and `b` (their images must have the
/// run's size and channels). `held_out`, if given, supplies the sample-grid inputs. With
/// `resume`, continues from the latest checkpoint (its configuration wins, except `steps`,
/// which may be raised).
pub fn train(
    config: &CycleGanConfig,
    a: Arc<dyn Dataset>,
    b: Arc<dyn Dataset>,
    held_out: Option<(Arc<dyn Dataset>, Arc<dyn Dataset>)>,
    run: &Path,
    resume: bool,
    mut on_event: impl FnMut(CycleEvent),
) -> Result<CycleSummary> {
    let t0 = Instant::now();
    let mut config = config.clone();
    let mut net;
    let mut step;
    let mut run = if resume {
        let (r, dir, state, at) = Run::resume(run, METRICS_HEADER)?;
        let (steps, device) = (config.steps, config.device);
        config = CycleGanConfig::from_json(&state["config"])?;
        if steps > config.steps {
            config.steps = steps;
        }
        config.device = device;
        net = CycleGan::new(&config)?;
        net.load(&dir)?;
        step = at;
        r
    } else {
        config.check()?;
        let r = Run::create(run, METRICS_HEADER)?;
        net = CycleGan::new(&config)?;
        step = 0;
        r
    };
    for (name, d) in [("A", &a), ("B", &b)] {
        let want = (config.generator.channels_in, config.image_size);
        if (d.channels(), d.image_size()) != want || d.is_empty() {
            return Err(Error::invalid(
                "train cyclegan",
                format!(
                    "domain {name} ({}) must give {s}x{s} images with {c} channels",
                    d.describe(),
                    s = want.1,
                    c = want.0
                ),
            ));
        }
    }
    let samples_a = sample_inputs(a.as_ref(), held_out.as_ref().map(|h| h.0.as_ref()))?;
    let samples_b = sample_inputs(b.as_ref(), held_out.as_ref().map(|h| h.1.as_ref()))?;
    on_event(CycleEvent::Started {
        start_step: step,
        total_steps: config.steps,
    });
    let mut summary = CycleSummary {
        steps: step,
        last: None,
        last_sample: None,
        last_checkpoint: None,
        seconds: 0.0,
    };
    while step < config.steps {
        let n = config.batch_size;
        let batch_a = draw_batch(a.as_ref(), n, config.seed, 1, step)?;
        let batch_b = draw_batch(b.as_ref(), n, config.seed, 2, step)?;
        let t = Instant::now();
        let mut stats = net
            .step(&batch_a, &batch_b, step + 1)
            .map_err(|e| run.stopped_at(e, step + 1))?;
        step += 1;
        stats.images_per_s = n as f64 / t.elapsed().as_secs_f64();
        on_event(CycleEvent::Step(&stats));
        run.metrics_row(&format!(
            "{step},{:.3e},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.5},{:.2}",
            stats.lr,
            stats.adv_ab,
            stats.adv_ba,
            stats.cycle_a,
            stats.cycle_b,
            stats.idt_a,
            stats.idt_b,
            stats.loss_d_a,
            stats.loss_d_b,
            stats.images_per_s
        ))?;
        summary.last = Some(stats);
        let last = step == config.steps;
        if step % config.sample_every.max(1) == 0 || last {
            let path = run.sample_path(step);
            save_png(
                &make_grid(&net.sample_rows(&samples_a, &samples_b)?, 6, 2)?,
                &path,
            )?;
            on_event(CycleEvent::Sample(&path));
            summary.last_sample = Some(path);
        }
        if step % config.checkpoint_every.max(1) == 0 || last {
            let state = json!({
                "step": step,
                "domain_a": a.describe(),
                "domain_b": b.describe(),
                "config": config.to_json(),
            });
            let dir = run.checkpoint(step, &state, |dir| net.save(dir))?;
            on_event(CycleEvent::Checkpoint(&dir));
            summary.last_checkpoint = Some(dir);
        }
    }
    summary.steps = step;
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
