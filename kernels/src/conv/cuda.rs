//! CUDA convolution (`conv.cu`), the direct rung: one thread per output value (forward,
//! backward-data) and one warp per weight (backward-weight).

use super::Conv2dGeom;
use crate::cuda_launch;
use crate::cuda_rt::{grid_1d, ptr_or_null, CudaError, Gpu, Result, Source};
use crate::elementwise::{cuda::unary_code, UnaryOp};
use cudarc::driver::{CudaSlice, DeviceRepr};
use std::marker::PhantomData;

pub const SOURCE: Source = Source {
    name: "conv",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("geom.cuh"),
        include_str!("conv.cu")
    ),
};

/// The tiled FP32 implicit-GEMM rung ([`tiled`]).
pub const TILED_SOURCE: Source = Source {
    name: "conv_tiled",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("geom.cuh"),
        include_str!("conv_tiled.cu")
    ),
};

/// The tensor-core rungs ([`tc`]); sm_80 and newer.
pub const TC_SOURCE: Source = Source {
    name: "conv_tc",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("geom.cuh"),
        include_str!("conv_tc.cu")
    ),
};

/// The Hopper rung ([`CudaConv::Hopper`]): `conv_wgmma.cu` after the tensor-core source,
/// whose packs, passes and copies it reuses. Its kernels run on compute capability 9.0 only.
pub const WG_SOURCE: Source = Source {
    name: "conv_wgmma",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("geom.cuh"),
        include_str!("conv_tc.cu"),
        include_str!("conv_wgmma.cu")
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

/// [`super::Epilogue`] as the kernels take it (`geom.cuh`'s `struct Epilogue`): a device
/// pointer to the bias or null, and the activation's code (−1 for none) and parameter.
/// It borrows the bias buffer for `'a`, so the buffer outlives every launch that takes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EpilogueArgs<'a> {
    bias: u64,
    act: i32,
    p: f32,
    _bias: PhantomData<&'a CudaSlice<f32>>,
}

// SAFETY: plain old data laid out as `struct Epilogue` (static_assert'ed to 16 bytes there;
// the marker takes no space).
unsafe impl DeviceRepr for EpilogueArgs<'_> {}

impl EpilogueArgs<'static> {
    /// Stores the value as it is.
    pub const NONE: EpilogueArgs<'static> = EpilogueArgs {
        bias: 0,
        act: -1,
        p: 0.0,
        _bias: PhantomData,
    };
}

impl<'a> EpilogueArgs<'a> {
    /// `act(v + bias[channel])` over `channels` output channels; `op` names the pass in the
    /// error a short bias gets.
    pub fn new(
        gpu: &Gpu,
        op: &str,
        bias: Option<&'a CudaSlice<f32>>,
        act: Option<UnaryOp>,
        channels: usize,
    ) -> Result<Self> {
        if let Some(b) = bias.filter(|b| b.len() < channels) {
            return Err(CudaError(format!(
                "{op}: the bias has {} values for {channels} channels",
                b.len()
            )));
        }
        let (act, p) = act.map_or((-1, 0.0), unary_code);
        Ok(EpilogueArgs {
            bias: ptr_or_null(gpu, bias),
            act,
            p,
            _bias: PhantomData,
        })
    }

    fn is_none(&self) -> bool {
        self.bias == 0 && self.act < 0
    }

    /// Applies it in place to an NCHW buffer of `channels` planes of `plane` values: for the
    /// passes that store nothing (an empty reduction) yet must still produce
    /// `act(bias)`.
    fn apply(
        &self,
        gpu: &Gpu,
        y: &mut CudaSlice<f32>,
        channels: usize,
        plane: usize,
    ) -> Result<()> {
        let len = y.len();
        if self.is_none() || len == 0 {
            return Ok(());
        }
        cuda_launch!(
            gpu,
            SOURCE,
            "conv_epilogue",
            grid_1d(len),
            [self, &(channels as u64), &(plane as u64), y, &(len as u64)]
        )
    }
}

