//! `gantry train srgan`, `gantry upscale` and `gantry eval-sr`: argument handling around
//! `gantry_gan::srgan`.

use crate::train_cli::{parse_device, start_bar, with_threads};
use clap::Args;
use gantry::gan::metrics::{mean_score, sr_score, SrScore};
use gantry::gan::sr::{imresize, Image, Quantize, SrData, SrPairs};
use gantry::gan::srgan::train::{load_generator, train, Phase, SrEvent, SrTrainConfig};
use gantry::gan::srgan::{SrDiscriminatorConfig, SrResNetConfig};
use gantry::gan::vgg::Vgg19;
use gantry::nn::ModuleExt;
use gantry::{Error, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct SrTrainArgs {
    /// Training images: `folder:DIR` (PNG/JPEG directly in DIR), e.g.
    /// `folder:../shared/data/sr/T91`.
    #[arg(long)]
    data: String,
    /// An evaluation folder (e.g. `../shared/data/sr/Set5`) for validation PSNR/SSIM and the
    /// sample strips.
    #[arg(long)]
    val: Option<PathBuf>,
    /// `srresnet` (phase 1, pixel MSE) or `srgan` (phase 2, adversarial fine-tuning).
    #[arg(long, default_value = "srresnet")]
    phase: String,
    /// Phase 2: start the generator from this run, checkpoint or `.safetensors`.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Phase 2: a VGG-19 `features` safetensors file for the perceptual loss, or `random` for
    /// random weights of the real shapes (a mechanical demo only). Without it: pixel MSE.
    #[arg(long)]
    vgg: Option<String>,
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// HR crop side.
    #[arg(long, default_value_t = 96)]
    crop: usize,
    /// Generator width.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Residual blocks.
    #[arg(long, default_value_t = 16)]
    blocks: usize,
    /// Discriminator width (its first conv; doubles every second layer).
    #[arg(long, default_value_t = 64)]
    d_width: usize,
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    #[arg(long, default_value_t = 1e-3)]
    adversarial_weight: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 250)]
    validate_every: u64,
    #[arg(long, default_value_t = 250)]
    sample_every: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
    /// The run folder (default: runs/<phase>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint.
    #[arg(long)]
    resume: bool,
}

