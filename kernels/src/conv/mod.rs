//! 2-D convolution (cross-correlation, as in PyTorch) over NCHW buffers.
//!
//! Three kernels make up the op, and transposed convolution reuses them:
//!
//! | op                              | computed as                                   |
//! |---------------------------------|-----------------------------------------------|
//! | conv forward                    | [`reference::conv2d_forward`]                  |
//! | conv backward w.r.t. the input  | [`reference::conv2d_backward_data`]            |
//! | conv backward w.r.t. the weight | [`reference::conv2d_backward_weight`]          |
//! | conv-transpose forward          | conv backward-data                             |
//! | conv-transpose backward, input  | conv forward                                   |
//! | conv-transpose backward, weight | conv backward-weight with the roles swapped    |

pub mod cpu;
pub mod cuda;
pub mod cuda_check;
pub mod direct;
pub mod im2col;
pub mod lanes;
pub mod narrow;
pub mod reference;
#[cfg(test)]
mod tests;
pub mod winograd;
pub mod winograd_s2;

use crate::elementwise::{self, UnaryOp};
use rayon::prelude::*;

/// What the pass that produces a layer's output does to each value before storing it:
/// `act(v + bias[channel])`. Conv forward takes it; so does backward-data, which is a
/// transposed convolution's forward. The direct kernel applies it to each finished tile
/// before the tile is stored (and the CUDA rungs in their epilogues), so the output is
/// written once; the other variants make one pass over the output after the GEMM.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per output channel.
    pub bias: Option<&'a [f32]>,
    pub act: Option<UnaryOp>,
}

impl Epilogue<'_> {
    /// Whether it changes anything.
    pub fn is_identity(&self) -> bool {
        self.bias.is_none() && self.act.is_none()
    }

    /// Panics unless the bias (if any) has one value per channel: the kernels index it by
    /// channel.
    pub fn check(&self, op: &str, channels: usize) {
        if let Some(b) = self.bias {
            assert_eq!(b.len(), channels, "{op}: bias length");
        }
    }

    /// Applies it to one output pixel's (or one tile row's) channels `v[c]`, in the order
    /// the separate ops would: the bias add first, then the activation.
    #[inline]
    pub fn apply_channels(&self, v: &mut [f32]) {
        if let Some(b) = self.bias {
            for (v, b) in v.iter_mut().zip(b) {
                *v += b;
            }
        }
        if let Some(op) = self.act {
            elementwise::cpu::unary_in_place(op, v);
        }
    }

    /// Applies it to an NCHW buffer of `channels` planes of `plane` values each, in parallel.
    pub fn apply_planes(&self, y: &mut [f32], channels: usize, plane: usize) {
        if self.is_identity() || y.is_empty() {
            return;
        }
        self.check("epilogue", channels);
        assert_eq!(y.len() % (channels * plane), 0, "epilogue: buffer length");
        // Planes can be tiny (a 4x4 map): group them into tasks of about 16 Ki values.
        let min = (1 << 14) / plane + 1;
        y.par_chunks_mut(plane)
            .with_min_len(min)
            .enumerate()
            .for_each(|(i, v)| {
                if let Some(b) = self.bias {
                    let b = b[i % channels];
                    v.iter_mut().for_each(|v| *v += b);
                }
                if let Some(op) = self.act {
                    elementwise::cpu::unary_in_place(op, v);
                }
            });
    }
}

/// The shape of one convolution: input `[n, c_in, h, w]`, weight `[c_out, c_in, kh, kw]`,
/// output `[n, c_out, h_out, w_out]`. Pairs are `[height, width]`.
///
/// Output position `(oh, ow)` reads input rows `oh * stride[0] + i * dilation[0] - pad[0]` for
/// kernel rows `i` in `0..kh` (and likewise for columns); reads outside the input are zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub h_out: usize,
    pub w_out: usize,
}