/// `y = act(conv(x, w) + bias)`, the epilogue `ep` applied as each value is stored.
pub fn conv2d_forward(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    ep: EpilogueArgs<'_>,
    g: &Conv2dGeom,
) -> Result<CudaSlice<f32>> {
    let cg = ConvGeom::new(g)?;
    let len = g.output_len_total();
    let mut y = gpu.alloc_f32(len)?;
    if len > 0 {
        cuda_launch!(
            gpu,
            SOURCE,
            "conv2d_forward",
            grid_1d(len),
            [&cg, x, w, &ep, &mut y]
        )?;
    }
    Ok(y)
}

/// The gradient with respect to the input, the epilogue `ep` (over its `c_in` channels)
/// applied as each value is stored: a transposed convolution's forward with its bias and
/// activation.
pub fn conv2d_backward_data(
    gpu: &Gpu,
    dy: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    ep: EpilogueArgs<'_>,
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
            [&cg, dy, w, &ep, &mut dx]
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

/// The rungs of the CUDA convolution ladder, each selectable so they can be checked and
/// benchmarked against one another (and against cuDNN).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CudaConv {
    /// `conv.cu`: one thread per output value (one warp per weight in backward-weight).
    Direct,
    /// `conv_tiled.cu`: shared-memory tiled implicit GEMM in FP32.
    Tiled,
    /// `conv_tc.cu`: tensor-core implicit GEMM on packed NHWC operands (sm_80 and newer).
    TensorCore(TcType),
    /// `conv_wgmma.cu`: the same operands fed to Hopper's warpgroup MMA (`wgmma.mma_async`
    /// from shared-memory descriptors) for forward and backward-data; backward-weight runs
    /// the [`CudaConv::TensorCore`] kernel. Compute capability 9.0 only.
    Hopper(TcType),
}

/// What the tensor cores multiply: the inputs are rounded to this type when they are packed;
/// products are accumulated in f32 either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcType {
    /// bfloat16: f32's range, 8 bits of mantissa.
    Bf16,
    /// IEEE half: 11 bits of mantissa, but a range of ±65504 (training needs loss scaling).
    F16,
    /// TensorFloat-32: f32's range, 11 bits of mantissa; inputs stay f32 in memory.
    Tf32,
}

impl TcType {
    /// Bytes per packed value.
    fn size(self) -> usize {
        match self {
            TcType::Tf32 => 4,
            TcType::Bf16 | TcType::F16 => 2,
        }
    }
    /// `v` rounded to this type as the packs round it (to nearest, ties to even; tf32 ties
    /// away from zero, as `cvt.rna.tf32.f32` does), back in an f32.
    pub fn round(self, v: f32) -> f32 {
        match self {
            TcType::Bf16 => half::bf16::from_f32(v).to_f32(),
            TcType::F16 => half::f16::from_f32(v).to_f32(),
            TcType::Tf32 if !v.is_finite() => v,
            // Keep 10 of the 23 mantissa bits: add half of the lowest kept bit, then cut.
            TcType::Tf32 => f32::from_bits(v.to_bits().wrapping_add(0x1000) & 0xffff_e000),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TcType::Bf16 => "bf16",
            TcType::F16 => "f16",
            TcType::Tf32 => "tf32",
        }
    }
}

impl CudaConv {
    pub const ALL: [CudaConv; 8] = [
        CudaConv::Direct,
        CudaConv::Tiled,
        CudaConv::TensorCore(TcType::Tf32),
        CudaConv::TensorCore(TcType::Bf16),
        CudaConv::TensorCore(TcType::F16),
        CudaConv::Hopper(TcType::Tf32),
        CudaConv::Hopper(TcType::Bf16),
        CudaConv::Hopper(TcType::F16),
    ];

