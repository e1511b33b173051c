"""Compact window activations: companded codes with a per-window range.

An index keeps about a hundred 64-token windows per neuron (top, bottom, random and
quantile samples). Stored as float16 that was 128 bytes a window and nine tenths of an
index. The method reads these values coarsely (the explainer and simulator see integers
0-10; a score is a correlation), and a view shows exact values recomputed by the model
(:meth:`NeuronIndex.record`), so the store keeps

- per window, its range ``[lo, hi]`` (``lo = min(0, window min)``, ``hi = max(0, window
  max)``) as two 8-bit codes relative to the neuron's exact range over the corpus
  (``hi = neuron_max * (h / 255) ** 2``, rounded up so the window's values stay inside;
  :func:`range_codes`). A top window's ``h`` follows from its exact maximum and a bottom
  window's ``lo`` code from its exact minimum, so the store writes those bytes only for the
  other windows;
- per token, a ``bits``-bit code: ``2**bits - 1`` steps split between the positive part
  ``[0, hi]`` and the negative part ``[lo, 0]`` in proportion to ``hi ** g`` and ``|lo| ** g``,
  spaced as ``(a / hi) ** g`` (``g = GAMMA``), so zero is exact, small values get fine steps
  and a window's few large values coarser ones; packed ``bits`` bits a token.

6 bits (48 bytes a window) for the windows scores and views read; 4 bits (32 bytes) for the
windows only the quantile samples reference (extra fitting records of the rules explainer).
Measured on SmolLM2-135M (both sides, the rules explainer and simulator, 100 neurons;
benchmarks/index.py): simulation scores from these values differ from scores of the exact
values by at most 0.0055 (95th percentile 0.0024); plain 6-bit steps (no companding,
symmetric) gave up to 0.007, 5-bit companded up to 0.008. The 4-bit samples left the rules
explainer's median scores unchanged (benchmarks/quality.py --no-llm).
"""

from __future__ import annotations

import numpy as np

BITS = 6  # the windows scores and views read
SAMPLE_BITS = 4  # windows only the quantile samples reference
GAMMA = 0.65
RANGE_STEPS = 255


def packed_bytes(bits: int) -> int:
    """Bytes per 64-token window at ``bits`` bits a token."""
    return 64 * bits // 8


def range_codes(hi: np.ndarray, lo: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """uint8 [R, 2]: the codes (h, lc) of windows whose values lie in ``[lo, hi]``, relative to
    the owning neuron's maximum ``pos`` and minimum ``neg`` (each [R]); the smallest codes whose
    decoded range still holds the window. The store recomputes a top window's ``h`` from its
    exact maximum with this same function, so writer and reader agree bit for bit."""
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0)
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0)
    pos = np.maximum(np.asarray(pos, dtype=np.float64), 0)
    neg = np.minimum(np.asarray(neg, dtype=np.float64), 0)
    safe_p, safe_n = np.where(pos > 0, pos, 1.0), np.where(neg < 0, -neg, 1.0)
    h = np.where(pos > 0, np.ceil(RANGE_STEPS * np.sqrt(np.minimum(hi / safe_p, 1.0))), 0)
    lc = np.where(neg < 0, np.ceil(RANGE_STEPS * np.sqrt(np.minimum(-lo / safe_n, 1.0))), 0)
    return np.stack([h, lc], -1).astype(np.uint8)


def _split(h: np.ndarray, lo_code: np.ndarray, steps: int) -> np.ndarray:
    """Steps given to the positive part of each window (the rest go to the negative part), from
    the two range codes alone, so encoder and decoder agree exactly."""
    wp = (h.astype(np.float64) / RANGE_STEPS) ** (2 * GAMMA)
    wn = (lo_code.astype(np.float64) / RANGE_STEPS) ** (2 * GAMMA)
    total = wp + wn
    p = np.rint(steps * wp / np.where(total > 0, total, 1.0))
    p = np.where((h > 0) & (lo_code > 0), np.clip(p, 1, steps - 1), np.where(lo_code > 0, 0, steps))
    return p.astype(np.int64)


