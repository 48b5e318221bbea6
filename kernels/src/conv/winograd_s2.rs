//! Winograd F(2×2, 2×2) for 4×4 stride-2 layers (DCGAN's convolutions and transposed
//! convolutions), after splitting them by stride phase into 2×2 stride-1 convolutions.
//!
//! **The split.** Write a filter tap as `k = 2a + b` (`a`, `b` in `{0, 1}`). Forward,
//! `y[o] = Σₖ w[k]·x[2o + k − pad] = Σ_b Σ_a w[2a + b]·x_b[o + a]` with the phase
//! `x_b[u] = x[2u + b − pad]`: in two dimensions, the sum over four input phases of 2×2
//! stride-1 convolutions, which is one convolution with `4·c_in` input channels.
//! Backward-data (a transposed convolution's forward) splits the other way: `dx[i]` with
//! `i + pad = 2m + e` is `Σ_a w[2a + e]·dy[m − a]`, a 2×2 stride-1 convolution of `dy` for
//! each of the four output phases `e`, each written to every other pixel of `dx`.
//!
//! **F(2, 2).** Two outputs of a 2-tap filter `g` over three inputs `d` take three
//! multiplies instead of four: with `V = (d₀ − d₁, d₁, d₂ − d₁)` and
//! `U = (g₀, g₀ + g₁, g₁)`, `y₀ = U₀V₀ + U₁V₁` and `y₁ = U₁V₁ + U₂V₂`. In two dimensions,
//! for one channel, a 3×3 patch `d` and a 2×2 filter `g` give the 2×2 output tile
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//!
//!      ⎡1 −1  0⎤        ⎡1  0⎤
//! Bᵀ = ⎢0  1  0⎥    G = ⎢1  1⎥    Aᵀ = ⎡1  1  0⎤
//!      ⎣0 −1  1⎦        ⎣0  1⎦         ⎣0  1  1⎦
//! ```
//!
//! in 9 multiplies instead of 16. Summed over input channels, each of the nine positions
//! `ξ` of the transformed tile is one GEMM, `M[ξ] = U[ξ]·V[ξ]`, as in [`super::winograd`]
//! (whose structure this follows: filters transformed once per call straight into the
//! micro-kernel's packed A panels, each block of tiles transformed into packed B panels,
//! bare micro-kernel products, the output transform writing the block's pixels). The
//! transforms only add and subtract, so each product is of operands rounded at most twice.
//!
//! **Indexing.** Every split convolution (a [`Job`]) reads its input through [`View`]s —
//! element `(u, v)` of a view lies at row `step·u + r0`, column `step·v + c0` of a plane,
//! zero outside — and writes output tile `(ti, tj)`'s pixels `(2ti + a, 2tj + b)` through
//! another. Forward is one job with four input views of step 2 (the phases) writing `y`
//! with step 1; backward-data is four jobs, one per output phase, each with one view of
//! `dy` of step 1, writing `dx` with step 2.

// The transforms read several arrays at the same position; index loops say so plainly.
#![allow(clippy::needless_range_loop)]

use super::winograd::Transform;
use super::Conv2dGeom;
use crate::gemm::cpu::SendPtr;
use crate::gemm::kernels::{Isa, MicroKernel};
use rayon::prelude::*;
use std::cell::RefCell;

/// Tiles per block at most.
const MAX_TILES: usize = 128;

/// Whether this path computes `g`'s forward and backward-data: a 4×4 kernel, stride 2,
/// dilation 1 (any padding).
pub fn suits(g: &Conv2dGeom) -> bool {
    g.kh == 4 && g.kw == 4 && g.stride == [2, 2] && g.dilation == [1, 1]
}

/// Whether [`super::ConvVariant::Auto`] runs `pass` of `g` here, on AVX-512 where it was
/// measured against the direct kernel (DCGAN's layers, batch 64, 2 threads):
/// - forward with 32 to 128 input channels (a reduction of 128 to 512) and 32+ output
///   channels: D2 and D3, 9.1–10.0 → 7.1–8.2 ms; with 256 input channels (D4) the
///   transformed filters (9·c_out·4·c_in floats) cost what the GEMM saves;
/// - backward-data with 32+ channels each side: D3 9.7 → 7.8 ms, D2 and D4 a few percent;
/// - a batch that fills the 16-image vectors to within an eighth.
///
/// The transforms round differently from a direct sum (see the module doc).
pub fn chosen(g: &Conv2dGeom, pass: super::direct::Pass) -> bool {
    use super::direct::Pass;
    let channels = match pass {
        Pass::Forward => (32..=128).contains(&g.c_in) && g.c_out >= 32,
        Pass::BackwardData => g.c_in >= 32 && g.c_out >= 32,
        Pass::BackwardWeight => false,
    };
    let spare = g.n.div_ceil(LANES) * LANES - g.n;
    channels
        && suits(g)
        && 8 * spare <= g.n
        && super::lanes::PackIsa::best() == super::lanes::PackIsa::Avx512
}

