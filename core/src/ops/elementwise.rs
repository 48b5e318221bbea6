//! Elementwise ops and their backward rules.

use super::{check_float, check_same};
use crate::{Error, Result, Shape, Tensor};
use gantry_kernels::elementwise::{BinaryOp, BroadcastGeom, UnaryOp};

/// One partial derivative of `a ^ b` (broadcast), computed by a single kernel.
fn pow_partial(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let geom = BroadcastGeom::new(a.dims(), b.dims()).expect("shapes broadcast in forward");
    let shape = Shape::new(geom.out_shape.clone());
    Ok(Tensor::from_storage(
        a.storage().binary(&b.storage(), &geom, op)?,
        shape,
    ))
}

impl Tensor {
    /// Applies a unary op; backward is `dy · f'(x)` via the kernel's derivative.
    fn unary_op(&self, op: UnaryOp) -> Result<Tensor> {
        check_float(op.name(), self)?;
        let y = self.storage().unary(op)?;
        Ok(Tensor::from_op(
            y,
            self.shape().clone(),
            op.name(),
            &[self],
            move |ctx| {
                let x = &ctx.inputs[0];
                let dx =
                    x.storage()
                        .unary_backward(&ctx.output.storage(), &ctx.grad.storage(), op)?;
                Ok(vec![Some(Tensor::from_storage(dx, x.shape().clone()))])
            },
        ))
    }

