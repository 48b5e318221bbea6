//! Direct convolution: an implicit GEMM whose input operand is never packed.
//!
//! The forward pass is `Y[oc, q] = Σ_k W[oc, k] · X̂[k, q]` over output pixels `q = (n, oh, ow)`
//! and taps `k`. The packed implicit GEMM ([`super::cpu`]) copies `X̂` into panels first;
//! here the micro-kernel reads each `X̂[k, q]` where it already lies in a copy of the input:
//!
//! ```text
//! X̂[k, q] = xp[base[q] + koff[k]]
//!     base[q] = ((n·Hp + oh·sh)·Wp + ow·sw)·C        (the pixel's window origin)
//!     koff[k] = (i·dh·Wp + j·dw)·C + ic               (tap k = (i, j, ic))
//! ```
//!
//! where `xp` is the input channels-last (`[n][Hp][Wp][C]`) with its zero padding written
//! out, so every tap of every pixel is a plain load and no edge needs a branch, and
//! consecutive taps read adjacent channels: whole cache lines, in an order the hardware
//! prefetcher follows (with NCHW planes, consecutive taps of backward-data jumped a plane
//! each and DCGAN D2's pass ran 2x slower). Only the weights are packed: panels of 64 output
//! channels, `k`-major (`panel[k][0..64]`), in one pass over the weights per call (every
//! stride phase of backward-data at once), through 16×16 register transposes. The copy
//! costs about one pass over the input (rows two parallel units share are copied by both,
//! at most half again as many), where the packed GEMM writes and reads `kh·kw / (sh·sw)`
//! times the input's size.
//!
//! The micro-kernel ([`MicroTile`]) holds a 6-pixel × 64-channel tile of `Y` in 24 AVX-512
//! registers, each pixel's 64 channels as four 16-lane vectors. Per tap `k` it loads the four
//! weight vectors `W[oc0..oc0 + 64, k]` and broadcasts six input values, one per pixel, from
//! six base pointers plus the shared `koff[k]`: 24 FMAs for 10 loads. The tile is kept
//! pixel-major (`C[q][oc]`), so the result is transposed into NCHW once, at the end.
//!
//! `xp` is never made whole. The output rows are split into blocks of about [`PIX_BLOCK`]
//! pixels, and the blocks into parallel units of a few blocks (see [`Job::run`]); a unit
//! first copies the rows of `xp` that its blocks read into a buffer of its thread
//! ([`Src::rows_into`]), where they stay in cache while the blocks read them. Within a
//! block the taps run in slices of [`KC`]. For each slice and each 64-channel panel, the
//! panel's `KC × 64` weights (64 KiB) are streamed from L2 past every pixel tile of the
//! block, whose input rows for the slice stay in L1; the block's `C` tile
//! (`PIX_BLOCK × C_out`) stays in L2.

use super::lanes::{Lanes, PackIsa, Portable};
use super::{Conv2dGeom, Epilogue};
use crate::gemm::cpu::SendPtr;
use crate::scratch::Scratch;
use rayon::prelude::*;
use std::cell::RefCell;

/// A pass of the convolution, for [`suits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

/// Whether the direct kernel should run `pass` of `g` (what `ConvVariant::Auto` asks): its
/// tiles are 64 channels wide — output channels forward and for the weight gradient, input
/// channels for backward-data — so fewer than 32 would waste most of each FMA, and a
/// reduction shorter than 128 taps (DCGAN's 3-channel first layer: 48) leaves the padded
/// copy and the transposes around it dominant; there the packed implicit GEMM wins
/// (measured on D1 forward at batch 64: direct 2.1 ms, packed 1.6 ms). A kernel covering the
/// whole input is a dense GEMM and stays one.
///
/// Only with AVX-512: elsewhere the micro-tile is plain loops, which the compiler vectorises
/// at the baseline width (SSE2, NEON) without FMA, while the packed kernel's GEMM has an
/// AVX2+FMA and a NEON micro-kernel.
pub fn suits(g: &Conv2dGeom, pass: Pass) -> bool {
    if PackIsa::best() != PackIsa::Avx512 || super::cpu::whole_input(g) {
        return false;
    }
    let taps = g.kh * g.kw;
    match pass {
        Pass::Forward => g.c_out >= 32 && g.c_in * taps >= 128,
        // Each stride phase reduces over about taps / (sh·sw) of the kernel.
        Pass::BackwardData => {
            g.c_in >= 32 && g.c_out * taps / (g.stride[0] * g.stride[1]).max(1) >= 128
        }
        Pass::BackwardWeight => g.c_out >= 32,
    }
}

/// Output channels per weight panel: four 16-lane vectors.
pub const OC_TILE: usize = 64;
/// Output pixels per micro-tile.
pub const PIX_TILE: usize = 6;
/// Taps per slice of the reduction.
const KC: usize = 256;
/// Output pixels per parallel block (a multiple of [`PIX_TILE`]).
const PIX_BLOCK: usize = 16 * PIX_TILE;

/// A 6-pixel × 64-channel tile: `C[q][v]` for pixels `q < 6` and channels `v < 64` at
/// `c[q·ldc + v]`, computed as `Σ_p a[p·64 + v] · base[q][koff[p]]` over `p < kc`, added to
/// `C` when `add` is set.
///
/// # Safety
/// `a` holds `kc·64` floats, `koff` holds `kc` offsets, every `base[q] + koff[p]` is inside
/// one live allocation, `c` is valid for the 6 rows of 64 floats at stride `ldc`, and no
/// other thread touches those rows.
type MicroTile = unsafe fn(
    kc: usize,
    a: *const f32,
    koff: *const u32,
    base: &[*const f32; PIX_TILE],
    c: *mut f32,
    ldc: usize,
    add: bool,
);

/// One reduction step of a tile: `acc[q][v] += a[v] · *x[q]`.
///
/// # Safety
/// `a[..64]` and every `x[q]` are readable.
#[inline(always)]
unsafe fn fma_step_portable(
    acc: &mut [[f32; OC_TILE]; PIX_TILE],
    a: *const f32,
    x: [*const f32; PIX_TILE],
) {
    // SAFETY: the caller's contract.
    let w = unsafe { std::slice::from_raw_parts(a, OC_TILE) };
    for (row, x) in acc.iter_mut().zip(x) {
        // SAFETY: the caller's contract.
        let x = unsafe { *x };
        for (r, wv) in row.iter_mut().zip(w) {
            *r += wv * x;
        }
    }
}

/// Writes (or adds) the 6 × 64 accumulators to rows of `c` at stride `ldc`.
///
/// # Safety
/// `c` is valid for 6 rows of 64 floats at stride `ldc`.
unsafe fn write_tile_portable(
    acc: &[[f32; OC_TILE]; PIX_TILE],
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    for (q, row) in acc.iter().enumerate() {
        // SAFETY: row q, per the contract.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(q * ldc), OC_TILE) };
        for (d, r) in dst.iter_mut().zip(row) {
            *d = if add { *d + r } else { *r };
        }
    }
}