/// `y = conv(x, w) + bias`. Panics unless [`suits`]`(g)`.
pub fn conv2d_forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], g: &Conv2dGeom) {
    forward_with(x, w, bias, y, g, &Isa::best().kernel(), Transform::Best);
}

/// `dx` of the convolution `g` (a transposed convolution's forward). Panics unless
/// [`suits`]`(g)`.
pub fn conv2d_backward_data(dy: &[f32], w: &[f32], dx: &mut [f32], g: &Conv2dGeom) {
    backward_data_with(dy, w, dx, g, &Isa::best().kernel(), Transform::Best);
}

/// [`conv2d_forward`] with a given micro-kernel and transform build.
pub fn forward_with(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: &Conv2dGeom,
    kern: &MicroKernel,
    tf: Transform,
) {
    g.assert_buffers("conv2d", [x.len(), w.len(), y.len()]);
    assert!(
        suits(g),
        "winograd_s2 conv2d: needs a 4x4 stride-2 kernel, got {g:?}"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), g.c_out, "conv2d: bias length");
    }
    let (ci, [ph, pw]) = (g.c_in, g.pad.map(|p| p as isize));
    // Phase p = 2·bh + bw reads x[2u + bh − pad][2v + bw − pad]; reduction index p·c_in + c.
    let views = [0, 1, 2, 3].map(|p| View {
        step: 2,
        r0: (p / 2) as isize - ph,
        c0: (p % 2) as isize - pw,
    });
    let u = filter_transform(g.c_out, 4 * ci, kern.mr, |o, k, a, b| {
        let (p, c) = (k / ci, k % ci);
        w[((o * ci + c) * 4 + 2 * a + p / 2) * 4 + 2 * b + p % 2]
    });
    let job = Job {
        views: views.to_vec(),
        out: Out {
            step: 1,
            r0: 0,
            c0: 0,
            rows: g.h_out,
            cols: g.w_out,
        },
        u,
    };
    let planes = Planes {
        n: g.n,
        src: (ci, g.h, g.w),
        dst: (g.c_out, g.h_out, g.w_out),
    };
    run(x, &[job], bias, y, &planes, kern, tf);
}

/// [`conv2d_backward_data`] with a given micro-kernel and transform build.
pub fn backward_data_with(
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
    g: &Conv2dGeom,
    kern: &MicroKernel,
    tf: Transform,
) {
    g.assert_buffers("conv2d_backward_data", [dx.len(), w.len(), dy.len()]);
    assert!(
        suits(g),
        "winograd_s2 conv2d_backward_data: needs a 4x4 stride-2 kernel, got {g:?}"
    );
    let (ci, co) = (g.c_in, g.c_out);
    // Output phase (eh, ew): dx rows i = 2m + eh − pad for m in m_lo..m_hi (and the same for
    // columns); z[m] = Σ_a' w[2(1 − a') + e]·dy[m − 1 + a'].
    let span = |e: usize, pad: usize, len: usize| {
        let lo = (pad + 1 - e) / 2; // ⌈(pad − e) / 2⌉, pad − e ≥ −1
        let hi = (len + pad + 1 - e) / 2; // ⌈(len + pad − e) / 2⌉
        (lo, hi.saturating_sub(lo))
    };
    let jobs: Vec<Job> = (0..4)
        .into_par_iter()
        .map(|p| {
            let (eh, ew) = (p / 2, p % 2);
            let (mh, rows) = span(eh, g.pad[0], g.h);
            let (mw, cols) = span(ew, g.pad[1], g.w);
            let u = filter_transform(ci, co, kern.mr, |o, k, a, b| {
                w[((k * ci + o) * 4 + 2 * (1 - a) + eh) * 4 + 2 * (1 - b) + ew]
            });
            Job {
                views: vec![View {
                    step: 1,
                    r0: mh as isize - 1,
                    c0: mw as isize - 1,
                }],
                out: Out {
                    step: 2,
                    r0: 2 * mh + eh - g.pad[0],
                    c0: 2 * mw + ew - g.pad[1],
                    rows,
                    cols,
                },
                u,
            }
        })
        .collect();
    let planes = Planes {
        n: g.n,
        src: (co, g.h_out, g.w_out),
        dst: (ci, g.h, g.w),
    };
    run(dy, &jobs, None, dx, &planes, kern, tf);
}

