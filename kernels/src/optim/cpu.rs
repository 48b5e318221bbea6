//! The fused Adam step: every parameter of a model in one parallel pass.
//!
//! One call per parameter tensor (a DCGAN has 26) means dozens of loops, most too short to
//! split over threads, and a thread hand-off per tensor. Here the step takes all parameters at
//! once, cuts the whole set into equal chunks of [`CHUNK`] elements regardless of tensor
//! boundaries, and lets the threads share them. The moments of all parameters live in one flat
//! buffer per moment (the layout of `gantry_nn::optim::Adam`), so a segment's moments are a
//! sub-slice of it.
//!
//! Each chunk runs the reference's element formula over its elements (the update of one
//! element depends on that element only), so the result equals the reference bit for bit.

use super::{reference, AdamStep};
use crate::Float;
use rayon::prelude::*;

/// Elements per parallel task: large enough that scheduling is noise.
pub const CHUNK: usize = 1 << 14;

/// One parameter's share of a fused step: the parameter, its gradient, its slices of the
/// moment buffers, and its own step (parameters may have taken different numbers of steps).
pub struct AdamSegment<'a, T> {
    pub param: &'a mut [T],
    pub grad: &'a [T],
    pub m: &'a mut [T],
    pub v: &'a mut [T],
    pub step: AdamStep,
}

/// One Adam step over every segment, in parallel chunks.
pub fn adam_step_fused<T: Float>(segments: Vec<AdamSegment<'_, T>>) {
    let mut tasks = Vec::new();
    for s in segments {
        let n = s.param.len();
        assert!(
            s.grad.len() == n && s.m.len() == n && s.v.len() == n,
            "adam_step_fused: a segment's parameter, gradient and moments differ in length"
        );
        let h = s.step;
        let chunks = s
            .param
            .chunks_mut(CHUNK)
            .zip(s.grad.chunks(CHUNK))
            .zip(s.m.chunks_mut(CHUNK).zip(s.v.chunks_mut(CHUNK)));
        tasks.extend(chunks.map(|((p, g), (m, v))| (p, g, m, v, h)));
    }
    tasks
        .into_par_iter()
        .for_each(|(p, g, m, v, h)| reference::adam_step(p, g, m, v, &h));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic awkward values: mixed signs and magnitudes.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (x as f32 / (1u32 << 24) as f32 - 0.5) * 3.0
            })
            .collect()
    }

    #[test]
    fn fused_step_equals_the_reference_per_tensor_bit_for_bit() {
        // Sizes straddle the chunk size, and two parameters are at different steps.
        let sizes = [1, CHUNK - 1, 7, 2 * CHUNK + 5, CHUNK];
        let total: usize = sizes.iter().sum();
        let base = AdamStep {
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            step: 3,
        };
        let steps: Vec<AdamStep> = (0..sizes.len())
            .map(|i| AdamStep {
                step: 1 + i as u64 % 3,
                ..base
            })
            .collect();
        let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 1)).collect();
        let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| values(n, 2)).collect();
        let (mut m, mut v) = (values(total, 3), values(total, 4));
        v.iter_mut().for_each(|x| *x = x.abs());

        // The reference: one call per tensor on its own copy of the state.
        let mut want_p = params.clone();
        let (mut want_m, mut want_v) = (m.clone(), v.clone());
        let mut at = 0;
        for (i, p) in want_p.iter_mut().enumerate() {
            let r = at..at + p.len();
            reference::adam_step(
                p,
                &grads[i],
                &mut want_m[r.clone()],
                &mut want_v[r],
                &steps[i],
            );
            at += p.len();
        }

        let mut segments = Vec::new();
        let (mut m_rest, mut v_rest) = (&mut m[..], &mut v[..]);
        for ((p, g), h) in params.iter_mut().zip(&grads).zip(&steps) {
            let (m_here, m_next) = std::mem::take(&mut m_rest).split_at_mut(p.len());
            let (v_here, v_next) = std::mem::take(&mut v_rest).split_at_mut(p.len());
            (m_rest, v_rest) = (m_next, v_next);
            segments.push(AdamSegment {
                param: p,
                grad: g,
                m: m_here,
                v: v_here,
                step: *h,
            });
        }
        adam_step_fused(segments);

        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (got, want) in params.iter().zip(&want_p) {
            assert_eq!(bits(got), bits(want));
        }
        assert_eq!(bits(&m), bits(&want_m));
        assert_eq!(bits(&v), bits(&want_v));
        // The step moved (nearly) every parameter: the comparison above is not vacuous.
        let moved = params
            .iter()
            .flatten()
            .zip(sizes.iter().flat_map(|&n| values(n, 1)))
            .filter(|(a, b)| **a != *b)
            .count();
        assert!(moved > total * 9 / 10, "{moved} of {total} moved");
    }
}
