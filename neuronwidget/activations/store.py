"""The on-disk layout of a neuron index and the :class:`NeuronIndex` that reads it.

One folder per (model identity, corpus fingerprint, settings) under
``<cache root>/index/``. Arrays are ``.npy`` files, neuron-major: ``[layer, neuron,
...]``, so one neuron's records are one contiguous slice. Window token ids are stored
once (``windows.npy``) and referenced by window id. ``manifest.json`` lists every file
with its shape, dtype and SHA-256; a folder whose files do not match is treated as
corrupt and rebuilt. The folder appears atomically (written under a temporary name, then
renamed), so a half-written index is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json
from ..records import ActivationRecord, NeuronId, NeuronRecord, check_layer_neuron

FORMAT_VERSION = 3  # 2: both tails, per-neuron deduplicated window activations; 3: bottom tail optional, extremes
QUANTILES = (0.5, 0.9, 0.99, 0.999)


class CorruptIndexError(Exception):
    """An index folder on disk does not match its manifest."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_store(folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` and a manifest into ``folder`` atomically (replacing any old one)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        files = {}
        for name, arr in arrays.items():
            path = tmp / f"{name}.npy"
            with open(path, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
                f.flush()
                os.fsync(f.fileno())
            files[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _sha256(path)}
        atomic_write_json(tmp / "manifest.json", {**meta, "format_version": FORMAT_VERSION, "files": files})
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_store(folder: Path, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Memory-map the arrays of ``folder`` after checking them against the manifest
    (``verify=False`` skips the checksums: for a store this process has just written)."""
    try:
        meta = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptIndexError(f"unreadable manifest in {folder}: {e}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptIndexError(f"index format {meta.get('format_version')} != {FORMAT_VERSION}")
    arrays = {}
    for name, info in meta.get("files", {}).items():
        path = folder / f"{name}.npy"
        try:
            if verify and _sha256(path) != info["sha256"]:
                raise CorruptIndexError(f"{path} does not match its checksum")
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise CorruptIndexError(f"cannot read {path}: {e}") from None
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            raise CorruptIndexError(f"{path} has shape {arr.shape} {arr.dtype}, manifest says {info}")
        arrays[name] = arr
    return arrays, meta


class NeuronIndex:
    """What one pass over a corpus recorded for every neuron of every layer.

    ``record(layer, neuron)`` gives OpenAI's NeuronRecord: the ``top_k`` windows with the
    highest maximum activation (sorted, highest first), ``n_random`` random windows (the
    same windows for every neuron), samples by quantile of the per-window maximum, mean /
    variance / skewness / excess kurtosis over every corpus token, and (a neuronwidget
    extra, for signed neurons: ``bottom_k`` > 0) the ``bottom_k`` windows with the lowest
    minimum activation, lowest first.

    Layout (format 2): each neuron's records reference windows by id; the per-token
    activations of every window a neuron references are stored once for that neuron
    (``ref_acts`` rows ``ref_offsets[i]:ref_offsets[i + 1]`` for neuron ``i = layer *
    n_neurons + neuron``, window ids ascending in ``ref_windows``), so a window that is both
    a top and a random window, say, costs one row, and a neuron never stores more windows
    than the corpus has.
    """

    def __init__(self, folder: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], token_strings: list[str],
                 token_bytes: list[bytes] | None = None):
        self.folder = folder
        self._a = arrays
        self._meta = meta
        self._tok = np.asarray(token_strings, dtype=object)
        self._bytes = None if token_bytes is None else np.asarray(token_bytes, dtype=object)
        self.model_name: str = meta["model_name"]
        self.n_layers: int = meta["n_layers"]
        self.n_neurons: int = meta["n_neurons"]
        self.n_tokens: int = meta["n_tokens"]
        self.n_windows: int = meta["n_windows"]
        self.corpus_name: str = f"{meta['corpus_name']}, {self.n_tokens:,} tokens"
        self.settings: dict[str, Any] = meta["settings"]
        self.precomputed = False
        self.histogram_caption = "activation over every corpus token (count, log scale)"
        self._short = meta.get("short_name", self.model_name)

    def __repr__(self) -> str:
        return (f"NeuronIndex(model={self.model_name!r}, corpus={self.corpus_name!r}, "
                f"layers={self.n_layers}, neurons={self.n_neurons})")

    def _check(self, layer: Any, neuron: Any) -> tuple[int, int]:
        return check_layer_neuron(layer, neuron, self.n_layers, self.n_neurons, self._short)

    def window_activations(self, layer: int, neuron: int, window_ids: Any) -> np.ndarray:
        """float16 [len(window_ids), 64]: the neuron's activations on windows it recorded
        (a ValueError for a window it did not keep)."""
        layer, neuron = self._check(layer, neuron)
        i = layer * self.n_neurons + neuron
        lo, hi = (int(x) for x in self._a["ref_offsets"][i:i + 2])
        known = np.asarray(self._a["ref_windows"][lo:hi])
        ids = np.asarray(window_ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(known, ids)
        if ids.size and (np.any(pos >= len(known)) or np.any(known[np.minimum(pos, len(known) - 1)] != ids)):
            raise ValueError(f"L{layer}/N{neuron} did not record some of windows {ids.tolist()}")
        return np.asarray(self._a["ref_acts"][lo:hi])[pos]

    def _records(self, layer: int, neuron: int, window_ids: np.ndarray) -> list[ActivationRecord]:
        ids = np.asarray(window_ids, dtype=np.int64)
        ids = ids[ids >= 0]
        acts = self.window_activations(layer, neuron, ids).astype(np.float32)
        tokens = np.asarray(self._a["windows"][ids])  # one read from the memory map, not one per window
        out = []
        for toks, a in zip(tokens, acts):
            out.append(ActivationRecord(tokens=self._tok[toks].tolist(), activations=a.tolist(),
                                        token_bytes=None if self._bytes is None else self._bytes[toks].tolist()))
        return out

    def top_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None) -> list[ActivationRecord]:
        """Top windows ``start:stop`` of one neuron, highest maximum activation first."""
        layer, neuron = self._check(layer, neuron)
        return self._records(layer, neuron, self._a["top_ids"][layer, neuron, slice(start, stop)])

    def bottom_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None) -> list[ActivationRecord]:
        """Bottom windows ``start:stop`` of one neuron, lowest minimum activation first."""
        layer, neuron = self._check(layer, neuron)
        return self._records(layer, neuron, self._a["bottom_ids"][layer, neuron, slice(start, stop)])

    def random_records(self, layer: int, neuron: int) -> list[ActivationRecord]:
        layer, neuron = self._check(layer, neuron)
        return self._records(layer, neuron, self._a["rand_ids"])

    def record(self, layer: int, neuron: int) -> NeuronRecord:
        """Everything recorded about one neuron, as OpenAI's NeuronRecord."""
        layer, neuron = self._check(layer, neuron)
        q_ids = np.asarray(self._a["q_ids"][layer, neuron])
        mean, var, skew, kurt = (float(x) for x in self._a["moments"][layer, neuron])
        return NeuronRecord(
            neuron_id=NeuronId(layer, neuron),
            random_sample=self.random_records(layer, neuron),
            random_sample_by_quantile=[self._records(layer, neuron, q_ids[b]) for b in range(q_ids.shape[0])],
            quantile_boundaries=[float(x) for x in self._a["q_bounds"][layer, neuron]],
            mean=mean, variance=var, skewness=skew, kurtosis=kurt,
            most_positive_activation_records=self.top_records(layer, neuron),
            most_negative_activation_records=self.bottom_records(layer, neuron),
        )

    def histogram(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts) of this neuron's activation over every corpus token.

        Bins are uniform over the range the tokens of a calibration sample span; the first
        bin runs from the neuron's true minimum up to there and the last from there to the
        true maximum (each one bin width wide when nothing fell outside the range).
        """
        layer, neuron = self._check(layer, neuron)
        return (np.array(self._a["hist_edges"][layer, neuron], dtype=np.float64),
                np.array(self._a["hist_counts"][layer, neuron], dtype=np.int64))

    def max_activation(self, layer: int, neuron: int) -> float:
        """The largest activation of this neuron over the corpus."""
        layer, neuron = self._check(layer, neuron)
        return float(self._a["extremes"][layer, neuron, 1])

    def min_activation(self, layer: int, neuron: int) -> float:
        """The smallest (most negative) activation of this neuron over the corpus."""
        layer, neuron = self._check(layer, neuron)
        return float(self._a["extremes"][layer, neuron, 0])

    def mean_activation(self, layer: int, neuron: int) -> float:
        """This neuron's mean activation over every corpus token (what mean-ablation puts in)."""
        layer, neuron = self._check(layer, neuron)
        return float(self._a["moments"][layer, neuron, 0])

    def window_tokens(self, layer: int, neuron: int, side: str = "positive", stop: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(token ids int64 [n, 64], activations float32 [n, 64]) of this neuron's top windows
        (``side="negative"``: its bottom windows), strongest first: what a forward pass needs."""
        layer, neuron = self._check(layer, neuron)
        if side not in ("positive", "negative"):
            raise ValueError(f"side must be 'positive' or 'negative', got {side!r}")
        ids = np.asarray(self._a["top_ids" if side == "positive" else "bottom_ids"][layer, neuron, slice(0, stop)],
                         dtype=np.int64)
        ids = ids[ids >= 0]
        acts = self.window_activations(layer, neuron, ids).astype(np.float32)
        return np.asarray(self._a["windows"][ids], dtype=np.int64), acts

    def extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) float32 [layers, neurons]: every neuron's range over every corpus token."""
        e = np.asarray(self._a["extremes"], dtype=np.float32)
        return e[:, :, 0], e[:, :, 1]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.iterdir())


__all__ = ["NeuronIndex", "CorruptIndexError", "write_store", "read_store", "QUANTILES", "FORMAT_VERSION"]
