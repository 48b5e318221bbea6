//! PSNR and SSIM with the super-resolution papers' protocol.
//!
//! Both are computed on the luma (Y) channel of YCbCr, ITU-R BT.601 as MATLAB's `rgb2ycbcr`
//! gives it for 8-bit images: `Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`, rounded to
//! an integer (a grayscale image is used as it is). `scale` pixels are shaved off every
//! border first, because the borders of an upscaled image depend on how each method pads.
//!
//! - **PSNR** `= 10 log10(255² / MSE)` over the shaved Y planes.
//! - **SSIM** is Wang et al.'s (2004) reference `ssim.m`: an 11x11 Gaussian window with
//!   σ = 1.5 (normalised to sum 1), `K1 = 0.01`, `K2 = 0.03`, `L = 255`, local statistics over
//!   every position where the window fits ("valid"), and the mean of the SSIM map.
//!
//! With these, MATLAB-bicubic ×4 on Set5 and Set14 gives the well-known baselines (28.42 dB /
//! 0.810 and 26.0 dB / 0.703): `tests/sr_data.rs` checks it on the files in `shared/data/sr`.

use crate::sr::Image;
use gantry_core::{Error, Result};

/// The rounded BT.601 luma of an 8-bit image (values are rounded and clamped to 0–255 first),
/// `height × width`, row-major. A grayscale image is its own luma (the evaluation scripts
/// use a one-channel image as it is; Set14's `bridge` is one).
pub fn luma(img: &Image) -> Vec<f64> {
    let n = img.height * img.width;
    let px = |c: usize, i: usize| img.data[c * n + i].round().clamp(0.0, 255.0) as f64;
    (0..n)
        .map(|i| {
            if img.channels < 3 {
                return px(0, i);
            }
            let (r, g, b) = (px(0, i), px(1, i), px(2, i));
            (16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0).round()
        })
        .collect()
}

/// A luma plane with `shave` pixels removed at every border.
fn shaved(img: &Image, shave: usize) -> Result<(Vec<f64>, usize, usize)> {
    let (h, w) = (img.height, img.width);
    if h <= 2 * shave || w <= 2 * shave {
        return Err(Error::shape(
            "sr metrics",
            format!("a {h}x{w} image has nothing left after shaving {shave} pixels per border"),
        ));
    }
    let y = luma(img);
    let (sh, sw) = (h - 2 * shave, w - 2 * shave);
    let mut out = Vec::with_capacity(sh * sw);
    for r in shave..h - shave {
        out.extend_from_slice(&y[r * w + shave..r * w + w - shave]);
    }
    Ok((out, sh, sw))
}

fn same_size(op: &'static str, a: &Image, b: &Image) -> Result<()> {
    if (a.height, a.width) != (b.height, b.width) {
        return Err(Error::shape(
            op,
            format!(
                "the images differ in size: {}x{} vs {}x{}",
                a.height, a.width, b.height, b.width
            ),
        ));
    }
    Ok(())
}

/// PSNR in dB between the Y channels of `test` and `reference` after shaving `shave` pixels.
/// Identical images give `f64::INFINITY`.
pub fn psnr_y(test: &Image, reference: &Image, shave: usize) -> Result<f64> {
    same_size("psnr", test, reference)?;
    let (a, _, _) = shaved(test, shave)?;
    let (b, _, _) = shaved(reference, shave)?;
    Ok(psnr(&a, &b, 255.0))
}

/// PSNR of two planes of the same length for values up to `peak`.
pub fn psnr(a: &[f64], b: &[f64], peak: f64) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len() as f64;
    10.0 * (peak * peak / mse).log10()
}

/// The 11x11 Gaussian window of σ 1.5, normalised to sum 1 (MATLAB's
/// `fspecial('gaussian', 11, 1.5)`), as its 1-D factor: the window is its outer product.
fn gaussian_11() -> [f64; 11] {
    let mut g = [0f64; 11];
    for (i, v) in g.iter_mut().enumerate() {
        let x = i as f64 - 5.0;
        *v = (-x * x / (2.0 * 1.5 * 1.5)).exp();
    }
    let s: f64 = g.iter().sum();
    g.map(|v| v / s)
}

/// Valid-mode separable filtering of an `h × w` plane with the window `g ⊗ g`.
fn filter_valid(x: &[f64], h: usize, w: usize, g: &[f64; 11]) -> Vec<f64> {
    let (oh, ow) = (h - 10, w - 10);
    let mut rows = vec![0f64; h * ow];
    for r in 0..h {
        for c in 0..ow {
            rows[r * ow + c] = (0..11).map(|k| g[k] * x[r * w + c + k]).sum();
        }
    }
    let mut out = vec![0f64; oh * ow];
    for r in 0..oh {
        for c in 0..ow {
            out[r * ow + c] = (0..11).map(|k| g[k] * rows[(r + k) * ow + c]).sum();
        }
    }
    out
}