/// The plain-loop micro-tile, for CPUs without AVX-512 (and tested on every machine).
///
/// # Safety
/// See [`MicroTile`].
unsafe fn tile_portable(
    kc: usize,
    a: *const f32,
    koff: *const u32,
    base: &[*const f32; PIX_TILE],
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut acc = [[0f32; OC_TILE]; PIX_TILE];
    for p in 0..kc {
        // SAFETY: bounds per the contract.
        unsafe {
            let o = *koff.add(p) as usize;
            fma_step_portable(&mut acc, a.add(p * OC_TILE), base.map(|q| q.add(o)));
        }
    }
    // SAFETY: `c` rows per the contract.
    unsafe { write_tile_portable(&acc, c, ldc, add) };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Job, PackUnit, SendPtr, OC_TILE, PIX_TILE};
    use crate::conv::lanes::Avx512;
    use std::arch::x86_64::*;

    /// # Safety
    /// As [`super::store_block`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn store_block(job: &Job, cb: &mut [f32], at: &[(usize, u32)], dst: SendPtr) {
        // SAFETY: forwarded from the caller.
        unsafe { super::store_block::<Avx512>(job, cb, at, dst) }
    }

    /// One reduction step of a tile: `acc[q][v] += a[16v..16v + 16] · *x[q]`, four weight
    /// vectors against six broadcast values.
    ///
    /// # Safety
    /// `a[..64]` and every `x[q]` are readable; the CPU supports AVX-512F.
    #[inline(always)]
    unsafe fn fma_step(
        acc: &mut [[__m512; 4]; PIX_TILE],
        a: *const f32,
        x: [*const f32; PIX_TILE],
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            let w = [
                _mm512_loadu_ps(a),
                _mm512_loadu_ps(a.add(16)),
                _mm512_loadu_ps(a.add(32)),
                _mm512_loadu_ps(a.add(48)),
            ];
            for (row, x) in acc.iter_mut().zip(x) {
                let x = _mm512_set1_ps(*x);
                for (r, wv) in row.iter_mut().zip(&w) {
                    *r = _mm512_fmadd_ps(*wv, x, *r);
                }
            }
        }
    }

    /// Writes (or adds) the 6 × 64 accumulators to rows of `c` at stride `ldc`.
    ///
    /// # Safety
    /// `c` is valid for 6 rows of 64 floats at stride `ldc`; the CPU supports AVX-512F.
    #[inline(always)]
    unsafe fn write_tile(acc: &[[__m512; 4]; PIX_TILE], c: *mut f32, ldc: usize, add: bool) {
        for (q, row) in acc.iter().enumerate() {
            for (v, r) in row.iter().enumerate() {
                // SAFETY: inside row q, per the contract.
                unsafe {
                    let dst = c.add(q * ldc + 16 * v);
                    let sum = if add {
                        _mm512_add_ps(*r, _mm512_loadu_ps(dst))
                    } else {
                        *r
                    };
                    _mm512_storeu_ps(dst, sum);
                }
            }
        }
    }

    /// AVX-512 weight-gradient tile: 24 zmm accumulators, `acc[t][v]` = tap `t`, channels
    /// `16v..16v + 16`.
    ///
    /// # Safety
    /// See [`super::MicroTileW`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_w_avx512(
        kc: usize,
        a: *const f32,
        base: *const *const f32,
        off: &[usize; PIX_TILE],
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let o = *off;
        let mut acc = [[_mm512_setzero_ps(); 4]; PIX_TILE];
        for p in 0..kc {
            // SAFETY: bounds per the contract: pixel p's window origin plus each tap offset.
            unsafe {
                let b = *base.add(p);
                fma_step(&mut acc, a.add(p * OC_TILE), o.map(|t| b.add(t)));
            }
        }
        // SAFETY: `c` rows per the contract.
        unsafe { write_tile(&acc, c, ldc, add) };
    }

    /// # Safety
    /// As [`super::pack_unit_with`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn pack_unit<F: Fn(usize) -> usize>(u: &PackUnit<F>) {
        // SAFETY: forwarded from the caller.
        unsafe { super::pack_unit_with::<Avx512, F>(u) }
    }

    /// # Safety
    /// As [`super::transpose_into`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_into(
        src: *const f32,
        ls: usize,
        [rows, cols]: [usize; 2],
        dst: *mut f32,
        ld: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { super::transpose_into::<Avx512>(src, ls, [rows, cols], dst, ld) }
    }

    /// AVX-512 micro-tile: 24 zmm accumulators, `acc[q][v]` = pixel `q`, channels
    /// `16v..16v + 16`.
    ///
    /// # Safety
    /// See [`super::MicroTile`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_avx512(
        kc: usize,
        a: *const f32,
        koff: *const u32,
        base: &[*const f32; PIX_TILE],
        c: *mut f32,
        ldc: usize,
        add: bool,
    ) {
        let b = *base;
        let mut acc = [[_mm512_setzero_ps(); 4]; PIX_TILE];
        for p in 0..kc {
            // SAFETY: bounds per the contract: each window origin plus tap p's offset.
            unsafe {
                let o = *koff.add(p) as usize;
                fma_step(&mut acc, a.add(p * OC_TILE), b.map(|q| q.add(o)));
            }
        }
        // SAFETY: `c` rows per the contract.
        unsafe { write_tile(&acc, c, ldc, add) };
    }
}

/// The weight-gradient tile: `C[t][v]` for taps `t < 6` and channels `v < 64` at
/// `c[t·ldc + v]`, computed as `Σ_p a[p·64 + v] · base[p][off[t]]` over pixels `p < kc`
/// (added to `C` when `add` is set).
///
/// # Safety
/// `a` holds `kc·64` floats, `base` holds `kc` pointers, every `base[p] + off[t]` is inside
/// one live allocation, `c` is valid for the 6 rows of 64 floats at stride `ldc`, and no
/// other thread touches those rows.
type MicroTileW = unsafe fn(
    kc: usize,
    a: *const f32,
    base: *const *const f32,
    off: &[usize; PIX_TILE],
    c: *mut f32,
    ldc: usize,
    add: bool,
);

/// The plain-loop weight-gradient tile.
///
/// # Safety
/// See [`MicroTileW`].
unsafe fn tile_w_portable(
    kc: usize,
    a: *const f32,
    base: *const *const f32,
    off: &[usize; PIX_TILE],
    c: *mut f32,
    ldc: usize,
    add: bool,
) {
    let mut acc = [[0f32; OC_TILE]; PIX_TILE];
    for p in 0..kc {
        // SAFETY: bounds per the contract.
        unsafe {
            let b = *base.add(p);
            fma_step_portable(&mut acc, a.add(p * OC_TILE), off.map(|t| b.add(t)));
        }
    }
    // SAFETY: `c` rows per the contract.
    unsafe { write_tile_portable(&acc, c, ldc, add) };
}

