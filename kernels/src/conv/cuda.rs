//! CUDA convolution (`conv.cu`), the direct rung: one thread per output value (forward,
//! backward-data) and one warp per weight (backward-weight).

use super::Conv2dGeom;
use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, ptr_or_null, CudaError, Gpu, Result, Source};
use cudarc::driver::{CudaSlice, DeviceRepr};

pub const SOURCE: Source = Source {
    name: "conv",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("conv.cu")
    ),
};

/// [`Conv2dGeom`] as `conv.cu`'s `struct ConvGeom`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub n: u32,
    pub c_in: u32,
    pub h: u32,
    pub w: u32,
    pub c_out: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub dh: u32,
    pub dw: u32,
    pub h_out: u32,
    pub w_out: u32,
}

// SAFETY: a `repr(C)` struct of `u32`, laid out as `struct ConvGeom` in `conv.cu`.
unsafe impl DeviceRepr for ConvGeom {}

impl ConvGeom {
    pub fn new(g: &Conv2dGeom) -> Result<ConvGeom> {
        let v = [
            g.n,
            g.c_in,
            g.h,
            g.w,
            g.c_out,
            g.kh,
            g.kw,
            g.stride[0],
            g.stride[1],
            g.pad[0],
            g.pad[1],
            g.dilation[0],
            g.dilation[1],
            g.h_out,
            g.w_out,
        ];
        let mut u = [0u32; 15];
        for (d, s) in u.iter_mut().zip(v) {
            // Index arithmetic in the kernels is in `int` for the input coordinates.
            *d = u32::try_from(s)
                .ok()
                .filter(|&x| x < i32::MAX as u32)
                .ok_or_else(|| {
                    CudaError(format!(
                        "conv2d: geometry value {s} too large for the CUDA kernels"
                    ))
                })?;
        }
        let [n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw, h_out, w_out] = u;
        Ok(ConvGeom {
            n,
            c_in,
            h,
            w,
            c_out,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            h_out,
            w_out,
        })
    }
}

/// `y = conv(x, w) + bias`.
pub fn conv2d_forward(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    g: &Conv2dGeom,
) -> Result<CudaSlice<f32>> {
    let cg = ConvGeom::new(g)?;
    let len = g.output_len_total();
    let mut y = gpu.alloc_f32(len)?;
    if len > 0 {
        let b = ptr_or_null(gpu, bias);
        cuda_launch!(
            gpu,
            SOURCE,
            "conv2d_forward",
            grid_1d(len),
            [&cg, x, w, &b, &i32::from(bias.is_some()), &mut y]
        )?;
    }
    Ok(y)
}

/// The gradient with respect to the input.
pub fn conv2d_backward_data(
    gpu: &Gpu,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    g: &Conv2dGeom,
) -> Result<CudaSlice<f32>> {
    let cg = ConvGeom::new(g)?;
    let len = g.input_len();
    let mut dx = gpu.alloc_f32(len)?;
    if len > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "conv2d_backward_data",
            grid_1d(len),
            [&cg, dy, w, &mut dx]
        )?;
    }
    Ok(dx)
}

/// The gradient with respect to the weight.
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    g: &Conv2dGeom,
) -> Result<CudaSlice<f32>> {
    let cg = ConvGeom::new(g)?;
    let len = g.weight_len();
    let mut dw = gpu.alloc_f32(len)?;
    if len > 0 {
        // One warp per weight, 8 warps per block of 256 threads.
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (len.div_ceil(8).min(i32::MAX as usize) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        cuda_launch!(
            gpu,
            SOURCE,
            "conv2d_backward_weight",
            cfg,
            [&cg, x, dy, &mut dw]
        )?;
    }
    Ok(dw)
}
