//! Reference resampling kernels.

use crate::Float;

/// Pixel shuffle with factor `r`: input `[n, c·r², h, w]` → output `[n, c, h·r, w·r]`, with
/// `y[b, k, h·r + i, w·r + j] = x[b, k·r² + i·r + j, h, w]` (PyTorch's channel order).
/// `c` here is the *output* channel count.
pub fn pixel_shuffle<T: Copy>(
    x: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    r: usize,
    y: &mut [T],
) {
    assert!(
        x.len() == n * c * r * r * h * w && y.len() == x.len(),
        "pixel_shuffle: lengths"
    );
    for b in 0..n {
        for k in 0..c {
            for i in 0..r {
                for j in 0..r {
                    let ci = (k * r + i) * r + j;
                    for hh in 0..h {
                        for ww in 0..w {
                            let src = ((b * c * r * r + ci) * h + hh) * w + ww;
                            let dst = ((b * c + k) * h * r + hh * r + i) * w * r + ww * r + j;
                            y[dst] = x[src];
                        }
                    }
                }
            }
        }
    }
}

/// The inverse of [`pixel_shuffle`] (and its backward): `[n, c, h·r, w·r]` → `[n, c·r², h, w]`.
pub fn pixel_unshuffle<T: Copy>(
    y: &[T],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    r: usize,
    x: &mut [T],
) {
    assert!(
        x.len() == n * c * r * r * h * w && y.len() == x.len(),
        "pixel_unshuffle: lengths"
    );
    for b in 0..n {
        for k in 0..c {
            for i in 0..r {
                for j in 0..r {
                    let ci = (k * r + i) * r + j;
                    for hh in 0..h {
                        for ww in 0..w {
                            let dst = ((b * c * r * r + ci) * h + hh) * w + ww;
                            let src = ((b * c + k) * h * r + hh * r + i) * w * r + ww * r + j;
                            x[dst] = y[src];
                        }
                    }
                }
            }
        }
    }
}

/// Nearest-neighbour upsampling by integer factors: `[planes, h, w]` → `[planes, h·sh, w·sw]`,
/// `y[p, oh, ow] = x[p, oh / sh, ow / sw]` (`planes` = N·C).
pub fn upsample_nearest2d<T: Copy>(
    x: &[T],
    planes: usize,
    h: usize,
    w: usize,
    scale: [usize; 2],
    y: &mut [T],
) {
    let (ho, wo) = (h * scale[0], w * scale[1]);
    assert!(
        x.len() == planes * h * w && y.len() == planes * ho * wo,
        "upsample_nearest2d: lengths"
    );
    for p in 0..planes {
        for oh in 0..ho {
            for ow in 0..wo {
                y[(p * ho + oh) * wo + ow] = x[(p * h + oh / scale[0]) * w + ow / scale[1]];
            }
        }
    }
}

/// Backward of [`upsample_nearest2d`]: each input pixel receives the sum of its `sh × sw` block.
pub fn upsample_nearest2d_backward<T: Float>(
    dy: &[T],
    planes: usize,
    h: usize,
    w: usize,
    scale: [usize; 2],
    dx: &mut [T],
) {
    let (ho, wo) = (h * scale[0], w * scale[1]);
    assert!(
        dx.len() == planes * h * w && dy.len() == planes * ho * wo,
        "upsample_nearest2d_backward: lengths"
    );
    dx.fill(T::ZERO);
    for p in 0..planes {
        for oh in 0..ho {
            for ow in 0..wo {
                dx[(p * h + oh / scale[0]) * w + ow / scale[1]] += dy[(p * ho + oh) * wo + ow];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_four_channels_into_one() {
        // n=1, one output channel, r=2, 1x1 input of 4 channels -> 2x2 image in channel order.
        let x = [1, 2, 3, 4];
        let mut y = [0; 4];
        pixel_shuffle(&x, 1, 1, 1, 1, 2, &mut y);
        assert_eq!(y, [1, 2, 3, 4]);
        // 1x2 input: channel k holds sub-pixel (k/2, k%2) of both columns.
        let x = [1, 10, 2, 20, 3, 30, 4, 40];
        let mut y = [0; 8];
        pixel_shuffle(&x, 1, 1, 1, 2, 2, &mut y);
        assert_eq!(y, [1, 2, 10, 20, 3, 4, 30, 40]);
        let mut back = [0; 8];
        pixel_unshuffle(&y, 1, 1, 1, 2, 2, &mut back);
        assert_eq!(back, x);
    }

    #[test]
    fn nearest_repeats_and_backward_sums() {
        let x = [1.0f32, 2.0];
        let mut y = [0.0; 8];
        upsample_nearest2d(&x, 1, 1, 2, [2, 2], &mut y);
        assert_eq!(y, [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        let mut dx = [0.0; 2];
        upsample_nearest2d_backward(
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            1,
            1,
            2,
            [2, 2],
            &mut dx,
        );
        assert_eq!(dx, [1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0]);
    }
}
