//! Fast f32 convolution as implicit GEMM: the im2col matrix is never materialised. Its
//! values are gathered straight from the image into the GEMM's packed panels.
//!
//! With `K = c_in·kh·kw` (one row per kernel tap `(ci, i, j)`) and `P = h_out·w_out` (one
//! column per output pixel), the three passes are GEMMs over that virtual `K × P` matrix `X̂`:
//!
//! | pass            | GEMM                                   | shape (m × n × k)       | threads        |
//! |-----------------|----------------------------------------|-------------------------|----------------|
//! | forward         | `Y = W · X̂`                            | c_out × (n·P) × K       | image groups   |
//! | backward-data   | `dX̂ = Wᵀ · dY`, col2im on store        | K × (n·P) × c_out       | image groups   |
//! | backward-weight | `dW = Σ_b dY[b] · X̂[b]ᵀ` as one GEMM   | c_out × K × (n·P)       | inside the GEMM|
//!
//! `W` is the weight viewed as `c_out × K`. Forward and backward-data put the images of a
//! group side by side as columns `(b, p)` (one group per thread), which keeps the GEMM wide
//! even for 4×4 outputs; backward-weight puts the whole batch in the inner dimension, one
//! large GEMM with no reduction across threads. At stride 1, backward-data is instead a
//! forward convolution of `dY` with the kernel flipped and its channel axes swapped, which
//! needs no scatter. When the kernel covers the whole (unpadded) input, so the output is 1×1
//! (the DCGAN discriminator's last layer, and the generator's first layer run as its
//! transpose), every pass is a plain dense GEMM over the batch instead.
//!
//! ## Packing
//!
//! Packing is the cost besides the micro-kernel: every value of `X̂` is gathered once per
//! GEMM and used `c_out` times, so for narrow layers (64 output channels) a slow gather
//! costs as much as the arithmetic. The GEMM columns of a panel split into *runs*, pixels
//! of one output row; a tap reads one input row along a run, at the layer's stride. For a
//! window of columns, [`Window`] lists where each spatial tap's row reads as a few such
//! pieces, which do not depend on the channel; every channel's row is then a few strided
//! copies. The moves themselves come from [`super::lanes`]: 16-lane AVX-512 (two loads and
//! one permute per 16 values at stride 2) or plain loops.
//!
//! Backward-weight reduces over the pixels, the contiguous axis of both `x` and `dY`, so
//! both of its operands are transposed while packing (16×16 in registers with AVX-512).
//! Strided backward-data packs `dY` with plain row copies; its col2im scatter adds a run
//! at a time.
//!
//! ## The rewrite variant ([`rewrite`])
//!
//! Strided layers can be rewritten as stride-1 ones, so that every read is contiguous:
//!
//! - **Forward and backward-weight** (stride `s`, kernel a multiple of `s`, dilation 1:
//!   every DCGAN layer): the padded input is rearranged *space-to-depth*,
//!   `xs[(ci, a, c)][h'][w'] = x_pad[ci][s·h' + a][s·w' + c]`, and the layer becomes a
//!   stride-1 convolution with `s²·c_in` channels and a `k/s` kernel over it, the same
//!   arithmetic (see [`SpaceToDepth`]).
//! - **Backward-data** splits into `s²` *phases*: the input pixels with
//!   `(row + pad) mod s = φ` receive only the taps `i ≡ φ (mod s)`, so each phase is a
//!   stride-1 convolution of `dY` with a sub-kernel, written to every `s`-th pixel of `dX`
//!   (see [`axis_phases`]). Nothing is computed twice and nothing is scattered.
//!
//! Measured on the DCGAN layers (2 cores, AVX-512) the rewrites do not pay: the
//! space-to-depth copy costs about what the strided gathers do, and the phases pack every
//! output-gradient value `s²·(k/s)²` times where col2im packs it once. They stay as a rung
//! of the ladder, tested like the rest.
//!
//! All passes run through one internal description, [`Plan`]: sizes, the input coordinate
//! that tap 0 of output pixel 0 reads (`−pad` for a plain convolution, other values for the
//! phases), and where each output pixel is stored.
//!
//! Layout: the public NCHW layout is used as is; the packing routines absorb the gathering,
//! and rearranged inputs and weights live in scratch buffers reused between calls (`crate::scratch`).

use super::lanes::{Lanes, PackIsa, Portable};
use super::Conv2dGeom;
use crate::gemm::cpu::{
    gemm, gemm_strided, write_row, DenseC, PackA, PackB, SendPtr, StoreC, Strided,
};
use crate::gemm::kernels::Isa;
use crate::scratch::Scratch;
use rayon::prelude::*;

/// Splits kernel-tap index `kk` into `(ci, i, j)`.
#[inline]
fn tap(g: &Conv2dGeom, kk: usize) -> (usize, usize, usize) {
    let per = g.kh * g.kw;
    (kk / per, (kk % per) / g.kw, kk % g.kw)
}

/// Where output pixel `(b, co, oh, ow)` of a [`Plan`] is stored, relative to the start of
/// its image group: `offset + b·image + co·chan + oh·row + ow·col`.
#[derive(Clone, Copy, Debug)]
struct OutMap {
    offset: usize,
    image: usize,
    chan: usize,
    row: usize,
    col: usize,
}

/// One implicit-GEMM convolution as the packers see it. The sizes are `g`'s (its `pad` is
/// not read); output pixel `(oh, ow)` and tap `(i, j)` read input pixel
/// `(oh·stride + i·dilation + origin)` on each axis, zero outside the image; outputs go
/// where `out` says.
#[derive(Clone, Copy, Debug)]
struct Plan {
    g: Conv2dGeom,
    origin: [isize; 2],
    out: OutMap,
    /// The vector moves the packing and stores use.
    isa: PackIsa,
}

