//! Super-resolution training and evaluation data.
//!
//! - [`SrData`]: high-resolution training images, from which every sample is a random HR crop
//!   (96x96 by default), randomly flipped and rotated by multiples of 90°, and its LR input made
//!   by MATLAB-convention bicubic downsampling of that crop ([`imresize`], 8-bit per pass, as
//!   the benchmark `LRbicx4` files were made), so that training inputs look like test inputs.
//! - [`SrLoader`]: the batches of a range of steps, made on a background thread. Batch `s` is
//!   drawn from `(seed, s)` alone, so a resumed run sees exactly the batches it would have.
//! - [`SrPairs`]: an evaluation set, HR images (modcropped) with their LR inputs: the set's own
//!   `LRbicx{scale}/` files when present (Set5, Set14), else made by [`imresize`].

use super::{imresize, Image, Quantize};
use crate::data::is_image;
use gantry_core::{Device, Error, Result, Rng, Tensor};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The image files directly in `dir` (not in sub-folders), sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        context: format!("listing {}", dir.display()),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    Ok(files)
}

/// HR training images and how samples are cut from them.
pub struct SrData {
    images: Vec<Image>,
    /// HR crop side (a multiple of `scale`).
    pub crop: usize,
    pub scale: usize,
    what: String,
    /// Files that could not be used, with the reason (unreadable, or smaller than the crop).
    pub skipped: Vec<(PathBuf, String)>,
}

