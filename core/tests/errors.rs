//! Bad input gives an `Err` whose message names the op and the shapes, never a panic.

mod common;

use common::*;
use gantry_core::loss::{self, Reduction};
use gantry_core::{Conv2dParams, ConvTranspose2dParams, DType, Device, Rng, Tensor, UnaryOp};

fn t(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape.to_vec(), DType::F32, CPU).unwrap()
}

fn err(r: gantry_core::Result<Tensor>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn conv2d_channel_mismatch_names_both_shapes() {
    let e = err(t(&[8, 3, 64, 64]).conv2d(&t(&[64, 4, 4, 4]), None, Conv2dParams::new(2, 1)));
    assert_eq!(e, "conv2d: input has 3 channels but weight expects 4 (input [8, 3, 64, 64], weight [64, 4, 4, 4])");
}

#[test]
fn conv_shape_errors() {
    assert!(
        err(t(&[3, 8, 8]).conv2d(&t(&[4, 3, 3, 3]), None, Conv2dParams::default()))
            .starts_with("conv2d: input must be 4-D")
    );
    let e = err(t(&[1, 3, 2, 2]).conv2d(&t(&[4, 3, 4, 4]), None, Conv2dParams::default()));
    assert!(
        e.contains("smaller than the kernel 4x4") && e.contains("[1, 3, 2, 2]"),
        "{e}"
    );
    let e =
        err(t(&[1, 3, 8, 8]).conv2d(&t(&[4, 3, 3, 3]), Some(&t(&[3])), Conv2dParams::default()));
    assert!(e.contains("bias must have shape [4]"), "{e}");
    let e = err(t(&[1, 3, 8, 8]).conv2d(&t(&[4, 3, 3, 3]), None, Conv2dParams::new(0, 0)));
    assert!(e.contains("stride"), "{e}");
    let e = err(t(&[1, 3, 4, 4]).conv_transpose2d(
        &t(&[4, 2, 4, 4]),
        None,
        ConvTranspose2dParams::new(2, 1),
    ));
    assert!(
        e.starts_with("conv_transpose2d: input has 3 channels but weight expects 4"),
        "{e}"
    );
    let e = err(t(&[1, 3, 4, 4]).conv_transpose2d(
        &t(&[3, 2, 4, 4]),
        None,
        ConvTranspose2dParams::new(2, 1).with_output_padding(2),
    ));
    assert!(e.contains("output_padding"), "{e}");
}

#[test]
fn a_fused_activation_that_needs_its_input_is_refused() {
    let (x, w) = (t(&[1, 3, 8, 8]), t(&[4, 3, 3, 3]));
    let e = err(x.conv2d_act(&w, None, Conv2dParams::default(), Some(UnaryOp::Exp)));
    assert!(
        e.starts_with("conv2d_act: Exp cannot be fused") && e.contains("tanh"),
        "{e}"
    );
    let p = ConvTranspose2dParams::new(2, 1);
    let e = err(x.conv_transpose2d_act(&t(&[3, 2, 4, 4]), None, p, Some(UnaryOp::LeakyRelu(-0.5))));
    assert!(
        e.starts_with("conv_transpose2d_act: LeakyRelu(-0.5) cannot be fused"),
        "{e}"
    );
    // The shape is still checked first, and named.
    let e = err(x.conv2d_act(
        &t(&[4, 2, 3, 3]),
        None,
        Conv2dParams::default(),
        Some(UnaryOp::Relu),
    ));
    assert!(e.starts_with("conv2d_act: input has 3 channels"), "{e}");
}

#[test]
fn elementwise_and_matmul_errors() {
    let e = err(t(&[2, 3]).add(&t(&[4])));
    assert_eq!(e, "add: shapes [2, 3] and [4] cannot be broadcast together");
    let e = err(t(&[2, 3]).matmul(&t(&[4, 5])));
    assert!(
        e.starts_with("matmul: inner dimensions differ")
            && e.contains("[2, 3]")
            && e.contains("[4, 5]"),
        "{e}"
    );
    assert!(err(t(&[3]).matmul(&t(&[3, 2]))).contains("at least 2 dimensions"));
    let f64t = Tensor::zeros([2, 3], DType::F64, CPU).unwrap();
    assert_eq!(
        err(t(&[2, 3]).mul(&f64t)),
        "mul: operands have different dtypes (f32 and f64)"
    );
    let half = Tensor::zeros([2], DType::F16, CPU).unwrap();
    assert_eq!(err(half.exp()), "exp: not implemented for dtype f16");
}

#[test]
fn shape_op_errors() {
    assert!(err(t(&[2, 3]).reshape([4]))
        .starts_with("reshape: cannot reshape [2, 3] (6 elements) to [4]"));
    assert!(err(t(&[2, 3]).permute(&[0, 0])).starts_with("permute:"));
    assert!(err(t(&[2, 3]).narrow(1, 2, 2)).contains("exceeds size 3"));
    assert!(
        err(Tensor::concat(&[&t(&[2, 3]), &t(&[3, 3])], 1)).contains("differ outside dimension 1")
    );
    assert!(err(t(&[2, 3]).broadcast_to([3, 3]))
        .starts_with("broadcast_to: cannot broadcast [2, 3] to [3, 3]"));
    assert!(err(t(&[2, 3]).sum(&[2], false)).contains("axis 2 out of range"));
    assert!(err(t(&[2, 3]).sum(&[1, 1], false)).contains("listed twice"));
    assert!(err(t(&[2, 0]).max(1, false)).contains("empty axis"));
    assert!(err(t(&[1, 5, 2, 2]).pixel_shuffle(2)).contains("not divisible"));
    assert!(Tensor::from_vec(vec![1.0f32; 5], [2, 3], CPU)
        .unwrap_err()
        .to_string()
        .contains("5 values cannot fill shape [2, 3]"));
}

#[test]
fn norm_and_loss_errors() {
    let e = err(t(&[1, 3, 1, 1])
        .batch_norm_train(None, None, 1e-5)
        .map(|r| r.0));
    assert!(e.contains("more than one value per channel"), "{e}");
    let e = err(t(&[2, 3, 4, 4])
        .batch_norm_train(Some(&t(&[4])), None, 1e-5)
        .map(|r| r.0));
    assert!(e.contains("weight must have shape [3]"), "{e}");
    let e = err(loss::mse(&t(&[2, 3]), &t(&[3, 2]), Reduction::Mean));
    assert_eq!(
        e,
        "mse: input shape [2, 3] differs from target shape [3, 2]"
    );
    let e = err(t(&[2, 3, 4]).prelu(&t(&[2])));
    assert!(e.contains("weight must have shape [3] or [1]"), "{e}");
}

#[test]
fn cuda_is_a_clear_error_not_a_panic() {
    // No machine has a 100th GPU: with or without a driver, this is an error that says why.
    let e = Tensor::zeros([2], DType::F32, Device::Cuda(99))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no CUDA driver found") || e.contains("no CUDA device"),
        "{e}"
    );
    let mut rng = Rng::new(0);
    assert!(Tensor::randn([2], 0.0, 1.0, DType::F32, Device::Cuda(99), &mut rng).is_err());
    assert!(t(&[2]).to_device(Device::Cuda(99)).is_err());
    // Where no driver is installed, cuda:0 says so too.
    if !gantry_kernels::cuda_rt::driver_available() {
        let e = t(&[2]).to_device(Device::Cuda(0)).unwrap_err().to_string();
        assert!(
            e.contains("to_device") && e.contains("no CUDA driver found"),
            "{e}"
        );
    }
    assert!(Device::parse("cuda:x").is_err());
    assert_eq!(Device::parse("cuda:1").unwrap(), Device::Cuda(1));
}

