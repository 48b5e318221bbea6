//! `gantry train cyclegan` and `gantry translate`: argument handling around
//! `gantry_gan::cyclegan`.

use crate::train_cli::{parse_device, start_bar, with_threads};
use clap::Args;
use gantry::gan::cyclegan::train::{load_translator, train, CycleEvent, CycleGanConfig, Direction};
use gantry::gan::cyclegan::{PatchDiscriminatorConfig, ResnetGeneratorConfig};
use gantry::gan::data::{split_last, square, Dataset, ImageFolder};
use gantry::gan::sr::Image;
use gantry::nn::ModuleExt;
use gantry::{no_grad, Error, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args)]
pub struct CycleTrainArgs {
    /// Domain A: `folder:DIR` (PNG/JPEG under DIR, resized and centre-cropped), or
    /// `folder:DIR/PATTERN` to keep the files whose name matches PATTERN (`*` = anything),
    /// e.g. `folder:../shared/data/faces/frl_aligned/64/london_neutral_*`.
    #[arg(long)]
    domain_a: String,
    /// Domain B, as --domain-a.
    #[arg(long)]
    domain_b: String,
    /// Keep the last N images of each domain (by file name) out of training; the sample
    /// grids show them.
    #[arg(long, default_value_t = 0)]
    holdout: usize,
    #[arg(long, default_value_t = 128)]
    image_size: usize,
    /// Generator width (the paper: 64).
    #[arg(long, default_value_t = 64)]
    ngf: usize,
    /// Discriminator width (the paper: 64).
    #[arg(long, default_value_t = 64)]
    ndf: usize,
    /// Residual blocks (default: 9 at 256x256 and above, else 6).
    #[arg(long)]
    blocks: Option<usize>,
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    /// Step after which the learning rate decays linearly to 0 (default: half of --steps).
    #[arg(long)]
    decay_from: Option<u64>,
    /// Cycle-consistency weight λ.
    #[arg(long, default_value_t = 10.0)]
    lambda_cycle: f64,
    /// Identity weight, relative to λ.
    #[arg(long, default_value_t = 0.5)]
    lambda_identity: f64,
    /// Translations each discriminator's history pool keeps (0: no pool).
    #[arg(long, default_value_t = 50)]
    pool_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 250)]
    sample_every: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
    /// The run folder (default: runs/cyclegan).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
}