    /// The rung's name on the command line and in benchmark rows.
    pub fn name(self) -> &'static str {
        match self {
            CudaConv::Direct => "direct",
            CudaConv::Tiled => "tiled",
            CudaConv::TensorCore(TcType::Bf16) => "tc-bf16",
            CudaConv::TensorCore(TcType::F16) => "tc-f16",
            CudaConv::TensorCore(TcType::Tf32) => "tc-tf32",
            CudaConv::Hopper(TcType::Bf16) => "wg-bf16",
            CudaConv::Hopper(TcType::F16) => "wg-f16",
            CudaConv::Hopper(TcType::Tf32) => "wg-tf32",
        }
    }

    /// The type the rung's tensor cores multiply in, or `None` for the f32 rungs.
    pub fn tensor_core(self) -> Option<TcType> {
        match self {
            CudaConv::TensorCore(t) | CudaConv::Hopper(t) => Some(t),
            CudaConv::Direct | CudaConv::Tiled => None,
        }
    }

    /// The rung named `name` (see [`CudaConv::name`]).
    pub fn from_name(name: &str) -> Option<CudaConv> {
        CudaConv::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether `gpu` can run this rung (the tensor-core rungs need compute capability 8.0,
    /// the Hopper rungs exactly 9.0: their CUBIN is built for sm_90a).
    pub fn supported(self, gpu: &Gpu) -> bool {
        match self {
            CudaConv::Direct | CudaConv::Tiled => true,
            CudaConv::TensorCore(_) => gpu.arch() >= (8, 0),
            CudaConv::Hopper(_) => gpu.arch() == (9, 0),
        }
    }

    fn check(self, gpu: &Gpu, op: &str) -> Result<()> {
        if self.supported(gpu) {
            return Ok(());
        }
        let needs = match self {
            CudaConv::Hopper(_) => "compute capability 9.0 (Hopper)",
            _ => "compute capability 8.0 or newer",
        };
        Err(CudaError(format!(
            "{op}: the {} rung needs {needs}; {gpu:?} has {}.{}",
            self.name(),
            gpu.arch().0,
            gpu.arch().1
        )))
    }

    /// `y = conv(x, w) + bias` on this rung.
    pub fn forward(
        self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        self.forward_fused(gpu, x, w, bias, None, g)
    }

    /// `y = act(conv(x, w) + bias)` on this rung, the activation applied in the kernel's
    /// epilogue as each value is stored (bit for bit what a separate `unary` would give).
    pub fn forward_fused(
        self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        act: Option<UnaryOp>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        self.check(gpu, "conv2d")?;
        let ep = EpilogueArgs::new(gpu, "conv2d", bias, act, g.c_out)?;
        match self {
            CudaConv::Direct => conv2d_forward(gpu, x, w, ep, g),
            CudaConv::Tiled => tiled::forward(gpu, x, w, ep, g),
            CudaConv::TensorCore(t) => tc::forward(gpu, t, tc::Mma::Sync, x, w, ep, g),
            CudaConv::Hopper(t) => tc::forward(gpu, t, tc::Mma::Wgmma, x, w, ep, g),
        }
    }

    /// The gradient with respect to the input on this rung.
    pub fn backward_data(
        self,
        gpu: &Gpu,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        self.backward_data_fused(gpu, dy, w, None, None, g)
    }

    /// `act(backward_data(dy, w) + bias)` over the input's `c_in` channels on this rung: a
    /// transposed convolution's forward with its bias and activation, applied in the
    /// kernel's epilogue.
    pub fn backward_data_fused(
        self,
        gpu: &Gpu,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        act: Option<UnaryOp>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        self.check(gpu, "conv2d_backward_data")?;
        let ep = EpilogueArgs::new(gpu, "conv2d_backward_data", bias, act, g.c_in)?;
        match self {
            CudaConv::Direct => conv2d_backward_data(gpu, dy, w, ep, g),
            CudaConv::Tiled => tiled::backward_data(gpu, dy, w, ep, g),
            CudaConv::TensorCore(t) => tc::backward_data(gpu, t, tc::Mma::Sync, dy, w, ep, g),
            CudaConv::Hopper(t) => tc::backward_data(gpu, t, tc::Mma::Wgmma, dy, w, ep, g),
        }
    }

    /// The gradient with respect to the weight on this rung.
    pub fn backward_weight(
        self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        self.check(gpu, "conv2d_backward_weight")?;
        match self {
            CudaConv::Direct => conv2d_backward_weight(gpu, x, dy, g),
            CudaConv::Tiled => tiled::backward_weight(gpu, x, dy, g),
            CudaConv::TensorCore(t) | CudaConv::Hopper(t) => tc::backward_weight(gpu, t, x, dy, g),
        }
    }
}

/// The number of blocks that keeps every SM of a large GPU busy for about two waves (132 SMs
/// on an H100): the split-K of backward-weight aims for it.
const TARGET_BLOCKS: usize = 264;

/// How many pieces to cut a K of `k_tiles` tiles into so that `mn_blocks` × pieces reaches
/// [`TARGET_BLOCKS`]: returns (tiles per piece, pieces).
fn split_k(k_tiles: usize, mn_blocks: usize) -> (usize, usize) {
    let want = (TARGET_BLOCKS / mn_blocks.max(1)).clamp(1, k_tiles.max(1));
    let per = k_tiles.max(1).div_ceil(want);
    (per, k_tiles.max(1).div_ceil(per))
}

/// A grid of `blocks` = (x, y, z) blocks, checked against CUDA's limits (x up to 2³¹ − 1, y and
/// z up to 65535): an error naming `op` instead of a failed launch.
fn grid_3d(op: &str, blocks: [usize; 3]) -> Result<(u32, u32, u32)> {
    let mut out = [0u32; 3];
    let limits = [i32::MAX as usize, 65_535, 65_535];
    for ((o, v), limit) in out.iter_mut().zip(blocks).zip(limits) {
        if v == 0 || v > limit {
            return Err(CudaError(format!(
                "{op}: {v} blocks along one grid axis (limit {limit})"
            )));
        }
        *o = v as u32;
    }
    Ok((out[0], out[1], out[2]))
}

/// The tiled FP32 rung (`conv_tiled.cu`).
pub mod tiled {
    use super::*;

    const TILE: usize = 64;
    const TK: usize = 16;

    fn cfg(op: &str, n: usize, m: usize, z: usize) -> Result<cudarc::driver::LaunchConfig> {
        Ok(cudarc::driver::LaunchConfig {
            grid_dim: grid_3d(op, [n.div_ceil(TILE), m.div_ceil(TILE), z])?,
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        })
    }

    pub fn forward(
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        ep: EpilogueArgs<'_>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        let mut y = gpu.alloc_f32(g.output_len_total())?;
        if g.output_len_total() > 0 {
            let c = cfg("conv2d", g.n * g.h_out * g.w_out, g.c_out, 1)?;
            cuda_launch!(
                gpu,
                TILED_SOURCE,
                "conv_tiled_forward",
                c,
                [&cg, x, w, &ep, &mut y]
            )?;
        }
        Ok(y)
    }

    pub fn backward_data(
        gpu: &Gpu,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        ep: EpilogueArgs<'_>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        let mut dx = gpu.alloc_f32(g.input_len())?;
        if g.input_len() > 0 {
            let c = cfg("conv2d_backward_data", g.n * g.h * g.w, g.c_in, 1)?;
            cuda_launch!(
                gpu,
                TILED_SOURCE,
                "conv_tiled_backward_data",
                c,
                [&cg, dy, w, &ep, &mut dx]
            )?;
        }
        Ok(dx)
    }

    pub fn backward_weight(
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        let len = g.weight_len();
        if len == 0 {
            return gpu.alloc_f32(0);
        }
        let k = g.n * g.h_out * g.w_out;
        let (cols, rows) = (g.c_in * g.kh * g.kw, g.c_out);
        let (per, splits) = split_k(k.div_ceil(TK), cols.div_ceil(TILE) * rows.div_ceil(TILE));
        let mut partial = gpu.alloc_f32(splits * len)?;
        let c = cfg("conv2d_backward_weight", cols, rows, splits)?;
        let k_per = (per * TK) as u64;
        cuda_launch!(
            gpu,
            TILED_SOURCE,
            "conv_tiled_backward_weight",
            c,
            [&cg, x, dy, &k_per, &mut partial]
        )?;
        let mut dw = gpu.alloc_f32(len)?;
        cuda_launch!(
            gpu,
            TILED_SOURCE,
            "conv_tiled_sum",
            grid_1d(len),
            [&partial, &(splits as u64), &(len as u64), &mut dw]
        )?;
        gpu.recycle(partial);
        Ok(dw)
    }
}

/// [`Conv2dGeom`] plus the packed GEMM, as `conv_tc.cu`'s `struct TcGeom`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcGeom {
    pub g: ConvGeom,
    /// `c_in` and `c_out` rounded up to a multiple of 8 (the packed channel counts).
    pub cp: u32,
    pub cop: u32,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub tiles_per_split: u64,
}