impl SrData {
    /// Every PNG/JPEG directly in `dir`, as RGB.
    pub fn open(dir: impl AsRef<Path>, crop: usize, scale: usize) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::invalid(
                "sr data",
                format!("{} is not a folder", dir.display()),
            ));
        }
        let mut images = Vec::new();
        let mut skipped = Vec::new();
        let files = image_files(dir)?;
        for f in &files {
            match Image::open(f) {
                Ok(img) if img.height < crop || img.width < crop => skipped.push((
                    f.clone(),
                    format!(
                        "{}x{} is smaller than the {crop}x{crop} crop",
                        img.width, img.height
                    ),
                )),
                Ok(img) => images.push(img.to_rgb()),
                Err(e) => skipped.push((f.clone(), e.to_string())),
            }
        }
        let what = format!(
            "{} ({} images of {})",
            dir.display(),
            images.len(),
            files.len()
        );
        let mut data = Self::from_images(images, crop, scale)?;
        data.what = what;
        data.skipped = skipped;
        Ok(data)
    }

    /// Training data from images already in memory (each at least `crop` on both sides).
    pub fn from_images(images: Vec<Image>, crop: usize, scale: usize) -> Result<Self> {
        if scale == 0 || crop == 0 || !crop.is_multiple_of(scale) {
            return Err(Error::invalid(
                "sr data",
                format!("the crop ({crop}) must be a positive multiple of the scale ({scale})"),
            ));
        }
        if images.is_empty() {
            return Err(Error::invalid(
                "sr data",
                format!("no usable images (each must be at least {crop}x{crop})"),
            ));
        }
        if let Some(i) = images.iter().find(|i| i.height < crop || i.width < crop) {
            return Err(Error::invalid(
                "sr data",
                format!(
                    "a {}x{} image is smaller than the {crop}x{crop} crop",
                    i.width, i.height
                ),
            ));
        }
        let what = format!("{} images in memory", images.len());
        Ok(SrData {
            images,
            crop,
            scale,
            what,
            skipped: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
    pub fn channels(&self) -> usize {
        self.images[0].channels
    }

    /// `"<folder> (90 images of 91), 96x96 crops, x4"`.
    pub fn describe(&self) -> String {
        format!(
            "{}, {c}x{c} crops, x{}",
            self.what,
            self.scale,
            c = self.crop
        )
    }

    /// One line on skipped files, if any.
    pub fn skipped_warning(&self) -> Option<String> {
        let (first, reason) = self.skipped.first()?;
        Some(format!(
            "skipped {} file(s), e.g. {} ({reason})",
            self.skipped.len(),
            first.display()
        ))
    }

    /// One (LR, HR) sample: a random crop of a random image, one of the 8 flips/rotations,
    /// and its bicubic downsampling.
    pub fn sample(&self, rng: &mut Rng) -> Result<(Image, Image)> {
        let img = &self.images[rng.below(self.images.len() as u32) as usize];
        let c = self.crop;
        let y = rng.below((img.height - c + 1) as u32) as usize;
        let x = rng.below((img.width - c + 1) as u32) as usize;
        let hr = dihedral(&img.crop(y, x, c, c)?, rng.below(8));
        let lr = imresize(&hr, 1.0 / self.scale as f64, Quantize::PerPass)?;
        Ok((lr, hr))
    }

    /// The batch of step `step`: `([n, c, crop/scale, crop/scale], [n, c, crop, crop])` in
    /// `[-1, 1]`, drawn from `(seed, step)` alone.
    pub fn batch(&self, batch: usize, seed: u64, step: u64) -> Result<(Tensor, Tensor)> {
        let mut rng = Rng::with_stream(seed, 0x5352_0000_0000 + step);
        let (c, s) = (self.channels(), self.crop);
        let l = s / self.scale;
        let mut lr = Vec::with_capacity(batch * c * l * l);
        let mut hr = Vec::with_capacity(batch * c * s * s);
        for _ in 0..batch {
            let (a, b) = self.sample(&mut rng)?;
            lr.extend(a.data.iter().map(|v| v / 127.5 - 1.0));
            hr.extend(b.data.iter().map(|v| v / 127.5 - 1.0));
        }
        Ok((
            Tensor::from_vec(lr, [batch, c, l, l], Device::Cpu)?,
            Tensor::from_vec(hr, [batch, c, s, s], Device::Cpu)?,
        ))
    }
}

/// One of the 8 symmetries of the square: bit 0 transposes, bit 1 flips left-right, bit 2
/// flips top-bottom (together they give every flip and 90° rotation).
fn dihedral(img: &Image, which: u32) -> Image {
    let (h, w) = (img.height, img.width);
    let (oh, ow) = if which & 1 != 0 { (w, h) } else { (h, w) };
    let mut data = Vec::with_capacity(img.data.len());
    for plane in img.data.chunks(h * w) {
        for y in 0..oh {
            for x in 0..ow {
                let (mut sy, mut sx) = if which & 1 != 0 { (x, y) } else { (y, x) };
                if which & 2 != 0 {
                    sx = w - 1 - sx;
                }
                if which & 4 != 0 {
                    sy = h - 1 - sy;
                }
                data.push(plane[sy * w + sx]);
            }
        }
    }
    Image {
        channels: img.channels,
        height: oh,
        width: ow,
        data,
    }
}

/// The batches of steps `start..end`, prepared a few steps ahead on a background thread.
pub struct SrLoader {
    rx: Option<Receiver<Result<(Tensor, Tensor)>>>,
    worker: Option<JoinHandle<()>>,
}

impl SrLoader {
    pub fn new(data: Arc<SrData>, batch: usize, seed: u64, start: u64, end: u64) -> Result<Self> {
        if batch == 0 {
            return Err(Error::invalid("SrLoader", "batch size must be positive"));
        }
        let (tx, rx) = sync_channel(3);
        let worker = std::thread::Builder::new()
            .name("gantry-sr-loader".into())
            .spawn(move || {
                for step in start..end {
                    // A closed channel means the consumer stopped early: just finish.
                    if tx.send(data.batch(batch, seed, step)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "starting the SR data loader thread".into(),
                source: e,
            })?;
        Ok(SrLoader {
            rx: Some(rx),
            worker: Some(worker),
        })
    }
}

impl Iterator for SrLoader {
    type Item = Result<(Tensor, Tensor)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for SrLoader {
    fn drop(&mut self) {
        // Close the channel first so a worker blocked on a full channel returns.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// An evaluation pair.
#[derive(Clone, Debug)]
pub struct SrPair {
    pub name: String,
    /// The LR input (8-bit values).
    pub lr: Image,
    /// The ground truth, cropped to `scale ×` the LR size.
    pub hr: Image,
}

/// An evaluation set: every image directly in a folder.
pub struct SrPairs {
    pub pairs: Vec<SrPair>,
    /// Whether the LR inputs came from the folder's `LRbicx{scale}/` files.
    pub lr_from_files: bool,
}

impl SrPairs {
    /// HR images in `dir`; LR inputs from `dir/LRbicx{scale}/<same name>` when that folder
    /// exists, else the HR image modcropped and bicubic-downsampled here.
    pub fn open(dir: impl AsRef<Path>, scale: usize) -> Result<Self> {
        let dir = dir.as_ref();
        let files = image_files(dir)?;
        if files.is_empty() {
            return Err(Error::invalid(
                "sr eval set",
                format!("no PNG/JPEG images in {}", dir.display()),
            ));
        }
        let lr_dir = dir.join(format!("LRbicx{scale}"));
        let lr_from_files = lr_dir.is_dir();
        let mut pairs = Vec::new();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let hr = Image::open(&f)?;
            let (lr, hr) = if lr_from_files {
                let lr = Image::open(lr_dir.join(&name))?;
                let (h, w) = (lr.height * scale, lr.width * scale);
                if h > hr.height || w > hr.width {
                    return Err(Error::shape(
                        "sr eval set",
                        format!(
                            "{}: the LR image is {}x{}, too large for x{scale} of the {}x{} HR",
                            lr_dir.join(&name).display(),
                            lr.width,
                            lr.height,
                            hr.width,
                            hr.height
                        ),
                    ));
                }
                (lr, hr.crop(0, 0, h, w)?)
            } else {
                let hr = hr.modcrop(scale);
                (imresize(&hr, 1.0 / scale as f64, Quantize::PerPass)?, hr)
            };
            pairs.push(SrPair { name, lr, hr });
        }
        Ok(SrPairs {
            pairs,
            lr_from_files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Image {
        let data = (0..3 * h * w).map(|i| (i % 251) as f32).collect();
        Image::new(3, h, w, data).unwrap()
    }

    #[test]
    fn the_eight_symmetries_are_distinct_and_invertible() {
        let img = ramp(4, 4);
        let all: Vec<Image> = (0..8).map(|k| dihedral(&img, k)).collect();
        for i in 0..8 {
            for j in 0..i {
                assert_ne!(all[i].data, all[j].data, "{i} and {j}");
            }
        }
        // Transposing twice, or flipping twice, is the identity.
        assert_eq!(dihedral(&dihedral(&img, 1), 1), img);
        assert_eq!(dihedral(&dihedral(&img, 6), 6), img);
        // A non-square image transposes to the other shape.
        let t = dihedral(&ramp(2, 5), 1);
        assert_eq!((t.height, t.width), (5, 2));
    }

    #[test]
    fn batches_are_a_function_of_seed_and_step() {
        let data = SrData::from_images(vec![ramp(40, 50), ramp(33, 37)], 16, 4).unwrap();
        let (lr, hr) = data.batch(3, 7, 11).unwrap();
        assert_eq!(lr.dims(), &[3, 3, 4, 4]);
        assert_eq!(hr.dims(), &[3, 3, 16, 16]);
        let again = data.batch(3, 7, 11).unwrap();
        assert_eq!(
            lr.to_vec::<f32>().unwrap(),
            again.0.to_vec::<f32>().unwrap()
        );
        let other = data.batch(3, 7, 12).unwrap();
        assert_ne!(
            hr.to_vec::<f32>().unwrap(),
            other.1.to_vec::<f32>().unwrap()
        );
        // LR values are 8-bit levels mapped to [-1, 1].
        for v in lr.to_vec::<f32>().unwrap() {
            let level = (v + 1.0) * 127.5;
            assert!((level - level.round()).abs() < 1e-3 && (-1.0..=1.0).contains(&v));
        }
        // The loader yields the same batches in order.
        let mut loader = SrLoader::new(Arc::new(data), 3, 7, 10, 12).unwrap();
        loader.next().unwrap().unwrap();
        let b11 = loader.next().unwrap().unwrap();
        assert_eq!(b11.0.to_vec::<f32>().unwrap(), lr.to_vec::<f32>().unwrap());
        assert!(loader.next().is_none());
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(SrData::from_images(vec![ramp(40, 40)], 18, 4).is_err());
        let e = SrData::from_images(vec![ramp(10, 40)], 16, 4)
            .err()
            .unwrap();
        assert!(e.to_string().contains("smaller than the 16x16 crop"), "{e}");
    }
}
