"""Weight-based connections equal a direct matrix computation on small real models."""

import pytest
import torch

from neuronwidget.explore.connections import connections


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=32, n_embd=24, n_layer=3, n_head=2, n_inner=40))
    with torch.no_grad():  # non-trivial norm gains, so that a missing diag(g) would show
        for b in model.transformer.h:
            b.ln_2.weight.uniform_(0.5, 1.5)
        model.transformer.ln_f.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module", params=["llama", "gemma"])
def gated(request):
    torch.manual_seed(1)
    if request.param == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=89, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2)
        model = LlamaForCausalLM(cfg)
    else:
        from transformers import GemmaConfig, GemmaForCausalLM

        cfg = GemmaConfig(vocab_size=89, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8)
        model = GemmaForCausalLM(cfg)
    with torch.no_grad():
        for b in model.model.layers:
            b.post_attention_layernorm.weight.uniform_(0.5, 1.5)
        model.model.norm.weight.uniform_(0.5, 1.5)
    return request.param, model.eval()


def _ranked(values, k, largest=True):
    order = sorted(range(len(values)), key=lambda i: -values[i] if largest else values[i])[:k]
    return [(i, values[i]) for i in order if (values[i] > 0) == largest]


def _assert_tokens(got, want):
    assert [t for t, _ in got] == [f"#{i}" for i, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4, abs=1e-5)


def test_gpt2_tokens_and_neurons_equal_full_matrices(gpt2):
    h, wte = gpt2.transformer.h, gpt2.transformer.wte.weight.detach()
    layer, neuron, k = 1, 7, 6
    c = connections(gpt2, layer, neuron, k=k)
    # full matrices, materialised here on purpose (vocab x neurons), exactly OpenAI's formulas
    w_in = wte @ torch.diag(h[layer].ln_2.weight.detach()) @ h[layer].mlp.c_fc.weight.detach()  # [V, m]
    w_out = h[layer].mlp.c_proj.weight.detach() @ torch.diag(gpt2.transformer.ln_f.weight.detach()) @ wte.T  # [m, V]
    _assert_tokens(c.input_tokens, _ranked(w_in[:, neuron].tolist(), k))
    _assert_tokens(c.input_tokens_negative, _ranked(w_in[:, neuron].tolist(), k, largest=False))
    _assert_tokens(c.output_promoted, _ranked(w_out[neuron].tolist(), k))
    _assert_tokens(c.output_suppressed, _ranked(w_out[neuron].tolist(), k, largest=False))

    def n2n(l1, l2):  # [m, m]
        return h[l1].mlp.c_proj.weight.detach() @ torch.diag(h[l2].ln_2.weight.detach()) @ h[l2].mlp.c_fc.weight.detach()

    up = [(0, n1, float(n2n(0, layer)[n1, neuron])) for n1 in range(40)]
    down = [(2, n2, float(n2n(layer, 2)[neuron, n2])) for n2 in range(40)]
    for got, want in ((c.upstream, up), (c.downstream, down)):
        want = sorted(want, key=lambda x: -abs(x[2]))[:k]
        assert [(a, b) for a, b, _ in got] == [(a, b) for a, b, _ in want]
        assert [v for *_, v in got] == pytest.approx([v for *_, v in want], rel=1e-4, abs=1e-6)
    assert c.family == "gpt2" and "ln_2" in c.definition


def test_gated_tokens_and_neurons_equal_direct_computation(gated):
    kind, model = gated
    base = model.model
    plus = 1.0 if kind == "gemma" else 0.0
    layer, neuron, k = 1, 5, 5
    c = connections(model, layer, neuron, k=k)
    mlp = base.layers[layer].mlp
    g = base.layers[layer].post_attention_layernorm.weight.detach() + plus
    emb = base.embed_tokens.weight.detach()

    def direct(v, mlp, g):  # the neuron's activation if the residual held only v, through RMSNorm (no eps)
        x = g * v / v.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)  # (Gemma's padding row is all 0)
        return mlp.act_fn(x @ mlp.gate_proj.weight.detach().T) * (x @ mlp.up_proj.weight.detach().T)

    acts = direct(emb, mlp, g)[:, neuron]  # [V]: every token through the real modules
    _assert_tokens(c.input_tokens, _ranked(acts.tolist(), k))
    _assert_tokens(c.input_tokens_negative, _ranked(acts.tolist(), k, largest=False))
    logits = model.lm_head.weight.detach() @ (mlp.down_proj.weight.detach()[:, neuron] * (base.norm.weight.detach() + plus))
    _assert_tokens(c.output_promoted, _ranked(logits.tolist(), k))
    _assert_tokens(c.output_suppressed, _ranked(logits.tolist(), k, largest=False))

    up_cols = base.layers[0].mlp.down_proj.weight.detach().T  # [m, d]: layer 0's output directions
    up = direct(up_cols, mlp, g)[:, neuron]
    later = base.layers[2]
    down = direct(mlp.down_proj.weight.detach()[:, neuron], later.mlp, later.post_attention_layernorm.weight.detach() + plus)
    want_up = sorted([(0, i, float(v)) for i, v in enumerate(up)], key=lambda x: -abs(x[2]))[:k]
    want_down = sorted([(2, i, float(v)) for i, v in enumerate(down)], key=lambda x: -abs(x[2]))[:k]
    assert [(a, b) for a, b, _ in c.upstream] == [(a, b) for a, b, _ in want_up]
    assert [(a, b) for a, b, _ in c.downstream] == [(a, b) for a, b, _ in want_down]
    assert [v for *_, v in c.downstream] == pytest.approx([v for *_, v in want_down], rel=1e-4, abs=1e-6)
    assert c.family == "gated"


