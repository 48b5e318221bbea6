//! Test helpers: random f64 tensors and the finite-difference gradient check.
#![allow(dead_code)]

use gantry_core::{DType, Device, Result, Rng, Tensor};

pub const CPU: Device = Device::Cpu;

/// Standard-normal f64 constant.
pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape.to_vec(), 0.0, 1.0, DType::F64, CPU, rng).unwrap()
}

/// Uniform f64 constant in `[lo, hi)`.
pub fn rand(shape: &[usize], lo: f64, hi: f64, rng: &mut Rng) -> Tensor {
    Tensor::rand(shape.to_vec(), lo, hi, DType::F64, CPU, rng).unwrap()
}

/// Normal values pushed at least `gap` away from 0, for ops with a kink there (relu, abs, …):
/// a finite difference straddling the kink would measure neither one-sided derivative.
pub fn away_from_zero(shape: &[usize], gap: f64, rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let x = rng.normal();
            x + gap * x.signum()
        })
        .collect();
    Tensor::from_vec(v, shape.to_vec(), CPU).unwrap()
}

/// Distinct values (a shuffled, scaled `0..n` plus a little noise), so a maximum is unique and
/// stays unique under a 1e-6 perturbation.
pub fn distinct(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n)
        .map(|i| i as f64 * 0.1 + 0.01 * rng.uniform())
        .collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(v, shape.to_vec(), CPU).unwrap()
}

/// The step of the central difference. In f64 the truncation error is O(h²) ≈ 1e-12 and the
/// rounding error O(ε·|L|/h) ≈ 1e-10·|L|, both far inside the tolerance below.
pub const STEP: f64 = 1e-6;
/// Tolerance: `|analytic − numeric| ≤ ATOL + RTOL · max(|analytic|, |numeric|)`.
pub const ATOL: f64 = 1e-6;
pub const RTOL: f64 = 1e-5;

/// Compares the gradients autograd computes for `f` with central finite differences.
///
/// `inputs` are f64 constants; those flagged `true` are differentiated. The scalar tested is
/// `L = Σ f(x) ⊙ r` for a fixed random `r`, so every output element (not just their sum)
/// contributes with its own weight. Returns a description of the first mismatch.
pub fn check_grads(
    inputs: &[(Tensor, bool)],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> std::result::Result<(), String> {
    let vars: Vec<Tensor> = inputs
        .iter()
        .map(|(t, d)| if *d { t.variable() } else { t.clone() })
        .collect();
    let out = f(&vars).map_err(|e| format!("forward failed: {e}"))?;
    let mut rng = Rng::new(0x5eed);
    let r = randn(out.dims(), &mut rng);
    let loss_of = |xs: &[Tensor]| -> f64 {
        f(xs)
            .unwrap()
            .mul(&r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let loss = out.mul(&r).unwrap().sum_all().unwrap();
    let grads = loss
        .backward()
        .map_err(|e| format!("backward failed: {e}"))?;

    for (i, (x, differentiate)) in inputs.iter().enumerate() {
        if !differentiate {
            continue;
        }
        let analytic = match grads.get(&vars[i]) {
            Some(g) => {
                if g.shape() != x.shape() {
                    return Err(format!(
                        "input {i}: gradient shape {} != input shape {}",
                        g.shape(),
                        x.shape()
                    ));
                }
                g.to_f64_vec().unwrap()
            }
            None => vec![0.0; x.elem_count()],
        };
        let base = x.to_f64_vec().unwrap();
        for j in 0..base.len() {
            let eval = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                let mut xs: Vec<Tensor> = inputs.iter().map(|(t, _)| t.clone()).collect();
                xs[i] = Tensor::from_vec(v, x.shape().clone(), CPU).unwrap();
                loss_of(&xs)
            };
            let numeric = (eval(STEP) - eval(-STEP)) / (2.0 * STEP);
            let a = analytic[j];
            if (a - numeric).abs() > ATOL + RTOL * a.abs().max(numeric.abs()) {
                return Err(format!(
                    "input {i} {} element {j}: analytic {a:.10} vs numeric {numeric:.10}",
                    x.shape()
                ));
            }
        }
    }
    Ok(())
}

/// Asserts two float slices agree elementwise within `atol + rtol·|expected|`.
pub fn assert_close(actual: &[f64], expected: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= atol + rtol * e.abs(),
            "{what}: element {i}: got {a}, expected {e}"
        );
    }
}
