//! Module trees, names, inits, optimizers' parameter ownership, and checkpoint errors.

use gantry_core::{
    Conv2dParams, ConvTranspose2dParams, DType, Device, Error, GradStore, Rng, Tensor,
};
use gantry_nn::checkpoint::{self, load_tensors, save_tensors};
use gantry_nn::loss::{bce_with_logits, Reduction};
use gantry_nn::{
    init, Adam, AdamConfig, BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, LeakyReLU, Linear, Mode,
    Module, ModuleExt, Optimizer, Role, Sequential, Sgd, SgdConfig,
};
use std::path::PathBuf;

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-nn-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A DCGAN-shaped discriminator for 16x16 single-channel images, under a `main` child.
struct Disc {
    main: Sequential,
}

impl Disc {
    fn new(rng: &mut Rng) -> Self {
        let p = Conv2dParams::new(2, 1);
        Disc {
            main: Sequential::new()
                .add(Conv2d::new(1, 8, 4, p, false, rng).unwrap())
                .add(LeakyReLU::new(0.2))
                .add(Conv2d::new(8, 16, 4, p, false, rng).unwrap())
                .add(BatchNorm2d::new(16).unwrap())
                .add(LeakyReLU::new(0.2))
                .add(Conv2d::new(16, 1, 4, Conv2dParams::new(1, 0), false, rng).unwrap())
                .add(Flatten::default()),
        }
    }
}

impl Module for Disc {
    fn kind(&self) -> &'static str {
        "Discriminator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> gantry_core::Result<Tensor> {
        self.main.forward(x, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("main".into(), &self.main)]
    }
}

#[test]
fn names_follow_pytorch_state_dict() {
    let d = Disc::new(&mut Rng::new(0));
    let names: Vec<(String, Role)> = d
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.role))
        .collect();
    let p = Role::Parameter;
    let b = Role::Buffer;
    let want = [
        ("main.0.weight", p),
        ("main.2.weight", p),
        ("main.3.weight", p),
        ("main.3.bias", p),
        ("main.3.running_mean", b),
        ("main.3.running_var", b),
        ("main.3.num_batches_tracked", b),
        ("main.5.weight", p),
    ];
    let want: Vec<(String, Role)> = want.iter().map(|&(n, r)| (n.to_string(), r)).collect();
    assert_eq!(names, want);
    assert_eq!(d.parameter_count(), 8 * 16 + 16 * 8 * 16 + 16 * 2 + 16 * 16);
    let kinds: Vec<&str> = d.modules().iter().map(|(_, m)| m.kind()).collect();
    assert_eq!(kinds[..3], ["Discriminator", "Sequential", "Conv2d"]);
    // Parameters are variables; buffers are not.
    for t in d.named_tensors() {
        assert_eq!(
            t.tensor.is_variable(),
            t.role == Role::Parameter,
            "{}",
            t.name
        );
    }
}

#[test]
fn layouts_follow_pytorch() {
    let mut rng = Rng::new(0);
    let c = Conv2d::new(3, 5, 4, Conv2dParams::default(), true, &mut rng).unwrap();
    assert_eq!(c.weight().dims(), &[5, 3, 4, 4]);
    let t =
        ConvTranspose2d::new(3, 5, 4, ConvTranspose2dParams::default(), true, &mut rng).unwrap();
    assert_eq!(t.weight().dims(), &[3, 5, 4, 4]);
    assert_eq!(t.bias().unwrap().dims(), &[5]);
    let l = Linear::new(7, 2, true, &mut rng).unwrap();
    assert_eq!(l.weight().dims(), &[2, 7]);
    let bn = BatchNorm2d::new(4).unwrap();
    assert_eq!(
        bn.running_var().unwrap().to_vec::<f32>().unwrap(),
        vec![1.0; 4]
    );
    let nbt = &bn.named_tensors()[4];
    assert_eq!(
        (nbt.name.as_str(), nbt.tensor.dtype(), nbt.tensor.rank()),
        ("num_batches_tracked", DType::I64, 0)
    );
}

/// Sample moments of `t`: (mean, std, max |v|).
fn moments(t: &Tensor) -> (f64, f64, f64) {
    let v = t.to_f64_vec().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt(), v.iter().fold(0f64, |m, x| m.max(x.abs())))
}