impl Conv2dGeom {
    /// PyTorch's output size along one axis: `⌊(len + 2·pad − dil·(k − 1) − 1) / stride⌋ + 1`,
    /// or `None` when the dilated kernel does not fit in the padded input.
    pub fn output_len(
        len: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> Option<usize> {
        if k == 0 || stride == 0 || dilation == 0 {
            return None;
        }
        // Checked arithmetic: these come from user input and must not wrap.
        let span = dilation.checked_mul(k - 1)?.checked_add(1)?;
        let padded = pad.checked_mul(2)?.checked_add(len)?;
        Some(padded.checked_sub(span)? / stride + 1)
    }

    /// Sets `h_out`/`w_out` from the input size and parameters; `None` if the output is empty.
    pub fn with_conv_output(mut self) -> Option<Self> {
        self.h_out = Self::output_len(
            self.h,
            self.kh,
            self.stride[0],
            self.pad[0],
            self.dilation[0],
        )?;
        self.w_out = Self::output_len(
            self.w,
            self.kw,
            self.stride[1],
            self.pad[1],
            self.dilation[1],
        )?;
        Some(self)
    }

    pub fn input_len(&self) -> usize {
        self.n * self.c_in * self.h * self.w
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in * self.kh * self.kw
    }
    pub fn output_len_total(&self) -> usize {
        self.n * self.c_out * self.h_out * self.w_out
    }

    /// Asserts that buffers of lengths `[input, weight, output]` fit this geometry: the
    /// shared precondition of every pass of every variant (`op` names the pass).
    pub fn assert_buffers(&self, op: &str, [input, weight, output]: [usize; 3]) {
        assert_eq!(
            input,
            self.input_len(),
            "{op}: input (or input-gradient) length"
        );
        assert_eq!(
            weight,
            self.weight_len(),
            "{op}: weight (or weight-gradient) length"
        );
        assert_eq!(
            output,
            self.output_len_total(),
            "{op}: output (or output-gradient) length"
        );
    }

    /// Multiply-adds of the forward pass, counted as two flops each (each backward pass costs
    /// the same).
    pub fn flops(&self) -> f64 {
        2.0 * (self.n * self.c_out * self.h_out * self.w_out * self.c_in * self.kh * self.kw) as f64
    }

    /// Input coordinate read by output coordinate `o` and kernel tap `k` along axis `axis`
    /// (0 = height, 1 = width), or `None` if it falls in the zero padding.
    #[inline]
    pub fn input_coord(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        let len = if axis == 0 { self.h } else { self.w };
        let pos =
            (o * self.stride[axis] + k * self.dilation[axis]) as isize - self.pad[axis] as isize;
        (pos >= 0 && (pos as usize) < len).then_some(pos as usize)
    }
}

/// The rungs of the f32 convolution ladder, each selectable so they can be tested and
/// benchmarked against one another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvVariant {
    /// [`reference`]: the definition as nested loops, accumulated in f64.
    Reference,
    /// [`im2col`]: a materialised im2col matrix per image and the fast GEMM.
    Im2colGemm,
    /// [`cpu`]: implicit GEMM, im2col values gathered straight into the GEMM panels in
    /// contiguous runs; strided backward-data scattered by col2im.
    ImplicitGemm,
    /// [`cpu::rewrite`]: implicit GEMM with strided layers rewritten to stride 1
    /// (space-to-depth forward and backward-weight, phase-split backward-data).
    ImplicitGemmRewrite,
    /// [`cpu::portable`]: the packed rung with plain-loop packing and scatter, what a CPU
    /// without AVX-512 runs.
    ImplicitGemmPortablePack,
    /// [`direct`]: implicit GEMM reading the input where it lies (only the weights packed),
    /// backward-data split by stride phase.
    Direct,
    /// [`direct`] with its plain-loop micro-kernel (what `Direct` runs on a CPU without
    /// AVX-512).
    DirectPortable,
    /// [`winograd`] F(2×2, 3×3) for 3×3 stride-1 forward and backward-data passes, and
    /// [`winograd_s2`] F(2×2, 2×2) for 4×4 stride-2 ones; every other pass (and geometry)
    /// as [`ConvVariant::Auto`].
    Winograd,
    /// [`narrow`]: stride-1 forward and weight-gradient passes vectorised along the output
    /// row, for layers with few output channels; every other pass (and geometry) as
    /// [`ConvVariant::Auto`].
    Narrow,
    /// The default: per pass, [`winograd`] where [`winograd::chosen`] says (3×3 stride-1
    /// forward and backward-data with 32+ channels each side, on AVX-512), or
    /// [`winograd_s2`] where [`winograd_s2::chosen`] says (DCGAN's 4×4 stride-2 layers), else [`direct`]
    /// where [`direct::suits`] says its 64-channel tiles are filled and its reduction is deep
    /// enough (and the CPU has AVX-512), else [`narrow`] where [`narrow::chosen`] says (fewer
    /// than 32 output channels at stride 1, on AVX-512), else [`cpu`] (the packed implicit GEMM).
    Auto,
}

