//! Convolution and transposed convolution.

use super::{check_float, check_same};
use crate::storage::Storage;
use crate::{BackwardCtx, Error, Result, Tensor};
use gantry_kernels::conv::Conv2dGeom;
use gantry_kernels::elementwise::UnaryOp;

/// Parameters of [`Tensor::conv2d`], as `[height, width]` pairs. Default: stride 1, no
/// padding, no dilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }
}

impl Conv2dParams {
    /// Square stride and padding, no dilation (`Conv2dParams::new(2, 1)` is DCGAN's).
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
            dilation: [1, 1],
        }
    }
    pub fn with_dilation(self, dilation: usize) -> Self {
        Conv2dParams {
            dilation: [dilation; 2],
            ..self
        }
    }
}

/// Parameters of [`Tensor::conv_transpose2d`]. `output_padding` adds rows/columns at the
/// bottom/right of the output (it picks among the output sizes a strided conv maps to the
/// same input size); it must be smaller than the stride or the dilation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub output_padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: [1, 1],
            padding: [0, 0],
            output_padding: [0, 0],
            dilation: [1, 1],
        }
    }
}

impl ConvTranspose2dParams {
    /// Square stride and padding (`ConvTranspose2dParams::new(2, 1)` is DCGAN's upsampler).
    pub fn new(stride: usize, padding: usize) -> Self {
        ConvTranspose2dParams {
            stride: [stride; 2],
            padding: [padding; 2],
            ..Default::default()
        }
    }
    pub fn with_output_padding(self, output_padding: usize) -> Self {
        ConvTranspose2dParams {
            output_padding: [output_padding; 2],
            ..self
        }
    }
    pub fn with_dilation(self, dilation: usize) -> Self {
        ConvTranspose2dParams {
            dilation: [dilation; 2],
            ..self
        }
    }
}

