//! The CPU backend: dtype dispatch, buffer allocation, and the call into `gantry-kernels`.
//!
//! f32 runs the fast kernels (`gemm::cpu`, `conv::cpu`, `elementwise::cpu`, `batch_norm::cpu`,
//! `reduce::cpu`) where they exist; f64 (the gradient checks) and every other op run the reference kernels.

use crate::storage::{CpuElem, CpuStorage};
use crate::{DType, Error, Result};
use gantry_kernels::batch_norm::BatchNormGeom;
use gantry_kernels::conv::{Conv2dGeom, ConvVariant, Epilogue};
use gantry_kernels::elementwise::{BinaryOp, BroadcastGeom, UnaryOp};
use gantry_kernels::gemm::GemmGeom;
use gantry_kernels::optim::{AdamStep, SgdStep};
use gantry_kernels::reference as k;
use half::{bf16, f16};

/// Runs `$body` with `$T` bound to the Rust type of `$dtype` (f32 or f64); other dtypes are an
/// error naming `$op`.
macro_rules! with_float {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            d => Err(Error::unsupported_dtype($op, d)),
        }
    };
}

/// The fast CPU kernel for f32, the reference for f64 (what the gradient checks run).
macro_rules! fast_or_reference {
    ($T:ty, $($fast:ident)::+, $reference:path) => {
        if <$T as crate::WithDType>::DTYPE == DType::F32 {
            gantry_kernels::$($fast)::+::<$T>
        } else {
            $reference
        }
    };
}

/// Views `s` as `[T]`; the caller has checked dtypes agree, so a mismatch here is a bug.
fn view<'a, T: CpuElem>(op: &'static str, s: &'a CpuStorage) -> Result<&'a [T]> {
    T::slice(s).ok_or_else(|| Error::dtype_mismatch(op, T::DTYPE, s.dtype()))
}

fn slice_mut<'a, T: CpuElem>(op: &'static str, s: &'a mut CpuStorage) -> Result<&'a mut [T]> {
    let dtype = s.dtype();
    T::slice_mut(s).ok_or_else(|| Error::dtype_mismatch(op, T::DTYPE, dtype))
}

/// A zeroed buffer (large f32 ones come from the buffer pool, see `pool`).
fn zeros<T: CpuElem>(len: usize) -> Vec<T> {
    T::zeros(len)
}

pub fn to_dtype(s: &CpuStorage, dtype: DType) -> CpuStorage {
    if s.dtype() == dtype {
        return s.clone();
    }
    match (s, dtype) {
        // Direct conversions keep f32 <-> f16/bf16 rounding exact (no f64 detour needed, but
        // it would give the same result; these are just faster).
        (CpuStorage::F32(v), DType::F16) => {
            CpuStorage::F16(v.iter().map(|&x| f16::from_f32(x)).collect())
        }
        (CpuStorage::F32(v), DType::BF16) => {
            CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect())
        }
        _ => CpuStorage::from_f64_iter(dtype, s.to_f64_vec().into_iter()),
    }
}

pub fn unary(x: &CpuStorage, op: UnaryOp) -> Result<CpuStorage> {
    with_float!(op.name(), x.dtype(), T => {
        let x = view::<T>(op.name(), x)?;
        let mut y = zeros::<T>(x.len());
        fast_or_reference!(T, elementwise::cpu::unary, k::unary)(op, x, &mut y);
        Ok(T::wrap(y))
    })
}

pub fn unary_backward(
    x: &CpuStorage,
    y: &CpuStorage,
    dy: &CpuStorage,
    op: UnaryOp,
) -> Result<CpuStorage> {
    with_float!(op.name(), x.dtype(), T => {
        let n = op.name();
        let (x, y, dy) = (view::<T>(n, x)?, view::<T>(n, y)?, view::<T>(n, dy)?);
        let mut dx = zeros::<T>(x.len());
        fast_or_reference!(T, elementwise::cpu::unary_backward, k::unary_backward)(op, x, y, dy, &mut dx);
        Ok(T::wrap(dx))
    })
}

