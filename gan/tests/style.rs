//! Neural style transfer: the Gram matrix, style loss and total variation against hand-computed
//! values, and the optimisation on a random VGG-19 file of the real names and shapes.

use gantry_core::{Device, Tensor};
use gantry_gan::style::{gram, style_loss, total_variation, Init, NeuralStyle, StyleConfig};
use gantry_gan::vgg::Vgg19;
use std::path::PathBuf;
use std::sync::OnceLock;

fn t(v: &[f32], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, Device::Cpu).unwrap()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "{got:?} vs {want:?}"
        );
    }
}

/// Features `[1, 2, 2, 2]`: channel 0 is `1 2 3 4`, channel 1 is `0 1 0 −1`. By hand,
/// `F Fᵀ = [[1+4+9+16, 0+2+0−4], [−2, 0+1+0+1]] = [[30, −2], [−2, 2]]`, over `c·h·w = 8`.
#[test]
fn gram_matrix_by_hand() {
    let f = t(&[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, -1.0], &[1, 2, 2, 2]);
    let g = gram(&f).unwrap();
    assert_eq!(g.dims(), &[1, 2, 2]);
    close(&g.to_vec::<f32>().unwrap(), &[3.75, -0.25, -0.25, 0.25]);
    // Two images: one Gram each.
    let two = Tensor::concat(&[&f, &f.mul_scalar(2.0).unwrap()], 0).unwrap();
    let g2 = gram(&two).unwrap().to_vec::<f32>().unwrap();
    close(&g2[4..], &[15.0, -1.0, -1.0, 1.0]);
    assert!(gram(&t(&[1.0; 4], &[2, 2])).is_err());
}

/// Against a zero target, a layer's term is `w · mean(G²)` = `w · (3.75² + 2·0.25² + 0.25²) / 4`
/// = `3.5625 w`; against the Gram itself, 0.
#[test]
fn style_loss_by_hand() {
    let f = t(&[1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, -1.0], &[1, 2, 2, 2]);
    let zero = Tensor::zeros([1, 2, 2], gantry_core::DType::F32, Device::Cpu).unwrap();
    let l = style_loss(
        std::slice::from_ref(&f),
        std::slice::from_ref(&zero),
        &[0.5],
    )
    .unwrap();
    close(&[l.to_scalar().unwrap() as f32], &[0.5 * 3.5625]);
    // Two layers add, each with its weight.
    let g = gram(&f).unwrap();
    let l = style_loss(&[f.clone(), f.clone()], &[zero, g], &[2.0, 7.0]).unwrap();
    close(&[l.to_scalar().unwrap() as f32], &[2.0 * 3.5625]);
    // The gradient of the zero-target term: d/dF of mean(G²) — checked by a finite difference.
    let x = f.variable();
    let zero = Tensor::zeros([1, 2, 2], gantry_core::DType::F32, Device::Cpu).unwrap();
    let l = style_loss(
        std::slice::from_ref(&x),
        std::slice::from_ref(&zero),
        &[1.0],
    )
    .unwrap();
    let grad = l
        .backward()
        .unwrap()
        .get(&x)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let base = f.to_vec::<f32>().unwrap();
    for i in 0..8 {
        let mut p = base.clone();
        let h = 1e-2;
        p[i] += h;
        let up = style_loss(&[t(&p, &[1, 2, 2, 2])], std::slice::from_ref(&zero), &[1.0]).unwrap();
        p[i] -= 2.0 * h;
        let down =
            style_loss(&[t(&p, &[1, 2, 2, 2])], std::slice::from_ref(&zero), &[1.0]).unwrap();
        let fd = (up.to_scalar().unwrap() - down.to_scalar().unwrap()) / (2.0 * h as f64);
        assert!(
            (fd - grad[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
            "element {i}: {fd} vs {}",
            grad[i]
        );
    }
    assert!(style_loss(&[], &[], &[]).is_err());
}

/// `[[0, 1], [3, 5]]`: vertical differences 3 and 4 (mean 3.5), horizontal 1 and 2 (mean 1.5).
#[test]
fn total_variation_by_hand() {
    let x = t(&[0.0, 1.0, 3.0, 5.0], &[1, 1, 2, 2]);
    close(
        &[total_variation(&x).unwrap().to_scalar().unwrap() as f32],
        &[5.0],
    );
    assert!(total_variation(&t(&[1.0, 2.0], &[1, 1, 1, 2])).is_err());
}

/// A random VGG-19 file of the real names and shapes (80 MB), written once into cargo's
/// scratch folder for tests and kept for later runs (the write is atomic).
fn vgg_file() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vgg19-random-7.safetensors");
        if !p.exists() {
            Vgg19::write_random(&p, 7).unwrap();
        }
        p
    })
}

fn picture(h: usize, w: usize, k: f32) -> Tensor {
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                v.push(((x as f32 * k + c as f32).sin() * (y as f32 / 5.0 - k).cos()) * 0.8);
            }
        }
    }
    t(&v, &[1, 3, h, w])
}

fn run(
    init: Init,
) -> (
    gantry_gan::style::StyleLosses,
    gantry_gan::style::StyleLosses,
    Tensor,
) {
    let config = StyleConfig {
        steps: 12,
        lr: 0.05,
        init,
        ..Default::default()
    };
    let vgg = Vgg19::load(vgg_file(), config.deepest_layer()).unwrap();
    let (content, style) = (picture(32, 40, 0.3), picture(24, 24, 1.7));
    let ns = NeuralStyle::new(vgg, config, &content, &style).unwrap();
    let mut first = None;
    let (image, last) = ns
        .run(|_, l, x| {
            first.get_or_insert(*l);
            let v = x.to_vec::<f32>().unwrap();
            assert!(v.iter().all(|p| (-1.0..=1.0).contains(p)), "pixels clamped");
            Ok(())
        })
        .unwrap();
    assert_eq!(image.dims(), &[1, 3, 32, 40]);
    (first.unwrap(), last, image)
}

#[test]
fn from_the_content_image_the_style_and_total_losses_fall() {
    let (first, last, _) = run(Init::Content);
    eprintln!("{first:?}\n{last:?}");
    assert_eq!(
        first.content, 0.0,
        "the content image matches its own features"
    );
    assert!(
        last.style < 0.7 * first.style,
        "style {} → {}",
        first.style,
        last.style
    );
    assert!(
        last.total < first.total,
        "total {} → {}",
        first.total,
        last.total
    );
}

#[test]
fn from_noise_the_content_loss_falls_too() {
    let (first, last, _) = run(Init::Noise);
    eprintln!("{first:?}\n{last:?}");
    assert!(
        last.content < first.content,
        "content {} → {}",
        first.content,
        last.content
    );
    assert!(
        last.style < first.style,
        "style {} → {}",
        first.style,
        last.style
    );
    assert!(last.total < first.total);
}

#[test]
fn a_vgg_too_shallow_for_the_layers_is_refused() {
    let vgg = Vgg19::load(vgg_file(), 10).unwrap();
    let x = picture(16, 16, 0.5);
    let e = NeuralStyle::new(vgg, StyleConfig::default(), &x, &x)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("only 0..=10"), "{e}");
}
