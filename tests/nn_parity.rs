//! gantry-nn against PyTorch: every layer's forward and backward (training and evaluation
//! mode), BatchNorm's running statistics after several training steps, the losses, Adam and SGD
//! steps, and the pytorch/examples DCGAN generator loaded from a PyTorch-saved checkpoint.
//!
//! The fixtures were made by `tests/fixtures/make_nn_fixtures.py` (PyTorch, f32 on the CPU;
//! the version is in the file's metadata); see that script for the layout. They are read with
//! gantry's own safetensors loader.
//!
//! Tolerance: `|gantry − PyTorch| ≤ 1e-5·max(max|PyTorch|, 1) + 1e-5·|PyTorch|` per tensor, i.e.
//! about 1e-5 relative to the tensor's scale, and 1e-5 absolute for tensors whose values are all
//! below 1 (the fixtures' data are O(1); the floor matters for gradients that are exactly zero
//! in exact arithmetic, such as a conv bias followed by a training-mode BatchNorm, where both
//! sides hold rounding noise of ~1e-6). Both sides compute in f32; they differ only in
//! summation order (and fused multiply-adds), a few ulps per term over at most a few hundred
//! terms. The deep DCGAN generator gets 1e-4 (five layers of 1024–8192-term sums and
//! normalisations compound the rounding).

use gantry::nn::checkpoint::{self, load_tensors, TensorFile};
use gantry::nn::loss::{bce, bce_with_logits_smoothed, l1, mse, Reduction};
use gantry::nn::{
    Adam, AdamConfig, BatchNorm2d, Conv2d, ConvTranspose2d, Flatten, InstanceNorm2d, LeakyReLU,
    Linear, Mode, Module, ModuleExt, Optimizer, PReLU, PixelShuffle, ReLU, ReflectionPad2d,
    Residual, Sequential, Sgd, SgdConfig, Sigmoid, Slot, Tanh, UpsampleNearest,
};
use gantry::{Conv2dParams, ConvTranspose2dParams, Rng, Tensor};
use std::collections::HashMap;
use std::sync::OnceLock;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Fixtures {
    file: TensorFile,
    by_name: HashMap<String, Tensor>,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let file = load_tensors(format!("{DIR}/nn.safetensors")).expect("nn fixtures");
        let by_name = file.tensors.iter().cloned().collect();
        Fixtures { file, by_name }
    })
}

struct Case {
    name: String,
    spec: HashMap<String, String>,
}

impl Case {
    fn t(&self, key: &str) -> Tensor {
        let full = format!("{}.{key}", self.name);
        fixtures()
            .by_name
            .get(&full)
            .unwrap_or_else(|| panic!("fixture {full} missing"))
            .clone()
    }
    fn has(&self, key: &str) -> bool {
        fixtures()
            .by_name
            .contains_key(&format!("{}.{key}", self.name))
    }
    /// The tensors under `<case>.<prefix>.`, with the prefix stripped.
    fn group(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let p = format!("{}.{prefix}.", self.name);
        fixtures()
            .file
            .tensors
            .iter()
            .filter_map(|(n, t)| Some((n.strip_prefix(&p)?.to_string(), t.clone())))
            .collect()
    }
    fn s(&self, key: &str) -> &str {
        self.spec
            .get(key)
            .unwrap_or_else(|| panic!("{}: no {key} in spec", self.name))
    }
    fn u(&self, key: &str) -> usize {
        self.s(key).parse().unwrap()
    }
    fn f(&self, key: &str) -> f64 {
        self.s(key).parse().unwrap()
    }
    fn flag(&self, key: &str) -> bool {
        self.s(key) == "1"
    }
}

fn cases(kind: &str) -> Vec<Case> {
    let meta = &fixtures().file.metadata;
    meta["cases"]
        .split(',')
        .map(|name| Case {
            name: name.to_string(),
            spec: meta[name]
                .split_whitespace()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.to_string())
                })
                .collect(),
        })
        .filter(|c| c.spec.contains_key(kind))
        .collect()
}

/// Asserts `got ≈ want` (see the tolerance in the module docs); returns the worst error
/// relative to the tolerance.
fn close(what: &str, got: &Tensor, want: &Tensor, rel: f64) -> f64 {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
    let mut worst = 0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let tol = rel * scale + rel * b.abs();
        let err = (a - b).abs();
        assert!(
            err <= tol || (a == b),
            "{what}[{i}]: gantry {a} vs PyTorch {b} (tolerance {tol:e})"
        );
        if tol > 0.0 {
            worst = worst.max(err / tol);
        }
    }
    worst
}

