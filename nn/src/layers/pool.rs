//! `MaxPool2d` with the kernel equal to the stride (VGG's 2x2, stride 2).

use crate::module::{Mode, Module};
use gantry_core::{Error, Result, Tensor};

/// The maximum of each `k × k` window, windows not overlapping (PyTorch's
/// `nn.MaxPool2d(k)`, whose stride defaults to the kernel). Rows and columns left over at the
/// bottom and right are dropped, as PyTorch floors the output size.
///
/// It is two `max` reductions over a reshaped view, `[n, c, h/k, k, w/k, k]` → max over the
/// last axis → max over the `k` rows, so the backward is theirs: the gradient goes to the
/// (first) maximum of each window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MaxPool2d {
    pub kernel: usize,
}

impl MaxPool2d {
    pub fn new(kernel: usize) -> Self {
        MaxPool2d { kernel }
    }
}

impl Module for MaxPool2d {
    fn kind(&self) -> &'static str {
        "MaxPool2d"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        let k = self.kernel;
        let d = x.dims();
        if d.len() != 4 || k == 0 || d[2] < k || d[3] < k {
            return Err(Error::shape(
                "MaxPool2d",
                format!(
                    "a {k}x{k} pool of {}: expected [n, c, h ≥ {k}, w ≥ {k}]",
                    x.shape()
                ),
            ));
        }
        let (n, c, oh, ow) = (d[0], d[1], d[2] / k, d[3] / k);
        let mut x = x.clone();
        if d[2] != oh * k {
            x = x.narrow(2, 0, oh * k)?;
        }
        if d[3] != ow * k {
            x = x.narrow(3, 0, ow * k)?;
        }
        x.reshape([n, c, oh, k, ow, k])?
            .max(5, false)?
            .max(3, false)
    }
}

/// Mirror padding, as PyTorch's `nn.ReflectionPad2d`: `[a b c d]` padded by 2 on the left is
/// `[c b a b c d]`. CycleGAN pads with it before its 7x7 and residual 3x3 convolutions so
/// that the borders of a translated image carry no zero-padding artefacts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReflectionPad2d {
    /// `(left, right, top, bottom)`, PyTorch's order.
    pub padding: [usize; 4],
}

impl ReflectionPad2d {
    /// The same padding on every side.
    pub fn new(padding: usize) -> Self {
        ReflectionPad2d {
            padding: [padding; 4],
        }
    }
}

impl Module for ReflectionPad2d {
    fn kind(&self) -> &'static str {
        "ReflectionPad2d"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        x.reflection_pad2d(self.padding)
    }
}
