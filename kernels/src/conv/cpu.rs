//! Fast f32 convolution as implicit GEMM: the im2col matrix is never materialised. Its
//! values are gathered straight from the image into the GEMM's packed panels (or, for the
//! input gradient, the GEMM's output tiles are scattered straight into the image).
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
//! `W` is the weight viewed as `c_out × K`. The batch is folded into the GEMMs: forward and
//! backward-data put the images of a group side by side as columns `(b, p)` (one group per
//! thread), which keeps the GEMM wide even for 4×4 outputs; backward-weight puts the whole
//! batch in the inner dimension, one large GEMM with no reduction across threads. When the kernel covers the whole (unpadded) input, so the output is 1×1 (the
//! DCGAN discriminator's last layer, and the generator's first layer run as its transpose),
//! every pass is a plain dense GEMM over the batch instead.
//!
//! Layout: the public NCHW layout is used as is; the packing routines absorb the gathering.

use super::Conv2dGeom;
use crate::gemm::cpu::{gemm, write_row, DenseC, PackA, PackB, SendPtr, StoreC, Strided};
use rayon::prelude::*;

/// Splits kernel-tap index `kk` into `(ci, i, j)`.
#[inline]
fn tap(g: &Conv2dGeom, kk: usize) -> (usize, usize, usize) {
    let per = g.kh * g.kw;
    (kk / per, (kk % per) / g.kw, kk % g.kw)
}

/// Input coordinate, possibly outside the image, read by output `o` and tap `k` on an axis.
#[inline]
fn coord(o: usize, k: usize, stride: usize, dilation: usize, pad: usize) -> isize {
    (o * stride + k * dilation) as isize - pad as isize
}

