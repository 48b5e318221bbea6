//! Optimizers: Adam and SGD with PyTorch's exact update rules.
//!
//! An optimizer owns a chosen list of named parameters and steps only those, from a
//! [`GradStore`]. That is what a GAN needs: the generator's loss back-propagates through the
//! discriminator and produces gradients for both, but the generator's optimizer must move only
//! the generator. A parameter without a gradient in the store is skipped, its state untouched
//! (as PyTorch skips parameters whose `.grad` is `None`).
//!
//! Adam steps every parameter in one fused pass over flat moment buffers; SGD takes one fused
//! pass per parameter (`gantry_kernels::optim`). State (moments,
//! momentum buffers, per-parameter step counts) saves to and loads from safetensors, named
//! `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`, `<param>.momentum_buffer`.

use crate::checkpoint::{load_tensors, save_tensors};
use gantry_core::storage::Storage;
use gantry_core::{graph, AdamStep, AdamTable, Device, Error, GradStore, Result, SgdStep, Tensor};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// What every optimizer does.
pub trait Optimizer {
    /// Updates every owned parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// The state as named tensors (what [`Optimizer::save`] writes).
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// Restores state from named tensors; every name must belong to an owned parameter, with
    /// its shape.
    fn load_state_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()>;

    /// Writes the state as safetensors, atomically.
    fn save(&self, path: &Path) -> Result<()> {
        save_tensors(path, &self.state_tensors()?, None)
    }
    fn load(&mut self, path: &Path) -> Result<()> {
        self.load_state_tensors(&load_tensors(path)?.tensors)
    }
}

/// The owned parameters: checked to be unique, named variables.
struct Params(Vec<(String, Tensor)>);

impl Params {
    fn new(op: &'static str, params: Vec<(String, Tensor)>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for (name, t) in &params {
            if !t.is_variable() {
                return Err(Error::invalid(
                    op,
                    format!("{name} {} is not a variable (parameters must be leaves that track gradients)", t.shape()),
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(Error::invalid(
                    op,
                    format!("two parameters are named {name}"),
                ));
            }
        }
        Ok(Params(params))
    }

    /// The gradient of parameter `i`, if any, checked against the parameter's shape.
    fn grad<'g>(
        &self,
        op: &'static str,
        i: usize,
        grads: &'g GradStore,
    ) -> Result<Option<&'g Tensor>> {
        let (name, p) = &self.0[i];
        match grads.get(p) {
            Some(g) if g.shape() != p.shape() => Err(Error::shape(
                op,
                format!(
                    "gradient of {name} has shape {}, the parameter {}",
                    g.shape(),
                    p.shape()
                ),
            )),
            g => Ok(g),
        }
    }

    /// Splits saved state names `<param>.<field>` into (parameter index, field, tensor).
    fn parse_state<'a>(
        &self,
        op: &'static str,
        tensors: &'a [(String, Tensor)],
        fields: &[&'static str],
    ) -> Result<Vec<(usize, &'static str, &'a Tensor)>> {
        let index: HashMap<&str, usize> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (name, t) in tensors {
            let parsed = name
                .rsplit_once('.')
                .and_then(|(p, f)| Some((*index.get(p)?, fields.iter().find(|&&x| x == f)?)));
            match parsed {
                None => problems.push(format!("unexpected: {name}")),
                Some((i, &field)) => {
                    let want = if field == "step" {
                        &[][..]
                    } else {
                        self.0[i].1.dims()
                    };
                    if t.dims() != want {
                        problems.push(format!(
                            "wrong shape: {name} is {} but should be {want:?}",
                            t.shape()
                        ));
                    } else {
                        out.push((i, field, t));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Error::invalid(
                op,
                format!(
                    "{} problem(s), nothing loaded:\n  {}",
                    problems.len(),
                    problems.join("\n  ")
                ),
            ))
        }
    }
}

fn step_tensor(step: u64) -> Result<Tensor> {
    Tensor::from_vec(vec![step as i64], (), Device::Cpu)
}

/// A fresh buffer holding `t` in `like`'s dtype (state files may hold f64 moments for f32
/// parameters). Fresh, so that state loaded from another optimizer's tensors is not shared.
fn state_copy(t: &Tensor, like: &Tensor) -> Result<Tensor> {
    let copy = like.zeros_like()?;
    copy.set(&t.to_dtype(like.dtype())?)?;
    Ok(copy)
}

// ------------------------------------------------------------------------------------ Adam

/// Adam's hyper-parameters; the defaults are PyTorch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8,
/// no weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    /// L2 penalty added to the gradient (`g + wd·θ`, PyTorch's `Adam`, not `AdamW`).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamConfig {
    /// The DCGAN paper's setting: lr 2e-4, β₁ 0.5.
    pub fn dcgan() -> Self {
        AdamConfig {
            lr: 2e-4,
            betas: (0.5, 0.999),
            ..Default::default()
        }
    }
}

