//! Fast single-precision GEMM in the BLIS style.
//!
//! `C (m×n) = A (m×k) · B (k×n)` is computed in five nested loops around a register-blocked
//! micro-kernel (Goto & van de Geijn, "Anatomy of High-Performance Matrix Multiplication"):
//!
//! ```text
//! for jc in 0..n step NC            ── a KC×NC block of B is packed once: it lives in L3
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] into NR-wide micro-panels
//!     for ic in 0..m step MC        ── an MC×KC block of A is packed: it lives in L2
//!       pack A[ic.., pc..] into MR-tall micro-panels
//!       for jr in 0..NC step NR     ── one KC×NR micro-panel of B stays in cache …
//!         for ir in 0..MC step MR   ── … while the micro-kernel streams A micro-panels past it
//!           C[MR×NR tile] += Apanel · Bpanel      (MR·NR accumulators held in registers)
//! ```
//!
//! Packing copies each operand into the exact order the micro-kernel reads (`k` outermost,
//! then `MR` (or `NR`) consecutive values), zero-padded to whole panels, so the micro-kernel
//! never branches on edges; edge tiles are computed into a small buffer and the valid part
//! copied out. Operands are read through the [`PackA`] / [`PackB`] traits, so a strided or
//! transposed matrix and an implicit im2col matrix (convolution) share one driver.
//!
//! When A is short (a convolution's weights or output gradient: its rows packed for one KC
//! block fit in 1 MiB), the nest runs with `pc` outermost instead: A's KC block is packed
//! once, and B is packed and consumed in blocks of about 512 KiB, which stay in L2 (see
//! [`A_RESIDENT`]).
//!
//! Threads: the larger of the `m` and `n` ranges is split into one contiguous part per rayon
//! thread, and each thread runs the whole loop nest on its part with its own packing buffers.

use super::kernels::{Isa, MicroKernel};
use crate::conv::lanes::{Lanes, PackIsa, Portable};
use rayon::prelude::*;
use std::cell::RefCell;

/// Depth of a packed block (the `k` extent). Textbook BLIS sizes the KC×NR micro-panel of B
/// for L1; measured on the development machine (48 KiB L1d, 1 MiB L2 per core), a deep block
/// won: every KC step re-reads and re-writes the C tile, and with KC = 1024 a 2048³ product
/// touches C twice instead of eight times, while the hardware prefetcher streams the packed
/// panels from L2 (2048³ on one thread: KC 256 → 76% of peak, KC 1024 → 85–89%).
pub const KC: usize = 1024;
/// Rows of A packed at once: an MC×KC block (576 KiB) stays in L2.
pub const MC: usize = 144;
/// Columns of B packed at once in the textbook order: a KC×NC block (16 MiB) stays in L3.
pub const NC: usize = 4096;
/// When A's rows, packed for one KC block, take at most this many floats (1 MiB), the
/// loops run KC block by KC block: A's block is packed once, and B is streamed through it
/// in blocks of about [`B_BLOCK`] floats instead of NC columns, each used while still in
/// L2. This is the shape of a convolution, whose weights (or output gradient) are the
/// short operand: with NC-wide blocks, a DCGAN layer's B block (up to 16 MiB per thread)
/// left L2 and L3 between its packing and its use (measured on D2 at batch 64:
/// backward-weight 23 → 15 ms).
const A_RESIDENT: usize = 1 << 18;
/// Size of a streamed block of B (512 KiB): half of L2, the other half for A's panels.
const B_BLOCK: usize = 1 << 17;

/// Floats of A's rows `rows` packed for depth `kc`: whole micro-panels.
fn packed_a_len(rows: (usize, usize), kc: usize, mr: usize) -> usize {
    (rows.1 - rows.0).div_ceil(mr) * mr * kc
}

/// Columns of B per streamed block of depth `kc`: about [`B_BLOCK`] floats, whole
/// micro-panels, at most NC.
fn streamed_nc(kc: usize, nr: usize) -> usize {
    (B_BLOCK / kc.max(1)).clamp(nr, NC) / nr * nr
}

/// A source of the left operand, packed by rows.
pub trait PackA: Sync {
    /// Packs rows `i0..i0 + mc` and columns `p0..p0 + kc` of A into `dst` as consecutive
    /// micro-panels of `mr` rows: panel `q` holds, for each `p`, the `mr` values
    /// `A[i0 + q·mr + r][p0 + p]` (zero past row `i0 + mc`).
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]);
}

