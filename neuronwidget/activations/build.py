"""Build a :class:`NeuronIndex`: one pass over a corpus records every neuron of every layer.

Per batch of 64-token windows, every layer's activations are folded into bounded
per-neuron state while the forward pass runs, then dropped: no [tokens x neurons] array
for the whole corpus ever exists. Per layer and neuron it keeps

- top-k windows by maximum activation (streaming merge with ``torch.topk``) and their
  per-token activations;
- the per-token activations of ``n_random`` random windows (the same for all neurons);
- quantile samples: ``n_quantile`` windows drawn uniformly (bottom-k of random keys) from
  each bin between the boundaries 0.5 / 0.9 / 0.99 / 0.999 of the per-window maximum.
  APPROXIMATION: the boundaries are estimated first from the window maxima of a random
  calibration sample of at most ``calibration_windows`` windows (one extra forward pass
  over that sample), because the exact quantiles need every window's maximum;
- sums of a, a^2, a^3, a^4 over every token (float64) -> mean, variance, skewness,
  excess kurtosis;
- a histogram over every token: uniform bins from the GELU minimum to the largest window
  maximum of the calibration sample, plus an overflow bin up to the true maximum.

The build checkpoints its state atomically every ``checkpoint_every`` batches (and at most
once per ``checkpoint_seconds``); an
interrupted build resumes from the last checkpoint to the identical index.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, cache_root, stable_hash
from ..subject import LoadedModel, run_mlp_hooks
from .corpus import WINDOW, Corpus, as_corpus
from .store import FORMAT_VERSION, QUANTILES, CorruptIndexError, NeuronIndex, read_store, write_store

GELU_MIN = -0.1701  # gelu_new's minimum is about -0.16997
N_BINS = 48
Progress = Callable[[int, int, str], None]


class _BatchActs:
    """One layer's batch activations [B, T, N], with a neuron-major float16 copy made on demand."""

    def __init__(self, acts: torch.Tensor):
        self.acts = acts
        self._by_neuron: torch.Tensor | None = None

    def rows(self, bidx: torch.Tensor, neuron: torch.Tensor) -> torch.Tensor:
        """Activations [E, T] of window ``bidx[e]`` for neuron ``neuron[e]``, float16."""
        b, t, n = self.acts.shape
        if bidx.numel() * 8 < n:  # few rows: strided gather straight from the batch
            return self.acts[bidx, :, neuron].to(torch.float16)
        if self._by_neuron is None:  # many rows: one transposed copy, then contiguous rows
            self._by_neuron = torch.empty((n, b, t), dtype=torch.float16, device=self.acts.device)
            self._by_neuron.copy_(self.acts.permute(2, 0, 1))
        return self._by_neuron[neuron, bidx]


def _merge(keep_key: torch.Tensor, keep_id: torch.Tensor, keep_acts: torch.Tensor, new_key: torch.Tensor,
           new_ids: torch.Tensor, acts: _BatchActs, row_src: torch.Tensor | None, largest: bool) -> None:
    """Keep, per row, the K best keys of (kept entries + this batch's candidates), in place.

    keep_*: [R, K], [R, K], [R, K, T], unsorted (sorted once when the index is written);
    new_key [R, B]; new_ids [B] window ids; acts: this batch's activations;
    row_src maps rows to neurons (None = row i is neuron i). Only rows where some candidate
    beats the current worst kept key are touched, and only evicted slots are rewritten, so
    once the top lists settle a batch costs little more than one comparison per entry.
    """
    k = keep_key.shape[1]
    if largest:
        rows = (new_key.amax(1) > keep_key.amin(1)).nonzero().squeeze(1)
    else:
        rows = (new_key.amin(1) < keep_key.amax(1)).nonzero().squeeze(1)
    if rows.numel() == 0:
        return
    cand = torch.cat([keep_key[rows], new_key[rows]], 1)
    _, idx = torch.topk(cand, k, dim=1, largest=largest, sorted=False)
    kept = torch.zeros((rows.numel(), k + 1), dtype=torch.bool, device=idx.device)
    kept.scatter_(1, torch.where(idx < k, idx, k), True)
    ev_r, ev_slot = (~kept[:, :k]).nonzero(as_tuple=True)  # evicted slots, row-major
    nw_r, nw_j = (idx >= k).nonzero(as_tuple=True)  # incoming candidates, row-major: same rows, same counts
    bidx = idx[nw_r, nw_j] - k
    rr = rows[ev_r]
    keep_key[rr, ev_slot] = new_key[rr, bidx]
    keep_id[rr, ev_slot] = new_ids[bidx]
    neuron = rr if row_src is None else row_src[rr]
    keep_acts[rr, ev_slot] = acts.rows(bidx, neuron)