// SAFETY: a `repr(C)` struct of integers laid out as `struct TcGeom` in `conv_tc.cu` (whose
// static_assert and kernels/tests/nvrtc.rs check the size).
unsafe impl DeviceRepr for TcGeom {}

/// The tensor-core rungs (`conv_tc.cu`).
pub mod tc {
    use super::*;
    use cudarc::driver::sys::CUfunction_attribute_enum;
    use cudarc::driver::{LaunchConfig, PushKernelArg};

    /// Dynamic shared memory of the main loop: 3 stages × 2 operands × 128 rows × 80 bytes.
    pub const SMEM_BYTES: u32 = 61_440;
    const TILE: usize = 128;
    /// K values per 64-byte tile row.
    fn tile_k(t: TcType) -> usize {
        64 / t.size()
    }

    fn round8(c: usize) -> usize {
        c.div_ceil(8) * 8
    }

    /// The main-loop kernels, per type (bf16, f16, tf32) and pass (forward, backward-data,
    /// backward-weight).
    pub const KERNELS: [[&str; 3]; 3] = [
        [
            "tc_forward_bf16",
            "tc_backward_data_bf16",
            "tc_backward_weight_bf16",
        ],
        [
            "tc_forward_f16",
            "tc_backward_data_f16",
            "tc_backward_weight_f16",
        ],
        [
            "tc_forward_tf32",
            "tc_backward_data_tf32",
            "tc_backward_weight_tf32",
        ],
    ];

