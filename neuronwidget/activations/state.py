"""The mergeable per-neuron state of an index build (see :mod:`.build` for what it holds).

Selections (top-k by window maximum, bottom-k by window minimum, quantile samples by a
pseudo-random key) all keep the K smallest int64 keys per row. A key is
``rank_value * 2**32 + window_id``: the rank value is an order-preserving integer image of
the float32 statistic (negated for top-k) or a hash of (seed, layer, neuron, window), so
keys are unique, ties break by window id, and the kept set is the same whatever order or
split the windows are seen in. ``IndexState.merge`` combines the states of disjoint shards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..subject import run_mlp_hooks
from .store import N_BINS, QUANTILES

MAX_SHARDS = 64  # a build's windows are cut into at most this many shards of whole batches
Progress = Callable[[int, int, str], None]
EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
_NB = len(QUANTILES) + 1
_CHUNK_WINDOWS = 4  # CPU: per-token statistics over 4 windows at a time stay in cache


def ordered(x: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 with the same order (an involution on the int32 bit pattern)."""
    i = x.float().contiguous().view(torch.int32).long()
    return torch.where(i >= 0, i, i ^ 0x7FFFFFFF)


def unordered(o: torch.Tensor) -> torch.Tensor:
    i = torch.where(o >= 0, o, o ^ 0x7FFFFFFF)
    return i.to(torch.int32).view(torch.float32)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping multiply, logical shifts)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * -4658895280553007687  # 0xbf58476d1ce4e5b9
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * -7723592293110705685  # 0x94d049bb133111eb
    return x ^ ((x >> 31) & ((1 << 33) - 1))


class Plan:
    """The fixed facts of one build that every worker must share: windows, batches, shards,
    random windows, capped list sizes."""

    def __init__(self, windows: np.ndarray, batch_size: int, top_k: int, n_random: int, n_quantile: int, seed: int,
                 bottom_k: int = 0):
        self.windows = windows
        self.n_windows = n_win = len(windows)
        self.batch_size = batch_size
        self.n_batches = (n_win + batch_size - 1) // batch_size
        per_shard = (self.n_batches + MAX_SHARDS - 1) // MAX_SHARDS  # whole batches per shard
        self.shard_windows = per_shard * batch_size
        self.n_shards = (n_win + self.shard_windows - 1) // self.shard_windows
        self.top_k = min(top_k, n_win)  # store what the corpus can fill
        self.bottom_k = min(bottom_k, n_win)  # 0: no bottom tail (neurons without a negative side)
        self.n_quantile = min(n_quantile, n_win)
        rng = np.random.default_rng([seed, 0])
        self.rand_ids = np.sort(rng.choice(n_win, size=min(n_random, n_win), replace=False)).astype(np.int64)
        self.seed = seed

    def shard_batches(self, shard: int) -> range:
        per = self.shard_windows // self.batch_size
        return range(shard * per, min(self.n_batches, (shard + 1) * per))

    def shard_of_batch(self, batch: int) -> int:
        return batch * self.batch_size // self.shard_windows


def forward(lm: LoadedModel, ids: np.ndarray, fn: Callable[[int, torch.Tensor], None], layers: Any = None) -> None:
    """Run ``ids`` and call ``fn(layer, acts)`` for ``layers`` (default all); the forward pass
    stops after the last of them."""
    run_mlp_hooks(lm, torch.from_numpy(ids.astype(np.int64)), range(lm.n_layers) if layers is None else layers, fn)


def make_progress(progress: bool | Progress, total: int, desc: str) -> Progress:
    """A callable(done, total, message); done == -1 closes it."""
    if callable(progress):
        user = progress

        def call(done: int, total_: int, message: str) -> None:
            if done >= 0:
                user(done, total_, message)

        return call
    if not progress:
        return lambda *_: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="batch")

    def update(done: int, _total: int, _message: str) -> None:
        if done < 0:
            bar.close()
        else:
            bar.update(done - bar.n)

    return update


def window_ids_of(key: torch.Tensor) -> torch.Tensor:
    return key & _LOW32


