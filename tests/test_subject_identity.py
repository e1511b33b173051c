"""An index belongs to exactly the weights that built it: LoadedModel.identity changes when
any single parameter or buffer changes, and only then."""

from __future__ import annotations

import pytest
import torch

from neuronwidget.subject import load_model
from neuronwidget.subject.fingerprint import tensors, weights_fingerprint
from neuronwidget.subject.loading import _load_tiny
from test_subject_tokens import sentencepiece_tokenizer


def _small_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                                        tie_word_embeddings=False))


@pytest.fixture(scope="module")
def models():
    gpt2, tok = _load_tiny()
    sp = sentencepiece_tokenizer()
    return [(gpt2, tok), (_small_llama(len(sp)), sp)]


def test_every_single_tensor_changes_the_identity(models):
    for model, tok in models:
        lm = load_model(model, device="cpu", tokenizer=tok)
        original = lm.identity
        named = tensors(model)
        assert any(n.startswith("buffer:") for n, _ in named) or type(model).__name__.startswith("GPT2")
        for name, t in named:
            if t.numel() == 0:
                continue
            saved = t.detach().clone()
            with torch.no_grad():
                flat = t.view(-1)
                flat[flat.numel() // 2] += 1.0 if t.is_floating_point() else 1  # one element of one tensor
            assert lm.identity != original, f"changing {name} kept the identity"
            with torch.no_grad():
                t.copy_(saved)
            assert lm.identity == original, f"restoring {name} did not restore the identity"


def test_same_weights_same_identity_and_data_edits_need_a_refresh(models):
    a, tok = _load_tiny()
    b, _ = _load_tiny()
    la, lb = load_model(a, device="cpu", tokenizer=tok), load_model(b, device="cpu", tokenizer=tok)
    assert la is not lb and la.identity == lb.identity  # where they were loaded from does not matter
    before = la.identity
    la.base.h[2].mlp.c_fc.weight.data[0, 0] += 1.0  # through .data: PyTorch's version counter does not see it
    assert la.refresh_identity() != before
    a.transformer.h[2].mlp.c_fc.weight = torch.nn.Parameter(b.transformer.h[2].mlp.c_fc.weight.detach().clone())
    assert la.identity == before  # a replaced tensor is seen without a refresh


def test_the_vocabulary_is_part_of_the_identity():
    model, tok = _load_tiny()
    lm = load_model(model, device="cpu", tokenizer=tok)
    fp = weights_fingerprint(model, model.config, lm.token_bytes())
    other = list(lm.token_bytes())
    other[100] = b"something else"
    assert weights_fingerprint(model, model.config, other) != fp
    assert weights_fingerprint(model, model.config, lm.token_bytes()) == fp
