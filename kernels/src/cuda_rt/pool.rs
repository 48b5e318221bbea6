//! The per-device caching allocator's bookkeeping, and the graph-private pools that make a
//! captured CUDA graph's buffers its own.
//!
//! Outside a capture it is a free list keyed by exact length: a freed buffer waits for the
//! next request of its length. During a capture every buffer handed out or freed becomes the
//! graph's: a graph bakes in the addresses it was captured with, so those buffers must not be
//! handed to anyone else while the graph may replay. They go to the graph's private free list,
//! which later requests of the same capture draw on first, and stay there until the graph is
//! dropped ([`Pool::release`]), when they return to the shared list.
//!
//! Generic over the buffer type so that this logic is tested without a GPU.

use std::collections::{HashMap, HashSet};

/// What the pool needs to know about a buffer.
pub(crate) trait PoolBuf {
    /// Length in elements (the pool's key).
    fn elems(&self) -> usize;
    /// Size in bytes.
    fn bytes(&self) -> usize;
    /// Device address (identifies the buffer across hand-outs).
    fn addr(&self) -> u64;
}

#[derive(Default)]
struct Private<B> {
    free: HashMap<usize, Vec<B>>,
    /// Every buffer this graph has touched, free or not.
    owned: HashSet<u64>,
}

pub(crate) struct Pool<B> {
    free: HashMap<usize, Vec<B>>,
    bytes: usize,
    cap_bytes: usize,
    /// Requests that could not be served from a free list.
    pub(crate) allocations: u64,
    /// The graph being captured, if any.
    capturing: Option<u64>,
    graphs: HashMap<u64, Private<B>>,
    next_id: u64,
}

impl<B: PoolBuf> Pool<B> {
    pub(crate) fn new(cap_bytes: usize) -> Self {
        Pool {
            free: HashMap::new(),
            bytes: 0,
            cap_bytes,
            allocations: 0,
            capturing: None,
            graphs: HashMap::new(),
            next_id: 1,
        }
    }

    /// Bytes waiting in the shared free list.
    pub(crate) fn free_bytes(&self) -> usize {
        self.bytes
    }

    /// The graph being captured.
    pub(crate) fn capturing(&self) -> Option<u64> {
        self.capturing
    }

    /// A free buffer of `len` elements, or `None` when the caller must allocate one. During a
    /// capture the graph's own free list is tried first, and a buffer from the shared list
    /// becomes the graph's.
    pub(crate) fn take(&mut self, len: usize) -> Option<B> {
        if let Some(id) = self.capturing {
            let private = self
                .graphs
                .get_mut(&id)
                .expect("capturing graph registered");
            if let Some(b) = private.free.get_mut(&len).and_then(Vec::pop) {
                return Some(b);
            }
            let b = self.free.get_mut(&len).and_then(Vec::pop);
            match &b {
                Some(b) => {
                    self.bytes -= b.bytes();
                    private.owned.insert(b.addr());
                }
                None => self.allocations += 1,
            }
            return b;
        }
        let b = self.free.get_mut(&len).and_then(Vec::pop);
        match &b {
            Some(b) => self.bytes -= b.bytes(),
            None => self.allocations += 1,
        }
        b
    }

    /// Takes a freed buffer back. Returns it when the caller should free it instead (the
    /// shared list is at its cap).
    pub(crate) fn put(&mut self, b: B) -> Option<B> {
        let addr = b.addr();
        if let Some(id) = self.capturing {
            let private = self
                .graphs
                .get_mut(&id)
                .expect("capturing graph registered");
            private.owned.insert(addr);
            private.free.entry(b.elems()).or_default().push(b);
            return None;
        }
        if let Some(private) = self.graphs.values_mut().find(|p| p.owned.contains(&addr)) {
            private.free.entry(b.elems()).or_default().push(b);
            return None;
        }
        if self.bytes + b.bytes() > self.cap_bytes {
            return Some(b);
        }
        self.bytes += b.bytes();
        self.free.entry(b.elems()).or_default().push(b);
        None
    }

