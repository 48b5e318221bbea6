//! The DCGAN generator and discriminator (Radford et al. 2015), with exactly the module tree
//! and parameter names of the DCGAN in the pytorch/examples repository, so checkpoints move
//! between the two.
//!
//! For a 64x64 image (`nz = 100, ngf = ndf = 64, nc = 3` in the example):
//!
//! ```text
//! Generator.main                          Discriminator.main
//!  0 ConvTranspose2d(nz, 8·ngf, 4, 1, 0)   0 Conv2d(nc, ndf, 4, 2, 1)        64 → 32
//!  1 BatchNorm2d  2 ReLU          1 → 4    1 LeakyReLU(0.2)
//!  3 ConvTranspose2d(8·ngf, 4·ngf, 4,2,1)  2 Conv2d(ndf, 2·ndf, 4, 2, 1)    32 → 16
//!  4 BatchNorm2d  5 ReLU          4 → 8    3 BatchNorm2d  4 LeakyReLU(0.2)
//!  6 ConvTranspose2d(4·ngf, 2·ngf, …)      5 Conv2d(2·ndf, 4·ndf, 4, 2, 1)  16 → 8
//!  7 BatchNorm2d  8 ReLU          8 → 16   6 BatchNorm2d  7 LeakyReLU(0.2)
//!  9 ConvTranspose2d(2·ngf, ngf, …)        8 Conv2d(4·ndf, 8·ndf, 4, 2, 1)   8 → 4
//! 10 BatchNorm2d 11 ReLU         16 → 32   9 BatchNorm2d 10 LeakyReLU(0.2)
//! 12 ConvTranspose2d(ngf, nc, 4, 2, 1)    11 Conv2d(8·ndf, 1, 4, 1, 0)        4 → 1
//! 13 Tanh                        32 → 64
//! ```
//!
//! Other sizes `2^k` (k ≥ 4) add or remove middle blocks: the generator's first block makes
//! `ngf · 2^(k−3)` channels at 4x4 and each block halves them; the discriminator mirrors it.
//! The discriminator ends in **logits** (the example's final `Sigmoid` is left out; it has no
//! parameters, so the names are unchanged) and training uses `bce_with_logits`, the stable
//! form of sigmoid + BCE.

use gantry_core::{Conv2dParams, ConvTranspose2dParams, Error, Result, Rng, Tensor};
use gantry_nn::{
    init, BatchNorm2d, Conv2d, ConvTranspose2d, LeakyReLU, Mode, Module, ReLU, Sequential, Tanh,
};

/// The architecture's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DcganConfig {
    /// Image height and width: a power of two, at least 16.
    pub image_size: usize,
    /// Image channels (1 or 3).
    pub nc: usize,
    /// Latent size.
    pub nz: usize,
    /// Generator width (channels of its last hidden layer).
    pub ngf: usize,
    /// Discriminator width (channels of its first layer).
    pub ndf: usize,
}

impl Default for DcganConfig {
    /// pytorch/examples' DCGAN: 64x64 RGB, nz 100, ngf = ndf = 64.
    fn default() -> Self {
        DcganConfig {
            image_size: 64,
            nc: 3,
            nz: 100,
            ngf: 64,
            ndf: 64,
        }
    }
}

impl DcganConfig {
    /// Checks the sizes and returns the number of stride-2 blocks between 4x4 and the image.
    fn blocks(&self) -> Result<usize> {
        let s = self.image_size;
        if !s.is_power_of_two() || s < 16 {
            return Err(Error::invalid(
                "dcgan",
                format!("image size must be a power of two ≥ 16, got {s}"),
            ));
        }
        if self.nc == 0 || self.nz == 0 || self.ngf == 0 || self.ndf == 0 {
            return Err(Error::invalid(
                "dcgan",
                format!("sizes must be positive: {self:?}"),
            ));
        }
        // 4 → s takes log2(s) − 2 doublings; the last is the output layer.
        Ok(s.trailing_zeros() as usize - 3)
    }
}

/// Maps `[n, nz, 1, 1]` noise to `[n, nc, s, s]` images in `[-1, 1]`.
pub struct Generator {
    pub main: Sequential,
    pub config: DcganConfig,
}