pub fn binary(
    a: &CpuStorage,
    b: &CpuStorage,
    geom: &BroadcastGeom,
    op: BinaryOp,
) -> Result<CpuStorage> {
    with_float!(op.name(), a.dtype(), T => {
        let (a, b) = (view::<T>(op.name(), a)?, view::<T>(op.name(), b)?);
        let mut out = zeros::<T>(geom.out_len());
        fast_or_reference!(T, elementwise::cpu::binary, k::binary)(op, a, b, geom, &mut out);
        Ok(T::wrap(out))
    })
}

pub fn sum_axes(x: &CpuStorage, shape: &[usize], axes: &[usize]) -> Result<CpuStorage> {
    with_float!("sum", x.dtype(), T => {
        let x = view::<T>("sum", x)?;
        let out_len = gantry_kernels::reduce::reduced_shape(shape, axes).iter().product();
        let mut out = zeros::<T>(out_len);
        fast_or_reference!(T, reduce::cpu::sum_axes, k::sum_axes)(x, shape, axes, &mut out);
        Ok(T::wrap(out))
    })
}

pub fn max_axis(x: &CpuStorage, shape: &[usize], axis: usize) -> Result<(CpuStorage, CpuStorage)> {
    with_float!("max", x.dtype(), T => {
        let x = view::<T>("max", x)?;
        let len = x.len() / shape[axis].max(1);
        let (mut v, mut i) = (zeros::<T>(len), vec![0u32; len]);
        k::max_axis(x, shape, axis, &mut v, &mut i);
        Ok((T::wrap(v), CpuStorage::U32(i)))
    })
}

pub fn max_axis_backward(
    dy: &CpuStorage,
    indices: &CpuStorage,
    shape: &[usize],
    axis: usize,
) -> Result<CpuStorage> {
    with_float!("max_backward", dy.dtype(), T => {
        let dy = view::<T>("max_backward", dy)?;
        let idx = view::<u32>("max_backward", indices)?;
        let mut dx = zeros::<T>(shape.iter().product());
        k::max_axis_backward(dy, idx, shape, axis, &mut dx);
        Ok(T::wrap(dx))
    })
}

pub fn gather(src: &CpuStorage, offset: usize, strides: &[usize], shape: &[usize]) -> CpuStorage {
    fn go<T: CpuElem + Default + Clone>(
        v: &[T],
        offset: usize,
        strides: &[usize],
        shape: &[usize],
    ) -> CpuStorage {
        let mut out = zeros::<T>(shape.iter().product());
        k::gather_strided(v, offset, strides, shape, &mut out);
        T::wrap(out)
    }
    match src {
        CpuStorage::F32(v) => go(v, offset, strides, shape),
        CpuStorage::F64(v) => go(v, offset, strides, shape),
        CpuStorage::F16(v) => go(v, offset, strides, shape),
        CpuStorage::BF16(v) => go(v, offset, strides, shape),
        CpuStorage::U32(v) => go(v, offset, strides, shape),
        CpuStorage::I64(v) => go(v, offset, strides, shape),
    }
}

pub fn scatter(
    dst: &mut CpuStorage,
    src: &CpuStorage,
    offset: usize,
    strides: &[usize],
    shape: &[usize],
    accumulate: bool,
) -> Result<()> {
    if dst.dtype() != src.dtype() {
        return Err(Error::dtype_mismatch("scatter", dst.dtype(), src.dtype()));
    }
    with_float!("scatter", src.dtype(), T => {
        let s = view::<T>("scatter", src)?;
        let d = T::slice_mut(dst).expect("dtype checked above");
        k::scatter_strided(s, d, offset, strides, shape, accumulate);
        Ok(())
    })
}