impl Plan {
    /// The convolution `g` itself, with a dense NCHW output.
    fn plain(g: &Conv2dGeom, isa: PackIsa) -> Plan {
        let plane = g.h_out * g.w_out;
        Plan {
            g: *g,
            isa,
            origin: [-(g.pad[0] as isize), -(g.pad[1] as isize)],
            out: OutMap {
                offset: 0,
                image: g.c_out * plane,
                chan: plane,
                row: g.w_out,
                col: 1,
            },
        }
    }
}

/// A run of GEMM columns that are consecutive pixels of one output row: columns
/// `col..col + len` (counted from the panel's or tile's first column) are pixels
/// `(b, oh, ow..ow + len)`.
#[derive(Clone, Copy, Default)]
struct Run {
    col: usize,
    len: usize,
    b: usize,
    oh: usize,
    ow: usize,
}

/// The runs of GEMM columns `j0..j0 + len` (pixels `(b, oh, ow)` in order). One division
/// to find the first column; the rest is stepping. It is `Copy`, so a packer finds the
/// start once and walks the runs again for every tap, with nothing allocated.
#[derive(Clone, Copy)]
struct Runs {
    h_out: usize,
    w_out: usize,
    col: usize,
    len: usize,
    b: usize,
    oh: usize,
    ow: usize,
}

impl Runs {
    fn new(g: &Conv2dGeom, j0: usize, len: usize) -> Runs {
        let plane = g.h_out * g.w_out;
        let pix = j0 % plane;
        Runs {
            h_out: g.h_out,
            w_out: g.w_out,
            col: 0,
            len,
            b: j0 / plane,
            oh: pix / g.w_out,
            ow: pix % g.w_out,
        }
    }
}

impl Iterator for Runs {
    type Item = Run;
    #[inline]
    fn next(&mut self) -> Option<Run> {
        if self.col >= self.len {
            return None;
        }
        let run = Run {
            col: self.col,
            len: (self.w_out - self.ow).min(self.len - self.col),
            b: self.b,
            oh: self.oh,
            ow: self.ow,
        };
        self.col += run.len;
        self.ow = 0;
        self.oh += 1;
        if self.oh == self.h_out {
            self.oh = 0;
            self.b += 1;
        }
        Some(run)
    }
}

/// The positions `e` in `0..count` with `0 <= first + e·step < bound`, as `lo..hi` (empty
/// when there are none). At step 1 there is no division: this runs once per run and panel
/// row.
#[inline(always)]
fn inside(first: isize, step: usize, bound: usize, count: usize) -> (usize, usize) {
    let (s, b, n) = (step as isize, bound as isize, count as isize);
    if step == 1 {
        let lo = (-first).clamp(0, n);
        return (lo as usize, (b - first).clamp(lo, n) as usize);
    }
    // Both numerators are positive; a shift at stride 2 (the DCGAN layers) keeps the
    // division out of the per-run work.
    let div_ceil = |v: isize| {
        if s == 2 {
            (v + 1) >> 1
        } else {
            (v + s - 1) / s
        }
    };
    let lo = if first >= 0 { 0 } else { div_ceil(-first) }.min(n);
    let hi = if first >= b { 0 } else { div_ceil(b - first) };
    (lo as usize, hi.clamp(lo, n) as usize)
}

/// The virtual im2col matrix of a group of images side by side, `K × (n·P)` (column
/// `(b, p)`), as a GEMM right operand. `x` starts at the group's first image.
struct Im2col<'a> {
    x: &'a [f32],
    p: &'a Plan,
}

impl PackB for Im2col<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        match self.p.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PackIsa::Avx512 is chosen only on CPUs with AVX-512F.
            PackIsa::Avx512 => unsafe {
                x86::im2col_panels(self.x, self.p, p0, kc, j0, nc, nr, dst)
            },
            _ => im2col_panels::<Portable>(self.x, self.p, p0, kc, j0, nc, nr, dst),
        }
    }
}

/// One piece of an im2col row inside a window of GEMM columns: window positions
/// `dst..dst + len` take `x[src + ci·plane + e·stride]` for channel `ci`, `e < len`.
#[derive(Clone, Copy)]
struct Seg {
    dst: usize,
    len: usize,
    src: usize,
}

/// Where every spatial tap reads, for a window of GEMM columns (pixels in order): tap `t`'s
/// valid pieces are `segs[first[t]..first[t + 1]]`, the rest of its row is padding. The
/// pieces do not depend on the channel, so a window is described once and every channel's
/// rows are then gathered with a few vector copies each.
#[derive(Default)]
struct Window {
    segs: Vec<Seg>,
    first: Vec<usize>,
}

impl Window {
    /// Describes columns `j0..j0 + len` of plan `p` (counted from `x`'s first image).
    fn build(&mut self, p: &Plan, j0: usize, len: usize) {
        let g = &p.g;
        let (image, sw) = (g.c_in * g.h * g.w, g.stride[1]);
        self.segs.clear();
        self.first.clear();
        let rs = Runs::new(g, j0, len);
        for i in 0..g.kh {
            for j in 0..g.kw {
                self.first.push(self.segs.len());
                for r in rs {
                    let ih = (r.oh * g.stride[0] + i * g.dilation[0]) as isize + p.origin[0];
                    if ih < 0 || ih >= g.h as isize {
                        continue;
                    }
                    let iw0 = (r.ow * sw + j * g.dilation[1]) as isize + p.origin[1];
                    let (lo, hi) = inside(iw0, sw, g.w, r.len);
                    if lo < hi {
                        self.segs.push(Seg {
                            dst: r.col + lo,
                            len: hi - lo,
                            src: r.b * image
                                + ih as usize * g.w
                                + (iw0 + (lo * sw) as isize) as usize,
                        });
                    }
                }
            }
        }
        self.first.push(self.segs.len());
    }