def _bounds(ranges: np.ndarray, pos: np.ndarray, neg: np.ndarray, hi: np.ndarray | None,
            lo: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Each window's [lo, hi] (hi >= 0 >= lo): from its range codes, or, where ``hi`` / ``lo``
    (float, NaN = unknown) give its exact maximum / minimum, exactly that."""
    h, lc = ranges[:, :1].astype(np.float64), ranges[:, 1:].astype(np.float64)
    pos = np.maximum(np.asarray(pos, dtype=np.float64), 0).reshape(-1, 1)
    neg = np.minimum(np.asarray(neg, dtype=np.float64), 0).reshape(-1, 1)
    top, bottom = pos * (h / RANGE_STEPS) ** 2, neg * (lc / RANGE_STEPS) ** 2
    if hi is not None:
        hi = np.asarray(hi, dtype=np.float64).reshape(-1, 1)
        top = np.where(np.isnan(hi), top, np.maximum(hi, 0))
    if lo is not None:
        lo = np.asarray(lo, dtype=np.float64).reshape(-1, 1)
        bottom = np.where(np.isnan(lo), bottom, np.minimum(lo, 0))
    return top, bottom


def encode(acts: np.ndarray, ranges: np.ndarray, pos: np.ndarray, neg: np.ndarray, bits: int = BITS,
           hi: np.ndarray | None = None, lo: np.ndarray | None = None) -> np.ndarray:
    """Packed codes uint8 [R, packed_bytes(bits)] of ``acts`` [R, 64] in windows of ``ranges``
    (:func:`range_codes`); ``pos`` [R] and ``neg`` [R] are the owning neuron's exact maximum and
    minimum; ``hi`` / ``lo`` [R] a window's exact maximum / minimum where known (NaN elsewhere:
    a top window's maximum, a bottom window's minimum), used as its bound instead of the
    rounded-up range code (finer steps where scores read)."""
    steps = (1 << bits) - 1
    a = np.asarray(acts, dtype=np.float64)
    ranges = np.asarray(ranges)
    p = _split(ranges[:, :1], ranges[:, 1:], steps)  # [R, 1]
    n = steps - p
    top, bottom = _bounds(ranges, pos, neg, hi, lo)
    a = np.clip(a, bottom, top)  # float16 storage may round a value just past the float32 extreme
    up = np.rint((a / np.where(top > 0, top, 1.0)).clip(0, None) ** GAMMA * p)
    down = np.rint((a / np.where(bottom < 0, bottom, -1.0)).clip(0, None) ** GAMMA * n)
    return pack(np.where(a >= 0, n + up, n - down).astype(np.uint8), bits)


def decode(packed: np.ndarray, ranges: np.ndarray, pos: np.ndarray, neg: np.ndarray, bits: int = BITS,
           hi: np.ndarray | None = None, lo: np.ndarray | None = None) -> np.ndarray:
    """float32 [R, 64]: the values :func:`encode` stored (the same ``hi`` / ``lo``)."""
    steps = (1 << bits) - 1
    c = unpack(np.asarray(packed), bits).astype(np.float64)
    ranges = np.asarray(ranges)
    p = _split(ranges[:, :1], ranges[:, 1:], steps)
    n = steps - p
    top, bottom = _bounds(ranges, pos, neg, hi, lo)
    up = np.where(p > 0, ((c - n) / np.where(p > 0, p, 1)).clip(0, None) ** (1 / GAMMA), 0) * top
    down = np.where(n > 0, ((n - c) / np.where(n > 0, n, 1)).clip(0, None) ** (1 / GAMMA), 0) * bottom
    return np.where(c >= n, up, down).astype(np.float32)


def pack(codes: np.ndarray, bits: int = BITS) -> np.ndarray:
    """uint8 [R, 64] of ``bits``-bit codes -> uint8 [R, 8 * bits] (most significant bit first)."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    bitplane = (np.asarray(codes, dtype=np.uint8)[:, :, None] >> shifts) & 1  # [R, 64, bits]
    return np.packbits(bitplane.reshape(len(bitplane), 64 * bits), axis=1)


def unpack(packed: np.ndarray, bits: int = BITS) -> np.ndarray:
    bitplane = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1).reshape(len(packed), 64, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint8)
    return (bitplane * weights).sum(2, dtype=np.uint8)


__all__ = ["BITS", "GAMMA", "SAMPLE_BITS", "decode", "encode", "pack", "packed_bytes", "range_codes", "unpack"]
