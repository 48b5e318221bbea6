//! `gantry train dcgan` and `gantry generate`: argument handling around `gantry_gan`.

use clap::Args;
use gantry::gan::data::{Dataset, Digits, ImageFolder, Mnist};
use gantry::gan::dcgan::{infer_generator_config, DcganConfig, Generator};
use gantry::gan::grid::{make_grid, save_png};
use gantry::gan::run::generator_file;
use gantry::gan::train::{read_state, train, Event, TrainConfig};
use gantry::nn::checkpoint::{load_state_dict, load_tensors};
use gantry::nn::npy::{read_npy, write_npy};
use gantry::nn::{Mode, Module};
use gantry::{no_grad, DType, Device, Error, Result, Rng, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// Training data: `digits` (generated, no download), `mnist:DIR` (IDX files) or
    /// `folder:DIR` (PNG/JPEG tree).
    #[arg(long, default_value = "digits")]
    data: String,
    /// Image height and width (a power of two ≥ 16).
    #[arg(long, default_value_t = 32)]
    image_size: usize,
    /// Image channels, 1 or 3 (default: 1 for digits and MNIST, 3 for a folder).
    #[arg(long)]
    channels: Option<usize>,
    /// Passes over the data (ignored when --steps is given).
    #[arg(long, default_value_t = 1)]
    epochs: u64,
    /// Total training steps (one D and one G update each).
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Adam learning rate for both networks.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Adam β₁.
    #[arg(long, default_value_t = 0.5)]
    beta1: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Latent size.
    #[arg(long, default_value_t = 100)]
    nz: usize,
    /// Generator width.
    #[arg(long, default_value_t = 64)]
    ngf: usize,
    /// Discriminator width.
    #[arg(long, default_value_t = 64)]
    ndf: usize,
    /// One-sided label smoothing of the real targets.
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// How many digits the built-in data set draws.
    #[arg(long, default_value_t = 60000)]
    digits: usize,
    #[arg(long, default_value_t = 100)]
    sample_every: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// What convolutions multiply in: f32, or mixed precision with tf32, bf16 or f16 inputs
    /// (f32 accumulation and master weights; f16 adds dynamic loss scaling). On CUDA this
    /// picks the tensor-core kernels; on the CPU the inputs are rounded the same way.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// On CUDA, launch every op of every step instead of capturing the step into a CUDA
    /// graph and replaying it (graphs are used by default there, except with f16).
    #[arg(long)]
    no_cuda_graph: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The run folder (default: runs/dcgan-<data>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
}

/// `cpu`, `cuda` or `cuda:N`, checked to exist (a clear error where there is no GPU).
pub fn parse_device(s: &str) -> Result<Device> {
    let d = Device::parse(s)?;
    d.check_available("--device")?;
    Ok(d)
}

fn open_data(
    spec: &str,
    size: usize,
    channels: Option<usize>,
    digits: usize,
    seed: u64,
) -> Result<Arc<dyn Dataset>> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    Ok(match kind {
        "digits" => Arc::new(Digits::new(digits, size, channels.unwrap_or(1), seed)?),
        "mnist" if !arg.is_empty() => Arc::new(Mnist::open(arg, size, channels.unwrap_or(1))?),
        "folder" if !arg.is_empty() => {
            let f = ImageFolder::open(arg, size, channels.unwrap_or(3))?;
            if let Some(w) = f.skipped_warning() {
                eprintln!("warning: {w}");
            }
            Arc::new(f)
        }
        _ => {
            return Err(Error::invalid(
                "--data",
                format!("{spec:?} is not digits, mnist:DIR or folder:DIR"),
            ))
        }
    })
}

pub fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    match threads {
        None => Ok(f()),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build()
                .map_err(|e| Error::invalid("--threads", e.to_string()))?;
            Ok(pool.install(f))
        }
    }
}

/// Shows a trainer's step bar on stderr, at `start_step` of `total_steps` (saying so when a
/// run resumes).
pub fn start_bar(bar: &ProgressBar, start_step: u64, total_steps: u64) {
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_length(total_steps);
    bar.set_position(start_step);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    if start_step > 0 {
        bar.println(format!("resuming at step {start_step}"));
    }
}

