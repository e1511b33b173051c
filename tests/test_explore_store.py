"""The explanation store: search by words, hostile queries, bulk import of the published layout."""

import hashlib
import json
import random
import sqlite3

import pytest

import neuronwidget as nw
from neuronwidget.explanations.files import entry_line
from neuronwidget.explore import bulk
from neuronwidget.explore.store import ExplanationStore
from neuronwidget.records import NeuronId, NeuronSimulationResults, ScoredExplanation, ScoredSimulation
from servers.published_server import PublishedServer


@pytest.fixture(autouse=True)
def _store_in_the_cache_folder(monkeypatch):
    """These tests read the store where it lives by default: in the cache folder in force."""
    monkeypatch.delenv("NEURONWIDGET_STORE", raising=False)


WORDS = ("city river number code python french music colour animal sport year name list verb"
         " plural date letter bracket quote money law food body water light").split()


def scored(text, score, layer=0, neuron=0, explainer="baseline"):
    return ScoredExplanation(explanation=text, scored_simulation=ScoredSimulation([], ev_correlation_score=score),
                             neuron_id=NeuronId(layer, neuron), explainer=explainer, simulator="sim")


def _filler(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))


@pytest.fixture
def store(tmp_path):
    st = ExplanationStore(tmp_path / "ex.sqlite")
    rng = random.Random(0)
    st.add_results([NeuronSimulationResults(NeuronId(layer, n), [scored(_filler(rng), rng.random(), layer, n)])
                    for layer in range(3) for n in range(100)], "gpt2")
    yield st
    st.close()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inserted_explanation_comes_first_by_its_own_words(store):
    store.add(scored("capital cities of European countries", 0.31, 2, 77), "gpt2")
    store.add(scored("capital cities of European countries", 0.5, 1, 5), "tiny")  # another model
    df = nw.search("capital cities of European countries", model="gpt2", limit=5, store=store)
    assert (df.loc[0, "layer"], df.loc[0, "neuron"], df.loc[0, "model"]) == (2, 77, "gpt2")
    assert df.loc[0, "explanation"] == "capital cities of European countries"
    assert df.loc[0, "score"] == pytest.approx(0.31)
    assert list(df.columns) == ["model", "layer", "neuron", "side", "explanation", "score", "explainer",
                                "simulator", "source", "relevance", "detection", "fuzzing"]
    assert df.detection.isna().all() and df.fuzzing.isna().all()  # no detection or fuzzing score recorded
    # stemming: "capital city" finds it too; all models when model=None
    both = nw.search("capital city", limit=5, store=store)
    assert {(m, lay, n) for m, lay, n in zip(both.model, both.layer, both.neuron)} >= {("gpt2", 2, 77), ("tiny", 1, 5)}
    assert store.count() == 302


def test_ties_in_relevance_are_ranked_by_score(store):
    for i, s in enumerate((0.2, 0.9, 0.5)):
        store.add(scored("zebra stripes", s, 0, 200 + i), "gpt2")
    df = nw.search("zebra stripes", model="gpt2", store=store)
    assert df.score.tolist()[:3] == pytest.approx([0.9, 0.5, 0.2])


def test_recording_again_updates_the_score_without_a_duplicate(store):
    store.add(scored("unique marmalade words", 0.1, 1, 1), "gpt2")
    store.add(scored("unique marmalade words", 0.4, 1, 1), "gpt2")
    df = nw.search("marmalade", model="gpt2", store=store)
    assert len(df) == 1 and df.score[0] == pytest.approx(0.4)


@pytest.mark.parametrize("query", ["'; DROP TABLE explanations; --", "city\"", "city*", "NEAR(city river", "NEAR(",
                                   "city OR river AND NOT", "explanations_fts MATCH 'x'", "a:b", "(city)",
                                   "river' OR 1=1 --", "^city", "-city"])
def test_hostile_queries_give_results_and_never_change_the_database(store, query):
    before = _digest(store.path)
    df = nw.search(query, model="gpt2", store=store)
    assert len(df) >= 0 and _digest(store.path) == before
    assert store.count() == 300
    if "city" in query or "river" in query:
        assert len(df) > 0


def test_hostile_model_names_are_values_not_sql(store):
    before = _digest(store.path)
    assert nw.search("city", model="gpt2'; DROP TABLE explanations; --", store=store).empty
    assert nw.search("city", model='" OR 1=1 --', store=store).empty
    assert _digest(store.path) == before and store.count() == 300


@pytest.mark.parametrize("query", ["", "   ", "\"", "*", "(*)", "'; --", "()"])
def test_queries_without_words_are_a_clear_valueerror(store, query):
    before = _digest(store.path)
    with pytest.raises(ValueError, match="no words to search for"):
        nw.search(query, store=store)
    assert _digest(store.path) == before


@pytest.mark.parametrize("kwargs, message", [(dict(limit=0), "limit must be"), (dict(limit="5"), "limit must be"),
                                             (dict(query=5), "query must be a string")])
