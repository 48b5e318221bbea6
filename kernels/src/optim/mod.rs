//! Optimizer updates: one fused pass over a parameter, its gradient and its state buffers.
//!
//! The arithmetic follows PyTorch's single-tensor (non-foreach) CPU path operation by
//! operation, in the element type, so one step from the same state gives the same parameters:
//! the scalars PyTorch computes in Python (`f64`) are computed here in `f64` too and rounded
//! once to the element type, as PyTorch rounds a Python scalar.

pub mod cpu;
pub mod cuda;
pub mod reference;

/// One Adam step's hyper-parameters, with the bias corrections of step `step` (counted from 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
}

impl AdamStep {
    /// `lr / (1 − β₁^step)`: the step size after bias correction of the first moment.
    pub fn step_size(&self) -> f64 {
        self.lr / (1.0 - self.beta1.powf(self.step as f64))
    }
    /// `√(1 − β₂^step)`: the bias correction of the second moment's square root.
    pub fn bias_correction2_sqrt(&self) -> f64 {
        (1.0 - self.beta2.powf(self.step as f64)).sqrt()
    }
}

/// One SGD step's hyper-parameters (PyTorch's `torch.optim.SGD`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// Whether the momentum buffer is being created this step (it then starts as the gradient,
    /// undamped, as PyTorch does).
    pub first: bool,
}
