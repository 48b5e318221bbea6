//! Image data sets and the batch loader.
//!
//! A [`Dataset`] is an indexed collection of square images in `[-1, 1]`, `c × s × s`, C order.
//! The [`Loader`] walks one epoch of it in an order shuffled by `(seed, epoch)`, building
//! batches on a background thread so that loading never stalls the training step, and can
//! start mid-epoch (what a resumed run needs to see exactly the batches it would have seen).
//!
//! Three sources:
//! - [`Digits`]: procedurally drawn hand-written-style digits, nothing to download;
//! - [`Mnist`]: the original IDX files (gzipped or not);
//! - [`ImageFolder`]: PNG/JPEG files in a folder tree.

mod digits;
mod folder;
mod mnist;

pub use digits::Digits;
pub(crate) use folder::is_image;
pub use folder::{square, ImageFolder};
pub use mnist::Mnist;

use gantry_core::{Device, Error, Result, Rng, Tensor};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// An indexed set of square images.
pub trait Dataset: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn channels(&self) -> usize;
    /// Height and width.
    fn image_size(&self) -> usize;
    /// Writes image `i` (`channels · size²` values in `[-1, 1]`) into `out`.
    fn load(&self, i: usize, out: &mut [f32]) -> Result<()>;
    /// The class of image `i`, for data sets that have labels (digits, MNIST).
    fn label(&self, _i: usize) -> Option<usize> {
        None
    }
    /// A short description for logs (`"digits (60000 generated, 32x32, 1 channel)"`).
    fn describe(&self) -> String;
}

/// Some images of another data set, by index: a held-out split.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    what: &'static str,
}

/// Splits off the last `k` images (in the data set's order) as a held-out set; returns
/// `(the rest, the last k)`. Both must be non-empty.
pub fn split_last(data: Arc<dyn Dataset>, k: usize) -> Result<(Subset, Subset)> {
    let n = data.len();
    if k == 0 || k >= n {
        return Err(Error::invalid(
            "split",
            format!(
                "cannot hold out {k} of the {n} images of {} (need 0 < k < {n})",
                data.describe()
            ),
        ));
    }
    let train = Subset {
        inner: data.clone(),
        indices: (0..n - k).collect(),
        what: "training",
    };
    let held = Subset {
        inner: data,
        indices: (n - k..n).collect(),
        what: "held out",
    };
    Ok((train, held))
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn image_size(&self) -> usize {
        self.inner.image_size()
    }
    fn load(&self, i: usize, out: &mut [f32]) -> Result<()> {
        self.inner.load(self.indices[i], out)
    }
    fn label(&self, i: usize) -> Option<usize> {
        self.inner.label(self.indices[i])
    }
    fn describe(&self) -> String {
        format!(
            "{} {} of {}",
            self.indices.len(),
            self.what,
            self.inner.describe()
        )
    }
}

/// The order an epoch visits the data in: a permutation drawn from `(seed, epoch)` alone, so a
/// resumed run reproduces it.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = Rng::with_stream(seed, 0x5eed_0000 + epoch);
    rng.shuffle(&mut order);
    order
}

/// Batches of one epoch, `[batch, c, s, s]` f32 tensors, prepared `depth` batches ahead on a
/// background thread. The last incomplete batch is dropped (so every step sees a full batch,
/// which BatchNorm's statistics prefer).
pub struct Loader {
    rx: Option<Receiver<Result<Tensor>>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
}

impl Loader {
    /// The batches of `epoch`, starting at batch `start` (0 for a fresh epoch).
    pub fn new(
        data: Arc<dyn Dataset>,
        batch_size: usize,
        seed: u64,
        epoch: u64,
        start: usize,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("Loader", "batch size must be positive"));
        }
        let batches = data.len() / batch_size;
        if batches == 0 {
            return Err(Error::invalid(
                "Loader",
                format!(
                    "the data set has {} images, fewer than one batch of {batch_size}",
                    data.len()
                ),
            ));
        }
        let (tx, rx) = sync_channel(3);
        let worker = std::thread::Builder::new()
            .name("gantry-loader".into())
            .spawn(move || {
                let order = epoch_order(data.len(), seed, epoch);
                let (c, s) = (data.channels(), data.image_size());
                let per = c * s * s;
                for b in start..batches {
                    let idx = &order[b * batch_size..(b + 1) * batch_size];
                    let mut buf = vec![0f32; batch_size * per];
                    let filled = buf
                        .chunks_mut(per)
                        .zip(idx)
                        .try_for_each(|(out, &i)| data.load(i, out));
                    let batch = filled
                        .and_then(|_| Tensor::from_vec(buf, [batch_size, c, s, s], Device::Cpu));
                    // A closed channel means the consumer stopped early: just finish.
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Io {
                context: "starting the data loader thread".into(),
                source: e,
            })?;
        Ok(Loader {
            rx: Some(rx),
            worker: Some(worker),
            batches,
        })
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches
    }
}

impl Iterator for Loader {
    type Item = Result<Tensor>;
    fn next(&mut self) -> Option<Result<Tensor>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Close the channel first so a worker blocked on a full channel returns.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Converts 8-bit pixels to `[-1, 1]`.
#[inline]
pub(crate) fn to_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

/// Bilinear resampling of one `h × w` plane to `oh × ow` (pixel centres aligned, as
/// `align_corners=False`), used to fit MNIST's 28x28 to the model's size.
pub(crate) fn resize_bilinear(
    src: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    for oy in 0..oh {
        let fy = ((oy as f32 + 0.5) * sy - 0.5).max(0.0);
        let y0 = (fy as usize).min(h - 1);
        let y1 = (y0 + 1).min(h - 1);
        let ty = fy - y0 as f32;
        for ox in 0..ow {
            let fx = ((ox as f32 + 0.5) * sx - 0.5).max(0.0);
            let x0 = (fx as usize).min(w - 1);
            let x1 = (x0 + 1).min(w - 1);
            let tx = fx - x0 as f32;
            let top = src[y0 * w + x0] * (1.0 - tx) + src[y0 * w + x1] * tx;
            let bot = src[y1 * w + x0] * (1.0 - tx) + src[y1 * w + x1] * tx;
            out[oy * ow + ox] = top * (1.0 - ty) + bot * ty;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_permutation_that_changes_with_the_epoch() {
        let a = epoch_order(100, 7, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
    }

    #[test]
    fn bilinear_resize_keeps_constants_and_identity() {
        let src: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut same = vec![0.0; 12];
        resize_bilinear(&src, 3, 4, 3, 4, &mut same);
        assert_eq!(same, src);
        let mut up = vec![0.0; 8 * 8];
        resize_bilinear(&[0.5; 12], 3, 4, 8, 8, &mut up);
        assert!(up.iter().all(|&v| (v - 0.5).abs() < 1e-6));
    }
}