class Calibration:
    """Per layer: quantile boundaries of the window maximum [N, 4] and the histogram range."""

    def __init__(self, q_bounds: list[torch.Tensor], lo: list[torch.Tensor], hi: list[torch.Tensor]):
        self.q_bounds, self.lo, self.hi = q_bounds, lo, hi

    @classmethod
    def from_samples(cls, parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]], dev) -> Calibration:
        q = torch.tensor(QUANTILES, device=dev)
        qb, lo, hi = [], [], []
        for layer in parts:
            maxima = torch.cat([p[0] for p in layer])  # [P, N]
            qb.append(torch.quantile(maxima, q, dim=0).T.contiguous())
            low = torch.stack([p[1] for p in layer]).amin(0)
            high = torch.stack([p[2] for p in layer]).amax(0)
            lo.append(low)
            hi.append(torch.maximum(high, low + 1e-3))  # a constant neuron still gets bins of some width
        return cls(qb, lo, hi)

    def to_dict(self) -> dict[str, Any]:
        return {"q_bounds": [t.cpu() for t in self.q_bounds], "lo": [t.cpu() for t in self.lo],
                "hi": [t.cpu() for t in self.hi]}

    @classmethod
    def from_dict(cls, d: dict[str, Any], dev) -> Calibration:
        return cls(*([t.to(dev) for t in d[k]] for k in ("q_bounds", "lo", "hi")))


def _merge_batch(keep_key: torch.Tensor, keep_acts: torch.Tensor, new_key: torch.Tensor,
                 acts: torch.Tensor, row_src: torch.Tensor | None) -> None:
    """Keep, per row, the K smallest keys of (kept + this batch's candidates), in place.

    new_key [R, B] (window w0 + j in column j); row_src maps rows to neurons (None = row i
    is neuron i). Only rows where some candidate beats the worst kept key are touched, and
    only evicted slots are rewritten.
    """
    k = keep_key.shape[1]
    if k == 0:
        return
    rows = (new_key.amin(1) < keep_key.amax(1)).nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    cand = torch.cat([keep_key[rows], new_key[rows]], 1)
    _, idx = torch.topk(cand, k, dim=1, largest=False, sorted=False)
    kept = torch.zeros((rows.numel(), k + 1), dtype=torch.bool, device=idx.device)
    kept.scatter_(1, torch.where(idx < k, idx, k), True)
    ev_r, ev_slot = (~kept[:, :k]).nonzero(as_tuple=True)  # evicted slots, row-major
    nw_r, nw_j = (idx >= k).nonzero(as_tuple=True)  # incoming candidates, row-major: same rows, same counts
    bidx = idx[nw_r, nw_j] - k
    rr = rows[ev_r]
    keep_key[rr, ev_slot] = new_key[rr, bidx]
    neuron = rr if row_src is None else row_src[rr]
    # the incoming windows' activations, read in (window, neuron) order: the cache lines one
    # row reads serve its neighbours, so even a first batch that fills every slot costs about
    # one read of the batch (a neuron-major copy of the batch cost 15-25 ms per GPT-2-small
    # layer however few rows were needed)
    order = torch.argsort(bidx * acts.shape[2] + neuron)
    rr, ev_slot, bidx, neuron = rr[order], ev_slot[order], bidx[order], neuron[order]
    keep_acts[rr, ev_slot] = acts[bidx, :, neuron].to(keep_acts.dtype)


