"""OpenAI's published GPT-2 neuron data: explanations, scores and collated activation records.

OpenAI released, with "Language models can explain neurons in language models" (2023),
one explanation file and one activation-record file per MLP neuron of GPT-2 XL, and later
of GPT-2 small, in their public Azure bucket (``az://openaipublic/neuron-explainer/...``,
served over HTTPS). This module fetches one neuron's files, caches them on disk and loads
them into our record types::

    from neuronwidget.activations.published import published_explanations, published_record
    results = published_explanations(5, 131)          # GPT-2 small
    results.scored_explanations[0].explanation, results.scored_explanations[0].score
    record = published_record(5, 131)                 # -> NeuronRecord

Files already in the cache are used without the network, so a neuron looked at once
stays available offline.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes, cache_root, stable_hash
from ..records import ActivationRecord, NeuronRecord, NeuronSimulationResults, loads

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/neuron-explainer"
ENV_BASE_URL = "NEURONWIDGET_PUBLISHED_URL"
TIMEOUT_S = 15.0

# model -> (folder in the bucket, n_layers, n_neurons)
_MODELS = {
    "gpt2": ("gpt2_small_data", 12, 3072),
    "gpt2-xl": ("data", 48, 6400),
}
_ALIASES = {"gpt2-small": "gpt2"}
ALLOWED_MODELS = ("gpt2", "gpt2-small", "gpt2-xl")


class PublishedDataError(RuntimeError):
    """The published data could not be fetched or read."""


class PublishedDataUnavailable(PublishedDataError):
    """The server could not be reached or did not answer with the file."""


def _canonical(model: str, layer: int, neuron: int) -> tuple[str, str]:
    name = _ALIASES.get(model, model) if isinstance(model, str) else model
    if name not in _MODELS:
        raise ValueError(
            f"OpenAI published data exists only for {', '.join(ALLOWED_MODELS)}; got model={model!r}"
        )
    folder, n_layers, n_neurons = _MODELS[name]
    for what, value, n in (("layer", layer, n_layers), ("neuron", neuron, n_neurons)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be an int in 0..{n - 1} for {name}, got {value!r}")
        if not 0 <= value < n:
            raise ValueError(f"{what} must be in 0..{n - 1} for {name}, got {value}")
    return name, folder


def _base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")


def _cache_path(base: str, name: str, kind: str, layer: int, neuron: int, suffix: str) -> Path:
    source = "openai" if base == DEFAULT_BASE_URL else "url-" + stable_hash(base, 10)
    return cache_root() / "published" / source / name / kind / str(layer) / f"{neuron}{suffix}"


def _fetch(url: str, timeout: float) -> bytes | None:
    """The body at ``url``; None on HTTP 404. Anything else that is not a 200 raises."""
    request = urllib.request.Request(url, headers={"User-Agent": "neuronwidget"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise PublishedDataUnavailable(
            f"{url} answered HTTP {e.code} ({e.reason}). The published GPT-2 data is fetched from "
            f"OpenAI's public bucket; try again later (cached files are used when present)."
        ) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PublishedDataUnavailable(
            f"could not reach {url} ({reason}). The published GPT-2 data is fetched from OpenAI's "
            f"public bucket ({DEFAULT_BASE_URL}), which needs internet access; files fetched "
            f"before are read from the cache ({cache_root() / 'published'}) when present."
        ) from None


def _parse(data: bytes, expected: type, url: str):
    text = data.decode("utf-8", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()] if url.endswith(".jsonl") else [text]
    try:
        objs = [loads(line) for line in lines]
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise PublishedDataError(f"{url} did not return valid {expected.__name__} JSON: {e}") from None
    if not objs or not all(isinstance(o, expected) for o in objs):
        got = type(objs[0]).__name__ if objs else "nothing"
        raise PublishedDataError(f"{url} returned {got}, expected a {expected.__name__}")
    if expected is NeuronSimulationResults and len(objs) > 1:  # several lines: one neuron, merged
        objs[0].scored_explanations = [s for o in objs for s in o.scored_explanations]
    return objs[0]


def _load(kind: str, suffix: str, expected: type, layer: int, neuron: int, model: str,
          base_url: str | None, timeout: float):
    name, folder = _canonical(model, layer, neuron)
    base = _base_url(base_url)
    path = _cache_path(base, name, kind, layer, neuron, suffix)
    missing = path.with_name(path.name + ".404")
    if path.exists():
        return _parse(path.read_bytes(), expected, str(path))
    if missing.exists():
        return None
    url = f"{base}/{folder}/{kind}/{layer}/{neuron}{suffix}"
    data = _fetch(url, timeout)
    if data is None:
        atomic_write_bytes(missing, b"")
        return None
    obj = _parse(data, expected, url)  # validate before caching: nothing broken is kept
    atomic_write_bytes(path, data)
    return obj


def published_explanations(layer: int, neuron: int, model: str = "gpt2", *,
                           base_url: str | None = None,
                           timeout: float = TIMEOUT_S) -> NeuronSimulationResults | None:
    """OpenAI's scored explanations of one neuron, or None when they published none for it.

    ``model`` is "gpt2" (GPT-2 small, alias "gpt2-small") or "gpt2-xl". ``base_url``
    (or ``$NEURONWIDGET_PUBLISHED_URL``) points at a mirror with the bucket's layout.
    Raises :class:`PublishedDataUnavailable` when the server cannot be reached and the
    file is not cached.
    """
    return _load("explanations", ".jsonl", NeuronSimulationResults, layer, neuron, model, base_url, timeout)


def published_record(layer: int, neuron: int, model: str = "gpt2", *,
                     base_url: str | None = None, timeout: float = TIMEOUT_S) -> NeuronRecord:
    """OpenAI's collated activation records of one neuron (top, random and quantile samples)."""
    record = _load("collated-activations", ".json", NeuronRecord, layer, neuron, model, base_url, timeout)
    if record is None:
        raise PublishedDataError(
            f"OpenAI published no activation record for layer {layer}, neuron {neuron} of "
            f"{_ALIASES.get(model, model)} (the server answered 404)"
        )
    return record


