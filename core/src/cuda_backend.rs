//! The CUDA backend: device buffers, and the call into `gantry-kernels`' CUDA kernels.
//!
//! Tensors on a GPU hold `f32` (and `u32` for the indices `max` returns); the other dtypes
//! stay on the CPU, and asking for them on a GPU is an error naming the op. Every kernel runs
//! on the device's one stream, so results are ready for the next op without waiting; the host
//! waits only when it reads values back.

use crate::storage::CpuStorage;
use crate::{DType, Device, Error, Result};
use gantry_kernels::batch_norm::{cuda as bn, BatchNormGeom};
use gantry_kernels::conv::{cuda as conv, Conv2dGeom};
use gantry_kernels::cuda_rt::{self, CudaError, CudaSlice, Gpu};
use gantry_kernels::elementwise::{cuda as ew, BinaryOp, BroadcastGeom, UnaryOp};
use gantry_kernels::gemm::GemmGeom;
use gantry_kernels::optim::{AdamStep, SgdStep};
use std::sync::Arc;

/// A buffer on one GPU.
pub struct CudaStorage {
    gpu: Arc<Gpu>,
    len: usize,
    /// `None` only while being dropped.
    buf: Option<CudaBuf>,
}

enum CudaBuf {
    F32(CudaSlice<f32>),
    U32(CudaSlice<u32>),
}

/// The op's error for a failure of the CUDA path.
fn err(op: &'static str) -> impl Fn(CudaError) -> Error {
    move |e| Error::device(op, e.0)
}

/// The process-wide handle of `cuda:ordinal`, or an error saying why there is none.
pub fn gpu(op: &'static str, ordinal: usize) -> Result<Arc<Gpu>> {
    cuda_rt::gpu(ordinal).map_err(err(op))
}

impl CudaStorage {
    fn f32(gpu: &Arc<Gpu>, b: CudaSlice<f32>, len: usize) -> CudaStorage {
        CudaStorage {
            gpu: gpu.clone(),
            len,
            buf: Some(CudaBuf::F32(b)),
        }
    }

    pub fn device(&self) -> Device {
        Device::Cuda(self.gpu.ordinal())
    }
    pub fn dtype(&self) -> DType {
        match self.buf.as_ref().expect("live buffer") {
            CudaBuf::F32(_) => DType::F32,
            CudaBuf::U32(_) => DType::U32,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The `f32` buffer, or an error naming `op` for another dtype.
    fn f(&self, op: &'static str) -> Result<&CudaSlice<f32>> {
        match self.buf.as_ref().expect("live buffer") {
            CudaBuf::F32(b) => Ok(b),
            CudaBuf::U32(_) => Err(Error::unsupported_dtype(op, DType::U32)),
        }
    }
    fn f_mut(&mut self, op: &'static str) -> Result<&mut CudaSlice<f32>> {
        match self.buf.as_mut().expect("live buffer") {
            CudaBuf::F32(b) => Ok(b),
            CudaBuf::U32(_) => Err(Error::unsupported_dtype(op, DType::U32)),
        }
    }

    /// `len` copies of `value` on `cuda:ordinal`.
    pub fn full(ordinal: usize, dtype: DType, len: usize, value: f64) -> Result<CudaStorage> {
        let g = gpu("full", ordinal)?;
        if dtype != DType::F32 {
            return Err(Error::unsupported_dtype("full (on a CUDA device)", dtype));
        }
        // Filled on the device, so that a captured graph can make constants too.
        let b = if value == 0.0 {
            g.zeros_f32(len)
        } else {
            gantry_kernels::copy::cuda::fill(&g, value as f32, len)
        }
        .map_err(err("full"))?;
        Ok(CudaStorage::f32(&g, b, len))
    }

    /// A copy of a host buffer on `cuda:ordinal`.
    pub fn from_cpu(s: &CpuStorage, ordinal: usize) -> Result<CudaStorage> {
        let g = gpu("to_device", ordinal)?;
        match s {
            CpuStorage::F32(v) => {
                let b = g.upload_f32(v).map_err(err("to_device"))?;
                Ok(CudaStorage::f32(&g, b, v.len()))
            }
            CpuStorage::U32(v) => {
                let b = g.upload(if v.is_empty() { &[0u32][..] } else { v }).map_err(err("to_device"))?;
                Ok(CudaStorage { gpu: g, len: v.len(), buf: Some(CudaBuf::U32(b)) })
            }
            other => Err(Error::dtype(
                "to_device",
                format!("{} tensors cannot live on a CUDA device (f32 and u32 can); convert with to_dtype first", other.dtype()),
            )),
        }
    }

    /// A copy on the host (waits for the device).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let e = err("to_cpu");
        match self.buf.as_ref().expect("live buffer") {
            CudaBuf::F32(b) => Ok(CpuStorage::F32(self.gpu.download(b, self.len).map_err(e)?)),
            CudaBuf::U32(b) => Ok(CpuStorage::U32(self.gpu.download(b, self.len).map_err(e)?)),
        }
    }

    pub fn try_clone(&self) -> Result<CudaStorage> {
        match self.buf.as_ref().expect("live buffer") {
            CudaBuf::F32(b) => {
                let c = self.gpu.copy_f32(b, self.len).map_err(err("clone"))?;
                Ok(CudaStorage::f32(&self.gpu, c, self.len))
            }
            CudaBuf::U32(_) => CudaStorage::from_cpu(&self.to_cpu()?, self.gpu.ordinal()),
        }
    }
}

impl Drop for CudaStorage {
    /// Hands an `f32` buffer back to the device's pool for the next op of the same size.
    fn drop(&mut self) {
        if let Some(CudaBuf::F32(b)) = self.buf.take() {
            self.gpu.recycle(b);
        }
    }
}

impl Clone for CudaStorage {
    /// A device-side copy.
    ///
    /// # Panics
    /// If the driver fails to allocate or copy (the device is lost or out of memory);
    /// [`CudaStorage::try_clone`] returns that as an error instead.
    fn clone(&self) -> Self {
        self.try_clone()
            .unwrap_or_else(|e| panic!("copying a CUDA buffer: {e}"))
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaStorage(cuda:{}, {}, {} values)",
            self.gpu.ordinal(),
            self.dtype(),
            self.len
        )
    }
}