#[test]
fn dtype_access_errors() {
    assert!(t(&[2])
        .to_vec::<f64>()
        .unwrap_err()
        .to_string()
        .contains("dtype f32"));
    assert!(t(&[2])
        .to_scalar()
        .unwrap_err()
        .to_string()
        .contains("not one element"));
    let x = t(&[2]).variable();
    let y = x.exp().unwrap();
    assert!(y
        .set(&t(&[2]))
        .unwrap_err()
        .to_string()
        .contains("recorded op"));
    assert!(x.set(&t(&[3])).unwrap_err().to_string().contains("shape"));
}

#[test]
fn degenerate_sizes_are_errors_not_panics() {
    let e = err(t(&[1, 2, 0, 3]).conv_transpose2d(
        &t(&[2, 2, 3, 3]),
        None,
        ConvTranspose2dParams::default(),
    ));
    assert!(e.contains("empty spatial dimension"), "{e}");
    assert!(
        err(t(&[1, 2, 0, 3]).conv2d(&t(&[2, 2, 3, 3]), None, Conv2dParams::default()))
            .starts_with("conv2d:")
    );
    assert!(err(t(&[4]).narrow(0, usize::MAX, 2)).starts_with("narrow:"));
    assert!(err(t(&[1, 4, 2, 2]).pixel_shuffle(0)).starts_with("pixel_shuffle:"));
    assert!(err(t(&[1, 4, 2, 2]).upsample_nearest2d([0, 1])).starts_with("upsample_nearest2d:"));
    // Empty batches are fine, as in PyTorch.
    let y = t(&[0, 3, 5, 5])
        .conv2d(&t(&[2, 3, 3, 3]), None, Conv2dParams::default())
        .unwrap();
    assert_eq!(y.dims(), &[0, 2, 3, 3]);
}

#[test]
fn sizes_that_overflow_are_errors_not_panics() {
    let huge = 1usize << 33;
    assert!(Tensor::zeros([huge, huge], DType::F32, CPU)
        .unwrap_err()
        .to_string()
        .contains("more elements"));
    assert!(Tensor::from_vec(Vec::<f32>::new(), [huge, huge, 0, huge], CPU).is_err());
    assert!(err(Tensor::zeros([0], DType::F32, CPU)
        .unwrap()
        .reshape([huge, huge, 0, huge, huge]))
    .starts_with("reshape:"));
    assert!(err(t(&[1, 4, 2, 2]).pixel_shuffle(1 << 32)).starts_with("pixel_shuffle:"));
    assert!(err(t(&[1, 4, 0, 0]).pixel_unshuffle(1 << 32)).starts_with("pixel_unshuffle:"));
    assert!(
        err(t(&[1, 1, 1, 1]).upsample_nearest2d([huge, huge])).starts_with("upsample_nearest2d:")
    );
    let w = t(&[1, 1, 3, 1]);
    let p = Conv2dParams {
        stride: [1, 1],
        padding: [usize::MAX / 2 + 1, 0],
        dilation: [1, 1],
    };
    assert!(err(t(&[1, 1, 2, 2]).conv2d(&w, None, p)).starts_with("conv2d:"));
    let p = Conv2dParams {
        stride: [1, 1],
        padding: [0, 0],
        dilation: [usize::MAX / 2 + 1, 1],
    };
    assert!(err(t(&[1, 1, 2, 2]).conv2d(&w, None, p)).starts_with("conv2d:"));
    let p = ConvTranspose2dParams {
        stride: [usize::MAX / 2 + 1, 1],
        ..Default::default()
    };
    assert!(err(t(&[1, 1, 3, 3]).conv_transpose2d(&w, None, p)).starts_with("conv_transpose2d:"));
}