/// A strided view of an input plane: element `(u, v)` at row `step·u + r0`, column
/// `step·v + c0`, zero outside the plane.
#[derive(Clone, Copy, Debug)]
struct View {
    step: usize,
    r0: isize,
    c0: isize,
}

/// Where a job writes: logical pixel `(r, c)`, `r < rows`, `c < cols`, at row
/// `step·r + r0`, column `step·c + c0` of an output plane.
#[derive(Clone, Copy, Debug)]
struct Out {
    step: usize,
    r0: usize,
    c0: usize,
    rows: usize,
    cols: usize,
}

/// One 2×2 stride-1 convolution of the split: the sum over `views` (reduction index
/// `p·c_src + c` for view `p`, channel `c`) written through `out`, with filters `u` from
/// [`filter_transform`].
struct Job {
    views: Vec<View>,
    out: Out,
    u: Vec<f32>,
}

impl Job {
    /// Tile rows and columns (2×2 output pixels each).
    fn tiles(&self) -> (usize, usize) {
        (self.out.rows.div_ceil(2), self.out.cols.div_ceil(2))
    }
}

/// Batch and the source and destination planes: `(channels, height, width)`.
struct Planes {
    n: usize,
    src: (usize, usize, usize),
    dst: (usize, usize, usize),
}

/// `U[ξ] = G g Gᵀ` for each output `o < outs` and reduction index `k < ks`, the 2×2 filter
/// `g[a][b] = tap(o, k, a, b)`, packed for the micro-kernel: panels of `mr` outputs, each
/// holding its nine `ξ` one after the other, `k`-major:
/// `u[((q·9 + ξ)·ks + k)·mr + r]` is output `q·mr + r` (zero past the last). Panels are
/// transformed in parallel.
fn filter_transform(
    outs: usize,
    ks: usize,
    mr: usize,
    tap: impl Fn(usize, usize, usize, usize) -> f32 + Sync,
) -> Vec<f32> {
    let panels = outs.div_ceil(mr);
    let mut u = vec![0f32; panels * 9 * ks * mr];
    u.par_chunks_mut(9 * ks * mr)
        .enumerate()
        .for_each(|(q, panel)| {
            let live = mr.min(outs - q * mr);
            // k outer, the panel's outputs inner: each (ξ, k) row of mr is written whole.
            for k in 0..ks {
                for r in 0..live {
                    let o = q * mr + r;
                    let g = [
                        [tap(o, k, 0, 0), tap(o, k, 0, 1)],
                        [tap(o, k, 1, 0), tap(o, k, 1, 1)],
                    ];
                    // t = G g (3 × 2), then t Gᵀ (3 × 3).
                    let t = [g[0], [g[0][0] + g[1][0], g[0][1] + g[1][1]], g[1]];
                    for (a, t) in t.iter().enumerate() {
                        for (b, v) in [t[0], t[0] + t[1], t[1]].into_iter().enumerate() {
                            panel[((3 * a + b) * ks + k) * mr + r] = v;
                        }
                    }
                }
            }
        });
    u
}

