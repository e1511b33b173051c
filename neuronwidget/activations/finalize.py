"""A complete index state (:mod:`.state`) as the arrays of the on-disk index (:mod:`.store`):
each layer's window lists sorted best first, moments from the summed powers, histogram
counts and edges, and every window a list references once, its activations as codes
(:mod:`.codes`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import codes
from .state import _NB, EMPTY, IndexState, Plan, unordered, window_ids_of
from .store import BOTTOM, N_BINS, QUANTILE, TOP, ref_layout


def _sorted(key: torch.Tensor, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.sort(key, dim=1).indices  # keys are unique: no ties
    return key.gather(1, order), acts.gather(1, order[..., None].expand_as(acts))


def _ids_dtype(n_windows: int) -> type:
    return np.int16 if n_windows < (1 << 15) else np.int32  # -1 marks an empty slot


def common_arrays(plan: Plan) -> dict[str, np.ndarray]:
    """The arrays every layer shares: the corpus windows and the random windows' ids."""
    return {"windows": plan.windows.astype(np.int32), "rand_ids": plan.rand_ids.astype(np.int32)}


def finalize_arrays(plan: Plan, state: IndexState) -> dict[int, dict[str, np.ndarray]]:
    """{model layer: the arrays of its on-disk part (see :mod:`.store`)} from a complete state."""
    missing = plan.n_batches - len(state.batches_done)
    if missing:
        raise ValueError(f"index state is incomplete: {missing} of {plan.n_batches} batches not folded")
    n, n_tokens = state.n_neurons, int(plan.windows.size)
    ids_dtype = _ids_dtype(plan.n_windows)
    total = torch.zeros((len(state.layer_ids), n, 4), dtype=torch.float64, device=state.dev)
    for shard in sorted(state.shard_moments):  # shard order: the same sum however shards were spread
        total += state.shard_moments[shard]
    out: dict[int, dict[str, np.ndarray]] = {}
    for pos, (layer, s) in enumerate(zip(state.layer_ids, state.layers)):
        lists = _window_lists(s, n, plan.n_quantile)
        count_dtype = torch.int16 if n_tokens < (1 << 15) else torch.int32 if n_tokens < (1 << 31) else torch.int64
        layer_arrays = {
            **{k: lists[k] for k in ("top_ids", "top_max", "bottom_ids", "bottom_min", "q_ids")},
            "q_bounds": state.calib.q_bounds[pos],
            "moments": _moments(total[pos] / n_tokens).float(),  # summed in float64; float32 is plenty to keep
            "hist_counts": s.hist.to(count_dtype),  # a count never exceeds the tokens
            "extremes": torch.stack([s.lowest, s.highest], 1),
            "hist_range": _hist_range(s, state.calib.lo[pos], state.calib.hi[pos]),
        }
        if state.count_nonzero:
            layer_arrays["nonzero_counts"] = s.nonzero
        arrays = {k: v.cpu().numpy() for k, v in layer_arrays.items()}
        for k in ("top_ids", "bottom_ids", "q_ids"):
            arrays[k] = arrays[k].astype(ids_dtype)
        arrays.update(_references(plan, s, lists, n))
        out[layer] = arrays
    return out


def _window_lists(s: Any, n: int, q: int) -> dict[str, torch.Tensor]:
    """A layer's top / bottom / quantile windows, best first (-1 where a list is short), with the
    exact extreme of each top and bottom window, and the activations kept for each."""
    top_key, top_a = _sorted(s.top_key, s.top_a)
    bot_key, bot_a = _sorted(s.bot_key, s.bot_a)
    q_key, q_a = _sorted(s.q_key, s.q_a)
    top_ok, bot_ok, q_ok = top_key != EMPTY, bot_key != EMPTY, q_key != EMPTY
    return {
        "top_ids": torch.where(top_ok, window_ids_of(top_key), -1), "top_a": top_a,
        "bottom_ids": torch.where(bot_ok, window_ids_of(bot_key), -1), "bottom_a": bot_a,
        "q_ids": torch.where(q_ok, window_ids_of(q_key), -1).view(n, _NB, q), "q_a": q_a,
        "top_max": torch.where(top_ok, unordered(-(top_key >> 32)), torch.nan),
        "bottom_min": torch.where(bot_ok, unordered(bot_key >> 32), torch.nan),
    }


