//! The VGG-19 feature extractor against torchvision (fixture from
//! `tests/fixtures/make_vgg_fixture.py`), its loader's errors, and the perceptual loss on a
//! randomly initialised file of the real shapes.

use gantry_core::{DType, Device, Rng, Tensor};
use gantry_gan::nn::checkpoint::load_tensors;
use gantry_gan::nn::ModuleExt;
use gantry_gan::vgg::{relu_index, PerceptualLoss, Vgg19};
use std::path::PathBuf;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/vgg19_head.safetensors"
);

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-vgg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn worst(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    a.to_vec::<f32>()
        .unwrap()
        .iter()
        .zip(b.to_vec::<f32>().unwrap())
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn layer_indices_follow_torchvision() {
    assert_eq!(relu_index(1, 1).unwrap(), 1);
    assert_eq!(relu_index(1, 2).unwrap(), 3);
    assert_eq!(relu_index(2, 1).unwrap(), 6);
    assert_eq!(relu_index(4, 2).unwrap(), 22);
    assert_eq!(relu_index(5, 1).unwrap(), 29);
    assert_eq!(relu_index(5, 4).unwrap(), 35);
    assert!(relu_index(2, 3).is_err());
    assert!(relu_index(6, 1).is_err());
    let f = load_tensors(FIXTURE).unwrap();
    let vgg = Vgg19::new(36, &mut Rng::new(0)).unwrap();
    let ours: Vec<String> = vgg
        .named_tensors()
        .iter()
        .map(|t| {
            let d: Vec<String> = t.tensor.dims().iter().map(|d| d.to_string()).collect();
            format!("{}:{}", t.name, d.join("x"))
        })
        .collect();
    assert_eq!(ours, f.metadata["names"].split(',').collect::<Vec<_>>());
    assert_eq!(vgg.features.len(), 37);
}

#[test]
fn features_match_torchvision() {
    let f = load_tensors(FIXTURE).unwrap();
    let vgg = Vgg19::load(FIXTURE, 4).unwrap();
    let out = vgg.features_at(f.get("input").unwrap(), &[4, 3]).unwrap();
    assert_eq!(out[0].dims(), &[1, 64, 3, 4]);
    let e = worst(&out[1], f.get("relu1_2").unwrap());
    assert!(e < 1e-5, "relu1_2 differs by {e}");
    let e = worst(&out[0], f.get("pool1").unwrap());
    assert!(e < 1e-5, "pool1 differs by {e}");
}

#[test]
fn loading_names_what_is_wrong() {
    // The fixture stops at features.2: asking for conv2_1 (features.5) must name it.
    let e = Vgg19::load(FIXTURE, 5).err().unwrap().to_string();
    assert!(
        e.contains("missing: features.5.weight [128, 64, 3, 3]"),
        "{e}"
    );
    assert!(e.contains("torchvision names"), "{e}");
    // A file of the wrong shapes.
    let dir = tempdir("bad");
    let path = dir.join("bad.safetensors");
    let w = Tensor::zeros([64, 1, 3, 3], DType::F32, Device::Cpu).unwrap();
    let b = Tensor::zeros([64], DType::F32, Device::Cpu).unwrap();
    gantry_gan::nn::checkpoint::save_tensors(
        &path,
        &[
            ("features.0.weight".into(), w),
            ("features.0.bias".into(), b),
        ],
        None,
    )
    .unwrap();
    let e = Vgg19::load(&path, 1).err().unwrap().to_string();
    assert!(
        e.contains("wrong shape: features.0.weight is [64, 1, 3, 3] in the file but [64, 3, 3, 3]"),
        "{e}"
    );
    let e = Vgg19::load(dir.join("absent.safetensors"), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("absent.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn perceptual_loss_on_a_random_vgg_file_of_the_real_shapes() {
    let dir = tempdir("random");
    let path = dir.join("vgg19.safetensors");
    Vgg19::write_random(&path, 1).unwrap();
    let loss = PerceptualLoss::srgan(&path).unwrap();
    assert_eq!(loss.layer, 35);
    let mut rng = Rng::new(2);
    let target =
        Tensor::rand([2, 3, 32, 32], -1.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let same = loss.loss(&target, &target).unwrap().to_scalar().unwrap();
    assert_eq!(same, 0.0);
    let output = Tensor::rand([2, 3, 32, 32], -1.0, 1.0, DType::F32, Device::Cpu, &mut rng)
        .unwrap()
        .variable();
    let l = loss.loss(&output, &target).unwrap();
    assert!(l.to_scalar().unwrap() > 0.0);
    let grads = l.backward().unwrap();
    let g = grads.get(&output).unwrap().to_vec::<f32>().unwrap();
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|&v| v != 0.0));
    // The VGG is a fixed extractor: no gradient is computed for its weights.
    for (name, w) in loss.vgg.named_parameters() {
        assert!(grads.get(&w).is_none(), "a gradient for {name}");
    }
    // Moving the output a small step against the gradient lowers the loss.
    let step = grads
        .get(&output)
        .unwrap()
        .mul_scalar(-0.5 / g.iter().map(|v| v.abs()).fold(0f32, f32::max) as f64)
        .unwrap();
    let moved = output.detach().add(&step).unwrap();
    let lower = loss.loss(&moved, &target).unwrap().to_scalar().unwrap();
    assert!(
        lower < l.to_scalar().unwrap(),
        "{lower} vs {}",
        l.to_scalar().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
