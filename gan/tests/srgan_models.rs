//! SRResNet and the SRGAN discriminator: shapes, names, and checkpoints made by the PyTorch
//! definition in `python/srgan.py` (fixtures from `tests/fixtures/make_srgan_fixtures.py`).

use gantry_core::{DType, Device, Rng, Tensor};
use gantry_gan::nn::checkpoint::{load_state_dict, load_tensors, TensorFile};
use gantry_gan::nn::{Mode, Module, ModuleExt};
use gantry_gan::srgan::{SrDiscriminator, SrDiscriminatorConfig, SrResNet, SrResNetConfig};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/srgan.safetensors"
);

fn fixture() -> TensorFile {
    load_tensors(FIXTURE).unwrap()
}

fn small_g() -> SrResNet {
    let c = SrResNetConfig {
        width: 8,
        blocks: 2,
        ..Default::default()
    };
    SrResNet::new(c, &mut Rng::new(5)).unwrap()
}

fn small_d() -> SrDiscriminator {
    let c = SrDiscriminatorConfig {
        width: 8,
        stages: 2,
        dense: 16,
        image_size: 16,
        ..Default::default()
    };
    SrDiscriminator::new(c, &mut Rng::new(6)).unwrap()
}

/// The tensors under `prefix.` with the prefix removed.
fn with_prefix(f: &TensorFile, prefix: &str) -> Vec<(String, Tensor)> {
    f.tensors
        .iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_string(), t.clone())))
        .filter(|(n, _)| !matches!(n.as_str(), "input" | "out" | "train_out"))
        .collect()
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
fn default_trees_have_pytorchs_names_and_shapes() {
    let f = fixture();
    let mut rng = Rng::new(0);
    let g = SrResNet::new(SrResNetConfig::default(), &mut rng).unwrap();
    let d = SrDiscriminator::new(SrDiscriminatorConfig::default(), &mut rng).unwrap();
    for (m, key) in [(&g as &dyn Module, "names.g"), (&d, "names.d")] {
        let ours: Vec<String> = m
            .named_tensors()
            .iter()
            .map(|t| {
                let dims: Vec<String> = t.tensor.dims().iter().map(|d| d.to_string()).collect();
                format!("{}:{}", t.name, dims.join("x"))
            })
            .collect();
        let theirs: Vec<&str> = f.metadata[key].split(',').collect();
        assert_eq!(ours, theirs, "{key}");
    }
    // Parameter counts as PyTorch reports them for python/srgan.py's defaults
    // (`sum(p.numel() for p in m.parameters())`).
    assert_eq!(g.parameter_count(), 1_547_350);
    assert_eq!(d.parameter_count(), 23_563_649);
}

#[test]
fn pytorch_checkpoints_load_and_reproduce_pytorchs_outputs() {
    let f = fixture();
    let g = small_g();
    load_state_dict(&g, &with_prefix(&f, "g.")).unwrap();
    let x = f.get("g.input").unwrap();
    let out = g.forward(x, Mode::Eval).unwrap();
    assert_eq!(out.dims(), &[2, 3, 24, 28]);
    let e = worst(&out, f.get("g.out").unwrap());
    assert!(e < 1e-5, "generator eval output differs by {e}");
    let e = worst(
        &g.forward(x, Mode::Train).unwrap(),
        f.get("g.train_out").unwrap(),
    );
    assert!(e < 1e-4, "generator train output differs by {e}");

    let d = small_d();
    load_state_dict(&d, &with_prefix(&f, "d.")).unwrap();
    let logits = d.forward(f.get("d.input").unwrap(), Mode::Eval).unwrap();
    assert_eq!(logits.dims(), &[2, 1]);
    let e = worst(&logits, f.get("d.out").unwrap());
    assert!(e < 1e-5, "discriminator output differs by {e}");
}

#[test]
fn shapes_scales_and_bad_input() {
    let mut rng = Rng::new(1);
    for scale in [2, 4, 8] {
        let g = SrResNet::new(
            SrResNetConfig {
                width: 4,
                blocks: 1,
                scale,
                ..Default::default()
            },
            &mut rng,
        )
        .unwrap();
        let x = Tensor::randn([1, 3, 5, 3], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
        assert_eq!(
            g.forward(&x, Mode::Eval).unwrap().dims(),
            &[1, 3, 5 * scale, 3 * scale]
        );
        let gray = Tensor::zeros([1, 1, 5, 5], DType::F32, Device::Cpu).unwrap();
        let e = g.forward(&gray, Mode::Eval).unwrap_err().to_string();
        assert!(e.contains("SrResNet") && e.contains("[1, 1, 5, 5]"), "{e}");
    }
    let e = SrResNet::new(
        SrResNetConfig {
            scale: 3,
            ..Default::default()
        },
        &mut rng,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("scale must be 2, 4 or 8"), "{e}");
    let d = small_d();
    let x = Tensor::zeros([2, 3, 24, 24], DType::F32, Device::Cpu).unwrap();
    let e = d.forward(&x, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("built for [n, 3, 16, 16]"), "{e}");
    let bad = SrDiscriminatorConfig {
        image_size: 100,
        ..Default::default()
    };
    assert!(SrDiscriminator::new(bad, &mut rng).is_err());
}