pub fn matmul(a: &CpuStorage, b: &CpuStorage, geom: &GemmGeom) -> Result<CpuStorage> {
    // f32 takes the SIMD GEMM; f64 (gradient checks) the reference.
    if let (CpuStorage::F32(a), CpuStorage::F32(b)) = (a, b) {
        let p = crate::precision();
        let mut c = zeros::<f32>(geom.batch * geom.m * geom.n);
        gantry_kernels::gemm::cpu::matmul(&p.round_slice(a), &p.round_slice(b), &mut c, geom);
        return Ok(CpuStorage::F32(c));
    }
    with_float!("matmul", a.dtype(), T => {
        let (a, b) = (view::<T>("matmul", a)?, view::<T>("matmul", b)?);
        let mut c = zeros::<T>(geom.batch * geom.m * geom.n);
        k::matmul(a, b, &mut c, geom);
        Ok(T::wrap(c))
    })
}

/// An f32 conv pass with an epilogue on the fast kernels: `run(x, w, epilogue, out)` on the
/// operands rounded to the precision, into `len` fresh values.
fn fused_f32(
    op: &'static str,
    [x, w]: [&[f32]; 2],
    bias: Option<&CpuStorage>,
    act: Option<UnaryOp>,
    len: usize,
    run: impl FnOnce(&[f32], &[f32], Epilogue, &mut [f32]),
) -> Result<CpuStorage> {
    let bias = bias.map(|b| view::<f32>(op, b)).transpose()?;
    let p = crate::precision();
    let mut y = zeros::<f32>(len);
    run(
        &p.round_slice(x),
        &p.round_slice(w),
        Epilogue { bias, act },
        &mut y,
    );
    Ok(CpuStorage::F32(y))
}

/// `act(conv(x, w) + bias)`: the direct kernel applies the activation to each tile as it
/// stores it (other f32 variants in one pass after); for f64 (the gradient checks) the reference conv, then the activation.
pub fn conv2d(
    x: &CpuStorage,
    w: &CpuStorage,
    bias: Option<&CpuStorage>,
    act: Option<UnaryOp>,
    geom: &Conv2dGeom,
) -> Result<CpuStorage> {
    if let (CpuStorage::F32(x), CpuStorage::F32(w)) = (x, w) {
        let len = geom.output_len_total();
        return fused_f32("conv2d", [x, w], bias, act, len, |x, w, ep, y| {
            ConvVariant::Auto.forward_fused(x, w, ep, y, geom)
        });
    }
    with_float!("conv2d", x.dtype(), T => {
        let (x, w) = (view::<T>("conv2d", x)?, view::<T>("conv2d", w)?);
        let bias = bias.map(|b| view::<T>("conv2d", b)).transpose()?;
        let mut y = zeros::<T>(geom.output_len_total());
        k::conv2d_forward(x, w, bias, &mut y, geom);
        if let Some(op) = act {
            y.iter_mut().for_each(|v| *v = op.apply(*v));
        }
        Ok(T::wrap(y))
    })
}

/// A transposed convolution's forward, `act(backward_data(x, w) + bias)`, with the bias and
/// activation fused into the fast f32 kernels' stores; for f64 the reference backward-data,
/// then the bias and the activation.
pub fn conv_transpose2d(
    x: &CpuStorage,
    w: &CpuStorage,
    bias: Option<&CpuStorage>,
    act: Option<UnaryOp>,
    geom: &Conv2dGeom,
) -> Result<CpuStorage> {
    let op = "conv_transpose2d";
    if let (CpuStorage::F32(x), CpuStorage::F32(w)) = (x, w) {
        return fused_f32(op, [x, w], bias, act, geom.input_len(), |x, w, ep, y| {
            ConvVariant::Auto.backward_data_fused(x, w, ep, y, geom)
        });
    }
    with_float!(op, x.dtype(), T => {
        let (x, w) = (view::<T>(op, x)?, view::<T>(op, w)?);
        let bias = bias.map(|b| view::<T>(op, b)).transpose()?;
        let mut y = zeros::<T>(geom.input_len());
        k::conv2d_backward_data(x, w, &mut y, geom);
        let plane = geom.h * geom.w;
        for (i, v) in y.iter_mut().enumerate() {
            if let Some(b) = bias {
                *v += b[i / plane % geom.c_in];
            }
            if let Some(op) = act {
                *v = op.apply(*v);
            }
        }
        Ok(T::wrap(y))
    })
}

