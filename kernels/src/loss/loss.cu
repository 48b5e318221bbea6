// Per-element losses and their gradients (the mean is taken by the tensor ops above).

// max(x, 0) − x·t + log(1 + e^−|x|): the stable form of −t·log σ(x) − (1 − t)·log(1 − σ(x)).
extern "C" __global__ void bce_with_logits(const float* x, const float* t, float* out, u64 n) {
    FOR_EACH(i, n) {
        float xi = x[i];
        out[i] = fmaxf(xi, 0.0f) - xi * t[i] + log1pf(expf(-fabsf(xi)));
    }
}

extern "C" __global__ void bce_with_logits_backward(const float* x, const float* t, const float* dy,
                                                    float* dx, float* dt, u64 n) {
    FOR_EACH(i, n) {
        dx[i] = dy[i] * (sigmoidf(x[i]) - t[i]);
        dt[i] = -dy[i] * x[i];
    }
}

// BCE on probabilities, logs floored at −100 as PyTorch does. A value outside [0, 1] (or NaN)
// sets *bad, which the launcher reads back to report the error.
extern "C" __global__ void bce(const float* p, const float* t, float* out, int* bad, u64 n) {
    FOR_EACH(i, n) {
        float pi = p[i], ti = t[i];
        if (!(pi >= 0.0f && pi <= 1.0f)) {
            *bad = 1;
            out[i] = 0.0f;
            continue;
        }
        float log_p = fmaxf(logf(pi), -100.0f), log_q = fmaxf(log1pf(-pi), -100.0f);
        out[i] = (ti - 1.0f) * log_q - ti * log_p;
    }
}

extern "C" __global__ void bce_backward(const float* p, const float* t, const float* dy,
                                        float* dp, float* dt, u64 n) {
    FOR_EACH(i, n) {
        float pi = p[i], ti = t[i];
        dp[i] = dy[i] * (pi - ti) / fmaxf((1.0f - pi) * pi, 1e-12f);
        dt[i] = dy[i] * (fmaxf(log1pf(-pi), -100.0f) - fmaxf(logf(pi), -100.0f));
    }
}
