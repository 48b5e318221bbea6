//! # gantry-gan
//!
//! DCGAN and SRGAN models, data sets, trainers, metrics and sample grids, built on `gantry-nn`.
//! Not written yet: this crate holds the place the trainers will live in.

pub use gantry_nn as nn;