/// `dst[c·ld + r] = src[r·ls + c]` for the whole `rows × cols` block, in 16×16 pieces.
///
/// # Safety
/// `src` is readable and `dst` writable over those blocks, and no other thread writes the
/// part of `dst`.
#[inline(always)]
unsafe fn transpose_into<L: Lanes>(
    src: *const f32,
    ls: usize,
    [rows, cols]: [usize; 2],
    dst: *mut f32,
    ld: usize,
) {
    for r0 in (0..rows).step_by(16) {
        let nr = (rows - r0).min(16);
        for c0 in (0..cols).step_by(16) {
            // SAFETY: a 16×16 piece of the caller's blocks.
            unsafe {
                L::transpose(
                    src.add(r0 * ls + c0),
                    ls,
                    nr,
                    (cols - c0).min(16),
                    dst.add(c0 * ld + r0),
                    ld,
                    nr,
                )
            };
        }
    }
}

/// [`transpose_into`] with the ISA's moves.
///
/// # Safety
/// As [`transpose_into`].
unsafe fn transpose(
    isa: PackIsa,
    src: *const f32,
    ls: usize,
    rc: [usize; 2],
    dst: *mut f32,
    ld: usize,
) {
    match isa {
        // SAFETY: forwarded; the ISA was detected.
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => unsafe { x86::transpose_into(src, ls, rc, dst, ld) },
        // SAFETY: forwarded.
        _ => unsafe { transpose_into::<Portable>(src, ls, rc, dst, ld) },
    }
}

fn micro_tile_w(isa: PackIsa) -> MicroTileW {
    match isa {
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => x86::tile_w_avx512,
        _ => tile_w_portable,
    }
}

fn micro_tile(isa: PackIsa) -> MicroTile {
    match isa {
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => x86::tile_avx512,
        _ => tile_portable,
    }
}

/// One reduction of a [`Job`]: its own taps and packed weights, over its own columns of
/// every grid row.
struct Part {
    /// Weights packed by [`pack_panels`]: `channels` rounded up to panels of 64, `k`-major.
    wpk: Scratch,
    /// Offset of each tap `k` from a pixel's window origin in `src`.
    koff: Vec<u32>,
    /// Pixels of this part per grid row.
    cols: usize,
    /// Window origin of the part's pixel `(n, r, c)` in `src`:
    /// `src_at + n·s[0] + r·s[1] + c·s[2]` (`s` the job's `src_step`).
    src_at: usize,
    /// Position of the part's pixel `(n, r, c)`, channel `ch` in the destination:
    /// `dst_at + n·d[0] + r·d[1] + c·d[2] + ch·d[3]` (`d` the job's `dst_step`).
    dst_at: usize,
}

impl Part {
    /// The farthest tap from a window origin.
    fn reach(&self) -> usize {
        self.koff.iter().max().map_or(0, |&k| k as usize)
    }
}

/// One direct-convolution GEMM per part, `dst[ch][pixel] = Σ_k wpk[ch][k] ·
/// src[origin(pixel) + koff[k]]`, over a grid of rows `(n, r)` that every part shares. The
/// forward pass is one job of one part; backward-data is one job per row phase, with a part
/// per column phase, so that a block holds whole rows of `dx` and writes them contiguously.
struct Job<'a> {
    /// The zero-padded source: the input (forward) or the output gradient (backward-data).
    src: Src<'a>,
    parts: Vec<Part>,
    /// Output channels actually written.
    channels: usize,
    /// Images, rows per image.
    grid: [usize; 2],
    src_step: [usize; 3],
    dst_step: [usize; 4],
    /// Applied to each finished tile row (its channels) before it is stored.
    ep: Epilogue<'a>,
}

