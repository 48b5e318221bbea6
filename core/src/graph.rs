//! CUDA graphs: a training step captured once and replayed.
//!
//! Launching a DCGAN step op by op costs the host a few microseconds per kernel, and the GPU
//! waits for the host between small kernels. A CUDA graph records the step's kernels once
//! ([`capture`]) and replays them with one call ([`CapturedGraph::replay`]), so the GPU runs the
//! whole step back to back.
//!
//! A replay runs the recorded kernels on the recorded buffers, and nothing else. So a step to
//! be captured must keep to these rules:
//!
//! - **Inputs and outputs in fixed buffers.** The step reads its batch and noise from tensors
//!   made before the capture (refill them with [`Tensor::set`](crate::Tensor::set), which copies
//!   into the existing buffer), and what it returns (the losses) are tensors the graph rewrites
//!   on every replay; read them after it.
//! - **No host round trips inside.** Copies between host and device and waits for the device
//!   are refused during a capture with an error that says so. Read values after the replay.
//! - **State updated in place.** Parameters, optimizer moments and running statistics are
//!   updated in their own buffers (Adam and `set` do), never replaced by new tensors.
//! - **Host bookkeeping as hooks.** What the host does per step beside launching kernels (an
//!   optimizer's step count and the per-step constants it derives, a batch counter) is
//!   registered during the capture with [`on_replay`] and run before every replay.
//! - **Buffers from the pool.** Every buffer the step uses must come from the device's pool,
//!   which it does after one ordinary step at the same shapes: run the step once before
//!   capturing it. During the capture the pool gives the graph buffers of its own, which stay
//!   its own until it is dropped.
//!
//! The capture itself records the step without running it; [`capture`] then launches the
//! graph once, so that `capture(f)` has the effects of `f()`.

use crate::{Device, Error, Result};
use std::cell::RefCell;

/// Host bookkeeping to run before every replay.
type Hook = Box<dyn FnMut() -> Result<()>>;

thread_local! {
    /// The hooks registered by the capture running on this thread, if one is.
    static HOOKS: RefCell<Option<Vec<Hook>>> = const { RefCell::new(None) };
}

/// Whether this thread is capturing a graph.
pub fn capturing() -> bool {
    HOOKS.with(|h| h.borrow().is_some())
}

/// Registers `hook` to run before every replay of the graph this thread is capturing. Returns
/// `false` (and drops the hook) when no capture is running.
pub fn on_replay(hook: impl FnMut() -> Result<()> + 'static) -> bool {
    HOOKS.with(|h| match h.borrow_mut().as_mut() {
        Some(hooks) => {
            hooks.push(Box::new(hook));
            true
        }
        None => false,
    })
}

/// The host hooks registered while `f` ran, as if `f` were being captured, but with its ops
/// run as usual (on any device). [`capture`] is this around a CUDA stream capture; on its own
/// it lets a test check a step's replay bookkeeping without a GPU.
pub fn record_hooks<R>(f: impl FnOnce() -> Result<R>) -> Result<(R, ReplayHooks)> {
    if capturing() {
        return Err(Error::invalid(
            "cuda graph capture",
            "a capture is already running on this thread",
        ));
    }
    HOOKS.with(|h| *h.borrow_mut() = Some(Vec::new()));
    let result = f();
    let hooks = HOOKS.with(|h| h.borrow_mut().take()).unwrap_or_default();
    Ok((result?, ReplayHooks(hooks)))
}

/// The host hooks of a captured step, in the order they were registered.
pub struct ReplayHooks(Vec<Hook>);

impl ReplayHooks {
    /// Runs every hook once (what a replay does before launching the graph).
    pub fn run(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A captured step: the instantiated graph, the buffers it was captured with (held by the
/// device's pool until this is dropped), and the host hooks of its ops.
pub struct CapturedGraph {
    graph: gantry_kernels::cuda_rt::Graph,
    hooks: ReplayHooks,
}

impl std::fmt::Debug for CapturedGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CapturedGraph({:?}, {} hooks)",
            self.graph,
            self.hooks.0.len()
        )
    }
}

/// Captures what `f` queues on `device` into a graph, then runs the graph once. Returns the
/// graph and `f`'s result (whose tensors the graph rewrites on every replay).
///
/// Errors: `device` is not a CUDA device, a capture is already running on this thread, `f`
/// fails (for example by reading a value back, which a graph cannot do), or the driver
/// rejects the capture.
pub fn capture<R>(device: Device, f: impl FnOnce() -> Result<R>) -> Result<(CapturedGraph, R)> {
    let op = "cuda graph capture";
    let Device::Cuda(ordinal) = device else {
        return Err(Error::invalid(
            op,
            format!("CUDA graphs need a CUDA device, got {device}"),
        ));
    };
    if capturing() {
        return Err(Error::invalid(
            op,
            "a capture is already running on this thread",
        ));
    }
    let gpu = crate::cuda_backend::gpu(op, ordinal)?;
    gpu.begin_capture().map_err(|e| Error::device(op, e.0))?;
    let result = record_hooks(f);
    // The capture is ended even when `f` failed, so that the stream works again.
    let graph = gpu.end_capture().map_err(|e| Error::device(op, e.0));
    let (result, hooks) = result.map_err(|e| {
        Error::invalid(
            op,
            format!("the captured step failed: {e} (train without CUDA graphs to run it eagerly)"),
        )
    })?;
    let graph = graph?;
    graph.launch().map_err(|e| Error::device(op, e.0))?;
    Ok((CapturedGraph { graph, hooks }, result))
}

impl CapturedGraph {
    /// Runs the registered host hooks, then queues the graph. Does not wait for it: reading a
    /// result tensor does.
    pub fn replay(&mut self) -> Result<()> {
        self.hooks.run()?;
        self.graph
            .launch()
            .map_err(|e| Error::device("cuda graph replay", e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_register_only_during_a_capture() {
        assert!(!capturing());
        assert!(!on_replay(|| Ok(())), "no capture: the hook is dropped");
        let count = std::rc::Rc::new(std::cell::Cell::new(0));
        let c = count.clone();
        let ((), mut hooks) = record_hooks(|| {
            assert!(capturing());
            assert!(on_replay(move || {
                c.set(c.get() + 1);
                Ok(())
            }));
            assert!(record_hooks(|| Ok(())).is_err(), "no nesting");
            Ok(())
        })
        .unwrap();
        assert!(!capturing());
        assert_eq!((hooks.len(), count.get()), (1, 0), "registered, not run");
        hooks.run().unwrap();
        hooks.run().unwrap();
        assert_eq!(count.get(), 2);
        // A failing step leaves no capture behind.
        assert!(record_hooks(|| Err::<(), _>(Error::invalid("x", "y"))).is_err());
        assert!(!capturing());
    }

    #[test]
    fn capturing_on_the_cpu_is_refused_with_the_reason() {
        let e = capture(Device::Cpu, || Ok(())).unwrap_err().to_string();
        assert!(e.contains("CUDA graphs need a CUDA device"), "{e}");
        assert!(!capturing(), "a refused capture leaves nothing behind");
    }
}
