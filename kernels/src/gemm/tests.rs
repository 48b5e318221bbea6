//! Every GEMM micro-kernel this CPU runs against the reference, on awkward shapes.
//!
//! Tolerance: the reference rounds an f64 sum once; the fast kernel accumulates `k` products in
//! f32, whose worst-case error is `k · ε · Σ|a||b|` (ε = 2⁻²⁴). Each element is held to
//! `(k + 2) · ε · Σ_p |a_ip · b_pj|`, the classical bound for a length-`k` dot product.

use super::cpu::{gemm_with, matmul_with, DenseC, Strided};
use super::kernels::Isa;
use super::reference;
use super::GemmGeom;
use proptest::prelude::*;

fn filled(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Checks `got` against the reference product, element by element, with the bound above.
fn check(a: &[f32], b: &[f32], got: &[f32], g: &GemmGeom, what: &str) -> Result<(), TestCaseError> {
    let mut want = vec![0f32; got.len()];
    reference::matmul(a, b, &mut want, g);
    let abs_a: Vec<f32> = a.iter().map(|v| v.abs()).collect();
    let abs_b: Vec<f32> = b.iter().map(|v| v.abs()).collect();
    let mut bound = vec![0f32; got.len()];
    reference::matmul(&abs_a, &abs_b, &mut bound, g);
    let eps = f32::EPSILON as f64 / 2.0;
    for i in 0..got.len() {
        let tol = (g.k as f64 + 2.0) * eps * bound[i] as f64 + f32::MIN_POSITIVE as f64;
        let err = (got[i] as f64 - want[i] as f64).abs();
        prop_assert!(
            err <= tol,
            "{what}: element {i}: {} vs reference {} (tolerance {tol:e})",
            got[i],
            want[i]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_isa_matches_the_reference(
        m in 1usize..70, n in 1usize..90, k in 1usize..600,
        trans_a in any::<bool>(), trans_b in any::<bool>(), batch in 1usize..3, seed in any::<u64>(),
    ) {
        let g = GemmGeom { batch, m, k, n, trans_a, trans_b };
        let (a, b) = (filled(batch * m * k, seed), filled(batch * k * n, seed ^ 1));
        for isa in Isa::available() {
            let mut c = vec![f32::NAN; batch * m * n];
            matmul_with(isa, &a, &b, &mut c, &g);
            check(&a, &b, &c, &g, &format!("{isa:?} {g:?}"))?;
        }
    }
}

#[test]
fn matrix_vector_products() {
    // n = 1 with contiguous A rows runs as dot products (`gemm_strided`), whether B is
    // transposed or not (a one-column B is contiguous either way); a transposed A takes
    // the packed GEMM. Depths below, at and past the 16 partial sums, and one
    // past the task split (m·k over 32K).
    for (m, k) in [(1, 1), (5, 15), (7, 16), (33, 17), (3, 1000), (130, 700)] {
        for (trans_a, trans_b) in [(false, false), (false, true), (true, false)] {
            let g = GemmGeom {
                batch: 2,
                m,
                k,
                n: 1,
                trans_a,
                trans_b,
            };
            let (a, b) = (filled(2 * m * k, m as u64), filled(2 * k, k as u64));
            let mut c = vec![f32::NAN; 2 * m];
            matmul_with(Isa::best(), &a, &b, &mut c, &g);
            check(&a, &b, &c, &g, &format!("{g:?}")).unwrap();
        }
    }
}

#[test]
fn blocks_larger_than_mc_and_kc_with_a_resident() {
    // m > MC, k > KC, and A's rows for a KC block within A_RESIDENT: A is packed once per
    // KC block and B streamed through it in several blocks.
    // GemmGeom::new(batch, m, k, n): 252·KC floats of A fit A_RESIDENT.
    let g = GemmGeom::new(1, 251, 4100, 300);
    let (a, b) = (filled(g.m * g.k, 3), filled(g.k * g.n, 4));
    for isa in Isa::available() {
        let mut c = vec![0f32; g.m * g.n];
        matmul_with(isa, &a, &b, &mut c, &g);
        check(&a, &b, &c, &g, &format!("{isa:?}")).unwrap();
    }
}

#[test]
fn blocks_larger_than_mc_and_kc_with_a_long_a() {
    // A's rows for a KC block over A_RESIDENT (n > m, so each thread has all rows): the
    // NC-blocked loop order, m > MC, k > KC.
    // GemmGeom::new(batch, m, k, n): 300·KC floats of A exceed A_RESIDENT.
    let g = GemmGeom::new(1, 300, 1100, 320);
    let (a, b) = (filled(g.m * g.k, 11), filled(g.k * g.n, 12));
    for isa in Isa::available() {
        let mut c = vec![0f32; g.m * g.n];
        matmul_with(isa, &a, &b, &mut c, &g);
        check(&a, &b, &c, &g, &format!("{isa:?}")).unwrap();
    }
}

#[test]
fn row_split_with_a_shared_packed_b() {
    // m > n and large enough to split across threads: the threads share one packed B, over
    // two KC blocks (k > KC).
    let g = GemmGeom::new(1, 500, 1100, 70);
    let (a, b) = (filled(g.m * g.k, 9), filled(g.k * g.n, 10));
    for isa in Isa::available() {
        let mut c = vec![0f32; g.m * g.n];
        matmul_with(isa, &a, &b, &mut c, &g);
        check(&a, &b, &c, &g, &format!("{isa:?}")).unwrap();
    }
}

#[test]
fn accumulate_adds_to_c_and_k_zero_clears_it() {
    let (m, n, k) = (13, 35, 7);
    let (a, b) = (filled(m * k, 5), filled(k * n, 6));
    let mut want = vec![0f32; m * n];
    reference::matmul(&a, &b, &mut want, &GemmGeom::new(1, m, k, n));
    for isa in Isa::available() {
        let mut c = vec![1.0f32; m * n];
        let (sa, sb) = (
            Strided {
                data: &a,
                rs: k,
                cs: 1,
            },
            Strided {
                data: &b,
                rs: n,
                cs: 1,
            },
        );
        gemm_with(
            isa,
            [m, n, k],
            &sa,
            &sb,
            &DenseC::new(&mut c, [m, n], n),
            true,
        );
        for (got, w) in c.iter().zip(&want) {
            assert!(
                (got - (w + 1.0)).abs() < 1e-5,
                "{isa:?}: {got} vs {}",
                w + 1.0
            );
        }
        gemm_with(
            isa,
            [m, n, 0],
            &sa,
            &sb,
            &DenseC::new(&mut c, [m, n], n),
            false,
        );
        assert!(c.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn writes_only_inside_a_strided_c() {
    // C is a 5×7 window of a 5×10 buffer: the three extra columns must stay untouched.
    let (m, n, k, ldc) = (5, 7, 9, 10);
    let (a, b) = (filled(m * k, 7), filled(k * n, 8));
    for isa in Isa::available() {
        let mut c = vec![42.0f32; m * ldc];
        gemm_with(
            isa,
            [m, n, k],
            &Strided {
                data: &a,
                rs: k,
                cs: 1,
            },
            &Strided {
                data: &b,
                rs: n,
                cs: 1,
            },
            &DenseC::new(&mut c, [m, n], ldc),
            false,
        );
        for r in 0..m {
            assert!(
                c[r * ldc + n..(r + 1) * ldc].iter().all(|&v| v == 42.0),
                "{isa:?} wrote past column {n}"
            );
        }
    }
}

/// A strided matrix's storage: `rows × cols` at strides `(rs, cs)`, row-major, column-major
/// or neither, in a buffer exactly as long as the last element needs (so the packers'
/// bounds checks see its end).
fn strided_storage(rows: usize, cols: usize, layout: usize, seed: u64) -> (Vec<f32>, usize, usize) {
    let (rs, cs) = match layout {
        0 => (cols + 3, 1),
        1 => (1, rows + 2),
        _ => (2 * cols + 1, 2),
    };
    (filled((rows - 1) * rs + (cols - 1) * cs + 1, seed), rs, cs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Both packers, in each vector-move form this CPU runs, against a plain gather: the
    /// same block of a strided matrix packed as A (panels of `width` rows) and, through the
    /// transposed strides, as B (panels of `width` columns) give the same panels.
    #[test]
    fn strided_packers_match_a_plain_gather(
        rows in 1usize..40, cols in 1usize..70, layout in 0usize..3,
        at in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
        width in prop::sample::select(vec![4usize, 6, 8, 12, 16, 32]), seed in any::<u64>(),
    ) {
        use super::cpu::{strided_pack_a, strided_pack_b};
        use crate::conv::lanes::{PackIsa, Portable};
        let (data, rs, cs) = strided_storage(rows, cols, layout, seed);
        // The block: rows r0..r0 + mc, columns c0..c0 + kc.
        let r0 = ((at.0 * rows as f64) as usize).min(rows - 1);
        let mc = 1 + ((at.1 * (rows - r0) as f64) as usize).min(rows - r0 - 1);
        let c0 = ((at.2 * cols as f64) as usize).min(cols - 1);
        let kc = 1 + ((at.3 * (cols - c0) as f64) as usize).min(cols - c0 - 1);
        let mut want = vec![0f32; mc.div_ceil(width) * width * kc];
        for (q, panel) in want.chunks_exact_mut(width * kc).enumerate() {
            for p in 0..kc {
                for r in 0..width {
                    let i = q * width + r;
                    panel[p * width + r] =
                        if i < mc { data[(r0 + i) * rs + (c0 + p) * cs] } else { 0.0 };
                }
            }
        }
        let a = Strided { data: &data, rs, cs };
        let b = Strided { data: &data, rs: cs, cs: rs };
        let mut forms = vec!["portable"];
        if PackIsa::best() == PackIsa::Avx512 {
            forms.push("avx512");
        }
        for form in forms {
            for as_b in [false, true] {
                let mut got = vec![f32::NAN; want.len() + 5];
                match (form, as_b) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: "avx512" is only listed on CPUs with AVX-512F.
                    ("avx512", false) => unsafe { super::cpu::x86::pack_a(&a, r0, mc, c0, kc, width, &mut got) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    ("avx512", true) => unsafe { super::cpu::x86::pack_b(&b, c0, kc, r0, mc, width, &mut got) },
                    (_, false) => strided_pack_a::<Portable>(&a, r0, mc, c0, kc, width, &mut got),
                    (_, true) => strided_pack_b::<Portable>(&b, c0, kc, r0, mc, width, &mut got),
                }
                let what = format!(
                    "{form} {} strides ({rs}, {cs}) block {r0}+{mc} x {c0}+{kc} panels of {width}",
                    if as_b { "pack_b of the transpose" } else { "pack_a" }
                );
                prop_assert!(
                    got[..want.len()].iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
                    "{what}"
                );
                prop_assert!(got[want.len()..].iter().all(|g| g.is_nan()), "{what}: wrote past its panels");
            }
        }
    }
}
