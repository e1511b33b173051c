"""Small file helpers shared by every cache: nothing half-written is ever read back."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, sort_keys=True))


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hex digest of a JSON-serialisable value, stable across runs and machines."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:length]


# Where every cache lives. A leaf fact so that no layer has to import the settings to find
# its folder: `api.configure(cache_dir=...)` sets it, `$NEURONWIDGET_CACHE` is the default,
# then ~/.cache/neuronwidget.
ENV_CACHE_DIR = "NEURONWIDGET_CACHE"
_cache_root: Path | None = None


def set_cache_root(path: str | os.PathLike | None) -> None:
    """Called by ``api.configure(cache_dir=...)`` only; None goes back to the default."""
    global _cache_root
    _cache_root = Path(path).expanduser() if path is not None else None


def cache_root() -> Path:
    """The cache folder in force (created on first use)."""
    chosen = _cache_root or os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "neuronwidget"
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