thread_local! {
    /// A task's block buffers: `V` and `M`.
    static BLOCK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Images per vector: the transforms run sixteen images at a time.
const LANES: usize = 16;

/// The input with sixteen images side by side: for image group `g`, channel `c`, padded
/// row `ρ` and column `γ`, the 16 values (one per image, zero past the batch) at
/// `(((g·c_s + c)·hp + ρ)·wp + γ)·16`. Padded row `ρ` is input row `ρ − top` (zero
/// outside), column `γ` input column `γ − left`.
///
/// This is what lets the transforms vectorise whatever the tile grid: DCGAN's are 2 to 8
/// tiles wide, too short to run along a row, while the batch gives every tile position 16
/// patches of the same shape.
struct Spread {
    buf: crate::scratch::Scratch,
    groups: usize,
    hp: usize,
    wp: usize,
    top: usize,
    left: usize,
}

/// Runs every job over its tiles: blocks of tiles transformed, multiplied and written back,
/// in parallel.
///
/// A job's tiles are numbered position-major with the images innermost:
/// `t = ((ti·tw + tj)·groups + g)·16 + lane` is tile `(ti, tj)` of image `16g + lane`, so
/// every vector of 16 tiles shares one position (tiles of images past the batch are
/// computed from zeros, and never copied back to the output).
fn run(
    x: &[f32],
    jobs: &[Job],
    bias: Option<&[f32]>,
    y: &mut [f32],
    planes: &Planes,
    kern: &MicroKernel,
    tf: Transform,
) {
    if y.is_empty() {
        return;
    }
    let (mr, nr) = (kern.mr, kern.nr);
    let (cs, cd) = (planes.src.0, planes.dst.0);
    let sp = spread(x, jobs, planes, tf);
    let groups = sp.groups;
    let ks_max = jobs.iter().map(|j| j.views.len() * cs).max().unwrap_or(0);
    // Blocks are whole vectors and whole panels.
    let unit = LANES * nr / gcd(LANES, nr);
    // One ξ of a block's V, ks·tiles floats, stays in L2 while every output panel is
    // multiplied by it: about 384 KiB. The larger the block, the fewer times the filters U
    // (9·c_d·ks floats, megabytes for wide layers) stream through the cache...
    let fit = ((384 << 10) / (4 * ks_max.max(1)) / unit).max(1) * unit;
    // ... but at least two blocks per thread, so the threads share the work evenly.
    let count = |j: &Job| j.tiles().0 * j.tiles().1 * groups * LANES;
    let total: usize = jobs.iter().map(count).sum();
    let tasks = 2 * rayon::current_num_threads().max(1);
    let per = fit
        .min(total.div_ceil(tasks).div_ceil(unit) * unit)
        .min((MAX_TILES / unit).max(1) * unit);
    let blocks: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(jb, j)| {
            let all = count(j);
            (0..all)
                .step_by(per)
                .map(move |t0| (jb, t0, per.min(all - t0)))
        })
        .collect();
    // The output, spread like the input: [group][channel][row][column][16 images].
    let (hd, wd) = (planes.dst.1, planes.dst.2);
    let mut ys = crate::scratch::Scratch::take(groups * cd * hd * wd * LANES);
    let out = SendPtr(ys.as_mut_ptr());
    let panels = cd.div_ceil(mr);
    blocks.par_iter().for_each(|&(jb, t0, count)| {
        let job = &jobs[jb];
        let ks = job.views.len() * cs;
        BLOCK.with(|bufs| {
            let mut bufs = bufs.borrow_mut();
            let (v, m) = &mut *bufs;
            let tp = count.div_ceil(nr);
            let ldm = tp * nr;
            // V: for each ξ, panels of nr tiles, k-major (the packed B layout). A last
            // panel's spare tiles hold whatever was there: they only reach M's spare
            // columns, which nothing reads.
            v.resize(9 * tp * ks * nr, 0.0);
            // M[ξ]: panels·mr rows (the last panel's spare rows are scratch) of ldm.
            m.resize(9 * panels * mr * ldm, 0.0);
            let b = BlockAt {
                job,
                t0,
                count,
                ks,
                tp,
                nr,
            };
            match tf {
                Transform::Best => input_transform(&sp, &b, cs, v),
                Transform::Portable => input_transform_with(&sp, &b, cs, v),
            }
            let u_at = |xi: usize, pi: usize| &job.u[((pi * 9 + xi) * ks) * mr..][..ks * mr];
            super::winograd::products(kern, 9, ks, panels, tp, u_at, v, m);
            // SAFETY: `out` holds the spread output of the geometry the jobs were made
            // from; the block's output pixels are its own: jobs' outputs interleave without
            // sharing a pixel, and tiles do not overlap.
            unsafe { output_transform(m, panels * mr, ldm, bias, &b, planes, out, tf) };
        });
    });
    unspread(&ys, y, planes, tf);
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Builds the [`Spread`] input, padded so that every job's patches lie inside it.
fn spread(x: &[f32], jobs: &[Job], planes: &Planes, tf: Transform) -> Spread {
    let (cs, h, w) = planes.src;
    let views = || {
        jobs.iter()
            .flat_map(|j| j.views.iter().map(move |v| (j, v)))
    };
    let top = views()
        .map(|(_, v)| (-v.r0).max(0) as usize)
        .max()
        .unwrap_or(0);
    let left = views()
        .map(|(_, v)| (-v.c0).max(0) as usize)
        .max()
        .unwrap_or(0);
    // The last patch row of a job: view row 2·th, at step·2·th + r0 (+ top when padded).
    let last = |(_, v): (&Job, &View), tiles: usize, off: isize, pad: usize| {
        ((v.step * 2 * tiles) as isize + off + pad as isize).max(0) as usize + 1
    };
    let hp = views()
        .map(|(j, v)| last((j, v), j.tiles().0, v.r0, top))
        .max()
        .unwrap_or(1);
    let wp = views()
        .map(|(j, v)| last((j, v), j.tiles().1, v.c0, left))
        .max()
        .unwrap_or(1);
    let groups = planes.n.div_ceil(LANES);
    let mut buf = crate::scratch::Scratch::take(groups * cs * hp * wp * LANES);
    let geo = SpreadGeo {
        n: planes.n,
        cs,
        h,
        w,
        wp,
        top,
        left,
    };
    buf.par_chunks_mut(hp * wp * LANES)
        .enumerate()
        .for_each(|(gc, dst)| {
            let (g, c) = (gc / cs, gc % cs);
            match tf {
                #[cfg(target_arch = "x86_64")]
                Transform::Best
                    if super::lanes::PackIsa::best() == super::lanes::PackIsa::Avx512 =>
                {
                    // SAFETY: the CPU has AVX-512F.
                    unsafe { x86::spread_plane(x, &geo, g, c, dst) }
                }
                _ => spread_plane_with::<super::lanes::Portable>(x, &geo, g, c, dst),
            }
        });
    Spread {
        buf,
        groups,
        hp,
        wp,
        top,
        left,
    }
}

/// The shapes [`spread_plane_with`] moves between.
struct SpreadGeo {
    n: usize,
    cs: usize,
    h: usize,
    w: usize,
    wp: usize,
    top: usize,
    left: usize,
}

/// One padded plane of the [`Spread`] input: channel `c` of image group `g`, with
/// 16 × 16 transposes (16 images' rows in, 16 columns of 16 images out).
#[inline(always)]
fn spread_plane_with<L: super::lanes::Lanes>(
    x: &[f32],
    s: &SpreadGeo,
    g: usize,
    c: usize,
    dst: &mut [f32],
) {
    let live = (s.n - g * LANES).min(LANES);
    let plane = s.h * s.w;
    // Input columns that land inside the padded row.
    let cols = s.w.min(s.wp.saturating_sub(s.left));
    for (rho, row) in dst.chunks_exact_mut(s.wp * LANES).enumerate() {
        let r = rho as isize - s.top as isize;
        if r < 0 || r as usize >= s.h || cols == 0 {
            row.fill(0.0);
            continue;
        }
        row[..s.left * LANES].fill(0.0);
        row[(s.left + cols) * LANES..].fill(0.0);
        for c0 in (0..cols).step_by(16) {
            let mut src = [x.as_ptr(); 16];
            for (l, p) in src.iter_mut().enumerate().take(live) {
                *p = x[((g * LANES + l) * s.cs + c) * plane + r as usize * s.w + c0..].as_ptr();
            }
            let d = &mut row[(s.left + c0) * LANES..];
            let n = (cols - c0).min(16);
            assert!(d.len() >= n * LANES);
            // SAFETY: each of the first `live` rows has n ≤ 16 readable floats from its
            // address (inside x's row r), and d holds the n × 16 block written.
            unsafe { L::transpose_rows(&src, live, n, d.as_mut_ptr(), LANES, LANES) };
        }
    }
}

/// A block of one job's tiles, as the transforms see it: tiles `t0..t0 + count`, reduction
/// depth `ks`, `tp` panels of `nr` tiles.
struct BlockAt<'a> {
    job: &'a Job,
    t0: usize,
    count: usize,
    ks: usize,
    tp: usize,
    nr: usize,
}