impl ConvVariant {
    pub const ALL: [ConvVariant; 10] = [
        ConvVariant::Reference,
        ConvVariant::Im2colGemm,
        ConvVariant::ImplicitGemm,
        ConvVariant::ImplicitGemmRewrite,
        ConvVariant::ImplicitGemmPortablePack,
        ConvVariant::Direct,
        ConvVariant::DirectPortable,
        ConvVariant::Winograd,
        ConvVariant::Narrow,
        ConvVariant::Auto,
    ];

    pub fn forward(
        self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        g: &Conv2dGeom,
    ) {
        match self {
            ConvVariant::Reference => reference::conv2d_forward(x, w, bias, y, g),
            ConvVariant::Im2colGemm => im2col::conv2d_forward(x, w, bias, y, g),
            ConvVariant::ImplicitGemmRewrite => cpu::rewrite::conv2d_forward(x, w, bias, y, g),
            ConvVariant::ImplicitGemm => cpu::conv2d_forward(x, w, bias, y, g),
            ConvVariant::ImplicitGemmPortablePack => {
                cpu::portable::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Direct => direct::conv2d_forward(x, w, bias, y, g),
            ConvVariant::DirectPortable => direct::conv2d_forward_portable(x, w, bias, y, g),
            ConvVariant::Winograd if winograd::suits(g) => {
                winograd::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Winograd if winograd_s2::suits(g) => {
                winograd_s2::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Winograd => ConvVariant::Auto.forward(x, w, bias, y, g),
            ConvVariant::Narrow if narrow::suits(g) => narrow::conv2d_forward(x, w, bias, y, g),
            ConvVariant::Narrow => ConvVariant::Auto.forward(x, w, bias, y, g),
            ConvVariant::Auto if winograd::chosen(g, direct::Pass::Forward) => {
                winograd::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Auto if winograd_s2::chosen(g, direct::Pass::Forward) => {
                winograd_s2::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Auto if direct::suits(g, direct::Pass::Forward) => {
                direct::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Auto if narrow::chosen(g, direct::Pass::Forward) => {
                narrow::conv2d_forward(x, w, bias, y, g)
            }
            ConvVariant::Auto => cpu::conv2d_forward(x, w, bias, y, g),
        }
    }

    /// The direct kernel's micro-tile when this variant runs `pass` of `g` on the direct
    /// kernel (which applies an epilogue to each tile it stores), else `None`.
    fn direct_isa(self, g: &Conv2dGeom, pass: direct::Pass) -> Option<lanes::PackIsa> {
        match self {
            ConvVariant::Direct => Some(lanes::PackIsa::best()),
            ConvVariant::DirectPortable => Some(lanes::PackIsa::Portable),
            ConvVariant::Auto if winograd::chosen(g, pass) || winograd_s2::chosen(g, pass) => None,
            ConvVariant::Narrow => match pass {
                direct::Pass::Forward if narrow::suits(g) => None,
                _ => ConvVariant::Auto.direct_isa(g, pass),
            },
            // Winograd where it fits (no fused epilogue), else whatever Auto runs.
            ConvVariant::Winograd => match pass {
                direct::Pass::Forward | direct::Pass::BackwardData if winograd_s2::suits(g) => None,
                direct::Pass::Forward if winograd::suits(g) => None,
                direct::Pass::BackwardData if winograd::suits_backward_data(g) => None,
                _ => ConvVariant::Auto.direct_isa(g, pass),
            },
            ConvVariant::Auto if direct::suits(g, pass) => Some(lanes::PackIsa::best()),
            _ => None,
        }
    }

    /// [`ConvVariant::forward`] with an activation too: `y = act(conv(x, w) + bias)`. The
    /// direct rungs apply it to each tile as they store it; the others in one pass after.
    pub fn forward_fused(self, x: &[f32], w: &[f32], ep: Epilogue, y: &mut [f32], g: &Conv2dGeom) {
        ep.check("conv2d", g.c_out);
        match self.direct_isa(g, direct::Pass::Forward) {
            Some(isa) => direct::forward_with(x, w, ep, y, g, isa),
            None => {
                self.forward(x, w, ep.bias, y, g);
                let act = Epilogue { bias: None, ..ep };
                act.apply_planes(y, g.c_out, g.h_out * g.w_out);
            }
        }
    }

    /// [`ConvVariant::backward_data`] followed by an epilogue over `dx`'s `c_in` channels:
    /// a transposed convolution's forward with its bias and activation.
    pub fn backward_data_fused(
        self,
        dy: &[f32],
        w: &[f32],
        ep: Epilogue,
        dx: &mut [f32],
        g: &Conv2dGeom,
    ) {
        ep.check("conv2d backward_data", g.c_in);
        match self.direct_isa(g, direct::Pass::BackwardData) {
            Some(isa) => direct::backward_data_with(dy, w, ep, dx, g, isa),
            None => {
                self.backward_data(dy, w, dx, g);
                ep.apply_planes(dx, g.c_in, g.h * g.w);
            }
        }
    }

    pub fn backward_data(self, dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
        match self {
            ConvVariant::Reference => reference::conv2d_backward_data(dy, w, dx, g),
            ConvVariant::Im2colGemm => im2col::conv2d_backward_data(dy, w, dx, g),
            ConvVariant::ImplicitGemmRewrite => cpu::rewrite::conv2d_backward_data(dy, w, dx, g),
            ConvVariant::ImplicitGemm => cpu::conv2d_backward_data(dy, w, dx, g),
            ConvVariant::ImplicitGemmPortablePack => {
                cpu::portable::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Direct => direct::conv2d_backward_data(dy, w, dx, g),
            ConvVariant::DirectPortable => direct::conv2d_backward_data_portable(dy, w, dx, g),
            ConvVariant::Winograd if winograd::suits_backward_data(g) => {
                winograd::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Winograd if winograd_s2::suits(g) => {
                winograd_s2::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Winograd => ConvVariant::Auto.backward_data(dy, w, dx, g),
            ConvVariant::Narrow => ConvVariant::Auto.backward_data(dy, w, dx, g),
            ConvVariant::Auto if winograd::chosen(g, direct::Pass::BackwardData) => {
                winograd::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Auto if winograd_s2::chosen(g, direct::Pass::BackwardData) => {
                winograd_s2::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Auto if direct::suits(g, direct::Pass::BackwardData) => {
                direct::conv2d_backward_data(dy, w, dx, g)
            }
            ConvVariant::Auto => cpu::conv2d_backward_data(dy, w, dx, g),
        }
    }

    pub fn backward_weight(self, x: &[f32], dy: &[f32], dw: &mut [f32], g: &Conv2dGeom) {
        match self {
            ConvVariant::Reference => reference::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::Im2colGemm => im2col::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::ImplicitGemmRewrite => cpu::rewrite::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::ImplicitGemm => cpu::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::ImplicitGemmPortablePack => {
                cpu::portable::conv2d_backward_weight(x, dy, dw, g)
            }
            ConvVariant::Direct => direct::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::DirectPortable => direct::conv2d_backward_weight_portable(x, dy, dw, g),
            ConvVariant::Winograd => ConvVariant::Auto.backward_weight(x, dy, dw, g),
            ConvVariant::Narrow if narrow::suits(g) => narrow::conv2d_backward_weight(x, dy, dw, g),
            ConvVariant::Narrow => ConvVariant::Auto.backward_weight(x, dy, dw, g),
            ConvVariant::Auto if direct::suits(g, direct::Pass::BackwardWeight) => {
                direct::conv2d_backward_weight(x, dy, dw, g)
            }
            ConvVariant::Auto if narrow::chosen(g, direct::Pass::BackwardWeight) => {
                narrow::conv2d_backward_weight(x, dy, dw, g)
            }
            ConvVariant::Auto => cpu::conv2d_backward_weight(x, dy, dw, g),
        }
    }
}
