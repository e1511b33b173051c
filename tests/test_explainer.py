"""Explainer: prompt format, answer parsing, and the offline baseline end to end."""

import pytest

import neuronwidget as nw
from neuronwidget.api import explain, score
from neuronwidget.explanations import BaselineBackend
from neuronwidget.explanations.explainer import parse_explanation
from neuronwidget.explanations.prompts import FRAMING, explainer_messages, format_records, scale
from neuronwidget.records import ActivationRecord

from explain_fixtures import capital_neuron


def test_scale_follows_the_formula():
    assert scale([-1.0, 0.0, 0.25, 0.99, 1.0, 2.0], 1.0) == [0, 0, 2, 9, 10, 10]
    assert scale([1.0, 2.0], 0.0) == [0, 0]


def test_prompt_has_tab_lines_and_repeats_sparse_records_without_zeros():
    dense = format_records([[("a", 3), ("b", 5)]])
    assert dense == "<start>\na\t3\nb\t5\n<end>\n"
    sparse = format_records([[("a", 0)] * 9 + [("b", 7)]])
    assert sparse.count("<start>") == 2 and sparse.endswith("<start>\nb\t7\n<end>\n")


def test_explainer_messages_use_five_train_records():
    record = capital_neuron()
    msgs = explainer_messages(record.top_split("train")[:5], record.max_activation)
    last = msgs[-1]["content"]
    assert last.count("<start>") in (5, 10) and FRAMING in last
    assert msgs[0]["role"] == "system" and msgs[-2]["role"] == "assistant"


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("The main thing this neuron does is find names of capital cities.", "names of capital cities"),
        (" capital cities.\nMore text", "capital cities"),
        ('"words about rivers"', "words about rivers"),
        ("Explanation of neuron 4: the main thing this neuron does is find dates.", "dates"),
        ("", None),
        ("   \n ", None),
        ("I'm sorry, but I can't help with that.", None),
        ("...", None),
    ],
)
def test_parse_explanation(answer, expected):
    assert parse_explanation(answer) == expected


