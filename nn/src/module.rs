//! The [`Module`] trait and the walks over a module tree.
//!
//! A module is a node of a tree, as in PyTorch: it owns some tensors (its parameters, which
//! are trained, and its buffers, which are state such as BatchNorm's running statistics) and
//! some named children. A tensor's full name is the dotted path to it, `main.1.running_mean`,
//! exactly the key PyTorch's `state_dict()` gives the equivalent module tree, so checkpoints
//! move between the two.

use gantry_core::{Device, Result, Tensor, UnaryOp};

/// Which behaviour a forward pass uses: BatchNorm normalises with the batch's statistics and
/// updates its running ones in [`Mode::Train`], and uses the running ones in [`Mode::Eval`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// What a module's tensor is: a [`Role::Parameter`] is a gradient-tracking variable that an
/// optimizer steps; a [`Role::Buffer`] is state saved in checkpoints but not trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Parameter,
    Buffer,
}

/// A module's own tensor, by its local name (`"weight"`, `"running_mean"`).
pub struct Slot<'a> {
    pub name: &'static str,
    pub tensor: &'a Tensor,
    pub role: Role,
}

impl<'a> Slot<'a> {
    pub fn param(name: &'static str, tensor: &'a Tensor) -> Self {
        Slot {
            name,
            tensor,
            role: Role::Parameter,
        }
    }
    pub fn buffer(name: &'static str, tensor: &'a Tensor) -> Self {
        Slot {
            name,
            tensor,
            role: Role::Buffer,
        }
    }
    /// The `weight` and optional `bias` parameters of a conv or linear layer.
    pub fn weight_and_bias(weight: &'a Tensor, bias: Option<&'a Tensor>) -> Vec<Self> {
        let mut s = vec![Slot::param("weight", weight)];
        s.extend(bias.map(|b| Slot::param("bias", b)));
        s
    }
}

/// A layer or a tree of layers.
///
/// Modules take `&self` everywhere: tensors share their storage, so BatchNorm updates its
/// running statistics and an optimizer updates the weights in place through the handles the
/// module holds.
pub trait Module: Send + Sync {
    /// The PyTorch class this module corresponds to (`"Conv2d"`, `"BatchNorm2d"`): what
    /// initialisers such as [`crate::init::dcgan`] dispatch on.
    fn kind(&self) -> &'static str;

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor>;

    /// This module's own parameters and buffers, without its children's.
    fn slots(&self) -> Vec<Slot<'_>> {
        Vec::new()
    }

    /// The child modules, with their names (`"0"`, `"1"` in a [`crate::Sequential`]).
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// For a stateless elementwise activation (ReLU, LeakyReLU, Tanh, Sigmoid): the op it
    /// applies, so that the layer before it may fuse it (see [`Module::forward_then`]).
    fn pointwise(&self) -> Option<UnaryOp> {
        None
    }

    /// `act(self.forward(x))` in one fused op, or `None` if this module cannot fuse (the
    /// default). [`crate::Sequential`] asks this of every layer followed by an activation;
    /// BatchNorm fuses, which saves a write and a read of the whole activation both forward
    /// and backward. The result must equal the two modules applied in turn.
    fn forward_then(&self, x: &Tensor, mode: Mode, act: UnaryOp) -> Result<Option<Tensor>> {
        let _ = (x, mode, act);
        Ok(None)
    }
}

/// A tensor of a module tree under its full dotted name.
#[derive(Clone, Debug)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
    pub role: Role,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Walks over a module tree, in PyTorch's order (a module's own tensors, then its children's
/// depth first), so listings and checkpoints come out in `state_dict()` order.
pub trait ModuleExt: Module {
    /// Every module of the tree (this one first, as `""`) with its dotted path.
    fn modules(&self) -> Vec<(String, &dyn Module)> {
        let mut out = Vec::new();
        collect_modules(self.as_dyn(), String::new(), &mut out);
        out
    }

    /// Every parameter and buffer with its full name and role.
    fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        collect_tensors(self.as_dyn(), String::new(), &mut out);
        out
    }

    /// The parameters, named: what an optimizer is built from.
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_tensors()
            .into_iter()
            .filter(|t| t.role == Role::Parameter)
            .map(|t| (t.name, t.tensor))
            .collect()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.named_tensors()
            .into_iter()
            .filter(|t| t.role == Role::Buffer)
            .map(|t| (t.name, t.tensor))
            .collect()
    }

    /// Moves every `f32` parameter and buffer to `device` in place (as PyTorch's
    /// `module.to(device)`). Integer buffers (BatchNorm's `num_batches_tracked`) stay on the
    /// host: they are counters the host updates, and GPUs hold only `f32` here.
    fn to_device(&self, device: Device) -> Result<()> {
        for t in self.named_tensors() {
            if t.tensor.dtype() == gantry_core::DType::F32 {
                t.tensor.move_to(device)?;
            }
        }
        Ok(())
    }

    /// The total number of trainable values.
    fn parameter_count(&self) -> usize {
        self.named_parameters()
            .iter()
            .map(|(_, t)| t.elem_count())
            .sum()
    }

    #[doc(hidden)]
    fn as_dyn(&self) -> &dyn Module;
}

impl<M: Module> ModuleExt for M {
    fn as_dyn(&self) -> &dyn Module {
        self
    }
}

impl ModuleExt for dyn Module + '_ {
    fn as_dyn(&self) -> &dyn Module {
        self
    }
}

fn collect_modules<'a>(m: &'a dyn Module, path: String, out: &mut Vec<(String, &'a dyn Module)>) {
    let children = m.children();
    out.push((path.clone(), m));
    for (name, child) in children {
        collect_modules(child, join(&path, &name), out);
    }
}

fn collect_tensors(m: &dyn Module, path: String, out: &mut Vec<NamedTensor>) {
    for s in m.slots() {
        out.push(NamedTensor {
            name: join(&path, s.name),
            tensor: s.tensor.clone(),
            role: s.role,
        });
    }
    for (name, child) in m.children() {
        collect_tensors(child, join(&path, &name), out);
    }
}
