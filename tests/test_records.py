import json
import math

import pytest

from neuronwidget import records as R


def _record(n_top=8, n_random=6):
    top = [R.ActivationRecord(tokens=["a", " b", "c"], activations=[0.0, float(i), 0.5]) for i in range(n_top)]
    rnd = [R.ActivationRecord(tokens=["x", "y"], activations=[float(-i), 0.1]) for i in range(n_random)]
    return R.NeuronRecord(
        neuron_id=R.NeuronId(3, 17),
        random_sample=rnd,
        random_sample_by_quantile=[rnd[:2], rnd[2:4]],
        quantile_boundaries=[0.5, 0.9],
        mean=0.1,
        variance=0.2,
        skewness=0.3,
        kurtosis=4.0,
        most_positive_activation_records=top,
    )


def _scored():
    sim = R.SequenceSimulation(
        tokens=["a", "b"],
        expected_activations=[1.0, 2.0],
        distribution_values=[[0, 1], [1, 2]],
        distribution_probabilities=[[0.5, 0.5], [0.2, 0.8]],
    )
    failed = R.SequenceSimulation(tokens=["c"], expected_activations=[0.0], error="unparseable output")
    seqs = [
        R.ScoredSequenceSimulation(sim, [0.5, 1.5], 1.0, 0.9, 0.8, kind="top"),
        R.ScoredSequenceSimulation(failed, [0.0], None, kind="random"),
    ]
    return R.ScoredExplanation(
        explanation="the letter b",
        scored_simulation=R.ScoredSimulation(seqs, 0.7, 0.4, 0.3, random_only_score=None, note="1 record failed"),
        neuron_id=R.NeuronId(3, 17),
        explainer="baseline",
        simulator="baseline",
    )


@pytest.mark.parametrize("make", [_record, _scored])
def test_round_trip(make):
    obj = make()
    again = type(obj).from_json(obj.to_json(extras=True))
    assert again == obj
    assert R.loads(obj.to_json(extras=True)) == obj
    # OpenAI's format keeps OpenAI's fields only
    assert type(obj).from_json(obj.to_json()).to_dict() == obj.to_dict()


def test_every_registered_type_round_trips():
    results = R.NeuronSimulationResults(neuron_id=R.NeuronId(1, 2), scored_explanations=[_scored()])
    assert R.NeuronSimulationResults.from_json(results.to_json(extras=True)) == results
    assert R.NeuronId.from_json(R.NeuronId(0, 5).to_json()) == R.NeuronId(0, 5)


def test_openai_layout_loads_unchanged():
    # The shape of OpenAI's collated-activations files: tags on every object, NaN moments allowed.
    published = {
        "dataclass_name": "NeuronRecord",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 0, "neuron_index": 1},
        "random_sample": [{"dataclass_name": "ActivationRecord", "tokens": ["x"], "activations": [0.0]}],
        "random_sample_by_quantile": None,
        "quantile_boundaries": None,
        "mean": float("nan"),
        "variance": 1.0,
        "skewness": 0.0,
        "kurtosis": 3.0,
        "most_positive_activation_records": [
            {"dataclass_name": "ActivationRecord", "tokens": [" Paris", "!"], "activations": [9.5, 0.2]}
        ],
    }
    rec = R.NeuronRecord.from_json(json.dumps(published))
    assert rec.neuron_id == R.NeuronId(0, 1)
    assert rec.max_activation == 9.5
    assert math.isnan(rec.mean)


def test_extras_are_omitted_when_unset():
    plain = R.ScoredExplanation("x", R.ScoredSimulation([]))
    d = plain.to_dict()
    assert set(d) == {"explanation", "scored_simulation", "dataclass_name"}
    assert set(d["scored_simulation"]) == {
        "scored_sequence_simulations",
        "ev_correlation_score",
        "rsquared_score",
        "absolute_dev_explained_score",
        "dataclass_name",
    }


def test_splits_follow_the_method():
    rec = _record(n_top=8, n_random=6)
    tops = rec.most_positive_activation_records
    assert rec.top_split("train") == [tops[0], tops[4]]
    assert rec.top_split("test") == [tops[3], tops[7]]
    assert rec.random_split("calibration") == [rec.random_sample[0], rec.random_sample[3]]
    assert rec.random_split("test") == [rec.random_sample[2], rec.random_sample[5]]
    with pytest.raises(ValueError, match="one of"):
        rec.top_split("holdout")


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="one activation per token"):
        R.ActivationRecord(tokens=["a", "b"], activations=[1.0])
    with pytest.raises(ValueError, match="unknown dataclass_name"):
        R.loads('{"dataclass_name": "Nope"}')
    with pytest.raises(ValueError, match="expected a NeuronRecord"):
        R.NeuronRecord.from_json(R.NeuronId(0, 0).to_json())
    with pytest.raises(ValueError, match="not valid JSON"):
        R.NeuronRecord.from_json("{nope")