impl PartialEq for CudaStorage {
    /// Equal values on the same device (compares on the host).
    fn eq(&self, other: &Self) -> bool {
        self.device() == other.device()
            && matches!((self.to_cpu(), other.to_cpu()), (Ok(a), Ok(b)) if a == b)
    }
}

/// The GPU all of `ops` live on, or an error when they are on different ones.
fn same_gpu<'a>(op: &'static str, all: &[&'a CudaStorage]) -> Result<&'a Arc<Gpu>> {
    let g = &all[0].gpu;
    if all.iter().any(|s| s.gpu.ordinal() != g.ordinal()) {
        return Err(Error::device(op, "operands are on different CUDA devices"));
    }
    Ok(g)
}

fn wrap(
    g: &Arc<Gpu>,
    op: &'static str,
    r: std::result::Result<CudaSlice<f32>, CudaError>,
    len: usize,
) -> Result<CudaStorage> {
    r.map(|b| CudaStorage::f32(g, b, len)).map_err(err(op))
}

/// `Storage::assign_in_place` on a GPU: copies an f32 `src` of the same length, from this GPU
/// or from the host, into `dst`'s buffer.
pub fn assign(dst: &mut CudaStorage, src: &crate::storage::Storage) -> Result<bool> {
    use crate::storage::Storage;
    let op = "set";
    let len = dst.len;
    let g = dst.gpu.clone();
    let Ok(d) = dst.f_mut(op) else {
        return Ok(false);
    };
    match src {
        Storage::Cuda(s) if s.len == len && s.gpu.ordinal() == g.ordinal() => match s.f(op) {
            Ok(sb) => g.copy_into(sb, d, len).map_err(err(op)).map(|()| true),
            Err(_) => Ok(false),
        },
        Storage::Cpu(CpuStorage::F32(v)) if v.len() == len => {
            g.write(v, d).map_err(err(op)).map(|()| true)
        }
        _ => Ok(false),
    }
}

pub fn to_dtype(s: &CudaStorage, dtype: DType) -> Result<CudaStorage> {
    if s.dtype() == dtype {
        return s.try_clone();
    }
    if dtype == DType::F32 {
        // u32 → f32 through the host: rare (indices), not worth a kernel.
        let v = s.to_cpu()?.to_f64_vec();
        return CudaStorage::from_cpu(
            &CpuStorage::from_f64_iter(DType::F32, v.into_iter()),
            s.gpu.ordinal(),
        );
    }
    Err(Error::unsupported_dtype(
        "to_dtype (on a CUDA device)",
        dtype,
    ))
}

pub fn unary(x: &CudaStorage, op: UnaryOp) -> Result<CudaStorage> {
    let n = op.name();
    wrap(&x.gpu, n, ew::unary(&x.gpu, op, x.f(n)?, x.len), x.len)
}

pub fn unary_backward(
    x: &CudaStorage,
    y: &CudaStorage,
    dy: &CudaStorage,
    op: UnaryOp,
) -> Result<CudaStorage> {
    let n = op.name();
    let g = same_gpu(n, &[x, y, dy])?;
    wrap(
        g,
        n,
        ew::unary_backward(g, op, [x.f(n)?, y.f(n)?, dy.f(n)?], x.len),
        x.len,
    )
}

pub fn binary(
    a: &CudaStorage,
    b: &CudaStorage,
    geom: &BroadcastGeom,
    op: BinaryOp,
) -> Result<CudaStorage> {
    let n = op.name();
    let g = same_gpu(n, &[a, b])?;
    wrap(
        g,
        n,
        ew::binary(g, op, a.f(n)?, b.f(n)?, geom),
        geom.out_len(),
    )
}

pub fn sum_axes(x: &CudaStorage, shape: &[usize], axes: &[usize]) -> Result<CudaStorage> {
    let len = gantry_kernels::reduce::reduced_shape(shape, axes)
        .iter()
        .product();
    wrap(
        &x.gpu,
        "sum",
        gantry_kernels::reduce::cuda::sum_axes(&x.gpu, x.f("sum")?, shape, axes),
        len,
    )
}

pub fn max_axis(
    x: &CudaStorage,
    shape: &[usize],
    axis: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    let len = x.len / shape[axis].max(1);
    let (v, i) = gantry_kernels::reduce::cuda::max_axis(&x.gpu, x.f("max")?, shape, axis)
        .map_err(err("max"))?;
    Ok((
        CudaStorage::f32(&x.gpu, v, len),
        CudaStorage {
            gpu: x.gpu.clone(),
            len,
            buf: Some(CudaBuf::U32(i)),
        },
    ))
}

pub fn max_axis_backward(
    dy: &CudaStorage,
    indices: &CudaStorage,
    shape: &[usize],
    axis: usize,
) -> Result<CudaStorage> {
    let op = "max_backward";
    let g = same_gpu(op, &[dy, indices])?;
    let CudaBuf::U32(idx) = indices.buf.as_ref().expect("live buffer") else {
        return Err(Error::dtype_mismatch(op, DType::U32, indices.dtype()));
    };
    let len = shape.iter().product();
    wrap(
        g,
        op,
        gantry_kernels::reduce::cuda::max_axis_backward(g, dy.f(op)?, idx, shape, axis),
        len,
    )
}

pub fn gather(
    src: &CudaStorage,
    offset: usize,
    strides: &[usize],
    shape: &[usize],
) -> Result<CudaStorage> {
    if src.dtype() != DType::F32 {
        // Index tensors are small: copy through the host.
        let host = crate::cpu_backend::gather(&src.to_cpu()?, offset, strides, shape);
        return CudaStorage::from_cpu(&host, src.gpu.ordinal());
    }
    let len = shape.iter().product();
    wrap(
        &src.gpu,
        "gather",
        gantry_kernels::copy::cuda::gather(&src.gpu, src.f("gather")?, offset, strides, shape),
        len,
    )
}

pub fn scatter(
    dst: &mut CudaStorage,
    src: &CudaStorage,
    offset: usize,
    strides: &[usize],
    shape: &[usize],
    accumulate: bool,
) -> Result<()> {
    let op = "scatter";
    let g = same_gpu(op, &[dst, src])?.clone();
    gantry_kernels::copy::cuda::scatter(
        &g,
        dst.f_mut(op)?,
        src.f(op)?,
        offset,
        strides,
        shape,
        accumulate,
    )
    .map_err(err(op))
}

pub fn matmul(a: &CudaStorage, b: &CudaStorage, geom: &GemmGeom) -> Result<CudaStorage> {
    let g = same_gpu("matmul", &[a, b])?;
    let len = geom.batch * geom.m * geom.n;
    wrap(
        g,
        "matmul",
        match crate::precision().tensor_core() {
            // Mixed precision: the tensor-core conv kernel, as a 1x1 convolution.
            Some(t) if g.arch() >= (8, 0) => {
                conv::tc::matmul(g, t, a.f("matmul")?, b.f("matmul")?, geom)
            }
            _ => gantry_kernels::gemm::cuda::matmul(g, a.f("matmul")?, b.f("matmul")?, geom),
        },
        len,
    )
}

/// `act(conv(x, w) + bias)`, bias and activation in the rung's epilogue.
pub fn conv2d(
    x: &CudaStorage,
    w: &CudaStorage,
    bias: Option<&CudaStorage>,
    act: Option<UnaryOp>,
    geom: &Conv2dGeom,
) -> Result<CudaStorage> {
    let len = geom.output_len_total();
    fused_conv("conv2d", [x, w], bias, len, |g, x, w, b| {
        crate::precision::cuda_conv().forward_fused(g, x, w, b, act, geom)
    })
}

/// A transposed convolution's forward, `act(backward_data(x, w) + bias)`, bias and
/// activation in the rung's epilogue.
pub fn conv_transpose2d(
    x: &CudaStorage,
    w: &CudaStorage,
    bias: Option<&CudaStorage>,
    act: Option<UnaryOp>,
    geom: &Conv2dGeom,
) -> Result<CudaStorage> {
    let len = geom.input_len();
    fused_conv("conv_transpose2d", [x, w], bias, len, |g, x, w, b| {
        crate::precision::cuda_conv().backward_data_fused(g, x, w, b, act, geom)
    })
}

/// Runs a conv pass with an optional bias on the operands' GPU: `run(gpu, x, w, bias)`
/// gives the `len` output values.
fn fused_conv(
    op: &'static str,
    [x, w]: [&CudaStorage; 2],
    bias: Option<&CudaStorage>,
    len: usize,
    run: impl FnOnce(
        &Arc<Gpu>,
        &CudaSlice<f32>,
        &CudaSlice<f32>,
        Option<&CudaSlice<f32>>,
    ) -> cuda_rt::Result<CudaSlice<f32>>,
) -> Result<CudaStorage> {
    let g = same_gpu(op, &[x, w])?;
    if let Some(b) = bias {
        same_gpu(op, &[x, b])?;
    }
    let bias = bias.map(|b| b.f(op)).transpose()?;
    wrap(g, op, run(g, x.f(op)?, w.f(op)?, bias), len)
}

pub fn conv2d_backward_data(
    dy: &CudaStorage,
    w: &CudaStorage,
    geom: &Conv2dGeom,
) -> Result<CudaStorage> {
    let op = "conv2d_backward_data";
    let g = same_gpu(op, &[dy, w])?;
    wrap(
        g,
        op,
        crate::precision::cuda_conv().backward_data(g, dy.f(op)?, w.f(op)?, geom),
        geom.input_len(),
    )
}

pub fn conv2d_backward_weight(
    x: &CudaStorage,
    dy: &CudaStorage,
    geom: &Conv2dGeom,
) -> Result<CudaStorage> {
    let op = "conv2d_backward_weight";
    let g = same_gpu(op, &[x, dy])?;
    wrap(
        g,
        op,
        crate::precision::cuda_conv().backward_weight(g, x.f(op)?, dy.f(op)?, geom),
        geom.weight_len(),
    )
}

pub fn batch_norm_stats(
    x: &CudaStorage,
    geom: &BatchNormGeom,
) -> Result<(CudaStorage, CudaStorage)> {
    let (m, v) = bn::stats(&x.gpu, x.f("batch_norm")?, geom).map_err(err("batch_norm"))?;
    Ok((
        CudaStorage::f32(&x.gpu, m, geom.c),
        CudaStorage::f32(&x.gpu, v, geom.c),
    ))
}

type Affine<'a> = (Option<&'a CudaStorage>, Option<&'a CudaStorage>);
type AffineBufs<'a> = (Option<&'a CudaSlice<f32>>, Option<&'a CudaSlice<f32>>);

fn affine<'a>(op: &'static str, x: &CudaStorage, (w, b): Affine<'a>) -> Result<AffineBufs<'a>> {
    for s in [w, b].into_iter().flatten() {
        same_gpu(op, &[x, s])?;
    }
    Ok((
        w.map(|s| s.f(op)).transpose()?,
        b.map(|s| s.f(op)).transpose()?,
    ))
}

pub fn batch_norm_forward(
    x: &CudaStorage,
    mean: &CudaStorage,
    var: &CudaStorage,
    wb: Affine,
    eps: f64,
    act: Option<UnaryOp>,
    geom: &BatchNormGeom,
) -> Result<CudaStorage> {
    let op = "batch_norm";
    let g = same_gpu(op, &[x, mean, var])?;
    let wb = affine(op, x, wb)?;
    wrap(
        g,
        op,
        bn::forward(g, [x.f(op)?, mean.f(op)?, var.f(op)?], wb, eps, act, geom),
        geom.len(),
    )
}

#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &CudaStorage,
    dy: &CudaStorage,
    mean: &CudaStorage,
    var: &CudaStorage,
    wb: Affine,
    eps: f64,
    training: bool,
    act: Option<UnaryOp>,
    geom: &BatchNormGeom,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let op = "batch_norm_backward";
    let g = same_gpu(op, &[x, dy, mean, var])?;
    let wb = affine(op, x, wb)?;
    let (dx, dw, db) = bn::backward(
        g,
        [x.f(op)?, dy.f(op)?, mean.f(op)?, var.f(op)?],
        wb,
        eps,
        training,
        act,
        geom,
    )
    .map_err(err(op))?;
    Ok((
        CudaStorage::f32(g, dx, geom.len()),
        CudaStorage::f32(g, dw, geom.c),
        CudaStorage::f32(g, db, geom.c),
    ))
}