/// A source of the right operand, packed by columns.
pub trait PackB: Sync {
    /// Packs rows `p0..p0 + kc` and columns `j0..j0 + nc` of B into `dst` as consecutive
    /// micro-panels of `nr` columns: panel `q` holds, for each `p`, the `nr` values
    /// `B[p0 + p][j0 + q·nr + c]` (zero past column `j0 + nc`).
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]);
}

/// A dense matrix in memory with arbitrary row and column strides: a row-major matrix has
/// `(rs, cs) = (cols, 1)`, its transpose `(1, cols)`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Strided<'_> {
    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

impl PackA for Strided<'_> {
    fn pack_a(&self, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        match PackIsa::best() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: PackIsa::Avx512 is only chosen on CPUs with AVX-512F.
            PackIsa::Avx512 => unsafe { x86::pack_a(self, i0, mc, p0, kc, mr, dst) },
            _ => strided_pack_a::<Portable>(self, i0, mc, p0, kc, mr, dst),
        }
    }
}

impl PackB for Strided<'_> {
    fn pack_b(&self, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        match PackIsa::best() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in pack_a.
            PackIsa::Avx512 => unsafe { x86::pack_b(self, p0, kc, j0, nc, nr, dst) },
            _ => strided_pack_b::<Portable>(self, p0, kc, j0, nc, nr, dst),
        }
    }
}

/// [`PackA::pack_a`] for a strided A. A panel is `rows` row segments side by side, so:
/// - a row-major A (`cs == 1`) is packed by 16 × 16 register transposes of those segments,
///   16 rows of the panel at a time;
/// - a column-major A (`rs == 1`) holds each panel row (`rows` values) contiguously: a copy;
/// - any other stride is gathered element by element.
#[inline(always)]
pub(super) fn strided_pack_a<L: Lanes>(
    s: &Strided,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    for (q, panel) in dst
        .chunks_exact_mut(kc * mr)
        .take(mc.div_ceil(mr))
        .enumerate()
    {
        let (r0, rows) = (i0 + q * mr, mr.min(mc - q * mr));
        if kc == 0 {
            continue;
        }
        // The last element this panel reads; every other lies below it.
        let last = (r0 + rows - 1) * s.rs + (p0 + kc - 1) * s.cs;
        assert!(
            last < s.data.len(),
            "gemm pack_a: A is shorter than its strides say"
        );
        if s.cs == 1 {
            for rb in (0..mr).step_by(16) {
                for pb in (0..kc).step_by(16) {
                    // SAFETY: reads rows r0 + rb.. (< r0 + rows), columns p0 + pb..
                    // (< p0 + kc) of A, all at or below `last` (none when rb ≥ rows: the
                    // block is zero, and its start address is only formed, hence
                    // `wrapping_add`); writes a block of this panel.
                    unsafe {
                        L::transpose(
                            s.data.as_ptr().wrapping_add((r0 + rb) * s.rs + p0 + pb),
                            s.rs,
                            16.min(rows.saturating_sub(rb)),
                            16.min(kc - pb),
                            panel.as_mut_ptr().add(pb * mr + rb),
                            mr,
                            16.min(mr - rb),
                        )
                    };
                }
            }
        } else if s.rs == 1 {
            for (p, out) in panel.chunks_exact_mut(mr).enumerate() {
                let at = r0 + (p0 + p) * s.cs;
                out[..rows].copy_from_slice(&s.data[at..at + rows]);
                out[rows..].fill(0.0);
            }
        } else {
            for (p, out) in panel.chunks_exact_mut(mr).enumerate() {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = if r < rows { s.at(r0 + r, p0 + p) } else { 0.0 };
                }
            }
        }
    }
}

/// [`PackB::pack_b`] for a strided B: B's panels of `nr` columns are the panels of `nr`
/// rows of Bᵀ (the same data, strides swapped), packed as A.
#[inline(always)]
pub(super) fn strided_pack_b<L: Lanes>(
    s: &Strided,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: &mut [f32],
) {
    let t = Strided {
        data: s.data,
        rs: s.cs,
        cs: s.rs,
    };
    strided_pack_a::<L>(&t, j0, nc, p0, kc, nr, dst)
}