    /// Asks for the input lines channel `ci`'s row of spatial tap `t` reads to be brought
    /// into L2. [`Im2colT`] describes the next window ahead and prefetches its rows while
    /// gathering the current one's: its reads jump between channel planes, a pattern the
    /// hardware prefetcher does not follow. The taps of one kernel row read the same input
    /// rows, so only the first of them prefetches.
    #[inline(always)]
    fn prefetch<L: Lanes>(&self, x: &[f32], p: &Plan, ci: usize, t: usize) {
        let (plane, sw) = (p.g.h * p.g.w, p.g.stride[1]);
        if !t.is_multiple_of(p.g.kw) {
            return;
        }
        for s in &self.segs[self.first[t]..self.first[t + 1]] {
            let at = x.as_ptr().wrapping_add(s.src + ci * plane);
            L::prefetch(at);
            L::prefetch(at.wrapping_add((s.len - 1) * sw));
        }
    }

    /// Writes channel `ci`'s row of spatial tap `t` over the window into `out` (zero where
    /// the tap reads padding, and past the window's columns).
    #[inline(always)]
    fn gather<L: Lanes>(&self, x: &[f32], p: &Plan, ci: usize, t: usize, out: &mut [f32]) {
        let (plane, sw) = (p.g.h * p.g.w, p.g.stride[1]);
        // SAFETY: `out` is a live slice.
        unsafe { L::zero(out.as_mut_ptr(), out.len()) };
        for s in &self.segs[self.first[t]..self.first[t + 1]] {
            let src = &x[s.src + ci * plane..];
            assert!(
                src.len() > (s.len - 1) * sw,
                "im2col: segment past the input"
            );
            let dst = &mut out[s.dst..s.dst + s.len];
            // SAFETY: both ranges are checked slices covering the copy; `x` is shared, so
            // nothing writes it.
            unsafe { L::copy(dst.as_mut_ptr(), src.as_ptr(), s.len, sw, src.len()) };
        }
    }
}

/// [`Im2col`]'s panels through a [`Window`] per panel: every panel row is a few vector
/// copies, whatever the run lengths.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn im2col_panels<L: Lanes>(
    x: &[f32],
    p: &Plan,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: &mut [f32],
) {
    let taps = p.g.kh * p.g.kw;
    let mut win = Window::default();
    for (q, panel) in dst
        .chunks_exact_mut(kc * nr)
        .take(nc.div_ceil(nr))
        .enumerate()
    {
        win.build(p, j0 + q * nr, nr.min(nc - q * nr));
        let (mut ci, mut t) = (p0 / taps, p0 % taps);
        for out in panel.chunks_exact_mut(nr).take(kc) {
            win.gather::<L>(x, p, ci, t, out);
            t += 1;
            if t == taps {
                t = 0;
                ci += 1;
            }
        }
    }
}

/// The AVX-512 entry points: the generic packing compiled with the feature enabled, so the
/// [`Avx512`](super::lanes::Avx512) moves inline into it.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::conv::lanes::Avx512;

    /// # Safety
    /// The CPU has AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn im2col_panels(
        x: &[f32],
        p: &Plan,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        super::im2col_panels::<Avx512>(x, p, p0, kc, j0, nc, nr, dst)
    }

    /// # Safety
    /// The CPU has AVX-512F, and [`StoreC::store`]'s contract holds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn col2im(
        c: &Col2im,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        hw: [usize; 2],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { c.scatter::<Avx512>(i, j, tile, ld, hw) }
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_grad_rows(
        a: &OutputGradRows,
        i0: usize,
        mc: usize,
        p0: usize,
        kc: usize,
        mr: usize,
        dst: &mut [f32],
    ) {
        a.pack::<Avx512>(i0, mc, p0, kc, mr, dst)
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn im2col_t(
        b: &Im2colT,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        b.pack::<Avx512>(p0, kc, j0, nc, nr, dst)
    }
}

/// A group of output images as a GEMM destination: element `(co, (b, p))` goes where the
/// plan's [`OutMap`] says. `y` starts at the group's first image.
struct PlanOut<'a> {
    y: SendPtr,
    p: &'a Plan,
}

impl StoreC for PlanOut<'_> {
    fn tile_at(&self, i: usize, j: usize, [_, w]: [usize; 2]) -> Option<(*mut f32, usize)> {
        // A tile whose pixels are consecutive in one image's plane (NCHW with whole rows):
        // its channel rows are `chan` apart.
        let (o, g) = (&self.p.out, &self.p.g);
        let plane = g.h_out * g.w_out;
        let (b, pix) = (j / plane, j % plane);
        (o.col == 1 && o.row == g.w_out && pix + w <= plane).then(|| {
            // The element (b, i, pix) lies inside the group's outputs.
            let at = o.offset + b * o.image + i * o.chan + pix;
            (self.y.0.wrapping_add(at), o.chan)
        })
    }

    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
        add: bool,
    ) {
        let o = &self.p.out;
        for run in Runs::new(&self.p.g, j, w) {
            let base = o.offset + run.b * o.image + run.oh * o.row + run.ow * o.col;
            for r in 0..h {
                let at = base + (i + r) * o.chan;
                let src = &tile[r * ld + run.col..][..run.len];
                if o.col == 1 {
                    // SAFETY: (image b, channel i + r, run's pixels) lies inside the group's
                    // outputs; threads own disjoint row or column ranges of C, and distinct
                    // GEMM elements map to distinct addresses.
                    let dst = unsafe { std::slice::from_raw_parts_mut(self.y.0.add(at), run.len) };
                    write_row(dst, src, add);
                } else {
                    for (e, v) in src.iter().enumerate() {
                        // SAFETY: as above, every `col`-th element of the output row.
                        let d = unsafe { &mut *self.y.0.add(at + e * o.col) };
                        *d = if add { *d + v } else { *v };
                    }
                }
            }
        }
    }
}