/// `V[ξ] = (Bᵀ d B)[ξ]` for the block's tiles and every reduction index `k = p·c_s + c`,
/// `d` the tile's 3×3 patch of channel `c` through view `p`, into
/// `v[((ξ·tp + i / nr)·ks + k)·nr + i % nr]` for block tile `i`: `B d` along the patch
/// rows (`(d₀ − d₁, d₁, d₂ − d₁)`), then the same down the columns. Sixteen tiles (one
/// position, sixteen images) at a time; [`x86::input_transform`] is the same with AVX-512
/// vectors.
fn input_transform_with(sp: &Spread, b: &BlockAt, cs: usize, v: &mut [f32]) {
    each_patch(sp, b, cs, |i, k, d| {
        let mut t = [[[0f32; LANES]; 3]; 3];
        for r in 0..3 {
            for l in 0..LANES {
                let (d0, d1, d2) = (d(r, 0)[l], d(r, 1)[l], d(r, 2)[l]);
                t[r][0][l] = d0 - d1;
                t[r][1][l] = d1;
                t[r][2][l] = d2 - d1;
            }
        }
        for bb in 0..3 {
            for l in 0..LANES {
                let col = [
                    t[0][bb][l] - t[1][bb][l],
                    t[1][bb][l],
                    t[2][bb][l] - t[1][bb][l],
                ];
                for (a, val) in col.into_iter().enumerate() {
                    let i = i + l;
                    v[(((3 * a + bb) * b.tp + i / b.nr) * b.ks + k) * b.nr + i % b.nr] = val;
                }
            }
        }
    });
}

