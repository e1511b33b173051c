"""The all-at-once logprob simulator on real in-process models: a tiny random GPT-2 and
SmolLM2-135M-Instruct from its GGUF. Plus JSON answer parsing."""

import threading

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from neuronwidget.api import score, simulate
from neuronwidget.explanations import Cancelled, LocalBackend
from neuronwidget.explanations.backends.local import label_token_ids
from neuronwidget.explanations.prompts import parse_json_values

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
    """Calls of ``model``'s forward, each as the number of input tokens per row."""
    calls = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        calls.append(ids.shape[-1])

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls, handle


def assert_same_predictions(a, b, tol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.tokens == y.tokens and not x.failed and not y.failed
        assert x.expected_activations == pytest.approx(y.expected_activations, abs=tol)
        assert x.distribution_values == y.distribution_values
        for px, py in zip(x.distribution_probabilities, y.distribution_probabilities):
            assert px == pytest.approx(py, abs=tol)


MORE = TOKENS + [[" Berlin", ",", " Rome", " and", " Paris", " are", " capitals", "."], [" x"], []]


def test_batched_one_by_one_and_no_prefix_reuse_agree(tiny):
    tiny.simulate_all_at_once("anything", [["a"]])  # the few-shot part's cache, kept by the backend
    base_calls, h1 = count_forwards(tiny.model.base_model)
    full_calls, h2 = count_forwards(tiny.model)
    try:
        tiny.batch_size = 2
        batched = tiny.simulate_all_at_once("names of capital cities", MORE)
        # the explanation's part of the prefix once, then the 4 non-empty records 2 at a time
        assert (len(base_calls), len(full_calls)) == (1 + 2, 0)
        # the first pass reads only the explanation's header: the few-shot part's cache was kept
        from neuronwidget.explanations.prompts import simulation_fewshot, simulation_prefix

        enc = lambda text: tiny.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        assert base_calls[0] == len(enc(simulation_prefix("names of capital cities"))) - (len(enc(simulation_fewshot())) - 1)
        base_calls.clear()
        reused = tiny.simulate_all_at_once("names of capital cities", MORE, batched=False)
        assert len(full_calls) == 1 + 4  # the prefix once, then one pass per non-empty record
        full_calls.clear()
        fresh = tiny.simulate_all_at_once("names of capital cities", MORE, reuse_prefix=False)
        assert len(full_calls) == 4
    finally:
        h1.remove()
        h2.remove()
        tiny.batch_size = 16
    assert tiny.packed is True  # on a CPU the records of a pass were packed into one row
    assert_same_predictions(batched, reused)
    assert_same_predictions(batched, fresh)
    assert batched[-1].tokens == [] and batched[-1].expected_activations == []
    # a batch of one gives what a batch of many gives (padding changes nothing)
    assert_same_predictions([tiny.simulate_all_at_once("names of capital cities", [MORE[2]])[0]], [batched[2]])
    # a different explanation changes the predictions (the prompt really is read)
    other = tiny.simulate_all_at_once("punctuation marks", TOKENS)
    assert other[0].expected_activations != pytest.approx(batched[0].expected_activations, abs=1e-6)


def tiny_llama(**config):
    """A small Llama-style model with random weights: grouped-query attention (4 query heads on 2
    key/value heads) and rotary positions, on the package's tokenizer."""
    from importlib import resources

    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    tok = PreTrainedTokenizerFast(tokenizer_file=str(resources.files("neuronwidget") / "data" / "tiny_tokenizer.json"))
    torch.manual_seed(1)
    sizes = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    if "sliding_window" in config:
        model = MistralForCausalLM(MistralConfig(**sizes, **config))
    else:
        model = LlamaForCausalLM(LlamaConfig(**sizes, **config))
    return LocalBackend(model=model.eval(), tokenizer=tok, name="tiny random Llama")


@pytest.mark.parametrize("window, packs", [(None, True), (16, False)])
def test_packed_and_padded_passes_equal_one_record_per_pass(window, packs):
    backend = tiny_llama(**({} if window is None else {"sliding_window": window}))
    backend.batch_size = 3
    packed = backend.simulate_all_at_once("names of capital cities", MORE)
    # packed into one row on this CPU; a model whose attention has a sliding window refuses
    # (the window reaches back into the prefix) and takes the padded batch instead
    assert backend.packed is packs
    if packs:
        assert backend._prepacked  # its Linear weights prepacked by oneDNN for packed passes
    backend.packed = False
    padded = backend.simulate_all_at_once("names of capital cities", MORE)
    one_by_one = backend.simulate_all_at_once("names of capital cities", MORE, batched=False)
    assert_same_predictions(packed, one_by_one)
    assert_same_predictions(padded, one_by_one)
    if not packs:
        return
    # the prefix really is read by the packed rows: another explanation changes the predictions
    backend.packed = None
    other = backend.simulate_all_at_once("punctuation marks", MORE)
    assert backend.packed is True
    assert other[0].expected_activations != pytest.approx(packed[0].expected_activations, abs=1e-6)
    # a weight changed in place: the kept few-shot KV cache and prepacked weights are made again
    with torch.no_grad():
        backend.model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    changed = backend.simulate_all_at_once("names of capital cities", MORE)
    assert_same_predictions(changed, backend.simulate_all_at_once("names of capital cities", MORE, batched=False))
    assert changed[0].expected_activations != pytest.approx(packed[0].expected_activations, abs=1e-6)


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
def test_smollm2_from_gguf_batched_equals_one_by_one():
    from servers.smollm2 import smollm2_local

    backend = smollm2_local()
    labels = label_token_ids(backend.tokenizer)
    assert sorted(labels) == list(range(10))  # digit-by-digit tokenizer: "10" is two tokens
    record = capital_neuron(length=10)
    records = record.top_split("valid")[:5] + record.random_split("valid")[:5]
    simulate("anything", [["a"]], backend, max_activation=1.0)  # the few-shot part's cache, kept
    before = backend.forward_passes
    sims = simulate("names of capital cities", records, backend, max_activation=1.0)
    assert backend.forward_passes - before == 2  # the explanation's header, then all records in one batch
    assert backend.packed is True  # packed into one row (this CPU, sdpa attention)
    for sim in sims:
        assert len(sim.expected_activations) == 10 and not sim.failed
        assert all(sum(p) == pytest.approx(1.0, abs=1e-9) for p in sim.distribution_probabilities)
    # the same predictions as one record at a time
    one_by_one = backend.simulate_all_at_once("names of capital cities", [r.tokens for r in records], batched=False)
    assert_same_predictions(sims, one_by_one, tol=1e-4)


@pytest.mark.slow
def test_smollm2_local_explains():
    from neuronwidget.api import explain
    from neuronwidget.explanations.prompts import explainer_messages, parse_explanation
    from servers.smollm2 import smollm2_local

    backend = smollm2_local()  # greedy (temperature 0): the answer is deterministic
    backend.max_tokens = 24
    record = capital_neuron(length=10)
    raw = backend.chat(explainer_messages(record.top_split("train")[:5], record.max_activation))[0]
    expected = parse_explanation(raw)
    assert expected, f"SmolLM2 gave no usable explanation: {raw!r}"
    assert explain(record, backend) == [expected]
