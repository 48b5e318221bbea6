// Shared by every gantry kernel source: cuda_rt prepends this file to each `.cu` before NVRTC
// compiles it (NVRTC has no include path into the crate).

typedef unsigned long long u64;
typedef unsigned int u32;

// Grid-stride loop: thread t of the grid handles items t, t + gridDim·blockDim, … so a grid of
// any size covers any n (the launcher caps the grid, see cuda_rt::grid_1d).
#define FOR_EACH(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)gridDim.x * blockDim.x)

// A shape and two stride vectors passed by value (cuda_rt::Strides on the Rust side; the same
// layout: rank, 8 dims, then two 8-entry u64 arrays).
#define MAX_RANK 8
struct Strides {
    u32 rank;
    u32 shape[MAX_RANK];
    u64 a[MAX_RANK];
    u64 b[MAX_RANK];
};
// The Rust side asserts the same sizes (kernels/tests/nvrtc.rs), so a layout drift fails to compile.
static_assert(sizeof(Strides) == 168, "Strides must match cuda_rt::Strides");

// The offsets into the two strided operands of row-major element `i` of `s.shape`: peel the
// digits of `i` from the last dimension.
__device__ __forceinline__ void strided_offsets(const Strides& s, u64 i, u64* oa, u64* ob) {
    u64 a = 0, b = 0;
    for (int d = (int)s.rank - 1; d >= 0; --d) {
        u64 k = i % s.shape[d];
        i /= s.shape[d];
        a += k * s.a[d];
        b += k * s.b[d];
    }
    *oa = a;
    *ob = b;
}

// The unary ops, numbered as kernels::elementwise::cuda::unary_code numbers UnaryOp.
enum UnaryCode {
    U_NEG = 0, U_EXP, U_LOG, U_SQRT, U_ABS, U_TANH, U_SIGMOID, U_RELU, U_LEAKY_RELU,
    U_ADD_SCALAR, U_MUL_SCALAR, U_POW_SCALAR
};

// Overflow-free logistic, as the CPU computes it.
__device__ __forceinline__ float sigmoidf(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float unary_apply(int op, float p, float x) {
    switch (op) {
    case U_NEG: return -x;
    case U_EXP: return expf(x);
    case U_LOG: return logf(x);
    case U_SQRT: return sqrtf(x);
    case U_ABS: return fabsf(x);
    case U_TANH: return tanhf(x);
    case U_SIGMOID: return sigmoidf(x);
    case U_RELU: return (x > 0.0f || isnan(x)) ? x : 0.0f;  // NaN passes, as on the CPU
    case U_LEAKY_RELU: return x > 0.0f ? x : x * p;
    case U_ADD_SCALAR: return x + p;
    case U_MUL_SCALAR: return x * p;
    case U_POW_SCALAR: return powf(x, p);
    }
    return 0.0f;
}

// f'(x) given x and y = f(x); the kinks take PyTorch's values (see UnaryOp::derivative).
__device__ __forceinline__ float unary_derivative(int op, float p, float x, float y) {
    switch (op) {
    case U_NEG: return -1.0f;
    case U_EXP: return y;
    case U_LOG: return 1.0f / x;
    case U_SQRT: return 0.5f / y;
    case U_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case U_TANH: return 1.0f - y * y;
    case U_SIGMOID: return y * (1.0f - y);
    case U_RELU: return x > 0.0f ? 1.0f : 0.0f;
    case U_LEAKY_RELU: return x > 0.0f ? 1.0f : p;
    case U_ADD_SCALAR: return 1.0f;
    case U_MUL_SCALAR: return p;
    case U_POW_SCALAR: return p == 0.0f ? 0.0f : p * powf(x, p - 1.0f);
    }
    return 0.0f;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024), in double: the
// reductions here add up to millions of terms. Every thread gets the total.
__device__ double block_sum(double v) {
    __shared__ double partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // `partial` may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    double t = 0.0;
    int warps = blockDim.x >> 5;
    for (int w = 0; w < warps; ++w) t += partial[w];
    return t;
}