def test_baseline_end_to_end_offline(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("NEURONWIDGET_BASE_URL", raising=False)
    record = capital_neuron()
    explanations = nw.explain(record, "token-lookup")  # the paper's baseline, by name
    assert len(explanations) == 1 and explanations[0].startswith("the tokens ")
    assert {"paris", "london", "rome", "berlin"} & set(explanations[0].replace('"', "").replace(",", "").split())
    scored = nw.score(record, explanations[0], "token-lookup")
    assert scored.simulator == "token lookup (the paper's baseline, no LLM)"
    assert scored.score is not None and scored.score > 0.9
    sims = scored.scored_simulation.scored_sequence_simulations
    assert [s.kind for s in sims] == ["top"] * 5 + ["random"] * 3  # 9 random records -> 3 valid
    # any text works offline, also with the default (rules) simulator, which reads free text as
    # the token lookup does: a word the explanation mentions, or one it does not
    assert nw.score(record, "the word Paris").score > 0
    default = nw.explain(record)[0]  # the offline default: rules
    assert nw.score(record, default).simulator.startswith("rules") and nw.score(record, default).score > 0.9
    unrelated = nw.score(record, "names of rivers")
    assert unrelated.score is None and "same value" in unrelated.scored_simulation.note


def test_baseline_lookup_never_sees_scoring_records():
    from neuronwidget.explanations.backends.baseline import lookup_table

    record = capital_neuron()
    record.top_split("valid")[0].tokens[0] = " Zanzibar"  # only in a scoring record
    record.most_positive_activation_records[2].tokens[0] = " Zanzibar"  # a valid-split record
    assert "zanzibar" not in lookup_table(record)


def test_bad_input():
    with pytest.raises(ValueError, match="NeuronRecord"):
        explain(ActivationRecord(["a"], [1.0]))
    with pytest.raises(ValueError, match="non-empty"):
        score(capital_neuron(), "  ", BaselineBackend())
    with pytest.raises(ValueError, match=r"Explainer protocol \(cheap, explain, name; int lacks cheap, explain, name\)"):
        explain(capital_neuron(), backend=42)


def test_calibrated_scoring_maps_predictions_to_the_neuron_scale():
    record = capital_neuron()
    plain = score(record, "Paris London Rome Berlin", BaselineBackend())
    cal = score(record, "Paris London Rome Berlin", BaselineBackend(), calibrated=True)
    assert cal.score == pytest.approx(plain.score)  # a linear map leaves r unchanged
    sim = cal.scored_simulation.scored_sequence_simulations[0].simulation
    assert sim.activation_scale == "neuron_activations" and sim.uncalibrated_simulation is not None
    # on the neuron's own scale r² becomes meaningful (0-10 predictions vs ~5-6 activations are not)
    assert cal.scored_simulation.rsquared_score > plain.scored_simulation.rsquared_score
    assert cal.scored_simulation.rsquared_score > 0.9


class KeywordBackend:
    """A backend of our own, defined here: one class, both roles, no edit anywhere else."""

    name = "keyword rule"
    cheap = True
    simulator_name = "keyword rule (exact token match)"

    def __init__(self):
        self.simulated = 0

    def explain(self, record, *, n=1, cancel=None):
        best = max(((a, t) for r in record.top_split("train") for t, a in zip(r.tokens, r.activations)))
        return [f'the word "{best[1].strip()}"']

    def simulate(self, explanation, token_lists, *, max_activation, lookup=None, progress=None, cancel=None):
        from neuronwidget.records import SequenceSimulation

        word = explanation.split('"')[1]
        self.simulated += len(token_lists)
        return [SequenceSimulation(list(t), [10.0 if x.strip() == word else 0.0 for x in t]) for t in token_lists]


def test_a_new_backend_is_one_class(tmp_path):
    from neuronwidget.api import explain_neurons
    from neuronwidget.explanations import Explainer, Simulator

    record = capital_neuron()
    mine = KeywordBackend()
    assert isinstance(mine, Explainer) and isinstance(mine, Simulator)
    explanation = explain(record, mine)
    assert len(explanation) == 1 and explanation[0].startswith('the word "')
    scored = score(record, explanation[0], mine)
    assert mine.simulated == 8 and scored.simulator == "keyword rule (exact token match)"
    # one capital city out of four is found, so the score is positive but far from perfect
    assert 0.2 < scored.score < 0.9
    # the configured backend, the batch runner and the CLI's notion of cheap all take it as it is
    nw.configure(explainer=mine, simulator=mine)
    try:
        assert nw.explain(record) == explanation
        class Store:
            def record(self, layer, neuron):
                return capital_neuron(layer, neuron)
        df = explain_neurons(Store(), 0, [1, 2], out=tmp_path / "run.jsonl", progress=False)
        assert df.explainer.tolist() == ["keyword rule"] * 2 and df.simulator.tolist() == [scored.simulator] * 2
    finally:
        nw.configure(explainer=None, simulator=None)


def test_an_incomplete_backend_is_refused_with_what_it_lacks():
    class ExplainsOnly:
        name, cheap = "half", True

        def explain(self, record, *, n=1, cancel=None):
            return ["x"]

    assert explain(capital_neuron(), ExplainsOnly()) == ["x"]
    with pytest.raises(ValueError, match="Simulator protocol .*ExplainsOnly lacks simulate, simulator_name"):
        score(capital_neuron(), "x", ExplainsOnly())


def test_either_side_of_a_signed_neuron():
    from explain_fixtures import ANIMALS, CAPITALS, signed_neuron

    record = signed_neuron()
    negative = record.for_side("negative")
    pos, neg = explain(record, BaselineBackend())[0], explain(negative, BaselineBackend())[0]
    named = lambda text, words: {w.strip().lower() for w in words if f'"{w.strip().lower()}"' in text}  # noqa: E731
    assert named(pos, CAPITALS) and not named(pos, ANIMALS)
    assert named(neg, ANIMALS) == {"cat", "walked"} and not named(neg, CAPITALS)
    scored = score(negative, neg, BaselineBackend())
    assert scored.side == "negative" and scored.score > 0.5
    assert score(record, pos, BaselineBackend()).side == "positive"
    # each side's explanation explains its own side, not the other
    assert (score(record, neg, BaselineBackend()).score or 0) < 0.2
    assert (score(negative, pos, BaselineBackend()).score or 0) < 0.2
    # the side is ours: kept in our format, left out of OpenAI's
    assert "side" not in scored.to_dict() and scored.to_dict(extras=True)["side"] == "negative"
