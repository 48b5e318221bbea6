//! The SRGAN trainer, in the paper's two phases, on the shared run folder ([`crate::run`]).
//!
//! 1. **`Phase::SrResNet`**: the generator alone, pixel MSE against the HR crop, Adam 1e-4.
//! 2. **`Phase::Srgan`**: adversarial fine-tuning, starting from phase-1 weights
//!    ([`SrTrainConfig::init_from`]). Each step first updates D on `BCE(D(HR), 1) +
//!    BCE(D(G(LR)).detach(), 0)`, then G on `content + 1e-3 · BCE(D(G(LR)), 1)`, where
//!    the content loss is the VGG loss ([`PerceptualLoss`], φ5,4) when a VGG-19 file is given,
//!    else the pixel MSE (and the trainer says so).
//!
//! Every `validate_every` steps the generator (eval mode) upscales the validation set and
//! `metrics.csv` gets its mean Y-PSNR and SSIM ([`crate::metrics`]); every `sample_every` steps
//! a strip `bicubic | SR | HR` of a few validation crops (or of fixed training crops when
//! there is no validation set) goes to `samples/`. Batches are drawn from `(seed, step)`, so
//! a resumed run continues with exactly the batches it would have seen.

use super::{SrDiscriminator, SrDiscriminatorConfig, SrResNet, SrResNetConfig};
use crate::metrics::{mean_score, sr_score, SrScore};
pub use crate::run::generator_file;
use crate::run::{non_finite, Run};
use crate::sr::{imresize, Image, Quantize, SrData, SrLoader, SrPairs};
use crate::vgg::PerceptualLoss;
use gantry_core::{DType, Device, Error, Result, Rng, Tensor};
use gantry_nn::checkpoint;
use gantry_nn::loss::{bce_with_logits, mse, Reduction};
use gantry_nn::{Adam, AdamConfig, Mode, Module, ModuleExt, Optimizer};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Which of the paper's two phases a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    SrResNet,
    Srgan,
}

impl Phase {
    pub fn parse(s: &str) -> Result<Phase> {
        match s {
            "srresnet" => Ok(Phase::SrResNet),
            "srgan" => Ok(Phase::Srgan),
            _ => Err(Error::invalid(
                "--phase",
                format!("{s:?} is not srresnet or srgan"),
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Phase::SrResNet => "srresnet",
            Phase::Srgan => "srgan",
        }
    }
}

/// Everything that defines a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SrTrainConfig {
    pub phase: Phase,
    pub generator: SrResNetConfig,
    /// The discriminator (phase 2); its `image_size` is set to `crop`.
    pub discriminator: SrDiscriminatorConfig,
    /// HR crop side (96).
    pub crop: usize,
    pub batch_size: usize,
    /// Adam's learning rate (1e-4).
    pub lr: f64,
    pub betas: (f64, f64),
    pub steps: u64,
    pub seed: u64,
    /// Weight of the adversarial term in the generator's loss (1e-3).
    pub adversarial_weight: f64,
    pub sample_every: u64,
    pub checkpoint_every: u64,
    pub validate_every: u64,
    /// Phase 2 starts from these generator weights: a `.safetensors`, a checkpoint folder or
    /// a run folder (its latest checkpoint).
    pub init_from: Option<PathBuf>,
    /// A VGG-19 `features` file for the perceptual loss (phase 2); without it, MSE.
    pub vgg: Option<PathBuf>,
    /// Not part of a checkpoint: a run may resume on another device.
    pub device: Device,
}

impl Default for SrTrainConfig {
    fn default() -> Self {
        SrTrainConfig {
            phase: Phase::SrResNet,
            generator: SrResNetConfig::default(),
            discriminator: SrDiscriminatorConfig::default(),
            crop: 96,
            batch_size: 16,
            lr: 1e-4,
            betas: (0.9, 0.999),
            steps: 1000,
            seed: 0,
            adversarial_weight: 1e-3,
            sample_every: 500,
            checkpoint_every: 500,
            validate_every: 500,
            init_from: None,
            vgg: None,
            device: Device::Cpu,
        }
    }
}

impl SrTrainConfig {
    fn to_json(&self) -> Value {
        let (g, d) = (&self.generator, &self.discriminator);
        json!({
            "phase": self.phase.name(),
            "channels": g.channels, "width": g.width, "blocks": g.blocks, "scale": g.scale,
            "d_width": d.width, "d_stages": d.stages, "d_dense": d.dense,
            "crop": self.crop, "batch_size": self.batch_size, "lr": self.lr,
            "beta1": self.betas.0, "beta2": self.betas.1, "steps": self.steps, "seed": self.seed,
            "adversarial_weight": self.adversarial_weight, "sample_every": self.sample_every,
            "checkpoint_every": self.checkpoint_every, "validate_every": self.validate_every,
            "init_from": self.init_from.as_ref().map(|p| p.display().to_string()),
            "vgg": self.vgg.as_ref().map(|p| p.display().to_string()),
        })
    }

