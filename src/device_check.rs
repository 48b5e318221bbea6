//! Every op on a device against the CPU: `gantry check --device cuda` and the CUDA parity test.
//!
//! Each case draws inputs of an awkward shape (odd sizes, stride 2, padding, dilation, batch 1,
//! channel counts that are not multiples of anything) on the host, runs the op forward and
//! backward on the CPU and on the device from the same values, and compares the output and
//! every input gradient. The backward pass starts from a random output gradient (the loss is
//! `Σ out · r`), so no gradient is trivially uniform.
//!
//! The error of a case is the largest `|device − cpu|` over all its values, divided by
//! `1 + max |cpu|`; it fails above [`TOLERANCE`]. f32 sums computed in a different order differ
//! by a few units in the last place per term: 1e-4 leaves room for sums of thousands of terms
//! and still catches any indexing mistake, which gives errors of order one.

use crate::loss::{bce, bce_with_logits, mse, Reduction};
use crate::nn::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use crate::{Conv2dParams, ConvTranspose2dParams, DType, Device, Result, Rng, Tensor};

/// The largest relative error a case may show (see the module docs).
pub const TOLERANCE: f64 = 1e-4;

/// One case's outcome.
#[derive(Clone, Debug)]
pub struct CaseReport {
    pub op: String,
    /// Shapes of the inputs, for the table.
    pub shapes: String,
    pub max_error: f64,
    /// The largest error allowed: [`TOLERANCE`], or the conv ladder's own for the
    /// tensor-core rungs (see `kernels::conv::cuda_check`).
    pub tolerance: f64,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

type OpFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One op to check: inputs (host tensors) and the function of them.
struct Case {
    op: String,
    inputs: Vec<Tensor>,
    /// Which inputs get gradients (the rest are constants: targets, indices).
    grad: Vec<bool>,
    f: OpFn,
}

fn max_rel_error(cpu: &Tensor, dev: &Tensor) -> Result<f64> {
    let (a, b) = (cpu.to_f64_vec()?, dev.to_f64_vec()?);
    if a.len() != b.len() {
        return Ok(f64::INFINITY);
    }
    let scale = 1.0 + a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| {
        let d = (x - y).abs();
        // NaN on one side only is a failure; on both sides it agrees.
        if d.is_nan() && !(x.is_nan() && y.is_nan()) {
            f64::INFINITY
        } else if d.is_nan() {
            m
        } else {
            m.max(d)
        }
    });
    Ok(worst / scale)
}

/// Runs `case` on `device`: output and input gradients, compared with the CPU's.
fn run_case(case: &Case, device: Device, rng: &mut Rng) -> Result<f64> {
    let run = |dev: Device, r: &Tensor| -> Result<Vec<Tensor>> {
        let inputs: Vec<Tensor> = case
            .inputs
            .iter()
            .zip(&case.grad)
            .map(|(t, &g)| {
                let t = t.to_device(dev)?.detach();
                Ok(if g { t.variable() } else { t })
            })
            .collect::<Result<_>>()?;
        let out = (case.f)(&inputs)?;
        let mut results = vec![out.to_device(Device::Cpu)?.detach()];
        if case.grad.iter().any(|&g| g) {
            let loss = out.mul(&r.to_device(dev)?)?.sum_all()?;
            let grads = loss.backward()?;
            for (t, &g) in inputs.iter().zip(&case.grad) {
                if g {
                    let grad = grads.get(t).ok_or_else(|| {
                        crate::Error::invalid(
                            "check",
                            format!("{}: no gradient for an input", case.op),
                        )
                    })?;
                    results.push(grad.to_device(Device::Cpu)?.detach());
                }
            }
        }
        Ok(results)
    };
    // The output's shape, for the random output gradient: one CPU forward pass.
    let shape = (case.f)(&case.inputs)?.shape().clone();
    let r = Tensor::randn(shape, 0.0, 1.0, DType::F32, Device::Cpu, rng)?;
    let (cpu, dev) = (run(Device::Cpu, &r)?, run(device, &r)?);
    let mut worst = 0.0f64;
    for (a, b) in cpu.iter().zip(&dev) {
        worst = worst.max(max_rel_error(a, b)?);
    }
    Ok(worst)
}

