"""Explain and score many neurons, resumably, into neuronwidget's JSONL (see ``files``)."""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from ..records import SIDES, NeuronId, NeuronRecord, NeuronSimulationResults, ScoredExplanation, SequenceSimulation
from ._common import Cancelled, measure_cost
from .backends import resolve_explainer, resolve_simulator
from .explainer import explain
from .improve import improve_explanation
from .files import entry_line, parse_line
from .scoring import failure_causes, score
from .store import ExplanationStore

COLUMNS = ["layer", "neuron", "side", "explanation", "score", "score_low", "score_high", "random_only_score",
           "explainer", "simulator", "explain_calls", "score_calls", "prompt_tokens", "completion_tokens", "error"]

Key = tuple[int, int, str]  # (layer, neuron, side)


def _row(key: Key, best: ScoredExplanation | None, error: str | None = None) -> dict[str, Any]:
    sim = best.scored_simulation if best else None
    interval = best.interval if best else None
    explain_cost = (best.explanation_cost if best else None) or {}
    score_cost = (best.cost if best else None) or {}
    tokens = {k: (None if explain_cost.get(k, 0) is None or score_cost.get(k) is None
                  else explain_cost.get(k, 0) + score_cost[k]) for k in ("prompt_tokens", "completion_tokens")}
    return {
        "layer": key[0],
        "neuron": key[1],
        "side": key[2],
        "explanation": best.explanation if best else None,
        "score": sim.ev_correlation_score if sim else None,
        "score_low": interval[0] if interval else None,
        "score_high": interval[1] if interval else None,
        "random_only_score": sim.random_only_score if sim else None,
        "explainer": best.explainer if best else None,
        "simulator": best.simulator if best else None,
        "explain_calls": explain_cost.get("calls"),
        "score_calls": score_cost.get("calls"),
        **tokens,
        "error": error,
    }


def _best(results: NeuronSimulationResults) -> ScoredExplanation | None:
    items = results.scored_explanations
    if not items:
        return None
    return max(items, key=lambda s: -2.0 if s.score is None else s.score)


def unfinished(result: NeuronSimulationResults) -> list[SequenceSimulation]:
    """Simulations that failed for a reason a rerun may fix (e.g. the server's retries ran
    out). A neuron is done only when this is empty: every scoring record was simulated, or
    failed for good (e.g. an answer that cannot be parsed, which the cache would repeat)."""
    return [s.simulation for e in result.scored_explanations
            for s in e.scored_simulation.scored_sequence_simulations
            if s.simulation.failed and s.simulation.retryable]


def _read_done(path: Path) -> dict[Key, NeuronSimulationResults]:
    """Complete entries already in ``path``. Lines cut short by an interruption, unfinished
    entries (of older versions) and repeats are dropped by rewriting the file atomically."""
    done: dict[Key, NeuronSimulationResults] = {}
    if not path.exists():
        return done
    text = path.read_text("utf-8")
    lines: list[str] = []
    dropped = 0 if not text or text.endswith("\n") else 1  # a last line without its newline: rewrite
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            result, side = parse_line(line)
        except ValueError:
            dropped += 1  # a line cut short by an interruption: that neuron is redone
            continue
        key = (result.neuron_id.layer_index, result.neuron_id.neuron_index, side)
        if key in done or unfinished(result):
            dropped += 1
            continue
        done[key] = result
        lines.append(line + "\n")
    if dropped:
        atomic_write_text(path, "".join(lines))
    return done


def explain_one(record: NeuronRecord, key: Key, explainer, simulator, n: int = 1,
                cancel: threading.Event | None = None, *, best_of: int = 1,
                revise: bool = False) -> NeuronSimulationResults:
    """Explain one neuron's side and score every explanation (``record`` is already that side).
    With ``best_of``/``revise`` the explanation comes from ``improve_explanation`` (chosen on
    held-in records) and only the kept one is scored."""
    if best_of > 1 or revise:
        found = improve_explanation(record, explainer, simulator, best_of=best_of, revise=revise, cancel=cancel)
        explanations, cost = [found.explanation], found.cost
        how = f"{explainer.name} (best of {best_of}{', revised' if found.revised else ''})"
    else:
        with measure_cost(explainer) as cost:
            explanations = explain(record, explainer, n=n, cancel=cancel)
        how = explainer.name
    scored = [score(record, e, simulator, explainer=how, cancel=cancel) for e in explanations]
    for s in scored:
        s.explanation_cost = dict(cost)
    return NeuronSimulationResults(neuron_id=NeuronId(key[0], key[1]), scored_explanations=scored)


