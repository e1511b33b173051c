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

LAYER BY LAYER: every layer's state is its own (calibration included), so any set of layers
can be built by one pass whose forward stops after the highest of them, and a layer built
alone is byte-identical to the same layer of a whole build. Each layer is written as its own
part of the index folder (see :mod:`.store`) when its pass ends. ``run(lazy=True)`` returns
an index at once that builds a layer (with the missing ones below it) when first read: the
first view of layer L costs a pass to layer L. Builds of one index take turns on a lock file
(``fcntl.flock``): a second kernel or process waits for the part being built, then uses it.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_write_bytes, cache_root, stable_hash
from ..subject import LoadedModel
from .corpus import WINDOW, Corpus, as_corpus
from .finalize import common_arrays, finalize_arrays
from .state import MAX_SHARDS, N_BINS, Calibration, IndexState, Plan, Progress, forward, make_progress
from .store import (COMMON, FORMAT_VERSION, QUANTILES, CorruptIndexError, NeuronIndex, layer_dir, read_manifest,
                    read_store, write_store)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: parts still appear by rename, builds just do not take turns
    fcntl = None

OLD_FORMATS = (3, 2)  # formats whose folders were keyed with their version: found, reported, replaced


class IndexFormatWarning(UserWarning):
    """An index on disk is in an older format: it is rebuilt in the current one."""


