//! # gantry-nn
//!
//! Layers, initialisers, losses, optimizers and checkpoints, on `gantry-core`'s tensors.
//!
//! - [`Module`]: a layer or a tree of layers, with PyTorch-named parameters and buffers
//!   ([`ModuleExt::named_tensors`] gives `main.0.weight`, `main.1.running_mean`, …).
//! - Layers: [`Conv2d`], [`ConvTranspose2d`], [`BatchNorm2d`], [`Linear`], [`ReLU`],
//!   [`LeakyReLU`], [`PReLU`], [`Tanh`], [`Sigmoid`], [`PixelShuffle`], [`UpsampleNearest`],
//!   [`Flatten`], [`Sequential`], [`Residual`].
//! - [`init`]: PyTorch's default inits (in the constructors) and the DCGAN init.
//! - [`optim`]: [`Adam`] and [`Sgd`] with PyTorch's update rules and saveable state.
//! - [`checkpoint`]: safetensors `state_dict`s that PyTorch opens, strict loading; [`npy`].
//!
//! ```
//! use gantry_core::{ConvTranspose2dParams, DType, Device, Rng, Tensor};
//! use gantry_nn::{BatchNorm2d, ConvTranspose2d, Mode, Module, ModuleExt, ReLU, Sequential};
//! # fn main() -> gantry_core::Result<()> {
//! let mut rng = Rng::new(0);
//! let g = Sequential::new()
//!     .add(ConvTranspose2d::new(100, 64, 4, ConvTranspose2dParams::new(1, 0), false, &mut rng)?)
//!     .add(BatchNorm2d::new(64)?)
//!     .add(ReLU);
//! let names: Vec<String> = g.named_tensors().into_iter().map(|t| t.name).collect();
//! assert_eq!(names[..3], ["0.weight", "1.weight", "1.bias"]);
//! let z = Tensor::randn([2, 100, 1, 1], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?;
//! assert_eq!(g.forward(&z, Mode::Train)?.dims(), &[2, 64, 4, 4]);
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod init;
mod layers;
pub mod loss;
mod module;
pub mod npy;
pub mod optim;

pub use layers::*;
pub use module::{Mode, Module, ModuleExt, NamedTensor, Role, Slot};
pub use optim::{Adam, AdamConfig, LossScaler, Optimizer, Sgd, SgdConfig};
