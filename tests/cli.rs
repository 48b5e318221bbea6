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

/// A folder of generated pictures (PNG), `n` of them.
fn sr_folder(dir: &std::path::Path, n: usize, h: usize, w: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let mut data = Vec::new();
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = 128.0
                        + 90.0
                            * ((x as f32 / 5.0 + i as f32 + c as f32).sin()
                                * (y as f32 / 7.0).cos());
                    data.push(v.round());
                }
            }
        }
        gantry::gan::sr::Image::new(3, h, w, data)
            .unwrap()
            .save(&dir.join(format!("img{i}.png")))
            .unwrap();
    }
}

#[test]
fn train_srgan_then_eval_sr_and_upscale() {
    let dir = tempdir("sr");
    let (train_dir, val_dir, run) = (dir.join("train"), dir.join("val"), dir.join("run"));
    sr_folder(&train_dir, 3, 40, 44);
    sr_folder(&val_dir, 2, 30, 34);
    std::fs::write(val_dir.join("broken.png"), b"not a png").unwrap();
    let data = format!("folder:{}", train_dir.display());
    let (ok, text) = gantry(&[
        "train",
        "srgan",
        "--data",
        &data,
        "--width",
        "4",
        "--blocks",
        "1",
        "--scale",
        "2",
        "--crop",
        "16",
        "--batch-size",
        "2",
        "--steps",
        "3",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(
        run.join("checkpoint/step_000003/generator.safetensors")
            .is_file(),
        "{text}"
    );

    // A broken file in the evaluation folder is an error naming it.
    let (ok, text) = gantry(&[
        "eval-sr",
        "--dataset",
        val_dir.to_str().unwrap(),
        "--scale",
        "2",
    ]);
    assert!(!ok && text.contains("broken.png"), "{text}");
    std::fs::remove_file(val_dir.join("broken.png")).unwrap();

    let json = dir.join("eval.json");
    let (ok, text) = gantry(&[
        "eval-sr",
        "--checkpoint",
        run.to_str().unwrap(),
        "--dataset",
        val_dir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("the model upscales x2"), "{text}");
    assert!(text.contains("img0.png") && text.contains("mean"), "{text}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["scale"], 2);
    assert_eq!(doc["images"].as_array().unwrap().len(), 2);
    let bic = doc["mean"]["bicubic"]["psnr"].as_f64().unwrap();
    let model = doc["mean"]["model"]["psnr"].as_f64().unwrap();
    assert!(bic > 20.0 && model.is_finite(), "{doc}");

    // Tiled and untiled upscaling write the same pixels (up to a rounding flip where the
    // float results differ in the last bits).
    let input = val_dir.join("img1.png");
    let mut outs = Vec::new();
    for tile in ["0", "7"] {
        let out = dir.join(format!("sr{tile}.png"));
        let (ok, text) = gantry(&[
            "upscale",
            "--checkpoint",
            run.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--tile",
            tile,
        ]);
        assert!(ok, "{text}");
        outs.push(image::open(&out).unwrap().to_rgb8());
    }
    assert_eq!(outs[0].dimensions(), (68, 60));
    let worst = outs[0]
        .as_raw()
        .iter()
        .zip(outs[1].as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "tiled and untiled differ by {worst} levels");
    let (ok, text) = gantry(&[
        "upscale",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        "missing.png",
        "--out",
        dir.join("x.png").to_str().unwrap(),
    ]);
    assert!(!ok && text.contains("missing.png"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stylize` says where VGG weights come from when none is given, and runs end to end on a
/// random VGG-19 file of the real names and shapes, writing intermediate images.
#[test]
fn stylize_explains_the_missing_vgg_then_runs_on_a_random_one() {
    let dir = tempdir("stylize");
    sr_folder(&dir, 2, 40, 48);
    let (content, style) = (dir.join("img0.png"), dir.join("img1.png"));
    let out = dir.join("out.png");
    let base = [
        "stylize",
        "--content",
        content.to_str().unwrap(),
        "--style",
        style.to_str().unwrap(),
        "--size",
        "32",
        "--steps",
        "4",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, text) = gantry(&base);
    assert!(!ok);
    assert!(
        text.contains("--vgg") && text.contains("torchvision"),
        "{text}"
    );
    let vgg = dir.join("vgg19.safetensors");
    gantry::gan::vgg::Vgg19::write_random(&vgg, 3).unwrap();
    let mut args = base.to_vec();
    args.extend(["--vgg", vgg.to_str().unwrap(), "--save-every", "2"]);
    let (ok, text) = gantry(&args);
    assert!(ok, "{text}");
    assert!(text.contains("losses from step 1"), "{text}");
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (32, 27));
    assert!(dir.join("out_step_0002.png").exists() && dir.join("out_step_0004.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train cyclegan` on two folders (one selected by a name pattern), then `translate` both
/// ways from the run folder.
#[test]
fn train_cyclegan_then_translate() {
    let dir = tempdir("cyclegan");
    sr_folder(&dir, 6, 40, 40);
    let run = dir.join("run");
    let (a, b) = (
        format!("folder:{}/img*", dir.display()),
        format!("folder:{}", dir.display()),
    );
    let (ok, text) = gantry(&[
        "train",
        "cyclegan",
        "--domain-a",
        &a,
        "--domain-b",
        &b,
        "--holdout",
        "2",
        "--image-size",
        "32",
        "--ngf",
        "4",
        "--ndf",
        "4",
        "--blocks",
        "1",
        "--steps",
        "3",
        "--sample-every",
        "3",
        "--checkpoint-every",
        "3",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("4 training of image folder"), "{text}");
    assert!(run.join("samples/step_000003.png").exists());
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    for dir_arg in ["a2b", "b2a"] {
        let out = dir.join(format!("{dir_arg}.png"));
        let (ok, text) = gantry(&[
            "translate",
            "--checkpoint",
            run.to_str().unwrap(),
            "--direction",
            dir_arg,
            "--input",
            dir.join("img0.png").to_str().unwrap(),
            "--size",
            "32",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
    }
    let (ok, text) = gantry(&[
        "translate",
        "--checkpoint",
        run.to_str().unwrap(),
        "--direction",
        "sideways",
        "--input",
        "x.png",
        "--out",
        "y.png",
    ]);
    assert!(!ok && text.contains("a2b or b2a"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