pub fn conv2d_backward_data(
    dy: &CpuStorage,
    w: &CpuStorage,
    geom: &Conv2dGeom,
) -> Result<CpuStorage> {
    if let (CpuStorage::F32(dy), CpuStorage::F32(w)) = (dy, w) {
        let p = crate::precision();
        let mut dx = zeros::<f32>(geom.input_len());
        gantry_kernels::conv::ConvVariant::Auto.backward_data(
            &p.round_slice(dy),
            &p.round_slice(w),
            &mut dx,
            geom,
        );
        return Ok(CpuStorage::F32(dx));
    }
    let op = "conv2d_backward_data";
    with_float!(op, dy.dtype(), T => {
        let (dy, w) = (view::<T>(op, dy)?, view::<T>(op, w)?);
        let mut dx = zeros::<T>(geom.input_len());
        k::conv2d_backward_data(dy, w, &mut dx, geom);
        Ok(T::wrap(dx))
    })
}

pub fn conv2d_backward_weight(
    x: &CpuStorage,
    dy: &CpuStorage,
    geom: &Conv2dGeom,
) -> Result<CpuStorage> {
    if let (CpuStorage::F32(x), CpuStorage::F32(dy)) = (x, dy) {
        let p = crate::precision();
        let mut dw = zeros::<f32>(geom.weight_len());
        gantry_kernels::conv::ConvVariant::Auto.backward_weight(
            &p.round_slice(x),
            &p.round_slice(dy),
            &mut dw,
            geom,
        );
        return Ok(CpuStorage::F32(dw));
    }
    let op = "conv2d_backward_weight";
    with_float!(op, x.dtype(), T => {
        let (x, dy) = (view::<T>(op, x)?, view::<T>(op, dy)?);
        let mut dw = zeros::<T>(geom.weight_len());
        k::conv2d_backward_weight(x, dy, &mut dw, geom);
        Ok(T::wrap(dw))
    })
}

pub fn batch_norm_stats(x: &CpuStorage, geom: &BatchNormGeom) -> Result<(CpuStorage, CpuStorage)> {
    with_float!("batch_norm", x.dtype(), T => {
        let x = view::<T>("batch_norm", x)?;
        let (mut m, mut v) = (zeros::<T>(geom.c), zeros::<T>(geom.c));
        fast_or_reference!(T, batch_norm::cpu::batch_norm_stats, k::batch_norm_stats)(x, geom, &mut m, &mut v);
        Ok((T::wrap(m), T::wrap(v)))
    })
}

/// Batch norm, then `act` if given: fused in the fast f32 kernel; for f64 (the gradient
/// checks) the reference norm followed by the reference activation.
pub fn batch_norm_forward(
    x: &CpuStorage,
    mean: &CpuStorage,
    var: &CpuStorage,
    (w, b): (Option<&CpuStorage>, Option<&CpuStorage>),
    eps: f64,
    act: Option<UnaryOp>,
    geom: &BatchNormGeom,
) -> Result<CpuStorage> {
    let op = "batch_norm";
    with_float!(op, x.dtype(), T => {
        let (x, mean, var) = (view::<T>(op, x)?, view::<T>(op, mean)?, view::<T>(op, var)?);
        let w = w.map(|s| view::<T>(op, s)).transpose()?;
        let b = b.map(|s| view::<T>(op, s)).transpose()?;
        let mut y = zeros::<T>(x.len());
        if <T as crate::WithDType>::DTYPE == DType::F32 {
            gantry_kernels::batch_norm::cpu::batch_norm_forward(x, mean, var, w, b, eps, act, geom, &mut y);
        } else {
            k::batch_norm_forward(x, mean, var, w, b, eps, geom, &mut y);
            if let Some(op) = act {
                let z = y.clone();
                k::unary(op, &z, &mut y);
            }
        }
        Ok(T::wrap(y))
    })
}

