//! # gantry
//!
//! A from-scratch tensor and reverse-mode autograd engine for convolutional GANs.
//! This facade re-exports the layers of the project:
//!
//! - [`kernels`]: raw compute on buffers: reference, SIMD CPU and CUDA kernels;
//! - the tensor and autograd API of `gantry-core`, re-exported at the top level
//!   ([`Tensor`], [`Shape`], [`DType`], [`Device`], [`GradStore`], …);
//! - [`nn`]: layers, optimizers and checkpoints;
//! - [`gan`]: models and trainers.

pub use gantry_core::*;
pub use gantry_gan as gan;
pub use gantry_kernels as kernels;
pub use gantry_nn as nn;

pub mod device_check;
