// Elementwise kernels: one thread per element in a grid-stride loop (FOR_EACH), so any length
// runs with the capped 1-D grid of cuda_rt::grid_1d. The op arrives as a code and one scalar
// parameter, so one kernel serves every unary op.

extern "C" __global__ void unary_forward(int op, float p, const float* x, float* y, u64 n) {
    FOR_EACH(i, n) y[i] = unary_apply(op, p, x[i]);
}

extern "C" __global__ void unary_backward(int op, float p, const float* x, const float* y,
                                          const float* dy, float* dx, u64 n) {
    FOR_EACH(i, n) dx[i] = dy[i] * unary_derivative(op, p, x[i], y[i]);
}

// The binary ops, numbered as kernels::elementwise::cuda::binary_code numbers BinaryOp.
__device__ __forceinline__ float binary_apply(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return powf(a, b);
    case 5: return b == 0.0f ? 0.0f : b * powf(a, b - 1.0f);
    case 6: return (a == 0.0f && b >= 0.0f) ? 0.0f : powf(a, b) * logf(a);
    }
    return 0.0f;
}

// Broadcasting: output element i (row-major in s.shape) reads lhs at Σ digit·s.a and rhs at
// Σ digit·s.b, with stride 0 along broadcast dimensions. `same` marks the common case of two
// operands of the output's shape, which skips the digit peeling.
extern "C" __global__ void binary(int op, Strides s, int same, const float* a, const float* b,
                                  float* out, u64 n) {
    FOR_EACH(i, n) {
        u64 oa = i, ob = i;
        if (!same) strided_offsets(s, i, &oa, &ob);
        out[i] = binary_apply(op, a[oa], b[ob]);
    }
}

// PReLU over [n, c, inner] with c weights (or one shared weight: wc = 1).
extern "C" __global__ void prelu_forward(const float* x, const float* w, float* y, u64 c,
                                         u64 inner, u64 wc, u64 len) {
    FOR_EACH(i, len) {
        float a = w[wc == 1 ? 0 : (i / inner) % c];
        y[i] = x[i] > 0.0f ? x[i] : a * x[i];
    }
}

extern "C" __global__ void prelu_backward_input(const float* x, const float* w, const float* dy,
                                                float* dx, u64 c, u64 inner, u64 wc, u64 len) {
    FOR_EACH(i, len) {
        float a = w[wc == 1 ? 0 : (i / inner) % c];
        dx[i] = x[i] > 0.0f ? dy[i] : a * dy[i];
    }
}

// dweight[k] = Σ over the elements weight k scales (x ≤ 0) of x·dy: one block per weight,
// its threads striding over the batch and the channel's plane, then a block sum.
extern "C" __global__ void prelu_backward_weight(const float* x, const float* dy, float* dw,
                                                 u64 n, u64 c, u64 inner, u64 wc) {
    u64 k = blockIdx.x;
    u64 per = (wc == 1) ? n * c * inner : n * inner;
    double acc = 0.0;
    for (u64 t = threadIdx.x; t < per; t += blockDim.x) {
        u64 i = (wc == 1) ? t : ((t / inner) * c + k) * inner + t % inner;
        if (!(x[i] > 0.0f)) acc += (double)x[i] * dy[i];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) dw[k] = (float)total;
}
