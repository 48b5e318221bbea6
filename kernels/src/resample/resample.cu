// Pixel shuffle and nearest-neighbour upsampling: index maps, one thread per output value.

// Pixel shuffle: x [n][c·r·r][h][w] → y [n][c][h·r][w·r], y[b][k][hh·r + i][ww·r + j] =
// x[b][(k·r + i)·r + j][hh][ww]. Each thread owns one value of x and writes it to its place
// in y (or, for the inverse, reads it back from there).
extern "C" __global__ void pixel_shuffle(const float* src, float* dst, u64 c, u64 h, u64 w,
                                         u64 r, int inverse, u64 len) {
    FOR_EACH(t, len) {
        u64 ww = t % w, hh = (t / w) % h, ci = (t / (w * h)) % (c * r * r);
        u64 b = t / (w * h * c * r * r);
        u64 k = ci / (r * r), i = (ci / r) % r, j = ci % r;
        u64 big = ((b * c + k) * h * r + hh * r + i) * w * r + ww * r + j;
        if (inverse) dst[t] = src[big];
        else dst[big] = src[t];
    }
}

// y [planes][h·sh][w·sw]: every output pixel copies the input pixel it lies over.
extern "C" __global__ void upsample_nearest(const float* x, float* y, u64 h, u64 w, u64 sh,
                                            u64 sw, u64 len) {
    u64 ho = h * sh, wo = w * sw;
    FOR_EACH(t, len) {
        u64 ow = t % wo, oh = (t / wo) % ho, p = t / (wo * ho);
        y[t] = x[(p * h + oh / sh) * w + ow / sw];
    }
}

// Backward: each input pixel sums the sh·sw output gradients it was copied to (a gather, so
// no atomics).
extern "C" __global__ void upsample_nearest_backward(const float* dy, float* dx, u64 h, u64 w,
                                                     u64 sh, u64 sw, u64 len) {
    u64 wo = w * sw;
    FOR_EACH(t, len) {
        u64 iw = t % w, ih = (t / w) % h, p = t / (w * h);
        float acc = 0.0f;
        for (u64 a = 0; a < sh; ++a)
            for (u64 e = 0; e < sw; ++e) acc += dy[(p * h * sh + ih * sh + a) * wo + iw * sw + e];
        dx[t] = acc;
    }
}