/// Builds the cases from `rng` (host tensors only).
fn cases(rng: &mut Rng) -> Result<Vec<Case>> {
    let mut randn = |shape: &[usize], std: f64| {
        Tensor::randn(shape.to_vec(), 0.0, std, DType::F32, Device::Cpu, rng)
    };
    let mut out: Vec<Case> = Vec::new();
    let mut case = |op: &str, inputs: Vec<Tensor>, grad: Vec<bool>, f: OpFn| {
        out.push(Case {
            op: op.to_string(),
            inputs,
            grad,
            f,
        });
    };

    // Unary ops; log, sqrt and powf on positive inputs.
    let x = randn(&[3, 5, 7], 1.0)?;
    let pos = x.abs()?.add_scalar(0.1)?;
    type Unary = fn(&Tensor) -> Result<Tensor>;
    let unary: [(&str, Unary, bool); 12] = [
        ("neg", |t| t.neg(), false),
        ("exp", |t| t.exp(), false),
        ("log", |t| t.log(), true),
        ("sqrt", |t| t.sqrt(), true),
        ("abs", |t| t.abs(), false),
        ("tanh", |t| t.tanh(), false),
        ("sigmoid", |t| t.sigmoid(), false),
        ("relu", |t| t.relu(), false),
        ("leaky_relu", |t| t.leaky_relu(0.2), false),
        ("add_scalar", |t| t.add_scalar(0.7), false),
        ("mul_scalar", |t| t.mul_scalar(-1.3), false),
        ("powf", |t| t.powf(1.7), true),
    ];
    for (name, f, positive) in unary {
        let input = if positive { pos.clone() } else { x.clone() };
        case(name, vec![input], vec![true], Box::new(move |t| f(&t[0])));
    }

    // Broadcasting binary ops: [3, 1, 7] against [5, 1].
    let (a, b) = (randn(&[3, 1, 7], 1.0)?, randn(&[5, 1], 1.0)?);
    type Binary = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let binary: [(&str, Binary); 4] = [
        ("add", |a, b| a.add(b)),
        ("sub", |a, b| a.sub(b)),
        ("mul", |a, b| a.mul(b)),
        ("div", |a, b| a.div(b)),
    ];
    for (name, f) in binary {
        let b = if name == "div" {
            b.abs()?.add_scalar(0.5)?
        } else {
            b.clone()
        };
        case(
            name,
            vec![a.clone(), b],
            vec![true, true],
            Box::new(move |t| f(&t[0], &t[1])),
        );
    }
    let base = randn(&[4, 6], 1.0)?.abs()?.add_scalar(0.2)?;
    case(
        "pow",
        vec![base, randn(&[6], 0.5)?],
        vec![true, true],
        Box::new(|t| t[0].pow(&t[1])),
    );

    // Reductions: wide (a block per output) and narrow (a thread per output).
    let r = randn(&[4, 300, 3], 1.0)?;
    case(
        "sum [1]",
        vec![r.clone()],
        vec![true],
        Box::new(|t| t[0].sum(&[1], false)),
    );
    case(
        "sum [0, 2]",
        vec![r.clone()],
        vec![true],
        Box::new(|t| t[0].sum(&[0, 2], false)),
    );
    case(
        "mean all",
        vec![r.clone()],
        vec![true],
        Box::new(|t| t[0].mean_all()),
    );
    case(
        "max axis 1",
        vec![r],
        vec![true],
        Box::new(|t| t[0].max(1, false)),
    );

    // Strided views and copies back.
    let v = randn(&[3, 4, 5], 1.0)?;
    case(
        "permute",
        vec![v.clone()],
        vec![true],
        Box::new(|t| t[0].permute(&[2, 0, 1])?.mul_scalar(1.0)),
    );
    case(
        "narrow",
        vec![v.clone()],
        vec![true],
        Box::new(|t| t[0].narrow(2, 1, 3)?.mul_scalar(1.0)),
    );
    case(
        "concat",
        vec![v.clone(), randn(&[3, 2, 5], 1.0)?],
        vec![true, true],
        Box::new(|t| Tensor::concat(&[&t[0], &t[1]], 1)),
    );
    case(
        "broadcast_to",
        vec![randn(&[1, 4, 1], 1.0)?],
        vec![true],
        Box::new(|t| t[0].broadcast_to([3, 4, 5])?.mul_scalar(1.0)),
    );

    // Matmul: plain, batched, and through a transpose.
    case(
        "matmul",
        vec![randn(&[17, 33], 1.0)?, randn(&[33, 9], 1.0)?],
        vec![true, true],
        Box::new(|t| t[0].matmul(&t[1])),
    );
    case(
        "matmul batched",
        vec![randn(&[3, 5, 19], 1.0)?, randn(&[3, 19, 18], 1.0)?],
        vec![true, true],
        Box::new(|t| t[0].matmul(&t[1])),
    );
    case(
        "matmul transposed",
        vec![randn(&[21, 7], 1.0)?, randn(&[21, 5], 1.0)?],
        vec![true, true],
        Box::new(|t| t[0].transpose(0, 1)?.matmul(&t[1])),
    );

    // Convolutions: stride 2 with padding, dilation, batch 1, odd channel counts, 1×1 output.
    // (name, input shape, weight shape, stride, padding, dilation)
    type ConvCase = (&'static str, [usize; 4], [usize; 4], usize, usize, usize);
    let conv_cases: [ConvCase; 5] = [
        (
            "conv2d s2 p1 (DCGAN D)",
            [2, 3, 13, 11],
            [5, 3, 4, 4],
            2,
            1,
            1,
        ),
        ("conv2d s1 p1 3x3", [1, 7, 9, 9], [6, 7, 3, 3], 1, 1, 1),
        ("conv2d s3 p0", [2, 5, 14, 10], [3, 5, 3, 2], 3, 0, 1),
        ("conv2d dilation 2", [2, 4, 11, 12], [3, 4, 3, 3], 1, 2, 2),
        ("conv2d whole input", [3, 6, 4, 4], [1, 6, 4, 4], 1, 0, 1),
    ];
    for (name, xs, ws, s, p, d) in conv_cases {
        let params = Conv2dParams::new(s, p).with_dilation(d);
        let bias = randn(&[ws[0]], 0.5)?;
        case(
            name,
            vec![randn(&xs, 1.0)?, randn(&ws, 0.3)?, bias],
            vec![true; 3],
            Box::new(move |t| t[0].conv2d(&t[1], Some(&t[2]), params)),
        );
    }
    type ConvTCase = (&'static str, [usize; 4], [usize; 4], usize, usize);
    let convt: [ConvTCase; 2] = [
        (
            "conv_transpose2d s2 p1 (DCGAN G)",
            [2, 5, 4, 3],
            [5, 3, 4, 4],
            2,
            1,
        ),
        (
            "conv_transpose2d 1x1 input (DCGAN G1)",
            [3, 7, 1, 1],
            [7, 4, 4, 4],
            1,
            0,
        ),
    ];
    for (name, xs, ws, s, p) in convt {
        let params = ConvTranspose2dParams::new(s, p);
        case(
            name,
            vec![randn(&xs, 1.0)?, randn(&ws, 0.3)?],
            vec![true; 2],
            Box::new(move |t| t[0].conv_transpose2d(&t[1], None, params)),
        );
    }
    // Bias and activation fused into the conv epilogues (forward and backward).
    let params = Conv2dParams::new(2, 1);
    case(
        "conv2d + bias + leaky_relu (fused)",
        vec![
            randn(&[2, 3, 13, 11], 1.0)?,
            randn(&[5, 3, 4, 4], 0.3)?,
            randn(&[5], 0.5)?,
        ],
        vec![true; 3],
        Box::new(move |t| {
            t[0].conv2d_act(
                &t[1],
                Some(&t[2]),
                params,
                Some(crate::UnaryOp::LeakyRelu(0.2)),
            )
        }),
    );
    let params = ConvTranspose2dParams::new(2, 1);
    case(
        "conv_transpose2d + bias + tanh (fused)",
        vec![
            randn(&[2, 5, 4, 3], 1.0)?,
            randn(&[5, 3, 4, 4], 0.3)?,
            randn(&[3], 0.5)?,
        ],
        vec![true; 3],
        Box::new(move |t| {
            t[0].conv_transpose2d_act(&t[1], Some(&t[2]), params, Some(crate::UnaryOp::Tanh))
        }),
    );

    // Batch norm, plain and fused with the activation; eval with running statistics.
    let bx = randn(&[3, 5, 7, 6], 2.0)?.add_scalar(0.5)?;
    let (bw, bb) = (randn(&[5], 1.0)?, randn(&[5], 1.0)?);
    case(
        "batch_norm train",
        vec![bx.clone(), bw.clone(), bb.clone()],
        vec![true; 3],
        Box::new(|t| Ok(t[0].batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-5)?.0)),
    );
    case(
        "batch_norm train + leaky_relu",
        vec![bx.clone(), bw.clone(), bb.clone()],
        vec![true; 3],
        Box::new(|t| {
            Ok(t[0]
                .batch_norm_train_act(
                    Some(&t[1]),
                    Some(&t[2]),
                    1e-5,
                    Some(crate::UnaryOp::LeakyRelu(0.2)),
                )?
                .0)
        }),
    );
    case(
        "batch_norm train, no affine + relu",
        vec![bx.clone()],
        vec![true],
        Box::new(|t| {
            Ok(t[0]
                .batch_norm_train_act(None, None, 1e-5, Some(crate::UnaryOp::Relu))?
                .0)
        }),
    );
    let (rm, rv) = (randn(&[5], 0.5)?, randn(&[5], 0.5)?.abs()?.add_scalar(0.5)?);
    case(
        "batch_norm eval + relu",
        vec![bx, bw, bb, rm, rv],
        vec![true, true, true, false, false],
        Box::new(|t| {
            t[0].batch_norm_eval_act(
                &t[3],
                &t[4],
                Some(&t[1]),
                Some(&t[2]),
                1e-5,
                Some(crate::UnaryOp::Relu),
            )
        }),
    );

    // PReLU (per channel and shared), pixel shuffle both ways, nearest upsampling.
    let px = randn(&[2, 4, 5, 3], 1.0)?;
    case(
        "prelu per channel",
        vec![px.clone(), randn(&[4], 0.3)?],
        vec![true, true],
        Box::new(|t| t[0].prelu(&t[1])),
    );
    case(
        "prelu shared",
        vec![px.clone(), randn(&[1], 0.3)?],
        vec![true, true],
        Box::new(|t| t[0].prelu(&t[1])),
    );
    case(
        "pixel_shuffle 2",
        vec![randn(&[2, 12, 3, 5], 1.0)?],
        vec![true],
        Box::new(|t| t[0].pixel_shuffle(2)),
    );
    case(
        "pixel_unshuffle 3",
        vec![randn(&[1, 2, 6, 9], 1.0)?],
        vec![true],
        Box::new(|t| t[0].pixel_unshuffle(3)),
    );
    case(
        "upsample_nearest2d 2x3",
        vec![px],
        vec![true],
        Box::new(|t| t[0].upsample_nearest2d([2, 3])),
    );

    // Losses.
    let logits = randn(&[37], 3.0)?;
    let targets = Tensor::rand([37], 0.0, 1.0, DType::F32, Device::Cpu, &mut Rng::new(7))?;
    case(
        "bce_with_logits",
        vec![logits.clone(), targets.clone()],
        vec![true, true],
        Box::new(|t| bce_with_logits(&t[0], &t[1], Reduction::Mean)),
    );
    case(
        "bce",
        vec![logits.sigmoid()?, targets.clone()],
        vec![true, true],
        Box::new(|t| bce(&t[0], &t[1], Reduction::Sum)),
    );
    case(
        "mse",
        vec![logits, targets],
        vec![true, true],
        Box::new(|t| mse(&t[0], &t[1], Reduction::Mean)),
    );
    Ok(out)
}

/// Three optimizer steps of Adam (and of SGD with Nesterov momentum) on two parameters, from
/// the same values and gradients on both devices; the error of the parameters after.
fn optimizer_cases(device: Device, rng: &mut Rng) -> Result<Vec<CaseReport>> {
    let shapes = [[7usize, 5], [3, 11]];
    let init: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(s.to_vec(), 0.0, 1.0, DType::F32, Device::Cpu, rng))
        .collect::<Result<_>>()?;
    let grads: Vec<Vec<Tensor>> = (0..3)
        .map(|_| {
            shapes
                .iter()
                .map(|s| Tensor::randn(s.to_vec(), 0.0, 1.0, DType::F32, Device::Cpu, rng))
                .collect()
        })
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    for which in ["adam (fused)", "sgd nesterov"] {
        let run = |dev: Device| -> Result<Vec<Tensor>> {
            let params: Vec<(String, Tensor)> = init
                .iter()
                .enumerate()
                .map(|(i, t)| Ok((format!("p{i}"), t.to_device(dev)?.detach().variable())))
                .collect::<Result<_>>()?;
            let mut adam = Adam::new(
                params.clone(),
                AdamConfig {
                    weight_decay: 0.01,
                    ..Default::default()
                },
            )?;
            let mut sgd = Sgd::new(
                params.clone(),
                SgdConfig {
                    momentum: 0.9,
                    nesterov: true,
                    ..SgdConfig::new(0.05)
                },
            )?;
            for step in &grads {
                // The gradient of Σ p·g is g: a real backward pass gives each parameter its gradient.
                let mut loss = Tensor::zeros((), DType::F32, dev)?;
                for ((_, p), g) in params.iter().zip(step) {
                    loss = loss.add(&p.mul(&g.to_device(dev)?)?.sum_all()?)?;
                }
                let store = loss.backward()?;
                if which.starts_with("adam") {
                    adam.step(&store)?;
                } else {
                    sgd.step(&store)?;
                }
            }
            params
                .iter()
                .map(|(_, p)| p.to_device(Device::Cpu))
                .collect()
        };
        let (cpu, dev) = (run(Device::Cpu)?, run(device)?);
        let mut worst = 0.0f64;
        for (a, b) in cpu.iter().zip(&dev) {
            worst = worst.max(max_rel_error(a, b)?);
        }
        reports.push(CaseReport {
            op: which.to_string(),
            shapes: "[7, 5], [3, 11]".into(),
            max_error: worst,
            tolerance: TOLERANCE,
        });
    }
    Ok(reports)
}

