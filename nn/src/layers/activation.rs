//! Activations and the shape layers (`PixelShuffle`, `UpsampleNearest`, `Flatten`): modules
//! without state, or, for `PReLU`, with one weight.

use crate::init::{constant, positive};
use crate::module::{Mode, Module, Slot};
use gantry_core::{Result, Tensor, UnaryOp};

/// Implements [`Module`] for a layer without tensors whose forward is `|self, x| body`.
/// With `pointwise |self| op`, the layer is the elementwise `op` (see [`Module::pointwise`]).
macro_rules! stateless {
    ($name:ident, $kind:literal, |$s:ident, $x:ident| $body:expr) => {
        stateless!($name, $kind, |$s, $x| $body, pointwise | _p | None);
    };
    ($name:ident, $kind:literal, |$s:ident, $x:ident| $body:expr, pointwise |$p:ident| $op:expr) => {
        impl Module for $name {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn forward(&self, $x: &Tensor, _: Mode) -> Result<Tensor> {
                let $s = self;
                $body
            }
            fn pointwise(&self) -> Option<UnaryOp> {
                let $p = self;
                $op
            }
        }
    };
}

/// `max(x, 0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReLU;
stateless!(
    ReLU,
    "ReLU",
    |_s, x| x.relu(),
    pointwise | _p | Some(UnaryOp::Relu)
);

/// `x` where positive, else `negative_slope · x` (DCGAN's discriminator uses 0.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyReLU {
    pub negative_slope: f64,
}
stateless!(
    LeakyReLU,
    "LeakyReLU",
    |s, x| x.leaky_relu(s.negative_slope),
    pointwise | p | Some(UnaryOp::LeakyRelu(p.negative_slope))
);

/// `tanh(x)`: the generator's output layer, mapping to [-1, 1].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tanh;
stateless!(
    Tanh,
    "Tanh",
    |_s, x| x.tanh(),
    pointwise | _p | Some(UnaryOp::Tanh)
);

/// `1 / (1 + e^−x)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sigmoid;
stateless!(
    Sigmoid,
    "Sigmoid",
    |_s, x| x.sigmoid(),
    pointwise | _p | Some(UnaryOp::Sigmoid)
);

/// `[n, c·r², h, w]` → `[n, c, h·r, w·r]` (SRGAN's sub-pixel upsampler).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelShuffle {
    pub upscale_factor: usize,
}
stateless!(PixelShuffle, "PixelShuffle", |s, x| x
    .pixel_shuffle(s.upscale_factor));

/// Nearest-neighbour upsampling by an integer factor (PyTorch's
/// `nn.Upsample(scale_factor=s, mode="nearest")`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpsampleNearest {
    pub scale_factor: usize,
}
stateless!(UpsampleNearest, "Upsample", |s, x| x
    .upsample_nearest2d([s.scale_factor; 2]));

/// Merges every dimension from `start_dim` on (PyTorch's default `start_dim` is 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatten {
    pub start_dim: usize,
}
stateless!(Flatten, "Flatten", |s, x| x.flatten_from(s.start_dim));

impl LeakyReLU {
    pub fn new(negative_slope: f64) -> Self {
        LeakyReLU { negative_slope }
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1 }
    }
}

/// `x` where positive, else `a · x` with a learned `a`: one per channel, or one shared
/// (`num_parameters = 1`, PyTorch's default), initialised to 0.25.
pub struct PReLU {
    weight: Tensor,
}

impl PReLU {
    pub fn new(num_parameters: usize) -> Result<Self> {
        positive("PReLU", "num_parameters", num_parameters)?;
        Ok(PReLU {
            weight: constant(&[num_parameters], 0.25)?,
        })
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for PReLU {
    fn kind(&self) -> &'static str {
        "PReLU"
    }
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        x.prelu(&self.weight)
    }
    fn slots(&self) -> Vec<Slot<'_>> {
        vec![Slot::param("weight", &self.weight)]
    }
}
