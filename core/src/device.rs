//! Where a tensor's storage lives.

use crate::{Error, Result};
use std::fmt;

/// A compute device. Only the CPU is built today; `Cuda(ordinal)` is part of the type so code
/// can name it, and asking for it returns a clear error until the CUDA backend is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl Device {
    /// `Ok` if tensors can be created on this device in this build.
    pub fn check_available(self, op: &'static str) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => Err(Error::device(
                op,
                format!("cuda:{i} requested, but this build of gantry has no CUDA backend yet; use Device::Cpu"),
            )),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}
