//! A sample-quality score for GANs trained on labelled data (the digits, MNIST).
//!
//! gantry trains a small conv classifier on the real data (once; it is cached in the run
//! folder) and then reports two numbers:
//!
//! - **Fréchet distance** between the classifier's penultimate features (128-d) on real and on
//!   generated images: `‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2(Σ_r Σ_g)^½)`. Lower is better; two
//!   samples of real images give the floor.
//! - **Classifier score**, `exp(E_x KL(p(y|x) ‖ p(y)))`: high when each image is confidently
//!   one class and all classes appear. At most the number of classes (10).
//!
//! This is **not FID**: FID uses an ImageNet-trained Inception network, so its numbers are
//! comparable across papers; these are comparable only between runs scored with the same
//! classifier on the same data. They rank runs and track training; they do not compare with
//! published figures.

use crate::data::{Dataset, Loader};
use gantry_core::{no_grad, Conv2dParams, Device, Error, Result, Rng, Tensor};
use gantry_nn::checkpoint;
use gantry_nn::{
    Adam, AdamConfig, BatchNorm2d, Conv2d, Flatten, LeakyReLU, Linear, Mode, Module, Optimizer,
    Sequential,
};
use std::path::Path;
use std::sync::Arc;

/// Feature width of the classifier's penultimate layer.
pub const FEATURES: usize = 128;
const CLASSES: usize = 10;

/// `features` (conv → conv → linear, 128-d) then `head` (linear to 10 logits).
pub struct Classifier {
    pub features: Sequential,
    pub head: Linear,
}

impl Classifier {
    pub fn new(channels: usize, size: usize, rng: &mut Rng) -> Result<Self> {
        let down = Conv2dParams::new(2, 1);
        let flat = 64 * (size / 4) * (size / 4);
        Ok(Classifier {
            features: Sequential::new()
                .add(Conv2d::new(channels, 32, 4, down, true, rng)?)
                .add(LeakyReLU::new(0.2))
                .add(Conv2d::new(32, 64, 4, down, false, rng)?)
                .add(BatchNorm2d::new(64)?)
                .add(LeakyReLU::new(0.2))
                .add(Flatten::default())
                .add(Linear::new(flat, FEATURES, true, rng)?)
                .add(LeakyReLU::new(0.2)),
            head: Linear::new(FEATURES, CLASSES, true, rng)?,
        })
    }
}

impl Module for Classifier {
    fn kind(&self) -> &'static str {
        "Classifier"
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.head.forward(&self.features.forward(x, mode)?, mode)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("features".into(), &self.features),
            ("head".into(), &self.head),
        ]
    }
}

/// Cross-entropy of `[n, classes]` logits against integer labels, from the ops gantry has:
/// `mean(logsumexp(z) − z[label])`, with the max subtracted for stability.
fn cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<Tensor> {
    let (n, k) = (logits.dims()[0], logits.dims()[1]);
    let max = logits.detach().max(1, true)?;
    let z = logits.sub(&max)?;
    let lse = z.exp()?.sum(&[1], true)?.log()?;
    let mut onehot = vec![0f32; n * k];
    for (i, &l) in labels.iter().enumerate() {
        onehot[i * k + l] = 1.0;
    }
    let onehot = Tensor::from_vec(onehot, [n, k], Device::Cpu)?;
    let picked = z.mul(&onehot)?.sum(&[1], true)?;
    lse.sub(&picked)?.mean_all()
}

/// Trains the classifier on labelled `data` for `steps` batches of 64; returns it and its
/// accuracy on the last 10 batches.
pub fn train_classifier(
    data: Arc<dyn Dataset>,
    steps: usize,
    seed: u64,
) -> Result<(Classifier, f64)> {
    if data.label(0).is_none() {
        return Err(Error::invalid(
            "eval-gan",
            format!(
                "{} has no labels; the quality score needs labelled data (digits or MNIST)",
                data.describe()
            ),
        ));
    }
    let mut rng = Rng::with_stream(seed, 11);
    let clf = Classifier::new(data.channels(), data.image_size(), &mut rng)?;
    let mut opt = Adam::new(
        gantry_nn::ModuleExt::named_parameters(&clf),
        AdamConfig::default(),
    )?;
    let batch = 64;
    let per_epoch = data.len() / batch;
    let order_labels = |epoch: u64, b: usize| -> Vec<usize> {
        let order = crate::data::epoch_order(data.len(), seed, epoch);
        order[b * batch..(b + 1) * batch]
            .iter()
            .map(|&i| data.label(i).unwrap_or(0))
            .collect()
    };
    let (mut step, mut correct, mut seen) = (0, 0usize, 0usize);
    'outer: for epoch in 0.. {
        for (b, x) in Loader::new(data.clone(), batch, seed, epoch, 0)?.enumerate() {
            let labels = order_labels(epoch, b);
            let logits = clf.forward(&x?, Mode::Train)?;
            let grads = cross_entropy(&logits, &labels)?.backward()?;
            opt.step(&grads)?;
            step += 1;
            if step + 10 > steps {
                let (_, idx) = logits.max_with_indices(1, false)?;
                let pred = idx.to_vec::<u32>()?;
                correct += pred
                    .iter()
                    .zip(&labels)
                    .filter(|(p, l)| **p as usize == **l)
                    .count();
                seen += labels.len();
            }
            if step >= steps || per_epoch == 0 {
                break 'outer;
            }
        }
    }
    Ok((clf, correct as f64 / seen.max(1) as f64))
}