#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward(
    x: &CpuStorage,
    dy: &CpuStorage,
    mean: &CpuStorage,
    var: &CpuStorage,
    (w, b): (Option<&CpuStorage>, Option<&CpuStorage>),
    eps: f64,
    training: bool,
    act: Option<UnaryOp>,
    geom: &BatchNormGeom,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    let op = "batch_norm_backward";
    with_float!(op, x.dtype(), T => {
        let (x, dy) = (view::<T>(op, x)?, view::<T>(op, dy)?);
        let (mean, var) = (view::<T>(op, mean)?, view::<T>(op, var)?);
        let w = w.map(|s| view::<T>(op, s)).transpose()?;
        let b = b.map(|s| view::<T>(op, s)).transpose()?;
        let (mut dx, mut dw, mut db) = (zeros::<T>(x.len()), zeros::<T>(geom.c), zeros::<T>(geom.c));
        if <T as crate::WithDType>::DTYPE == DType::F32 {
            gantry_kernels::batch_norm::cpu::batch_norm_backward(x, dy, mean, var, (w, b), eps, training, act, geom, &mut dx, &mut dw, &mut db);
        } else {
            // The reference chain: recompute the norm's output z and the activation's y, take
            // dz = dy·act'(z), then the norm's backward.
            let chained;
            let dz = match act {
                None => dy,
                Some(op) => {
                    let (mut z, mut y, mut dz) = (zeros::<T>(x.len()), zeros::<T>(x.len()), zeros::<T>(x.len()));
                    k::batch_norm_forward(x, mean, var, w, b, eps, geom, &mut z);
                    k::unary(op, &z, &mut y);
                    k::unary_backward(op, &z, &y, dy, &mut dz);
                    chained = dz;
                    &chained[..]
                }
            };
            k::batch_norm_backward(x, dz, mean, var, w, eps, training, geom, &mut dx, &mut dw, &mut db);
        }
        Ok((T::wrap(dx), T::wrap(dw), T::wrap(db)))
    })
}

pub fn prelu(x: &CpuStorage, w: &CpuStorage, [n, c, inner]: [usize; 3]) -> Result<CpuStorage> {
    with_float!("prelu", x.dtype(), T => {
        let (x, w) = (view::<T>("prelu", x)?, view::<T>("prelu", w)?);
        let mut y = zeros::<T>(x.len());
        fast_or_reference!(T, elementwise::cpu::prelu_forward, k::prelu_forward)(x, w, n, c, inner, &mut y);
        Ok(T::wrap(y))
    })
}

pub fn prelu_backward(
    x: &CpuStorage,
    w: &CpuStorage,
    dy: &CpuStorage,
    [n, c, inner]: [usize; 3],
) -> Result<(CpuStorage, CpuStorage)> {
    let op = "prelu_backward";
    with_float!(op, x.dtype(), T => {
        let (x, w, dy) = (view::<T>(op, x)?, view::<T>(op, w)?, view::<T>(op, dy)?);
        let (mut dx, mut dw) = (zeros::<T>(x.len()), zeros::<T>(w.len()));
        fast_or_reference!(T, elementwise::cpu::prelu_backward, k::prelu_backward)(x, w, dy, n, c, inner, &mut dx, &mut dw);
        Ok((T::wrap(dx), T::wrap(dw)))
    })
}

