"""Batch explain + score: persisted as it goes, resumable, DataFrame out; OpenAI's JSONL layout."""

import threading

import pandas as pd
import pytest

from neuronwidget.api import explain_neurons
from neuronwidget.explanations import (BaselineBackend, Cancelled, OpenAIBackend, read_explanations_jsonl,
                                       write_explanations_jsonl)
from neuronwidget.explanations.batch import COLUMNS

from explain_fixtures import capital_neuron
from servers.fault_server import FaultServer


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
    assert (df.explainer == "token lookup (the paper's baseline, no LLM)").all()
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
    assert "neuron 3 is broken" in broken.error
    assert pd.isna(broken.score) and pd.isna(broken.explanation)
    fine = df[df.neuron == 2].iloc[0]
    assert pd.isna(fine.error) and fine.score > 0.9
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
    for path in paths:
        back = read_explanations_jsonl(path)
        assert len(back) == 1
        same = [r for r in results if r.neuron_id == back[0].neuron_id]
        assert len(same) == 1 and f"4/{back[0].neuron_id.neuron_index}.jsonl" in path.as_posix()
        assert back[0].to_dict() == same[0].to_dict()  # OpenAI's fields, unchanged
        assert back[0].scored_explanations[0].explainer is None  # our extras stay out of OpenAI's files
    first_line = paths[0].read_text().splitlines()[0]
    assert '"dataclass_name": "NeuronSimulationResults"' in first_line
    with pytest.raises(ValueError, match="line 1"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 2}\n')
        read_explanations_jsonl(bad)


def _fault_reply(body):
    system = body["messages"][0]["content"]
    return "[[0, 3], [2, 10]]" if "JSON" in system else "names of capital cities."


def test_a_run_cut_off_mid_neuron_is_completed_on_rerun(tmp_path):
    """The server answers the first neuron's explanation and 4 of its 8 simulations, then
    fails until retries run out: nothing incomplete is saved, and the rerun completes it."""
    out = tmp_path / "run.jsonl"
    with FaultServer(reply=_fault_reply) as server:
        def backend():
            return OpenAIBackend("fault-model", base_url=server.base_url, api_key="k", timeout=5, max_retries=1,
                                 retry_base_s=0.01, simulation="json", cache_dir=tmp_path / "cache")

        server.script = ["ok"] * 5 + ["500"] * 1000
        first = explain_neurons(RecordStore(), 0, [1, 2], explainer=backend(), simulator=backend(), out=out,
                                concurrency=1, progress=False)
        assert first.neuron.tolist() == [1, 2]
        assert "incomplete, not saved: 4 of 8 simulations failed" in first.error[0]
        assert "failed after 2 attempts" in first.error[0]
        assert "failed after 2 attempts" in first.error[1]  # its explanation could not be asked for
        assert out.read_text() == ""  # nothing was saved as done
        n_before = server.requests

        server.script = []  # the server is back
        again = explain_neurons(RecordStore(), 0, [1, 2], explainer=backend(), simulator=backend(), out=out,
                                concurrency=2, progress=False)
        # neuron 1: its explanation and 4 simulations came from the cache; neuron 2: all new
        assert server.requests - n_before == 4 + (1 + 8)
    assert again.error.isna().all() and again.score.notna().all()
    lines = out.read_text().splitlines()
    done = read_explanations_jsonl(out)
    assert len(lines) == 2 and sorted(r.neuron_id.neuron_index for r in done) == [1, 2]
    for r in done:  # one complete entry per neuron: every scoring record simulated
        sims = r.scored_explanations[0].scored_simulation.scored_sequence_simulations
        assert len(sims) == 8 and not any(s.simulation.failed for s in sims)