    /// Starts routing every hand-out and free to a new graph; returns its id.
    pub(crate) fn begin(&mut self) -> Result<u64, String> {
        if let Some(id) = self.capturing {
            return Err(format!(
                "graph {id} is already being captured on this device"
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.graphs.insert(
            id,
            Private {
                free: HashMap::new(),
                owned: HashSet::new(),
            },
        );
        self.capturing = Some(id);
        Ok(id)
    }

    /// Ends the capture; the graph keeps its buffers until [`Pool::release`].
    pub(crate) fn end(&mut self) {
        self.capturing = None;
    }

    /// Gives graph `id`'s buffers back to the shared list (it has been dropped, or its capture
    /// failed). Returns those over the cap, for the caller to free.
    pub(crate) fn release(&mut self, id: u64) -> Vec<B> {
        if self.capturing == Some(id) {
            self.capturing = None;
        }
        let mut over = Vec::new();
        if let Some(private) = self.graphs.remove(&id) {
            for b in private.free.into_values().flatten() {
                over.extend(self.put(b));
            }
        }
        over
    }

    /// Empties the shared free list (graphs keep theirs). Returns the buffers to free.
    pub(crate) fn drain(&mut self) -> Vec<B> {
        self.bytes = 0;
        self.free.drain().flat_map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in buffer: an address and a length.
    #[derive(Debug, PartialEq)]
    struct Fake(u64, usize);
    impl PoolBuf for Fake {
        fn elems(&self) -> usize {
            self.1
        }
        fn bytes(&self) -> usize {
            self.1 * 4
        }
        fn addr(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn reuses_by_exact_length_and_respects_the_cap() {
        let mut p = Pool::new(100);
        assert_eq!(p.take(10), None);
        assert_eq!(p.allocations, 1);
        assert_eq!(p.put(Fake(1, 10)), None);
        assert_eq!(p.free_bytes(), 40);
        assert_eq!(p.take(11), None, "another length is not served");
        assert_eq!(p.take(10), Some(Fake(1, 10)));
        assert_eq!(p.free_bytes(), 0);
        assert_eq!(p.put(Fake(2, 20)), None);
        assert_eq!(
            p.put(Fake(3, 20)),
            Some(Fake(3, 20)),
            "over the 100-byte cap"
        );
    }

    #[test]
    fn a_graph_keeps_what_it_touched_until_released() {
        let mut p = Pool::new(1 << 20);
        // Before the capture: two free buffers of length 8 and one live one (a parameter).
        p.put(Fake(1, 8));
        p.put(Fake(2, 8));
        let id = p.begin().unwrap();
        assert!(p.begin().is_err(), "one capture at a time");
        // In the capture: a hand-out from the shared list becomes the graph's...
        let a = p.take(8).unwrap();
        // ...a free goes to the graph's list, and the next request takes it back from there.
        p.put(a);
        let b = p.take(8).unwrap();
        assert_eq!(b.0, 2, "the graph's own free buffer is reused first");
        // A buffer freed during the capture that came from before it is the graph's too.
        p.put(Fake(9, 4));
        p.end();
        // After the capture the shared list still holds buffer 1, untouched by the graph.
        assert_eq!(p.take(8), Some(Fake(1, 8)));
        assert_eq!(p.take(4), None, "buffer 9 stays with the graph");
        // A graph buffer that was live at the end of the capture (an output) goes back to the
        // graph when freed, not to the shared list.
        p.put(b);
        assert_eq!(p.take(8), None);
        // Dropping the graph returns its buffers.
        assert!(p.release(id).is_empty());
        assert_eq!(p.take(8).map(|b| b.0), Some(2));
        assert_eq!(p.take(4), Some(Fake(9, 4)));
    }

    #[test]
    fn a_miss_during_capture_is_counted() {
        let mut p: Pool<Fake> = Pool::new(1 << 20);
        let id = p.begin().unwrap();
        let before = p.allocations;
        assert_eq!(p.take(5), None);
        assert_eq!(p.allocations, before + 1);
        p.release(id);
        assert_eq!(
            p.capturing(),
            None,
            "releasing the capturing graph ends its capture"
        );
    }
}