/// Images per GEMM: the batch split evenly over the threads.
fn group_size(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

fn k_len(g: &Conv2dGeom) -> usize {
    g.c_in * g.kh * g.kw
}

/// Runs plan `p` forward: `y = W · X̂` (added to `y` with `accumulate`). `y` holds
/// `n · p.out.image` values, image `b`'s outputs inside `[b·image, (b + 1)·image)`.
fn forward_plan(x: &[f32], w: &[f32], y: &mut [f32], p: &Plan, accumulate: bool) {
    let g = &p.g;
    let (k, plane, image) = (k_len(g), g.h_out * g.w_out, g.c_in * g.h * g.w);
    debug_assert_eq!(y.len(), g.n * p.out.image);
    // Images in groups, one GEMM per group: the columns of several images side by side
    // make a wide GEMM even when each image has few output pixels (DCGAN's 4×4 layers).
    let per = group_size(g.n);
    y.par_chunks_mut(per * p.out.image)
        .enumerate()
        .for_each(|(gi, yg)| {
            let nb = yg.len() / p.out.image;
            let a = Strided {
                data: w,
                rs: k,
                cs: 1,
            };
            let b = Im2col {
                x: &x[gi * per * image..],
                p,
            };
            let c = PlanOut {
                y: SendPtr(yg.as_mut_ptr()),
                p,
            };
            gemm([g.c_out, nb * plane, k], &a, &b, &c, accumulate);
        });
}

/// A strided convolution as a stride-1 convolution over the space-to-depth rearrangement of
/// its padded input. With stride `s = (sh, sw)` and a kernel that is a multiple of it, tap
/// `(i, j) = (sh·u + a, sw·v + c)` of output pixel `(oh, ow)` reads padded pixel
/// `(sh·(oh + u) + a, sw·(ow + v) + c)`, which is pixel `(oh + u, ow + v)` of channel
/// `(ci, a, c)` of `xs`. So the layer is a `k/s` convolution over `xs` with `sh·sw·c_in`
/// channels, stride 1 and no padding: the same multiply-adds, contiguous reads.
#[derive(Clone, Copy, Debug)]
struct SpaceToDepth {
    /// The original layer.
    g: Conv2dGeom,
    /// The stride-1 layer over `xs`.
    s: Conv2dGeom,
}

impl SpaceToDepth {
    /// The rewrite of `g`, when it applies (stride above 1, dilation 1, kernel a multiple of
    /// the stride on both axes).
    fn new(g: &Conv2dGeom) -> Option<SpaceToDepth> {
        let [sh, sw] = g.stride;
        if g.stride == [1, 1]
            || g.dilation != [1, 1]
            || !g.kh.is_multiple_of(sh)
            || !g.kw.is_multiple_of(sw)
        {
            return None;
        }
        let (kh, kw) = (g.kh / sh, g.kw / sw);
        let s = Conv2dGeom {
            c_in: g.c_in * sh * sw,
            h: g.h_out + kh - 1,
            w: g.w_out + kw - 1,
            kh,
            kw,
            stride: [1, 1],
            pad: [0, 0],
            ..*g
        };
        Some(SpaceToDepth { g: *g, s })
    }

    /// `xs` from `x`: every value written, zeros where it falls in the padding (or past the
    /// input: the last rows of a padded input the layer never reads are not copied).
    fn input(&self, x: &[f32]) -> Scratch {
        let (g, s) = (&self.g, &self.s);
        let [sh, sw] = g.stride;
        let (ph, pw) = (g.pad[0] as isize, g.pad[1] as isize);
        let mut xs = Scratch::take(s.input_len());
        // One task per (image, input channel): its s² output planes.
        xs.par_chunks_mut(sh * sw * s.h * s.w)
            .enumerate()
            .for_each(|(bc, planes)| {
                let src = &x[bc * g.h * g.w..][..g.h * g.w];
                for (ac, plane) in planes.chunks_exact_mut(s.h * s.w).enumerate() {
                    let (a, c) = (ac / sw, ac % sw);
                    // Columns ww read iw = sw·ww + c − pw: valid for ww in lo..hi.
                    let first = c as isize - pw;
                    let (lo, hi) = inside(first, sw, g.w, s.w);
                    for (hh, row) in plane.chunks_exact_mut(s.w).enumerate() {
                        let ih = (sh * hh + a) as isize - ph;
                        if ih < 0 || ih >= g.h as isize || lo == hi {
                            row.fill(0.0);
                            continue;
                        }
                        let start = (first + (lo * sw) as isize) as usize;
                        let line = &src[ih as usize * g.w + start..];
                        row[..lo].fill(0.0);
                        for (v, x) in row[lo..hi].iter_mut().zip(line.iter().step_by(sw)) {
                            *v = *x;
                        }
                        row[hi..].fill(0.0);
                    }
                }
            });
        xs
    }

    /// Calls `f(rewritten index, original index)` for every weight of output channel `co`
    /// (both relative to that channel's row of `c_in·kh·kw` values). The rewritten weight is
    /// `[c_out][(ci, a, c)][u][v]`, holding `w[co][ci][sh·u + a][sw·v + c]`.
    fn for_each_weight(&self, mut f: impl FnMut(usize, usize)) {
        let (g, s) = (&self.g, &self.s);
        let [sh, sw] = g.stride;
        let mut at = 0;
        for ci in 0..g.c_in {
            for a in 0..sh {
                for c in 0..sw {
                    for u in 0..s.kh {
                        for v in 0..s.kw {
                            f(at, (ci * g.kh + sh * u + a) * g.kw + sw * v + c);
                            at += 1;
                        }
                    }
                }
            }
        }
    }

    fn weight(&self, w: &[f32]) -> Scratch {
        let mut ws = Scratch::take(w.len());
        let row = w.len() / self.g.c_out;
        ws.par_chunks_mut(row)
            .zip(w.par_chunks(row))
            .for_each(|(dst, src)| self.for_each_weight(|d, i| dst[d] = src[i]));
        ws
    }

    fn weight_back(&self, ws: &[f32], w: &mut [f32]) {
        let row = w.len() / self.g.c_out;
        w.par_chunks_mut(row)
            .zip(ws.par_chunks(row))
            .for_each(|(dst, src)| self.for_each_weight(|d, i| dst[i] = src[d]));
    }
}

/// Forward convolution (see the module table). Same contract as the reference kernel.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    forward_with(x, w, bias, y, g, false, PackIsa::best())
}

