// Optimizer steps, in place.

// One parameter of the fused Adam step (kernels::optim::cuda::AdamSegment): where its values,
// gradient and moments are, and its step's constants (bias corrections folded in on the host).
struct AdamSegment {
    float* param;
    const float* grad;
    u64 moment_offset;  // into the flat m and v buffers
    u64 len;
    float neg_step;     // −lr / (1 − β1^t)
    float bc2_sqrt;     // sqrt(1 − β2^t)
    float one_minus_b1, b2, one_minus_b2, eps, weight_decay;
    float pad;
};
static_assert(sizeof(AdamSegment) == 64, "AdamSegment must match optim::cuda::AdamSegment");

// m ← lerp(m, g, 1 − β1) (as torch.lerp rounds it), v ← β2·v + (1 − β2)·g², then
// p ← p − step·m / (sqrt(v)/bc2 + eps). All parameters in one launch: blockIdx.y picks the
// segment, and the x dimension runs a grid-stride loop over its values.
extern "C" __global__ void adam_fused(const AdamSegment* segs, float* m, float* v) {
    AdamSegment s = segs[blockIdx.y];
    float* ms = m + s.moment_offset;
    float* vs = v + s.moment_offset;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < s.len; i += (u64)gridDim.x * blockDim.x) {
        float g = s.grad[i];
        if (s.weight_decay != 0.0f) g += s.weight_decay * s.param[i];
        float w = s.one_minus_b1, a = ms[i];
        ms[i] = fabsf(w) < 0.5f ? a + w * (g - a) : g - (g - a) * (1.0f - w);
        vs[i] = vs[i] * s.b2 + s.one_minus_b2 * g * g;
        float denom = sqrtf(vs[i]) / s.bc2_sqrt + s.eps;
        s.param[i] += s.neg_step * (ms[i] / denom);
    }
}

// SGD with optional momentum buffer `buf` (null without momentum); `first` starts the buffer.
extern "C" __global__ void sgd(float* p, const float* grad, float* buf, float neg_lr, float wd,
                               float mu, float keep, int nesterov, int first, u64 n) {
    FOR_EACH(i, n) {
        float g = grad[i];
        if (wd != 0.0f) g += wd * p[i];
        if (buf) {
            buf[i] = first ? g : buf[i] * mu + keep * g;
            g = nesterov ? g + mu * buf[i] : buf[i];
        }
        p[i] += neg_lr * g;
    }
}
