//! The vector moves the convolution's packing is made of: strided row copies (im2col), the
//! strided scatter-add of col2im, and small transposes (the backward-weight operands, whose
//! GEMM reduction runs along the pixels, the contiguous axis of NCHW).
//!
//! [`Lanes`] is implemented twice: [`Portable`] (plain loops) and, on x86-64, [`Avx512`]
//! (16-lane loads and masked stores, so a run of any length needs no scalar tail; loads
//! are whole vectors where the caller says they may read that far, masked otherwise). A packing routine is written once, generic over `Lanes`, and
//! instantiated inside a `#[target_feature(enable = "avx512f")]` entry point for the AVX-512
//! form, so the intrinsics inline into it. [`PackIsa`] is the run-time choice.

/// Which [`Lanes`] the packing uses. Chosen once per process from the CPU; the tests also
/// run the portable form on AVX-512 machines (`ConvVariant::ImplicitGemmPortablePack`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackIsa {
    Avx512,
    Portable,
}

impl PackIsa {
    /// AVX-512 when the CPU has it.
    pub fn best() -> PackIsa {
        #[cfg(target_arch = "x86_64")]
        if crate::gemm::kernels::Isa::best() == crate::gemm::kernels::Isa::Avx512 {
            return PackIsa::Avx512;
        }
        PackIsa::Portable
    }
}

/// Moves of up to a few panels' width. All pointers are raw because these run in the
/// innermost packing loops.
///
/// `avail` is how many floats from the strided operand's start may be read (at least
/// `(n − 1)·s + 1`): loading whole vectors where they fit costs less than masked loads,
/// which miss the cache badly on some CPUs (measured on AMD Zen: a masked-load gather of
/// DCGAN D2's input ran 1.5× slower than the same loads unmasked). Only the named
/// elements are ever written.
///
/// # Safety (for every method)
/// Every element named by the arguments must be inside a live allocation: `src[e·s]` /
/// `dst[e·s]` for `e < n` and the `avail` floats, for `transpose` the `rows × cols`
/// block read and the `cols × width` block written, and for `transpose_rows` the first
/// `cols` floats at each of the first `rows` addresses and the block written; no other
/// thread may write the `avail` floats during the call.
pub(crate) trait Lanes: Copy {
    /// `dst[e] = src[e·s]` for `e` in `0..n`; `src[..avail]` may be read.
    unsafe fn copy(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize);
    /// `dst[e·s] += src[e]` for `e` in `0..n`; `dst[..avail]` may be read.
    unsafe fn add_strided(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize);
    /// `dst[..n] = 0`.
    unsafe fn zero(dst: *mut f32, n: usize);
    /// A hint to bring the cache line holding `p` into L2; any address is allowed.
    fn prefetch(p: *const f32);
    /// `dst[c·ld + r] = src[r·ls + c]` for `c < cols` and `r < width`, where rows `r ≥ rows`
    /// of `src` read as zero (`rows ≤ width ≤ 16`, `cols ≤ 16`).
    unsafe fn transpose(
        src: *const f32,
        ls: usize,
        rows: usize,
        cols: usize,
        dst: *mut f32,
        ld: usize,
        width: usize,
    );
    /// [`Lanes::transpose`] with each row at its own address: `dst[c·ld + r] = src[r][c]`.
    unsafe fn transpose_rows(
        src: &[*const f32; 16],
        rows: usize,
        cols: usize,
        dst: *mut f32,
        ld: usize,
        width: usize,
    );
}