class Recorder:
    """Where results land: complete ones are appended to the output file at once (flushed,
    fsynced), every one becomes a row of the summary; ``bar`` is moved by ``tick`` (threads)
    or ``progress`` (the Ray scheduler). Thread-safe."""

    def __init__(self, path: Path | None, keys: list[Key], bar, store: ExplanationStore | None = None,
                 model: str | None = None):
        self.path, self.keys, self.bar = path, keys, bar
        self.store, self.model = (store, model) if model else (None, None)
        self.store_error: str | None = None
        self.done = _read_done(path) if path else {}
        self.rows = {k: _row(k, _best(self.done[k])) for k in keys if k in self.done}
        self.todo = [k for k in keys if k not in self.done]
        self._lock = threading.Lock()
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = open(path, "a", encoding="utf-8") if path else None

    def add(self, key: Key, result: NeuronSimulationResults | None = None, error: str | None = None) -> None:
        with self._lock:
            if result is None:
                self.rows[key] = _row(key, None, error=error)
            elif unfinished(result):
                missing = unfinished(result)
                total = sum(len(e.scored_simulation.scored_sequence_simulations) for e in result.scored_explanations)
                self.rows[key] = _row(key, _best(result), error=(
                    f"incomplete, not saved: {len(missing)} of {total} simulations failed on errors a "
                    f"rerun may fix ({failure_causes(missing)}); run again to complete it"))
            else:
                if self._sink:
                    self._sink.write(entry_line(result) + "\n")
                    self._sink.flush()
                    os.fsync(self._sink.fileno())
                self._remember(result)
                self.rows[key] = _row(key, _best(result))

    def tick(self) -> None:
        with self._lock:
            self.bar.update(1)

    def progress(self, done: int, _total: int, message: str) -> None:
        with self._lock:
            self.bar.update(done - self.bar.n)
            if message:
                self.bar.set_postfix_str(message, refresh=False)

    def _remember(self, result: NeuronSimulationResults) -> None:
        """Into the explanation store too (each explanation with its own side); a store that
        cannot be written warns once and the run goes on (the output file has everything)."""
        if self.store is None or self.store_error:
            return
        try:
            self.store.add_results([result], self.model, source="explain_neurons")
        except (OSError, sqlite3.Error, RuntimeError) as e:  # RuntimeError: a Python whose sqlite3 lacks FTS5
            self.store_error = f"{type(e).__name__}: {e}"
            warnings.warn(f"explanations are not being recorded in {self.store.path}: {self.store_error}", stacklevel=2)

    def close(self) -> None:
        self.bar.close()
        if self._sink:
            self._sink.close()

    def table(self):
        import pandas as pd

        return pd.DataFrame([self.rows[k] for k in self.keys if k in self.rows], columns=COLUMNS)


