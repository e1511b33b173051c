"""The explanation store remembers: nw.score, explain_neurons and NeuronView record into it
automatically (``store=False`` opts out), and a later session (another process over the same
cache folder) reads back what was scored: text, score, explainer, simulator and when."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import neuronwidget as nw
from neuronwidget.explanations.store import ExplanationStore, model_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _store_in_the_cache_folder(monkeypatch):
    """These tests read the store where it lives by default: in the cache folder in force."""
    monkeypatch.delenv("NEURONWIDGET_STORE", raising=False)


def later_session(code: str, cache: Path, timeout: float = 600) -> object:
    """Run ``code`` in a fresh interpreter (a later kernel session) over ``cache``; its last
    stdout line is JSON."""
    env = {**os.environ, "NEURONWIDGET_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


READ_BACK = """
import json
from neuronwidget.explanations.store import ExplanationStore
from neuronwidget._io import cache_root
st = ExplanationStore(cache_root() / "explanations.sqlite")
print(json.dumps([[s.explanation, s.score, s.explainer, s.simulator, s.scored_at, s.side, s.scored_simulation.note]
                  for s in st.explanations({model!r}, {layer}, {neuron}, {side!r})]))
"""


@pytest.fixture
def fresh_cache(tiny_index, tmp_path):
    """The tiny model's index (built in the shared cache) with an empty cache folder in force,
    so the explanation store starts empty; the index folder is linked in for later sessions."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "index").symlink_to(Path(tiny_index[0]) / "index", target_is_directory=True)
    before = nw.settings()
    nw.configure(cache_dir=str(cache))
    yield cache, tiny_index[2]
    nw.configure(cache_dir=before.cache_dir)


def test_records_know_their_model(fresh_cache):
    _, index = fresh_cache
    rec = index.record(1, 3)
    assert rec.model == index.model == "tiny"
    assert rec.for_side("negative").model == "tiny"
    assert "model" not in json.loads(rec.to_json(extras=True))  # in memory only: OpenAI's format unchanged


def test_score_is_recorded_and_a_later_session_reads_it_back(fresh_cache):
    cache, index = fresh_cache
    before = time.time()
    scored = nw.score(index.record(1, 3), "the letter e after a space", "rules")
    assert scored.scored_at is not None and before <= scored.scored_at <= time.time()
    back = later_session(READ_BACK.format(model="tiny", layer=1, neuron=3, side="positive"), cache)
    assert len(back) == 1
    text, score, explainer, simulator, when, side, note = back[0]
    assert text == "the letter e after a space" and side == "positive"
    assert score == pytest.approx(scored.score) and simulator == scored.simulator and simulator.startswith("rules")
    assert when == pytest.approx(scored.scored_at)
    assert "recorded " in note and time.strftime("%Y-%m-%d", time.gmtime(scored.scored_at)) in note

    # the negative side is its own row; scoring the same text again updates, never duplicates
    neg = nw.score(index.record(1, 3).for_side("negative"), "the letter e after a space", "rules")
    again = nw.score(index.record(1, 3), "the letter e after a space", "rules")
    st = ExplanationStore(cache / "explanations.sqlite")
    assert [s.scored_at for s in st.explanations("tiny", 1, 3)] == [pytest.approx(again.scored_at)]
    assert [s.score for s in st.explanations("tiny", 1, 3, "negative")] == [pytest.approx(neg.score)]


def test_store_false_opts_out(fresh_cache):
    cache, index = fresh_cache
    nw.score(index.record(1, 4), "nothing to see", "rules", store=False)
    assert ExplanationStore(cache / "explanations.sqlite").explanations("tiny", 1, 4) == []
    other = ExplanationStore(cache / "elsewhere.sqlite")
    nw.score(index.record(1, 4), "somewhere else", "rules", store=other)
    assert [s.explanation for s in other.explanations("tiny", 1, 4)] == ["somewhere else"]
    assert ExplanationStore(cache / "explanations.sqlite").explanations("tiny", 1, 4) == []
    with pytest.raises(ValueError, match="store must be True"):
        nw.score(index.record(1, 4), "x", "rules", store="yes")


