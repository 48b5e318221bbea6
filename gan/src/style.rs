//! Neural style transfer (Gatys, Ecker & Bethge 2016): an image optimised so that its VGG-19
//! features match a content image's at one layer and its feature correlations (Gram matrices)
//! match a style image's at several.
//!
//! With `φ_l(x)` the `[n, c, h, w]` output of the ReLU after VGG-19's conv `l` ([`Vgg19`],
//! the one implementation the SRGAN perceptual loss also uses):
//!
//! - **content** `= mean((φ_c(x) − φ_c(content))²)` at `conv4_2`;
//! - **style** `= Σ_l w_l · mean((G_l(x) − G_l(style))²)` over `conv1_1 … conv5_1`, `w_l = 1/5`,
//!   with the Gram matrix `G_l = F Fᵀ / (c·h·w)` of the features flattened to `F`: `[c, h·w]`
//!   (normalised by the layer's size, as PyTorch's tutorial does, so that deep and shallow
//!   layers weigh alike and the weight does not depend on the image size);
//! - **total variation** `= mean|x_{i+1,j} − x_{i,j}| + mean|x_{i,j+1} − x_{i,j}|`, a
//!   smoothness prior that removes the high-frequency noise the optimisation leaves;
//!
//! and the loss `content_weight · content + style_weight · style + tv_weight · tv`, minimised
//! over the pixels with Adam from the content image (or noise), the pixels clamped to the
//! valid range after each step. Images are in `[-1, 1]`; [`Vgg19`] applies ImageNet's
//! normalisation.

use crate::sr::{imresize, Image, Quantize};
use crate::vgg::{relu_index, Vgg19};
use gantry_core::{no_grad, Device, Error, Result, Rng, Tensor};
use gantry_nn::loss::{l1, mse, Reduction};
use gantry_nn::{Adam, AdamConfig, Optimizer};
use std::path::Path;

/// `F Fᵀ / (c·h·w)` per image: `[n, c, h, w]` → `[n, c, c]`.
pub fn gram(features: &Tensor) -> Result<Tensor> {
    let &[n, c, h, w] = features.dims() else {
        return Err(Error::shape(
            "gram",
            format!("expected [n, c, h, w] features, got {}", features.shape()),
        ));
    };
    let f = features.reshape([n, c, h * w])?;
    f.matmul(&f.transpose(1, 2)?)?
        .mul_scalar(1.0 / (c * h * w) as f64)
}

/// `Σ_l w_l · mean((gram(features_l) − target_l)²)`, the style term, for target Gram
/// matrices computed beforehand.
pub fn style_loss(features: &[Tensor], targets: &[Tensor], weights: &[f64]) -> Result<Tensor> {
    if features.is_empty() || features.len() != targets.len() || targets.len() != weights.len() {
        return Err(Error::invalid(
            "style_loss",
            format!(
                "{} feature maps, {} targets and {} weights: need the same, at least one",
                features.len(),
                targets.len(),
                weights.len()
            ),
        ));
    }
    let mut total: Option<Tensor> = None;
    for ((f, target), &w) in features.iter().zip(targets).zip(weights) {
        let term = mse(&gram(f)?, target, Reduction::Mean)?.mul_scalar(w)?;
        total = Some(match total {
            Some(t) => t.add(&term)?,
            None => term,
        });
    }
    Ok(total.expect("at least one layer"))
}

/// The mean absolute difference between vertical and between horizontal neighbours.
pub fn total_variation(x: &Tensor) -> Result<Tensor> {
    let &[_, _, h, w] = x.dims() else {
        return Err(Error::shape(
            "total_variation",
            format!("expected [n, c, h, w] images, got {}", x.shape()),
        ));
    };
    if h < 2 || w < 2 {
        return Err(Error::shape(
            "total_variation",
            format!("needs at least 2x2 images, got {}", x.shape()),
        ));
    }
    let dy = l1(
        &x.narrow(2, 1, h - 1)?,
        &x.narrow(2, 0, h - 1)?,
        Reduction::Mean,
    )?;
    let dx = l1(
        &x.narrow(3, 1, w - 1)?,
        &x.narrow(3, 0, w - 1)?,
        Reduction::Mean,
    )?;
    dy.add(&dx)
}

/// Where the optimisation starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// The content image (converges fastest, keeps its layout).
    Content,
    /// Uniform noise in `[-1, 1]` from the seed (Gatys et al.'s start).
    Noise,
}

/// The loss terms and the optimisation.
#[derive(Clone, Debug, PartialEq)]
pub struct StyleConfig {
    /// The `features` index of the content layer (ReLU after `conv4_2`).
    pub content_layer: usize,
    /// `(features index, weight)` of the style layers (ReLUs after `conv1_1 … conv5_1`, 1/5
    /// each).
    pub style_layers: Vec<(usize, f64)>,
    pub content_weight: f64,
    pub style_weight: f64,
    pub tv_weight: f64,
    pub steps: usize,
    /// Adam's learning rate, in pixel units of the `[-1, 1]` scale.
    pub lr: f64,
    pub init: Init,
    pub seed: u64,
}

impl Default for StyleConfig {
    fn default() -> Self {
        let conv = |b, n| relu_index(b, n).expect("VGG-19 has this conv");
        StyleConfig {
            content_layer: conv(4, 2),
            style_layers: (1..=5).map(|b| (conv(b, 1), 0.2)).collect(),
            content_weight: 1.0,
            style_weight: 1e5,
            tv_weight: 1e-2,
            steps: 300,
            lr: 0.02,
            init: Init::Content,
            seed: 0,
        }
    }
}

