"""MLP activation capture on the tiny model: values, early stop, hook cleanup."""

import math

import pytest
import torch

from neuronwidget.subject import mlp_activations, run_mlp_hooks
from neuronwidget.subject import load_model


@pytest.fixture(scope="module")
def lm():
    return load_model("tiny", device="cpu")


def _ids(lm, text):
    return torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])


def _reference(lm, ids, layer):
    """ln_2 -> c_fc -> gelu_new (written out) on the residual stream entering block L's MLP,
    taken from a full, unhooked-by-us forward pass of the whole LM."""
    block = lm.transformer.h[layer]
    seen = {}
    handle = block.ln_2.register_forward_pre_hook(lambda _m, args: seen.__setitem__("resid", args[0].detach()))
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
    finally:
        handle.remove()
    with torch.no_grad():
        x = torch.nn.functional.layer_norm(seen["resid"], (block.ln_2.normalized_shape[0],), block.ln_2.weight,
                                           block.ln_2.bias, block.ln_2.eps)
        h = x @ block.mlp.c_fc.weight + block.mlp.c_fc.bias  # Conv1D: weight is [in, out]
        return 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))


@pytest.mark.parametrize("layers", [[0], [1, 3], [0, 1, 2, 3]])
def test_activations_equal_independent_mlp_computation(lm, layers):
    ids = _ids(lm, "The assert statement is a convenient way to insert debugging assertions into a program.")
    got = mlp_activations(lm, ids, layers)
    assert sorted(got) == layers
    for layer in layers:
        ref = _reference(lm, ids, layer)
        assert got[layer].shape == (1, ids.shape[1], lm.n_neurons)
        torch.testing.assert_close(got[layer], ref.float(), rtol=1e-5, atol=1e-6)


def test_forward_stops_after_last_needed_layer_and_never_runs_lm_head(lm):
    calls = []
    handles = [lm.transformer.h[i].register_forward_hook(lambda *_a, i=i: calls.append(i)) for i in range(lm.n_layers)]
    handles.append(lm.model.lm_head.register_forward_hook(lambda *_a: calls.append("lm_head")))
    handles.append(lm.transformer.ln_f.register_forward_hook(lambda *_a: calls.append("ln_f")))
    try:
        mlp_activations(lm, _ids(lm, "hello world"), [1])
    finally:
        for h in handles:
            h.remove()
    # block 1 raised inside its MLP, so only block 0 completed; nothing after ran
    assert calls == [0]


def _hook_counts(lm):
    return [len(b.mlp.act._forward_hooks) for b in lm.transformer.h]


def test_hooks_removed_after_success_and_after_an_exception(lm):
    before = _hook_counts(lm)
    mlp_activations(lm, _ids(lm, "some text"), [0, 2])
    assert _hook_counts(lm) == before

    def boom(layer, acts):
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_mlp_hooks(lm, _ids(lm, "some text"), [0, 2], boom)
    assert _hook_counts(lm) == before
    # a forward pass that raises on its own (token id out of range) also cleans up
    with pytest.raises(Exception):
        run_mlp_hooks(lm, torch.tensor([[10 ** 7]]), [1], lambda *_: None)
    assert _hook_counts(lm) == before


def test_layers_must_be_given(lm):
    with pytest.raises(ValueError, match="at least one layer"):
        mlp_activations(lm, _ids(lm, "x y"), [])


def test_layers_out_of_range_name_the_range(lm):
    with pytest.raises(ValueError, match=r"layers must be in 0\.\.3 for tiny"):
        mlp_activations(lm, _ids(lm, "x y"), [4])


def test_loaded_model_is_a_subject_model(lm):
    from neuronwidget.subject import SubjectModel

    assert isinstance(lm, SubjectModel)
    assert lm.family.name == "gpt2" and lm.max_text_tokens == lm.n_ctx and lm.bos_token_id is None


def test_gelu_swap_is_undone_even_when_the_capture_raises(lm):
    """GPT-2's gelu_new runs as PyTorch's fused tanh GELU only while a capture runs; the
    user's own module is back afterwards, also after an error inside the capture."""
    from neuronwidget.subject import run_mlp_hooks

    before = [b.mlp.act for b in lm.transformer.h]
    assert all(type(a).__name__ == "NewGELUActivation" for a in before)
    mlp_activations(lm, _ids(lm, "hello world"), [0, 2])
    assert [b.mlp.act for b in lm.transformer.h] == before

    def boom(layer, acts):
        act = lm.transformer.h[layer].mlp.act  # swapped while running: PyTorch's fused tanh GELU
        assert type(act) is torch.nn.GELU and act.approximate == "tanh"
        raise RuntimeError("user callback failed")

    with pytest.raises(RuntimeError, match="user callback failed"):
        run_mlp_hooks(lm, _ids(lm, "hello world"), [1], boom)
    assert [b.mlp.act for b in lm.transformer.h] == before