def _merge_states(ka: torch.Tensor, aa: torch.Tensor, kb: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = ka.shape[1]
    if k == 0:
        return ka, aa
    keys, acts = torch.cat([ka, kb], 1), torch.cat([aa, ab], 1)
    top, idx = torch.topk(keys, k, dim=1, largest=False, sorted=False)
    return top, acts.gather(1, idx[..., None].expand(-1, -1, acts.shape[2]))


class LayerState:
    FIELDS = ("top_key", "top_a", "bot_key", "bot_a", "q_key", "q_a", "rand_a", "hist", "lowest", "highest", "nonzero")

    def __init__(self, n: int, k: int, kb: int, r: int, q: int, t: int, dev: torch.device):
        f16 = torch.float16
        self.top_key = torch.full((n, k), EMPTY, device=dev)
        self.top_a = torch.zeros((n, k, t), dtype=f16, device=dev)
        self.bot_key = torch.full((n, kb), EMPTY, device=dev)
        self.bot_a = torch.zeros((n, kb, t), dtype=f16, device=dev)
        self.q_key = torch.full((n * _NB, q), EMPTY, device=dev)
        self.q_a = torch.zeros((n * _NB, q, t), dtype=f16, device=dev)
        self.rand_a = torch.zeros((n, r, t), dtype=f16, device=dev)
        self.hist = torch.zeros((n, N_BINS + 2), dtype=torch.long, device=dev)
        self.lowest = torch.full((n,), torch.inf, device=dev)  # per neuron over every token: the true range
        self.highest = torch.full((n,), -torch.inf, device=dev)
        self.nonzero = torch.zeros((n,), dtype=torch.long, device=dev)  # tokens where the unit is not 0 (unit spaces)

    def merge(self, other: LayerState) -> None:
        for k, a in (("top_key", "top_a"), ("bot_key", "bot_a"), ("q_key", "q_a")):
            key, acts = _merge_states(getattr(self, k), getattr(self, a), getattr(other, k), getattr(other, a))
            setattr(self, k, key)
            setattr(self, a, acts)
        self.hist += other.hist
        torch.minimum(self.lowest, other.lowest, out=self.lowest)
        torch.maximum(self.highest, other.highest, out=self.highest)
        self.nonzero += other.nonzero


class IndexState:
    """Everything one build (or one shard set of it) has folded so far, for the model layers
    ``layer_ids`` (default: all; ``layers[i]`` and ``calib``'s i-th entries belong to model
    layer ``layer_ids[i]``); mergeable."""

    def __init__(self, n_layers: int, n_neurons: int, plan: Plan, calib: Calibration, dev: torch.device,
                 layer_ids: Any = None, nonzero: bool = False):
        self.count_nonzero = nonzero  # count each unit's non-zero tokens (SAE latents: their density)
        self.fused = torch.device(dev).type == "cpu"  # one pass per layer (:mod:`.fused`); else torch ops
        self.n_layers, self.n_neurons, self.plan, self.calib, self.dev = n_layers, n_neurons, plan, calib, dev
        self.layer_ids = list(range(n_layers)) if layer_ids is None else sorted(int(x) for x in layer_ids)
        self._pos = {layer: i for i, layer in enumerate(self.layer_ids)}
        r = len(plan.rand_ids)
        self.layers = [LayerState(n_neurons, plan.top_k, plan.bottom_k, r, plan.n_quantile, plan.windows.shape[1], dev)
                       for _ in self.layer_ids]
        self.rand_filled = torch.zeros(r, dtype=torch.bool)
        self.shard_moments: dict[int, torch.Tensor] = {}  # shard -> [L, N, 4] float64 sums of a^1..a^4
        self.batches_done: set[int] = set()
        self._slot_of = {int(w): i for i, w in enumerate(plan.rand_ids)}
        self._hist_offsets = torch.arange(0, n_neurons * (N_BINS + 2), N_BINS + 2, device=dev, dtype=torch.int32)
        self._neuron_of_qrow = torch.arange(n_neurons * _NB, device=dev) // _NB
        self._neuron_mix = (torch.arange(n_neurons, device=dev, dtype=torch.long) * -7046029254386353131)[:, None]
        self._buffers: dict[str, torch.Tensor] = {}

    # -- folding ---------------------------------------------------------------------------
    def fold_batch(self, lm: Any, batch: int) -> None:
        chunk, fold, done = self.batch_folder(batch)
        forward(lm, chunk, fold, self.layer_ids)
        done()

    def batch_folder(self, batch: int) -> tuple[np.ndarray, Callable[[int, torch.Tensor], None], Callable[[], None]]:
        """(the batch's windows, ``fold(layer, acts)`` for each of ``layer_ids`` while the forward
        runs, ``done()`` after it): one batch folded by a forward pass someone else runs (a
        build of neurons and SAE latents in one pass, :mod:`.units`)."""
        plan = self.plan
        w0 = batch * plan.batch_size
        chunk = plan.windows[w0:w0 + plan.batch_size]
        shard = plan.shard_of_batch(batch)
        if shard not in self.shard_moments:
            self.shard_moments[shard] = torch.zeros((len(self.layer_ids), self.n_neurons, 4), dtype=torch.float64,
                                                    device=self.dev)
        rand_slots = [(j, self._slot_of[w0 + j]) for j in range(len(chunk)) if (w0 + j) in self._slot_of]
        moments = self.shard_moments[shard]

        def fold(layer: int, acts: torch.Tensor) -> None:
            self._fold(layer, self._pos[layer], acts, w0, rand_slots, moments[self._pos[layer]])

        def done() -> None:
            for _, slot in rand_slots:
                self.rand_filled[slot] = True
            self.batches_done.add(batch)

        return chunk, fold, done

    def _fold(self, layer: int, pos: int, acts: torch.Tensor, w0: int, rand_slots: list[tuple[int, int]],
              moments: torch.Tensor) -> None:
        a = acts.float()  # [B, T, N]; no copy when the model runs in float32
        if self.fused and a.device.type == "cpu":
            return self._fold_fused(layer, pos, a.contiguous(), w0, rand_slots, moments)
        mx, mn = self._token_stats(pos, a, moments)
        self._select(layer, pos, a, w0, rand_slots, mx, mn)

    def _fold_fused(self, layer: int, pos: int, a: torch.Tensor, w0: int, rand_slots: list[tuple[int, int]],
                    moments: torch.Tensor) -> None:
        """:meth:`_token_stats` and :meth:`_select` in one pass over ``a`` (:mod:`.fused`)."""
        from . import fused  # imports numba (about half a second): when a CPU build folds, not with the package

        st, cal = self.layers[pos], self.calib
        inv, off = self._bin_map(pos)
        layer_base = _mix(torch.tensor(self.plan.seed * 4096 + layer))
        rand = np.array(rand_slots, dtype=np.int64).reshape(-1, 2)
        f16 = lambda t: t.view(torch.int16).numpy()  # noqa: E731  the kernel writes float16 bit patterns
        fused.fold_layer(a.numpy(), w0, off.numpy(), inv.numpy(), N_BINS,
                         moments.numpy(), st.hist.numpy(), st.lowest.numpy(), st.highest.numpy(),
                         st.nonzero.numpy(), self.count_nonzero, st.top_key.numpy(), f16(st.top_a),
                         st.bot_key.numpy(), f16(st.bot_a), st.q_key.numpy(), f16(st.q_a),
                         cal.q_bounds[pos].numpy(), int(layer_base), self._neuron_mix[:, 0].numpy(),
                         np.ascontiguousarray(rand[:, 0]), np.ascontiguousarray(rand[:, 1]), f16(st.rand_a),
                         threads=torch.get_num_threads())

    def _bin_map(self, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inv, off) [N]: a value's histogram bin is ``floor(off + a * inv)`` clamped to
        0..N_BINS + 1 (= floor((a - lo) / width) + 1; 0 = underflow, N_BINS + 1 = overflow)."""
        lo, hi = self.calib.lo[pos], self.calib.hi[pos]
        inv = N_BINS / (hi - lo)
        return inv, 1 - lo * inv

    def _token_stats(self, pos: int, a: torch.Tensor, moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold every token of ``a`` [B, T, N] into the layer's moment sums, histogram, range and
        non-zero counts; returns each window's maximum and minimum [B, N]."""
        st = self.layers[pos]
        b, t, n = a.shape
        dev = a.device
        # per-token statistics in chunks of a few windows, so temporaries stay in cache:
        # window max / min, moment sums, histogram counts. Temporaries are reused scratch
        # buffers (out=), not a fresh multi-MB allocation per op.
        mx, mn = self._scratch("mx", (b, n)), self._scratch("mn", (b, n))
        inv, off = self._bin_map(pos)
        step = _CHUNK_WINDOWS if dev.type == "cpu" else b
        sq, tmp = self._scratch("sq", (step * t, n)), self._scratch("tmp", (step * t, n))
        bins = self._scratch("bins", (step * t, n), torch.int32)
        part = self._scratch("part", (4, n))
        sums = torch.zeros((4, n), dtype=torch.float64, device=dev)
        hist = torch.zeros(n * (N_BINS + 2), dtype=torch.long, device=dev)
        for s in range(0, b, step):
            c3 = a[s:s + step]
            torch.amax(c3, 1, out=mx[s:s + step])
            torch.amin(c3, 1, out=mn[s:s + step])
            c = c3.reshape(-1, n)
            r = c.shape[0]
            c2, c34, rows = sq[:r], tmp[:r], bins[:r]
            torch.mul(c, c, out=c2)
            torch.sum(c, 0, out=part[0])
            torch.sum(c2, 0, out=part[1])
            torch.sum(torch.mul(c2, c, out=c34), 0, out=part[2])
            torch.sum(torch.mul(c2, c2, out=c34), 0, out=part[3])
            sums += part  # float32 per chunk, float64 across chunks
            torch.addcmul(off, c, inv, out=c34).clamp_(0, N_BINS + 1)
            rows.copy_(c34)  # truncation == floor for values >= 0
            rows += self._hist_offsets
            # bincount (it also scans the bins for min and max): index_add_ into the layer's
            # histogram was faster on a crowded CPU but slower on a quiet one (0.75 vs 0.80)
            hist += torch.bincount(rows.view(-1), minlength=n * (N_BINS + 2))  # in cache: faster than once per batch
            if self.count_nonzero:
                st.nonzero += (c != 0).sum(0)
        moments += sums.T
        st.hist += hist.view(n, N_BINS + 2)
        torch.minimum(st.lowest, mn.amin(0), out=st.lowest)
        torch.maximum(st.highest, mx.amax(0), out=st.highest)
        return mx, mn

    def _select(self, layer: int, pos: int, a: torch.Tensor, w0: int, rand_slots: list[tuple[int, int]],
                mx: torch.Tensor, mn: torch.Tensor) -> None:
        """Offer this batch's windows to the layer's top, bottom and quantile selections (ranked by
        each window's maximum / minimum, ``mx`` / ``mn`` [B, N]); copy the random windows."""
        st, cal = self.layers[pos], self.calib
        b, n, dev = a.shape[0], a.shape[2], a.device
        wid = torch.arange(w0, w0 + b, device=dev, dtype=torch.long)
        mxt, mnt = mx.T, mn.T  # [N, B]
        _merge_batch(st.top_key, st.top_a, -ordered(mxt) * (1 << 32) + wid, a, None)
        _merge_batch(st.bot_key, st.bot_a, ordered(mnt) * (1 << 32) + wid, a, None)
        # quantile bins: bin of each (neuron, window); key = hash(seed, layer, neuron, window)
        qbin = (mxt[:, None, :] >= cal.q_bounds[pos][:, :, None]).sum(1)  # [N, B] in 0..4
        base = _mix(wid + _mix(torch.tensor(self.plan.seed * 4096 + layer, device=dev)))
        u = (_mix(base[None, :] + self._neuron_mix) >> 33) & 0x7FFFFFFF  # [N, B], 31 random bits
        qkey = u * (1 << 32) + wid
        keys = torch.where(qbin[:, None, :] == torch.arange(_NB, device=dev)[None, :, None], qkey[:, None, :], EMPTY)
        _merge_batch(st.q_key, st.q_a, keys.view(n * _NB, b), a, self._neuron_of_qrow)
        for j, slot in rand_slots:
            st.rand_a[:, slot] = a[j].T.to(torch.float16)

    def _scratch(self, name: str, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A reusable work buffer (contents undefined), reallocated only when the shape changes."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(shape, dtype=dtype, device=self.dev)
        return buf

    # -- merging and persistence ------------------------------------------------------------
    def merge(self, other: IndexState) -> None:
        """Fold ``other`` (built from disjoint batches, same plan and calibration) into this one."""
        if self.batches_done & other.batches_done:
            raise ValueError("cannot merge index states that folded the same batches twice")
        if self.layer_ids != other.layer_ids:
            raise ValueError(f"cannot merge index states of layers {self.layer_ids} and {other.layer_ids}")
        for mine, theirs in zip(self.layers, other.layers):
            mine.merge(theirs)
            fill = other.rand_filled.to(mine.rand_a.device)
            mine.rand_a[:, fill] = theirs.rand_a[:, fill]
        self.rand_filled |= other.rand_filled
        for shard, m in other.shard_moments.items():
            if shard in self.shard_moments:
                self.shard_moments[shard] = self.shard_moments[shard] + m.to(self.dev)
            else:
                self.shard_moments[shard] = m.to(self.dev)
        self.batches_done |= other.batches_done

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [{f: getattr(s, f).cpu() for f in LayerState.FIELDS} for s in self.layers],
                "rand_filled": self.rand_filled.clone(), "calib": self.calib.to_dict(),
                "shard_moments": {int(k): v.cpu() for k, v in self.shard_moments.items()},
                "batches_done": sorted(self.batches_done), "shape": [self.n_layers, self.n_neurons],
                "layer_ids": list(self.layer_ids), "nonzero": self.count_nonzero}

    @classmethod
    def from_dict(cls, d: dict[str, Any], plan: Plan, dev: torch.device) -> IndexState:
        n_layers, n_neurons = d["shape"]
        state = cls(n_layers, n_neurons, plan, Calibration.from_dict(d["calib"], dev), dev, d.get("layer_ids"),
                    bool(d.get("nonzero", False)))
        for s, saved in zip(state.layers, d["layers"]):
            for f in LayerState.FIELDS:
                if getattr(s, f).shape != saved[f].shape:
                    raise ValueError(f"checkpoint field {f} has shape {tuple(saved[f].shape)}, expected {tuple(getattr(s, f).shape)}")
                setattr(s, f, saved[f].to(dev))
        state.rand_filled = d["rand_filled"].clone()
        state.shard_moments = {int(k): v.to(dev) for k, v in d["shard_moments"].items()}
        state.batches_done = set(int(b) for b in d["batches_done"])
        return state


__all__ = ["Calibration", "IndexState", "MAX_SHARDS", "N_BINS", "Plan", "forward", "make_progress", "ordered", "unordered"]
