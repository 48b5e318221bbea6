// Rung 5 of the GPU convolution ladder: Hopper's warpgroup MMA (sm_90a). cuda_rt prepends
// common.cuh, geom.cuh and conv_tc.cu: this rung keeps rung 3/4's packed NHWC operands, its
// implicit-GEMM passes (TcForward, TcBackwardData: where each 16-byte chunk of a tile comes
// from) and its cp.async copies, and changes how the tensor cores are fed.
//
// What it adds over the mma.sync rungs (conv_tc.cu):
//
// 1. **wgmma.mma_async.** Four warps (a warpgroup, 128 threads) issue one m64n128k16
//    instruction (k8 for tf32) together: a 64 × 128 tile of C per instruction, against 16 × 8
//    for mma.sync. The operands are not loaded into registers at all: each is named by a 64-bit
//    *matrix descriptor*, the shared-memory address of its tile and two strides, and the
//    tensor cores read shared memory themselves. No ldmatrix, no fragment registers: the
//    128 lanes hold only the 64 accumulators each.
// 2. **The canonical layout.** What the descriptor can describe (without swizzling) is a tile
//    of *core matrices*, 8 rows × 16 bytes each, stored as 128 contiguous bytes. A K-major
//    tile of R rows × 64 bytes of K is R/8 × 4 core matrices: chunk (row, c) — row `row`,
//    K bytes 16c … 16c+15 — lives at
//
//        (row / 8) · 512 + c · 128 + (row % 8) · 16
//
//    The descriptor's *leading byte offset* (LBO) is the step between core matrices along K
//    (128), its *stride byte offset* (SBO) the step between groups of 8 rows (512). The
//    cp.async copies write exactly these 16-byte chunks, so the layout costs nothing; the 32
//    lanes of a warp write 512 contiguous bytes (rows 0–7 × 4 chunks), free of bank conflicts.
// 3. **Asynchrony.** wgmma runs in the background: `wgmma.fence` before it (the accumulators
//    are registers other instructions touched), `commit_group` after, `wait_group 0` before
//    the stage it read is overwritten. cp.async writes through the generic proxy and wgmma
//    reads through the async proxy, so every thread fences (`fence.proxy.async.shared::cta`)
//    before the barrier that publishes a stage.
//
// Tiling: a block of two warpgroups computes a 128 × 128 tile of C, warpgroup g rows 64g …
// 64g+63, all 128 columns; 4 stages of 64 bytes of K (16 KiB a stage, 64 KiB in all), the
// copies three tiles ahead of the MMAs.
//
// Only the K-major passes run here (forward and backward-data, and with them a transposed
// convolution's forward); backward-weight's operands are pixel-major, and runs on the mma.sync
// kernel of rung 3/4 (CudaConv::Hopper in kernels::conv::cuda).
//
// Where the time goes (to be measured with ncu on an H100): each warpgroup waits for its own
// MMAs at the end of every K tile (wait_group 0), so the tensor cores idle across the barrier;
// keeping one group in flight needs the copies one stage less far ahead. Without swizzling, the
// tensor cores' reads of a core-matrix column hit the same banks; the 128-byte swizzle (and TMA
// copies that write it) are the next step.

#define WG_BM 128
#define WG_BN 128
#define WG_THREADS 256
#define WG_STAGES 4
#define WG_TILE_BYTES (128 * 64)                      // one operand's tile in one stage
#define WG_STAGE_BYTES (2 * WG_TILE_BYTES)
#define WG_SMEM_BYTES (WG_STAGES * WG_STAGE_BYTES)  // 65536: launched with that much
#define WG_LBO 128                                    // next core matrix along K
#define WG_SBO 512                                    // next 8 rows

// The wgmma code is built for sm_90a alone; other architectures get a stub that traps (the Rust
// side never launches it there). A plain sm_90 build would silently lose it, so it is refused.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "conv_wgmma.cu needs sm_90a on compute capability 9.0 (cuda_rt::compile asks for it)"
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
#define WG_ENABLED 1
#else
#define WG_ENABLED 0
#endif

// The byte offset of chunk (row, c) of a K-major tile in the canonical layout above.
__device__ __forceinline__ u32 wg_chunk(u32 row, u32 c) {
    return (row / 8) * WG_SBO + c * WG_LBO + (row % 8) * 16;
}