/// Adam (Kingma & Ba), exactly as `torch.optim.Adam` (single-tensor path): bias-corrected
/// moments, ε added after the square root, optional L2 weight decay.
///
/// The moments of all parameters live in two flat buffers, end to end in parameter order, and
/// a step updates every parameter that has a gradient in one fused parallel pass
/// (`gantry_kernels::optim::cpu::adam_step_fused`). All parameters therefore share one dtype
/// and device.
pub struct Adam {
    params: Params,
    /// First and second moments: parameter `i`'s at `offsets[i]..offsets[i + 1]`.
    m: Tensor,
    v: Tensor,
    offsets: Vec<usize>,
    /// Shared with the replay hook of a captured CUDA graph (see [`Optimizer::step`]).
    host: Arc<Mutex<AdamHost>>,
}

/// Adam's host-side state: what a step computes its constants from.
#[derive(Debug)]
struct AdamHost {
    config: AdamConfig,
    /// Steps taken per parameter; 0 means it has no state yet (and its moments are zero).
    steps: Vec<u64>,
    /// The kernel's table of per-parameter constants (a device buffer on a GPU).
    table: AdamTable,
}

impl AdamHost {
    /// The constants of parameter `i`'s next step.
    fn next_step(&self, i: usize) -> AdamStep {
        let c = self.config;
        AdamStep {
            lr: c.lr,
            beta1: c.betas.0,
            beta2: c.betas.1,
            eps: c.eps,
            weight_decay: c.weight_decay,
            step: self.steps[i] + 1,
        }
    }
}

impl Adam {
    /// Steps the given named parameters (e.g. `generator.named_parameters()`).
    pub fn new(params: Vec<(String, Tensor)>, config: AdamConfig) -> Result<Self> {
        let op = "Adam";
        let (b1, b2) = config.betas;
        if !(config.lr >= 0.0
            && (0.0..1.0).contains(&b1)
            && (0.0..1.0).contains(&b2)
            && config.eps >= 0.0
            && config.weight_decay >= 0.0)
        {
            return Err(Error::invalid(op, format!("invalid hyper-parameters {config:?} (need lr, eps, weight_decay ≥ 0 and betas in [0, 1))")));
        }
        let params = Params::new(op, params)?;
        let (dtype, device) = match params.0.first() {
            Some((_, p)) => (p.dtype(), p.device()),
            None => (gantry_core::DType::F32, Device::Cpu),
        };
        let mut offsets = vec![0];
        for (name, p) in &params.0 {
            if p.dtype() != dtype || p.device() != device {
                return Err(Error::invalid(
                    op,
                    format!(
                        "all parameters must share one dtype and device (their moments are one flat buffer): {} is {:?} on {:?}, {} is {:?} on {:?}",
                        params.0[0].0, dtype, device, name, p.dtype(), p.device()
                    ),
                ));
            }
            offsets.push(offsets.last().unwrap() + p.elem_count());
        }
        let total = *offsets.last().unwrap();
        let m = Tensor::zeros([total], dtype, device)?;
        let v = Tensor::zeros([total], dtype, device)?;
        let steps = vec![0; params.0.len()];
        Ok(Adam {
            params,
            m,
            v,
            offsets,
            host: Arc::new(Mutex::new(AdamHost {
                config,
                steps,
                table: AdamTable::default(),
            })),
        })
    }
    fn host(&self) -> MutexGuard<'_, AdamHost> {
        // Each operation on the state completes under the lock; a panic cannot tear it.
        self.host.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn config(&self) -> AdamConfig {
        self.host().config
    }
    /// How many steps parameter `name` has taken.
    pub fn steps_of(&self, name: &str) -> Option<u64> {
        let i = self.params.0.iter().position(|(n, _)| n == name)?;
        Some(self.host().steps[i])
    }
    /// Parameter `i`'s slice of a flat moment buffer, in the parameter's shape.
    fn moment(&self, flat: &Tensor, i: usize) -> Result<Tensor> {
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        flat.narrow(0, start, end - start)?
            .reshape(self.params.0[i].1.shape().clone())
    }
}

