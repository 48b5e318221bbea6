//! Bicubic resizing as MATLAB's `imresize(I, scale, 'bicubic')` does it: the convention every SR
//! paper's low-resolution inputs and bicubic baselines follow.
//!
//! What makes it MATLAB's rather than any bicubic:
//! - Keys' cubic kernel with `a = −0.5`;
//! - when shrinking, the kernel is stretched by `1/scale` (antialiasing: ×1/4 averages over a
//!   16-pixel support, not 4);
//! - output pixel `x` (1-based) samples input position `u = x/scale + ½(1 − 1/scale)`, so pixel
//!   centres, not corners, line up;
//! - samples outside the image are mirrored (`…, 2, 1, 1, 2, …`), not clamped;
//! - the height is resized first, then the width, and an 8-bit input is rounded back to 8 bits
//!   after each pass ([`Quantize::PerPass`]).
//!
//! The `image` crate's `CatmullRom` filter uses the same kernel but clamps at the borders and
//! resizes in another order; `tests/sr_data.rs` measures both against the `LRbicx4` files that
//! MATLAB made for Set5 and Set14.

use super::Image;
use gantry_core::{Error, Result};

/// Keys' cubic convolution kernel with `a = −0.5` (MATLAB's `cubic`).
pub fn cubic(x: f64) -> f64 {
    let a = x.abs();
    let (a2, a3) = (a * a, a * a * a);
    if a <= 1.0 {
        1.5 * a3 - 2.5 * a2 + 1.0
    } else if a <= 2.0 {
        -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    } else {
        0.0
    }
}

/// Whether results are rounded to integers between and after the two 1-D passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// Keep full precision (float images).
    None,
    /// Round and clamp to 0–255 after each pass, as MATLAB does for `uint8` images.
    PerPass,
}

/// For each output index, the input indices it reads and their weights (summing to 1).
struct Contributions {
    taps: usize,
    index: Vec<usize>,
    weight: Vec<f64>,
}

fn contributions(in_len: usize, out_len: usize, scale: f64) -> Contributions {
    let shrinking = scale < 1.0;
    // Antialiasing: shrinking by `scale` stretches the kernel by `1/scale`.
    let width = if shrinking { 4.0 / scale } else { 4.0 };
    let kernel = |x: f64| {
        if shrinking {
            scale * cubic(scale * x)
        } else {
            cubic(x)
        }
    };
    let taps = width.ceil() as usize + 2;
    let mut index = Vec::with_capacity(out_len * taps);
    let mut weight = Vec::with_capacity(out_len * taps);
    let n = in_len as i64;
    for x in 1..=out_len {
        // 1-based positions, as in MATLAB.
        let u = x as f64 / scale + 0.5 * (1.0 - 1.0 / scale);
        let left = (u - width / 2.0).floor() as i64;
        let start = weight.len();
        for j in 0..taps as i64 {
            let i = left + j;
            weight.push(kernel(u - i as f64));
            // Mirror into 1..=n: the sequence 1..n, n..1 repeats with period 2n.
            let m = (i - 1).rem_euclid(2 * n);
            let k = if m < n { m } else { 2 * n - 1 - m };
            index.push(k as usize);
        }
        let sum: f64 = weight[start..].iter().sum();
        for w in &mut weight[start..] {
            *w /= sum;
        }
    }
    Contributions {
        taps,
        index,
        weight,
    }
}

/// Resizes every channel of `img` by `scale` (output sides `ceil(side · scale)`), as
/// `imresize(img, scale, 'bicubic')`.
pub fn imresize(img: &Image, scale: f64, quantize: Quantize) -> Result<Image> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::invalid("imresize", format!("scale {scale}")));
    }
    let oh = (img.height as f64 * scale - 1e-9).ceil().max(1.0) as usize;
    let ow = (img.width as f64 * scale - 1e-9).ceil().max(1.0) as usize;
    resize_to(img, oh, ow, scale, quantize)
}

