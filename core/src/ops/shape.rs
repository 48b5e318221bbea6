//! Shape and data-movement ops.

use super::{check_float, check_same};
use crate::{DType, Error, Result, Shape, Tensor};
use gantry_kernels::contiguous_strides;

impl Tensor {
    /// The same elements in a new shape with the same element count (no copy: the result
    /// shares storage).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.checked_elem_count("reshape")? != self.elem_count() {
            return Err(Error::shape(
                "reshape",
                format!(
                    "cannot reshape {} ({} elements) to {shape} ({} elements)",
                    self.shape(),
                    self.elem_count(),
                    shape.elem_count()
                ),
            ));
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        Ok(self.share_op(shape, "reshape", |ctx| {
            Ok(vec![Some(ctx.grad.reshape(ctx.inputs[0].shape().clone())?)])
        }))
    }

    /// Inserts a size-1 dimension at `dim` (`0..=rank`).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::invalid(
                "unsqueeze",
                format!("dimension {dim} out of range for shape {}", self.shape()),
            ));
        }
        let mut d = self.dims().to_vec();
        d.insert(dim, 1);
        self.reshape(d)
    }

    /// Removes dimension `dim`, which must have size 1.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        if self.shape().dim("squeeze", dim)? != 1 {
            return Err(Error::shape(
                "squeeze",
                format!("dimension {dim} of {} is not 1", self.shape()),
            ));
        }
        let mut d = self.dims().to_vec();
        d.remove(dim);
        self.reshape(d)
    }

    /// Merges dimensions `start..` into one (`[n, c, h, w]` → `[n, c·h·w]` with `start = 1`).
    pub fn flatten_from(&self, start: usize) -> Result<Tensor> {
        if start >= self.rank() {
            return Err(Error::invalid(
                "flatten",
                format!(
                    "start dimension {start} out of range for shape {}",
                    self.shape()
                ),
            ));
        }
        let mut d = self.dims()[..start].to_vec();
        d.push(self.dims()[start..].iter().product());
        self.reshape(d)
    }

    /// Reorders dimensions: output dimension `i` is input dimension `dims[i]`.
    pub fn permute(&self, dims: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        if dims.len() != self.rank()
            || dims
                .iter()
                .any(|&d| d >= self.rank() || std::mem::replace(&mut seen[d], true))
        {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{dims:?} is not a permutation of the dimensions of {}",
                    self.shape()
                ),
            ));
        }
        let strides = self.shape().strides();
        let out_dims: Vec<usize> = dims.iter().map(|&d| self.dims()[d]).collect();
        let out_strides: Vec<usize> = dims.iter().map(|&d| strides[d]).collect();
        let out = self.storage().gather(0, &out_strides, &out_dims)?;
        let mut inverse = vec![0; dims.len()];
        for (i, &d) in dims.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(Tensor::from_op(
            out,
            out_dims,
            "permute",
            &[self],
            move |ctx| Ok(vec![Some(ctx.grad.permute(&inverse)?)]),
        ))
    }

    /// Swaps two dimensions.
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        self.shape().check_axis("transpose", d0)?;
        self.shape().check_axis("transpose", d1)?;
        let mut dims: Vec<usize> = (0..self.rank()).collect();
        dims.swap(d0, d1);
        self.permute(&dims)
    }

    /// The elements `start..start + len` along `dim` (a copy).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let size = self.shape().dim("narrow", dim)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} exceeds size {size} of dimension {dim} in {}",
                    start.saturating_add(len),
                    self.shape()
                ),
            ));
        }
        let strides = self.shape().strides();
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = len;
        let offset = start * strides[dim];
        let out = self.storage().gather(offset, &strides, &out_dims)?;
        let view = (offset, strides, out_dims.clone());
        Ok(Tensor::from_op(
            out,
            out_dims,
            "narrow",
            &[self],
            move |ctx| {
                // Backward: the gradient lands back in its slot of a zero tensor.
                let x = &ctx.inputs[0];
                let mut dx =
                    crate::storage::Storage::full(x.device(), x.dtype(), x.elem_count(), 0.0)?;
                dx.scatter(&ctx.grad.storage(), view.0, &view.1, &view.2, false)?;
                Ok(vec![Some(Tensor::from_storage(dx, x.shape().clone()))])
            },
        ))
    }

    /// Joins tensors along `dim`; all other dimensions must agree.
    pub fn concat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let Some(first) = tensors.first() else {
            return Err(Error::invalid("concat", "no tensors given"));
        };
        check_same("concat", tensors)?;
        first.shape().check_axis("concat", dim)?;
        for t in tensors {
            let same = t.rank() == first.rank()
                && t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == dim || a == b);
            if !same {
                let shapes: Vec<String> = tensors.iter().map(|t| t.shape().to_string()).collect();
                return Err(Error::shape(
                    "concat",
                    format!(
                        "shapes {} differ outside dimension {dim}",
                        shapes.join(", ")
                    ),
                ));
            }
        }
        let mut out_dims = first.dims().to_vec();
        out_dims[dim] = tensors.iter().map(|t| t.dims()[dim]).sum();
        let strides = contiguous_strides(&out_dims);
        let mut out = crate::storage::Storage::full(
            first.device(),
            first.dtype(),
            out_dims.iter().product(),
            0.0,
        )?;
        let mut starts = Vec::with_capacity(tensors.len());
        let mut start = 0;
        for t in tensors {
            out.scatter(
                &t.storage(),
                start * strides[dim],
                &strides,
                t.dims(),
                false,
            )?;
            starts.push(start);
            start += t.dims()[dim];
        }
        Ok(Tensor::from_op(
            out,
            out_dims,
            "concat",
            tensors,
            move |ctx| {
                ctx.inputs
                    .iter()
                    .zip(&starts)
                    .enumerate()
                    .map(|(i, (t, &s))| {
                        ctx.needs(i)
                            .then(|| ctx.grad.narrow(dim, s, t.dims()[dim]))
                            .transpose()
                    })
                    .collect()
            },
        ))
    }

    /// Repeats size-1 (or missing leading) dimensions to reach `shape`, NumPy-style.
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        shape.checked_elem_count("broadcast_to")?;
        let (src, dst) = (self.dims(), shape.dims());
        let lead = dst.len().checked_sub(src.len());
        let ok = lead.is_some_and(|lead| {
            src.iter()
                .enumerate()
                .all(|(i, &s)| s == dst[lead + i] || s == 1)
        });
        let Some(lead) = lead.filter(|_| ok) else {
            return Err(Error::shape(
                "broadcast_to",
                format!("cannot broadcast {} to {shape}", self.shape()),
            ));
        };
        let src_strides = self.shape().strides();
        let strides: Vec<usize> = (0..dst.len())
            .map(|i| {
                if i < lead || src[i - lead] != dst[i] {
                    0
                } else {
                    src_strides[i - lead]
                }
            })
            .collect();
        let out = self.storage().gather(0, &strides, dst)?;
        Ok(Tensor::from_op(
            out,
            shape,
            "broadcast_to",
            &[self],
            |ctx| Ok(vec![Some(ctx.grad.sum_to(ctx.inputs[0].shape())?)]),
        ))
    }

    /// Converts the elements to `dtype`; the gradient is converted back.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = self.storage().to_dtype(dtype)?;
        Ok(Tensor::from_op(
            out,
            self.shape().clone(),
            "to_dtype",
            &[self],
            |ctx| {
                let x = &ctx.inputs[0];
                check_float("to_dtype", x)?;
                Ok(vec![Some(ctx.grad.to_dtype(x.dtype())?)])
            },
        ))
    }
}