fn forward_with(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
    rewrite: bool,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
    if y.is_empty() {
        return;
    }
    // Start from the bias and accumulate the product onto it; without one, the GEMM's
    // first pass writes the output.
    if let Some(b) = bias {
        y.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, row)| row.fill(b[i % g.c_out]));
    }
    let add = bias.is_some();
    if whole_input(g) {
        // Y (n × c_out) += X (n × K) · Wᵀ (K × c_out).
        let a = Strided {
            data: x,
            rs: k,
            cs: 1,
        };
        let b = Strided {
            data: w,
            rs: 1,
            cs: k,
        };
        return gemm_strided(Isa::best(), [g.n, g.c_out, k], &a, &b, y, g.c_out, add);
    }
    match SpaceToDepth::new(g).filter(|_| rewrite) {
        Some(sd) => {
            let (xs, ws) = (sd.input(x), sd.weight(w));
            forward_plan(&xs, &ws, y, &Plan::plain(&sd.s, isa), add);
        }
        None => forward_plan(x, w, y, &Plan::plain(g, isa), add),
    }
}

/// Gradient w.r.t. the input (see the module table); `dx` is overwritten.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    backward_data_with(dy, w, dx, g, false, PackIsa::best())
}

fn backward_data_with(
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    g: &Conv2dGeom,
    rewrite: bool,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    let k = k_len(g);
    if dx.is_empty() {
        return;
    }
    if whole_input(g) {
        // dX (n × K) = dY (n × c_out) · W (c_out × K).
        let a = Strided {
            data: dy,
            rs: g.c_out,
            cs: 1,
        };
        let b = Strided {
            data: w,
            rs: k,
            cs: 1,
        };
        let c = DenseC::new(dx, [g.n, k], k);
        return gemm([g.n, k, g.c_out], &a, &b, &c, false);
    }
    // Stride 1: one flipped forward pass (always); stride s: s² phases (when rewriting).
    if g.stride == [1, 1] || (rewrite && g.dilation == [1, 1]) {
        let [ph, pw] = [0, 1].map(|a| {
            axis_phases(
                [g.h, g.w][a],
                [g.kh, g.kw][a],
                g.stride[a],
                g.pad[a],
                g.dilation[a],
            )
        });
        if ph.iter().chain(&pw).any(|f| f.taps == 0) {
            // Pixels no tap reaches (kernel narrower than the stride) get no gradient.
            dx.fill(0.0);
        }
        for fh in ph.iter().filter(|f| f.taps > 0 && f.count > 0) {
            for fw in pw.iter().filter(|f| f.taps > 0 && f.count > 0) {
                let (plan, wp) = phase(w, g, fh, fw, isa);
                forward_plan(dy, &wp, dx, &plan, false);
            }
        }
        return;
    }
    col2im_backward_data(dy, w, dx, g, isa);
}

/// One phase of backward-data along one axis: input rows `r0, r0 + stride, …` (`count` of
/// them) receive kernel taps `first + step·(taps − 1 − v)` for `v` in `0..taps`, each reading
/// output-gradient row `o + v·dilation + origin` for the phase's `o`-th row.
#[derive(Clone, Copy, Debug)]
struct AxisPhase {
    taps: usize,
    first: usize,
    step: usize,
    dilation: usize,
    origin: isize,
    r0: usize,
    stride: usize,
    count: usize,
}

