"""Explain and score many neurons, resumably; OpenAI's per-neuron JSONL files."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..records import NeuronId, NeuronSimulationResults, ScoredExplanation
from .backends import resolve_explainer, resolve_simulator
from .explainer import explain
from .simulator import score

COLUMNS = ["layer", "neuron", "explanation", "score", "random_only_score", "explainer", "simulator", "error"]


def _row(layer: int, neuron: int, best: ScoredExplanation | None, error: str | None = None) -> dict[str, Any]:
    sim = best.scored_simulation if best else None
    return {
        "layer": layer,
        "neuron": neuron,
        "explanation": best.explanation if best else None,
        "score": sim.ev_correlation_score if sim else None,
        "random_only_score": sim.random_only_score if sim else None,
        "explainer": best.explainer if best else None,
        "simulator": best.simulator if best else None,
        "error": error,
    }


def _best(results: NeuronSimulationResults) -> ScoredExplanation | None:
    items = results.scored_explanations
    if not items:
        return None
    return max(items, key=lambda s: -2.0 if s.score is None else s.score)


def _read_done(path: Path) -> dict[tuple[int, int], NeuronSimulationResults]:
    done: dict[tuple[int, int], NeuronSimulationResults] = {}
    if not path.exists():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = NeuronSimulationResults.from_json(line)
            except ValueError:
                continue  # a line cut short by an interruption: that neuron is redone
            done[(r.neuron_id.layer_index, r.neuron_id.neuron_index)] = r
    return done


def explain_neurons(
    index,
    layers: int | Iterable[int],
    neurons: int | Iterable[int],
    *,
    explainer=None,
    simulator=None,
    out: str | os.PathLike | None = None,
    concurrency: int = 4,
    n: int = 1,
    progress: bool = True,
    cancel: threading.Event | None = None,
):
    """Explain and score every (layer, neuron) pair; returns a pandas DataFrame.

    ``index`` is anything with ``.record(layer, neuron)`` (e.g. a NeuronIndex). With ``out``
    (a .jsonl path) each neuron's NeuronSimulationResults is appended as soon as it is done,
    and a rerun skips the neurons already there. A neuron that fails gets its error in the
    DataFrame and is not written, so the next run tries it again.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    layers = [layers] if isinstance(layers, int) else list(layers)
    neurons = [neurons] if isinstance(neurons, int) else list(neurons)
    pairs = [(int(layer), int(neuron)) for layer in layers for neuron in neurons]
    explainer = resolve_explainer(explainer)
    simulator = resolve_simulator(simulator)
    path = Path(out) if out is not None else None
    done = _read_done(path) if path else {}
    rows = {p: _row(*p, _best(done[p])) for p in pairs if p in done}
    todo = [p for p in pairs if p not in done]
    lock = threading.Lock()

    def work(pair: tuple[int, int]) -> NeuronSimulationResults:
        if cancel is not None and cancel.is_set():
            return None  # type: ignore[return-value]
        record = index.record(*pair)
        explanations = explain(record, explainer, n=n, cancel=cancel)
        scored = []
        for e in explanations:
            scored.append(score(record, e, simulator, explainer=explainer.name, cancel=cancel))
        return NeuronSimulationResults(neuron_id=NeuronId(*pair), scored_explanations=scored)

    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(pairs), initial=len(pairs) - len(todo), desc="explaining neurons", disable=not progress)
    sink = open(path, "a", encoding="utf-8") if path else None
    if sink and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                sink.write("\n")  # close a line cut short by an interruption before appending
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            futures = {pool.submit(work, p): p for p in todo}
            for fut in as_completed(futures):
                pair = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - one neuron's failure must not stop the batch
                    if type(e).__name__ == "Cancelled":
                        continue
                    rows[pair] = _row(*pair, None, error=f"{type(e).__name__}: {e}")
                else:
                    if result is None:
                        continue
                    if sink:
                        with lock:
                            sink.write(result.to_json() + "\n")
                            sink.flush()
                            os.fsync(sink.fileno())
                    rows[pair] = _row(*pair, _best(result))
                bar.update(1)
    finally:
        bar.close()
        if sink:
            sink.close()
    if cancel is not None and cancel.is_set():
        from ._common import Cancelled

        raise Cancelled(f"cancelled after {len(rows)} of {len(pairs)} neurons")
    return pd.DataFrame([rows[p] for p in pairs if p in rows], columns=COLUMNS)


def write_explanations_jsonl(results: Iterable[NeuronSimulationResults], directory: str | os.PathLike) -> list[Path]:
    """OpenAI's published layout: ``{directory}/{layer}/{neuron}.jsonl``, one object per file."""
    from .._io import atomic_write_text

    paths = []
    for r in results:
        p = Path(directory) / str(r.neuron_id.layer_index) / f"{r.neuron_id.neuron_index}.jsonl"
        atomic_write_text(p, r.to_json() + "\n")
        paths.append(p)
    return paths


def read_explanations_jsonl(path: str | os.PathLike) -> list[NeuronSimulationResults]:
    """Every NeuronSimulationResults in a .jsonl file (OpenAI's or ours)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(NeuronSimulationResults.from_json(line))
                except (ValueError, json.JSONDecodeError) as e:
                    raise ValueError(f"{path}, line {i}: not a NeuronSimulationResults ({e})") from None
    return out
