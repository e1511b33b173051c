"""Errors, the on-disk response cache and usage accounting shared by the backends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._io import atomic_write_json, cache_root, stable_hash

ProgressFn = Callable[[int, int, str], None]


class Cancelled(Exception):
    """Raised when the ``cancel`` event passed to explain/score/simulate was set."""


class BackendError(RuntimeError):
    """An LLM backend failed in a way that no retry fixes (wrong key, unknown model or
    endpoint, connection refused, a rejected request). ``retryable`` is False."""

    retryable = False


class RetriesExhausted(BackendError):
    """Every retry of a request failed on an error that may be passing (429, 5xx, timeouts,
    dropped connections, malformed bodies): a later rerun may succeed."""

    retryable = True


class ExplanationError(ValueError):
    """The explainer answered, but nothing usable came back (empty, refused, unparseable)."""


def check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


class ResponseCache:
    """JSON files keyed by a hash of the WHOLE request (never the API key), written atomically."""

    def __init__(self, folder: str | Path | None = None):
        self._folder = Path(folder) if folder is not None else None

    @property
    def folder(self) -> Path:
        return self._folder if self._folder is not None else cache_root() / "llm-responses"

    def _path(self, request: dict[str, Any]) -> Path:
        key = stable_hash(request, length=32)
        return self.folder / key[:2] / f"{key}.json"

    def get(self, request: dict[str, Any]) -> Any | None:
        path = self._path(request)
        try:
            return json.loads(path.read_text("utf-8"))["response"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return None

    def put(self, request: dict[str, Any], response: Any) -> None:
        atomic_write_json(self._path(request), {"request": request, "response": response})


# US dollars per million tokens (input, output); anything else is reported as "unknown".
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
}


class Usage:
    """Token counts and an estimated cost, summed over one backend's requests (thread-safe)."""

    def __init__(self, model: str | None):
        self.model = model
        self.requests = 0
        self.cached = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def add(self, prompt_tokens: int, completion_tokens: int, cached: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.cached += int(cached)
            if not cached:
                self.prompt_tokens += int(prompt_tokens or 0)
                self.completion_tokens += int(completion_tokens or 0)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def cost_usd(self) -> float | str:
        price = PRICES_PER_MTOK.get(self.model or "")
        if price is None:
            return "unknown"
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "requests": self.requests,
            "cached_responses": self.cached,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated_cost_usd": self.cost_usd,
        }

    def __repr__(self) -> str:
        return f"Usage({self.as_dict()})"
