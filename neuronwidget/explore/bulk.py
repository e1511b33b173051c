"""Import every explanation OpenAI published for GPT-2 small or XL into the explanation store.

Concurrent (a thread pool fetches files through :mod:`neuronwidget.activations.published`,
which also caches them on disk), resumable (the store records each neuron imported, or
known to have no file, in the same transaction as its explanations, so a rerun skips them
and nothing is inserted twice), and never fatal on holes: a neuron whose file is missing
(HTTP 404, e.g. GPT-2 XL ``explanations/31/1593.jsonl``) is recorded as ``missing``; a file
that cannot be fetched or read is counted as failed and retried by the next run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..activations import published as _pub
from .store import ExplanationStore, get_store, model_key

BATCH = 256
GIVE_UP = 32  # this many failures before anything succeeded: the server is unreachable, stop


@dataclass
class ImportReport:
    model: str
    total: int = 0  # neurons asked for
    skipped: int = 0  # already imported (or known missing) before this run
    imported: int = 0  # neurons whose file was read now
    explanations: int = 0  # rows written now
    missing: list[tuple[int, int]] = field(default_factory=list)  # holes in the published data (404)
    failed: dict[tuple[int, int], str] = field(default_factory=dict)  # retried next run
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed and self.skipped + self.imported + len(self.missing) == self.total

    def summary(self) -> str:
        rate = self.imported / self.seconds if self.seconds > 0 else 0.0
        text = (f"{self.model}: {self.imported} neurons imported now ({self.explanations} explanations, "
                f"{rate:.0f} neurons/s), {self.skipped} already in the store, {len(self.missing)} with no "
                f"published file, {len(self.failed)} failed")
        if self.missing:
            shown = ", ".join(f"{a}/{b}" for a, b in self.missing[:5])
            text += f"\n  missing (layer/neuron): {shown}{' …' if len(self.missing) > 5 else ''}"
        if self.failed:
            (a, b), why = next(iter(self.failed.items()))
            text += f"\n  e.g. {a}/{b}: {why}\n  run the same command again to retry the failed ones"
        return text


def published_neurons(model: str, layers: Iterable[int] | None = None,
                      neurons: Iterable[int] | None = None) -> list[tuple[int, int]]:
    name, _ = _pub._canonical(model, 0, 0)
    _, n_layers, n_neurons = _pub._MODELS[name]
    layer_list = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    neuron_list = list(range(n_neurons)) if neurons is None else [int(x) for x in neurons]
    for layer in layer_list:
        _pub._canonical(name, layer, 0)  # range checks with the published model's sizes
    for neuron in neuron_list:
        _pub._canonical(name, 0, neuron)
    return [(a, b) for a in layer_list for b in neuron_list]


def import_published(model: str = "gpt2", *, layers: Iterable[int] | None = None,
                     neurons: Iterable[int] | None = None, store: ExplanationStore | None = None,
                     base_url: str | None = None, workers: int = 16, timeout: float = _pub.TIMEOUT_S,
                     progress: Callable[[int, int, str], Any] | bool = True) -> ImportReport:
    """Import OpenAI's published explanations of ``model`` ("gpt2" or "gpt2-xl") into ``store``.

    ``layers`` / ``neurons`` limit the import (default: every neuron). ``progress``: True for a
    progress bar on stderr, False for none, or a callable ``(done, total, message)``.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise ValueError(f"workers must be an int in 1..256, got {workers!r}")
    store = store or get_store()
    name = model_key(_pub._canonical(model, 0, 0)[0])
    wanted = published_neurons(name, layers, neurons)
    done = store.imported(name)
    todo = [ln for ln in wanted if ln not in done]
    report = ImportReport(model=name, total=len(wanted), skipped=len(wanted) - len(todo))
    report_fn, close = _progress(progress, len(todo), name)
    start = time.perf_counter()

    def fetch(ln: tuple[int, int]):
        return _pub.published_explanations(ln[0], ln[1], name, base_url=base_url, timeout=timeout)

    batch = _Batch(store, name, report)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="nw-import") as pool:
            try:
                for n_done, (ln, result, error) in enumerate(_bounded_map(pool, fetch, todo, workers * 4), 1):
                    batch.add(ln, result, error)
                    report_fn(n_done, len(todo), f"layer {ln[0]}")
            finally:
                batch.flush()  # what finished is kept, even when interrupted
    finally:
        report.seconds = time.perf_counter() - start
        close()
    return report


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, window: int) -> Iterator[tuple[Any, Any, Exception | None]]:
    """``(item, fn(item), None)`` or ``(item, None, error)`` for every item, as they finish, with at
    most ``window`` in flight (millions of neurons are never all queued); when the consumer stops,
    what has not started is cancelled."""
    pending: dict[Any, Any] = {}
    queue = iter(items)
    try:
        for item in itertools.islice(queue, window):
            pending[pool.submit(fn, item)] = item
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                item = pending.pop(fut)
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(fn, nxt)] = nxt
                try:
                    result, error = fut.result(), None
                except Exception as e:  # noqa: BLE001 - the caller decides what a failure means
                    result, error = None, e
                yield item, result, error
    finally:
        for fut in pending:
            fut.cancel()


class _Batch:
    """Finished neurons on their way into the store: written BATCH at a time, each neuron with its
    explanations in one transaction; holes recorded as missing; failures counted (retried next run)."""

    def __init__(self, store: ExplanationStore, name: str, report: ImportReport):
        self.store, self.name, self.report = store, name, report
        self.results: list[Any] = []
        self.missing: list[tuple[int, int]] = []

    def add(self, ln: tuple[int, int], result: Any, error: Exception | None) -> None:
        if error is not None:  # unreachable server, broken file
            self.report.failed[ln] = f"{type(error).__name__}: {error}"
        elif result is None:
            self.missing.append(ln)
        else:
            self.results.append(result)
        self._give_up_if_nothing_works()
        if len(self.results) + len(self.missing) >= BATCH:
            self.flush()

    def _give_up_if_nothing_works(self) -> None:
        r = self.report
        if len(r.failed) >= GIVE_UP and not (r.imported or self.results or self.missing or r.missing):
            why = next(iter(r.failed.values()))
            raise _pub.PublishedDataUnavailable(
                f"the first {len(r.failed)} files of {self.name} all failed, e.g. {why}; nothing was "
                f"imported. Check the network or --base-url / ${_pub.ENV_BASE_URL}, then run again.")

    def flush(self) -> None:
        r = self.report
        r.explanations += self.store.add_results(self.results, self.name, source="openai-published", mark_imported=True)
        r.imported += len(self.results)
        self.store.mark_missing(self.name, self.missing)
        r.missing.extend(self.missing)
        self.results.clear()
        self.missing.clear()


def _progress(progress: Any, total: int, name: str) -> tuple[Callable[[int, int, str], Any], Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda *a: None), lambda: None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return (lambda *a: None), lambda: None
    bar = tqdm(total=total, desc=f"importing {name} explanations", unit="neuron")

    def update(done: int, _total: int, message: str) -> None:
        bar.update(done - bar.n)
        bar.set_postfix_str(message, refresh=False)

    return update, bar.close


__all__ = ["import_published", "ImportReport", "published_neurons"]