pub fn pixel_shuffle(
    x: &CpuStorage,
    [n, c, h, w]: [usize; 4],
    r: usize,
    inverse: bool,
) -> CpuStorage {
    fn go<T: CpuElem + Default + Clone>(
        x: &[T],
        [n, c, h, w]: [usize; 4],
        r: usize,
        inverse: bool,
    ) -> CpuStorage {
        let mut y = zeros::<T>(x.len());
        if inverse {
            k::pixel_unshuffle(x, n, c, h, w, r, &mut y);
        } else {
            k::pixel_shuffle(x, n, c, h, w, r, &mut y);
        }
        T::wrap(y)
    }
    let d = [n, c, h, w];
    match x {
        CpuStorage::F32(v) => go(v, d, r, inverse),
        CpuStorage::F64(v) => go(v, d, r, inverse),
        CpuStorage::F16(v) => go(v, d, r, inverse),
        CpuStorage::BF16(v) => go(v, d, r, inverse),
        CpuStorage::U32(v) => go(v, d, r, inverse),
        CpuStorage::I64(v) => go(v, d, r, inverse),
    }
}

pub fn upsample_nearest2d(
    x: &CpuStorage,
    [planes, h, w]: [usize; 3],
    scale: [usize; 2],
    backward: bool,
) -> Result<CpuStorage> {
    with_float!("upsample_nearest2d", x.dtype(), T => {
        let x = view::<T>("upsample_nearest2d", x)?;
        let small = planes * h * w;
        if backward {
            let mut dx = zeros::<T>(small);
            k::upsample_nearest2d_backward(x, planes, h, w, scale, &mut dx);
            Ok(T::wrap(dx))
        } else {
            let mut y = zeros::<T>(small * scale[0] * scale[1]);
            k::upsample_nearest2d(x, planes, h, w, scale, &mut y);
            Ok(T::wrap(y))
        }
    })
}

pub fn bce_with_logits(x: &CpuStorage, t: &CpuStorage) -> Result<CpuStorage> {
    with_float!("bce_with_logits", x.dtype(), T => {
        let (x, t) = (view::<T>("bce_with_logits", x)?, view::<T>("bce_with_logits", t)?);
        let mut out = zeros::<T>(x.len());
        k::bce_with_logits(x, t, &mut out);
        Ok(T::wrap(out))
    })
}

pub fn bce_with_logits_backward(
    x: &CpuStorage,
    t: &CpuStorage,
    dy: &CpuStorage,
) -> Result<(CpuStorage, CpuStorage)> {
    let op = "bce_with_logits_backward";
    with_float!(op, x.dtype(), T => {
        let (x, t, dy) = (view::<T>(op, x)?, view::<T>(op, t)?, view::<T>(op, dy)?);
        let (mut dx, mut dt) = (zeros::<T>(x.len()), zeros::<T>(x.len()));
        k::bce_with_logits_backward(x, t, dy, &mut dx, &mut dt);
        Ok((T::wrap(dx), T::wrap(dt)))
    })
}

pub fn bce(p: &CpuStorage, t: &CpuStorage) -> Result<CpuStorage> {
    with_float!("bce", p.dtype(), T => {
        let (p, t) = (view::<T>("bce", p)?, view::<T>("bce", t)?);
        let mut out = zeros::<T>(p.len());
        if !k::bce(p, t, &mut out) {
            return Err(Error::invalid(
                "bce",
                "every input must be a probability in [0, 1] (pass logits to bce_with_logits)",
            ));
        }
        Ok(T::wrap(out))
    })
}

pub fn bce_backward(
    p: &CpuStorage,
    t: &CpuStorage,
    dy: &CpuStorage,
) -> Result<(CpuStorage, CpuStorage)> {
    let op = "bce_backward";
    with_float!(op, p.dtype(), T => {
        let (p, t, dy) = (view::<T>(op, p)?, view::<T>(op, t)?, view::<T>(op, dy)?);
        let (mut dp, mut dt) = (zeros::<T>(p.len()), zeros::<T>(p.len()));
        k::bce_backward(p, t, dy, &mut dp, &mut dt);
        Ok((T::wrap(dp), T::wrap(dt)))
    })
}

