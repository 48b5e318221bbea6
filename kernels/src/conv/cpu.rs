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
use crate::gemm::cpu::{gemm, DenseC, PackA, PackB, SendPtr, StoreC, Strided};
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
            for p in 0..kc {
                let kk = p0 + p;
                let (ci, t) = (kk / taps, kk % taps);
                let offsets = &table[t * nr..(t + 1) * nr];
                let out = &mut panel[p * nr..(p + 1) * nr];
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
    fn dense(&self) -> Option<(*mut f32, usize)> {
        None
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
                if add {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                } else {
                    dst.copy_from_slice(src);
                }
            }
            c += run;
        }
    }
}

/// `X̂ᵀ` over the whole batch (`(n·P) × K`, row `(b, p)`), the right operand of
/// backward-weight.
struct Im2colT<'a> {
    x: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for Im2colT<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let (plane_in, plane_out) = (g.h * g.w, g.h_out * g.w_out);
        // Column kk = (ci, i, j) reads input row oh·s + (i·d − pad) and column ow·s + (j·d − pad)
        // of channel ci: keep the per-column parts, and add the per-row part below.
        let (mut dh, mut dw, mut chan) = ([0isize; 64], [0isize; 64], [usize::MAX; 64]);
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            for c in 0..nr {
                if c < cols {
                    let (ci, i, j) = tap(g, j0 + q * nr + c);
                    dh[c] = (i * g.dilation[0]) as isize - g.pad[0] as isize;
                    dw[c] = (j * g.dilation[1]) as isize - g.pad[1] as isize;
                    chan[c] = ci * plane_in;
                } else {
                    chan[c] = usize::MAX;
                }
            }
            for p in 0..kc {
                let row = p0 + p;
                let (b, pix) = (row / plane_out, row % plane_out);
                let ih0 = ((pix / g.w_out) * g.stride[0]) as isize;
                let iw0 = ((pix % g.w_out) * g.stride[1]) as isize;
                let image = &self.x[b * g.c_in * plane_in..(b + 1) * g.c_in * plane_in];
                let out = &mut panel[p * nr..(p + 1) * nr];
                for c in 0..nr {
                    let (ih, iw) = (ih0 + dh[c], iw0 + dw[c]);
                    let inside = chan[c] != usize::MAX
                        && ih >= 0
                        && (ih as usize) < g.h
                        && iw >= 0
                        && (iw as usize) < g.w;
                    out[c] = if inside {
                        image[chan[c] + ih as usize * g.w + iw as usize]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// The output gradient of the whole batch as a `c_out × (n·P)` matrix (column `(b, p)`), the
/// left operand of backward-weight.
struct BatchedRows<'a> {
    dy: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackA for BatchedRows<'_> {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        let g = self.g;
        let plane_out = g.h_out * g.w_out;
        for (q, panel) in dst
            .chunks_exact_mut(kc * mr)
            .take(mc.div_ceil(mr))
            .enumerate()
        {
            let rows = mr.min(mc - q * mr);
            for p in 0..kc {
                let (b, pix) = ((p0 + p) / plane_out, (p0 + p) % plane_out);
                let out = &mut panel[p * mr..(p + 1) * mr];
                for (r, o) in out.iter_mut().enumerate() {
                    let co = i0 + q * mr + r;
                    *o = if r < rows {
                        self.dy[(b * g.c_out + co) * plane_out + pix]
                    } else {
                        0.0
                    };
                }
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
    g: &'a Conv2dGeom,
}

impl StoreC for Col2im<'_> {
    fn dense(&self) -> Option<(*mut f32, usize)> {
        None
    }

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
    assert_eq!(x.len(), g.input_len(), "conv2d: input length");
    assert_eq!(w.len(), g.weight_len(), "conv2d: weight length");
    assert_eq!(y.len(), g.output_len_total(), "conv2d: output length");
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
    assert_eq!(
        dy.len(),
        g.output_len_total(),
        "conv2d_backward_data: output-gradient length"
    );
    assert_eq!(
        w.len(),
        g.weight_len(),
        "conv2d_backward_data: weight length"
    );
    assert_eq!(
        dx.len(),
        g.input_len(),
        "conv2d_backward_data: input-gradient length"
    );
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

/// Gradient w.r.t. the weight (see the module table); `dw` is overwritten.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    assert_eq!(
        x.len(),
        g.input_len(),
        "conv2d_backward_weight: input length"
    );
    assert_eq!(
        dy.len(),
        g.output_len_total(),
        "conv2d_backward_weight: output-gradient length"
    );
    assert_eq!(
        dw.len(),
        g.weight_len(),
        "conv2d_backward_weight: weight-gradient length"
    );
    let (k, plane) = (k_len(g), g.h_out * g.w_out);
    if dw.is_empty() {
        return;
    }
    let c = DenseC::new(dw, [g.c_out, k], k);
    if whole_input(g) {
        // dW (c_out × K) = dYᵀ (c_out × n) · X (n × K).
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
    gemm(
        [g.c_out, k, g.n * plane],
        &BatchedRows { dy, g },
        &Im2colT { x, g },
        &c,
        false,
    );
}