pub fn prelu(x: &CudaStorage, w: &CudaStorage, dims: [usize; 3]) -> Result<CudaStorage> {
    let g = same_gpu("prelu", &[x, w])?;
    wrap(
        g,
        "prelu",
        ew::prelu(g, x.f("prelu")?, w.f("prelu")?, w.len, dims),
        x.len,
    )
}

pub fn prelu_backward(
    x: &CudaStorage,
    w: &CudaStorage,
    dy: &CudaStorage,
    dims: [usize; 3],
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "prelu_backward";
    let g = same_gpu(op, &[x, w, dy])?;
    let (dx, dw) =
        ew::prelu_backward(g, [x.f(op)?, w.f(op)?, dy.f(op)?], w.len, dims).map_err(err(op))?;
    Ok((
        CudaStorage::f32(g, dx, x.len),
        CudaStorage::f32(g, dw, w.len),
    ))
}

pub fn pixel_shuffle(
    x: &CudaStorage,
    dims: [usize; 4],
    r: usize,
    inverse: bool,
) -> Result<CudaStorage> {
    let op = "pixel_shuffle";
    wrap(
        &x.gpu,
        op,
        gantry_kernels::resample::cuda::pixel_shuffle(&x.gpu, x.f(op)?, dims, r, inverse),
        x.len,
    )
}