def test_an_unfinished_entry_on_disk_is_redone_and_replaced(tmp_path):
    from neuronwidget.explanations.files import entry_line
    from neuronwidget.records import NeuronSimulationResults

    out = tmp_path / "run.jsonl"
    explain_neurons(RecordStore(), 0, [0, 1], explainer=BaselineBackend(), simulator=BaselineBackend(),
                    out=out, progress=False)
    good = read_explanations_jsonl(out)
    # an entry from an older version, saved with a simulation whose retries had run out
    partial = NeuronSimulationResults.from_dict(good[0].to_dict(extras=True))
    sim = partial.scored_explanations[0].scored_simulation.scored_sequence_simulations[0].simulation
    sim.error, sim.retryable, sim.expected_activations = "chat request failed after 5 attempts", True, []
    out.write_text(entry_line(partial) + "\n" + entry_line(good[1]) + "\n" + entry_line(good[1]) + "\n")
    store = RecordStore()
    explain_neurons(store, 0, [0, 1], explainer=BaselineBackend(), simulator=BaselineBackend(), out=out,
                    progress=False)
    assert store.calls == [(0, partial.neuron_id.neuron_index)]
    again = read_explanations_jsonl(out)
    assert sorted(r.neuron_id.neuron_index for r in again) == [0, 1]
    def same(r):  # the redone entry is the same but for when it was scored
        d = r.to_dict(extras=True)
        for e in d["scored_explanations"]:
            assert e.pop("scored_at") > 0
        return d

    assert sorted(map(same, again), key=str) == sorted(map(same, good), key=str)


class SignedStore:
    def record(self, layer, neuron):
        from explain_fixtures import signed_neuron

        return signed_neuron(layer, neuron, seed=neuron)


def test_both_sides_one_entry_each_with_a_side_column(tmp_path):
    out = tmp_path / "run.jsonl"
    both = ("positive", "negative")
    df = explain_neurons(SignedStore(), 2, [0, 1], explainer=BaselineBackend(), simulator=BaselineBackend(),
                         out=out, sides=both, progress=False)
    assert list(zip(df.neuron, df.side)) == [(0, "positive"), (0, "negative"), (1, "positive"), (1, "negative")]
    assert df.error.isna().all() and (df.score > 0.5).all()
    assert df[df.side == "negative"].explanation.str.contains('"cat"').all()
    assert not df[df.side == "positive"].explanation.str.contains('"cat"').any()
    results = read_explanations_jsonl(out)
    keys = sorted((r.neuron_id.neuron_index, r.scored_explanations[0].side) for r in results)
    assert keys == [(0, "negative"), (0, "positive"), (1, "negative"), (1, "positive")]
    # a rerun asking for both sides has nothing left to do; one asking for a side alone neither
    again = explain_neurons(SignedStore(), 2, [0, 1], explainer=BaselineBackend(), simulator=BaselineBackend(),
                            out=out, sides=["negative"], progress=False)
    assert again.score.tolist() == df[df.side == "negative"].score.tolist()
    assert len(out.read_text().splitlines()) == 4
    # OpenAI's layout: the negative side in its own folder, OpenAI's fields only
    paths = write_explanations_jsonl(results, tmp_path / "openai")
    assert sorted(p.relative_to(tmp_path / "openai").as_posix() for p in paths) == [
        "2/0.jsonl", "2/1.jsonl", "negative/2/0.jsonl", "negative/2/1.jsonl"]
    assert '"side"' not in (tmp_path / "openai" / "negative" / "2" / "0.jsonl").read_text()
    with pytest.raises(ValueError, match="sides must be distinct values from"):
        explain_neurons(SignedStore(), 2, 0, explainer=BaselineBackend(), simulator=BaselineBackend(), sides=["both"])


