"""Batch explain + score: persisted as it goes, resumable, DataFrame out; OpenAI's JSONL layout."""

import threading

import pytest

from neuronwidget.api import explain_neurons
from neuronwidget.explanations import BaselineBackend, Cancelled, read_explanations_jsonl, write_explanations_jsonl
from neuronwidget.explanations.batch import COLUMNS

from explain_fixtures import capital_neuron


class RecordStore:
    """Anything with .record(layer, neuron) works as an index; this one counts the calls."""

    def __init__(self, cancel_after: int | None = None, cancel: threading.Event | None = None):
        self.calls: list[tuple[int, int]] = []
        self.cancel_after, self.cancel = cancel_after, cancel

    def record(self, layer, neuron):
        self.calls.append((layer, neuron))
        if self.cancel_after is not None and len(self.calls) > self.cancel_after:
            self.cancel.set()
        if neuron == 3:
            raise ValueError("neuron 3 is broken in this store")
        return capital_neuron(layer, neuron, seed=layer * 100 + neuron)


def test_interrupted_run_resumes_and_persists(tmp_path):
    out = tmp_path / "run.jsonl"
    stop = threading.Event()
    first = RecordStore(cancel_after=2, cancel=stop)
    with pytest.raises(Cancelled):
        explain_neurons(first, [0, 1], range(3), explainer=BaselineBackend(), simulator=BaselineBackend(),
                        out=out, concurrency=1, progress=False, cancel=stop)
    done = read_explanations_jsonl(out)
    assert len(done) == 2  # what finished before the interruption is on disk
    with open(out, "a") as f:
        f.write('{"neuron_id": {"layer_index": 1, "neuron_')  # a line cut short by a crash

    second = RecordStore()
    df = explain_neurons(second, [0, 1], range(3), explainer=BaselineBackend(), simulator=BaselineBackend(),
                         out=out, concurrency=2, progress=False)
    assert sorted(second.calls) == sorted({(l, n) for l in (0, 1) for n in range(3)} - {
        (r.neuron_id.layer_index, r.neuron_id.neuron_index) for r in done})
    assert list(df.columns) == COLUMNS
    assert list(zip(df.layer, df.neuron)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert df.error.isna().all() and (df.score > 0.9).all()
    assert (df.explainer == "baseline: token lookup (no LLM)").all()
    assert df.explanation.str.startswith("the tokens").all()
    # a third run has nothing left to do
    third = RecordStore()
    again = explain_neurons(third, [0, 1], range(3), explainer=BaselineBackend(), simulator=BaselineBackend(),
                            out=out, progress=False)
    assert third.calls == [] and again.score.tolist() == df.score.tolist()


def test_a_failing_neuron_is_reported_and_retried_next_time(tmp_path):
    out = tmp_path / "run.jsonl"
    store = RecordStore()
    df = explain_neurons(store, 0, [2, 3], explainer=BaselineBackend(), simulator=BaselineBackend(),
                         out=out, progress=False)
    broken = df[df.neuron == 3].iloc[0]
    assert "neuron 3 is broken" in broken.error and broken.score is None or broken.score != broken.score
    assert len(read_explanations_jsonl(out)) == 1
    store2 = RecordStore()
    explain_neurons(store2, 0, [2, 3], explainer=BaselineBackend(), simulator=BaselineBackend(), out=out, progress=False)
    assert store2.calls == [(0, 3)]


def test_openai_jsonl_layout_round_trip(tmp_path):
    df_out = tmp_path / "a.jsonl"
    explain_neurons(RecordStore(), 4, [0, 1], explainer=BaselineBackend(), simulator=BaselineBackend(),
                    out=df_out, progress=False)
    results = read_explanations_jsonl(df_out)
    paths = write_explanations_jsonl(results, tmp_path / "explanations")
    assert sorted(p.relative_to(tmp_path / "explanations").as_posix() for p in paths) == ["4/0.jsonl", "4/1.jsonl"]
    back = read_explanations_jsonl(paths[0])
    assert len(back) == 1 and back[0].to_dict() == results[0].to_dict() or back[0].to_dict() == results[1].to_dict()
    first_line = paths[0].read_text().splitlines()[0]
    assert '"dataclass_name": "NeuronSimulationResults"' in first_line
    with pytest.raises(ValueError, match="line 1"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 2}\n')
        read_explanations_jsonl(bad)