fn build_layer(c: &Case) -> Box<dyn Module> {
    let mut rng = Rng::new(1);
    let bias = || c.flag("bias");
    match c.s("layer") {
        "Conv2d" => Box::new(
            Conv2d::new(
                c.u("c_in"),
                c.u("c_out"),
                c.u("k"),
                Conv2dParams::new(c.u("stride"), c.u("padding")).with_dilation(c.u("dilation")),
                bias(),
                &mut rng,
            )
            .unwrap(),
        ),
        "ConvTranspose2d" => Box::new(
            ConvTranspose2d::new(
                c.u("c_in"),
                c.u("c_out"),
                c.u("k"),
                ConvTranspose2dParams::new(c.u("stride"), c.u("padding"))
                    .with_output_padding(c.u("output_padding")),
                bias(),
                &mut rng,
            )
            .unwrap(),
        ),
        "BatchNorm2d" => {
            let mut bn = BatchNorm2d::new(c.u("c")).unwrap();
            if c.s("momentum") == "none" {
                bn = bn.with_momentum(None);
            }
            if !c.flag("affine") {
                bn = bn.without_affine();
            }
            Box::new(bn)
        }
        "Linear" => Box::new(Linear::new(c.u("d_in"), c.u("d_out"), bias(), &mut rng).unwrap()),
        "ReLU" => Box::new(ReLU),
        "LeakyReLU" => Box::new(LeakyReLU::new(c.f("slope"))),
        "Tanh" => Box::new(Tanh),
        "Sigmoid" => Box::new(Sigmoid),
        "PReLU" => Box::new(PReLU::new(c.u("num")).unwrap()),
        "PixelShuffle" => Box::new(PixelShuffle {
            upscale_factor: c.u("r"),
        }),
        "Upsample" => Box::new(UpsampleNearest {
            scale_factor: c.u("scale"),
        }),
        "Flatten" => Box::new(Flatten::default()),
        "Residual" => {
            let conv =
                |bias, rng: &mut Rng| Conv2d::new(4, 4, 3, Conv2dParams::new(1, 1), bias, rng);
            Box::new(Residual::new(
                Sequential::new()
                    .add(conv(false, &mut rng).unwrap())
                    .add(BatchNorm2d::new(4).unwrap())
                    .add(PReLU::new(4).unwrap())
                    .add(conv(true, &mut rng).unwrap())
                    .add(BatchNorm2d::new(4).unwrap()),
            ))
        }
        "InstanceNorm2d" => {
            let norm = InstanceNorm2d::new(c.u("c")).unwrap();
            Box::new(if c.flag("affine") {
                norm.with_affine().unwrap()
            } else {
                norm
            })
        }
        // PyTorch's `Sequential(InstanceNorm2d, ReLU)`: gantry fuses the two.
        "InstanceNormReLU" => Box::new(
            Sequential::new()
                .add(InstanceNorm2d::new(c.u("c")).unwrap())
                .add(ReLU),
        ),
        "ReflectionPad2d" => Box::new(ReflectionPad2d {
            padding: [c.u("left"), c.u("right"), c.u("top"), c.u("bottom")],
        }),
        other => panic!("no builder for layer {other}"),
    }
}

/// Layers built for the same case share their state across cases: `bn_eval` continues the
/// module `bn_train` trained, `residual_eval` the one `residual_train` trained. PyTorch's
/// state after the earlier case is the later case's starting state, so loading `param.*` gives
/// the same thing; this just also checks the loaded buffers are used.
#[test]
fn every_layer_matches_pytorch_forward_and_backward() {
    let all = cases("layer");
    assert!(all.len() >= 20, "only {} layer cases", all.len());
    let mut worst = (0f64, String::new());
    for c in &all {
        let layer = build_layer(c);
        checkpoint::load_state_dict(layer.as_ref(), &c.group("param"))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let mode = match c.s("mode") {
            "train" => Mode::Train,
            _ => Mode::Eval,
        };
        for s in 0..c.u("steps") {
            let x = c.t(&format!("s{s}.input")).variable();
            let out = layer.forward(&x, mode).unwrap();
            let tag = format!("{} step {s}", c.name);
            let mut note = |w: f64, what: &str| {
                if w > worst.0 {
                    worst = (w, format!("{tag} {what}"));
                }
            };
            note(
                close(
                    &format!("{tag} out"),
                    &out,
                    &c.t(&format!("s{s}.out")),
                    1e-5,
                ),
                "out",
            );
            let grads = out.backward_with(&c.t(&format!("s{s}.gout"))).unwrap();
            let gx = grads.get(&x).expect("input gradient");
            note(
                close(
                    &format!("{tag} grad input"),
                    gx,
                    &c.t(&format!("s{s}.grad.input")),
                    1e-5,
                ),
                "grad input",
            );
            for (name, p) in layer.named_parameters() {
                let key = format!("s{s}.grad.{name}");
                let got = grads
                    .get(&p)
                    .unwrap_or_else(|| panic!("{tag}: no gradient for {name}"));
                note(
                    close(&format!("{tag} grad {name}"), got, &c.t(&key), 1e-5),
                    &name,
                );
            }
        }
        // State after the steps: BatchNorm's running statistics and batch count.
        let after: HashMap<String, Tensor> = c.group("after").into_iter().collect();
        let own = layer.named_tensors();
        assert_eq!(own.len(), after.len(), "{}: state_dict size", c.name);
        for t in own {
            let want = &after[&t.name];
            assert_eq!(t.tensor.dtype(), want.dtype(), "{} {}", c.name, t.name);
            close(
                &format!("{} after {}", c.name, t.name),
                &t.tensor,
                want,
                1e-5,
            );
        }
    }
    eprintln!("worst error / tolerance: {:.3} at {}", worst.0, worst.1);
}