    /// The Hopper rung's main-loop kernels (`conv_wgmma.cu`), per type: forward and
    /// backward-data.
    pub const WG_KERNELS: [[&str; 2]; 3] = [
        ["wg_forward_bf16", "wg_backward_data_bf16"],
        ["wg_forward_f16", "wg_backward_data_f16"],
        ["wg_forward_tf32", "wg_backward_data_tf32"],
    ];
    /// `conv_wgmma.cu`'s dynamic shared memory: 4 stages of two 8 KiB tiles.
    pub const WG_SMEM_BYTES: u32 = 65_536;

    /// Which tensor-core instruction a pass's main loop runs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Mma {
        /// `mma.sync` fed by `ldmatrix` (`conv_tc.cu`; sm_80+).
        Sync,
        /// `wgmma.mma_async` from shared-memory descriptors (`conv_wgmma.cu`; 9.0 only).
        Wgmma,
    }

    /// A packed copy of `src`: `dst[(b·P + p)·cp + c] = src[b·sb + p·sp + c·sc]` for `c < C`,
    /// zero for `C ≤ c < cp`, in type `t`. 16-bit packs live in pooled `f32` buffers of half
    /// the length (the kernels only see a pointer), so they are recycled like any other.
    #[allow(clippy::too_many_arguments)]
    pub fn pack(
        gpu: &Gpu,
        t: TcType,
        src: &CudaSlice<f32>,
        [b, p, c, cp]: [usize; 4],
        [sb, sp, sc]: [usize; 3],
    ) -> Result<CudaSlice<f32>> {
        let len = b * p * cp;
        let mut dst = gpu.alloc_f32((len * t.size()).div_ceil(4))?;
        if len > 0 {
            let args = [b, p, c, cp, sb, sp, sc].map(|v| v as u64);
            let f = gpu.function(
                &TC_SOURCE,
                match t {
                    TcType::Bf16 => "tc_pack_bf16",
                    TcType::F16 => "tc_pack_f16",
                    TcType::Tf32 => "tc_pack_tf32",
                },
            )?;
            let mut l = gpu.stream().launch_builder(&f);
            l.arg(src).arg(&mut dst);
            for a in &args {
                l.arg(a);
            }
            // SAFETY: tc_pack_*(const float*, T*, u64 B, P, C, cp, sb, sp, sc); `dst` holds
            // b·p·cp values of T and the strides address inside `src` (the callers derive
            // them from the tensor's own shape).
            launched("tc_pack", unsafe { l.launch(grid_1d(len)) })?;
        }
        Ok(dst)
    }

    /// Kernel `pass` (0 forward, 1 backward-data, 2 backward-weight, the last `Sync` only)
    /// of type `t` on instruction `mma`, allowed its dynamic shared memory, and the launch
    /// configuration for `grid` (both kernels compute 128 × 128 tiles with 256 threads).
    fn main_kernel(
        gpu: &Gpu,
        t: TcType,
        mma: Mma,
        pass: usize,
        grid: (u32, u32, u32),
    ) -> Result<(cudarc::driver::CudaFunction, &'static str, LaunchConfig)> {
        let (src, name, smem) = match (mma, WG_KERNELS[t as usize].get(pass)) {
            (Mma::Sync, _) => (&TC_SOURCE, KERNELS[t as usize][pass], SMEM_BYTES),
            (Mma::Wgmma, Some(name)) => (&WG_SOURCE, *name, WG_SMEM_BYTES),
            (Mma::Wgmma, None) => {
                return Err(CudaError(format!(
                    "the wgmma kernels run forward and backward-data, not pass {pass}"
                )))
            }
        };
        let f = gpu.function(src, name)?;
        // Above 48 KiB of dynamic shared memory a kernel must opt in.
        crate::cuda_rt::driver(
            "setting the shared-memory size of a tensor-core kernel",
            f.set_attribute(
                CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            ),
        )?;
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (256, 1, 1),
            shared_mem_bytes: smem,
        };
        Ok((f, name, cfg))
    }

    fn launched<T>(
        name: &str,
        r: std::result::Result<T, cudarc::driver::DriverError>,
    ) -> Result<()> {
        crate::cuda_rt::driver(&format!("launching {name}"), r).map(|_| ())
    }

    fn grid(op: &str, m: usize, n: usize, z: usize) -> Result<(u32, u32, u32)> {
        grid_3d(op, [m.div_ceil(TILE), n.div_ceil(TILE), z])
    }

    /// `x` NCHW → NHWC with `cp` channels.
    fn pack_input(
        gpu: &Gpu,
        t: TcType,
        x: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let hw = g.h * g.w;
        pack(
            gpu,
            t,
            x,
            [g.n, hw, g.c_in, round8(g.c_in)],
            [g.c_in * hw, 1, hw],
        )
    }

    /// `dy` NCHW → NHWC with `cop` channels.
    fn pack_output(
        gpu: &Gpu,
        t: TcType,
        dy: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let hw = g.h_out * g.w_out;
        pack(
            gpu,
            t,
            dy,
            [g.n, hw, g.c_out, round8(g.c_out)],
            [g.c_out * hw, 1, hw],
        )
    }

    pub fn forward(
        gpu: &Gpu,
        t: TcType,
        mma: Mma,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        ep: EpilogueArgs<'_>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        let mut y = gpu.alloc_f32(g.output_len_total())?;
        if g.output_len_total() == 0 {
            return Ok(y);
        }
        let (taps, cp) = (g.kh * g.kw, round8(g.c_in));
        let xp = pack_input(gpu, t, x, g)?;
        let wp = pack(
            gpu,
            t,
            w,
            [g.c_out, taps, g.c_in, cp],
            [g.c_in * taps, 1, taps],
        )?;
        let m = g.n * g.h_out * g.w_out;
        let tg = TcGeom {
            g: cg,
            cp: cp as u32,
            cop: round8(g.c_out) as u32,
            m: m as u64,
            n: g.c_out as u64,
            k: (taps * cp) as u64,
            tiles_per_split: (taps * cp).div_ceil(tile_k(t)) as u64,
        };
        let (f, name, cfg) = main_kernel(gpu, t, mma, 0, grid("conv2d", m, g.c_out, 1)?)?;
        let mut l = gpu.stream().launch_builder(&f);
        l.arg(&tg).arg(&xp).arg(&wp).arg(&ep).arg(&mut y);
        // SAFETY: tc_forward_* (and wg_forward_*) take (TcGeom, const T* x, const T* w,
        // Epilogue e, float* y): the packs hold what `tg` describes, `ep`'s bias is null or
        // at least c_out values (checked by EpilogueArgs::new), `y` the output.
        launched(name, unsafe { l.launch(cfg) })?;
        gpu.recycle(xp);
        gpu.recycle(wp);
        Ok(y)
    }

    pub fn backward_data(
        gpu: &Gpu,
        t: TcType,
        mma: Mma,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        ep: EpilogueArgs<'_>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        if g.input_len() == 0 {
            return gpu.alloc_f32(0);
        }
        if g.output_len_total() == 0 || g.weight_len() == 0 {
            // Nothing to sum: zeros, then the epilogue (a bias and activation still apply).
            let mut dx = gpu.zeros_f32(g.input_len())?;
            ep.apply(gpu, &mut dx, g.c_in, g.h * g.w)?;
            return Ok(dx);
        }
        let mut dx = gpu.alloc_f32(g.input_len())?;
        let (taps, cop) = (g.kh * g.kw, round8(g.c_out));
        let dyp = pack_output(gpu, t, dy, g)?;
        // w[co][ci][i][j] → [ci][i][j][co]
        let wp = pack(
            gpu,
            t,
            w,
            [g.c_in, taps, g.c_out, cop],
            [taps, 1, g.c_in * taps],
        )?;
        let m = g.n * g.h * g.w;
        let tg = TcGeom {
            g: cg,
            cp: round8(g.c_in) as u32,
            cop: cop as u32,
            m: m as u64,
            n: g.c_in as u64,
            k: (taps * cop) as u64,
            tiles_per_split: (taps * cop).div_ceil(tile_k(t)) as u64,
        };
        let (f, name, cfg) =
            main_kernel(gpu, t, mma, 1, grid("conv2d_backward_data", m, g.c_in, 1)?)?;
        let mut l = gpu.stream().launch_builder(&f);
        l.arg(&tg).arg(&dyp).arg(&wp).arg(&ep).arg(&mut dx);
        // SAFETY: tc_backward_data_* (and wg_backward_data_*) take (TcGeom, const T* dy,
        // const T* w, Epilogue e, float* dx): buffers as `tg` describes, `ep`'s bias null or
        // at least c_in values (checked by EpilogueArgs::new).
        launched(name, unsafe { l.launch(cfg) })?;
        gpu.recycle(dyp);
        gpu.recycle(wp);
        Ok(dx)
    }

    pub fn backward_weight(
        gpu: &Gpu,
        t: TcType,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &Conv2dGeom,
    ) -> Result<CudaSlice<f32>> {
        let cg = ConvGeom::new(g)?;
        let len = g.weight_len();
        if len == 0 {
            return gpu.alloc_f32(0);
        }
        let k = g.n * g.h_out * g.w_out;
        if k == 0 {
            return gpu.zeros_f32(len);
        }
        let (taps, cp) = (g.kh * g.kw, round8(g.c_in));
        let cols = taps * cp;
        let (per, splits) = split_k(
            k.div_ceil(tile_k(t)),
            cols.div_ceil(TILE) * g.c_out.div_ceil(TILE),
        );
        let xp = pack_input(gpu, t, x, g)?;
        let dyp = pack_output(gpu, t, dy, g)?;
        let tg = TcGeom {
            g: cg,
            cp: cp as u32,
            cop: round8(g.c_out) as u32,
            m: g.c_out as u64,
            n: cols as u64,
            k: k as u64,
            tiles_per_split: per as u64,
        };
        let mut partial = gpu.alloc_f32(splits * g.c_out * cols)?;
        let op = "conv2d_backward_weight";
        let (f, name, cfg) = main_kernel(gpu, t, Mma::Sync, 2, grid(op, g.c_out, cols, splits)?)?;
        let mut l = gpu.stream().launch_builder(&f);
        l.arg(&tg).arg(&xp).arg(&dyp).arg(&mut partial);
        // SAFETY: tc_backward_weight_*(TcGeom, const T* x, const T* dy, float* partial);
        // `partial` holds splits · c_out · cols values, one slice per grid z.
        launched(name, unsafe { l.launch(cfg) })?;
        let mut dw = gpu.alloc_f32(len)?;
        cuda_launch!(
            gpu,
            TC_SOURCE,
            "tc_weight_sum",
            grid_1d(len),
            [&cg, &(cp as u32), &(splits as u64), &partial, &mut dw]
        )?;
        for b in [xp, dyp, partial] {
            gpu.recycle(b);
        }
        Ok(dw)
    }

    /// `C[b] = op(A[b]) · op(B[b])` on the tensor cores: each batch entry is a 1x1 convolution
    /// of `m` one-pixel images with `k` channels by `n` filters, whose packed weight is
    /// `op(B)ᵀ` (`[n][k]`, K-contiguous, as the forward kernel reads it).
    pub fn matmul(
        gpu: &Gpu,
        t: TcType,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        geom: &crate::gemm::GemmGeom,
    ) -> Result<CudaSlice<f32>> {
        let (batch, m, k, n) = (geom.batch, geom.m, geom.k, geom.n);
        if batch * m * n == 0 || k == 0 {
            return gpu.zeros_f32(batch * m * n);
        }
        let kp = round8(k);
        // op(A)[bi][i][p] → [bi][i][p]; op(B)[bi][p][j] → [bi][j][p].
        let (sa_i, sa_p) = if geom.trans_a { (1, m) } else { (k, 1) };
        let (sb_j, sb_p) = if geom.trans_b { (k, 1) } else { (1, n) };
        let ap = pack(gpu, t, a, [batch, m, k, kp], [m * k, sa_i, sa_p])?;
        let bp = pack(gpu, t, b, [batch, n, k, kp], [k * n, sb_j, sb_p])?;
        let mut c = gpu.alloc_f32(batch * m * n)?;
        let g = Conv2dGeom {
            n: m,
            c_in: k,
            h: 1,
            w: 1,
            c_out: n,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            pad: [0, 0],
            dilation: [1, 1],
            h_out: 1,
            w_out: 1,
        };
        let tg = TcGeom {
            g: ConvGeom::new(&g)?,
            cp: kp as u32,
            cop: round8(n) as u32,
            m: m as u64,
            n: n as u64,
            k: kp as u64,
            tiles_per_split: kp.div_ceil(tile_k(t)) as u64,
        };
        // Packed values per f32 word: the views below step in f32 units.
        let per_word = 4 / t.size();
        let (f, name, cfg) = main_kernel(gpu, t, Mma::Sync, 0, grid("matmul", m, n, 1)?)?;
        for bi in 0..batch {
            let av = ap.slice(bi * m * kp / per_word..);
            let bv = bp.slice(bi * n * kp / per_word..);
            let mut cv = c.slice_mut(bi * m * n..(bi + 1) * m * n);
            let mut l = gpu.stream().launch_builder(&f);
            l.arg(&tg)
                .arg(&av)
                .arg(&bv)
                .arg(&EpilogueArgs::NONE)
                .arg(&mut cv);
            // SAFETY: tc_forward_*(TcGeom, x, w, no epilogue, y) on one batch entry: `av`
            // holds m·kp packed values, `bv` n·kp, `cv` m·n.
            launched(name, unsafe { l.launch(cfg) })?;
        }
        gpu.recycle(ap);
        gpu.recycle(bp);
        Ok(c)
    }
}
