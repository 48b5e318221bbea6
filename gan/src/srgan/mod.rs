//! SRGAN (Ledig et al. 2017): the SRResNet generator, the discriminator, and their trainer
//! ([`train`]).
//!
//! The module trees and names are those of `python/srgan.py`, the PyTorch definition kept in
//! the repository, so checkpoints move both ways. For the defaults (`width 64, blocks 16,
//! scale 4`):
//!
//! ```text
//! SrResNet                                          tensor names
//!  head      Conv2d(3, 64, 9, pad 4) · PReLU        head.0.{weight,bias}  head.1.weight
//!  body.i    Residual: Conv2d(64, 64, 3, pad 1, no bias) · BatchNorm2d · PReLU ·
//!            Conv2d(64, 64, 3, pad 1, no bias) · BatchNorm2d      body.i.0.weight
//!                                                   body.i.1.{weight,bias,running_mean,…}
//!                                                   body.i.2.weight  body.i.3.weight  body.i.4.*
//!  trunk     Conv2d(64, 64, 3, pad 1, no bias) · BatchNorm2d      trunk.0.weight  trunk.1.*
//!            (its output plus head's: the long skip)
//!  upsample  per ×2: Conv2d(64, 256, 3, pad 1) · PixelShuffle(2) · PReLU
//!                                                   upsample.{3k}.{weight,bias}  upsample.{3k+2}.weight
//!  tail      Conv2d(64, 3, 9, pad 4)                tail.{weight,bias}
//!
//! SrDiscriminator (96x96 input)
//!  features  Conv2d(3, 64, 3, pad 1) · LeakyReLU(0.2), then seven Conv2d(…, 3, pad 1, no bias)
//!            · BatchNorm2d · LeakyReLU(0.2) blocks: 64 s2, 128 s1, 128 s2, 256 s1, 256 s2,
//!            512 s1, 512 s2 (96 → 6)               features.0.{weight,bias}  features.{2,5,…}.weight
//!  classifier Flatten · Linear(512·6·6, 1024) · LeakyReLU(0.2) · Linear(1024, 1)
//!                                                   classifier.1.*  classifier.3.*
//! ```
//!
//! Images are in `[-1, 1]` at both ends: the generator has no output activation (it is
//! trained with MSE; callers clamp), and the discriminator ends in a logit.
//! PReLUs have one shared slope (PyTorch's `nn.PReLU()` default), convolutions followed by
//! BatchNorm have no bias (BatchNorm's shift makes it redundant).

pub mod train;

use crate::sr::Image;
use gantry_core::{no_grad, Conv2dParams, Error, Result, Rng, Tensor};
use gantry_nn::{
    BatchNorm2d, Conv2d, Flatten, LeakyReLU, Linear, Mode, Module, PReLU, PixelShuffle, Residual,
    Sequential,
};

/// The generator's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrResNetConfig {
    /// Image channels (3).
    pub channels: usize,
    /// Feature channels (64).
    pub width: usize,
    /// Residual blocks (16).
    pub blocks: usize,
    /// Upscaling factor: a power of two, 2 to 8 (4).
    pub scale: usize,
}

impl Default for SrResNetConfig {
    fn default() -> Self {
        SrResNetConfig {
            channels: 3,
            width: 64,
            blocks: 16,
            scale: 4,
        }
    }
}

impl SrResNetConfig {
    fn check(&self) -> Result<()> {
        if !matches!(self.scale, 2 | 4 | 8) {
            return Err(Error::invalid(
                "SrResNet",
                format!("scale must be 2, 4 or 8, got {}", self.scale),
            ));
        }
        if self.channels == 0 || self.width == 0 {
            return Err(Error::invalid(
                "SrResNet",
                format!("sizes must be positive: {self:?}"),
            ));
        }
        Ok(())
    }
}

fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    bias: bool,
    rng: &mut Rng,
) -> Result<Conv2d> {
    Conv2d::new(c_in, c_out, k, Conv2dParams::new(stride, k / 2), bias, rng)
}

/// The SRResNet generator: `[n, c, h, w]` → `[n, c, scale·h, scale·w]`, any `h, w`.
pub struct SrResNet {
    pub head: Sequential,
    pub body: Sequential,
    pub trunk: Sequential,
    pub upsample: Sequential,
    pub tail: Conv2d,
    pub config: SrResNetConfig,
}