# ---------- OpenAI's format, exactly ----------
# OpenAI's dataclass fields (neuron-explainer: neuron_explainer/activations/activations.py and
# neuron_explainer/explanations/explanations.py), as data: required fields, then fields with
# defaults. Their loader (fast_dataclasses.loads) drops "dataclass_name" and calls cls(**d),
# so an unknown key or a missing required one breaks it.
OPENAI_FIELDS = {
    "ActivationRecord": (["tokens", "activations"], []),
    "NeuronId": (["layer_index", "neuron_index"], []),
    "NeuronRecord": (["neuron_id"], ["random_sample", "random_sample_by_quantile", "quantile_boundaries", "mean",
                                     "variance", "skewness", "kurtosis", "most_positive_activation_records"]),
    "SequenceSimulation": (["tokens", "expected_activations", "activation_scale", "distribution_values",
                            "distribution_probabilities"], ["uncalibrated_simulation"]),
    "ScoredSequenceSimulation": (["simulation", "true_activations", "ev_correlation_score"],
                                 ["rsquared_score", "absolute_dev_explained_score"]),
    "ScoredSimulation": (["scored_sequence_simulations"],
                         ["ev_correlation_score", "rsquared_score", "absolute_dev_explained_score"]),
    "ScoredExplanation": (["explanation", "scored_simulation"], []),
    "NeuronSimulationResults": (["neuron_id", "scored_explanations"], []),
}


def openai_loads(text):
    """OpenAI's loader rebuilt from their field lists: tagged dicts -> cls(**fields)."""
    import dataclasses

    classes = {
        name: dataclasses.make_dataclass(name, [(f, object) for f in req] + [(f, object, None) for f in opt])
        for name, (req, opt) in OPENAI_FIELDS.items()
    }

    def hook(d):
        if "dataclass_name" not in d:
            return d
        fields = {k: v for k, v in d.items() if k != "dataclass_name"}
        return classes[d["dataclass_name"]](**fields)  # TypeError on an unknown or missing field

    return json.loads(text, object_hook=hook)


def _tagged_dicts(value):
    if isinstance(value, list):
        for v in value:
            yield from _tagged_dicts(v)
    elif isinstance(value, dict):
        if "dataclass_name" in value:
            yield value
        for v in value.values():
            yield from _tagged_dicts(v)


def _signed_record():
    rec = _record()
    rec.most_negative_activation_records = [R.ActivationRecord(["n", "m"], [-3.0, -1.0])]
    return rec


def _full_results():
    scored = _scored()
    scored.side = "negative"
    sim = scored.scored_simulation.scored_sequence_simulations[0].simulation
    scored.scored_simulation.scored_sequence_simulations[0].simulation = R.SequenceSimulation(
        sim.tokens, [2.0, 4.0], "neuron_activations", sim.distribution_values, sim.distribution_probabilities,
        uncalibrated_simulation=sim)
    scored.scored_simulation.scored_sequence_simulations[1].simulation.retryable = True
    scored.scored_simulation.top_only_score = 0.5
    scored.scored_simulation.ev_correlation_interval = [0.55, 0.8]
    scored.cost = {"calls": 3, "cached": 1, "prompt_tokens": 1200, "completion_tokens": 40}
    return R.NeuronSimulationResults(neuron_id=R.NeuronId(3, 17), scored_explanations=[scored])


def _negative_side():
    return _signed_record().for_side("negative")


@pytest.mark.parametrize("make", [_signed_record, _negative_side, _scored, _full_results])
def test_openai_format_holds_exactly_openai_fields(make):
    obj = make()
    data = obj.to_dict()
    tagged = list(_tagged_dicts(data))
    assert tagged and data["dataclass_name"] == type(obj).__name__
    for d in tagged:
        required, optional = OPENAI_FIELDS[d["dataclass_name"]]
        assert set(d) - {"dataclass_name"} == set(required) | set(optional), d["dataclass_name"]
    loaded = openai_loads(obj.to_json())  # what their loader does, field for field
    assert type(loaded).__name__ == type(obj).__name__
    # and our reader gets OpenAI's fields back unchanged
    assert type(obj).from_json(obj.to_json()).to_dict() == data


@pytest.mark.parametrize("make", [_signed_record, _negative_side, _scored, _full_results])
def test_our_extras_round_trip_through_our_format(make):
    obj = make()
    again = type(obj).from_json(obj.to_json(extras=True))
    assert again == obj
    assert R.loads(obj.to_json(extras=True)) == obj
    with pytest.raises(TypeError):  # our format is not OpenAI's: their loader rejects the extras
        openai_loads(obj.to_json(extras=True))


def test_side_must_be_a_known_side():
    with pytest.raises(ValueError, match="side must be one of"):
        R.ScoredExplanation("x", R.ScoredSimulation([]), side="both")


def test_interval_and_format_score():
    scored = _full_results().scored_explanations[0]
    assert scored.interval == (0.55, 0.8)
    assert scored.formatted() == "0.70 (0.55\u20130.80)"
    assert R.ScoredExplanation.from_json(scored.to_json(extras=True)).interval == (0.55, 0.8)
    assert "ev_correlation_interval" not in scored.scored_simulation.to_dict()  # OpenAI's format: theirs only
    assert _scored().interval is None
    assert R.format_score(None, (0.1, 0.2)) == "undefined" and R.format_score(float("nan")) == "undefined"
    assert R.format_score(0.456) == "0.46" and R.format_score(-0.1, [-0.3, 0.05]) == "-0.10 (-0.30\u20130.05)"
