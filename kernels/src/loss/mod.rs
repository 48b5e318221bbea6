//! Elementwise loss terms. Reductions (mean, sum) are applied by the caller.

pub mod cuda;
pub mod reference;