impl Optimizer for Adam {
    /// On a GPU during a CUDA graph capture, this also registers a replay hook that advances
    /// the step counts and rewrites the kernel's table of constants (from the current
    /// learning rate) before each replay, as this call does for the captured step.
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mut stepping = Vec::new();
        for i in 0..self.params.0.len() {
            if let Some(g) = self.params.grad("Adam.step", i, grads)? {
                stepping.push((i, g));
            }
        }
        let mut param_guards: Vec<_> = stepping
            .iter()
            .map(|&(i, _)| self.params.0[i].1.storage_mut())
            .collect();
        let grad_guards: Vec<_> = stepping.iter().map(|(_, g)| g.storage()).collect();
        let mut params: Vec<&mut Storage> = param_guards.iter_mut().map(|g| &mut **g).collect();
        let grads: Vec<&Storage> = grad_guards.iter().map(|g| &**g).collect();
        let ranges: Vec<_> = stepping
            .iter()
            .map(|&(i, _)| self.offsets[i]..self.offsets[i + 1])
            .collect();
        let mut host = self.host();
        let steps: Vec<_> = stepping.iter().map(|&(i, _)| host.next_step(i)).collect();
        Storage::adam_step_fused(
            &mut params,
            &grads,
            &mut self.m.storage_mut(),
            &mut self.v.storage_mut(),
            &ranges,
            &steps,
            &mut host.table,
        )?;
        for &(i, _) in &stepping {
            host.steps[i] += 1;
        }
        if graph::capturing() {
            let shared = self.host.clone();
            let stepped: Vec<usize> = stepping.iter().map(|&(i, _)| i).collect();
            graph::on_replay(move || {
                let mut host = shared.lock().unwrap_or_else(|e| e.into_inner());
                let steps: Vec<_> = stepped.iter().map(|&i| host.next_step(i)).collect();
                host.table.restep(&steps)?;
                for &i in &stepped {
                    host.steps[i] += 1;
                }
                Ok(())
            });
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.host().config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.host().config.lr = lr;
    }
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        let host = self.host();
        for (i, (name, _)) in self.params.0.iter().enumerate() {
            if host.steps[i] > 0 {
                out.push((format!("{name}.exp_avg"), self.moment(&self.m, i)?));
                out.push((format!("{name}.exp_avg_sq"), self.moment(&self.v, i)?));
                out.push((format!("{name}.step"), step_tensor(host.steps[i])?));
            }
        }
        Ok(out)
    }
    fn load_state_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let parsed =
            self.params
                .parse_state("Adam.load", tensors, &["exp_avg", "exp_avg_sq", "step"])?;
        let mut fresh: Vec<[Option<Tensor>; 3]> =
            self.params.0.iter().map(|_| [None, None, None]).collect();
        for (i, field, t) in parsed {
            let slot = ["exp_avg", "exp_avg_sq", "step"]
                .iter()
                .position(|&f| f == field)
                .expect("known field");
            fresh[i][slot] = Some(t.clone());
        }
        // Build both flat buffers anew, so nothing changes unless every parameter's state is
        // whole, and so the loaded tensors are copied rather than shared.
        let (mut ms, mut vs, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for (i, [m, v, step]) in fresh.into_iter().enumerate() {
            let (name, p) = &self.params.0[i];
            let flat = |t: &Tensor| -> Result<Tensor> {
                t.to_dtype(p.dtype())?
                    .to_device(p.device())?
                    .reshape([p.elem_count()])
            };
            match (m, v, step) {
                (None, None, None) => {
                    let zero = Tensor::zeros([p.elem_count()], p.dtype(), p.device())?;
                    ms.push(zero.clone());
                    vs.push(zero);
                    steps.push(0);
                }
                (Some(m), Some(v), Some(step)) => {
                    ms.push(flat(&m)?);
                    vs.push(flat(&v)?);
                    steps.push(step.to_scalar()? as u64);
                }
                _ => {
                    return Err(Error::invalid(
                        "Adam.load",
                        format!("{name}: exp_avg, exp_avg_sq and step must be saved together"),
                    ))
                }
            }
        }
        let total = *self.offsets.last().expect("offsets start at 0");
        let empty = self.m.zeros_like()?;
        let concat = |parts: Vec<Tensor>| -> Result<Tensor> {
            if parts.is_empty() {
                return Ok(empty.clone());
            }
            // concat writes a fresh buffer, so no loaded tensor's storage is shared.
            let flat = Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)?.detach();
            debug_assert_eq!(flat.elem_count(), total);
            Ok(flat)
        };
        self.m = concat(ms)?;
        self.v = concat(vs)?;
        self.host().steps = steps;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------ SGD

