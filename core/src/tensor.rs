//! The [`Tensor`] handle: construction, accessors and conversions. The ops live in `ops/`.

use crate::autograd::{self, BackwardCtx, Node};
use crate::storage::{CpuElem, CpuStorage, Storage};
use crate::{DType, Device, Error, Result, Rng, Shape};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A unique tensor identity: the key of a [`crate::GradStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array on a device, with an optional record of the op that made it.
///
/// Cloning is cheap (an `Arc`). A tensor is one of three kinds:
/// - a **constant** (data, or anything computed from constants only): no gradient is tracked;
/// - a **variable** ([`Tensor::variable`]): a leaf the gradient is computed for (a parameter);
/// - an **op output** computed from at least one tracked tensor: it keeps its inputs and a
///   backward rule, so `loss.backward()` can walk back to the variables.
///
/// Storage is contiguous, row-major. `reshape` and `detach` share storage with their source;
/// other view-like ops copy.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<StorageCell>,
    shape: Shape,
    grad: GradKind,
}

/// A storage buffer and its version: a counter bumped by every write access, so the backward
/// pass can tell that a tensor it needs was modified in place after the op recorded it.
pub(crate) struct StorageCell {
    data: RwLock<Storage>,
    version: AtomicU64,
}

impl StorageCell {
    fn new(storage: Storage) -> Arc<Self> {
        Arc::new(StorageCell {
            data: RwLock::new(storage),
            version: AtomicU64::new(0),
        })
    }
}

impl Drop for StorageCell {
    /// Hands a large f32 buffer to the pool, so the next step's same-sized tensor reuses it
    /// (see `pool`).
    fn drop(&mut self) {
        let data = self.data.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Storage::Cpu(CpuStorage::F32(v)) = data {
            crate::pool::recycle_f32(std::mem::take(v));
        }
    }
}

pub(crate) enum GradKind {
    Constant,
    Variable,
    Op(Node),
}

impl Tensor {
    // ---------------------------------------------------------------- construction

    fn make(storage: Arc<StorageCell>, shape: Shape, grad: GradKind) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage,
            shape,
            grad,
        }))
    }

    /// A constant over `storage`, whose length the caller guarantees equals the shape's.
    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Tensor {
        let shape = shape.into();
        debug_assert_eq!(storage.len(), shape.elem_count());
        Self::make(StorageCell::new(storage), shape, GradKind::Constant)
    }

    /// The output of an op: records `inputs` and `backward` if gradients are enabled and any
    /// input is tracked, otherwise returns a constant.
    ///
    /// `backward` receives the inputs, the output and the output's gradient, and returns one
    /// optional gradient per input. It must not capture `inputs` or the output itself (the
    /// node already holds the inputs, and capturing the output would leak a cycle).
    pub(crate) fn from_op(
        storage: Storage,
        shape: impl Into<Shape>,
        name: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let shape = shape.into();
        debug_assert_eq!(storage.len(), shape.elem_count(), "{name}");
        let record = autograd::is_grad_enabled() && inputs.iter().any(|t| t.tracks_grad());
        let storage = StorageCell::new(storage);
        let grad = if record {
            GradKind::Op(Node::new(name, inputs, 0, Box::new(backward)))
        } else {
            GradKind::Constant
        };
        Self::make(storage, shape, grad)
    }

    /// Like [`Tensor::from_op`], but the output shares `self`'s storage under a new shape
    /// (used by reshape).
    pub(crate) fn share_op(
        &self,
        shape: Shape,
        name: &'static str,
        backward: impl Fn(&BackwardCtx) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let grad = if autograd::is_grad_enabled() && self.tracks_grad() {
            GradKind::Op(Node::new(name, &[self], self.version(), Box::new(backward)))
        } else {
            GradKind::Constant
        };
        Self::make(self.0.storage.clone(), shape, grad)
    }

    /// A constant tensor holding `data` in the given shape on `device`.
    pub fn from_vec<T: CpuElem>(
        data: Vec<T>,
        shape: impl Into<Shape>,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        shape.checked_elem_count("from_vec")?;
        if data.len() != shape.elem_count() {
            return Err(Error::shape(
                "from_vec",
                format!(
                    "{} values cannot fill shape {shape} ({} elements)",
                    data.len(),
                    shape.elem_count()
                ),
            ));
        }
        device.check_available("from_vec")?;
        Self::from_host(T::wrap(data), shape, device)
    }

    /// A constant made from host values, copied to `device` when that is a GPU.
    fn from_host(s: CpuStorage, shape: impl Into<Shape>, device: Device) -> Result<Tensor> {
        let s = match device {
            Device::Cpu => Storage::Cpu(s),
            d => Storage::Cpu(s).move_to(d)?,
        };
        Ok(Self::from_storage(s, shape))
    }

    /// A constant tensor copied from a slice.
    pub fn from_slice<T: CpuElem>(
        data: &[T],
        shape: impl Into<Shape>,
        device: Device,
    ) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape, device)
    }

    /// A 0-d tensor.
    pub fn scalar(value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(value, (), dtype, device)
    }

    /// A constant tensor with every element `value`.
    pub fn full(
        value: f64,
        shape: impl Into<Shape>,
        dtype: DType,
        device: Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        Ok(Self::from_storage(
            Storage::full(device, dtype, shape.checked_elem_count("full")?, value)?,
            shape,
        ))
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(0.0, shape, dtype, device)
    }

    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        Self::full(1.0, shape, dtype, device)
    }

    /// Zeros of this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Self::zeros(self.shape(), self.dtype(), self.device())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Self::ones(self.shape(), self.dtype(), self.device())
    }

    /// `0, 1, …, n − 1`.
    pub fn arange(n: usize, dtype: DType, device: Device) -> Result<Tensor> {
        device.check_available("arange")?;
        let s = CpuStorage::from_f64_iter(dtype, (0..n).map(|i| i as f64));
        Self::from_host(s, n, device)
    }

    /// Normal samples with the given mean and standard deviation, drawn from `rng` in row-major
    /// order (so the same seed gives the same tensor on every machine).
    pub fn randn(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        device.check_available("randn")?;
        shape.checked_elem_count("randn")?;
        let s = CpuStorage::from_f64_iter(
            dtype,
            (0..shape.elem_count()).map(|_| mean + std * rng.normal()),
        );
        Self::from_host(s, shape, device)
    }

    /// Uniform samples in `[lo, hi)`, drawn from `rng` in row-major order.
    pub fn rand(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: Device,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let shape = shape.into();
        device.check_available("rand")?;
        shape.checked_elem_count("rand")?;
        let s = CpuStorage::from_f64_iter(
            dtype,
            (0..shape.elem_count()).map(|_| rng.uniform_range(lo, hi)),
        );
        Self::from_host(s, shape, device)
    }

    // ---------------------------------------------------------------- autograd kinds

    /// A new leaf **variable** sharing this tensor's storage: gradients are computed for it.
    pub fn variable(&self) -> Tensor {
        Self::make(
            self.0.storage.clone(),
            self.shape().clone(),
            GradKind::Variable,
        )
    }

    /// A constant sharing this tensor's storage, cut off from the graph: no gradient flows
    /// through it (`G(z).detach()` when training the discriminator).
    pub fn detach(&self) -> Tensor {
        Self::make(
            self.0.storage.clone(),
            self.shape().clone(),
            GradKind::Constant,
        )
    }

    pub fn is_variable(&self) -> bool {
        matches!(self.0.grad, GradKind::Variable)
    }

    /// Whether gradients flow to or through this tensor (a variable or a recorded op output).
    pub fn tracks_grad(&self) -> bool {
        !matches!(self.0.grad, GradKind::Constant)
    }

    pub(crate) fn node(&self) -> Option<&Node> {
        match &self.0.grad {
            GradKind::Op(n) => Some(n),
            _ => None,
        }
    }

    /// The name of the op that produced this tensor, if it was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        self.node().map(|n| n.name)
    }

    // ---------------------------------------------------------------- accessors

    /// How many handles share this tensor (clones, and graph nodes that hold it as an input).
    /// A diagnostic: it shows whether a graph has been freed.
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.storage().dtype()
    }
    pub fn device(&self) -> Device {
        self.storage().device()
    }

    /// Read access to the storage. It is shared by every tensor made with `reshape`, `detach`
    /// or `variable` from the same source.
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0
            .storage
            .data
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// How many times this tensor's storage has been written in place.
    pub fn version(&self) -> u64 {
        self.0.storage.version.load(Ordering::Acquire)
    }

    /// Write access to the storage, for in-place updates such as an optimizer step. Every
    /// tensor sharing the storage sees the change. It bumps the storage's [`Tensor::version`]:
    /// a recorded graph that used this tensor refuses to run backward afterwards (as PyTorch's
    /// "modified by an inplace operation" check), so update parameters after the backward pass.
    pub fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self
            .0
            .storage
            .data
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.0.storage.version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// Overwrites this tensor's values with `src`'s (same shape and dtype; from another device,
    /// they are copied to this tensor's). Refused for
    /// op outputs in a recorded graph, whose values the backward pass may still need.
    pub fn set(&self, src: &Tensor) -> Result<()> {
        if self.node().is_some() {
            return Err(Error::invalid(
                "set",
                "tensor is the output of a recorded op, whose value its backward pass may need",
            ));
        }
        if self.shape() != src.shape() {
            return Err(Error::shape(
                "set",
                format!(
                    "source shape {} differs from destination {}",
                    src.shape(),
                    self.shape()
                ),
            ));
        }
        if src.dtype() != self.dtype() {
            return Err(Error::dtype_mismatch("set", self.dtype(), src.dtype()));
        }
        if Arc::ptr_eq(&self.0.storage, &src.0.storage) {
            return Ok(()); // the same buffer and, checked above, the same shape
        }
        // On a GPU the values are copied into this tensor's own buffer, which stays where it
        // is: a captured CUDA graph reads and writes its buffers by address.
        if self.storage_mut().assign_in_place(&src.storage())? {
            return Ok(());
        }
        // Copy first: `src` may share this storage, and holding its read lock while taking the
        // write lock would deadlock. From another device, the copy moves the values here.
        let data = if src.device() == self.device() {
            src.storage().clone()
        } else {
            src.storage().move_to(self.device())?
        };
        *self.storage_mut() = data;
        Ok(())
    }

    /// Moves this tensor's values to `device` in place: every handle to it (a model's
    /// parameter, an optimizer's reference) sees them there. For parameters and buffers
    /// (`Module::to_device`); refused for op outputs in a recorded graph, as [`Tensor::set`] is.
    pub fn move_to(&self, device: Device) -> Result<()> {
        if self.node().is_some() {
            return Err(Error::invalid(
                "move_to",
                "tensor is the output of a recorded op, whose value its backward pass may need",
            ));
        }
        device.check_available("move_to")?;
        if self.device() == device {
            return Ok(());
        }
        let moved = self.storage().move_to(device)?;
        *self.storage_mut() = moved;
        Ok(())
    }

    // ---------------------------------------------------------------- data out

    /// The elements in row-major order. The tensor's dtype must be `T`'s.
    pub fn to_vec<T: CpuElem>(&self) -> Result<Vec<T>> {
        let cpu = self.storage().to_cpu()?;
        T::slice(&cpu).map(|s| s.to_vec()).ok_or_else(|| {
            Error::dtype(
                "to_vec",
                format!("tensor has dtype {}, asked for {}", cpu.dtype(), T::DTYPE),
            )
        })
    }

    /// The elements converted to `f64`, whatever the dtype.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.storage().to_cpu()?.to_f64_vec())
    }

    /// The value of a one-element tensor (of any rank) as `f64`.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::shape(
                "to_scalar",
                format!("tensor has shape {}, not one element", self.shape()),
            ));
        }
        Ok(self.to_f64_vec()?[0])
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        device.check_available("to_device")?;
        let from = self.device();
        if device == from {
            return Ok(self.clone());
        }
        let moved = self.storage().move_to(device)?;
        // Differentiable, as in PyTorch: the gradient goes back to where the input lives.
        Ok(Tensor::from_op(
            moved,
            self.shape().clone(),
            "to_device",
            &[self],
            move |ctx| Ok(vec![Some(ctx.grad.to_device(from)?)]),
        ))
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor{} {} {}",
            self.shape(),
            self.dtype(),
            self.device()
        )?;
        if let Some(name) = self.op_name() {
            write!(f, " (from {name})")?;
        } else if self.is_variable() {
            write!(f, " (variable)")?;
        }
        if let Ok(values) = self.to_f64_vec() {
            let shown: Vec<String> = values.iter().take(8).map(|v| format!("{v:.4}")).collect();
            write!(
                f,
                " [{}{}]",
                shown.join(", "),
                if values.len() > 8 { ", …" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// Dropping a long chain of op outputs would otherwise recurse once per op (each node owns its
/// inputs). Unlink the graph iteratively instead: take the nodes of inputs this drop is the
/// last owner of onto an explicit stack.
impl Drop for TensorInner {
    fn drop(&mut self) {
        let GradKind::Op(node) = std::mem::replace(&mut self.grad, GradKind::Constant) else {
            return;
        };
        let mut stack = node.into_inputs();
        while let Some(t) = stack.pop() {
            if let Some(mut inner) = Arc::into_inner(t.0) {
                if let GradKind::Op(n) = std::mem::replace(&mut inner.grad, GradKind::Constant) {
                    stack.extend(n.into_inputs());
                }
                // `inner` drops here with no node, so this Drop returns at once.
            }
        }
    }
}