    /// Parses the `config` object of a checkpoint's `state.json`.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |k: &str| Error::invalid("resume", format!("state.json: bad config field {k}"));
        let u = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        let f = |k: &str| v[k].as_f64().ok_or_else(|| bad(k));
        let path = |k: &str| v[k].as_str().map(PathBuf::from);
        let crop = u("crop")? as usize;
        let channels = u("channels")? as usize;
        Ok(SrTrainConfig {
            phase: Phase::parse(v["phase"].as_str().ok_or_else(|| bad("phase"))?)?,
            generator: SrResNetConfig {
                channels,
                width: u("width")? as usize,
                blocks: u("blocks")? as usize,
                scale: u("scale")? as usize,
            },
            discriminator: SrDiscriminatorConfig {
                channels,
                width: u("d_width")? as usize,
                stages: u("d_stages")? as usize,
                dense: u("d_dense")? as usize,
                image_size: crop,
            },
            crop,
            batch_size: u("batch_size")? as usize,
            lr: f("lr")?,
            betas: (f("beta1")?, f("beta2")?),
            steps: u("steps")?,
            seed: u("seed")?,
            adversarial_weight: f("adversarial_weight")?,
            sample_every: u("sample_every")?,
            checkpoint_every: u("checkpoint_every")?,
            validate_every: u("validate_every")?,
            init_from: path("init_from"),
            vgg: path("vgg"),
            device: Device::Cpu,
        })
    }
}

/// Loads an SRResNet from a `.safetensors`, checkpoint folder or run folder, its
/// configuration read from the tensors.
pub fn load_generator(p: &Path) -> Result<SrResNet> {
    let file = generator_file(p)?;
    let tensors = checkpoint::load_tensors(&file)?;
    let config = SrResNet::infer_config(&tensors.tensors)?;
    let g = SrResNet::new(config, &mut Rng::new(0))?;
    checkpoint::load_state_dict(&g, &tensors.tensors).map_err(|e| match e {
        Error::Invalid { op, msg } => Error::Invalid {
            op,
            msg: format!("{}: {msg}", file.display()),
        },
        e => e,
    })?;
    Ok(g)
}

/// What one step measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SrStepStats {
    pub step: u64,
    /// The generator's content loss (pixel MSE, or the VGG loss in phase 2 with a VGG file).
    pub content: f64,
    /// The generator's adversarial loss (phase 2).
    pub adversarial: f64,
    /// The discriminator's loss (phase 2).
    pub loss_d: f64,
    /// Mean D(HR) and D(G(LR)) before the D update (phase 2).
    pub d_hr: f64,
    pub d_sr: f64,
    /// PSNR of the batch in RGB on [-1, 1] (a cheap training signal, not the Y-PSNR).
    pub batch_psnr: f64,
    pub images_per_s: f64,
}

