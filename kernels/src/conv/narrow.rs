//! Convolutions with few output channels at stride 1 (SRResNet's and CycleGAN's last layer,
//! 64 → 3 channels through a 9×9 or 7×7 kernel), vectorised along the output row.
//!
//! The other rungs tile output channels (the GEMM's `M`, the direct kernel's 64-channel
//! panels): with 3 of them most of every vector is padding, and the packed GEMM spends its
//! time copying a `c_in·kh·kw`-deep im2col panel that each of the 3 channels reads once. Here a
//! vector holds 16 neighbouring pixels of one output row instead, so every lane does useful
//! work whatever `c_out` is.
//!
//! **Forward.** `y[co][oh][ow] = Σ_{ci,i,j} w[co][ci][i][j] · xp[ci][oh + i][ow + j]`, where
//! `xp` is the input with its zero padding written out. A tile is `C ≤ 4` output channels ×
//! `N ≤ 6` vectors of one output row (up to 96 pixels, `C·N ≤ 24` accumulators). For each tap
//! `(ci, i, j)` it broadcasts the `C` weights and loads the `N` input vectors at `xp[ci][oh +
//! i][16v + j]`, one float further along per `j` (unaligned loads of one padded row, which
//! the nine or so `j` of a row read from L1), and does `C·N` FMAs: 18 for 9 loads at 3
//! channels.
//!
//! **Backward-weight.** `dw[co][ci][i][j] = Σ_{n,oh,ow} dy[co][oh][ow] · xp[ci][oh + i][ow + j]`.
//! A tile is `C` output channels × `J` taps `j` of one kernel row (27 accumulators for 3 × 9):
//! for each 16-pixel vector of `dy` it loads the `C` vectors of `dy` and the `J` shifted input
//! vectors and does `C·J` FMAs, then sums each accumulator's lanes once at the end. `dy`'s rows
//! are copied with zeros past `w_out`, and the input vector at a row's end is loaded with its
//! lanes past `w_out` zeroed, so they add nothing (not even `0 · ∞`).
//!
//! **Parallel units and buffers.** The output rows of each image are cut into bands; a unit
//! copies the input rows its band reads (all channels, `rows + kh − 1` each, padded to
//! `16·⌈w_out/16⌉ + kw − 1` columns) into a buffer of its thread (kept for later calls): a
//! forward band of 8 rows stays in L2 while it is computed; a weight-gradient band of 32 rows
//! is read one input channel at a time. The weight gradient's units each write a partial `dw`, summed in a
//! fixed order at the end, so the result does not depend on the thread count or schedule.

// The tiles index their accumulators by channel and vector together; index loops say so.
#![allow(clippy::needless_range_loop)]

use super::direct::Pass;
use super::lanes::PackIsa;
use super::Conv2dGeom;
use crate::gemm::cpu::SendPtr;
use rayon::prelude::*;
use std::cell::RefCell;

/// Lanes per vector.
const L: usize = 16;
/// Output channels per tile at most.
const MAX_C: usize = 4;
/// Vectors of an output row per forward tile at most.
const MAX_N: usize = 6;
/// Output rows per forward unit.
const FWD_ROWS: usize = 8;
/// Output rows per weight-gradient unit: the lane sums at the end of each unit cost about
/// `1 / (rows · vectors per row)` of its FMAs.
const BW_ROWS: usize = 32;
/// Partial weight gradients at most (each unit range writes one).
const MAX_PARTIALS: usize = 16;

/// Whether this rung computes `g`'s forward and weight gradient: stride 1, dilation 1.
pub fn suits(g: &Conv2dGeom) -> bool {
    g.stride == [1, 1] && g.dilation == [1, 1]
}

/// Whether [`super::ConvVariant::Auto`] runs `pass` of `g` here: forward and weight
/// gradient with fewer than 32 output channels (where the direct kernel's 64-channel tiles
/// would be mostly empty), on AVX-512. Measured against the packed implicit GEMM (2 threads,
/// ms, forward / weight gradient): SRResNet's last layer (64 → 3, 9×9, 96×96, batch 16)
/// 111 / 219 → 10.7 / 22.9; CycleGAN's (64 → 3, 7×7 unpadded, 256×256, batch 4)
/// 132 / 226 → 12.7 / 23.6; 64 → 16 and 64 → 24 3×3 at 96×96 2–3× faster; and still 2–4×
/// on 8×8 images (half-empty vectors) and 3-channel or 1-channel inputs.
pub fn chosen(g: &Conv2dGeom, pass: Pass) -> bool {
    matches!(pass, Pass::Forward | Pass::BackwardWeight)
        && suits(g)
        && g.c_out < 32
        && !super::cpu::whole_input(g)
        && PackIsa::best() == PackIsa::Avx512
}

