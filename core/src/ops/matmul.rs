//! Matrix products.

use super::{check_float, check_same};
use crate::{Error, Result, Shape, Tensor};
use gantry_kernels::gemm::GemmGeom;

impl Tensor {
    /// Matrix product of the last two dimensions, PyTorch-style: `[…, m, k] · […, k, n]` →
    /// `[…, m, n]`, with the leading (batch) dimensions broadcast against each other. Both
    /// operands need at least two dimensions.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", &[self, rhs])?;
        check_float("matmul", self)?;
        if self.rank() < 2 || rhs.rank() < 2 {
            return Err(Error::shape(
                "matmul",
                format!(
                    "operands need at least 2 dimensions, got {} and {}",
                    self.shape(),
                    rhs.shape()
                ),
            ));
        }
        let (a, b) = (self.dims(), rhs.dims());
        let (m, k, k2, n) = (
            a[a.len() - 2],
            a[a.len() - 1],
            b[b.len() - 2],
            b[b.len() - 1],
        );
        if k != k2 {
            return Err(Error::shape(
                "matmul",
                format!(
                    "inner dimensions differ: {} has {k} columns but {} has {k2} rows",
                    self.shape(),
                    rhs.shape()
                ),
            ));
        }
        let batch_a = Shape::new(&a[..a.len() - 2]);
        let batch_b = Shape::new(&b[..b.len() - 2]);
        let batch = Shape::broadcast("matmul", &batch_a, &batch_b).map_err(|_| {
            Error::shape(
                "matmul",
                format!(
                    "batch dimensions of {} and {} cannot be broadcast",
                    self.shape(),
                    rhs.shape()
                ),
            )
        })?;
        let nb = batch.elem_count();
        let with = |last: [usize; 2]| {
            let mut d = batch.dims().to_vec();
            d.extend(last);
            d
        };
        // Broadcasting is recorded as its own op, so its backward (a sum) comes for free.
        let a3 = self.broadcast_to(with([m, k]))?.reshape([nb, m, k])?;
        let b3 = rhs.broadcast_to(with([k, n]))?.reshape([nb, k, n])?;
        a3.bmm(&b3)?.reshape(with([m, n]))
    }

    /// Batched product `[b, m, k] · [b, k, n]`, the primitive under [`Tensor::matmul`].
    /// Backward: `dA = dC · Bᵀ`, `dB = Aᵀ · dC`, both through the transposed-operand flags of
    /// the GEMM kernel (no transpose is materialised).
    fn bmm(&self, rhs: &Tensor) -> Result<Tensor> {
        let (a, b) = (self.dims(), rhs.dims());
        let geom = GemmGeom::new(a[0], a[1], a[2], b[2]);
        let out = self.storage().matmul(&rhs.storage(), &geom)?;
        Ok(Tensor::from_op(
            out,
            [geom.batch, geom.m, geom.n],
            "matmul",
            &[self, rhs],
            move |ctx| {
                let (a, b, g) = (&ctx.inputs[0], &ctx.inputs[1], ctx.grad);
                let da = ctx.needs(0).then(|| -> Result<Tensor> {
                    let ga = GemmGeom {
                        k: geom.n,
                        n: geom.k,
                        trans_b: true,
                        ..geom
                    };
                    Ok(Tensor::from_storage(
                        g.storage().matmul(&b.storage(), &ga)?,
                        a.shape().clone(),
                    ))
                });
                let db = ctx.needs(1).then(|| -> Result<Tensor> {
                    let gb = GemmGeom {
                        m: geom.k,
                        k: geom.m,
                        trans_a: true,
                        ..geom
                    };
                    Ok(Tensor::from_storage(
                        a.storage().matmul(&g.storage(), &gb)?,
                        b.shape().clone(),
                    ))
                });
                Ok(vec![da.transpose()?, db.transpose()?])
            },
        ))
    }
}