impl Job<'_> {
    /// Runs the job over every grid row: blocks of about [`PIX_BLOCK`] pixels (whole rows),
    /// grouped into units of a few blocks that run in parallel.
    ///
    /// # Safety
    /// For every part, pixel `(n, r, c)` of the grid and tap `k`, the window origin plus
    /// `koff[k]` lies inside `src`; `dst` is valid for every destination position of every
    /// pixel and channel, no two pixels share one, and nothing else accesses them during
    /// the call.
    unsafe fn run(&self, dst: SendPtr, isa: PackIsa) {
        let [images, rows] = self.grid;
        let s = self.src_step;
        let rowlen = self.src.row_len();
        // Each part's farthest tap from a window origin, once.
        let reach: Vec<usize> = self.parts.iter().map(Part::reach).collect();
        let live = || self.parts.iter().zip(&reach).filter(|(p, _)| p.cols > 0);
        // Rows of the padded source that grid rows ga..gb read (as `Src` numbers them).
        let span = |ga: usize, gb: usize| {
            let (na, ra, nb, rb) = (ga / rows, ga % rows, (gb - 1) / rows, (gb - 1) % rows);
            let lo = live().map(|(p, _)| p.src_at + na * s[0] + ra * s[1]).min();
            let hi = live()
                .map(|(p, reach)| p.src_at + nb * s[0] + rb * s[1] + (p.cols - 1) * s[2] + reach)
                .max();
            (lo.unwrap_or(0) / rowlen, hi.map_or(0, |h| h / rowlen + 1))
        };
        debug_assert!(images * rows == 0 || span(0, images * rows).1 <= self.src.rows());
        let tile = micro_tile(isa);
        let cols: usize = self.parts.iter().map(|p| p.cols).sum();
        let per_block = (PIX_BLOCK / cols.max(1)).max(1);
        let total = images * rows;
        if total == 0 {
            return;
        }
        // A unit — the parallel step — is a run of blocks: it copies the source rows they
        // read, channels-last, into a buffer of its thread that stays in cache while the
        // blocks read it. (A copy of the whole source first went out to memory and back:
        // 10% of D2's forward pass.) Adjacent units both copy the rows between them, so a
        // unit takes enough blocks that those are at most half of its own rows, and no more:
        // larger units cost balance between the threads (measured on D3's backward-data:
        // five units per job ran 17% slower than units of one block).
        let (a0, a1) = span(0, per_block.min(total));
        let own = (per_block * (s[1] / rowlen.max(1)).max(1)).max(1);
        let halo = (a1 - a0).saturating_sub(own);
        let fit = (SRC_BUDGET / rowlen.max(1) / (a1 - a0).max(1)).max(1);
        // (And at least 4 units per thread where there are enough blocks: a small batch.)
        let spread = (total / (per_block * 4 * rayon::current_num_threads())).max(1);
        let per_unit = per_block * (2 * halo).div_ceil(own).clamp(1, fit.min(spread));
        (0..total.div_ceil(per_unit))
            .into_par_iter()
            .for_each(|unit| {
                let (ua, ub) = (unit * per_unit, ((unit + 1) * per_unit).min(total));
                let (lo, hi) = span(ua, ub);
                SRCBUF.with(|sb| {
                    let mut sb = sb.borrow_mut();
                    sb.resize((hi - lo) * rowlen, 0.0);
                    self.src.rows_into(lo, &mut sb, isa);
                    // Window origin `o` of the full source is `o − lo·rowlen` here.
                    let src = &sb[..];
                    for g0 in (ua..ub).step_by(per_block) {
                        let nr = per_block.min(ub - g0);
                        // SAFETY: every window origin of the unit's pixels plus every tap
                        // offset lies in rows lo..hi (`span`), which `src` holds from
                        // offset lo·rowlen.
                        unsafe { self.block(g0, nr, src, lo * rowlen, dst, tile, isa) };
                    }
                });
            });
    }

    /// One block: grid rows `g0..g0 + nr`, reading `src`, the source from offset `at0`.
    ///
    /// # Safety
    /// As [`Job::run`], for the block's pixels, with `src` holding every row they read.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        g0: usize,
        nr: usize,
        src: &[f32],
        at0: usize,
        dst: SendPtr,
        tile: MicroTile,
        isa: PackIsa,
    ) {
        let [_, rows] = self.grid;
        let s = self.src_step;
        let ocp = self.channels.div_ceil(OC_TILE) * OC_TILE;
        let cols: usize = self.parts.iter().map(|p| p.cols).sum();
        // Each pixel's destination (channel 0) and row of the block's C tile.
        let mut at: Vec<(usize, u32)> = Vec::with_capacity(nr * cols);
        let mut origins = vec![];
        CBUF.with(|cb| {
            let mut cb = cb.borrow_mut();
            let tiles_of = |p: &Part| (nr * p.cols).div_ceil(PIX_TILE);
            let cb_rows: usize = self.parts.iter().map(|p| tiles_of(p) * PIX_TILE).sum();
            cb.resize(cb_rows * ocp, 0.0);
            let c = cb.as_mut_ptr();
            let mut row0 = 0;
            for part in &self.parts {
                let np = nr * part.cols;
                if np == 0 {
                    continue;
                }
                let tiles = tiles_of(part);
                // Window origins; the last tile's spare slots repeat the last pixel.
                origins.clear();
                for t in 0..tiles * PIX_TILE {
                    let i = t.min(np - 1);
                    let (gr, col) = (g0 + i / part.cols, i % part.cols);
                    let (n, r) = (gr / rows, gr % rows);
                    let d = self.dst_step;
                    if t < np {
                        let to = part.dst_at + n * d[0] + r * d[1] + col * d[2];
                        at.push((to, (row0 + t) as u32));
                    }
                    let o = part.src_at + n * s[0] + r * s[1] + col * s[2] - at0;
                    debug_assert!(o + part.reach() < src.len());
                    // SAFETY: a window origin lies inside `src` (the contract).
                    origins.push(unsafe { src.as_ptr().add(o) });
                }
                let k = part.koff.len();
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    for panel in 0..ocp / OC_TILE {
                        let a = part.wpk[(panel * k + pc) * OC_TILE..].as_ptr();
                        for (t, b) in origins.chunks_exact(PIX_TILE).enumerate() {
                            // SAFETY: `a` holds the panel's `kc` taps from `pc`,
                            // `koff` `kc` offsets from `pc`, each of which stays
                            // inside the image of any window origin; `c` has the
                            // tile's 6 rows of `ocp` floats, this thread's own.
                            unsafe {
                                tile(
                                    kc,
                                    a,
                                    part.koff.as_ptr().add(pc),
                                    b.try_into().unwrap(),
                                    c.add((row0 + t * PIX_TILE) * ocp + panel * OC_TILE),
                                    ocp,
                                    pc > 0,
                                )
                            };
                        }
                    }
                }
                row0 += tiles * PIX_TILE;
            }
            // Destination order: runs of adjacent pixels, across parts and rows.
            at.sort_unstable_by_key(|e| e.0);
            // SAFETY: the block's pixels are this thread's alone.
            unsafe { store(self, &mut cb[..cb_rows * ocp], &at, dst, isa) };
        });
    }
}

/// Writes a finished block to the destination, applying the job's epilogue (bias, activation)
/// first: `cb[row·ocp + ch]` for each `(position, row)` of `at` (sorted by position), in runs
/// of up to 16 pixels at adjacent positions, transposed 16 channels at a time.
///
/// # Safety
/// `dst` holds every position of `at` and every channel, and no other thread writes them.
#[inline(always)]
unsafe fn store_block<L: Lanes>(job: &Job, cb: &mut [f32], at: &[(usize, u32)], dst: SendPtr) {
    let ocp = job.channels.div_ceil(OC_TILE) * OC_TILE;
    if !job.ep.is_identity() {
        for &(_, row) in at {
            let row = row as usize * ocp;
            job.ep.apply_channels(&mut cb[row..row + job.channels]);
        }
    }
    let dch = job.dst_step[3];
    let mut i = 0;
    while i < at.len() {
        let first = at[i].0;
        let run = at[i..]
            .iter()
            .take(16)
            .enumerate()
            .take_while(|&(r, e)| e.0 == first + r)
            .count();
        let mut rows = [cb.as_ptr(); 16];
        for ch0 in (0..job.channels).step_by(16) {
            for (r, e) in rows.iter_mut().zip(&at[i..i + run]) {
                *r = cb[e.1 as usize * ocp + ch0..].as_ptr();
            }
            // SAFETY: reads channels ch0..ch0 + 16 of the run's rows of `cb`; writes those
            // channels of the run's pixels, inside `dst` and this thread's own.
            unsafe {
                L::transpose_rows(
                    &rows,
                    run,
                    (job.channels - ch0).min(16),
                    dst.get().add(first + ch0 * dch),
                    dch,
                    run,
                )
            };
        }
        i += run;
    }
}

/// [`store_block`] with the ISA's moves.
///
/// # Safety
/// As [`store_block`].
unsafe fn store(job: &Job, cb: &mut [f32], at: &[(usize, u32)], dst: SendPtr, isa: PackIsa) {
    match isa {
        // SAFETY: forwarded; the ISA was detected.
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => unsafe { x86::store_block(job, cb, at, dst) },
        // SAFETY: forwarded.
        _ => unsafe { store_block::<Portable>(job, cb, at, dst) },
    }
}

