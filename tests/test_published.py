"""Published GPT-2 data: fetched from a real local HTTP server in the bucket's layout."""

import json
import math

import pytest

from neuronwidget.activations import published as P
from neuronwidget.records import NeuronRecord, NeuronSimulationResults
from servers.published_server import PublishedServer

# Shapes as in OpenAI's files: dataclass_name tags, NaN moments written as bare NaN,
# quantile samples, and fields our types do not model (they are ignored).
_TOKENS = [" The", " Eiffel", " Tower", " is", " in", " Paris", "."]


def _act(values):
    return {"tokens": _TOKENS, "activations": values, "dataclass_name": "ActivationRecord"}


def _record_json(layer, neuron):
    top = [_act([0.0, 0.1, 0.2, 0.0, 0.3, 3.5 - i * 0.1, 0.0]) for i in range(8)]
    rnd = [_act([0.0, -0.1, 0.0, 0.05, 0.0, 0.0, -0.02]) for _ in range(6)]
    rec = {
        "neuron_id": {"layer_index": layer, "neuron_index": neuron, "dataclass_name": "NeuronId"},
        "random_sample": rnd,
        "random_sample_by_quantile": [rnd[:3], rnd[3:]],
        "quantile_boundaries": [0.0, 0.02, 3.5],
        "mean": math.nan,
        "variance": math.nan,
        "skewness": math.nan,
        "kurtosis": math.nan,
        "most_positive_activation_records": top,
        "dataclass_name": "NeuronRecord",
    }
    return json.dumps(rec)  # json writes NaN as a bare NaN, as their files do


def _explanations_json(layer, neuron):
    sim = {
        "tokens": _TOKENS,
        "expected_activations": [0.0, 0.0, 0.0, 0.0, 0.0, 9.1, 0.0],
        "activation_scale": "simulated_normalized_activations",
        "distribution_values": [[0, 10]] * 7,
        "distribution_probabilities": [[1.0, 0.0]] * 6 + [[0.1, 0.9]],
        "uncalibrated_simulation": None,
        "dataclass_name": "SequenceSimulation",
    }
    seq = {
        "simulation": sim,
        "true_activations": [0.0, 0.1, 0.2, 0.0, 0.3, 3.5, 0.0],
        "ev_correlation_score": 0.93,
        "rsquared_score": 0.5,
        "absolute_dev_explained_score": 0.4,
        "dataclass_name": "ScoredSequenceSimulation",
    }
    scored = {
        "scored_sequence_simulations": [seq],
        "ev_correlation_score": 0.81,
        "rsquared_score": 0.6,
        "absolute_dev_explained_score": 0.5,
        "dataclass_name": "ScoredSimulation",
    }
    out = {
        "neuron_id": {"layer_index": layer, "neuron_index": neuron, "dataclass_name": "NeuronId"},
        "scored_explanations": [
            {"explanation": " the city Paris", "scored_simulation": scored, "dataclass_name": "ScoredExplanation"}
        ],
        "dataclass_name": "NeuronSimulationResults",
    }
    return json.dumps(out) + "\n"


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    for folder, layer, neuron in (("gpt2_small_data", 5, 131), ("data", 47, 6399)):
        (root / folder / "explanations" / str(layer)).mkdir(parents=True)
        (root / folder / "collated-activations" / str(layer)).mkdir(parents=True)
        (root / folder / "explanations" / str(layer) / f"{neuron}.jsonl").write_text(_explanations_json(layer, neuron))
        (root / folder / "collated-activations" / str(layer) / f"{neuron}.json").write_text(_record_json(layer, neuron))
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(tmp_path / "cache"))
    server = PublishedServer(root).start()
    yield server
    server.stop()


