//! Fast f32 convolution as implicit GEMM: the im2col matrix is never materialised. Its
//! values are gathered straight from the image into the GEMM's packed panels (or, for the
//! input gradient, the GEMM's output tiles are scattered straight into the image).
//!
//! With `K = c_in·kh·kw` (one row per kernel tap `(ci, i, j)`) and `P = h_out·w_out` (one
//! column per output pixel), the three passes are GEMMs over that virtual `K × P` matrix `X̂`:
//!
//! | pass            | GEMM                                   | shape (m × n × k)       | threads        |
//! |-----------------|----------------------------------------|-------------------------|----------------|
//! | forward         | `Y[b] = W · X̂[b]`                      | c_out × P × K           | over images    |
//! | backward-data   | `dX̂[b] = Wᵀ · dY[b]`, col2im on store  | K × P × c_out           | over images    |
//! | backward-weight | `dW = Σ_b dY[b] · X̂[b]ᵀ` as one GEMM   | c_out × K × (n·P)       | inside the GEMM|
//!
//! `W` is the weight viewed as `c_out × K`. Backward-weight folds the batch into the GEMM's
//! inner dimension (columns `(b, p)`), so it is one large GEMM with no reduction across
//! threads. When the kernel covers the whole (unpadded) input, so the output is 1×1 (the
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

/// The virtual im2col matrix `X̂` (`K × P`) of one image, as a GEMM right operand.
struct Im2col<'a> {
    x: &'a [f32],
    g: &'a Conv2dGeom,
}

impl PackB for Im2col<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        let g = self.g;
        let (mut oh, mut ow) = ([0usize; 64], [0usize; 64]);
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            for c in 0..cols {
                let j = j0 + q * nr + c;
                (oh[c], ow[c]) = (j / g.w_out, j % g.w_out);
            }
            // A full panel inside one output row at stride 1 reads one contiguous input run.
            let one_run = cols == nr && oh[0] == oh[cols - 1] && g.stride[1] == 1;
            for p in 0..kc {
                let (ci, i, j) = tap(g, p0 + p);
                let plane = &self.x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
                let out = &mut panel[p * nr..(p + 1) * nr];
                let ih0 = coord(oh[0], i, g.stride[0], g.dilation[0], g.pad[0]);
                let iw0 = coord(ow[0], j, 1, g.dilation[1], g.pad[1]);
                if one_run
                    && ih0 >= 0
                    && (ih0 as usize) < g.h
                    && iw0 >= 0
                    && iw0 as usize + nr <= g.w
                {
                    let start = ih0 as usize * g.w + iw0 as usize;
                    out.copy_from_slice(&plane[start..start + nr]);
                    continue;
                }
                for (c, o) in out.iter_mut().enumerate() {
                    *o = 0.0;
                    if c < cols {
                        let ih = coord(oh[c], i, g.stride[0], g.dilation[0], g.pad[0]);
                        let iw = coord(ow[c], j, g.stride[1], g.dilation[1], g.pad[1]);
                        if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                            *o = plane[ih as usize * g.w + iw as usize];
                        }
                    }
                }
            }
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
        let plane_out = g.h_out * g.w_out;
        let mut taps = [(0usize, 0usize, 0usize); 64];
        for (q, panel) in dst
            .chunks_exact_mut(kc * nr)
            .take(nc.div_ceil(nr))
            .enumerate()
        {
            let cols = nr.min(nc - q * nr);
            for (c, t) in taps.iter_mut().enumerate().take(cols) {
                *t = tap(g, j0 + q * nr + c);
            }
            for p in 0..kc {
                let row = p0 + p;
                let (b, pix) = (row / plane_out, row % plane_out);
                let (oh, ow) = (pix / g.w_out, pix % g.w_out);
                let image = &self.x[b * g.c_in * g.h * g.w..(b + 1) * g.c_in * g.h * g.w];
                let out = &mut panel[p * nr..(p + 1) * nr];
                for (c, o) in out.iter_mut().enumerate() {
                    *o = 0.0;
                    if c < cols {
                        let (ci, i, j) = taps[c];
                        let ih = coord(oh, i, g.stride[0], g.dilation[0], g.pad[0]);
                        let iw = coord(ow, j, g.stride[1], g.dilation[1], g.pad[1]);
                        if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                            *o = image[(ci * g.h + ih as usize) * g.w + iw as usize];
                        }
                    }
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

/// Col2im as a GEMM destination: tile element `(kk, p)` of `dX̂` is added to the input pixel
/// that tap `kk` of output pixel `p` reads. Different taps hit the same pixel, so the GEMM
/// must not split across threads ([`StoreC::splittable`] is false).
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
        // Every partial product adds into the (zeroed) image, whichever K block it is from.
        let g = self.g;
        for r in 0..h {
            let (ci, ki, kj) = tap(g, i + r);
            for c in 0..w {
                let pix = j + c;
                let ih = coord(pix / g.w_out, ki, g.stride[0], g.dilation[0], g.pad[0]);
                let iw = coord(pix % g.w_out, kj, g.stride[1], g.dilation[1], g.pad[1]);
                if ih >= 0 && (ih as usize) < g.h && iw >= 0 && (iw as usize) < g.w {
                    // SAFETY: the index lies inside this image's c_in × h × w gradient, which
                    // only this (non-split) GEMM writes.
                    unsafe {
                        *self.dx.0.add((ci * g.h + ih as usize) * g.w + iw as usize) +=
                            tile[r * ld + c]
                    };
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
    let image = g.c_in * g.h * g.w;
    y.par_chunks_mut(g.c_out * plane)
        .enumerate()
        .for_each(|(bi, yb)| {
            let a = Strided {
                data: w,
                rs: k,
                cs: 1,
            };
            let b = Im2col {
                x: &x[bi * image..(bi + 1) * image],
                g,
            };
            gemm(
                [g.c_out, plane, k],
                &a,
                &b,
                &DenseC::new(yb, [g.c_out, plane], plane),
                true,
            );
        });
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
    let image = g.c_in * g.h * g.w;
    dx.par_chunks_mut(image).enumerate().for_each(|(bi, dxb)| {
        // dX̂ (K × P) = Wᵀ (K × c_out) · dY[b] (c_out × P), scattered by col2im.
        let a = Strided {
            data: w,
            rs: 1,
            cs: k,
        };
        let b = Strided {
            data: &dy[bi * g.c_out * plane..(bi + 1) * g.c_out * plane],
            rs: plane,
            cs: 1,
        };
        let sink = Col2im {
            dx: SendPtr(dxb.as_mut_ptr()),
            g,
        };
        gemm([k, plane, g.c_out], &a, &b, &sink, true);
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