/// The AVX-512 entry points of the strided packers, so the [`Avx512`] moves inline.
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{strided_pack_a, strided_pack_b, Strided};
    use crate::conv::lanes::Avx512;

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::gemm) unsafe fn pack_a(
        s: &Strided,
        i0: usize,
        mc: usize,
        p0: usize,
        kc: usize,
        mr: usize,
        dst: &mut [f32],
    ) {
        strided_pack_a::<Avx512>(s, i0, mc, p0, kc, mr, dst)
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::gemm) unsafe fn pack_b(
        s: &Strided,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        strided_pack_b::<Avx512>(s, p0, kc, j0, nc, nr, dst)
    }
}

/// Where the product goes. The micro-kernel writes a whole tile straight into the
/// destination where [`StoreC::tile_at`] says it lies as a strided block (a dense C, a
/// convolution's output plane); other tiles (edges, a col2im scatter) arrive finished.
pub trait StoreC: Sync {
    /// Where the `[h, w]` tile whose top-left element is `C[i][j]` lies, when its rows are
    /// evenly spaced runs of `w` contiguous values: `(address of C[i][j], row stride)`. The
    /// micro-kernel then writes a whole tile in place; otherwise it goes through
    /// [`StoreC::store`].
    fn tile_at(&self, _i: usize, _j: usize, _hw: [usize; 2]) -> Option<(*mut f32, usize)> {
        None
    }

    /// Stores the `hw = [h, w]` tile (row stride `ld`) whose top-left element is `C[i][j]`: written
    /// over C, or added to it with `add`.
    ///
    /// # Safety
    /// The caller guarantees no other thread stores to the same destination elements at the
    /// same time (see [`StoreC::splittable`]).
    unsafe fn store(&self, i: usize, j: usize, tile: &[f32], ld: usize, hw: [usize; 2], add: bool);

    /// Whether threads may own disjoint row (or column) ranges of C. A scatter whose rows
    /// overlap in memory must say no, and the GEMM then runs on the calling thread.
    fn splittable(&self) -> bool {
        true
    }
}

/// A raw pointer that may cross threads. Every use writes a region of C no other thread
/// touches (the ranges handed to the threads are disjoint).
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: see the type's doc: threads write disjoint parts of the buffer behind it, and the
// buffer outlives the scope that spawns them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so a closure captures the whole `SendPtr`, not its field).
    #[inline]
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst = src`, or `dst += src` with `add`: how a finished tile row reaches its destination.
#[inline]
pub fn write_row(dst: &mut [f32], src: &[f32], add: bool) {
    if add {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    } else {
        dst.copy_from_slice(src);
    }
}

/// A dense row-major `m × n` destination with row stride `ldc`, borrowed mutably.
pub struct DenseC<'a> {
    ptr: SendPtr,
    ldc: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

impl<'a> DenseC<'a> {
    /// Checks `data` covers `m` rows of `n` columns at row stride `ldc`.
    pub fn new(data: &'a mut [f32], [m, n]: [usize; 2], ldc: usize) -> Self {
        assert!(ldc >= n, "gemm: ldc {ldc} < n {n}");
        assert!(
            m == 0 || n == 0 || data.len() >= (m - 1) * ldc + n,
            "gemm: C too short"
        );
        DenseC {
            ptr: SendPtr(data.as_mut_ptr()),
            ldc,
            _borrow: std::marker::PhantomData,
        }
    }
}

impl StoreC for DenseC<'_> {
    fn tile_at(&self, i: usize, j: usize, _hw: [usize; 2]) -> Option<(*mut f32, usize)> {
        // C[i][j] of a tile inside C (the caller's contract): the offset stays in the buffer.
        Some((self.ptr.0.wrapping_add(i * self.ldc + j), self.ldc))
    }

    unsafe fn store(
        &self,
        i: usize,
        j: usize,
        tile: &[f32],
        ld: usize,
        [h, w]: [usize; 2],
        add: bool,
    ) {
        for r in 0..h {
            // SAFETY: (i + r, j..j + w) lies inside the m × n block checked in `new`; the
            // caller guarantees exclusive access to it.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(self.ptr.0.add((i + r) * self.ldc + j), w)
            };
            let src = &tile[r * ld..r * ld + w];
            write_row(dst, src, add);
        }
    }
}

thread_local! {
    /// Per-thread packing buffers, reused across calls so steady-state GEMMs allocate nothing.
    static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    /// The packed B block a row-split GEMM shares between threads (kept by the calling thread).
    static SHARED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A thread's packed A block in a row-split GEMM.
    static ABUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C = A·B` (or `C += A·B` with `accumulate`) for an `m × k` A and a `k × n` B