class Dies(BaselineBackend):
    """The baseline, except that the worker process explaining neuron 4 dies, the first ``times``
    times it is asked (counted in files under ``folder``) — a real process death in a Ray actor,
    as an OOM kill or a lost machine would be."""

    def __init__(self, folder, times=1):
        self.folder, self.times = folder, times

    def deaths(self):
        return len(list(self.folder.glob("died-*"))) if self.folder.exists() else 0

    def explain(self, record, *, n=1, cancel=None):
        import os
        import time

        time.sleep(0.3)  # long enough for both workers to hold neurons when one dies
        if record.neuron_id.neuron_index == 4 and self.deaths() < self.times:
            self.folder.mkdir(exist_ok=True)
            (self.folder / f"died-{self.deaths()}").write_text(str(os.getpid()))
            os._exit(1)
        return super().explain(record, n=n, cancel=cancel)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason='needs ray: pip install "neuronwidget[ray]"')
    from neuronwidget.activations.distributed import init_ray

    init_ray(num_cpus=2, object_store_memory=200 * 1024 * 1024)  # survives a slow start on a busy machine
    ray.cloudpickle.register_pickle_by_value(__import__(__name__))  # the test's backend class, by value
    yield ray
    ray.shutdown()


def test_on_ray_a_killed_worker_loses_nothing(tmp_path, local_ray):
    out = tmp_path / "run.jsonl"
    backend = Dies(tmp_path / "deaths")
    neurons = [0, 1, 2, 4, 5, 6]
    df = explain_neurons(RecordStore(), 0, neurons, explainer=backend, simulator=backend, out=out,
                         distributed="ray", progress=False)
    assert backend.deaths() == 1  # a worker really died mid-run
    assert df.neuron.tolist() == neurons and df.error.isna().all() and (df.score > 0.9).all()
    done = read_explanations_jsonl(out)
    assert sorted(r.neuron_id.neuron_index for r in done) == neurons  # none lost, none twice
    # the same results as a local run
    local = explain_neurons(RecordStore(), 0, neurons, explainer=BaselineBackend(), simulator=BaselineBackend(),
                            progress=False)
    assert df.score.tolist() == local.score.tolist() and df.explanation.tolist() == local.explanation.tolist()
    # a rerun has nothing left to do
    store = RecordStore()
    again = explain_neurons(store, 0, neurons, explainer=backend, simulator=backend, out=out, distributed="ray",
                            progress=False)
    assert store.calls == [] and again.score.tolist() == df.score.tolist()
    assert len(out.read_text().splitlines()) == len(neurons)
    # a neuron whose record cannot be had is reported, and the others still finish
    broken = explain_neurons(RecordStore(), 1, [2, 3], explainer=BaselineBackend(), simulator=BaselineBackend(),
                             distributed="ray", workers=2, progress=False)
    assert broken.error.isna().tolist() == [True, False] and "neuron 3 is broken" in broken.error[1]


def test_on_ray_a_neuron_whose_worker_dies_too_often_is_reported_and_redone_next_time(tmp_path, local_ray):
    out = tmp_path / "run.jsonl"
    backend = Dies(tmp_path / "deaths", times=2)  # neuron 4 kills its worker twice; one death is allowed
    neurons = [0, 1, 4, 5, 6]
    df = explain_neurons(RecordStore(), 0, neurons, explainer=backend, simulator=backend, out=out,
                         distributed="ray", workers=2, max_worker_deaths=1, progress=False)
    assert backend.deaths() == 2
    row = df[df.neuron == 4].iloc[0]
    assert "its Ray worker died more often than Ray restarts it (max_worker_deaths=1)" in row.error
    assert row.error.endswith("not saved: run again to retry it") and pd.isna(row.score)
    fine = df[df.neuron != 4]
    assert fine.error.isna().all() and (fine.score > 0.9).all()  # the others finished on the worker left
    assert sorted(r.neuron_id.neuron_index for r in read_explanations_jsonl(out)) == [0, 1, 5, 6]
    # the rerun does neuron 4 alone (its worker lives now), and everything is done
    store = RecordStore()
    again = explain_neurons(store, 0, neurons, explainer=backend, simulator=backend, out=out, distributed="ray",
                            progress=False)
    assert store.calls == [(0, 4)] and again.error.isna().all()
    assert sorted(r.neuron_id.neuron_index for r in read_explanations_jsonl(out)) == [0, 1, 4, 5, 6]
    # when no worker is left, the run stops and says what is left; what finished is saved
    last = Dies(tmp_path / "more-deaths")
    with pytest.raises(RuntimeError, match=r"no Ray worker is left: .*max_worker_deaths=0.*; 1 neurons are left"):
        explain_neurons(RecordStore(), 1, [4, 5], explainer=last, simulator=last, out=tmp_path / "last.jsonl",
                        distributed="ray", workers=1, max_worker_deaths=0, progress=False)
    with pytest.raises(ValueError, match="only apply with distributed='ray'"):
        explain_neurons(RecordStore(), 0, [0], explainer=BaselineBackend(), simulator=BaselineBackend(),
                        max_worker_deaths=1)
    with pytest.raises(ValueError, match="max_worker_deaths must be an integer >= 0"):
        explain_neurons(RecordStore(), 0, [0], explainer=BaselineBackend(), simulator=BaselineBackend(),
                        distributed="ray", max_worker_deaths=-1)