/// Things the trainer tells its caller about.
pub enum SrEvent<'a> {
    Started { start_step: u64, total_steps: u64 },
    Note(&'a str),
    Step(&'a SrStepStats),
    Validation { step: u64, score: SrScore },
    Sample(&'a Path),
    Checkpoint(&'a Path),
}

/// The networks, optimizers and losses of a run.
pub struct Srgan {
    pub g: SrResNet,
    pub opt_g: Adam,
    /// Phase 2 only.
    pub d: Option<(SrDiscriminator, Adam)>,
    pub perceptual: Option<PerceptualLoss>,
    pub adversarial_weight: f64,
}

impl Srgan {
    /// Fresh networks for `config` (weights drawn from the seed on the host, then moved).
    pub fn new(config: &SrTrainConfig) -> Result<Self> {
        let mut rng = Rng::with_stream(config.seed, 1);
        let g = SrResNet::new(config.generator, &mut rng)?;
        ModuleExt::to_device(&g, config.device)?;
        let adam = AdamConfig {
            lr: config.lr,
            betas: config.betas,
            ..Default::default()
        };
        let opt_g = Adam::new(g.named_parameters(), adam)?;
        let d = if config.phase == Phase::Srgan {
            let dc = SrDiscriminatorConfig {
                image_size: config.crop,
                channels: config.generator.channels,
                ..config.discriminator
            };
            let d = SrDiscriminator::new(dc, &mut rng)?;
            ModuleExt::to_device(&d, config.device)?;
            let opt = Adam::new(d.named_parameters(), adam)?;
            Some((d, opt))
        } else {
            None
        };
        let perceptual = match (&config.vgg, config.phase) {
            (Some(path), Phase::Srgan) => {
                let mut p = PerceptualLoss::srgan(path)?;
                p.vgg.move_to(config.device)?;
                Some(p)
            }
            _ => None,
        };
        Ok(Srgan {
            g,
            opt_g,
            d,
            perceptual,
            adversarial_weight: config.adversarial_weight,
        })
    }

    /// One step on an (LR, HR) batch.
    pub fn step(&mut self, lr: &Tensor, hr: &Tensor) -> Result<SrStepStats> {
        let device = self.g.device();
        let (lr, hr) = (&lr.to_device(device)?, &hr.to_device(device)?);
        let n = lr.dims()[0];
        let sr = self.g.forward(lr, Mode::Train)?;
        let pixel = mse(&sr, hr, Reduction::Mean)?;
        let mut stats = SrStepStats {
            batch_psnr: 10.0 * (4.0 / pixel.to_scalar()?).log10(),
            ..Default::default()
        };
        let Some((d, opt_d)) = &mut self.d else {
            stats.content = pixel.to_scalar()?;
            if !stats.content.is_finite() {
                return Err(non_finite("generator", stats.content));
            }
            let grads = pixel.backward()?;
            self.opt_g.step(&grads)?;
            return Ok(stats);
        };
        let ones = Tensor::ones([n, 1], DType::F32, device)?;
        let zeros = Tensor::zeros([n, 1], DType::F32, device)?;
        let mean_prob = |l: &Tensor| -> Result<f64> { l.sigmoid()?.mean_all()?.to_scalar() };

        // D step on the real batch and the detached SR batch.
        let real_logits = d.forward(hr, Mode::Train)?;
        let fake_logits = d.forward(&sr.detach(), Mode::Train)?;
        let loss_d = bce_with_logits(&real_logits, &ones, Reduction::Mean)?
            .add(&bce_with_logits(&fake_logits, &zeros, Reduction::Mean)?)?;
        stats.loss_d = loss_d.to_scalar()?;
        stats.d_hr = mean_prob(&real_logits)?;
        stats.d_sr = mean_prob(&fake_logits)?;
        if !stats.loss_d.is_finite() {
            return Err(non_finite("discriminator", stats.loss_d));
        }
        let grads = loss_d.backward()?;
        drop((loss_d, real_logits, fake_logits));
        opt_d.step(&grads)?;
        drop(grads);

        // G step: content + weight · adversarial, through the updated D.
        let content = match &self.perceptual {
            Some(p) => p.loss(&sr, hr)?,
            None => pixel,
        };
        let adversarial = bce_with_logits(&d.forward(&sr, Mode::Train)?, &ones, Reduction::Mean)?;
        stats.content = content.to_scalar()?;
        stats.adversarial = adversarial.to_scalar()?;
        let loss_g = content.add(&adversarial.mul_scalar(self.adversarial_weight)?)?;
        let v = loss_g.to_scalar()?;
        if !v.is_finite() {
            return Err(non_finite("generator", v));
        }
        let grads = loss_g.backward()?;
        self.opt_g.step(&grads)?;
        Ok(stats)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(&self.g, dir.join("generator.safetensors"))?;
        self.opt_g.save(&dir.join("opt_g.safetensors"))?;
        if let Some((d, opt_d)) = &self.d {
            checkpoint::save(d, dir.join("discriminator.safetensors"))?;
            opt_d.save(&dir.join("opt_d.safetensors"))?;
        }
        Ok(())
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        checkpoint::load(&self.g, dir.join("generator.safetensors"))?;
        self.opt_g.load(&dir.join("opt_g.safetensors"))?;
        if let Some((d, opt_d)) = &mut self.d {
            checkpoint::load(&*d, dir.join("discriminator.safetensors"))?;
            opt_d.load(&dir.join("opt_d.safetensors"))?;
        }
        Ok(())
    }
}

/// Mean Y-PSNR/SSIM of `g` on an evaluation set (tiled so large images stay in memory).
pub fn validate(g: &SrResNet, set: &SrPairs) -> Result<SrScore> {
    let scores = set
        .pairs
        .iter()
        .map(|p| sr_score(&g.upscale(&p.lr, 96)?.quantized(), &p.hr, g.config.scale))
        .collect::<Result<Vec<_>>>()?;
    Ok(mean_score(&scores))
}

/// The LR crops (and their HR) that sample strips show: centre crops of up to 3 validation
/// images, else fixed training crops.
fn strip_inputs(data: &SrData, val: Option<&SrPairs>, seed: u64) -> Result<Vec<(Image, Image)>> {
    let s = data.scale;
    let side = 32;
    if let Some(val) = val {
        let picked: Vec<(Image, Image)> = val
            .pairs
            .iter()
            .filter(|p| p.lr.height >= side && p.lr.width >= side)
            .take(3)
            .map(|p| {
                let (y, x) = ((p.lr.height - side) / 2, (p.lr.width - side) / 2);
                Ok((
                    p.lr.crop(y, x, side, side)?.to_rgb(),
                    p.hr.crop(y * s, x * s, side * s, side * s)?.to_rgb(),
                ))
            })
            .collect::<Result<_>>()?;
        if !picked.is_empty() {
            return Ok(picked);
        }
    }
    let mut rng = Rng::with_stream(seed, 3);
    (0..3).map(|_| data.sample(&mut rng)).collect()
}

/// Writes a strip per input, stacked: `bicubic | SR | HR`.
pub fn save_strip(g: &SrResNet, inputs: &[(Image, Image)], path: &Path) -> Result<()> {
    let mut rows = Vec::new();
    for (lr, hr) in inputs {
        let bicubic = imresize(lr, g.config.scale as f64, Quantize::PerPass)?;
        let sr = g.upscale(lr, 0)?;
        rows.push([bicubic, sr, hr.clone()]);
    }
    let (h, w) = (rows[0][2].height, rows[0][2].width);
    let pad = 2;
    let (gw, gh) = (3 * (w + pad) + pad, rows.len() * (h + pad) + pad);
    let mut data = vec![0f32; 3 * gh * gw];
    for (r, row) in rows.iter().enumerate() {
        for (k, img) in row.iter().enumerate() {
            let img = img.to_rgb();
            let (x0, y0) = (pad + k * (w + pad), pad + r * (h + pad));
            for c in 0..3 {
                for y in 0..img.height.min(h) {
                    for x in 0..img.width.min(w) {
                        data[(c * gh + y0 + y) * gw + x0 + x] =
                            img.data[(c * img.height + y) * img.width + x];
                    }
                }
            }
        }
    }
    Image::new(3, gh, gw, data)?.save(path)
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct SrSummary {
    pub steps: u64,
    pub last_score: Option<SrScore>,
    pub last_sample: Option<PathBuf>,
    pub last_checkpoint: Option<PathBuf>,
    pub seconds: f64,
}

const METRICS_HEADER: &str =
    "step,content,adversarial,loss_d,d_hr,d_sr,batch_psnr,val_psnr,val_ssim,images_per_s";

/// Trains in the run folder `run`. With `resume`, continues from its latest checkpoint (its
/// configuration wins, except `steps`, which may be raised).
pub fn train(
    config: &SrTrainConfig,
    data: Arc<SrData>,
    val: Option<&SrPairs>,
    run: &Path,
    resume: bool,
    mut on_event: impl FnMut(SrEvent),
) -> Result<SrSummary> {
    let t0 = Instant::now();
    let mut config = config.clone();
    let mut net;
    let mut step;
    let mut run = if resume {
        let (r, dir, state, at) = Run::resume(run, METRICS_HEADER)?;
        let (steps, device) = (config.steps, config.device);
        config = SrTrainConfig::from_json(&state["config"])?;
        config.steps = config.steps.max(steps);
        config.device = device;
        net = Srgan::new(&config)?;
        net.load(&dir)?;
        step = at;
        r
    } else {
        let r = Run::create(run, METRICS_HEADER)?;
        net = Srgan::new(&config)?;
        if let Some(from) = &config.init_from {
            let file = generator_file(from)?;
            checkpoint::load(&net.g, &file)?;
            on_event(SrEvent::Note(&format!(
                "generator initialised from {}",
                file.display()
            )));
        }
        step = 0;
        r
    };
    if (data.crop, data.scale) != (config.crop, config.generator.scale) {
        return Err(Error::invalid(
            "train srgan",
            format!(
                "the data gives {c}x{c} crops at x{}, the run wants {d}x{d} at x{}",
                data.scale,
                config.generator.scale,
                c = data.crop,
                d = config.crop
            ),
        ));
    }
    if config.phase == Phase::Srgan {
        let note = match &config.vgg {
            Some(p) => format!("content loss: VGG-19 phi5,4 from {}", p.display()),
            None => "content loss: pixel MSE (no --vgg file given, so no perceptual loss)".into(),
        };
        on_event(SrEvent::Note(&note));
        if config.init_from.is_none() && !resume {
            on_event(SrEvent::Note(
                "phase srgan without --init-from: the generator starts from scratch",
            ));
        }
    }
    let strips = strip_inputs(&data, val, config.seed)?;
    on_event(SrEvent::Started {
        start_step: step,
        total_steps: config.steps,
    });
    let mut summary = SrSummary {
        steps: step,
        last_score: None,
        last_sample: None,
        last_checkpoint: None,
        seconds: 0.0,
    };
    let loader = SrLoader::new(
        data.clone(),
        config.batch_size,
        config.seed,
        step,
        config.steps,
    )?;
    for batch in loader {
        let (lr, hr) = batch?;
        let t = Instant::now();
        let mut stats = net
            .step(&lr, &hr)
            .map_err(|e| run.stopped_at(e, step + 1))?;
        step += 1;
        stats.step = step;
        stats.images_per_s = config.batch_size as f64 / t.elapsed().as_secs_f64();
        on_event(SrEvent::Step(&stats));
        let last = step == config.steps;
        let mut val_cols = ",".to_string();
        if let Some(val) = val {
            if step % config.validate_every.max(1) == 0 || last {
                let score = validate(&net.g, val)?;
                val_cols = format!("{:.4},{:.5}", score.psnr, score.ssim);
                on_event(SrEvent::Validation { step, score });
                summary.last_score = Some(score);
            }
        }
        run.metrics_row(&format!(
            "{},{:.6},{:.6},{:.6},{:.4},{:.4},{:.3},{val_cols},{:.1}",
            step,
            stats.content,
            stats.adversarial,
            stats.loss_d,
            stats.d_hr,
            stats.d_sr,
            stats.batch_psnr,
            stats.images_per_s
        ))?;
        if step % config.sample_every.max(1) == 0 || last {
            let path = run.sample_path(step);
            save_strip(&net.g, &strips, &path)?;
            on_event(SrEvent::Sample(&path));
            summary.last_sample = Some(path);
        }
        if step % config.checkpoint_every.max(1) == 0 || last {
            let state = json!({
                "step": step,
                "data": data.describe(),
                "config": config.to_json(),
            });
            let dir = run.checkpoint(step, &state, |dir| net.save(dir))?;
            on_event(SrEvent::Checkpoint(&dir));
            summary.last_checkpoint = Some(dir);
        }
    }
    summary.steps = step;
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}