/// A small DCGAN trained a few steps with the step captured into a CUDA graph and replayed,
/// against the same steps launched op by op, at precision `precision`. The graph replays the
/// same kernels on the same values, so losses, parameters, running statistics and optimizer
/// state must agree exactly: a difference means a replay read a stale buffer or constant.
fn graph_case(device: Device, seed: u64, precision: crate::Precision) -> Result<CaseReport> {
    use crate::gan::dcgan::DcganConfig;
    use crate::gan::train::{CudaGraphStep, Dcgan, TrainConfig, GRAPH_WARMUP_STEPS};
    use crate::nn::ModuleExt;
    let config = TrainConfig {
        model: DcganConfig {
            image_size: 16,
            nc: 3,
            nz: 8,
            ngf: 8,
            ndf: 8,
        },
        batch_size: 4,
        seed,
        device,
        precision,
        ..TrainConfig::default()
    };
    // Batches of 4, except one of 3 after the capture: that step runs eagerly between replays
    // and must leave the graph's buffers and Adam table alone.
    let batches: Vec<usize> = (0..GRAPH_WARMUP_STEPS + 5)
        .map(|i| if i == GRAPH_WARMUP_STEPS + 2 { 3 } else { 4 })
        .collect();
    let run = |graphed: bool| -> Result<Vec<Tensor>> {
        let mut net = Dcgan::new(&config)?;
        let (mut rng, mut data) = (Rng::new(seed), Rng::new(seed + 1));
        let mut graph = CudaGraphStep::default();
        let mut out = Vec::new();
        for &n in &batches {
            let real = Tensor::rand(
                [n, 3, 16, 16],
                -1.0,
                1.0,
                DType::F32,
                Device::Cpu,
                &mut data,
            )?;
            let s = match graphed {
                true => graph.step(&mut net, &real, &mut rng, 0.0)?,
                false => net.step(&real, &mut rng, 0.0)?,
            };
            let losses = vec![s.loss_d, s.loss_g, s.d_x, s.d_g_z];
            out.push(Tensor::from_vec(losses, [4], Device::Cpu)?);
        }
        if graphed && !graph.is_captured() {
            return Err(crate::Error::invalid(
                "check",
                "the step was never captured",
            ));
        }
        for m in [&net.g as &dyn crate::nn::Module, &net.d] {
            out.extend(m.named_parameters().into_iter().map(|(_, t)| t));
            out.extend(m.named_buffers().into_iter().map(|(_, t)| t));
        }
        for opt in [&net.opt_g, &net.opt_d] {
            let state = crate::nn::optim::Optimizer::state_tensors(opt)?;
            out.extend(state.into_iter().map(|(_, t)| t));
        }
        Ok(out)
    };
    let (eager, graphed) = (run(false)?, run(true)?);
    let mut max_error = if eager.len() == graphed.len() {
        0.0f64
    } else {
        f64::INFINITY
    };
    for (a, b) in eager.iter().zip(&graphed) {
        max_error = max_error.max(max_rel_error(a, b)?);
    }
    Ok(CaseReport {
        op: format!(
            "cuda graph: dcgan step replayed = eager ({})",
            precision.name()
        ),
        shapes: format!("batches {batches:?}, 16x16"),
        max_error,
        tolerance: 0.0,
    })
}

