//! CycleGAN (Zhu et al. 2017): unpaired image-to-image translation with two generators
//! (A→B and B→A) and two PatchGAN discriminators. The trainer is [`train`].
//!
//! The modules reproduce `ResnetGenerator` and `NLayerDiscriminator` of the authors'
//! `pytorch-CycleGAN-and-pix2pix` with instance norm and no dropout, so their `state_dict`
//! names are the same (`model.N.…`, a residual block's `model.N.conv_block.M.…`);
//! `python/cyclegan.py` is that module tree in PyTorch, and a checkpoint converted from the
//! authors' `.pth` files with `safetensors.torch.save_file(net.state_dict(), …)` loads here.
//!
//! Generator (`blocks` = 9 for 256x256 images, 6 below), with `w` = `ngf`:
//!
//! ```text
//! model.0   ReflectionPad2d(3)          model.1  Conv2d(c_in, w, 7)       model.2-3  IN, ReLU
//! model.4   Conv2d(w, 2w, 3, s2, p1)    model.5-6  IN, ReLU                  (downsample)
//! model.7   Conv2d(2w, 4w, 3, s2, p1)   model.8-9  IN, ReLU                  (downsample)
//! model.10… ResnetBlock(4w) × blocks:   conv_block.0 ReflectionPad2d(1), .1 Conv2d 3x3,
//!                                        .2 IN, .3 ReLU, .4 ReflectionPad2d(1), .5 Conv2d 3x3, .6 IN
//! then      ConvTranspose2d(4w, 2w, 3, s2, p1, output_padding 1), IN, ReLU   (upsample)
//!           ConvTranspose2d(2w, w, 3, s2, p1, output_padding 1), IN, ReLU    (upsample)
//!           ReflectionPad2d(3), Conv2d(w, c_out, 7), Tanh
//! ```
//!
//! Every convolution has a bias (instance norm without affine parameters does not cancel it
//! in the way batch norm's shift does, so the reference keeps it). The 70x70 PatchGAN
//! discriminator (`layers` = 3, `d` = `ndf`):
//!
//! ```text
//! model.0  Conv2d(c, d, 4, s2, p1)      model.1  LeakyReLU(0.2)
//! model.2  Conv2d(d, 2d, 4, s2, p1)     model.3-4  IN, LeakyReLU(0.2)
//! model.5  Conv2d(2d, 4d, 4, s2, p1)    model.6-7  IN, LeakyReLU(0.2)
//! model.8  Conv2d(4d, 8d, 4, s1, p1)    model.9-10 IN, LeakyReLU(0.2)
//! model.11 Conv2d(8d, 1, 4, s1, p1)     (one logit per 70x70 patch of a 256x256 input)
//! ```
//!
//! Weights start as the reference's `init_type="normal"`: conv weights from `N(0, 0.02)`,
//! biases 0.

pub mod train;

use gantry_core::{Conv2dParams, ConvTranspose2dParams, Error, Result, Rng, Tensor};
use gantry_nn::{
    Conv2d, ConvTranspose2d, InstanceNorm2d, LeakyReLU, Mode, Module, ModuleExt, ReLU,
    ReflectionPad2d, Sequential, Tanh,
};

/// The ResNet generator's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResnetGeneratorConfig {
    pub channels_in: usize,
    pub channels_out: usize,
    /// Width of the first conv (`ngf`, 64); 2x and 4x after the two downsamplers.
    pub ngf: usize,
    /// Residual blocks at the bottleneck (9 for 256x256, 6 for 128x128 and below).
    pub blocks: usize,
}

impl Default for ResnetGeneratorConfig {
    fn default() -> Self {
        ResnetGeneratorConfig {
            channels_in: 3,
            channels_out: 3,
            ngf: 64,
            blocks: 9,
        }
    }
}

impl ResnetGeneratorConfig {
    /// The reference's choice for an image size: 9 blocks at 256 and above, else 6.
    pub fn for_image_size(image_size: usize, ngf: usize) -> Self {
        ResnetGeneratorConfig {
            ngf,
            blocks: if image_size >= 256 { 9 } else { 6 },
            ..Default::default()
        }
    }
}

/// `x + conv_block(x)`, the reference's `ResnetBlock` (named so that its layers are
/// `conv_block.N`).
struct ResnetBlock {
    conv_block: Sequential,
}

