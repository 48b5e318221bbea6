//! Data loaders on small generated files, a few training steps, bitwise resume, checkpoint
//! round trip and the NaN stop — on a tiny DCGAN (16x16, widths 4) so each test takes well
//! under a second.

use gantry_core::{Error, Result};
use gantry_gan::data::{Dataset, Digits, ImageFolder, Loader, Mnist};
use gantry_gan::dcgan::{infer_generator_config, DcganConfig, Generator};
use gantry_gan::train::{latest_checkpoint, read_state, train, Event, TrainConfig};
use gantry_nn::checkpoint::{self, load_tensors};
use gantry_nn::ModuleExt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-gan-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny(steps: u64) -> TrainConfig {
    TrainConfig {
        model: DcganConfig {
            image_size: 16,
            nc: 1,
            nz: 8,
            ngf: 4,
            ndf: 4,
        },
        batch_size: 8,
        steps,
        seed: 5,
        sample_every: 2,
        checkpoint_every: 3,
        samples: 4,
        ..Default::default()
    }
}

fn digits() -> Arc<dyn Dataset> {
    Arc::new(Digits::new(40, 16, 1, 9).unwrap())
}

/// Every tensor of a run's latest checkpoint, as bits.
fn checkpoint_bits(run: &Path) -> Vec<(String, Vec<u64>)> {
    let dir = latest_checkpoint(run).unwrap().unwrap();
    let mut out = Vec::new();
    for f in ["generator", "discriminator", "opt_g", "opt_d"] {
        for (n, t) in load_tensors(dir.join(format!("{f}.safetensors")))
            .unwrap()
            .tensors
        {
            out.push((
                format!("{f}/{n}"),
                t.to_f64_vec()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            ));
        }
    }
    out.sort();
    out
}

/// metrics.csv without the timing column.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string())
        .collect()
}

#[test]
fn a_few_steps_train_with_finite_losses_and_moving_parameters() {
    let run = tempdir("steps");
    let mut losses = Vec::new();
    let s = train(&tiny(4), digits(), &run, false, |e| {
        if let Event::Step(s) = e {
            losses.push((s.loss_d, s.loss_g, s.d_x, s.d_g_z));
        }
    })
    .unwrap();
    assert_eq!(s.steps, 4);
    assert_eq!(losses.len(), 4);
    for (d, g, dx, dgz) in &losses {
        assert!(d.is_finite() && g.is_finite() && *d > 0.0 && *g > 0.0);
        assert!((0.0..=1.0).contains(dx) && (0.0..=1.0).contains(dgz));
    }
    // Parameters moved away from the fresh init (same seed, same init).
    let fresh = gantry_gan::train::Dcgan::new(&tiny(4)).unwrap();
    let dir = latest_checkpoint(&run).unwrap().unwrap();
    let trained = load_tensors(dir.join("generator.safetensors")).unwrap();
    for (name, t) in fresh.g.named_parameters() {
        let after = trained.get(&name).unwrap();
        assert_ne!(
            t.to_f64_vec().unwrap(),
            after.to_f64_vec().unwrap(),
            "{name} did not move"
        );
    }
    // Samples at steps 2 and 4, a checkpoint at 3 pruned... the newest two are kept.
    assert!(
        run.join("samples/step_000002.png").is_file()
            && run.join("samples/step_000004.png").is_file()
    );
    assert_eq!(metrics(&run).len(), 5);
    let state = read_state(&dir).unwrap();
    assert_eq!(state["step"], 4);
    // Starting a fresh run over an existing one is refused.
    let e = train(&tiny(4), digits(), &run, false, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
}

#[test]
fn a_resumed_run_is_bitwise_identical_to_an_uninterrupted_one() {
    // 40 images in batches of 8: 5 steps per epoch, so the 8 steps cross an epoch boundary
    // and the resume (at step 3) lands mid-epoch.
    let straight = tempdir("straight");
    train(&tiny(8), digits(), &straight, false, |_| {}).unwrap();
    let split = tempdir("split");
    train(&tiny(3), digits(), &split, false, |_| {}).unwrap();
    let mut started_at = None;
    train(&tiny(8), digits(), &split, true, |e| {
        if let Event::Started { start_step, .. } = e {
            started_at = Some(start_step);
        }
    })
    .unwrap();
    assert_eq!(started_at, Some(3));
    assert_eq!(checkpoint_bits(&straight), checkpoint_bits(&split));
    assert_eq!(metrics(&straight), metrics(&split));
    assert_eq!(
        std::fs::read(straight.join("samples/step_000008.png")).unwrap(),
        std::fs::read(split.join("samples/step_000008.png")).unwrap()
    );
}

#[test]
fn checkpoints_round_trip_and_the_architecture_is_inferred() {
    let run = tempdir("ckpt");
    train(&tiny(3), digits(), &run, false, |_| {}).unwrap();
    let file = latest_checkpoint(&run)
        .unwrap()
        .unwrap()
        .join("generator.safetensors");
    let tensors = load_tensors(&file).unwrap().tensors;
    let cfg = infer_generator_config(&tensors).unwrap();
    assert_eq!((cfg.image_size, cfg.nc, cfg.nz, cfg.ngf), (16, 1, 8, 4));
    let g = Generator::new(cfg, &mut gantry_core::Rng::new(1)).unwrap();
    checkpoint::load(&g, &file).unwrap();
    let again = tempdir("ckpt2").join("g.safetensors");
    checkpoint::save(&g, &again).unwrap();
    let a = load_tensors(&file).unwrap().tensors;
    let b = load_tensors(&again).unwrap().tensors;
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_f64_vec().unwrap(), tb.to_f64_vec().unwrap());
    }
}