/// Calls `f(i, k, d)` for each vector of the block's tiles (block tiles `i..i + 16`) and
/// reduction index `k`, where `d(r, c)` is the patch element `(r, c)` for the sixteen
/// images: 16 contiguous floats of the spread input.
#[inline(always)]
fn each_patch<'a>(
    sp: &'a Spread,
    b: &BlockAt,
    cs: usize,
    mut f: impl FnMut(usize, usize, &dyn Fn(usize, usize) -> &'a [f32; LANES]),
) {
    let tw = b.job.tiles().1;
    let (hp, wp) = (sp.hp, sp.wp);
    for w in (b.t0 / LANES)..(b.t0 + b.count) / LANES {
        let (pos, g) = (w / sp.groups, w % sp.groups);
        let (ti, tj) = (pos / tw, pos % tw);
        for (p, view) in b.job.views.iter().enumerate() {
            // The patch's padded rows and columns (inside the spread input by its padding).
            let at = |q: usize, t: usize, off: isize, pad: usize| {
                ((view.step * (2 * t + q)) as isize + off + pad as isize) as usize
            };
            let rows = [0, 1, 2].map(|r| at(r, ti, view.r0, sp.top));
            let cols = [0, 1, 2].map(|c| at(c, tj, view.c0, sp.left));
            for c in 0..cs {
                let plane = &sp.buf[(g * cs + c) * hp * wp * LANES..][..hp * wp * LANES];
                let d = |r: usize, q: usize| -> &[f32; LANES] {
                    plane[(rows[r] * wp + cols[q]) * LANES..][..LANES]
                        .try_into()
                        .unwrap()
                };
                f(w * LANES - b.t0, p * cs + c, &d);
            }
        }
    }
}

/// [`input_transform_with`], with AVX-512 vectors where the CPU has them and the panels
/// hold whole vectors.
fn input_transform(sp: &Spread, b: &BlockAt, cs: usize, v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if Isa::best() == Isa::Avx512 && b.nr.is_multiple_of(LANES) {
        // SAFETY: the CPU has AVX-512F, and nr is a multiple of 16.
        return unsafe { x86::input_transform(sp, b, cs, v) };
    }
    input_transform_with(sp, b, cs, v)
}