impl ResnetBlock {
    fn new(dim: usize, rng: &mut Rng) -> Result<Self> {
        let conv = |rng: &mut Rng| Conv2d::new(dim, dim, 3, Conv2dParams::new(1, 0), true, rng);
        Ok(ResnetBlock {
            conv_block: Sequential::new()
                .add(ReflectionPad2d::new(1))
                .add(conv(rng)?)
                .add(InstanceNorm2d::new(dim)?)
                .add(ReLU)
                .add(ReflectionPad2d::new(1))
                .add(conv(rng)?)
                .add(InstanceNorm2d::new(dim)?),
        })
    }
}

impl Module for ResnetBlock {
    fn kind(&self) -> &'static str {
        "ResnetBlock"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        x.add(&self.conv_block.forward(x, mode)?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("conv_block".into(), &self.conv_block as &dyn Module)]
    }
}

/// The reference's `init_type="normal"`: every conv weight from `N(0, 0.02)`, every conv bias 0.
fn init_normal(model: &dyn Module, rng: &mut Rng) -> Result<()> {
    for (_, m) in model.modules() {
        if !m.kind().contains("Conv") {
            continue;
        }
        for slot in m.slots() {
            let t = slot.tensor;
            match slot.name {
                "weight" => t.set(&Tensor::randn(
                    t.shape(),
                    0.0,
                    0.02,
                    t.dtype(),
                    t.device(),
                    rng,
                )?)?,
                "bias" => t.set(&t.zeros_like()?)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// The CycleGAN generator. Images in `[-1, 1]`; any height and width divisible by 4.
pub struct ResnetGenerator {
    pub model: Sequential,
    pub config: ResnetGeneratorConfig,
}

impl ResnetGenerator {
    pub fn new(config: ResnetGeneratorConfig, rng: &mut Rng) -> Result<Self> {
        let ResnetGeneratorConfig {
            channels_in,
            channels_out,
            ngf: w,
            blocks,
        } = config;
        if channels_in == 0 || channels_out == 0 || w == 0 {
            return Err(Error::invalid(
                "ResnetGenerator",
                format!("sizes must be positive, got {config:?}"),
            ));
        }
        let mut m = Sequential::new()
            .add(ReflectionPad2d::new(3))
            .add(Conv2d::new(
                channels_in,
                w,
                7,
                Conv2dParams::new(1, 0),
                true,
                rng,
            )?)
            .add(InstanceNorm2d::new(w)?)
            .add(ReLU);
        for k in [1, 2] {
            m = m
                .add(Conv2d::new(
                    w * k,
                    w * k * 2,
                    3,
                    Conv2dParams::new(2, 1),
                    true,
                    rng,
                )?)
                .add(InstanceNorm2d::new(w * k * 2)?)
                .add(ReLU);
        }
        for _ in 0..blocks {
            m = m.add(ResnetBlock::new(4 * w, rng)?);
        }
        for k in [4, 2] {
            m = m
                .add(ConvTranspose2d::new(
                    w * k,
                    w * k / 2,
                    3,
                    ConvTranspose2dParams::new(2, 1).with_output_padding(1),
                    true,
                    rng,
                )?)
                .add(InstanceNorm2d::new(w * k / 2)?)
                .add(ReLU);
        }
        m = m
            .add(ReflectionPad2d::new(3))
            .add(Conv2d::new(
                w,
                channels_out,
                7,
                Conv2dParams::new(1, 0),
                true,
                rng,
            )?)
            .add(Tanh);
        let g = ResnetGenerator { model: m, config };
        init_normal(&g, rng)?;
        Ok(g)
    }

    /// The configuration a generator `state_dict` was saved with, read from its shapes: `ngf`
    /// and `channels_in` from `model.1.weight`, the block count from the `conv_block`
    /// weights, `channels_out` from the last conv.
    pub fn infer_config(tensors: &[(String, Tensor)]) -> Result<ResnetGeneratorConfig> {
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.dims().to_vec())
        };
        let bad = |why: String| {
            Error::invalid(
                "ResnetGenerator",
                format!("not a CycleGAN ResNet generator state_dict: {why}"),
            )
        };
        let first = get("model.1.weight").ok_or_else(|| bad("no model.1.weight".into()))?;
        let blocks = (10..)
            .take_while(|i| get(&format!("model.{i}.conv_block.1.weight")).is_some())
            .count();
        // After the blocks: two (ConvTranspose2d, IN, ReLU) triples, the pad, the last conv.
        let last_name = format!("model.{}.weight", 10 + blocks + 7);
        let last = get(&last_name).ok_or_else(|| bad(format!("no {last_name}")))?;
        if first.len() != 4 || last.len() != 4 {
            return Err(bad("the first and last convs must be 4-d".into()));
        }
        Ok(ResnetGeneratorConfig {
            channels_in: first[1],
            channels_out: last[0],
            ngf: first[0],
            blocks,
        })
    }

    /// Translates images `[n, c_in, h, w]` in `[-1, 1]`; `h` and `w` must be divisible by 4 (the
    /// two stride-2 convolutions and their transposes give back the input size only then).
    pub fn translate(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 4
            || d[1] != self.config.channels_in
            || !d[2].is_multiple_of(4)
            || !d[3].is_multiple_of(4)
        {
            return Err(Error::shape(
                "ResnetGenerator",
                format!(
                    "expected [n, {}, h, w] with h and w divisible by 4, got {}",
                    self.config.channels_in,
                    x.shape()
                ),
            ));
        }
        self.forward(x, Mode::Eval)
    }

    pub fn device(&self) -> gantry_core::Device {
        self.named_parameters()
            .first()
            .map_or(gantry_core::Device::Cpu, |(_, t)| t.device())
    }
}

impl Module for ResnetGenerator {
    fn kind(&self) -> &'static str {
        "ResnetGenerator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.model.forward(x, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("model".into(), &self.model as &dyn Module)]
    }
}

/// The PatchGAN discriminator's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchDiscriminatorConfig {
    pub channels: usize,
    /// Width of the first conv (`ndf`, 64); doubles per stride-2 layer, capped at 8x.
    pub ndf: usize,
    /// Stride-2 layers after the first (3: the 70x70 PatchGAN).
    pub layers: usize,
}

