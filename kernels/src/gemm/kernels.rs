//! GEMM micro-kernels, one per instruction set, and the run-time choice between them.
//!
//! A micro-kernel computes one `MR × NR` tile of C from a packed `kc × MR` micro-panel of A
//! and a packed `kc × NR` micro-panel of B (see [`super::cpu`] for the packing order):
//!
//! ```text
//! for p in 0..kc:                       (one rank-1 update per step)
//!     b[0..NR]  = load NR/LANES vectors of B's row p
//!     for r in 0..MR:
//!         acc[r][..] += broadcast(A[p][r]) * b[..]
//! ```
//!
//! The `MR × NR / LANES` accumulators stay in vector registers for the whole loop, so each
//! step does `MR · NR/LANES` fused multiply-adds for `NR/LANES` loads and `MR` broadcasts.
//! Shapes: AVX-512 12×32 (24 zmm accumulators), AVX2+FMA 6×16 (12 ymm), NEON 8×8 (16 q),
//! portable 4×4.

/// `run(kc, a, b, c, ldc, accumulate)`: `C[MR×NR] (+)= Aᵀ·B` for packed panels `a`, `b`.
///
/// # Safety (for callers of `run`)
/// `a` holds `kc·MR` and `b` holds `kc·NR` readable floats; `c` points to an `MR × NR`
/// row-major block with row stride `ldc`, writable, and (if `accumulate`) initialised.
pub type KernelFn = unsafe fn(usize, *const f32, *const f32, *mut f32, usize, bool);

/// A micro-kernel and its tile shape.
#[derive(Clone, Copy)]
pub struct MicroKernel {
    pub mr: usize,
    pub nr: usize,
    pub run: KernelFn,
}

/// The instruction sets with a micro-kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2Fma,
    Neon,
    Portable,
}

impl Isa {
    /// Every ISA this CPU can run, best first (the portable kernel is always last).
    pub fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                v.push(Isa::Avx2Fma);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(Isa::Neon);
            }
        }
        v.push(Isa::Portable);
        v
    }

    /// The fastest ISA this CPU runs (detected once).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Isa::available()[0])
    }

    /// Vector lanes of f32 (for the FMA-peak figure).
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2Fma => 8,
            Isa::Neon => 4,
            Isa::Portable => 1,
        }
    }

    /// This ISA's micro-kernel. Panics if the CPU lacks the ISA: only ISAs from
    /// [`Isa::available`] may be asked for.
    pub fn kernel(self) -> MicroKernel {
        assert!(
            Isa::available().contains(&self),
            "{self:?} is not supported by this CPU"
        );
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => MicroKernel {
                mr: 12,
                nr: 32,
                run: x86::avx512_12x32,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => MicroKernel {
                mr: 6,
                nr: 16,
                run: x86::avx2_6x16,
            },
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => MicroKernel {
                mr: 8,
                nr: 8,
                run: arm::neon_8x8,
            },
            Isa::Portable => MicroKernel {
                mr: 4,
                nr: 4,
                run: portable_4x4,
            },
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by the assert above"),
        }
    }
}

/// The portable kernel: plain Rust the compiler may auto-vectorise.
///
/// # Safety
/// See [`KernelFn`].
unsafe fn portable_4x4(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = 4;
    const NR: usize = 4;
    let mut acc = [[0f32; NR]; MR];
    for p in 0..kc {
        // SAFETY: `a` and `b` hold `kc` rows of MR / NR values (caller's contract).
        let (av, bv) = unsafe {
            (
                std::slice::from_raw_parts(a.add(p * MR), MR),
                std::slice::from_raw_parts(b.add(p * NR), NR),
            )
        };
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = av[r].mul_add(bv[j], acc[r][j]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: `c` covers an MR × NR block with row stride `ldc` (caller's contract).
            unsafe {
                let dst = c.add(r * ldc + j);
                *dst = if accumulate { *dst + v } else { *v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512: a 12 × 32 tile in 24 zmm accumulators (two 16-lane vectors per row).
    ///
    /// # Safety
    /// See [`super::KernelFn`]; the CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn avx512_12x32(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 12;
        // The C tile is read (or written) only after the whole reduction: asking for its
        // lines now hides their miss behind the FMAs.
        for r in 0..MR {
            // SAFETY: a prefetch never faults; the addresses are the tile's own rows.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + 16) as *const i8);
            }
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY: panel bounds per the caller's contract.
            unsafe {
                let b0 = _mm512_loadu_ps(b.add(p * 32));
                let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: C block bounds per the caller's contract.
            unsafe {
                let dst = c.add(r * ldc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(dst));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(dst.add(16)));
                }
                _mm512_storeu_ps(dst, v0);
                _mm512_storeu_ps(dst.add(16), v1);
            }
        }
    }

    /// AVX2 + FMA: a 6 × 16 tile in 12 ymm accumulators.
    ///
    /// # Safety
    /// See [`super::KernelFn`]; the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 6;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..kc {
            // SAFETY: panel bounds per the caller's contract.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(p * 16));
                let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(r));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: C block bounds per the caller's contract.
            unsafe {
                let dst = c.add(r * ldc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(dst));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(dst.add(8)));
                }
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst.add(8), v1);
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    /// NEON: an 8 × 8 tile in 16 q-register accumulators.
    ///
    /// # Safety
    /// See [`super::KernelFn`]; the CPU must support NEON.
    #[target_feature(enable = "neon")]
    pub unsafe fn neon_8x8(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 8;
        let mut acc = [[vdupq_n_f32(0.0); 2]; MR];
        for p in 0..kc {
            // SAFETY: panel bounds per the caller's contract.
            unsafe {
                let b0 = vld1q_f32(b.add(p * 8));
                let b1 = vld1q_f32(b.add(p * 8 + 4));
                let ap = a.add(p * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = vdupq_n_f32(*ap.add(r));
                    row[0] = vfmaq_f32(row[0], av, b0);
                    row[1] = vfmaq_f32(row[1], av, b1);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            // SAFETY: C block bounds per the caller's contract.
            unsafe {
                let dst = c.add(r * ldc);
                let (mut v0, mut v1) = (row[0], row[1]);
                if accumulate {
                    v0 = vaddq_f32(v0, vld1q_f32(dst));
                    v1 = vaddq_f32(v1, vld1q_f32(dst.add(4)));
                }
                vst1q_f32(dst, v0);
                vst1q_f32(dst.add(4), v1);
            }
        }
    }
}
