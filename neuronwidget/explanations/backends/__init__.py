"""LLM backends, and which one explain/score use when none is given.

Which backend (first match wins):

| Where it is set                                          | Backend used                                   |
|----------------------------------------------------------|------------------------------------------------|
| `explain(..., backend=b)`, `score(..., simulator=b)`     | `b` (explicit argument)                        |
| `nw.configure(explainer=b, simulator=b)`                 | `b`                                            |
| `NEURONWIDGET_BASE_URL` (+ `NEURONWIDGET_MODEL`)         | `OpenAIBackend(model, base_url=...)`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, `transformers serve`); model defaults to the server's first listed one |
| `OPENAI_API_KEY`                                         | `OpenAIBackend("gpt-4.1-mini")` (or `NEURONWIDGET_MODEL`) |
| nothing configured (offline)                             | `RulesBackend()`: fitted context rules, no LLM |

Backends (each one class playing both roles, the ``Explainer`` and ``Simulator`` protocols
of ``base``; any object with those members works the same, see ``base``):

* ``OpenAIBackend(model, *, base_url=None, api_key=None, ...)`` — the openai SDK; retries
  with backoff on 429/5xx/timeouts, a concurrency limit, an on-disk response cache.
* ``LocalBackend(model_id_or_path, *, gguf_file=None)`` — a transformers model in this
  kernel; simulates with exact label probabilities, all records of a score in one batch.
* ``RulesBackend()`` — the offline default: short context rules (a token; a token after a
  context; whatever follows a context; a phrase), each with a 0-10 strength, fitted to the
  neuron's non-scoring records; its simulator reads them back exactly. Also ``revise``.
* ``BaselineBackend()`` — token lookup, the paper's baseline (the control); no model at all.

Strings name the offline backends: "rules" (``RulesBackend()``), "token-lookup"
(``BaselineBackend()``; "baseline" is an alias kept for old code).
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from .base import ChatExplainer, Explainer, Simulator
from .baseline import BaselineBackend
from .local import LocalBackend
from .openai_api import OpenAIBackend
from .rules import RulesBackend

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
ENV_BASE_URL = "NEURONWIDGET_BASE_URL"
ENV_MODEL = "NEURONWIDGET_MODEL"


def members(protocol: type) -> list[str]:
    """The names an object needs to play a protocol's role (attributes and methods)."""
    names = set(getattr(protocol, "__annotations__", {})) | {n for n in vars(protocol) if callable(vars(protocol)[n])}
    return sorted(n for n in names if not n.startswith("_"))


def _has_static(obj: Any, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)
        return True
    except AttributeError:
        return False


# the strings that name a backend, and what each makes
NAMED = {"rules": RulesBackend, "token-lookup": BaselineBackend, "baseline": BaselineBackend}


def _check(backend: Any, role: str, protocol: type) -> Any:
    if isinstance(backend, str):
        make = NAMED.get(backend.strip().lower())
        if make is None:
            raise ValueError(f"unknown {role} {backend!r}: a string must be one of "
                             f"{', '.join(repr(k) for k in NAMED)} (or pass a backend object)")
        return make()
    # Static look-up: isinstance() on a runtime Protocol evaluates properties, and some
    # (OpenAIBackend.simulator_name) ask the server, which must not happen while resolving.
    missing = [m for m in members(protocol) if not _has_static(backend, m)]
    if missing:
        raise ValueError(
            f"the {role} must implement the {protocol.__name__} protocol ({', '.join(members(protocol))}; "
            f"{type(backend).__name__} lacks {', '.join(missing)}): e.g. OpenAIBackend, LocalBackend, "
            f"RulesBackend, BaselineBackend, one of the strings {', '.join(repr(k) for k in NAMED)}, "
            f"or a class of your own with those members"
        )
    return backend


def _from_environment() -> OpenAIBackend | RulesBackend:
    base_url = os.environ.get(ENV_BASE_URL)
    model = os.environ.get(ENV_MODEL) or None
    if base_url:
        return OpenAIBackend(model, base_url=base_url)
    if os.environ.get("OPENAI_API_KEY"):
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL)
    return RulesBackend()


def resolve_explainer(backend: Any = None) -> Explainer:
    """The explainer backend in force: argument > environment > rules
    (``neuronwidget.api`` puts ``configure(explainer=...)`` between the first two)."""
    return _check(backend, "explainer", Explainer) if backend is not None else _from_environment()


def resolve_simulator(simulator: Any = None) -> Simulator:
    """The simulator backend in force: argument > environment > rules
    (``neuronwidget.api`` puts ``configure(simulator=...)`` between the first two)."""
    return _check(simulator, "simulator", Simulator) if simulator is not None else _from_environment()


__all__ = ["Explainer", "Simulator", "ChatExplainer", "OpenAIBackend", "LocalBackend", "RulesBackend", "BaselineBackend",
           "resolve_explainer", "resolve_simulator"]
