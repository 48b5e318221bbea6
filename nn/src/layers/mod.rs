//! The layers. Each is a [`crate::Module`] whose tensors have PyTorch's names and layouts.

mod activation;
mod container;
mod conv;
mod linear;
mod norm;
mod pool;

pub use activation::{
    Flatten, LeakyReLU, PReLU, PixelShuffle, ReLU, Sigmoid, Tanh, UpsampleNearest,
};
pub use container::{Residual, Sequential};
pub use conv::{Conv2d, ConvTranspose2d};
pub use linear::Linear;
pub use norm::{BatchNorm2d, InstanceNorm2d};
pub use pool::{MaxPool2d, ReflectionPad2d};
