//! Elementwise ops: unary maps (activations, `exp`, scalar arithmetic …), their derivatives,
//! broadcasting binary ops, and the per-channel PReLU.

pub mod cpu;
pub mod cuda;
pub mod reference;

use crate::Float;

/// A unary elementwise op. Parameters are carried as `f64` so the same descriptor serves every
/// element type and device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    /// `x` for `x > 0`, `slope * x` otherwise.
    LeakyRelu(f64),
    /// `x + c`
    AddScalar(f64),
    /// `x * c`
    MulScalar(f64),
    /// `x ^ e`
    PowScalar(f64),
}

impl UnaryOp {
    /// The op's name as error messages and benchmark tables print it.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
            UnaryOp::AddScalar(_) => "add_scalar",
            UnaryOp::MulScalar(_) => "mul_scalar",
            UnaryOp::PowScalar(_) => "powf",
        }
    }

    /// `f(x)`.
    #[inline]
    pub fn apply<T: Float>(self, x: T) -> T {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            // NaN passes through, as PyTorch's clamp does, so divergence stays visible.
            UnaryOp::Relu => {
                if x > T::ZERO || x.is_nan() {
                    x
                } else {
                    T::ZERO
                }
            }
            UnaryOp::LeakyRelu(slope) => {
                if x > T::ZERO {
                    x
                } else {
                    x * T::from_f64(slope)
                }
            }
            UnaryOp::AddScalar(c) => x + T::from_f64(c),
            UnaryOp::MulScalar(c) => x * T::from_f64(c),
            UnaryOp::PowScalar(e) => x.powf(T::from_f64(e)),
        }
    }

    /// Whether `derivative(y, y)` equals `derivative(x, y)` for every `x`: the gradient can
    /// be taken from the output alone, so a kernel may fuse the op into its store and keep
    /// no pre-activation (relu, leaky relu with a slope ≥ 0, where `y > 0` exactly when
    /// `x > 0`; tanh and sigmoid, whose derivatives are written in `y`).
    pub fn derivative_from_output(self) -> bool {
        match self {
            UnaryOp::Relu | UnaryOp::Tanh | UnaryOp::Sigmoid => true,
            UnaryOp::LeakyRelu(slope) => slope >= 0.0,
            _ => false,
        }
    }

    /// `f'(x)`, given both the input `x` and the output `y = f(x)` (several derivatives are
    /// cheapest in terms of `y`). At the kinks of `relu`, `leaky_relu` and `abs` the derivative
    /// PyTorch uses is taken: 0, `slope` and 0 respectively at `x = 0`.
    #[inline]
    pub fn derivative<T: Float>(self, x: T, y: T) -> T {
        match self {
            UnaryOp::Neg => -T::ONE,
            UnaryOp::Exp => y,
            UnaryOp::Log => T::ONE / x,
            UnaryOp::Sqrt => T::from_f64(0.5) / y,
            UnaryOp::Abs => {
                if x > T::ZERO {
                    T::ONE
                } else if x < T::ZERO {
                    -T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryOp::Tanh => T::ONE - y * y,
            UnaryOp::Sigmoid => y * (T::ONE - y),
            UnaryOp::Relu => {
                if x > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            UnaryOp::LeakyRelu(slope) => {
                if x > T::ZERO {
                    T::ONE
                } else {
                    T::from_f64(slope)
                }
            }
            UnaryOp::AddScalar(_) => T::ONE,
            UnaryOp::MulScalar(c) => T::from_f64(c),
            UnaryOp::PowScalar(e) => {
                if e == 0.0 {
                    T::ZERO
                } else {
                    T::from_f64(e) * x.powf(T::from_f64(e - 1.0))
                }
            }
        }
    }
}

/// The logistic function, written so that it never overflows: for negative `x` it uses
/// `e^x / (1 + e^x)`, where `e^x` is at most 1.
#[inline]
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::ZERO {
        T::ONE / (T::ONE + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::ONE + e)
    }
}

/// A binary elementwise op, applied with NumPy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a ^ b`
    Pow,
    /// `∂(a^b)/∂a = b · a^(b−1)`, taken as 0 where `b = 0` (PyTorch's convention, which keeps
    /// `0^0` differentiable).
    PowGradBase,
    /// `∂(a^b)/∂b = a^b · ln a`, taken as 0 where `a = 0` and `b ≥ 0` (PyTorch's convention:
    /// the limit of `a^b · ln a` as `a → 0⁺` for `b > 0`).
    PowGradExponent,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::PowGradBase => "pow_grad_base",
            BinaryOp::PowGradExponent => "pow_grad_exponent",
        }
    }

    #[inline]
    pub fn apply<T: Float>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Pow => a.powf(b),
            BinaryOp::PowGradBase => {
                if b == T::ZERO {
                    T::ZERO
                } else {
                    b * a.powf(b - T::ONE)
                }
            }
            BinaryOp::PowGradExponent => {
                if a == T::ZERO && b >= T::ZERO {
                    T::ZERO
                } else {
                    a.powf(b) * a.ln()
                }
            }
        }
    }
}

/// Where a broadcasting binary op reads its operands: the output shape and, for each operand,
/// its strides *as seen from the output* (0 along a broadcast dimension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BroadcastGeom {
    pub out_shape: Vec<usize>,
    pub lhs_strides: Vec<usize>,
    pub rhs_strides: Vec<usize>,
}

impl BroadcastGeom {
    /// The geometry for contiguous operands of shapes `lhs` and `rhs` (already checked to be
    /// broadcast-compatible; ranks may differ, shapes align at the right as in NumPy).
    pub fn new(lhs: &[usize], rhs: &[usize]) -> Option<Self> {
        let rank = lhs.len().max(rhs.len());
        let pad = |s: &[usize]| -> Vec<usize> {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (l, r) = (pad(lhs), pad(rhs));
        let mut out_shape = Vec::with_capacity(rank);
        for (&a, &b) in l.iter().zip(&r) {
            out_shape.push(match (a, b) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => return None,
            });
        }
        let broadcast_strides = |s: &[usize]| -> Vec<usize> {
            let strides = crate::contiguous_strides(s);
            s.iter()
                .zip(&out_shape)
                .zip(strides)
                .map(|((&d, &o), st)| if d == 1 && o != 1 { 0 } else { st })
                .collect()
        };
        Some(BroadcastGeom {
            lhs_strides: broadcast_strides(&l),
            rhs_strides: broadcast_strides(&r),
            out_shape,
        })
    }

    pub fn out_len(&self) -> usize {
        self.out_shape.iter().product()
    }
}