/// SGD's hyper-parameters (PyTorch's defaults apart from the learning rate, which PyTorch
/// requires).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl SgdConfig {
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
    pub fn with_momentum(self, momentum: f64) -> Self {
        SgdConfig { momentum, ..self }
    }
    pub fn with_nesterov(self) -> Self {
        SgdConfig {
            nesterov: true,
            ..self
        }
    }
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2
/// weight decay, exactly as `torch.optim.SGD`.
pub struct Sgd {
    params: Params,
    config: SgdConfig,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(params: Vec<(String, Tensor)>, config: SgdConfig) -> Result<Self> {
        let op = "SGD";
        let c = config;
        if !(c.lr >= 0.0 && c.momentum >= 0.0 && c.weight_decay >= 0.0) {
            return Err(Error::invalid(
                op,
                format!("invalid hyper-parameters {c:?}"),
            ));
        }
        if c.nesterov && (c.momentum <= 0.0 || c.dampening != 0.0) {
            return Err(Error::invalid(
                op,
                "Nesterov momentum requires a momentum and zero dampening",
            ));
        }
        let params = Params::new(op, params)?;
        let buffers = params.0.iter().map(|_| None).collect();
        Ok(Sgd {
            params,
            config,
            buffers,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for i in 0..self.params.0.len() {
            let Some(g) = self.params.grad("SGD.step", i, grads)? else {
                continue;
            };
            let p = &self.params.0[i].1;
            let first = c.momentum != 0.0 && self.buffers[i].is_none();
            if first {
                self.buffers[i] = Some(p.zeros_like()?);
            }
            let h = SgdStep {
                lr: c.lr,
                momentum: c.momentum,
                dampening: c.dampening,
                weight_decay: c.weight_decay,
                nesterov: c.nesterov,
                first,
            };
            let mut buf = match (c.momentum != 0.0, &self.buffers[i]) {
                (true, Some(b)) => Some(b.storage_mut()),
                _ => None,
            };
            p.storage_mut()
                .sgd_step(&g.storage(), buf.as_deref_mut(), &h)?;
        }
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
    fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self
            .params
            .0
            .iter()
            .zip(&self.buffers)
            .filter_map(|((name, _), b)| Some((format!("{name}.momentum_buffer"), b.clone()?)))
            .collect())
    }
    fn load_state_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let parsed = self
            .params
            .parse_state("SGD.load", tensors, &["momentum_buffer"])?;
        let mut buffers: Vec<Option<Tensor>> = self.params.0.iter().map(|_| None).collect();
        for (i, _, t) in parsed {
            buffers[i] = Some(state_copy(t, &self.params.0[i].1)?);
        }
        self.buffers = buffers;
        Ok(())
    }
}

