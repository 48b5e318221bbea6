//! `Conv2d` and `ConvTranspose2d`.

use crate::init::{default_bound, positive, uniform};
use crate::module::{Mode, Module, Slot};
use gantry_core::{Conv2dParams, ConvTranspose2dParams, Result, Rng, Tensor, UnaryOp};

/// Checks the sizes and draws PyTorch's default init: weight `shape` and an optional bias of
/// `bias_len`, both `U(±1/√fan_in)`.
fn conv_init(
    op: &'static str,
    sizes: [usize; 3],
    shape: [usize; 4],
    fan_in: usize,
    bias_len: Option<usize>,
    rng: &mut Rng,
) -> Result<(Tensor, Option<Tensor>)> {
    for (what, v) in ["c_in", "c_out", "kernel"].iter().zip(sizes) {
        positive(op, what, v)?;
    }
    let bound = default_bound(fan_in);
    let weight = uniform(&shape, bound, rng)?;
    let bias = bias_len.map(|n| uniform(&[n], bound, rng)).transpose()?;
    Ok((weight, bias))
}

/// 2-D convolution, as PyTorch's `nn.Conv2d` (square kernel, no groups). Weight
/// `[c_out, c_in, k, k]`, optional bias `[c_out]`; both from PyTorch's default init,
/// `U(±1/√fan_in)` with `fan_in = c_in·k²`.
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv2dParams,
}

impl Conv2d {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        params: Conv2dParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (weight, bias) = conv_init(
            "Conv2d",
            [c_in, c_out, kernel],
            [c_out, c_in, kernel, kernel],
            c_in * kernel * kernel,
            bias.then_some(c_out),
            rng,
        )?;
        Ok(Conv2d {
            weight,
            bias,
            params,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    pub fn params(&self) -> Conv2dParams {
        self.params
    }
}

impl Module for Conv2d {
    fn kind(&self) -> &'static str {
        "Conv2d"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.params)
    }
    /// Fuses the activations whose gradient the output determines (relu, leaky relu, tanh,
    /// sigmoid) into the convolution's store: no pre-activation tensor, one pass fewer.
    fn forward_then(&self, x: &Tensor, _: Mode, act: UnaryOp) -> Result<Option<Tensor>> {
        if !act.derivative_from_output() {
            return Ok(None);
        }
        x.conv2d_act(&self.weight, self.bias.as_ref(), self.params, Some(act))
            .map(Some)
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        Slot::weight_and_bias(&self.weight, self.bias.as_ref())
    }
}

/// 2-D transposed convolution, as PyTorch's `nn.ConvTranspose2d` (square kernel, no groups).
/// Weight `[c_in, c_out, k, k]` (PyTorch's layout: input channels first), optional bias
/// `[c_out]`; PyTorch's default init, `U(±1/√fan_in)` where PyTorch's `fan_in` for this weight
/// is `c_out·k²` (it reads dimension 1).
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvTranspose2dParams,
}

impl ConvTranspose2d {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        params: ConvTranspose2dParams,
        bias: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let (weight, bias) = conv_init(
            "ConvTranspose2d",
            [c_in, c_out, kernel],
            [c_in, c_out, kernel, kernel],
            c_out * kernel * kernel,
            bias.then_some(c_out),
            rng,
        )?;
        Ok(ConvTranspose2d {
            weight,
            bias,
            params,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    pub fn params(&self) -> ConvTranspose2dParams {
        self.params
    }
}

impl Module for ConvTranspose2d {
    fn kind(&self) -> &'static str {
        "ConvTranspose2d"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        x.conv_transpose2d(&self.weight, self.bias.as_ref(), self.params)
    }
    /// Fuses the bias and the activation into the transposed convolution's store, as
    /// [`Conv2d`] does (DCGAN's generator ends with ConvTranspose2d then Tanh).
    fn forward_then(&self, x: &Tensor, _: Mode, act: UnaryOp) -> Result<Option<Tensor>> {
        if !act.derivative_from_output() {
            return Ok(None);
        }
        x.conv_transpose2d_act(&self.weight, self.bias.as_ref(), self.params, Some(act))
            .map(Some)
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        Slot::weight_and_bias(&self.weight, self.bias.as_ref())
    }
}
