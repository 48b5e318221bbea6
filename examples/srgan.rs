//! SRResNet pre-training (SRGAN's phase 1), with the library API only.
//!
//! `cargo run --release --example srgan` trains a small x4 SRResNet for 300 steps on 64x64
//! crops of T91 (from `../shared/data/sr/T91` when it exists, else on generated pictures) and
//! prints the Y-PSNR of the model and of bicubic on Set5 (or on a generated picture). The CLI
//! (`gantry train srgan`) runs the same loop with a run folder, validation, sample strips,
//! checkpoints, resume and phase 2; this example spells phase 1 out.
//!
//! On the 2-core machine it runs in 2 min 20 s and ends at 27.31 dB on Set5 against bicubic's
//! 28.42: 300 steps are a walk-through, not a model (the committed one took 3000 steps).

use gantry::gan::metrics::{mean_score, sr_score};
use gantry::gan::sr::{imresize, Image, Quantize, SrData, SrPairs};
use gantry::gan::srgan::{SrResNet, SrResNetConfig};
use gantry::nn::loss::{mse, Reduction};
use gantry::nn::{Adam, AdamConfig, Mode, Module, ModuleExt, Optimizer};
use gantry::{Result, Rng};
use std::path::Path;
use std::sync::Arc;

/// A smooth synthetic picture, for machines without the data sets.
fn picture(h: usize, w: usize, phase: f32) -> Image {
    let mut data = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f32 / 17.0, x as f32 / 23.0);
                let v = 0.5 + 0.3 * (fx + 2.0 * c as f32 + phase).sin() * (fy - phase).cos();
                data.push((v * 255.0).round());
            }
        }
    }
    Image::new(3, h, w, data).expect("sized")
}

fn main() -> Result<()> {
    let (batch, steps, crop, scale) = (16, 300, 64, 4);
    let shared = Path::new("../shared/data/sr");

    // 1. Data: random 64x64 HR crops (flipped and rotated at random) and their bicubic x1/4.
    let data = if shared.join("T91").is_dir() {
        SrData::open(shared.join("T91"), crop, scale)?
    } else {
        SrData::from_images(
            (0..8).map(|i| picture(128, 160, i as f32)).collect(),
            crop,
            scale,
        )?
    };
    println!("data: {}", data.describe());
    let data = Arc::new(data);

    // 2. The generator: the paper's SRResNet, narrowed to 8 residual blocks.
    let config = SrResNetConfig {
        blocks: 8,
        ..Default::default()
    };
    let g = SrResNet::new(config, &mut Rng::new(0))?;
    println!("SRResNet: {} parameters", g.parameter_count());

    // 3. Adam on the pixel MSE (the paper uses 1e-4; a short run likes a little more).
    let mut opt = Adam::new(
        g.named_parameters(),
        AdamConfig {
            lr: 2e-4,
            ..Default::default()
        },
    )?;
    for step in 0..steps {
        // Batch `step` is drawn from (seed, step) alone: the same run gives the same batches.
        let (lr, hr) = data.batch(batch, 0, step)?;
        let loss = mse(&g.forward(&lr, Mode::Train)?, &hr, Reduction::Mean)?;
        let grads = loss.backward()?;
        opt.step(&grads)?;
        if (step + 1) % 50 == 0 {
            // Images are in [-1, 1], so the peak-to-peak is 2 and PSNR = 10·log10(4 / MSE).
            let psnr = 10.0 * (4.0 / loss.to_scalar()?).log10();
            println!(
                "step {:>3}: MSE {:.5} (batch RGB PSNR {psnr:.2} dB)",
                step + 1,
                loss.to_scalar()?
            );
        }
    }

    // 4. Evaluate as the papers do: Y channel, 4 border pixels shaved, against bicubic.
    let set = if shared.join("Set5").is_dir() {
        SrPairs::open(shared.join("Set5"), scale)?
    } else {
        let hr = picture(96, 128, 0.5);
        let lr = imresize(&hr, 0.25, Quantize::PerPass)?;
        SrPairs {
            pairs: vec![gantry::gan::sr::SrPair {
                name: "generated".into(),
                lr,
                hr,
            }],
            lr_from_files: false,
        }
    };
    let mut model = Vec::new();
    let mut bicubic = Vec::new();
    for p in &set.pairs {
        let sr = g.upscale(&p.lr.to_rgb(), 128)?.quantized();
        model.push(sr_score(&sr, &p.hr.to_rgb(), scale)?);
        let bic = imresize(&p.lr, scale as f64, Quantize::PerPass)?;
        bicubic.push(sr_score(&bic, &p.hr, scale)?);
    }
    let (m, b) = (mean_score(&model), mean_score(&bicubic));
    println!(
        "Y-PSNR / SSIM over {} image(s): model {:.2} dB / {:.4}, bicubic {:.2} dB / {:.4}",
        set.pairs.len(),
        m.psnr,
        m.ssim,
        b.psnr,
        b.ssim
    );
    Ok(())
}
