//! Every op against PyTorch: forward outputs and input gradients for fixed inputs.
//!
//! The fixtures (`tests/fixtures/ops.safetensors`) were made by
//! `tests/fixtures/make_op_fixtures.py` with PyTorch (the version is in the file's metadata),
//! in float64. For each case `C` they hold the inputs `C.in<i>`, PyTorch's output `C.out`, an
//! upstream gradient `C.gout` and PyTorch's `C.grad<i>` = ∂(Σ out ⊙ gout)/∂in_i. The case's
//! op and parameters are in the metadata as `op=conv2d stride=2,2 …`.
//!
//! Each case runs twice: in f64, where gantry must agree to ~1e-10 (both sides compute in
//! double precision; only summation order differs), and in f32, where the inputs are rounded
//! to f32 first, so agreement is to f32 precision (tolerance 1e-4 absolute + 1e-4 relative,
//! generous for the ≤ 150-term sums in these cases).

use gantry::loss::{bce_with_logits, l1, mse, Reduction};
use gantry::{Conv2dParams, ConvTranspose2dParams, DType, Device, Result, Tensor};
use safetensors::SafeTensors;
use std::collections::HashMap;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/ops.safetensors"
);

struct Case<'a> {
    name: String,
    params: HashMap<String, String>,
    st: &'a SafeTensors<'a>,
}

impl Case<'_> {
    fn get(&self, key: &str) -> Option<(Vec<f64>, Vec<usize>)> {
        let view = self.st.tensor(&format!("{}.{key}", self.name)).ok()?;
        assert_eq!(view.dtype(), safetensors::Dtype::F64, "{}.{key}", self.name);
        let data = view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Some((data, view.shape().to_vec()))
    }
    fn tensor(&self, key: &str, dtype: DType) -> Option<Tensor> {
        let (data, shape) = self.get(key)?;
        Some(
            Tensor::from_vec(data, shape, Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
    }
    fn usizes(&self, key: &str) -> Vec<usize> {
        self.params[key]
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    }
    fn pair(&self, key: &str) -> [usize; 2] {
        let v = self.usizes(key);
        [v[0], v[1]]
    }
    fn f64(&self, key: &str) -> f64 {
        self.params[key].parse().unwrap()
    }
    fn flag(&self, key: &str) -> bool {
        self.params[key] == "1"
    }
    fn reduction(&self) -> Reduction {
        match self.params["reduction"].as_str() {
            "mean" => Reduction::Mean,
            "sum" => Reduction::Sum,
            "none" => Reduction::None,
            other => panic!("unknown reduction {other}"),
        }
    }
}

/// Runs the case's op on `x` (the inputs, variables where differentiable).
fn run(c: &Case, x: &[Tensor]) -> Result<Tensor> {
    let op = c.params["op"].as_str();
    match op {
        "add" => x[0].add(&x[1]),
        "sub" => x[0].sub(&x[1]),
        "mul" => x[0].mul(&x[1]),
        "div" => x[0].div(&x[1]),
        "pow" => x[0].pow(&x[1]),
        "neg" => x[0].neg(),
        "exp" => x[0].exp(),
        "log" => x[0].log(),
        "sqrt" => x[0].sqrt(),
        "abs" => x[0].abs(),
        "tanh" => x[0].tanh(),
        "sigmoid" => x[0].sigmoid(),
        "relu" => x[0].relu(),
        "leaky_relu" => x[0].leaky_relu(c.f64("slope")),
        "powf" => x[0].powf(c.f64("exponent")),
        "add_scalar" => x[0].add_scalar(c.f64("value")),
        "mul_scalar" => x[0].mul_scalar(c.f64("value")),
        "sum" | "mean" => {
            let keepdim = c.flag("keepdim");
            // `all`: PyTorch's x.sum() ; `none`: an empty axis list (dim=[]), which PyTorch
            // also treats as every axis.
            let axes = match c.params["axes"].as_str() {
                "all" => None,
                "none" => Some(vec![]),
                _ => Some(c.usizes("axes")),
            };
            match (op, axes) {
                ("sum", None) => x[0].sum_all(),
                ("mean", None) => x[0].mean_all(),
                ("sum", Some(a)) => x[0].sum(&a, keepdim),
                (_, Some(a)) => x[0].mean(&a, keepdim),
                _ => unreachable!(),
            }
        }
        "max" => x[0].max(c.usizes("axis")[0], c.flag("keepdim")),
        "matmul" => x[0].matmul(&x[1]),
        "reshape" => x[0].reshape(c.usizes("shape")),
        "permute" => x[0].permute(&c.usizes("dims")),
        "transpose" => x[0].transpose(c.usizes("dim0")[0], c.usizes("dim1")[0]),
        "narrow" => x[0].narrow(
            c.usizes("dim")[0],
            c.usizes("start")[0],
            c.usizes("length")[0],
        ),
        "concat" => Tensor::concat(&x.iter().collect::<Vec<_>>(), c.usizes("dim")[0]),
        "broadcast_to" => x[0].broadcast_to(c.usizes("shape")),
        "prelu" => x[0].prelu(&x[1]),
        "conv2d" => {
            let p = Conv2dParams {
                stride: c.pair("stride"),
                padding: c.pair("padding"),
                dilation: c.pair("dilation"),
            };
            x[0].conv2d(&x[1], x.get(2), p)
        }
        "conv_transpose2d" => {
            let p = ConvTranspose2dParams {
                stride: c.pair("stride"),
                padding: c.pair("padding"),
                output_padding: c.pair("output_padding"),
                dilation: c.pair("dilation"),
            };
            x[0].conv_transpose2d(&x[1], x.get(2), p)
        }
        "batch_norm_train" => Ok(x[0]
            .batch_norm_train(Some(&x[1]), Some(&x[2]), c.f64("eps"))?
            .0),
        "batch_norm_eval" => {
            x[0].batch_norm_eval(&x[3], &x[4], Some(&x[1]), Some(&x[2]), c.f64("eps"))
        }
        "pixel_shuffle" => x[0].pixel_shuffle(c.usizes("factor")[0]),
        "pixel_unshuffle" => x[0].pixel_unshuffle(c.usizes("factor")[0]),
        "upsample_nearest2d" => x[0].upsample_nearest2d(c.pair("scale")),
        "bce_with_logits" => bce_with_logits(&x[0], &x[1], c.reduction()),
        "mse" => mse(&x[0], &x[1], c.reduction()),
        "l1" => l1(&x[0], &x[1], c.reduction()),
        other => panic!("fixture op {other} has no runner"),
    }
}

fn compare(what: &str, got: &Tensor, want: (Vec<f64>, Vec<usize>), atol: f64, rtol: f64) -> f64 {
    assert_eq!(got.dims(), want.1.as_slice(), "{what}: shape");
    let mut worst = 0f64;
    for (i, (g, w)) in got.to_f64_vec().unwrap().iter().zip(&want.0).enumerate() {
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{what}[{i}]: gantry {g} vs PyTorch {w}"
        );
        worst = worst.max(err / (atol + rtol * w.abs()));
    }
    worst
}