/// The virtual im2col matrix of a group of images side by side, `K × (n·P)` (column
/// `(b, p)`), as a GEMM right operand. `x` starts at the group's first image.
struct Im2col<'a> {
    x: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for Im2col<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let (plane_in, plane_out, taps) = (g.h * g.w, g.h_out * g.w_out, g.kh * g.kw);
        // For each of the panel's columns and each spatial tap (i, j): where in a channel
        // plane that tap reads, or -1 in the padding. The same table serves every channel.
        let mut table = vec![-1isize; taps * nr];
        let mut runs = vec![false; taps];
        let mut image = [0usize; 64];
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            table.fill(-1);
            for c in 0..cols {
                let col = j0 + q * nr + c;
                let (b, pix) = (col / plane_out, col % plane_out);
                image[c] = b * g.c_in * plane_in;
                let (oh, ow) = (pix / g.w_out, pix % g.w_out);
                for i in 0..g.kh {
                    let ih = coord(oh, i, g.stride[0], g.dilation[0], g.pad[0]);
                    for j in 0..g.kw {
                        let iw = coord(ow, j, g.stride[1], g.dilation[1], g.pad[1]);
                        if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                            table[(i * g.kw + j) * nr + c] = ih * g.w as isize + iw;
                        }
                    }
                }
            }
            // Taps whose panel reads one contiguous input run (stride 1, inside the image,
            // within one output row): those rows of the panel are a plain copy.
            for (t, run) in runs.iter_mut().enumerate() {
                let o = &table[t * nr..(t + 1) * nr];
                *run = cols == nr
                    && image[0] == image[nr - 1]
                    && o[0] >= 0
                    && o.iter().enumerate().all(|(c, &v)| v == o[0] + c as isize);
            }
            for p in 0..kc {
                let kk = p0 + p;
                let (ci, t) = (kk / taps, kk % taps);
                let offsets = &table[t * nr..(t + 1) * nr];
                let out = &mut panel[p * nr..(p + 1) * nr];
                if runs[t] {
                    let start = image[0] + ci * plane_in + offsets[0] as usize;
                    out.copy_from_slice(&self.x[start..start + nr]);
                    continue;
                }
                for c in 0..nr {
                    let off = offsets[c];
                    out[c] = if off >= 0 {
                        self.x[image[c] + ci * plane_in + off as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// The output gradient of a group of images as a `c_out × (n·P)` matrix (column `(b, p)`),
/// the right operand of backward-data. `dy` starts at the group's first image.
struct BatchedCols<'a> {
    dy: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for BatchedCols<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let plane_out = g.h_out * g.w_out;
        // Column (b, p) of row co is dy[(b·c_out + co)·P + p] = base[c] + co·P.
        let mut base = [usize::MAX; 64];
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            for (c, b) in base.iter_mut().enumerate().take(nr) {
                let col = j0 + q * nr + c;
                *b = if c < cols {
                    (col / plane_out) * g.c_out * plane_out + col % plane_out
                } else {
                    usize::MAX
                };
            }
            for p in 0..kc {
                let row = (p0 + p) * plane_out;
                let out = &mut panel[p * nr..(p + 1) * nr];
                for c in 0..nr {
                    out[c] = if base[c] != usize::MAX {
                        self.dy[base[c] + row]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// A group of output images as a `c_out × (n·P)` GEMM destination (column `(b, p)`): row
/// `co` of image `b` is contiguous in NCHW. `y` starts at the group's first image.
struct BatchedOut<'a> {
    y: SendPtr,
    g: &'a Conv2dGeom,
}

impl StoreC for BatchedOut<'_> {
    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
        add: bool,
    ) {
        let (c_out, plane) = (self.g.c_out, self.g.h_out * self.g.w_out);
        // Split the tile's columns into runs that stay within one image.
        let mut c = 0;
        while c < w {
            let (b, pix) = ((j + c) / plane, (j + c) % plane);
            let run = (plane - pix).min(w - c);
            for r in 0..h {
                // SAFETY: (image b, channel i + r, pixels pix..pix + run) lies inside the
                // group's outputs; threads own disjoint row or column ranges of C.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        self.y.0.add((b * c_out + i + r) * plane + pix),
                        run,
                    )
                };
                let src = &tile[r * ld + c..r * ld + c + run];
                write_row(dst, src, add);
            }
            c += run;
        }
    }
}

/// Col2im as a GEMM destination over a group of images: tile element `(kk, (b, p))` of
/// `dX̂` is added to the input pixel of image `b` that tap `kk` of output pixel `p` reads.
/// Different taps hit the same pixel, so the GEMM must not split across threads
/// ([`StoreC::splittable`] is false); parallelism comes from independent image groups.
struct Col2im<'a> {
    dx: SendPtr,
    g: &'a Conv2dGeom,
}

impl StoreC for Col2im<'_> {
    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
        _add: bool,
    ) {
        // Every partial product adds into the (zeroed) gradient, whichever K block it is from.
        let g = self.g;
        let (plane_in, plane_out) = (g.h * g.w, g.h_out * g.w_out);
        let (mut base, mut ih0, mut iw0) = ([0usize; 64], [0isize; 64], [0isize; 64]);
        for c in 0..w {
            let (b, pix) = ((j + c) / plane_out, (j + c) % plane_out);
            base[c] = b * g.c_in * plane_in;
            ih0[c] = ((pix / g.w_out) * g.stride[0]) as isize - g.pad[0] as isize;
            iw0[c] = ((pix % g.w_out) * g.stride[1]) as isize - g.pad[1] as isize;
        }
        for r in 0..h {
            let (ci, ki, kj) = tap(g, i + r);
            let (dh, dw) = ((ki * g.dilation[0]) as isize, (kj * g.dilation[1]) as isize);
            for c in 0..w {
                let (ih, iw) = (ih0[c] + dh, iw0[c] + dw);
                if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                    let at = base[c] + ci * plane_in + ih as usize * g.w + iw as usize;
                    // SAFETY: `at` lies inside the group's input gradient, which only this
                    // (non-split) GEMM writes.
                    unsafe { *self.dx.0.add(at) += tile[r * ld + c] };
                }
            }
        }
    }

    fn splittable(&self) -> bool {
        false
    }
}

