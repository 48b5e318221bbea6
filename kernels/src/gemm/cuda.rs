//! CUDA batched GEMM (`gemm.cu`): shared-memory tiles of 16×16.

use super::GemmGeom;
use crate::cuda_launch;
use crate::cuda_rt::{CudaError, Gpu, Result, Source};
use cudarc::driver::{CudaSlice, LaunchConfig};

pub const SOURCE: Source = Source {
    name: "gemm",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("gemm.cu")
    ),
};

/// `C[b] = A[b]·B[b]` for every batch entry, as `geom` describes (transposes included).
pub fn matmul(
    gpu: &Gpu,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    geom: &GemmGeom,
) -> Result<CudaSlice<f32>> {
    let mut c = gpu.alloc_f32(geom.batch * geom.m * geom.n)?;
    if geom.batch * geom.m * geom.n == 0 {
        return Ok(c);
    }
    if geom.k == 0 {
        return gpu.zeros_f32(geom.batch * geom.m * geom.n);
    }
    let dim = |v: usize| {
        u32::try_from(v).map_err(|_| CudaError(format!("matmul: dimension {v} too large")))
    };
    let (m, k, n) = (dim(geom.m)?, dim(geom.k)?, dim(geom.n)?);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(16), m.div_ceil(16), dim(geom.batch)?),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    };
    let (ta, tb) = (i32::from(geom.trans_a), i32::from(geom.trans_b));
    cuda_launch!(
        gpu,
        SOURCE,
        "gemm_tiled",
        cfg,
        [a, b, &mut c, &m, &k, &n, &ta, &tb]
    )?;
    Ok(c)
}