/// Digits, but image `bad` is NaN.
struct Poisoned {
    inner: Digits,
    bad: usize,
}

impl Dataset for Poisoned {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn channels(&self) -> usize {
        1
    }
    fn image_size(&self) -> usize {
        16
    }
    fn load(&self, i: usize, out: &mut [f32]) -> Result<()> {
        self.inner.load(i, out)?;
        if i == self.bad {
            out.fill(f32::NAN);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "poisoned digits".into()
    }
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    // Every image is NaN from the second epoch on: mark one image bad and let the shuffled
    // order find it; the loss turns NaN at the first batch containing it.
    let run = tempdir("nan");
    let data: Arc<dyn Dataset> = Arc::new(Poisoned {
        inner: Digits::new(40, 16, 1, 9).unwrap(),
        bad: 7,
    });
    let order = gantry_gan::data::epoch_order(40, 5, 0);
    let bad_step = order.iter().position(|&i| i == 7).unwrap() / 8 + 1;
    let e = train(&tiny(5), data, &run, false, |_| {}).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Invalid { .. }));
    assert!(
        msg.contains("NaN") && msg.contains(&format!("at step {bad_step}")),
        "{msg}"
    );
    let last = latest_checkpoint(&run).unwrap();
    if bad_step > 3 {
        let dir = last.expect("the step-3 checkpoint survives");
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert_eq!(read_state(&dir).unwrap()["step"], 3);
        // It still loads.
        let g = Generator::new(tiny(5).model, &mut gantry_core::Rng::new(0)).unwrap();
        checkpoint::load(&g, dir.join("generator.safetensors")).unwrap();
    } else {
        assert!(last.is_none() && msg.contains("none"), "{msg}");
    }
}

fn idx_bytes(n: usize, rows: usize, cols: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for w in [0x0803u32, n as u32, rows as u32, cols as u32] {
        b.extend_from_slice(&w.to_be_bytes());
    }
    b.extend((0..n * rows * cols).map(|i| (i * 7 % 256) as u8));
    b
}