    /// Applies any [`UnaryOp`] (what a fused norm + activation does in two steps).
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        self.unary_op(op)
    }
    pub fn neg(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Neg)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Log)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Sqrt)
    }
    /// `|x|`; its gradient at 0 is 0, as in PyTorch.
    pub fn abs(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Abs)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Tanh)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Sigmoid)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary_op(UnaryOp::Relu)
    }
    /// `x` for `x > 0`, `slope · x` otherwise (DCGAN's discriminator uses slope 0.2).
    pub fn leaky_relu(&self, slope: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::LeakyRelu(slope))
    }
    pub fn add_scalar(&self, c: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::AddScalar(c))
    }
    pub fn mul_scalar(&self, c: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::MulScalar(c))
    }
    /// `x ^ e` for a scalar exponent.
    pub fn powf(&self, e: f64) -> Result<Tensor> {
        self.unary_op(UnaryOp::PowScalar(e))
    }
    /// `x · x` (exact, unlike `powf(2.0)` through `pow`).
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }

    /// A broadcasting binary op. The backward rules are written with tensor ops and reduced
    /// back to each operand's shape with [`Tensor::sum_to`].
    fn binary_op(&self, rhs: &Tensor, op: BinaryOp) -> Result<Tensor> {
        let name = op.name();
        check_same(name, &[self, rhs])?;
        check_float(name, self)?;
        let geom = BroadcastGeom::new(self.dims(), rhs.dims()).ok_or_else(|| {
            Error::shape(
                name,
                format!(
                    "shapes {} and {} cannot be broadcast together",
                    self.shape(),
                    rhs.shape()
                ),
            )
        })?;
        let out_shape = Shape::new(geom.out_shape.clone());
        let out = self.storage().binary(&rhs.storage(), &geom, op)?;
        Ok(Tensor::from_op(
            out,
            out_shape,
            name,
            &[self, rhs],
            move |ctx| {
                let (a, b, g) = (&ctx.inputs[0], &ctx.inputs[1], ctx.grad);
                let (ga, gb) = match op {
                    BinaryOp::Add => (Some(g.clone()), Some(g.clone())),
                    BinaryOp::Sub => (Some(g.clone()), ctx.needs(1).then(|| g.neg()).transpose()?),
                    BinaryOp::Mul => (
                        ctx.needs(0).then(|| g.mul(b)).transpose()?,
                        ctx.needs(1).then(|| g.mul(a)).transpose()?,
                    ),
                    // d(a/b)/da = 1/b ; d(a/b)/db = -a/b² = -(a/b)/b
                    BinaryOp::Div => (
                        ctx.needs(0).then(|| g.div(b)).transpose()?,
                        ctx.needs(1)
                            .then(|| g.mul(ctx.output)?.div(b)?.neg())
                            .transpose()?,
                    ),
                    // d(a^b)/da = b·a^(b−1) ; d(a^b)/db = a^b · ln a, with PyTorch's zeros at
                    // the singular points (see the kernel's `PowGradBase` / `PowGradExponent`).
                    BinaryOp::Pow => (
                        ctx.needs(0)
                            .then(|| g.mul(&pow_partial(a, b, BinaryOp::PowGradBase)?))
                            .transpose()?,
                        ctx.needs(1)
                            .then(|| g.mul(&pow_partial(a, b, BinaryOp::PowGradExponent)?))
                            .transpose()?,
                    ),
                    BinaryOp::PowGradBase | BinaryOp::PowGradExponent => {
                        unreachable!("derivative helpers are not recorded as ops")
                    }
                };
                Ok(vec![
                    ga.map(|t| t.sum_to(a.shape())).transpose()?,
                    gb.map(|t| t.sum_to(b.shape())).transpose()?,
                ])
            },
        ))
    }

    /// `self + rhs`, broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Add)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Sub)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Mul)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Div)
    }
    /// `self ^ rhs` elementwise, broadcasting. The gradient w.r.t. the exponent needs
    /// `ln self`, so it is finite only for positive bases.
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary_op(rhs, BinaryOp::Pow)
    }

    /// Sums a broadcast result back down to `shape`: the backward of broadcasting.
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let (src, dst) = (self.dims(), shape.dims());
        let lead = src.len().checked_sub(dst.len());
        let ok = lead.is_some_and(|lead| {
            dst.iter()
                .enumerate()
                .all(|(i, &d)| d == src[lead + i] || d == 1)
        });
        let Some(lead) = lead.filter(|_| ok) else {
            return Err(Error::shape(
                "sum_to",
                format!("cannot reduce shape {} to {shape}", self.shape()),
            ));
        };
        let axes: Vec<usize> = (0..src.len())
            .filter(|&i| i < lead || (dst[i - lead] == 1 && src[i] != 1))
            .collect();
        self.sum_keepdim(&axes)?.reshape(shape.clone())
    }

    /// PReLU: `x` where `x > 0`, else `weight[c] · x`, with `c` the channel (dimension 1).
    /// `weight` has one entry per channel, or a single shared entry.
    pub fn prelu(&self, weight: &Tensor) -> Result<Tensor> {
        check_same("prelu", &[self, weight])?;
        check_float("prelu", self)?;
        let d = self.dims();
        let c = if d.len() >= 2 { d[1] } else { 1 };
        if weight.rank() != 1 || (weight.dims()[0] != c && weight.dims()[0] != 1) {
            return Err(Error::shape(
                "prelu",
                format!(
                    "weight must have shape [{c}] or [1] for input {}, got {}",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let n = d.first().copied().unwrap_or(1);
        let dims = if d.len() >= 2 {
            [n, c, d[2..].iter().product()]
        } else {
            [1, 1, self.elem_count()]
        };
        let y = self.storage().prelu(&weight.storage(), dims)?;
        Ok(Tensor::from_op(
            y,
            self.shape().clone(),
            "prelu",
            &[self, weight],
            move |ctx| {
                let (x, w) = (&ctx.inputs[0], &ctx.inputs[1]);
                let (dx, dw) =
                    x.storage()
                        .prelu_backward(&w.storage(), &ctx.grad.storage(), dims)?;
                Ok(vec![
                    Some(Tensor::from_storage(dx, x.shape().clone())),
                    Some(Tensor::from_storage(dw, w.shape().clone())),
                ])
            },
        ))
    }
}