/// Plain loops: what a CPU without AVX-512 runs.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    unsafe fn copy(dst: *mut f32, src: *const f32, n: usize, s: usize, _avail: usize) {
        if s == 1 {
            // SAFETY: as below; the two ranges belong to different buffers.
            return unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
        }
        for e in 0..n {
            // SAFETY: the caller's contract covers dst[e] and src[e·s].
            unsafe { *dst.add(e) = *src.add(e * s) };
        }
    }

    #[inline(always)]
    unsafe fn add_strided(dst: *mut f32, src: *const f32, n: usize, s: usize, _avail: usize) {
        for e in 0..n {
            // SAFETY: as in `copy`.
            unsafe { *dst.add(e * s) += *src.add(e) };
        }
    }

    #[inline(always)]
    unsafe fn zero(dst: *mut f32, n: usize) {
        // SAFETY: the caller's contract covers dst[..n].
        unsafe { std::ptr::write_bytes(dst, 0, n) };
    }

    #[inline(always)]
    fn prefetch(_: *const f32) {}

    #[inline(always)]
    unsafe fn transpose(
        src: *const f32,
        ls: usize,
        rows: usize,
        cols: usize,
        dst: *mut f32,
        ld: usize,
        width: usize,
    ) {
        for c in 0..cols {
            for r in 0..width {
                // SAFETY: as in `copy`; r < rows for every read.
                unsafe { *dst.add(c * ld + r) = if r < rows { *src.add(r * ls + c) } else { 0.0 } };
            }
        }
    }

    #[inline(always)]
    unsafe fn transpose_rows(
        src: &[*const f32; 16],
        rows: usize,
        cols: usize,
        dst: *mut f32,
        ld: usize,
        width: usize,
    ) {
        for c in 0..cols {
            for (r, row) in src.iter().enumerate().take(width) {
                // SAFETY: as in `copy`; r < rows for every read.
                unsafe { *dst.add(c * ld + r) = if r < rows { *row.add(c) } else { 0.0 } };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::Avx512;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    /// 16-lane AVX-512. Only call its methods from code compiled with `avx512f` enabled
    /// (a `#[target_feature]` entry point, after checking the CPU).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512;

    /// The mask of the first `n` lanes (`n ≤ 16`).
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// Lanes 0, 2, 4, …: where stride-2 values land in a 16-lane window of the destination.
    const EVEN: __mmask16 = 0x5555;

    /// The first `c` floats at `p` (the rest zero), as a whole-vector load when `whole`
    /// says all 16 may be read.
    ///
    /// # Safety
    /// `p[..c]`, or `p[..16]` with `whole`, is readable.
    #[inline(always)]
    unsafe fn load(p: *const f32, c: usize, whole: bool) -> __m512 {
        // SAFETY: the caller's contract.
        unsafe {
            if whole {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(first(c), p)
            }
        }
    }

    /// Stores the first `c` lanes of `v` at `p`.
    ///
    /// # Safety
    /// `p[..c]` is writable.
    #[inline(always)]
    unsafe fn store(p: *mut f32, c: usize, v: __m512) {
        // SAFETY: the caller's contract.
        unsafe {
            if c == 16 {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, first(c), v)
            }
        }
    }

    #[inline(always)]
    fn idx(f: impl Fn(i32) -> i32) -> [i32; 16] {
        std::array::from_fn(|l| f(l as i32))
    }

    impl Lanes for Avx512 {
        /// Stride 1 is a plain copy; stride 2 loads the 31 source values of 16 outputs as
        /// two vectors and keeps the even ones with one two-source permute (`vpermt2ps`).
        #[inline(always)]
        unsafe fn copy(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize) {
            // SAFETY (whole body): loads stay inside `src[..avail]` (whole vectors) or the
            // copied elements (masked: masked-off lanes are not accessed); stores write the
            // first n elements of dst only.
            unsafe {
                match s {
                    1 => {
                        for e in (0..n).step_by(16) {
                            let c = (n - e).min(16);
                            let v = load(src.add(e), c, e + 16 <= avail);
                            store(dst.add(e), c, v);
                        }
                    }
                    2 => {
                        let even = _mm512_loadu_si512(idx(|l| 2 * l).as_ptr().cast());
                        for e in (0..n).step_by(16) {
                            let c = (n - e).min(16);
                            // Outputs e..e + c read src[2e ..= 2(e + c − 1)]: 2c − 1 values.
                            let span = 2 * c - 1;
                            let a = load(src.add(2 * e), span.min(16), 2 * e + 16 <= avail);
                            let b = if span > 16 {
                                load(src.add(2 * e + 16), span - 16, 2 * e + 32 <= avail)
                            } else {
                                _mm512_setzero_ps()
                            };
                            store(dst.add(e), c, _mm512_permutex2var_ps(a, even, b));
                        }
                    }
                    _ => super::Portable::copy(dst, src, n, s, avail),
                }
            }
        }

        /// Stride 2 spreads 8 source values over the even lanes of one 16-lane window of the
        /// destination (`vpermps`) and stores the sums under an even-lane mask, so the odd
        /// lanes are never written.
        #[inline(always)]
        unsafe fn add_strided(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize) {
            // SAFETY (whole body): as in `copy`, with the roles of src and dst swapped;
            // stores write the named elements only (masks `first(c)` and even lanes).
            unsafe {
                match s {
                    1 => {
                        for e in (0..n).step_by(16) {
                            let c = (n - e).min(16);
                            let v = load(src.add(e), c, c == 16);
                            let d = load(dst.add(e), c, e + 16 <= avail);
                            store(dst.add(e), c, _mm512_add_ps(d, v));
                        }
                    }
                    2 => {
                        let lo = _mm512_loadu_si512(idx(|l| l / 2).as_ptr().cast());
                        let hi = _mm512_loadu_si512(idx(|l| 8 + l / 2).as_ptr().cast());
                        for e in (0..n).step_by(16) {
                            let c = (n - e).min(16);
                            let v = load(src.add(e), c, c == 16);
                            for (half, spread) in [(0, lo), (1, hi)] {
                                let k = c.saturating_sub(8 * half).min(8);
                                if k == 0 {
                                    break;
                                }
                                let at = 2 * e + 16 * half;
                                let d = load(dst.add(at), 2 * k - 1, at + 16 <= avail);
                                let sum = _mm512_add_ps(d, _mm512_permutexvar_ps(spread, v));
                                _mm512_mask_storeu_ps(dst.add(at), EVEN & first(2 * k - 1), sum);
                            }
                        }
                    }
                    _ => super::Portable::add_strided(dst, src, n, s, avail),
                }
            }
        }

        #[inline(always)]
        fn prefetch(p: *const f32) {
            // SAFETY: a prefetch never faults and changes no program state.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) };
        }

        #[inline(always)]
        unsafe fn zero(dst: *mut f32, n: usize) {
            // SAFETY: masked stores of dst[..n] only.
            unsafe {
                for e in (0..n).step_by(16) {
                    _mm512_mask_storeu_ps(dst.add(e), first((n - e).min(16)), _mm512_setzero_ps());
                }
            }
        }

        /// A 16×16 transpose in registers, in four rounds of 16 shuffles: 32-bit interleaves
        /// of row pairs, 64-bit interleaves of those, then two rounds of 128-bit lane
        /// shuffles. After round two, vector `u[4g + c]` holds, in its 128-bit lane `L`,
        /// rows `4g..4g + 4` of column `4L + c`; rounds three and four gather lane `L` of
        /// `u[c], u[4 + c], u[8 + c], u[12 + c]` into output row `4L + c`.
        #[inline(always)]
        unsafe fn transpose(
            src: *const f32,
            ls: usize,
            rows: usize,
            cols: usize,
            dst: *mut f32,
            ld: usize,
            width: usize,
        ) {
            // SAFETY: loads of rows r < rows, lanes < cols; the stores are
            // `transpose_regs`'s, which the contract covers.
            unsafe {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, v) in r.iter_mut().enumerate().take(rows) {
                    *v = load(src.add(i * ls), cols, cols == 16);
                }
                transpose_regs(&r, cols, dst, ld, width)
            }
        }

        #[inline(always)]
        unsafe fn transpose_rows(
            src: &[*const f32; 16],
            rows: usize,
            cols: usize,
            dst: *mut f32,
            ld: usize,
            width: usize,
        ) {
            // SAFETY: as in `transpose`.
            unsafe {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, v) in r.iter_mut().enumerate().take(rows) {
                    *v = load(src[i], cols, cols == 16);
                }
                transpose_regs(&r, cols, dst, ld, width)
            }
        }
    }

    /// The transpose of 16 rows held in registers: `dst[c·ld + r] = r[r][c]` (lane `c` of
    /// register `r`; rows that were not loaded are zero) for `c < cols`, `r < width`.
    ///
    /// # Safety
    /// `dst` is writable at those positions; the CPU supports AVX-512F.
    #[inline(always)]
    unsafe fn transpose_regs(
        r: &[__m512; 16],
        cols: usize,
        dst: *mut f32,
        ld: usize,
        width: usize,
    ) {
        // SAFETY (whole body): stores of rows c < cols, lanes < width.
        unsafe {
            let mut t = [_mm512_setzero_ps(); 16];
            for (i, ti) in t.iter_mut().enumerate() {
                let (a, b) = (r[i & !1], r[i | 1]);
                *ti = if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                };
            }
            // u[4g + c]: from t[4g + (c / 2)] and t[4g + 2 + (c / 2)], low or high half.
            let mut u = [_mm512_setzero_ps(); 16];
            for (i, ui) in u.iter_mut().enumerate() {
                let (g, c) = (i / 4, i % 4);
                let a = _mm512_castps_pd(t[4 * g + c / 2]);
                let b = _mm512_castps_pd(t[4 * g + 2 + c / 2]);
                *ui = _mm512_castpd_ps(if c % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                });
            }
            // v[2c + h]: lanes (0, 2) (h = 0) or (1, 3) (h = 1) of u[c], u[4 + c]; w the
            // same of u[8 + c], u[12 + c].
            let (mut v, mut w) = ([_mm512_setzero_ps(); 8], [_mm512_setzero_ps(); 8]);
            for i in 0..8 {
                let (c, h) = (i / 2, i % 2);
                if h == 0 {
                    v[i] = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
                    w[i] = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
                } else {
                    v[i] = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
                    w[i] = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
                }
            }
            let mw = first(width);
            for col in 0..cols {
                // Column 4L + c: lane L of each; L = 0, 2 come from v/w[2c], L = 1, 3
                // from v/w[2c + 1], as the even (0x88) or odd (0xdd) lanes.
                let (l, c) = (col / 4, col % 4);
                let (a, b) = (v[2 * c + l % 2], w[2 * c + l % 2]);
                let o = if l < 2 {
                    _mm512_shuffle_f32x4::<0x88>(a, b)
                } else {
                    _mm512_shuffle_f32x4::<0xdd>(a, b)
                };
                _mm512_mask_storeu_ps(dst.add(col * ld), mw, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|i| i as f32 * 0.5 - 7.0).collect()
    }

    /// Every form, on this CPU, against the plain definitions, on lengths around the lane
    /// count and with guard values around the destination.
    #[test]
    fn moves_match_their_definitions() {
        for isa in [PackIsa::Portable, PackIsa::best()] {
            for s in 1..4 {
                for n in [0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40] {
                    let src = ramp(n * s + 20);
                    let mut dst = vec![f32::NAN; n + 3];
                    // SAFETY: src holds n·s elements, dst n.
                    unsafe { run_copy(isa, dst.as_mut_ptr(), src.as_ptr(), n, s, src.len()) };
                    for e in 0..n {
                        assert_eq!(dst[e], src[e * s], "{isa:?} copy s {s} n {n} at {e}");
                    }
                    assert!(
                        dst[n..].iter().all(|v| v.is_nan()),
                        "{isa:?} copy wrote past n"
                    );

                    let mut acc = ramp(n * s + 3);
                    let before = acc.clone();
                    let add = ramp(n).iter().map(|v| v * 3.0).collect::<Vec<_>>();
                    // SAFETY: acc holds (n − 1)·s + 1 elements, add n.
                    unsafe { run_add(isa, acc.as_mut_ptr(), add.as_ptr(), n, s, acc.len()) };
                    for (i, (a, b)) in acc.iter().zip(&before).enumerate() {
                        let want = if i % s == 0 && i / s < n {
                            b + add[i / s]
                        } else {
                            *b
                        };
                        assert_eq!(*a, want, "{isa:?} add_strided s {s} n {n} at {i}");
                    }
                }
            }
            for (rows, cols, width) in [
                (16, 16, 16),
                (12, 16, 12),
                (5, 3, 12),
                (1, 16, 16),
                (0, 4, 7),
            ] {
                let ls = 19;
                let src = ramp(16 * ls);
                let ld = 21;
                // Strided rows, then the rows in reverse order through their addresses.
                for gather in [false, true] {
                    let row = |r: usize| if gather { 15 - r } else { r };
                    let mut dst = vec![f32::NAN; 16 * ld];
                    // SAFETY: src holds 16 rows of ls ≥ cols, dst 16 rows of ld ≥ width.
                    unsafe {
                        run_transpose(
                            isa,
                            gather.then(|| std::array::from_fn(|r| src[row(r) * ls..].as_ptr())),
                            src.as_ptr(),
                            ls,
                            [rows, cols],
                            dst.as_mut_ptr(),
                            ld,
                            width,
                        )
                    };
                    for c in 0..16 {
                        for r in 0..ld {
                            let got = dst[c * ld + r];
                            if c < cols && r < width {
                                let want = if r < rows { src[row(r) * ls + c] } else { 0.0 };
                                assert_eq!(
                                    got, want,
                                    "{isa:?} transpose {rows}x{cols} gather {gather} at ({c}, {r})"
                                );
                            } else {
                                assert!(
                                    got.is_nan(),
                                    "{isa:?} transpose wrote outside at ({c}, {r})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    unsafe fn run_copy(
        isa: PackIsa,
        dst: *mut f32,
        src: *const f32,
        n: usize,
        s: usize,
        avail: usize,
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PackIsa::Avx512 is only chosen on CPUs with AVX-512F.
            PackIsa::Avx512 => unsafe { avx::copy(dst, src, n, s, avail) },
            // SAFETY: forwarded.
            _ => unsafe { Portable::copy(dst, src, n, s, avail) },
        }
    }

    unsafe fn run_add(
        isa: PackIsa,
        dst: *mut f32,
        src: *const f32,
        n: usize,
        s: usize,
        avail: usize,
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in run_copy.
            PackIsa::Avx512 => unsafe { avx::add(dst, src, n, s, avail) },
            // SAFETY: forwarded.
            _ => unsafe { Portable::add_strided(dst, src, n, s, avail) },
        }
    }

    /// `transpose`, or `transpose_rows` over the addresses `at` when given.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_transpose(
        isa: PackIsa,
        at: Option<[*const f32; 16]>,
        src: *const f32,
        ls: usize,
        [rows, cols]: [usize; 2],
        dst: *mut f32,
        ld: usize,
        width: usize,
    ) {
        match (isa, at) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in run_copy.
            (PackIsa::Avx512, None) => unsafe {
                avx::transpose(src, ls, rows, cols, dst, ld, width)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in run_copy.
            (PackIsa::Avx512, Some(at)) => unsafe {
                avx::transpose_rows(&at, rows, cols, dst, ld, width)
            },
            // SAFETY: forwarded.
            (_, None) => unsafe { Portable::transpose(src, ls, rows, cols, dst, ld, width) },
            // SAFETY: forwarded.
            (_, Some(at)) => unsafe { Portable::transpose_rows(&at, rows, cols, dst, ld, width) },
        }
    }

    /// The AVX-512 moves compiled for AVX-512.
    #[cfg(target_arch = "x86_64")]
    mod avx {
        use super::super::{Avx512, Lanes};

        #[target_feature(enable = "avx512f")]
        pub unsafe fn copy(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize) {
            // SAFETY: forwarded from the caller.
            unsafe { Avx512::copy(dst, src, n, s, avail) }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn add(dst: *mut f32, src: *const f32, n: usize, s: usize, avail: usize) {
            // SAFETY: forwarded from the caller.
            unsafe { Avx512::add_strided(dst, src, n, s, avail) }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn transpose_rows(
            src: &[*const f32; 16],
            rows: usize,
            cols: usize,
            dst: *mut f32,
            ld: usize,
            width: usize,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { Avx512::transpose_rows(src, rows, cols, dst, ld, width) }
        }

        #[target_feature(enable = "avx512f")]
        pub unsafe fn transpose(
            src: *const f32,
            ls: usize,
            rows: usize,
            cols: usize,
            dst: *mut f32,
            ld: usize,
            width: usize,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe { Avx512::transpose(src, ls, rows, cols, dst, ld, width) }
        }
    }
}
