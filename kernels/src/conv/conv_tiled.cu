// Rung 2 of the GPU convolution ladder: shared-memory tiled implicit GEMM, FP32.
//
// What it adds over the direct rung (conv.cu): every pass is written as one matrix product
// C[M][N] = Σ_k A(m, k) · B(k, n) whose operands are *views* of the tensors (the im2col matrix is
// never built: B(k, n) of the forward pass computes which input pixel it is on the fly). A block
// of 256 threads owns a 64 × 64 tile of C. It walks K in steps of 16: all 256 threads first copy
// the 64 × 16 slice of A and the 16 × 64 slice of B into shared memory (4 values each), then
// every thread reads them from there to update its own 4 × 4 piece of the tile. Each value
// fetched from global memory is so used 64 times instead of once, and each shared-memory read
// feeds 4 multiply-adds. The three passes differ only in their views:
//
//   forward          M = c_out,  N = n·h_out·w_out, K = c_in·kh·kw   A = w,  B = im2col(x)
//   backward-data    M = c_in,   N = n·h·w,         K = c_out·kh·kw  A = wᵀ, B = the dy pixels
//                                                                     each input pixel feeds
//   backward-weight  M = c_out,  N = c_in·kh·kw,    K = n·h_out·w_out A = dy, B = im2col(x)ᵀ
//
// Backward-weight's K (every output pixel of the batch) is long and its M × N small, so its K is
// split over gridDim.z blocks; each writes a partial tile to a workspace and `conv_tiled_sum`
// adds the partials in a fixed order (no atomics, so the result is the same every run).
//
// Where the time goes: the views recompute (b, oh, ow) and (ci, i, j) with integer divisions
// for every value they load, and the loads of B in backward-data and backward-weight are not
// contiguous across threads. The tensor-core rung (conv_tc.cu) packs its operands instead.
//
// NCHW tensors, weight [c_out][c_in][kh][kw], as everywhere else in gantry. ConvGeom and the
// tap helpers come from geom.cuh.

#define TBM 64   // tile rows (M)
#define TBN 64   // tile columns (N)
#define TBK 16   // K per shared-memory step
#define TTHREADS 256

// ---- the three views; each returns 0 outside the matrix, so partial tiles need no special case

struct Forward {
    ConvGeom g;
    const float *x, *w;
    u64 M, N, K;
    __device__ float a(u64 m, u64 k) const { return m < M && k < K ? w[m * K + k] : 0.0f; }
    __device__ float b(u64 k, u64 n) const {
        if (k >= K || n >= N) return 0.0f;
        u32 taps = g.kh * g.kw, ci = k / taps, i = (k % taps) / g.kw, j = k % g.kw;
        u64 plane = (u64)g.h_out * g.w_out, img = n / plane;
        u32 oh = (n % plane) / g.w_out, ow = n % g.w_out, ih, iw;
        if (!tap_input(g, oh, ow, i, j, &ih, &iw)) return 0.0f;
        return x[((img * g.c_in + ci) * g.h + ih) * g.w + iw];
    }
};

struct BackwardData {
    ConvGeom g;
    const float *dy, *w;
    u64 M, N, K;  // M = c_in, N = n·h·w, K = c_out·kh·kw
    __device__ float a(u64 m, u64 k) const {
        if (m >= M || k >= K) return 0.0f;
        u32 taps = g.kh * g.kw, co = k / taps, t = k % taps;
        return w[((u64)co * g.c_in + m) * taps + t];
    }
    __device__ float b(u64 k, u64 n) const {
        if (k >= K || n >= N) return 0.0f;
        u32 taps = g.kh * g.kw, co = k / taps, i = (k % taps) / g.kw, j = k % g.kw;
        u64 plane = (u64)g.h * g.w, img = n / plane;
        u32 ih = (n % plane) / g.w, iw = n % g.w, oh, ow;
        if (!tap_output(g, ih, iw, i, j, &oh, &ow)) return 0.0f;
        return dy[((img * g.c_out + co) * g.h_out + oh) * g.w_out + ow];
    }
};

struct BackwardWeight {
    ConvGeom g;
    const float *x, *dy;
    u64 M, N, K;  // M = c_out, N = c_in·kh·kw, K = n·h_out·w_out
    __device__ float a(u64 m, u64 k) const {
        if (m >= M || k >= K) return 0.0f;
        u64 plane = (u64)g.h_out * g.w_out;
        return dy[((k / plane) * g.c_out + m) * plane + k % plane];
    }
    __device__ float b(u64 k, u64 n) const {
        if (k >= K || n >= N) return 0.0f;
        u32 taps = g.kh * g.kw, ci = n / taps, i = (n % taps) / g.kw, j = n % g.kw;
        u64 plane = (u64)g.h_out * g.w_out, img = k / plane;
        u32 oh = (k % plane) / g.w_out, ow = k % g.w_out, ih, iw;
        if (!tap_input(g, oh, ow, i, j, &ih, &iw)) return 0.0f;
        return x[((img * g.c_in + ci) * g.h + ih) * g.w + iw];
    }
};

