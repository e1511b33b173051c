"""Errors, the on-disk response cache and usage accounting shared by the backends; the cost
of a piece of work (``usage_snapshot``/``cost_since``); the input checks and held-out record
selection every scorer shares."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._io import cache_root, stable_hash
from ..records import ActivationRecord, NeuronRecord

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
    """LLM answers in one SQLite file, keyed by a hash of the WHOLE request (model, server,
    messages or prompt, parameters, sample number; never the API key).

    ``<folder>/responses.sqlite`` (default folder: ``<cache root>/llm-responses``), in WAL mode:
    threads, notebooks and Ray workers on one machine read and write it at once (a writer waits
    up to ``BUSY_S`` for another's lock); each answer is one committed transaction, so a crash
    leaves every earlier answer in place and never half of one. One row per request instead of
    one JSON file: a run over 300k neurons writes millions of answers. Older caches (one
    ``<folder>/<2 hex>/<hash>.json`` per request) are still read: a hit there is copied into
    the database. Not for network file systems (WAL needs shared memory on one machine).
    """

    FILE = "responses.sqlite"
    BUSY_S = 60.0

    def __init__(self, folder: str | Path | None = None):
        self._folder = Path(folder) if folder is not None else None
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:  # pickled for Ray workers: connections stay behind
        return {"_folder": self._folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._folder = state["_folder"]
        self._local = threading.local()

    @property
    def folder(self) -> Path:
        return self._folder if self._folder is not None else cache_root() / "llm-responses"

    @property
    def path(self) -> Path:
        return self.folder / self.FILE

    def _con(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork or a change of cache folder)."""
        path, pid = self.path, os.getpid()
        con = getattr(self._local, "con", None)
        if con is None or self._local.where != (path, pid):
            path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(path, timeout=self.BUSY_S, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, request TEXT NOT NULL, "
                        "response TEXT NOT NULL, added REAL NOT NULL) WITHOUT ROWID")
            self._local.con, self._local.where = con, (path, pid)
        return con

    def get(self, request: dict[str, Any]) -> Any | None:
        key = stable_hash(request, length=32)
        row = self._con().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is not None:
            return json.loads(row[0])
        legacy = self.folder / key[:2] / f"{key}.json"  # the one-file-per-request cache of older versions
        try:
            response = json.loads(legacy.read_text("utf-8"))["response"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None
        self.put(request, response)
        return response

    def put(self, request: dict[str, Any], response: Any) -> None:
        key = stable_hash(request, length=32)
        self._con().execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                            (key, json.dumps(request, sort_keys=True), json.dumps(response), time.time()))

    def __len__(self) -> int:
        return self._con().execute("SELECT count(*) FROM responses").fetchone()[0]


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

    def snapshot(self) -> tuple[int, int, int, int]:
        """(requests, cached, prompt_tokens, completion_tokens), read together under the lock."""
        with self._lock:
            return self.requests, self.cached, self.prompt_tokens, self.completion_tokens


# ---- the cost of one piece of work (a score, a best-of-n search...) ----
#
#     snap = usage_snapshot(backend)
#     ...                                   # calls on backend
#     cost = cost_since(backend, snap)      # {"calls": 3, "cached": 0, "prompt_tokens": ..., ...}
#
# or ``with measure_cost(backend) as cost: ...`` (``cost`` is filled in on leaving the block).
# It is a DELTA of the backend's running totals (``backend.usage``, a ``Usage``): exact when
# nothing else uses that backend object meanwhile. When several threads share one backend
# (e.g. scores running in the background of a NeuronView while another runs), each delta also
# holds the others' requests made in that window: give concurrent jobs their own backend
# objects where the figure must be exact. (Per-thread attribution would miss the requests a
# backend sends from its own worker threads, as OpenAIBackend.simulate does.)
#
# "calls" are requests that reached the model; "cached" those answered from the on-disk
# response cache (no tokens counted for them). A backend without ``usage`` counts as
# 0 calls when it is ``cheap`` (offline: BaselineBackend, rules), else as unknown (None).

COST_KEYS = ("calls", "cached", "prompt_tokens", "completion_tokens")


class UsageSnapshot:
    """A backend's usage totals at one moment (see ``usage_snapshot``)."""

    __slots__ = ("totals", "cheap")

    def __init__(self, totals: tuple[int, int, int, int] | None, cheap: bool):
        self.totals = totals
        self.cheap = cheap

    def __repr__(self) -> str:
        return f"UsageSnapshot({self.totals}, cheap={self.cheap})"


def _totals(backend: Any) -> tuple[int, int, int, int] | None:
    usage = getattr(backend, "usage", None)
    if usage is None:
        return None
    if isinstance(usage, Usage):
        return usage.snapshot()
    return tuple(int(getattr(usage, k, 0) or 0) for k in ("requests", "cached", "prompt_tokens", "completion_tokens"))  # type: ignore[return-value]


def usage_snapshot(backend: Any) -> UsageSnapshot:
    """What ``backend`` has used so far; pass it to ``cost_since`` after the work."""
    return UsageSnapshot(_totals(backend), bool(getattr(backend, "cheap", False)))


def zero_cost() -> dict[str, int]:
    return dict.fromkeys(COST_KEYS, 0)


def cost_since(backend: Any, snapshot: UsageSnapshot) -> dict[str, int | None]:
    """``{"calls", "cached", "prompt_tokens", "completion_tokens"}`` used by ``backend`` since
    ``snapshot`` (all 0 for a cheap backend without ``usage``; None where unknown)."""
    now = _totals(backend)
    if now is None or snapshot.totals is None:
        return zero_cost() if snapshot.cheap else dict.fromkeys(COST_KEYS, None)
    requests, cached, prompt, completion = (a - b for a, b in zip(now, snapshot.totals))
    return {"calls": requests - cached, "cached": cached, "prompt_tokens": prompt, "completion_tokens": completion}


def add_costs(*costs: dict[str, int | None]) -> dict[str, int | None]:
    """Costs summed key by key (unknown, None, wins: a sum with an unknown part is unknown)."""
    out: dict[str, int | None] = zero_cost()
    for c in costs:
        for k in COST_KEYS:
            v = c.get(k)
            out[k] = None if out[k] is None or v is None else out[k] + v
    return out


@contextmanager
def measure_cost(backend: Any) -> Iterator[dict[str, int | None]]:
    """``with measure_cost(b) as cost: ...``: ``cost`` holds ``cost_since`` on leaving."""
    snap = usage_snapshot(backend)
    cost: dict[str, int | None] = {}
    try:
        yield cost
    finally:
        cost.update(cost_since(backend, snap))


# ---- what every scorer checks and reads (simulation, detection, fuzzing) ----

# The longest explanation a scorer takes, in characters: explanations are one phrase (the
# paper's are a few words; OpenAI's published ones stay far under this). A longer text is
# almost surely a pasted prompt or document, and would blow up every prompt it goes into.
MAX_EXPLANATION_CHARS = 1000

# Where scorers read the neuron's records: held-out splits only, valid first, then test when
# more are asked. Explainers (and best-of-n/revision) read train/calibration only.
HELD_OUT_SPLITS = ("valid", "test")


def check_explanation(explanation: Any) -> str:
    """The explanation, stripped; a ValueError naming the rule when it is empty or too long."""
    if not isinstance(explanation, str) or not explanation.strip():
        raise ValueError(f"the explanation must be a non-empty string of at most {MAX_EXPLANATION_CHARS} "
                         f"characters, got {explanation!r}"[:300])
    text = explanation.strip()
    if len(text) > MAX_EXPLANATION_CHARS:
        raise ValueError(f"the explanation is {len(text)} characters long; at most {MAX_EXPLANATION_CHARS} "
                         "are allowed (an explanation is a short phrase)")
    return text


def check_counts(n_top: Any, n_random: Any) -> tuple[int, int]:
    """(n_top, n_random) as ints; a ValueError unless both are integers >= 0 with a sum >= 1."""
    for name, v in (("n_top", n_top), ("n_random", n_random)):
        if isinstance(v, bool) or not hasattr(v, "__index__") or isinstance(v, float):
            raise ValueError(f"{name} must be an integer >= 0 (n_top + n_random >= 1), got {v!r} ({type(v).__name__})")
        if int(v.__index__()) < 0:
            raise ValueError(f"{name} must be an integer >= 0 (n_top + n_random >= 1), got {v}")
    n_top, n_random = int(n_top.__index__()), int(n_random.__index__())
    if n_top + n_random < 1:
        raise ValueError("n_top + n_random must be >= 1 (integers >= 0): nothing would be scored")
    return n_top, n_random


def held_out_pools(record: NeuronRecord) -> tuple[list[ActivationRecord], list[ActivationRecord]]:
    """All held-out top and random records, in the order scorers take them (valid, then test)."""
    top = [r for s in HELD_OUT_SPLITS for r in record.top_split(s)]
    rand = [r for s in HELD_OUT_SPLITS for r in record.random_split(s)]
    return top, rand


def held_out(record: NeuronRecord, n_top: int, n_random: int) -> tuple[list[ActivationRecord], list[ActivationRecord], str | None]:
    """``n_top`` top and ``n_random`` random held-out records (valid split first, then test),
    and a note when fewer exist than were asked."""
    top_pool, rand_pool = held_out_pools(record)
    top, rand = top_pool[:n_top], rand_pool[:n_random]
    note = None
    if len(top) < n_top or len(rand) < n_random:
        note = (f"{n_top} top + {n_random} random records were asked for, but only {len(top)} top + {len(rand)} "
                "random held-out records (valid and test splits) exist: scored on those")
    return top, rand, note