impl StyleConfig {
    /// The deepest VGG layer the losses read (how much of VGG-19 to load).
    pub fn deepest_layer(&self) -> usize {
        self.style_layers
            .iter()
            .map(|&(l, _)| l)
            .chain([self.content_layer])
            .max()
            .unwrap_or(0)
    }
}

/// The three terms at one image (scalars), and the weighted total.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StyleLosses {
    pub content: f64,
    pub style: f64,
    pub tv: f64,
    pub total: f64,
}

/// A content image and a style image's targets, ready to optimise an image against.
pub struct NeuralStyle {
    pub vgg: Vgg19,
    pub config: StyleConfig,
    content_image: Tensor,
    content_target: Tensor,
    style_targets: Vec<Tensor>,
}

impl NeuralStyle {
    /// Precomputes the targets: the content image's features and the style image's Gram
    /// matrices. Both are `[1, 3, h, w]` in `[-1, 1]` on the VGG's device; their sizes may
    /// differ.
    pub fn new(vgg: Vgg19, config: StyleConfig, content: &Tensor, style: &Tensor) -> Result<Self> {
        if config.deepest_layer() > vgg.last() {
            return Err(Error::invalid(
                "neural style",
                format!(
                    "the losses read VGG layer {} but only 0..={} were loaded",
                    config.deepest_layer(),
                    vgg.last()
                ),
            ));
        }
        let layers: Vec<usize> = config.style_layers.iter().map(|&(l, _)| l).collect();
        let (content_target, style_targets) = no_grad(|| -> Result<_> {
            let c = vgg.features_at(content, &[config.content_layer])?.remove(0);
            let s = vgg
                .features_at(style, &layers)?
                .iter()
                .map(gram)
                .collect::<Result<Vec<_>>>()?;
            Ok((c, s))
        })?;
        Ok(NeuralStyle {
            vgg,
            config,
            content_image: content.detach(),
            content_target: content_target.detach(),
            style_targets: style_targets.iter().map(Tensor::detach).collect(),
        })
    }

    /// The weighted loss of image `x` (a graph to differentiate) and its terms.
    pub fn loss(&self, x: &Tensor) -> Result<(Tensor, StyleLosses)> {
        let c = &self.config;
        let mut layers = vec![c.content_layer];
        layers.extend(c.style_layers.iter().map(|&(l, _)| l));
        let features = self.vgg.features_at(x, &layers)?;
        let content = mse(&features[0], &self.content_target, Reduction::Mean)?;
        let weights: Vec<f64> = c.style_layers.iter().map(|&(_, w)| w).collect();
        let style = style_loss(&features[1..], &self.style_targets, &weights)?;
        let tv = total_variation(x)?;
        let total = content
            .mul_scalar(c.content_weight)?
            .add(&style.mul_scalar(c.style_weight)?)?
            .add(&tv.mul_scalar(c.tv_weight)?)?;
        let terms = StyleLosses {
            content: content.to_scalar()?,
            style: style.to_scalar()?,
            tv: tv.to_scalar()?,
            total: total.to_scalar()?,
        };
        Ok((total, terms))
    }

    /// Runs the optimisation; `on_step(step, losses, image)` is called after every step
    /// (1-based) with the losses measured before it and the updated image. Returns the final
    /// image (`[1, 3, h, w]` in `[-1, 1]`) and its losses.
    pub fn run(
        &self,
        mut on_step: impl FnMut(usize, &StyleLosses, &Tensor) -> Result<()>,
    ) -> Result<(Tensor, StyleLosses)> {
        let c = &self.config;
        let device = self.content_image.device();
        let start = match c.init {
            Init::Content => self.content_image.to_device(Device::Cpu)?,
            Init::Noise => Tensor::rand(
                self.content_image.shape(),
                -1.0,
                1.0,
                self.content_image.dtype(),
                Device::Cpu,
                &mut Rng::new(c.seed),
            )?,
        };
        let x = start.to_device(device)?.detach().variable();
        let mut opt = Adam::new(
            vec![("image".into(), x.clone())],
            AdamConfig {
                lr: c.lr,
                ..Default::default()
            },
        )?;
        for step in 1..=c.steps {
            let (loss, terms) = self.loss(&x)?;
            if !terms.total.is_finite() {
                return Err(Error::invalid(
                    "neural style",
                    format!("the loss became {} at step {step}", terms.total),
                ));
            }
            let grads = loss.backward()?;
            opt.step(&grads)?;
            clamp_unit(&x)?;
            on_step(step, &terms, &x)?;
        }
        let (_, last) = no_grad(|| self.loss(&x))?;
        Ok((x.detach(), last))
    }
}

/// Clamps an image tensor to `[-1, 1]` in place (on the host: one small copy per step).
fn clamp_unit(x: &Tensor) -> Result<()> {
    let v: Vec<f32> = x
        .to_vec::<f32>()?
        .into_iter()
        .map(|p| p.clamp(-1.0, 1.0))
        .collect();
    x.set(&Tensor::from_vec(v, x.shape().clone(), Device::Cpu)?.to_device(x.device())?)
}

/// An image scaled (MATLAB bicubic, aspect kept) so that its longer side is `size`, as RGB.
pub fn fit_longer_side(img: &Image, size: usize) -> Result<Image> {
    let img = img.to_rgb();
    let longer = img.height.max(img.width);
    if size == 0 || longer == size {
        return Ok(img);
    }
    Ok(imresize(&img, size as f64 / longer as f64, Quantize::PerPass)?.quantized())
}

/// Opens an image for style transfer: RGB, longer side `size`.
pub fn open_image(path: &Path, size: usize) -> Result<Image> {
    fit_longer_side(&Image::open(path)?, size)
}