/// Opens `folder:DIR` or `folder:DIR/PATTERN`.
fn open_domain(spec: &str, flag: &'static str, size: usize) -> Result<ImageFolder> {
    let path = match spec.split_once(':') {
        Some(("folder", d)) if !d.is_empty() => Path::new(d),
        _ => {
            return Err(Error::invalid(
                flag,
                format!("{spec:?} is not folder:DIR or folder:DIR/PATTERN"),
            ))
        }
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let folder = if name.contains('*') {
        let dir = path.parent().unwrap_or(Path::new("."));
        ImageFolder::open_matching(dir, Some(name), size, 3)?
    } else {
        ImageFolder::open(path, size, 3)?
    };
    if let Some(w) = folder.skipped_warning() {
        eprintln!("warning: {w}");
    }
    Ok(folder)
}

pub fn train_cyclegan(a: CycleTrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/cyclegan"));
    let mut domains: Vec<Arc<dyn Dataset>> = Vec::new();
    let mut held: Vec<Arc<dyn Dataset>> = Vec::new();
    for (spec, flag) in [(&a.domain_a, "--domain-a"), (&a.domain_b, "--domain-b")] {
        let d: Arc<dyn Dataset> = Arc::new(open_domain(spec, flag, a.image_size)?);
        if a.holdout > 0 {
            let (train, test) = split_last(d, a.holdout)?;
            domains.push(Arc::new(train));
            held.push(Arc::new(test));
        } else {
            domains.push(d);
        }
    }
    let mut generator = ResnetGeneratorConfig::for_image_size(a.image_size, a.ngf);
    if let Some(b) = a.blocks {
        generator.blocks = b;
    }
    let config = CycleGanConfig {
        generator,
        discriminator: PatchDiscriminatorConfig {
            ndf: a.ndf,
            ..Default::default()
        },
        image_size: a.image_size,
        batch_size: a.batch_size,
        lr: a.lr,
        betas: (0.5, 0.999),
        steps: a.steps,
        decay_from: a.decay_from.unwrap_or(a.steps / 2),
        lambda_cycle: a.lambda_cycle,
        lambda_identity: a.lambda_identity,
        pool_size: a.pool_size,
        seed: a.seed,
        sample_every: a.sample_every,
        checkpoint_every: a.checkpoint_every,
        device,
    };
    eprintln!("domain A: {}", domains[0].describe());
    eprintln!("domain B: {}", domains[1].describe());
    eprintln!("run folder: {}", out.display());
    let held_out = (held.len() == 2).then(|| (held[0].clone(), held[1].clone()));
    let bar = ProgressBar::hidden();
    let summary = with_threads(a.threads, || {
        train(
            &config,
            domains[0].clone(),
            domains[1].clone(),
            held_out,
            &out,
            a.resume,
            |ev| match ev {
                CycleEvent::Started {
                    start_step,
                    total_steps,
                } => start_bar(&bar, start_step, total_steps),
                CycleEvent::Step(s) => {
                    bar.set_position(s.step);
                    bar.set_message(format!(
                        "adv {:.3} cycle {:.3} idt {:.3} D {:.3} lr {:.1e} {:.1} img/s",
                        s.adversarial(),
                        s.cycle(),
                        s.identity(),
                        s.discriminator(),
                        s.lr,
                        s.images_per_s
                    ));
                }
                CycleEvent::Sample(_) | CycleEvent::Checkpoint(_) => {}
            },
        )
    })?;
    bar.finish();
    let summary = summary?;
    eprintln!(
        "trained to step {} in {:.0} s; samples {}, checkpoint {}",
        summary.steps,
        summary.seconds,
        summary
            .last_sample
            .map_or("none".into(), |p| p.display().to_string()),
        summary
            .last_checkpoint
            .map_or("none".into(), |p| p.display().to_string())
    );
    Ok(())
}

#[derive(Args)]
pub struct TranslateArgs {
    /// A CycleGAN run folder, checkpoint folder, or a generator `.safetensors`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// `a2b` or `b2a` (ignored for a `.safetensors` file, which is one direction).
    #[arg(long, default_value = "a2b")]
    direction: String,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Resize (shorter side, Lanczos) and centre-crop the input to this square size first;
    /// without it the image is used as is, its sides cut down to multiples of 4.
    #[arg(long)]
    size: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn translate(a: TranslateArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let direction = Direction::parse(&a.direction)?;
    let g = load_translator(&a.checkpoint, direction)?;
    ModuleExt::to_device(&g, device)?;
    let img = Image::open(&a.input)?;
    let img = match a.size {
        Some(size) => Image::from_dynamic(&square(&img.to_dynamic(), size)),
        None => img,
    };
    let img = img.to_rgb();
    let (h, w) = (img.height / 4 * 4, img.width / 4 * 4);
    if h == 0 || w == 0 {
        return Err(Error::invalid(
            "translate",
            format!("{} is smaller than 4x4", a.input.display()),
        ));
    }
    let img = img.crop(0, 0, h, w)?;
    let t = std::time::Instant::now();
    let x = img.to_tensor()?; // in [-1, 1]
    let y = with_threads(a.threads, || {
        no_grad(|| {
            g.translate(&x.to_device(device)?)?
                .to_device(gantry::Device::Cpu)
        })
    })??;
    Image::from_tensor(&y, 0)?.quantized().save(&a.out)?;
    eprintln!(
        "{}x{} translated {} in {:.2} s: {}",
        w,
        h,
        a.direction,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}
