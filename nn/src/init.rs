//! Parameter initialisers, drawn from the run's seeded [`Rng`].
//!
//! The layers' constructors use PyTorch's defaults; [`dcgan`] re-initialises a whole model as
//! the DCGAN paper prescribes. Values follow the same distributions as PyTorch's, not the same
//! random stream (PyTorch's generator is not reproduced).

use crate::module::{Module, ModuleExt};
use gantry_core::{DType, Device, Error, Result, Rng, Tensor};

/// `U(−bound, bound)` samples, as a new f32 variable.
pub fn uniform(shape: &[usize], bound: f64, rng: &mut Rng) -> Result<Tensor> {
    Ok(Tensor::rand(shape, -bound, bound, DType::F32, Device::Cpu, rng)?.variable())
}

/// `N(mean, std²)` samples, as a new f32 variable.
pub fn normal(shape: &[usize], mean: f64, std: f64, rng: &mut Rng) -> Result<Tensor> {
    Ok(Tensor::randn(shape, mean, std, DType::F32, Device::Cpu, rng)?.variable())
}

/// `value` everywhere, as a new f32 variable.
pub fn constant(shape: &[usize], value: f64) -> Result<Tensor> {
    Ok(Tensor::full(value, shape, DType::F32, Device::Cpu)?.variable())
}

/// The bound of PyTorch's default weight init for conv and linear layers,
/// `kaiming_uniform_(w, a=√5)`: gain `√(2 / (1 + a²))` = `√(1/3)` times `√(3 / fan_in)`, which is
/// `1 / √fan_in`. The default bias init uses the same bound.
pub fn default_bound(fan_in: usize) -> f64 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f64).sqrt()
    }
}

/// The DCGAN initialisation (Radford et al. 2015, as in the pytorch/examples DCGAN's
/// `weights_init`): every `Conv*` weight from `N(0, 0.02)`; every `BatchNorm*` weight from
/// `N(1, 0.02)` and bias 0. Modules are visited in `state_dict` order, so the draws are
/// deterministic for a given seed.
pub fn dcgan(model: &dyn Module, rng: &mut Rng) -> Result<()> {
    for (_, m) in model.modules() {
        let kind = m.kind();
        let (mean, is_bn) = if kind.contains("Conv") {
            (0.0, false)
        } else if kind.contains("BatchNorm") {
            (1.0, true)
        } else {
            continue;
        };
        for slot in m.slots() {
            let t = slot.tensor;
            match slot.name {
                "weight" => t.set(&Tensor::randn(
                    t.shape(),
                    mean,
                    0.02,
                    t.dtype(),
                    t.device(),
                    rng,
                )?)?,
                "bias" if is_bn => t.set(&t.zeros_like()?)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Checks a layer size is positive, naming the layer and the argument.
pub(crate) fn positive(op: &'static str, what: &str, v: usize) -> Result<()> {
    if v == 0 {
        Err(Error::invalid(
            op,
            format!("{what} must be positive, got 0"),
        ))
    } else {
        Ok(())
    }
}