def _cached_files(tmp_path):
    return sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_fetch_then_cache_hit_without_server(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv(P.ENV_BASE_URL, bucket.url)
    res = P.published_explanations(5, 131)
    assert isinstance(res, NeuronSimulationResults)
    assert res.neuron_id.layer_index == 5 and res.neuron_id.neuron_index == 131
    best = res.scored_explanations[0]
    assert best.explanation == " the city Paris" and best.score == pytest.approx(0.81)
    assert best.scored_simulation.scored_sequence_simulations[0].simulation.expected_activations[5] == 9.1

    rec = P.published_record(5, 131, model="gpt2-small")
    assert isinstance(rec, NeuronRecord)
    assert math.isnan(rec.mean) and math.isnan(rec.kurtosis)
    assert len(rec.random_sample_by_quantile) == 2 and rec.quantile_boundaries[-1] == 3.5
    assert rec.max_activation == pytest.approx(3.5)
    assert len(rec.top_split("train")) == 2
    assert bucket.requests == ["/gpt2_small_data/explanations/5/131.jsonl",
                               "/gpt2_small_data/collated-activations/5/131.json"]

    bucket.stop()  # nothing answers any more: both come from the cache
    again = P.published_explanations(5, 131)
    assert again.scored_explanations[0].explanation == " the city Paris"
    assert P.published_record(5, 131).most_positive_activation_records[0].tokens[5] == " Paris"
    assert len(_cached_files(tmp_path)) == 2


def test_gpt2_xl_layout_and_base_url_argument(bucket):
    res = P.published_explanations(47, 6399, model="gpt2-xl", base_url=bucket.url + "/")
    assert res.neuron_id.neuron_index == 6399
    rec = P.published_record(47, 6399, model="gpt2-xl", base_url=bucket.url)
    assert rec.neuron_id.layer_index == 47
    assert bucket.requests[0] == "/data/explanations/47/6399.jsonl"


def test_404_means_no_explanation(bucket, tmp_path):
    assert P.published_explanations(0, 0, base_url=bucket.url) is None
    with pytest.raises(P.PublishedDataError, match="no activation record"):
        P.published_record(0, 0, base_url=bucket.url)
    bucket.stop()  # the 404 is remembered: offline, still "none published", not an error
    assert P.published_explanations(0, 0, base_url=bucket.url) is None


@pytest.mark.parametrize("failure, message", [(500, "HTTP 500"), (b'{"neuron_id": {"layer_ind', "valid")])
def test_server_error_or_truncated_json_is_clear_and_not_cached(bucket, tmp_path, failure, message):
    bucket.failures["/gpt2_small_data/explanations/5/131.jsonl"] = failure
    with pytest.raises(P.PublishedDataError, match=message):
        P.published_explanations(5, 131, base_url=bucket.url)
    assert _cached_files(tmp_path) == []
    del bucket.failures["/gpt2_small_data/explanations/5/131.jsonl"]  # server recovers: fetched fine
    assert P.published_explanations(5, 131, base_url=bucket.url).scored_explanations


def test_wrong_type_is_rejected(bucket, tmp_path):
    bucket.failures["/gpt2_small_data/collated-activations/5/131.json"] = _explanations_json(5, 131).encode()
    with pytest.raises(P.PublishedDataError, match="expected a NeuronRecord"):
        P.published_record(5, 131, base_url=bucket.url)
    assert _cached_files(tmp_path) == []


def test_unreachable_server_gives_offline_message(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONWIDGET_CACHE", str(tmp_path / "cache"))
    server = PublishedServer(tmp_path)  # bound, never started, closed: the port refuses connections
    url = server.url
    server.stop()
    with pytest.raises(P.PublishedDataUnavailable) as info:
        P.published_explanations(5, 131, base_url=url, timeout=2)
    text = str(info.value)
    assert "could not reach" in text and url in text
    assert "OpenAI's public bucket" in text and "cache" in text


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer=12, neuron=0), "layer must be in 0..11 for gpt2, got 12"),
    (dict(layer=0, neuron=3072), "neuron must be in 0..3071 for gpt2, got 3072"),
    (dict(layer=48, neuron=0, model="gpt2-xl"), "layer must be in 0..47 for gpt2-xl"),
    (dict(layer=0, neuron=6400, model="gpt2-xl"), "neuron must be in 0..6399"),
    (dict(layer=-1, neuron=0), "layer must be in 0..11"),
    (dict(layer="5", neuron=0), "layer must be an int"),
    (dict(layer=0, neuron=0, model="gpt2-medium"), "gpt2, gpt2-small, gpt2-xl"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        P.published_explanations(**kwargs, base_url="http://127.0.0.1:9")


def test_cli_prints_and_caches_published_data(bucket, tmp_path, monkeypatch, capsys):
    from neuronwidget import cli

    monkeypatch.setenv(P.ENV_BASE_URL, bucket.url)
    assert cli.main(["published", "--layer", "5", "--neurons", "130-131", "--records"]) == 0
    out = capsys.readouterr().out
    assert "layer 5 neuron 130: no published explanation" in out
    assert "layer 5 neuron 130: OpenAI published no activation record" in out
    assert "layer 5 neuron 131: activation record cached (8 top, 6 random)" in out
    assert "layer 5 neuron 131: 0.81  'the city Paris'" in out
    bucket.stop()  # fetched once: available offline
    assert P.published_record(5, 131).neuron_id.neuron_index == 131
    assert cli.main(["published", "--layer", "5", "--neurons", "131"]) == 0
    assert "0.81" in capsys.readouterr().out
    assert cli.main(["published", "--layer", "5", "--neurons", "7"]) == 1
    assert "could not reach" in capsys.readouterr().err
    assert cli.main(["published", "--layer", "12", "--neurons", "7"]) == 2
    assert "layer must be in 0..11 for gpt2" in capsys.readouterr().err


def test_neuronview_from_published_records_alone(bucket, monkeypatch):
    from neuronwidget.widgets import NeuronView
    from neuronwidget.widgets import present as pr

    monkeypatch.setenv(P.ENV_BASE_URL, bucket.url)
    view = NeuronView.published(5, 131, model="gpt2")
    assert view._engine is None  # nothing ran a model
    data = view._data
    assert data["header"]["model"] == "gpt2" and "published" in data["header"]["meta"]
    assert data["top"][0]["text"] == [pr.display_token(t) for t in _TOKENS]
    # the published explanation is shown as a card with its published score
    assert data["cards"][0]["explanation"] == " the city Paris"
    assert data["cards"][0]["score"] == pytest.approx(0.81)
    # the published values, as the view prints them
    assert pr.columns(data["top"][0])[0] == [pr.format_activation(v) for v in [0.0, 0.1, 0.2, 0.0, 0.3, 3.5, 0.0]]
    assert sum(data["hist"]["counts"]) == 6 * len(_TOKENS)  # the random sample's tokens
    assert "random sample" in data["hist"]["caption"]
    html = view._repr_html_()
    assert "the city Paris" in html and "Eiffel" in html
