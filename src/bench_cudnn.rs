//! The cuDNN baseline of `gantry bench conv --device cuda` (cargo feature `cudnn`): the same
//! layer, pass and precision through cuDNN in the same process, on the same stream.
//!
//! Like PyTorch's `cudnn.benchmark = True`, every algorithm cuDNN offers for the pass is timed
//! once the workspace it needs is allocated, and the fastest is kept. Tensors are NCHW (as
//! gantry's and PyTorch's are), so any layout change cuDNN makes internally is in its time.
//! Math: FP32 forbids tensor cores (`CUDNN_FMA_MATH`), TF32 allows them on f32 data, BF16 and
//! F16 store the operands in that type and accumulate in f32.

use cudarc::cudnn::{sys, ConvBackwardData, ConvBackwardFilter, ConvForward, Cudnn, CudnnDataType};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use gantry::kernels::conv::cuda::{CudaConv, TcType};
use gantry::kernels::conv::Conv2dGeom;
use gantry::kernels::cuda_rt::{CudaError, Gpu, Result};
use std::sync::Arc;

fn cudnn_err(what: &str) -> impl Fn(cudarc::cudnn::CudnnError) -> CudaError + '_ {
    move |e| CudaError(format!("cuDNN {what}: {e:?}"))
}

/// Whether the cuDNN library can be loaded.
pub fn available() -> bool {
    // SAFETY: only tries `dlopen` on the candidate names.
    unsafe { cudarc::cudnn::sys::is_culib_present() }
}

/// A cuDNN handle on `gpu`'s stream.
pub fn handle(gpu: &Gpu) -> Result<Arc<Cudnn>> {
    if !available() {
        return Err(CudaError(
            "cuDNN (libcudnn.so.9) not found: install it (e.g. the nvidia-cudnn-cu12 wheel) and \
             put its lib folder on LD_LIBRARY_PATH"
                .into(),
        ));
    }
    Cudnn::new(gpu.stream().clone()).map_err(cudnn_err("handle"))
}

/// Median milliseconds of `pass` (0 forward, 1 backward-data, 2 backward-weight) of `g` at the
/// precision of `rung`, with cuDNN's fastest algorithm for it.
pub fn time_pass(
    cudnn: &Arc<Cudnn>,
    gpu: &Gpu,
    g: &Conv2dGeom,
    rung: CudaConv,
    pass: usize,
) -> Result<f64> {
    use half::{bf16, f16};
    match rung.tensor_core() {
        Some(TcType::Bf16) => typed::<bf16>(
            cudnn,
            gpu,
            g,
            pass,
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        ),
        Some(TcType::F16) => typed::<f16>(
            cudnn,
            gpu,
            g,
            pass,
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        ),
        Some(TcType::Tf32) => typed::<f32>(
            cudnn,
            gpu,
            g,
            pass,
            sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        ),
        None => typed::<f32>(cudnn, gpu, g, pass, sys::cudnnMathType_t::CUDNN_FMA_MATH),
    }
}