/// Sixteen lanes of arithmetic: AVX-512 registers or plain arrays.
///
/// # Safety (for every method)
/// Pointers are valid for the lanes named; the AVX-512 form needs a CPU with AVX-512F.
trait Lanes16: Copy {
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// `a · b + c`.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    /// Loads the first `n` lanes, the rest zero.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    /// Stores the first `n` lanes.
    unsafe fn store(self, p: *mut f32, n: usize);
    unsafe fn sum(self) -> f32;
}

#[derive(Clone, Copy)]
struct Portable([f32; L]);

impl Lanes16 for Portable {
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable([x; L])
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller's contract: 16 readable floats.
        Portable(unsafe { std::ptr::read_unaligned(p as *const [f32; L]) })
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        let mut v = [0.0; L];
        // SAFETY: the caller's contract: `n ≤ 16` readable floats.
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n) };
        Portable(v)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        Portable(std::array::from_fn(|l| a.0[l].mul_add(b.0[l], c.0[l])))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, n: usize) {
        // SAFETY: the caller's contract: `n ≤ 16` writable floats.
        unsafe { std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, n) }
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        self.0.iter().sum()
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes16;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Lanes16 for Avx512 {
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            // SAFETY: the caller runs on an AVX-512F CPU.
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            // SAFETY: the caller's contract.
            Avx512(unsafe { _mm512_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn load_first(p: *const f32, n: usize) -> Self {
            // SAFETY: the caller's contract: the first `n` lanes are readable (the masked
            // lanes are not touched).
            Avx512(unsafe { _mm512_maskz_loadu_ps(((1u32 << n) - 1) as __mmask16, p) })
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            // SAFETY: the caller runs on an AVX-512F CPU.
            Avx512(unsafe { _mm512_fmadd_ps(a.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, n: usize) {
            // SAFETY: the caller's contract: the first `n` lanes are writable.
            unsafe {
                if n == super::L {
                    _mm512_storeu_ps(p, self.0)
                } else {
                    _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as __mmask16, self.0)
                }
            }
        }
        #[inline(always)]
        unsafe fn sum(self) -> f32 {
            // SAFETY: the caller runs on an AVX-512F CPU.
            unsafe { _mm512_reduce_add_ps(self.0) }
        }
    }
}

/// The zero-padded input rows a band of output rows reads: `[c_in][rows + kh − 1][width]`,
/// column `c` holding input column `c − pad_w`.
struct Band {
    /// Floats per padded row: `16·⌈w_out/16⌉ + kw − 1`, so the last vector's loads stay inside.
    width: usize,
}

impl Band {
    fn new(g: &Conv2dGeom) -> Band {
        Band {
            width: g.w_out.div_ceil(L) * L + g.kw - 1,
        }
    }

    /// Input rows `r0 − pad_h ..` of image `n` for `rows` output rows from `r0`, into `buf`.
    fn fill(
        &self,
        x: &[f32],
        g: &Conv2dGeom,
        n: usize,
        r0: usize,
        rows: usize,
        buf: &mut Vec<f32>,
    ) {
        let (span, wd) = (rows + g.kh - 1, self.width);
        buf.clear();
        buf.resize(g.c_in * span * wd, 0.0);
        for ci in 0..g.c_in {
            let plane = &x[(n * g.c_in + ci) * g.h * g.w..][..g.h * g.w];
            for r in 0..span {
                let ih = (r0 + r) as isize - g.pad[0] as isize;
                if ih < 0 || ih as usize >= g.h {
                    continue;
                }
                let dst = &mut buf[(ci * span + r) * wd..][..wd];
                dst[g.pad[1]..g.pad[1] + g.w].copy_from_slice(&plane[ih as usize * g.w..][..g.w]);
            }
        }
    }
}

thread_local! {
    /// Per-thread copy of a unit's input rows, reused across calls.
    static XBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread copy of a weight-gradient unit's `dy` rows, reused across calls.
    static DYBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The output channels in tiles of at most four: `(first channel, count)`.
fn channel_tiles(c_out: usize) -> Vec<(usize, usize)> {
    (0..c_out)
        .step_by(MAX_C)
        .map(|c0| (c0, MAX_C.min(c_out - c0)))
        .collect()
}

/// One forward tile's operands.
struct FwdTile {
    /// The band buffer at channel 0, the tile's output row, its first column.
    x: *const f32,
    /// Floats between channels and between rows of the band buffer.
    ci_stride: usize,
    row_stride: usize,
    c_in: usize,
    kh: usize,
    kw: usize,
    /// The tile's channels' weights, `[ci][i][j][C]`.
    w: *const f32,
    bias: [f32; MAX_C],
    /// `y` at the tile's first channel, row and column; channels `plane` floats apart.
    y: *mut f32,
    plane: usize,
    /// Lanes of the last vector inside the row.
    last: usize,
}

/// `C` channels × `N` vectors: accumulate over every tap, then store.
///
/// # Safety
/// `t`'s pointers cover the band rows, weights and output row named; `V`'s CPU support.
#[inline(always)]
unsafe fn fwd_tile<V: Lanes16, const C: usize, const N: usize>(t: &FwdTile) {
    // SAFETY: every access is inside the buffers the caller names.
    unsafe {
        let mut acc: [[V; N]; C] = std::array::from_fn(|c| [V::splat(t.bias[c]); N]);
        let mut w = t.w;
        for ci in 0..t.c_in {
            for i in 0..t.kh {
                let row = t.x.add(ci * t.ci_stride + i * t.row_stride);
                for j in 0..t.kw {
                    let wv: [V; C] = std::array::from_fn(|c| V::splat(*w.add(c)));
                    w = w.add(C);
                    for v in 0..N {
                        let xv = V::load(row.add(L * v + j));
                        for c in 0..C {
                            acc[c][v] = V::fma(wv[c], xv, acc[c][v]);
                        }
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (v, a) in row.iter().enumerate() {
                let n = if v + 1 == N { t.last } else { L };
                a.store(t.y.add(c * t.plane + L * v), n);
            }
        }
    }
}

/// One weight-gradient tile's operands.
struct BwTile {
    /// The band buffer at the tile's channel `ci`, kernel row `i` and first tap `j0`.
    x: *const f32,
    row_stride: usize,
    /// The `dy` copy at the tile's first channel: `[C][rows][vectors·16]`.
    dy: *const f32,
    dy_stride: usize,
    rows: usize,
    vectors: usize,
    /// Lanes of each row's last vector inside the row (the input past it is not read, so
    /// an infinity there cannot make `0 · ∞`).
    last: usize,
    /// `dw` (or a partial) at `(co0, ci, i, j0)`; channels `co_stride` floats apart.
    dw: *mut f32,
    co_stride: usize,
}

/// `C` channels × `J` taps of one kernel row, summed over the unit's pixels, written once.
///
/// # Safety
/// As [`fwd_tile`].
#[inline(always)]
unsafe fn bw_tile<V: Lanes16, const C: usize, const J: usize>(t: &BwTile) {
    // SAFETY: every access is inside the buffers the caller names.
    unsafe {
        let mut acc: [[V; J]; C] = [[V::splat(0.0); J]; C];
        for r in 0..t.rows {
            let xr = t.x.add(r * t.row_stride);
            let dr = t.dy.add(r * t.vectors * L);
            for v in 0..t.vectors {
                let d: [V; C] = std::array::from_fn(|c| V::load(dr.add(c * t.dy_stride + L * v)));
                let lanes = if v + 1 == t.vectors { t.last } else { L };
                for j in 0..J {
                    let at = xr.add(L * v + j);
                    let xv = if lanes == L {
                        V::load(at)
                    } else {
                        V::load_first(at, lanes)
                    };
                    for c in 0..C {
                        acc[c][j] = V::fma(d[c], xv, acc[c][j]);
                    }
                }
            }
        }
        for (c, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                *t.dw.add(c * t.co_stride + j) = a.sum();
            }
        }
    }
}

type FwdFn = unsafe fn(&FwdTile);
type BwFn = unsafe fn(&BwTile);

/// Taps per weight-gradient tile at most, for `c` channels: `c·J` accumulators plus `c`
/// `dy` vectors and an input vector within 32 registers.
fn max_taps(c: usize) -> usize {
    if c == 4 {
        6
    } else {
        9
    }
}

// Monomorphised tiles, one per (ISA, C, N) and (ISA, C, J), chosen at run time.
macro_rules! shapes {
    ($f:ident, $c:expr, $n:expr, $ty:ty; $($cc:literal => [$($nn:literal),*]),*) => {
        match ($c, $n) {
            $($(($cc, $nn) => $f::<$cc, $nn> as $ty,)*)*
            _ => unreachable!("no tile for {} x {}", $c, $n),
        }
    };
}

macro_rules! fwd_table {
    ($f:ident, $c:expr, $n:expr) => {
        shapes!($f, $c, $n, FwdFn;
            1 => [1, 2, 3, 4, 5, 6], 2 => [1, 2, 3, 4, 5, 6],
            3 => [1, 2, 3, 4, 5, 6], 4 => [1, 2, 3, 4, 5, 6])
    };
}

macro_rules! bw_table {
    ($f:ident, $c:expr, $n:expr) => {
        shapes!($f, $c, $n, BwFn;
            1 => [1, 2, 3, 4, 5, 6, 7, 8, 9], 2 => [1, 2, 3, 4, 5, 6, 7, 8, 9],
            3 => [1, 2, 3, 4, 5, 6, 7, 8, 9], 4 => [1, 2, 3, 4, 5, 6])
    };
}

/// # Safety
/// As [`fwd_tile`].
unsafe fn fwd_portable<const C: usize, const N: usize>(t: &FwdTile) {
    // SAFETY: forwarded from the caller.
    unsafe { fwd_tile::<Portable, C, N>(t) }
}

/// # Safety
/// As [`bw_tile`].
unsafe fn bw_portable<const C: usize, const J: usize>(t: &BwTile) {
    // SAFETY: forwarded from the caller.
    unsafe { bw_tile::<Portable, C, J>(t) }
}

/// # Safety
/// As [`fwd_tile`]; the CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd_avx512<const C: usize, const N: usize>(t: &FwdTile) {
    // SAFETY: forwarded from the caller.
    unsafe { fwd_tile::<x86::Avx512, C, N>(t) }
}

/// # Safety
/// As [`bw_tile`]; the CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn bw_avx512<const C: usize, const J: usize>(t: &BwTile) {
    // SAFETY: forwarded from the caller.
    unsafe { bw_tile::<x86::Avx512, C, J>(t) }
}

fn fwd_fn(isa: PackIsa, c: usize, n: usize) -> FwdFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => fwd_table!(fwd_avx512, c, n),
        _ => fwd_table!(fwd_portable, c, n),
    }
}

fn bw_fn(isa: PackIsa, c: usize, j: usize) -> BwFn {
    match isa {
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => bw_table!(bw_avx512, c, j),
        _ => bw_table!(bw_portable, c, j),
    }
}

fn check(op: &str, g: &Conv2dGeom) {
    assert!(
        suits(g),
        "narrow {op}: needs stride 1 and dilation 1, got {g:?}"
    );
}

/// `y = conv(x, w) + bias`. Panics unless [`suits`]`(g)`.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    forward_with(x, w, bias, y, g, PackIsa::best());
}

/// [`conv2d_forward`] with the given tiles (the tests run both forms). Not public: the
/// AVX-512 tiles must only run where the CPU has them.
pub(super) fn forward_with(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    check("conv2d", g);
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv2d: bias length");
    }
    if y.is_empty() {
        return;
    }
    let (taps, plane) = (g.c_in * g.kh * g.kw, g.h_out * g.w_out);
    if taps == 0 {
        // No input channels: the bias alone.
        for (i, p) in y.chunks_mut(plane).enumerate() {
            p.fill(bias.map_or(0.0, |b| b[i % g.c_out]));
        }
        return;
    }
    // Weights per channel tile, tap-major with the tile's channels innermost.
    let tiles = channel_tiles(g.c_out);
    let mut wp = vec![0f32; g.c_out * taps];
    for &(c0, c) in &tiles {
        for t in 0..taps {
            for k in 0..c {
                wp[c0 * taps + t * c + k] = w[(c0 + k) * taps + t];
            }
        }
    }
    let band = Band::new(g);
    let bands = g.h_out.div_ceil(FWD_ROWS);
    let vectors = g.w_out.div_ceil(L);
    let yp = SendPtr(y.as_mut_ptr());
    (0..g.n * bands).into_par_iter().for_each(|u| {
        let (n, r0) = (u / bands, u % bands * FWD_ROWS);
        let rows = FWD_ROWS.min(g.h_out - r0);
        XBUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            band.fill(x, g, n, r0, rows, &mut buf);
            let span = rows + g.kh - 1;
            for r in 0..rows {
                for &(c0, c) in &tiles {
                    for v0 in (0..vectors).step_by(MAX_N) {
                        let nv = MAX_N.min(vectors - v0);
                        let last = g.w_out - (v0 + nv - 1) * L;
                        let mut bias_c = [0f32; MAX_C];
                        if let Some(b) = bias {
                            bias_c[..c].copy_from_slice(&b[c0..c0 + c]);
                        }
                        let t = FwdTile {
                            x: buf[r * band.width + L * v0..].as_ptr(),
                            ci_stride: span * band.width,
                            row_stride: band.width,
                            c_in: g.c_in,
                            kh: g.kh,
                            kw: g.kw,
                            w: wp[c0 * taps..].as_ptr(),
                            bias: bias_c,
                            // SAFETY: inside `y`: image n, channel c0, row r0 + r, column 16·v0.
                            y: unsafe {
                                yp.get()
                                    .add(((n * g.c_out + c0) * g.h_out + r0 + r) * g.w_out + L * v0)
                            },
                            plane,
                            last: last.min(L),
                        };
                        // SAFETY: the band holds rows r..r + kh of every channel, each
                        // `band.width` floats (covering 16·nv + kw − 1 from column 16·v0);
                        // `wp` holds the tile's taps·c weights; the output row has w_out
                        // columns from 16·v0 on, the last vector's `last` of them, and only
                        // this unit writes rows r0..r0 + rows of image n.
                        unsafe { fwd_fn(isa, c, nv)(&t) };
                    }
                }
            }
        });
    });
}

