//! A folder tree of PNG/JPEG images.

use super::{to_unit, Dataset};
use gantry_core::{Error, Result};
use image::imageops::FilterType;
use image::DynamicImage;
use std::path::{Path, PathBuf};

/// Every PNG/JPEG under a folder, resized (shorter side to `size`, Lanczos) and centre-cropped
/// to `size × size`, as RGB (`channels = 3`) or grayscale (`1`). Images are decoded once, up
/// front, and kept as bytes. Unreadable files are skipped and counted.
pub struct ImageFolder {
    pixels: Vec<u8>,
    count: usize,
    size: usize,
    channels: usize,
    root: PathBuf,
    /// Files that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Whether a path names a PNG or JPEG file (the formats the `image` build decodes).
pub(crate) fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// `img` with its shorter side resized to `size` (Lanczos) and centre-cropped to a square.
pub fn square(img: &DynamicImage, size: usize) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    if (w, h) == (size as u32, size as u32) {
        return img.clone();
    }
    let scale = size as f64 / w.min(h) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(size as u32),
        ((h as f64 * scale).round() as u32).max(size as u32),
    );
    let img = img.resize_exact(nw, nh, FilterType::Lanczos3);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    img.crop_imm(x0, y0, size as u32, size as u32)
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole name must match
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        context: format!("listing {}", dir.display()),
        source,
    })?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolder {
    pub fn open(root: impl AsRef<Path>, size: usize, channels: usize) -> Result<Self> {
        Self::open_matching(root, None, size, channels)
    }

    /// [`ImageFolder::open`], keeping only files whose name matches `pattern` (`*` for any
    /// run of characters, e.g. `london_neutral_*`).
    pub fn open_matching(
        root: impl AsRef<Path>,
        pattern: Option<&str>,
        size: usize,
        channels: usize,
    ) -> Result<Self> {
        let root = root.as_ref();
        if size == 0 || !(channels == 1 || channels == 3) {
            return Err(Error::invalid(
                "image folder",
                format!("size {size} with {channels} channels"),
            ));
        }
        if !root.is_dir() {
            return Err(Error::invalid(
                "image folder",
                format!("{} is not a folder", root.display()),
            ));
        }
        let mut files = Vec::new();
        walk(root, &mut files)?;
        if let Some(pattern) = pattern {
            files.retain(|f| {
                f.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| glob_match(pattern, n))
            });
        }
        files.sort();
        let mut pixels = Vec::new();
        let mut skipped = Vec::new();
        let mut count = 0;
        for f in &files {
            match image::open(f) {
                Ok(img) => {
                    let img = square(&img, size);
                    // Planar (CHW) bytes.
                    if channels == 3 {
                        let rgb = img.to_rgb8();
                        for c in 0..3 {
                            pixels.extend(rgb.pixels().map(|p| p.0[c]));
                        }
                    } else {
                        pixels.extend(img.to_luma8().pixels().map(|p| p.0[0]));
                    }
                    count += 1;
                }
                Err(e) => skipped.push((f.clone(), e.to_string())),
            }
        }
        if count == 0 {
            return Err(Error::invalid(
                "image folder",
                format!(
                    "no readable PNG/JPEG images in {}{} ({} files found, {} unreadable)",
                    root.display(),
                    pattern.map_or(String::new(), |p| format!(" matching {p:?}")),
                    files.len(),
                    skipped.len()
                ),
            ));
        }
        Ok(ImageFolder {
            pixels,
            count,
            size,
            channels,
            root: match pattern {
                Some(p) => root.join(p),
                None => root.to_path_buf(),
            },
            skipped,
        })
    }

    /// One line naming the first few unreadable files, if any.
    pub fn skipped_warning(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let first: Vec<String> = self
            .skipped
            .iter()
            .take(3)
            .map(|(p, e)| format!("{} ({e})", p.display()))
            .collect();
        Some(format!(
            "skipped {} unreadable file(s) in {}: {}{}",
            self.skipped.len(),
            self.root.display(),
            first.join(", "),
            if self.skipped.len() > 3 { ", …" } else { "" }
        ))
    }
}

impl Dataset for ImageFolder {
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
        let per = self.channels * self.size * self.size;
        for (o, &v) in out.iter_mut().zip(&self.pixels[i * per..(i + 1) * per]) {
            *o = to_unit(v);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!(
            "image folder {} ({} images, {s}x{s}, {} channels)",
            self.root.display(),
            self.count,
            self.channels,
            s = self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn patterns_match_runs_of_any_characters() {
        assert!(glob_match("london_neutral_*", "london_neutral_001.png"));
        assert!(!glob_match("london_neutral_*", "london_smiling_001.png"));
        assert!(glob_match("*_001.png", "london_smiling_001.png"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(
            !glob_match("ab*ba", "aba"),
            "prefix and suffix may not overlap"
        );
        assert!(glob_match("exact.png", "exact.png"));
        assert!(!glob_match("exact.png", "exact.png.bak"));
        assert!(glob_match("*", ""));
    }
}