pub fn train_dcgan(a: TrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let tag: String = a.data.split(':').next().unwrap_or("data").to_string();
        PathBuf::from("runs").join(format!("dcgan-{tag}"))
    });
    let data = open_data(&a.data, a.image_size, a.channels, a.digits, a.seed)?;
    let bpe = (data.len() / a.batch_size.max(1)) as u64;
    let config = TrainConfig {
        model: DcganConfig {
            image_size: a.image_size,
            nc: data.channels(),
            nz: a.nz,
            ngf: a.ngf,
            ndf: a.ndf,
        },
        batch_size: a.batch_size,
        lr: a.lr,
        betas: (a.beta1, 0.999),
        steps: a.steps.unwrap_or(a.epochs * bpe),
        seed: a.seed,
        sample_every: a.sample_every,
        checkpoint_every: a.checkpoint_every,
        samples: 64,
        label_smoothing: a.label_smoothing,
        device,
        precision: a.precision.parse()?,
        cuda_graph: !a.no_cuda_graph,
    };
    eprintln!("data: {}", data.describe());
    eprintln!("run folder: {}", out.display());
    let bar = ProgressBar::hidden();
    let summary = with_threads(a.threads, || {
        train(&config, data, &out, a.resume, |ev| match ev {
            Event::Started {
                start_step,
                total_steps,
                batches_per_epoch,
            } => {
                start_bar(&bar, start_step, total_steps);
                if start_step > 0 {
                    bar.println(format!("({batches_per_epoch} steps per epoch)"));
                }
            }
            Event::Step(s) => {
                bar.set_position(s.step);
                bar.set_message(format!(
                    "epoch {} loss_d {:.3} loss_g {:.3} D(x) {:.2} D(G(z)) {:.2} {:.0} img/s",
                    s.epoch, s.loss_d, s.loss_g, s.d_x, s.d_g_z, s.images_per_s
                ));
            }
            Event::Sample(_) | Event::Checkpoint(_) => {}
        })
    })?;
    bar.finish();
    let summary = summary?;
    eprintln!(
        "trained {} steps in {:.0} s; samples in {}, checkpoint in {}",
        summary.steps,
        summary.seconds,
        out.join("samples").display(),
        summary
            .last_checkpoint
            .map_or("-".into(), |p| p.display().to_string())
    );
    if let Some(s) = summary.last_sample {
        eprintln!("last sample grid: {}", s.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A run folder, a checkpoint folder, or a generator `.safetensors` file (gantry's or one
    /// saved from the PyTorch DCGAN example's `state_dict`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// How many images.
    #[arg(long, default_value_t = 64)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Noise to use instead of drawing it: a `.npy` of shape [n, nz, 1, 1].
    #[arg(long)]
    noise: Option<PathBuf>,
    /// A grid that walks between latent points (rows of `--steps-between` images).
    #[arg(long)]
    interpolate: bool,
    /// Images per interpolation row.
    #[arg(long, default_value_t = 8)]
    steps_between: usize,
    /// The PNG grid to write.
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
    /// Also write the raw generator output as `.npy` ([n, nc, s, s], in [-1, 1]).
    #[arg(long)]
    out_npy: Option<PathBuf>,
    /// Architecture overrides when a bare `.safetensors` leaves them ambiguous.
    #[arg(long)]
    nz: Option<usize>,
    #[arg(long)]
    ngf: Option<usize>,
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long)]
    channels: Option<usize>,
}

