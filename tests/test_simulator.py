"""The all-at-once logprob simulator on real in-process models: a tiny random GPT-2 and
SmolLM2-135M-Instruct from its GGUF. Plus JSON answer parsing."""

import threading

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from neuronwidget.api import score, simulate
from neuronwidget.explanations import Cancelled, LocalBackend
from neuronwidget.explanations.simulator import label_token_ids, parse_json_values, simulate_all_at_once

from explain_fixtures import capital_neuron

TOKENS = [[" The", " capital", " is", " Paris", "."], [" We", " walked", "\t", " to", " Rome", "\n"]]


@pytest.fixture(scope="module")
def tiny():
    """A small GPT-2 with random weights and the package's real BPE tokenizer (offline)."""
    from importlib import resources

    path = resources.files("neuronwidget") / "data" / "tiny_tokenizer.json"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_positions=2048, n_embd=64, n_layer=2, n_head=2)
    return LocalBackend(model=GPT2LMHeadModel(config).eval(), tokenizer=tok, name="tiny random GPT-2")


def test_probabilities_over_labels_sum_to_one(tiny):
    labels = label_token_ids(tiny.tokenizer)
    assert sorted(labels) == list(range(11))  # "10" is one token in this tokenizer
    sims = simulate("names of capital cities", TOKENS, tiny, max_activation=1.0)
    for sim, tokens in zip(sims, TOKENS):
        assert sim.tokens == tokens and len(sim.expected_activations) == len(tokens)
        for values, probs, ev in zip(sim.distribution_values, sim.distribution_probabilities, sim.expected_activations):
            assert values == [float(v) for v in range(11)]
            assert sum(probs) == pytest.approx(1.0, abs=1e-9) and all(p >= 0 for p in probs)
            assert ev == pytest.approx(sum(v * p for v, p in zip(values, probs)))
            assert 0 <= ev <= 10


def count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_one_forward_pass_per_record_and_prefix_reuse_matches(tiny):
    calls, handle = count_forwards(tiny.model)
    try:
        reused = simulate_all_at_once(tiny, "names of capital cities", TOKENS, reuse_prefix=True)
        assert len(calls) == 1 + len(TOKENS)  # the shared prefix once, then one pass per record
        calls.clear()
        fresh = simulate_all_at_once(tiny, "names of capital cities", TOKENS, reuse_prefix=False)
        assert len(calls) == len(TOKENS)
    finally:
        handle.remove()
    for a, b in zip(reused, fresh):
        assert a.expected_activations == pytest.approx(b.expected_activations, abs=1e-5)
        for pa, pb in zip(a.distribution_probabilities, b.distribution_probabilities):
            assert pa == pytest.approx(pb, abs=1e-5)
    # a different explanation changes the predictions (the prompt really is read)
    other = simulate_all_at_once(tiny, "punctuation marks", TOKENS)
    assert other[0].expected_activations != pytest.approx(reused[0].expected_activations, abs=1e-6)


def test_score_and_cancel_on_the_local_model(tiny):
    record = capital_neuron(length=8)
    scored = score(record, "capital cities", tiny)
    assert scored.simulator == "local: tiny random GPT-2 (all-at-once logprobs)"
    seqs = scored.scored_simulation.scored_sequence_simulations
    scoring_records = record.top_split("valid")[:5] + record.random_split("valid")[:5]
    assert [s.kind for s in seqs] == ["top"] * 5 + ["random"] * 3
    assert [s.simulation.tokens for s in seqs] == [r.tokens for r in scoring_records]
    assert [s.true_activations for s in seqs] == [r.activations for r in scoring_records]
    # the score is Pearson r pooled over every token of every record (random weights still
    # give varied predictions, so it is defined)
    real = np.concatenate([s.true_activations for s in seqs])
    pred = np.concatenate([s.simulation.expected_activations for s in seqs])
    assert len(pred) == len(real) == 8 * 8
    assert scored.score == pytest.approx(float(np.corrcoef(real, pred)[0, 1]), abs=1e-9)
    seen = []
    score(record, "capital cities", tiny, progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1] == (8, 8)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        score(record, "capital cities", tiny, cancel=stop)


def test_too_long_prompt_is_a_clear_error():
    from importlib import resources

    tok = PreTrainedTokenizerFast(tokenizer_file=str(resources.files("neuronwidget") / "data" / "tiny_tokenizer.json"))
    small = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2))
    backend = LocalBackend(model=small, tokenizer=tok, name="short")
    with pytest.raises(ValueError, match="takes at most 64"):
        simulate("x", TOKENS, backend, max_activation=1.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[[0, 3], [2, 10]]", [3.0, 0.0, 10.0]),
        ("```json\n[[1, 4]]\n```", [0.0, 4.0, 0.0]),
        ("Sure: [0, 3], [2, 12]", [3.0, 0.0, 10.0]),
        ("[1, 2, 3]", [1.0, 2.0, 3.0]),
    ],
)
def test_parse_json_values(text, expected):
    assert parse_json_values(text, 3) == expected


@pytest.mark.parametrize("text", ["", "high everywhere", "[[5, 1]]", '[["a", 1]]', "[[0, null]]", "[1, 2]"])
def test_parse_json_values_rejects(text):
    with pytest.raises(ValueError):
        parse_json_values(text, 3)


@pytest.mark.slow
def test_smollm2_from_gguf_simulates_two_records():
    from servers.smollm2 import smollm2_local

    backend = smollm2_local()
    labels = label_token_ids(backend.tokenizer)
    assert sorted(labels) == list(range(10))  # digit-by-digit tokenizer: "10" is two tokens
    record = capital_neuron(length=10)
    calls, handle = count_forwards(backend.model)
    try:
        sims = simulate("names of capital cities", record.top_split("valid")[:2], backend, max_activation=1.0)
    finally:
        handle.remove()
    assert len(calls) == 3
    for sim in sims:
        assert len(sim.expected_activations) == 10 and not sim.failed
        assert all(sum(p) == pytest.approx(1.0, abs=1e-9) for p in sim.distribution_probabilities)


@pytest.mark.slow
def test_smollm2_local_explains():
    from neuronwidget.api import explain
    from neuronwidget.explanations import ExplanationError
    from servers.smollm2 import smollm2_local

    from neuronwidget.explanations.explainer import parse_explanation
    from neuronwidget.explanations.prompts import explainer_messages

    backend = smollm2_local()  # greedy (temperature 0): the answer is deterministic
    backend.max_tokens = 24
    record = capital_neuron(length=10)
    raw = backend.chat(explainer_messages(record.top_split("train")[:5], record.max_activation))[0]
    expected = parse_explanation(raw)
    assert expected, f"SmolLM2 gave no usable explanation: {raw!r}"
    assert explain(record, backend) == [expected]