/// Resizes to exactly `oh × ow`; `scale` sets the kernel and the sample positions (MATLAB's
/// `imresize(img, scale, 'bicubic', 'OutputSize', …)` keeps them tied to the scale).
pub fn resize_to(
    img: &Image,
    oh: usize,
    ow: usize,
    scale: f64,
    quantize: Quantize,
) -> Result<Image> {
    if img.height == 0 || img.width == 0 || oh == 0 || ow == 0 {
        return Err(Error::shape(
            "imresize",
            format!(
                "{}x{} to {oh}x{ow}: sides must be positive",
                img.height, img.width
            ),
        ));
    }
    let (h, w, c) = (img.height, img.width, img.channels);
    let rows = contributions(h, oh, scale);
    let cols = contributions(w, ow, scale);
    let q = |v: f64| match quantize {
        Quantize::None => v as f32,
        Quantize::PerPass => v.round().clamp(0.0, 255.0) as f32,
    };
    let mut out = Vec::with_capacity(c * oh * ow);
    let mut tall = vec![0f32; oh * w];
    for plane in img.data.chunks(h * w) {
        // Pass 1, along the height: output row `y` mixes `taps` input rows.
        for y in 0..oh {
            let (idx, wt) = (
                &rows.index[y * rows.taps..(y + 1) * rows.taps],
                &rows.weight[y * rows.taps..(y + 1) * rows.taps],
            );
            for x in 0..w {
                let v: f64 = idx
                    .iter()
                    .zip(wt)
                    .map(|(&i, &k)| plane[i * w + x] as f64 * k)
                    .sum();
                tall[y * w + x] = q(v);
            }
        }
        // Pass 2, along the width.
        for y in 0..oh {
            let row = &tall[y * w..(y + 1) * w];
            for x in 0..ow {
                let (idx, wt) = (
                    &cols.index[x * cols.taps..(x + 1) * cols.taps],
                    &cols.weight[x * cols.taps..(x + 1) * cols.taps],
                );
                let v: f64 = idx.iter().zip(wt).map(|(&i, &k)| row[i] as f64 * k).sum();
                out.push(q(v));
            }
        }
    }
    Image::new(c, oh, ow, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_interpolates_and_sums_to_one() {
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(2.0), 0.0);
        for k in 0..10 {
            let t = k as f64 / 10.0;
            let s: f64 = (-2..=2).map(|i| cubic(t - i as f64)).sum();
            assert!((s - 1.0).abs() < 1e-12, "partition of unity at {t}: {s}");
        }
    }

    #[test]
    fn mirrored_indices_and_weights() {
        let c = contributions(5, 20, 4.0);
        assert_eq!(c.taps, 6);
        assert!(c.index.iter().all(|&i| i < 5));
        for o in 0..20 {
            let s: f64 = c.weight[o * 6..(o + 1) * 6].iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        // Output 1 of ×4 sits at u = 1/4 + 3/8 = 0.625, left = floor(0.625 − 2) = −2: the
        // taps read input −2..3 (1-based), mirrored about the edge to 3, 2, 1, 1, 2, 3
        // (0-based 2, 1, 0, 0, 1, 2).
        assert_eq!(&c.index[..6], &[2, 1, 0, 0, 1, 2]);
    }

    #[test]
    fn constant_image_stays_constant_and_sizes_follow_the_scale() {
        let img = Image::new(3, 13, 9, vec![77.0; 3 * 13 * 9]).unwrap();
        for scale in [0.25, 0.5, 2.0, 4.0] {
            let out = imresize(&img, scale, Quantize::None).unwrap();
            assert_eq!(
                (out.height, out.width),
                (
                    (13.0 * scale).ceil() as usize,
                    (9.0 * scale).ceil() as usize
                )
            );
            assert!(out.data.iter().all(|&v| (v - 77.0).abs() < 1e-4));
        }
    }

    #[test]
    fn shrinking_a_linear_ramp_samples_its_centres() {
        // A ramp along the width is reproduced exactly away from the borders: cubic
        // convolution is exact for linear functions, and ×1/2 samples at input 2x − ½.
        let (h, w) = (4, 32);
        let data = (0..h * w).map(|i| (i % w) as f32).collect();
        let img = Image::new(1, h, w, data).unwrap();
        let out = imresize(&img, 0.5, Quantize::None).unwrap();
        for x in 4..12 {
            let want = 2.0 * x as f32 + 0.5;
            assert!((out.data[x] - want).abs() < 1e-4, "{x}: {}", out.data[x]);
        }
    }
}