/// A generator file's architecture: from its run's `state.json` when it sits in a checkpoint
/// folder, else inferred from the tensor shapes.
fn generator_config(file: &Path, tensors: &[(String, Tensor)]) -> Result<DcganConfig> {
    match file.parent().filter(|d| d.join("state.json").is_file()) {
        Some(dir) => Ok(TrainConfig::from_json(&read_state(dir)?["config"])?.model),
        None => infer_generator_config(tensors),
    }
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    let file = generator_file(&a.checkpoint)?;
    let tensors = load_tensors(&file)?.tensors;
    let mut cfg = generator_config(&file, &tensors)?;
    cfg.nz = a.nz.unwrap_or(cfg.nz);
    cfg.ngf = a.ngf.unwrap_or(cfg.ngf);
    cfg.image_size = a.image_size.unwrap_or(cfg.image_size);
    cfg.nc = a.channels.unwrap_or(cfg.nc);
    let g = Generator::new(cfg, &mut Rng::new(0))?;
    load_state_dict(&g, &tensors)
        .map_err(|e| Error::invalid("generate", format!("{}: {e}", file.display())))?;

    let mut rng = Rng::new(a.seed);
    let noise = if let Some(p) = &a.noise {
        read_npy(p)?.to_dtype(DType::F32)?
    } else if a.interpolate {
        // Rows walk linearly between consecutive random latent points.
        let rows = a.n.div_ceil(a.steps_between.max(2)).max(1);
        let k = a.steps_between.max(2);
        let ends = Tensor::randn(
            [rows + 1, cfg.nz],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut rng,
        )?
        .to_vec::<f32>()?;
        let mut z = Vec::with_capacity(rows * k * cfg.nz);
        for r in 0..rows {
            for s in 0..k {
                let t = s as f32 / (k - 1) as f32;
                for j in 0..cfg.nz {
                    z.push(ends[r * cfg.nz + j] * (1.0 - t) + ends[(r + 1) * cfg.nz + j] * t);
                }
            }
        }
        Tensor::from_vec(z, [rows * k, cfg.nz, 1, 1], Device::Cpu)?
    } else {
        Tensor::randn(
            [a.n, cfg.nz, 1, 1],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut rng,
        )?
    };
    let images = no_grad(|| g.forward(&noise, Mode::Eval))?;
    let n = images.dims()[0];
    let ncol = if a.interpolate {
        a.steps_between.max(2)
    } else {
        (n as f64).sqrt().ceil() as usize
    };
    save_png(&make_grid(&images, ncol, 2)?, &a.out)?;
    eprintln!(
        "wrote {} ({n} images from {})",
        a.out.display(),
        file.display()
    );
    if let Some(p) = &a.out_npy {
        write_npy(p, &images)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder (or a checkpoint folder / generator `.safetensors`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The real data: `digits` or `mnist:DIR` (labelled data only).
    #[arg(long, default_value = "digits")]
    data: String,
    /// Images per set (real reference, held-out real, generated).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Training steps of the classifier (batches of 64), when it is not cached yet.
    #[arg(long, default_value_t = 600)]
    classifier_steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn eval_gan(a: EvalArgs) -> Result<()> {
    use gantry::gan::eval::{cached_classifier, sample_images, score};
    let file = generator_file(&a.checkpoint)?;
    let tensors = load_tensors(&file)?.tensors;
    let cfg = generator_config(&file, &tensors)?;
    let g = Generator::new(cfg, &mut Rng::new(0))?;
    load_state_dict(&g, &tensors)?;
    let (size, nc) = (cfg.image_size, cfg.nc);
    let (train_data, heldout): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match a.data.split_once(':') {
        Some(("mnist", dir)) => (
            Arc::new(Mnist::open(dir, size, nc)?),
            Arc::new(Mnist::open_test(dir, size, nc)?),
        ),
        None if a.data == "digits" => (
            Arc::new(Digits::new(60_000, size, nc, a.seed)?),
            // Held out: drawings the training set never had (another seed).
            Arc::new(Digits::new(10_000, size, nc, a.seed ^ 0x9e37_79b9)?),
        ),
        _ => {
            return Err(Error::invalid(
                "eval-gan",
                format!("--data {:?}: use digits or mnist:DIR", a.data),
            ))
        }
    };
    // The classifier is cached beside the run (a run folder's eval/, else the file's folder).
    let cache_dir = if a.checkpoint.is_dir() && a.checkpoint.join("checkpoint").is_dir() {
        a.checkpoint.join("eval")
    } else {
        file.parent()
            .map_or(PathBuf::from("."), |p| p.to_path_buf())
    };
    std::fs::create_dir_all(&cache_dir).map_err(|source| Error::Io {
        context: format!("creating {}", cache_dir.display()),
        source,
    })?;
    let tag: String = a
        .data
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let clf_path = cache_dir.join(format!("classifier-{tag}-{size}x{nc}.safetensors"));
    let result = with_threads(a.threads, || -> Result<serde_json::Value> {
        let (clf, acc) =
            cached_classifier(&clf_path, train_data.clone(), a.classifier_steps, a.seed)?;
        match acc {
            Some(acc) => eprintln!(
                "trained the classifier ({} steps, final training accuracy {:.3}); cached at {}",
                a.classifier_steps,
                acc,
                clf_path.display()
            ),
            None => eprintln!("using the cached classifier {}", clf_path.display()),
        }
        let reference = sample_images(&train_data, a.n, a.seed)?;
        let held = sample_images(&heldout, a.n, a.seed + 1)?;
        let z = Tensor::randn(
            [a.n, cfg.nz, 1, 1],
            0.0,
            1.0,
            DType::F32,
            Device::Cpu,
            &mut Rng::new(a.seed + 2),
        )?;
        let mut fakes = Vec::new();
        for start in (0..a.n).step_by(250) {
            let len = 250.min(a.n - start);
            fakes.push(no_grad(|| {
                g.forward(&z.narrow(0, start, len)?, Mode::Eval)
            })?);
        }
        let fakes = Tensor::concat(&fakes.iter().collect::<Vec<_>>(), 0)?;
        let gen = score(&clf, &reference, &fakes)?;
        let real = score(&clf, &reference, &held)?;
        Ok(serde_json::json!({
            "checkpoint": file.display().to_string(),
            "data": train_data.describe(),
            "n": a.n,
            "generated": {"frechet": gen.frechet, "classifier_score": gen.classifier_score},
            "heldout_real": {"frechet": real.frechet, "classifier_score": real.classifier_score},
            "note": "Frechet distance on a small classifier's 128-d features and its exp(E KL) score: comparable between runs on the same data, not FID",
        }))
    })??;
    let text = serde_json::to_string_pretty(&result).expect("JSON serialises");
    println!("{text}");
    gantry::nn::checkpoint::write_atomic(&cache_dir.join("eval.json"), text.as_bytes())?;
    Ok(())
}