thread_local! {
    /// Per-thread `C` tile of a pixel block, reused across calls.
    static CBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread copy of a unit's source rows, reused across calls.
    static SRCBUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Floats of source rows a parallel unit of a [`Job`] copies at most (unless one block
/// needs more): 1 MiB, so that they stay in cache next to the block's `C` tile.
const SRC_BUDGET: usize = 1 << 18;

/// A job's source: `x` (`[n][c][h][w]`) channels-last, in images of `hp × wp` pixels with
/// `x` at row `top`, column `left` and zeros around it — `[n][hp][wp][c]`, numbered as one
/// run of `n·hp` rows of `wp·c` floats. It is never made whole: each unit of the job copies
/// the rows it reads ([`Src::rows_into`]).
#[derive(Clone, Copy)]
struct Src<'a> {
    x: &'a [f32],
    c: usize,
    hw: [usize; 2],
    padded: [usize; 2],
    top_left: [usize; 2],
}

impl Src<'_> {
    /// Floats per row.
    fn row_len(&self) -> usize {
        self.padded[1] * self.c
    }

    /// Rows in all.
    fn rows(&self) -> usize {
        let [h, w] = self.hw;
        self.x.len() / (self.c * h * w).max(1) * self.padded[0]
    }

    /// Rows `lo..` into `out` (whole rows, as many as it holds).
    fn rows_into(&self, lo: usize, out: &mut [f32], isa: PackIsa) {
        let ([h, w], [hp, _], [top, left], c) = (self.hw, self.padded, self.top_left, self.c);
        // The transposes below read image `img` of `x`: it must exist.
        assert!(
            lo + out.len() / self.row_len() <= self.rows(),
            "direct conv: source rows past the input"
        );
        for (i, dst) in out.chunks_exact_mut(self.row_len()).enumerate() {
            let (img, r) = ((lo + i) / hp, (lo + i) % hp);
            if r < top || r >= top + h {
                dst.fill(0.0);
                continue;
            }
            dst[..left * c].fill(0.0);
            dst[(left + w) * c..].fill(0.0);
            let from = &self.x[img * c * h * w + (r - top) * w..];
            // SAFETY: reads `c` channel rows of `w` floats (stride h·w) of image img, which
            // exists (asserted above), and writes `w` pixels of `c` channels inside this row
            // of `out`.
            unsafe {
                transpose(
                    isa,
                    from.as_ptr(),
                    h * w,
                    [c, w],
                    dst[left * c..].as_mut_ptr(),
                    c,
                )
            };
        }
    }
}

/// `src` (`[n][c][h][w]`) copied into zeroed planes of `hp × wp` at row `top`, column `left`.
fn padded(
    src: &[f32],
    [h, w]: [usize; 2],
    [hp, wp]: [usize; 2],
    [top, left]: [usize; 2],
) -> Scratch {
    let mut out = Scratch::take(src.len() / (h * w).max(1) * hp * wp);
    out.par_chunks_mut(hp * wp)
        .zip(src.par_chunks(h * w))
        .for_each(|(dst, src)| {
            // Borders are zeroed, the rest copied: a reused buffer holds old values.
            dst[..top * wp + left].fill(0.0);
            for (r, row) in src.chunks(w).enumerate() {
                let at = (r + top) * wp + left;
                dst[at..at + w].copy_from_slice(row);
                let next = if r + 1 < h { at + wp } else { dst.len() };
                dst[at + w..next].fill(0.0);
            }
        });
    out
}

/// Packs the weights of one or more jobs in one pass over `w`: for job `j`, panels of 64
/// channels, `k`-major, zero past `channels`:
/// `out[j][(panel·k + p)·64 + v] = w[ch·stride + idx[j][p]]` with `ch = panel·64 + v` and
/// `k = idx[j].len()`.
///
/// `w` is read as blocks `[b][ch][s]` — position `idx = b·channels·stride + s` with
/// `s < stride` — in 16-channel × 16-position pieces, each transposed in registers into 16
/// vectors of 16 channels, which go to the rows of the jobs that use those positions. The
/// positions of the jobs must be distinct. (A plain gather reads 64 cache lines per row it
/// writes: measured at 17% of DCGAN D4's forward pass.)
fn pack_panels(
    channels: usize,
    stride: usize,
    idx: &[&[usize]],
    w: &[f32],
    isa: PackIsa,
) -> Vec<Scratch> {
    let panels = channels.div_ceil(OC_TILE);
    let blocks = w.len() / (channels * stride).max(1);
    // Where each position of `w`'s blocks goes: (job, row), or none.
    let mut dest = vec![(u32::MAX, 0u32); blocks * stride];
    for (j, idx) in idx.iter().enumerate() {
        for (p, &at) in idx.iter().enumerate() {
            let (b, s) = (at / (channels * stride), at % (channels * stride));
            debug_assert!(s < stride && dest[b * stride + s].0 == u32::MAX);
            dest[b * stride + s] = (j as u32, p as u32);
        }
    }
    let mut out: Vec<Scratch> = idx
        .iter()
        .map(|idx| Scratch::take(panels * idx.len() * OC_TILE))
        .collect();
    let to: Vec<(SendPtr, usize)> = out
        .iter_mut()
        .zip(idx)
        .map(|(o, idx)| (SendPtr(o.as_mut_ptr()), idx.len()))
        .collect();
    // One unit per 16 channels of a panel and block; units write disjoint vectors.
    let groups = OC_TILE / 16;
    (0..panels * groups * blocks)
        .into_par_iter()
        .for_each(|unit| {
            let (pg, b) = (unit / blocks, unit % blocks);
            let (panel, grp) = (pg / groups, pg % groups);
            let ch0 = panel * OC_TILE + grp * 16;
            let chs = channels.saturating_sub(ch0).min(16);
            let unit = PackUnit {
                // A group wholly past `channels` reads nothing (its rows are zeros).
                src: if chs > 0 {
                    w[(b * channels + ch0) * stride..].as_ptr()
                } else {
                    w.as_ptr()
                },
                chs,
                stride,
                dest: &dest[b * stride..(b + 1) * stride],
                to: &to,
                at: |j: usize| (panel * to[j].1) * OC_TILE + grp * 16,
            };
            // SAFETY: the unit reads its `chs` channel rows of block b (inside `w`) and
            // writes, for each position some job uses, 16 floats of that job's row, inside
            // its buffer; (panel, group, position) triples are distinct across units.
            unsafe { pack_unit(&unit, isa) };
        });
    out
}

/// One 16-channel group of one block, for [`pack_panels`].
struct PackUnit<'a, F> {
    /// Channel `ch0` of the block: rows of `stride` positions (when `chs > 0`; else unread).
    src: *const f32,
    /// Channels present (0 to 16); the rest of the 16 are written as zeros.
    chs: usize,
    stride: usize,
    /// (job, row) of each position of the block, job `u32::MAX` for none.
    dest: &'a [(u32, u32)],
    /// Each job's buffer and its `k`.
    to: &'a [(SendPtr, usize)],
    /// Offset in job `j`'s buffer of this group's row 0.
    at: F,
}