// A matrix descriptor without swizzling: bits 0–13 the shared address, 16–29 LBO, 32–45 SBO,
// each in units of 16 bytes; the base offset (49–51) and swizzle mode (62–63) stay 0.
__device__ __forceinline__ u64 wg_desc(const unsigned char* tile) {
    u64 addr = smem_addr(tile);
    return ((addr & 0x3ffff) >> 4) | ((u64)(WG_LBO >> 4) << 16) | ((u64)(WG_SBO >> 4) << 32);
}

#if WG_ENABLED
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wg_wait_all() {
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// The accumulators are written by the tensor cores between an mma_async and its wait, behind
// the compiler's back: this empty asm claims to read and write all 64 of them, so no access
// to them moves across the point where it stands (before the MMAs, after the wait).
__device__ __forceinline__ void wg_pin(float d[64]) {
#pragma unroll
    for (u32 i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The 64 accumulator operands of an m64n128 wgmma, and the instruction's tail: A and B by
// descriptor (%64, %65), D += A·B (scale-d true), no negation (and, for 16-bit types, no
// transposes: both tiles are K-major).
#define WG_D                                                                                    \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,"  \
    "%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45," \
    "%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
#define WG_ACC(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define WG_ACC16(i) WG_ACC(i), WG_ACC(i + 4), WG_ACC(i + 8), WG_ACC(i + 12)
#define WG_ACCS WG_ACC16(0), WG_ACC16(16), WG_ACC16(32), WG_ACC16(48)
#define WG_MMA(TYPES, TAIL)                                                              \
    asm volatile("wgmma.mma_async.sync.aligned." TYPES " " WG_D ", %64, %65, 1, 1, 1" TAIL ";" \
                 : WG_ACCS                                                                        \
                 : "l"(da), "l"(db))

template <class E>
struct Wg;
template <>
struct Wg<Bf16> {
    static __device__ __forceinline__ void mma(float d[64], u64 da, u64 db) {
        WG_MMA("m64n128k16.f32.bf16.bf16", ", 0, 0");
    }
};
template <>
struct Wg<F16> {
    static __device__ __forceinline__ void mma(float d[64], u64 da, u64 db) {
        WG_MMA("m64n128k16.f32.f16.f16", ", 0, 0");
    }
};
template <>
struct Wg<Tf32> {
    static __device__ __forceinline__ void mma(float d[64], u64 da, u64 db) {
        WG_MMA("m64n128k8.f32.tf32.tf32", "");
    }
};
#endif

// Queues the copies of one K-major operand's tile: 128 rows × 4 chunks of 16 bytes, two per
// thread, each to its place in the canonical layout.
template <class T, class F>
__device__ __forceinline__ void wg_load_tile(unsigned char* tile, u64 mn0, u64 k0, F src,
                                             const T* any) {
    const u32 per_chunk = 16 / sizeof(T);
#pragma unroll
    for (u32 r = 0; r < 2; ++r) {
        u32 idx = threadIdx.x + WG_THREADS * r, row = idx / 4, c = idx % 4;
        const T* p = src(mn0 + row, k0 + c * per_chunk);
        cp_async16(tile + wg_chunk(row, c), p ? p : any, p != nullptr);
    }
}

// The main loop: C tile (blockIdx.x, blockIdx.y) over every K tile, into this thread's 64
// accumulators of warpgroup g's 64 × 128 slice: d[4j + r] is row 16·(warp % 4) + lane/4 +
// 8·(r / 2) of the slice, column 8j + 2·(lane % 4) + r % 2.
template <class E, class Pass>
__device__ void wg_main_loop(const Pass& pass, float d[64]) {
#if WG_ENABLED
    typedef typename E::T T;
    extern __shared__ __align__(1024) unsigned char smem[];
    const TcGeom& t = pass.t;
    const u32 tile_k = 64 / sizeof(T);  // elements of K per tile
    u64 m0 = (u64)blockIdx.x * WG_BM, n0 = (u64)blockIdx.y * WG_BN;
    u64 nt = (t.K + tile_k - 1) / tile_k;
    auto load_stage = [&](u64 it) {
        unsigned char* st = smem + (it % WG_STAGES) * WG_STAGE_BYTES;
        u64 k0 = it * tile_k;
        wg_load_tile<T>(st, m0, k0, [&](u64 mn, u64 k) { return pass.a(mn, k); }, pass.base_a());
        wg_load_tile<T>(st + WG_TILE_BYTES, n0, k0, [&](u64 mn, u64 k) { return pass.b(mn, k); },
                        pass.base_b());
    };
    for (u32 s = 0; s < WG_STAGES - 1; ++s) {
        if (s < nt) load_stage(s);
        cp_async_commit();
    }
    u32 g = threadIdx.x / 128;
    for (u64 it = 0; it < nt; ++it) {
        // Tile `it` has landed once at most STAGES−2 newer groups are pending. Each thread
        // hands its copies to the async proxy, and the barrier publishes the whole stage; it
        // also says both warpgroups are done with tile it−1 (each waited for its MMAs), whose
        // stage the next prefetch overwrites.
        cp_async_wait<WG_STAGES - 2>();
        fence_proxy_async();
        __syncthreads();
        if (it + WG_STAGES - 1 < nt) load_stage(it + WG_STAGES - 1);
        cp_async_commit();

        const unsigned char* st = smem + (it % WG_STAGES) * WG_STAGE_BYTES;
        wg_pin(d);
        wg_fence();
#pragma unroll
        for (u32 ks = 0; ks < 2; ++ks) {
            // 32 bytes of K a step: core-matrix columns 2ks and 2ks+1; A from this
            // warpgroup's 8 row groups, B from all 16.
            u64 da = wg_desc(st + g * 8 * WG_SBO + ks * 2 * WG_LBO);
            u64 db = wg_desc(st + WG_TILE_BYTES + ks * 2 * WG_LBO);
            Wg<E>::mma(d, da, db);
        }
        wg_commit();
        wg_wait_all();
        wg_pin(d);
    }
    cp_async_wait<0>();
#else
    __trap();  // never launched: the Rust side runs this rung on compute capability 9.0 only
#endif
}

// Calls f(m, n, v) for each accumulator value of this thread that lies inside C.
template <class F>
__device__ __forceinline__ void wg_epilogue(u64 rows, u64 cols, const float d[64], F f) {
    u32 lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    u64 m0 = (u64)blockIdx.x * WG_BM + (warp / 4) * 64 + (warp % 4) * 16 + lane / 4;
    u64 n0 = (u64)blockIdx.y * WG_BN + 2 * (lane % 4);
#pragma unroll
    for (u32 j = 0; j < 16; ++j)
#pragma unroll
        for (u32 r = 0; r < 4; ++r) {
            u64 m = m0 + 8 * (r / 2), n = n0 + 8 * j + r % 2;
            if (m < rows && n < cols) f(m, n, d[4 * j + r]);
        }
}

// y[img][co][oh][ow] = act(bias[co] + C[(img, oh, ow)][co]).
template <class E>
__device__ void wg_forward(const TcGeom& t, const typename E::T* x, const typename E::T* w,
                           const Epilogue& e, float* y) {
    float d[64] = {};
    wg_main_loop<E>(TcForward<E>{t, x, w}, d);
    u64 plane = (u64)t.g.h_out * t.g.w_out, c_out = t.g.c_out;
    wg_epilogue(t.M, c_out, d, [&](u64 m, u64 n, float v) {
        y[((m / plane) * c_out + n) * plane + m % plane] = epilogue(e, n, v);
    });
}

// dx[img][ci][ih][iw] = epilogue(C[(img, ih, iw)][ci]).
template <class E>
__device__ void wg_backward_data(const TcGeom& t, const typename E::T* dy,
                                 const typename E::T* w, const Epilogue& e, float* dx) {
    float d[64] = {};
    wg_main_loop<E>(TcBackwardData<E>{t, dy, w}, d);
    u64 plane = (u64)t.g.h * t.g.w, c_in = t.g.c_in;
    wg_epilogue(t.M, c_in, d, [&](u64 m, u64 n, float v) {
        dx[((m / plane) * c_in + n) * plane + m % plane] = epilogue(e, n, v);
    });
}

#define WG_KERNELS(NAME, E)                                                                  \
    extern "C" __global__ void __launch_bounds__(WG_THREADS)                                 \
        wg_forward_##NAME(TcGeom t, const E::T* x, const E::T* w, Epilogue e, float* y) {    \
        wg_forward<E>(t, x, w, e, y);                                                        \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(WG_THREADS)                                 \
        wg_backward_data_##NAME(TcGeom t, const E::T* dy, const E::T* w, Epilogue e,         \
                                float* dx) {                                                 \
        wg_backward_data<E>(t, dy, w, e, dx);                                                \
    }

WG_KERNELS(bf16, Bf16)
WG_KERNELS(f16, F16)
WG_KERNELS(tf32, Tf32)
