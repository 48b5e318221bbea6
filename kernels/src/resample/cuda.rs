//! CUDA pixel shuffle and nearest upsampling (`resample.cu`).

use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, n64, Gpu, Result, Source};
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "resample",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("resample.cu")
    ),
};

/// Pixel shuffle (or with `inverse`, unshuffle) with the reference's `[n, c, h, w]`: `c` the
/// channels of the large image, `h × w` the small image's size.
pub fn pixel_shuffle(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    [n, c, h, w]: [usize; 4],
    r: usize,
    inverse: bool,
) -> Result<CudaSlice<f32>> {
    let len = n * c * r * r * h * w;
    let mut y = gpu.alloc_f32(len)?;
    if len > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "pixel_shuffle",
            grid_1d(len),
            [
                x,
                &mut y,
                &n64(c),
                &n64(h),
                &n64(w),
                &n64(r),
                &i32::from(inverse),
                &n64(len)
            ]
        )?;
    }
    Ok(y)
}

/// Nearest upsampling of `[planes, h, w]` by `scale`, or with `backward` its gradient (from the
/// large image's gradient to the small one's).
pub fn upsample_nearest2d(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    [planes, h, w]: [usize; 3],
    [sh, sw]: [usize; 2],
    backward: bool,
) -> Result<CudaSlice<f32>> {
    let small = planes * h * w;
    let (kernel_len, out_len) = if backward {
        (small, small)
    } else {
        (small * sh * sw, small * sh * sw)
    };
    let mut y = gpu.alloc_f32(out_len)?;
    if kernel_len > 0 {
        let args = (n64(h), n64(w), n64(sh), n64(sw), n64(kernel_len));
        if backward {
            cuda_launch!(
                gpu,
                SOURCE,
                "upsample_nearest_backward",
                grid_1d(kernel_len),
                [x, &mut y, &args.0, &args.1, &args.2, &args.3, &args.4]
            )?;
        } else {
            cuda_launch!(
                gpu,
                SOURCE,
                "upsample_nearest",
                grid_1d(kernel_len),
                [x, &mut y, &args.0, &args.1, &args.2, &args.3, &args.4]
            )?;
        }
    }
    Ok(y)
}