def test_connections_bad_input(gpt2):
    with pytest.raises(ValueError, match="layer"):
        connections(gpt2, 3, 0)
    with pytest.raises(ValueError, match="neuron"):
        connections(gpt2, 0, 40)
    with pytest.raises(ValueError, match="k must"):
        connections(gpt2, 0, 0, k=0)
    with pytest.raises(ValueError, match="GPT-2 model .* or a gated-MLP"):
        connections(torch.nn.Linear(2, 2), 0, 0)


def test_neuron_connections_on_the_configured_model(tiny_index):
    import neuronwidget as nw

    _, engine, _ = tiny_index
    c = nw.neuron_connections(1, 3, model="tiny")
    table = engine.lm.token_strings()
    assert c.model == "tiny" and len(c.input_tokens) == 10
    assert all(t in table for t, _ in c.input_tokens + c.output_promoted)
    assert {lay for lay, _, _ in c.upstream} <= {0} and {lay for lay, _, _ in c.downstream} <= {2, 3}


def test_neuron_connections_of_a_gated_model_with_its_token_strings():
    import neuronwidget as nw
    from transformers import LlamaConfig, LlamaForCausalLM

    from neuronwidget.subject import load_model

    tok = load_model("tiny").tokenizer
    torch.manual_seed(2)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
                                         eos_token_id=tok.eos_token_id)).eval()
    lm = load_model(model, device="cpu", tokenizer=tok)
    c = nw.neuron_connections(1, 5, model=lm, k=5)
    assert c.family == "gated" and "act(gate" in c.definition
    table = lm.token_strings()
    direct = connections(model, 1, 5, token_strings=table, k=5)
    assert c.input_tokens == direct.input_tokens and c.output_suppressed == direct.output_suppressed
    assert all(t in table for t, _ in c.input_tokens + c.input_tokens_negative + c.output_promoted)


def test_connections_go_through_the_family_a_new_family_is_one_class(gated):
    """A family of one class (its own model_type and norm convention) gets connections with no
    change to explore/: they read the weights where the family says (Family.mlp_weights)."""
    from neuronwidget.subject import FAMILIES
    from neuronwidget.subject.base import GatedMLP

    kind, model = gated
    if kind != "llama":
        pytest.skip("one model is enough")
    plain = connections(model, 1, 5, k=5)

    class OffsetLlama(GatedMLP):  # a Llama variant whose norms scale by 1 + w, as Gemma's do
        name = "offset-llama"
        title = "Offset Llama"
        model_types = ("offset_llama",)
        norm_offset = 1.0

    before = model.config.model_type
    try:
        model.config.model_type = "offset_llama"
        shifted = connections(_copy(model), 1, 5, k=5)
    finally:
        model.config.model_type = before
        FAMILIES.remove(OffsetLlama)
    with torch.no_grad():  # the same model with 1 added to every norm weight, read as a plain Llama
        norms = [b.post_attention_layernorm for b in model.model.layers] + [model.model.norm]
        for n in norms:
            n.weight += 1.0
        try:
            want = connections(_copy(model), 1, 5, k=5)
        finally:
            for n in norms:
                n.weight -= 1.0
    assert shifted.to_dict() == want.to_dict() and shifted.to_dict() != plain.to_dict()


def _copy(model):  # a new object, so the weight view cached for ``model`` is not reused
    import copy

    return copy.deepcopy(model)
