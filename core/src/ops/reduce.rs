//! Reductions.

use super::check_float;
use crate::storage::Storage;
use crate::{Error, Result, Shape, Tensor};
use gantry_kernels::reduce::reduced_shape;

impl Tensor {
    /// The axes a reduction runs over: as given, or every axis for an empty list (PyTorch's
    /// `dim=[]`).
    fn reduced_axes(&self, axes: &[usize]) -> Vec<usize> {
        if axes.is_empty() {
            (0..self.rank()).collect()
        } else {
            axes.to_vec()
        }
    }

    fn check_axes(&self, op: &'static str, axes: &[usize]) -> Result<()> {
        for (i, &a) in axes.iter().enumerate() {
            if a >= self.rank() {
                return Err(Error::invalid(
                    op,
                    format!("axis {a} out of range for shape {}", self.shape()),
                ));
            }
            if axes[..i].contains(&a) {
                return Err(Error::invalid(
                    op,
                    format!("axis {a} listed twice in {axes:?}"),
                ));
            }
        }
        Ok(())
    }

    /// Sum over `axes` (all of them if empty), keeping them as size-1 dimensions. Backward
    /// broadcasts the gradient
    /// back over the summed axes.
    pub fn sum_keepdim(&self, axes: &[usize]) -> Result<Tensor> {
        check_float("sum", self)?;
        let axes = &self.reduced_axes(axes);
        self.check_axes("sum", axes)?;
        let out_shape = Shape::new(reduced_shape(self.dims(), axes));
        let out = self.storage().sum_axes(self.dims(), axes)?;
        Ok(Tensor::from_op(out, out_shape, "sum", &[self], |ctx| {
            Ok(vec![Some(
                ctx.grad.broadcast_to(ctx.inputs[0].shape().clone())?,
            )])
        }))
    }

    /// Sum over `axes` (all of them if empty, as PyTorch's `dim=[]`); with `keepdim` they stay
    /// as size-1 dimensions, otherwise they are removed.
    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = &self.reduced_axes(axes);
        let s = self.sum_keepdim(axes)?;
        if keepdim {
            return Ok(s);
        }
        let dims: Vec<usize> = self
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect();
        s.reshape(dims)
    }

    /// Sum of every element, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.sum(&axes, false)
    }

    /// Mean over `axes` (all of them if empty).
    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = &self.reduced_axes(axes);
        self.check_axes("mean", axes)?;
        let count: usize = axes.iter().map(|&a| self.dims()[a]).product();
        self.sum(axes, keepdim)?.mul_scalar(1.0 / count as f64)
    }

    /// Mean of every element, as a 0-d tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.mul_scalar(1.0 / self.elem_count() as f64)
    }

    /// Maximum along `axis` and the (`u32`) index of the first maximum. The gradient flows
    /// to that index only, as in PyTorch's `max(dim)`.
    pub fn max_with_indices(&self, axis: usize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        check_float("max", self)?;
        self.check_axes("max", &[axis])?;
        if self.dims()[axis] == 0 {
            return Err(Error::shape(
                "max",
                format!(
                    "cannot take the maximum over empty axis {axis} of shape {}",
                    self.shape()
                ),
            ));
        }
        let in_shape = self.dims().to_vec();
        let mut out_dims = reduced_shape(self.dims(), &[axis]);
        if !keepdim {
            out_dims.remove(axis);
        }
        let (values, indices): (Storage, Storage) = self.storage().max_axis(self.dims(), axis)?;
        let indices = Tensor::from_storage(indices, out_dims.clone());
        let saved = indices.clone();
        let values = Tensor::from_op(values, out_dims, "max", &[self], move |ctx| {
            let dx = ctx
                .grad
                .storage()
                .max_axis_backward(&saved.storage(), &in_shape, axis)?;
            Ok(vec![Some(Tensor::from_storage(dx, in_shape.clone()))])
        });
        Ok((values, indices))
    }

    /// Maximum along `axis`.
    pub fn max(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        Ok(self.max_with_indices(axis, keepdim)?.0)
    }
}
