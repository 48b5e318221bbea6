//! The im2col + GEMM variant: the classic lowering, kept as a rung of the ladder between the
//! reference loops and the implicit GEMM of [`super::cpu`]. Each image's im2col matrix
//! (`K × P`, `K = c_in·kh·kw`, `P = h_out·w_out`) is materialised in a buffer and multiplied
//! with the fast GEMM; it costs `K·P` floats of memory traffic per image and pass, which the
//! implicit GEMM avoids.

use super::Conv2dGeom;
use crate::gemm::cpu::{gemm, DenseC, Strided};
use rayon::prelude::*;

/// Fills `col` (`K × P`, row-major) with image `x`'s patches.
pub fn im2col(x: &[f32], g: &Conv2dGeom, col: &mut [f32]) {
    let plane = g.h_out * g.w_out;
    for ci in 0..g.c_in {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((ci * g.kh + i) * g.kw + j) * plane..][..plane];
                for oh in 0..g.h_out {
                    for ow in 0..g.w_out {
                        row[oh * g.w_out + ow] =
                            match (g.input_coord(0, oh, i), g.input_coord(1, ow, j)) {
                                (Some(ih), Some(iw)) => x[(ci * g.h + ih) * g.w + iw],
                                _ => 0.0,
                            };
                    }
                }
            }
        }
    }
}

/// Adds the patches in `col` back into image gradient `dx` (the adjoint of [`im2col`]).
pub fn col2im(col: &[f32], g: &Conv2dGeom, dx: &mut [f32]) {
    let plane = g.h_out * g.w_out;
    for ci in 0..g.c_in {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &col[((ci * g.kh + i) * g.kw + j) * plane..][..plane];
                for oh in 0..g.h_out {
                    for ow in 0..g.w_out {
                        if let (Some(ih), Some(iw)) =
                            (g.input_coord(0, oh, i), g.input_coord(1, ow, j))
                        {
                            dx[(ci * g.h + ih) * g.w + iw] += row[oh * g.w_out + ow];
                        }
                    }
                }
            }
        }
    }
}

fn dims(g: &Conv2dGeom) -> (usize, usize, usize, usize) {
    (
        g.c_in * g.kh * g.kw,
        g.h_out * g.w_out,
        g.c_in * g.h * g.w,
        g.c_out * g.h_out * g.w_out,
    )
}

/// `Y[b] = W · col(X[b])` (+ bias), one image per task.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    let (k, p, img, out) = dims(g);
    if out == 0 {
        return;
    }
    y.par_chunks_mut(out).enumerate().for_each(|(b, yb)| {
        let mut col = vec![0f32; k * p];
        im2col(&x[b * img..(b + 1) * img], g, &mut col);
        for (i, v) in yb.iter_mut().enumerate() {
            *v = bias.map_or(0.0, |bs| bs[i / p]);
        }
        let (a, bm) = (
            Strided {
                data: w,
                rs: k,
                cs: 1,
            },
            Strided {
                data: &col,
                rs: p,
                cs: 1,
            },
        );
        gemm(
            [g.c_out, p, k],
            &a,
            &bm,
            &DenseC::new(yb, [g.c_out, p], p),
            true,
        );
    });
}

/// `dX[b] = col2im(Wᵀ · dY[b])`.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    let (k, p, img, out) = dims(g);
    if img == 0 {
        return;
    }
    dx.par_chunks_mut(img).enumerate().for_each(|(b, dxb)| {
        let mut col = vec![0f32; k * p];
        let (a, bm) = (
            Strided {
                data: w,
                rs: 1,
                cs: k,
            },
            Strided {
                data: &dy[b * out..(b + 1) * out],
                rs: p,
                cs: 1,
            },
        );
        gemm(
            [k, p, g.c_out],
            &a,
            &bm,
            &DenseC::new(&mut col, [k, p], p),
            false,
        );
        dxb.fill(0.0);
        col2im(&col, g, dxb);
    });
}

/// `dW = Σ_b dY[b] · col(X[b])ᵀ`, accumulated image by image.
pub fn conv2d_backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_weight", [x.len(), dw.len(), dy.len()]);
    let (k, p, img, out) = dims(g);
    dw.fill(0.0);
    let mut col = vec![0f32; k * p];
    for b in 0..g.n {
        im2col(&x[b * img..(b + 1) * img], g, &mut col);
        let (a, bm) = (
            Strided {
                data: &dy[b * out..(b + 1) * out],
                rs: p,
                cs: 1,
            },
            Strided {
                data: &col,
                rs: 1,
                cs: p,
            },
        );
        gemm(
            [g.c_out, k, p],
            &a,
            &bm,
            &DenseC::new(dw, [g.c_out, k], k),
            true,
        );
    }
}