/// The phases of backward-data along an axis of input length `len` (kernel `k`, stride
/// `s`, padding `p`, dilation `d`; stride 1 or dilation 1).
///
/// Input row `r` receives `dy[o]·w[i]` for every `o·s + i·d − p = r`. At stride 1 that is a
/// flipped convolution, `dx[r] = Σ_i dy[r + p − i·d]·w[i]`: one phase. At dilation 1 the
/// taps reaching `r` are those with `i ≡ r + p (mod s)`: with `φ = (r + p) mod s`,
/// `t = (r + p − φ)/s` and `i = φ + s·u`, `dx[r] = Σ_u dy[t − u]·w[φ + s·u]`, a stride-1
/// correlation over `dy` for each residue `φ`, whose rows `t` run over those that land
/// inside the input.
fn axis_phases(len: usize, k: usize, s: usize, p: usize, d: usize) -> Vec<AxisPhase> {
    if s == 1 {
        return vec![AxisPhase {
            taps: k,
            first: 0,
            step: 1,
            dilation: d,
            origin: p as isize - (d * (k - 1)) as isize,
            r0: 0,
            stride: 1,
            count: len,
        }];
    }
    debug_assert_eq!(d, 1, "phases of a strided layer need dilation 1");
    let (si, pi) = (s as isize, p as isize);
    (0..s)
        .map(|phi| {
            let taps = if phi < k { (k - phi).div_ceil(s) } else { 0 };
            // t runs over ceil((p − φ)/s) ..= floor((len − 1 + p − φ)/s).
            let fi = phi as isize;
            let t_min = -((fi - pi).div_euclid(si));
            let t_max = (len as isize - 1 + pi - fi).div_euclid(si);
            AxisPhase {
                taps,
                first: phi,
                step: s,
                dilation: 1,
                origin: t_min - (taps as isize - 1),
                r0: (si * t_min + fi - pi) as usize,
                stride: s,
                count: (t_max - t_min + 1).max(0) as usize,
            }
        })
        .collect()
}

/// The forward plan of one phase (`fh` × `fw`) of backward-data, and its kernel: the taps
/// of `w` the phase uses, flipped, with the channel axes swapped (`[c_in][c_out][vh][vw]`).
fn phase(
    w: &[f32],
    g: &Conv2dGeom,
    fh: &AxisPhase,
    fw: &AxisPhase,
    isa: PackIsa,
) -> (Plan, Scratch) {
    let pg = Conv2dGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.h_out,
        w: g.w_out,
        c_out: g.c_in,
        kh: fh.taps,
        kw: fw.taps,
        stride: [1, 1],
        pad: [0, 0],
        dilation: [fh.dilation, fw.dilation],
        h_out: fh.count,
        w_out: fw.count,
    };
    let plan = Plan {
        g: pg,
        isa,
        origin: [fh.origin, fw.origin],
        out: OutMap {
            offset: fh.r0 * g.w + fw.r0,
            image: g.c_in * g.h * g.w,
            chan: g.h * g.w,
            row: fh.stride * g.w,
            col: fw.stride,
        },
    };
    // wp[ci][co][vh][vw] = w[co][ci][i(vh)][j(vw)]: one task per ci, reading a kh·kw
    // block of every co.
    let taps = fh.taps * fw.taps;
    let mut wp = Scratch::take(g.c_in * g.c_out * taps);
    wp.par_chunks_mut(g.c_out * taps)
        .enumerate()
        .for_each(|(ci, dst)| {
            for (co, d) in dst.chunks_exact_mut(taps).enumerate() {
                let src = &w[(co * g.c_in + ci) * g.kh * g.kw..][..g.kh * g.kw];
                for vh in 0..fh.taps {
                    let i = fh.first + fh.step * (fh.taps - 1 - vh);
                    for vw in 0..fw.taps {
                        let j = fw.first + fw.step * (fw.taps - 1 - vw);
                        d[vh * fw.taps + vw] = src[i * g.kw + j];
                    }
                }
            }
        });
    (plan, wp)
}

/// The output gradient of a group of images as a `c_out × (n·P)` matrix (column `(b, p)`),
/// the right operand of the col2im form of backward-data. `dy` starts at the group's first
/// image.
struct BatchedCols<'a> {
    dy: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for BatchedCols<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let plane_out = g.h_out * g.w_out;
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            let rs = Runs::new(g, j0 + q * nr, cols);
            for (p, out) in panel.chunks_exact_mut(nr).take(kc).enumerate() {
                // Row co of image b is contiguous: dy[(b·c_out + co)·P + pixel].
                for r in rs {
                    let at = (r.b * g.c_out + p0 + p) * plane_out + r.oh * g.w_out + r.ow;
                    out[r.col..r.col + r.len].copy_from_slice(&self.dy[at..at + r.len]);
                }
                out[cols..].fill(0.0);
            }
        }
    }
}

/// Col2im as a GEMM destination over a group of images: tile element `(kk, (b, p))` of
/// `dX̂` is added to the input pixel of image `b` that tap `kk` of output pixel `p` reads.
/// Different taps hit the same pixel, so the GEMM must not split across threads
/// ([`StoreC::splittable`] is false); parallelism comes from independent image groups.
struct Col2im<'a> {
    dx: SendPtr,
    /// The group's input-gradient length: what the scatter may read.
    len: usize,
    g: &'a Conv2dGeom,
    isa: PackIsa,
}

impl StoreC for Col2im<'_> {
    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        hw: [usize; 2],
        _add: bool,
    ) {
        // Every partial product adds into the (zeroed) gradient, whichever K block it is from.
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is present (PackIsa::Avx512); the rest is the caller's
            // contract, forwarded.
            PackIsa::Avx512 => unsafe { x86::col2im(self, i, j, tile, ld, hw) },
            // SAFETY: forwarded from the caller.
            _ => unsafe { self.scatter::<Portable>(i, j, tile, ld, hw) },
        }
    }

    fn splittable(&self) -> bool {
        false
    }
}

