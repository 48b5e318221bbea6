// The convolution geometry every conv source shares (cuda_rt prepends this file, after
// common.cuh, to conv.cu, conv_tiled.cu and conv_tc.cu), laid out as kernels::conv::cuda::ConvGeom,
// and the two index helpers of implicit GEMM.

struct ConvGeom {
    u32 n, c_in, h, w, c_out, kh, kw;
    u32 sh, sw, ph, pw, dh, dw;
    u32 h_out, w_out;
};
static_assert(sizeof(ConvGeom) == 60, "ConvGeom must match conv::cuda::ConvGeom");

// What a pass that produces a layer's output applies to each value as it stores it
// (kernels::conv::Epilogue; laid out as conv::cuda::EpilogueArgs): the channel's bias when
// `bias` is not null, then the unary op `act` of common.cuh (parameter `p`) when act >= 0.
// Conv forward takes it, and so does backward-data, a transposed convolution's forward.
struct Epilogue {
    const float* bias;
    int act;
    float p;
};
static_assert(sizeof(Epilogue) == 16, "Epilogue must match conv::cuda::EpilogueArgs");

__device__ __forceinline__ float epilogue_act(const Epilogue& e, float v) {
    return e.act < 0 ? v : unary_apply(e.act, e.p, v);
}

// The bias (added last, as a separate add would), then the activation.
__device__ __forceinline__ float epilogue(const Epilogue& e, u64 channel, float v) {
    return epilogue_act(e, e.bias ? v + e.bias[channel] : v);
}

// The input pixel of output (oh, ow) under tap (i, j), or false when it is padding.
__device__ __forceinline__ bool tap_input(const ConvGeom& g, u32 oh, u32 ow, u32 i, u32 j,
                                          u32* ih, u32* iw) {
    int y = (int)(oh * g.sh + i * g.dh) - (int)g.ph;
    int x = (int)(ow * g.sw + j * g.dw) - (int)g.pw;
    if (y < 0 || y >= (int)g.h || x < 0 || x >= (int)g.w) return false;
    *ih = y;
    *iw = x;
    return true;
}

// The output pixel that input (ih, iw) feeds under tap (i, j), or false when none does (the
// tap lands between strided outputs or outside them).
__device__ __forceinline__ bool tap_output(const ConvGeom& g, u32 ih, u32 iw, u32 i, u32 j,
                                           u32* oh, u32* ow) {
    int y = (int)(ih + g.ph) - (int)(i * g.dh);
    int x = (int)(iw + g.pw) - (int)(j * g.dw);
    if (y < 0 || x < 0 || y % g.sh || x % g.sw) return false;
    y /= g.sh;
    x /= g.sw;
    if (y >= (int)g.h_out || x >= (int)g.w_out) return false;
    *oh = y;
    *ow = x;
    return true;
}