// ------------------------------------------------------------------------------ loss scaling

/// Dynamic loss scaling for f16 training (PyTorch's `GradScaler`, with its defaults).
///
/// f16 holds values from 6e-8 to 65504: the small gradients of a deep network underflow to
/// zero when a backward pass rounds them to f16. Scaling the loss by `scale` scales every
/// gradient by the same factor, up into f16's range; the gradients are divided by it again in
/// f32 before the optimizer sees them. Too large a scale overflows to inf instead: then the
/// step is skipped and the scale halved. After `growth_interval` good steps in a row it is
/// doubled, so it settles just below the largest safe value.
#[derive(Clone, Debug, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps in a row before the scale doubles.
    pub growth_interval: u64,
    good_steps: u64,
    skipped: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65_536.0,
            growth_interval: 2000,
            good_steps: 0,
            skipped: 0,
        }
    }
}

impl LossScaler {
    /// `loss · scale`, the tensor to call `backward` on.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        loss.mul_scalar(self.scale)
    }

    /// Divides the gradients of `params` in `grads` by the scale, in place. Returns `false`,
    /// halves the scale and leaves `grads` as they were when any gradient holds an inf or NaN:
    /// the caller skips the optimizer step. Otherwise counts a good step (doubling the scale
    /// after `growth_interval` of them) and returns `true`.
    pub fn unscale(&mut self, grads: &mut GradStore, params: &[(String, Tensor)]) -> Result<bool> {
        for (_, p) in params {
            if let Some(g) = grads.get(p) {
                // A sum is non-finite iff some term is (finite f32 gradients of f16 origin
                // cannot overflow an f64 sum).
                if !g
                    .to_dtype(gantry_core::DType::F64)?
                    .sum_all()?
                    .to_scalar()?
                    .is_finite()
                {
                    self.scale *= 0.5;
                    self.good_steps = 0;
                    self.skipped += 1;
                    return Ok(false);
                }
            }
        }
        let inv = 1.0 / self.scale;
        for (_, p) in params {
            if let Some(g) = grads.remove(p) {
                grads.insert(p, g.mul_scalar(inv)?);
            }
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        Ok(true)
    }

    /// Steps skipped so far for overflowing gradients.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The state as named tensors (scale, good steps, skipped steps), for checkpoints.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(vec![
            (
                "scale".into(),
                Tensor::from_vec(vec![self.scale], (), Device::Cpu)?,
            ),
            ("good_steps".into(), step_tensor(self.good_steps)?),
            ("skipped".into(), step_tensor(self.skipped)?),
        ])
    }

    /// Restores what [`LossScaler::state_tensors`] wrote.
    pub fn load_state_tensors(&mut self, tensors: &[(String, Tensor)]) -> Result<()> {
        let get = |name: &str| -> Result<f64> {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| Error::invalid("LossScaler::load", format!("no tensor {name:?}")))?
                .1
                .to_scalar()
        };
        self.scale = get("scale")?;
        self.good_steps = get("good_steps")? as u64;
        self.skipped = get("skipped")? as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::DType;

    fn param(dtype: DType) -> Tensor {
        Tensor::ones([2, 3], dtype, Device::Cpu).unwrap().variable()
    }

    #[test]
    fn adam_rejects_parameters_of_different_dtypes_by_name() {
        let params = vec![
            ("a".into(), param(DType::F32)),
            ("b".into(), param(DType::F64)),
        ];
        let err = Adam::new(params, AdamConfig::default())
            .err()
            .expect("an error");
        let msg = err.to_string();
        assert!(
            msg.contains("Adam") && msg.contains("a is") && msg.contains("b is"),
            "{msg}"
        );
    }

    #[test]
    fn adam_state_round_trips_through_its_tensors() -> Result<()> {
        // Two parameters, of which only the second has a gradient: its moments come back in
        // its own shape and the first has no state.
        let (a, b) = (param(DType::F32), param(DType::F32));
        let named = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut adam = Adam::new(named.clone(), AdamConfig::default())?;
        let grads = b.mul_scalar(3.0)?.sum_all()?.backward()?;
        adam.step(&grads)?;
        adam.step(&grads)?;
        let state = adam.state_tensors()?;
        let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b.exp_avg", "b.exp_avg_sq", "b.step"]);
        assert_eq!(state[0].1.dims(), &[2, 3]);
        assert_eq!(adam.steps_of("b"), Some(2));
        assert_eq!(adam.steps_of("a"), Some(0));

        let mut other = Adam::new(named, AdamConfig::default())?;
        other.load_state_tensors(&state)?;
        let again = other.state_tensors()?;
        for ((n1, t1), (n2, t2)) in state.iter().zip(&again) {
            assert_eq!(n1, n2);
            let f = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec::<f64>();
            assert_eq!(f(t1)?, f(t2)?);
        }
        // The first moment of a constant gradient 3 after two steps: 3·(1 − 0.9²).
        let m = again[0].1.to_vec::<f32>()?;
        assert!(
            m.iter().all(|&x| (x - 3.0 * (1.0 - 0.81)).abs() < 1e-6),
            "{m:?}"
        );
        Ok(())
    }

    #[test]
    fn the_loss_scaler_unscales_skips_on_overflow_and_grows() {
        let p = Tensor::zeros([3], DType::F32, Device::Cpu)
            .unwrap()
            .variable();
        let params = vec![("p".to_string(), p.clone())];
        let mut s = LossScaler {
            growth_interval: 2,
            ..LossScaler::default()
        };
        let grads_of = |v: Vec<f32>| {
            let mut g = GradStore::default();
            g.insert(&p, Tensor::from_vec(v, [3], Device::Cpu).unwrap());
            g
        };
        // A finite step: gradients divided by the scale.
        let mut g = grads_of(vec![65_536.0, -131_072.0, 0.5]);
        assert!(s.unscale(&mut g, &params).unwrap());
        assert_eq!(
            g.get(&p).unwrap().to_vec::<f32>().unwrap(),
            vec![1.0, -2.0, 0.5 / 65_536.0]
        );
        // An overflow: skipped, scale halved, gradients untouched.
        let mut g = grads_of(vec![1.0, f32::INFINITY, 0.0]);
        assert!(!s.unscale(&mut g, &params).unwrap());
        assert_eq!(s.scale, 32_768.0);
        assert_eq!(s.skipped(), 1);
        assert!(g.get(&p).unwrap().to_vec::<f32>().unwrap()[1].is_infinite());
        let mut g = grads_of(vec![f32::NAN, 0.0, 0.0]);
        assert!(!s.unscale(&mut g, &params).unwrap());
        assert_eq!(s.scale, 16_384.0);
        // Two good steps in a row double it.
        for _ in 0..2 {
            assert!(s.unscale(&mut grads_of(vec![1.0; 3]), &params).unwrap());
        }
        assert_eq!(s.scale, 32_768.0);
        // The state round-trips.
        let mut t = LossScaler {
            growth_interval: 2,
            ..LossScaler::default()
        };
        t.load_state_tensors(&s.state_tensors().unwrap()).unwrap();
        assert_eq!(t, s);
        // The scaled loss.
        let loss = Tensor::from_vec(vec![0.25f32], (), Device::Cpu).unwrap();
        assert_eq!(s.scale_loss(&loss).unwrap().to_scalar().unwrap(), 8192.0);
    }
}