/// Writes `len` consecutive values of row `kk` of the batch's im2col matrix `X̂` (columns
/// `(b, p)` from `col0`) to `out[0], out[step], out[2·step], …`. Columns are walked in runs
/// that stay in one output row of one image; in a run, the tap reads one input row at a
/// fixed stride, so the valid part is a strided copy with no per-element bounds checks.
fn im2col_row(
    x: &[f32],
    g: &Conv2dGeom,
    kk: usize,
    col0: usize,
    len: usize,
    out: &mut [f32],
    step: usize,
) {
    let (ci, ki, kj) = tap(g, kk);
    let (plane_in, plane_out) = (g.h * g.w, g.h_out * g.w_out);
    let sw = g.stride[1] as isize;
    let mut c = 0;
    while c < len {
        let (b, pix) = ((col0 + c) / plane_out, (col0 + c) % plane_out);
        let (oh, ow0) = (pix / g.w_out, pix % g.w_out);
        let run = (g.w_out - ow0).min(len - c);
        let ih = coord(oh, ki, g.stride[0], g.dilation[0], g.pad[0]);
        let iw0 = coord(ow0, kj, g.stride[1], g.dilation[1], g.pad[1]);
        // Valid positions e in lo..hi satisfy 0 <= iw0 + e·sw < w.
        let (lo, hi) = if ih < 0 || ih as usize >= g.h {
            (0, 0)
        } else {
            let lo = if iw0 >= 0 {
                0
            } else {
                ((-iw0 + sw - 1) / sw) as usize
            };
            let hi = if iw0 >= g.w as isize {
                0
            } else {
                ((g.w as isize - iw0 + sw - 1) / sw) as usize
            };
            (lo.min(run), hi.min(run).max(lo.min(run)))
        };
        for e in (0..lo).chain(hi..run) {
            out[(c + e) * step] = 0.0;
        }
        if lo < hi {
            let row = (b * g.c_in + ci) * plane_in + ih as usize * g.w;
            let start = (iw0 + lo as isize * sw) as usize;
            for (e, v) in (lo..hi).zip(x[row + start..].iter().step_by(sw as usize)) {
                out[(c + e) * step] = *v;
            }
        }
        c += run;
    }
}

/// `X̂` of the whole batch (`K × (n·P)`) as a GEMM *left* operand: the backward-weight GEMM
/// run transposed (`dWᵀ = X̂ · dYᵀ`), so its packing reads input rows in order.
struct Im2colRows<'a> {
    x: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackA for Im2colRows<'_> {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        for (q, panel) in dst
            .chunks_exact_mut(kc * mr)
            .take(mc.div_ceil(mr))
            .enumerate()
        {
            let rows = mr.min(mc - q * mr);
            for r in 0..mr {
                if r < rows {
                    im2col_row(self.x, self.g, i0 + q * mr + r, p0, kc, &mut panel[r..], mr);
                } else {
                    panel[r..]
                        .iter_mut()
                        .step_by(mr)
                        .take(kc)
                        .for_each(|v| *v = 0.0);
                }
            }
        }
    }
}

/// `dYᵀ` of the whole batch (`(n·P) × c_out`) as a GEMM right operand.
struct OutputGradT<'a> {
    dy: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for OutputGradT<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let (c_out, plane) = (self.g.c_out, self.g.h_out * self.g.w_out);
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            for c in 0..nr {
                let col = panel[c..].iter_mut().step_by(nr).take(kc);
                if c >= cols {
                    col.for_each(|v| *v = 0.0);
                    continue;
                }
                // Column co of dYᵀ: rows (b, p) read dy[b][co][p], contiguous within an image.
                let co = j0 + q * nr + c;
                let mut row = p0;
                let mut col = col;
                while row < p0 + kc {
                    let (b, pix) = (row / plane, row % plane);
                    let run = (plane - pix).min(p0 + kc - row);
                    let src = &self.dy[(b * c_out + co) * plane + pix..][..run];
                    for (v, s) in col.by_ref().take(run).zip(src) {
                        *v = *s;
                    }
                    row += run;
                }
            }
        }
    }
}

/// A row-major `c_out × K` destination written as its transpose: GEMM element `(kk, co)`
/// lands at `dw[co][kk]`.
struct TransposedC {
    dw: SendPtr,
    k: usize,
}

impl StoreC for TransposedC {
    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
        add: bool,
    ) {
        for c in 0..w {
            for r in 0..h {
                // SAFETY: (co = j + c, kk = i + r) is inside the c_out × K weight gradient;
                // threads own disjoint row or column ranges.
                let d = unsafe { &mut *self.dw.0.add((j + c) * self.k + i + r) };
                let v = tile[r * ld + c];
                *d = if add { *d + v } else { v };
            }
        }
    }
}

/// Whether the kernel covers the whole unpadded input (1×1 output): then every pass is a
/// dense GEMM with the batch as one dimension.
fn whole_input(g: &Conv2dGeom) -> bool {
    g.h_out == 1 && g.w_out == 1 && g.pad == [0, 0] && g.kh == g.h && g.kw == g.w
}

