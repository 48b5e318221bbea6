//! Where a tensor's storage lives.

use crate::{Error, Result};
use std::fmt;

/// A compute device: the host, or CUDA GPU number `ordinal`. Every build has the CUDA backend;
/// whether a GPU is there is found out at run time ([`Device::check_available`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

impl Device {
    /// `Ok` if tensors can be created on this device: always for the CPU; for `Cuda(i)` when
    /// the CUDA driver loads and reports device `i` (the first call opens the device). The
    /// error says what is missing: the driver, or the device.
    pub fn check_available(self, op: &'static str) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(i) => crate::cuda_backend::gpu(op, i).map(|_| ()),
        }
    }

    /// Parses `cpu`, `cuda` (device 0) or `cuda:N`.
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| {
                    Error::invalid(
                        "device",
                        format!("unknown device {s:?}: expected cpu, cuda or cuda:N"),
                    )
                }),
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
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