/// (`[m, n, k]`), using the micro-kernel for `isa`.
pub fn gemm_with(
    isa: Isa,
    [m, n, k]: [usize; 3],
    a: &impl PackA,
    b: &impl PackB,
    c: &impl StoreC,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            let zeros = vec![0f32; n];
            for i in 0..m {
                // SAFETY: the calling thread owns all of C here.
                unsafe { c.store(i, 0, &zeros, n, [1, n], false) };
            }
        }
        return;
    }
    let kernel = isa.kernel();
    let threads = rayon::current_num_threads().max(1);
    // Split the longer dimension, in whole micro-tiles, one part per thread; tiny problems,
    // and destinations that cannot be split, run on the calling thread.
    let parts = if m * n * k < 1 << 15 || !c.splittable() {
        1
    } else {
        threads
    };
    let (split_m, unit, len) = if m >= n {
        (true, kernel.mr, m)
    } else {
        (false, kernel.nr, n)
    };
    let per = len.div_ceil(unit).div_ceil(parts) * unit;
    let ranges: Vec<(usize, usize)> = (0..len)
        .step_by(per)
        .map(|s| (s, (s + per).min(len)))
        .collect();
    let run = |&(s, e): &(usize, usize)| {
        let (rows, cols) = if split_m {
            ((s, e), (0, n))
        } else {
            ((0, m), (s, e))
        };
        BUFFERS.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let (abuf, bbuf) = &mut *bufs;
            // SAFETY: the rows × cols block of C is this task's alone (ranges are disjoint,
            // and a destination that is not splittable runs as one task).
            unsafe { serial(&kernel, rows, cols, k, a, b, c, accumulate, abuf, bbuf) };
        });
    };
    if ranges.len() == 1 {
        run(&ranges[0]);
    } else if split_m {
        // SAFETY: the row ranges are disjoint and C is splittable (parts > 1).
        unsafe { shared_b(&kernel, &ranges, n, k, a, b, c, accumulate) };
    } else {
        ranges.par_iter().for_each(run);
    }
}

/// `C = A·B` with the best micro-kernel this CPU supports.
pub fn gemm(mnk: [usize; 3], a: &impl PackA, b: &impl PackB, c: &impl StoreC, accumulate: bool) {
    gemm_with(Isa::best(), mnk, a, b, c, accumulate)
}

/// The five-loop nest on rows `rows.0..rows.1` and columns `cols.0..cols.1` of C.
///
/// # Safety
/// No other thread may store to that block of C during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    kern: &MicroKernel,
    rows: (usize, usize),
    cols: (usize, usize),
    k: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: &impl StoreC,
    accumulate: bool,
    abuf: &mut Vec<f32>,
    bbuf: &mut Vec<f32>,
) {
    bbuf.resize(NC.div_ceil(kern.nr) * kern.nr * KC, 0.0);
    if packed_a_len(rows, KC.min(k), kern.mr) <= A_RESIDENT {
        // SAFETY: forwarded from the caller.
        return unsafe { a_resident(kern, rows, cols, k, a, b, c, accumulate, abuf, bbuf) };
    }
    for jc in (cols.0..cols.1).step_by(NC) {
        let nc = NC.min(cols.1 - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            b.pack_b(pc, kc, jc, nc, kern.nr, bbuf);
            let block = PackedB {
                data: bbuf,
                jc,
                nc,
                pc,
                kc,
                add: accumulate || pc > 0,
            };
            // SAFETY: forwarded from the caller.
            unsafe { macro_kernel(kern, rows, a, &block, c, abuf) };
        }
    }
}

/// [`serial`] with a short A (see [`A_RESIDENT`]): for each KC block, all of A's rows are
/// packed once, then B is packed and used in L2-sized blocks.
///
/// # Safety
/// As [`serial`].
#[allow(clippy::too_many_arguments)]
unsafe fn a_resident(
    kern: &MicroKernel,
    rows: (usize, usize),
    cols: (usize, usize),
    k: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: &impl StoreC,
    accumulate: bool,
    abuf: &mut Vec<f32>,
    bbuf: &mut [f32],
) {
    let mr = kern.mr;
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        abuf.resize(packed_a_len(rows, kc, mr), 0.0);
        // MC is a multiple of every MR, so MC block `ic` starts at (ic − rows.0)·kc.
        let block_of = |ic: usize| {
            (ic - rows.0) * kc..(ic - rows.0 + MC.min(rows.1 - ic).div_ceil(mr) * mr) * kc
        };
        for ic in (rows.0..rows.1).step_by(MC) {
            a.pack_a(ic, MC.min(rows.1 - ic), pc, kc, mr, &mut abuf[block_of(ic)]);
        }
        let step = streamed_nc(kc, kern.nr);
        for jc in (cols.0..cols.1).step_by(step) {
            let nc = step.min(cols.1 - jc);
            b.pack_b(pc, kc, jc, nc, kern.nr, bbuf);
            let block = PackedB {
                data: bbuf,
                jc,
                nc,
                pc,
                kc,
                add: accumulate || pc > 0,
            };
            for ic in (rows.0..rows.1).step_by(MC) {
                let mc = MC.min(rows.1 - ic);
                // SAFETY: forwarded from the caller.
                unsafe { inner_kernel(kern, ic, mc, &abuf[block_of(ic)], &block, c) };
            }
        }
    }
}

