// Reductions. Sums accumulate in double, as the CPU reference does, so a sum over millions of
// terms loses nothing to the order the threads add in.

// Sum over a set of axes. The input's dimensions split into the kept ones (`kept`: their
// sizes, and in `a` their input strides; row-major over them is the output order) and the
// reduced ones (`red`, likewise). Wide reductions take one block per output element: its
// threads stride over the R reduced elements, then a block sum.
extern "C" __global__ void sum_block(Strides kept, Strides red, const float* x, float* out, u64 R) {
    u64 o = blockIdx.x, base, unused;
    strided_offsets(kept, o, &base, &unused);
    double acc = 0.0;
    for (u64 r = threadIdx.x; r < R; r += blockDim.x) {
        u64 off;
        strided_offsets(red, r, &off, &unused);
        acc += x[base + off];
    }
    double total = block_sum(acc);
    if (threadIdx.x == 0) out[o] = (float)total;
}

// Narrow reductions (R below a block's width) take one thread per output element.
extern "C" __global__ void sum_thread(Strides kept, Strides red, const float* x, float* out,
                                      u64 R, u64 outputs) {
    FOR_EACH(o, outputs) {
        u64 base, off, unused;
        strided_offsets(kept, o, &base, &unused);
        double acc = 0.0;
        for (u64 r = 0; r < R; ++r) {
            strided_offsets(red, r, &off, &unused);
            acc += x[base + off];
        }
        out[o] = (float)acc;
    }
}

// Maximum along one axis of x viewed as [outer, len, inner]: one thread per (outer, inner)
// pair walks the axis. The first maximum wins, and a NaN wins over everything (as on the CPU).
extern "C" __global__ void max_axis(const float* x, float* values, u32* indices, u64 outer,
                                    u64 len, u64 inner) {
    FOR_EACH(t, outer * inner) {
        u64 o = t / inner, j = t % inner;
        const float* row = x + o * len * inner + j;
        u64 best = 0;
        for (u64 i = 1; i < len; ++i) {
            float v = row[i * inner], b = row[best * inner];
            if (!isnan(b) && (v > b || isnan(v))) best = i;
        }
        values[t] = row[best * inner];
        indices[t] = (u32)best;
    }
}

// The gradient goes to the position each maximum came from (dx is zeroed by the launcher).
extern "C" __global__ void max_axis_backward(const float* dy, const u32* indices, float* dx,
                                             u64 outer, u64 len, u64 inner) {
    FOR_EACH(t, outer * inner) {
        u64 o = t / inner, j = t % inner;
        dx[(o * len + indices[t]) * inner + j] = dy[t];
    }
}