impl SrResNet {
    /// PyTorch-default-initialised layers.
    pub fn new(config: SrResNetConfig, rng: &mut Rng) -> Result<Self> {
        config.check()?;
        let (c, w) = (config.channels, config.width);
        let head = Sequential::new()
            .add(conv(c, w, 9, 1, true, rng)?)
            .add(PReLU::new(1)?);
        let mut body = Sequential::new();
        for _ in 0..config.blocks {
            body = body.add(Residual::new(
                Sequential::new()
                    .add(conv(w, w, 3, 1, false, rng)?)
                    .add(BatchNorm2d::new(w)?)
                    .add(PReLU::new(1)?)
                    .add(conv(w, w, 3, 1, false, rng)?)
                    .add(BatchNorm2d::new(w)?),
            ));
        }
        let trunk = Sequential::new()
            .add(conv(w, w, 3, 1, false, rng)?)
            .add(BatchNorm2d::new(w)?);
        let mut upsample = Sequential::new();
        for _ in 0..config.scale.trailing_zeros() {
            upsample = upsample
                .add(conv(w, 4 * w, 3, 1, true, rng)?)
                .add(PixelShuffle { upscale_factor: 2 })
                .add(PReLU::new(1)?);
        }
        let tail = conv(w, c, 9, 1, true, rng)?;
        Ok(SrResNet {
            head,
            body,
            trunk,
            upsample,
            tail,
            config,
        })
    }
}

impl Module for SrResNet {
    fn kind(&self) -> &'static str {
        "SRResNet"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 4 || d[1] != self.config.channels {
            return Err(Error::shape(
                "SrResNet",
                format!(
                    "expected [n, {}, h, w] images, got {}",
                    self.config.channels,
                    x.shape()
                ),
            ));
        }
        let h = self.head.forward(x, mode)?;
        let y = self
            .trunk
            .forward(&self.body.forward(&h, mode)?, mode)?
            .add(&h)?;
        self.tail.forward(&self.upsample.forward(&y, mode)?, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("head".into(), &self.head as &dyn Module),
            ("body".into(), &self.body),
            ("trunk".into(), &self.trunk),
            ("upsample".into(), &self.upsample),
            ("tail".into(), &self.tail),
        ]
    }
}

/// The discriminator's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrDiscriminatorConfig {
    pub channels: usize,
    /// Channels of the first two convolutions (64); they double every second layer.
    pub width: usize,
    /// Stride-2 stages (4: eight conv layers, 64 → 512 channels, the image shrinks 16×).
    pub stages: usize,
    /// The hidden dense layer (1024).
    pub dense: usize,
    /// The (square) input size the dense layer is built for (96, the HR crop).
    pub image_size: usize,
}

impl Default for SrDiscriminatorConfig {
    fn default() -> Self {
        SrDiscriminatorConfig {
            channels: 3,
            width: 64,
            stages: 4,
            dense: 1024,
            image_size: 96,
        }
    }
}

/// The SRGAN discriminator: `[n, c, s, s]` → `[n, 1]` logits.
pub struct SrDiscriminator {
    pub features: Sequential,
    pub classifier: Sequential,
    pub config: SrDiscriminatorConfig,
}

impl SrDiscriminator {
    pub fn new(config: SrDiscriminatorConfig, rng: &mut Rng) -> Result<Self> {
        let SrDiscriminatorConfig {
            channels,
            width,
            stages,
            dense,
            image_size,
        } = config;
        let side = image_size >> stages.min(63);
        if stages == 0 || width == 0 || dense == 0 || side == 0 || side << stages != image_size {
            return Err(Error::invalid(
                "SrDiscriminator",
                format!(
                    "the image size must be a multiple of 2^stages and the sizes positive: {config:?}"
                ),
            ));
        }
        // Layer 0 has a bias and no BatchNorm; then (conv, BN, LeakyReLU) blocks alternating
        // stride 2 and stride 1, the width doubling at every stride-1 layer.
        let mut features = Sequential::new()
            .add(conv(channels, width, 3, 1, true, rng)?)
            .add(LeakyReLU::new(0.2));
        let mut ch = width;
        for layer in 1..2 * stages {
            let (stride, out) = if layer % 2 == 1 { (2, ch) } else { (1, 2 * ch) };
            features = features
                .add(conv(ch, out, 3, stride, false, rng)?)
                .add(BatchNorm2d::new(out)?)
                .add(LeakyReLU::new(0.2));
            ch = out;
        }
        let classifier = Sequential::new()
            .add(Flatten::default())
            .add(Linear::new(ch * side * side, dense, true, rng)?)
            .add(LeakyReLU::new(0.2))
            .add(Linear::new(dense, 1, true, rng)?);
        Ok(SrDiscriminator {
            features,
            classifier,
            config,
        })
    }
}

impl Module for SrDiscriminator {
    fn kind(&self) -> &'static str {
        "SRDiscriminator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = self.config;
        let d = x.dims();
        if d.len() != 4 || d[1..] != [c.channels, c.image_size, c.image_size] {
            return Err(Error::shape(
                "SrDiscriminator",
                format!(
                    "built for [n, {}, {s}, {s}] images, got {}",
                    c.channels,
                    x.shape(),
                    s = c.image_size
                ),
            ));
        }
        self.classifier
            .forward(&self.features.forward(x, mode)?, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("features".into(), &self.features as &dyn Module),
            ("classifier".into(), &self.classifier),
        ]
    }
}

