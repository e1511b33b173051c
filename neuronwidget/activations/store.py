"""The on-disk layout of a neuron index and the :class:`NeuronIndex` that reads it.

Format 6 (the layout of format 4 on). One folder per (model identity, corpus fingerprint,
settings) under ``<cache root>/index/``, holding one sub-folder per part, each written atomically
(written under a temporary name, fsynced, then renamed into place) with its own
``manifest.json`` (shape, dtype and SHA-256 of every file):

- ``common/``: what every layer shares: ``windows.npy`` (the corpus windows' token ids),
  ``rand_ids.npy``, and the index's facts (model, corpus, settings, layer count);
- ``layer-NNN/``: everything recorded for layer NNN's neurons (arrays neuron-major:
  ``[neuron, ...]``). A layer folder exists only when the layer is complete, so the set of
  ``layer-*`` folders *is* the list of ready layers: a view of layer L reads its layer as
  soon as it is written, whatever the other layers' state.

A part whose files do not match its manifest is treated as missing and built again. Several
processes building one index take turns on a lock file (``<key>.lock``, ``fcntl.flock``;
see :mod:`.build`), and every part appears by one ``rename``, so a reader never sees a
half-written part and two writers never mix their files.

Window activations are stored compactly (:mod:`.codes`): per neuron, every window one of
its lists references, once, neuron by neuron and window ids ascending (:func:`ref_layout`
derives that order from the lists themselves, so no window id is stored twice): 6-bit codes
(``ref_codes``, 48 bytes a window) for the windows scores and views read, 4-bit codes
(``sample_codes``, 32 bytes) for the windows only the quantile samples reference, and each
window's range bytes (``ref_hi``, ``ref_lo``) except those its exact extreme gives (a top
window's maximum is ``top_max``, a bottom window's minimum ``bottom_min``). Exact float32
values are recomputed, for the windows a view shows, by running those windows to the layer
(:meth:`NeuronIndex.attach`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json
from ..records import ActivationRecord, NeuronId, NeuronRecord, check_layer_neuron
from . import codes

# 2: both tails, per-neuron deduplicated window activations; 3: bottom tail optional,
# extremes; 4: one folder per layer, window activations as 6-bit codes, exact values recomputed;
# 5: window ids and offsets derived from the lists, quantile-only windows in 4 bits, range
# bytes given by exact extremes dropped, moments float32; 6: the codes' steps (codes.GAMMA 0.8,
# more steps for the part a window's exact extreme bounds, nearest range codes, steps decoded at
# their mean): the same bytes, read differently
FORMAT_VERSION = 6
QUANTILES = (0.5, 0.9, 0.99, 0.999)
N_BINS = 48  # uniform histogram bins over the calibration range (+ underflow + overflow)
COMMON = "common"
# What NeuronView shows of a neuron at first: record() gives these windows exact values
SHOWN_TOP, SHOWN_RANDOM, SHOWN_QUANTILE = 10, 10, 2
EXACT_CACHE_BYTES = 256 << 20  # recomputed [64, n_neurons] window slices kept in memory


class CorruptIndexError(Exception):
    """An index folder on disk does not match its manifest."""


class LayerNotReadyError(LookupError):
    """The index has not recorded this layer yet (and was opened without a way to build it)."""


# which of a neuron's lists reference a stored window (flags of ref_layout)
TOP, BOTTOM, RANDOM, QUANTILE = 1, 2, 4, 8


def ref_layout(top_ids: np.ndarray, bottom_ids: np.ndarray, rand_ids: np.ndarray, q_ids: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The windows stored for neurons with these lists (each [n, ...], -1 = empty slot):
    (neuron, window, flags, src), one entry per distinct (neuron, window), neuron by neuron and
    window ids ascending: the order of the stored rows. ``flags`` ORs TOP / BOTTOM / RANDOM /
    QUANTILE for the lists that reference the window; ``src`` is the position of its first
    reference in the row-major [n, top | bottom | random | quantile] concatenation of the lists.
    Writer and reader both derive the layout here, so it is never stored."""
    n = len(top_ids)
    parts = [np.asarray(top_ids), np.asarray(bottom_ids),
             np.broadcast_to(np.asarray(rand_ids), (n, len(rand_ids))), np.asarray(q_ids).reshape(n, -1)]
    ids = np.concatenate([p.astype(np.int64) for p in parts], 1)
    kind = np.concatenate([np.full(p.shape[1], f, np.uint8) for p, f in zip(parts, (TOP, BOTTOM, RANDOM, QUANTILE))])
    src = np.flatnonzero(ids >= 0)  # row-major
    key = (src // ids.shape[1]) << 32 | ids.reshape(-1)[src]
    order = np.argsort(key, kind="stable")  # stable: a window's first reference comes first
    key, src = key[order], src[order]
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
    flags = np.bitwise_or.reduceat(kind[src % ids.shape[1]], first) if len(key) else np.zeros(0, np.uint8)
    return key[first] >> 32, key[first] & 0xFFFFFFFF, flags, src[first]


def layer_dir(layer: int) -> str:
    return f"layer-{layer:03d}"


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
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}-{threading.get_ident()}")
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_manifest(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CorruptIndexError(f"unreadable manifest in {folder}: {e}") from None


def read_store(folder: Path, *, verify: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Memory-map the arrays of ``folder`` after checking them against the manifest
    (``verify=False`` skips the checksums: for a store this process has just written)."""
    meta = read_manifest(folder)
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


def histogram_edges(hist_range: np.ndarray) -> np.ndarray:
    """float32 [..., N_BINS + 3] edges from (first edge, calibration low, high, last edge)."""
    r = np.asarray(hist_range, dtype=np.float32)
    lo, hi = r[..., 1:2], r[..., 2:3]
    width = (hi - lo) / np.float32(N_BINS)
    grid = lo + width * np.arange(N_BINS + 1, dtype=np.float32)
    grid[..., -1] = hi[..., 0]
    return np.concatenate([r[..., 0:1], grid, r[..., 3:4]], -1)


class NeuronIndex:
    """What one pass over a corpus recorded for every neuron of every layer.

    ``record(layer, neuron)`` gives OpenAI's NeuronRecord: the ``top_k`` windows with the
    highest maximum activation (sorted, highest first), ``n_random`` random windows (the
    same windows for every neuron), samples by quantile of the per-window maximum, mean /
    variance / skewness / excess kurtosis over every corpus token, and (a neuronwidget
    extra, for signed neurons: ``bottom_k`` > 0) the ``bottom_k`` windows with the lowest
    minimum activation, lowest first.

    Layout (format 6, see the module doc): each neuron's records reference windows by id;
    the activations of every window a neuron references are stored once for that neuron
    (:func:`ref_layout`; ``stored_windows(layer, n)``) as 6-bit codes, or 4-bit for windows
    only its quantile samples reference (:mod:`.codes`). The ranking statistic of
    every top and bottom window (its maximum / minimum) and every neuron's range are exact
    float32, so the order of the records and max/min never depend on the codes.

    Values. With a model attached (:meth:`attach`; ``Engine.index()`` does it) the windows
    shown are exact float32, recomputed by running them to the layer and kept in memory
    (bounded): ``top_records`` / ``bottom_records`` always, and in ``record()`` the first
    ``SHOWN_TOP`` top and bottom windows, ``SHOWN_RANDOM`` random ones and ``SHOWN_QUANTILE``
    per quantile bin (what NeuronView shows at first); other windows carry the decoded codes
    (``exact=True`` makes every window exact, ``exact=False`` none). Without a model,
    every value is the decoded code and :attr:`values_note` says so.

    Layers. ``ready_layers()`` lists the layers on disk. An index made with a builder
    (``IndexBuilder.run(lazy=True)``) builds a missing layer when it is first read; one
    without raises :class:`LayerNotReadyError`.
    """

    def __init__(self, folder: Path, common: dict[str, np.ndarray], meta: dict[str, Any], token_strings: list[str],
                 token_bytes: list[bytes] | None = None, *, builder: Any = None, verify: bool = True):
        self.folder = Path(folder)
        self._common = common
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
        self.model: str = self._short  # the model's name (lm.short_name: what get_engine loads, the store's key)
        self._layers: dict[int, dict[str, np.ndarray]] = {}
        self._builder = builder
        self._verify = verify
        self._lock = threading.RLock()
        self._lm: Any = None
        self._exact: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._exact_bytes = 0
        self._offsets: dict[int, dict[str, np.ndarray]] = {}  # layer -> row offsets (derived, see _row_offsets)

    def __repr__(self) -> str:
        return (f"NeuronIndex(model={self.model_name!r}, corpus={self.corpus_name!r}, "
                f"layers={self.n_layers}, neurons={self.n_neurons})")

    def _check(self, layer: Any, neuron: Any) -> tuple[int, int]:
        return check_layer_neuron(layer, neuron, self.n_layers, self.n_neurons, self._short)

    # -- layers ----------------------------------------------------------------------------
    def ready_layers(self) -> list[int]:
        """The layers whose records are on disk (complete), ascending."""
        out = []
        for layer in range(self.n_layers):
            if layer in self._layers or (self.folder / layer_dir(layer) / "manifest.json").exists():
                out.append(layer)
        return out

    def _read_layer(self, layer: int) -> dict[str, np.ndarray] | None:
        folder = self.folder / layer_dir(layer)
        if not (folder / "manifest.json").exists():
            return None
        try:
            arrays, meta = read_store(folder, verify=self._verify)
        except CorruptIndexError:
            return None
        return arrays if meta.get("layer") == layer else None

    def layer_arrays(self, layer: int) -> dict[str, np.ndarray]:
        """The arrays recorded for one layer (memory-mapped), building the layer first when
        this index has a builder and the layer is not on disk yet."""
        with self._lock:
            got = self._layers.get(layer)
            if got is None:
                got = self._read_layer(layer)
                if got is None and self._builder is not None:
                    self._builder.build_layers(range(layer + 1))
                    got = self._read_layer(layer)
                if got is None:
                    raise LayerNotReadyError(
                        f"layer {layer} of {self._short} is not indexed yet (ready: {self.ready_layers() or 'none'}); "
                        "open the index with Engine.index() to build it")
                self._layers[layer] = got
            return got

    def complete(self) -> NeuronIndex:
        """Build every layer not on disk yet (one pass; nothing when all are ready)."""
        missing = [layer for layer in range(self.n_layers) if layer not in self.ready_layers()]
        if missing and self._builder is not None:
            self._builder.build_layers(missing)
        for layer in range(self.n_layers):
            self.layer_arrays(layer)
        return self

    # -- values ----------------------------------------------------------------------------
    def attach(self, lm: Any) -> NeuronIndex:
        """Recompute exact values with ``lm`` (the subject model this index was built for)."""
        if lm is not None and getattr(lm, "identity", None) != self._meta.get("model_identity"):
            raise ValueError(f"model {getattr(lm, 'short_name', lm)!r} is not the one this index was built with")
        self._lm = lm
        return self

    @property
    def exact_values(self) -> bool:
        """Whether shown windows carry exact float32 values (a model is attached)."""
        return self._lm is not None

    @property
    def values_note(self) -> str:
        if self._lm is not None:
            return "exact values (recomputed by the model for the windows shown)"
        return (f"values stored as {codes.BITS}-bit codes (within a few % of each window's largest value; "
                f"{codes.SAMPLE_BITS}-bit for windows only the quantile samples hold); "
                "open the index with Engine.index() to see exact values")

    def exact_window_activations(self, layer: int, window_ids: Any) -> np.ndarray:
        """float32 [n, 64, n_neurons]: every neuron of ``layer`` on these windows, exact
        (recomputed, forward stopped after ``layer``; cached in memory, bounded)."""
        from ..subject import run_mlp_hooks
        import torch

        if self._lm is None:
            raise ValueError("no model attached: exact values need the model (NeuronIndex.attach, or Engine.index())")
        ids = [int(w) for w in np.asarray(window_ids).reshape(-1)]
        with self._lock:
            missing = sorted({w for w in ids if (layer, w) not in self._exact})
            for s in range(0, len(missing), 32):
                part = missing[s:s + 32]
                got: list[np.ndarray] = []
                tokens = torch.from_numpy(np.asarray(self._common["windows"][part], dtype=np.int64))
                run_mlp_hooks(self._lm, tokens, [layer], lambda _l, a: got.append(a.float().cpu().numpy()))
                for w, acts in zip(part, got[0]):
                    self._exact[(layer, w)] = acts
                    self._exact_bytes += acts.nbytes
            out = np.stack([self._exact[(layer, w)] for w in ids]) if ids else np.zeros((0, 64, self.n_neurons), np.float32)
            for w in ids:
                self._exact.move_to_end((layer, w))
            while self._exact_bytes > EXACT_CACHE_BYTES and len(self._exact) > 1:
                _, old = self._exact.popitem(last=False)
                self._exact_bytes -= old.nbytes
        return out

    def _row_offsets(self, layer: int) -> dict[str, np.ndarray]:
        """Per neuron, where its rows start in each stored array of ``layer`` ([n + 1] cumulative
        counts of ``ref_codes``, ``sample_codes``, ``ref_hi``, ``ref_lo`` rows), from the lists."""
        with self._lock:
            got = self._offsets.get(layer)
            if got is None:
                a = self.layer_arrays(layer)
                neuron, _, flags, _ = ref_layout(a["top_ids"], a["bottom_ids"], self._common["rand_ids"], a["q_ids"])
                got = {}
                for name, rows in (("ref_codes", flags != QUANTILE), ("sample_codes", flags == QUANTILE),
                                   ("ref_hi", (flags & TOP) == 0), ("ref_lo", (flags & BOTTOM) == 0)):
                    counts = np.bincount(neuron[rows], minlength=self.n_neurons)
                    got[name] = np.concatenate([[0], np.cumsum(counts)])
                self._offsets[layer] = got
            return got

    def stored_windows(self, layer: int, neuron: int) -> np.ndarray:
        """The ids of the windows whose activations this neuron keeps, ascending."""
        layer, neuron = self._check(layer, neuron)
        a = self.layer_arrays(layer)
        return ref_layout(a["top_ids"][neuron:neuron + 1], a["bottom_ids"][neuron:neuron + 1], self._common["rand_ids"],
                          a["q_ids"][neuron:neuron + 1])[1]

    def window_activations(self, layer: int, neuron: int, window_ids: Any) -> np.ndarray:
        """float32 [len(window_ids), 64]: the neuron's stored (decoded) activations on windows it
        recorded, with the exact maximum of a top window and minimum of a bottom window in
        place (a ValueError for a window it did not keep)."""
        layer, neuron = self._check(layer, neuron)
        a = self.layer_arrays(layer)
        off = self._row_offsets(layer)
        one = slice(neuron, neuron + 1)
        _, known, flags, _ = ref_layout(a["top_ids"][one], a["bottom_ids"][one], self._common["rand_ids"], a["q_ids"][one])
        ids = np.asarray(window_ids, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(known, ids)
        if ids.size and (np.any(pos >= len(known)) or np.any(known[np.minimum(pos, len(known) - 1)] != ids)):
            raise ValueError(f"L{layer}/N{neuron} did not record some of windows {ids.tolist()}")
        low, high = (float(x) for x in a["extremes"][neuron])
        # each stored window's range codes: from the stored bytes, or from its exact extreme
        exact = {}  # window -> (exact maximum or None, exact minimum or None)
        for name, stat, side in (("top_ids", "top_max", 0), ("bottom_ids", "bottom_min", 1)):
            for w, v in zip(np.asarray(a[name][neuron]).tolist(), np.asarray(a[stat][neuron]).tolist()):
                if w >= 0:
                    exact.setdefault(w, [None, None])[side] = v
        ranges = np.empty((len(known), 2), dtype=np.uint8)
        top, bottom = (flags & TOP) != 0, (flags & BOTTOM) != 0
        ranges[~top, 0] = a["ref_hi"][off["ref_hi"][neuron]:off["ref_hi"][neuron + 1]]
        ranges[~bottom, 1] = a["ref_lo"][off["ref_lo"][neuron]:off["ref_lo"][neuron + 1]]
        bound = np.full((len(known), 2), np.nan)  # exact maximum / minimum of top / bottom windows
        for rows, side in ((top, 0), (bottom, 1)):
            if rows.any():
                v = np.array([exact[w][side] for w in known[rows].tolist()], dtype=np.float32)
                r = codes.range_codes(v, v, np.full(len(v), high), np.full(len(v), low))
                ranges[rows, side] = r[:, side]
                bound[rows, side] = v
        out = np.empty((len(ids), 64), dtype=np.float32)
        sample = flags == QUANTILE
        for name, kind, bits in (("ref_codes", ~sample, codes.BITS), ("sample_codes", sample, codes.SAMPLE_BITS)):
            mine = kind[pos]
            if mine.any():
                rows = off[name][neuron] + (np.cumsum(kind) - 1)[pos[mine]]
                out[mine] = codes.decode(np.asarray(a[name][rows]), ranges[pos[mine]], np.full(mine.sum(), high),
                                         np.full(mine.sum(), low), bits, bound[pos[mine], 0], bound[pos[mine], 1])
        # a top window's largest value and a bottom window's smallest are known exactly: put them in
        # (where the codes' steps are widest), so compact records keep exact per-window extremes
        for r, w in enumerate(ids.tolist()):
            mx, mn = exact.get(w, (None, None))
            if mx is not None:  # no value of the window lies past its extreme: clip, then place it
                np.minimum(out[r], mx, out=out[r])
                out[r, np.argmax(out[r])] = mx
            if mn is not None:
                np.maximum(out[r], mn, out=out[r])
                out[r, np.argmin(out[r])] = mn
        return out

    def _values(self, layer: int, neuron: int, ids: np.ndarray, n_exact: int) -> np.ndarray:
        acts = self.window_activations(layer, neuron, ids)
        if self._lm is not None and n_exact > 0 and len(ids):
            acts[:n_exact] = self.exact_window_activations(layer, ids[:n_exact])[:, :, neuron]
        return acts

    def _records(self, layer: int, neuron: int, window_ids: np.ndarray, n_exact: int = 0) -> list[ActivationRecord]:
        ids = np.asarray(window_ids, dtype=np.int64)
        ids = ids[ids >= 0]
        acts = self._values(layer, neuron, ids, n_exact)
        tokens = np.asarray(self._common["windows"][ids])  # one read from the memory map, not one per window
        out = []
        for toks, a in zip(tokens, acts):
            out.append(ActivationRecord(tokens=self._tok[toks].tolist(), activations=a.tolist(),
                                        token_bytes=None if self._bytes is None else self._bytes[toks].tolist()))
        return out

    def _n_exact(self, exact: bool | None, default: int) -> int:
        if exact is None:
            return default
        return 1 << 30 if exact else 0

    def top_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None, *,
                    exact: bool = True) -> list[ActivationRecord]:
        """Top windows ``start:stop`` of one neuron, highest maximum activation first (exact
        values when a model is attached)."""
        layer, neuron = self._check(layer, neuron)
        ids = self.layer_arrays(layer)["top_ids"][neuron, slice(start, stop)]
        return self._records(layer, neuron, ids, self._n_exact(exact, 0))

    def bottom_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None, *,
                       exact: bool = True) -> list[ActivationRecord]:
        """Bottom windows ``start:stop`` of one neuron, lowest minimum activation first."""
        layer, neuron = self._check(layer, neuron)
        ids = self.layer_arrays(layer)["bottom_ids"][neuron, slice(start, stop)]
        return self._records(layer, neuron, ids, self._n_exact(exact, 0))

    def random_records(self, layer: int, neuron: int, *, exact: bool = False) -> list[ActivationRecord]:
        layer, neuron = self._check(layer, neuron)
        return self._records(layer, neuron, self._common["rand_ids"], self._n_exact(exact, 0))

    def record(self, layer: int, neuron: int, *, exact: bool | None = None) -> NeuronRecord:
        """Everything recorded about one neuron, as OpenAI's NeuronRecord. With a model
        attached, the windows a view shows first are exact (see the class doc); ``exact=True``:
        every window, ``False``: none (the stored codes: what batch explaining needs)."""
        layer, neuron = self._check(layer, neuron)
        a = self.layer_arrays(layer)
        q_ids = np.asarray(a["q_ids"][neuron])
        mean, var, skew, kurt = (float(x) for x in a["moments"][neuron])
        recs = self._records
        return NeuronRecord(
            neuron_id=NeuronId(layer, neuron),
            model=self.model,
            random_sample=recs(layer, neuron, self._common["rand_ids"], self._n_exact(exact, SHOWN_RANDOM)),
            random_sample_by_quantile=[recs(layer, neuron, q_ids[b], self._n_exact(exact, SHOWN_QUANTILE))
                                       for b in range(q_ids.shape[0])],
            quantile_boundaries=[float(x) for x in a["q_bounds"][neuron]],
            mean=mean, variance=var, skewness=skew, kurtosis=kurt,
            most_positive_activation_records=recs(layer, neuron, a["top_ids"][neuron], self._n_exact(exact, SHOWN_TOP)),
            most_negative_activation_records=recs(layer, neuron, a["bottom_ids"][neuron],
                                                  self._n_exact(exact, SHOWN_TOP)),
        )

    def top_max(self, layer: int, neuron: int) -> np.ndarray:
        """float32: the exact maximum of each top window, highest first."""
        layer, neuron = self._check(layer, neuron)
        return np.asarray(self.layer_arrays(layer)["top_max"][neuron])

    def bottom_min(self, layer: int, neuron: int) -> np.ndarray:
        """float32: the exact minimum of each bottom window, lowest first."""
        layer, neuron = self._check(layer, neuron)
        return np.asarray(self.layer_arrays(layer)["bottom_min"][neuron])

    def histogram(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts) of this neuron's activation over every corpus token.

        Bins are uniform over the range the tokens of a calibration sample span; the first
        bin runs from the neuron's true minimum up to there and the last from there to the
        true maximum (each one bin width wide when nothing fell outside the range).
        """
        layer, neuron = self._check(layer, neuron)
        a = self.layer_arrays(layer)
        return (histogram_edges(a["hist_range"][neuron]).astype(np.float64),
                np.array(a["hist_counts"][neuron], dtype=np.int64))

    def max_activation(self, layer: int, neuron: int) -> float:
        """The largest activation of this neuron over the corpus."""
        layer, neuron = self._check(layer, neuron)
        return float(self.layer_arrays(layer)["extremes"][neuron, 1])

    def min_activation(self, layer: int, neuron: int) -> float:
        """The smallest (most negative) activation of this neuron over the corpus."""
        layer, neuron = self._check(layer, neuron)
        return float(self.layer_arrays(layer)["extremes"][neuron, 0])

    def mean_activation(self, layer: int, neuron: int) -> float:
        """This neuron's mean activation over every corpus token (what mean-ablation puts in)."""
        layer, neuron = self._check(layer, neuron)
        return float(self.layer_arrays(layer)["moments"][neuron, 0])

    def window_tokens(self, layer: int, neuron: int, side: str = "positive", stop: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(token ids int64 [n, 64], activations float32 [n, 64]) of this neuron's top windows
        (``side="negative"``: its bottom windows), strongest first: what a forward pass needs."""
        layer, neuron = self._check(layer, neuron)
        if side not in ("positive", "negative"):
            raise ValueError(f"side must be 'positive' or 'negative', got {side!r}")
        a = self.layer_arrays(layer)
        ids = np.asarray(a["top_ids" if side == "positive" else "bottom_ids"][neuron, slice(0, stop)], dtype=np.int64)
        ids = ids[ids >= 0]
        acts = self._values(layer, neuron, ids, len(ids))
        return np.asarray(self._common["windows"][ids], dtype=np.int64), acts

    def extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) float32 [layers, neurons]: every neuron's range over every corpus token
        (every layer: builds the missing ones when this index has a builder)."""
        e = np.stack([np.asarray(self.layer_arrays(layer)["extremes"], dtype=np.float32)
                      for layer in range(self.n_layers)])
        return e[:, :, 0], e[:, :, 1]

    def checksums(self) -> dict[str, str]:
        """{'part/array': SHA-256} over every part on disk (equal indexes, equal checksums)."""
        out = {}
        for part in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for name, info in read_manifest(part).get("files", {}).items():
                out[f"{part.name}/{name}"] = info["sha256"]
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())


__all__ = ["NeuronIndex", "CorruptIndexError", "LayerNotReadyError", "write_store", "read_store", "read_manifest",
           "QUANTILES", "FORMAT_VERSION", "N_BINS", "histogram_edges", "layer_dir", "ref_layout", "TOP", "BOTTOM", "RANDOM",
           "QUANTILE"]
