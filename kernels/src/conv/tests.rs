//! Hand-computed cases, and the adjoint identities that tie the three kernels together:
//! for any `x`, `w`, `dy`,
//! `⟨conv(x, w), dy⟩ = ⟨x, backward_data(dy, w)⟩ = ⟨w, backward_weight(x, dy)⟩`.

use super::reference::*;
use super::Conv2dGeom;
use proptest::prelude::*;

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    c_in: usize,
    hw: [usize; 2],
    c_out: usize,
    k: [usize; 2],
    s: usize,
    p: usize,
    d: usize,
) -> Option<Conv2dGeom> {
    Conv2dGeom {
        n,
        c_in,
        h: hw[0],
        w: hw[1],
        c_out,
        kh: k[0],
        kw: k[1],
        stride: [s, s],
        pad: [p, p],
        dilation: [d, d],
        h_out: 0,
        w_out: 0,
    }
    .with_conv_output()
}

#[test]
fn output_size_matches_pytorch_formula() {
    // DCGAN discriminator layer: 64x64, k4 s2 p1 -> 32x32.
    assert_eq!(Conv2dGeom::output_len(64, 4, 2, 1, 1), Some(32));
    // Dilation 2, k3, no pad: 7 -> 3.
    assert_eq!(Conv2dGeom::output_len(7, 3, 1, 0, 2), Some(3));
    assert_eq!(Conv2dGeom::output_len(2, 3, 1, 0, 1), None);
}

#[test]
fn three_by_three_by_hand() {
    // x = 1..9 as a 3x3 image, 2x2 kernel [[1,0],[0,-1]], stride 1, no pad:
    // y[i][j] = x[i][j] - x[i+1][j+1] = -4 everywhere.
    let g = geom(1, 1, [3, 3], 1, [2, 2], 1, 0, 1).unwrap();
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let w = [1.0, 0.0, 0.0, -1.0];
    let mut y = vec![0.0; 4];
    conv2d_forward(&x, &w, Some(&[0.5]), &mut y, &g);
    assert_eq!(y, vec![-3.5; 4]);

    // Padding 1, stride 2: outputs at (0,0),(0,2),(2,0),(2,2) of the padded grid.
    // y(0,0) = x_pad(0,0) - x(0,0) = -1 ; y(0,1) = x_pad(0,2)=0 - x(0,2)=-3 ;
    // y(1,0) = 0 - x(2,0) = -7 ; y(1,1) = x(1,1) - x(2,2) = 5 - 9 = -4.
    let g = geom(1, 1, [3, 3], 1, [2, 2], 2, 1, 1).unwrap();
    conv2d_forward(&x, &w, None, &mut y, &g);
    assert_eq!(y, vec![-1.0, -3.0, -7.0, -4.0]);
}

#[test]
fn backward_by_hand() {
    // 1x1 input channel, 2x2 image, 2x2 kernel, padding 1 -> 3x3 output.
    let g = geom(1, 1, [2, 2], 1, [2, 2], 1, 1, 1).unwrap();
    let w = [1.0f64, 2.0, 3.0, 4.0];
    // dy = 1 everywhere: each input pixel receives the sum of the whole kernel.
    let mut dx = vec![0.0; 4];
    conv2d_backward_data(&[1.0; 9], &w, &mut dx, &g);
    assert_eq!(dx, vec![10.0; 4]);
    // With dy = 1 everywhere, every tap sees every input pixel exactly once.
    let x = [1.0f64, 2.0, 3.0, 4.0];
    let mut dw = vec![0.0; 4];
    conv2d_backward_weight(&x, &[1.0; 9], &mut dw, &g);
    assert_eq!(dw, vec![10.0; 4]);
}

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn kernels_are_adjoint(
        n in 1usize..3, c_in in 1usize..4, c_out in 1usize..4,
        h in 1usize..9, w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
        s in 1usize..4, p in 0usize..3, d in 1usize..3, seed in any::<u64>(),
    ) {
        let Some(g) = geom(n, c_in, [h, w], c_out, [kh, kw], s, p, d) else { return Ok(()) };
        let mut seed = seed;
        let mut rand = |len: usize| (0..len).map(|_| lcg(&mut seed)).collect::<Vec<f64>>();
        let (x, wt, dy) = (rand(g.input_len()), rand(g.weight_len()), rand(g.output_len_total()));
        let mut y = vec![0.0; g.output_len_total()];
        conv2d_forward(&x, &wt, None, &mut y, &g);
        let mut dx = vec![0.0; g.input_len()];
        conv2d_backward_data(&dy, &wt, &mut dx, &g);
        let mut dw = vec![0.0; g.weight_len()];
        conv2d_backward_weight(&x, &dy, &mut dw, &g);
        let (lhs, via_x, via_w) = (dot(&y, &dy), dot(&x, &dx), dot(&wt, &dw));
        prop_assert!((lhs - via_x).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {via_x}");
        prop_assert!((lhs - via_w).abs() <= 1e-12 * (1.0 + lhs.abs()), "{lhs} vs {via_w}");
    }
}

