//! Tensor shapes.

use crate::{Error, Result};
use std::fmt;

/// The dimensions of a tensor, outermost first (NCHW for images). A shape of rank 0 is a scalar.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    pub fn scalar() -> Self {
        Shape(vec![])
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar). Tensors only exist for shapes whose count fits in
    /// `usize` (checked by [`Shape::checked_elem_count`] when they are made).
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }

    /// The element count, or an error naming `op` if it overflows `usize`.
    pub fn checked_elem_count(&self, op: &'static str) -> Result<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                Error::shape(
                    op,
                    format!("shape {self} has more elements than fit in memory"),
                )
            })
    }
    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        gantry_kernels::contiguous_strides(&self.0)
    }
    /// Size of dimension `d`, or an error naming `op` if the shape has no such dimension.
    pub fn dim(&self, op: &'static str, d: usize) -> Result<usize> {
        self.0.get(d).copied().ok_or_else(|| {
            Error::invalid(
                op,
                format!(
                    "dimension {d} out of range for shape {self} (rank {})",
                    self.rank()
                ),
            )
        })
    }
    /// Checks `d` is a valid axis for this shape.
    pub fn check_axis(&self, op: &'static str, d: usize) -> Result<usize> {
        self.dim(op, d).map(|_| d)
    }
    /// The shape two operands broadcast to (NumPy rules), or an error naming both shapes.
    pub fn broadcast(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
        gantry_kernels::elementwise::BroadcastGeom::new(a.dims(), b.dims())
            .map(|g| Shape(g.out_shape))
            .ok_or_else(|| {
                Error::shape(
                    op,
                    format!("shapes {a} and {b} cannot be broadcast together"),
                )
            })
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}
