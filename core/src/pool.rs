//! Reuse of large host buffers between training steps.
//!
//! A training step allocates the same activations and gradients, of the same sizes, every
//! step. Large allocations come straight from the operating system (glibc `mmap`s them), so
//! without reuse every step pays for fresh pages: a page fault and a kernel-side zeroing per
//! 4 KiB, about a tenth of a DCGAN step on 2 cores. Instead, when a tensor's storage is
//! dropped its `f32` buffer (if large) is kept here, keyed by its exact length, and the next
//! request for that length takes it back. After the first step, a step at fixed shapes
//! allocates nothing new.
//!
//! Small buffers (under [`MIN_LEN`] elements) are left to the allocator, whose own free lists
//! serve them well. The pool holds at most [`MAX_BYTES`]; a buffer that would exceed it is
//! freed instead. [`release_buffers`] empties it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers shorter than this (64 KiB of f32) are not pooled.
pub const MIN_LEN: usize = 1 << 14;
/// The most the pool keeps, in bytes.
pub const MAX_BYTES: usize = 2 << 30;

#[derive(Default)]
struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
    hits: u64,
    misses: u64,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    // A panic while the lock was held cannot leave the map inconsistent (each operation is a
    // single push or pop), so a poisoned lock is simply taken over.
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Pool::default))
}

/// A zero-filled `f32` buffer of `len` elements, reused from the pool when one of that length
/// is there.
pub(crate) fn zeros_f32(len: usize) -> Vec<f32> {
    if len < MIN_LEN {
        return vec![0.0; len];
    }
    let reused = with_pool(|p| {
        let v = p.free.get_mut(&len).and_then(Vec::pop);
        match &v {
            Some(_) => {
                p.hits += 1;
                p.bytes -= len * 4;
            }
            None => p.misses += 1,
        }
        v
    });
    match reused {
        Some(mut v) => {
            v.fill(0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// Gives a buffer back for reuse (or frees it, when small or when the pool is full).
pub(crate) fn recycle_f32(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_LEN || v.capacity() != len {
        return;
    }
    with_pool(|p| {
        if p.bytes + len * 4 <= MAX_BYTES {
            p.bytes += len * 4;
            p.free.entry(len).or_default().push(v);
        }
    });
}

/// What the pool holds and how often it has served a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes held for reuse.
    pub bytes: usize,
    /// Requests served from the pool.
    pub hits: u64,
    /// Requests that had to allocate.
    pub misses: u64,
}

/// The pool's current contents and counters (process-wide).
pub fn pool_stats() -> PoolStats {
    with_pool(|p| PoolStats {
        bytes: p.bytes,
        hits: p.hits,
        misses: p.misses,
    })
}

/// Frees every buffer the pool holds (for example after training, before other work).
pub fn release_buffers() {
    with_pool(|p| {
        p.free.clear();
        p.bytes = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_zeroed() {
        // A length no other test uses, so concurrent tests cannot take it.
        let len = MIN_LEN + 12_345;
        let mut v = zeros_f32(len);
        v.fill(7.0);
        let ptr = v.as_ptr();
        recycle_f32(v);
        let w = zeros_f32(len);
        assert_eq!(w.as_ptr(), ptr, "the recycled buffer is handed out again");
        assert!(w.iter().all(|&x| x == 0.0), "and it comes back zeroed");
    }
}

#[cfg(test)]
mod tensor_tests {
    use crate::storage::{CpuStorage, Storage};
    use crate::{DType, Device, Tensor};

    fn address(t: &Tensor) -> usize {
        match &*t.storage() {
            Storage::Cpu(CpuStorage::F32(v)) => v.as_ptr() as usize,
            _ => unreachable!("an f32 CPU tensor"),
        }
    }

    #[test]
    fn a_dropped_op_output_is_reused_by_the_next_op_of_its_size() -> crate::Result<()> {
        // A length no other test uses, so concurrent tests cannot take the buffer.
        let len = super::MIN_LEN + 777;
        let x = Tensor::full(-1.5, [len], DType::F32, Device::Cpu)?;
        let y = x.relu()?;
        let first = address(&y);
        drop(y);
        let z = x.relu()?;
        assert_eq!(address(&z), first);
        assert!(z.to_vec::<f32>()?.iter().all(|&v| v == 0.0));
        Ok(())
    }
}
