"""Build a :class:`NeuronIndex`: one pass over a corpus records every neuron of every layer.

Per batch of 64-token windows, every layer's activations are folded into bounded
per-neuron state while the forward pass runs, then dropped: no [tokens x neurons] array
for the whole corpus ever exists. Per layer and neuron it keeps

- top-k windows by maximum activation, with their per-token activations, and, for subjects
  whose neurons are signed (gated MLPs; ``bottom_k``), bottom-k windows by minimum
  activation;
- the per-token activations of ``n_random`` random windows (the same for all neurons,
  chosen from the seed before the pass);
- quantile samples: ``n_quantile`` windows drawn uniformly (the smallest of a per
  (layer, neuron, window) pseudo-random key) from each bin between the boundaries
  0.5 / 0.9 / 0.99 / 0.999 of the per-window maximum. APPROXIMATION: the boundaries are
  estimated first from the window maxima of a random calibration sample of at most
  ``calibration_windows`` windows (one extra forward pass over that sample), because the
  exact quantiles need every window's maximum;
- sums of a, a^2, a^3, a^4 over every token (float64, per shard) -> mean, variance,
  skewness, excess kurtosis;
- the true minimum and maximum over every token, and a histogram over every token:
  ``N_BINS`` uniform bins over the range the calibration sample's tokens span, plus an
  underflow and an overflow bin out to the true minimum and maximum (no assumption about
  the activation function).

MERGEABLE: every selection is "the K smallest int64 keys", a key holding the ranked value
and, in its low 32 bits, the window id, so ties break by window id and the kept set does not
depend on the order windows are seen in. Histograms are integer counts; moment sums are kept
per shard (a fixed split of the windows into at most ``MAX_SHARDS`` runs of whole batches)
and added in shard order. So the states of disjoint shards merge into exactly the state one
pass over all of them gives: :mod:`neuronwidget.activations.distributed` folds shards on Ray
workers and writes the same index as this single process.

The build checkpoints its state atomically every ``checkpoint_every`` batches (and at most
once per ``checkpoint_seconds``); an interrupted build resumes to the identical index.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, cache_root, stable_hash
from ..subject import LoadedModel
from .corpus import WINDOW, Corpus, as_corpus
from .state import MAX_SHARDS, N_BINS, Calibration, IndexState, Plan, Progress, finalize_arrays, forward, make_progress
from .store import FORMAT_VERSION, QUANTILES, CorruptIndexError, NeuronIndex, read_store, write_store



class IndexBuilder:
    """One index build: ``run()`` returns the NeuronIndex (from cache when possible)."""

    def __init__(self, lm: LoadedModel, corpus: Any = None, *, top_k: int = 40, bottom_k: int | None = None,
                 n_random: int = 30, n_quantile: int = 5, seed: int = 0, batch_size: int | None = None,
                 calibration_windows: int = 256, checkpoint_every: int = 25, checkpoint_seconds: float = 60.0,
                 cache_dir: Path | None = None):
        for name, value, lo in (("top_k", top_k, 1), ("n_random", n_random, 0), ("n_quantile", n_quantile, 1),
                                ("checkpoint_every", checkpoint_every, 1), ("calibration_windows", calibration_windows, 8)):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if bottom_k is None:  # both tails for signed neurons (gated MLPs), the top alone for GELU's
            bottom_k = top_k if lm.signed else 0
        if not isinstance(bottom_k, int) or isinstance(bottom_k, bool) or bottom_k < 0:
            raise ValueError(f"bottom_k must be an integer >= 0 (0: no bottom tail) or None, got {bottom_k!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        self.lm = lm
        self.corpus: Corpus = as_corpus(corpus, device=lm.device.type)
        self.top_k, self.bottom_k, self.n_random, self.n_quantile, self.seed = top_k, bottom_k, n_random, n_quantile, seed
        self.batch_size = batch_size or (64 if lm.device.type == "cpu" else 128)  # bigger batches: fewer bookkeeping ops per token
        self.calibration_windows = calibration_windows
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds  # and at least this long apart (the state can be 100s of MB)
        self.settings = {"top_k": top_k, "bottom_k": bottom_k, "n_random": n_random, "n_quantile": n_quantile, "seed": seed,
                         "window": WINDOW, "calibration_windows": calibration_windows, "quantiles": list(QUANTILES),
                         "n_bins": N_BINS}
        self.key = stable_hash({"model": lm.identity, "dtype": str(lm.dtype), "corpus": self.corpus.fingerprint,
                                "max_tokens": self.corpus.max_tokens, "settings": self.settings,
                                "format": FORMAT_VERSION})
        root = (Path(cache_dir) if cache_dir is not None else cache_root()) / "index"
        self.folder: Path = root / self.key
        self.checkpoint_path: Path = root / f"{self.key}.checkpoint.pt"
        self.shard_dir: Path = root / f"{self.key}.shards"  # per-worker checkpoints of a distributed build
        self.built = False  # True when run() computed the index rather than loading it
        self.timings: dict[str, float] = {}  # seconds spent, when built

    # -- cache ---------------------------------------------------------------------------
    def _open(self, arrays: dict, meta: dict) -> NeuronIndex:
        table = getattr(self.lm, "token_bytes", None)
        return NeuronIndex(self.folder, arrays, meta, self.lm.token_strings(),
                           token_bytes=table() if callable(table) else None)

    def load_cached(self) -> NeuronIndex | None:
        if not (self.folder / "manifest.json").exists():
            return None
        try:
            arrays, meta = read_store(self.folder)
        except CorruptIndexError:
            return None
        return self._open(arrays, meta)

    def run(self, *, rebuild: bool = False, progress: bool | Progress = True, distributed: str | None = None,
            workers: int | None = None, max_worker_deaths: int | None = None) -> NeuronIndex:
        """The index, from cache or built. ``distributed="ray"`` folds shards on Ray workers
        (see :mod:`neuronwidget.activations.distributed`): the same index, bit for bit;
        ``workers`` (default: one per GPU, else per CPU) and ``max_worker_deaths`` (survived
        within the call; default 3) tune it."""
        if distributed not in (None, "ray"):
            raise ValueError(f"distributed must be None (one process) or 'ray', got {distributed!r}")
        if distributed is None and (workers is not None or max_worker_deaths is not None):
            raise ValueError("workers and max_worker_deaths only apply with distributed='ray'")
        if not rebuild:
            cached = self.load_cached()
            if cached is not None:
                return cached
        else:
            self.discard_checkpoints()
        if distributed == "ray":
            from .distributed import MAX_WORKER_DEATHS, build_on_ray

            build_on_ray(self, progress, workers=workers,
                         max_worker_deaths=MAX_WORKER_DEATHS if max_worker_deaths is None else max_worker_deaths)
        else:
            self._build(progress)
        self.built = True
        arrays, meta = read_store(self.folder, verify=False)  # just written and checksummed
        return self._open(arrays, meta)

    def discard_checkpoints(self) -> None:
        import shutil

        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()
        shutil.rmtree(self.shard_dir, ignore_errors=True)

    # -- build ---------------------------------------------------------------------------
    def plan(self) -> Plan:
        windows = self.corpus.windows(self.lm.tokenizer, self.lm.eos_token_id, WINDOW)
        return Plan(windows, self.batch_size, self.top_k, self.n_random, self.n_quantile, self.seed, self.bottom_k)

    def new_state(self, plan: Plan, calib: Calibration) -> IndexState:
        return IndexState(self.lm.n_layers, self.lm.n_neurons, plan, calib, self.lm.device)

    def calibrate(self, plan: Plan) -> Calibration:
        rng = np.random.default_rng([self.seed, 1])
        pick = np.sort(rng.choice(plan.n_windows, size=min(self.calibration_windows, plan.n_windows), replace=False))
        parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in range(self.lm.n_layers)]

        def fn(layer: int, acts: torch.Tensor) -> None:
            a = acts.float()
            parts[layer].append((a.amax(1), a.amin((0, 1)), a.amax((0, 1))))

        for s in range(0, len(pick), self.batch_size):
            forward(self.lm, plan.windows[pick[s:s + self.batch_size]], fn)
        return Calibration.from_samples(parts, self.lm.device)

    def _build(self, progress: bool | Progress) -> None:
        lm = self.lm
        plan = self.plan()
        t0 = time.perf_counter()
        state, start = self._resume(plan)
        if state is None:
            state = self.new_state(plan, self.calibrate(plan))
        t1 = time.perf_counter()
        report = make_progress(progress, plan.n_batches, f"indexing {lm.short_name} ({plan.n_windows * WINDOW:,} tokens)")
        try:
            report(start, plan.n_batches, "resumed" if start else "started")
            last_checkpoint = time.perf_counter()
            for bi in range(start, plan.n_batches):
                state.fold_batch(lm, bi)
                done = bi + 1
                if (done % self.checkpoint_every == 0 and done < plan.n_batches
                        and time.perf_counter() - last_checkpoint >= self.checkpoint_seconds):
                    self._checkpoint(state, done)
                    last_checkpoint = time.perf_counter()
                report(done, plan.n_batches, "")
        finally:
            report(-1, plan.n_batches, "close")
        t2 = time.perf_counter()
        self.write(plan, state)
        self.timings = {"calibration_s": t1 - t0, "pass_s": t2 - t1, "write_s": time.perf_counter() - t2,
                        "windows": plan.n_windows, "batches_run": plan.n_batches - start}
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    def _resume(self, plan: Plan) -> tuple[IndexState | None, int]:
        if not self.checkpoint_path.exists():
            return None, 0
        try:
            ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if ck.get("key") != self.key:
                return None, 0
            state = IndexState.from_dict(ck["state"], plan, self.lm.device)
            return state, int(ck["next_batch"])
        except Exception:  # a damaged checkpoint only costs a restart
            return None, 0

    def _checkpoint(self, state: IndexState, next_batch: int) -> None:
        buf = io.BytesIO()
        torch.save({"key": self.key, "next_batch": next_batch, "state": state.to_dict()}, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())

    def write(self, plan: Plan, state: IndexState) -> None:
        arrays = finalize_arrays(plan, state)
        meta = {"model_name": self.lm.name, "short_name": self.lm.short_name, "model_identity": self.lm.identity,
                "corpus_name": self.corpus.name, "corpus_fingerprint": self.corpus.fingerprint,
                "n_layers": self.lm.n_layers, "n_neurons": self.lm.n_neurons, "n_tokens": int(plan.windows.size),
                "n_windows": plan.n_windows, "settings": self.settings,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_store(self.folder, arrays, meta)


def build_index(lm: LoadedModel, corpus: Any = None, *, rebuild: bool = False, progress: bool | Progress = True,
                distributed: str | None = None, workers: int | None = None, **settings: Any) -> NeuronIndex:
    """Load the cached index for (model, corpus, settings) or build it (resuming if interrupted)."""
    return IndexBuilder(lm, corpus, **settings).run(rebuild=rebuild, progress=progress, distributed=distributed,
                                                    workers=workers)


__all__ = ["IndexBuilder", "NeuronIndex", "Plan", "build_index"]