/// # Safety
/// As [`pack_panels`] states for its units.
#[inline(always)]
unsafe fn pack_unit_with<L: Lanes, F: Fn(usize) -> usize>(u: &PackUnit<F>) {
    let mut buf = [0f32; 256];
    for s0 in (0..u.stride).step_by(16) {
        let cols = (u.stride - s0).min(16);
        let dest = &u.dest[s0..s0 + cols];
        if dest.iter().all(|d| d.0 == u32::MAX) {
            continue;
        }
        // SAFETY: reads `chs` rows of `cols` positions (none, and no pointer past `src`,
        // when `chs` is 0); buf holds 16 × 16.
        unsafe {
            L::transpose(
                if u.chs > 0 { u.src.add(s0) } else { u.src },
                u.stride,
                u.chs,
                cols,
                buf.as_mut_ptr(),
                16,
                16,
            )
        };
        for (c, &(j, p)) in dest.iter().enumerate() {
            if j != u32::MAX {
                let (ptr, _) = u.to[j as usize];
                // SAFETY: row p of job j, this unit's 16 channels (the caller's contract).
                unsafe {
                    let d = ptr.get().add((u.at)(j as usize) + p as usize * OC_TILE);
                    std::ptr::copy_nonoverlapping(buf[c * 16..].as_ptr(), d, 16);
                }
            }
        }
    }
}

/// [`pack_unit_with`] with the ISA's moves.
///
/// # Safety
/// As [`pack_unit_with`].
unsafe fn pack_unit<F: Fn(usize) -> usize>(u: &PackUnit<F>, isa: PackIsa) {
    match isa {
        // SAFETY: forwarded; the ISA was detected.
        #[cfg(target_arch = "x86_64")]
        PackIsa::Avx512 => unsafe { x86::pack_unit(u) },
        // SAFETY: forwarded.
        _ => unsafe { pack_unit_with::<Portable, F>(u) },
    }
}

/// Forward convolution (same contract as the reference kernel), with the best micro-tile
/// for this CPU.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    let ep = Epilogue { bias, act: None };
    forward_with(x, w, ep, y, g, PackIsa::best())
}

/// [`conv2d_forward`] with the plain-loop micro-tile.
pub fn conv2d_forward_portable(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
) {
    let ep = Epilogue { bias, act: None };
    forward_with(x, w, ep, y, g, PackIsa::Portable)
}

/// Forward convolution with an epilogue (bias, activation) applied to each tile before it
/// is stored.
pub(super) fn forward_with(
    x: &[f32],
    w: &[f32],
    ep: Epilogue,
    y: &mut [f32],
    g: &Conv2dGeom,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    check_geometry("conv2d", g);
    ep.check("conv2d", g.c_out);
    if y.is_empty() {
        return;
    }
    if x.is_empty() {
        // No input pixels (h, w or c_in is 0): every tap reads padding.
        super::cpu::conv2d_forward(x, w, ep.bias, y, g);
        let act = Epilogue { bias: None, ..ep };
        return act.apply_planes(y, g.c_out, g.h_out * g.w_out);
    }
    let ([ph, pw], [sh, sw], [dh, dw]) = (g.pad, g.stride, g.dilation);
    let (hp, wp, c) = (g.h + 2 * ph, g.w + 2 * pw, g.c_in);
    let xp = Src {
        x,
        c,
        hw: [g.h, g.w],
        padded: [hp, wp],
        top_left: [ph, pw],
    };
    let image = hp * wp * c;
    check_offsets("conv2d", image);
    // Taps in (i, j, ic) order: consecutive taps read adjacent channels.
    let (taps, k) = (g.kh * g.kw, g.c_in * g.kh * g.kw);
    let split = |t: usize| (t / (g.kw * c), t / c % g.kw, t % c);
    let koff = (0..k)
        .map(|t| {
            let (i, j, ic) = split(t);
            ((i * dh * wp + j * dw) * c + ic) as u32
        })
        .collect();
    let idx: Vec<usize> = (0..k)
        .map(|t| {
            let (i, j, ic) = split(t);
            ic * taps + i * g.kw + j
        })
        .collect();
    let plane = g.h_out * g.w_out;
    let job = Job {
        src: xp,
        parts: vec![Part {
            wpk: pack_panels(g.c_out, k, &[&idx], w, isa).remove(0),
            koff,
            cols: g.w_out,
            src_at: 0,
            dst_at: 0,
        }],
        channels: g.c_out,
        grid: [g.n, g.h_out],
        src_step: [image, sh * wp * c, sw * c],
        dst_step: [g.c_out * plane, g.w_out, 1, plane],
        ep,
    };
    // SAFETY: the largest window origin plus the largest tap offset is the last padded
    // pixel of the last image (the output size follows from the input's, checked above);
    // each output pixel and channel is one element of `y`.
    unsafe { job.run(SendPtr(y.as_mut_ptr()), isa) };
}

/// The kernels index the padded input from the output size: it must be the one the other
/// fields give (the fields are public), or reads would leave the buffers.
fn check_geometry(op: &str, g: &Conv2dGeom) {
    let want = [
        Conv2dGeom::output_len(g.h, g.kh, g.stride[0], g.pad[0], g.dilation[0]),
        Conv2dGeom::output_len(g.w, g.kw, g.stride[1], g.pad[1], g.dilation[1]),
    ];
    assert_eq!(
        want,
        [Some(g.h_out), Some(g.w_out)],
        "{op}: output size {}x{} does not follow from {g:?}",
        g.h_out,
        g.w_out
    );
}

fn check_offsets(op: &str, image: usize) {
    assert!(
        image <= u32::MAX as usize,
        "{op}: an image of {image} floats (padded) overflows the direct kernel's tap offsets"
    );
}

/// Gradient w.r.t. the input (same contract as the reference kernel), with the best
/// micro-tile for this CPU.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    backward_data_with(dy, w, Epilogue::default(), dx, g, PackIsa::best())
}

/// [`conv2d_backward_data`] with the plain-loop micro-tile.
pub fn conv2d_backward_data_portable(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    backward_data_with(dy, w, Epilogue::default(), dx, g, PackIsa::Portable)
}

/// The taps of one axis that land on input positions of phase `rho` (positions `u` of the
/// padded input with `u mod s = rho`), each as `(tap, c)`: the tap reads output position
/// `u / s − c`.
fn phase_taps(k: usize, s: usize, d: usize, rho: usize) -> Vec<(usize, usize)> {
    (0..k)
        .filter(|i| i * d % s == rho)
        .map(|i| (i, (i * d - rho) / s))
        .collect()
}