/// `dw` of the convolution `g`. Panics unless [`suits`]`(g)`.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    backward_weight_with(x, dy, dw, g, PackIsa::best());
}

/// [`conv2d_backward_weight`] with the given tiles.
pub(super) fn backward_weight_with(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    g: &Conv2dGeom,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d_backward_weight", [x.len(), dw.len(), dy.len()]);
    check("conv2d_backward_weight", g);
    if dw.is_empty() {
        return;
    }
    if dy.is_empty() {
        dw.fill(0.0);
        return;
    }
    let band = Band::new(g);
    let bands = g.h_out.div_ceil(BW_ROWS);
    let units = g.n * bands;
    let vectors = g.w_out.div_ceil(L);
    let tiles = channel_tiles(g.c_out);
    let taps = g.c_in * g.kh * g.kw;
    // Units in `parts` contiguous ranges, each summed into its own partial `dw`.
    let parts = units.min(MAX_PARTIALS);
    let mut partial = vec![0f32; parts * dw.len()];
    partial
        .par_chunks_mut(dw.len())
        .enumerate()
        .for_each(|(p, part)| {
            let (lo, hi) = (p * units / parts, (p + 1) * units / parts);
            let mut unit_dw = vec![0f32; part.len()];
            for u in lo..hi {
                let (n, r0) = (u / bands, u % bands * BW_ROWS);
                let rows = BW_ROWS.min(g.h_out - r0);
                XBUF.with(|xb| {
                    DYBUF.with(|db| {
                        let (mut xb, mut db) = (xb.borrow_mut(), db.borrow_mut());
                        band.fill(x, g, n, r0, rows, &mut xb);
                        // dy's rows, each widened to whole vectors with zeros.
                        let dstride = rows * vectors * L;
                        db.clear();
                        db.resize(g.c_out * dstride, 0.0);
                        for co in 0..g.c_out {
                            for r in 0..rows {
                                let src = &dy[((n * g.c_out + co) * g.h_out + r0 + r) * g.w_out..];
                                db[co * dstride + r * vectors * L..][..g.w_out]
                                    .copy_from_slice(&src[..g.w_out]);
                            }
                        }
                        let span = rows + g.kh - 1;
                        for ci in 0..g.c_in {
                            for i in 0..g.kh {
                                for &(c0, c) in &tiles {
                                    let most = max_taps(c);
                                    for j0 in (0..g.kw).step_by(most) {
                                        let nj = most.min(g.kw - j0);
                                        let t = BwTile {
                                            x: xb[(ci * span + i) * band.width + j0..].as_ptr(),
                                            row_stride: band.width,
                                            dy: db[c0 * dstride..].as_ptr(),
                                            dy_stride: dstride,
                                            rows,
                                            vectors,
                                            last: g.w_out - (vectors - 1) * L,
                                            dw: unit_dw[c0 * taps + (ci * g.kh + i) * g.kw + j0..]
                                                .as_mut_ptr(),
                                            co_stride: taps,
                                        };
                                        // SAFETY: the band holds rows i..i + rows of channel
                                        // ci, each `band.width` floats (covering 16·vectors +
                                        // nj − 1 from column j0); `db` holds the tile's c
                                        // channels of rows × 16·vectors floats; `unit_dw`
                                        // holds the c × nj entries written.
                                        unsafe { bw_fn(isa, c, nj)(&t) };
                                    }
                                }
                            }
                        }
                    })
                });
                for (a, b) in part.iter_mut().zip(&unit_dw) {
                    *a += b;
                }
            }
        });
    // The partials in order, so the sum is the same on any thread count.
    let len = dw.len();
    dw.par_iter_mut()
        .with_min_len(1024)
        .enumerate()
        .for_each(|(e, o)| *o = (0..parts).map(|p| partial[p * len + e]).sum());
}
