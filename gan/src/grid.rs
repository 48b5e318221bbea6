//! Sample grids: a batch of images tiled into one PNG.

use gantry_core::{Error, Result, Tensor};
use gantry_nn::checkpoint::write_atomic;
use image::{DynamicImage, GrayImage, RgbImage};
use std::path::Path;

/// Tiles `[n, c, h, w]` images with values in `[-1, 1]` (clamped) into a grid of `ncol`
/// columns with a `pad`-pixel dark border, as torchvision's `make_grid`. `c` is 1 (grayscale)
/// or 3 (RGB).
pub fn make_grid(images: &Tensor, ncol: usize, pad: usize) -> Result<DynamicImage> {
    let op = "make_grid";
    let d = images.dims();
    if d.len() != 4 || !(d[1] == 1 || d[1] == 3) || d[0] == 0 {
        return Err(Error::shape(
            op,
            format!("expected [n, 1 or 3, h, w] images, got {}", images.shape()),
        ));
    }
    let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
    let ncol = ncol.clamp(1, n);
    let nrow = n.div_ceil(ncol);
    let (gw, gh) = (ncol * (w + pad) + pad, nrow * (h + pad) + pad);
    let v = images.to_dtype(gantry_core::DType::F32)?.to_vec::<f32>()?;
    let byte = |x: f32| (((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    let mut rgb = vec![0u8; gw * gh * c];
    for i in 0..n {
        let (x0, y0) = (pad + (i % ncol) * (w + pad), pad + (i / ncol) * (h + pad));
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let src = ((i * c + ch) * h + y) * w + x;
                    rgb[((y0 + y) * gw + x0 + x) * c + ch] = byte(v[src]);
                }
            }
        }
    }
    let (gw, gh) = (gw as u32, gh as u32);
    Ok(if c == 1 {
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(gw, gh, rgb).expect("buffer sized for the grid"),
        )
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(gw, gh, rgb).expect("buffer sized for the grid"))
    })
}

/// Encodes an image as PNG and writes it atomically.
pub fn save_png(img: &DynamicImage, path: &Path) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| Error::invalid("save_png", format!("{}: {e}", path.display())))?;
    write_atomic(path, bytes.get_ref())
}

/// [`make_grid`] then [`save_png`], with a square-ish layout.
pub fn save_grid(images: &Tensor, path: &Path) -> Result<()> {
    let n = images.dims().first().copied().unwrap_or(1);
    let ncol = (n as f64).sqrt().ceil() as usize;
    save_png(&make_grid(images, ncol, 2)?, path)
}
