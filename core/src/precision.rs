//! The precision convolutions and matrix products compute in: full f32, or mixed precision
//! (inputs rounded to tf32, bf16 or f16, products accumulated in f32, everything else — the
//! stored tensors, the weights, batch norm, the optimizer — in f32).
//!
//! The setting is per thread, like PyTorch's autocast: [`with_precision`] sets it until the
//! guard drops. On CUDA it picks the conv rung (f32 → the tiled FP32 implicit GEMM, the others
//! → the tensor-core rungs). On the CPU the kernels stay f32, but the operands are rounded to
//! the chosen type first, so a CPU run computes what the tensor cores compute up to the order
//! of the sums: mixed-precision training (and f16 loss scaling) can be tested without a GPU.

use gantry_kernels::conv::cuda::{CudaConv, TcType};
use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

/// What convolutions and matrix products multiply in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    F32,
    /// TensorFloat-32 inputs (10 mantissa bits, f32 range).
    Tf32,
    /// bfloat16 inputs (7 mantissa bits, f32 range).
    Bf16,
    /// IEEE half inputs (10 mantissa bits, range ±65504: gradients need loss scaling).
    F16,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::Tf32,
        Precision::Bf16,
        Precision::F16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The tensor-core type, or `None` for f32.
    pub fn tensor_core(self) -> Option<TcType> {
        match self {
            Precision::F32 => None,
            Precision::Tf32 => Some(TcType::Tf32),
            Precision::Bf16 => Some(TcType::Bf16),
            Precision::F16 => Some(TcType::F16),
        }
    }

    /// The CUDA conv rung this precision runs on.
    pub fn cuda_conv(self) -> CudaConv {
        self.tensor_core()
            .map_or(CudaConv::Tiled, CudaConv::TensorCore)
    }

    /// `v` rounded to this precision (to nearest, ties to even; tf32 ties away from zero, as
    /// the GPU's `cvt.rna.tf32.f32` does), back in an f32.
    pub fn round(self, v: f32) -> f32 {
        self.tensor_core().map_or(v, |t| t.round(v))
    }

    /// `x` rounded to this precision (borrowed unchanged for f32).
    pub fn round_slice(self, x: &[f32]) -> Cow<'_, [f32]> {
        if self == Precision::F32 {
            Cow::Borrowed(x)
        } else {
            Cow::Owned(x.iter().map(|&v| self.round(v)).collect())
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Precision> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                crate::Error::invalid(
                    "precision",
                    format!("unknown precision {s:?}: f32, tf32, bf16 or f16"),
                )
            })
    }
}

thread_local! {
    static PRECISION: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// This thread's precision.
pub fn precision() -> Precision {
    PRECISION.with(Cell::get)
}

/// Sets this thread's precision until the guard drops (then the previous one is back).
pub fn with_precision(p: Precision) -> PrecisionGuard {
    PrecisionGuard(PRECISION.with(|c| c.replace(p)))
}

/// Restores the previous precision when dropped (see [`with_precision`]).
#[must_use = "the precision reverts when the guard drops"]
pub struct PrecisionGuard(Precision);

impl Drop for PrecisionGuard {
    fn drop(&mut self) {
        PRECISION.with(|c| c.set(self.0));
    }
}

thread_local! {
    static CUDA_CONV: Cell<Option<CudaConv>> = const { Cell::new(None) };
}

/// The CUDA conv rung this thread runs: the one [`with_cuda_conv`] forces, else the
/// precision's ([`Precision::cuda_conv`]).
pub fn cuda_conv() -> CudaConv {
    CUDA_CONV
        .with(Cell::get)
        .unwrap_or_else(|| precision().cuda_conv())
}

/// Forces CUDA convolutions onto `rung` until the guard drops (`gantry check` and the benches
/// run every rung this way).
pub fn with_cuda_conv(rung: CudaConv) -> CudaConvGuard {
    CudaConvGuard(CUDA_CONV.with(|c| c.replace(Some(rung))))
}

/// Restores the previous rung choice when dropped (see [`with_cuda_conv`]).
#[must_use = "the rung choice reverts when the guard drops"]
pub struct CudaConvGuard(Option<CudaConv>);

impl Drop for CudaConvGuard {
    fn drop(&mut self) {
        CUDA_CONV.with(|c| c.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_follows_the_precision() {
        let v = 1.0 + 2f32.powi(-9) + 2f32.powi(-12);
        assert_eq!(Precision::F32.round(v), v);
        assert_eq!(Precision::Bf16.round(v), 1.0);
        assert_eq!(Precision::F16.round(v), 1.0 + 2f32.powi(-9));
        assert_eq!(&*Precision::F32.round_slice(&[v]), &[v]);
        assert_eq!(&*Precision::Tf32.round_slice(&[v]), &[1.0 + 2f32.powi(-9)]);
    }

    #[test]
    fn the_guard_restores_the_previous_precision() {
        assert_eq!(precision(), Precision::F32);
        {
            let _g = with_precision(Precision::Bf16);
            assert_eq!(precision(), Precision::Bf16);
            {
                let _h = with_precision(Precision::F16);
                assert_eq!(precision(), Precision::F16);
            }
            assert_eq!(precision(), Precision::Bf16);
        }
        assert_eq!(precision(), Precision::F32);
        assert_eq!(cuda_conv(), CudaConv::Tiled);
        {
            let _g = with_precision(Precision::Bf16);
            assert_eq!(cuda_conv(), CudaConv::TensorCore(TcType::Bf16));
            let _r = with_cuda_conv(CudaConv::Direct);
            assert_eq!(cuda_conv(), CudaConv::Direct);
        }
        assert_eq!(cuda_conv(), CudaConv::Tiled);
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("fp8".parse::<Precision>().is_err());
    }
}
