//! A VGG-19 feature extractor with torchvision's names and layouts (`features.N.weight`,
//! `features.N.bias`), loaded from a safetensors file: the perceptual loss of SRGAN and the
//! content/style losses of neural style transfer use this one implementation.
//!
//! torchvision's `vgg19().features` is 37 layers; the convolutions sit at these indices, each
//! followed by a ReLU at the next index, and max-pools at 4, 9, 18, 27, 36:
//!
//! ```text
//! conv1_1 0   conv1_2 2                      (pool 4)
//! conv2_1 5   conv2_2 7                      (pool 9)
//! conv3_1 10  conv3_2 12  conv3_3 14  conv3_4 16   (pool 18)
//! conv4_1 19  conv4_2 21  conv4_3 23  conv4_4 25   (pool 27)
//! conv5_1 28  conv5_2 30  conv5_3 32  conv5_4 34   (pool 36)
//! ```
//!
//! A feature "φi,j" is the output of ReLU after `convi_j` (index + 1). Only the layers up to
//! the deepest one asked for are built and loaded; the file may hold more (the rest of
//! `features`, `classifier.*`), which are ignored. Inputs are images in `[-1, 1]`, normalised
//! here with ImageNet's mean and standard deviation as torchvision's weights expect.
//!
//! To make the file from torchvision's pretrained weights (run where they can be downloaded):
//!
//! ```python
//! import torchvision, safetensors.torch as st
//! st.save_file({k: v for k, v in torchvision.models.vgg19(weights="IMAGENET1K_V1").state_dict().items()
//!               if k.startswith("features.")}, "vgg19.safetensors")
//! ```

use gantry_core::{no_grad, Conv2dParams, Device, Error, Result, Rng, Tensor};
use gantry_nn::checkpoint::{load_state_dict, load_tensors, save_tensors};
use gantry_nn::loss::Reduction;
use gantry_nn::{Conv2d, MaxPool2d, Mode, Module, ModuleExt, ReLU, Sequential};
use std::path::Path;

/// VGG-19's configuration "E": output channels of each conv, `0` for a max-pool.
const CFG: [usize; 21] = [
    64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0,
];

/// The `features` index of the ReLU after `conv{block}_{n}` (both 1-based): φblock,n.
pub fn relu_index(block: usize, n: usize) -> Result<usize> {
    let convs = [2, 2, 4, 4, 4];
    if !(1..=5).contains(&block) || n == 0 || n > convs[block - 1] {
        return Err(Error::invalid(
            "vgg19",
            format!("VGG-19 has no conv{block}_{n}"),
        ));
    }
    let mut index = 0;
    for (b, &count) in convs.iter().enumerate() {
        for k in 1..=count {
            if b + 1 == block && k == n {
                return Ok(index + 1);
            }
            index += 2;
        }
        index += 1; // the pool
    }
    unreachable!("conv{block}_{n} was checked to exist")
}

/// `vgg19().features[..=last]`.
pub struct Vgg19 {
    pub features: Sequential,
    last: usize,
    mean: Tensor,
    std: Tensor,
}

impl Vgg19 {
    /// Layers `0..=last`, randomly initialised as torchvision's `vgg19()` without weights is
    /// (what a "random VGG" is): conv weights from `N(0, 2 / (9·c_out))` (Kaiming, fan-out,
    /// ReLU gain), biases 0. That init keeps the activations' scale through all 16 layers, so
    /// even random deep features respond to the input.
    pub fn new(last: usize, rng: &mut Rng) -> Result<Self> {
        if last > 36 {
            return Err(Error::invalid(
                "vgg19",
                format!("features has 37 layers (0..=36); asked for up to {last}"),
            ));
        }
        // Layers are appended until index `last` is in: a conv, then its ReLU, or a pool.
        let mut features = Sequential::new();
        let mut c_in = 3;
        for &c in &CFG {
            if c == 0 {
                features = features.add(MaxPool2d::new(2));
            } else {
                let conv = Conv2d::new(c_in, c, 3, Conv2dParams::new(1, 1), true, rng)?;
                let std = (2.0 / (9 * c) as f64).sqrt();
                let w = conv.weight();
                w.set(&Tensor::randn(
                    w.shape(),
                    0.0,
                    std,
                    w.dtype(),
                    w.device(),
                    rng,
                )?)?;
                let b = conv.bias().expect("built with a bias");
                b.set(&b.zeros_like()?)?;
                features = features.add(conv);
                c_in = c;
                if features.len() > last {
                    break;
                }
                features = features.add(ReLU);
            }
            if features.len() > last {
                break;
            }
        }
        let mean = Tensor::from_vec(vec![0.485f32, 0.456, 0.406], [1, 3, 1, 1], Device::Cpu)?;
        let std = Tensor::from_vec(vec![0.229f32, 0.224, 0.225], [1, 3, 1, 1], Device::Cpu)?;
        Ok(Vgg19 {
            features,
            last,
            mean,
            std,
        })
    }