def test_a_record_without_a_model_is_scored_not_recorded(fresh_cache):
    cache, index = fresh_cache
    rec = index.record(1, 5)
    rec.model = None  # e.g. a NeuronRecord made by hand or read from a file
    assert nw.score(rec, "anything", "rules").explanation == "anything"
    assert ExplanationStore(cache / "explanations.sqlite").count() == 0


def test_a_store_that_cannot_be_written_warns_and_keeps_the_score(fresh_cache, tmp_path):
    _, index = fresh_cache
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")  # unwritable even for root
    st = ExplanationStore(blocker / "explanations.sqlite")
    with pytest.warns(UserWarning, match="not recorded"):
        scored = nw.score(index.record(1, 6), "an unwritable cache", "rules", store=st)
    assert scored.explanation == "an unwritable cache" and scored.scored_at is not None
    with pytest.warns(UserWarning, match="not being recorded"):
        table = nw.explain_neurons(index, [1], [6], explainer="rules", simulator="rules", progress=False, store=st)
    assert table.error.isna().all() and table.explanation.notna().all()  # the run itself goes on


def test_explain_neurons_records_every_complete_entry(fresh_cache, tmp_path):
    cache, index = fresh_cache
    table = nw.explain_neurons(index, [0], [0, 1], sides=("positive", "negative"), explainer="rules",
                               simulator="rules", out=tmp_path / "r.jsonl", progress=False)
    st = ExplanationStore(cache / "explanations.sqlite")  # a fresh connection: what another session sees
    done = table[table.error.isna()]
    assert len(done) >= 2
    for row in table[table.error.notna()].itertuples():  # not complete: not recorded
        assert st.explanations("tiny", row.layer, row.neuron, row.side) == []
    for row in done.itertuples():
        got = st.explanations("tiny", row.layer, row.neuron, row.side)
        assert [s.explanation for s in got] == [row.explanation]
        assert got[0].score == pytest.approx(row.score) if row.score is not None else got[0].score is None
        assert got[0].explainer == row.explainer and got[0].simulator == row.simulator
    assert st.count("tiny") == len(done)
    # opting out
    nw.explain_neurons(index, [0], [2], explainer="rules", simulator="rules", progress=False, store=False)
    assert st.explanations("tiny", 0, 2) == []


def test_older_labels_are_keyed_by_the_model_name(tmp_path):
    path = tmp_path / "explanations.sqlite"
    st = ExplanationStore(path)
    st.add_results([], "gpt2")  # creates the schema
    st.close()
    con = sqlite3.connect(path)
    with con:
        for model, text in [("SmolLM2-135M-Instruct — real weights, not GPT-2", "said"),
                            ("tiny (random weights — not a real GPT-2)", "noise")]:
            con.execute("INSERT INTO explanations (model, layer, neuron, side, explainer, simulator, explanation, "
                        "source, added) VALUES (?, 7, 145, 'positive', 'rules', 'rules', ?, 'NeuronView', 0)",
                        (model, text))
    con.close()
    st = ExplanationStore(path)
    st.add_results([], "gpt2")  # the first write migrates older labels
    assert [s.explanation for s in st.explanations("smollm2-135m", 7, 145)] == ["said"]
    assert [s.explanation for s in st.explanations("tiny", 7, 145)] == ["noise"]
    assert model_key("SmolLM2-135M-Instruct — real weights, not GPT-2") == "smollm2-135m"
    assert model_key("gpt2-small") == "gpt2"


VIEW_LATER = """
import json, neuronwidget as nw
from neuronwidget.widgets import NeuronView
nw.configure(model="tiny")
view = NeuronView(0, 7, model="tiny", explainer="rules", simulator="rules")
cards = view._data["cards"]
print(json.dumps({"cards": [[c["explanation"], c["score"], c["explainer"], c["simulator"], c["note"]] for c in cards],
                  "html": view._repr_html_()}))
"""


