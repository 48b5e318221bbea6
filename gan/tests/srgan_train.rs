//! The SRGAN trainer on tiny generated images: PSNR improves, both phases run end to end
//! (phase 2 with a random VGG-19 file of the real shapes), resume is exact, a NaN stops the
//! run with a clear error, and tiled upscaling equals untiled.

use gantry_core::Rng;
use gantry_gan::metrics::SrScore;
use gantry_gan::nn::ModuleExt;
use gantry_gan::sr::{Image, SrData, SrPairs};
use gantry_gan::srgan::train::{
    load_generator, train, validate, Phase, SrEvent, SrTrainConfig, Srgan,
};
use gantry_gan::srgan::{SrDiscriminatorConfig, SrResNet, SrResNetConfig};
use gantry_gan::vgg::Vgg19;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-srtrain-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A smooth colourful test picture (sums of sinusoids), 8-bit levels.
fn picture(h: usize, w: usize, phase: f32) -> Image {
    let mut data = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f32 / h as f32, x as f32 / w as f32);
                let v = 0.5
                    + 0.25 * (6.0 * fx + 2.0 * c as f32 + phase).sin()
                    + 0.2 * (9.0 * fy - 3.0 * fx + phase).cos();
                data.push((v.clamp(0.0, 1.0) * 255.0).round());
            }
        }
    }
    Image::new(3, h, w, data).unwrap()
}

fn config(phase: Phase, steps: u64) -> SrTrainConfig {
    SrTrainConfig {
        phase,
        generator: SrResNetConfig {
            channels: 3,
            width: 8,
            blocks: 1,
            scale: 2,
        },
        discriminator: SrDiscriminatorConfig {
            width: 4,
            stages: 2,
            dense: 8,
            image_size: 16,
            ..Default::default()
        },
        crop: 16,
        batch_size: 4,
        lr: 2e-3,
        steps,
        seed: 3,
        sample_every: 1000,
        checkpoint_every: 1000,
        validate_every: 1000,
        ..Default::default()
    }
}

fn data() -> Arc<SrData> {
    Arc::new(SrData::from_images(vec![picture(40, 48, 0.0), picture(36, 36, 1.0)], 16, 2).unwrap())
}

/// A validation folder of one generated picture (LR made by bicubic downsampling here).
fn val_set(dir: &Path) -> SrPairs {
    let v = dir.join("val");
    std::fs::create_dir_all(&v).unwrap();
    picture(32, 40, 0.5).save(&v.join("p.png")).unwrap();
    let set = SrPairs::open(&v, 2).unwrap();
    assert!(!set.lr_from_files);
    set
}