class PublishedIndex:
    """OpenAI's published records of GPT-2 small or XL, read like an engine's index.

    ``NeuronView(5, 131, index=PublishedIndex("gpt2"))`` shows a neuron from the published
    files alone: no model is loaded until you type your own text. Records are fetched on
    first use and cached (in memory and on disk). The histogram is of the published random
    sample's tokens, an estimate of the activation distribution over WebText.
    """

    def __init__(self, model: str = "gpt2", *, base_url: str | None = None, timeout: float = TIMEOUT_S):
        name, _ = _canonical(model, 0, 0)
        _, self.n_layers, self.n_neurons = _MODELS[name]
        self.model_name = name
        self.model = name  # the model's name (what get_engine loads, the explanation store's key)
        self.precomputed = True  # records from files; the model loads only for the user's own text
        self.corpus_name = f"OpenAI's published {name} activation records (WebText)"
        self.histogram_caption = "activation over the published random sample's tokens (count, log scale)"
        self._base_url, self._timeout = base_url, timeout
        self._records: dict[tuple[int, int], NeuronRecord] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PublishedIndex(model={self.model_name!r})"

    def record(self, layer: int, neuron: int) -> NeuronRecord:
        with self._lock:
            key = (layer, neuron)
            if key not in self._records:
                record = published_record(layer, neuron, self.model_name, base_url=self._base_url,
                                          timeout=self._timeout)
                record.model = self.model
                self._records[key] = record
            return self._records[key]

    def top_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None) -> list[ActivationRecord]:
        return self.record(layer, neuron).most_positive_activation_records[start:stop]

    def histogram(self, layer: int, neuron: int, bins: int = 48) -> tuple[np.ndarray, np.ndarray]:
        values = [a for r in self.record(layer, neuron).random_sample for a in r.activations]
        if not values:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        counts, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
        return edges, counts.astype(np.int64)


__all__ = [
    "PublishedIndex",
    "published_explanations",
    "published_record",
    "PublishedDataError",
    "PublishedDataUnavailable",
    "ALLOWED_MODELS",
    "DEFAULT_BASE_URL",
    "ENV_BASE_URL",
]
