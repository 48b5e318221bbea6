//! Optimizers: Adam and SGD with PyTorch's exact update rules.
//!
//! An optimizer owns a chosen list of named parameters and steps only those, from a
//! [`GradStore`]. That is what a GAN needs: the generator's loss back-propagates through the
//! discriminator and produces gradients for both, but the generator's optimizer must move only
//! the generator. A parameter without a gradient in the store is skipped, its state untouched
//! (as PyTorch skips parameters whose `.grad` is `None`).
//!
//! Each step is one fused pass per parameter (`gantry_kernels::optim`). State (moments,
//! momentum buffers, per-parameter step counts) saves to and loads from safetensors, named
//! `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.step`, `<param>.momentum_buffer`.

use crate::checkpoint::{load_tensors, save_tensors};
use gantry_core::{AdamStep, Device, Error, GradStore, Result, SgdStep, Tensor};
use std::collections::HashMap;
use std::path::Path;

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

struct AdamState {
    m: Tensor,
    v: Tensor,
    step: u64,
}

/// Adam (Kingma & Ba), exactly as `torch.optim.Adam` (single-tensor path): bias-corrected
/// moments, ε added after the square root, optional L2 weight decay.
pub struct Adam {
    params: Params,
    config: AdamConfig,
    state: Vec<Option<AdamState>>,
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
        let state = params.0.iter().map(|_| None).collect();
        Ok(Adam {
            params,
            config,
            state,
        })
    }
    pub fn config(&self) -> AdamConfig {
        self.config
    }
    /// How many steps parameter `name` has taken.
    pub fn steps_of(&self, name: &str) -> Option<u64> {
        let i = self.params.0.iter().position(|(n, _)| n == name)?;
        Some(self.state[i].as_ref().map_or(0, |s| s.step))
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config;
        for i in 0..self.params.0.len() {
            let Some(g) = self.params.grad("Adam.step", i, grads)? else {
                continue;
            };
            let p = &self.params.0[i].1;
            if self.state[i].is_none() {
                self.state[i] = Some(AdamState {
                    m: p.zeros_like()?,
                    v: p.zeros_like()?,
                    step: 0,
                });
            }
            let s = self.state[i].as_mut().expect("just set");
            let h = AdamStep {
                lr: c.lr,
                beta1: c.betas.0,
                beta2: c.betas.1,
                eps: c.eps,
                weight_decay: c.weight_decay,
                step: s.step + 1,
            };
            p.storage_mut().adam_step(
                &g.storage(),
                &mut s.m.storage_mut(),
                &mut s.v.storage_mut(),
                &h,
            )?;
            s.step += 1;
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
        let mut out = Vec::new();
        for ((name, _), s) in self.params.0.iter().zip(&self.state) {
            if let Some(s) = s {
                out.push((format!("{name}.exp_avg"), s.m.clone()));
                out.push((format!("{name}.exp_avg_sq"), s.v.clone()));
                out.push((format!("{name}.step"), step_tensor(s.step)?));
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
        let mut state = Vec::with_capacity(fresh.len());
        for (i, [m, v, step]) in fresh.into_iter().enumerate() {
            let (name, p) = &self.params.0[i];
            state.push(match (m, v, step) {
                (None, None, None) => None,
                (Some(m), Some(v), Some(step)) => Some(AdamState {
                    m: state_copy(&m, p)?,
                    v: state_copy(&v, p)?,
                    step: step.to_scalar()? as u64,
                }),
                _ => {
                    return Err(Error::invalid(
                        "Adam.load",
                        format!("{name}: exp_avg, exp_avg_sq and step must be saved together"),
                    ))
                }
            });
        }
        self.state = state;
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
