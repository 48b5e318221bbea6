// Direct convolution: the first, simplest correct rung of the GPU ladder. No tiling, no shared
// memory: each thread computes one output value from global memory (the caches do what they
// can). NCHW tensors, weight [c_out][c_in][kh][kw], as on the CPU.

// ConvGeom comes from geom.cuh.

// y[b][co][oh][ow] = act(bias[co] + Σ_{ci,i,j} x[b][ci][oh·s − p + i·d][ow·s − p + j·d] · w[co][ci][i][j])
// One thread per output value; taps that fall in the padding are skipped. The sum starts from
// the bias; the epilogue's activation is applied as the value is stored.
extern "C" __global__ void conv2d_forward(ConvGeom g, const float* x, const float* w, Epilogue e,
                                          float* y) {
    u64 total = (u64)g.n * g.c_out * g.h_out * g.w_out;
    FOR_EACH(t, total) {
        u32 ow = t % g.w_out, oh = (t / g.w_out) % g.h_out;
        u32 co = (t / ((u64)g.w_out * g.h_out)) % g.c_out;
        u64 b = t / ((u64)g.w_out * g.h_out * g.c_out);
        float acc = e.bias ? e.bias[co] : 0.0f;
        for (u32 ci = 0; ci < g.c_in; ++ci) {
            const float* xp = x + (b * g.c_in + ci) * g.h * g.w;
            const float* wp = w + ((u64)co * g.c_in + ci) * g.kh * g.kw;
            for (u32 i = 0; i < g.kh; ++i) {
                int ih = (int)(oh * g.sh + i * g.dh) - (int)g.ph;
                if (ih < 0 || ih >= (int)g.h) continue;
                for (u32 j = 0; j < g.kw; ++j) {
                    int iw = (int)(ow * g.sw + j * g.dw) - (int)g.pw;
                    if (iw < 0 || iw >= (int)g.w) continue;
                    acc += xp[ih * g.w + iw] * wp[i * g.kw + j];
                }
            }
        }
        y[t] = epilogue_act(e, acc);
    }
}

// dx[b][ci][ih][iw] = Σ dy[b][co][oh][ow] · w[co][ci][i][j] over the (co, i, j) whose output
// pixel (oh, ow) reads (ih, iw): oh = (ih + p − i·d) / s when that divides exactly and lands
// inside the output. One thread per input value gathers its sum, so nothing is written twice
// and no atomics are needed (transposed convolution's forward runs this, with its bias and
// activation as the epilogue `e`).
extern "C" __global__ void conv2d_backward_data(ConvGeom g, const float* dy, const float* w,
                                                Epilogue e, float* dx) {
    u64 total = (u64)g.n * g.c_in * g.h * g.w;
    FOR_EACH(t, total) {
        u32 iw = t % g.w, ih = (t / g.w) % g.h;
        u32 ci = (t / ((u64)g.w * g.h)) % g.c_in;
        u64 b = t / ((u64)g.w * g.h * g.c_in);
        float acc = 0.0f;
        for (u32 i = 0; i < g.kh; ++i) {
            int num_h = (int)(ih + g.ph) - (int)(i * g.dh);
            if (num_h < 0 || num_h % g.sh) continue;
            u32 oh = num_h / g.sh;
            if (oh >= g.h_out) continue;
            for (u32 j = 0; j < g.kw; ++j) {
                int num_w = (int)(iw + g.pw) - (int)(j * g.dw);
                if (num_w < 0 || num_w % g.sw) continue;
                u32 ow = num_w / g.sw;
                if (ow >= g.w_out) continue;
                for (u32 co = 0; co < g.c_out; ++co) {
                    acc += dy[((b * g.c_out + co) * g.h_out + oh) * g.w_out + ow] *
                           w[(((u64)co * g.c_in + ci) * g.kh + i) * g.kw + j];
                }
            }
        }
        dx[t] = epilogue(e, ci, acc);
    }
}

// The epilogue alone, in place over an NCHW buffer of `channels` planes of `plane` values: for
// passes with nothing to sum (an empty reduction) that must still store act(bias).
extern "C" __global__ void conv_epilogue(Epilogue e, u64 channels, u64 plane, float* y, u64 n) {
    FOR_EACH(i, n) y[i] = epilogue(e, (i / plane) % channels, y[i]);
}

// dw[co][ci][i][j] = Σ_{b,oh,ow} dy[b][co][oh][ow] · x[b][ci][oh·s − p + i·d][ow·s − p + j·d].
// The sum runs over the whole batch and output plane, so one warp takes each weight: its 32
// lanes stride over the (b, oh, ow) terms and a shuffle tree adds their partial sums. A block
// of 256 threads holds 8 warps, 8 weights.
extern "C" __global__ void conv2d_backward_weight(ConvGeom g, const float* x, const float* dy, float* dw) {
    u64 weights = (u64)g.c_out * g.c_in * g.kh * g.kw;
    u64 wi = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    u32 lane = threadIdx.x & 31;
    if (wi >= weights) return;  // a whole warp leaves together
    u32 j = wi % g.kw, i = (wi / g.kw) % g.kh;
    u32 ci = (wi / ((u64)g.kw * g.kh)) % g.c_in;
    u32 co = wi / ((u64)g.kw * g.kh * g.c_in);
    u64 plane = (u64)g.h_out * g.w_out, terms = g.n * plane;
    float acc = 0.0f;
    for (u64 t = lane; t < terms; t += 32) {
        u64 b = t / plane;
        u32 oh = (t % plane) / g.w_out, ow = t % g.w_out;
        int ih = (int)(oh * g.sh + i * g.dh) - (int)g.ph;
        int iw = (int)(ow * g.sw + j * g.dw) - (int)g.pw;
        if (ih < 0 || ih >= (int)g.h || iw < 0 || iw >= (int)g.w) continue;
        acc += dy[((b * g.c_out + co) * g.h_out + oh) * g.w_out + ow] *
               x[((b * g.c_in + ci) * g.h + ih) * g.w + iw];
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if (lane == 0) dw[wi] = acc;
}
