"""Compact window activations: companded codes with a per-window range.

An index keeps about a hundred 64-token windows per neuron (top, bottom, random and
quantile samples). Stored as float16 that was 128 bytes a window and nine tenths of an
index. The method reads these values coarsely (the explainer and simulator see integers
0-10; a score is a correlation), and a view shows exact values recomputed by the model
(:meth:`NeuronIndex.record`), so the store keeps

- per window, its range ``[lo, hi]`` (``lo = min(0, window min)``, ``hi = max(0, window
  max)``) as two 8-bit codes relative to the neuron's exact range over the corpus
  (``hi ~ neuron_max * (h / 255) ** 2``, the nearest code, or the one above where the nearest
  would cut the window's extreme by more than ``MAX_CUT`` = 1%: values past it are clipped to
  it; :func:`range_codes`). A top window's ``hi`` is its exact maximum and a bottom window's
  ``lo`` its exact minimum (the store writes those range bytes only for the other windows);
- per token, a ``bits``-bit code: ``2**bits - 1`` steps split between the positive part
  ``[0, hi]`` and the negative part ``[lo, 0]`` in proportion to ``(hi / neuron_max) ** 0.65``
  and ``(lo / neuron_min) ** 0.65`` (``SPLIT_POWER``), the part an exact extreme bounds weighing
  ``EXACT_WEIGHT`` = 1.5 times more (a top window's positive part, a bottom window's negative
  part: the tokens a score of that side weighs most); steps spaced as ``(a / hi) ** g``
  (``g = GAMMA`` = 0.8), so zero is exact, small values get finer steps and large ones coarser;
  packed ``bits`` bits a token. A step decodes to the mean of the values in it (for values
  denser towards zero, :func:`_level`: a little below its grid point), its ends exactly: zero,
  and the bound (a top window's maximum decodes exactly).

6 bits (48 bytes a window) for the windows scores and views read; 4 bits (32 bytes) for the
windows only the quantile samples reference (extra fitting records of the rules explainer).
Measured on SmolLM2-135M (both sides, the rules explainer and simulator, the 100 neurons of
benchmarks/index.py): simulation scores from these values differ from scores of the exact
values by at most 0.0026 (95th percentile 0.0017, mean 0.0007). Format 5 (``g`` 0.65, the
steps split by ``hi ** g``, range codes rounded up, steps decoded at their grid points) gave
0.0055 (0.0024, 0.0009). Re-encoding exact values offline (those 100 neurons and 200 more,
both sides, the valid split and three more top/random splits: 2,400 scores), the
root-mean-square difference went
0.00116 -> 0.00090 and the largest 0.0059 -> 0.0035: nearest range codes -8% (the rounded-up
bound had decoded each random window's largest values too high, a bias that lowered scores),
``g`` 0.8 -8%, the exact part's weight -5%, the mean-of-step decoder -2%; ``g`` 0.4-1.0,
split powers 0.4-1.0, weights 1.25-6, log-scaled range codes and error diffusion did not do
better. Plain 6-bit steps (no companding, symmetric) gave up to 0.007, 5-bit companded up to
0.008. The 4-bit samples left the rules explainer's median scores unchanged
(benchmarks/quality.py --no-llm, format 5); format 6 moved its medians (plain and best-of-5, each
side) by at most 0.008 either way from format 5's.
"""

from __future__ import annotations

import numpy as np

BITS = 6  # the windows scores and views read
SAMPLE_BITS = 4  # windows only the quantile samples reference
GAMMA = 0.8  # companding exponent: steps spaced as (a / bound) ** GAMMA
SPLIT_POWER = 0.65  # a part's share of the steps grows as (its bound / the neuron's extreme) ** SPLIT_POWER
EXACT_WEIGHT = 1.5  # ... times this for a part bounded by the window's exact extreme
DENSITY = -0.8  # a step decodes to its mean for values of density ∝ u ** DENSITY (u: the companded value)
RANGE_STEPS = 255
MAX_CUT = 0.01  # a range code may cut a window's extreme by at most this fraction


def packed_bytes(bits: int) -> int:
    """Bytes per 64-token window at ``bits`` bits a token."""
    return 64 * bits // 8


def _range_code(frac: np.ndarray) -> np.ndarray:
    """Code of a bound ``frac`` of the neuron's extreme (0..1): the nearest of ``(c / 255) ** 2``,
    or the one above where the nearest would cut the bound by more than ``MAX_CUT``; at least 1
    for a bound above 0 (a part with values keeps its steps)."""
    s = RANGE_STEPS * np.sqrt(frac)
    near = np.rint(s)
    cut = (near / np.where(s > 0, s, 1.0)) ** 2 < 1 - MAX_CUT
    return np.where(frac > 0, np.maximum(np.where(cut, np.ceil(s), near), 1), 0)


