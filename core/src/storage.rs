//! Tensor storage and the backend boundary.
//!
//! [`Storage`] is a flat, contiguous buffer on one device. Its methods are the complete list of
//! primitive computations the tensor ops are built from; each dispatches on the device (only
//! the CPU today; the CUDA backend adds an arm to each) and then on the dtype, and finally calls
//! a kernel from `gantry-kernels`. Shapes have been validated by the caller (the `Tensor` ops),
//! so these functions only check what they alone can see: device and dtype agreement.

use crate::cpu_backend as cpu;
use crate::{DType, Device, Error, Result};
use gantry_kernels::batch_norm::BatchNormGeom;
use gantry_kernels::conv::Conv2dGeom;
use gantry_kernels::elementwise::{BinaryOp, BroadcastGeom, UnaryOp};
use gantry_kernels::gemm::GemmGeom;
use gantry_kernels::optim::{AdamStep, SgdStep};
use half::{bf16, f16};

/// A contiguous host buffer of one element type.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::I64(_) => DType::I64,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
            CpuStorage::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every element as `f64` (for printing, tests and conversions).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            CpuStorage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            CpuStorage::U32(v) => v.iter().map(|&x| x as f64).collect(),
            CpuStorage::I64(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }
    /// A buffer of `dtype` holding `values` (rounded to the type).
    pub fn from_f64_iter(dtype: DType, values: impl Iterator<Item = f64>) -> CpuStorage {
        match dtype {
            DType::F32 => CpuStorage::F32(values.map(|v| v as f32).collect()),
            DType::F64 => CpuStorage::F64(values.collect()),
            DType::F16 => CpuStorage::F16(values.map(f16::from_f64).collect()),
            DType::BF16 => CpuStorage::BF16(values.map(bf16::from_f64).collect()),
            DType::U32 => CpuStorage::U32(values.map(|v| v as u32).collect()),
            DType::I64 => CpuStorage::I64(values.map(|v| v as i64).collect()),
        }
    }
}

/// Element types a [`CpuStorage`] can be viewed as.
pub trait CpuElem: crate::WithDType {
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
    fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]>;
    fn wrap(v: Vec<Self>) -> CpuStorage;
    /// A zero-filled buffer of `len` elements.
    fn zeros(len: usize) -> Vec<Self>;
}

macro_rules! cpu_elem {
    ($t:ty, $variant:ident) => {
        cpu_elem!($t, $variant, |len| vec![<$t>::default(); len]);
    };
    ($t:ty, $variant:ident, $zeros:expr) => {
        impl CpuElem for $t {
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(s: &mut CpuStorage) -> Option<&mut [Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(v)
            }
            fn zeros(len: usize) -> Vec<Self> {
                ($zeros)(len)
            }
        }
    };
}
// f32 is the training dtype: its large buffers are reused between steps.
cpu_elem!(f32, F32, crate::pool::zeros_f32);
cpu_elem!(f64, F64);
cpu_elem!(f16, F16);
cpu_elem!(bf16, BF16);
cpu_elem!(u32, U32);
cpu_elem!(i64, I64);

/// A tensor's buffer on its device.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    Cpu(CpuStorage),
}