    /// Loads layers `0..=last` from a safetensors file with torchvision's names. Tensors of
    /// deeper layers and any not under `features.` are ignored; a missing tensor or a wrong
    /// shape is an error naming it.
    pub fn load(path: impl AsRef<Path>, last: usize) -> Result<Self> {
        let path = path.as_ref();
        let vgg = Self::new(last, &mut Rng::new(0))?;
        let file = load_tensors(path)?;
        let wanted: Vec<(String, Tensor)> = file
            .tensors
            .into_iter()
            .filter(|(name, _)| {
                name.strip_prefix("features.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_some_and(|i| i <= last)
            })
            .collect();
        load_state_dict(&vgg, &wanted).map_err(|e| match e {
            Error::Invalid { msg, .. } => Error::invalid(
                "vgg19",
                format!(
                    "{} is not a VGG-19 `features` state_dict (torchvision names): {msg}",
                    path.display()
                ),
            ),
            e => e,
        })?;
        Ok(vgg)
    }

    /// Writes a randomly initialised VGG-19 `features` file with the real names and shapes (all
    /// 16 convolutions, 80 MB): for tests and mechanical demos, never for real perceptual work.
    pub fn write_random(path: impl AsRef<Path>, seed: u64) -> Result<()> {
        let vgg = Self::new(36, &mut Rng::new(seed))?;
        let tensors: Vec<(String, Tensor)> = vgg
            .named_tensors()
            .into_iter()
            .map(|t| (t.name, t.tensor))
            .collect();
        save_tensors(path, &tensors, None)
    }

    /// The deepest layer built.
    pub fn last(&self) -> usize {
        self.last
    }

    /// Where the weights are.
    pub fn device(&self) -> Device {
        self.named_parameters()
            .first()
            .map_or(Device::Cpu, |(_, t)| t.device())
    }

    /// Moves the weights and the normalisation constants to `device` (`ModuleExt::to_device`
    /// would move the weights only).
    pub fn move_to(&mut self, device: Device) -> Result<()> {
        ModuleExt::to_device(self, device)?;
        self.mean = self.mean.to_device(device)?;
        self.std = self.std.to_device(device)?;
        Ok(())
    }

    /// Maps images in `[-1, 1]` to ImageNet-normalised inputs.
    pub fn normalize(&self, x: &Tensor) -> Result<Tensor> {
        x.add_scalar(1.0)?
            .mul_scalar(0.5)?
            .sub(&self.mean)?
            .div(&self.std)
    }

    /// The outputs of the given `features` layers (each ≤ `last`), in the order asked, for
    /// images in `[-1, 1]`. The gradient flows to the images only, never to the weights.
    pub fn features_at(&self, x: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>> {
        if let Some(&bad) = layers.iter().find(|&&l| l > self.last) {
            return Err(Error::invalid(
                "vgg19",
                format!(
                    "layer {bad} asked for, but only 0..={} were built",
                    self.last
                ),
            ));
        }
        let d = x.dims();
        if d.len() != 4 || d[1] != 3 {
            return Err(Error::shape(
                "vgg19",
                format!("expected [n, 3, h, w] images, got {}", x.shape()),
            ));
        }
        let mut out: Vec<Option<Tensor>> = vec![None; layers.len()];
        let mut h = self.normalize(x)?;
        for i in 0..=self.last {
            let layer = self.features.get(i).expect("built up to last");
            h = if layer.kind() == "Conv2d" {
                // The network is a fixed feature extractor: its weights enter as constants,
                // so a backward pass computes the gradient for the input only and skips the
                // weight gradients, the costlier half of each convolution's backward.
                let p = layer.named_parameters();
                h.conv2d(
                    &p[0].1.detach(),
                    Some(&p[1].1.detach()),
                    Conv2dParams::new(1, 1),
                )?
            } else {
                layer.forward(&h, Mode::Eval)?
            };
            for (slot, _) in out.iter_mut().zip(layers).filter(|(_, &l)| l == i) {
                *slot = Some(h.clone());
            }
        }
        Ok(out
            .into_iter()
            .map(|t| t.expect("every layer visited"))
            .collect())
    }
}

impl Module for Vgg19 {
    fn kind(&self) -> &'static str {
        "VGG"
    }
    /// The output of the last layer built.
    fn forward(&self, x: &Tensor, _: Mode) -> Result<Tensor> {
        Ok(self.features_at(x, &[self.last])?.remove(0))
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("features".into(), &self.features as &dyn Module)]
    }
}

/// SRGAN's VGG loss: the MSE between the VGG features of the output and of the target at one
/// layer (φ5,4 by default), both feature maps scaled by `1/12.75` as in the paper (which
/// brings the loss to the range of the pixel MSE).
pub struct PerceptualLoss {
    pub vgg: Vgg19,
    pub layer: usize,
    pub feature_scale: f64,
}

impl PerceptualLoss {
    /// The paper's loss: φ5,4 (index 35), features scaled by 1/12.75.
    pub fn srgan(path: impl AsRef<Path>) -> Result<Self> {
        let layer = relu_index(5, 4)?;
        Ok(PerceptualLoss {
            vgg: Vgg19::load(path, layer)?,
            layer,
            feature_scale: 1.0 / 12.75,
        })
    }

    /// The loss of `output` against `target` (images in `[-1, 1]`); the gradient flows to
    /// `output` only.
    pub fn loss(&self, output: &Tensor, target: &Tensor) -> Result<Tensor> {
        let want = no_grad(|| self.vgg.features_at(target, &[self.layer]))?.remove(0);
        let got = self.vgg.features_at(output, &[self.layer])?.remove(0);
        let s = self.feature_scale;
        gantry_core::loss::mse(
            &got.mul_scalar(s)?,
            &want.detach().mul_scalar(s)?,
            Reduction::Mean,
        )
    }
}