#[test]
fn srresnet_steps_are_finite_and_improve_validation_psnr() {
    let dir = tempdir("improve");
    let val = val_set(&dir);
    let cfg = config(Phase::SrResNet, 60);
    let before: SrScore = validate(&Srgan::new(&cfg).unwrap().g, &val).unwrap();
    let mut contents = Vec::new();
    let summary = train(&cfg, data(), Some(&val), &dir.join("run"), false, |ev| {
        if let SrEvent::Step(s) = ev {
            contents.push(s.content);
        }
    })
    .unwrap();
    assert!(contents.iter().all(|c| c.is_finite()));
    let after = summary.last_score.unwrap();
    eprintln!(
        "validation Y-PSNR {:.2} -> {:.2} dB",
        before.psnr, after.psnr
    );
    assert!(after.psnr > before.psnr + 3.0, "{before:?} -> {after:?}");
    let first: f64 = contents[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = contents[50..].iter().sum::<f64>() / 10.0;
    assert!(last < 0.5 * first, "MSE {first} -> {last}");
    // The run folder has what the other trainers' have.
    let run = dir.join("run");
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 61);
    assert!(csv
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(7)
        .unwrap()
        .parse::<f64>()
        .is_ok());
    assert!(run.join("samples/step_000060.png").is_file());
    let strip = image::open(run.join("samples/step_000060.png")).unwrap();
    // The validation LR (16x20) is smaller than the strips' 32-pixel window, so the strip
    // shows three fixed training crops: three rows of bicubic | SR | HR, 16x16 each.
    assert_eq!(strip.height() as usize, 3 * (16 + 2) + 2);
    assert_eq!(strip.width() as usize, 3 * (16 + 2) + 2);
    // The checkpoint loads back as a generator with the run's configuration.
    let g = load_generator(&run).unwrap();
    assert_eq!(g.config, cfg.generator);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_continues_exactly() {
    let dir = tempdir("resume");
    let straight = dir.join("straight");
    train(
        &config(Phase::SrResNet, 6),
        data(),
        None,
        &straight,
        false,
        |_| {},
    )
    .unwrap();
    let split = dir.join("split");
    let mut cfg = config(Phase::SrResNet, 3);
    cfg.checkpoint_every = 3;
    train(&cfg, data(), None, &split, false, |_| {}).unwrap();
    let e = train(&cfg, data(), None, &split, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a run"), "{e}");
    cfg.steps = 6;
    train(&cfg, data(), None, &split, true, |_| {}).unwrap();
    let a = load_generator(&straight).unwrap();
    let b = load_generator(&split).unwrap();
    for (x, y) in a.named_tensors().iter().zip(b.named_tensors()) {
        assert_eq!(
            x.tensor.to_f64_vec().unwrap(),
            y.tensor.to_f64_vec().unwrap(),
            "{}",
            x.name
        );
    }
    let rows = |p: &Path| {
        std::fs::read_to_string(p.join("metrics.csv"))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(rows(&straight), rows(&split));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn srgan_phase_runs_end_to_end_with_a_random_vgg_file() {
    let dir = tempdir("srgan");
    let phase1 = dir.join("phase1");
    train(
        &config(Phase::SrResNet, 2),
        data(),
        None,
        &phase1,
        false,
        |_| {},
    )
    .unwrap();
    let vgg = dir.join("vgg19.safetensors");
    Vgg19::write_random(&vgg, 0).unwrap();
    let mut cfg = config(Phase::Srgan, 3);
    cfg.init_from = Some(phase1.clone());
    cfg.vgg = Some(vgg);
    let mut notes = Vec::new();
    let mut stats = Vec::new();
    train(
        &cfg,
        data(),
        None,
        &dir.join("phase2"),
        false,
        |ev| match ev {
            SrEvent::Note(n) => notes.push(n.to_string()),
            SrEvent::Step(s) => stats.push(*s),
            _ => {}
        },
    )
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("initialised from")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.contains("VGG-19 phi5,4")),
        "{notes:?}"
    );
    for s in &stats {
        assert!(s.loss_d.is_finite() && s.loss_d > 0.0, "{s:?}");
        assert!(s.adversarial.is_finite() && s.adversarial > 0.0, "{s:?}");
        assert!(
            s.content.is_finite() && (0.0..1.0).contains(&s.d_hr),
            "{s:?}"
        );
    }
    let ckpt = dir.join("phase2/checkpoint/step_000003");
    for f in ["generator", "discriminator", "opt_g", "opt_d"] {
        assert!(ckpt.join(format!("{f}.safetensors")).is_file(), "{f}");
    }
    // Without a VGG file the trainer says it falls back to MSE.
    let mut cfg = config(Phase::Srgan, 1);
    cfg.init_from = Some(phase1);
    let mut notes = Vec::new();
    train(&cfg, data(), None, &dir.join("mse"), false, |ev| {
        if let SrEvent::Note(n) = ev {
            notes.push(n.to_string())
        }
    })
    .unwrap();
    assert!(
        notes.iter().any(|n| n.contains("pixel MSE (no --vgg")),
        "{notes:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_nan_in_the_data_stops_training_with_a_clear_error() {
    let dir = tempdir("nan");
    let mut img = picture(16, 16, 0.0);
    img.data.iter_mut().for_each(|v| *v = f32::NAN);
    let data = Arc::new(SrData::from_images(vec![img], 16, 2).unwrap());
    let e = train(
        &config(Phase::SrResNet, 3),
        data,
        None,
        &dir.join("run"),
        false,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("generator loss became NaN") && e.contains("at step 1"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiled_upscale_equals_untiled() {
    let mut rng = Rng::new(9);
    for scale in [2, 4] {
        let g = SrResNet::new(
            SrResNetConfig {
                channels: 3,
                width: 8,
                blocks: 2,
                scale,
            },
            &mut rng,
        )
        .unwrap();
        let lr = picture(37, 29, 0.3);
        let whole = g.upscale(&lr, 0).unwrap();
        assert_eq!((whole.height, whole.width), (37 * scale, 29 * scale));
        for tile in [5, 8, 16] {
            let tiled = g.upscale(&lr, tile).unwrap();
            let worst = whole
                .data
                .iter()
                .zip(&tiled.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-3, "x{scale} tile {tile}: {worst}");
        }
    }
}