fn check_case(c: &Case, dtype: DType, atol: f64, rtol: f64) {
    let n_inputs = (0..)
        .take_while(|i| c.get(&format!("in{i}")).is_some())
        .count();
    let inputs: Vec<Tensor> = (0..n_inputs)
        .map(|i| {
            let t = c.tensor(&format!("in{i}"), dtype).unwrap();
            if c.get(&format!("grad{i}")).is_some() {
                t.variable()
            } else {
                t
            }
        })
        .collect();
    let out = run(c, &inputs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    let tag = format!("{} ({dtype})", c.name);
    compare(
        &format!("{tag} out"),
        &out,
        c.get("out").unwrap(),
        atol,
        rtol,
    );

    if c.params["op"] == "max" {
        let (_, idx) = inputs[0]
            .max_with_indices(c.usizes("axis")[0], c.flag("keepdim"))
            .unwrap();
        compare(
            &format!("{tag} indices"),
            &idx,
            c.get("out1").unwrap(),
            0.0,
            0.0,
        );
    }
    if c.params["op"] == "batch_norm_train" {
        let (_, stats) = inputs[0]
            .batch_norm_train(Some(&inputs[1]), Some(&inputs[2]), c.f64("eps"))
            .unwrap();
        compare(
            &format!("{tag} mean"),
            &stats.mean,
            c.get("out1").unwrap(),
            atol,
            rtol,
        );
        compare(
            &format!("{tag} var"),
            &stats.var,
            c.get("out2").unwrap(),
            atol,
            rtol,
        );
    }

    let gout = c.tensor("gout", dtype).unwrap();
    let grads = out.backward_with(&gout).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        if let Some(want) = c.get(&format!("grad{i}")) {
            let got = grads
                .get(x)
                .unwrap_or_else(|| panic!("{tag}: no gradient for input {i}"));
            compare(&format!("{tag} grad{i}"), got, want, atol, rtol);
        }
    }
}

fn with_cases(f: impl Fn(&Case)) -> usize {
    let bytes = std::fs::read(FIXTURES).expect("fixtures file");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().expect("fixture metadata");
    let mut n = 0;
    for name in meta["cases"].split(',') {
        let params = meta[name]
            .split_whitespace()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        f(&Case {
            name: name.to_string(),
            params,
            st: &st,
        });
        n += 1;
    }
    n
}

#[test]
fn every_op_matches_pytorch_in_f64() {
    let n = with_cases(|c| check_case(c, DType::F64, 1e-10, 1e-9));
    assert!(n >= 70, "only {n} fixture cases");
}

#[test]
fn every_op_matches_pytorch_in_f32() {
    let n = with_cases(|c| check_case(c, DType::F32, 1e-4, 1e-4));
    assert!(n >= 70, "only {n} fixture cases");
}

#[test]
fn fixtures_cover_every_op() {
    let bytes = std::fs::read(FIXTURES).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let ops: std::collections::HashSet<String> = meta["cases"]
        .split(',')
        .map(|c| {
            meta[c]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_start_matches("op=")
                .to_string()
        })
        .collect();
    for op in [
        "add",
        "sub",
        "mul",
        "div",
        "pow",
        "neg",
        "exp",
        "log",
        "sqrt",
        "abs",
        "tanh",
        "sigmoid",
        "relu",
        "leaky_relu",
        "powf",
        "add_scalar",
        "mul_scalar",
        "sum",
        "mean",
        "max",
        "matmul",
        "reshape",
        "permute",
        "transpose",
        "narrow",
        "concat",
        "broadcast_to",
        "prelu",
        "conv2d",
        "conv_transpose2d",
        "batch_norm_train",
        "batch_norm_eval",
        "pixel_shuffle",
        "upsample_nearest2d",
        "bce_with_logits",
        "mse",
        "l1",
    ] {
        assert!(ops.contains(op), "no PyTorch fixture for {op}");
    }
}
