//! What the criterion benches share: deterministic inputs and the DCGAN layer they time.

use gantry::kernels::conv::Conv2dGeom;

/// `len` deterministic values in [-0.5, 0.5).
pub fn filled(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// The DCGAN discriminator's second layer (64 → 128 channels, 32x32 → 16x16, 4x4 kernel,
/// stride 2, padding 1) at batch `n`.
pub fn dcgan_d2(n: usize) -> Conv2dGeom {
    Conv2dGeom {
        n,
        c_in: 64,
        h: 32,
        w: 32,
        c_out: 128,
        kh: 4,
        kw: 4,
        stride: [2, 2],
        pad: [1, 1],
        dilation: [1, 1],
        h_out: 0,
        w_out: 0,
    }
    .with_conv_output()
    .expect("valid geometry")
}
