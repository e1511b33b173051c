"""Gated-MLP families on small random models: the captured neuron equals act(gate x) * (up x)
computed independently from the weights, BOS is in the model's context but not in the
activations, and the forward pass stops after the last layer needed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neuronwidget.activations import Engine
from neuronwidget.subject import load_model, mlp_activations
from test_subject_tokens import sentencepiece_tokenizer

TEXT = "The assert statement inserts debugging assertions into a program: 東京 and naïve."


@pytest.fixture(scope="module")
def tok():
    return sentencepiece_tokenizer()


def _config(kind: str, vocab: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    if kind == "llama":
        return tf.LlamaConfig(**common)
    if kind == "qwen2":
        return tf.Qwen2Config(**common)
    if kind == "qwen3":
        return tf.Qwen3Config(head_dim=16, **common)
    if kind == "mistral":
        return tf.MistralConfig(**common)
    if kind == "gemma":
        return tf.GemmaConfig(head_dim=16, hidden_activation="gelu_pytorch_tanh", **common)
    if kind == "gemma2":
        return tf.Gemma2Config(head_dim=16, hidden_activation="gelu_pytorch_tanh", **common)
    if kind == "gemma3":
        return tf.Gemma3TextConfig(head_dim=16, hidden_activation="gelu_pytorch_tanh", **common)
    raise AssertionError(kind)


def _model(kind: str, vocab: int):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(kind, vocab))
    with torch.no_grad():  # larger than the default 0.02-std init, so activations are not all ~0
        for name, p in model.named_parameters():
            if "mlp" in name:
                p.normal_(0, 0.3)
    return model


def _act(config, h: torch.Tensor) -> torch.Tensor:
    name = getattr(config, "hidden_activation", None) or config.hidden_act
    if name == "silu":
        return h * torch.sigmoid(h)
    if name == "gelu_pytorch_tanh":
        return F.gelu(h, approximate="tanh")
    raise AssertionError(name)


def _reference(model, ids_with_bos: torch.Tensor, layer: int) -> torch.Tensor:
    """The MLP input of ``layer`` from a full forward pass of the whole LM (BOS included),
    then act(x W_gate^T) * (x W_up^T) written out."""
    mlp = model.model.layers[layer].mlp
    seen = {}
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0].detach()))
    try:
        with torch.no_grad():
            model(input_ids=ids_with_bos)
    finally:
        handle.remove()
    x = seen["x"]
    return _act(model.config, x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3"])
def test_gated_neuron_is_act_gate_times_up(tok, kind):
    model = _model(kind, len(tok))
    lm = load_model(model, device="cpu", tokenizer=tok)
    assert lm.family.name == "gated-mlp" and "down_proj" in lm.neuron_site
    assert (lm.n_layers, lm.n_neurons, lm.n_ctx) == (4, 96, 128)
    assert lm.bos_token_id == tok.bos_token_id and lm.max_text_tokens == 127
    text_ids = lm.encode(TEXT)
    assert tok.bos_token_id not in text_ids
    got = mlp_activations(lm, torch.tensor([text_ids]), [0, 2, 3])
    with_bos = torch.tensor([[tok.bos_token_id] + text_ids])
    for layer in (0, 2, 3):
        ref = _reference(model, with_bos, layer)[:, 1:]  # the text positions; BOS is context only
        assert got[layer].shape == (1, len(text_ids), 96)
        torch.testing.assert_close(got[layer], ref, rtol=1e-4, atol=1e-5)
    assert (got[2] < 0).any() and (got[2] > 0).any()  # gated neurons are signed


def test_gated_forward_stops_after_last_needed_layer(tok):
    model = _model("llama", len(tok))
    lm = load_model(model, device="cpu", tokenizer=tok)
    calls = []
    handles = [blk.register_forward_hook(lambda *_a, i=i: calls.append(i)) for i, blk in enumerate(model.model.layers)]
    handles.append(model.model.norm.register_forward_hook(lambda *_a: calls.append("norm")))
    handles.append(model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    try:
        mlp_activations(lm, torch.tensor([lm.encode("hello world")]), [1])
    finally:
        for h in handles:
            h.remove()
    assert calls == [0]
    assert all(not blk.mlp.down_proj._forward_pre_hooks for blk in model.model.layers)  # hooks removed


def test_engine_on_a_gated_model_records_text_only(tok):
    model = _model("qwen2", len(tok))
    eng = Engine(model, device="cpu", tokenizer=tok)
    text = "Hello 東京!"
    rec = eng.activations(text, layer=1, neuron=7)
    assert "<s>" not in rec.tokens and len(rec.tokens) == len(eng.lm.encode(text))
    assert b"".join(rec.token_bytes).decode("utf-8") == text  # SentencePiece dummy-prefix space not shown
    many = eng.activations_many([text, "Another, longer text about dictionaries."], layer=1, neuron=7)
    torch.testing.assert_close(torch.tensor(many[0].activations), torch.tensor(rec.activations), rtol=1e-5, atol=1e-6)
    # past the context window: BOS at the start of every window, text never truncated
    long_text = " ".join(["word"] * 400)
    rec = eng.activations(long_text, layer=0, neuron=1)
    assert len(rec.activations) == len(eng.lm.encode(long_text)) > 127


def test_a_new_family_is_one_class(tok):
    from neuronwidget.subject import FAMILIES
    from neuronwidget.subject.base import GatedMLP

    class Tiny(GatedMLP):  # e.g. a Llama variant with its own model_type
        name = "tiny-llama"
        title = "TinyLlama-variant"
        model_types = ("tiny_llama_variant",)

    try:
        assert FAMILIES[-1] is Tiny
        model = _model("llama", len(tok))
        model.config.model_type = "tiny_llama_variant"
        lm = load_model(model, device="cpu", tokenizer=tok)
        assert lm.family.name == "tiny-llama"
        assert mlp_activations(lm, torch.tensor([lm.encode("hello")]), [1])[1].shape[-1] == 96
    finally:
        FAMILIES.remove(Tiny)
    from neuronwidget.subject import supported

    assert "TinyLlama-variant" not in supported()
