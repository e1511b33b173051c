"""LLM backends, and which one explain/score use when none is given.

Which backend (first match wins):

| Where it is set                                          | Backend used                                   |
|----------------------------------------------------------|------------------------------------------------|
| `explain(..., backend=b)`, `score(..., simulator=b)`     | `b` (explicit argument)                        |
| `nw.configure(explainer=b, simulator=b)`                 | `b`                                            |
| `NEURONWIDGET_BASE_URL` (+ `NEURONWIDGET_MODEL`)         | `OpenAIBackend(model, base_url=...)`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, `transformers serve`); model defaults to the server's first listed one |
| `OPENAI_API_KEY`                                         | `OpenAIBackend("gpt-4.1-mini")` (or `NEURONWIDGET_MODEL`) |
| nothing configured (offline)                             | `BaselineBackend()`: token lookup, no LLM      |

Backends:

* ``OpenAIBackend(model, *, base_url=None, api_key=None, ...)`` — the openai SDK; retries
  with backoff on 429/5xx/timeouts, a concurrency limit, an on-disk response cache.
* ``LocalBackend(model_id_or_path, *, gguf_file=None)`` — a transformers model in this
  kernel; simulates with exact label probabilities in one forward pass per record.
* ``BaselineBackend()`` — the paper's token-lookup baseline; needs no model at all.
"""

from __future__ import annotations

import os
from typing import Any

from . import baseline
from .local import LocalBackend
from .openai_api import OpenAIBackend

DEFAULT_OPENAI_MODEL = "gpt-4.1-mini"
ENV_BASE_URL = "NEURONWIDGET_BASE_URL"
ENV_MODEL = "NEURONWIDGET_MODEL"


class BaselineBackend:
    """The offline baseline: explanations and simulations from a token lookup table (no LLM)."""

    name = baseline.NAME

    def __repr__(self) -> str:
        return "BaselineBackend()"


Backend = Any  # BaselineBackend | OpenAIBackend | LocalBackend


def _check(backend: Any, role: str) -> Any:
    if isinstance(backend, str) and backend.strip().lower() == "baseline":
        return BaselineBackend()
    if not isinstance(backend, (BaselineBackend, OpenAIBackend, LocalBackend)):
        raise ValueError(
            f"{role} must be a BaselineBackend, OpenAIBackend or LocalBackend (or 'baseline'), "
            f"got {type(backend).__name__}"
        )
    return backend


def _from_environment() -> Any:
    base_url = os.environ.get(ENV_BASE_URL)
    model = os.environ.get(ENV_MODEL) or None
    if base_url:
        return OpenAIBackend(model, base_url=base_url)
    if os.environ.get("OPENAI_API_KEY"):
        return OpenAIBackend(model or DEFAULT_OPENAI_MODEL)
    return BaselineBackend()


def resolve_explainer(backend: Any = None) -> Any:
    """The explainer backend in force: argument > environment > baseline
    (``neuronwidget.api`` puts ``configure(explainer=...)`` between the first two)."""
    return _check(backend, "explainer") if backend is not None else _from_environment()


def resolve_simulator(simulator: Any = None) -> Any:
    """The simulator backend in force: argument > environment > baseline
    (``neuronwidget.api`` puts ``configure(simulator=...)`` between the first two)."""
    return _check(simulator, "simulator") if simulator is not None else _from_environment()
