//! Finite-difference gradient checks, in f64, for every differentiable op, over random shapes
//! and values drawn by proptest. Tolerances and step: see `common::check_grads`.

mod common;

use common::*;
use gantry_core::loss::{self, Reduction};
use gantry_core::{Conv2dParams, ConvTranspose2dParams, DType, Rng, Tensor, UnaryOp};
use proptest::prelude::*;

/// Shapes of rank 1..=4 with dimensions 1..=4.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..5, 1..5)
}

/// A shape and a second shape that broadcasts against it (some dimensions set to 1, some
/// leading dimensions dropped).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (shape(), prop::collection::vec(any::<bool>(), 4), 0usize..3).prop_map(|(a, ones, drop)| {
        let mut b: Vec<usize> = a
            .iter()
            .zip(&ones)
            .map(|(&d, &one)| if one { 1 } else { d })
            .collect();
        let drop = drop.min(b.len() - 1);
        b.drain(..drop);
        (a, b)
    })
}

macro_rules! check {
    ($inputs:expr, $f:expr) => {{
        let r = check_grads(&$inputs, $f);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn add_sub_mul_broadcast((a, b) in broadcast_pair(), swap in any::<bool>(), seed in any::<u64>()) {
        let (a, b) = if swap { (b, a) } else { (a, b) };
        let mut rng = Rng::new(seed);
        let (x, y) = (randn(&a, &mut rng), randn(&b, &mut rng));
        check!([(x.clone(), true), (y.clone(), true)], |t| t[0].add(&t[1]));
        check!([(x.clone(), true), (y.clone(), true)], |t| t[0].sub(&t[1]));
        check!([(x, true), (y, true)], |t| t[0].mul(&t[1]));
    }

    #[test]
    fn div_broadcast((a, b) in broadcast_pair(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (x, y) = (randn(&a, &mut rng), away_from_zero(&b, 0.5, &mut rng));
        check!([(x, true), (y, true)], |t| t[0].div(&t[1]));
    }

    #[test]
    fn pow_tensor_exponent((a, b) in broadcast_pair(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (base, e) = (rand(&a, 0.5, 2.0, &mut rng), randn(&b, &mut rng));
        check!([(base, true), (e, true)], |t| t[0].pow(&t[1]));
    }

    #[test]
    fn smooth_unary_ops(s in shape(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&s, &mut rng);
        let pos = rand(&s, 0.3, 2.0, &mut rng);
        check!([(x.clone(), true)], |t| t[0].neg());
        check!([(x.clone(), true)], |t| t[0].exp());
        check!([(x.clone(), true)], |t| t[0].tanh());
        check!([(x.clone(), true)], |t| t[0].sigmoid());
        check!([(x.clone(), true)], |t| t[0].add_scalar(1.7));
        check!([(x.clone(), true)], |t| t[0].mul_scalar(-0.3));
        check!([(x.clone(), true)], |t| t[0].sqr());
        check!([(x, true)], |t| t[0].powf(3.0));
        check!([(pos.clone(), true)], |t| t[0].log());
        check!([(pos.clone(), true)], |t| t[0].sqrt());
        check!([(pos, true)], |t| t[0].powf(-1.5));
    }

    #[test]
    fn kinked_unary_ops(s in shape(), slope in -0.5f64..0.5, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = away_from_zero(&s, 0.05, &mut rng);
        check!([(x.clone(), true)], |t| t[0].abs());
        check!([(x.clone(), true)], |t| t[0].relu());
        check!([(x, true)], move |t| t[0].leaky_relu(slope));
    }

    #[test]
    fn prelu_per_channel_and_shared(s in prop::collection::vec(1usize..5, 2..5), shared in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = away_from_zero(&s, 0.05, &mut rng);
        let w = rand(&[if shared { 1 } else { s[1] }], -0.5, 0.5, &mut rng);
        check!([(x, true), (w, true)], |t| t[0].prelu(&t[1]));
    }

    #[test]
    fn sum_and_mean(s in shape(), mask in prop::collection::vec(any::<bool>(), 4), keepdim in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&s, &mut rng);
        let axes: Vec<usize> = (0..s.len()).filter(|&i| mask[i]).collect();
        let ax = axes.clone();
        check!([(x.clone(), true)], move |t| t[0].sum(&ax, keepdim));
        check!([(x.clone(), true)], move |t| t[0].mean(&axes, keepdim));
        check!([(x.clone(), true)], |t| t[0].sum_all());
        check!([(x, true)], |t| t[0].mean_all());
    }

    #[test]
    fn max_along_axis(s in shape(), axis in 0usize..4, keepdim in any::<bool>(), seed in any::<u64>()) {
        let axis = axis % s.len();
        let mut rng = Rng::new(seed);
        let x = distinct(&s, &mut rng);
        check!([(x, true)], move |t| t[0].max(axis, keepdim));
    }

    #[test]
    fn matmul_2d_batched_and_broadcast(m in 1usize..5, k in 1usize..5, n in 1usize..5, b in 1usize..4, mode in 0usize..3, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let (sa, sb) = match mode {
            0 => (vec![m, k], vec![k, n]),
            1 => (vec![b, m, k], vec![b, k, n]),
            _ => (vec![b, 1, m, k], vec![2, k, n]),
        };
        let (x, y) = (randn(&sa, &mut rng), randn(&sb, &mut rng));
        check!([(x, true), (y, true)], |t| t[0].matmul(&t[1]));
    }

    #[test]
    fn reshape_permute_transpose(s in shape(), seed in any::<u64>(), rot in 0usize..4) {
        let mut rng = Rng::new(seed);
        let x = randn(&s, &mut rng);
        let n = x.elem_count();
        check!([(x.clone(), true)], move |t| t[0].reshape([n]));
        let rank = s.len();
        let perm: Vec<usize> = (0..rank).map(|i| (i + rot) % rank).rev().collect();
        check!([(x.clone(), true)], move |t| t[0].permute(&perm));
        check!([(x.clone(), true)], move |t| t[0].transpose(0, rank - 1));
        check!([(x.clone(), true)], |t| t[0].unsqueeze(1)?.flatten_from(0));
        check!([(x, true)], |t| t[0].unsqueeze(0)?.squeeze(0));
    }

    #[test]
    fn narrow_and_concat(s in shape(), dim in 0usize..4, extra in 1usize..4, seed in any::<u64>()) {
        let dim = dim % s.len();
        let mut rng = Rng::new(seed);
        let x = randn(&s, &mut rng);
        let mut s2 = s.clone();
        s2[dim] = extra;
        let y = randn(&s2, &mut rng);
        let len = s[dim];
        check!([(x.clone(), true)], move |t| t[0].narrow(dim, len / 2, len - len / 2));
        check!([(x.clone(), true), (y.clone(), true), (x, true)], move |t| Tensor::concat(&[&t[0], &t[1], &t[2]], dim));
        check!([(y.clone(), true), (y, false)], move |t| Tensor::concat(&[&t[0], &t[1]], dim));
    }

    #[test]
    fn broadcast_to((a, b) in broadcast_pair(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&b, &mut rng);
        check!([(x, true)], move |t| t[0].broadcast_to(a.clone()));
    }

    #[test]
    fn pixel_shuffle_and_upsample(n in 1usize..3, c in 1usize..3, h in 1usize..4, w in 1usize..4, r in 1usize..4, sh in 1usize..4, sw in 1usize..4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&[n, c * r * r, h, w], &mut rng);
        check!([(x, true)], move |t| t[0].pixel_shuffle(r));
        let y = randn(&[n, c, h * r, w * r], &mut rng);
        check!([(y, true)], move |t| t[0].pixel_unshuffle(r));
        let z = randn(&[n, c, h, w], &mut rng);
        check!([(z, true)], move |t| t[0].upsample_nearest2d([sh, sw]));
    }

    #[test]
    fn losses(s in shape(), seed in any::<u64>(), red in 0usize..3) {
        let reduction = [Reduction::Mean, Reduction::Sum, Reduction::None][red];
        let mut rng = Rng::new(seed);
        let (logits, target) = (randn(&s, &mut rng).mul_scalar(3.0).unwrap(), rand(&s, 0.0, 1.0, &mut rng));
        check!([(logits, true), (target, true)], move |t| loss::bce_with_logits(&t[0], &t[1], reduction));
        let (a, b) = (randn(&s, &mut rng), randn(&s, &mut rng));
        check!([(a.clone(), true), (b, true)], move |t| loss::mse(&t[0], &t[1], reduction));
        // l1 has a kink where input == target: offset the target from the input.
        let off = a.add(&away_from_zero(&s, 0.05, &mut rng)).unwrap();
        check!([(a, true), (off, true)], move |t| loss::l1(&t[0], &t[1], reduction));
        // bce on probabilities kept away from 0 and 1, where the clamps make it flat.
        let (p, t) = (rand(&s, 0.05, 0.95, &mut rng), rand(&s, 0.0, 1.0, &mut rng));
        check!([(p, true), (t, true)], move |t| loss::bce(&t[0], &t[1], reduction));
    }
}

/// Convolution geometries: odd sizes, stride 1–3, padding 0..k, dilation 1–2, batch 1–2,
/// rectangular kernels.
#[derive(Debug, Clone)]
struct ConvCase {
    n: usize,
    c_in: usize,
    c_out: usize,
    hw: [usize; 2],
    k: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dil: [usize; 2],
    bias: bool,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        1usize..3,
        1usize..4,
        1usize..4,
        [1usize..8, 1usize..8],
        [1usize..4, 1usize..4],
        [1usize..4, 1usize..4],
        [0usize..4, 0usize..4],
        [1usize..3, 1usize..3],
        any::<bool>(),
    )
        .prop_map(|(n, c_in, c_out, hw, k, stride, pad, dil, bias)| {
            let pad = [pad[0] % (k[0] + 1), pad[1] % (k[1] + 1)];
            ConvCase {
                n,
                c_in,
                c_out,
                hw,
                k,
                stride,
                pad,
                dil,
                bias,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conv2d(case in conv_case(), seed in any::<u64>()) {
        let c = case;
        let p = Conv2dParams { stride: c.stride, padding: c.pad, dilation: c.dil };
        // Skip geometries with no output (the op rejects them; tested in errors.rs).
        prop_assume!((0..2).all(|a| c.hw[a] + 2 * c.pad[a] > c.dil[a] * (c.k[a] - 1)));
        let mut rng = Rng::new(seed);
        let x = randn(&[c.n, c.c_in, c.hw[0], c.hw[1]], &mut rng);
        let w = randn(&[c.c_out, c.c_in, c.k[0], c.k[1]], &mut rng);
        let b = randn(&[c.c_out], &mut rng);
        if c.bias {
            check!([(x, true), (w, true), (b, true)], move |t| t[0].conv2d(&t[1], Some(&t[2]), p));
        } else {
            check!([(x, true), (w, true)], move |t| t[0].conv2d(&t[1], None, p));
        }
    }

    #[test]
    fn conv_transpose2d(case in conv_case(), op in [0usize..3, 0usize..3], seed in any::<u64>()) {
        let c = case;
        // output_padding must be below stride or dilation.
        let output_padding = [op[0] % c.stride[0].max(c.dil[0]), op[1] % c.stride[1].max(c.dil[1])];
        let p = ConvTranspose2dParams { stride: c.stride, padding: c.pad, output_padding, dilation: c.dil };
        prop_assume!((0..2).all(|a| (c.hw[a] - 1) * c.stride[a] + c.dil[a] * (c.k[a] - 1) + output_padding[a] + 1 > 2 * c.pad[a]));
        let mut rng = Rng::new(seed);
        let x = randn(&[c.n, c.c_in, c.hw[0], c.hw[1]], &mut rng);
        let w = randn(&[c.c_in, c.c_out, c.k[0], c.k[1]], &mut rng);
        let b = randn(&[c.c_out], &mut rng);
        if c.bias {
            check!([(x, true), (w, true), (b, true)], move |t| t[0].conv_transpose2d(&t[1], Some(&t[2]), p));
        } else {
            check!([(x, true), (w, true)], move |t| t[0].conv_transpose2d(&t[1], None, p));
        }
    }

    /// Conv and transposed conv with a fused activation (smooth ones, so the finite
    /// difference sees no kink; relu and leaky relu are checked against the separate ops
    /// bit for bit in nn's tests): the backward takes the gradient through the activation
    /// from the output alone.
    #[test]
    fn conv_act(case in conv_case(), transpose in any::<bool>(), tanh in any::<bool>(), seed in any::<u64>()) {
        let c = case;
        let act = Some(if tanh { UnaryOp::Tanh } else { UnaryOp::Sigmoid });
        let mut rng = Rng::new(seed);
        let x = randn(&[c.n, c.c_in, c.hw[0], c.hw[1]], &mut rng);
        let b = randn(&[c.c_out], &mut rng);
        if transpose {
            let p = ConvTranspose2dParams { stride: c.stride, padding: c.pad, output_padding: [0, 0], dilation: c.dil };
            prop_assume!((0..2).all(|a| (c.hw[a] - 1) * c.stride[a] + c.dil[a] * (c.k[a] - 1) + 1 > 2 * c.pad[a]));
            let w = randn(&[c.c_in, c.c_out, c.k[0], c.k[1]], &mut rng);
            if c.bias {
                check!([(x, true), (w, true), (b, true)], move |t| t[0].conv_transpose2d_act(&t[1], Some(&t[2]), p, act));
            } else {
                check!([(x, true), (w, true)], move |t| t[0].conv_transpose2d_act(&t[1], None, p, act));
            }
        } else {
            let p = Conv2dParams { stride: c.stride, padding: c.pad, dilation: c.dil };
            prop_assume!((0..2).all(|a| c.hw[a] + 2 * c.pad[a] > c.dil[a] * (c.k[a] - 1)));
            let w = randn(&[c.c_out, c.c_in, c.k[0], c.k[1]], &mut rng);
            if c.bias {
                check!([(x, true), (w, true), (b, true)], move |t| t[0].conv2d_act(&t[1], Some(&t[2]), p, act));
            } else {
                check!([(x, true), (w, true)], move |t| t[0].conv2d_act(&t[1], None, p, act));
            }
        }
    }

    #[test]
    fn batch_norm_train(n in 1usize..4, c in 1usize..4, inner in prop::collection::vec(1usize..4, 0..3), affine in any::<bool>(), seed in any::<u64>()) {
        let mut dims = vec![n, c];
        dims.extend(inner);
        prop_assume!(dims.iter().product::<usize>() / c > 1);
        let mut rng = Rng::new(seed);
        let x = randn(&dims, &mut rng);
        let (w, b) = (rand(&[c], 0.5, 1.5, &mut rng), randn(&[c], &mut rng));
        if affine {
            check!([(x, true), (w, true), (b, true)], |t| Ok(t[0].batch_norm_train(Some(&t[1]), Some(&t[2]), 1e-5)?.0));
        } else {
            check!([(x, true)], |t| Ok(t[0].batch_norm_train(None, None, 1e-5)?.0));
        }
    }

    /// The fused norm + activation (smooth activations, so the finite difference sees no kink),
    /// with every combination of weight and bias, in training and evaluation mode.
    #[test]
    fn batch_norm_act(n in 1usize..4, c in 1usize..4, h in 1usize..4, affine in 0usize..4, tanh in any::<bool>(), train in any::<bool>(), seed in any::<u64>()) {
        prop_assume!(n * h * 2 > 1);
        let act = Some(if tanh { UnaryOp::Tanh } else { UnaryOp::Sigmoid });
        let mut rng = Rng::new(seed);
        let x = randn(&[n, c, h, 2], &mut rng);
        let (w, b) = (rand(&[c], 0.5, 1.5, &mut rng), randn(&[c], &mut rng));
        let (m, v) = (randn(&[c], &mut rng), rand(&[c], 0.5, 2.0, &mut rng));
        let (has_w, has_b) = (affine & 1 == 1, affine & 2 == 2);
        check!([(x, true), (w, has_w), (b, has_b), (m, false), (v, false)], |t| {
            let (w, b) = (has_w.then_some(&t[1]), has_b.then_some(&t[2]));
            if train {
                Ok(t[0].batch_norm_train_act(w, b, 1e-5, act)?.0)
            } else {
                t[0].batch_norm_eval_act(&t[3], &t[4], w, b, 1e-5, act)
            }
        });
    }

    /// Instance norm with every combination of weight and bias, with and without a smooth
    /// activation (fused when there is no affine step, applied after it otherwise).
    #[test]
    fn instance_norm(n in 1usize..3, c in 1usize..4, h in 1usize..4, w in 2usize..4, affine in 0usize..4, act in 0usize..3, seed in any::<u64>()) {
        let act = [None, Some(UnaryOp::Tanh), Some(UnaryOp::Sigmoid)][act];
        let mut rng = Rng::new(seed);
        let x = randn(&[n, c, h, w], &mut rng);
        let (wt, b) = (rand(&[c], 0.5, 1.5, &mut rng), randn(&[c], &mut rng));
        let (has_w, has_b) = (affine & 1 == 1, affine & 2 == 2);
        check!([(x, true), (wt, has_w), (b, has_b)], |t| {
            t[0].instance_norm_act(has_w.then_some(&t[1]), has_b.then_some(&t[2]), 1e-5, act)
        });
    }

    /// Reflection padding of every side up to the largest the input allows.
    #[test]
    fn reflection_pad2d(n in 1usize..3, c in 1usize..3, h in 2usize..6, w in 2usize..6, pads in prop::collection::vec(0usize..5, 4), seed in any::<u64>()) {
        let pad = [pads[0] % w, pads[1] % w, pads[2] % h, pads[3] % h];
        let mut rng = Rng::new(seed);
        let x = randn(&[n, c, h, w], &mut rng);
        check!([(x, true)], move |t| t[0].reflection_pad2d(pad));
    }

    #[test]
    fn batch_norm_eval(n in 1usize..4, c in 1usize..4, h in 1usize..4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = randn(&[n, c, h, 2], &mut rng);
        let (w, b) = (rand(&[c], 0.5, 1.5, &mut rng), randn(&[c], &mut rng));
        let (m, v) = (randn(&[c], &mut rng), rand(&[c], 0.5, 2.0, &mut rng));
        check!([(x, true), (w, true), (b, true), (m, false), (v, false)], |t| t[0].batch_norm_eval(&t[3], &t[4], Some(&t[1]), Some(&t[2]), 1e-5));
    }
}

/// f32 rounding would swamp a 1e-6 finite difference, so `to_dtype` is checked exactly
/// instead: through an f32 round trip the gradient of `2·x` is exactly 2.
#[test]
fn to_dtype_passes_the_gradient_back() {
    let mut rng = Rng::new(1);
    let x = randn(&[3, 4], &mut rng).variable();
    let y = x.to_dtype(DType::F32).unwrap();
    assert_eq!(y.dtype(), DType::F32);
    let loss = y
        .to_dtype(DType::F64)
        .unwrap()
        .mul_scalar(2.0)
        .unwrap()
        .sum_all()
        .unwrap();
    let g = loss.backward().unwrap();
    let gx = g.get(&x).unwrap();
    assert_eq!(gx.dtype(), DType::F64);
    assert_eq!(gx.to_f64_vec().unwrap(), vec![2.0; 12]);
}