def test_bad_search_arguments(store, kwargs, message):
    args = {"query": "city", **kwargs}
    with pytest.raises(ValueError, match=message):
        nw.search(args.pop("query"), store=store, **args)


def test_search_before_anything_was_recorded(tmp_path):
    empty = ExplanationStore(tmp_path / "none.sqlite")
    assert nw.search("city", store=empty).empty
    assert not (tmp_path / "none.sqlite").exists()  # searching never creates it


def judged(scorer, text, accuracy, layer, neuron, interval=(0.4, 0.9)):
    from neuronwidget.explanations.classify import ClassificationScore, ClassifiedExample

    examples = [ClassifiedExample("a", 1, 1), ClassifiedExample("b", 0, None)]
    return ClassificationScore(scorer, text, accuracy, list(interval), examples, NeuronId(layer, neuron), judge="judge-model",
                               via="chat", explainer="someone")


def test_detection_and_fuzzing_scores_show_in_every_row_of_their_text(store):
    store.add(scored("tangerine peel", 0.4, 2, 9, explainer="a"), "gpt2")
    store.add(scored("tangerine peel", 0.6, 2, 9, explainer="b"), "gpt2")  # the same text, another explainer
    store.add(judged("detection", "tangerine peel", 0.75, 2, 9), "gpt2", source="nw.score")
    store.add(judged("fuzzing", "tangerine pips", 0.5, 2, 9), "gpt2")  # a text with no simulation score
    df = nw.search("tangerine", model="gpt2", store=store)
    peel = df[df.explanation == "tangerine peel"]
    assert sorted(peel.explainer) == ["a", "b"] and (peel.detection == 0.75).all() and peel.fuzzing.isna().all()
    pips = df[df.explanation == "tangerine pips"].iloc[0]
    assert pips.simulator == "" and pips.explainer == "someone" and pd_isna(pips.score) and pips.fuzzing == 0.5
    back = {c.scorer: c for c in store.classifications("gpt2", 2, 9)}
    assert back["detection"].interval == (0.4, 0.9) and back["detection"].judge == "judge-model"
    assert "1 of 2 examples answered" in back["detection"].note and "(nw.score)" in back["detection"].note
    assert store.classifications("gpt2", 2, 10) == [] and store.classifications("tiny", 2, 9) == []
    with pytest.raises(ValueError, match="side must be one of"):
        store.classifications("gpt2", 2, 9, "both")
    # a file written before these scores were kept has no such table: searched read-only, no scores
    with sqlite3.connect(store.path) as con:
        con.execute("DROP TABLE judged")
    store.close()
    old = nw.search("tangerine", model="gpt2", store=ExplanationStore(store.path))
    assert len(old) == 3 and old.detection.isna().all() and ExplanationStore(store.path).classifications("gpt2", 2, 9) == []


def pd_isna(x):
    return x is None or x != x


def test_import_explain_neurons_jsonl(tmp_path, store):
    path = tmp_path / "results.jsonl"
    lines = [NeuronSimulationResults(NeuronId(4, n), [scored(f"gooseberry topic {n}", 0.1 * n, 4, n)]).to_json()
             for n in range(3)]
    neg = scored("gooseberry negative side", 0.3, 4, 7)
    neg.side = "negative"
    lines.append(entry_line(NeuronSimulationResults(NeuronId(4, 7), [neg])))  # neuronwidget's own format
    path.write_text("\n".join(lines) + "\n{\"neuron_id\": {\"layer_in")  # the last line cut short
    assert nw.import_explanations(path, "gpt2", store=store) == 4
    df = nw.search("gooseberry", model="gpt2", store=store)
    assert sorted(df.neuron) == [0, 1, 2, 7] and set(df.source) == {"explain_neurons"}
    assert df[df.neuron == 7].side.tolist() == ["negative"] and set(df[df.neuron < 7].side) == {"positive"}


# -- bulk import from the published layout -------------------------------------------------------
def _published_file(layer, neuron):
    expl = [{"explanation": f" layer{layer} neuron{neuron} {w}", "scored_simulation": {
        "scored_sequence_simulations": [], "ev_correlation_score": 0.5, "rsquared_score": 0.1,
        "absolute_dev_explained_score": 0.1, "dataclass_name": "ScoredSimulation"}, "dataclass_name": "ScoredExplanation"}
            for w in ("kites", "lanterns")]
    return json.dumps({"neuron_id": {"layer_index": layer, "neuron_index": neuron, "dataclass_name": "NeuronId"},
                       "scored_explanations": expl, "dataclass_name": "NeuronSimulationResults"}) + "\n"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    holes = {(3, 17), (4, 59)}  # like GPT-2 XL explanations/31/1593.jsonl: no file at all
    for layer in (3, 4):
        folder = root / "gpt2_small_data" / "explanations" / str(layer)
        folder.mkdir(parents=True)
        for n in range(60):
            if (layer, n) not in holes:
                (folder / f"{n}.jsonl").write_text(_published_file(layer, n))
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(tmp_path / "cache"))
    server = PublishedServer(root).start()
    server.holes = holes
    yield server
    server.stop()