pub fn train_srgan(a: SrTrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let phase = Phase::parse(&a.phase)?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(phase.name()));
    let dir = match a.data.split_once(':') {
        Some(("folder", d)) if !d.is_empty() => d.to_string(),
        _ => {
            return Err(Error::invalid(
                "--data",
                format!("{:?} is not folder:DIR", a.data),
            ))
        }
    };
    let data = SrData::open(&dir, a.crop, a.scale)?;
    if let Some(w) = data.skipped_warning() {
        eprintln!("warning: {w}");
    }
    let val = a
        .val
        .as_ref()
        .map(|v| SrPairs::open(v, a.scale))
        .transpose()?;
    let vgg = match a.vgg.as_deref() {
        Some("random") => {
            std::fs::create_dir_all(&out).map_err(|source| Error::Io {
                context: format!("creating {}", out.display()),
                source,
            })?;
            let path = out.join("vgg19-random.safetensors");
            if !path.exists() {
                Vgg19::write_random(&path, a.seed)?;
            }
            eprintln!(
                "warning: --vgg random: the perceptual loss uses RANDOM VGG-19 weights ({}); \
                 this exercises the machinery, it does not give perceptual quality",
                path.display()
            );
            Some(path)
        }
        Some(p) => Some(PathBuf::from(p)),
        None => None,
    };
    let config = SrTrainConfig {
        phase,
        generator: SrResNetConfig {
            channels: 3,
            width: a.width,
            blocks: a.blocks,
            scale: a.scale,
        },
        discriminator: SrDiscriminatorConfig {
            width: a.d_width,
            image_size: a.crop,
            ..Default::default()
        },
        crop: a.crop,
        batch_size: a.batch_size,
        lr: a.lr,
        betas: (0.9, 0.999),
        steps: a.steps,
        seed: a.seed,
        adversarial_weight: a.adversarial_weight,
        sample_every: a.sample_every,
        checkpoint_every: a.checkpoint_every,
        validate_every: a.validate_every,
        init_from: a.init_from.clone(),
        vgg,
        device,
    };
    eprintln!("data: {}", data.describe());
    if let Some(v) = &a.val {
        eprintln!("validation: {}", v.display());
    }
    eprintln!("run folder: {}", out.display());
    let bar = ProgressBar::hidden();
    let mut last_val = String::new();
    let summary = with_threads(a.threads, || {
        train(
            &config,
            Arc::new(data),
            val.as_ref(),
            &out,
            a.resume,
            |ev| match ev {
                SrEvent::Started {
                    start_step,
                    total_steps,
                } => {
                    start_bar(&bar, start_step, total_steps);
                }
                SrEvent::Note(n) => bar.println(n),
                SrEvent::Step(s) => {
                    bar.set_position(s.step);
                    let gan = if phase == Phase::Srgan {
                        format!(
                            " adv {:.3} loss_d {:.3} D(HR) {:.2} D(SR) {:.2}",
                            s.adversarial, s.loss_d, s.d_hr, s.d_sr
                        )
                    } else {
                        String::new()
                    };
                    bar.set_message(format!(
                        "content {:.4}{gan} batch {:.2} dB{last_val} {:.1} img/s",
                        s.content, s.batch_psnr, s.images_per_s
                    ));
                }
                SrEvent::Validation { step, score } => {
                    last_val = format!(" val {:.2} dB", score.psnr);
                    bar.println(format!(
                        "step {step}: validation Y-PSNR {:.3} dB, SSIM {:.4}",
                        score.psnr, score.ssim
                    ));
                }
                SrEvent::Sample(_) | SrEvent::Checkpoint(_) => {}
            },
        )
    })?;
    bar.finish();
    let summary = summary?;
    eprintln!(
        "trained {} steps in {:.0} s; checkpoint in {}",
        summary.steps,
        summary.seconds,
        summary
            .last_checkpoint
            .map_or("-".into(), |p| p.display().to_string())
    );
    if let Some(s) = summary.last_sample {
        eprintln!("last sample strip (bicubic | SR | HR): {}", s.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct UpscaleArgs {
    /// A run folder, checkpoint folder or generator `.safetensors` (gantry's, or saved from
    /// `python/srgan.py`'s `SRResNet`).
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// LR tile side; larger images are upscaled tile by tile with overlapping context, so
    /// memory stays bounded (0: never tile).
    #[arg(long, default_value_t = 128)]
    tile: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn upscale(a: UpscaleArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let g = load_generator(&a.checkpoint)?;
    ModuleExt::to_device(&g, device)?;
    let img = Image::open(&a.input)?;
    // A grayscale input goes through the RGB model as three equal channels, and comes back gray.
    let gray = img.channels == 1 && g.config.channels == 3;
    let input = if gray { img.to_rgb() } else { img };
    let t = std::time::Instant::now();
    let sr = with_threads(a.threads, || g.upscale(&input, a.tile))??;
    let sr = if gray { sr.to_gray() } else { sr };
    sr.save(&a.out)?;
    eprintln!(
        "{}x{} -> {}x{} (x{}) in {:.2} s: {}",
        input.width,
        input.height,
        sr.width,
        sr.height,
        g.config.scale,
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct EvalSrArgs {
    /// A run folder, checkpoint folder or generator `.safetensors`; without it, bicubic only.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// An evaluation folder: HR images, with `LRbicx<scale>/` inputs if present (Set5, Set14).
    #[arg(long)]
    dataset: PathBuf,
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 128)]
    tile: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn eval_sr(a: EvalSrArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let g = a
        .checkpoint
        .as_ref()
        .map(|p| load_generator(p))
        .transpose()?;
    let scale = match &g {
        Some(g) if g.config.scale != a.scale => {
            eprintln!(
                "note: the model upscales x{}, so the evaluation is at x{}",
                g.config.scale, g.config.scale
            );
            g.config.scale
        }
        _ => a.scale,
    };
    if let Some(g) = &g {
        ModuleExt::to_device(g, device)?;
    }
    let set = SrPairs::open(&a.dataset, scale)?;
    let rows = with_threads(
        a.threads,
        || -> Result<Vec<(String, SrScore, Option<SrScore>)>> {
            set.pairs
                .iter()
                .map(|p| {
                    let bic = imresize(&p.lr, scale as f64, Quantize::PerPass)?;
                    let b = sr_score(&bic, &p.hr, scale)?;
                    let m = match &g {
                        Some(g) => {
                            let lr = p.lr.to_rgb();
                            let mut sr = g.upscale(&lr, a.tile)?.quantized();
                            if p.hr.channels == 1 {
                                sr = sr.to_gray().quantized();
                            }
                            Some(sr_score(&sr, &p.hr, scale)?)
                        }
                        None => None,
                    };
                    Ok((p.name.clone(), b, m))
                })
                .collect()
        },
    )??;
    let bic_mean = mean_score(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let model_mean = g
        .as_ref()
        .map(|_| mean_score(&rows.iter().filter_map(|r| r.2).collect::<Vec<_>>()));
    println!(
        "{} x{scale}: Y-PSNR (dB) / SSIM, {} border pixels shaved; LR from {}",
        a.dataset.display(),
        scale,
        if set.lr_from_files {
            format!("LRbicx{scale}/")
        } else {
            "MATLAB-style bicubic here".into()
        }
    );
    let header = if g.is_some() {
        format!("{:<16} {:>16} {:>16}", "image", "bicubic", "model")
    } else {
        format!("{:<16} {:>16}", "image", "bicubic")
    };
    println!("{header}");
    let cell = |s: &SrScore| format!("{:.2} / {:.4}", s.psnr, s.ssim);
    for (name, b, m) in rows
        .iter()
        .map(|r| (&r.0, &r.1, &r.2))
        .chain(std::iter::once((
            &"mean".to_string(),
            &bic_mean,
            &model_mean,
        )))
    {
        match m {
            Some(m) => println!("{name:<16} {:>16} {:>16}", cell(b), cell(m)),
            None => println!("{name:<16} {:>16}", cell(b)),
        }
    }
    if let Some(path) = &a.json {
        let score = |s: &SrScore| serde_json::json!({"psnr": s.psnr, "ssim": s.ssim});
        let images: Vec<_> = rows
            .iter()
            .map(|(n, b, m)| {
                serde_json::json!({"image": n, "bicubic": score(b), "model": m.as_ref().map(score)})
            })
            .collect();
        let doc = serde_json::json!({
            "dataset": a.dataset.display().to_string(),
            "scale": scale,
            "checkpoint": a.checkpoint.as_ref().map(|p| p.display().to_string()),
            "lr_from_files": set.lr_from_files,
            "images": images,
            "mean": {"bicubic": score(&bic_mean), "model": model_mean.as_ref().map(score)},
        });
        let text = serde_json::to_string_pretty(&doc).expect("JSON values serialise");
        gantry::nn::checkpoint::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
