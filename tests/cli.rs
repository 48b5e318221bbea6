//! The `gantry` binary end to end: a tiny training run, sampling it, and sampling the PyTorch
//! DCGAN example's generator from its `state_dict` with given noise.

use std::path::PathBuf;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn gantry(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .output()
        .expect("run gantry");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn train_then_resume_then_generate() {
    let dir = tempdir("train");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let common = [
        "train",
        "dcgan",
        "--image-size",
        "16",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--nz",
        "8",
        "--digits",
        "64",
        "--batch-size",
        "8",
        "--sample-every",
        "2",
        "--checkpoint-every",
        "2",
        "--out",
        run_s,
    ];
    let (ok, text) = gantry(&[&common[..], &["--steps", "2"]].concat());
    assert!(ok, "{text}");
    assert!(
        text.contains("last sample grid") && run.join("samples/step_000002.png").is_file(),
        "{text}"
    );
    let (ok, text) = gantry(&[&common[..], &["--steps", "4"]].concat());
    assert!(!ok && text.contains("--resume"), "{text}");
    let (ok, text) = gantry(&[&common[..], &["--steps", "4", "--resume"]].concat());
    assert!(ok && text.contains("trained 4 steps"), "{text}");

    let grid = dir.join("grid.png");
    let (ok, text) = gantry(&[
        "generate",
        "--checkpoint",
        run_s,
        "--n",
        "9",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let img = image::open(&grid).unwrap();
    // 3x3 tiles of 16 px with 2 px borders.
    assert_eq!((img.width(), img.height()), (3 * 18 + 2, 3 * 18 + 2));

    let (ok, text) = gantry(&[
        "generate",
        "--checkpoint",
        dir.join("nothing").to_str().unwrap(),
    ]);
    assert!(
        !ok && text.contains("is not a generator .safetensors"),
        "{text}"
    );
    let (ok, text) = gantry(&[
        "train",
        "dcgan",
        "--data",
        "mnist:/no/such/dir",
        "--out",
        run_s,
    ]);
    assert!(
        !ok && text.contains("no MNIST training images in /no/such/dir"),
        "{text}"
    );
}

#[test]
fn generate_reproduces_the_pytorch_dcgan_example() {
    let dir = tempdir("torch");
    let npy = dir.join("out.npy");
    let (ok, text) = gantry(&[
        "generate",
        "--checkpoint",
        &format!("{FIXTURES}/dcgan_generator.safetensors"),
        "--noise",
        &format!("{FIXTURES}/dcgan_noise.npy"),
        "--out",
        dir.join("grid.png").to_str().unwrap(),
        "--out-npy",
        npy.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let got = gantry::nn::npy::read_npy(&npy).unwrap();
    let want = gantry::nn::checkpoint::load_tensors(format!("{FIXTURES}/nn.safetensors")).unwrap();
    let want = want.get("dcgan.out").unwrap();
    assert_eq!(got.dims(), &[4, 3, 64, 64]);
    let worst = got
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .zip(want.to_vec::<f32>().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "worst difference {worst}");
}
