//! # gantry-gan
//!
//! GAN models, data sets, trainers and sample grids, built on `gantry-nn`.

pub mod cyclegan;
pub mod data;
pub mod dcgan;
pub mod eval;
pub mod grid;
pub mod metrics;
pub mod run;
pub mod sr;
pub mod srgan;
pub mod style;
pub mod train;
pub mod vgg;

pub use gantry_nn as nn;
