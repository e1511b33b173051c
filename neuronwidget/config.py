"""Kernel-wide settings: what `nw.configure(...)` changes and every part reads.

Precedence for anything a function also takes as an argument:
explicit argument > `configure(...)` > environment variable > built-in default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

ENV_CACHE_DIR = "NEURONWIDGET_CACHE"


@dataclass(frozen=True)
class Settings:
    model: Any = "gpt2"  # hub id, local path, "tiny", or a loaded model object
    corpus: Any = None  # None = the default corpus (see corpus.default_corpus)
    explainer: Any = None  # a backend object, or None = resolved by explain.backends
    simulator: Any = None  # a backend/simulator object, or None = resolved by explain.backends
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
    return _settings


def settings() -> Settings:
    return _settings


def cache_dir() -> Path:
    """Where indexes, response caches and downloads live. Created on first use."""
    chosen = _settings.cache_dir or os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "neuronwidget"
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