impl Tensor {
    /// `F.pad(x, (left, right, top, bottom), mode="reflect")` for `[n, c, h, w]`: the border
    /// is mirrored without repeating the edge (`[a b c d]` padded by 2 on the left is
    /// `[c b a b c d]`), so each pad must be smaller than its dimension.
    ///
    /// Built from `narrow` and `concat` (each reflected row or column is a one-wide slice of
    /// the input), so the gradient — which folds each mirrored border back onto the rows and
    /// columns it copied — and every device come from those two ops.
    pub fn reflection_pad2d(&self, [left, right, top, bottom]: [usize; 4]) -> Result<Tensor> {
        let op = "reflection_pad2d";
        let &[_, _, h, w] = self.dims() else {
            return Err(Error::shape(
                op,
                format!("input must be 4-D [n, c, h, w], got {}", self.shape()),
            ));
        };
        if left >= w || right >= w || top >= h || bottom >= h {
            return Err(Error::invalid(
                op,
                format!(
                    "padding (left {left}, right {right}, top {top}, bottom {bottom}) must be \
                     smaller than the input's width and height, got {}",
                    self.shape()
                ),
            ));
        }
        let x = self.reflect_dim(3, left, right)?;
        x.reflect_dim(2, top, bottom)
    }

    /// Mirrors `before` slices onto the start of dimension `dim` and `after` onto its end.
    fn reflect_dim(&self, dim: usize, before: usize, after: usize) -> Result<Tensor> {
        if before == 0 && after == 0 {
            return Ok(self.clone());
        }
        let size = self.dims()[dim];
        // Slices `before, …, 1`, then the input, then `size−2, …, size−1−after`.
        let mut parts = Vec::with_capacity(before + after + 1);
        for k in (1..=before).rev() {
            parts.push(self.narrow(dim, k, 1)?);
        }
        parts.push(self.clone());
        for k in 1..=after {
            parts.push(self.narrow(dim, size - 1 - k, 1)?);
        }
        Tensor::concat(&parts.iter().collect::<Vec<_>>(), dim)
    }
}