def explain_neurons(
    index,
    layers: int | Iterable[int],
    neurons: int | Iterable[int],
    *,
    explainer=None,
    simulator=None,
    out: str | os.PathLike | None = None,
    sides: Iterable[str] = ("positive",),
    concurrency: int = 4,
    n: int = 1,
    best_of: int = 1,
    revise: bool = False,
    progress: bool = True,
    cancel: threading.Event | None = None,
    distributed: str | None = None,
    workers: int | None = None,
    max_worker_deaths: int | None = None,
    store: ExplanationStore | None = None,
):
    """Explain and score every (layer, neuron, side); returns a pandas DataFrame (one row each).

    ``index`` is anything with ``.record(layer, neuron)`` returning a NeuronRecord (e.g. a
    NeuronIndex). ``sides=("positive", "negative")`` also explains each neuron's negative
    side (``record.for_side("negative")``). With ``out`` (a .jsonl path, neuronwidget's format,
    see ``explanations.files``) each entry is appended as soon as it is complete, and a rerun
    skips the entries already there. An entry is complete when every scoring record was
    simulated or failed for a reason a rerun would not fix; anything else (an error, a
    simulation whose retries ran out, an interruption) is reported in the DataFrame's
    ``error`` column and not written, so the next run does it again (the response cache makes
    the finished part free).

    ``distributed="ray"`` spreads the work over Ray actors (``workers`` of them; default one
    per CPU of the cluster, or per GPU for a LocalBackend on a cluster with GPUs), each with
    its own copy of the backends; results stream into the same output as they finish, and
    a worker that dies is restarted by Ray and its neuron retried, up to ``max_worker_deaths``
    times per worker (default 3, as for ``eng.index(distributed="ray")``); a neuron whose worker
    died more often is reported in its row (see ``explanations.distributed``). Otherwise
    ``concurrency`` threads of this process share the backends.

    ``best_of=k`` / ``revise=True``: each explanation is the best of k candidates on the
    held-in calibration records, then revised once (see ``improve``); only the kept one is
    scored, on the valid records as always.

    ``store``: every complete entry is also recorded there (searchable, shown by later
    NeuronViews), keyed by ``index.model``; ``nw.explain_neurons`` passes the cache folder's
    store unless given ``store=False``.
    """
    from tqdm.auto import tqdm

    keys = _keys(layers, neurons, sides, concurrency=concurrency, best_of=best_of, distributed=distributed)
    if distributed is None and (workers is not None or max_worker_deaths is not None):
        raise ValueError("workers and max_worker_deaths only apply with distributed='ray'")
    if max_worker_deaths is not None:
        from ..activations.ray_pool import check_budget

        check_budget(max_worker_deaths)
    explainer = resolve_explainer(explainer)
    simulator = resolve_simulator(simulator)
    if distributed == "ray":
        from ..activations.distributed import ray_module

        ray_module()  # a clear message when Ray is missing, before anything starts
    bar = tqdm(total=len(keys), desc="explaining neurons", disable=not progress)
    recorder = Recorder(Path(out) if out is not None else None, keys, bar, store, getattr(index, "model", None))
    bar.update(len(keys) - len(recorder.todo))  # resumed from the output file
    one = functools.partial(explain_one, best_of=best_of, revise=revise) if best_of > 1 or revise else explain_one
    try:
        if distributed == "ray":
            from .distributed import run_on_ray

            deaths = {} if max_worker_deaths is None else {"max_worker_deaths": max_worker_deaths}
            run_on_ray(index, recorder, one, explainer, simulator, n=n, workers=workers, cancel=cancel, **deaths)
        else:
            _run_threads(index, recorder, functools.partial(one, explainer=explainer, simulator=simulator, n=n,
                                                            cancel=cancel), concurrency, cancel)
    finally:
        recorder.close()
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"cancelled after {len(recorder.rows)} of {len(keys)} entries")
    return recorder.table()


def _keys(layers: Any, neurons: Any, sides: Any, *, concurrency: int, best_of: Any, distributed: Any) -> list[Key]:
    """Every (layer, neuron, side) asked for, after checking explain_neurons' arguments."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise ValueError(f"best_of must be an integer >= 1, got {best_of!r}")
    if distributed not in (None, "ray"):
        raise ValueError(f"distributed must be None (this process) or 'ray', got {distributed!r}")
    sides = [sides] if isinstance(sides, str) else list(sides)
    if not sides or any(s not in SIDES for s in sides) or len(set(sides)) != len(sides):
        raise ValueError(f"sides must be distinct values from {SIDES}, got {sides!r}")
    layers = [layers] if isinstance(layers, int) else list(layers)
    neurons = [neurons] if isinstance(neurons, int) else list(neurons)
    return [(int(layer), int(neuron), side) for layer in layers for neuron in neurons for side in sides]


def _run_threads(index, recorder: Recorder, one, concurrency: int, cancel: threading.Event | None) -> None:
    """Every entry still to do, on ``concurrency`` threads of this process sharing the backends."""

    def work(key: Key) -> None:
        if cancel is not None and cancel.is_set():
            return
        try:
            record = index.record(key[0], key[1]).for_side(key[2])
            result = one(record, key)
        except Cancelled:
            return
        except Exception as e:  # noqa: BLE001 - one neuron's failure must not stop the batch
            recorder.add(key, error=f"{type(e).__name__}: {e}")
        else:
            recorder.add(key, result)
        recorder.tick()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for fut in as_completed([pool.submit(work, k) for k in recorder.todo]):
            fut.result()
