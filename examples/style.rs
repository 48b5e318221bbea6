//! Neural style transfer (Gatys et al. 2016) with the library API only.
//!
//! `cargo run --release --example style [-- VGG19.safetensors]` repaints a Set5 photo with the
//! texture statistics of a Set14 picture (from `../shared/data/sr` when it exists, else two
//! generated pictures), at 128 pixels for 60 Adam steps, and writes `style_example.png`.
//! Without a VGG-19 file (torchvision's `features.*`, see the README) it uses random weights
//! of the real shapes: the losses fall the same way, but the picture is no style transfer.
//! `gantry stylize` is this with options, a progress bar and intermediate images.

use gantry::gan::sr::Image;
use gantry::gan::style::{open_image, NeuralStyle, StyleConfig};
use gantry::gan::vgg::Vgg19;
use gantry::{Result, Rng};
use std::path::Path;

/// A generated picture, for machines without the data sets.
fn picture(h: usize, w: usize, k: f32) -> Image {
    let mut data = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let v = 0.5 + 0.4 * (x as f32 * k + c as f32).sin() * (y as f32 * k / 2.0).cos();
                data.push((v * 255.0).round());
            }
        }
    }
    Image::new(3, h, w, data).expect("sized")
}

fn main() -> Result<()> {
    let size = 128;
    let sr = Path::new("../shared/data/sr");
    let (content, style) = if sr.is_dir() {
        (
            open_image(&sr.join("Set5/butterfly.png"), size)?,
            open_image(&sr.join("Set14/baboon.png"), size)?,
        )
    } else {
        (picture(size, size, 0.05), picture(size, size, 0.4))
    };

    // 1. The losses: content at conv4_2, Gram matrices at conv1_1…conv5_1, total variation.
    let config = StyleConfig {
        steps: 60,
        ..Default::default()
    };
    // 2. VGG-19 up to the deepest layer those losses read.
    let vgg = match std::env::args().nth(1) {
        Some(path) => Vgg19::load(path, config.deepest_layer())?,
        None => {
            println!("no VGG-19 file given: random weights (a mechanical demo)");
            Vgg19::new(config.deepest_layer(), &mut Rng::new(0))?
        }
    };
    // 3. The targets are computed once; then Adam moves the pixels.
    let ns = NeuralStyle::new(vgg, config, &content.to_tensor()?, &style.to_tensor()?)?;
    let (image, last) = ns.run(|step, l, _| {
        if step == 1 || step % 20 == 0 {
            println!(
                "step {step:>3}: total {:.4} (content {:.3e}, style {:.3e}, tv {:.4})",
                l.total, l.content, l.style, l.tv
            );
        }
        Ok(())
    })?;
    println!("final total loss {:.4}", last.total);
    Image::from_tensor(&image, 0)?
        .quantized()
        .save(Path::new("style_example.png"))?;
    println!("wrote style_example.png");
    Ok(())
}