impl Col2im<'_> {
    /// Adds tile row `r` (tap `(ci, ki, kj)`) run by run: along a run the tap writes one
    /// input row at the layer's stride, the part inside the image found once per run.
    ///
    /// # Safety
    /// As [`StoreC::store`]: no other thread writes this group's input gradient.
    #[inline(always)]
    unsafe fn scatter<L: Lanes>(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
    ) {
        let g = self.g;
        let (plane_in, sw) = (g.h * g.w, g.stride[1]);
        let rs = Runs::new(g, j, w);
        for r in 0..h {
            let (ci, ki, kj) = tap(g, i + r);
            for run in rs {
                let ih = (run.oh * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
                if ih < 0 || ih >= g.h as isize {
                    continue;
                }
                let iw0 = (run.ow * sw + kj * g.dilation[1]) as isize - g.pad[1] as isize;
                let (lo, hi) = inside(iw0, sw, g.w, run.len);
                if lo == hi {
                    continue;
                }
                let at = (run.b * g.c_in + ci) * plane_in
                    + ih as usize * g.w
                    + (iw0 + (lo * sw) as isize) as usize;
                let src = &tile[r * ld + run.col + lo..][..hi - lo];
                // SAFETY: pixels (ih, iw0 + e·sw) for e in lo..hi lie inside the group's
                // input gradient (`len` floats from `dx`), which only this (non-split) GEMM
                // reads or writes; `src` is a checked slice.
                unsafe {
                    L::add_strided(
                        self.dx.0.add(at),
                        src.as_ptr(),
                        src.len(),
                        sw,
                        self.len - at,
                    )
                };
            }
        }
    }
}

/// Backward-data as `dX̂ = Wᵀ · dY` with the tiles scattered into `dx` (col2im): the
/// general form, for layers both strided and dilated.
fn col2im_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom, isa: PackIsa) {
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
    dx.fill(0.0);
    let (image, out_image) = (g.c_in * g.h * g.w, g.c_out * plane);
    let per = group_size(g.n);
    dx.par_chunks_mut(per * image)
        .enumerate()
        .for_each(|(gi, dxg)| {
            // dX̂ (K × nb·P) = Wᵀ (K × c_out) · dY (c_out × nb·P), scattered by col2im.
            let nb = dxg.len() / image;
            let a = Strided {
                data: w,
                rs: 1,
                cs: k,
            };
            let b = BatchedCols {
                dy: &dy[gi * per * out_image..],
                g,
            };
            let sink = Col2im {
                dx: SendPtr(dxg.as_mut_ptr()),
                len: dxg.len(),
                g,
                isa,
            };
            gemm([k, nb * plane, g.c_out], &a, &b, &sink, true);
        });
}

/// `dY` of the whole batch as a `c_out × (n·P)` GEMM left operand (column `(b, p)`). A
/// panel wants, for each pixel, `MR` channels, while `dy` holds each channel's pixels
/// contiguously: blocks of up to 16 pixels of one image are transposed while packing.
struct OutputGradRows<'a> {
    dy: &'a [f32],
    g: &'a Conv2dGeom,
    isa: PackIsa,
}

impl PackA for OutputGradRows<'_> {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PackIsa::Avx512 is chosen only on CPUs with AVX-512F.
            PackIsa::Avx512 => unsafe { x86::output_grad_rows(self, i0, mc, p0, kc, mr, dst) },
            _ => self.pack::<Portable>(i0, mc, p0, kc, mr, dst),
        }
    }
}

impl OutputGradRows<'_> {
    #[inline(always)]
    fn pack<L: Lanes>(
        &self,
        i0: usize,
        mc: usize,
        p0: usize,
        kc: usize,
        mr: usize,
        dst: &mut [f32],
    ) {
        let (c_out, plane) = (self.g.c_out, self.g.h_out * self.g.w_out);
        assert!(
            mr <= 16,
            "conv2d_backward_weight: micro-panel height {mr} over 16"
        );
        for (q, panel) in dst
            .chunks_exact_mut(kc * mr)
            .take(mc.div_ceil(mr))
            .enumerate()
        {
            let (co, rows) = (i0 + q * mr, mr.min(mc - q * mr));
            let mut col = 0;
            while col < kc {
                let (b, pix) = ((p0 + col) / plane, (p0 + col) % plane);
                let n = 16.min(plane - pix).min(kc - col);
                let src = &self.dy[(b * c_out + co) * plane + pix..];
                let out = &mut panel[col * mr..(col + n) * mr];
                // SAFETY: rows `co..co + rows` of image b, pixels `pix..pix + n`, lie in
                // `src` (row stride `plane`); `out` holds the n columns of mr values.
                unsafe { L::transpose(src.as_ptr(), plane, rows, n, out.as_mut_ptr(), mr, mr) };
                col += n;
            }
        }
    }
}

/// `X̂ᵀ` of the whole batch (`(n·P) × K`) as a GEMM right operand: a panel wants, for each
/// pixel, `NR` consecutive taps. Windows of 16 pixels are gathered tap row by tap row into
/// a small stage (contiguous or stride-2 copies, see [`Window`]), then transposed into the
/// panel 16 taps at a time.
struct Im2colT<'a> {
    x: &'a [f32],
    p: &'a Plan,
}

/// Pixels per transposed block of [`Im2colT`].
const WINDOW: usize = 16;

impl PackB for Im2colT<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        match self.p.isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PackIsa::Avx512 is chosen only on CPUs with AVX-512F.
            PackIsa::Avx512 => unsafe { x86::im2col_t(self, p0, kc, j0, nc, nr, dst) },
            _ => self.pack::<Portable>(p0, kc, j0, nc, nr, dst),
        }
    }
}