/// A packed `kc × nc` block of B, at rows `pc..` and columns `jc..` of B.
struct PackedB<'a> {
    data: &'a [f32],
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    /// Whether C already holds a partial sum to add to.
    add: bool,
}

/// The three inner loops: for each MC block of rows, pack A and run the micro-kernel over
/// every tile against the packed block of B.
///
/// # Safety
/// No other thread may store to rows `rows` × the block's columns of C during the call.
unsafe fn macro_kernel(
    kern: &MicroKernel,
    rows: (usize, usize),
    a: &impl PackA,
    b: &PackedB,
    c: &impl StoreC,
    abuf: &mut Vec<f32>,
) {
    abuf.resize(MC.div_ceil(kern.mr) * kern.mr * KC, 0.0);
    for ic in (rows.0..rows.1).step_by(MC) {
        let mc = MC.min(rows.1 - ic);
        a.pack_a(ic, mc, b.pc, b.kc, kern.mr, abuf);
        // SAFETY: forwarded from the caller.
        unsafe { inner_kernel(kern, ic, mc, abuf, b, c) };
    }
}

/// The two innermost loops: every micro-tile of rows `ic..ic + mc` against the packed
/// block of B, from A's packed `mc × kc` block `abuf`.
///
/// # Safety
/// As [`macro_kernel`].
unsafe fn inner_kernel(
    kern: &MicroKernel,
    ic: usize,
    mc: usize,
    abuf: &[f32],
    b: &PackedB,
    c: &impl StoreC,
) {
    let (mr, nr, kc) = (kern.mr, kern.nr, b.kc);
    let mut tile = [0f32; 32 * 32];
    for jr in (0..b.nc).step_by(nr) {
        // SAFETY (pointer arithmetic): offsets stay inside the packed buffers: `abuf`
        // holds ⌈mc/mr⌉·mr·kc floats and B's block ⌈nc/nr⌉·nr·kc.
        let bp = unsafe { b.data.as_ptr().add(jr * kc) };
        let w = nr.min(b.nc - jr);
        for ir in (0..mc).step_by(mr) {
            let ap = unsafe { abuf.as_ptr().add(ir * kc) };
            let h = mr.min(mc - ir);
            let (i, j) = (ic + ir, b.jc + jr);
            let at = if h == mr && w == nr {
                c.tile_at(i, j, [h, w])
            } else {
                None
            };
            match at {
                // A whole tile that lies in C as a strided block: the micro-kernel writes it
                // in place. SAFETY: `tile_at` gave the tile's own rows, which this task owns.
                Some((ptr, ldc)) => unsafe { (kern.run)(kc, ap, bp, ptr, ldc, b.add) },
                // Edge tiles and scattered destinations: compute the whole tile into a
                // buffer, then store its valid part.
                _ => unsafe {
                    (kern.run)(kc, ap, bp, tile.as_mut_ptr(), nr, false);
                    c.store(i, j, &tile, nr, [h, w], b.add);
                },
            }
        }
    }
}

/// [`gemm_with`] on strided operands into a dense row-major C (row stride `ldc`), except
/// that a product with one column, A's rows and that column contiguous, runs as one dot
/// product per row: a matrix-vector product would fill one of the micro-kernel's `nr` columns and pack
/// all of A to do it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    isa: Isa,
    [m, n, k]: [usize; 3],
    a: &Strided,
    b: &Strided,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if n != 1 || a.cs != 1 || b.rs != 1 || m == 0 || k == 0 {
        let dc = DenseC::new(c, [m, n], ldc);
        return gemm_with(isa, [m, n, k], a, b, &dc, accumulate);
    }
    assert!(
        (m - 1) * a.rs + k <= a.data.len() && k <= b.data.len(),
        "gemm: operands shorter than [m, n, k] = [{m}, 1, {k}] says"
    );
    assert!(c.len() > (m - 1) * ldc, "gemm: C too short");
    let v = &b.data[..k];
    // Enough rows per task that each does at least about 32K multiply-adds.
    let min_rows = ((1 << 15) / k).max(1);
    c.par_chunks_mut(ldc)
        .take(m)
        .enumerate()
        .with_min_len(min_rows)
        .for_each(|(i, ci)| {
            let d = dot(&a.data[i * a.rs..i * a.rs + k], v);
            ci[0] = if accumulate { ci[0] + d } else { d };
        });
}

