//! Tensor ops. Each validates its arguments (errors name the op and the shapes), computes its
//! forward through [`crate::storage::Storage`], and records its backward rule.
//!
//! | file            | ops |
//! |-----------------|-----|
//! | `elementwise`   | add sub mul div pow (broadcasting), neg exp log sqrt abs powf, scalar ops, relu leaky_relu prelu tanh sigmoid |
//! | `reduce`        | sum mean (all or given axes, keepdim), max along an axis |
//! | `shape`         | reshape, permute, transpose, narrow, concat, broadcast_to, squeeze/unsqueeze, flatten, to_dtype |
//! | `matmul`        | matmul (2-D and batched, broadcasting batch dimensions) |
//! | `conv`          | conv2d, conv_transpose2d |
//! | `norm`          | batch_norm (training and evaluation) |
//! | `resample`      | pixel_shuffle, pixel_unshuffle, upsample_nearest2d |
//!
//! Losses are in [`crate::loss`].

mod conv;
mod elementwise;
mod matmul;
mod norm;
mod reduce;
mod resample;
mod shape;

pub use conv::{Conv2dParams, ConvTranspose2dParams};
pub use norm::BatchStats;

use crate::{Error, Result, Tensor};

/// All operands on one device with one dtype.
pub(crate) fn check_same(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let Some((first, rest)) = ts.split_first() else {
        return Ok(());
    };
    let (d, t) = (first.device(), first.dtype());
    for x in rest {
        if x.device() != d {
            return Err(Error::device_mismatch(op, d, x.device()));
        }
        if x.dtype() != t {
            return Err(Error::dtype_mismatch(op, t, x.dtype()));
        }
    }
    Ok(())
}

/// Checks every dtype is a float type the compute kernels support.
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        crate::DType::F32 | crate::DType::F64 => Ok(()),
        d => Err(Error::unsupported_dtype(op, d)),
    }
}