impl Im2colT<'_> {
    #[inline(always)]
    fn pack<L: Lanes>(
        &self,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        let g = &self.p.g;
        let taps = g.kh * g.kw;
        let mut stage = vec![0f32; nr * WINDOW];
        let (mut win, mut next) = (Window::default(), Window::default());
        next.build(self.p, p0, WINDOW.min(kc));
        for a in (0..kc).step_by(WINDOW) {
            let n = WINDOW.min(kc - a);
            std::mem::swap(&mut win, &mut next);
            // Prefetching pays when a window spans several output rows, so the next one
            // reads input rows not yet touched (measured, backward-weight at batch 64: D3
            // about 14 → 12 ms, D4 level; D2, one output row per window, 13.1 → 14.1 ms
            // with it).
            let more = a + WINDOW < kc;
            if more {
                next.build(self.p, p0 + a + WINDOW, WINDOW.min(kc - a - WINDOW));
            }
            let ahead = more && g.w_out < WINDOW;
            for (q, panel) in dst
                .chunks_exact_mut(kc * nr)
                .take(nc.div_ceil(nr))
                .enumerate()
            {
                let cols = nr.min(nc - q * nr);
                let (mut ci, mut t) = ((j0 + q * nr) / taps, (j0 + q * nr) % taps);
                for (c, row) in stage.chunks_exact_mut(WINDOW).enumerate() {
                    if c < cols {
                        if ahead {
                            next.prefetch::<L>(self.x, self.p, ci, t);
                        }
                        win.gather::<L>(self.x, self.p, ci, t, row);
                        t += 1;
                        if t == taps {
                            t = 0;
                            ci += 1;
                        }
                    } else {
                        row.fill(0.0);
                    }
                }
                for cb in (0..nr).step_by(16) {
                    let width = 16.min(nr - cb);
                    let out = &mut panel[a * nr + cb..(a + n - 1) * nr + cb + width];
                    // SAFETY: the stage holds `width` rows of WINDOW ≥ n values from row cb;
                    // `out` holds n rows (stride nr) of `width` values.
                    unsafe {
                        L::transpose(
                            stage[cb * WINDOW..].as_ptr(),
                            WINDOW,
                            width,
                            n,
                            out.as_mut_ptr(),
                            nr,
                            width,
                        )
                    };
                }
            }
        }
    }
}

/// Whether the kernel covers the whole unpadded input (1×1 output): then every pass is a
/// dense GEMM with the batch as one dimension.
pub(crate) fn whole_input(g: &Conv2dGeom) -> bool {
    g.h_out == 1 && g.w_out == 1 && g.pad == [0, 0] && g.kh == g.h && g.kw == g.w
}

/// Gradient w.r.t. the weight (see the module table); `dw` is overwritten.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    backward_weight_with(x, dy, dw, g, false, PackIsa::best())
}

fn backward_weight_with(
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    g: &Conv2dGeom,
    rewrite: bool,
    isa: PackIsa,
) {
    g.assert_buffers("conv2d_backward_weight", [x.len(), dw.len(), dy.len()]);
    let k = k_len(g);
    if dw.is_empty() {
        return;
    }
    if whole_input(g) {
        // dW (c_out × K) = dYᵀ (c_out × n) · X (n × K).
        let c = DenseC::new(dw, [g.c_out, k], k);
        let a = Strided {
            data: dy,
            rs: 1,
            cs: g.c_out,
        };
        let b = Strided {
            data: x,
            rs: k,
            cs: 1,
        };
        return gemm([g.c_out, k, g.n], &a, &b, &c, false);
    }
    match SpaceToDepth::new(g).filter(|_| rewrite) {
        Some(sd) => {
            let xs = sd.input(x);
            let mut dws = Scratch::take(dw.len());
            weight_plan(&xs, dy, &mut dws, &Plan::plain(&sd.s, isa));
            sd.weight_back(&dws, dw);
        }
        None => weight_plan(x, dy, dw, &Plan::plain(g, isa)),
    }
}

/// `dW (c_out × K) = dY (c_out × n·P) · X̂ᵀ (n·P × K)`: the batch's pixels are the GEMM's
/// inner dimension, so both operands are transposed while packing and the product is
/// written straight into `dw`.
fn weight_plan(x: &[f32], dy: &[f32], dw: &mut [f32], p: &Plan) {
    let g = &p.g;
    let k = k_len(g);
    gemm(
        [g.c_out, k, g.n * g.h_out * g.w_out],
        &OutputGradRows { dy, g, isa: p.isa },
        &Im2colT { x, p },
        &DenseC::new(dw, [g.c_out, k], k),
        false,
    );
}

/// The strided layers rewritten to stride 1: space-to-depth forward and backward-weight,
/// phase-split backward-data (see the module docs). Measured against the direct forms on
/// the DCGAN layers (2 cores, AVX-512), they are no faster: the space-to-depth copy costs
/// about what the strided gathers do, and the phases pack every output-gradient value
/// `s²·(k/s)²` times where col2im packs it once. Kept as a rung of the ladder.
pub mod rewrite {
    use super::*;

    pub fn conv2d_forward(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        g: &Conv2dGeom,
    ) {
        forward_with(x, w, bias, y, g, true, PackIsa::best())
    }

    pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
        backward_data_with(dy, w, dx, g, true, PackIsa::best())
    }

    pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
        backward_weight_with(x, dy, dw, g, true, PackIsa::best())
    }
}

/// The default rung with the portable packing and scatter ([`Portable`] moves), what a CPU
/// without AVX-512 runs; selectable anywhere so it is tested and measured on every machine.
pub mod portable {
    use super::*;

    pub fn conv2d_forward(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        g: &Conv2dGeom,
    ) {
        forward_with(x, w, bias, y, g, false, PackIsa::Portable)
    }

    pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
        backward_data_with(dy, w, dx, g, false, PackIsa::Portable)
    }

    pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
        backward_weight_with(x, dy, dw, g, false, PackIsa::Portable)
    }
}
