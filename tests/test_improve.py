"""Best-of-n and revision: kept by held-in score, never reading the records that score for good."""

from __future__ import annotations

import pytest

from neuronwidget.explanations import explain
from neuronwidget.explanations.backends import BaselineBackend, ChatExplainer
from neuronwidget.explanations.improve import held_in_records, improve_explanation
from neuronwidget.records import ActivationRecord, NeuronId, NeuronRecord

FILLER = ["the", "a", "of", "and", "to", "in"]


def _window(i: int, split: str, hot: dict[str, float]) -> ActivationRecord:
    """A 12-token window; tokens named after their split (valid/test ones are recognisable)."""
    tokens, acts = [], []
    for j in range(12):
        if j % 4 == 1:
            word = ["gamma", "alpha", "gamma"][(i + j) % 3]
        else:
            word = FILLER[(i + j) % len(FILLER)]
        if split in ("valid", "test") and j == 0:
            word = f"SECRET{split}{i}"
        tokens.append(word)
        acts.append(hot.get(word, 0.0))
    return ActivationRecord(tokens, acts)


def make_record() -> NeuronRecord:
    hot = {"gamma": 8.0, "alpha": 2.0}
    top_splits = ["train", "calibration", "valid", "test"]
    rand_splits = ["calibration", "valid", "test"]
    top = [_window(i, top_splits[i % 4], hot) for i in range(20)]
    rand = [_window(100 + i, rand_splits[i % 3], {"gamma": 1.0}) for i in range(15)]
    return NeuronRecord(neuron_id=NeuronId(3, 7), random_sample=rand, most_positive_activation_records=top)


class Scripted(ChatExplainer):
    """A chat explainer with scripted answers that keeps every message it was shown."""

    name = "scripted"

    def __init__(self, proposals: list[str], revision: str):
        self.proposals, self.revision = proposals, revision
        self.shown: list[str] = []

    def chat(self, messages, *, n=1):
        self.shown.extend(m["content"] for m in messages)
        if "Current description" in messages[-1]["content"]:
            return [self.revision]
        return self.proposals[:n]


class RecordingSimulator(BaselineBackend):
    """The token-lookup simulator, keeping every token list it simulated."""

    def __init__(self):
        self.seen: list[list[str]] = []

    def simulate(self, explanation, token_lists, **kwargs):
        self.seen.extend(list(t) for t in token_lists)
        return super().simulate(explanation, token_lists, **kwargs)


def _secret_free(texts) -> bool:
    return not any("SECRET" in t for t in texts)


def test_best_of_keeps_the_best_held_in_candidate_and_revision_only_when_better():
    record = make_record()
    explainer = Scripted(['alpha', 'beta', 'alpha and the'], revision='gamma')
    sim = RecordingSimulator()
    found = improve_explanation(record, explainer, sim, best_of=3, revise=True)
    scores = {c.explanation: c.held_in_score for c in found.candidates}
    assert scores['beta'] is None  # never seen: a constant simulation, undefined, never chosen over a defined one
    assert scores['gamma'] > scores['alpha']
    assert found.explanation == 'gamma' and found.revised
    assert found.held_in_score == scores['gamma']
    assert found.ranked()[0] == 'gamma' and set(found.ranked()) == set(scores)
    assert found.cost["explainer_calls"] == 2 and found.cost["simulator_calls"] == 4 and found.cost["calls"] is None  # the scripted explainer counts nothing
    # the revision prompt showed the held-in records it got most wrong, with real and predicted values
    revision_prompt = explainer.shown[-1]
    assert "Current description" in revision_prompt and "alpha" in revision_prompt


def test_a_worse_revision_is_not_kept():
    record = make_record()
    found = improve_explanation(record, Scripted(['gamma'], revision='alpha'), RecordingSimulator(),
                                best_of=1, revise=True)
    assert found.explanation == 'gamma' and not found.revised
    assert [c.explanation for c in found.candidates] == ['gamma', 'alpha']


def test_best_of_and_revision_never_read_the_scoring_records():
    record = make_record()
    explainer = Scripted(['alpha', 'gamma'], revision='gamma and alpha')
    sim = RecordingSimulator()
    improve_explanation(record, explainer, sim, best_of=2, revise=True)
    assert explainer.shown and sim.seen
    assert _secret_free(explainer.shown)
    assert all(_secret_free(tokens) for tokens in sim.seen)
    held, _ = held_in_records(record)
    held_tokens = [list(r.tokens) for r in held]
    assert all(tokens in held_tokens for tokens in sim.seen)


def test_explain_best_of_returns_the_kept_one_first():
    record = make_record()
    out = explain(record, Scripted(['alpha', 'gamma'], revision='alpha'), n=5, best_of=2,
                  simulator=RecordingSimulator())
    assert out[0] == 'gamma' and set(out) == {'alpha', 'gamma'}


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "3"])
def test_best_of_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="best_of must be an integer >= 1"):
        improve_explanation(make_record(), Scripted(['"a"'], '"b"'), BaselineBackend(), best_of=bad)


def test_revise_needs_an_explainer_that_can():
    class NoRevise:
        name, cheap = "plain", True

        def explain(self, record, *, n=1, cancel=None):
            return ['gamma']

    with pytest.raises(ValueError, match="cannot revise"):
        improve_explanation(make_record(), NoRevise(), BaselineBackend(), revise=True)
    found = improve_explanation(make_record(), NoRevise(), BaselineBackend(), best_of=1, revise=False)
    assert found.explanation == 'gamma' and found.cost["prompt_tokens"] == 0


def test_best_of_and_revision_over_http_with_an_openai_backend(tmp_path):
    """The real OpenAI client against a server on 127.0.0.1: one request per candidate, one for
    the revision; the cost is the server's usage; the server never saw a scoring record."""
    from servers.fault_server import FaultServer

    from neuronwidget.explanations import OpenAIBackend

    answers = iter(["alpha.", "the main thing this neuron does is find beta", "alpha words"])

    def reply(body):
        last = body["messages"][-1]["content"]
        return "gamma" if "Current description" in last else next(answers)

    with FaultServer(reply=reply) as server:
        explainer = OpenAIBackend("m", base_url=server.base_url, api_key="sk-test", cache_dir=tmp_path)
        found = improve_explanation(make_record(), explainer, RecordingSimulator(), best_of=3, revise=True)
        shown = [m["content"] for body in server.bodies for m in body["messages"]]
    assert server.requests == 4 and _secret_free(shown)
    assert [c.explanation for c in found.candidates] == ["alpha", "beta", "alpha words", "gamma"]
    assert found.explanation == "gamma" and found.revised
    # the fault server bills 100 prompt + 5 completion tokens per request
    assert found.cost == {"explainer_calls": 2, "simulator_calls": 4, "calls": 4, "cached": 0,
                          "prompt_tokens": 400, "completion_tokens": 20}


@pytest.mark.slow
def test_best_of_and_revision_with_a_local_model():
    """SmolLM2-135M in this kernel writes candidates and a revision (a weak explainer: we check
    the mechanics and the accounting, not the wording)."""
    from servers.smollm2 import smollm2_local

    local = smollm2_local()
    found = improve_explanation(make_record(), local, RecordingSimulator(), best_of=2, revise=True)
    assert 1 <= len(found.candidates) <= 3 and found.explanation in [c.explanation for c in found.candidates]
    assert found.cost["explainer_calls"] == 2
    assert found.cost["calls"] >= 2 and found.cost["prompt_tokens"] > 0 and found.cost["completion_tokens"] > 0