impl SrResNet {
    /// How far (in LR pixels, rounded up) an output pixel sees: the 9x9 head, two 3x3 convs
    /// per block, the trunk conv, one 3x3 conv per ×2 upsampler (at rising resolution) and the
    /// 9x9 tail at full resolution. Tiles overlapping by this much give the untiled result.
    pub fn receptive_radius(&self) -> usize {
        let c = self.config;
        let mut r = 4.0 + 2.0 * c.blocks as f64 + 1.0;
        let mut res = 1.0;
        for _ in 0..c.scale.trailing_zeros() {
            r += 1.0 / res;
            res *= 2.0;
        }
        (r + 4.0 / res).ceil() as usize
    }

    /// Upscales an image (0–255, any size) in eval mode. With `tile > 0`, the LR image is cut
    /// into `tile × tile` pieces, each run with [`Self::receptive_radius`] pixels of context on
    /// every side and only its centre kept, so memory stays bounded for large images and the
    /// result equals the untiled one.
    pub fn upscale(&self, lr: &Image, tile: usize) -> Result<Image> {
        if lr.channels != self.config.channels {
            return Err(Error::shape(
                "upscale",
                format!(
                    "the model takes {} channel(s), the image has {}",
                    self.config.channels, lr.channels
                ),
            ));
        }
        let device = self.device();
        let (h, w, s) = (lr.height, lr.width, self.config.scale);
        let run = |img: &Image| -> Result<Image> {
            let x = img.to_tensor()?.to_device(device)?;
            let y = no_grad(|| self.forward(&x, Mode::Eval))?;
            Image::from_tensor(&y.to_device(gantry_core::Device::Cpu)?, 0)
        };
        if tile == 0 || (h <= tile && w <= tile) {
            return run(lr);
        }
        let r = self.receptive_radius();
        let (oh, ow) = (h * s, w * s);
        let mut out = vec![0f32; lr.channels * oh * ow];
        for y0 in (0..h).step_by(tile) {
            for x0 in (0..w).step_by(tile) {
                let (y1, x1) = ((y0 + tile).min(h), (x0 + tile).min(w));
                let (cy0, cx0) = (y0.saturating_sub(r), x0.saturating_sub(r));
                let (cy1, cx1) = ((y1 + r).min(h), (x1 + r).min(w));
                let piece = run(&lr.crop(cy0, cx0, cy1 - cy0, cx1 - cx0)?)?;
                // Copy the centre (the tile without its context) into place.
                for c in 0..lr.channels {
                    for y in y0 * s..y1 * s {
                        let src = (c * piece.height + (y - cy0 * s)) * piece.width + (x0 - cx0) * s;
                        let dst = (c * oh + y) * ow + x0 * s;
                        let n = (x1 - x0) * s;
                        out[dst..dst + n].copy_from_slice(&piece.data[src..src + n]);
                    }
                }
            }
        }
        Image::new(lr.channels, oh, ow, out)
    }

    /// Where the weights are.
    pub fn device(&self) -> gantry_core::Device {
        gantry_nn::ModuleExt::named_parameters(self)
            .first()
            .map_or(gantry_core::Device::Cpu, |(_, t)| t.device())
    }

    /// The configuration a `state_dict` was saved from (width and channels from `head.0`,
    /// blocks from `body.*`, scale from the upsamplers).
    pub fn infer_config(tensors: &[(String, Tensor)]) -> Result<SrResNetConfig> {
        let head = tensors
            .iter()
            .find(|(n, _)| n == "head.0.weight")
            .map(|(_, t)| t.dims().to_vec())
            .ok_or_else(|| {
                Error::invalid(
                    "SrResNet",
                    "not an SRResNet state_dict: no head.0.weight (see python/srgan.py)",
                )
            })?;
        let count = |prefix: &str, suffix: &str| {
            tensors
                .iter()
                .filter(|(n, _)| n.starts_with(prefix) && n.ends_with(suffix))
                .count()
        };
        let blocks = count("body.", ".0.weight");
        let ups = count("upsample.", ".bias");
        if head.len() != 4 || ups == 0 || ups > 3 {
            return Err(Error::invalid(
                "SrResNet",
                format!("unexpected state_dict: head.0.weight {head:?}, {ups} upsampler(s)"),
            ));
        }
        Ok(SrResNetConfig {
            channels: head[1],
            width: head[0],
            blocks,
            scale: 1 << ups,
        })
    }
}