pub fn upsample_nearest2d(
    x: &CudaStorage,
    dims: [usize; 3],
    scale: [usize; 2],
    backward: bool,
) -> Result<CudaStorage> {
    let op = "upsample_nearest2d";
    let small = dims.iter().product::<usize>();
    let len = if backward {
        small
    } else {
        small * scale[0] * scale[1]
    };
    wrap(
        &x.gpu,
        op,
        gantry_kernels::resample::cuda::upsample_nearest2d(&x.gpu, x.f(op)?, dims, scale, backward),
        len,
    )
}

pub fn bce_with_logits(x: &CudaStorage, t: &CudaStorage) -> Result<CudaStorage> {
    let op = "bce_with_logits";
    let g = same_gpu(op, &[x, t])?;
    wrap(
        g,
        op,
        gantry_kernels::loss::cuda::bce_with_logits(g, x.f(op)?, t.f(op)?, x.len),
        x.len,
    )
}

pub fn bce_with_logits_backward(
    x: &CudaStorage,
    t: &CudaStorage,
    dy: &CudaStorage,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "bce_with_logits_backward";
    let g = same_gpu(op, &[x, t, dy])?;
    let (a, b) = gantry_kernels::loss::cuda::bce_with_logits_backward(
        g,
        [x.f(op)?, t.f(op)?, dy.f(op)?],
        x.len,
    )
    .map_err(err(op))?;
    Ok((CudaStorage::f32(g, a, x.len), CudaStorage::f32(g, b, x.len)))
}

