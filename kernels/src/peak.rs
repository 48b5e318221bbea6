//! The machine's FMA peak, measured: a loop of independent fused multiply-adds on registers
//! only, the physical ceiling any kernel's GFLOP/s is a fraction of.

use crate::gemm::kernels::Isa;
use std::time::Instant;

/// Runs `iters` steps of `CHAINS` independent vector FMA chains; returns the flops done.
/// Enough independent chains hide the FMA latency (4–5 cycles × 2 ports ⇒ ≥ 10 in flight).
fn fma_loop(isa: Isa, iters: usize) -> f64 {
    const CHAINS: usize = 12;
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: only called when `Isa::available()` reports AVX-512F.
            unsafe { x86::avx512(iters) };
            (iters * CHAINS * 16 * 2) as f64
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => {
            // SAFETY: only called when `Isa::available()` reports AVX2 and FMA.
            unsafe { x86::avx2(iters) };
            (iters * CHAINS * 8 * 2) as f64
        }
        _ => {
            let mut acc = [1.0f32; CHAINS];
            for _ in 0..iters {
                for a in acc.iter_mut() {
                    *a = a.mul_add(0.999_999, 1e-7);
                }
            }
            std::hint::black_box(acc);
            (iters * CHAINS * 2) as f64
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512(iters: usize) {
        let (m, a) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(acc);
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2(iters: usize) {
        let (m, a) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, m, a);
            }
        }
        std::hint::black_box(acc);
    }
}

/// Measured FMA peak in GFLOP/s for `isa` on every thread of the current rayon pool at once:
/// each thread times its own loop (so threads that start late do not count as slow), the
/// rates are summed, and the best of five runs of about 50 ms is kept.
pub fn fma_peak_gflops(isa: Isa) -> f64 {
    let iters = 4_000_000;
    (0..5)
        .map(|_| {
            rayon::broadcast(|_| {
                let start = Instant::now();
                let flops = fma_loop(isa, iters);
                flops / start.elapsed().as_secs_f64() / 1e9
            })
            .iter()
            .sum::<f64>()
        })
        .fold(0.0, f64::max)
}
