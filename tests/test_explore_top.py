"""top_neurons: one forward pass over every layer, ranked by activation / the neuron's index maximum."""

import pytest

import neuronwidget as nw
from neuronwidget.explore.store import ExplanationStore
from neuronwidget.records import NeuronId, ScoredExplanation, ScoredSimulation

TEXT = "The Eiffel Tower is in Paris. def main(): return 42"


def brute_force(engine, index, text, position):
    rows = []
    for layer in range(engine.n_layers):
        _, acts = engine.layer_activations(text, layer)  # its own forward pass per layer
        for neuron in range(engine.n_neurons):
            a = float(acts[position, neuron])
            mx = index.max_activation(layer, neuron)
            if a > 0 and mx > 0:
                rows.append((a / mx, layer, neuron, a))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    return rows


@pytest.mark.parametrize("position", [0, 5, -1])
def test_top_neurons_equal_a_brute_force_over_all_layers(tiny_index, tmp_path, position):
    _, engine, index = tiny_index
    df = nw.top_neurons(TEXT, position, k=15, model="tiny", store=ExplanationStore(tmp_path / "s.sqlite"))
    n_tokens = len(engine.tokenize(TEXT))
    want = brute_force(engine, index, TEXT, position % n_tokens)[:15]
    assert list(df.columns) == ["layer", "neuron", "side", "activation", "normalized", "explanation", "score"]
    assert list(zip(df.layer, df.neuron)) == [(lay, n) for _, lay, n, _ in want]
    assert df.normalized.tolist() == pytest.approx([r[0] for r in want], rel=1e-4)
    assert df.activation.tolist() == pytest.approx([r[3] for r in want], rel=1e-4, abs=1e-6)
    assert set(df.side) == {"positive"}  # GELU: the index records no negative side
    assert df.explanation.isna().all()


def test_known_explanations_are_joined(tiny_index, tmp_path):
    st = ExplanationStore(tmp_path / "s.sqlite")
    first = nw.top_neurons(TEXT, 3, k=5, model="tiny", store=st)
    layer, neuron = int(first.layer[0]), int(first.neuron[0])
    for text, score in (("weak guess", 0.1), ("numbers and code", 0.6)):
        st.add(ScoredExplanation(text, ScoredSimulation([], ev_correlation_score=score), NeuronId(layer, neuron)),
               nw.get_engine("tiny").lm.name)  # the tiny model's long label is stored as "tiny"
    df = nw.top_neurons(TEXT, 3, k=5, model="tiny", store=st)
    assert df.explanation[0] == "numbers and code" and df.score[0] == pytest.approx(0.6)  # the best one
    assert df.explanation[1:].isna().all()


@pytest.mark.parametrize("text, position, message", [
    (TEXT, 10_000, "out of range: the text has"),
    (TEXT, -10_000, "out of range"),
    (TEXT, 1.5, "position must be an int"),
    (TEXT, True, "position must be an int"),
    ("", 0, "text is empty"),
    (None, 0, "text must be a non-empty string"),
])
def test_bad_input_is_a_clear_valueerror(tiny_index, text, position, message):
    with pytest.raises(ValueError, match=message):
        nw.top_neurons(text, position, model="tiny")


def test_k_is_checked(tiny_index):
    with pytest.raises(ValueError, match="k must be a positive int"):
        nw.top_neurons(TEXT, 0, k=0, model="tiny")


def test_gated_model_ranks_both_sides_equal_to_a_brute_force(tmp_path):
    """A small random Llama (gated MLP, signed neurons): negative activations rank by ÷ min."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from neuronwidget.activations import Engine
    from neuronwidget.subject import load_model

    tok = load_model("tiny").tokenizer
    torch.manual_seed(3)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         bos_token_id=None, eos_token_id=tok.eos_token_id)).eval()
    before = nw.settings()
    nw.configure(model=llama, cache_dir=str(tmp_path / "cache"))
    try:
        engine = Engine(llama, device="cpu", tokenizer=tok)
        corpus = [f"{TEXT} and line {i}: x = {i} * 2" for i in range(40)]
        index = engine.index(corpus, progress=False)
        df = nw.top_neurons(TEXT, 4, k=12, model=engine.lm, index=index, store=ExplanationStore(tmp_path / "s.sqlite"))
    finally:
        nw.configure(model=before.model, cache_dir=before.cache_dir)
    rows = []
    for layer in range(engine.n_layers):
        _, acts = engine.layer_activations(TEXT, layer)
        for neuron in range(engine.n_neurons):
            a = float(acts[4, neuron])
            mx, mn = index.max_activation(layer, neuron), index.min_activation(layer, neuron)
            if a > 0 and mx > 0:
                rows.append((a / mx, layer, neuron, "positive"))
            elif a < 0 and mn < 0:
                rows.append((a / mn, layer, neuron, "negative"))
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    want = rows[:12]
    assert list(zip(df.layer, df.neuron, df.side)) == [(lay, n, s) for _, lay, n, s in want]
    assert df.normalized.tolist() == pytest.approx([r[0] for r in want], rel=1e-4)
    assert "negative" in set(df.side)  # signed neurons: both sides compete