/// The fast f32 kernels against the reference over random awkward geometries: odd sizes,
/// stride 1–3, padding 0..k, dilation 1–2, batch 1–3, channel counts not multiples of the
/// SIMD width, and the whole-input (1×1 output) special case.
///
/// Tolerance: each output is a dot product of `len` terms (`K` forward, `c_out·taps` for the
/// input gradient, `n·P` for the weight gradient) summed in f32 in a different order from the
/// f64 reference, so it is held to `(len + 2) · ε · Σ|terms|`, with `Σ|terms|` computed by the
/// reference kernel on absolute values.
mod fast {
    use super::super::ConvVariant;
    use super::*;

    fn rand32(len: usize, seed: &mut u64) -> Vec<f32> {
        (0..len).map(|_| lcg(seed) as f32).collect()
    }

    fn abs(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| x.abs()).collect()
    }

    fn close(
        got: &[f32],
        want: &[f32],
        bound: &[f32],
        terms: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let eps = f32::EPSILON as f64 / 2.0;
        for i in 0..got.len() {
            let tol = (terms as f64 + 2.0) * eps * bound[i] as f64 + 1e-30;
            let err = (got[i] as f64 - want[i] as f64).abs();
            prop_assert!(
                err <= tol,
                "{what}[{i}]: fast {} vs reference {} (tolerance {tol:e})",
                got[i],
                want[i]
            );
        }
        Ok(())
    }

    fn check_all(g: &Conv2dGeom, seed: u64) -> Result<(), TestCaseError> {
        for v in [
            ConvVariant::Im2colGemm,
            ConvVariant::ImplicitGemm,
            ConvVariant::ImplicitGemmRewrite,
            ConvVariant::ImplicitGemmPortablePack,
            ConvVariant::Direct,
            ConvVariant::DirectPortable,
            ConvVariant::Narrow,
            ConvVariant::Auto,
        ] {
            check_variant(v, g, seed)?;
        }
        Ok(())
    }

    /// Random `x`, `w`, `dy` and bias for `g`.
    fn operands(g: &Conv2dGeom, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut s = seed;
        (
            rand32(g.input_len(), &mut s),
            rand32(g.weight_len(), &mut s),
            rand32(g.output_len_total(), &mut s),
            rand32(g.c_out, &mut s),
        )
    }

    fn check_variant(v: ConvVariant, g: &Conv2dGeom, seed: u64) -> Result<(), TestCaseError> {
        let (x, w, dy, b) = operands(g, seed);
        let k = g.c_in * g.kh * g.kw;

        let (mut got, mut want, mut bound) = (
            vec![f32::NAN; g.output_len_total()],
            vec![0f32; g.output_len_total()],
            vec![0f32; g.output_len_total()],
        );
        v.forward(&x, &w, Some(&b), &mut got, g);
        conv2d_forward(&x, &w, Some(&b), &mut want, g);
        if v == ConvVariant::Auto
            && super::super::winograd::chosen(g, super::super::direct::Pass::Forward)
        {
            // Auto ran Winograd, whose transforms round too: its own bound.
            let e = super::winograd::winograd_bound(&x, &w, Some(&b), g);
            super::winograd::within(&got, &want, &e, g.c_in, &format!("{v:?} forward {g:?}"))?;
        } else if v == ConvVariant::Auto
            && super::super::winograd_s2::chosen(g, super::super::direct::Pass::Forward)
        {
            let e = super::winograd_s2::forward_bound(&x, &w, Some(&b), g);
            let what = format!("{v:?} forward {g:?}");
            super::winograd_s2::within(&got, &want, &e, 4 * g.c_in, &what)?;
        } else {
            conv2d_forward(&abs(&x), &abs(&w), Some(&abs(&b)), &mut bound, g);
            close(&got, &want, &bound, k + 1, &format!("{v:?} forward {g:?}"))?;
        }

        let (mut got, mut want, mut bound) = (
            vec![f32::NAN; g.input_len()],
            vec![0f32; g.input_len()],
            vec![0f32; g.input_len()],
        );
        v.backward_data(&dy, &w, &mut got, g);
        conv2d_backward_data(&dy, &w, &mut want, g);
        if v == ConvVariant::Auto
            && super::super::winograd::chosen(g, super::super::direct::Pass::BackwardData)
        {
            let e = super::winograd::backward_data_bound(&dy, &w, g);
            super::winograd::within(
                &got,
                &want,
                &e,
                g.c_out,
                &format!("{v:?} backward_data {g:?}"),
            )?;
        } else if v == ConvVariant::Auto
            && super::super::winograd_s2::chosen(g, super::super::direct::Pass::BackwardData)
        {
            let e = super::winograd_s2::backward_data_bound(&dy, &w, g);
            let what = format!("{v:?} backward_data {g:?}");
            super::winograd_s2::within(&got, &want, &e, g.c_out, &what)?;
        } else {
            conv2d_backward_data(&abs(&dy), &abs(&w), &mut bound, g);
            close(
                &got,
                &want,
                &bound,
                g.c_out * g.kh * g.kw,
                &format!("{v:?} backward_data {g:?}"),
            )?;
        }

        let (mut got, mut want, mut bound) = (
            vec![f32::NAN; g.weight_len()],
            vec![0f32; g.weight_len()],
            vec![0f32; g.weight_len()],
        );
        v.backward_weight(&x, &dy, &mut got, g);
        conv2d_backward_weight(&x, &dy, &mut want, g);
        conv2d_backward_weight(&abs(&x), &abs(&dy), &mut bound, g);
        close(
            &got,
            &want,
            &bound,
            g.n * g.h_out * g.w_out,
            &format!("{v:?} backward_weight {g:?}"),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn fast_kernels_match_the_reference(
            n in 1usize..4, c_in in 1usize..20, c_out in 1usize..37,
            h in 1usize..12, w in 1usize..12, kh in 1usize..5, kw in 1usize..5,
            s in 1usize..4, p in 0usize..5, d in 1usize..3, seed in any::<u64>(),
        ) {
            let p = p % (kh.min(kw) + 1);
            let Some(g) = geom(n, c_in, [h, w], c_out, [kh, kw], s, p, d) else { return Ok(()) };
            check_all(&g, seed)?;
        }

        #[test]
        fn whole_input_kernels_are_dense_gemms(n in 1usize..5, c_in in 1usize..40, c_out in prop_oneof![Just(1usize), 1usize..40], h in 1usize..6, w in 1usize..6, seed in any::<u64>()) {
            // One output channel (D5's forward) is a matrix-vector product: dot products.
            let g = geom(n, c_in, [h, w], c_out, [h, w], 1, 0, 1).unwrap();
            prop_assert_eq!((g.h_out, g.w_out), (1, 1));
            check_all(&g, seed)?;
        }
    }

    /// The narrow rung in both builds, on rows wide enough for several tiles: up to 7
    /// vectors (a 6-vector tile, then a part-filled one), 1–9 output channels (tiles of 4 and
    /// the rest), kernels up to 11 taps wide (weight-gradient tiles of 9 or 6 taps and the
    /// rest), bands of rows that end part-way, and padding wider than the kernel.
    fn check_narrow(g: &Conv2dGeom, seed: u64) -> Result<(), TestCaseError> {
        use super::super::lanes::PackIsa;
        use super::super::narrow::{backward_weight_with, forward_with};
        let (x, w, dy, b) = operands(g, seed);
        let mut y_want = vec![0f32; g.output_len_total()];
        let mut y_bound = y_want.clone();
        conv2d_forward(&x, &w, Some(&b), &mut y_want, g);
        conv2d_forward(&abs(&x), &abs(&w), Some(&abs(&b)), &mut y_bound, g);
        let mut dw_want = vec![0f32; g.weight_len()];
        let mut dw_bound = dw_want.clone();
        conv2d_backward_weight(&x, &dy, &mut dw_want, g);
        conv2d_backward_weight(&abs(&x), &abs(&dy), &mut dw_bound, g);
        for isa in [PackIsa::Portable, PackIsa::best()] {
            let mut y = vec![f32::NAN; y_want.len()];
            forward_with(&x, &w, Some(&b), &mut y, g, isa);
            let k = g.c_in * g.kh * g.kw;
            close(
                &y,
                &y_want,
                &y_bound,
                k + 1,
                &format!("narrow {isa:?} forward {g:?}"),
            )?;
            let mut dw = vec![f32::NAN; dw_want.len()];
            backward_weight_with(&x, &dy, &mut dw, g, isa);
            let what = format!("narrow {isa:?} backward_weight {g:?}");
            close(&dw, &dw_want, &dw_bound, g.n * g.h_out * g.w_out, &what)?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn narrow_rung_matches_the_reference(
            n in 1usize..3, c_in in 1usize..4, c_out in 1usize..10,
            h in 1usize..20, w in 1usize..100, kh in 1usize..6, kw in 1usize..12,
            p in 0usize..6, seed in any::<u64>(),
        ) {
            let Some(g) = geom(n, c_in, [h, w], c_out, [kh, kw], 1, p, 1) else { return Ok(()) };
            check_narrow(&g, seed)?;
        }
    }

    #[test]
    fn narrow_rung_on_srresnets_last_layer_shape() {
        // 64 → 3 through 9×9 with padding 4 (a smaller image): every tap tile of 9, one
        // channel tile of 3, two bands of weight-gradient rows, and what Auto picks there.
        let g = geom(2, 64, [40, 37], 3, [9, 9], 1, 4, 1).unwrap();
        check_narrow(&g, 5).unwrap();
        check_variant(ConvVariant::Auto, &g, 5).unwrap();
    }

    #[test]
    fn narrow_rung_edges() {
        // 17 weight-gradient units: more than the 16 partials, so one sums two units.
        let g = geom(17, 2, [5, 20], 3, [3, 3], 1, 1, 1).unwrap();
        check_narrow(&g, 6).unwrap();
        // No input channels: the output is the bias.
        let g = geom(2, 0, [5, 20], 3, [3, 3], 1, 1, 1).unwrap();
        check_narrow(&g, 7).unwrap();
    }

    #[test]
    fn narrow_weight_gradient_reads_no_input_past_the_row() {
        // An infinity in the input columns just past the output row's end (the row is 17
        // wide, one pixel into its second vector): the reference never multiplies it, so
        // neither may the lanes past w_out.
        use super::super::lanes::PackIsa;
        use super::super::narrow::backward_weight_with;
        let g = geom(1, 1, [3, 20], 2, [1, 4], 1, 0, 1).unwrap();
        assert_eq!(g.w_out, 17);
        let (mut x, _, dy, _) = operands(&g, 8);
        for r in 0..3 {
            x[r * 20 + 17] = f32::INFINITY;
        }
        let mut want = vec![0f32; g.weight_len()];
        conv2d_backward_weight(&x, &dy, &mut want, &g);
        // Tap j = 0 reads columns 0..17 only, so it stays finite.
        assert!(want[0].is_finite() && want[4].is_finite());
        for isa in [PackIsa::Portable, PackIsa::best()] {
            let mut got = vec![f32::NAN; g.weight_len()];
            backward_weight_with(&x, &dy, &mut got, &g, isa);
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a == b
                        || (a - b).abs() <= 1e-5 * b.abs().max(1.0)
                        || (a.is_nan() && b.is_nan()),
                    "{isa:?} dw[{k}]: {a} vs {b}"
                );
            }
        }
    }

    /// The fused epilogue gives the bits of the separate ops: forward with its bias, then
    /// `elementwise::cpu::unary`; backward-data, the bias added per channel, then `unary`
    /// (a transposed convolution's forward as the unfused ops compute it).
    fn check_epilogue(v: ConvVariant, g: &Conv2dGeom, seed: u64) -> Result<(), TestCaseError> {
        use super::super::Epilogue;
        use crate::elementwise::{cpu::unary, UnaryOp};
        let mut s = seed;
        let (x, w, dy) = (
            rand32(g.input_len(), &mut s),
            rand32(g.weight_len(), &mut s),
            rand32(g.output_len_total(), &mut s),
        );
        let (b_out, b_in) = (rand32(g.c_out, &mut s), rand32(g.c_in, &mut s));
        let separate = |y: &mut Vec<f32>, b: Option<&[f32]>, plane: usize, act| {
            if let Some(b) = b {
                for (i, v) in y.iter_mut().enumerate() {
                    *v += b[i / plane % b.len()];
                }
            }
            if let Some(op) = act {
                let pre = y.clone();
                unary(op, &pre, y);
            }
        };
        let acts = [
            None,
            Some(UnaryOp::Relu),
            Some(UnaryOp::LeakyRelu(0.2)),
            Some(UnaryOp::Tanh),
            Some(UnaryOp::Sigmoid),
            Some(UnaryOp::LeakyRelu(0.0)),
        ];
        for (i, act) in acts.into_iter().enumerate() {
            // Every other case without a bias.
            let bias = (i % 2 == 0).then_some(&b_out[..]);
            let mut want = vec![0f32; g.output_len_total()];
            v.forward(&x, &w, bias, &mut want, g);
            separate(&mut want, None, g.h_out * g.w_out, act);
            let mut got = vec![f32::NAN; want.len()];
            v.forward_fused(&x, &w, Epilogue { bias, act }, &mut got, g);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(
                same,
                "{v:?} forward with {bias:?} and {act:?} differs, {g:?}"
            );

            let bias = (i % 2 == 0).then_some(&b_in[..]);
            let mut want = vec![0f32; g.input_len()];
            v.backward_data(&dy, &w, &mut want, g);
            separate(&mut want, bias, g.h * g.w, act);
            let mut got = vec![f32::NAN; want.len()];
            v.backward_data_fused(&dy, &w, Epilogue { bias, act }, &mut got, g);
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            prop_assert!(
                same,
                "{v:?} backward_data with {bias:?} and {act:?} differs, {g:?}"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fused_epilogues_equal_the_separate_ops(
            n in 1usize..3, c_in in 1usize..20, c_out in 1usize..37,
            h in 1usize..10, w in 1usize..10, k in 1usize..5,
            s in 1usize..4, p in 0usize..3, seed in any::<u64>(),
        ) {
            let Some(g) = geom(n, c_in, [h, w], c_out, [k, k], s, p.min(k - 1), 1) else {
                return Ok(());
            };
            for v in ConvVariant::ALL {
                check_epilogue(v, &g, seed)?;
            }
        }
    }

    #[test]
    fn fused_epilogues_on_direct_sized_layers() {
        // Channel counts that fill the direct kernel's 64-channel tiles (so `Auto` picks it
        // on AVX-512 CPUs, or Winograd for the 3×3 stride-1 one), and a kernel narrower than
        // the stride: backward-data leaves pixels no tap reaches, which need the epilogue too.
        for (c_in, c_out, k, s, p) in [(64, 72, 4, 2, 1), (72, 64, 3, 1, 1), (64, 64, 1, 2, 0)] {
            let g = geom(2, c_in, [12, 10], c_out, [k, k], s, p, 1).unwrap();
            for v in [
                ConvVariant::Direct,
                ConvVariant::DirectPortable,
                ConvVariant::Winograd,
                ConvVariant::Auto,
            ] {
                check_epilogue(v, &g, 11).unwrap();
            }
        }
    }

    #[test]
    fn different_strides_and_padding_per_axis() {
        // Space-to-depth and the phases work per axis: stride 2 × 3, kernel 4 × 3 (both
        // multiples), padding 1 × 2, and a kernel that is not a multiple (5 × 3, stride 2 × 3).
        for (k, s, p) in [
            ([4, 3], [2, 3], [1, 2]),
            ([5, 3], [2, 3], [2, 0]),
            ([2, 6], [2, 3], [0, 1]),
        ] {
            let g = Conv2dGeom {
                n: 2,
                c_in: 5,
                h: 11,
                w: 13,
                c_out: 7,
                kh: k[0],
                kw: k[1],
                stride: s,
                pad: p,
                dilation: [1, 1],
                h_out: 0,
                w_out: 0,
            }
            .with_conv_output()
            .unwrap();
            check_all(&g, 7).unwrap();
        }
    }

    #[test]
    fn an_empty_input_reads_only_padding() {
        // h = 0 with padding 1 and a 1x1 kernel still has a 2x6 output, of bias alone.
        let g = geom(2, 70, [0, 4], 65, [1, 1], 1, 1, 1).unwrap();
        assert_eq!((g.h_out, g.w_out), (2, 6));
        for v in [
            ConvVariant::Direct,
            ConvVariant::DirectPortable,
            ConvVariant::Auto,
        ] {
            check_variant(v, &g, 5).unwrap();
        }
    }

    #[test]
    fn direct_units_span_images() {
        // Output rows of 70 or 71 pixels: one row per block, and parallel units of 4
        // blocks (3x3, stride 1) or 2 (4x4, stride 2; backward-data's row phases too), the
        // rows two units share being at most half of each; 70 and 71 rows per image are
        // not multiples of those, so units start mid-image and cross from one image into
        // the next. Stride 2 runs the column phases of one row phase as one job.
        for (k, s, hw) in [(3, 1, 70), (4, 2, 71 * 2)] {
            let g = geom(3, 9, [hw, hw], 40, [k, k], s, 1, 1).unwrap();
            check_all(&g, 3).unwrap();
        }
    }

    #[test]
    fn dcgan_shaped_layers() {
        // Wider than the proptest ranges: channel counts and sizes past the GEMM's tiles.
        for (n, c_in, hw, c_out, k, s, p) in [
            (2, 64, 16, 72, 4, 2, 1),
            // A batch that fills the 16-image vectors: Auto runs the stride-2 Winograd.
            (16, 32, 8, 33, 4, 2, 1),
            (1, 3, 33, 64, 4, 2, 1),
            (2, 40, 9, 40, 3, 1, 1),
            (3, 70, 4, 1, 4, 1, 0),
            // Output rows wider than a micro-panel: the contiguous-run packing path.
            (1, 5, 40, 7, 3, 1, 1),
            (2, 3, 70, 5, 1, 1, 0),
        ] {
            let g = geom(n, c_in, [hw, hw], c_out, [k, k], s, p, 1).unwrap();
            check_all(&g, 99).unwrap();
        }
    }
}

/// The Winograd F(2×2, 3×3) variant against the reference on 3×3 stride-1 layers of awkward
/// sizes (odd outputs, so edge tiles are cut; padding 0–3; few channels).
///
/// Tolerance: the transforms round too, so the GEMM bound does not apply. Following the
/// algorithm, `Y = Aᵀ[Σ_ci (G g Gᵀ) ⊙ (Bᵀ d B)]A`, in f32: the filter transform rounds each
/// value at most 4 times, the input transform twice, the channel sum is a length-`c_in`
/// dot product, and the output transform and bias rounds 5 times, each relative to the same
/// computation on absolute values. So the error is at most `(c_in + 11) · u · E` (`u` the unit
/// roundoff) to first order, with `E = |Aᵀ|[Σ_ci (|G||g||G|ᵀ) ⊙ (|Bᵀ||d||B|)]|A| + |bias|`,
/// which `winograd_bound` computes in f64, independently of the code under test; the test
/// allows `(c_in + 16) · u · E`. Backward-data is the forward of `dy` with the flipped,
/// channel-transposed filter and padding `2 − pad`, and is bounded that way.
#[allow(clippy::needless_range_loop)]
mod winograd {
    use super::super::winograd::{forward_with, Transform};
    use super::super::ConvVariant;
    use super::*;
    use crate::gemm::kernels::Isa;

    const BT: [[f64; 4]; 4] = [
        [1.0, 0.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0, 1.0],
    ];
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, 0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0]];

    /// `E` above for every output of the 3×3 stride-1 forward `g`, from `|x|`, `|w|`.
    pub(super) fn winograd_bound(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        g: &Conv2dGeom,
    ) -> Vec<f64> {
        let mut e = vec![0f64; g.output_len_total()];
        for n in 0..g.n {
            for co in 0..g.c_out {
                for oh in 0..g.h_out {
                    for ow in 0..g.w_out {
                        let (ti, a, tj, b) = (oh / 2, oh % 2, ow / 2, ow % 2);
                        let mut m = [[0f64; 4]; 4];
                        for ci in 0..g.c_in {
                            let d = |r: usize, c: usize| {
                                let ih = (2 * ti + r) as isize - g.pad[0] as isize;
                                let iw = (2 * tj + c) as isize - g.pad[1] as isize;
                                if ih < 0 || iw < 0 || ih as usize >= g.h || iw as usize >= g.w {
                                    0.0
                                } else {
                                    let at = ((n * g.c_in + ci) * g.h + ih as usize) * g.w;
                                    x[at + iw as usize].abs() as f64
                                }
                            };
                            let f = |r: usize, c: usize| {
                                w[((co * g.c_in + ci) * 3 + r) * 3 + c].abs() as f64
                            };
                            for p in 0..4 {
                                for q in 0..4 {
                                    let (mut u, mut v) = (0.0, 0.0);
                                    for r in 0..3 {
                                        for c in 0..3 {
                                            u += G[p][r] * f(r, c) * G[q][c];
                                        }
                                    }
                                    for r in 0..4 {
                                        for c in 0..4 {
                                            v += BT[p][r] * d(r, c) * BT[q][c];
                                        }
                                    }
                                    m[p][q] += u * v;
                                }
                            }
                        }
                        let mut y = bias.map_or(0.0, |bs| bs[co].abs() as f64);
                        for p in 0..4 {
                            for q in 0..4 {
                                y += AT[a][p] * m[p][q] * AT[b][q];
                            }
                        }
                        e[((n * g.c_out + co) * g.h_out + oh) * g.w_out + ow] = y;
                    }
                }
            }
        }
        e
    }

    fn rand32(len: usize, seed: &mut u64) -> Vec<f32> {
        (0..len).map(|_| lcg(seed) as f32).collect()
    }

    /// [`winograd_bound`] for backward-data: the forward of `dy` with the flipped,
    /// channel-transposed filter, `c_out → c_in` channels, padding `2 − pad`.
    pub(super) fn backward_data_bound(dy: &[f32], w: &[f32], g: &Conv2dGeom) -> Vec<f64> {
        let (c_in, c_out) = (g.c_in, g.c_out);
        let fg = geom(
            g.n,
            c_out,
            [g.h_out, g.w_out],
            c_in,
            [3, 3],
            1,
            2 - g.pad[0],
            1,
        )
        .unwrap();
        assert_eq!((fg.h_out, fg.w_out), (g.h, g.w));
        let mut fw = vec![0f32; w.len()];
        for co in 0..c_out {
            for ci in 0..c_in {
                for t in 0..9 {
                    fw[(ci * c_out + co) * 9 + 8 - t] = w[(co * c_in + ci) * 9 + t];
                }
            }
        }
        winograd_bound(dy, &fw, None, &fg)
    }

    pub(super) fn within(
        got: &[f32],
        want: &[f32],
        e: &[f64],
        terms: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let u = f32::EPSILON as f64 / 2.0;
        for i in 0..got.len() {
            let tol = (terms as f64 + 16.0) * u * e[i] + 1e-30;
            let err = (got[i] as f64 - want[i] as f64).abs();
            prop_assert!(
                err <= tol,
                "{what}[{i}]: winograd {} vs reference {} (tolerance {tol:e})",
                got[i],
                want[i]
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn winograd_matches_the_reference(
            n in 1usize..3, c_in in 1usize..20, c_out in 1usize..20,
            h in 1usize..14, w in 1usize..14, p in 0usize..4, seed in any::<u64>(),
        ) {
            let Some(g) = geom(n, c_in, [h, w], c_out, [3, 3], 1, p, 1) else { return Ok(()) };
            let mut s = seed;
            let (x, wt, dy, b) = (
                rand32(g.input_len(), &mut s),
                rand32(g.weight_len(), &mut s),
                rand32(g.output_len_total(), &mut s),
                rand32(g.c_out, &mut s),
            );
            let mut got = vec![f32::NAN; g.output_len_total()];
            let mut want = vec![0f32; g.output_len_total()];
            ConvVariant::Winograd.forward(&x, &wt, Some(&b), &mut got, &g);
            conv2d_forward(&x, &wt, Some(&b), &mut want, &g);
            within(&got, &want, &winograd_bound(&x, &wt, Some(&b), &g), c_in, &format!("forward {g:?}"))?;

            let mut got = vec![f32::NAN; g.input_len()];
            let mut want = vec![0f32; g.input_len()];
            ConvVariant::Winograd.backward_data(&dy, &wt, &mut got, &g);
            conv2d_backward_data(&dy, &wt, &mut want, &g);
            if p <= 2 {
                within(&got, &want, &backward_data_bound(&dy, &wt, &g), c_out, &format!("backward-data {g:?}"))?;
            } else {
                // Padding 3 runs the default variant: the GEMM bound, loosely.
                for (i, (a, r)) in got.iter().zip(&want).enumerate() {
                    prop_assert!((a - r).abs() <= 1e-4 * (1.0 + r.abs()), "backward-data {g:?}[{i}]: {a} vs {r}");
                }
            }
        }
    }

    /// Every micro-kernel shape this CPU has (12×32, 6×16, 8×8, 4×4) and both builds of the
    /// input transform, on layers whose tile rows are split into segments (w_out > 192) or
    /// grouped into blocks, with output channels not a multiple of any micro-tile height.
    #[test]
    fn every_kernel_shape_and_transform_build() {
        for (c_in, c_out, h, w, p) in [
            (3, 13, 5, 400, 1),
            (5, 7, 9, 194, 0),
            (2, 9, 11, 7, 2),
            (4, 5, 3, 3, 3),
        ] {
            let g = geom(1, c_in, [h, w], c_out, [3, 3], 1, p, 1).unwrap();
            let mut s = (c_in * 31 + w) as u64;
            let (x, wt, b) = (
                rand32(g.input_len(), &mut s),
                rand32(g.weight_len(), &mut s),
                rand32(c_out, &mut s),
            );
            let mut want = vec![0f32; g.output_len_total()];
            conv2d_forward(&x, &wt, Some(&b), &mut want, &g);
            let e = winograd_bound(&x, &wt, Some(&b), &g);
            for isa in Isa::available() {
                for tf in [Transform::Best, Transform::Portable] {
                    let mut got = vec![f32::NAN; g.output_len_total()];
                    forward_with(&x, &wt, Some(&b), &mut got, &g, &isa.kernel(), tf);
                    within(&got, &want, &e, c_in, &format!("{isa:?} {tf:?} {g:?}")).unwrap();
                }
            }
        }
    }
}

/// Winograd F(2×2, 2×2) for 4×4 stride-2 layers ([`super::winograd_s2`]) against the
/// reference, forward and backward-data.
///
/// The error bound is the algorithm run on absolute values in f64, with this module's own
/// phase split and transform matrices: for each output, `E = |bias| + Σ_c Σ_phase Σ_ξ
/// |Aᵀ|[a][ξ₀]·|Aᵀ|[b][ξ₁]·(|G||g||G|ᵀ)[ξ]·(|Bᵀ||d||B|)[ξ]`, and each product is rounded
/// at most `k + 16` times (`k` the GEMM's reduction), so `|err| ≤ (k + 16)·u·E`. (Checked
/// by hand: scaling one term of the output transform, or of the AVX-512 input transform,
/// by 1 + 1e-4 fails these tests.)
mod winograd_s2 {
    use super::super::winograd::Transform;
    use super::super::winograd_s2::{backward_data_with, forward_with};
    use super::super::ConvVariant;
    use super::*;
    use crate::gemm::kernels::Isa;

    fn rand32(len: usize, seed: &mut u64) -> Vec<f32> {
        (0..len).map(|_| lcg(seed) as f32).collect()
    }

    const G: [[f64; 2]; 3] = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]];
    const BT: [[f64; 3]; 3] = [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]];
    const AT: [[f64; 3]; 2] = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]];

    /// `Σ_ξ |Aᵀ|[a][ξ₀]·|Aᵀ|[b][ξ₁]·(|G| g |G|ᵀ)[ξ]·(|Bᵀ| d |B|)[ξ]` for absolute values
    /// `g` (2×2) and `d` (3×3).
    fn term(g: [[f64; 2]; 2], d: [[f64; 3]; 3], a: usize, b: usize) -> f64 {
        let mut e = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                let mut u = 0.0;
                let mut v = 0.0;
                for r in 0..2 {
                    for c in 0..2 {
                        u += G[i][r] * g[r][c] * G[j][c];
                    }
                }
                for r in 0..3 {
                    for c in 0..3 {
                        v += BT[i][r] * d[r][c] * BT[j][c];
                    }
                }
                e += AT[a][i] * AT[b][j] * u * v;
            }
        }
        e
    }

    /// |plane[r][c]|, zero outside.
    fn at(x: &[f32], h: usize, w: usize, r: isize, c: isize) -> f64 {
        if (0..h as isize).contains(&r) && (0..w as isize).contains(&c) {
            x[r as usize * w + c as usize].abs() as f64
        } else {
            0.0
        }
    }

    pub(super) fn forward_bound(
        x: &[f32],
        w: &[f32],
        b: Option<&[f32]>,
        g: &Conv2dGeom,
    ) -> Vec<f64> {
        let (p, q) = (g.pad[0] as isize, g.pad[1] as isize);
        let mut e = Vec::with_capacity(g.output_len_total());
        for n in 0..g.n {
            for o in 0..g.c_out {
                for oy in 0..g.h_out {
                    for ox in 0..g.w_out {
                        let (ty, tx) = ((oy / 2) as isize, (ox / 2) as isize);
                        let mut s = b.map_or(0.0, |b| b[o].abs() as f64);
                        for i in 0..g.c_in {
                            let plane = &x[(n * g.c_in + i) * g.h * g.w..][..g.h * g.w];
                            for (bh, bw) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                                // Phase (bh, bw): taps 2a + bh, 2b + bw; patch of x rows
                                // 2(2ty + r) + bh − p.
                                let gg: [[f64; 2]; 2] = std::array::from_fn(|r| {
                                    std::array::from_fn(|c| {
                                        let k = (2 * r + bh) * 4 + 2 * c + bw;
                                        w[(o * g.c_in + i) * 16 + k].abs() as f64
                                    })
                                });
                                let d: [[f64; 3]; 3] = std::array::from_fn(|r| {
                                    std::array::from_fn(|c| {
                                        let row = 2 * (2 * ty + r as isize) + bh as isize - p;
                                        let col = 2 * (2 * tx + c as isize) + bw as isize - q;
                                        at(plane, g.h, g.w, row, col)
                                    })
                                });
                                s += term(gg, d, oy % 2, ox % 2);
                            }
                        }
                        e.push(s);
                    }
                }
            }
        }
        e
    }

    pub(super) fn backward_data_bound(dy: &[f32], w: &[f32], g: &Conv2dGeom) -> Vec<f64> {
        let plane = g.h_out * g.w_out;
        // Along one axis, for input index i: its phase e, the first m of that phase, and
        // the tile and the position in it of m = ⌊(i + p)/2⌋.
        let split = |i: usize, p: usize| {
            let e = (i + p) % 2;
            let lo = (p + 1 - e) / 2;
            let r = (i + p) / 2 - lo;
            (e, lo as isize, (r / 2) as isize, r % 2)
        };
        let mut out = Vec::with_capacity(g.input_len());
        for n in 0..g.n {
            for i in 0..g.c_in {
                for iy in 0..g.h {
                    for ix in 0..g.w {
                        let (eh, loh, ty, a) = split(iy, g.pad[0]);
                        let (ew, low, tx, b) = split(ix, g.pad[1]);
                        let mut s = 0.0;
                        for o in 0..g.c_out {
                            let d = &dy[(n * g.c_out + o) * plane..][..plane];
                            // Taps 2(1 − a') + e; patch of dy rows lo − 1 + 2t + r.
                            let gg: [[f64; 2]; 2] = std::array::from_fn(|r| {
                                std::array::from_fn(|c| {
                                    let k = (2 * (1 - r) + eh) * 4 + 2 * (1 - c) + ew;
                                    w[(o * g.c_in + i) * 16 + k].abs() as f64
                                })
                            });
                            let dd: [[f64; 3]; 3] = std::array::from_fn(|r| {
                                std::array::from_fn(|c| {
                                    let row = loh - 1 + 2 * ty + r as isize;
                                    let col = low - 1 + 2 * tx + c as isize;
                                    at(d, g.h_out, g.w_out, row, col)
                                })
                            });
                            s += term(gg, dd, a, b);
                        }
                        out.push(s);
                    }
                }
            }
        }
        out
    }

    pub(super) fn within(
        got: &[f32],
        want: &[f32],
        e: &[f64],
        k: usize,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let u = f32::EPSILON as f64 / 2.0;
        for (i, ((&a, &r), &e)) in got.iter().zip(want).zip(e).enumerate() {
            let tol = (k + 16) as f64 * u * e;
            prop_assert!(
                ((a as f64) - (r as f64)).abs() <= tol,
                "{what}[{i}]: winograd_s2 {a} vs reference {r} (tolerance {tol:e})"
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn winograd_s2_matches_the_reference(
            n in 1usize..20, c_in in 1usize..10, c_out in 1usize..10,
            h in 1usize..14, w in 1usize..14, p in 0usize..4, seed in any::<u64>(),
        ) {
            let Some(g) = geom(n, c_in, [h, w], c_out, [4, 4], 2, p, 1) else { return Ok(()) };
            let mut s = seed;
            let (x, wt, dy, b) = (
                rand32(g.input_len(), &mut s),
                rand32(g.weight_len(), &mut s),
                rand32(g.output_len_total(), &mut s),
                rand32(g.c_out, &mut s),
            );
            let mut got = vec![f32::NAN; g.output_len_total()];
            let mut want = vec![0f32; g.output_len_total()];
            ConvVariant::Winograd.forward(&x, &wt, Some(&b), &mut got, &g);
            conv2d_forward(&x, &wt, Some(&b), &mut want, &g);
            let e = forward_bound(&x, &wt, Some(&b), &g);
            within(&got, &want, &e, 4 * c_in, &format!("forward {g:?}"))?;

            let mut got = vec![f32::NAN; g.input_len()];
            let mut want = vec![0f32; g.input_len()];
            ConvVariant::Winograd.backward_data(&dy, &wt, &mut got, &g);
            conv2d_backward_data(&dy, &wt, &mut want, &g);
            let e = backward_data_bound(&dy, &wt, &g);
            within(&got, &want, &e, c_out, &format!("backward-data {g:?}"))?;
        }
    }

    /// Every micro-kernel shape this CPU has and both builds of the transforms, on batches
    /// that leave image vectors part-filled, blocks of several tile panels, odd output sizes
    /// (tiles with missing pixels) and channel counts no micro-tile divides.
    #[test]
    fn every_kernel_shape_and_transform_build() {
        for (n, c_in, c_out, h, w, p) in [
            (17, 3, 13, 9, 12, 1),
            (2, 5, 7, 40, 38, 0),
            (33, 2, 9, 7, 5, 2),
            (1, 4, 5, 4, 6, 3),
        ] {
            let g = geom(n, c_in, [h, w], c_out, [4, 4], 2, p, 1).unwrap();
            let mut s = (c_in * 31 + w) as u64;
            let (x, wt, dy, b) = (
                rand32(g.input_len(), &mut s),
                rand32(g.weight_len(), &mut s),
                rand32(g.output_len_total(), &mut s),
                rand32(c_out, &mut s),
            );
            let mut want_y = vec![0f32; g.output_len_total()];
            conv2d_forward(&x, &wt, Some(&b), &mut want_y, &g);
            let ey = forward_bound(&x, &wt, Some(&b), &g);
            let mut want_dx = vec![0f32; g.input_len()];
            conv2d_backward_data(&dy, &wt, &mut want_dx, &g);
            let edx = backward_data_bound(&dy, &wt, &g);
            for isa in Isa::available() {
                for tf in [Transform::Best, Transform::Portable] {
                    let what = format!("{isa:?} {tf:?} {g:?}");
                    let mut got = vec![f32::NAN; g.output_len_total()];
                    forward_with(&x, &wt, Some(&b), &mut got, &g, &isa.kernel(), tf);
                    within(&got, &want_y, &ey, 4 * c_in, &format!("forward {what}")).unwrap();
                    let mut got = vec![f32::NAN; g.input_len()];
                    backward_data_with(&dy, &wt, &mut got, &g, &isa.kernel(), tf);
                    within(
                        &got,
                        &want_dx,
                        &edx,
                        c_out,
                        &format!("backward-data {what}"),
                    )
                    .unwrap();
                }
            }
        }
    }
}