/// Mean SSIM of two `h × w` planes (values up to 255), Wang et al.'s reference definition.
pub fn ssim(a: &[f64], b: &[f64], h: usize, w: usize) -> Result<f64> {
    if h < 11 || w < 11 || a.len() != h * w || b.len() != h * w {
        return Err(Error::shape(
            "ssim",
            format!(
                "planes of {} and {} values as {h}x{w} (the window needs 11x11)",
                a.len(),
                b.len()
            ),
        ));
    }
    let g = gaussian_11();
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).collect::<Vec<_>>();
    let mu_a = filter_valid(a, h, w, &g);
    let mu_b = filter_valid(b, h, w, &g);
    let aa = filter_valid(&prod(a, a), h, w, &g);
    let bb = filter_valid(&prod(b, b), h, w, &g);
    let ab = filter_valid(&prod(a, b), h, w, &g);
    let n = mu_a.len();
    let mut total = 0.0;
    for i in 0..n {
        let (ma, mb) = (mu_a[i], mu_b[i]);
        let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
        total +=
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
    }
    Ok(total / n as f64)
}

/// SSIM between the Y channels of `test` and `reference` after shaving `shave` pixels.
pub fn ssim_y(test: &Image, reference: &Image, shave: usize) -> Result<f64> {
    same_size("ssim", test, reference)?;
    let (a, h, w) = shaved(test, shave)?;
    let (b, _, _) = shaved(reference, shave)?;
    ssim(&a, &b, h, w)
}

/// PSNR and SSIM of one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SrScore {
    pub psnr: f64,
    pub ssim: f64,
}

/// Both metrics of `test` against `reference`, with the `scale`-pixel shave.
pub fn sr_score(test: &Image, reference: &Image, scale: usize) -> Result<SrScore> {
    Ok(SrScore {
        psnr: psnr_y(test, reference, scale)?,
        ssim: ssim_y(test, reference, scale)?,
    })
}

/// The mean of each metric (the papers average per-image PSNRs, not MSEs).
pub fn mean_score(scores: &[SrScore]) -> SrScore {
    let n = scores.len().max(1) as f64;
    SrScore {
        psnr: scores.iter().map(|s| s.psnr).sum::<f64>() / n,
        ssim: scores.iter().map(|s| s.ssim).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(h: usize, w: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
        (0..h * w).map(|i| f(i / w, i % w)).collect()
    }

    #[test]
    fn psnr_of_a_known_error() {
        // A uniform error of 5 gives 10·log10(255²/25) = 10·log10(2601) = 34.1514…
        let a = plane(8, 8, |r, c| (r * 8 + c) as f64);
        let b: Vec<f64> = a.iter().map(|v| v + 5.0).collect();
        assert!((psnr(&a, &b, 255.0) - 34.151403521958).abs() < 1e-9);
        assert_eq!(psnr(&a, &a, 255.0), f64::INFINITY);
    }

    #[test]
    fn ssim_is_one_for_identical_and_matches_the_global_formula_on_flat_shifts() {
        let a = plane(20, 24, |r, c| ((r * 7 + c * 13) % 50) as f64 * 3.0);
        assert!((ssim(&a, &a, 20, 24).unwrap() - 1.0).abs() < 1e-12);
        // Two constant planes 100 and 110: no variance, so SSIM is the luminance term alone,
        // (2·100·110 + C1) / (100² + 110² + C1) at every position.
        let c1 = (0.01f64 * 255.0).powi(2);
        let want = (2.0 * 100.0 * 110.0 + c1) / (100.0f64.powi(2) + 110.0f64.powi(2) + c1);
        let p = vec![100.0; 15 * 15];
        let q = vec![110.0; 15 * 15];
        assert!((ssim(&p, &q, 15, 15).unwrap() - want).abs() < 1e-12);
        // An inverted pattern is strongly anti-correlated: SSIM below zero.
        let inv: Vec<f64> = a.iter().map(|v| 150.0 - v).collect();
        assert!(ssim(&a, &inv, 20, 24).unwrap() < 0.0);
    }

    #[test]
    fn window_is_normalised_and_symmetric() {
        let g = gaussian_11();
        assert!((g.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for i in 0..5 {
            assert_eq!(g[i], g[10 - i]);
        }
        // exp(−25/4.5) relative to the centre.
        assert!((g[0] / g[5] - (-25.0f64 / 4.5).exp()).abs() < 1e-15);
    }

    #[test]
    fn luma_of_primaries_follows_bt601() {
        let img = Image::new(
            3,
            1,
            4,
            vec![
                255.0, 0.0, 0.0, 255.0, // R
                0.0, 255.0, 0.0, 255.0, // G
                0.0, 0.0, 255.0, 255.0, // B
            ],
        )
        .unwrap();
        // 16 + 65.481 = 81.481 → 81, 16 + 128.553 → 145, 16 + 24.966 → 41, white → 235.
        assert_eq!(luma(&img), vec![81.0, 145.0, 41.0, 235.0]);
    }

    #[test]
    fn shaving_and_size_errors() {
        let a = Image::new(1, 10, 10, vec![0.0; 100]).unwrap();
        let b = Image::new(1, 10, 12, vec![0.0; 120]).unwrap();
        assert!(psnr_y(&a, &b, 0)
            .unwrap_err()
            .to_string()
            .contains("10x10 vs 10x12"));
        assert!(psnr_y(&a, &a, 5).is_err());
        assert!(ssim_y(&a, &a, 0).unwrap_err().to_string().contains("11x11"));
    }
}