#[test]
fn mnist_reads_raw_and_gzipped_idx_and_refuses_bad_headers() {
    let dir = tempdir("idx");
    let bytes = idx_bytes(3, 28, 28);
    std::fs::write(dir.join("train-images-idx3-ubyte"), &bytes).unwrap();
    let raw = Mnist::open(&dir, 28, 1).unwrap();
    assert_eq!((raw.len(), raw.channels(), raw.image_size()), (3, 1, 28));
    let mut img = vec![0f32; 28 * 28];
    raw.load(1, &mut img).unwrap();
    let want: Vec<f32> = bytes[16 + 784..16 + 2 * 784]
        .iter()
        .map(|&v| v as f32 / 127.5 - 1.0)
        .collect();
    assert_eq!(img, want);

    let gz = tempdir("idx-gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    std::fs::write(gz.join("train-images-idx3-ubyte.gz"), enc.finish().unwrap()).unwrap();
    let m = Mnist::open(&gz, 32, 3).unwrap();
    let mut rgb = vec![0f32; 3 * 32 * 32];
    m.load(2, &mut rgb).unwrap();
    assert_eq!(rgb[..1024], rgb[1024..2048]);
    assert!(rgb.iter().all(|v| (-1.0..=1.0).contains(v)));

    let mut short = bytes.clone();
    short.truncate(bytes.len() - 5);
    std::fs::write(dir.join("train-images-idx3-ubyte"), &short).unwrap();
    let e = Mnist::open(&dir, 28, 1).err().unwrap().to_string();
    assert!(e.contains("header says 3 images of 28x28"), "{e}");
    let e = Mnist::open(tempdir("idx-none"), 28, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no MNIST training images"), "{e}");
}

#[test]
fn an_image_folder_skips_and_counts_unreadable_files() {
    let dir = tempdir("folder");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    for (i, (w, h)) in [(40u32, 30u32), (20, 50)].iter().enumerate() {
        let img = image::RgbImage::from_fn(*w, *h, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 4) as u8, 200])
        });
        img.save(dir.join(format!("sub/img{i}.png"))).unwrap();
    }
    std::fs::write(dir.join("broken.png"), b"not a png at all").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    let f = ImageFolder::open(&dir, 16, 3).unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.skipped.len(), 1);
    let w = f.skipped_warning().unwrap();
    assert!(
        w.contains("skipped 1 unreadable") && w.contains("broken.png"),
        "{w}"
    );
    let mut img = vec![0f32; 3 * 16 * 16];
    f.load(0, &mut img).unwrap();
    // Blue is constant 200 everywhere.
    assert!(img[2 * 256..]
        .iter()
        .all(|&v| (v - (200.0 / 127.5 - 1.0)).abs() < 0.02));
    let gray = ImageFolder::open(&dir, 8, 1).unwrap();
    assert_eq!(gray.channels(), 1);

    let empty = tempdir("folder-empty");
    let e = ImageFolder::open(&empty, 16, 3).err().unwrap().to_string();
    assert!(e.contains("no readable PNG/JPEG images"), "{e}");
    let e = ImageFolder::open(empty.join("missing"), 16, 3)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("is not a folder"), "{e}");
}

#[test]
fn the_loader_yields_full_shuffled_batches_and_starts_mid_epoch() {
    let data = digits();
    let all: Vec<_> = Loader::new(data.clone(), 8, 1, 0, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].dims(), &[8, 1, 16, 16]);
    let tail: Vec<_> = Loader::new(data.clone(), 8, 1, 0, 3)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(
        tail[0].to_vec::<f32>().unwrap(),
        all[3].to_vec::<f32>().unwrap()
    );
    let next_epoch: Vec<_> = Loader::new(data, 8, 1, 1, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_ne!(
        next_epoch[0].to_vec::<f32>().unwrap(),
        all[0].to_vec::<f32>().unwrap()
    );
    // Dropping a loader early does not hang.
    let mut l = Loader::new(digits(), 1, 1, 0, 0).unwrap();
    l.next();
    drop(l);
}