// The shared main loop. Block (blockIdx.x, blockIdx.y) owns C[m0 .. m0+64][n0 .. n0+64] with
// n0 = 64·blockIdx.x, m0 = 64·blockIdx.y, over K range [k_begin, k_end). Thread t computes rows
// m0 + 4·(t / 16) + r and columns n0 + 4·(t % 16) + c, r, c in 0..4, into acc[r][c].
template <class V>
__device__ void tiled_main_loop(const V& v, u64 k_begin, u64 k_end, float acc[4][4]) {
    // As is stored k-major ([k][m]) so a thread's 4 rows are one float4 read; +4 keeps the
    // rows 16-byte aligned while shifting banks between k rows.
    __shared__ __align__(16) float As[TBK][TBM + 4];
    __shared__ __align__(16) float Bs[TBK][TBN + 4];
    u32 t = threadIdx.x, tr = t / 16, tc = t % 16;
    u64 m0 = (u64)blockIdx.y * TBM, n0 = (u64)blockIdx.x * TBN;
    for (u64 k0 = k_begin; k0 < k_end; k0 += TBK) {
        // Loads: A's 64 × 16 values as idx = t + 256·r → (m = idx / 16, k = idx % 16), so 16
        // neighbouring threads read 16 neighbouring k of one row (contiguous for w); B's 16 × 64
        // as (k = idx / 64, n = idx % 64), 64 neighbouring n (contiguous pixels in forward).
        for (u32 r = 0; r < 4; ++r) {
            u32 idx = t + TTHREADS * r;
            u32 am = idx / TBK, ak = idx % TBK;
            u64 k = k0 + ak;
            As[ak][am] = k < k_end ? v.a(m0 + am, k) : 0.0f;
            u32 bk = idx / TBN, bn = idx % TBN;
            k = k0 + bk;
            Bs[bk][bn] = k < k_end ? v.b(k, n0 + bn) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (u32 k = 0; k < TBK; ++k) {
            float4 a = *reinterpret_cast<const float4*>(&As[k][4 * tr]);
            float4 b = *reinterpret_cast<const float4*>(&Bs[k][4 * tc]);
            float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (u32 r = 0; r < 4; ++r)
#pragma unroll
                for (u32 c = 0; c < 4; ++c) acc[r][c] += av[r] * bv[c];
        }
        __syncthreads();  // the next step overwrites the tiles
    }
}

// y[img][co][oh][ow] = act(bias[co] + C[co][(img, oh, ow)]).
extern "C" __global__ void __launch_bounds__(TTHREADS)
conv_tiled_forward(ConvGeom g, const float* x, const float* w, Epilogue e, float* y) {
    Forward v{g, x, w, g.c_out, (u64)g.n * g.h_out * g.w_out, (u64)g.c_in * g.kh * g.kw};
    float acc[4][4] = {};
    tiled_main_loop(v, 0, v.K, acc);
    u64 plane = (u64)g.h_out * g.w_out;
    for (u32 r = 0; r < 4; ++r) {
        u64 m = (u64)blockIdx.y * TBM + 4 * (threadIdx.x / 16) + r;
        if (m >= v.M) continue;
        for (u32 c = 0; c < 4; ++c) {
            u64 n = (u64)blockIdx.x * TBN + 4 * (threadIdx.x % 16) + c;
            if (n < v.N) y[((n / plane) * g.c_out + m) * plane + n % plane] = epilogue(e, m, acc[r][c]);
        }
    }
}

// dx[img][ci][ih][iw] = epilogue(C[ci][(img, ih, iw)]).
extern "C" __global__ void __launch_bounds__(TTHREADS)
conv_tiled_backward_data(ConvGeom g, const float* dy, const float* w, Epilogue e, float* dx) {
    BackwardData v{g, dy, w, g.c_in, (u64)g.n * g.h * g.w, (u64)g.c_out * g.kh * g.kw};
    float acc[4][4] = {};
    tiled_main_loop(v, 0, v.K, acc);
    u64 plane = (u64)g.h * g.w;
    for (u32 r = 0; r < 4; ++r) {
        u64 m = (u64)blockIdx.y * TBM + 4 * (threadIdx.x / 16) + r;
        if (m >= v.M) continue;
        for (u32 c = 0; c < 4; ++c) {
            u64 n = (u64)blockIdx.x * TBN + 4 * (threadIdx.x % 16) + c;
            if (n < v.N) dx[((n / plane) * g.c_in + m) * plane + n % plane] = epilogue(e, m, acc[r][c]);
        }
    }
}

// Block z sums K range [z·k_per, (z+1)·k_per) (k_per a multiple of TBK) into
// partial[z][co][ci·kh·kw], the weight's own layout.
extern "C" __global__ void __launch_bounds__(TTHREADS)
conv_tiled_backward_weight(ConvGeom g, const float* x, const float* dy, u64 k_per,
                           float* partial) {
    BackwardWeight v{g, x, dy, g.c_out, (u64)g.c_in * g.kh * g.kw,
                     (u64)g.n * g.h_out * g.w_out};
    u64 k_begin = blockIdx.z * k_per, k_end = min(v.K, k_begin + k_per);
    float acc[4][4] = {};
    if (k_begin < k_end) tiled_main_loop(v, k_begin, k_end, acc);
    float* out = partial + (u64)blockIdx.z * v.M * v.N;
    for (u32 r = 0; r < 4; ++r) {
        u64 m = (u64)blockIdx.y * TBM + 4 * (threadIdx.x / 16) + r;
        if (m >= v.M) continue;
        for (u32 c = 0; c < 4; ++c) {
            u64 n = (u64)blockIdx.x * TBN + 4 * (threadIdx.x % 16) + c;
            if (n < v.N) out[m * v.N + n] = acc[r][c];
        }
    }
}

// out[i] = Σ_z partial[z][i], z in order: the split-K reduction.
extern "C" __global__ void conv_tiled_sum(const float* partial, u64 splits, u64 len, float* out) {
    FOR_EACH(i, len) {
        float s = 0.0f;
        for (u64 z = 0; z < splits; ++z) s += partial[z * len + i];
        out[i] = s;
    }
}
