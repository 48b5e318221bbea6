//! Reverse-mode automatic differentiation.
//!
//! Every op that reads a tracked tensor records a [`Node`]: its inputs and a backward rule.
//! `loss.backward()`:
//!
//! 1. sorts the recorded graph topologically (iteratively, so depth cannot overflow the stack);
//! 2. walks it from the loss back to the leaves, handing each node the gradient of its output
//!    and adding the gradients it returns into its inputs' entries (a tensor used twice gets the
//!    sum of both contributions);
//! 3. returns a [`GradStore`] with the gradient of every variable the loss depends on.
//!
//! There are no `.grad` fields to zero: each `backward()` returns fresh gradients, and an
//! optimizer steps whichever variables it owns. That suits GANs, where the generator's loss
//! runs back through the discriminator but only the generator is updated.

use crate::tensor::TensorId;
use crate::{Error, Result, Tensor};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

pub(crate) type BackwardFn = Box<dyn Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// How an op output was made.
pub(crate) struct Node {
    pub name: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
    /// The storage versions of the inputs and of the output when the op ran.
    versions: Vec<u64>,
    output_version: u64,
}

impl Node {
    pub(crate) fn new(
        name: &'static str,
        inputs: &[&Tensor],
        output_version: u64,
        backward: BackwardFn,
    ) -> Self {
        Node {
            name,
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            versions: inputs.iter().map(|t| t.version()).collect(),
            output_version,
            backward,
        }
    }

    /// An error if an input or the output was written in place since the op recorded it:
    /// the backward rule would read values the forward pass never saw.
    fn check_versions(&self, output: &Tensor) -> Result<()> {
        let changed = self
            .inputs
            .iter()
            .zip(&self.versions)
            .position(|(t, &v)| t.version() != v);
        if changed.is_some() || output.version() != self.output_version {
            let what = changed.map_or("its output".to_string(), |i| format!("input {i}"));
            return Err(Error::invalid(
                self.name,
                format!(
                    "{what} was modified in place (set / storage_mut) after the op was recorded, \
                     so its backward pass cannot run; update tensors after backward()"
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn into_inputs(self) -> Vec<Tensor> {
        self.inputs
    }
}

/// What a backward rule sees.
pub struct BackwardCtx<'a> {
    /// The op's inputs, in the order it recorded them.
    pub inputs: &'a [Tensor],
    /// The op's output (its value; its gradient is `grad`).
    pub output: &'a Tensor,
    /// The gradient of the loss with respect to `output`.
    pub grad: &'a Tensor,
}

impl BackwardCtx<'_> {
    /// Whether input `i` wants a gradient; rules skip the work for inputs that do not.
    pub fn needs(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(|t| t.tracks_grad())
    }
}

/// Gradients from one backward pass, by tensor.
#[derive(Default, Debug)]
pub struct GradStore(HashMap<TensorId, Tensor>);

impl GradStore {
    /// The gradient of `t`, if the loss depends on it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.0.get(&t.id())
    }
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor> {
        self.0.get(&id)
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.0.remove(&t.id())
    }
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) -> Option<Tensor> {
        self.0.insert(t.id(), grad)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.0.keys().copied()
    }
}

thread_local! {
    static NO_GRAD_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether ops on this thread record graphs (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}

/// While alive, ops on this thread record no graph. Nests. Not `Send`: the setting belongs to
/// the thread that made the guard.
///
/// ```compile_fail
/// let guard = gantry_core::NoGradGuard::new();
/// std::thread::spawn(move || drop(guard)); // error: `*const ()` cannot be sent between threads
/// ```
pub struct NoGradGuard(std::marker::PhantomData<*const ()>);

impl NoGradGuard {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
        NoGradGuard(std::marker::PhantomData)
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Runs `f` with graph recording off (evaluation, sampling, optimizer updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// The recorded op outputs `root` depends on, inputs before outputs. Iterative depth-first
/// search: a tensor is pushed once to expand its inputs and once more to be emitted after them.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, inputs_done)) = stack.pop() {
        if inputs_done {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        if let Some(node) = t.node() {
            stack.push((t.clone(), true));
            for input in node
                .inputs
                .iter()
                .filter(|i| i.node().is_some() && !visited.contains(&i.id()))
            {
                stack.push((input.clone(), false));
            }
        }
    }
    order
}

impl Tensor {
    /// Back-propagates from this scalar (one-element) tensor. See the module docs.
    pub fn backward(&self) -> Result<GradStore> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "backward",
                format!(
                    "the loss must have one element, got shape {}; reduce it or use backward_with",
                    self.shape()
                ),
            ));
        }
        let seed = Tensor::ones(self.shape(), self.dtype(), self.device())?;
        self.backward_with(&seed)
    }

    /// Back-propagates the gradient `grad` (same shape as `self`) of some scalar with respect
    /// to this tensor.
    pub fn backward_with(&self, grad: &Tensor) -> Result<GradStore> {
        if grad.shape() != self.shape() {
            return Err(Error::shape(
                "backward",
                format!(
                    "gradient shape {} differs from tensor shape {}",
                    grad.shape(),
                    self.shape()
                ),
            ));
        }
        crate::ops::check_same("backward", &[self, grad])?;
        let _no_grad = NoGradGuard::new();
        let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
        if self.tracks_grad() {
            grads.insert(self.id(), grad.detach());
        }
        for t in topological_order(self).iter().rev() {
            // An op output's gradient is complete once every consumer has run; consume it.
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            let node = t.node().expect("topological_order yields op outputs only");
            node.check_versions(t)?;
            let ctx = BackwardCtx {
                inputs: &node.inputs,
                output: t,
                grad: &g,
            };
            let input_grads = (node.backward)(&ctx).map_err(|e| match e {
                Error::Shape { op, msg } => {
                    Error::shape(op, format!("{msg} (in the backward pass of {})", node.name))
                }
                other => other,
            })?;
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !input.tracks_grad() {
                    continue;
                }
                debug_assert_eq!(
                    ig.shape(),
                    input.shape(),
                    "gradient shape from the backward of {}",
                    node.name
                );
                let total = match grads.remove(&input.id()) {
                    Some(prev) => prev.add(&ig)?,
                    None => ig,
                };
                grads.insert(input.id(), total);
            }
        }
        // What is left are the gradients of the variables (leaves).
        Ok(GradStore(grads))
    }
}
