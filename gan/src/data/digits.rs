//! Procedurally drawn hand-written-style digits: the built-in data set that needs no download.
//!
//! Each digit 0–9 is a few strokes (polylines and elliptic arcs) in a unit box, the embedded
//! "font" below. Image `i` is drawn from a generator seeded by `(seed, i)`, so any image can be
//! drawn on demand, in any order, identically on every machine:
//!
//! 1. pick the digit (`i mod 10`, so classes are balanced) and jitter every stroke point,
//!    as hands do;
//! 2. apply a random affine map (rotation ±12°, scale, shear, offset) into the image;
//! 3. rasterise the strokes with a random pen width, anti-aliased by the distance from each
//!    pixel centre to the nearest segment;
//! 4. blur lightly, add a little noise, and map ink to `+1`, paper to `−1`.

use super::Dataset;
use gantry_core::{Error, Result, Rng};

/// A stroke: points in the unit box (x right, y down).
type Stroke = Vec<(f32, f32)>;

/// Points along an elliptic arc from angle `a0` to `a1` in degrees (0° = right, 90° = down).
fn arc(cx: f32, cy: f32, rx: f32, ry: f32, a0: f32, a1: f32) -> Stroke {
    let n = (((a1 - a0).abs() / 20.0).ceil() as usize).max(2);
    (0..=n)
        .map(|k| {
            let a = (a0 + (a1 - a0) * k as f32 / n as f32).to_radians();
            (cx + rx * a.cos(), cy + ry * a.sin())
        })
        .collect()
}

/// The strokes of digit `d`.
fn glyph(d: usize) -> Vec<Stroke> {
    match d {
        0 => vec![arc(0.5, 0.5, 0.28, 0.42, 0.0, 360.0)],
        1 => vec![vec![(0.32, 0.25), (0.52, 0.08), (0.52, 0.92)]],
        2 => {
            let mut s = arc(0.5, 0.3, 0.27, 0.22, 180.0, 390.0);
            s.extend([(0.2, 0.92), (0.82, 0.92)]);
            vec![s]
        }
        3 => vec![
            arc(0.5, 0.29, 0.25, 0.21, 200.0, 450.0),
            arc(0.5, 0.71, 0.29, 0.21, 270.0, 520.0),
        ],
        4 => vec![vec![(0.66, 0.92), (0.66, 0.08), (0.16, 0.66), (0.84, 0.66)]],
        5 => {
            let mut s = vec![(0.76, 0.08), (0.3, 0.08), (0.26, 0.46)];
            s.extend(arc(0.5, 0.66, 0.3, 0.25, 215.0, 520.0));
            vec![s]
        }
        6 => vec![
            vec![(0.72, 0.1), (0.45, 0.22), (0.28, 0.45), (0.23, 0.68)],
            arc(0.5, 0.68, 0.27, 0.24, 0.0, 360.0),
        ],
        7 => vec![vec![(0.18, 0.08), (0.82, 0.08), (0.42, 0.92)]],
        8 => vec![
            arc(0.5, 0.28, 0.22, 0.2, 0.0, 360.0),
            arc(0.5, 0.7, 0.27, 0.22, 0.0, 360.0),
        ],
        _ => vec![
            arc(0.5, 0.32, 0.26, 0.23, 0.0, 360.0),
            vec![(0.76, 0.32), (0.72, 0.6), (0.6, 0.92)],
        ],
    }
}

/// Distance from `p` to the segment `a–b`.
fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (qx * qx + qy * qy).sqrt()
}

/// `count` generated digits of `size × size`, replicated to `channels` (1 or 3).
pub struct Digits {
    count: usize,
    size: usize,
    channels: usize,
    seed: u64,
}

impl Digits {
    pub fn new(count: usize, size: usize, channels: usize, seed: u64) -> Result<Self> {
        if size < 8 || !(channels == 1 || channels == 3) {
            return Err(Error::invalid(
                "Digits",
                format!("need a size of at least 8 and 1 or 3 channels, got size {size}, {channels} channels"),
            ));
        }
        Ok(Digits {
            count,
            size,
            channels,
            seed,
        })
    }

    fn digit(&self, i: usize) -> usize {
        i % 10
    }

