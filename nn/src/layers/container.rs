//! `Sequential` and `Residual`.

use crate::module::{Mode, Module};
use gantry_core::{Result, Tensor};

/// Modules applied in order; its children are named `"0"`, `"1"`, … as in PyTorch's
/// `nn.Sequential`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer (builder style, as candle's `seq().add(…)`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
    pub fn push(&mut self, layer: Box<dyn Module>) {
        self.layers.push(layer);
    }
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<&dyn Module> {
        self.layers.get(i).map(|m| m.as_ref())
    }
}

impl Module for Sequential {
    fn kind(&self) -> &'static str {
        "Sequential"
    }
    /// The layers in turn; a layer followed by an elementwise activation is offered the
    /// activation to fuse ([`Module::forward_then`]: BatchNorm then ReLU or LeakyReLU).
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut h = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let act = self.layers.get(i + 1).and_then(|next| next.pointwise());
            if let Some(act) = act {
                if let Some(fused) = self.layers[i].forward_then(&h, mode, act)? {
                    h = fused;
                    i += 2;
                    continue;
                }
            }
            h = self.layers[i].forward(&h, mode)?;
            i += 1;
        }
        Ok(h)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, m)| (i.to_string(), m.as_ref()))
            .collect()
    }
}

/// A residual block: `x + body(x)`, where `body` is a [`Sequential`] whose layers keep the
/// shape. Its children are the body's (`"0"`, `"1"`, …), so the PyTorch equivalent is
///
/// ```python
/// class Residual(nn.Sequential):
///     def forward(self, x):
///         return x + super().forward(x)
/// ```
///
/// SRResNet's block is `Residual::new(Sequential::new().add(conv).add(bn).add(prelu).add(conv).add(bn))`.
pub struct Residual {
    body: Sequential,
}

impl Residual {
    pub fn new(body: Sequential) -> Self {
        Residual { body }
    }
}

impl Module for Residual {
    fn kind(&self) -> &'static str {
        "Residual"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.body.forward(x, mode)?;
        if y.shape() != x.shape() {
            return Err(gantry_core::Error::shape(
                "Residual",
                format!(
                    "the body maps {} to {}; a residual needs the same shape",
                    x.shape(),
                    y.shape()
                ),
            ));
        }
        x.add(&y)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.body.children()
    }
}