/// Penultimate features `[n, 128]` and class probabilities `[n, 10]` of `images`, in batches.
pub fn features_and_probs(clf: &Classifier, images: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    no_grad(|| {
        let f = clf.features.forward(images, Mode::Eval)?;
        let logits = clf.head.forward(&f, Mode::Eval)?;
        let max = logits.max(1, true)?;
        let e = logits.sub(&max)?.exp()?;
        let p = e.div(&e.sum(&[1], true)?)?;
        Ok((f.to_f64_vec()?, p.to_f64_vec()?))
    })
}

/// Mean and covariance of `n` rows of `d` features.
fn moments(x: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / d;
    let mut mu = vec![0.0; d];
    for row in x.chunks(d) {
        for (m, v) in mu.iter_mut().zip(row) {
            *m += v / n as f64;
        }
    }
    let mut cov = vec![0.0; d * d];
    for row in x.chunks(d) {
        for i in 0..d {
            let a = row[i] - mu[i];
            for j in i..d {
                cov[i * d + j] += a * (row[j] - mu[j]) / (n as f64 - 1.0).max(1.0);
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            cov[i * d + j] = cov[j * d + i];
        }
    }
    (mu, cov)
}

/// Eigenvalues and eigenvectors (columns of the returned matrix) of a symmetric `d × d`
/// matrix, by cyclic Jacobi rotations.
fn symmetric_eigen(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..60 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        let diag: f64 = (0..d).map(|i| a[i * d + i].powi(2)).sum();
        if off <= 1e-22 * diag.max(1e-300) {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let (akp, akq) = (a[k * d + p], a[k * d + q]);
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let (apk, aqk) = (a[p * d + k], a[q * d + k]);
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let (vkp, vkq) = (v[k * d + p], v[k * d + q]);
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i * d + i]).collect(), v)
}

/// `A·B` for `d × d` matrices.
fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut c = vec![0.0; d * d];
    for i in 0..d {
        for k in 0..d {
            let aik = a[i * d + k];
            for j in 0..d {
                c[i * d + j] += aik * b[k * d + j];
            }
        }
    }
    c
}

/// The Fréchet distance between Gaussians fitted to two feature sets (`d` columns).
/// `Tr((Σ₁Σ₂)^½)` is computed as `Tr((S Σ₂ S)^½)` with `S = Σ₁^½`, a symmetric PSD matrix
/// whose square root's trace is the sum of the square roots of its eigenvalues.
pub fn frechet_distance(x: &[f64], y: &[f64], d: usize) -> f64 {
    let (m1, s1) = moments(x, d);
    let (m2, s2) = moments(y, d);
    let (w, v) = symmetric_eigen(&s1, d);
    // S = V diag(√w) Vᵀ
    let mut vs = v.clone();
    for i in 0..d {
        for j in 0..d {
            vs[i * d + j] *= w[j].max(0.0).sqrt();
        }
    }
    let vt: Vec<f64> = (0..d * d).map(|k| v[(k % d) * d + k / d]).collect();
    let sqrt1 = matmul(&vs, &vt, d);
    let m = matmul(&matmul(&sqrt1, &s2, d), &sqrt1, d);
    let (mw, _) = symmetric_eigen(&m, d);
    let tr_sqrt: f64 = mw.iter().map(|e| e.max(0.0).sqrt()).sum();
    let mean_term: f64 = m1.iter().zip(&m2).map(|(a, b)| (a - b).powi(2)).sum();
    let tr: f64 = (0..d).map(|i| s1[i * d + i] + s2[i * d + i]).sum();
    mean_term + tr - 2.0 * tr_sqrt
}