pub fn bce(p: &CudaStorage, t: &CudaStorage) -> Result<CudaStorage> {
    let g = same_gpu("bce", &[p, t])?;
    gantry_kernels::loss::cuda::bce(g, p.f("bce")?, t.f("bce")?, p.len)
        .map(|b| CudaStorage::f32(g, b, p.len))
        .map_err(|e| Error::invalid("bce", e.0))
}

pub fn bce_backward(
    p: &CudaStorage,
    t: &CudaStorage,
    dy: &CudaStorage,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "bce_backward";
    let g = same_gpu(op, &[p, t, dy])?;
    let (a, b) =
        gantry_kernels::loss::cuda::bce_backward(g, [p.f(op)?, t.f(op)?, dy.f(op)?], p.len)
            .map_err(err(op))?;
    Ok((CudaStorage::f32(g, a, p.len), CudaStorage::f32(g, b, p.len)))
}

/// Checks lengths as the CPU path does, then one launch over every parameter.
pub fn adam_step_fused(
    params: Vec<&mut CudaStorage>,
    grads: &[&CudaStorage],
    m: &mut CudaStorage,
    v: &mut CudaStorage,
    ranges: &[std::ops::Range<usize>],
    steps: &[AdamStep],
    table: &mut crate::storage::AdamTable,
) -> Result<()> {
    let op = "adam_step";
    let param_lens: Vec<usize> = params.iter().map(|p| p.len).collect();
    let grad_lens: Vec<usize> = grads.iter().map(|g| g.len).collect();
    crate::storage::check_adam_layout(op, &param_lens, &grad_lens, ranges, steps.len(), m.len)?;
    if m.len != v.len {
        return Err(Error::shape(
            op,
            format!("moment buffers of {} and {} elements", m.len, v.len),
        ));
    }
    for (p, gr) in params.iter().zip(grads) {
        same_gpu(op, &[m, v, p, gr])?;
    }
    let g = m.gpu.clone();
    let segments: Vec<_> = ranges
        .iter()
        .zip(steps)
        .map(|(r, h)| (r.start, r.len(), *h))
        .collect();
    let grads = grads.iter().map(|s| s.f(op)).collect::<Result<Vec<_>>>()?;
    let mut params = params
        .into_iter()
        .map(|p| p.f_mut(op))
        .collect::<Result<Vec<_>>>()?;
    let (mb, vb) = (m.f_mut(op)?, v.f_mut(op)?);
    // The table stays with the optimizer, on the device it was made for.
    if table
        .0
        .as_ref()
        .is_none_or(|(tg, _)| tg.ordinal() != g.ordinal())
    {
        table.0 = Some((g.clone(), Default::default()));
    }
    let t = &mut table.0.as_mut().expect("set above").1;
    gantry_kernels::optim::cuda::adam_step_fused(&g, t, &mut params, &grads, (mb, vb), &segments)
        .map_err(err(op))
}

pub fn sgd_step(
    p: &mut CudaStorage,
    grad: &CudaStorage,
    buf: Option<&mut CudaStorage>,
    h: &SgdStep,
) -> Result<()> {
    let op = "sgd_step";
    let g = same_gpu(op, &[p, grad])?.clone();
    if grad.len != p.len || buf.as_ref().is_some_and(|b| b.len != p.len) {
        return Err(Error::shape(
            op,
            format!(
                "buffers of a parameter of {} elements differ in length",
                p.len
            ),
        ));
    }
    let n = p.len;
    let buf = match buf {
        Some(b) => Some(b.f_mut(op)?),
        None => None,
    };
    gantry_kernels::optim::cuda::sgd_step(&g, p.f_mut(op)?, grad.f(op)?, buf, h, n).map_err(err(op))
}