fn k_len(g: &Conv2dGeom) -> usize {
    g.c_in * g.kh * g.kw
}

/// Forward convolution (see the module table). Same contract as the reference kernel.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
    if y.is_empty() {
        return;
    }
    // Start from the bias (or zero) and accumulate the product onto it.
    for (i, v) in y.iter_mut().enumerate() {
        *v = bias.map_or(0.0, |b| b[(i / plane) % g.c_out]);
    }
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
        gemm(
            [g.n, g.c_out, k],
            &a,
            &b,
            &DenseC::new(y, [g.n, g.c_out], g.c_out),
            true,
        );
        return;
    }
    // Images in groups, one GEMM per group: the columns of several images side by side
    // make a wide GEMM even when each image has few output pixels (DCGAN's 4×4 layers).
    let (image, out_image) = (g.c_in * g.h * g.w, g.c_out * plane);
    let per = group_size(g.n);
    y.par_chunks_mut(per * out_image)
        .enumerate()
        .for_each(|(gi, yg)| {
            let nb = yg.len() / out_image;
            let a = Strided {
                data: w,
                rs: k,
                cs: 1,
            };
            let b = Im2col {
                x: &x[gi * per * image..],
                g,
            };
            let c = BatchedOut {
                y: SendPtr(yg.as_mut_ptr()),
                g,
            };
            gemm([g.c_out, nb * plane, k], &a, &b, &c, true);
        });
}

/// Images per GEMM: the batch split evenly over the threads.
fn group_size(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1)).max(1)
}

/// Gradient w.r.t. the input (see the module table); `dx` is overwritten.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
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
        gemm(
            [g.n, k, g.c_out],
            &a,
            &b,
            &DenseC::new(dx, [g.n, k], k),
            false,
        );
        return;
    }
    if let Some((flipped, fg)) = as_forward_conv(w, g) {
        return conv2d_forward(dy, &flipped, None, dx, &fg);
    }
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
                g,
            };
            gemm([k, nb * plane, g.c_out], &a, &b, &sink, true);
        });
}

/// At stride 1, the input gradient is itself a convolution: of `dy` with the kernel flipped
/// in both spatial axes and its channel axes swapped, padded by `dilation·(k − 1) − pad`.
/// Running it through the forward path avoids the col2im scatter. Returns that kernel and
/// geometry, or `None` when the stride is not 1 (or the padding exceeds the kernel span).
fn as_forward_conv(w: &[f32], g: &Conv2dGeom) -> Option<(Vec<f32>, Conv2dGeom)> {
    if g.stride != [1, 1] {
        return None;
    }
    let pad_h = (g.dilation[0] * (g.kh - 1)).checked_sub(g.pad[0])?;
    let pad_w = (g.dilation[1] * (g.kw - 1)).checked_sub(g.pad[1])?;
    let fg = Conv2dGeom {
        n: g.n,
        c_in: g.c_out,
        h: g.h_out,
        w: g.w_out,
        c_out: g.c_in,
        pad: [pad_h, pad_w],
        h_out: g.h,
        w_out: g.w,
        ..*g
    };
    let mut flipped = vec![0f32; w.len()];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for i in 0..g.kh {
                for j in 0..g.kw {
                    flipped
                        [((ci * g.c_out + co) * g.kh + (g.kh - 1 - i)) * g.kw + (g.kw - 1 - j)] =
                        w[((co * g.c_in + ci) * g.kh + i) * g.kw + j];
                }
            }
        }
    }
    Some((flipped, fg))
}

/// Gradient w.r.t. the weight (see the module table); `dw` is overwritten.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_weight", [x.len(), dw.len(), dy.len()]);
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
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
        gemm([g.c_out, k, g.n], &a, &b, &c, false);
        return;
    }
    // dWᵀ (K × c_out) = X̂ (K × n·P) · dYᵀ (n·P × c_out), stored transposed.
    let sink = TransposedC {
        dw: SendPtr(dw.as_mut_ptr()),
        k,
    };
    gemm(
        [k, g.c_out, g.n * plane],
        &Im2colRows { x, g },
        &OutputGradT { dy, g },
        &sink,
        false,
    );
}