#[test]
fn default_init_is_pytorch_kaiming_uniform() {
    // U(±1/√fan_in): fan_in = 64·4·4 = 1024 for the conv, c_out·k² = 32·16 = 512 for the
    // transposed conv (PyTorch reads dimension 1 of its weight). Std of U(±b) is b/√3.
    let mut rng = Rng::new(3);
    let c = Conv2d::new(64, 128, 4, Conv2dParams::default(), true, &mut rng).unwrap();
    let (mean, std, max) = moments(c.weight());
    let b = 1.0 / 32.0;
    assert!(
        mean.abs() < 0.02 * b && (std - b / 3f64.sqrt()).abs() < 0.02 * b && max <= b,
        "{mean} {std} {max}"
    );
    let (_, _, bmax) = moments(c.bias().unwrap());
    assert!(bmax <= b && bmax > 0.9 * b);
    let t = ConvTranspose2d::new(
        256,
        32,
        4,
        ConvTranspose2dParams::default(),
        false,
        &mut rng,
    )
    .unwrap();
    let (_, std, max) = moments(t.weight());
    let b = 1.0 / 512f64.sqrt();
    assert!((std - b / 3f64.sqrt()).abs() < 0.02 * b && max <= b && max > 0.99 * b);
}

#[test]
fn dcgan_init_draws_conv_and_batch_norm_weights() {
    let d = Disc::new(&mut Rng::new(0));
    init::dcgan(&d, &mut Rng::new(11)).unwrap();
    let t: std::collections::HashMap<String, Tensor> = d
        .named_tensors()
        .into_iter()
        .map(|t| (t.name, t.tensor))
        .collect();
    let (mean, std, _) = moments(&t["main.2.weight"]); // 2048 values
    assert!(
        mean.abs() < 0.002 && (std - 0.02).abs() < 0.002,
        "{mean} {std}"
    );
    let (mean, std, _) = moments(&t["main.3.weight"]);
    assert!(
        (mean - 1.0).abs() < 0.02 && std > 0.005 && std < 0.04,
        "{mean} {std}"
    );
    assert_eq!(t["main.3.bias"].to_vec::<f32>().unwrap(), vec![0.0; 16]);
    // Still variables: the init wrote in place.
    assert!(t["main.0.weight"].is_variable());
    // Same seed, same weights.
    let d2 = Disc::new(&mut Rng::new(5));
    init::dcgan(&d2, &mut Rng::new(11)).unwrap();
    for (a, b) in d.named_tensors().iter().zip(d2.named_tensors()) {
        assert_eq!(
            a.tensor.to_f64_vec().unwrap(),
            b.tensor.to_f64_vec().unwrap(),
            "{}",
            a.name
        );
    }
}