/// `Y = Aᵀ M A` (plus the bias) for the block's tiles and every output channel, into the
/// spread output `y` (`[group][channel][row][column][16]`) through the job's `out`:
/// `s_a = (Aᵀ M)[a]` down the columns, then `Y[a] = (s_a[0] + s_a[1], s_a[1] + s_a[2])`.
/// `M[ξ]` has `rows` rows of `ldm` block tiles.
///
/// # Safety
/// `y` points at the whole spread output of `planes` (`groups` image groups), the job's
/// `out` maps its tiles inside `planes.dst`, and no other thread writes the block's pixels.
#[allow(clippy::too_many_arguments)]
unsafe fn output_transform(
    m: &[f32],
    rows: usize,
    ldm: usize,
    bias: Option<&[f32]>,
    b: &BlockAt,
    planes: &Planes,
    y: SendPtr,
    tf: Transform,
) {
    let (cd, hd, wd) = planes.dst;
    let groups = planes.n.div_ceil(LANES);
    let o = &b.job.out;
    let tw = b.job.tiles().1;
    for w in (b.t0 / LANES)..(b.t0 + b.count) / LANES {
        let (pos, g) = (w / groups, w % groups);
        let (ti, tj) = (pos / tw, pos % tw);
        let i = w * LANES - b.t0;
        // The tile's pixels that exist, as offsets (in vectors) inside a spread plane.
        let mut pix = [usize::MAX; 4];
        for (e, p) in pix.iter_mut().enumerate() {
            let (r, c) = (2 * ti + e / 2, 2 * tj + e % 2);
            if r < o.rows && c < o.cols {
                *p = (o.step * r + o.r0) * wd + o.step * c + o.c0;
            }
        }
        for co in 0..cd {
            let bias = bias.map_or(0.0, |b| b[co]);
            let mat = |xi: usize| &m[(xi * rows + co) * ldm + i..][..LANES];
            // SAFETY: g < groups and co < c_d: this plane lies inside the spread output.
            let dst = unsafe { y.get().add((g * cd + co) * hd * wd * LANES) };
            // SAFETY: M rows hold the block's tiles; the pixels lie inside this group's
            // channel plane of the spread output (the caller's contract), and the AVX-512
            // form runs only where the CPU has it.
            unsafe {
                match tf {
                    #[cfg(target_arch = "x86_64")]
                    Transform::Best if Isa::best() == Isa::Avx512 => {
                        x86::output_tile(&mat, bias, &pix, dst)
                    }
                    _ => output_tile(&mat, bias, &pix, dst),
                }
            }
        }
    }
}

/// One vector of tiles of [`output_transform`]: `mat(ξ)` the 16 tiles' `M[ξ]`, `pix` the
/// four pixels' vector offsets from `dst` (`usize::MAX`: no such pixel).
///
/// # Safety
/// `dst + 16·p .. + 16` is writable for each pixel `p`.
#[inline(always)]
unsafe fn output_tile<'m>(
    mat: &dyn Fn(usize) -> &'m [f32],
    bias: f32,
    pix: &[usize; 4],
    dst: *mut f32,
) {
    let m: [&[f32]; 9] = std::array::from_fn(mat);
    let mut yv = [[0f32; LANES]; 4];
    for l in 0..LANES {
        let s0 = [m[0][l] + m[3][l], m[1][l] + m[4][l], m[2][l] + m[5][l]];
        let s1 = [m[3][l] + m[6][l], m[4][l] + m[7][l], m[5][l] + m[8][l]];
        yv[0][l] = s0[0] + s0[1] + bias;
        yv[1][l] = s0[1] + s0[2] + bias;
        yv[2][l] = s1[0] + s1[1] + bias;
        yv[3][l] = s1[1] + s1[2] + bias;
    }
    for (e, &p) in pix.iter().enumerate() {
        if p != usize::MAX {
            // SAFETY: the caller's contract.
            unsafe { std::ptr::copy_nonoverlapping(yv[e].as_ptr(), dst.add(p * LANES), LANES) };
        }
    }
}

/// Moves the spread output back to NCHW: per group, channel and row, 16 × 16 transposes
/// (16 columns of 16 images in, 16 images' rows out).
fn unspread(ys: &[f32], y: &mut [f32], planes: &Planes, tf: Transform) {
    let (cd, hd, wd) = planes.dst;
    let plane = hd * wd;
    let dst = SendPtr(y.as_mut_ptr());
    ys.par_chunks(plane * LANES)
        .enumerate()
        .for_each(|(gc, src)| {
            let (g, c) = (gc / cd, gc % cd);
            let live = (planes.n - g * LANES).min(LANES);
            // SAFETY: images 16g..16g + live of y exist; channel c's plane of each is this
            // task's alone.
            unsafe {
                let d = dst.get().add((g * LANES * cd + c) * plane);
                match tf {
                    #[cfg(target_arch = "x86_64")]
                    Transform::Best
                        if super::lanes::PackIsa::best() == super::lanes::PackIsa::Avx512 =>
                    {
                        x86::unspread_plane(src, live, cd * plane, d, wd)
                    }
                    _ => {
                        unspread_plane_with::<super::lanes::Portable>(src, live, cd * plane, d, wd)
                    }
                }
            }
        });
}

