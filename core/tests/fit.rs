//! End to end through the autograd: a tiny conv net (conv → batch norm → leaky ReLU → conv,
//! mean squared error) fits a fixed random target with plain SGD written here.

use gantry_core::loss::{mse, Reduction};
use gantry_core::{no_grad, Conv2dParams, DType, Device, Rng, Tensor};

#[test]
fn tiny_conv_net_fits_a_random_target() {
    let mut rng = Rng::new(2024);
    let cpu = Device::Cpu;
    let f32 = DType::F32;
    let x = Tensor::randn([2, 3, 5, 5], 0.0, 1.0, f32, cpu, &mut rng).unwrap();
    let target = Tensor::randn([2, 1, 5, 5], 0.0, 1.0, f32, cpu, &mut rng).unwrap();

    let w1 = Tensor::randn([16, 3, 3, 3], 0.0, 0.3, f32, cpu, &mut rng)
        .unwrap()
        .variable();
    let b1 = Tensor::zeros([16], f32, cpu).unwrap().variable();
    let gamma = Tensor::ones([16], f32, cpu).unwrap().variable();
    let beta = Tensor::zeros([16], f32, cpu).unwrap().variable();
    let w2 = Tensor::randn([1, 16, 3, 3], 0.0, 0.1, f32, cpu, &mut rng)
        .unwrap()
        .variable();
    let params = [&w1, &b1, &gamma, &beta, &w2];

    let same = Conv2dParams::new(1, 1);
    let loss_of = || {
        let h = x.conv2d(&w1, Some(&b1), same).unwrap();
        let (h, _) = h.batch_norm_train(Some(&gamma), Some(&beta), 1e-5).unwrap();
        let y = h.leaky_relu(0.2).unwrap().conv2d(&w2, None, same).unwrap();
        mse(&y, &target, Reduction::Mean).unwrap()
    };

    let lr = 0.1;
    let first = loss_of().to_scalar().unwrap();
    let mut last = first;
    for _ in 0..300 {
        let loss = loss_of();
        last = loss.to_scalar().unwrap();
        assert!(last.is_finite());
        let grads = loss.backward().unwrap();
        // Plain SGD: p ← p − lr · ∂L/∂p, outside the graph.
        no_grad(|| {
            for p in params {
                let g = grads.get(p).expect("every parameter gets a gradient");
                p.set(&p.sub(&g.mul_scalar(lr).unwrap()).unwrap()).unwrap();
            }
        });
    }
    eprintln!("loss {first} -> {last}");
    assert!(last < first / 10.0, "loss fell from {first} only to {last}");
}
