//! Tensor storage and the backend boundary.
//!
//! [`Storage`] is a flat, contiguous buffer on one device. Its methods are the complete list of
//! primitive computations the tensor ops are built from; each dispatches on the device (only
//! the CPU today; the CUDA backend adds an arm to each) and then on the dtype, and finally calls
//! a kernel from `gantry-kernels`. Shapes have been validated by the caller (the `Tensor` ops),
//! so these functions only check what they alone can see: device and dtype agreement.

use crate::cpu_backend as cpu;
use crate::cuda_backend::{self as cuda, CudaStorage};
use crate::{DType, Device, Error, Result};
use gantry_kernels::batch_norm::BatchNormGeom;
use gantry_kernels::conv::Conv2dGeom;
use gantry_kernels::cuda_rt::Gpu;
use gantry_kernels::elementwise::{BinaryOp, BroadcastGeom, UnaryOp};
use gantry_kernels::gemm::GemmGeom;
use gantry_kernels::optim::{AdamStep, SgdStep};
use half::{bf16, f16};
use std::sync::Arc;

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
    Cuda(CudaStorage),
}

/// Unpacks same-device operands and runs the CPU or the CUDA body:
/// `on_device!(op, a, b => cpu_body; cuda_body)`, with `a` and `b` rebound to the backend's
/// storage type in each body.
macro_rules! on_device {
    ($op:expr, $($s:ident),+ => $cpu:expr; $cuda:expr) => {{
        match ($($s,)+) {
            ($(Storage::Cpu($s),)+) => $cpu,
            ($(Storage::Cuda($s),)+) => $cuda,
            // Unreachable for one operand; mixed devices for more.
            #[allow(unreachable_patterns)]
            _ => Err(Error::device($op, "operands are on different devices")),
        }
    }};
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => s.device(),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` copies of `value` on `device`.
    pub fn full(device: Device, dtype: DType, len: usize, value: f64) -> Result<Storage> {
        device.check_available("full")?;
        if let Device::Cuda(i) = device {
            return Ok(Storage::Cuda(CudaStorage::full(i, dtype, len, value)?));
        }
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
            Storage::Cuda(s) => s.to_cpu(),
        }
    }

    /// Copies `src` (same dtype and length; on this GPU or the host) into this GPU buffer in
    /// place and returns `true`; `false` when the caller should replace the storage instead (a
    /// host buffer, or operands this cannot copy).
    pub fn assign_in_place(&mut self, src: &Storage) -> Result<bool> {
        match self {
            Storage::Cuda(dst) => cuda::assign(dst, src),
            Storage::Cpu(_) => Ok(false),
        }
    }

    /// A copy on `device` (through the host between two GPUs).
    pub fn move_to(&self, device: Device) -> Result<Storage> {
        match device {
            Device::Cpu => self.to_cpu().map(Storage::Cpu),
            Device::Cuda(i) => match self {
                Storage::Cpu(s) => CudaStorage::from_cpu(s, i).map(Storage::Cuda),
                Storage::Cuda(s) if s.device() == device => s.try_clone().map(Storage::Cuda),
                Storage::Cuda(s) => CudaStorage::from_cpu(&s.to_cpu()?, i).map(Storage::Cuda),
            },
        }
    }

    /// Converts every element to `dtype`.
    pub fn to_dtype(&self, dtype: DType) -> Result<Storage> {
        let s = self;
        on_device!("to_dtype", s => Ok(Storage::Cpu(cpu::to_dtype(s, dtype))); cuda::to_dtype(s, dtype).map(Storage::Cuda))
    }

    pub fn unary(&self, op: UnaryOp) -> Result<Storage> {
        let x = self;
        on_device!(op.name(), x => cpu::unary(x, op).map(Storage::Cpu); cuda::unary(x, op).map(Storage::Cuda))
    }

    pub fn unary_backward(&self, y: &Storage, dy: &Storage, op: UnaryOp) -> Result<Storage> {
        let x = self;
        on_device!(op.name(), x, y, dy => cpu::unary_backward(x, y, dy, op).map(Storage::Cpu);
            cuda::unary_backward(x, y, dy, op).map(Storage::Cuda))
    }

    pub fn binary(&self, rhs: &Storage, geom: &BroadcastGeom, op: BinaryOp) -> Result<Storage> {
        let lhs = self;
        on_device!(op.name(), lhs, rhs => cpu::binary(lhs, rhs, geom, op).map(Storage::Cpu);
            cuda::binary(lhs, rhs, geom, op).map(Storage::Cuda))
    }

    pub fn sum_axes(&self, shape: &[usize], axes: &[usize]) -> Result<Storage> {
        let x = self;
        on_device!("sum", x => cpu::sum_axes(x, shape, axes).map(Storage::Cpu); cuda::sum_axes(x, shape, axes).map(Storage::Cuda))
    }

    /// Values and `U32` indices of the maximum along `axis`.
    pub fn max_axis(&self, shape: &[usize], axis: usize) -> Result<(Storage, Storage)> {
        let x = self;
        on_device!("max", x => cpu::max_axis(x, shape, axis).map(|(v, i)| (Storage::Cpu(v), Storage::Cpu(i)));
            cuda::max_axis(x, shape, axis).map(|(v, i)| (Storage::Cuda(v), Storage::Cuda(i))))
    }

    pub fn max_axis_backward(
        &self,
        indices: &Storage,
        shape: &[usize],
        axis: usize,
    ) -> Result<Storage> {
        let dy = self;
        on_device!("max_backward", dy, indices => cpu::max_axis_backward(dy, indices, shape, axis).map(Storage::Cpu);
            cuda::max_axis_backward(dy, indices, shape, axis).map(Storage::Cuda))
    }

    /// Contiguous copy of the strided view `(offset, strides, shape)` of `self`.
    pub fn gather(&self, offset: usize, strides: &[usize], shape: &[usize]) -> Result<Storage> {
        let src = self;
        on_device!("gather", src => Ok(Storage::Cpu(cpu::gather(src, offset, strides, shape)));
            cuda::gather(src, offset, strides, shape).map(Storage::Cuda))
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
        on_device!("scatter", dst, src => cpu::scatter(dst, src, offset, strides, shape, accumulate);
            cuda::scatter(dst, src, offset, strides, shape, accumulate))
    }

    pub fn matmul(&self, rhs: &Storage, geom: &GemmGeom) -> Result<Storage> {
        let lhs = self;
        on_device!("matmul", lhs, rhs => cpu::matmul(lhs, rhs, geom).map(Storage::Cpu); cuda::matmul(lhs, rhs, geom).map(Storage::Cuda))
    }

    /// `act(conv(x, w) + bias)`, the activation (if any) fused into the kernel's store.
    pub fn conv2d(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        act: Option<UnaryOp>,
        geom: &Conv2dGeom,
    ) -> Result<Storage> {
        let x = self;
        on_device!("conv2d", x, w => cpu::conv2d(x, w, opt_cpu("conv2d", bias)?, act, geom).map(Storage::Cpu);
            cuda::conv2d(x, w, opt_cuda("conv2d", bias)?, act, geom).map(Storage::Cuda))
    }

    /// A transposed convolution's forward: `act(backward_data(x, w) + bias)` over the
    /// `c_in` channels of `geom` (the convolution it is the adjoint of), bias and activation
    /// fused into the kernel's store.
    pub fn conv_transpose2d(
        &self,
        w: &Storage,
        bias: Option<&Storage>,
        act: Option<UnaryOp>,
        geom: &Conv2dGeom,
    ) -> Result<Storage> {
        let (x, op) = (self, "conv_transpose2d");
        on_device!(op, x, w => cpu::conv_transpose2d(x, w, opt_cpu(op, bias)?, act, geom).map(Storage::Cpu);
            cuda::conv_transpose2d(x, w, opt_cuda(op, bias)?, act, geom).map(Storage::Cuda))
    }

    pub fn conv2d_backward_data(&self, w: &Storage, geom: &Conv2dGeom) -> Result<Storage> {
        let dy = self;
        on_device!("conv2d_backward_data", dy, w => cpu::conv2d_backward_data(dy, w, geom).map(Storage::Cpu);
            cuda::conv2d_backward_data(dy, w, geom).map(Storage::Cuda))
    }

    pub fn conv2d_backward_weight(&self, dy: &Storage, geom: &Conv2dGeom) -> Result<Storage> {
        let x = self;
        on_device!("conv2d_backward_weight", x, dy => cpu::conv2d_backward_weight(x, dy, geom).map(Storage::Cpu);
            cuda::conv2d_backward_weight(x, dy, geom).map(Storage::Cuda))
    }

    /// Per-channel mean and biased variance.
    pub fn batch_norm_stats(&self, geom: &BatchNormGeom) -> Result<(Storage, Storage)> {
        let x = self;
        on_device!("batch_norm", x => cpu::batch_norm_stats(x, geom).map(|(m, v)| (Storage::Cpu(m), Storage::Cpu(v)));
            cuda::batch_norm_stats(x, geom).map(|(m, v)| (Storage::Cuda(m), Storage::Cuda(v))))
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
        let op = "batch_norm";
        on_device!(op, x, mean, var => {
            let wb = (opt_cpu(op, affine.0)?, opt_cpu(op, affine.1)?);
            cpu::batch_norm_forward(x, mean, var, wb, eps, act, geom).map(Storage::Cpu)
        }; {
            let wb = (opt_cuda(op, affine.0)?, opt_cuda(op, affine.1)?);
            cuda::batch_norm_forward(x, mean, var, wb, eps, act, geom).map(Storage::Cuda)
        })
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
        let op = "batch_norm_backward";
        on_device!(op, x, dy, mean, var => {
            let wb = (opt_cpu(op, affine.0)?, opt_cpu(op, affine.1)?);
            cpu::batch_norm_backward(x, dy, mean, var, wb, eps, training, act, geom)
                .map(|(a, b, c)| (Storage::Cpu(a), Storage::Cpu(b), Storage::Cpu(c)))
        }; {
            let wb = (opt_cuda(op, affine.0)?, opt_cuda(op, affine.1)?);
            cuda::batch_norm_backward(x, dy, mean, var, wb, eps, training, act, geom)
                .map(|(a, b, c)| (Storage::Cuda(a), Storage::Cuda(b), Storage::Cuda(c)))
        })
    }

    /// PReLU over `[n, c, inner]` with `c` (or 1) weights.
    pub fn prelu(&self, weight: &Storage, dims: [usize; 3]) -> Result<Storage> {
        let x = self;
        on_device!("prelu", x, weight => cpu::prelu(x, weight, dims).map(Storage::Cpu); cuda::prelu(x, weight, dims).map(Storage::Cuda))
    }

    /// `(dx, dweight)`.
    pub fn prelu_backward(
        &self,
        weight: &Storage,
        dy: &Storage,
        dims: [usize; 3],
    ) -> Result<(Storage, Storage)> {
        let x = self;
        on_device!("prelu_backward", x, weight, dy => cpu::prelu_backward(x, weight, dy, dims).map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b)));
            cuda::prelu_backward(x, weight, dy, dims).map(|(a, b)| (Storage::Cuda(a), Storage::Cuda(b))))
    }

    /// `dims = [n, c_out, h, w]` of the *input*; `inverse` runs pixel-unshuffle instead.
    pub fn pixel_shuffle(&self, dims: [usize; 4], r: usize, inverse: bool) -> Result<Storage> {
        let x = self;
        on_device!("pixel_shuffle", x => Ok(Storage::Cpu(cpu::pixel_shuffle(x, dims, r, inverse)));
            cuda::pixel_shuffle(x, dims, r, inverse).map(Storage::Cuda))
    }

    /// `dims = [planes, h, w]` of the small image; `backward` sums blocks instead of copying.
    pub fn upsample_nearest2d(
        &self,
        dims: [usize; 3],
        scale: [usize; 2],
        backward: bool,
    ) -> Result<Storage> {
        let x = self;
        on_device!("upsample_nearest2d", x => cpu::upsample_nearest2d(x, dims, scale, backward).map(Storage::Cpu);
            cuda::upsample_nearest2d(x, dims, scale, backward).map(Storage::Cuda))
    }

    pub fn bce_with_logits(&self, target: &Storage) -> Result<Storage> {
        let x = self;
        on_device!("bce_with_logits", x, target => cpu::bce_with_logits(x, target).map(Storage::Cpu);
            cuda::bce_with_logits(x, target).map(Storage::Cuda))
    }

    /// `(dx, dtarget)`.
    pub fn bce_with_logits_backward(
        &self,
        target: &Storage,
        dy: &Storage,
    ) -> Result<(Storage, Storage)> {
        let x = self;
        on_device!("bce_with_logits_backward", x, target, dy => cpu::bce_with_logits_backward(x, target, dy)
            .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b)));
            cuda::bce_with_logits_backward(x, target, dy).map(|(a, b)| (Storage::Cuda(a), Storage::Cuda(b))))
    }
}

impl Storage {
    /// Binary cross-entropy on probabilities; an error if some probability lies outside [0, 1].
    pub fn bce(&self, target: &Storage) -> Result<Storage> {
        let x = self;
        on_device!("bce", x, target => cpu::bce(x, target).map(Storage::Cpu); cuda::bce(x, target).map(Storage::Cuda))
    }

    /// `(dprobabilities, dtarget)`.
    pub fn bce_backward(&self, target: &Storage, dy: &Storage) -> Result<(Storage, Storage)> {
        let x = self;
        on_device!("bce_backward", x, target, dy => cpu::bce_backward(x, target, dy)
            .map(|(a, b)| (Storage::Cpu(a), Storage::Cpu(b)));
            cuda::bce_backward(x, target, dy).map(|(a, b)| (Storage::Cuda(a), Storage::Cuda(b))))
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
        table: &mut AdamTable,
    ) -> Result<()> {
        let op = "adam_step";
        let mixed = || {
            Error::device(
                op,
                "parameters, gradients and moments are on different devices",
            )
        };
        match (m, v) {
            (Storage::Cpu(m), Storage::Cpu(v)) => {
                let params = params
                    .iter_mut()
                    .map(|p| match &mut **p {
                        Storage::Cpu(p) => Ok(p),
                        _ => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let grads = grads
                    .iter()
                    .map(|g| match g {
                        Storage::Cpu(g) => Ok(g),
                        _ => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                cpu::adam_step_fused(params, &grads, m, v, ranges, steps)
            }
            (Storage::Cuda(m), Storage::Cuda(v)) => {
                let params = params
                    .iter_mut()
                    .map(|p| match &mut **p {
                        Storage::Cuda(p) => Ok(p),
                        _ => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let grads = grads
                    .iter()
                    .map(|g| match g {
                        Storage::Cuda(g) => Ok(g),
                        _ => Err(mixed()),
                    })
                    .collect::<Result<Vec<_>>>()?;
                cuda::adam_step_fused(params, &grads, m, v, ranges, steps, table)
            }
            _ => Err(mixed()),
        }
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
            (Storage::Cuda(p), Storage::Cuda(g), None) => cuda::sgd_step(p, g, None, h),
            (Storage::Cuda(p), Storage::Cuda(g), Some(Storage::Cuda(b))) => {
                cuda::sgd_step(p, g, Some(b), h)
            }
            _ => Err(Error::device(
                "sgd_step",
                "operands are on different devices",
            )),
        }
    }
}

/// The table of per-parameter constants a fused Adam step hands to its kernel, kept by the
/// optimizer between steps. On a GPU it is a device buffer whose address a captured graph
/// bakes in; [`AdamTable::restep`] rewrites it before a replay. Unused on the CPU.
#[derive(Debug, Default)]
pub struct AdamTable(pub(crate) Option<(Arc<Gpu>, gantry_kernels::optim::cuda::AdamTable)>);

impl AdamTable {
    /// Sets the next step's constants (one [`AdamStep`] per parameter of the last step, in its
    /// order) on the device.
    pub fn restep(&mut self, steps: &[AdamStep]) -> Result<()> {
        match &mut self.0 {
            Some((gpu, t)) => t
                .restep(gpu, steps)
                .map_err(|e| Error::device("adam_step (replay)", e.0)),
            // On the CPU each step computes its constants itself: nothing to write.
            None => Ok(()),
        }
    }
}

/// What every backend's fused Adam checks first: one gradient, moment range and step per
/// parameter; each gradient as long as its parameter; the ranges ascending, disjoint, as long as
/// their parameters and inside the moment buffers (`moments` values each).
pub(crate) fn check_adam_layout(
    op: &'static str,
    params: &[usize],
    grads: &[usize],
    ranges: &[std::ops::Range<usize>],
    steps: usize,
    moments: usize,
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || ranges.len() != n || steps != n {
        return Err(Error::invalid(
            op,
            format!(
                "{n} parameters but {} gradients, {} moment ranges and {steps} steps",
                grads.len(),
                ranges.len(),
            ),
        ));
    }
    let mut end = 0;
    for ((&p, &g), r) in params.iter().zip(grads).zip(ranges) {
        if g != p {
            return Err(Error::shape(
                op,
                format!("buffer of {g} elements for a parameter of {p}"),
            ));
        }
        if r.start < end || r.len() != p || r.end > moments {
            return Err(Error::invalid(
                op,
                format!("moment range {r:?} for a parameter of {p} elements (after {end}, in a buffer of {moments})"),
            ));
        }
        end = r.end;
    }
    Ok(())
}

fn opt_cpu<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a CpuStorage>> {
    match s {
        None => Ok(None),
        Some(Storage::Cpu(s)) => Ok(Some(s)),
        Some(_) => Err(Error::device(op, "operands are on different devices")),
    }
}

fn opt_cuda<'a>(op: &'static str, s: Option<&'a Storage>) -> Result<Option<&'a CudaStorage>> {
    match s {
        None => Ok(None),
        Some(Storage::Cuda(s)) => Ok(Some(s)),
        Some(_) => Err(Error::device(op, "operands are on different devices")),
    }
}
