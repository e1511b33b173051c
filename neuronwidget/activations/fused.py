"""One pass over a layer's activations on the CPU: every statistic and selection of a batch.

:meth:`.state.IndexState._fold` in torch ops reads each layer's activations about twenty
times (window max and min, four moment sums, five histogram steps, three selections that
gather the windows they keep), and on a CPU the bookkeeping cost a quarter of the model's
own time. :func:`fold_layer` reads each value once: a thread takes a block of neurons and
walks the batch window by window; for each neuron it folds the window's tokens (in L1) into
the window's max / min, the moment sums, the histogram and the non-zero count, then offers
the window to the neuron's top, bottom and quantile selections and copies it into the slots
it wins while it is still in cache.

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
_BLOCK = 64  # neurons per work item: 256-byte rows of a window, a histogram block in L1/L2


_ONE_AT_A_TIME = threading.Lock()  # numba's fallback threading layer (no OpenMP, no TBB) aborts on concurrent calls


def fold_layer(*arrays, threads: int) -> None:
    """:func:`_fold_layer` on at most ``threads`` threads (as many as torch may use), one call at a
    time in this process."""
    with _ONE_AT_A_TIME:
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        _fold_layer(*arrays)


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
    torch rounds. A normal half: rebias the exponent, add just under half a unit of the last
    kept bit plus that bit (so ties go to even), truncate; a carry rounds up into the next
    binade or to inf. A subnormal half: the significand shifted to units of 2**-24, rounded."""
    x = np.int64(bits) & 0xFFFFFFFF
    sign = (x >> 16) & 0x8000
    mag = x & 0x7FFFFFFF
    if mag >= 0x47800000:  # 2**16 and up, inf, nan
        h = 0x7E00 if mag > 0x7F800000 else 0x7C00
    elif mag >= 0x38800000:  # 2**-14 and up: a normal half
        h = (mag - 0x38000000 + 0xFFF + ((mag >> 13) & 1)) >> 13
    elif mag < 0x33000000:  # below half of 2**-24: zero
        h = 0
    else:
        shift = 126 - (mag >> 23)
        full = (mag & 0x7FFFFF) | 0x800000
        h = full >> shift
        rem, half = full & ((1 << shift) - 1), 1 << (shift - 1)
        if rem > half or (rem == half and (h & 1) == 1):
            h += 1
    h |= sign
    return np.int16(h - 0x10000 if h >= 0x8000 else h)

@_jit
def _worst(keys, row):
    w = keys[row, 0]
    for s in range(1, keys.shape[1]):
        if keys[row, s] > w:
            w = keys[row, s]
    return w

@_jit
def _offer(keys, vals, row, key, worst, a_bits, b, n):
    """Keep ``key`` in ``keys[row]`` in place of the worst kept key ``worst`` if it beats it
    (so the K smallest stay), with window b's values of neuron n; returns the row's worst."""
    if key >= worst:
        return worst
    slot = 0
    while keys[row, slot] != worst:
        slot += 1
    keys[row, slot] = key
    for t in range(a_bits.shape[1]):
        vals[row, slot, t] = _half(a_bits[b, t, n])
    return _worst(keys, row)