/// One spread plane back to `live` images' planes at `dst`, `dst + ld`, ...
///
/// # Safety
/// `dst + l·ld + ..src.len() / 16` is writable for `l < live`.
#[inline(always)]
unsafe fn unspread_plane_with<L: super::lanes::Lanes>(
    src: &[f32],
    live: usize,
    ld: usize,
    dst: *mut f32,
    wd: usize,
) {
    for (r, row) in src.chunks_exact(wd * LANES).enumerate() {
        for c0 in (0..wd).step_by(16) {
            let n = (wd - c0).min(16);
            // SAFETY: n columns of 16 floats read inside `row`; lane l's n floats are
            // written at dst + l·ld + r·wd + c0 (the caller's contract).
            unsafe {
                L::transpose(
                    row[c0 * LANES..].as_ptr(),
                    LANES,
                    n,
                    live,
                    dst.add(r * wd + c0),
                    ld,
                    n,
                )
            };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockAt, Spread, SpreadGeo, LANES};
    use std::arch::x86_64::*;

    /// [`super::input_transform_with`] with AVX-512 vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F. (The block's shape is checked: whole vectors of tiles, in
    /// whole panels of a multiple of 16, inside `v`.)
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn input_transform(sp: &Spread, b: &BlockAt, cs: usize, v: &mut [f32]) {
        assert!(b.nr.is_multiple_of(LANES) && 9 * b.tp * b.ks * b.nr <= v.len());
        assert!(b.t0.is_multiple_of(LANES) && b.count.is_multiple_of(LANES));
        assert!(b.count <= b.tp * b.nr && b.ks == b.job.views.len() * cs);
        let vp = v.as_mut_ptr();
        super::each_patch(sp, b, cs, |i, k, d| {
            // SAFETY: each `d(r, c)` is 16 floats.
            let ld = |r, c| unsafe { _mm512_loadu_ps(d(r, c).as_ptr()) };
            let mut t = [[_mm512_setzero_ps(); 3]; 3];
            for (r, t) in t.iter_mut().enumerate() {
                let (d0, d1, d2) = (ld(r, 0), ld(r, 1), ld(r, 2));
                *t = [_mm512_sub_ps(d0, d1), d1, _mm512_sub_ps(d2, d1)];
            }
            for bb in 0..3 {
                let col = [
                    _mm512_sub_ps(t[0][bb], t[1][bb]),
                    t[1][bb],
                    _mm512_sub_ps(t[2][bb], t[1][bb]),
                ];
                for (a, val) in col.into_iter().enumerate() {
                    let at = (((3 * a + bb) * b.tp + i / b.nr) * b.ks + k) * b.nr + i % b.nr;
                    // SAFETY: i % nr + 16 ≤ nr (both multiples of 16), so the 16 floats lie
                    // inside v (checked above).
                    unsafe { _mm512_storeu_ps(vp.add(at), val) };
                }
            }
        });
    }

    /// [`super::output_tile`] with AVX-512 vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F; as [`super::output_tile`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn output_tile<'m>(
        mat: &dyn Fn(usize) -> &'m [f32],
        bias: f32,
        pix: &[usize; 4],
        dst: *mut f32,
    ) {
        // SAFETY: each `mat(ξ)` holds 16 floats.
        let m: [__m512; 9] = std::array::from_fn(|xi| unsafe { _mm512_loadu_ps(mat(xi).as_ptr()) });
        let bias = _mm512_set1_ps(bias);
        let add = |a, b| _mm512_add_ps(a, b);
        let s0 = [add(m[0], m[3]), add(m[1], m[4]), add(m[2], m[5])];
        let s1 = [add(m[3], m[6]), add(m[4], m[7]), add(m[5], m[8])];
        let yv = [
            add(add(s0[0], s0[1]), bias),
            add(add(s0[1], s0[2]), bias),
            add(add(s1[0], s1[1]), bias),
            add(add(s1[1], s1[2]), bias),
        ];
        for (e, &p) in pix.iter().enumerate() {
            if p != usize::MAX {
                // SAFETY: the caller's contract.
                unsafe { _mm512_storeu_ps(dst.add(p * LANES), yv[e]) };
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn spread_plane(
        x: &[f32],
        s: &SpreadGeo,
        g: usize,
        c: usize,
        dst: &mut [f32],
    ) {
        super::spread_plane_with::<crate::conv::lanes::Avx512>(x, s, g, c, dst)
    }

    /// # Safety
    /// The CPU has AVX-512F; as [`super::unspread_plane_with`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn unspread_plane(
        src: &[f32],
        live: usize,
        ld: usize,
        dst: *mut f32,
        wd: usize,
    ) {
        // SAFETY: the caller's contract, passed on.
        unsafe { super::unspread_plane_with::<crate::conv::lanes::Avx512>(src, live, ld, dst, wd) }
    }
}