def _span(layers: list[int]) -> str:
    if len(layers) == 1:
        return f"layer {layers[0]}"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"layers {layers[0]}-{layers[-1]}"
    return "layers " + ", ".join(str(x) for x in layers)


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
        # the layers this index covers: every layer for neurons, the SAEs' layers for a unit space
        self.layers: list[int] = list(getattr(lm, "unit_layers", None) or range(lm.n_layers))
        self.units: str | None = getattr(lm, "units", None)
        self.corpus: Corpus = as_corpus(corpus, device=lm.device.type)
        self.top_k, self.bottom_k, self.n_random, self.n_quantile, self.seed = top_k, bottom_k, n_random, n_quantile, seed
        self.batch_size = batch_size or (64 if lm.device.type == "cpu" else 128)  # bigger batches: fewer bookkeeping ops per token
        self.calibration_windows = calibration_windows
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds  # and at least this long apart (the state can be 100s of MB)
        self.settings = {"top_k": top_k, "bottom_k": bottom_k, "n_random": n_random, "n_quantile": n_quantile, "seed": seed,
                         "window": WINDOW, "calibration_windows": calibration_windows, "quantiles": list(QUANTILES),
                         "n_bins": N_BINS}
        ident = {"model": lm.identity, "dtype": str(lm.dtype), "corpus": self.corpus.fingerprint,
                 "max_tokens": self.corpus.max_tokens, "settings": self.settings}
        # from format 4 on, the format lives in the manifests (an older index is found in place);
        # formats 2-3 put it in the key, so their folders are looked up by their own keys
        self.key = stable_hash(ident)
        self.old_keys = {fmt: stable_hash({**ident, "format": fmt}) for fmt in OLD_FORMATS}
        self.root = (Path(cache_dir) if cache_dir is not None else cache_root()) / "index"
        self.folder: Path = self.root / self.key
        self.checkpoint_path: Path = self.root / f"{self.key}.checkpoint.pt"
        self.shard_dir: Path = self.root / f"{self.key}.shards"  # per-worker checkpoints of a distributed build
        self.lock_path: Path = self.root / f"{self.key}.lock"
        self.built = False  # True when this builder computed some layer rather than loading it
        self.timings: dict[str, float] = {}  # seconds spent by the last build step
        self.progress: bool | Progress = True  # how on-demand builds of a lazy index report
        self.notes: list[str] = []  # what happened to older indexes
        self._thread_lock = threading.RLock()
        self._lock_file: Any = None
        self._lock_depth = 0
        self._plan: Plan | None = None
        self._old: list[Path] = []  # older-format indexes to remove once this one is complete

    # -- locking -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Exclusive use of this index's folder: kernels and processes building the same index
        take turns (``fcntl.flock`` on ``<key>.lock``; re-entrant within this builder)."""
        with self._thread_lock:
            if self._lock_depth == 0:
                self.root.mkdir(parents=True, exist_ok=True)
                f = open(self.lock_path, "a+")
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                self._lock_file = f
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    if fcntl is not None:
                        fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    # -- cache ---------------------------------------------------------------------------
    def meta(self, plan: Plan) -> dict[str, Any]:
        return {"model_name": self.lm.name, "short_name": self.lm.short_name, "model_identity": self.lm.identity,
                "corpus_name": self.corpus.name, "corpus_fingerprint": self.corpus.fingerprint,
                "n_layers": self.lm.n_layers, "n_neurons": self.lm.n_neurons, "n_tokens": int(plan.windows.size),
                "n_windows": plan.n_windows, "settings": self.settings, "key": self.key,
                **({"units": self.units, "unit_layers": self.layers} if self.units else {})}

    def _read_common(self, verify: bool = True) -> tuple[dict, dict] | None:
        try:
            return read_store(self.folder / COMMON, verify=verify)
        except CorruptIndexError:
            return None

    def _layer_ok(self, layer: int) -> dict | None:
        try:
            arrays, meta = read_store(self.folder / layer_dir(layer))
        except CorruptIndexError:
            return None
        return arrays if meta.get("layer") == layer and meta.get("key") == self.key else None

    def _index(self, common: tuple[dict, dict], lazy: bool) -> NeuronIndex:
        table = getattr(self.lm, "token_bytes", None)
        cls: type[NeuronIndex] = NeuronIndex
        if self.units:  # the same API over a unit space
            from .units import UnitIndex

            cls = UnitIndex
        idx = cls(self.folder, common[0], common[1], self.lm.token_strings(),
                          token_bytes=table() if callable(table) else None, builder=self)
        return idx

    def load_cached(self) -> NeuronIndex | None:
        """The complete index on disk, every file checked (None when any part is missing or damaged)."""
        common = self._read_common()
        if common is None:
            return None
        idx = self._index(common, lazy=False)
        for layer in self.layers:
            arrays = self._layer_ok(layer)
            if arrays is None:
                return None
            idx._layers[layer] = arrays
        return idx

    def _replace_old_formats(self, progress: Any) -> list[Path]:
        """Older indexes of this (model, corpus, settings): reported; returned for removal once
        the new one is complete (nothing is deleted before its replacement exists)."""
        old = []
        for fmt, key in self.old_keys.items():
            path = self.root / key
            if (path / "manifest.json").exists():
                try:
                    found = read_manifest(path).get("format_version", fmt)
                except CorruptIndexError:
                    found = fmt
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                old.append((path, found, size))
        top = self.folder / "manifest.json"  # a format < 4 layout in this very folder (never written by 4)
        common_meta = None
        if (self.folder / COMMON / "manifest.json").exists():
            try:
                common_meta = read_manifest(self.folder / COMMON)
            except CorruptIndexError:
                common_meta = None
        if top.exists() or (common_meta is not None and common_meta.get("format_version") != FORMAT_VERSION):
            found = (common_meta or {}).get("format_version") if not top.exists() else read_manifest(self.folder).get(
                "format_version")
            size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
            aside = self.root / f".{self.key}.format-{found}-{time.time_ns()}"
            self.folder.rename(aside)  # out of the way now: its parts must not be read as format 4
            old.append((aside, found, size))
        for path, found, size in old:
            note = (f"the index of {self.lm.short_name} on this corpus at {path} is in the older format {found} "
                    f"({size / 1e6:,.0f} MB); it is rebuilt in format {FORMAT_VERSION} (compact records, one folder per "
                    f"layer) and the old one is removed once the new one is complete")
            self.notes.append(note)
            warnings.warn(note, IndexFormatWarning, stacklevel=4)
        return [p for p, _, _ in old]

    def run(self, *, rebuild: bool = False, progress: bool | Progress = True, distributed: str | None = None,
            workers: int | None = None, max_worker_deaths: int | None = None, lazy: bool = False) -> NeuronIndex:
        """The index, from cache or built. ``distributed="ray"`` folds shards on Ray workers
        (see :mod:`neuronwidget.activations.distributed`): the same index, bit for bit;
        ``workers`` (default: one per GPU, else per CPU) and ``max_worker_deaths`` (how often
        each worker may die: Ray restarts it and retries what it held; default 3) tune it.

        ``lazy=True``: return at once; a layer is built when it is first read (with the
        missing layers below it: the forward pass runs through them anyway, and stops after
        the layer asked for), so the first view of layer L costs a pass to layer L only.
        ``index.complete()`` builds the rest."""
        if distributed not in (None, "ray"):
            raise ValueError(f"distributed must be None (one process) or 'ray', got {distributed!r}")
        if distributed is None and (workers is not None or max_worker_deaths is not None):
            raise ValueError("workers and max_worker_deaths only apply with distributed='ray'")
        if lazy and distributed is not None:
            raise ValueError("lazy=True builds layers on demand in this process; it does not go with distributed='ray'")
        self.progress = progress
        with self.locked():
            if rebuild:
                self.discard_checkpoints()
                if self.folder.exists():
                    aside = self.root / f".{self.key}.rebuild-{time.time_ns()}"
                    self.folder.rename(aside)
                    shutil.rmtree(aside, ignore_errors=True)
            old = self._replace_old_formats(progress)
            common = self._ensure_common()
            idx = self._index(common, lazy)
            if not lazy:
                missing = []
                for layer in self.layers:
                    arrays = self._layer_ok(layer)
                    if arrays is None:
                        missing.append(layer)
                    else:
                        idx._layers[layer] = arrays
                if missing:
                    self.build_layers(missing, progress=progress, distributed=distributed, workers=workers,
                                      max_worker_deaths=max_worker_deaths)
                    for layer in missing:
                        idx._layers[layer] = read_store(self.folder / layer_dir(layer), verify=False)[0]
            self._old = old
            self._remove_old_when_complete()
        return idx

    def _remove_old_when_complete(self) -> None:
        """Remove the older-format indexes found by run() once every layer of this one is on disk
        (a lazy index: when its last layer is built)."""
        if self._old and all(self._layer_ok(layer) is not None for layer in self.layers):
            for path in self._old:
                shutil.rmtree(path, ignore_errors=True)
            self._old = []

    def _ensure_common(self) -> tuple[dict, dict]:
        common = self._read_common()
        if common is None or common[1].get("key") != self.key:
            plan = self.plan()
            write_store(self.folder / COMMON, common_arrays(plan), self.meta(plan))
            common = self._read_common(verify=False)
            assert common is not None
        return common

    def discard_checkpoints(self) -> None:
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()
        shutil.rmtree(self.shard_dir, ignore_errors=True)

    # -- build ---------------------------------------------------------------------------
    def plan(self) -> Plan:
        if self._plan is None:
            windows = self.corpus.windows(self.lm.tokenizer, self.lm.eos_token_id, WINDOW)
            self._plan = Plan(windows, self.batch_size, self.top_k, self.n_random, self.n_quantile, self.seed,
                              self.bottom_k)
        return self._plan

    def new_state(self, plan: Plan, calib: Calibration, layers: Any = None) -> IndexState:
        return IndexState(self.lm.n_layers, self.lm.n_neurons, plan, calib, self.lm.device,
                          self.layers if layers is None else layers, nonzero=self.units is not None)

    def calibrate(self, plan: Plan, layers: Any = None) -> Calibration:
        layers, pick, fn, finish = self.calibrator(plan, layers)
        for s in range(0, len(pick), self.batch_size):
            forward(self.lm, plan.windows[pick[s:s + self.batch_size]], fn, layers)
        return finish()

    def calibrator(self, plan: Plan, layers: Any = None) -> tuple[list[int], np.ndarray, Any, Any]:
        """(layers, the calibration windows, ``fn(layer, acts)`` to call on their activations in
        batches of ``batch_size``, ``finish()`` -> Calibration): a pass someone else may run."""
        layers = list(self.layers) if layers is None else sorted(layers)
        pos = {layer: i for i, layer in enumerate(layers)}
        rng = np.random.default_rng([self.seed, 1])
        pick = np.sort(rng.choice(plan.n_windows, size=min(self.calibration_windows, plan.n_windows), replace=False))
        parts: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [[] for _ in layers]

        def fn(layer: int, acts: torch.Tensor) -> None:
            a = acts.float()
            parts[pos[layer]].append((a.amax(1), a.amin((0, 1)), a.amax((0, 1))))

        return layers, pick, fn, lambda: Calibration.from_samples(parts, self.lm.device)

    def build_layers(self, layers: Any, *, progress: bool | Progress | None = None, distributed: str | None = None,
                     workers: int | None = None, max_worker_deaths: int | None = None) -> list[int]:
        """Build the layers of ``layers`` that are not on disk (under the lock: a build another
        process finished meanwhile is used, not repeated); returns the layers built."""
        progress = self.progress if progress is None else progress
        with self.locked():
            missing = [layer for layer in sorted(set(int(x) for x in layers) & set(self.layers))
                       if self._layer_ok(layer) is None]
            if not missing:
                return []
            self._ensure_common()
            if distributed == "ray":
                from .distributed import MAX_WORKER_DEATHS, build_on_ray

                build_on_ray(self, progress, workers=workers,
                             max_worker_deaths=MAX_WORKER_DEATHS if max_worker_deaths is None else max_worker_deaths)
            else:
                self._build(missing, progress)
            self.built = True
            self._remove_old_when_complete()
            return missing

    def _build(self, layers: list[int], progress: bool | Progress) -> None:
        lm = self.lm
        plan = self.plan()
        t0 = time.perf_counter()
        state, start = self._resume(plan, layers)
        if state is None:
            state = self.new_state(plan, self.calibrate(plan, layers), layers)
        t1 = time.perf_counter()
        which = "" if len(layers) == len(self.layers) else f" {_span(layers)} of {lm.n_layers}"
        report = make_progress(progress, plan.n_batches,
                               f"indexing {lm.short_name}{which} ({plan.n_windows * WINDOW:,} tokens)")
        try:
            report(start, plan.n_batches, ("resumed" if start else "started") + (f":{which}" if which else ""))
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
                        "windows": plan.n_windows, "batches_run": plan.n_batches - start, "layers": list(layers)}
        if self.checkpoint_path.exists():
            self.checkpoint_path.unlink()

    def _resume(self, plan: Plan, layers: list[int]) -> tuple[IndexState | None, int]:
        if not self.checkpoint_path.exists():
            return None, 0
        try:
            ck = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            if ck.get("key") != self.key or list(ck["state"].get("layer_ids", [])) != list(layers):
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
        """Write every layer of ``state`` as its own part (each appears by one rename)."""
        with self.locked():
            self._ensure_common()
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for layer, arrays in finalize_arrays(plan, state).items():
                write_store(self.folder / layer_dir(layer), arrays, {"layer": layer, "key": self.key, "created": created})


def build_index(lm: LoadedModel, corpus: Any = None, *, rebuild: bool = False, progress: bool | Progress = True,
                distributed: str | None = None, workers: int | None = None, lazy: bool = False,
                **settings: Any) -> NeuronIndex:
    """Load the cached index for (model, corpus, settings) or build it (resuming if interrupted)."""
    return IndexBuilder(lm, corpus, **settings).run(rebuild=rebuild, progress=progress, distributed=distributed,
                                                    workers=workers, lazy=lazy)


__all__ = ["IndexBuilder", "IndexFormatWarning", "NeuronIndex", "Plan", "build_index"]
