//! Winograd F(2×2, 3×3): 3×3 stride-1 convolutions in 16 multiplies per 2×2 output tile
//! instead of 36 (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks").
//!
//! For one input channel, a 4×4 input patch `d` (rows `2i − pad ..`, columns `2j − pad ..`)
//! and a 3×3 filter `g` give the 2×2 output tile `(2i.., 2j..)` as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//!
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢1/2  1/2  1/2⎥    Aᵀ = ⎡1  1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢1/2 −1/2  1/2⎥         ⎣0  1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```
//!
//! and summing over input channels commutes with `Aᵀ [·] A`, so for each of the 16
//! positions `ξ` of the 4×4 transformed tile the channel sum is one GEMM:
//! `M[ξ] (c_out × tiles) = U[ξ] (c_out × c_in) · V[ξ] (c_in × tiles)`, with `U = G g Gᵀ`
//! (the filter transform, once per call) and `V = Bᵀ d B` (the input transform).
//!
//! The work is cut into blocks of up to [`TILES`] tiles of one image (a segment of a long
//! tile row, or several short tile rows), one rayon task each. The filter transform writes `U` once per call, already in the GEMM
//! micro-kernel's packed A layout (panels of `mr` output channels); a block's input transform
//! writes `V` straight into the packed B layout (panels of `nr` tiles), so the sixteen
//! products are bare micro-kernel calls with nothing to pack, and `V` (16·c_in·T floats) and
//! `M` (16·c_out·T) stay in L2 until the output transform writes the block's output
//! rows. Both transforms run along the tile row, so they vectorise over tiles: the input
//! rows are split into even and odd columns first (tile `j` reads columns `2j .. 2j + 4`),
//! and the output tiles' two columns are interleaved back.
//!
//! Backward-data of a 3×3 stride-1 layer is the forward convolution of `dy` with the
//! flipped, channel-transposed filter and padding `2 − pad`, so it runs the same code.
//!
//! Rounding: the transforms add at most three terms (and halve exactly), so each product is
//! of slightly rounded operands and the channel sum is a GEMM's; the tests bound the error
//! by the same computation on absolute values (see `tests.rs`).

// The transforms read several arrays at the same position; index loops say so plainly.
#![allow(clippy::needless_range_loop)]

use super::Conv2dGeom;
use crate::gemm::cpu::SendPtr;
use crate::gemm::kernels::{Isa, MicroKernel};
use rayon::prelude::*;
use std::cell::RefCell;

/// Tiles per block at most.
const TILES: usize = 96;

/// Whether the Winograd path computes `g`'s forward: a 3×3 kernel, stride 1, dilation 1.
pub fn suits(g: &Conv2dGeom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == [1, 1] && g.dilation == [1, 1]
}

/// Whether it computes `g`'s backward-data too: the flipped forward needs padding
/// `2 − pad ≥ 0`.
pub fn suits_backward_data(g: &Conv2dGeom) -> bool {
    suits(g) && g.pad[0] <= 2 && g.pad[1] <= 2
}

/// Whether [`super::ConvVariant::Auto`] runs `pass` of `g` here: a 3×3 stride-1 forward or
/// backward-data with 32 to 128 channels on each side (so the channel sum is a deep enough
/// GEMM and the output channels fill the micro-tiles, while a block's buffers stay in L2),
/// on AVX-512, where it was measured
/// faster than the direct kernel (SRResNet's 64→64 layer: 25.8 → 19.8 ms per pass on 2
/// threads). The transforms round differently from a direct sum (see the module doc).
pub fn chosen(g: &Conv2dGeom, pass: super::direct::Pass) -> bool {
    use super::direct::Pass;
    let fits = match pass {
        Pass::Forward => suits(g),
        Pass::BackwardData => suits_backward_data(g),
        Pass::BackwardWeight => false,
    };
    fits && (32..=128).contains(&g.c_in)
        && (32..=128).contains(&g.c_out)
        && super::lanes::PackIsa::best() == super::lanes::PackIsa::Avx512
}

/// `y = conv(x, w) + bias`. Panics unless [`suits`]`(g)`.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    assert!(
        suits(g),
        "winograd conv2d: needs a 3x3 stride-1 kernel, got {g:?}"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv2d: bias length");
    }
    forward_with(x, w, bias, y, g, &Isa::best().kernel(), Transform::Best);
}

/// Which build of the input transform runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The widest vectors the CPU has (AVX-512 where present).
    Best,
    /// Plain loops for any CPU.
    Portable,
}

/// [`conv2d_forward`] with a given micro-kernel and transform build (the tests run every
/// one the CPU has).
pub fn forward_with(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
    kern: &MicroKernel,
    tf: Transform,
) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    assert!(
        suits(g),
        "winograd conv2d: needs a 3x3 stride-1 kernel, got {g:?}"
    );
    let u = filter_transform(w, g.c_out, g.c_in, false, kern.mr);
    forward_u(x, &u, bias, y, g, kern, tf);
}

/// `dx` of a 3×3 stride-1 convolution: the forward of `dy` with the flipped, transposed
/// filter. Panics unless [`suits_backward_data`]`(g)`.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    assert!(
        suits_backward_data(g),
        "winograd conv2d_backward_data: needs a 3x3 stride-1 kernel with padding <= 2, got {g:?}"
    );
    let flipped = Conv2dGeom {
        c_in: g.c_out,
        c_out: g.c_in,
        h: g.h_out,
        w: g.w_out,
        h_out: g.h,
        w_out: g.w,
        pad: [2 - g.pad[0], 2 - g.pad[1]],
        ..*g
    };
    let kern = Isa::best().kernel();
    let u = filter_transform(w, g.c_out, g.c_in, true, kern.mr);
    forward_u(dy, &u, None, dx, &flipped, &kern, Transform::Best);
}

/// `U[ξ] = G g Gᵀ` for each filter `g = w[o][i]`, packed for the micro-kernel: for each `ξ`,
/// panels of `mr` output channels, `i`-major: `u[((ξ·panels + q)·ins + i)·mr + r]` is
/// output channel `q·mr + r` (zero past the last). With `flip`, the filter of the
/// backward-data convolution: output channel `o` is the layer's input channel, and
/// `g[r][c] = w[i][o][2 − r][2 − c]`.
fn filter_transform(w: &[f32], c_out: usize, c_in: usize, flip: bool, mr: usize) -> Vec<f32> {
    let (outs, ins) = if flip { (c_in, c_out) } else { (c_out, c_in) };
    let panels = outs.div_ceil(mr);
    let mut u = vec![0f32; 16 * panels * ins * mr];
    for o in 0..outs {
        for i in 0..ins {
            let f = |r: usize, c: usize| {
                if flip {
                    w[(i * c_in + o) * 9 + (2 - r) * 3 + (2 - c)]
                } else {
                    w[(o * c_in + i) * 9 + r * 3 + c]
                }
            };
            // t = G g (4 × 3), then t Gᵀ (4 × 4).
            let mut t = [[0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (f(0, c), f(1, c), f(2, c));
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (r, row) in t.iter().enumerate() {
                let v = [
                    row[0],
                    0.5 * (row[0] + row[1] + row[2]),
                    0.5 * (row[0] - row[1] + row[2]),
                    row[2],
                ];
                for (c, v) in v.into_iter().enumerate() {
                    let xi = r * 4 + c;
                    u[((xi * panels + o / mr) * ins + i) * mr + o % mr] = v;
                }
            }
        }
    }
    u
}

thread_local! {
    /// A task's block buffers: `V`, `M`, and the even and odd columns of four input rows.
    static BLOCK: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One block: tiles `j0..j0 + nt` of tile rows `ti..ti + rows` of image `n`, numbered
/// row by row (tile `(ti + r, j0 + j)` is the block's tile `r·nt + j`).
#[derive(Clone, Copy)]
struct Block {
    n: usize,
    ti: usize,
    rows: usize,
    j0: usize,
    nt: usize,
}

/// The forward convolution from transformed filters `u` (see [`filter_transform`]).
fn forward_u(
    x: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
    kern: &MicroKernel,
    tf: Transform,
) {
    if y.is_empty() {
        return;
    }
    let (th, tw) = (g.h_out.div_ceil(2), g.w_out.div_ceil(2));
    // Long tile rows are cut into segments; short ones are grouped, so that a block fills
    // whole micro-tile panels more often (SRResNet's 48-tile rows: two make three panels of
    // 32 instead of each padding 48 to 64).
    let segs = tw.div_ceil(TILES);
    let per = tw.div_ceil(segs);
    // ... but keep at least four blocks per thread, so small maps still spread.
    let tasks = 4 * rayon::current_num_threads().max(1);
    let group = if segs == 1 {
        (TILES / tw).min(g.n * th / tasks).max(1)
    } else {
        1
    };
    let blocks: Vec<Block> = (0..g.n)
        .flat_map(|n| (0..th).step_by(group).map(move |ti| (n, ti)))
        .flat_map(|(n, ti)| {
            (0..segs).map(move |s| Block {
                n,
                ti,
                rows: group.min(th - ti),
                j0: s * per,
                nt: per.min(tw - s * per),
            })
        })
        .collect();
    let out = SendPtr(y.as_mut_ptr());
    let (mr, nr) = (kern.mr, kern.nr);
    let (ci, co_panels) = (g.c_in, g.c_out.div_ceil(mr));
    blocks.par_iter().for_each(|b| {
        BLOCK.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let (v, m, rows) = &mut *bufs;
            // V: for each ξ, panels of nr tiles, ci-major (the packed B layout).
            let tp = (b.rows * b.nt).div_ceil(nr);
            let ldm = tp * nr;
            v.resize(16 * tp * ci * nr, 0.0);
            // M[ξ]: co_panels·mr rows (the last panel's spare rows are scratch) of ldm.
            m.resize(16 * co_panels * mr * ldm, 0.0);
            rows.resize(8 * (b.nt + 1), 0.0);
            match tf {
                Transform::Best => input_transform(x, g, b, nr, v, rows),
                Transform::Portable => input_transform_with(x, g, b, nr, v, rows),
            }
            let u_at = |xi: usize, pi: usize| &u[((xi * co_panels + pi) * ci) * mr..][..ci * mr];
            products(kern, 16, ci, co_panels, tp, u_at, v, m);
            // SAFETY: the block writes output rows 2·ti, 2·ti + 1 of image n, columns of its
            // own tiles: no other block writes them.
            unsafe { output_transform(m, co_panels * mr, ldm, bias, g, b, out) };
        });
    });
}

/// `M[ξ] = U[ξ]·V[ξ]` for each of a block's `n_xi` transform positions, as bare
/// micro-kernel calls: `u_at(ξ, p)` is output panel `p` of `U[ξ]` (`ks·mr` floats, packed
/// A), `v` holds for each `ξ` the `tp` packed B panels of `ks·nr`, and `M[ξ]` is
/// `panels·mr` rows of `tp·nr` tiles (the last panel's spare rows are scratch). Per `ξ`,
/// each output panel of U stays in L1/L2 while it meets every tile panel of V (L2).
/// Shared by both Winograd rungs.
#[allow(clippy::too_many_arguments)]
pub(super) fn products<'u>(
    kern: &MicroKernel,
    n_xi: usize,
    ks: usize,
    panels: usize,
    tp: usize,
    u_at: impl Fn(usize, usize) -> &'u [f32],
    v: &[f32],
    m: &mut [f32],
) {
    let (mr, nr) = (kern.mr, kern.nr);
    let ldm = tp * nr;
    for xi in 0..n_xi {
        for pi in 0..panels {
            let up = u_at(xi, pi);
            assert!(up.len() >= ks * mr);
            for q in 0..tp {
                let vp = &v[((xi * tp + q) * ks) * nr..][..ks * nr];
                let c = &mut m[(xi * panels + pi) * mr * ldm + q * nr..];
                assert!(c.len() >= (mr - 1) * ldm + nr);
                // SAFETY: `up` holds ks·mr and `vp` ks·nr floats, and `c` an mr × nr block
                // at row stride ldm (checked above), the caller's own.
                unsafe { (kern.run)(ks, up.as_ptr(), vp.as_ptr(), c.as_mut_ptr(), ldm, false) };
            }
        }
    }
}

/// `V[ξ] = (Bᵀ d B)[ξ]` for each of the block's tiles `i = r·nt + j` and channels `ci`, `d`
/// the 4×4 input patch at rows `2·(ti + r) − pad ..` and columns `2·(j0 + j) − pad ..` (zero
/// outside), into `v[((ξ·panels + i / nr)·c_in + ci)·nr + i % nr]` (zero past the last
/// tile).
///
/// Written as plain loops over the tiles so the compiler vectorises them: it is compiled
/// once for AVX-512 ([`x86::input_transform`]) and once for any CPU.
#[inline(always)]
fn input_transform_with(
    x: &[f32],
    g: &Conv2dGeom,
    b: &Block,
    nr: usize,
    v: &mut [f32],
    rows: &mut [f32],
) {
    let (nt, plane) = (b.nt, g.h * g.w);
    let tiles = b.rows * nt;
    let tp = tiles.div_ceil(nr);
    assert!(
        nt <= TILES,
        "winograd: block row longer than the transform buffers"
    );
    let c0 = (2 * b.j0) as isize - g.pad[1] as isize;
    // rows[2r·len..] holds input row r's columns c0 + 2j (j ≤ nt), rows[(2r + 1)·len..] its
    // columns c0 + 2j + 1: tile j's four columns are then ev[j], od[j], ev[j + 1], od[j + 1].
    let len = nt + 1;
    // Positions j whose two columns both lie inside the row: jl..jh.
    let wi = g.w as isize;
    let jl = ((-c0).max(0) as usize).div_ceil(2).min(len);
    let jh = (((wi - c0).max(0) / 2) as usize).clamp(jl, len);
    let mut t = [[[0f32; TILES]; 4]; 4];
    // Where block tile `i` of transform position ξ goes.
    let at = |xi: usize, ci: usize, i: usize| ((xi * tp + i / nr) * g.c_in + ci) * nr + i % nr;
    for ci in 0..g.c_in {
        let src = &x[(b.n * g.c_in + ci) * plane..][..plane];
        for tr in 0..b.rows {
            let r0 = (2 * (b.ti + tr)) as isize - g.pad[0] as isize;
            for (r, eo) in rows.chunks_exact_mut(2 * len).take(4).enumerate() {
                let ir = r0 + r as isize;
                let (ev, od) = eo.split_at_mut(len);
                if ir < 0 || ir as usize >= g.h {
                    ev.fill(0.0);
                    od.fill(0.0);
                    continue;
                }
                let line = &src[ir as usize * g.w..][..g.w];
                let col = |c: isize| {
                    if c >= 0 && c < wi {
                        line[c as usize]
                    } else {
                        0.0
                    }
                };
                for j in (0..jl).chain(jh..len) {
                    let c = c0 + 2 * j as isize;
                    ev[j] = col(c);
                    od[j] = col(c + 1);
                }
                if jh > jl {
                    let inner =
                        &line[(c0 + 2 * jl as isize) as usize..(c0 + 2 * jh as isize) as usize];
                    for ((e, o), pair) in ev[jl..jh]
                        .iter_mut()
                        .zip(&mut od[jl..jh])
                        .zip(inner.chunks_exact(2))
                    {
                        *e = pair[0];
                        *o = pair[1];
                    }
                }
            }
            // Along each input row: t[r][k] = (d Bᵀ)[k] for the row's tiles.
            for (r, trow) in t.iter_mut().enumerate() {
                let (ev, od) = (
                    &rows[2 * r * len..][..len],
                    &rows[(2 * r + 1) * len..][..len],
                );
                let (e0, o0, e1, o1) = (&ev[..nt], &od[..nt], &ev[1..], &od[1..]);
                let [t0, t1, t2, t3] = trow;
                for j in 0..nt {
                    t0[j] = e0[j] - e1[j];
                    t1[j] = o0[j] + e1[j];
                    t2[j] = e1[j] - o0[j];
                    t3[j] = o0[j] - o1[j];
                }
            }
            // Down the columns: V[4a + k] from t[0..4][k], in runs of the row's tiles that
            // share a panel.
            let mut j = 0;
            while j < nt {
                let i = tr * nt + j;
                let run = (nr - i % nr).min(nt - j);
                for k in 0..4 {
                    let (a0, a1, a2, a3) = (
                        &t[0][k][j..j + run],
                        &t[1][k][j..j + run],
                        &t[2][k][j..j + run],
                        &t[3][k][j..j + run],
                    );
                    let [o0, o1, o2, o3] = [k, 4 + k, 8 + k, 12 + k].map(|xi| at(xi, ci, i));
                    assert!(o3 + run <= v.len());
                    let p = v.as_mut_ptr();
                    // SAFETY: four runs of `run` floats in distinct (ξ) parts of `v`, the
                    // last of which ends inside it (checked above).
                    unsafe {
                        for e in 0..run {
                            *p.add(o0 + e) = a0[e] - a2[e];
                            *p.add(o1 + e) = a1[e] + a2[e];
                            *p.add(o2 + e) = a2[e] - a1[e];
                            *p.add(o3 + e) = a1[e] - a3[e];
                        }
                    }
                }
                j += run;
            }
        }
        // The last panel's spare tiles are zero.
        if tiles < tp * nr {
            for xi in 0..16 {
                v[at(xi, ci, tiles)..at(xi, ci, tp * nr - 1) + 1].fill(0.0);
            }
        }
    }
}

/// [`input_transform_with`], compiled for the best vector width this CPU has.
fn input_transform(
    x: &[f32],
    g: &Conv2dGeom,
    b: &Block,
    nr: usize,
    v: &mut [f32],
    rows: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if Isa::best() == Isa::Avx512 {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { x86::input_transform(x, g, b, nr, v, rows) };
    }
    input_transform_with(x, g, b, nr, v, rows)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Block, Conv2dGeom};

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform(
        x: &[f32],
        g: &Conv2dGeom,
        b: &Block,
        nr: usize,
        v: &mut [f32],
        rows: &mut [f32],
    ) {
        super::input_transform_with(x, g, b, nr, v, rows)
    }
}

/// `Y = Aᵀ M A` for each of the block's tiles `r·nt + j` and output channels, plus the bias,
/// into output rows `2·(ti + r)`, `+ 1` (those that exist) at columns `2·(j0 + j)`, `+ 1`. `M[ξ]`
/// has `rows` rows of `ldm` tiles.
///
/// # Safety
/// `y` points at the whole output, and no other thread writes the block's pixels.
unsafe fn output_transform(
    m: &[f32],
    rows: usize,
    ldm: usize,
    bias: Option<&[f32]>,
    g: &Conv2dGeom,
    b: &Block,
    y: SendPtr,
) {
    let nt = b.nt;
    let plane = g.h_out * g.w_out;
    let col0 = 2 * b.j0;
    let cols = (2 * nt).min(g.w_out - col0);
    let mut row = [[0f32; 2 * TILES]; 2];
    for co in 0..g.c_out {
        let bias = bias.map_or(0.0, |b| b[co]);
        for tr in 0..b.rows {
            let mx = |xi: usize| &m[(xi * rows + co) * ldm + tr * nt..][..nt];
            // s[a][k] = (Aᵀ M)[a][k], then Y[a][0] = s0 + s1 + s2, Y[a][1] = s1 − s2 − s3.
            for j in 0..nt {
                let mut s = [[0f32; 4]; 2];
                for k in 0..4 {
                    let (m0, m1, m2, m3) = (mx(k)[j], mx(4 + k)[j], mx(8 + k)[j], mx(12 + k)[j]);
                    s[0][k] = m0 + m1 + m2;
                    s[1][k] = m1 - m2 - m3;
                }
                for a in 0..2 {
                    row[a][2 * j] = s[a][0] + s[a][1] + s[a][2] + bias;
                    row[a][2 * j + 1] = s[a][1] - s[a][2] - s[a][3] + bias;
                }
            }
            for (a, r) in row.iter().enumerate() {
                let oh = 2 * (b.ti + tr) + a;
                if oh < g.h_out {
                    let at = (b.n * g.c_out + co) * plane + oh * g.w_out + col0;
                    // SAFETY: columns col0..col0 + cols of output row oh exist (the caller's
                    // contract gives this block those pixels).
                    unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), y.get().add(at), cols) };
                }
            }
        }
    }
}