/// Validates a conv-like op's operands. `in_axis` is the weight dimension that must equal the
/// input's channel count (1 for conv2d's `[out, in, …]`, 0 for conv_transpose2d's
/// `[in, out, …]`); the other of the first two is the output channel count the bias must have.
fn check_conv_args(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: [usize; 2],
    dilation: [usize; 2],
    in_axis: usize,
) -> Result<()> {
    let mut all = vec![x, w];
    all.extend(bias);
    check_same(op, &all)?;
    check_float(op, x)?;
    if x.rank() != 4 {
        return Err(Error::shape(
            op,
            format!("input must be 4-D [n, c, h, w], got {}", x.shape()),
        ));
    }
    if w.rank() != 4 || w.dims()[2] == 0 || w.dims()[3] == 0 {
        return Err(Error::shape(
            op,
            format!(
                "weight must be 4-D with a non-empty kernel, got {}",
                w.shape()
            ),
        ));
    }
    if stride.contains(&0) || dilation.contains(&0) {
        return Err(Error::invalid(
            op,
            format!("stride {stride:?} and dilation {dilation:?} must be positive"),
        ));
    }
    let (c_in, c_out) = (w.dims()[in_axis], w.dims()[1 - in_axis]);
    if x.dims()[1] != c_in {
        return Err(Error::shape(
            op,
            format!(
                "input has {} channels but weight expects {c_in} (input {}, weight {})",
                x.dims()[1],
                x.shape(),
                w.shape()
            ),
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [c_out] {
            return Err(Error::shape(
                op,
                format!("bias must have shape [{c_out}], got {}", b.shape()),
            ));
        }
    }
    Ok(())
}

/// Refuses an activation the fused ops cannot differentiate from their output alone.
fn check_fusable(op: &'static str, act: Option<UnaryOp>) -> Result<()> {
    match act {
        Some(a) if !a.derivative_from_output() => Err(Error::invalid(
            op,
            format!(
                "{a:?} cannot be fused: its gradient needs the pre-activation (fusable: relu, \
                 leaky_relu with a slope >= 0, tanh, sigmoid)"
            ),
        )),
        _ => Ok(()),
    }
}

/// The gradients `[dx, dw, dbias]` of a conv-like op whose inputs are `[x, w, bias?]`, given
/// the storage computations for `dx` (from the output gradient and the weight) and `dw` (from
/// the input and the output gradient). With a fused activation `act`, the output gradient is
/// first taken back through it, from the output alone (`act'` as a function of `y`, exactly
/// what the separate activation's backward computes). The bias gradient is that gradient
/// summed over everything but channels.
fn conv_like_grads(
    ctx: &BackwardCtx,
    act: Option<UnaryOp>,
    dx: impl FnOnce(&Storage, &Storage) -> Result<Storage>,
    dw: impl FnOnce(&Storage, &Storage) -> Result<Storage>,
) -> Result<Vec<Option<Tensor>>> {
    let (x, w) = (&ctx.inputs[0], &ctx.inputs[1]);
    let pre;
    let g = match act {
        None => ctx.grad,
        Some(op) => {
            let y = ctx.output.storage();
            let g = y.unary_backward(&y, &ctx.grad.storage(), op)?;
            pre = Tensor::from_storage(g, ctx.grad.shape().clone());
            &pre
        }
    };
    let dx = match ctx.needs(0) {
        true => Some(Tensor::from_storage(
            dx(&g.storage(), &w.storage())?,
            x.shape().clone(),
        )),
        false => None,
    };
    let dw = match ctx.needs(1) {
        true => Some(Tensor::from_storage(
            dw(&x.storage(), &g.storage())?,
            w.shape().clone(),
        )),
        false => None,
    };
    let db = ctx.needs(2).then(|| g.sum(&[0, 2, 3], false)).transpose()?;
    Ok(vec![dx, dw, db])
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as PyTorch's `conv2d`): input `[n, c_in, h, w]`,
    /// weight `[c_out, c_in, kh, kw]`, optional bias `[c_out]` → `[n, c_out, h_out, w_out]`.
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
    ) -> Result<Tensor> {
        self.conv2d_act(weight, bias, p, None)
    }

    /// [`Tensor::conv2d`] followed by the activation `act`, as one op: the kernels apply it
    /// to each output value as they store it, and the backward takes the gradient through it
    /// from the output, so no pre-activation is kept. `act` must be one whose derivative the
    /// output determines ([`UnaryOp::derivative_from_output`]: relu, leaky relu with a slope
    /// ≥ 0, tanh, sigmoid). The result, and its gradients, are bit for bit those of
    /// `conv2d` then `unary(act)`.
    pub fn conv2d_act(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: Conv2dParams,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let op = if act.is_some() {
            "conv2d_act"
        } else {
            "conv2d"
        };
        check_conv_args(op, self, weight, bias, p.stride, p.dilation, 1)?;
        check_fusable(op, act)?;
        let (x, w) = (self.dims(), weight.dims());
        let geom = Conv2dGeom {
            n: x[0],
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: w[0],
            kh: w[2],
            kw: w[3],
            stride: p.stride,
            pad: p.padding,
            dilation: p.dilation,
            h_out: 0,
            w_out: 0,
        }
        .with_conv_output()
        .ok_or_else(|| {
            Error::shape(
                op,
                format!(
                    "input {} padded by {:?} is smaller than the kernel {}x{} dilated by {:?}",
                    self.shape(),
                    p.padding,
                    w[2],
                    w[3],
                    p.dilation
                ),
            )
        })?;
        let y = self.storage().conv2d(
            &weight.storage(),
            bias.map(|b| b.storage()).as_deref(),
            act,
            &geom,
        )?;
        let out_dims = [geom.n, geom.c_out, geom.h_out, geom.w_out];
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Tensor::from_op(y, out_dims, op, &inputs, move |ctx| {
            conv_like_grads(
                ctx,
                act,
                |g, w| g.conv2d_backward_data(w, &geom),
                |x, g| x.conv2d_backward_weight(g, &geom),
            )
        }))
    }

    /// 2-D transposed convolution (PyTorch's `conv_transpose2d`): input `[n, c_in, h, w]`,
    /// weight `[c_in, c_out, kh, kw]`, optional bias `[c_out]` → `[n, c_out, H, W]` with
    /// `H = (h − 1)·stride − 2·pad + dilation·(kh − 1) + output_padding + 1`.
    ///
    /// It is the adjoint of a convolution from `[n, c_out, H, W]` to `[n, c_in, h, w]` with the
    /// same weight, so forward runs conv backward-data, the input gradient runs conv forward,
    /// and the weight gradient runs conv backward-weight with the roles of input and output
    /// gradient swapped.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: ConvTranspose2dParams,
    ) -> Result<Tensor> {
        self.conv_transpose2d_act(weight, bias, p, None)
    }

    /// [`Tensor::conv_transpose2d`] followed by the activation `act`, as one op, with the
    /// bias and activation applied as the kernels store each value (see
    /// [`Tensor::conv2d_act`] for which activations fuse).
    pub fn conv_transpose2d_act(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        p: ConvTranspose2dParams,
        act: Option<UnaryOp>,
    ) -> Result<Tensor> {
        let op = if act.is_some() {
            "conv_transpose2d_act"
        } else {
            "conv_transpose2d"
        };
        check_conv_args(op, self, weight, bias, p.stride, p.dilation, 0)?;
        check_fusable(op, act)?;
        let (x, w) = (self.dims(), weight.dims());
        if x[2] == 0 || x[3] == 0 {
            return Err(Error::shape(
                op,
                format!("input {} has an empty spatial dimension", self.shape()),
            ));
        }
        let mut out_hw = [0; 2];
        for a in 0..2 {
            if p.output_padding[a] >= p.stride[a] && p.output_padding[a] >= p.dilation[a] {
                return Err(Error::invalid(
                    op,
                    format!(
                        "output_padding {:?} must be smaller than stride {:?} or dilation {:?}",
                        p.output_padding, p.stride, p.dilation
                    ),
                ));
            }
            // (h − 1)·stride + dilation·(k − 1) + output_padding + 1 − 2·padding, checked:
            // the parameters are user input and must not wrap.
            let full = (x[2 + a] - 1)
                .checked_mul(p.stride[a])
                .zip(p.dilation[a].checked_mul(w[2 + a] - 1))
                .and_then(|(s, d)| {
                    s.checked_add(d)?
                        .checked_add(p.output_padding[a])?
                        .checked_add(1)
                });
            out_hw[a] = full
                .zip(p.padding[a].checked_mul(2))
                .and_then(|(f, pad2)| f.checked_sub(pad2))
                .filter(|&v| v > 0)
                .ok_or_else(|| {
                    Error::shape(
                        op,
                        format!(
                            "padding {:?} leaves no output for input {} and weight {}",
                            p.padding,
                            self.shape(),
                            weight.shape()
                        ),
                    )
                })?;
        }
        // The convolution this op is the adjoint of.
        let geom = Conv2dGeom {
            n: x[0],
            c_in: w[1],
            h: out_hw[0],
            w: out_hw[1],
            c_out: w[0],
            kh: w[2],
            kw: w[3],
            stride: p.stride,
            pad: p.padding,
            dilation: p.dilation,
            h_out: x[2],
            w_out: x[3],
        };
        let out_dims = [geom.n, geom.c_in, geom.h, geom.w];
        let y = self.storage().conv_transpose2d(
            &weight.storage(),
            bias.map(|b| b.storage()).as_deref(),
            act,
            &geom,
        )?;
        let mut inputs = vec![self, weight];
        inputs.extend(bias);
        Ok(Tensor::from_op(y, out_dims, op, &inputs, move |ctx| {
            // The adjoint conv's roles: its input is our output (gradient `g`), its output
            // gradient is our input `x`.
            conv_like_grads(
                ctx,
                act,
                |g, w| g.conv2d(w, None, None, &geom),
                |x, g| g.conv2d_backward_weight(x, &geom),
            )
        }))
    }
}
