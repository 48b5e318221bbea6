"""The Hopper rung's shared-memory layout and fragments (conv_wgmma.cu), emulated.

Checks that the three index maps of the kernel agree with one another and with the PTX ISA's
description of wgmma: where `wg_load_tile` puts each 16-byte chunk (`wg_chunk`), which core
matrices a descriptor names (start address, LBO between core matrices along K, SBO between
groups of 8 rows, no swizzle: core matrix (i, j) of the operand at start + i*SBO + j*LBO, its
row r at +16*r), and where the m64nNk accumulator fragment puts each value (`wg_epilogue`).
One 128 x 128 tile of C over several K tiles of 64 bytes, for 16-bit and 32-bit elements, is
compared with numpy's product. Run: python wgmma_layout.py (needs numpy only).
"""

import numpy as np

BM = BN = 128
TILE_BYTES = 128 * 64
LBO, SBO = 128, 512


def wg_chunk(row, c):
    return (row // 8) * SBO + c * LBO + (row % 8) * 16


def load_tile(smem, base, op, k0, esize):
    """wg_load_tile: 256 threads x 2 chunks; chunk (row, c) = elements k0 + c*per .. of row."""
    per = 16 // esize
    for thread in range(256):
        for r in range(2):
            idx = thread + 256 * r
            row, c = idx // 4, idx % 4
            vals = op[row, k0 + c * per : k0 + (c + 1) * per]
            off = base + wg_chunk(row, c)
            smem[off // esize : off // esize + per] = vals


def desc_read(smem, start, rows, kbytes, esize):
    """The operand a descriptor names: `rows` x (kbytes / esize) elements, K-major."""
    per = 16 // esize
    out = np.zeros((rows, kbytes // esize))
    for i in range(rows // 8):
        for j in range(kbytes // 16):
            core = start + i * SBO + j * LBO
            for r in range(8):
                at = (core + 16 * r) // esize
                out[8 * i + r, j * per : (j + 1) * per] = smem[at : at + per]
    return out


def check(esize, k_tiles=3, seed=0):
    rng = np.random.default_rng(seed)
    tile_k = 64 // esize
    K = tile_k * k_tiles
    A = rng.standard_normal((BM, K))
    B = rng.standard_normal((BN, K))  # K-major: B[n][k]
    # d[thread][64] of each warpgroup, as registers.
    d = np.zeros((256, 64))
    for it in range(k_tiles):
        smem = np.zeros((2 * TILE_BYTES) // esize)
        load_tile(smem, 0, A, it * tile_k, esize)
        load_tile(smem, TILE_BYTES, B, it * tile_k, esize)
        for g in range(2):
            for ks in range(2):
                # The kernel's descriptors: A from this warpgroup's 8 row groups, B all 16;
                # 32 bytes of K a step (core-matrix columns 2ks, 2ks + 1).
                a = desc_read(smem, g * 8 * SBO + ks * 2 * LBO, 64, 32, esize)
                b = desc_read(smem, TILE_BYTES + ks * 2 * LBO, 128, 32, esize)
                prod = a @ b.T  # 64 x 128
                # The PTX fragment of an m64nN f32 accumulator: warp w of the group holds
                # rows 16w..16w+15; lane l, register 4j + r: row 16w + l/4 + 8*(r/2),
                # column 8j + 2*(l%4) + r%2.
                for t in range(128):
                    w, lane = t // 32, t % 32
                    for j in range(16):
                        for r in range(4):
                            row = 16 * w + lane // 4 + 8 * (r // 2)
                            col = 8 * j + 2 * (lane % 4) + r % 2
                            d[128 * g + t, 4 * j + r] += prod[row, col]
    # wg_epilogue: thread t of the block, warp = t / 32.
    C = np.full((BM, BN), np.nan)
    for t in range(256):
        warp, lane = t // 32, t % 32
        m0 = (warp // 4) * 64 + (warp % 4) * 16 + lane // 4
        n0 = 2 * (lane % 4)
        for j in range(16):
            for r in range(4):
                m, n = m0 + 8 * (r // 2), n0 + 8 * j + r % 2
                assert np.isnan(C[m, n]), "two threads store one value"
                C[m, n] = d[t, 4 * j + r]
    want = A @ B.T
    err = np.abs(C - want).max()
    assert not np.isnan(C).any(), "a value of C is never stored"
    assert err < 1e-9, err
    return err


if __name__ == "__main__":
    for esize, name in [(2, "bf16/f16"), (4, "tf32")]:
        print(name, "max error", check(esize))