/// The operand types, made from f32.
trait Operand: CudnnDataType + DeviceRepr + ValidAsZeroBits + Copy {
    fn of(v: f32) -> Self;
}
impl Operand for f32 {
    fn of(v: f32) -> Self {
        v
    }
}
impl Operand for half::bf16 {
    fn of(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}
impl Operand for half::f16 {
    fn of(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// Operand values: small and varied, the same for every type.
fn values<T: Operand>(n: usize) -> Vec<T> {
    (0..n)
        .map(|i| T::of(((i * 7919) % 17) as f32 / 17.0 - 0.5))
        .collect()
}

/// A zeroed device buffer of `n` values (at least one).
fn buffer<T: DeviceRepr + ValidAsZeroBits>(gpu: &Gpu, n: usize) -> Result<CudaSlice<T>> {
    gpu.zeros::<T>(n)
}

fn typed<T>(
    cudnn: &Arc<Cudnn>,
    gpu: &Gpu,
    g: &Conv2dGeom,
    pass: usize,
    math: sys::cudnnMathType_t,
) -> Result<f64>
where
    T: Operand,
{
    let int = |v: usize| v as std::ffi::c_int;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let x_dims = [int(g.n), int(g.c_in), int(g.h), int(g.w)];
    let y_dims = [int(g.n), int(g.c_out), int(g.h_out), int(g.w_out)];
    let w_dims = [int(g.c_out), int(g.c_in), int(g.kh), int(g.kw)];
    let x_desc = cudnn
        .create_4d_tensor::<T>(nchw, x_dims)
        .map_err(cudnn_err("x descriptor"))?;
    let y_desc = cudnn
        .create_4d_tensor::<T>(nchw, y_dims)
        .map_err(cudnn_err("y descriptor"))?;
    let w_desc = cudnn
        .create_4d_filter::<T>(nchw, w_dims)
        .map_err(cudnn_err("filter descriptor"))?;
    // f32 accumulation for every type.
    let mut conv = cudnn
        .create_conv2d::<f32>(
            [int(g.pad[0]), int(g.pad[1])],
            [int(g.stride[0]), int(g.stride[1])],
            [int(g.dilation[0]), int(g.dilation[1])],
            sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )
        .map_err(cudnn_err("conv descriptor"))?;
    conv.set_math_type(math).map_err(cudnn_err("math type"))?;

    let mut x = buffer::<T>(gpu, g.input_len())?;
    let mut w = buffer::<T>(gpu, g.weight_len())?;
    let mut y = buffer::<T>(gpu, g.output_len_total())?;
    gpu.write(&values::<T>(g.input_len()), &mut x)?;
    gpu.write(&values::<T>(g.weight_len()), &mut w)?;
    gpu.write(&values::<T>(g.output_len_total()), &mut y)?;
    let (one, zero) = (T::of(1.0), T::of(0.0));

    // Each candidate algorithm: its workspace, one warm-up call, then the median of 5.
    let mut best = f64::INFINITY;
    let mut time = |launch: &mut dyn FnMut(&mut CudaSlice<u8>) -> bool, ws: usize| -> Result<()> {
        let mut workspace = buffer::<u8>(gpu, ws)?;
        if !launch(&mut workspace) {
            return Ok(()); // cuDNN does not run this algorithm here
        }
        gpu.synchronize()?;
        let mut ms = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            launch(&mut workspace);
            gpu.synchronize()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        best = best.min(ms[2]);
        Ok(())
    };
    match pass {
        0 => {
            use sys::cudnnConvolutionFwdAlgo_t as A;
            let op = ConvForward {
                conv: &conv,
                x: &x_desc,
                w: &w_desc,
                y: &y_desc,
            };
            for algo in [
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                A::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                A::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                A::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
                A::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
                A::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
                A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
                A::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
            ] {
                let Ok(ws) = op.get_workspace_size(algo) else {
                    continue;
                };
                time(
                    &mut |wsb| {
                        // SAFETY: the buffers hold the lengths and type the descriptors name.
                        unsafe { op.launch(algo, Some(wsb), (one, zero), &x, &w, &mut y) }.is_ok()
                    },
                    ws,
                )?;
            }
        }
        1 => {
            use sys::cudnnConvolutionBwdDataAlgo_t as A;
            let op = ConvBackwardData {
                conv: &conv,
                dx: &x_desc,
                w: &w_desc,
                dy: &y_desc,
            };
            for algo in [
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
                A::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
            ] {
                let Ok(ws) = op.get_workspace_size(algo) else {
                    continue;
                };
                time(
                    &mut |wsb| {
                        // SAFETY: as above.
                        unsafe { op.launch(algo, Some(wsb), (one, zero), &mut x, &w, &y) }.is_ok()
                    },
                    ws,
                )?;
            }
        }
        _ => {
            use sys::cudnnConvolutionBwdFilterAlgo_t as A;
            let op = ConvBackwardFilter {
                conv: &conv,
                x: &x_desc,
                dw: &w_desc,
                dy: &y_desc,
            };
            for algo in [
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
                A::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
            ] {
                let Ok(ws) = op.get_workspace_size(algo) else {
                    continue;
                };
                time(
                    &mut |wsb| {
                        // SAFETY: as above.
                        unsafe { op.launch(algo, Some(wsb), (one, zero), &x, &mut w, &y) }.is_ok()
                    },
                    ws,
                )?;
            }
        }
    }
    if best.is_finite() {
        Ok(best)
    } else {
        Err(CudaError(format!(
            "cuDNN ran no algorithm for pass {pass} of {g:?}"
        )))
    }
}
