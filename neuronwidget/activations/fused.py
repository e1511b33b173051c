"""One pass over a layer's activations on the CPU: every statistic and selection of a batch.

:meth:`.state.IndexState._fold` in torch ops reads each layer's activations about twenty
times (window max and min, four moment sums, five histogram steps, three selections that
gather the windows they keep), and on a CPU the bookkeeping cost a quarter of the model's
own time. :func:`fold_layer` reads each value once: a thread takes a block of 64 neurons and
walks the batch window by window and token by token, the block's neurons side by side in
vector lanes, folding each token into the window's max / min, the moment sums, the
histogram (each lane counts into its own row, so no increment waits on the one before) and
the non-zero count. Then it offers the window to each neuron's top, bottom and quantile
selections; when a neuron wins a slot, the window's block is rounded to float16 once, while
it is still in cache, and the slot gets its row.

It keeps what the torch path keeps: the same keys (``state.ordered`` and ``state._mix``
written out here), the K smallest per row, the same histogram bins (``off + v * inv``
rounded once, as torch's fused ``addcmul``), float16 values rounded to nearest even as torch
rounds. Only the moment sums differ in the last bits: float64 per token here, float32 per
chunk there. tests/test_index.py builds both ways and compares. GPUs keep the torch path.
Numba compiles the kernel on first use (about 7 s) and caches it beside this file.
"""

from __future__ import annotations

import threading

import numpy as np

import numba

_LOW31 = 0x7FFFFFFF
_BLOCK = 64  # neurons per work item: 256-byte rows of a window; a constant, so its loops vectorise


_ONE_AT_A_TIME = threading.Lock()  # numba's fallback threading layer (no OpenMP, no TBB) aborts on concurrent calls


def fold_layer(a: np.ndarray, *arrays, threads: int) -> None:
    """:func:`_fold_layer` on at most ``threads`` threads (as many as torch may use), one call at a
    time in this process."""
    n = a.shape[2]
    if n < _BLOCK:  # narrower than one block: zero lanes make it up, computed and dropped
        a = np.concatenate([a, np.zeros(a.shape[:2] + (_BLOCK - n,), dtype=a.dtype)], axis=2)
    with _ONE_AT_A_TIME:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        _fold_layer(a, n, *arrays)


_jit = numba.njit(cache=True, nogil=True)

@_jit
def _mix(x):
    """splitmix64's finaliser on int64, as state._mix (wrapping multiply, logical shifts)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * -4658895280553007687
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * -7723592293110705685
    return x ^ ((x >> 31) & ((1 << 33) - 1))

@_jit
def _ordered(bits):
    """state.ordered on the int32 bit pattern of a float32."""
    i = np.int64(bits)
    return i if i >= 0 else i ^ _LOW31

@_jit
def _half(bits):
    """float32 bit pattern (int32) -> float16 bit pattern (int16), rounded to nearest even as
    torch rounds, without branches (a row of them is vector code). Both ways add just under
    half a unit of the last kept bit plus that bit, then truncate, so ties go to even and a
    carry rounds up into the next binade or to inf. A normal half rebiases the exponent; a
    subnormal half is the significand (implicit bit set) in units of 2**-24."""
    x = np.int64(bits)
    sign = (x >> 16) & 0x8000
    mag = x & 0x7FFFFFFF
    normal = (mag - 0x38000000 + 0xFFF + ((mag >> 13) & 1)) >> 13
    shift = min(max(126 - (mag >> 23), 1), 31)  # 14..24 where the half is subnormal
    full = (mag & 0x7FFFFF) | 0x800000
    subnormal = (full + (1 << (shift - 1)) - 1 + ((full >> shift) & 1)) >> shift
    h = normal if mag >= 0x38800000 else subnormal
    h = 0 if mag < 0x33000000 else h  # below half of 2**-24
    h = (0x7E00 if mag > 0x7F800000 else 0x7C00) if mag >= 0x47800000 else h  # 2**16 and up, inf, nan
    h |= sign
    return np.int16(h - 0x10000 if h >= 0x8000 else h)

@_jit
def _window_halves(a_bits, b, n0, h16):
    """Window b of the block's lanes as float16 bit patterns, h16 [T, _BLOCK]."""
    for t in range(h16.shape[0]):
        row = a_bits[b, t, n0:n0 + _BLOCK]
        out = h16[t]
        for i in range(_BLOCK):
            out[i] = _half(row[i])

@_jit
def _worst(keys, row):
    w = keys[row, 0]
    for s in range(1, keys.shape[1]):
        if keys[row, s] > w:
            w = keys[row, s]
    return w

@_jit
def _keep(keys, vals, row, key, worst, h16, lane):
    """``key`` in ``keys[row]`` in place of its worst kept key ``worst`` (so the K smallest stay),
    with the window's float16 values of ``lane``; returns the row's new worst."""
    slot = 0
    while keys[row, slot] != worst:
        slot += 1
    keys[row, slot] = key
    for t in range(h16.shape[0]):
        vals[row, slot, t] = h16[t, lane]
    return _worst(keys, row)