/// Unpacks same-device operands: `on_cpu!(op, a, b => |a, b| body)`.
macro_rules! on_cpu {
    ($op:expr, $($s:ident),+ => $body:expr) => {{
        match ($($s,)+) {
            ($(Storage::Cpu($s),)+) => $body,
            #[allow(unreachable_patterns)]
            _ => Err(Error::device($op, "operands are on different devices")),
        }
    }};
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` copies of `value` on `device`.
    pub fn full(device: Device, dtype: DType, len: usize, value: f64) -> Result<Storage> {
        device.check_available("full")?;
        if dtype == DType::F32 {
            let mut v = crate::pool::zeros_f32(len);
            if value != 0.0 {
                v.fill(value as f32);
            }
            return Ok(Storage::Cpu(CpuStorage::F32(v)));
        }
        Ok(Storage::Cpu(CpuStorage::from_f64_iter(
            dtype,
            std::iter::repeat_n(value, len),
        )))
    }

    /// A copy on the host.
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        match self {
            Storage::Cpu(s) => Ok(s.clone()),
        }
    }

    /// Converts every element to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        let s = self;
        on_cpu!("to_dtype", s => Ok(Storage::Cpu(cpu::to_dtype(s, dtype))))
    }

    pub fn unary(&self, op: UnaryOp) -> Result<Storage> {
        let x = self;
        on_cpu!(op.name(), x => cpu::unary(x, op).map(Storage::Cpu))
    }

    pub fn unary_backward(&self, y: &Storage, dy: &Storage, op: UnaryOp) -> Result<Storage> {
        let x = self;
        on_cpu!(op.name(), x, y, dy => cpu::unary_backward(x, y, dy, op).map(Storage::Cpu))
    }

    pub fn binary(&self, rhs: &Storage, geom: &BroadcastGeom, op: BinaryOp) -> Result<Storage> {
        let lhs = self;
        on_cpu!(op.name(), lhs, rhs => cpu::binary(lhs, rhs, geom, op).map(Storage::Cpu))
    }

    pub fn sum_axes(&self, shape: &[usize], axes: &[usize]) -> Result<Storage> {
        let x = self;
        on_cpu!("sum", x => cpu::sum_axes(x, shape, axes).map(Storage::Cpu))
    }

    /// Values and `U32` indices of the maximum along `axis`.
    pub fn max_axis(&self, shape: &[usize], axis: usize) -> Result<(Storage, Storage)> {
        let x = self;
        on_cpu!("max", x => cpu::max_axis(x, shape, axis).map(|(v, i)| (Storage::Cpu(v), Storage::Cpu(i))))
    }

    pub fn max_axis_backward(
        &self,
        indices: &Storage,
        shape: &[usize],
        axis: usize,
    ) -> Result<Storage> {
        let dy = self;
        on_cpu!("max_backward", dy, indices => cpu::max_axis_backward(dy, indices, shape, axis).map(Storage::Cpu))
    }

    /// Contiguous copy of the strided view `(offset, strides, shape)` of `self`.
    pub fn gather(&self, offset: usize, strides: &[usize], shape: &[usize]) -> Result<Storage> {
        let src = self;
        on_cpu!("gather", src => Ok(Storage::Cpu(cpu::gather(src, offset, strides, shape))))
    }

    /// Writes the contiguous `src` into the strided view `(offset, strides, shape)` of `self`;
    /// with `accumulate`, adds instead of overwriting.
    pub fn scatter(
        &mut self,
        src: &Storage,
        offset: usize,
        strides: &[usize],
        shape: &[usize],
        accumulate: bool,
    ) -> Result<()> {
        let dst = self;
        on_cpu!("scatter", dst, src => cpu::scatter(dst, src, offset, strides, shape, accumulate))
    }

    pub fn matmul(&self, rhs: &Storage, geom: &GemmGeom) -> Result<Storage> {
        let lhs = self;
        on_cpu!("matmul", lhs, rhs => cpu::matmul(lhs, rhs, geom).map(Storage::Cpu))
    }

    pub fn conv2d(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        geom: &Conv2dGeom,
    ) -> Result<Storage> {
        let x = self;
        let bias = match bias {
            None => None,
            Some(b) => Some(on_cpu!("conv2d", b => Ok(b))?),
        };
        on_cpu!("conv2d", x, w => cpu::conv2d(x, w, bias, geom).map(Storage::Cpu))
    }

    pub fn conv2d_backward_data(&self, w: &Storage, geom: &Conv2dGeom) -> Result<Storage> {
        let dy = self;
        on_cpu!("conv2d_backward_data", dy, w => cpu::conv2d_backward_data(dy, w, geom).map(Storage::Cpu))
    }

    pub fn conv2d_backward_weight(&self, dy: &Storage, geom: &Conv2dGeom) -> Result<Storage> {
        let x = self;
        on_cpu!("conv2d_backward_weight", x, dy => cpu::conv2d_backward_weight(x, dy, geom).map(Storage::Cpu))
    }

    /// Per-channel mean and biased variance.
    pub fn batch_norm_stats(&self, geom: &BatchNormGeom) -> Result<(Storage, Storage)> {
        let x = self;
        on_cpu!("batch_norm", x => cpu::batch_norm_stats(x, geom).map(|(m, v)| (Storage::Cpu(m), Storage::Cpu(v))))
    }

    /// Batch norm with the given statistics, then the activation `act` if any (fused).
    pub fn batch_norm_forward(
        &self,
        stats: (&Storage, &Storage),
        affine: (Option<&Storage>, Option<&Storage>),
        eps: f64,
        act: Option<UnaryOp>,
        geom: &BatchNormGeom,
    ) -> Result<Storage> {
        let (x, (mean, var)) = (self, stats);
        let w = opt_cpu("batch_norm", affine.0)?;
        let b = opt_cpu("batch_norm", affine.1)?;
        on_cpu!("batch_norm", x, mean, var => cpu::batch_norm_forward(x, mean, var, (w, b), eps, act, geom).map(Storage::Cpu))
    }

    /// `(dx, dweight, dbias)`; with `act`, `dy` is the gradient of the activation's output.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm_backward(
        &self,
        dy: &Storage,
        stats: (&Storage, &Storage),
        affine: (Option<&Storage>, Option<&Storage>),
        eps: f64,
        training: bool,
        act: Option<UnaryOp>,
        geom: &BatchNormGeom,
    ) -> Result<(Storage, Storage, Storage)> {
        let (x, (mean, var)) = (self, stats);
        let w = opt_cpu("batch_norm_backward", affine.0)?;
        let b = opt_cpu("batch_norm_backward", affine.1)?;
        on_cpu!("batch_norm_backward", x, dy, mean, var => cpu::batch_norm_backward(x, dy, mean, var, (w, b), eps, training, act, geom)
            .map(|(a, b, c)| (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c))))
    }

    /// PReLU over `[n, c, inner]` with `c` (or 1) weights.
    pub fn prelu(&self, weight: &Storage, dims: [usize; 3]) -> Result<Storage> {
        let x = self;
        on_cpu!("prelu", x, weight => cpu::prelu(x, weight, dims).map(Storage::Cpu))
    }

    /// `(dx, dweight)`.
    pub fn prelu_backward(
        &self,
        weight: &Storage,
        dy: &Storage,
        dims: [usize; 3],
    ) -> Result<(Storage, Storage)> {
        let x = self;
        on_cpu!("prelu_backward", x, weight, dy => cpu::prelu_backward(x, weight, dy, dims).map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b))))
    }

    /// `dims = [n, c_out, h, w]` of the *input*; `inverse` runs pixel-unshuffle instead.
    pub fn pixel_shuffle(&self, dims: [usize; 4], r: usize, inverse: bool) -> Result<Storage> {
        let x = self;
        on_cpu!("pixel_shuffle", x => Ok(Storage::Cpu(cpu::pixel_shuffle(x, dims, r, inverse))))
    }

    /// `dims = [planes, h, w]` of the small image; `backward` sums blocks instead of copying.
    pub fn upsample_nearest2d(
        &self,
        dims: [usize; 3],
        scale: [usize; 2],
        backward: bool,
    ) -> Result<Storage> {
        let x = self;
        on_cpu!("upsample_nearest2d", x => cpu::upsample_nearest2d(x, dims, scale, backward).map(Storage::Cpu))
    }

    pub fn bce_with_logits(&self, target: &Storage) -> Result<Storage> {
        let x = self;
        on_cpu!("bce_with_logits", x, target => cpu::bce_with_logits(x, target).map(Storage::Cpu))
    }

    /// `(dx, dtarget)`.
    pub fn bce_with_logits_backward(
        &self,
        target: &Storage,
        dy: &Storage,
    ) -> Result<(Storage, Storage)> {
        let x = self;
        on_cpu!("bce_with_logits_backward", x, target, dy => cpu::bce_with_logits_backward(x, target, dy)
            .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b))))
    }
}

impl Storage {
    /// Binary cross-entropy on probabilities; an error if some probability lies outside [0, 1].
    pub fn bce(&self, target: &Storage) -> Result<Storage> {
        let x = self;
        on_cpu!("bce", x, target => cpu::bce(x, target).map(Storage::Cpu))
    }

    /// `(dprobabilities, dtarget)`.
    pub fn bce_backward(&self, target: &Storage, dy: &Storage) -> Result<(Storage, Storage)> {
        let x = self;
        on_cpu!("bce_backward", x, target, dy => cpu::bce_backward(x, target, dy)
            .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b))))
    }

    /// One fused Adam step over several parameters at once. The moments of all of them lie
    /// in the flat buffers `m` and `v`: parameter `i`'s at `ranges[i]` (ascending, disjoint),
    /// and it takes step `steps[i]`.
    pub fn adam_step_fused(
        params: &mut [&mut Storage],
        grads: &[&Storage],
        m: &mut Storage,
        v: &mut Storage,
        ranges: &[std::ops::Range<usize>],
        steps: &[AdamStep],
    ) -> Result<()> {
        let op = "adam_step";
        let (Storage::Cpu(m), Storage::Cpu(v)) = (m, v);
        let params = params
            .iter_mut()
            .map(|p| match &mut **p {
                Storage::Cpu(p) => Ok(p),
            })
            .collect::<Result<Vec<_>>>()?;
        let grads = grads
            .iter()
            .map(|g| on_cpu!(op, g => Ok(g)))
            .collect::<Result<Vec<_>>>()?;
        cpu::adam_step_fused(params, &grads, m, v, ranges, steps)
    }

    /// One SGD step in place on this parameter buffer, with an optional momentum buffer.
    pub fn sgd_step(
        &mut self,
        grad: &Storage,
        buf: Option<&mut Storage>,
        h: &SgdStep,
    ) -> Result<()> {
        match (self, grad, buf) {
            (Storage::Cpu(p), Storage::Cpu(g), None) => cpu::sgd_step(p, g, None, h),
            (Storage::Cpu(p), Storage::Cpu(g), Some(Storage::Cpu(b))) => {
                cpu::sgd_step(p, g, Some(b), h)
            }
            #[allow(unreachable_patterns)]
            _ => Err(Error::device(
                "sgd_step",
                "operands are on different devices",
            )),
        }
    }
}

fn opt_cpu<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a CpuStorage>> {
    match s {
        None => Ok(None),
        Some(s) => on_cpu!(op, s => Ok(Some(s))),
    }
}