impl Default for PatchDiscriminatorConfig {
    fn default() -> Self {
        PatchDiscriminatorConfig {
            channels: 3,
            ndf: 64,
            layers: 3,
        }
    }
}

impl PatchDiscriminatorConfig {
    /// The side of the logit grid for `image_size` inputs, or `None` if the input is too
    /// small to give one (each 4x4 stride-2 conv halves the side, each stride-1 one takes 1).
    pub fn patch_grid(&self, image_size: usize) -> Option<usize> {
        let mut s = image_size;
        for _ in 0..self.layers {
            s /= 2;
        }
        s.checked_sub(2).filter(|&g| g > 0)
    }
}

/// The PatchGAN discriminator: a grid of logits, one per overlapping patch, least-squares
/// targets 1 (real) and 0 (translated).
pub struct PatchDiscriminator {
    pub model: Sequential,
    pub config: PatchDiscriminatorConfig,
}

impl PatchDiscriminator {
    pub fn new(config: PatchDiscriminatorConfig, rng: &mut Rng) -> Result<Self> {
        let PatchDiscriminatorConfig {
            channels,
            ndf,
            layers,
        } = config;
        if channels == 0 || ndf == 0 || layers == 0 {
            return Err(Error::invalid(
                "PatchDiscriminator",
                format!("sizes must be positive, got {config:?}"),
            ));
        }
        let conv = |c_in, c_out, stride, rng: &mut Rng| {
            Conv2d::new(c_in, c_out, 4, Conv2dParams::new(stride, 1), true, rng)
        };
        let mut m = Sequential::new()
            .add(conv(channels, ndf, 2, rng)?)
            .add(LeakyReLU::new(0.2));
        let mut width = ndf;
        // `layers − 1` more stride-2 convs, then one stride-1: widths ndf·min(2^n, 8).
        for n in 1..=layers {
            let next = ndf * (1 << n.min(3));
            let stride = if n < layers { 2 } else { 1 };
            m = m
                .add(conv(width, next, stride, rng)?)
                .add(InstanceNorm2d::new(next)?)
                .add(LeakyReLU::new(0.2));
            width = next;
        }
        m = m.add(conv(width, 1, 1, rng)?);
        let d = PatchDiscriminator { model: m, config };
        init_normal(&d, rng)?;
        Ok(d)
    }
}

impl Module for PatchDiscriminator {
    fn kind(&self) -> &'static str {
        "PatchDiscriminator"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.model.forward(x, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("model".into(), &self.model as &dyn Module)]
    }
}