/// Checks that an optimizer's buffers all have the parameter's dtype and length.
fn check_state(op: &'static str, p: &CpuStorage, others: &[&CpuStorage]) -> Result<()> {
    for o in others {
        if o.dtype() != p.dtype() {
            return Err(Error::dtype_mismatch(op, p.dtype(), o.dtype()));
        }
        if o.len() != p.len() {
            return Err(Error::shape(
                op,
                format!(
                    "buffer of {} elements for a parameter of {}",
                    o.len(),
                    p.len()
                ),
            ));
        }
    }
    Ok(())
}

pub fn adam_step_fused(
    params: Vec<&mut CpuStorage>,
    grads: &[&CpuStorage],
    m: &mut CpuStorage,
    v: &mut CpuStorage,
    ranges: &[std::ops::Range<usize>],
    steps: &[AdamStep],
) -> Result<()> {
    let op = "adam_step";
    let n = params.len();
    let lens = |s: &[&CpuStorage]| s.iter().map(|b| b.len()).collect::<Vec<_>>();
    let param_lens: Vec<usize> = params.iter().map(|p| p.len()).collect();
    crate::storage::check_adam_layout(op, &param_lens, &lens(grads), ranges, steps.len(), m.len())?;
    let Some(first) = params.first() else {
        return Ok(());
    };
    let dtype = first.dtype();
    check_state(op, m, &[v])?;
    for (p, g) in params.iter().zip(grads) {
        check_state(op, p, &[g])?;
        if p.dtype() != dtype {
            return Err(Error::dtype_mismatch(op, dtype, p.dtype()));
        }
    }
    if m.dtype() != dtype {
        return Err(Error::dtype_mismatch(op, dtype, m.dtype()));
    }
    with_float!(op, dtype, T => {
        let (mut m_rest, mut v_rest) = (slice_mut::<T>(op, m)?, slice_mut::<T>(op, v)?);
        let mut at = 0;
        let mut segments = Vec::with_capacity(n);
        for (((p, g), r), h) in params.into_iter().zip(grads).zip(ranges).zip(steps) {
            // Walk the flat moments forward, cutting out each parameter's range.
            let (_, m_tail) = std::mem::take(&mut m_rest).split_at_mut(r.start - at);
            let (_, v_tail) = std::mem::take(&mut v_rest).split_at_mut(r.start - at);
            let (m_here, m_next) = m_tail.split_at_mut(r.len());
            let (v_here, v_next) = v_tail.split_at_mut(r.len());
            (m_rest, v_rest, at) = (m_next, v_next, r.end);
            segments.push(gantry_kernels::optim::cpu::AdamSegment {
                param: slice_mut::<T>(op, p)?,
                grad: view::<T>(op, g)?,
                m: m_here,
                v: v_here,
                step: *h,
            });
        }
        // f64 runs the same kernel: the fused step is the reference's own formula per element.
        gantry_kernels::optim::cpu::adam_step_fused(segments);
        Ok(())
    })
}

pub fn sgd_step(
    p: &mut CpuStorage,
    g: &CpuStorage,
    buf: Option<&mut CpuStorage>,
    h: &SgdStep,
) -> Result<()> {
    let op = "sgd_step";
    match &buf {
        Some(b) => check_state(op, p, &[g, b])?,
        None => check_state(op, p, &[g])?,
    }
    with_float!(op, p.dtype(), T => {
        let g = view::<T>(op, g)?;
        let buf = match buf {
            Some(b) => Some(slice_mut::<T>(op, b)?),
            None => None,
        };
        k::sgd_step(slice_mut::<T>(op, p)?, g, buf, h);
        Ok(())
    })
}
