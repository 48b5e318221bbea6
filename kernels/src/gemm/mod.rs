//! Matrix multiplication: the naive [`reference`], and the BLIS-style SIMD [`cpu`] GEMM with
//! its per-ISA micro-kernels in [`kernels`].

pub mod cpu;
pub mod cuda;
pub mod kernels;
pub mod reference;
#[cfg(test)]
mod tests;

/// A batch of `C = op(A) · op(B)` products, each `C` of shape `m × n` with inner dimension `k`.
///
/// All matrices are row-major and batches are packed one after another. `op(A)` is `A` stored as
/// `m × k`, or, with `trans_a`, the transpose of an `A` stored as `k × m`; likewise `op(B)` is
/// `k × n`, or with `trans_b` the transpose of a stored `n × k`. The flags let backward passes
/// (`dA = dC · Bᵀ`, `dB = Aᵀ · dC`) run without materialising a transpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmGeom {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl GemmGeom {
    /// `batch` plain products `(m × k) · (k × n)`.
    pub fn new(batch: usize, m: usize, k: usize, n: usize) -> Self {
        GemmGeom {
            batch,
            m,
            k,
            n,
            trans_a: false,
            trans_b: false,
        }
    }

    /// Multiply-adds counted as two flops each.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.k * self.n) as f64
    }

    /// Element offset of `op(A)[i][p]` within one batch of A.
    #[inline]
    pub fn a_index(&self, i: usize, p: usize) -> usize {
        if self.trans_a {
            p * self.m + i
        } else {
            i * self.k + p
        }
    }

    /// Element offset of `op(B)[p][j]` within one batch of B.
    #[inline]
    pub fn b_index(&self, p: usize, j: usize) -> usize {
        if self.trans_b {
            j * self.k + p
        } else {
            p * self.n + j
        }
    }
}