@numba.njit(cache=True, nogil=True, parallel=True)
def _fold_layer(a, n_real, w0, off, inv, n_bins, sums, hist, lowest, highest, nonzero, count_nonzero,
                top_key, top_a, bot_key, bot_a, q_key, q_a, q_bounds, layer_base, neuron_mix,
                rand_j, rand_slot, rand_a):
    """Fold a [B, T, N] float32 (N >= _BLOCK; neurons from ``n_real`` on are padding) into the
    layer's state arrays, in place (see IndexState: keys int64, kept values as int16 views of
    float16 tensors)."""
    a_bits = a.view(np.int32)
    b_, t_, n_ = a.shape
    n_blocks = (n_real + _BLOCK - 1) // _BLOCK
    nb = q_bounds.shape[1] + 1
    last_bin = np.float32(n_bins + 1)  # the overflow bin
    has_top, has_bot = top_key.shape[1] > 0, bot_key.shape[1] > 0
    for blk in numba.prange(n_blocks):
        n0 = min(blk * _BLOCK, n_ - _BLOCK)  # a last, partial block reaches back into the one before ...
        first = blk * _BLOCK - n0  # ... whose lanes it computes again but does not keep
        last = min(_BLOCK, n_real - n0)
        s1 = np.zeros(_BLOCK)
        s2 = np.zeros(_BLOCK)
        s3 = np.zeros(_BLOCK)
        s4 = np.zeros(_BLOCK)
        nz = np.zeros(_BLOCK, dtype=np.int64)
        mx = np.empty(_BLOCK, dtype=np.float32)
        mn = np.empty(_BLOCK, dtype=np.float32)
        mx_bits, mn_bits = mx.view(np.int32), mn.view(np.int32)
        o64 = np.empty(_BLOCK)
        w64 = np.empty(_BLOCK)
        for i in range(_BLOCK):
            n = min(n0 + i, n_real - 1)  # padding lanes: any bin map will do
            o64[i] = off[n]
            w64[i] = inv[n]
        local = np.zeros((_BLOCK, n_bins + 2), dtype=np.int32)
        bins = np.empty(_BLOCK, dtype=np.int32)
        h16 = np.empty((t_, _BLOCK), dtype=np.int16)
        top_w = np.empty(_BLOCK, dtype=np.int64)
        bot_w = np.empty(_BLOCK, dtype=np.int64)
        q_w = np.empty(_BLOCK * nb, dtype=np.int64)
        for i in range(first, last):
            n = n0 + i
            if has_top:
                top_w[i] = _worst(top_key, n)
            if has_bot:
                bot_w[i] = _worst(bot_key, n)
            for j in range(nb):
                q_w[i * nb + j] = _worst(q_key, n * nb + j)
        for b in range(b_):
            for i in range(_BLOCK):
                mx[i] = -np.inf
                mn[i] = np.inf
            # token by token, the block's neurons side by side: constant-length loops over
            # contiguous lanes, which LLVM turns into vector code
            for t in range(t_):
                row = a[b, t, n0:n0 + _BLOCK]
                for i in range(_BLOCK):
                    v = row[i]
                    mx[i] = max(mx[i], v)
                    mn[i] = min(mn[i], v)
                    nz[i] += v != 0
                for i in range(_BLOCK):
                    d = np.float64(row[i])
                    d2 = d * d
                    s1[i] += d
                    s2[i] += d2
                    s3[i] += d2 * d
                    s4[i] += d2 * d2
                for i in range(_BLOCK):
                    # as torch's addcmul: one rounding of off + v * inv (the float64 product is exact)
                    x = np.float32(o64[i] + np.float64(row[i]) * w64[i])
                    bins[i] = np.int32(min(max(x, np.float32(0)), last_bin))
                for i in range(_BLOCK):  # each lane its own row: no increment waits on the one before
                    local[i, bins[i]] += 1
            wid = np.int64(w0 + b)
            base = _mix(wid + layer_base)
            ready = False  # h16 holds this window: made when a lane first wins a slot
            for i in range(first, last):
                n = n0 + i
                if mx[i] > highest[n]:
                    highest[n] = mx[i]
                if mn[i] < lowest[n]:
                    lowest[n] = mn[i]
                qbin = 0
                for j in range(nb - 1):
                    if mx[i] >= q_bounds[n, j]:
                        qbin += 1
                qrow = i * nb + qbin
                top_key_now = -_ordered(mx_bits[i]) * (1 << 32) + wid
                bot_key_now = _ordered(mn_bits[i]) * (1 << 32) + wid
                q_key_now = ((_mix(base + neuron_mix[n]) >> 33) & _LOW31) * (1 << 32) + wid
                win_top = has_top and top_key_now < top_w[i]
                win_bot = has_bot and bot_key_now < bot_w[i]
                win_q = q_key_now < q_w[qrow]
                if (win_top or win_bot or win_q) and not ready:
                    _window_halves(a_bits, b, n0, h16)
                    ready = True
                if win_top:
                    top_w[i] = _keep(top_key, top_a, n, top_key_now, top_w[i], h16, i)
                if win_bot:
                    bot_w[i] = _keep(bot_key, bot_a, n, bot_key_now, bot_w[i], h16, i)
                if win_q:
                    q_w[qrow] = _keep(q_key, q_a, n * nb + qbin, q_key_now, q_w[qrow], h16, i)
        for r in range(rand_j.shape[0]):
            j, slot = rand_j[r], rand_slot[r]
            for i in range(first, last):
                for t in range(t_):
                    rand_a[n0 + i, slot, t] = _half(a_bits[j, t, n0 + i])
        for i in range(first, last):
            n = n0 + i
            for k in range(n_bins + 2):
                hist[n, k] += local[i, k]
            sums[n, 0] += s1[i]
            sums[n, 1] += s2[i]
            sums[n, 2] += s3[i]
            sums[n, 3] += s4[i]
            if count_nonzero:
                nonzero[n] += nz[i]
