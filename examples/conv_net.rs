//! A tiny conv net trained with hand-written SGD: the smallest complete training loop.
//!
//! `cargo run --release --example conv_net`
//!
//! The model is conv → batch norm → leaky ReLU → conv, the loss the mean squared error to a
//! fixed random target; every parameter is a `variable()`, `backward()` returns their gradients
//! in a `GradStore`, and the update runs under `no_grad` so it records no graph.

use gantry::loss::{mse, Reduction};
use gantry::{no_grad, Conv2dParams, DType, Device, Rng, Tensor};

fn main() -> gantry::Result<()> {
    let (cpu, f32) = (Device::Cpu, DType::F32);
    let mut rng = Rng::new(7);
    let x = Tensor::randn([4, 3, 8, 8], 0.0, 1.0, f32, cpu, &mut rng)?;
    let target = Tensor::randn([4, 1, 8, 8], 0.0, 1.0, f32, cpu, &mut rng)?;

    // Parameters: PyTorch layouts (conv weight [out, in, kh, kw]).
    let w1 = Tensor::randn([16, 3, 3, 3], 0.0, 0.3, f32, cpu, &mut rng)?.variable();
    let gamma = Tensor::ones([16], f32, cpu)?.variable();
    let beta = Tensor::zeros([16], f32, cpu)?.variable();
    let w2 = Tensor::randn([1, 16, 3, 3], 0.0, 0.1, f32, cpu, &mut rng)?.variable();
    let params = [&w1, &gamma, &beta, &w2];
    let same = Conv2dParams::new(1, 1);

    for step in 0..=200 {
        // Forward: every op records how to differentiate itself.
        let h = x.conv2d(&w1, None, same)?;
        let (h, _batch_stats) = h.batch_norm_train(Some(&gamma), Some(&beta), 1e-5)?;
        let y = h.leaky_relu(0.2)?.conv2d(&w2, None, same)?;
        let loss = mse(&y, &target, Reduction::Mean)?;

        // Backward: gradients of the loss for every variable it depends on.
        let grads = loss.backward()?;

        // SGD step, outside the graph.
        no_grad(|| -> gantry::Result<()> {
            for p in params {
                let g = grads.get(p).expect("the loss depends on every parameter");
                p.set(&p.sub(&g.mul_scalar(0.1)?)?)?;
            }
            Ok(())
        })?;
        if step % 50 == 0 {
            println!("step {step:3}  loss {:.6}", loss.to_scalar()?);
        }
    }
    Ok(())
}