def _rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT model, layer, neuron, explanation FROM explanations").fetchall()
    finally:
        con.close()


def test_bulk_import_resumes_after_an_interruption_without_duplicates(bucket, tmp_path):
    st = ExplanationStore(tmp_path / "bulk.sqlite")
    calls = []

    def interrupt(done, total, message):
        calls.append(done)
        if done >= 50:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the import

    with pytest.raises(KeyboardInterrupt):
        bulk.import_published("gpt2", layers=[3, 4], neurons=range(60), store=st, base_url=bucket.url,
                              workers=4, progress=interrupt)
    first = _rows(st.path)
    assert 0 < len(first) < 2 * 118, "the interrupted run keeps what it finished"
    assert len(set(first)) == len(first)
    requests_before = len(bucket.requests)

    report = bulk.import_published("gpt2", layers=[3, 4], neurons=range(60), store=st, base_url=bucket.url,
                                   workers=4, progress=False)
    rows = _rows(st.path)
    assert len(rows) == len(set(rows)) == 2 * 118  # every explanation once
    assert report.complete and report.skipped > 0 and not report.failed
    assert sorted(report.missing) == sorted(bucket.holes) or set(report.missing) <= bucket.holes
    assert set(st.imported("gpt2")) == {(a, b) for a in (3, 4) for b in range(60)}
    assert {k for k, v in st.imported("gpt2").items() if v == "missing"} == bucket.holes
    assert len(bucket.requests) - requests_before <= 120 - report.skipped

    again = bulk.import_published("gpt2", layers=[3, 4], neurons=range(60), store=st, base_url=bucket.url,
                                  progress=False)
    assert again.imported == 0 and again.skipped == 120 and len(_rows(st.path)) == 2 * 118
    df = nw.search("lanterns neuron17", model="gpt2", store=st)
    assert df.iloc[0].explanation.startswith("layer4 neuron17") or df.iloc[0].explanation.startswith("layer3 neuron17")


def test_bulk_import_server_errors_are_not_fatal_and_retried(bucket, tmp_path):
    st = ExplanationStore(tmp_path / "bulk.sqlite")
    bucket.failures["/gpt2_small_data/explanations/3/5.jsonl"] = 500
    bucket.failures["/gpt2_small_data/explanations/3/6.jsonl"] = b'{"neuron_id": {"lay'
    report = bulk.import_published("gpt2", layers=[3], neurons=range(10), store=st, base_url=bucket.url,
                                   progress=False)
    assert set(report.failed) == {(3, 5), (3, 6)} and not report.complete
    assert "HTTP 500" in report.failed[(3, 5)] and "run the same command again" in report.summary()
    bucket.failures.clear()
    report = bulk.import_published("gpt2", layers=[3], neurons=range(10), store=st, base_url=bucket.url,
                                   progress=False)
    assert report.imported == 2 and report.complete and len(_rows(st.path)) == 20


def test_cli_published_all(bucket, tmp_path, monkeypatch, capsys):
    from neuronwidget import cli

    monkeypatch.setenv("NEURONWIDGET_PUBLISHED_URL", bucket.url)
    assert cli.main(["published", "--all", "--model", "gpt2", "--layers", "4", "--neurons", "50-59",
                     "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "9 neurons imported now (18 explanations" in out and "1 with no published file" in out and "4/59" in out
    assert ExplanationStore(tmp_path / "cache" / "explanations.sqlite").count("gpt2") == 18
    assert cli.main(["published", "--all", "--model", "gpt2", "--layers", "12"]) == 2
    assert "layer must be in 0..11" in capsys.readouterr().err


def test_cli_explain_records_its_explanations_in_the_store(tiny_index, tmp_path, capsys):
    from neuronwidget import cli
    from neuronwidget.explanations import read_explanations_jsonl

    out = tmp_path / "out"
    assert cli.main(["explain", "--model", "tiny", "--layers", "0", "--neurons", "0-1", "--out", str(out)]) == 0
    made = [s for r in read_explanations_jsonl(out / "explanations.jsonl") for s in r.scored_explanations]
    assert made and f"Recorded {len(made)} explanations in the searchable store" in capsys.readouterr().out
    df = nw.search(made[0].explanation, model="tiny", limit=50)  # (a rerun updates the same rows)
    assert any((r.layer, r.explanation) == (0, made[0].explanation.strip()) for r in df.itertuples())


def test_bulk_import_from_an_unreachable_server_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    from neuronwidget import cli

    monkeypatch.setenv("NEURONWIDGET_CACHE", str(tmp_path / "cache"))
    server = PublishedServer(tmp_path)  # bound, never started, closed: the port refuses connections
    server.stop()
    monkeypatch.setenv("NEURONWIDGET_PUBLISHED_URL", server.url)
    assert cli.main(["published", "--all", "--model", "gpt2-xl", "--layers", "31", "--workers", "4"]) == 1
    err = capsys.readouterr().err
    assert "all failed" in err and "could not reach" in err and "nothing was imported" in err
    assert ExplanationStore(tmp_path / "cache" / "explanations.sqlite").count() == 0
