//! `gantry stylize`: neural style transfer around `gantry_gan::style`.

use crate::train_cli::{parse_device, start_bar, with_threads};
use clap::Args;
use gantry::gan::sr::Image;
use gantry::gan::style::{open_image, Init, NeuralStyle, StyleConfig};
use gantry::gan::vgg::Vgg19;
use gantry::{Error, Result};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct StylizeArgs {
    /// The photo whose layout is kept.
    #[arg(long)]
    content: PathBuf,
    /// The picture whose look is transferred.
    #[arg(long)]
    style: PathBuf,
    /// A VGG-19 `features` safetensors file with torchvision's names (see the README for the
    /// two-line conversion), or `random` for random weights of the real shapes: a mechanical
    /// demo whose result is not a style transfer.
    #[arg(long)]
    vgg: Option<String>,
    /// Longer side of the result (both images are scaled to it).
    #[arg(long, default_value_t = 512)]
    size: usize,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 1e5)]
    style_weight: f64,
    #[arg(long, default_value_t = 1.0)]
    content_weight: f64,
    /// Total-variation weight.
    #[arg(long, default_value_t = 1e-2)]
    tv_weight: f64,
    /// Adam's learning rate on the [-1, 1] pixel scale.
    #[arg(long, default_value_t = 0.02)]
    lr: f64,
    /// Start from the `content` image or from `noise`.
    #[arg(long, default_value = "content")]
    init: String,
    /// Also write the image every N steps, as OUT_step_NNNN.png.
    #[arg(long)]
    save_every: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "stylized.png")]
    out: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    threads: Option<usize>,
}

const NO_VGG: &str = "needs VGG-19 weights: pass --vgg FILE, a safetensors file of torchvision's \
vgg19 `features.*` tensors. Where PyTorch can download them, two lines make it:\n\
    import torchvision, safetensors.torch as st\n\
    st.save_file({k: v for k, v in torchvision.models.vgg19(weights=\"IMAGENET1K_V1\").state_dict().items() if k.startswith(\"features.\")}, \"vgg19.safetensors\")\n\
(or pass --vgg random for a mechanical run with random weights, which transfers no style)";

/// `OUT_step_NNNN.png` beside `OUT`.
fn step_path(out: &Path, step: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("stylized");
    out.with_file_name(format!("{stem}_step_{step:04}.png"))
}

pub fn stylize(a: StylizeArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let config = StyleConfig {
        content_weight: a.content_weight,
        style_weight: a.style_weight,
        tv_weight: a.tv_weight,
        steps: a.steps,
        lr: a.lr,
        init: match a.init.as_str() {
            "content" => Init::Content,
            "noise" => Init::Noise,
            other => {
                return Err(Error::invalid(
                    "--init",
                    format!("{other:?} is not content or noise"),
                ))
            }
        },
        seed: a.seed,
        ..Default::default()
    };
    let last = config.deepest_layer();
    let mut vgg = match a.vgg.as_deref() {
        None => return Err(Error::invalid("stylize", NO_VGG)),
        Some("random") => {
            eprintln!(
                "warning: --vgg random: RANDOM VGG-19 weights (seed {}); the losses fall, but \
                 the features mean nothing, so this is not a style transfer",
                a.seed
            );
            Vgg19::new(last, &mut gantry::Rng::new(a.seed))?
        }
        Some(path) => Vgg19::load(path, last)?,
    };
    vgg.move_to(device)?;
    let content = open_image(&a.content, a.size)?;
    let style = open_image(&a.style, a.size)?;
    eprintln!(
        "content {} ({}x{}), style {} ({}x{}), {} steps",
        a.content.display(),
        content.width,
        content.height,
        a.style.display(),
        style.width,
        style.height,
        a.steps
    );
    let to_device = |img: &Image| img.to_tensor()?.to_device(device);
    let t0 = std::time::Instant::now();
    let bar = ProgressBar::hidden();
    let (image, first, last_losses) = with_threads(a.threads, || -> Result<_> {
        let ns = NeuralStyle::new(vgg, config, &to_device(&content)?, &to_device(&style)?)?;
        start_bar(&bar, 0, a.steps as u64);
        let mut first = None;
        let (image, last) = ns.run(|step, l, x| {
            first.get_or_insert(*l);
            bar.set_position(step as u64);
            bar.set_message(format!(
                "total {:.4} content {:.3e} style {:.3e} tv {:.4}",
                l.total, l.content, l.style, l.tv
            ));
            if let Some(every) = a.save_every {
                if step % every.max(1) == 0 {
                    save(x, &step_path(&a.out, step))?;
                }
            }
            Ok(())
        })?;
        Ok((image, first, last))
    })??;
    bar.finish();
    save(&image, &a.out)?;
    if let Some(f) = first {
        eprintln!(
            "losses from step 1 to the end: total {:.4} -> {:.4}, content {:.4e} -> {:.4e}, \
             style {:.4e} -> {:.4e}, tv {:.4} -> {:.4}",
            f.total,
            last_losses.total,
            f.content,
            last_losses.content,
            f.style,
            last_losses.style,
            f.tv,
            last_losses.tv
        );
    }
    eprintln!(
        "{} steps in {:.1} s: {}",
        a.steps,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

fn save(x: &gantry::Tensor, path: &Path) -> Result<()> {
    let cpu = x.to_device(gantry::Device::Cpu)?;
    Image::from_tensor(&cpu, 0)?.quantized().save(path)
}