#[test]
fn an_optimizer_steps_only_its_own_parameters() {
    // The generator's loss reaches the discriminator's parameters too; the generator's
    // optimizer must leave them alone.
    let mut rng = Rng::new(1);
    let g = Linear::new(3, 16 * 16, true, &mut rng).unwrap();
    let d = Disc::new(&mut rng);
    let mut opt_g = Adam::new(g.named_parameters(), AdamConfig::dcgan()).unwrap();
    let z = Tensor::randn([4, 3], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let fake = g
        .forward(&z, Mode::Train)
        .unwrap()
        .tanh()
        .unwrap()
        .reshape([4, 1, 16, 16])
        .unwrap();
    let logits = d.forward(&fake, Mode::Train).unwrap();
    let ones = logits.ones_like().unwrap();
    let grads = bce_with_logits(&logits, &ones, Reduction::Mean)
        .unwrap()
        .backward()
        .unwrap();
    for (name, p) in d.named_parameters() {
        assert!(grads.get(&p).is_some(), "{name} has a gradient");
    }
    let snapshot = |m: &dyn Module| -> Vec<Vec<f64>> {
        m.named_tensors()
            .iter()
            .map(|t| t.tensor.to_f64_vec().unwrap())
            .collect()
    };
    let (g0, d0) = (snapshot(&g), snapshot(&d));
    opt_g.step(&grads).unwrap();
    assert_eq!(snapshot(&d), d0, "the discriminator moved");
    let g1 = snapshot(&g);
    assert!(
        g1.iter().zip(&g0).all(|(a, b)| a != b),
        "every generator tensor moved"
    );
    assert_eq!(opt_g.steps_of("weight"), Some(1));
}

#[test]
fn optimizers_refuse_bad_parameters_and_gradients() {
    let w = Tensor::zeros([2], DType::F32, Device::Cpu).unwrap();
    let e = Adam::new(vec![("w".into(), w.clone())], AdamConfig::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("w [2] is not a variable"), "{e}");
    let v = w.variable();
    let e = Adam::new(
        vec![("a".into(), v.clone()), ("a".into(), v.clone())],
        AdamConfig::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("two parameters are named a"), "{e}");
    let bad = AdamConfig {
        betas: (1.0, 0.999),
        ..Default::default()
    };
    assert!(Adam::new(vec![("v".into(), v.clone())], bad).is_err());
    let e = Sgd::new(
        vec![("v".into(), v.clone())],
        SgdConfig::new(0.1).with_nesterov(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("Nesterov"), "{e}");
    // A gradient of the wrong shape is named.
    let mut opt = Sgd::new(vec![("v".into(), v.clone())], SgdConfig::new(0.1)).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&v, Tensor::zeros([3], DType::F32, Device::Cpu).unwrap());
    let e = opt.step(&grads).unwrap_err().to_string();
    assert!(
        e.contains("SGD.step") && e.contains("gradient of v has shape [3], the parameter [2]"),
        "{e}"
    );
}

#[test]
fn optimizer_state_resumes_the_same_trajectory() {
    // Two runs of 6 Adam steps; the second saves after 3 and resumes into a fresh optimizer.
    let run = |resume: bool| -> Vec<f32> {
        let mut rng = Rng::new(9);
        let l = Linear::new(4, 2, true, &mut rng).unwrap();
        let x = Tensor::randn([8, 4], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
        let mut opt = Adam::new(l.named_parameters(), AdamConfig::dcgan()).unwrap();
        let path = tempdir("resume").join(format!("adam-{resume}.safetensors"));
        for step in 0..6 {
            if resume && step == 3 {
                opt.save(&path).unwrap();
                opt = Adam::new(l.named_parameters(), AdamConfig::dcgan()).unwrap();
                opt.load(&path).unwrap();
            }
            let grads = l
                .forward(&x, Mode::Train)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .backward()
                .unwrap();
            opt.step(&grads).unwrap();
        }
        l.weight().to_vec().unwrap()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn checkpoints_round_trip_and_writes_leave_no_temporary_file() {
    let dir = tempdir("roundtrip");
    let path = dir.join("d.safetensors");
    let d = Disc::new(&mut Rng::new(0));
    d.forward(
        &Tensor::ones([2, 1, 16, 16], DType::F32, Device::Cpu).unwrap(),
        Mode::Train,
    )
    .unwrap();
    checkpoint::save(&d, &path).unwrap();
    checkpoint::save(&d, &path).unwrap(); // overwriting is fine
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("d.safetensors")]);
    let d2 = Disc::new(&mut Rng::new(1));
    checkpoint::load(&d2, &path).unwrap();
    for (a, b) in d.named_tensors().iter().zip(d2.named_tensors()) {
        assert_eq!(
            a.tensor.to_f64_vec().unwrap(),
            b.tensor.to_f64_vec().unwrap(),
            "{}",
            a.name
        );
    }
    // A write into a missing folder fails cleanly, naming the path.
    let e = checkpoint::save(&d, dir.join("no/such/dir/x.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no/such/dir"), "{e}");
}

#[test]
fn a_mismatched_checkpoint_is_refused_with_every_problem_listed() {
    let dir = tempdir("mismatch");
    let path = dir.join("bad.safetensors");
    let d = Disc::new(&mut Rng::new(0));
    let mut tensors = checkpoint::state_dict(&d);
    tensors.retain(|(n, _)| n != "main.3.running_var"); // missing
    tensors.push((
        "main.9.weight".into(),
        Tensor::zeros([1], DType::F32, Device::Cpu).unwrap(),
    )); // unexpected
    for (n, t) in tensors.iter_mut() {
        if n == "main.0.weight" {
            *t = Tensor::zeros([8, 1, 3, 3], DType::F32, Device::Cpu).unwrap(); // wrong shape
        }
        if n == "main.3.num_batches_tracked" {
            *t = Tensor::zeros((), DType::F32, Device::Cpu).unwrap(); // wrong dtype
        }
    }
    save_tensors(&path, &tensors, None).unwrap();
    let before: Vec<Vec<f64>> = d
        .named_tensors()
        .iter()
        .map(|t| t.tensor.to_f64_vec().unwrap())
        .collect();
    let e = checkpoint::load(&d, &path).unwrap_err().to_string();
    for needle in [
        "bad.safetensors",
        "4 problem(s), nothing loaded",
        "missing: main.3.running_var [16]",
        "unexpected: main.9.weight [1]",
        "wrong shape: main.0.weight is [8, 1, 3, 3] in the file but [8, 1, 4, 4] in the model",
        "wrong dtype: main.3.num_batches_tracked is f32 in the file but i64 in the model",
    ] {
        assert!(e.contains(needle), "{needle:?} not in:\n{e}");
    }
    let after: Vec<Vec<f64>> = d
        .named_tensors()
        .iter()
        .map(|t| t.tensor.to_f64_vec().unwrap())
        .collect();
    assert_eq!(before, after, "a refused load changed the module");
}

#[test]
fn corrupt_and_missing_files_are_clear_errors() {
    let dir = tempdir("corrupt");
    let d = Disc::new(&mut Rng::new(0));
    let good = dir.join("good.safetensors");
    checkpoint::save(&d, &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cases = [
        ("garbage", b"definitely not a checkpoint".to_vec()),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    for (tag, data) in cases {
        let p = dir.join(format!("{tag}.safetensors"));
        std::fs::write(&p, data).unwrap();
        let e = checkpoint::load(&d, &p).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{tag}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{tag}.safetensors"))
                && msg.contains("not a valid safetensors file"),
            "{msg}"
        );
    }
    let e = load_tensors(dir.join("absent.safetensors")).unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("absent.safetensors"),
        "{e}"
    );
}

#[test]
fn layers_name_themselves_and_the_shapes_in_errors() {
    let mut rng = Rng::new(0);
    let l = Linear::new(7, 2, true, &mut rng).unwrap();
    let e = l
        .forward(
            &Tensor::zeros([3, 6], DType::F32, Device::Cpu).unwrap(),
            Mode::Train,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Linear") && e.contains("[3, 6]") && e.contains("7"),
        "{e}"
    );
    let bn = BatchNorm2d::new(4).unwrap();
    let e = bn
        .forward(
            &Tensor::zeros([3, 4], DType::F32, Device::Cpu).unwrap(),
            Mode::Train,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("BatchNorm2d") && e.contains("[3, 4]"), "{e}");
    let e = bn
        .forward(
            &Tensor::zeros([1, 4, 1, 1], DType::F32, Device::Cpu).unwrap(),
            Mode::Train,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than one value per channel"), "{e}");
    let c = Conv2d::new(3, 4, 3, Conv2dParams::default(), true, &mut rng).unwrap();
    let e = c
        .forward(
            &Tensor::zeros([1, 2, 8, 8], DType::F32, Device::Cpu).unwrap(),
            Mode::Train,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d") && e.contains("[1, 2, 8, 8]"), "{e}");
    assert!(Conv2d::new(0, 4, 3, Conv2dParams::default(), true, &mut rng).is_err());
}

/// `Sequential` fuses a BatchNorm2d with the activation after it; the fused op gives the same
/// output, input gradient, parameter gradients and running statistics, bit for bit, as the two
/// layers applied one by one.
#[test]
fn batch_norm_then_activation_fuses_without_changing_a_bit() {
    let bits = |t: &Tensor| -> Vec<u32> {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    for (act, mode) in [
        (
            Box::new(LeakyReLU::new(0.2)) as Box<dyn Module>,
            Mode::Train,
        ),
        (Box::new(gantry_nn::ReLU), Mode::Train),
        (Box::new(LeakyReLU::new(0.2)), Mode::Eval),
    ] {
        let mut rng = Rng::new(7);
        let x = Tensor::randn([3, 5, 7, 6], 0.5, 2.0, DType::F32, Device::Cpu, &mut rng)
            .unwrap()
            .variable();
        let dy = Tensor::randn([3, 5, 7, 6], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
        let run = |fused: bool| {
            let bn = BatchNorm2d::new(5).unwrap();
            init::dcgan(&bn, &mut Rng::new(3)).unwrap();
            if mode == Mode::Eval {
                // Running statistics that are not the identity.
                bn.forward(&x.mul_scalar(1.5).unwrap(), Mode::Train)
                    .unwrap();
            }
            let y = if fused {
                let step =
                    |m: &dyn Module, h: &Tensor| m.forward_then(h, mode, act.pointwise().unwrap());
                step(&bn, &x).unwrap().expect("BatchNorm2d fuses")
            } else {
                act.forward(&bn.forward(&x, mode).unwrap(), mode).unwrap()
            };
            let g = y.mul(&dy).unwrap().sum_all().unwrap().backward().unwrap();
            let params = bn.named_tensors();
            let mut out = vec![bits(&y), bits(g.get(&x).unwrap())];
            for t in &params {
                if let Some(gt) = g.get(&t.tensor) {
                    out.push(bits(gt));
                }
                if t.tensor.dtype() == DType::F32 {
                    out.push(bits(&t.tensor));
                }
            }
            out
        };
        let (fused, separate) = (run(true), run(false));
        assert_eq!(fused.len(), separate.len());
        assert!(
            fused.len() >= 6,
            "output, input and parameter gradients, tensors"
        );
        assert!(
            fused == separate,
            "{} in {mode:?}: fused differs",
            act.kind()
        );
    }

    // And Sequential takes the fused path: the op recorded is the fused one.
    let seq = Sequential::new()
        .add(BatchNorm2d::new(2).unwrap())
        .add(LeakyReLU::new(0.2));
    let x = Tensor::ones([2, 2, 3, 3], DType::F32, Device::Cpu)
        .unwrap()
        .variable();
    let y = seq.forward(&x, Mode::Train).unwrap();
    assert_eq!(y.op_name(), Some("batch_norm_act"));
}

/// `Sequential` fuses a Conv2d or ConvTranspose2d with the activation after it (into the
/// kernel's store); output, input gradient and parameter gradients are bit for bit those of
/// the two layers one by one. Wide layers take the direct kernel (on AVX-512 CPUs), narrow
/// ones the packed GEMM and a pass after it; PReLU and a negative slope do not fuse.
#[test]
fn conv_then_activation_fuses_without_changing_a_bit() {
    use gantry_nn::{Sigmoid, Tanh};
    let bits = |t: &Tensor| -> Vec<u32> {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    let acts: [Box<dyn Module>; 4] = [
        Box::new(LeakyReLU::new(0.2)),
        Box::new(gantry_nn::ReLU),
        Box::new(Tanh),
        Box::new(Sigmoid),
    ];
    let mut rng = Rng::new(5);
    for (case, (c_in, c_out, hw, bias)) in [(64, 64, 10, false), (3, 5, 9, true), (70, 66, 7, true)]
        .into_iter()
        .enumerate()
    {
        let layers: [Box<dyn Module>; 2] = [
            Box::new(Conv2d::new(c_in, c_out, 4, Conv2dParams::new(2, 1), bias, &mut rng).unwrap()),
            Box::new(
                ConvTranspose2d::new(
                    c_in,
                    c_out,
                    4,
                    ConvTranspose2dParams::new(2, 1),
                    bias,
                    &mut rng,
                )
                .unwrap(),
            ),
        ];
        for layer in &layers {
            let act = &acts[case % 4];
            let x = Tensor::randn(
                [2, c_in, hw, hw],
                0.0,
                1.0,
                DType::F32,
                Device::Cpu,
                &mut rng,
            )
            .unwrap()
            .variable();
            let run = |fused: bool| {
                let y = if fused {
                    let op = act.pointwise().unwrap();
                    let y = layer.forward_then(&x, Mode::Train, op).unwrap();
                    y.expect("conv layers fuse this activation")
                } else {
                    act.forward(&layer.forward(&x, Mode::Train).unwrap(), Mode::Train)
                        .unwrap()
                };
                let dy = Tensor::randn(
                    y.dims().to_vec(),
                    0.0,
                    1.0,
                    DType::F32,
                    Device::Cpu,
                    &mut Rng::new(9),
                )
                .unwrap();
                let g = y.mul(&dy).unwrap().sum_all().unwrap().backward().unwrap();
                let mut out = vec![bits(&y), bits(g.get(&x).unwrap())];
                for t in layer.named_tensors() {
                    out.push(bits(g.get(&t.tensor).expect("a parameter gradient")));
                }
                out
            };
            let (fused, separate) = (run(true), run(false));
            assert_eq!(fused.len(), if bias { 4 } else { 3 });
            assert!(
                fused == separate,
                "{} then {}: fused differs ({c_in} -> {c_out}, {hw}x{hw})",
                layer.kind(),
                act.kind()
            );
        }
    }

    let mut rng = Rng::new(1);
    let conv = || Conv2d::new(2, 3, 3, Conv2dParams::new(1, 1), true, &mut Rng::new(2)).unwrap();
    let x = Tensor::randn([1, 2, 5, 5], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng).unwrap();
    let y = Sequential::new()
        .add(conv())
        .add(Tanh)
        .forward(&x, Mode::Train)
        .unwrap();
    assert_eq!(y.op_name(), Some("conv2d_act"));
    // The output does not determine these activations' gradients: no fusion.
    let y = Sequential::new()
        .add(conv())
        .add(LeakyReLU::new(-0.1))
        .forward(&x, Mode::Train)
        .unwrap();
    assert_eq!(y.op_name(), Some("leaky_relu"));
    let prelu = gantry_nn::PReLU::new(1).unwrap();
    let y = Sequential::new()
        .add(conv())
        .add(prelu)
        .forward(&x, Mode::Train)
        .unwrap();
    assert_ne!(y.op_name(), Some("conv2d_act"));
}

#[test]
fn max_pool_matches_a_naive_pool_forward_and_backward() {
    use gantry_nn::MaxPool2d;
    let mut rng = Rng::new(3);
    // 7x9 with k = 2: the last row and column are dropped, as PyTorch floors.
    let x = Tensor::randn([2, 3, 7, 9], 0.0, 1.0, DType::F64, Device::Cpu, &mut rng)
        .unwrap()
        .variable();
    let y = MaxPool2d::new(2).forward(&x, Mode::Train).unwrap();
    assert_eq!(y.dims(), &[2, 3, 3, 4]);
    let xv = x.to_vec::<f64>().unwrap();
    let yv = y.to_vec::<f64>().unwrap();
    let mut want_grad = vec![0.0; xv.len()];
    for p in 0..6 {
        for oy in 0..3 {
            for ox in 0..4 {
                let mut best = (f64::NEG_INFINITY, 0);
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let i = (p * 7 + 2 * oy + dy) * 9 + 2 * ox + dx;
                    if xv[i] > best.0 {
                        best = (xv[i], i);
                    }
                }
                assert_eq!(yv[(p * 3 + oy) * 4 + ox], best.0);
                want_grad[best.1] += 1.0 + (oy * 4 + ox) as f64;
            }
        }
    }
    // Upstream gradient 1 + (position in the 3x4 map), so a misrouted gradient shows.
    let w: Vec<f64> = (0..6)
        .flat_map(|_| (0..12).map(|i| 1.0 + i as f64))
        .collect();
    let w = Tensor::from_vec(w, [2, 3, 3, 4], Device::Cpu).unwrap();
    let grads = y.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), want_grad);
    let e = MaxPool2d::new(4)
        .forward(
            &Tensor::zeros([1, 1, 3, 8], DType::F32, Device::Cpu).unwrap(),
            Mode::Eval,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("MaxPool2d") && e.contains("[1, 1, 3, 8]"), "{e}");
}
