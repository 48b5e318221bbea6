//! Reference convolution: the definition, written as nested loops.

use super::Conv2dGeom;
use crate::Float;
use rayon::prelude::*;

/// `y[b, co, oh, ow] = bias[co] + Σ_{ci, i, j} x[b, ci, ih, iw] · w[co, ci, i, j]`, with
/// `(ih, iw)` given by [`Conv2dGeom::input_coord`].
pub fn conv2d_forward<T: Float>(x: &[T], w: &[T], bias: Option<&[T]>, y: &mut [T], g: &Conv2dGeom) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv2d: bias length");
    }
    let plane = g.h_out * g.w_out;
    if plane == 0 {
        return;
    }
    // One task per (image, output channel) plane.
    y.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(bc, y_plane)| {
            let (b, co) = (bc / g.c_out, bc % g.c_out);
            for oh in 0..g.h_out {
                for ow in 0..g.w_out {
                    let mut acc = bias.map_or(0.0, |b| b[co].to_f64());
                    for ci in 0..g.c_in {
                        for i in 0..g.kh {
                            let Some(ih) = g.input_coord(0, oh, i) else {
                                continue;
                            };
                            for j in 0..g.kw {
                                let Some(iw) = g.input_coord(1, ow, j) else {
                                    continue;
                                };
                                let xv = x[((b * g.c_in + ci) * g.h + ih) * g.w + iw];
                                let wv = w[((co * g.c_in + ci) * g.kh + i) * g.kw + j];
                                acc += xv.to_f64() * wv.to_f64();
                            }
                        }
                    }
                    y_plane[oh * g.w_out + ow] = T::from_f64(acc);
                }
            }
        });
}

/// Gradient w.r.t. the input: every output gradient `dy[b, co, oh, ow]` flows back, through
/// weight `w[co, ci, i, j]`, to the input pixel that forward read. `dx` is overwritten.
pub fn conv2d_backward_data<T: Float>(dy: &[T], w: &[T], dx: &mut [T], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    let image = g.c_in * g.h * g.w;
    if image == 0 {
        return;
    }
    // One task per image: images do not share input pixels.
    dx.par_chunks_mut(image)
        .enumerate()
        .for_each(|(b, dx_img)| {
            let mut acc = vec![0f64; image];
            for co in 0..g.c_out {
                for oh in 0..g.h_out {
                    for ow in 0..g.w_out {
                        let d = dy[((b * g.c_out + co) * g.h_out + oh) * g.w_out + ow].to_f64();
                        for ci in 0..g.c_in {
                            for i in 0..g.kh {
                                let Some(ih) = g.input_coord(0, oh, i) else {
                                    continue;
                                };
                                for j in 0..g.kw {
                                    let Some(iw) = g.input_coord(1, ow, j) else {
                                        continue;
                                    };
                                    let wv = w[((co * g.c_in + ci) * g.kh + i) * g.kw + j].to_f64();
                                    acc[(ci * g.h + ih) * g.w + iw] += d * wv;
                                }
                            }
                        }
                    }
                }
            }
            for (o, a) in dx_img.iter_mut().zip(acc) {
                *o = T::from_f64(a);
            }
        });
}

/// Gradient w.r.t. the weight: `dw[co, ci, i, j] = Σ_{b, oh, ow} dy[b, co, oh, ow] · x[b, ci, ih, iw]`.
/// `dw` is overwritten.
pub fn conv2d_backward_weight<T: Float>(x: &[T], dy: &[T], dw: &mut [T], g: &Conv2dGeom) {
    g.assert_buffers("conv2d_backward_weight", [x.len(), dw.len(), dy.len()]);
    let filter = g.c_in * g.kh * g.kw;
    if filter == 0 {
        return;
    }
    // One task per output channel: each owns its filter.
    dw.par_chunks_mut(filter)
        .enumerate()
        .for_each(|(co, dw_f)| {
            for ci in 0..g.c_in {
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let mut acc = 0f64;
                        for b in 0..g.n {
                            for oh in 0..g.h_out {
                                let Some(ih) = g.input_coord(0, oh, i) else {
                                    continue;
                                };
                                for ow in 0..g.w_out {
                                    let Some(iw) = g.input_coord(1, ow, j) else {
                                        continue;
                                    };
                                    let d = dy[((b * g.c_out + co) * g.h_out + oh) * g.w_out + ow];
                                    let xv = x[((b * g.c_in + ci) * g.h + ih) * g.w + iw];
                                    acc += d.to_f64() * xv.to_f64();
                                }
                            }
                        }
                        dw_f[(ci * g.kh + i) * g.kw + j] = T::from_f64(acc);
                    }
                }
            }
        });
}
