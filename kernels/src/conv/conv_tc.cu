// Rungs 3 and 4 of the GPU convolution ladder: tensor-core implicit GEMM. Needs sm_80 or newer
// (mma.sync with bf16/tf32, ldmatrix, cp.async); the Rust side never loads it on older devices.
//
// What it adds over the tiled FP32 rung (conv_tiled.cu):
//
// 1. **Packed operands.** A pass first converts its two inputs once, in one kernel each
//    (`tc_pack_*`), from NCHW f32 to NHWC in the compute type — bf16 or f16 (rung 3), or f32
//    rounded to tf32 (rung 4) — with the channel count padded with zeros to a multiple of 8.
//    In NHWC an im2col row is a run of whole pixels, each pixel `cp` contiguous channels, so the
//    main loop fetches 16-byte chunks (8 bf16 or 4 tf32 values) with no index arithmetic per
//    value, and a chunk never straddles two pixels.
// 2. **Tensor cores.** `mma.sync.m16n8k16` (bf16, f16) or `m16n8k8` (tf32): one warp
//    multiplies a 16 × 16 by a 16 × 8 tile in one instruction, f32 accumulation. Fragments come
//    from shared memory with `ldmatrix`, which hands each lane exactly the values the mma
//    expects (the `.trans` form for operands stored M- or N-major).
// 3. **A cp.async pipeline.** Global → shared copies are asynchronous (`cp.async.cg`, 16 bytes,
//    bypassing the registers) and run three stages deep: while the warps multiply tile t, the
//    copies of tiles t+1 and t+2 are in flight. A copy whose source is padding (outside the
//    image, past the end of K) asks for 0 source bytes, which fills its 16 bytes with zeros.
//
// The GEMM of each pass, with m the C row, n the C column, k the sum (all three in the packed
// NHWC layouts; cp/cop are c_in/c_out padded to a multiple of 8, taps = kh·kw):
//
//   forward          C[(img,oh,ow)][co] = Σ_{(i,j,ci)} x[img][ih][iw][ci] · w[co][i][j][ci]
//   backward-data    C[(img,ih,iw)][ci] = Σ_{(i,j,co)} dy[img][oh][ow][co] · w[ci][i][j][co]
//   backward-weight  C[co][(i,j,ci)]    = Σ_{(img,oh,ow)} dy[img][oh][ow][co] · x[img][ih][iw][ci]
//
// Forward and backward-data read both operands K-contiguous (a "row.col" product, ldmatrix
// without .trans). Backward-weight sums over pixels, and neither operand is contiguous along
// pixels, so its tiles are stored M-/N-major and read with ldmatrix.trans (tf32, whose 32-bit
// values ldmatrix cannot transpose, reads those fragments with plain shared loads). Its K, every
// output pixel of the batch, is long and its C small, so K is split over gridDim.z and the
// partials are summed in a fixed order by `tc_weight_sum`.
//
// Tiling: a block of 8 warps computes a 128 × 128 tile of C; warp w owns rows 64·(w % 2) …
// and columns 32·(w / 2) …, i.e. 4 × 4 mma tiles of 16 × 8, 64 f32 accumulators per lane. K
// advances 64 bytes per tile (32 bf16/f16 or 16 tf32 values = 2 mma k-steps).
//
// Where the time goes (to be measured with ncu on a GPU): the packs are separate passes over
// memory (their reads are strided in NCHW); backward-data of a strided layer multiplies the
// zeros of the taps that land between outputs (3 of 4 for stride 2); layers with 3 channels pad
// them to 8 and waste most of a 128-wide tile.

#define TC_BM 128
#define TC_BN 128
#define TC_THREADS 256
#define TC_STAGES 3
#define TC_ROW_BYTES 64                   // K bytes per tile row
#define TC_KPITCH 80                      // a K-major row in shared memory: 64 bytes + 16 padding
#define TC_OPERAND_BYTES (128 * TC_KPITCH)  // one operand's tile in one stage (≥ the MN-major ones)
#define TC_STAGE_BYTES (2 * TC_OPERAND_BYTES)
#define TC_SMEM_BYTES (TC_STAGES * TC_STAGE_BYTES)  // 61440: launched with that much dynamic smem

