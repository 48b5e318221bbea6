//! Element types.

use std::fmt;

/// The element type of a tensor's storage.
///
/// `F32` is what models run in. `F64` exists for gradient checks (central finite differences
/// need the extra precision). `F16`/`BF16` are storage formats (conversion only, for now) that
/// the mixed-precision GPU path will compute in. `U32` holds indices (the argmax of `max`).
/// `I64` holds integer counters such as BatchNorm's `num_batches_tracked`, which PyTorch's
/// checkpoints store as int64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    U32,
    I64,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }
    pub fn is_float(self) -> bool {
        !matches!(self, DType::U32 | DType::I64)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
            DType::I64 => "i64",
        })
    }
}

/// Rust element types that map to a [`DType`].
pub trait WithDType: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
}

macro_rules! with_dtype {
    ($t:ty, $d:expr, |$a:ident| $to:expr, |$b:ident| $from:expr) => {
        impl WithDType for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                let $a = self;
                $to
            }
            fn from_f64($b: f64) -> Self {
                $from
            }
        }
    };
}
with_dtype!(f32, DType::F32, |v| v as f64, |v| v as f32);
with_dtype!(f64, DType::F64, |v| v, |v| v);
with_dtype!(half::f16, DType::F16, |v| v.to_f64(), |v| {
    half::f16::from_f64(v)
});
with_dtype!(half::bf16, DType::BF16, |v| v.to_f64(), |v| {
    half::bf16::from_f64(v)
});
with_dtype!(u32, DType::U32, |v| v as f64, |v| v as u32);
with_dtype!(i64, DType::I64, |v| v as f64, |v| v as i64);
