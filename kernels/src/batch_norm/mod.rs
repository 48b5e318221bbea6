//! Batch normalisation over the channel axis of an `[n, c, inner…]` buffer (`inner` = H·W for
//! images).

pub mod cpu;
pub mod cuda;
pub mod reference;

/// `n` samples, `c` channels, `inner` elements per channel per sample. Channel `k` of sample `b`
/// occupies `x[(b * c + k) * inner .. (b * c + k + 1) * inner]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormGeom {
    pub n: usize,
    pub c: usize,
    pub inner: usize,
}

impl BatchNormGeom {
    /// Elements per channel: the count the statistics are taken over.
    pub fn per_channel(&self) -> usize {
        self.n * self.inner
    }
    pub fn len(&self) -> usize {
        self.n * self.c * self.inner
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The channel of flat element `i`.
    #[inline]
    pub fn channel(&self, i: usize) -> usize {
        (i / self.inner) % self.c
    }
}
