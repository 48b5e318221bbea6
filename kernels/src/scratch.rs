//! Scratch buffers the CPU kernels reuse from call to call.
//!
//! The convolutions rearrange their operands (packed weights, padded or transposed copies of
//! the input) into buffers as large as a layer's activations. Allocating them afresh on every
//! call would fault in new pages every training step (measured, when the forward's padded
//! input was one: 6% of the SRResNet layer's forward pass), so they come from one small
//! process-wide pool.
//!
//! A pooled buffer keeps its full length: a call that needs less borrows a prefix, and only
//! growth writes new memory. (Truncating a buffer to each request and growing it again for the
//! next zero-filled the difference every time; a training step alternates the forward's and the
//! backward's sizes, so that was a memset per pass.)

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// At most this many free buffers are kept: enough for one call's (backward-data holds one
/// per stride phase) and the passes of a layer that alternate.
const KEEP: usize = 8;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` floats whose contents are unspecified: the caller writes what it reads.
/// It returns to the pool when dropped.
pub(crate) struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    pub(crate) fn take(len: usize) -> Scratch {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest free buffer that is long enough, else the longest (grown below).
        let pick = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
        let mut buf = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
        drop(pool);
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Scratch { buf, len }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < KEEP {
            pool.push(buf);
        } else if let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].len()) {
            // Full: keep the longer of this buffer and the shortest kept one.
            if pool[i].len() < buf.len() {
                pool[i] = buf;
            }
        }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn buffers_have_the_length_asked_for_and_never_overlap() {
        let mut a = Scratch::take(1000);
        assert_eq!(a.len(), 1000);
        a.fill(3.0);
        drop(a);
        // A shorter request may reuse the longer buffer: it sees a prefix of the right length.
        let mut b = Scratch::take(10);
        assert_eq!(b.len(), 10);
        let mut c = Scratch::take(5000);
        assert_eq!(c.len(), 5000);
        b.fill(1.0);
        c.fill(2.0);
        assert!(b.iter().all(|&v| v == 1.0) && c.iter().all(|&v| v == 2.0));
        let (b0, c0) = (b.as_ptr() as usize, c.as_ptr() as usize);
        assert!(b0 + 4 * b.len() <= c0 || c0 + 4 * c.len() <= b0);
    }
}