/// Backward-data split by stride phase: input pixels whose padded coordinates are
/// `(U·sh + ρ, V·sw + σ)` receive only the taps `(i, j)` with `i·dh ≡ ρ (mod sh)` and
/// `j·dw ≡ σ (mod sw)`, from output gradient position `(U − ci, V − cj)`. Each phase is a
/// stride-1 convolution of the output gradient — zero-padded by the largest `c` above and
/// enough below — with those taps, written to every `sh`-th row and `sw`-th column of `dx`.
/// The column phases of one row phase are the parts of one [`Job`], so each block holds
/// whole rows of `dx` and stores them contiguously (one job per phase, storing every
/// `sw`-th float, spent 11% of DCGAN D3's pass in those stores).
///
/// The epilogue `ep` (over `dx`'s `c_in` channels: a transposed convolution's bias and
/// activation) is applied to each tile as it is stored, or in one pass after when some
/// pixels of `dx` are never stored.
pub(super) fn backward_data_with(
    dy: &[f32],
    w: &[f32],
    ep: Epilogue,
    dx: &mut [f32],
    g: &Conv2dGeom,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d backward_data", [dx.len(), w.len(), dy.len()]);
    check_geometry("conv2d backward_data", g);
    ep.check("conv2d backward_data", g.c_in);
    let ([ph, pw], [sh, sw], [dh, dw]) = (g.pad, g.stride, g.dilation);
    // Phases that no tap reaches (a kernel shorter than the stride) keep zeros.
    let untouched = (0..sh).any(|r| phase_taps(g.kh, sh, dh, r).is_empty())
        || (0..sw).any(|r| phase_taps(g.kw, sw, dw, r).is_empty());
    if (untouched || dy.is_empty()) && !ep.is_identity() {
        // Those zeros need the epilogue too: run without it, then over all of `dx`.
        backward_data_with(dy, w, Epilogue::default(), dx, g, isa);
        return ep.apply_planes(dx, g.c_in, g.h * g.w);
    }
    if untouched || dy.is_empty() {
        dx.par_iter_mut().for_each(|v| *v = 0.0);
    }
    if dy.is_empty() || dx.is_empty() {
        return;
    }
    let (top, left) = ((g.kh - 1) * dh / sh, (g.kw - 1) * dw / sw);
    // Largest U (V) of any input pixel: (h − 1 + ph) / sh.
    let (u_max, v_max) = ((g.h - 1 + ph) / sh, (g.w - 1 + pw) / sw);
    let hq = (g.h_out + top).max(u_max + top + 1);
    let wq = (g.w_out + left).max(v_max + left + 1);
    let c = g.c_out;
    let dyp = Src {
        x: dy,
        c,
        hw: [g.h_out, g.w_out],
        padded: [hq, wq],
        top_left: [top, left],
    };
    let image = hq * wq * c;
    check_offsets("conv2d backward_data", image);
    // Each phase's taps, tap offsets, weight positions and place in `dx`, by row phase.
    struct Phase {
        row_phase: usize,
        koff: Vec<u32>,
        idx: Vec<usize>,
        cols: usize,
        src_at: usize,
        dst_at: usize,
    }
    let (mut phases, mut row_phases) = (vec![], vec![]);
    for rho in 0..sh {
        // Input rows of this phase: ih = U·sh + ρ − ph for U in u0..=u1 with 0 ≤ ih < h.
        let u0 = (ph.saturating_sub(rho)).div_ceil(sh);
        let ti = phase_taps(g.kh, sh, dh, rho);
        if u0 * sh + rho < ph || u0 * sh + rho - ph >= g.h || ti.is_empty() {
            continue;
        }
        let u1 = (g.h - 1 + ph - rho) / sh;
        for sigma in 0..sw {
            let v0 = (pw.saturating_sub(sigma)).div_ceil(sw);
            if v0 * sw + sigma < pw || v0 * sw + sigma - pw >= g.w {
                continue;
            }
            let v1 = (g.w - 1 + pw - sigma) / sw;
            let tj = phase_taps(g.kw, sw, dw, sigma);
            if tj.is_empty() {
                continue;
            }
            // Taps k = (a, b, oc) over this phase's (ti[a], tj[b]), channels adjacent.
            let (na, nb) = (ti.len(), tj.len());
            let k = c * na * nb;
            let split = |t: usize| (t / (nb * c), t / c % nb, t % c);
            let koff = (0..k)
                .map(|t| {
                    let (a, b, oc) = split(t);
                    (((top - ti[a].1) * wq + (left - tj[b].1)) * c + oc) as u32
                })
                .collect();
            let idx = (0..k)
                .map(|t| {
                    let (a, b, oc) = split(t);
                    (oc * g.c_in * g.kh + ti[a].0) * g.kw + tj[b].0
                })
                .collect();
            // The window origin of pixel (n, r, col) is (r·wq + col)·c past row u0,
            // column v0 of image n of the padded gradient.
            phases.push(Phase {
                row_phase: row_phases.len(),
                koff,
                idx,
                cols: v1 + 1 - v0,
                src_at: (u0 * wq + v0) * c,
                dst_at: (u0 * sh + rho - ph) * g.w + v0 * sw + sigma - pw,
            });
        }
        row_phases.push(u1 + 1 - u0);
    }
    // A weight belongs to one phase at most: all phases are packed in one pass over `w`.
    let idx: Vec<&[usize]> = phases.iter().map(|p| &p.idx[..]).collect();
    let mut wpk = pack_panels(g.c_in, g.kh * g.kw, &idx, w, isa).into_iter();
    let mut jobs: Vec<Job> = row_phases
        .iter()
        .map(|&rows| Job {
            src: dyp,
            parts: vec![],
            channels: g.c_in,
            grid: [g.n, rows],
            src_step: [image, wq * c, c],
            dst_step: [g.c_in * g.h * g.w, sh * g.w, sw, g.h * g.w],
            ep,
        })
        .collect();
    for phase in phases {
        jobs[phase.row_phase].parts.push(Part {
            wpk: wpk.next().unwrap(),
            koff: phase.koff,
            cols: phase.cols,
            src_at: phase.src_at,
            dst_at: phase.dst_at,
        });
    }
    let dxp = SendPtr(dx.as_mut_ptr());
    for job in jobs {
        // SAFETY: reads stay inside the padded gradient (rows u0 + r + top − ci ≤
        // u1 + top < hq, columns likewise); each input pixel belongs to one phase and is
        // one element of `dx` per channel.
        unsafe { job.run(dxp, isa) };
    }
}

/// Gradient w.r.t. the weight (same contract as the reference kernel), with the best
/// micro-tile for this CPU.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    backward_weight_with(x, dy, dw, g, PackIsa::best())
}

/// [`conv2d_backward_weight`] with the plain-loop micro-tile.
pub fn conv2d_backward_weight_portable(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    backward_weight_with(x, dy, dw, g, PackIsa::Portable)
}

/// Taps per parallel unit of the weight gradient (a multiple of [`PIX_TILE`]).
const TAP_BLOCK: usize = 16 * PIX_TILE;
/// Pixels per slice of the weight gradient's reduction.
const PIX_SLICE: usize = 256;