def _references(plan: Plan, s: Any, lists: dict[str, torch.Tensor], n: int) -> dict[str, np.ndarray]:
    """Per neuron, every window any of its lists references, once (:func:`.store.ref_layout`), with
    its activations as codes: 6-bit (``ref_codes``), 4-bit for windows only the quantile samples
    reference (``sample_codes``), and the range bytes the exact extremes do not give."""
    ids = {k: lists[k].cpu().numpy() for k in ("top_ids", "bottom_ids", "q_ids")}
    neuron, window, flags, src = ref_layout(ids["top_ids"], ids["bottom_ids"], plan.rand_ids, ids["q_ids"])
    acts = torch.cat([lists["top_a"], lists["bottom_a"], s.rand_a, lists["q_a"].view(n, _NB * plan.n_quantile, -1)], 1)
    ref_acts = acts.reshape(-1, acts.shape[2])[torch.from_numpy(src).to(acts.device)].float().cpu().numpy()
    highest, lowest = s.highest.cpu().numpy()[neuron], s.lowest.cpu().numpy()[neuron]
    # each window's range: its exact maximum when it is a top window (the first list, so src
    # points into it), its exact minimum when it is a bottom window, else its stored values'
    hi, lo = ref_acts.max(1), ref_acts.min(1)
    top = (flags & TOP) != 0
    hi[top] = lists["top_max"].cpu().numpy().reshape(-1)[neuron[top] * plan.top_k + src[top] % acts.shape[1]]
    bottom = (flags & BOTTOM) != 0
    if bottom.any():
        b_ids, b_min = ids["bottom_ids"], lists["bottom_min"].cpu().numpy()
        col = (b_ids[neuron[bottom]] == window[bottom, None]).argmax(1)  # each listed once
        lo[bottom] = b_min[neuron[bottom], col]
    ranges = codes.range_codes(hi, lo, highest, lowest)
    exact_hi, exact_lo = np.where(top, hi, np.nan), np.where(bottom, lo, np.nan)
    sample = flags == QUANTILE
    out = {}
    for name, rows, bits in (("ref_codes", ~sample, codes.BITS), ("sample_codes", sample, codes.SAMPLE_BITS)):
        out[name] = codes.encode(ref_acts[rows], ranges[rows], highest[rows], lowest[rows], bits, exact_hi[rows],
                                 exact_lo[rows])
    out["ref_hi"], out["ref_lo"] = ranges[~top, 0], ranges[~bottom, 1]
    return out


def _moments(raw: torch.Tensor) -> torch.Tensor:
    """[n, 4] mean, variance, skewness, excess kurtosis from the raw moments E[a^1..4] ([n, 4])."""
    e1, e2, e3, e4 = raw.unbind(1)
    var = (e2 - e1 ** 2).clamp(min=0)
    m3 = e3 - 3 * e1 * e2 + 2 * e1 ** 3
    m4 = e4 - 4 * e1 * e3 + 6 * e1 ** 2 * e2 - 3 * e1 ** 4
    safe = torch.where(var > 0, var, torch.ones_like(var))
    skew = torch.where(var > 0, m3 / safe ** 1.5, torch.zeros_like(var))
    kurt = torch.where(var > 0, m4 / safe ** 2 - 3, torch.zeros_like(var))
    return torch.stack([e1, var, skew, kurt], 1)


def _hist_range(s: Any, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[n, 4] histogram edges: underflow start, calibrated range, overflow end (never empty-width)."""
    width = (hi - lo) / N_BINS
    first_edge = torch.minimum(s.lowest, lo - width)  # underflow bin
    last_edge = torch.maximum(s.highest, hi + width)  # overflow bin
    return torch.stack([first_edge, lo, hi, last_edge], 1).float()


__all__ = ["common_arrays", "finalize_arrays"]