def test_a_neuronview_in_a_later_session_shows_what_was_scored(fresh_cache):
    from test_widgets import ask

    from neuronwidget.widgets import NeuronView

    cache, index = fresh_cache
    view = NeuronView(0, 7, model="tiny", index=index, explainer="rules", simulator="rules")
    assert ask(view, "test", explanation="a typed explanation") == {"type": "done"}  # the front end's command
    view.wait(300)
    typed = view.explanations[0]
    assert typed.explainer == "you (typed in this view)"
    view.close()
    by_score = nw.score(index.record(0, 7), "scored from code", "rules")

    later = later_session(VIEW_LATER, cache)
    cards = later["cards"]
    assert [c[0] for c in cards] == ["scored from code", "a typed explanation"]  # newest first
    (_, s1, e1, sim1, note1), (_, s2, e2, sim2, note2) = cards
    assert s1 == pytest.approx(by_score.score) and s2 == pytest.approx(typed.score)
    assert e2 == "you (typed in this view)" and sim2 == typed.simulator and sim1 == by_score.simulator
    day = time.strftime("%Y-%m-%d", time.gmtime(typed.scored_at))
    assert day in note1 and day in note2 and "NeuronView" in note2
    assert "a typed explanation" in later["html"] and "scored from code" in later["html"]


def test_detection_and_fuzzing_scores_are_recorded_searchable_and_read_back(fresh_cache):
    cache, index = fresh_cache
    rec = index.record(1, 7)
    text = "the letter q in the middle of words"
    det = nw.score(rec, text, "rules", scorer="detection")
    fuz = nw.score(rec, text, "rules", scorer="fuzzing")
    assert det.via == fuz.via == "simulator" and det.n_answered > 0 and fuz.n_answered > 0
    st = ExplanationStore(cache / "explanations.sqlite")
    # found by a search although no simulation score exists: a row of its own, no simulator, no score
    df = nw.search("letter q middle", model="tiny", store=st)
    assert len(df) == 1 and (df.layer[0], df.neuron[0], df.side[0], df.explanation[0]) == (1, 7, "positive", text)
    assert df.simulator[0] == "" and df.score.isna()[0]
    assert (df.detection[0], df.fuzzing[0]) == (pytest.approx(det.score), pytest.approx(fuz.score))
    # read back as ClassificationScores, in a later session too
    back = later_session(f"""
import json
from neuronwidget.explanations.store import ExplanationStore
from neuronwidget._io import cache_root
st = ExplanationStore(cache_root() / "explanations.sqlite")
print(json.dumps(sorted([c.scorer, c.explanation, c.score, c.interval, c.judge, c.via, c.note]
                        for c in st.classifications("tiny", 1, 7))))
""", cache)
    assert [b[0] for b in back] == ["detection", "fuzzing"]
    for (scorer, got_text, score, interval, judge, via, note), want in zip(back, (det, fuz)):
        assert got_text == text and score == pytest.approx(want.score) and judge == want.judge and via == "simulator"
        assert (interval is None) == (want.interval is None)
        assert interval is None or interval == pytest.approx(list(want.interval))
        assert "recorded " in note and f"{want.n_answered} of {want.n_examples} examples" in note

    # the same text scored by simulation: its row replaces the placeholder and shows all three scores
    sim = nw.score(rec, text, "rules")
    df = nw.search("letter q middle", model="tiny", store=st)
    assert len(df) == 1 and df.score[0] == pytest.approx(sim.score) and df.simulator[0] == sim.simulator
    assert (df.detection[0], df.fuzzing[0]) == (pytest.approx(det.score), pytest.approx(fuz.score))
    # scoring again replaces the scorer's earlier score (one per text and scorer)
    again = nw.score(rec, text, "rules", scorer="detection", n_top=1, n_random=1)
    assert again.n_examples < det.n_examples  # told apart by its example count
    latest = st.classifications("tiny", 1, 7)
    assert [c.scorer for c in latest] == ["detection", "fuzzing"]  # newest first, one per scorer
    assert f"{again.n_answered} of {again.n_examples} examples" in latest[0].note
    assert latest[0].score == again.score or (latest[0].score is None and again.score is None)
    assert st.classifications("tiny", 1, 7, "negative") == [] and st.classifications("tiny", 1, 8) == []


def test_detection_and_fuzzing_opt_out_like_the_others(fresh_cache):
    cache, index = fresh_cache
    rec = index.record(1, 8)
    nw.score(rec, "not recorded", "rules", scorer="detection", store=False)
    other = ExplanationStore(cache / "elsewhere.sqlite")
    nw.score(rec, "recorded elsewhere", "rules", scorer="fuzzing", store=other)
    assert ExplanationStore(cache / "explanations.sqlite").count() == 0
    assert [c.explanation for c in other.classifications("tiny", 1, 8)] == ["recorded elsewhere"]
