//! [`Image`]: a planar `f32` image on the 0–255 scale, the form the resizer, the metrics and the
//! SR data pipeline share.

use gantry_core::{Device, Error, Result, Tensor};
use image::{DynamicImage, GrayImage, RgbImage};
use std::path::Path;

/// `channels × height × width` values on the 0–255 scale (not rounded), channel-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(channels: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != channels * height * width || channels == 0 {
            return Err(Error::shape(
                "Image",
                format!(
                    "{} values for {channels} channel(s) of {height}x{width}",
                    data.len()
                ),
            ));
        }
        Ok(Image {
            channels,
            height,
            width,
            data,
        })
    }

    /// Decodes a PNG/JPEG file. Grayscale files stay one channel; everything else becomes RGB.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let img = image::open(path)
            .map_err(|e| Error::invalid("Image::open", format!("{}: {e}", path.display())))?;
        Ok(Self::from_dynamic(&img))
    }

    pub fn from_dynamic(img: &DynamicImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let gray = matches!(
            img,
            DynamicImage::ImageLuma8(_) | DynamicImage::ImageLuma16(_)
        );
        if gray {
            let g = img.to_luma8();
            let data = g.pixels().map(|p| p.0[0] as f32).collect();
            return Image {
                channels: 1,
                height: h,
                width: w,
                data,
            };
        }
        let rgb = img.to_rgb8();
        let mut data = Vec::with_capacity(3 * w * h);
        for c in 0..3 {
            data.extend(rgb.pixels().map(|p| p.0[c] as f32));
        }
        Image {
            channels: 3,
            height: h,
            width: w,
            data,
        }
    }

    /// The same image with three channels (a grayscale one repeated).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let plane = &self.data[..self.height * self.width];
        Image {
            channels: 3,
            height: self.height,
            width: self.width,
            data: [plane, plane, plane].concat(),
        }
    }

    /// One channel: the mean of the channels (how an RGB model's output for a grayscale input,
    /// fed as three equal channels, comes back to gray).
    pub fn to_gray(&self) -> Image {
        let n = self.height * self.width;
        let k = self.channels as f32;
        let data = (0..n)
            .map(|i| {
                (0..self.channels)
                    .map(|c| self.data[c * n + i])
                    .sum::<f32>()
                    / k
            })
            .collect();
        Image {
            channels: 1,
            height: self.height,
            width: self.width,
            data,
        }
    }

    /// Rounded to integers and clamped to 0–255, as an 8-bit file would hold it.
    pub fn quantized(&self) -> Image {
        Image {
            data: self
                .data
                .iter()
                .map(|&v| v.round().clamp(0.0, 255.0))
                .collect(),
            ..*self
        }
    }

    /// 8-bit pixels (rounded and clamped).
    pub fn to_dynamic(&self) -> DynamicImage {
        let (w, h) = (self.width as u32, self.height as u32);
        let px = |c: usize, i: usize| {
            self.data[c * self.height * self.width + i]
                .round()
                .clamp(0.0, 255.0) as u8
        };
        let n = self.height * self.width;
        if self.channels == 1 {
            DynamicImage::ImageLuma8(
                GrayImage::from_raw(w, h, (0..n).map(|i| px(0, i)).collect())
                    .expect("sized for the image"),
            )
        } else {
            let bytes = (0..n)
                .flat_map(|i| (0..3).map(move |c| (c, i)))
                .map(|(c, i)| px(c, i));
            DynamicImage::ImageRgb8(
                RgbImage::from_raw(w, h, bytes.collect()).expect("sized for the image"),
            )
        }
    }

    /// Writes a PNG atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::grid::save_png(&self.to_dynamic(), path)
    }

    /// The `h × w` window at `(y, x)`.
    pub fn crop(&self, y: usize, x: usize, h: usize, w: usize) -> Result<Image> {
        if y + h > self.height || x + w > self.width {
            return Err(Error::shape(
                "Image::crop",
                format!(
                    "a {h}x{w} window at ({y}, {x}) does not fit a {}x{} image",
                    self.height, self.width
                ),
            ));
        }
        let mut data = Vec::with_capacity(self.channels * h * w);
        for c in 0..self.channels {
            for r in y..y + h {
                let row = (c * self.height + r) * self.width;
                data.extend_from_slice(&self.data[row + x..row + x + w]);
            }
        }
        Ok(Image {
            channels: self.channels,
            height: h,
            width: w,
            data,
        })
    }

    /// The top-left crop whose sides are multiples of `scale` (the SR papers' "modcrop").
    pub fn modcrop(&self, scale: usize) -> Image {
        let (h, w) = (self.height / scale * scale, self.width / scale * scale);
        self.crop(0, 0, h, w).expect("a modcrop fits")
    }

    /// `[1, c, h, w]` with values mapped from 0–255 to `[-1, 1]`, the networks' range.
    pub fn to_tensor(&self) -> Result<Tensor> {
        let data = self.data.iter().map(|&v| v / 127.5 - 1.0).collect();
        Tensor::from_vec(
            data,
            [1, self.channels, self.height, self.width],
            Device::Cpu,
        )
    }

    /// Image `index` of a `[n, c, h, w]` tensor in `[-1, 1]`, back on the 0–255 scale (clamped,
    /// not rounded).
    pub fn from_tensor(t: &Tensor, index: usize) -> Result<Image> {
        let d = t.dims();
        if d.len() != 4 || index >= d[0] {
            return Err(Error::shape(
                "Image::from_tensor",
                format!("image {index} of a tensor of shape {}", t.shape()),
            ));
        }
        let per = d[1] * d[2] * d[3];
        let v = t.to_dtype(gantry_core::DType::F32)?.to_vec::<f32>()?;
        let data = v[index * per..(index + 1) * per]
            .iter()
            .map(|&x| ((x + 1.0) * 127.5).clamp(0.0, 255.0))
            .collect();
        Image::new(d[1], d[2], d[3], data)
    }
}
