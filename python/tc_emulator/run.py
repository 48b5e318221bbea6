"""Host side (as kernels/src/conv/cuda.rs::tc) + comparison against torch float64."""
import sys, itertools, random
import numpy as np
import torch
import torch.nn.functional as F
from emu import *


def round8(c):
    return cdiv(c, 8) * 8


def split_k(k_tiles, mn_blocks, target=264):
    want = max(1, min(target // max(mn_blocks, 1), max(k_tiles, 1)))
    per = cdiv(max(k_tiles, 1), want)
    return per, cdiv(max(k_tiles, 1), per)


def as_bytes(packed):
    return np.ascontiguousarray(packed).view(np.uint8)


def decode(E, packed):
    return E.decode_store(packed)


def run_case(E, geo, mode="late", target=264, seed=0, passes=(0, 1, 2)):
    n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw = geo
    g = ConvGeom(*geo)
    if g.h_out <= 0 or g.w_out <= 0:
        return None
    esz = E.size
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w)).astype(np.float32)
    wt = rng.standard_normal((c_out, c_in, kh, kw)).astype(np.float32)
    bias = rng.standard_normal(c_out).astype(np.float32)
    dy = rng.standard_normal((n, c_out, g.h_out, g.w_out)).astype(np.float32)
    # the values the kernel actually sees (rounded to the compute type)
    rnd = lambda a: decode(E, E.from_f32(a.ravel())).reshape(a.shape)
    xr, wr, dyr = [torch.from_numpy(rnd(a)) for a in (x, wt, dy)]
    taps, cp, cop = kh * kw, round8(c_in), round8(c_out)
    tile_k = 64 // esz
    errs = {}
    if 0 in passes:
        xp = tc_pack(E, x.ravel(), n, h * w, c_in, cp, c_in * h * w, 1, h * w)
        wp = tc_pack(E, wt.ravel(), c_out, taps, c_in, cp, c_in * taps, 1, taps)
        M = n * g.h_out * g.w_out
        t = TcGeom(g, cp, cop, M, c_out, taps * cp, cdiv(taps * cp, tile_k))
        y = np.full(n * c_out * g.h_out * g.w_out, np.nan)
        tc_forward(esz, t, (cdiv(M, 128), cdiv(c_out, 128), 1), as_bytes(xp), as_bytes(wp),
                   bias.astype(np.float64), y, mode)
        ref = F.conv2d(xr, wr, torch.from_numpy(bias.astype(np.float64)), (sh, sw), (ph, pw), (dh, dw))
        errs["fwd"] = np.abs(y.reshape(ref.shape) - ref.numpy()).max()
    if 1 in passes:
        dyp = tc_pack(E, dy.ravel(), n, g.h_out * g.w_out, c_out, cop, c_out * g.h_out * g.w_out, 1,
                      g.h_out * g.w_out)
        wp = tc_pack(E, wt.ravel(), c_in, taps, c_out, cop, taps, 1, c_in * taps)
        M = n * h * w
        t = TcGeom(g, cp, cop, M, c_in, taps * cop, cdiv(taps * cop, tile_k))
        dx = np.full(n * c_in * h * w, np.nan)
        tc_backward_data(esz, t, (cdiv(M, 128), cdiv(c_in, 128), 1), as_bytes(dyp), as_bytes(wp),
                         dx, mode)
        ref = torch.nn.grad.conv2d_input((n, c_in, h, w), wr, dyr, (sh, sw), (ph, pw), (dh, dw))
        errs["bwd_data"] = np.abs(dx.reshape(ref.shape) - ref.numpy()).max()
    if 2 in passes:
        K = n * g.h_out * g.w_out
        cols = taps * cp
        per, splits = split_k(cdiv(K, tile_k), cdiv(cols, 128) * cdiv(c_out, 128), target)
        xp = tc_pack(E, x.ravel(), n, h * w, c_in, cp, c_in * h * w, 1, h * w)
        dyp = tc_pack(E, dy.ravel(), n, g.h_out * g.w_out, c_out, cop, c_out * g.h_out * g.w_out, 1,
                      g.h_out * g.w_out)
        t = TcGeom(g, cp, cop, c_out, cols, K, per)
        partial = np.full(splits * c_out * cols, np.nan)
        tc_backward_weight(esz, t, (cdiv(c_out, 128), cdiv(cols, 128), splits), as_bytes(xp),
                           as_bytes(dyp), partial, mode)
        dwv = tc_weight_sum(g, cp, splits, partial, c_out * c_in * taps)
        ref = torch.nn.grad.conv2d_weight(xr, wt.shape, dyr, (sh, sw), (ph, pw), (dh, dw))
        errs["bwd_weight"] = np.abs(dwv.reshape(ref.shape) - ref.numpy()).max()
        errs["splits"] = (splits, per, cdiv(K, tile_k))
    return errs


if __name__ == "__main__":
    print(run_case(Bf16, (2, 3, 7, 9, 20, 3, 3, 1, 1, 1, 1, 1, 1), target=4))
