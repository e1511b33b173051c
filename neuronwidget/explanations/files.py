"""Explanation files: OpenAI's format (exactly their fields) and neuronwidget's own.

* OpenAI's layout, ``write_explanations_jsonl(results, directory)``: one file per neuron,
  ``{directory}/{layer}/{neuron}.jsonl``, holding one ``NeuronSimulationResults`` with
  OpenAI's fields only, so their ``neuron_explainer`` loader reads it. Negative-side
  results go to ``{directory}/negative/{layer}/{neuron}.jsonl`` (same format; the
  activations in them are negated, as the method sees that side).
* neuronwidget's JSONL (what ``explain_neurons(out=...)`` writes): one line per
  (neuron, side), ``{"format": "neuronwidget.explanations", "version": 1, "side": ...,
  "result": <NeuronSimulationResults with our extras>}``. The top level has no
  ``dataclass_name``, so it never passes for OpenAI's format; the extras (explainer,
  simulator, side, record kinds, failures, notes) round-trip.

``read_explanations_jsonl`` reads both (and OpenAI's published files).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .._io import atomic_write_text
from ..records import NEURONWIDGET_FORMAT as FORMAT
from ..records import SIDES, NeuronSimulationResults, json_object
VERSION = 1


def result_side(result: NeuronSimulationResults) -> str:
    """The side a result explains (its explanations all carry it; "positive" when empty)."""
    sides = {s.side for s in result.scored_explanations}
    if len(sides) > 1:
        raise ValueError(f"{result.neuron_id}: explanations of both sides in one result ({sorted(sides)})")
    return sides.pop() if sides else "positive"


def entry_line(result: NeuronSimulationResults) -> str:
    """One line of neuronwidget's JSONL (no trailing newline)."""
    return json.dumps({"format": FORMAT, "version": VERSION, "side": result_side(result),
                       "result": result.to_dict(extras=True)})


def parse_line(line: str) -> tuple[NeuronSimulationResults, str]:
    """(result, side) from one line of neuronwidget's JSONL or of OpenAI's; ValueError if neither."""
    data = json_object(line, "an explanations line")
    if data.get("format") == FORMAT:
        if data.get("version") != VERSION:
            raise ValueError(f"{FORMAT} version {data.get('version')!r}; this neuronwidget reads version {VERSION}")
        side = data.get("side", "positive")
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return NeuronSimulationResults.from_dict(data["result"]), side
    result = NeuronSimulationResults.from_dict(data)  # OpenAI's format
    return result, result_side(result)


def read_explanations_jsonl(path: str | os.PathLike) -> list[NeuronSimulationResults]:
    """Every NeuronSimulationResults in a .jsonl file (neuronwidget's format or OpenAI's)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(parse_line(line)[0])
                except ValueError as e:
                    raise ValueError(f"{path}, line {i}: not a NeuronSimulationResults ({e})") from None
    return out


def write_explanations_jsonl(results: Iterable[NeuronSimulationResults], directory: str | os.PathLike) -> list[Path]:
    """OpenAI's published layout and format: ``{directory}/{layer}/{neuron}.jsonl`` (negative
    side under ``{directory}/negative/``), one object per file, OpenAI's fields only."""
    paths = []
    for r in results:
        base = Path(directory) / ("negative" if result_side(r) == "negative" else "")
        p = base / str(r.neuron_id.layer_index) / f"{r.neuron_id.neuron_index}.jsonl"
        atomic_write_text(p, r.to_json() + "\n")
        paths.append(p)
    return paths
