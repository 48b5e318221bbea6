//! CUDA elementwise kernels (`elementwise.cu`): unary ops and their derivatives, broadcasting
//! binary ops, PReLU. Each launch is one thread per element over a grid-stride loop.

use super::{BinaryOp, BroadcastGeom, UnaryOp};
use crate::cuda_launch;
use crate::cuda_rt::{block_per_item, grid_1d, n64, CudaError, Gpu, Result, Source, Strides};
use cudarc::driver::CudaSlice;

pub const SOURCE: Source = Source {
    name: "elementwise",
    code: concat!(
        include_str!("../cuda_rt/common.cuh"),
        include_str!("elementwise.cu")
    ),
};

/// The op's code and scalar parameter in `common.cuh`'s numbering.
pub fn unary_code(op: UnaryOp) -> (i32, f32) {
    match op {
        UnaryOp::Neg => (0, 0.0),
        UnaryOp::Exp => (1, 0.0),
        UnaryOp::Log => (2, 0.0),
        UnaryOp::Sqrt => (3, 0.0),
        UnaryOp::Abs => (4, 0.0),
        UnaryOp::Tanh => (5, 0.0),
        UnaryOp::Sigmoid => (6, 0.0),
        UnaryOp::Relu => (7, 0.0),
        UnaryOp::LeakyRelu(s) => (8, s as f32),
        UnaryOp::AddScalar(c) => (9, c as f32),
        UnaryOp::MulScalar(c) => (10, c as f32),
        UnaryOp::PowScalar(e) => (11, e as f32),
    }
}

fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Pow => 4,
        BinaryOp::PowGradBase => 5,
        BinaryOp::PowGradExponent => 6,
    }
}

/// `y = op(x)` over the first `n` values.
pub fn unary(gpu: &Gpu, op: UnaryOp, x: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    let (code, p) = unary_code(op);
    let mut y = gpu.alloc_f32(n)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "unary_forward",
        grid_1d(n),
        [&code, &p, x, &mut y, &n64(n)]
    )?;
    Ok(y)
}

/// `dx = dy · op'(x)` (given `y = op(x)`).
pub fn unary_backward(
    gpu: &Gpu,
    op: UnaryOp,
    [x, y, dy]: [&CudaSlice<f32>; 3],
    n: usize,
) -> Result<CudaSlice<f32>> {
    let (code, p) = unary_code(op);
    let mut dx = gpu.alloc_f32(n)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "unary_backward",
        grid_1d(n),
        [&code, &p, x, y, dy, &mut dx, &n64(n)]
    )?;
    Ok(dx)
}

/// `out = op(a, b)` with broadcasting as `geom` describes.
pub fn binary(
    gpu: &Gpu,
    op: BinaryOp,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    geom: &BroadcastGeom,
) -> Result<CudaSlice<f32>> {
    let n = geom.out_len();
    let full = crate::contiguous_strides(&geom.out_shape);
    let same = i32::from(geom.lhs_strides == full && geom.rhs_strides == full);
    let s = Strides::new(
        op.name(),
        &geom.out_shape,
        &geom.lhs_strides,
        &geom.rhs_strides,
    )?;
    let mut out = gpu.alloc_f32(n)?;
    cuda_launch!(
        gpu,
        SOURCE,
        "binary",
        grid_1d(n),
        [&binary_code(op), &s, &same, a, b, &mut out, &n64(n)]
    )?;
    Ok(out)
}

fn check_prelu(w_len: usize, c: usize) -> Result<()> {
    if w_len == c || w_len == 1 {
        Ok(())
    } else {
        Err(CudaError(format!(
            "prelu: {w_len} weights for {c} channels"
        )))
    }
}

/// PReLU over `[n, c, inner]` with `c` weights or one.
pub fn prelu(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    w_len: usize,
    [n, c, inner]: [usize; 3],
) -> Result<CudaSlice<f32>> {
    check_prelu(w_len, c)?;
    let len = n * c * inner;
    let mut y = gpu.alloc_f32(len)?;
    let args = (n64(c), n64(inner), n64(w_len), n64(len));
    cuda_launch!(
        gpu,
        SOURCE,
        "prelu_forward",
        grid_1d(len),
        [x, w, &mut y, &args.0, &args.1, &args.2, &args.3]
    )?;
    Ok(y)
}

/// `(dx, dweight)` of PReLU.
pub fn prelu_backward(
    gpu: &Gpu,
    [x, w, dy]: [&CudaSlice<f32>; 3],
    w_len: usize,
    [n, c, inner]: [usize; 3],
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    check_prelu(w_len, c)?;
    let len = n * c * inner;
    let (mut dx, mut dw) = (gpu.alloc_f32(len)?, gpu.alloc_f32(w_len)?);
    let (c64, inner64, wc, len64) = (n64(c), n64(inner), n64(w_len), n64(len));
    cuda_launch!(
        gpu,
        SOURCE,
        "prelu_backward_input",
        grid_1d(len),
        [x, w, dy, &mut dx, &c64, &inner64, &wc, &len64]
    )?;
    cuda_launch!(
        gpu,
        SOURCE,
        "prelu_backward_weight",
        block_per_item(w_len),
        [x, dy, &mut dw, &n64(n), &c64, &inner64, &wc]
    )?;
    Ok((dx, dw))
}