/// `dWᵀ[k][oc] = Σ_q X̂[k, q] · dY[oc, q]`: the forward pass's roles turned around. The
/// micro-tile holds 6 taps × 64 channels; per pixel `q` it loads the 64 channels of the
/// output gradient — packed pixel-major, `dyt[panel][q][0..64]`, by 16×16 transposes — and
/// broadcasts the 6 taps' inputs from the pixel's window origin. Taps are split into units
/// of [`TAP_BLOCK`]; when there are too few units to keep every thread busy, the pixels are
/// split too, and the partial gradients summed.
fn backward_weight_with(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom, isa: PackIsa) {
    g.assert_buffers("conv2d backward_weight", [x.len(), dw.len(), dy.len()]);
    check_geometry("conv2d backward_weight", g);
    if dw.is_empty() {
        return;
    }
    let plane = g.h_out * g.w_out;
    let pixels = g.n * plane;
    if pixels == 0 || x.is_empty() {
        // No output pixels, or every tap reads padding.
        dw.fill(0.0);
        return;
    }
    let ([ph, pw], [sh, sw], [dh, dwl]) = (g.pad, g.stride, g.dilation);
    let (hp, wp) = (g.h + 2 * ph, g.w + 2 * pw);
    let copy;
    let xp: &[f32] = if ph == 0 && pw == 0 {
        x
    } else {
        copy = padded(x, [g.h, g.w], [hp, wp], [ph, pw]);
        &copy
    };
    let image = g.c_in * hp * wp;
    let (taps, k) = (g.kh * g.kw, g.c_in * g.kh * g.kw);
    let kt = k.div_ceil(PIX_TILE) * PIX_TILE;
    // Tap offsets, the spare ones past k repeating the last tap.
    let koff: Vec<usize> = (0..kt)
        .map(|t| {
            let t = t.min(k - 1);
            let (ic, i, j) = (t / taps, t / g.kw % g.kh, t % g.kw);
            ic * hp * wp + i * dh * wp + j * dwl
        })
        .collect();
    let base: Vec<*const f32> = (0..pixels)
        .map(|q| {
            let (n, p) = (q / plane, q % plane);
            let (oh, ow) = (p / g.w_out, p % g.w_out);
            // SAFETY: the window origin of an output pixel is inside the padded input.
            unsafe { xp.as_ptr().add(n * image + oh * sh * wp + ow * sw) }
        })
        .collect();
    struct Bases(Vec<*const f32>);
    // SAFETY: read-only pointers into `xp`, which outlives every use below.
    unsafe impl Sync for Bases {}
    impl Bases {
        fn at(&self, q: usize) -> *const *const f32 {
            self.0[q..].as_ptr()
        }
    }
    let base = Bases(base);

    // The output gradient pixel-major, channels padded to whole panels.
    let panels = g.c_out.div_ceil(OC_TILE);
    let ocp = panels * OC_TILE;
    let mut dyt = Scratch::take(panels * pixels * OC_TILE);
    if !g.c_out.is_multiple_of(OC_TILE) {
        // The transposes below write the real channels only; zeros keep the padded
        // channels' (unread) sums finite.
        dyt.fill(0.0);
    }
    dyt.par_chunks_mut(plane * OC_TILE)
        .enumerate()
        .for_each(|(i, dst)| {
            let (panel, n) = (i / g.n, i % g.n);
            let chs = OC_TILE.min(g.c_out - panel * OC_TILE);
            let src = &dy[(n * g.c_out + panel * OC_TILE) * plane..];
            // SAFETY: reads chs channel planes of image n, writes this chunk.
            unsafe {
                transpose(
                    isa,
                    src.as_ptr(),
                    plane,
                    [chs, plane],
                    dst.as_mut_ptr(),
                    OC_TILE,
                )
            };
        });
    // dyt is [panel][n][p][64]: panel `panel`'s rows for all pixels are contiguous.

    // At least MIN_UNITS parallel units; a fixed count, not the thread count, so the
    // summation order (and the result) is the same on every machine.
    const MIN_UNITS: usize = 8;
    let units = kt.div_ceil(TAP_BLOCK);
    let parts = MIN_UNITS.div_ceil(units).min(pixels.div_ceil(PIX_SLICE));
    let per_part = pixels.div_ceil(parts);
    // Every part non-empty: its partial is written, not added to.
    let parts = pixels.div_ceil(per_part);
    let tile = micro_tile_w(isa);
    // One unit's taps t0.. over the pixels of `part`, into `c` (`[tap][ocp]`).
    let reduce = |part: usize, t0: usize, c: &mut [f32]| {
        let ntiles = c.len() / ocp / PIX_TILE;
        let (q0, q1) = (part * per_part, ((part + 1) * per_part).min(pixels));
        for s0 in (q0..q1).step_by(PIX_SLICE) {
            let kc = PIX_SLICE.min(q1 - s0);
            for panel in 0..panels {
                let a = dyt[(panel * pixels + s0) * OC_TILE..].as_ptr();
                for tt in 0..ntiles {
                    let off: &[usize; PIX_TILE] =
                        koff[t0 + tt * PIX_TILE..][..PIX_TILE].try_into().unwrap();
                    // SAFETY: `a` holds `kc` pixels of the panel from `s0`, `base` `kc`
                    // window origins from `s0`, each tap offset stays in its image; `c` is
                    // this unit's own.
                    unsafe {
                        tile(
                            kc,
                            a,
                            base.at(s0),
                            off,
                            c.as_mut_ptr().add(tt * PIX_TILE * ocp + panel * OC_TILE),
                            ocp,
                            s0 > q0,
                        )
                    };
                }
            }
        }
    };
    // dWᵀ[k][oc] → dW[oc][k] for taps t0..t0 + nt, in blocks of 16 taps.
    let dwp = SendPtr(dw.as_mut_ptr());
    let write = |t0: usize, nt: usize, c: &[f32]| {
        for b in (0..nt).step_by(16) {
            // SAFETY: reads taps t0 + b.. of `c`; writes those columns of dW, the unit's own.
            unsafe {
                transpose(
                    isa,
                    c[b * ocp..].as_ptr(),
                    ocp,
                    [(nt - b).min(16), g.c_out],
                    dwp.get().add(t0 + b),
                    k,
                )
            };
        }
    };
    if parts == 1 {
        // Each unit writes its taps of dW from a tile of its thread.
        (0..units).into_par_iter().for_each(|unit| {
            let t0 = unit * TAP_BLOCK;
            let nt = TAP_BLOCK.min(kt - t0);
            CBUF.with(|cb| {
                let mut cb = cb.borrow_mut();
                cb.resize(nt * ocp, 0.0);
                reduce(0, t0, &mut cb);
                write(t0, nt.min(k - t0), &cb);
            });
        });
        return;
    }
    // dWᵀ partials: [part][kt][ocp], summed into part 0.
    let mut dwt = Scratch::take(parts * kt * ocp);
    dwt.par_chunks_mut(kt * ocp)
        .enumerate()
        .flat_map(|(part, buf)| {
            buf.par_chunks_mut(TAP_BLOCK * ocp)
                .enumerate()
                .map(move |(unit, c)| (part, unit, c))
        })
        .for_each(|(part, unit, c)| reduce(part, unit * TAP_BLOCK, c));
    let (sum, rest) = dwt.split_at_mut(kt * ocp);
    for part in rest.chunks(kt * ocp) {
        sum.par_iter_mut().zip(part).for_each(|(s, p)| *s += p);
    }
    let sum: &[f32] = sum;
    (0..units).into_par_iter().for_each(|unit| {
        let t0 = unit * TAP_BLOCK;
        write(t0, TAP_BLOCK.min(k.saturating_sub(t0)), &sum[t0 * ocp..]);
    });
}