    /// Draws image `i` as one `size²` plane with ink in `[0, 1]`.
    fn draw(&self, i: usize) -> Vec<f32> {
        let mut rng = Rng::with_stream(self.seed, i as u64);
        let mut u = |lo: f32, hi: f32| rng.uniform_range(lo as f64, hi as f64) as f32;
        let s = self.size as f32;
        // Affine map from the unit box (centred at 0.5) to pixels: the glyph box is about 60%
        // of the image, as MNIST's 20 px digits sit in 28 px.
        let angle = u(-12.0, 12.0).to_radians();
        let scale = u(0.85, 1.1) * 0.6 * s;
        let aspect = u(0.8, 1.15);
        let shear = u(-0.3, 0.3);
        let (ox, oy) = (s / 2.0 + u(-0.06, 0.06) * s, s / 2.0 + u(-0.06, 0.06) * s);
        let pen = u(0.055, 0.11) * s / 2.0; // half the stroke width, in pixels
        let jitter = 0.025;
        let (ca, sa) = (angle.cos(), angle.sin());
        let mut segments = Vec::new();
        for stroke in glyph(self.digit(i)) {
            let pts: Vec<(f32, f32)> = stroke
                .iter()
                .map(|&(x, y)| {
                    let x = (x - 0.5 + u(-jitter, jitter)) * scale * aspect;
                    let y = (y - 0.5 + u(-jitter, jitter)) * scale;
                    let x = x + shear * y;
                    (ox + ca * x - sa * y, oy + sa * x + ca * y)
                })
                .collect();
            segments.extend(pts.windows(2).map(|w| (w[0], w[1])));
        }
        let n = self.size;
        let mut ink = vec![0f32; n * n];
        for py in 0..n {
            for px in 0..n {
                let p = (px as f32 + 0.5, py as f32 + 0.5);
                let d = segments
                    .iter()
                    .map(|&(a, b)| seg_dist(p, a, b))
                    .fold(f32::INFINITY, f32::min);
                ink[py * n + px] = (pen + 0.5 - d).clamp(0.0, 1.0);
            }
        }
        // A light 3x3 blur of random strength, then noise.
        let blur = u(0.0, 0.5);
        let mut out = vec![0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let mut acc = 0.0;
                let mut wsum = 0.0;
                for (dy, dx) in [(-1i32, 0i32), (1, 0), (0, -1), (0, 1)] {
                    let (yy, xx) = (y as i32 + dy, x as i32 + dx);
                    if yy >= 0 && xx >= 0 && (yy as usize) < n && (xx as usize) < n {
                        acc += ink[yy as usize * n + xx as usize];
                        wsum += 1.0;
                    }
                }
                let v = ink[y * n + x] * (1.0 - blur) + blur * acc / wsum;
                out[y * n + x] = v;
            }
        }
        let noise = u(0.0, 0.05);
        for v in &mut out {
            *v = (*v + noise * u(-1.0, 1.0)).clamp(0.0, 1.0);
        }
        out
    }
}

impl Dataset for Digits {
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
        let plane = self.draw(i);
        for c in out.chunks_mut(plane.len()) {
            for (o, &v) in c.iter_mut().zip(&plane) {
                *o = v * 2.0 - 1.0;
            }
        }
        Ok(())
    }
    fn label(&self, i: usize) -> Option<usize> {
        Some(self.digit(i))
    }
    fn describe(&self) -> String {
        format!(
            "digits ({} generated, {s}x{s}, {} channel{})",
            self.count,
            self.channels,
            if self.channels == 1 { "" } else { "s" },
            s = self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_deterministic_in_range_and_inked() {
        let d = Digits::new(20, 32, 1, 3).unwrap();
        let mut a = vec![0f32; 32 * 32];
        let mut b = vec![0f32; 32 * 32];
        for i in 0..20 {
            d.load(i, &mut a).unwrap();
            d.load(i, &mut b).unwrap();
            assert_eq!(a, b);
            assert!(a.iter().all(|v| (-1.0..=1.0).contains(v)));
            let ink = a.iter().filter(|&&v| v > 0.0).count();
            assert!((40..600).contains(&ink), "image {i}: {ink} inked pixels");
            // The border stays mostly paper: the digit is inside the frame.
            let border: f32 = (0..32)
                .map(|k| a[k] + a[31 * 32 + k] + a[k * 32] + a[k * 32 + 31])
                .sum();
            assert!(border < -100.0, "image {i}: border {border}");
        }
        // Different seeds, different drawings.
        let e = Digits::new(20, 32, 1, 4).unwrap();
        e.load(0, &mut b).unwrap();
        d.load(0, &mut a).unwrap();
        assert_ne!(a, b);
    }
}