class _LayerState:
    def __init__(self, n: int, k: int, r: int, q: int, t: int, dev: torch.device):
        f16 = torch.float16
        self.top_v = torch.full((n, k), -torch.inf, device=dev)
        self.top_i = torch.full((n, k), -1, dtype=torch.long, device=dev)
        self.top_a = torch.zeros((n, k, t), dtype=f16, device=dev)
        self.rand_a = torch.zeros((n, r, t), dtype=f16, device=dev)
        nb = len(QUANTILES) + 1
        self.q_key = torch.full((n * nb, q), torch.inf, device=dev)
        self.q_i = torch.full((n * nb, q), -1, dtype=torch.long, device=dev)
        self.q_a = torch.zeros((n * nb, q, t), dtype=f16, device=dev)
        self.moments = torch.zeros((n, 4), dtype=torch.float64, device=dev)
        self.hist = torch.zeros((n, N_BINS + 1), dtype=torch.long, device=dev)
        # from calibration
        self.q_bounds = torch.zeros((n, len(QUANTILES)), device=dev)
        self.hist_hi = torch.ones(n, device=dev)

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in vars(self).items()}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v)


class IndexBuilder:
    """One index build: ``run()`` returns the NeuronIndex (from cache when possible)."""

    def __init__(self, lm: LoadedModel, corpus: Any = None, *, top_k: int = 40, n_random: int = 30,
                 n_quantile: int = 5, seed: int = 0, batch_size: int | None = None,
                 calibration_windows: int = 256, checkpoint_every: int = 25, checkpoint_seconds: float = 60.0,
                 cache_dir: Path | None = None):
        for name, value, lo in (("top_k", top_k, 1), ("n_random", n_random, 0), ("n_quantile", n_quantile, 1),
                                ("checkpoint_every", checkpoint_every, 1), ("calibration_windows", calibration_windows, 8)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.lm = lm
        self.corpus: Corpus = as_corpus(corpus)
        self.top_k, self.n_random, self.n_quantile, self.seed = top_k, n_random, n_quantile, seed
        self.batch_size = batch_size or (64 if lm.device.type == "cpu" else 128)  # bigger batches: fewer bookkeeping ops per token
        self.calibration_windows = calibration_windows
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds  # and at least this long apart (the state can be 100s of MB)
        self.settings = {"top_k": top_k, "n_random": n_random, "n_quantile": n_quantile, "seed": seed,
                         "window": WINDOW, "calibration_windows": calibration_windows, "quantiles": list(QUANTILES),
                         "n_bins": N_BINS}
        self.key = stable_hash({"model": lm.identity, "dtype": str(lm.dtype), "corpus": self.corpus.fingerprint,
                                "max_tokens": self.corpus.max_tokens, "settings": self.settings,
                                "format": FORMAT_VERSION})
        root = (Path(cache_dir) if cache_dir is not None else cache_root()) / "index"
        self.folder: Path = root / self.key
        self.checkpoint_path: Path = root / f"{self.key}.checkpoint.pt"
        self.built = False  # True when run() computed the index rather than loading it
        self.timings: dict[str, float] = {}  # seconds spent, when built

    # -- cache ---------------------------------------------------------------------------
    def load_cached(self) -> NeuronIndex | None:
        if not (self.folder / "manifest.json").exists():
            return None
        try:
            arrays, meta = read_store(self.folder)
        except CorruptIndexError:
            return None
        return NeuronIndex(self.folder, arrays, meta, self.lm.token_strings())

    def run(self, *, rebuild: bool = False, progress: bool | Progress = True) -> NeuronIndex:
        if not rebuild:
            cached = self.load_cached()
            if cached is not None:
                return cached
        elif self.checkpoint_path.exists():
            self.checkpoint_path.unlink()
        self._build(progress)
        self.built = True
        arrays, meta = read_store(self.folder, verify=False)  # just written and checksummed
        return NeuronIndex(self.folder, arrays, meta, self.lm.token_strings())

    # -- build ---------------------------------------------------------------------------
    def _forward(self, ids: np.ndarray, fn: Callable[[int, torch.Tensor], None]) -> None:
        run_mlp_hooks(self.lm, torch.from_numpy(ids.astype(np.int64)), range(self.lm.n_layers), fn)

    def _calibrate(self, windows: np.ndarray, states: list[_LayerState]) -> None:
        n_win = len(windows)
        rng = np.random.default_rng([self.seed, 1])
        pick = np.sort(rng.choice(n_win, size=min(self.calibration_windows, n_win), replace=False))
        maxima: list[list[torch.Tensor]] = [[] for _ in states]

        def fn(layer: int, acts: torch.Tensor) -> None:
            maxima[layer].append(acts.float().amax(1))

        for s in range(0, len(pick), self.batch_size):
            self._forward(windows[pick[s:s + self.batch_size]], fn)
        q = torch.tensor(QUANTILES, device=self.lm.device)
        for st, m in zip(states, maxima):
            m = torch.cat(m)  # [P, N]
            st.q_bounds.copy_(torch.quantile(m, q, dim=0).T)
            st.hist_hi.copy_(torch.clamp(m.amax(0), min=GELU_MIN + 1e-3))

    def _fold(self, st: _LayerState, layer: int, acts: torch.Tensor, w0: int, rand_slots: list[tuple[int, int]],
              batch_index: int) -> None:
        a = acts.float()  # [B, T, N]
        b, t, n = a.shape
        dev = a.device
        ids = torch.arange(w0, w0 + b, device=dev)
        m = a.amax(1).T.contiguous()  # [N, B]
        batch = _BatchActs(a)
        _merge(st.top_v, st.top_i, st.top_a, m, ids, batch, None, largest=True)
        for j, slot in rand_slots:
            st.rand_a[:, slot] = a[j].T.to(torch.float16)
        # quantile bins: bin of each (neuron, window), random keys, bottom-k per (neuron, bin)
        nb = len(QUANTILES) + 1
        bins = (m[:, None, :] >= st.q_bounds[:, :, None]).sum(1)  # [N, B] in 0..4
        gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + batch_index * 97 + layer)
        u = torch.rand((n, b), generator=gen).to(dev)
        keys = torch.where(bins[:, None, :] == torch.arange(nb, device=dev)[None, :, None], u[:, None, :], torch.inf)
        rows_to_neuron = torch.arange(n * nb, device=dev) // nb
        _merge(st.q_key, st.q_i, st.q_a, keys.reshape(n * nb, b), ids, batch, rows_to_neuron, largest=False)
        flat = a.reshape(-1, n)
        # one a^2 temporary serves all powers; plain mul+sum is ~2x faster on CPU than
        # vector_norm or pow (measured on a GPT-2-small layer batch)
        a2 = flat * flat
        sums = [flat.sum(0), a2.sum(0), (a2 * flat).sum(0), (a2 * a2).sum(0)]
        del a2
        st.moments += torch.stack(sums, 1).double()
        inv_width = N_BINS / (st.hist_hi - GELU_MIN)
        pos = torch.addcmul(-GELU_MIN * inv_width, flat, inv_width).clamp_(0, N_BINS)  # (a - lo) / width
        bin_of = pos.to(torch.int32)  # truncation == floor for values >= 0
        bin_of += torch.arange(0, n * (N_BINS + 1), N_BINS + 1, device=dev, dtype=torch.int32)
        st.hist += torch.bincount(bin_of.reshape(-1), minlength=n * (N_BINS + 1)).reshape(n, N_BINS + 1)

    def _build(self, progress: bool | Progress) -> None:
        lm = self.lm
        windows = self.corpus.windows(lm.tokenizer, lm.eos_token_id, WINDOW)
        n_win = len(windows)
        rng = np.random.default_rng([self.seed, 0])
        n_rand = min(self.n_random, n_win)
        rand_ids = np.sort(rng.choice(n_win, size=n_rand, replace=False)).astype(np.int64)
        slot_of = {int(w): i for i, w in enumerate(rand_ids)}
        dev = lm.device
        states = [_LayerState(lm.n_neurons, self.top_k, n_rand, self.n_quantile, WINDOW, dev) for _ in range(lm.n_layers)]
        n_batches = (n_win + self.batch_size - 1) // self.batch_size
        start = 0
        if self.checkpoint_path.exists():
            try:
                ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
                if ck.get("key") == self.key:
                    for st, s in zip(states, ck["layers"]):
                        st.load(s)
                    start = int(ck["next_batch"])
            except Exception:  # a damaged checkpoint only costs a restart
                start = 0
        t0 = time.perf_counter()
        if start == 0:
            self._calibrate(windows, states)
        t1 = time.perf_counter()
        report = _progress(progress, n_batches, f"indexing {lm.short_name} ({n_win * WINDOW:,} tokens)")
        try:
            report(start, n_batches, "resumed" if start else "started")
            last_checkpoint = time.perf_counter()
            for bi in range(start, n_batches):
                w0 = bi * self.batch_size
                chunk = windows[w0:w0 + self.batch_size]
                rand_slots = [(j, slot_of[w0 + j]) for j in range(len(chunk)) if (w0 + j) in slot_of]
                self._forward(chunk, lambda layer, acts: self._fold(states[layer], layer, acts, w0, rand_slots, bi))
                done = bi + 1
                if (done % self.checkpoint_every == 0 and done < n_batches
                        and time.perf_counter() - last_checkpoint >= self.checkpoint_seconds):
                    self._checkpoint(states, done)
                    last_checkpoint = time.perf_counter()
                report(done, n_batches, "")
        finally:
            report(-1, n_batches, "close")
        t2 = time.perf_counter()
        self._write(windows, rand_ids, states)
        self.timings = {"calibration_s": t1 - t0, "pass_s": t2 - t1, "write_s": time.perf_counter() - t2,
                        "windows": n_win, "batches_run": n_batches - start}
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    def _checkpoint(self, states: list[_LayerState], next_batch: int) -> None:
        buf = io.BytesIO()
        torch.save({"key": self.key, "next_batch": next_batch, "layers": [s.state() for s in states]}, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def _write(self, windows: np.ndarray, rand_ids: np.ndarray, states: list[_LayerState]) -> None:
        n, nb, q = self.lm.n_neurons, len(QUANTILES) + 1, self.n_quantile
        n_tokens = int(windows.size)

        def stack(fn) -> np.ndarray:
            return np.stack([fn(s).cpu().numpy() for s in states])

        for s in states:  # kept lists are unsorted while streaming: sort once, best first
            order = torch.sort(s.top_v, dim=1, descending=True, stable=True).indices
            s.top_v, s.top_i = s.top_v.gather(1, order), s.top_i.gather(1, order)
            s.top_a = s.top_a.gather(1, order[..., None].expand_as(s.top_a))
            s.top_i[~torch.isfinite(s.top_v)] = -1
            order = torch.sort(s.q_key, dim=1, stable=True).indices
            s.q_key, s.q_i = s.q_key.gather(1, order), s.q_i.gather(1, order)
            s.q_a = s.q_a.gather(1, order[..., None].expand_as(s.q_a))

        def moments(s: _LayerState) -> torch.Tensor:
            e1, e2, e3, e4 = (s.moments / n_tokens).unbind(1)
            var = (e2 - e1 ** 2).clamp(min=0)
            m3 = e3 - 3 * e1 * e2 + 2 * e1 ** 3
            m4 = e4 - 4 * e1 * e3 + 6 * e1 ** 2 * e2 - 3 * e1 ** 4
            safe = torch.where(var > 0, var, torch.ones_like(var))
            skew = torch.where(var > 0, m3 / safe ** 1.5, torch.zeros_like(var))
            kurt = torch.where(var > 0, m4 / safe ** 2 - 3, torch.zeros_like(var))
            return torch.stack([e1, var, skew, kurt], 1)

        def edges(s: _LayerState) -> torch.Tensor:
            width = (s.hist_hi - GELU_MIN) / N_BINS
            grid = GELU_MIN + width[:, None] * torch.arange(N_BINS + 1, device=width.device)[None, :]
            grid[:, -1] = s.hist_hi
            top = torch.maximum(s.top_v[:, 0], s.hist_hi + width)[:, None]  # overflow bin, never empty-width
            return torch.cat([grid, top], 1).float()

        def q_ids(s: _LayerState) -> torch.Tensor:
            return torch.where(torch.isfinite(s.q_key), s.q_i, -1).reshape(n, nb, q).int()

        arrays = {
            "windows": windows.astype(np.int32),
            "top_ids": stack(lambda s: s.top_i.int()),
            "top_max": stack(lambda s: s.top_v),
            "top_acts": stack(lambda s: s.top_a),
            "rand_ids": rand_ids.astype(np.int32),
            "rand_acts": stack(lambda s: s.rand_a),
            "q_bounds": stack(lambda s: s.q_bounds),
            "q_ids": stack(q_ids),
            "q_acts": stack(lambda s: s.q_a.reshape(n, nb, q, WINDOW)),
            "moments": stack(moments),
            "hist_counts": stack(lambda s: s.hist),
            "hist_edges": stack(edges),
        }
        meta = {"model_name": self.lm.name, "short_name": self.lm.short_name, "model_identity": self.lm.identity,
                "corpus_name": self.corpus.name, "corpus_fingerprint": self.corpus.fingerprint,
                "n_layers": self.lm.n_layers, "n_neurons": n, "n_tokens": n_tokens, "n_windows": int(len(windows)),
                "settings": self.settings, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_store(self.folder, arrays, meta)


def _progress(progress: bool | Progress, total: int, desc: str) -> Progress:
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


def build_index(lm: LoadedModel, corpus: Any = None, *, rebuild: bool = False, progress: bool | Progress = True,
                **settings: Any) -> NeuronIndex:
    """Load the cached index for (model, corpus, settings) or build it (resuming if interrupted)."""
    return IndexBuilder(lm, corpus, **settings).run(rebuild=rebuild, progress=progress)


__all__ = ["IndexBuilder", "NeuronIndex", "build_index"]
