// Batch norm over x viewed as [n, c, inner] (inner = h·w): statistics per channel c. The
// statistics and the backward's sums take one block per channel (its threads stride over the
// channel's n·inner values, then block_sum in double); the normalisation is elementwise.
// `act` is the activation fused after the norm (a UnaryCode, or −1 for none).

__device__ __forceinline__ u64 bn_index(u64 t, u64 k, u64 c, u64 inner) {
    return ((t / inner) * c + k) * inner + t % inner;  // t-th value of channel k
}

// Mean and biased variance, in two passes over the channel (mean first, then the squared
// deviations from it), as the reference computes them.
extern "C" __global__ void bn_stats(const float* x, float* mean, float* var, u64 n, u64 c, u64 inner) {
    u64 k = blockIdx.x, count = n * inner;
    double s = 0.0;
    for (u64 t = threadIdx.x; t < count; t += blockDim.x) s += x[bn_index(t, k, c, inner)];
    double mu = block_sum(s) / (double)count;
    double q = 0.0;
    for (u64 t = threadIdx.x; t < count; t += blockDim.x) {
        double d = x[bn_index(t, k, c, inner)] - mu;
        q += d * d;
    }
    double sq = block_sum(q);
    if (threadIdx.x == 0) {
        mean[k] = (float)mu;
        var[k] = (float)(sq / (double)count);
    }
}

__device__ __forceinline__ float bn_normalise(float x, float mean, float inv_std, const float* w,
                                              const float* b, u64 k) {
    float z = (x - mean) * inv_std;
    if (w) z *= w[k];
    if (b) z += b[k];
    return z;
}

// y = act(w·(x − mean)/sqrt(var + eps) + b); w and b may be null.
extern "C" __global__ void bn_forward(const float* x, const float* mean, const float* var,
                                      const float* w, const float* b, float eps, int act,
                                      float act_p, float* y, u64 c, u64 inner, u64 len) {
    FOR_EACH(i, len) {
        u64 k = (i / inner) % c;
        float z = bn_normalise(x[i], mean[k], 1.0f / sqrtf(var[k] + eps), w, b, k);
        y[i] = act >= 0 ? unary_apply(act, act_p, z) : z;
    }
}

// Backward, one block per channel. With a fused activation the incoming gradient is that of
// act's output: dz = dy·act'(z), with z recomputed from x. Then, with xhat = (x − mean)·inv_std,
//   dbias = Σ dz,  dweight = Σ dz·xhat,
//   dx = w·inv_std·(dz − Σdz/count − xhat·Σ(dz·xhat)/count)   (training: batch statistics)
//   dx = w·inv_std·dz                                         (eval: running statistics).
extern "C" __global__ void bn_backward(const float* x, const float* dy, const float* mean,
                                       const float* var, const float* w, const float* b,
                                       float eps, int training, int act, float act_p, float* dx,
                                       float* dw, float* db, u64 n, u64 c, u64 inner) {
    u64 k = blockIdx.x, count = n * inner;
    float mu = mean[k], inv_std = 1.0f / sqrtf(var[k] + eps);
    double s_dz = 0.0, s_dz_xhat = 0.0;
    for (u64 t = threadIdx.x; t < count; t += blockDim.x) {
        u64 i = bn_index(t, k, c, inner);
        float dz = dy[i];
        if (act >= 0) {
            float z = bn_normalise(x[i], mu, inv_std, w, b, k);
            dz *= unary_derivative(act, act_p, z, unary_apply(act, act_p, z));
        }
        s_dz += dz;
        s_dz_xhat += (double)dz * ((x[i] - mu) * inv_std);
    }
    s_dz = block_sum(s_dz);
    s_dz_xhat = block_sum(s_dz_xhat);
    float scale = (w ? w[k] : 1.0f) * inv_std;
    float mean_dz = (float)(s_dz / count), mean_dz_xhat = (float)(s_dz_xhat / count);
    for (u64 t = threadIdx.x; t < count; t += blockDim.x) {
        u64 i = bn_index(t, k, c, inner);
        float dz = dy[i];
        if (act >= 0) {
            float z = bn_normalise(x[i], mu, inv_std, w, b, k);
            dz *= unary_derivative(act, act_p, z, unary_apply(act, act_p, z));
        }
        float xhat = (x[i] - mu) * inv_std;
        dx[i] = training ? scale * (dz - mean_dz - xhat * mean_dz_xhat) : scale * dz;
    }
    if (threadIdx.x == 0) {
        dw[k] = (float)s_dz_xhat;
        db[k] = (float)s_dz;
    }
}