/// `Σ x[i]·y[i]` in 16 interleaved partial sums, which the compiler keeps in vector
/// registers (a single running sum would serialise every add).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (xc, yc) = (x.chunks_exact(L), y.chunks_exact(L));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ys) in xc.zip(yc) {
        for l in 0..L {
            acc[l] += xs[l] * ys[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Row-split GEMM sharing one packed B between the threads: for each `KC × NC` block, the
/// threads pack B's micro-panels together, then each runs the inner loops on its own rows.
/// (Each thread packing the whole block itself would double the packing and the L3 traffic.)
///
/// # Safety
/// The row ranges must be disjoint and C splittable.
#[allow(clippy::too_many_arguments)]
unsafe fn shared_b(
    kern: &MicroKernel,
    ranges: &[(usize, usize)],
    n: usize,
    k: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: &impl StoreC,
    accumulate: bool,
) {
    let nr = kern.nr;
    // Taken out of the thread-local rather than borrowed: a task stolen while this thread
    // waits below may run another GEMM on it, which then finds an empty buffer.
    let mut bbuf = SHARED_B.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
    bbuf.resize(NC.div_ceil(nr) * nr * KC, 0.0);
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            bbuf[..nc.div_ceil(nr) * nr * kc]
                .par_chunks_mut(nr * kc)
                .enumerate()
                .for_each(|(q, panel)| {
                    b.pack_b(pc, kc, jc + q * nr, nr.min(nc - q * nr), nr, panel);
                });
            let block = PackedB {
                data: &bbuf,
                jc,
                nc,
                pc,
                kc,
                add: accumulate || pc > 0,
            };
            ranges.par_iter().for_each(|&rows| {
                let mut abuf = ABUF.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
                // SAFETY: each task owns its row range (the caller's contract).
                unsafe { macro_kernel(kern, rows, a, &block, c, &mut abuf) };
                ABUF.with(|cell| *cell.borrow_mut() = abuf);
            });
        }
    }
    SHARED_B.with(|cell| *cell.borrow_mut() = bbuf);
}

/// The fast path for a [`super::GemmGeom`]: every batch through [`gemm_with`], transposed
/// operands read through their strides (no transpose is materialised). Batches run in
/// parallel; each GEMM also splits itself when it is large.
pub fn matmul_with(isa: Isa, a: &[f32], b: &[f32], c: &mut [f32], g: &super::GemmGeom) {
    let (sa, sb, sc) = (g.m * g.k, g.k * g.n, g.m * g.n);
    assert_eq!(a.len(), g.batch * sa, "matmul: A length");
    assert_eq!(b.len(), g.batch * sb, "matmul: B length");
    assert_eq!(c.len(), g.batch * sc, "matmul: C length");
    if sc == 0 {
        return;
    }
    // op(A)[i][p] and op(B)[p][j] as (row, column) strides of the stored matrices.
    let (ars, acs) = if g.trans_a { (1, g.m) } else { (g.k, 1) };
    let (brs, bcs) = if g.trans_b { (1, g.k) } else { (g.n, 1) };
    let one = |bi: usize, cb: &mut [f32]| {
        let a = Strided {
            data: &a[bi * sa..(bi + 1) * sa],
            rs: ars,
            cs: acs,
        };
        let b = Strided {
            data: &b[bi * sb..(bi + 1) * sb],
            rs: brs,
            cs: bcs,
        };
        gemm_strided(isa, [g.m, g.n, g.k], &a, &b, cb, g.n, false);
    };
    if g.batch == 1 {
        one(0, c);
    } else {
        c.par_chunks_mut(sc)
            .enumerate()
            .for_each(|(bi, cb)| one(bi, cb));
    }
}

/// [`matmul_with`] on the best ISA.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], g: &super::GemmGeom) {
    matmul_with(Isa::best(), a, b, c, g)
}
