"""Thread-by-thread NumPy emulator of kernels/src/conv/conv_tc.cu.

Global memory: one np.uint8 byte array per tensor; a "pointer" is (buffer, byte offset) or None.
Shared memory: one np.uint8 array of 61440 bytes per block, filled with 0xFF (NaN in bf16/f32)
so that a read of never-written smem poisons the result.
"""
import numpy as np

TC_BM = TC_BN = 128
TC_THREADS = 256
TC_STAGES = 3
TC_ROW_BYTES = 64
TC_KPITCH = 80
TC_OPERAND_BYTES = 128 * TC_KPITCH
TC_STAGE_BYTES = 2 * TC_OPERAND_BYTES
TC_SMEM_BYTES = TC_STAGES * TC_STAGE_BYTES
assert TC_SMEM_BYTES == 61440


def mn_pitch(esize):
    return 128 * esize + (32 if esize == 4 else 16)


def cdiv(a, b):
    return (a + b - 1) // b


STATS = {"ldm_phases": 0, "ldm_conflict_phases": 0, "ld32": 0, "ld32_conflict": 0,
         "ld32_maxway": 1, "cp_async": 0, "cp_zero": 0}


# ---------------------------------------------------------------- geometry helpers (geom.cuh)
class ConvGeom:
    def __init__(s, n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, dh, dw):
        s.n, s.c_in, s.h, s.w, s.c_out, s.kh, s.kw = n, c_in, h, w, c_out, kh, kw
        s.sh, s.sw, s.ph, s.pw, s.dh, s.dw = sh, sw, ph, pw, dh, dw
        s.h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        s.w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def tap_input(g, oh, ow, i, j):
    y = (oh * g.sh + i * g.dh) - g.ph
    x = (ow * g.sw + j * g.dw) - g.pw
    if y < 0 or y >= g.h or x < 0 or x >= g.w:
        return None
    return y, x


def tap_output(g, ih, iw, i, j):
    y = (ih + g.ph) - (i * g.dh)
    x = (iw + g.pw) - (j * g.dw)
    if y < 0 or x < 0 or y % g.sh or x % g.sw:
        return None
    y //= g.sh
    x //= g.sw
    if y >= g.h_out or x >= g.w_out:
        return None
    return y, x


class TcGeom:
    def __init__(s, g, cp, cop, M, N, K, tps):
        s.g, s.cp, s.cop, s.M, s.N, s.K, s.tiles_per_split = g, cp, cop, M, N, K, tps


# ---------------------------------------------------------------- element types
class Bf16:
    size = 2

    @staticmethod
    def from_f32(f):  # cvt.rn.bf16.f32 (round to nearest even), as uint16 bits
        f = np.asarray(f, np.float32)
        u = f.view(np.uint32).astype(np.uint64)
        r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
        return r

    @staticmethod
    def to_f64(bits16):
        return (np.asarray(bits16, np.uint32) << 16).astype(np.uint32).view(np.float32).astype(np.float64)

    @staticmethod
    def decode_store(arr):  # packed uint16 -> values
        return Bf16.to_f64(arr)


class Tf32:
    size = 4

    @staticmethod
    def from_f32(f):  # cvt.rna.tf32.f32: round to nearest, ties away; low 13 bits zero
        f = np.asarray(f, np.float32)
        u = f.view(np.uint32).astype(np.uint64)
        r = ((u + 0x1000) & 0xFFFFE000).astype(np.uint32)
        return r.view(np.float32)

    @staticmethod
    def decode_store(arr):
        return np.asarray(arr, np.float32).astype(np.float64)


# ---------------------------------------------------------------- tc_pack_*
def tc_pack(E, src, B, P, C, cp, sb, sp, sc):
    """dst[i] for i in [0, B*P*cp) (FOR_EACH), src is the flat f32 array."""
    n = B * P * cp
    i = np.arange(n, dtype=np.int64)
    c = i % cp
    bp = i // cp
    p = bp % P
    b = bp // P
    val = np.zeros(n, np.float32)
    ok = c < C
    val[ok] = src[(b * sb + p * sp + c * sc)[ok]]
    return E.from_f32(val)


# ---------------------------------------------------------------- passes
class Ptr:
    __slots__ = ("buf", "off")

    def __init__(s, buf, off):
        s.buf, s.off = buf, off


