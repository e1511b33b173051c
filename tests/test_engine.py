"""The Engine API on the tiny model: activations of any length, batching, index, bad input."""

import numpy as np
import pytest
import torch

from neuronwidget import api as config
from neuronwidget.activations.corpus import bundled_corpus
from neuronwidget.activations import Engine
from neuronwidget.api import get_engine
from neuronwidget.subject import mlp_activations
from neuronwidget.records import ActivationRecord


@pytest.fixture(scope="module")
def eng():
    return Engine("tiny", device="cpu")


@pytest.fixture(scope="module")
def long_text():
    return "\n".join(bundled_corpus().documents())[:4000]


def test_facts_and_shared_engine(eng):
    assert eng.is_tiny and eng.n_layers == 4 and eng.n_neurons == 384
    assert "not a real GPT-2" in eng.model_name
    assert get_engine("tiny", device="cpu") is get_engine("tiny", device="cpu")
    assert get_engine("tiny", device="cpu").lm is eng.lm  # one loaded model per kernel
    config.configure(model="tiny")
    try:
        assert get_engine() is get_engine("tiny", device=None)
        assert get_engine().is_tiny
    finally:
        config.configure(model=None)


def test_activations_match_hooks_and_tokens_round_trip(eng):
    text = "The assert statement inserts debugging assertions."
    rec = eng.activations(text, layer=2, neuron=131)
    assert isinstance(rec, ActivationRecord)
    assert "".join(rec.tokens) == text and rec.tokens == eng.tokenize(text)
    ids = torch.tensor([eng.lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
    want = mlp_activations(eng.lm, ids, [2])[2][0, :, 131].numpy()
    np.testing.assert_allclose(rec.activations, want, rtol=0, atol=0)
    tokens, acts = eng.layer_activations(text, 2)
    assert tokens == rec.tokens and acts.shape == (len(tokens), 384) and acts.dtype == np.float32
    np.testing.assert_array_equal(acts[:, 131], want)


def test_long_text_is_windowed_not_truncated(eng, long_text):
    ids = eng.lm.tokenizer(long_text, add_special_tokens=False)["input_ids"]
    n_ctx = eng.lm.n_ctx
    assert len(ids) > 3 * n_ctx
    tokens, acts = eng.layer_activations(long_text, 1)
    assert len(tokens) == len(ids) == acts.shape[0]
    assert "".join(tokens) == long_text
    # first window: plain forward pass; a later token: computed with n_ctx // 2 tokens of left context
    first = mlp_activations(eng.lm, torch.tensor([ids[:n_ctx]]), [1])[1][0].numpy()
    np.testing.assert_allclose(acts[:n_ctx], first, atol=1e-5)
    start = n_ctx  # second window reports tokens n_ctx.. with context from n_ctx // 2
    second = mlp_activations(eng.lm, torch.tensor([ids[start - n_ctx // 2: start - n_ctx // 2 + n_ctx]]), [1])[1][0]
    np.testing.assert_allclose(acts[start: start + n_ctx // 2], second[n_ctx // 2:].numpy(), atol=1e-5)
    rec = eng.activations(long_text, layer=1, neuron=7)
    assert len(rec.activations) == len(ids)


def test_activations_many_equals_one_by_one(eng, long_text):
    texts = ["Short one.", "A somewhat longer sentence about Python dictionaries and keys.", long_text[:2000], "x"]
    many = eng.activations_many(texts, layer=3, neuron=42)
    for text, got in zip(texts, many):
        one = eng.activations(text, layer=3, neuron=42)
        assert got.tokens == one.tokens
        np.testing.assert_allclose(got.activations, one.activations, atol=1e-5)


def test_bad_input_names_what_is_allowed(eng):
    with pytest.raises(ValueError, match=r"layer must be in 0\.\.3 for tiny, got 12"):
        eng.activations("text", layer=12, neuron=0)
    with pytest.raises(ValueError, match=r"neuron must be in 0\.\.383 for tiny, got -1"):
        eng.activations("text", layer=0, neuron=-1)
    with pytest.raises(ValueError, match="layer must be an integer"):
        eng.activations("text", layer="5", neuron=0)
    with pytest.raises(ValueError, match="layer must be an integer"):
        eng.layer_activations("text", True)
    with pytest.raises(ValueError, match="text is empty"):
        eng.activations("", layer=0, neuron=0)
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        eng.tokenize(None)
    with pytest.raises(ValueError, match="texts must be a list"):
        eng.activations_many("one string", 0, 0)


def test_index_uses_configured_corpus_and_is_cached(tmp_path):
    # configure() reaches the kernel's shared engines (get_engine), read at index() time
    eng = get_engine("tiny", device="cpu")
    texts = ["\n".join(bundled_corpus().documents())[:6000]]  # 31 windows
    config.configure(cache_dir=str(tmp_path), corpus=texts)
    try:
        idx = eng.index(progress=False, top_k=8, n_random=6, n_quantile=2)
        assert idx.corpus_name.startswith("1 texts given") and f"{idx.n_tokens:,} tokens" in idx.corpus_name
        assert idx.n_layers == 4 and idx.n_neurons == 384 and idx.n_tokens % 64 == 0
        assert eng.index(progress=False, top_k=8, n_random=6, n_quantile=2) is idx
        rec = idx.record(1, 2)
        assert len(rec.most_positive_activation_records) == 8
        # the recorded activations are what the engine computes for that window's tokens
        top = rec.most_positive_activation_records[0]
        wid = int(idx.layer_arrays(1)["top_ids"][2, 0])
        direct = mlp_activations(eng.lm, torch.tensor(np.array(idx._common["windows"][wid:wid + 1]), dtype=torch.long), [1])
        np.testing.assert_allclose(top.activations, direct[1][0, :, 2].numpy(), atol=2e-3)
        assert list(tmp_path.joinpath("index").iterdir())
    finally:
        config.configure(cache_dir=None, corpus=None)