#[test]
fn batch_norm_counts_batches_like_pytorch() {
    let c = cases("layer")
        .into_iter()
        .find(|c| c.name == "bn_train")
        .unwrap();
    let bn = BatchNorm2d::new(4).unwrap();
    checkpoint::load_state_dict(&bn, &c.group("param")).unwrap();
    for s in 0..3 {
        bn.forward(&c.t(&format!("s{s}.input")), Mode::Train)
            .unwrap();
    }
    assert_eq!(bn.num_batches_tracked(), Some(3));
    let after: HashMap<String, Tensor> = c.group("after").into_iter().collect();
    assert_eq!(
        after["num_batches_tracked"].to_vec::<i64>().unwrap(),
        vec![3]
    );
    // Evaluation mode leaves the running statistics alone.
    let before = bn.running_mean().unwrap().to_vec::<f32>().unwrap();
    bn.forward(&c.t("s0.input"), Mode::Eval).unwrap();
    assert_eq!(bn.running_mean().unwrap().to_vec::<f32>().unwrap(), before);
    assert_eq!(bn.num_batches_tracked(), Some(3));
}

#[test]
fn every_loss_matches_pytorch() {
    let all = cases("loss");
    assert!(all.len() >= 10);
    for c in &all {
        let reduction = match c.s("reduction") {
            "mean" => Reduction::Mean,
            _ => Reduction::Sum,
        };
        let (x, t) = (c.t("input").variable(), c.t("target"));
        let out = match c.s("loss") {
            "bce_with_logits" => bce_with_logits_smoothed(&x, &t, c.f("smoothing"), reduction),
            "bce" => bce(&x, &t, reduction),
            "mse" => mse(&x, &t, reduction),
            "l1" => l1(&x, &t, reduction),
            other => panic!("no loss {other}"),
        }
        .unwrap();
        close(&format!("{} out", c.name), &out, &c.t("out"), 1e-5);
        let g = out.backward().unwrap();
        close(
            &format!("{} grad", c.name),
            g.get(&x).unwrap(),
            &c.t("grad.input"),
            1e-5,
        );
    }
}

#[test]
fn adam_and_sgd_steps_match_pytorch() {
    let all = cases("optim");
    assert!(all.len() >= 5);
    for c in &all {
        // Fresh copies: the optimizer updates them in place.
        let copy = |t: Tensor| {
            Tensor::from_vec(
                t.to_vec::<f32>().unwrap(),
                t.shape().clone(),
                gantry::Device::Cpu,
            )
            .unwrap()
            .variable()
        };
        let (p0, p1) = (copy(c.t("p0")), copy(c.t("p1")));
        let params = vec![
            ("p0".to_string(), p0.clone()),
            ("p1".to_string(), p1.clone()),
        ];
        let mut opt: Box<dyn Optimizer> = match c.s("optim") {
            "adam" => Box::new(
                Adam::new(
                    params,
                    AdamConfig {
                        lr: c.f("lr"),
                        betas: (c.f("beta1"), c.f("beta2")),
                        eps: c.f("eps"),
                        weight_decay: c.f("weight_decay"),
                    },
                )
                .unwrap(),
            ),
            _ => Box::new(
                Sgd::new(
                    params,
                    SgdConfig {
                        lr: c.f("lr"),
                        momentum: c.f("momentum"),
                        dampening: c.f("dampening"),
                        weight_decay: c.f("weight_decay"),
                        nesterov: c.flag("nesterov"),
                    },
                )
                .unwrap(),
            ),
        };
        for s in 0..c.u("steps") {
            // Gradients as a backward pass would produce them: from a loss Σ p ⊙ g.
            let mut terms = vec![p0
                .mul(&c.t(&format!("s{s}.g0")))
                .unwrap()
                .sum_all()
                .unwrap()];
            if c.has(&format!("s{s}.g1")) {
                terms.push(
                    p1.mul(&c.t(&format!("s{s}.g1")))
                        .unwrap()
                        .sum_all()
                        .unwrap(),
                );
            }
            let loss = terms
                .iter()
                .skip(1)
                .fold(terms[0].clone(), |a, b| a.add(b).unwrap());
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            // Parameter updates agree to a few f32 ulps (same operations in the same order).
            close(
                &format!("{} step {s} p0", c.name),
                &p0,
                &c.t(&format!("s{s}.p0")),
                1e-6,
            );
            close(
                &format!("{} step {s} p1", c.name),
                &p1,
                &c.t(&format!("s{s}.p1")),
                1e-6,
            );
        }
        // Internal state, and its round trip through a file.
        let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        for (i, p) in ["p0", "p1"].iter().enumerate() {
            for (key, want) in c.group(&format!("state{i}")) {
                close(
                    &format!("{} {p}.{key}", c.name),
                    &state[&format!("{p}.{key}")],
                    &want,
                    1e-6,
                );
            }
        }
        let dir = tempdir(&c.name);
        let path = dir.join("opt.safetensors");
        opt.save(&path).unwrap();
        let saved = opt.state_tensors().unwrap();
        opt.load(&path).unwrap();
        for ((n0, a), (n1, b)) in saved.iter().zip(opt.state_tensors().unwrap()) {
            assert_eq!(n0, &n1);
            assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), "{n0}");
        }
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gantry-nn-parity-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The pytorch/examples DCGAN generator, built from gantry-nn layers: one child `main`.
struct Generator {
    main: Sequential,
}