class TcForward:
    A_KMAJOR = B_KMAJOR = True

    def __init__(s, t, esz, x, w):
        s.t, s.esz, s.x, s.w = t, esz, x, w

    def base_a(s): return Ptr(s.x, 0)
    def base_b(s): return Ptr(s.w, 0)

    def a(s, m, k):
        t, g = s.t, s.t.g
        if m >= t.M or k >= t.K:
            return None
        plane = g.h_out * g.w_out
        img = m // plane
        oh = (m % plane) // g.w_out
        ow = m % g.w_out
        tap, c = k // t.cp, k % t.cp
        r = tap_input(g, oh, ow, tap // g.kw, tap % g.kw)
        if r is None:
            return None
        ih, iw = r
        return Ptr(s.x, (((img * g.h + ih) * g.w + iw) * t.cp + c) * s.esz)

    def b(s, n, k):
        t = s.t
        return Ptr(s.w, (n * t.K + k) * s.esz) if n < t.N and k < t.K else None


class TcBackwardData:
    A_KMAJOR = B_KMAJOR = True

    def __init__(s, t, esz, dy, w):
        s.t, s.esz, s.dy, s.w = t, esz, dy, w

    def base_a(s): return Ptr(s.dy, 0)
    def base_b(s): return Ptr(s.w, 0)

    def a(s, m, k):
        t, g = s.t, s.t.g
        if m >= t.M or k >= t.K:
            return None
        plane = g.h * g.w
        img = m // plane
        ih = (m % plane) // g.w
        iw = m % g.w
        tap, c = k // t.cop, k % t.cop
        r = tap_output(g, ih, iw, tap // g.kw, tap % g.kw)
        if r is None:
            return None
        oh, ow = r
        return Ptr(s.dy, (((img * g.h_out + oh) * g.w_out + ow) * t.cop + c) * s.esz)

    def b(s, n, k):
        t = s.t
        return Ptr(s.w, (n * t.K + k) * s.esz) if n < t.N and k < t.K else None


class TcBackwardWeight:
    A_KMAJOR = B_KMAJOR = False

    def __init__(s, t, esz, x, dy):
        s.t, s.esz, s.x, s.dy = t, esz, x, dy

    def base_a(s): return Ptr(s.dy, 0)
    def base_b(s): return Ptr(s.x, 0)

    def a(s, m, k):
        t = s.t
        return Ptr(s.dy, (k * t.cop + m) * s.esz) if m < t.cop and k < t.K else None

    def b(s, n, k):
        t, g = s.t, s.t.g
        if n >= t.N or k >= t.K:
            return None
        plane = g.h_out * g.w_out
        img = k // plane
        oh = (k % plane) // g.w_out
        ow = k % g.w_out
        tap, c = n // t.cp, n % t.cp
        r = tap_input(g, oh, ow, tap // g.kw, tap % g.kw)
        if r is None:
            return None
        ih, iw = r
        return Ptr(s.x, (((img * g.h + ih) * g.w + iw) * t.cp + c) * s.esz)


# ---------------------------------------------------------------- cp.async + load_tile
def load_tile(kmajor, esz, tile_off, mn0, k0, src, any_ptr, group):
    """Queues (into `group`) the 512 16-byte copies of one operand tile (threads 0..255, r 0..1)."""
    per_chunk = 16 // esz
    for r in range(2):
        for tid in range(TC_THREADS):
            idx = tid + TC_THREADS * r
            if kmajor:
                row, ch = idx // 4, idx % 4
                p = src(mn0 + row, k0 + ch * per_chunk)
                dst = tile_off + row * TC_KPITCH + ch * 16
            else:
                per_row = 128 * esz // 16
                row, ch = idx // per_row, idx % per_row
                p = src(mn0 + ch * per_chunk, k0 + row)
                dst = tile_off + row * mn_pitch(esz) + ch * 16
            cp_async16(group, dst, p if p is not None else any_ptr, p is not None)


def cp_async16(group, dst, src, valid):
    assert dst % 16 == 0, "cp.async dst not 16-aligned"
    assert src.off % 16 == 0, "cp.async src not 16-aligned"
    assert 0 <= dst and dst + 16 <= TC_SMEM_BYTES
    STATS["cp_async"] += 1
    if valid:
        assert src.off + 16 <= len(src.buf), "cp.async reads past the end of the global buffer"
        group.append((dst, src.buf[src.off:src.off + 16].copy()))  # snapshot (inputs constant)
    else:
        STATS["cp_zero"] += 1
        group.append((dst, np.zeros(16, np.uint8)))


# ---------------------------------------------------------------- ldmatrix / scalar loads
def _phase_conflict(addrs):
    """One ldmatrix phase: 8 rows of 16 bytes; conflict if two rows share a bank but differ."""
    STATS["ldm_phases"] += 1
    banks = {}
    for a in addrs:
        for wd in range(4):
            word = a // 4 + wd
            banks.setdefault(word % 32, set()).add(word)
    if max(len(v) for v in banks.values()) > 1:
        STATS["ldm_conflict_phases"] += 1


def ldmatrix_x4(smem, addrs, trans):
    """addrs[lane]: row address supplied by lane (matrix q = lane//8, row lane%8).
    Returns regs [32][4] uint32 as the PTX ISA defines."""
    regs = np.zeros((32, 4), np.uint32)
    for q in range(4):
        rows = addrs[8 * q:8 * q + 8]
        for a in rows:
            assert a % 16 == 0, "ldmatrix row address not 16-aligned"
        _phase_conflict(rows)
        mat = np.stack([smem[a:a + 16].view(np.uint16) for a in rows])  # [row][col] 8x8 b16
        if trans:
            mat = mat.T
        for lane in range(32):
            r, c = lane // 4, 2 * (lane % 4)
            regs[lane, q] = np.uint32(mat[r, c]) | (np.uint32(mat[r, c + 1]) << np.uint32(16))
    return regs


def ld32(smem, addrs):
    addrs = list(addrs)
    for a in addrs:
        assert a % 4 == 0
    STATS["ld32"] += 1
    banks = {}
    for a in addrs:
        banks.setdefault((a // 4) % 32, set()).add(a // 4)
    way = max(len(v) for v in banks.values())
    if way > 1:
        STATS["ld32_conflict"] += 1
        STATS["ld32_maxway"] = max(STATS["ld32_maxway"], way)
    return np.array([smem[a:a + 4].view(np.uint32)[0] for a in addrs], np.uint32)


def load_a(kmajor, esz, smem, tile, mrow, ks):
    lanes = range(32)
    if kmajor:
        addrs = [tile + (mrow + l % 16) * TC_KPITCH + ks * 32 + (l // 16) * 16 for l in lanes]
        return ldmatrix_x4(smem, addrs, False)
    elif esz == 2:
        addrs = []
        for l in lanes:
            k = ks * 16 + l % 8 + (l // 16) * 8
            m = mrow + ((l // 8) % 2) * 8
            addrs.append(tile + k * mn_pitch(2) + m * 2)
        return ldmatrix_x4(smem, addrs, True)
    else:
        p = mn_pitch(4)
        base = [tile + (ks * 8 + l % 4) * p + (mrow + l // 4) * 4 for l in lanes]
        a = np.zeros((32, 4), np.uint32)
        a[:, 0] = ld32(smem, base)
        a[:, 1] = ld32(smem, [b + 8 * 4 for b in base])
        a[:, 2] = ld32(smem, [b + 4 * p for b in base])
        a[:, 3] = ld32(smem, [b + 4 * p + 8 * 4 for b in base])
        return a


def load_b(kmajor, esz, smem, tile, ncol, ks):
    lanes = range(32)
    if kmajor:
        addrs = []
        for l in lanes:
            n = ncol + l % 8 + (l // 16) * 8
            addrs.append(tile + n * TC_KPITCH + ks * 32 + ((l // 8) % 2) * 16)
        return ldmatrix_x4(smem, addrs, False)
    elif esz == 2:
        addrs = []
        for l in lanes:
            k = ks * 16 + l % 8 + ((l // 8) % 2) * 8
            n = ncol + (l // 16) * 8
            addrs.append(tile + k * mn_pitch(2) + n * 2)
        return ldmatrix_x4(smem, addrs, True)
    else:
        p = mn_pitch(4)
        base = [tile + (ks * 8 + l % 4) * p + (ncol + l // 4) * 4 for l in lanes]
        b = np.zeros((32, 4), np.uint32)
        b[:, 0] = ld32(smem, base)
        b[:, 1] = ld32(smem, [x + 4 * p for x in base])
        b[:, 2] = ld32(smem, [x + 8 * 4 for x in base])
        b[:, 3] = ld32(smem, [x + 4 * p + 8 * 4 for x in base])
        return b


# ---------------------------------------------------------------- mma (PTX fragment layouts)
LANE = np.arange(32)
G, T = LANE // 4, LANE % 4


def _lo_hi_bf16(r):
    return Bf16.to_f64(r & 0xFFFF), Bf16.to_f64(r >> 16)


def _f32(r):
    return np.asarray(r, np.uint32).view(np.float32).astype(np.float64)


def mma(esz, d, a, b):
    """d: [32][4] float64 (in/out), a: [32][4] uint32, b: [32][2] uint32 (per lane)."""
    if esz == 2:  # m16n8k16 row.col bf16
        A = np.full((16, 16), np.nan)
        B = np.full((16, 8), np.nan)
        for reg, (r0, c0) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
            lo, hi = _lo_hi_bf16(a[:, reg])
            A[G + r0, 2 * T + c0] = lo
            A[G + r0, 2 * T + c0 + 1] = hi
        for reg, k0 in enumerate([0, 8]):
            lo, hi = _lo_hi_bf16(b[:, reg])
            B[2 * T + k0, G] = lo
            B[2 * T + k0 + 1, G] = hi
    else:  # m16n8k8 row.col tf32
        A = np.full((16, 8), np.nan)
        B = np.full((8, 8), np.nan)
        A[G, T] = _f32(a[:, 0])
        A[G + 8, T] = _f32(a[:, 1])
        A[G, T + 4] = _f32(a[:, 2])
        A[G + 8, T + 4] = _f32(a[:, 3])
        B[T, G] = _f32(b[:, 0])
        B[T + 4, G] = _f32(b[:, 1])
    assert not np.isnan(A).all() and not np.isnan(B).all()
    C = np.full((16, 8), np.nan)
    C[G, 2 * T] = d[:, 0]
    C[G, 2 * T + 1] = d[:, 1]
    C[G + 8, 2 * T] = d[:, 2]
    C[G + 8, 2 * T + 1] = d[:, 3]
    D = A @ B + C
    d[:, 0] = D[G, 2 * T]
    d[:, 1] = D[G, 2 * T + 1]
    d[:, 2] = D[G + 8, 2 * T]
    d[:, 3] = D[G + 8, 2 * T + 1]


# ---------------------------------------------------------------- main loop
def tc_main_loop(esz, t, pass_, block, mode):
    """Returns acc[warp][mi][nj][lane][4]. mode: 'late' (copies land only at the wait that
    retires their group) or 'early' (copies land as soon as they are issued)."""
    bx, by, bz = block
    smem = np.full(TC_SMEM_BYTES, 0xFF, np.uint8)
    tile_k = TC_ROW_BYTES // esz
    m0, n0 = bx * TC_BM, by * TC_BN
    k_tiles = cdiv(t.K, tile_k)
    kt0 = bz * t.tiles_per_split
    nt = min(t.tiles_per_split, k_tiles - kt0) if kt0 < k_tiles else 0
    pending = []  # committed groups, oldest first (same for every thread: uniform control)
    cur = []      # copies queued since the last commit
    acc = np.zeros((8, 4, 4, 32, 4))
    reading = set()

    def issue(group_list, dst, data):
        group_list.append((dst, data))

    def load_stage(it):
        st = (it % TC_STAGES) * TC_STAGE_BYTES
        assert (it % TC_STAGES) not in reading, "prefetch targets the stage being read"
        k0 = (kt0 + it) * tile_k
        load_tile(pass_.A_KMAJOR, esz, st, m0, k0, pass_.a, pass_.base_a(), cur)
        load_tile(pass_.B_KMAJOR, esz, st + TC_OPERAND_BYTES, n0, k0, pass_.b, pass_.base_b(), cur)

    def commit():
        g = list(cur)
        cur.clear()
        if mode == "early":
            for dst, data in g:
                smem[dst:dst + 16] = data
            pending.append([])
        else:
            pending.append(g)

    def wait(n):
        while len(pending) > n:
            g = pending.pop(0)
            for dst, data in g:
                smem[dst:dst + 16] = data

    for s in range(TC_STAGES - 1):
        if s < nt:
            load_stage(s)
        commit()
    for it in range(nt):
        wait(TC_STAGES - 2)
        # __syncthreads()
        reading.clear()
        if it + TC_STAGES - 1 < nt:
            load_stage(it + TC_STAGES - 1)
        commit()
        slot = it % TC_STAGES
        # no pending group may write into the stage we read
        for g in pending:
            for dst, _ in g:
                assert not (slot * TC_STAGE_BYTES <= dst < (slot + 1) * TC_STAGE_BYTES), \
                    "stage read while copies into it are in flight"
        reading.add(slot)
        st = slot * TC_STAGE_BYTES
        for warp in range(8):
            wm, wn = (warp % 2) * 64, (warp // 2) * 32
            for ks in range(2):
                a = [load_a(pass_.A_KMAJOR, esz, smem, st, wm + 16 * mi, ks) for mi in range(4)]
                b = [None] * 4
                for nj in (0, 2):
                    r = load_b(pass_.B_KMAJOR, esz, smem, st + TC_OPERAND_BYTES, wn + 8 * nj, ks)
                    b[nj] = r[:, 0:2]
                    b[nj + 1] = r[:, 2:4]
                for mi in range(4):
                    for nj in range(4):
                        mma(esz, acc[warp, mi, nj], a[mi], b[nj])
    wait(0)
    return acc


def tc_epilogue(block, rows, cols, acc, f):
    bx, by, _ = block
    for warp in range(8):
        for lane in range(32):
            m0 = bx * TC_BM + (warp % 2) * 64 + lane // 4
            n0 = by * TC_BN + (warp // 2) * 32 + 2 * (lane % 4)
            for mi in range(4):
                for nj in range(4):
                    for r in range(4):
                        m = m0 + 16 * mi + (r // 2) * 8
                        n = n0 + 8 * nj + r % 2
                        if m < rows and n < cols:
                            f(m, n, acc[warp, mi, nj, lane, r])


def grid_blocks(grid):
    for bz in range(grid[2]):
        for by in range(grid[1]):
            for bx in range(grid[0]):
                yield (bx, by, bz)


def tc_forward(esz, t, grid, x, w, bias, y, mode):
    g = t.g
    plane = g.h_out * g.w_out
    written = np.zeros(len(y), bool)
    for blk in grid_blocks(grid):
        acc = tc_main_loop(esz, t, TcForward(t, esz, x, w), blk, mode)

        def f(m, n, v):
            i = ((m // plane) * g.c_out + n) * plane + m % plane
            assert not written[i]
            written[i] = True
            y[i] = v + bias[n] if bias is not None else v
        tc_epilogue(blk, t.M, g.c_out, acc, f)
    assert written.all()


def tc_backward_data(esz, t, grid, dy, w, dx, mode):
    g = t.g
    plane = g.h * g.w
    written = np.zeros(len(dx), bool)
    for blk in grid_blocks(grid):
        acc = tc_main_loop(esz, t, TcBackwardData(t, esz, dy, w), blk, mode)

        def f(m, n, v):
            i = ((m // plane) * g.c_in + n) * plane + m % plane
            assert not written[i]
            written[i] = True
            dx[i] = v
        tc_epilogue(blk, t.M, g.c_in, acc, f)
    assert written.all()


def tc_backward_weight(esz, t, grid, x, dy, partial, mode):
    written = np.zeros(len(partial), bool)
    for blk in grid_blocks(grid):
        acc = tc_main_loop(esz, t, TcBackwardWeight(t, esz, x, dy), blk, mode)
        base = blk[2] * t.g.c_out * t.N

        def f(m, n, v):
            i = base + m * t.N + n
            assert not written[i]
            written[i] = True
            partial[i] = v
        tc_epilogue(blk, t.g.c_out, t.N, acc, f)
    assert written.all()


def tc_weight_sum(g, cp, splits, partial, dw_len):
    taps = g.kh * g.kw
    n = taps * cp
    ln = g.c_out * g.c_in * taps
    assert ln == dw_len
    i = np.arange(ln)
    tap = i % taps
    ci = (i // taps) % g.c_in
    co = i // (taps * g.c_in)
    at = co * n + tap * cp + ci
    s = np.zeros(ln)
    for z in range(splits):
        s += partial[z * g.c_out * n + at]
    return s