def test_ray_is_optional_with_a_clear_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match=r'pip install "neuronwidget\[ray\]"'):
        explain_neurons(RecordStore(), 0, [0], explainer=BaselineBackend(), simulator=BaselineBackend(),
                        distributed="ray", progress=False)
    with pytest.raises(ValueError, match="distributed must be None"):
        explain_neurons(RecordStore(), 0, [0], distributed="dask")


def test_best_of_and_revision_in_a_batch(tmp_path):
    """Each neuron: best_of requests for candidates + one for the revision, over real HTTP; the
    kept explanation alone is scored and saved; the explainer column says how it was found."""

    def reply(body):
        last = body["messages"][-1]["content"]
        return "capital" if "Current description" in last else "cities"

    with FaultServer(reply=reply) as server:
        explainer = OpenAIBackend("m", base_url=server.base_url, api_key="sk-test", cache_dir=tmp_path / "cache")
        df = explain_neurons(RecordStore(), [0], [0, 1], explainer=explainer, simulator=BaselineBackend(),
                             out=tmp_path / "run.jsonl", best_of=3, revise=True, progress=False, concurrency=1)
    assert server.requests == 2 * (3 + 1)
    assert df.error.isna().all() and len(read_explanations_jsonl(tmp_path / "run.jsonl")) == 2
    for _, row in df.iterrows():
        assert row.explanation in ("cities", "capital")
        assert row.explainer.startswith(explainer.name + " (best of 3")
        # 3 candidates + 1 revision reached the server; it bills 100 prompt + 5 completion tokens each
        assert (row.explain_calls, row.score_calls, row.prompt_tokens, row.completion_tokens) == (4, 0, 400, 20)
    with pytest.raises(ValueError, match="best_of must be an integer >= 1"):
        explain_neurons(RecordStore(), [0], [0], explainer=BaselineBackend(), simulator=BaselineBackend(), best_of=0)


def test_cli_explain_on_ray(tiny_index, local_ray, tmp_path, capsys):
    from neuronwidget import cli

    out = tmp_path / "out"
    args = ["explain", "--model", "tiny", "--layers", "0", "--neurons", "0-2", "--out", str(out)]
    assert cli.main(args + ["--ray", "--workers", "2", "--max-worker-deaths", "1"]) == 0
    done = read_explanations_jsonl(out / "explanations.jsonl")
    assert sorted(r.neuron_id.neuron_index for r in done) == [0, 1, 2]
    local = cli.main(args[:-1] + [str(tmp_path / "local")])  # the same run in this process: the same explanations
    assert local == 0 and {(r.neuron_id.neuron_index, r.scored_explanations[0].explanation) for r in done} == {
        (r.neuron_id.neuron_index, r.scored_explanations[0].explanation)
        for r in read_explanations_jsonl(tmp_path / "local" / "explanations.jsonl")}
    capsys.readouterr()
    assert cli.main(args + ["--workers", "2"]) == 2
    assert "--workers and --max-worker-deaths only apply with --ray" in capsys.readouterr().err