impl Generator {
    /// PyTorch-default-initialised layers; call [`init::dcgan`] (or [`dcgan_pair`]) for the
    /// paper's init.
    pub fn new(config: DcganConfig, rng: &mut Rng) -> Result<Self> {
        let blocks = config.blocks()?;
        let mut ch = config.ngf << blocks;
        let mut main = Sequential::new()
            .add(ConvTranspose2d::new(
                config.nz,
                ch,
                4,
                ConvTranspose2dParams::new(1, 0),
                false,
                rng,
            )?)
            .add(BatchNorm2d::new(ch)?)
            .add(ReLU);
        for _ in 0..blocks {
            main = main
                .add(ConvTranspose2d::new(
                    ch,
                    ch / 2,
                    4,
                    ConvTranspose2dParams::new(2, 1),
                    false,
                    rng,
                )?)
                .add(BatchNorm2d::new(ch / 2)?)
                .add(ReLU);
            ch /= 2;
        }
        main = main
            .add(ConvTranspose2d::new(
                ch,
                config.nc,
                4,
                ConvTranspose2dParams::new(2, 1),
                false,
                rng,
            )?)
            .add(Tanh);
        Ok(Generator { main, config })
    }
}

impl Module for Generator {
    fn kind(&self) -> &'static str {
        "Generator"
    }
    fn forward(&self, z: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = &self.config;
        let z = match z.dims() {
            [n, nz] if *nz == c.nz => z.reshape([*n, c.nz, 1, 1])?,
            [_, nz, 1, 1] if *nz == c.nz => z.clone(),
            _ => {
                return Err(Error::shape(
                    "Generator",
                    format!(
                        "noise must be [n, {0}, 1, 1] or [n, {0}], got {1}",
                        c.nz,
                        z.shape()
                    ),
                ))
            }
        };
        self.main.forward(&z, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("main".into(), &self.main)]
    }
}

/// Maps `[n, nc, s, s]` images to `[n]` logits (real > 0 > fake).
pub struct Discriminator {
    pub main: Sequential,
    pub config: DcganConfig,
}

impl Discriminator {
    pub fn new(config: DcganConfig, rng: &mut Rng) -> Result<Self> {
        let blocks = config.blocks()?;
        let down = Conv2dParams::new(2, 1);
        let mut ch = config.ndf;
        let mut main = Sequential::new()
            .add(Conv2d::new(config.nc, ch, 4, down, false, rng)?)
            .add(LeakyReLU::new(0.2));
        for _ in 0..blocks {
            main = main
                .add(Conv2d::new(ch, ch * 2, 4, down, false, rng)?)
                .add(BatchNorm2d::new(ch * 2)?)
                .add(LeakyReLU::new(0.2));
            ch *= 2;
        }
        main = main.add(Conv2d::new(ch, 1, 4, Conv2dParams::new(1, 0), false, rng)?);
        Ok(Discriminator { main, config })
    }
}

impl Module for Discriminator {
    fn kind(&self) -> &'static str {
        "Discriminator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = &self.config;
        if x.rank() != 4 || x.dims()[1..] != [c.nc, c.image_size, c.image_size] {
            return Err(Error::shape(
                "Discriminator",
                format!(
                    "images must be [n, {}, {s}, {s}], got {}",
                    c.nc,
                    x.shape(),
                    s = c.image_size
                ),
            ));
        }
        let n = x.dims()[0];
        self.main.forward(x, mode)?.reshape([n])
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("main".into(), &self.main)]
    }
}

/// A generator and a discriminator with the DCGAN init, drawn from `rng` (generator first).
pub fn dcgan_pair(config: DcganConfig, rng: &mut Rng) -> Result<(Generator, Discriminator)> {
    let g = Generator::new(config, rng)?;
    let d = Discriminator::new(config, rng)?;
    init::dcgan(&g, rng)?;
    init::dcgan(&d, rng)?;
    Ok((g, d))
}

/// Infers the architecture of a generator checkpoint from its tensor shapes: `nz` and the
/// first width from `main.0.weight` `[nz, 8·ngf, 4, 4]`, the depth from the number of
/// transposed convs, `nc` from the last one.
pub fn infer_generator_config(tensors: &[(String, Tensor)]) -> Result<DcganConfig> {
    let get = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    let first = get("main.0.weight").ok_or_else(|| {
        Error::invalid(
            "dcgan",
            "not a DCGAN generator checkpoint: no main.0.weight",
        )
    })?;
    // Transposed convs sit at main.0, main.3, main.6, … (conv, BN, ReLU blocks).
    let mut convs = Vec::new();
    let mut i = 0;
    while let Some(w) = get(&format!("main.{i}.weight")) {
        if w.rank() != 4 {
            break;
        }
        convs.push(w);
        i += 3;
    }
    let last = convs.last().expect("main.0.weight is a conv");
    if first.rank() != 4 || convs.len() < 3 {
        return Err(Error::invalid(
            "dcgan",
            format!(
                "main.0.weight {} does not look like a DCGAN generator",
                first.shape()
            ),
        ));
    }
    let (nz, top) = (first.dims()[0], first.dims()[1]);
    let blocks = convs.len() - 2;
    Ok(DcganConfig {
        image_size: 4 << (blocks + 1),
        nc: last.dims()[1],
        nz,
        ngf: top >> blocks,
        ndf: 64,
    })
}
