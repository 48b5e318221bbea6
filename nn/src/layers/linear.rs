//! `Linear`.

use crate::init::{default_bound, positive, uniform};
use crate::module::{Mode, Module, Slot};
use gantry_core::{Error, Result, Rng, Tensor};

/// `y = x·Wᵀ + b`, as PyTorch's `nn.Linear`: weight `[out, in]`, optional bias `[out]`, both
/// `U(±1/√in)`. The input is `[…, in]`; leading dimensions are kept.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut Rng) -> Result<Self> {
        positive("Linear", "in_features", in_features)?;
        positive("Linear", "out_features", out_features)?;
        let bound = default_bound(in_features);
        let weight = uniform(&[out_features, in_features], bound, rng)?;
        let bias = if bias {
            Some(uniform(&[out_features], bound, rng)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        let d_in = self.weight.dims()[1];
        if x.rank() == 0 || x.dims()[x.rank() - 1] != d_in {
            return Err(Error::shape(
                "Linear",
                format!(
                    "input {} must end in {d_in} features (weight {})",
                    x.shape(),
                    self.weight.shape()
                ),
            ));
        }
        let lead = &x.dims()[..x.rank() - 1];
        let rows: usize = lead.iter().product();
        let y = x
            .reshape([rows, d_in])?
            .matmul(&self.weight.transpose(0, 1)?)?;
        let y = match &self.bias {
            Some(b) => y.add(b)?,
            None => y,
        };
        let mut out = lead.to_vec();
        out.push(self.weight.dims()[0]);
        y.reshape(out)
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        Slot::weight_and_bias(&self.weight, self.bias.as_ref())
    }
}
