//! Autograd behaviour: variables vs constants, accumulation, detach, no_grad, deep graphs,
//! and the graph being freed.

mod common;

use common::*;
use gantry_core::{no_grad, DType, Rng, Tensor};

fn scalar(v: f64) -> Tensor {
    Tensor::scalar(v, DType::F64, CPU).unwrap()
}

#[test]
fn constants_get_no_gradient_and_record_no_graph() {
    let x = scalar(3.0).variable();
    let c = scalar(2.0);
    let y = x.mul(&c).unwrap();
    assert!(y.tracks_grad());
    assert_eq!(y.op_name(), Some("mul"));
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_scalar().unwrap(), 2.0);
    assert!(g.get(&c).is_none());
    // An op on constants only is a constant.
    assert!(!c.exp().unwrap().tracks_grad());
}

#[test]
fn diamond_graph_accumulates_both_paths() {
    // y = x·x + exp(x) uses x three times: dy/dx = 2x + e^x.
    let x = scalar(0.7).variable();
    let y = x.mul(&x).unwrap().add(&x.exp().unwrap()).unwrap();
    let g = y.backward().unwrap();
    let expected = 2.0 * 0.7 + 0.7f64.exp();
    assert!((g.get(&x).unwrap().to_scalar().unwrap() - expected).abs() < 1e-15);

    // A shared intermediate: z = (u + u) with u = 3x → dz/dx = 6.
    let u = x.mul_scalar(3.0).unwrap();
    let z = u.add(&u).unwrap();
    assert_eq!(
        z.backward().unwrap().get(&x).unwrap().to_scalar().unwrap(),
        6.0
    );
}

#[test]
fn backward_twice_gives_fresh_gradients() {
    let x = scalar(2.0).variable();
    let y = x.powf(3.0).unwrap();
    let a = y.backward().unwrap().get(&x).unwrap().to_scalar().unwrap();
    let b = y.backward().unwrap().get(&x).unwrap().to_scalar().unwrap();
    assert_eq!(a, 12.0);
    assert_eq!(a, b, "no hidden .grad accumulates between calls");
}

#[test]
fn detach_blocks_the_gradient() {
    // The GAN pattern: D's loss on G(z).detach() must not reach G's parameters.
    let g_param = scalar(1.5).variable();
    let d_param = scalar(-2.0).variable();
    let fake = g_param.mul_scalar(2.0).unwrap();
    let d_loss = fake.detach().mul(&d_param).unwrap();
    let grads = d_loss.backward().unwrap();
    assert_eq!(grads.get(&d_param).unwrap().to_scalar().unwrap(), 3.0);
    assert!(grads.get(&g_param).is_none());
    // Without detach, the generator's loss reaches both.
    let g_loss = fake.mul(&d_param).unwrap();
    let grads = g_loss.backward().unwrap();
    assert_eq!(grads.get(&g_param).unwrap().to_scalar().unwrap(), -4.0);
    assert_eq!(grads.get(&d_param).unwrap().to_scalar().unwrap(), 3.0);
}

#[test]
fn detach_and_reshape_share_storage() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2], CPU)
        .unwrap()
        .variable();
    let d = x.detach();
    let r = x.reshape([4]).unwrap();
    x.set(&Tensor::from_vec(vec![5.0f64, 6.0, 7.0, 8.0], [2, 2], CPU).unwrap())
        .unwrap();
    assert_eq!(d.to_vec::<f64>().unwrap(), vec![5.0, 6.0, 7.0, 8.0]);
    assert_eq!(r.to_vec::<f64>().unwrap(), vec![5.0, 6.0, 7.0, 8.0]);
    // Setting a tensor from itself does not deadlock.
    x.set(&d).unwrap();
}

#[test]
fn no_grad_records_nothing_and_nests() {
    let x = scalar(1.0).variable();
    let y = no_grad(|| {
        let inner = no_grad(|| x.exp().unwrap());
        assert!(!inner.tracks_grad());
        assert!(!gantry_core::is_grad_enabled());
        x.mul_scalar(2.0).unwrap()
    });
    assert!(gantry_core::is_grad_enabled());
    assert!(!y.tracks_grad());
    assert!(y.op_name().is_none());
    assert!(x.exp().unwrap().tracks_grad());
}

#[test]
fn deep_graph_neither_overflows_backward_nor_drop() {
    // 200k ops in a chain: a recursive backward or a recursive drop would overflow the 2 MiB
    // test-thread stack long before this.
    let x = scalar(1.0).variable();
    let mut y = x.clone();
    for _ in 0..200_000 {
        y = y.mul_scalar(1.0).unwrap();
    }
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_scalar().unwrap(), 1.0);
    drop(y);
    assert_eq!(x.handle_count(), 1, "the whole chain was freed");
}

#[test]
fn graph_is_freed_when_outputs_drop() {
    let mut rng = Rng::new(4);
    let w = randn(&[3, 3], &mut rng).variable();
    let x = randn(&[2, 3], &mut rng);
    let loss = x.matmul(&w).unwrap().tanh().unwrap().sum_all().unwrap();
    assert!(w.handle_count() > 1, "the graph holds the weight");
    let grads = loss.backward().unwrap();
    drop(loss);
    assert_eq!(w.handle_count(), 1, "dropping the loss released the graph");
    assert_eq!(grads.len(), 1, "only the variable's gradient is kept");
}

#[test]
fn backward_needs_a_scalar_or_an_explicit_gradient() {
    let x = Tensor::ones([2, 2], DType::F64, CPU).unwrap().variable();
    let y = x.mul_scalar(3.0).unwrap();
    let err = y.backward().unwrap_err().to_string();
    assert!(err.contains("backward") && err.contains("[2, 2]"), "{err}");
    let seed = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2], CPU).unwrap();
    let g = y.backward_with(&seed).unwrap();
    assert_eq!(
        g.get(&x).unwrap().to_vec::<f64>().unwrap(),
        vec![3.0, 6.0, 9.0, 12.0]
    );
}

#[test]
fn f32_end_to_end() {
    let mut rng = Rng::new(5);
    let w = Tensor::randn([4, 3, 3, 3], 0.0, 0.1, DType::F32, CPU, &mut rng)
        .unwrap()
        .variable();
    let x = Tensor::randn([2, 3, 8, 8], 0.0, 1.0, DType::F32, CPU, &mut rng).unwrap();
    let y = x
        .conv2d(&w, None, gantry_core::Conv2dParams::new(1, 1))
        .unwrap()
        .leaky_relu(0.2)
        .unwrap();
    let g = y.mean_all().unwrap().backward().unwrap();
    let gw = g.get(&w).unwrap();
    assert_eq!(gw.dtype(), DType::F32);
    assert!(gw.to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn modifying_an_input_in_place_after_forward_is_refused_in_backward() {
    // y = tanh(x) needs y's value in backward; overwriting it through a detached view, or
    // overwriting x before backward, must not silently give a wrong gradient.
    let x = scalar(0.5).variable();
    let y = x.tanh().unwrap();
    y.detach().set(&scalar(3.0)).unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(
        e.starts_with("tanh: its output was modified in place"),
        "{e}"
    );

    let w = scalar(2.0).variable();
    let loss = w.sqr().unwrap();
    w.set(&scalar(5.0)).unwrap();
    let e = loss.backward().unwrap_err().to_string();
    assert!(e.contains("input 0 was modified in place"), "{e}");

    // Recomputing after the update is the right order, and works.
    let loss = w.sqr().unwrap();
    assert_eq!(
        loss.backward()
            .unwrap()
            .get(&w)
            .unwrap()
            .to_scalar()
            .unwrap(),
        10.0
    );
}