@numba.njit(cache=True, nogil=True, parallel=True)
def _fold_layer(a, w0, off, inv, n_bins, sums, hist, lowest, highest, nonzero, count_nonzero,
               top_key, top_a, bot_key, bot_a, q_key, q_a, q_bounds, layer_base, neuron_mix,
               rand_j, rand_slot, rand_a):
    """Fold a [B, T, N] float32 into the layer's state arrays, in place (see IndexState: keys
    int64, kept values as int16 views of float16 tensors)."""
    a_bits = a.view(np.int32)
    b_, t_, n_ = a.shape
    n_blocks = (n_ + _BLOCK - 1) // _BLOCK
    nb = q_bounds.shape[1] + 1
    for blk in numba.prange(n_blocks):
        n0 = blk * _BLOCK
        n1 = min(n_, n0 + _BLOCK)
        m = n1 - n0
        s1 = np.zeros(m)
        s2 = np.zeros(m)
        s3 = np.zeros(m)
        s4 = np.zeros(m)
        nz = np.zeros(m, dtype=np.int64)
        mx = np.empty(m, dtype=np.float32)
        mn = np.empty(m, dtype=np.float32)
        mx_bits, mn_bits = mx.view(np.int32), mn.view(np.int32)
        odd = np.zeros((m, n_bins + 2), dtype=np.int64)
        has_top, has_bot = top_key.shape[1] > 0, bot_key.shape[1] > 0
        top_w = np.empty(m, dtype=np.int64)
        bot_w = np.empty(m, dtype=np.int64)
        q_w = np.empty(m * nb, dtype=np.int64)
        for i in range(m):
            n = n0 + i
            if has_top:
                top_w[i] = _worst(top_key, n)
            if has_bot:
                bot_w[i] = _worst(bot_key, n)
            for j in range(nb):
                q_w[i * nb + j] = _worst(q_key, n * nb + j)
        for b in range(b_):
            for i in range(m):  # neuron by neuron, its 64 tokens of this window (in L1) in registers
                n = n0 + i
                hi = np.float32(-np.inf)
                lo = np.float32(np.inf)
                c1 = c2 = c3 = c4 = 0.0
                zeros = 0
                o, w = np.float64(off[n]), np.float64(inv[n])
                for t in range(t_):
                    v = a[b, t, n]
                    hi = max(hi, v)
                    lo = min(lo, v)
                    d = np.float64(v)
                    d2 = d * d
                    c1 += d
                    c2 += d2
                    c3 += d2 * d
                    c4 += d2 * d2
                    zeros += v == 0
                    # as torch's addcmul: one rounding of off + v * inv (the float64 product is exact);
                    # odd tokens count apart, so a run of tokens in one bin does not wait on its
                    # own increments
                    x = np.float32(o + d * w)
                    k = np.int64(min(max(x, np.float32(0)), np.float32(n_bins + 1)))
                    if t & 1:
                        odd[i, k] += 1
                    else:
                        hist[n, k] += 1
                mx[i], mn[i] = hi, lo
                s1[i] += c1
                s2[i] += c2
                s3[i] += c3
                s4[i] += c4
                nz[i] += t_ - zeros
            wid = np.int64(w0 + b)
            base = _mix(wid + layer_base)
            for i in range(m):
                n = n0 + i
                if mx[i] > highest[n]:
                    highest[n] = mx[i]
                if mn[i] < lowest[n]:
                    lowest[n] = mn[i]
                if has_top:
                    top_w[i] = _offer(top_key, top_a, n, -_ordered(mx_bits[i]) * (1 << 32) + wid, top_w[i],
                                      a_bits, b, n)
                if has_bot:
                    bot_w[i] = _offer(bot_key, bot_a, n, _ordered(mn_bits[i]) * (1 << 32) + wid, bot_w[i],
                                      a_bits, b, n)
                qbin = 0
                for j in range(nb - 1):
                    if mx[i] >= q_bounds[n, j]:
                        qbin += 1
                u = (_mix(base + neuron_mix[n]) >> 33) & _LOW31
                q_w[i * nb + qbin] = _offer(q_key, q_a, n * nb + qbin, u * (1 << 32) + wid, q_w[i * nb + qbin],
                                            a_bits, b, n)
        for r in range(rand_j.shape[0]):
            j, slot = rand_j[r], rand_slot[r]
            for i in range(m):
                for t in range(t_):
                    rand_a[n0 + i, slot, t] = _half(a_bits[j, t, n0 + i])
        for i in range(m):
            n = n0 + i
            for k in range(n_bins + 2):
                hist[n, k] += odd[i, k]
            sums[n, 0] += s1[i]
            sums[n, 1] += s2[i]
            sums[n, 2] += s3[i]
            sums[n, 3] += s4[i]
            if count_nonzero:
                nonzero[n] += nz[i]