impl Generator {
    fn new(nz: usize, ngf: usize, nc: usize, rng: &mut Rng) -> Self {
        let up = |c_in, c_out, first: bool, rng: &mut Rng| {
            let p = if first {
                ConvTranspose2dParams::new(1, 0)
            } else {
                ConvTranspose2dParams::new(2, 1)
            };
            ConvTranspose2d::new(c_in, c_out, 4, p, false, rng).unwrap()
        };
        let mut main = Sequential::new();
        let widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf];
        for i in 0..4 {
            main = main
                .add(up(widths[i], widths[i + 1], i == 0, rng))
                .add(BatchNorm2d::new(widths[i + 1]).unwrap())
                .add(ReLU);
        }
        main = main.add(up(ngf, nc, false, rng)).add(Tanh);
        Generator { main }
    }
}

impl Module for Generator {
    fn kind(&self) -> &'static str {
        "Generator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> gantry::Result<Tensor> {
        self.main.forward(x, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("main".to_string(), &self.main)]
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        Vec::new()
    }
}

#[test]
fn numpy_written_npy_reads_back_and_round_trips() {
    let noise = gantry::nn::npy::read_npy(format!("{DIR}/dcgan_noise.npy")).unwrap();
    let want = &fixtures().by_name["dcgan.noise"];
    assert_eq!(noise.dims(), &[4, 100, 1, 1]);
    assert_eq!(
        noise.to_vec::<f32>().unwrap(),
        want.to_vec::<f32>().unwrap()
    );
    let path = tempdir("npy").join("z.npy");
    gantry::nn::npy::write_npy(&path, &noise).unwrap();
    // Byte for byte what NumPy wrote (same header layout, same data).
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(format!("{DIR}/dcgan_noise.npy")).unwrap()
    );
}

#[test]
fn pytorch_dcgan_generator_loads_and_reproduces_its_output() {
    let g = Generator::new(100, 64, 3, &mut Rng::new(0));
    let path = format!("{DIR}/dcgan_generator.safetensors");
    checkpoint::load(&g, &path).unwrap();
    let f = fixtures();
    let out = g.forward(&f.by_name["dcgan.noise"], Mode::Eval).unwrap();
    let w = close("dcgan eval output", &out, &f.by_name["dcgan.out"], 1e-4);
    eprintln!("dcgan output: worst error / tolerance {w:.3}");

    // Saved by gantry, the same tensors in the same dtypes come back bit for bit.
    let dir = tempdir("dcgan");
    let copy = dir.join("g.safetensors");
    checkpoint::save(&g, &copy).unwrap();
    let g2 = Generator::new(100, 64, 3, &mut Rng::new(7));
    checkpoint::load(&g2, &copy).unwrap();
    for (a, b) in g.named_tensors().iter().zip(g2.named_tensors()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.tensor.dtype(), b.tensor.dtype());
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_f64_vec()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&a.tensor), bits(&b.tensor), "{}", a.name);
    }
    // The PyTorch file and gantry's hold the same names, shapes, dtypes and values.
    let contents = |file: &str| {
        let mut v: Vec<_> = load_tensors(file)
            .unwrap()
            .tensors
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.dims().to_vec(),
                    t.dtype(),
                    t.to_f64_vec().unwrap(),
                )
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let (a, b) = (contents(&path), contents(copy.to_str().unwrap()));
    assert!(a == b, "gantry's checkpoint differs from PyTorch's");
    std::fs::remove_dir_all(dir).ok();
}
