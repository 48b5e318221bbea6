//! # gantry-nn
//!
//! Layers, initialisers, losses and optimizers with PyTorch-compatible named parameters, built
//! on `gantry-core`. The losses and the ops the layers need already live in `gantry-core`
//! (re-exported here); the `Module` trait, the layers, the optimizers and safetensors
//! checkpoints are the next step of the project.

pub use gantry_core::loss;
