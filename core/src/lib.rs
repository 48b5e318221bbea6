//! # gantry-core
//!
//! [`Tensor`] (a cheap handle over contiguous storage on a [`Device`]), [`Shape`], [`DType`],
//! the seeded [`Rng`], and reverse-mode autograd ([`Tensor::backward`] → [`GradStore`]).
//!
//! ```
//! use gantry_core::{DType, Device, Rng, Tensor};
//! # fn main() -> gantry_core::Result<()> {
//! let mut rng = Rng::new(0);
//! let w = Tensor::randn([3, 2], 0.0, 1.0, DType::F32, Device::Cpu, &mut rng)?.variable();
//! let x = Tensor::ones([4, 3], DType::F32, Device::Cpu)?;
//! let loss = x.matmul(&w)?.tanh()?.mean_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[3, 2]);
//! # Ok(()) }
//! ```
//!
//! Layers: `ops/` validates and records, [`storage::Storage`] dispatches by device,
//! `cpu_backend` by dtype, and `gantry-kernels` computes.

pub mod autograd;
mod cpu_backend;
pub mod cuda_backend;
mod device;
mod dtype;
mod error;
pub mod graph;
mod interop;
pub mod loss;
mod ops;
mod pool;
pub mod precision;
mod rng;
mod shape;
pub mod storage;
mod tensor;

pub use autograd::{is_grad_enabled, no_grad, BackwardCtx, GradStore, NoGradGuard};
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use gantry_kernels::elementwise::UnaryOp;
pub use gantry_kernels::optim::{AdamStep, SgdStep};
pub use ops::{BatchStats, Conv2dParams, ConvTranspose2dParams};
pub use pool::{pool_stats, release_buffers, PoolStats};
pub use precision::{precision, with_precision, Precision, PrecisionGuard};
pub use rng::Rng;
pub use shape::Shape;
pub use storage::AdamTable;
pub use storage::CpuElem;
pub use tensor::{Tensor, TensorId};
