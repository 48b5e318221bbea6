// Strided copies between a view (offset + strides into a buffer) and a contiguous buffer: one
// thread per element of the view, its offset found by peeling the digits of its row-major index
// (strided_offsets; only the `a` strides are used).

extern "C" __global__ void gather_strided(Strides s, u64 offset, const float* src, float* dst, u64 n) {
    FOR_EACH(i, n) {
        u64 at, unused;
        strided_offsets(s, i, &at, &unused);
        dst[i] = src[offset + at];
    }
}

// With `accumulate`, several view elements may alias one buffer element (stride 0 along an
// expanded dimension), so the add is atomic.
extern "C" __global__ void scatter_strided(Strides s, u64 offset, const float* src, float* dst,
                                           int accumulate, u64 n) {
    FOR_EACH(i, n) {
        u64 at, unused;
        strided_offsets(s, i, &at, &unused);
        if (accumulate) atomicAdd(dst + offset + at, src[i]);
        else dst[offset + at] = src[i];
    }
}

// `n` copies of `value` (constants such as a loss's all-ones target, made on the device so that
// a captured graph can hold them).
extern "C" __global__ void fill(float* dst, float value, u64 n) {
    FOR_EACH(i, n) dst[i] = value;
}
