"""Import every explanation OpenAI published for GPT-2 small or XL into the explanation store.

Concurrent (a thread pool fetches files through :mod:`neuronwidget.activations.published`,
which also caches them on disk), resumable (the store records each neuron imported, or
known to have no file, in the same transaction as its explanations, so a rerun skips them
and nothing is inserted twice), and never fatal on holes: a neuron whose file is missing
(HTTP 404, e.g. GPT-2 XL ``explanations/31/1593.jsonl``) is recorded as ``missing``; a file
that cannot be fetched or read is counted as failed and retried by the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
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

    results, missing = [], []
    n_done = 0

    def flush() -> None:
        report.explanations += store.add_results(results, name, source="openai-published", mark_imported=True)
        report.imported += len(results)
        store.mark_missing(name, missing)
        report.missing.extend(missing)
        results.clear()
        missing.clear()

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="nw-import") as pool:
            pending: dict[Any, tuple[int, int]] = {}
            queue = iter(todo)
            try:
                for ln in queue:
                    pending[pool.submit(fetch, ln)] = ln
                    if len(pending) >= workers * 4:
                        break
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        ln = pending.pop(fut)
                        try:
                            res = fut.result()
                        except Exception as e:  # unreachable server, broken file: counted, retried next run
                            report.failed[ln] = f"{type(e).__name__}: {e}"
                        else:
                            if res is None:
                                missing.append(ln)
                            else:
                                results.append(res)
                        n_done += 1
                        nxt = next(queue, None)
                        if nxt is not None:
                            pending[pool.submit(fetch, nxt)] = nxt
                    if len(report.failed) >= GIVE_UP and not (report.imported or results or missing or report.missing):
                        why = next(iter(report.failed.values()))
                        raise _pub.PublishedDataUnavailable(
                            f"the first {len(report.failed)} files of {name} all failed, e.g. {why}; nothing was "
                            f"imported. Check the network or --base-url / ${_pub.ENV_BASE_URL}, then run again.")
                    if len(results) + len(missing) >= BATCH:
                        flush()
                    report_fn(n_done, len(todo), f"layer {ln[0]}")
            finally:
                for fut in pending:
                    fut.cancel()
                flush()  # what finished is kept, even when interrupted
    finally:
        report.seconds = time.perf_counter() - start
        close()
    return report


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