def range_codes(hi: np.ndarray, lo: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """uint8 [R, 2]: the codes (h, lc) of windows whose values lie in ``[lo, hi]``, relative to
    the owning neuron's maximum ``pos`` and minimum ``neg`` (each [R]): ``hi ~ pos * (h / 255) ** 2``
    (:func:`_range_code`: values past the decoded bound, at most ``MAX_CUT`` of it, are clipped to
    it). The store recomputes a top window's ``h`` from its exact maximum with this same
    function, so writer and reader agree bit for bit."""
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0)
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0)
    pos = np.maximum(np.asarray(pos, dtype=np.float64), 0)
    neg = np.minimum(np.asarray(neg, dtype=np.float64), 0)
    safe_p, safe_n = np.where(pos > 0, pos, 1.0), np.where(neg < 0, -neg, 1.0)
    h = np.where(pos > 0, _range_code(np.minimum(hi / safe_p, 1.0)), 0)
    lc = np.where(neg < 0, _range_code(np.minimum(-lo / safe_n, 1.0)), 0)
    return np.stack([h, lc], -1).astype(np.uint8)


def _known(x: np.ndarray | None, n: int) -> np.ndarray:
    """[n, 1] bool: where an exact extreme is given (not NaN)."""
    if x is None:
        return np.zeros((n, 1), dtype=bool)
    return ~np.isnan(np.asarray(x, dtype=np.float64).reshape(-1, 1))


def _split(ranges: np.ndarray, hi: np.ndarray | None, lo: np.ndarray | None, steps: int) -> np.ndarray:
    """[R, 1] steps given to the positive part of each window (the rest go to the negative part),
    from its range codes and which of its extremes are exact (the part scores read most: a top
    window's positive part, a bottom window's negative part, weighs ``EXACT_WEIGHT`` more), so
    encoder and decoder agree exactly."""
    h, lc = ranges[:, :1].astype(np.float64), ranges[:, 1:].astype(np.float64)
    wp = (h / RANGE_STEPS) ** (2 * SPLIT_POWER) * np.where(_known(hi, len(ranges)), EXACT_WEIGHT, 1.0)
    wn = (lc / RANGE_STEPS) ** (2 * SPLIT_POWER) * np.where(_known(lo, len(ranges)), EXACT_WEIGHT, 1.0)
    total = wp + wn
    p = np.rint(steps * wp / np.where(total > 0, total, 1.0))
    p = np.where((h > 0) & (lc > 0), np.clip(p, 1, steps - 1), np.where(lc > 0, 0, steps))
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


def _level(k: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Decoded fraction of the bound for step ``k`` of ``m`` (k <= m): the values that encode to
    ``k`` have companded value ``u = m * fraction ** GAMMA`` in ``[k - 1/2, k + 1/2]``; this is their
    mean ``fraction`` for a density ∝ ``u ** DENSITY`` there (mostly small values: it sits a little
    below the step's grid point ``(k / m) ** (1 / GAMMA)``, which the endpoints keep: 0 is exact,
    the last step is the bound)."""
    k = k.astype(np.float64)
    m = np.broadcast_to(m, k.shape).astype(np.float64)
    a, b = np.clip(k - 0.5, 0, None), np.minimum(k + 0.5, m)
    e1, e0 = 1 / GAMMA + DENSITY + 1, DENSITY + 1
    mean = ((b ** e1 - a ** e1) / e1) / np.maximum((b ** e0 - a ** e0) / e0, 1e-300)  # mean of u ** (1 / GAMMA)
    u = np.where(k >= m, m ** (1 / GAMMA), np.where(k <= 0, 0.0, mean))
    return u / np.where(m > 0, m, 1) ** (1 / GAMMA)


def encode(acts: np.ndarray, ranges: np.ndarray, pos: np.ndarray, neg: np.ndarray, bits: int = BITS,
           hi: np.ndarray | None = None, lo: np.ndarray | None = None) -> np.ndarray:
    """Packed codes uint8 [R, packed_bytes(bits)] of ``acts`` [R, 64] in windows of ``ranges``
    (:func:`range_codes`); ``pos`` [R] and ``neg`` [R] are the owning neuron's exact maximum and
    minimum; ``hi`` / ``lo`` [R] a window's exact maximum / minimum where known (NaN elsewhere:
    a top window's maximum, a bottom window's minimum), used as its bound instead of the
    range code (finer steps where scores read), and giving that part more of the steps."""
    steps = (1 << bits) - 1
    a = np.asarray(acts, dtype=np.float64)
    ranges = np.asarray(ranges)
    p = _split(ranges, hi, lo, steps)  # [R, 1]
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
    c = unpack(np.asarray(packed), bits).astype(np.int64)
    ranges = np.asarray(ranges)
    p = _split(ranges, hi, lo, steps)
    n = steps - p
    top, bottom = _bounds(ranges, pos, neg, hi, lo)
    up = _level((c - n).clip(0, None), p) * top
    down = _level((n - c).clip(0, None), n) * bottom
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


__all__ = ["BITS", "DENSITY", "EXACT_WEIGHT", "GAMMA", "SAMPLE_BITS", "SPLIT_POWER", "decode", "encode", "pack", "packed_bytes",
           "range_codes", "unpack"]