// The K-major pitch (80 bytes) puts the 8 rows an ldmatrix reads at 8 distinct 16-byte bank
// groups (80·r mod 128 = 0, 80, 32, 112, 64, 16, 96, 48), so it never conflicts. The MN-major
// pitch is 128 values + 16 bytes for the same reason (272: 16·r mod 128 for the 8 rows of a
// .trans read). tf32 reads its MN-major fragments with plain 32-bit loads, lane (g, q) at word
// pitch/4·q + g: 128 values + 32 bytes (544) put those at bank 8q + g, all 32 distinct.
__device__ __forceinline__ u32 mn_pitch(u32 esize) { return 128 * esize + (esize == 4 ? 32 : 16); }

// ---- the compute types: storage, conversion from f32, and the mma

struct Bf16 {
    typedef unsigned short T;
    static __device__ __forceinline__ T from_f32(float f) {
        T h;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
    // d += a·b over a 16 × 16 × 8 step.
    static __device__ __forceinline__ void mma(float d[4], const u32 a[4], const u32 b[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

struct F16 {
    typedef unsigned short T;
    static __device__ __forceinline__ T from_f32(float f) {
        T h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
    static __device__ __forceinline__ void mma(float d[4], const u32 a[4], const u32 b[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

// tf32 values are f32 whose low 13 mantissa bits are zero; the pack rounds to nearest (ties
// away, as cvt.rna does), so the mma's own truncation has nothing left to cut.
struct Tf32 {
    typedef float T;
    static __device__ __forceinline__ T from_f32(float f) {
        u32 u;
        asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(f));
        return __uint_as_float(u);
    }
    // d += a·b over a 16 × 8 × 8 step.
    static __device__ __forceinline__ void mma(float d[4], const u32 a[4], const u32 b[2]) {
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

// ---- packing: dst[(b·P + p)·cp + c] = c < C ? convert(src[b·sb + p·sp + c·sc]) : 0
//
// One thread per destination value, c fastest, so the writes are contiguous. NCHW → NHWC is
// (b = image, p = pixel, c = channel, sb = C·H·W, sp = 1, sc = H·W); a weight
// [co][ci][kh][kw] → [co][i][j][ci] is (b = co, p = tap, c = ci, sb = ci·taps, sp = 1, sc = taps).

template <class E>
__device__ void pack(const float* src, typename E::T* dst, u64 B, u64 P, u64 C, u64 cp, u64 sb,
                     u64 sp, u64 sc) {
    FOR_EACH(i, B * P * cp) {
        u64 c = i % cp, bp = i / cp, p = bp % P, b = bp / P;
        dst[i] = E::from_f32(c < C ? src[b * sb + p * sp + c * sc] : 0.0f);
    }
}

extern "C" __global__ void tc_pack_bf16(const float* src, unsigned short* dst, u64 B, u64 P,
                                        u64 C, u64 cp, u64 sb, u64 sp, u64 sc) {
    pack<Bf16>(src, dst, B, P, C, cp, sb, sp, sc);
}
extern "C" __global__ void tc_pack_f16(const float* src, unsigned short* dst, u64 B, u64 P,
                                       u64 C, u64 cp, u64 sb, u64 sp, u64 sc) {
    pack<F16>(src, dst, B, P, C, cp, sb, sp, sc);
}
extern "C" __global__ void tc_pack_tf32(const float* src, float* dst, u64 B, u64 P, u64 C,
                                        u64 cp, u64 sb, u64 sp, u64 sc) {
    pack<Tf32>(src, dst, B, P, C, cp, sb, sp, sc);
}

// ---- the asynchronous-copy and fragment-load primitives

__device__ __forceinline__ u32 smem_addr(const void* p) {
    return (u32)__cvta_generic_to_shared(p);
}

// Copies 16 bytes from global `src` to shared `dst` without passing through registers; when
// `valid` is false it reads nothing and writes 16 zero bytes (src-size 0). `src` must still be a
// valid address, so callers pass the tensor's base for padding.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

// Four 8 × 8 matrices of 16-bit values: lanes 8q … 8q+7 give the row addresses of matrix q, and
// every lane receives, of each matrix, the two values in row lane/4, columns 2·(lane%4) and +1
// (with .trans: row and column swapped) — the register layout of an mma fragment.
__device__ __forceinline__ void ldmatrix_x4(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(u32 r[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// ---- the passes: where each 16-byte chunk of a tile comes from
//
// A pass gives, for operand A and B, the global address of the chunk that starts at tile
// coordinates (mn, k) (the C row or column, and the K index, both in elements), or null for
// zeros. K-major operands are fetched along k in chunks, MN-major ones along mn.

struct TcGeom {
    ConvGeom g;
    u32 cp, cop;  // c_in and c_out padded to a multiple of 8
    u64 M, N, K;  // the GEMM (K in elements of the packed layout)
    u64 tiles_per_split;
};
static_assert(sizeof(TcGeom) == 104, "TcGeom must match conv::cuda::TcGeom");

template <class E>
struct TcForward {
    typedef typename E::T T;
    static const bool A_KMAJOR = true, B_KMAJOR = true;
    const TcGeom& t;
    const T *x, *w;
    __device__ const T* base_a() const { return x; }
    __device__ const T* base_b() const { return w; }
    __device__ const T* a(u64 m, u64 k) const {
        const ConvGeom& g = t.g;
        if (m >= t.M || k >= t.K) return nullptr;
        u64 plane = (u64)g.h_out * g.w_out, img = m / plane;
        u32 oh = (m % plane) / g.w_out, ow = m % g.w_out;
        u32 tap = k / t.cp, c = k % t.cp, ih, iw;
        if (!tap_input(g, oh, ow, tap / g.kw, tap % g.kw, &ih, &iw)) return nullptr;
        return x + ((img * g.h + ih) * g.w + iw) * t.cp + c;
    }
    __device__ const T* b(u64 n, u64 k) const {
        return n < t.N && k < t.K ? w + n * t.K + k : nullptr;
    }
};

template <class E>
struct TcBackwardData {
    typedef typename E::T T;
    static const bool A_KMAJOR = true, B_KMAJOR = true;
    const TcGeom& t;
    const T *dy, *w;
    __device__ const T* base_a() const { return dy; }
    __device__ const T* base_b() const { return w; }
    __device__ const T* a(u64 m, u64 k) const {
        const ConvGeom& g = t.g;
        if (m >= t.M || k >= t.K) return nullptr;
        u64 plane = (u64)g.h * g.w, img = m / plane;
        u32 ih = (m % plane) / g.w, iw = m % g.w;
        u32 tap = k / t.cop, c = k % t.cop, oh, ow;
        if (!tap_output(g, ih, iw, tap / g.kw, tap % g.kw, &oh, &ow)) return nullptr;
        return dy + ((img * g.h_out + oh) * g.w_out + ow) * t.cop + c;
    }
    __device__ const T* b(u64 n, u64 k) const {
        return n < t.N && k < t.K ? w + n * t.K + k : nullptr;
    }
};

template <class E>
struct TcBackwardWeight {
    typedef typename E::T T;
    static const bool A_KMAJOR = false, B_KMAJOR = false;
    const TcGeom& t;
    const T *x, *dy;
    __device__ const T* base_a() const { return dy; }
    __device__ const T* base_b() const { return x; }
    // A[co][p] = dy[p][co]: the chunk holds 8 (or 4) channels of output pixel k.
    __device__ const T* a(u64 m, u64 k) const {
        return m < t.cop && k < t.K ? dy + k * t.cop + m : nullptr;
    }
    // B[(i,j,ci)][p] = x at the input pixel output pixel k reads under tap (i, j).
    __device__ const T* b(u64 n, u64 k) const {
        const ConvGeom& g = t.g;
        if (n >= t.N || k >= t.K) return nullptr;
        u64 plane = (u64)g.h_out * g.w_out, img = k / plane;
        u32 oh = (k % plane) / g.w_out, ow = k % g.w_out;
        u32 tap = n / t.cp, c = n % t.cp, ih, iw;
        if (!tap_input(g, oh, ow, tap / g.kw, tap % g.kw, &ih, &iw)) return nullptr;
        return x + ((img * g.h + ih) * g.w + iw) * t.cp + c;
    }
};

// Queues the copies of one operand's tile: 512 chunks of 16 bytes, two per thread. K-major:
// 128 rows (mn) × 4 chunks (k). MN-major: 64/esize rows (k) × 128·esize/16 chunks (mn).
template <bool KMAJOR, class T, class F>
__device__ __forceinline__ void load_tile(unsigned char* tile, u64 mn0, u64 k0, F src,
                                          const T* any) {
    const u32 per_chunk = 16 / sizeof(T);
#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        u32 idx = threadIdx.x + TC_THREADS * r;
        const T* p;
        unsigned char* dst;
        if (KMAJOR) {
            u32 row = idx / 4, ch = idx % 4;
            p = src(mn0 + row, k0 + ch * per_chunk);
            dst = tile + row * TC_KPITCH + ch * 16;
        } else {
            u32 per_row = 128 * sizeof(T) / 16, row = idx / per_row, ch = idx % per_row;
            p = src(mn0 + ch * per_chunk, k0 + row);
            dst = tile + row * mn_pitch(sizeof(T)) + ch * 16;
        }
        cp_async16(dst, p ? p : any, p != nullptr);
    }
}

// The A fragment (16 rows of C × one k-step) of rows mrow … mrow+15, k-step ks, in mma order.
template <bool KMAJOR, class T>
__device__ __forceinline__ void load_a(u32 a[4], const unsigned char* tile, u32 mrow, u32 ks) {
    u32 lane = threadIdx.x % 32;
    if (KMAJOR) {
        // Matrices: (rows 0–7, k lo), (rows 8–15, k lo), (rows 0–7, k hi), (rows 8–15, k hi).
        ldmatrix_x4(a, tile + (mrow + lane % 16) * TC_KPITCH + ks * 32 + (lane / 16) * 16);
    } else if (sizeof(T) == 2) {
        // Stored [k][m]: the same four matrices, each read transposed.
        u32 k = ks * 16 + lane % 8 + (lane / 16) * 8, m = mrow + ((lane / 8) % 2) * 8;
        ldmatrix_x4_trans(a, tile + k * mn_pitch(2) + m * 2);
    } else {
        // tf32 stored [k][m]: lane holds (row g, k q), (g+8, q), (g, q+4), (g+8, q+4).
        u32 g = lane / 4, q = lane % 4, p = mn_pitch(4);
        const unsigned char* base = tile + (ks * 8 + q) * p + (mrow + g) * 4;
        a[0] = *(const u32*)base;
        a[1] = *(const u32*)(base + 8 * 4);
        a[2] = *(const u32*)(base + 4 * p);
        a[3] = *(const u32*)(base + 4 * p + 8 * 4);
    }
}

// The B fragments of two 8-column mma tiles, columns ncol … ncol+15, k-step ks:
// b[0..2] for columns ncol …, b[2..4] for ncol+8 ….
template <bool KMAJOR, class T>
__device__ __forceinline__ void load_b(u32 b[4], const unsigned char* tile, u32 ncol, u32 ks) {
    u32 lane = threadIdx.x % 32;
    if (KMAJOR) {
        // Matrices: (cols 0–7, k lo), (cols 0–7, k hi), (cols 8–15, k lo), (cols 8–15, k hi).
        u32 n = ncol + lane % 8 + (lane / 16) * 8;
        ldmatrix_x4(b, tile + n * TC_KPITCH + ks * 32 + ((lane / 8) % 2) * 16);
    } else if (sizeof(T) == 2) {
        u32 k = ks * 16 + lane % 8 + ((lane / 8) % 2) * 8, n = ncol + (lane / 16) * 8;
        ldmatrix_x4_trans(b, tile + k * mn_pitch(2) + n * 2);
    } else {
        // tf32 stored [k][n]: lane holds (k q, col g) and (k q+4, col g) per 8-column tile.
        u32 g = lane / 4, q = lane % 4, p = mn_pitch(4);
        const unsigned char* base = tile + (ks * 8 + q) * p + (ncol + g) * 4;
        b[0] = *(const u32*)base;
        b[1] = *(const u32*)(base + 4 * p);
        b[2] = *(const u32*)(base + 8 * 4);
        b[3] = *(const u32*)(base + 4 * p + 8 * 4);
    }
}

// The main loop of every pass: C tile (blockIdx.x, blockIdx.y) over K tiles
// [z·tiles_per_split, …) of this block's split z = blockIdx.z, into acc[mi][nj][4], the mma
// accumulator of the 16 × 8 tile (mi, nj) of this warp: lane holds rows g and g+8, columns
// 2q and 2q+1 (g = lane/4, q = lane%4).
template <class E, class Pass>
__device__ void tc_main_loop(const Pass& pass, float acc[4][4][4]) {
    typedef typename E::T T;
    extern __shared__ __align__(128) unsigned char smem[];
    const TcGeom& t = pass.t;
    const u32 tile_k = TC_ROW_BYTES / sizeof(T);  // elements of K per tile
    u64 m0 = (u64)blockIdx.x * TC_BM, n0 = (u64)blockIdx.y * TC_BN;
    u64 k_tiles = (t.K + tile_k - 1) / tile_k;
    u64 kt0 = (u64)blockIdx.z * t.tiles_per_split;
    u64 nt = kt0 < k_tiles ? min(t.tiles_per_split, k_tiles - kt0) : 0;
    auto load_stage = [&](u64 it) {
        unsigned char* st = smem + (it % TC_STAGES) * TC_STAGE_BYTES;
        u64 k0 = (kt0 + it) * tile_k;
        load_tile<Pass::A_KMAJOR, T>(st, m0, k0, [&](u64 mn, u64 k) { return pass.a(mn, k); },
                                     pass.base_a());
        load_tile<Pass::B_KMAJOR, T>(st + TC_OPERAND_BYTES, n0, k0,
                                     [&](u64 mn, u64 k) { return pass.b(mn, k); }, pass.base_b());
    };

    // Prologue: the first STAGES−1 tiles in flight, one commit group each (empty groups keep
    // the count uniform when there are fewer tiles).
    for (u32 s = 0; s < TC_STAGES - 1; ++s) {
        if (s < nt) load_stage(s);
        cp_async_commit();
    }
    u32 warp = threadIdx.x / 32, wm = (warp % 2) * 64, wn = (warp / 2) * 32;
    for (u64 it = 0; it < nt; ++it) {
        // Tile `it` has landed once at most STAGES−2 newer groups are pending; the barrier
        // makes every thread's copies visible and says all warps are done with tile it−1,
        // whose stage the next prefetch overwrites.
        cp_async_wait<TC_STAGES - 2>();
        __syncthreads();
        if (it + TC_STAGES - 1 < nt) load_stage(it + TC_STAGES - 1);
        cp_async_commit();

        const unsigned char* st = smem + (it % TC_STAGES) * TC_STAGE_BYTES;
#pragma unroll
        for (u32 ks = 0; ks < 2; ++ks) {
            u32 a[4][4], b[4][2];
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi) load_a<Pass::A_KMAJOR, T>(a[mi], st, wm + 16 * mi, ks);
#pragma unroll
            for (u32 nj = 0; nj < 4; nj += 2) {
                u32 r[4];
                load_b<Pass::B_KMAJOR, T>(r, st + TC_OPERAND_BYTES, wn + 8 * nj, ks);
                b[nj][0] = r[0];
                b[nj][1] = r[1];
                b[nj + 1][0] = r[2];
                b[nj + 1][1] = r[3];
            }
#pragma unroll
            for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
                for (u32 nj = 0; nj < 4; ++nj) E::mma(acc[mi][nj], a[mi], b[nj]);
        }
    }
    cp_async_wait<0>();
}

// Calls f(m, n, v) for each accumulator value of this lane that lies inside C.
template <class F>
__device__ __forceinline__ void tc_epilogue(const TcGeom& t, u64 rows, u64 cols,
                                            float acc[4][4][4], F f) {
    u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    u64 m0 = (u64)blockIdx.x * TC_BM + (warp % 2) * 64 + lane / 4;
    u64 n0 = (u64)blockIdx.y * TC_BN + (warp / 2) * 32 + 2 * (lane % 4);
#pragma unroll
    for (u32 mi = 0; mi < 4; ++mi)
#pragma unroll
        for (u32 nj = 0; nj < 4; ++nj)
#pragma unroll
            for (u32 r = 0; r < 4; ++r) {
                u64 m = m0 + 16 * mi + (r / 2) * 8, n = n0 + 8 * nj + r % 2;
                if (m < rows && n < cols) f(m, n, acc[mi][nj][r]);
            }
}

// ---- the kernels: one per pass and compute type

// y[img][co][oh][ow] = act(bias[co] + C[(img, oh, ow)][co]).
template <class E>
__device__ void tc_forward(const TcGeom& t, const typename E::T* x, const typename E::T* w,
                           const Epilogue& e, float* y) {
    float acc[4][4][4] = {};
    tc_main_loop<E>(TcForward<E>{t, x, w}, acc);
    u64 plane = (u64)t.g.h_out * t.g.w_out, c_out = t.g.c_out;
    tc_epilogue(t, t.M, c_out, acc, [&](u64 m, u64 n, float v) {
        y[((m / plane) * c_out + n) * plane + m % plane] = epilogue(e, n, v);
    });
}

// dx[img][ci][ih][iw] = epilogue(C[(img, ih, iw)][ci]).
template <class E>
__device__ void tc_backward_data(const TcGeom& t, const typename E::T* dy,
                                 const typename E::T* w, const Epilogue& e, float* dx) {
    float acc[4][4][4] = {};
    tc_main_loop<E>(TcBackwardData<E>{t, dy, w}, acc);
    u64 plane = (u64)t.g.h * t.g.w, c_in = t.g.c_in;
    tc_epilogue(t, t.M, c_in, acc, [&](u64 m, u64 n, float v) {
        dx[((m / plane) * c_in + n) * plane + m % plane] = epilogue(e, n, v);
    });
}

// partial[z][co][(i, j, ci)] = this split's C (every column of the padded layout).
template <class E>
__device__ void tc_backward_weight(const TcGeom& t, const typename E::T* x,
                                   const typename E::T* dy, float* partial) {
    float acc[4][4][4] = {};
    tc_main_loop<E>(TcBackwardWeight<E>{t, x, dy}, acc);
    float* out = partial + (u64)blockIdx.z * t.g.c_out * t.N;
    tc_epilogue(t, t.g.c_out, t.N, acc, [&](u64 m, u64 n, float v) { out[m * t.N + n] = v; });
}

#define TC_KERNELS(NAME, E)                                                                     \
    extern "C" __global__ void __launch_bounds__(TC_THREADS)                                    \
        tc_forward_##NAME(TcGeom t, const E::T* x, const E::T* w, Epilogue e, float* y) {       \
        tc_forward<E>(t, x, w, e, y);                                                           \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(TC_THREADS)                                    \
        tc_backward_data_##NAME(TcGeom t, const E::T* dy, const E::T* w, Epilogue e, float* dx) { \
        tc_backward_data<E>(t, dy, w, e, dx);                                                   \
    }                                                                                           \
    extern "C" __global__ void __launch_bounds__(TC_THREADS)                                    \
        tc_backward_weight_##NAME(TcGeom t, const E::T* x, const E::T* dy, float* partial) {    \
        tc_backward_weight<E>(t, x, dy, partial);                                               \
    }

TC_KERNELS(bf16, Bf16)
TC_KERNELS(f16, F16)
TC_KERNELS(tf32, Tf32)

// dw[co][ci][i][j] = Σ_z partial[z][co][(i·kw + j)·cp + ci], z in order (deterministic).
extern "C" __global__ void tc_weight_sum(ConvGeom g, u32 cp, u64 splits, const float* partial,
                                         float* dw) {
    u64 taps = (u64)g.kh * g.kw, n = taps * cp, len = (u64)g.c_out * g.c_in * taps;
    FOR_EACH(i, len) {
        u64 tap = i % taps, ci = (i / taps) % g.c_in, co = i / (taps * g.c_in);
        u64 at = co * n + tap * cp + ci;
        float s = 0.0f;
        for (u64 z = 0; z < splits; ++z) s += partial[z * g.c_out * n + at];
        dw[i] = s;
    }
}
