//! MNIST from its original IDX files.
//!
//! IDX is big-endian: a magic number (`0x00000803` for 3-d unsigned-byte image files), then one
//! `u32` per dimension (count, rows, cols), then the bytes row-major. Files may be gzipped
//! (`train-images-idx3-ubyte.gz`, as distributed) or not.

use super::{resize_bilinear, to_unit, Dataset};
use gantry_core::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// MNIST images (28x28 grayscale) resized to `size` and replicated to `channels`.
pub struct Mnist {
    pixels: Vec<u8>,
    count: usize,
    rows: usize,
    cols: usize,
    size: usize,
    channels: usize,
    source: PathBuf,
}

const IMAGES_MAGIC: u32 = 0x0803;

/// Reads a file, gunzipping it if it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX image file: (count, rows, cols, pixels).
pub fn parse_idx_images(bytes: &[u8], what: &str) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bad = |msg: String| Error::invalid("mnist", format!("{what}: {msg}"));
    if bytes.len() < 16 {
        return Err(bad(format!(
            "{} bytes is too short for an IDX image header",
            bytes.len()
        )));
    }
    let word = |k: usize| u32::from_be_bytes(bytes[4 * k..4 * k + 4].try_into().expect("4 bytes"));
    if word(0) != IMAGES_MAGIC {
        return Err(bad(format!(
            "magic number {:#010x} is not an IDX image file's ({IMAGES_MAGIC:#010x})",
            word(0)
        )));
    }
    let (n, rows, cols) = (word(1) as usize, word(2) as usize, word(3) as usize);
    let need = n
        .checked_mul(rows * cols)
        .ok_or_else(|| bad("header overflows".into()))?;
    if bytes.len() - 16 != need {
        return Err(bad(format!(
            "header says {n} images of {rows}x{cols} ({need} bytes) but the file holds {}",
            bytes.len() - 16
        )));
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

impl Mnist {
    /// Loads the training images from `dir` (`train-images-idx3-ubyte` or its `.gz`, or the
    /// variant spelled `train-images.idx3-ubyte`).
    pub fn open(dir: impl AsRef<Path>, size: usize, channels: usize) -> Result<Self> {
        let dir = dir.as_ref();
        let names = [
            "train-images-idx3-ubyte.gz",
            "train-images-idx3-ubyte",
            "train-images.idx3-ubyte",
            "train-images.idx3-ubyte.gz",
        ];
        let path = names
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::invalid(
                    "mnist",
                    format!(
                        "no MNIST training images in {} (looked for {})",
                        dir.display(),
                        names.join(", ")
                    ),
                )
            })?;
        Self::from_file(&path, size, channels)
    }

    /// Loads one IDX image file.
    pub fn from_file(path: &Path, size: usize, channels: usize) -> Result<Self> {
        if size == 0 || !(channels == 1 || channels == 3) {
            return Err(Error::invalid(
                "mnist",
                format!("size {size} with {channels} channels"),
            ));
        }
        let bytes = read_maybe_gz(path)?;
        let (count, rows, cols, pixels) = parse_idx_images(&bytes, &path.display().to_string())?;
        Ok(Mnist {
            pixels,
            count,
            rows,
            cols,
            size,
            channels,
            source: path.to_path_buf(),
        })
    }
}

impl Dataset for Mnist {
    fn len(&self) -> usize {
        self.count
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn image_size(&self) -> usize {
        self.size
    }
    fn load(&self, i: usize, out: &mut [f32]) -> Result<()> {
        let (r, c) = (self.rows, self.cols);
        let src: Vec<f32> = self.pixels[i * r * c..(i + 1) * r * c]
            .iter()
            .map(|&v| to_unit(v))
            .collect();
        let plane = self.size * self.size;
        resize_bilinear(&src, r, c, self.size, self.size, &mut out[..plane]);
        for ch in 1..self.channels {
            out.copy_within(0..plane, ch * plane);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!(
            "MNIST {} ({} images, {}x{} resized to {s}x{s})",
            self.source.display(),
            self.count,
            self.rows,
            self.cols,
            s = self.size
        )
    }
}
