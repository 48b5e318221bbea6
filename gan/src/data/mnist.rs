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
    labels: Option<Vec<u8>>,
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

/// The first of the usual spellings of an IDX file (`<prefix>-<kind>-idx<d>-ubyte[.gz]` or
/// `<prefix>-<kind>.idx<d>-ubyte[.gz]`) that exists in `dir`.
fn find_idx(dir: &Path, prefix: &str, kind: &str, d: u8) -> (Option<PathBuf>, Vec<String>) {
    let names = [
        format!("{prefix}-{kind}-idx{d}-ubyte.gz"),
        format!("{prefix}-{kind}-idx{d}-ubyte"),
        format!("{prefix}-{kind}.idx{d}-ubyte"),
        format!("{prefix}-{kind}.idx{d}-ubyte.gz"),
    ];
    let found = names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    (found, names.to_vec())
}

/// Parses an IDX label file (magic `0x00000801`): one byte per image.
pub fn parse_idx_labels(bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::invalid("mnist", format!("{what}: {msg}"));
    if bytes.len() < 8 || u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) != 0x0801 {
        return Err(bad("not an IDX label file".into()));
    }
    let n = u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if bytes.len() - 8 != n {
        return Err(bad(format!(
            "header says {n} labels, the file holds {}",
            bytes.len() - 8
        )));
    }
    Ok(bytes[8..].to_vec())
}

impl Mnist {
    /// Loads the training images from `dir` (`train-images-idx3-ubyte` or its `.gz`, or the
    /// variant spelled `train-images.idx3-ubyte`), with the labels if `train-labels-…` is there.
    pub fn open(dir: impl AsRef<Path>, size: usize, channels: usize) -> Result<Self> {
        Self::open_split(dir.as_ref(), "train", size, channels)
    }

    /// The held-out test split (`t10k-images-…`), with its labels if present.
    pub fn open_test(dir: impl AsRef<Path>, size: usize, channels: usize) -> Result<Self> {
        Self::open_split(dir.as_ref(), "t10k", size, channels)
    }

    fn open_split(dir: &Path, prefix: &str, size: usize, channels: usize) -> Result<Self> {
        let (path, names) = find_idx(dir, prefix, "images", 3);
        let path = path.ok_or_else(|| {
            Error::invalid(
                "mnist",
                format!(
                    "no MNIST {} images in {} (looked for {})",
                    if prefix == "train" {
                        "training"
                    } else {
                        "test"
                    },
                    dir.display(),
                    names.join(", ")
                ),
            )
        })?;
        let mut m = Self::from_file(&path, size, channels)?;
        if let (Some(lp), _) = find_idx(dir, prefix, "labels", 1) {
            let labels = parse_idx_labels(&read_maybe_gz(&lp)?, &lp.display().to_string())?;
            if labels.len() != m.count {
                return Err(Error::invalid(
                    "mnist",
                    format!(
                        "{}: {} labels for {} images",
                        lp.display(),
                        labels.len(),
                        m.count
                    ),
                ));
            }
            m.labels = Some(labels);
        }
        Ok(m)
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
            labels: None,
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
    fn label(&self, i: usize) -> Option<usize> {
        self.labels.as_ref().map(|l| l[i] as usize)
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