/// `exp(E_x KL(p(y|x) ‖ p(y)))` over rows of `k` class probabilities.
pub fn classifier_score(probs: &[f64], k: usize) -> f64 {
    let n = probs.len() / k;
    let mut marginal = vec![0.0; k];
    for row in probs.chunks(k) {
        for (m, p) in marginal.iter_mut().zip(row) {
            *m += p / n as f64;
        }
    }
    let kl: f64 = probs
        .chunks(k)
        .map(|row| {
            row.iter()
                .zip(&marginal)
                .filter(|(p, _)| **p > 0.0)
                .map(|(p, m)| p * (p.ln() - m.max(1e-300).ln()))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;
    kl.exp()
}

/// `n` images of `data` (the first `n` of a shuffled order), as one tensor.
pub fn sample_images(data: &Arc<dyn Dataset>, n: usize, seed: u64) -> Result<Tensor> {
    let (c, s) = (data.channels(), data.image_size());
    let per = c * s * s;
    let order = crate::data::epoch_order(data.len(), seed, 999);
    let n = n.min(data.len());
    let mut buf = vec![0f32; n * per];
    for (out, &i) in buf.chunks_mut(per).zip(&order[..n]) {
        data.load(i, out)?;
    }
    Tensor::from_vec(buf, [n, c, s, s], Device::Cpu)
}

/// A classifier cached at `path` (trained on `data` for `steps` if absent). Returns it and,
/// when freshly trained, its training accuracy.
pub fn cached_classifier(
    path: &Path,
    data: Arc<dyn Dataset>,
    steps: usize,
    seed: u64,
) -> Result<(Classifier, Option<f64>)> {
    if path.is_file() {
        let clf = Classifier::new(data.channels(), data.image_size(), &mut Rng::new(0))?;
        checkpoint::load(&clf, path)?;
        return Ok((clf, None));
    }
    let (clf, acc) = train_classifier(data, steps, seed)?;
    checkpoint::save(&clf, path)?;
    Ok((clf, Some(acc)))
}

/// The scores of one image set against real features.
#[derive(Clone, Copy, Debug)]
pub struct Scores {
    pub frechet: f64,
    pub classifier_score: f64,
}

/// Scores `images` against `reference` images with `clf`, in batches of 500.
pub fn score(clf: &Classifier, reference: &Tensor, images: &Tensor) -> Result<Scores> {
    let feats = |t: &Tensor| -> Result<(Vec<f64>, Vec<f64>)> {
        let n = t.dims()[0];
        let (mut f, mut p) = (Vec::new(), Vec::new());
        for start in (0..n).step_by(500) {
            let len = 500.min(n - start);
            let (a, b) = features_and_probs(clf, &t.narrow(0, start, len)?)?;
            f.extend(a);
            p.extend(b);
        }
        Ok((f, p))
    };
    let (fr, _) = feats(reference)?;
    let (fi, pi) = feats(images)?;
    Ok(Scores {
        frechet: frechet_distance(&fr, &fi, FEATURES),
        classifier_score: classifier_score(&pi, CLASSES),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frechet_distance_of_known_gaussians() {
        // Same distribution: ~0. Shifted by (1, 2) with equal covariance: ‖Δμ‖² = 5.
        let mut rng = Rng::new(3);
        let n = 20_000;
        let a: Vec<f64> = (0..2 * n).map(|_| rng.normal()).collect();
        let b: Vec<f64> = (0..2 * n).map(|_| rng.normal()).collect();
        assert!(frechet_distance(&a, &b, 2).abs() < 0.01);
        let shifted: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, v)| v + [1.0, 2.0][i % 2])
            .collect();
        assert!((frechet_distance(&a, &shifted, 2) - 5.0).abs() < 0.05);
        // Scaled by 2 (covariance 4I vs I): Tr(I + 4I − 2·2I) = 2 per dim... = d·(1 + 4 − 4) = 2.
        let scaled: Vec<f64> = b.iter().map(|v| v * 2.0).collect();
        assert!((frechet_distance(&a, &scaled, 2) - 2.0).abs() < 0.05);
    }

    #[test]
    fn classifier_score_spans_one_to_the_class_count() {
        let k = 4;
        let uniform = vec![0.25; 8 * k];
        assert!((classifier_score(&uniform, k) - 1.0).abs() < 1e-12);
        let confident: Vec<f64> = (0..8)
            .flat_map(|i| (0..k).map(move |j| if j == i % k { 1.0 } else { 0.0 }))
            .collect();
        assert!((classifier_score(&confident, k) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let a = [4.0, 1.0, 2.0, 1.0, 3.0, 0.5, 2.0, 0.5, 5.0];
        let (w, v) = symmetric_eigen(&a, 3);
        // A v_i = w_i v_i
        for i in 0..3 {
            for r in 0..3 {
                let av: f64 = (0..3).map(|k| a[r * 3 + k] * v[k * 3 + i]).sum();
                assert!((av - w[i] * v[r * 3 + i]).abs() < 1e-9);
            }
        }
        assert!((w.iter().sum::<f64>() - 12.0).abs() < 1e-9);
    }
}