/// Runs every case on `device`, from `seed`.
pub fn run(device: Device, seed: u64) -> Result<Vec<CaseReport>> {
    device.check_available("check")?;
    let mut rng = Rng::new(seed);
    let mut reports = Vec::new();
    for case in cases(&mut rng)? {
        let shapes = case
            .inputs
            .iter()
            .map(|t| t.shape().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let max_error = run_case(&case, device, &mut rng)
            .map_err(|e| crate::Error::invalid("check", format!("{}: {e}", case.op)))?;
        reports.push(CaseReport {
            op: case.op,
            shapes,
            max_error,
            tolerance: TOLERANCE,
        });
    }
    reports.extend(optimizer_cases(device, &mut rng)?);
    // Every rung of the CUDA conv ladder, kernel by kernel, against the reference.
    if let Device::Cuda(i) = device {
        let gpu =
            crate::kernels::cuda_rt::gpu(i).map_err(|e| crate::Error::device("check", e.0))?;
        let ladder = crate::kernels::conv::cuda_check::check_ladder(&gpu, seed)
            .map_err(|e| crate::Error::device("check", e.0))?;
        reports.extend(ladder.into_iter().map(|r| CaseReport {
            op: format!("conv ladder {} {}", r.rung, r.pass),
            shapes: r.geom,
            max_error: r.max_error,
            tolerance: r.tolerance,
        }));
        let mut precisions = vec![crate::Precision::F32];
        if gpu.arch().0 >= 8 {
            precisions.push(crate::Precision::Bf16);
        }
        for p in precisions {
            reports.push(graph_case(device, seed, p)?);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself, CPU against CPU: every case runs and agrees exactly, so a failure
    /// on a GPU is the GPU's.
    #[test]
    fn cpu_against_itself_is_exact() {
        let reports = run(Device::Cpu, 3).unwrap();
        assert!(reports.len() > 40, "{}", reports.len());
        for r in &reports {
            assert_eq!(r.max_error, 0.0, "{} ({})", r.op, r.shapes);
        }
    }

    #[test]
    fn the_error_measure_sees_a_wrong_value() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], Device::Cpu).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.5], [3], Device::Cpu).unwrap();
        assert!((max_rel_error(&a, &b).unwrap() - 0.5 / 4.0).abs() < 1e-12);
        let nan = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], [3], Device::Cpu).unwrap();
        assert!(max_rel_error(&a, &nan).unwrap().is_infinite());
    }
}
