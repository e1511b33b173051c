"""SAE latents and transcoder features as units (issue 19), against references written here:

* the SAE files are written in each format by the test itself (SAELens folder, OpenAI state dict,
  Gemma Scope params.npz), with weights drawn here;
* the site values come from plain PyTorch hooks on the transformers modules (named per
  architecture here, not through neuronwidget), on a model run whole;
* the encoders are written out here from each format's definition.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import neuronwidget as nw
from neuronwidget.activations import Engine
from neuronwidget.subject import load_model
from neuronwidget.subject.sae import SAEFormatError, SAEUnavailableError, load_sae

CORPUS = [f"The Eiffel Tower is {i} metres tall; def f{i}(x): return x * {i}. The cat sat on mat {i * 7}."
          for i in range(48)]
D_SAE = 64


# -- the models -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    before = nw.settings()
    nw.configure(cache_dir=str(tmp_path_factory.mktemp("sae-gpt2")))
    yield Engine("tiny", device="cpu")
    nw.configure(cache_dir=before.cache_dir)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_model("tiny").tokenizer
    torch.manual_seed(5)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
                                         eos_token_id=tok.eos_token_id)).eval()
    before = nw.settings()
    nw.configure(cache_dir=str(tmp_path_factory.mktemp("sae-llama")))
    yield Engine(model, device="cpu", tokenizer=tok)
    nw.configure(cache_dir=before.cache_dir)


def width(eng):
    return int(eng.lm.config.hidden_size)


def module_at(eng, layer, site):
    """(module, "pre" | "post"): written out per architecture."""
    m = eng.lm.model
    if eng.lm.family.name == "gpt2":
        b = m.transformer.h[layer]
        return {"resid_pre": (b, "pre"), "resid_post": (b, "post"), "resid_mid": (b.ln_2, "pre"),
                "attn_out": (b.attn, "post"), "mlp_out": (b.mlp, "post"), "mlp_in": (b.mlp, "pre")}[site]
    b = m.model.layers[layer]
    return {"resid_pre": (b, "pre"), "resid_post": (b, "post"), "resid_mid": (b.post_attention_layernorm, "pre"),
            "attn_out": (b.self_attn, "post"), "mlp_out": (b.mlp, "post"), "mlp_in": (b.mlp, "pre")}[site]


def hooked(eng, ids, layer, site):
    """float32 [batch, seq, width] at the site, the whole model run with a plain hook."""
    mod, where = module_at(eng, layer, site)
    got = {}
    if where == "pre":
        h = mod.register_forward_pre_hook(lambda _m, a, k: got.__setitem__("x", a[0] if a else k["hidden_states"]),
                                          with_kwargs=True)
    else:
        h = mod.register_forward_hook(lambda _m, _a, o: got.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            eng.lm.model(input_ids=torch.as_tensor(ids), use_cache=False)
    finally:
        h.remove()
    return got["x"].float()


# -- the formats, written here ----------------------------------------------------------------------
def draw(d_in, d_out=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d_out = d_out or d_in
    return {"W_enc": torch.randn(d_in, D_SAE, generator=g) / d_in ** 0.5,
            "b_enc": torch.randn(D_SAE, generator=g) * 0.2 + 0.1,
            "W_dec": torch.randn(D_SAE, d_out, generator=g) / D_SAE ** 0.5,
            "b_dec": torch.randn(d_out, generator=g) * 0.1,
            "threshold": torch.rand(D_SAE, generator=g) * 0.3 + 0.05,
            "b_gate": torch.randn(D_SAE, generator=g) * 0.2,
            "r_mag": torch.randn(D_SAE, generator=g) * 0.1,
            "b_mag": torch.randn(D_SAE, generator=g) * 0.2}


def write_saelens(folder, w, arch, layer, hook, k=None, transcoder=False, drop=(), norm="none", skip=None):
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    keys = {"standard": ["W_enc", "b_enc", "W_dec", "b_dec"], "topk": ["W_enc", "b_enc", "W_dec", "b_dec"],
            "jumprelu": ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"],
            "gated": ["W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"]}[arch]
    tensors = {k_: w[k_].contiguous() for k_ in keys if k_ not in drop}
    if skip is not None:
        tensors["W_skip"] = skip.contiguous()
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    tc = ("skip_transcoder" if skip is not None else "transcoder") if arch == "standard" else f"{arch}_transcoder"
    cfg = {"architecture": tc if transcoder else arch,
           "d_in": int(w["W_enc"].shape[0]), "d_sae": D_SAE, "hook_name": f"blocks.{layer}.{hook}",
           "apply_b_dec_to_input": not transcoder, "normalize_activations": norm}
    if k:
        cfg["k"] = k
    if transcoder:
        cfg["d_out"] = int(w["W_dec"].shape[1])
        cfg["hook_name_out"] = f"blocks.{layer}.hook_mlp_out"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def write_openai(path, w, k):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder.weight": w["W_enc"].T.contiguous(), "decoder.weight": w["W_dec"].T.contiguous(),
                "pre_bias": w["b_dec"], "latent_bias": w["b_enc"], "stats_last_nonzero": torch.zeros(D_SAE, dtype=torch.long),
                "activation": "TopK", "activation_state_dict": {"k": k, "postact_fn": "ReLU"}}, str(path))
    return path


def write_scope(path, w):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(str(path), **{k: w[k].numpy() for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")})
    return path


def reference_encode(kind, w, x, k=None):
    """The formats' definitions, written out."""
    if kind.endswith("-cnr"):  # SAELens constant_norm_rescale: x * sqrt(d_in) / |x|, before b_dec
        return reference_encode(kind[:-4], w, x * x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True), k)
    if kind.endswith("-ln"):  # SAELens layer_norm: (x - mean) / (std + 1e-5), before b_dec
        xc = x - x.mean(-1, keepdim=True)
        return reference_encode(kind[:-3], w, xc / (xc.std(-1, keepdim=True) + 1e-5), k)
    if kind == "relu":  # SAELens standard, apply_b_dec_to_input
        return torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    if kind == "topk":  # SAELens TopK
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        v, i = pre.topk(k, -1)
        return torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    if kind == "jumprelu":  # SAELens JumpReLU
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        return torch.where(pre > w["threshold"], pre, torch.zeros_like(pre))
    if kind == "gated":
        pre = (x - w["b_dec"]) @ w["W_enc"]
        return ((pre + w["b_gate"]) > 0).float() * torch.relu(pre * torch.exp(w["r_mag"]) + w["b_mag"])
    if kind == "openai":  # layer norm without affine, then pre_bias, encoder, latent_bias, TopK + ReLU
        mu = x.mean(-1, keepdim=True)
        xc = x - mu
        xn = xc / (xc.std(-1, keepdim=True) + 1e-5)
        pre = (xn - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        v, i = pre.topk(k, -1)
        return torch.zeros_like(pre).scatter(-1, i, torch.relu(v))
    if kind in ("scope", "transcoder-jumprelu"):  # Gemma Scope: no b_dec on the input
        pre = x @ w["W_enc"] + w["b_enc"]
        return pre * (pre > w["threshold"])
    if kind in ("transcoder", "transcoder-skip"):  # SAELens transcoder: reads the MLP input, no b_dec subtracted
        return torch.relu(x @ w["W_enc"] + w["b_enc"])
    raise AssertionError(kind)


CASES = [  # (id, family, site, kind)
    ("saelens-relu-resid_pre", "gpt2", "resid_pre", "relu"),
    ("saelens-topk-resid_post", "gpt2", "resid_post", "topk"),
    ("saelens-jumprelu-attn_out", "gpt2", "attn_out", "jumprelu"),
    ("saelens-gated-mlp_out", "gpt2", "mlp_out", "gated"),
    ("saelens-transcoder", "gpt2", "mlp_in", "transcoder"),
    ("openai-topk-resid_post", "gpt2", "resid_post", "openai"),
    ("gemma-scope-jumprelu", "gpt2", "resid_post", "scope"),
    ("saelens-topk-llama-resid_mid", "llama", "resid_mid", "topk"),
    ("saelens-relu-llama-mlp_out", "llama", "mlp_out", "relu"),
    ("gemma-scope-llama-transcoder", "llama", "mlp_in", "transcoder-jumprelu"),
    ("saelens-topk-constant-norm-rescale", "gpt2", "resid_post", "topk-cnr"),
    ("saelens-relu-layer-norm-llama", "llama", "resid_pre", "relu-ln"),
    ("saelens-skip-transcoder", "llama", "mlp_in", "transcoder-skip"),
]
HOOKS = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "resid_mid": "hook_resid_mid",
         "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out", "mlp_in": "ln2.hook_normalized"}
K = 6


def make_sae_file(tmp, eng, case, layer):
    name, _, site, kind = case
    d = width(eng)
    w = draw(d, seed=hash(name) % 1000)
    if kind == "openai":
        path = write_openai(tmp / "gpt2-small" / "resid_post_mlp_v5_32k" / "autoencoders" / f"{layer}.pt", w, K)
    elif kind == "scope":
        path = write_scope(tmp / "gemma-scope-2b-pt-res" / f"layer_{layer}" / "width_16k" / "average_l0_9" / "params.npz", w)
    elif kind == "transcoder-jumprelu":
        path = write_scope(tmp / "gemma-scope-2b-pt-transcoders" / f"layer_{layer}" / "width_16k" / "l0_9" / "params.npz", w)
    else:
        base, _, norm = kind.partition("-")
        arch = {"relu": "standard", "transcoder": "standard"}.get(base, base)
        skip = torch.randn(d, d, generator=torch.Generator().manual_seed(5)) * 0.05 if norm == "skip" else None
        path = write_saelens(tmp / name, w, arch, layer, HOOKS[site], k=K if base == "topk" else None,
                             transcoder=base == "transcoder", skip=skip,
                             norm={"cnr": "constant_norm_rescale", "ln": "layer_norm"}.get(norm, "none"))
        w = dict(w, W_skip=skip)
    return path, w


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_index_latents_equal_a_direct_encode_of_the_hooked_activations(case, request, tmp_path):
    eng = request.getfixturevalue(case[1])
    layer = 1
    path, w = make_sae_file(tmp_path, eng, case, layer)
    sae = eng.add_sae(path, name=case[0])
    assert (sae.layer, sae.site) == (layer, case[2])
    assert sae.transcoder == (case[3].startswith("transcoder"))
    idx = eng.index(CORPUS, units=f"sae:{case[0]}", progress=False)
    assert idx.unit_layers == [layer] and idx.n_neurons == D_SAE
    windows = np.asarray(idx._common["windows"], dtype=np.int64)
    ref = reference_encode(case[3], w, hooked(eng, windows, layer, case[2]), K)  # [n_windows, 64, D_SAE]
    # every latent's exact maximum, and its records' values, equal the direct encode
    np.testing.assert_allclose(idx.extremes()[1][0], ref.amax((0, 1)).numpy(), rtol=1e-4, atol=1e-4)
    active = [i for i in range(D_SAE) if ref[..., i].amax() > 0]
    assert len(active) >= 3
    for latent in active[:4]:
        rec = idx.record(layer, latent)
        top_ids = np.asarray(idx.layer_arrays(layer)["top_ids"][latent])
        top_ids = top_ids[top_ids >= 0]
        assert not rec.most_negative_activation_records  # latents are never negative: no bottom tail
        for r, wid in zip(rec.most_positive_activation_records[:10], top_ids[:10]):  # the exact ones
            np.testing.assert_allclose(r.activations, ref[wid, :, latent].numpy(), rtol=1e-4, atol=1e-4)
        # density: the fraction of all tokens where it is active; the histogram holds the non-zero values
        dens = float((ref[..., latent] != 0).float().mean())
        assert idx.density(layer, latent) == pytest.approx(dens)
        assert idx.histogram(layer, latent)[1].sum() == int((ref[..., latent] != 0).sum())
    # Engine.activations on a text == the direct encode of that text
    text = "The Eiffel Tower is tall."
    ids = eng.lm.encode(text)
    direct = reference_encode(case[3], w, hooked(eng, [ids], layer, case[2]), K)[0]
    got = eng.layer_activations(text, layer, units=f"sae:{case[0]}")[1]
    np.testing.assert_allclose(got, direct.numpy(), rtol=1e-4, atol=1e-4)


def test_topk_keeps_exactly_k_latents_per_token(gpt2, tmp_path):
    w = draw(width(gpt2), seed=3)
    w["b_enc"] = w["b_enc"].abs() + 5.0  # every pre-activation positive: exactly k survive the ReLU
    gpt2.add_sae(write_saelens(tmp_path / "k", w, "topk", 2, "hook_resid_post", k=5), name="topk5")
    _, acts = gpt2.layer_activations(" ".join(CORPUS[:4]), 2, units="sae:topk5")
    assert ((acts != 0).sum(1) == 5).all()
    idx = gpt2.index(CORPUS, units="sae:topk5", progress=False)
    assert idx.densities(2).sum() == pytest.approx(5.0)  # k active per token on average over the whole corpus


def test_jumprelu_threshold_is_respected(gpt2, tmp_path):
    w = draw(width(gpt2), seed=4)
    w["threshold"] = torch.full((D_SAE,), 0.4)
    gpt2.add_sae(write_saelens(tmp_path / "j", w, "jumprelu", 0, "hook_resid_post"), name="jump")
    _, acts = gpt2.layer_activations(" ".join(CORPUS[:6]), 0, units="sae:jump")
    nz = acts[acts != 0]
    assert nz.size > 50 and nz.min() > 0.4
    ids = gpt2.lm.encode(" ".join(CORPUS[:6]))
    pre = (hooked(gpt2, [ids], 0, "resid_post")[0] - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert int(((pre > 0) & (pre <= 0.4)).sum()) > 0  # some positive pre-activations were cut by the threshold
    assert int((acts != 0).sum()) == int((pre > 0.4).sum())


def reference_decode(kind, w, f, x):
    """SAELens' decode, written out: W_dec and b_dec, the input normalisation undone (not for a
    transcoder), a skip transcoder's W_skip path added."""
    out = f @ w["W_dec"] + w["b_dec"]
    if kind.endswith("-cnr"):
        return out * x.norm(dim=-1, keepdim=True) / x.shape[-1] ** 0.5
    if kind.endswith("-ln"):
        return out * (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True) + x.mean(-1, keepdim=True)
    if kind == "openai":  # OpenAI: ret * std + mu
        return out * (x - x.mean(-1, keepdim=True)).std(-1, keepdim=True) + x.mean(-1, keepdim=True)
    if kind == "transcoder-skip":
        return out + x @ w["W_skip"].T
    return out


@pytest.mark.parametrize("case", [c for c in CASES if c[3] in ("topk-cnr", "relu-ln", "transcoder-skip", "openai", "relu")],
                         ids=lambda c: c[0])
def test_decode_undoes_the_input_normalisation_and_adds_the_skip_path(case, request, tmp_path):
    from neuronwidget.subject.sae import save_saelens

    eng = request.getfixturevalue(case[1])
    path, w = make_sae_file(tmp_path, eng, case, 1)
    sae = eng.add_sae(path, name=case[0])
    x = hooked(eng, [eng.lm.encode("The cat sat on the mat.")], 1, case[2])[0]
    f = sae.encode(x)
    torch.testing.assert_close(f, reference_encode(case[3], w, x, K), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sae.decode(f, x), reference_decode(case[3], w, f, x), rtol=1e-4, atol=1e-5)
    if case[3] != "relu":
        with pytest.raises(ValueError, match="decode needs the input x too"):
            sae.decode(f)
    # written back as a SAELens folder, it reads the same (its normalisation and skip path included)
    save_saelens(sae, tmp_path / "again")
    again = load_sae(tmp_path / "again", name="again")
    assert again.identity == sae.identity and again.normalize == sae.normalize
    torch.testing.assert_close(again.decode(again.encode(x), x), sae.decode(f, x))


def test_a_normalisation_scale_kept_outside_the_folder_is_refused_with_what_to_do(gpt2, tmp_path):
    w = draw(width(gpt2))
    with pytest.raises(SAEFormatError, match=r"expected_average_only_in.*fold it into the weights"):
        load_sae(write_saelens(tmp_path / "avg", w, "standard", 0, "hook_resid_pre", norm="expected_average_only_in"))
    with pytest.raises(SAEFormatError, match=r"normalize_activations='batch' is not one neuronwidget reads; supported: "
                                             r"none, layer_norm, constant_norm_rescale"):
        load_sae(write_saelens(tmp_path / "b", w, "standard", 0, "hook_resid_pre", norm="batch"))
    with pytest.raises(SAEFormatError, match=r"hold W_skip \(a skip transcoder.s\) but cfg.json describes an SAE"):
        folder = write_saelens(tmp_path / "s", w, "standard", 0, "hook_resid_pre", skip=torch.zeros(width(gpt2), width(gpt2)))
        cfg = json.loads((folder / "cfg.json").read_text())
        (folder / "cfg.json").write_text(json.dumps(dict(cfg, architecture="standard")))
        load_sae(folder)


# -- interventions -------------------------------------------------------------------------------
def manual_greedy(eng, ids, mod_fn, n):
    """Greedy decoding of the whole model (no cache), one hook on the MLP / block written here."""
    ids = list(ids)
    out = []
    for _ in range(n):
        with torch.no_grad():
            logits = eng.lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt == eng.lm.eos_token_id:
            break
        ids.append(nxt)
    return out


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_steering_a_latent_equals_adding_its_decoder_direction_by_a_manual_hook(which, request, tmp_path):
    from neuronwidget.subject.units import latent_greedy, latent_logits

    eng = request.getfixturevalue(which)
    w = draw(width(eng), seed=7)
    sae = eng.add_sae(write_saelens(tmp_path / "s", w, "standard", 1, "hook_resid_post"), name="steer")
    prompt = eng.lm.encode("The Eiffel Tower is")
    strength, latent = 8.0, 3
    mod, _ = module_at(eng, 1, "resid_post")
    h = mod.register_forward_hook(lambda _m, _a, o: (o[0] + strength * w["W_dec"][latent], *o[1:])
                                  if isinstance(o, tuple) else o + strength * w["W_dec"][latent])
    try:
        manual = manual_greedy(eng, prompt, None, 12)
        with torch.no_grad():
            manual_logits = eng.lm.model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
    finally:
        h.remove()
    plain = manual_greedy(eng, prompt, None, 12)
    got = latent_greedy(eng.lm, sae, prompt, 12, steer={latent: strength})
    assert got == manual and got != plain
    clean, edited = latent_logits(eng.lm, sae, prompt, steer={latent: strength})
    torch.testing.assert_close(edited, manual_logits, rtol=1e-4, atol=1e-4)
    # ablation: the latent's own contribution f_i(x) W_dec[i] is taken out where the SAE writes
    f = reference_encode("relu", w, hooked(eng, [prompt], 1, "resid_post"), None)[0]
    lat = int(f.sum(0).argmax())
    h = mod.register_forward_hook(
        lambda _m, _a, o: (o[0] - reference_encode("relu", w, o[0].float(), None)[..., lat:lat + 1] * w["W_dec"][lat], *o[1:])
        if isinstance(o, tuple) else o - reference_encode("relu", w, o.float(), None)[..., lat:lat + 1] * w["W_dec"][lat])
    try:
        with torch.no_grad():
            manual_abl = eng.lm.model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
    finally:
        h.remove()
    clean2, ablated = latent_logits(eng.lm, sae, prompt, ablate=[lat])
    torch.testing.assert_close(ablated, manual_abl, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(clean2, clean)
    assert (ablated - clean).abs().max() > 1e-4
    # the model is itself again afterwards
    with torch.no_grad():
        after = eng.lm.model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
    torch.testing.assert_close(after, clean)


def test_interventions_of_a_normalising_sae_are_in_the_sites_scale(gpt2, tmp_path):
    """decode(f + s e_i) - decode(f) = s W_dec[i] |x| / sqrt(d_in) for constant_norm_rescale: steering and
    ablation add exactly that, as a hand-written hook does."""
    from neuronwidget.subject.units import latent_logits

    case = next(c for c in CASES if c[3] == "topk-cnr")
    path, w = make_sae_file(tmp_path, gpt2, case, 1)
    sae = gpt2.add_sae(path, name="cnr")
    prompt = gpt2.lm.encode("The Eiffel Tower is")
    mod, _ = module_at(gpt2, 1, "resid_post")
    scale = lambda x: x.norm(dim=-1, keepdim=True) / x.shape[-1] ** 0.5  # noqa: E731
    f = reference_encode(case[3], w, hooked(gpt2, [prompt], 1, "resid_post"), K)[0]
    lat = int(f.sum(0).argmax())

    def run(edit):
        h = mod.register_forward_hook(lambda _m, _a, o: (edit(o[0]), *o[1:]) if isinstance(o, tuple) else edit(o))
        try:
            with torch.no_grad():
                return gpt2.lm.model(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float()
        finally:
            h.remove()

    manual = run(lambda o: o - reference_encode(case[3], w, o.float(), K)[..., lat:lat + 1] * w["W_dec"][lat] * scale(o.float()))
    clean, ablated = latent_logits(gpt2.lm, sae, prompt, ablate=[lat])
    torch.testing.assert_close(ablated, manual, rtol=1e-4, atol=1e-4)
    assert (ablated - clean).abs().max() > 1e-4
    manual = run(lambda o: o + 3.0 * w["W_dec"][lat] * scale(o.float()))
    torch.testing.assert_close(latent_logits(gpt2.lm, sae, prompt, steer={lat: 3.0})[1], manual, rtol=1e-4, atol=1e-4)


# -- bad files ------------------------------------------------------------------------------------
def test_bad_files_get_clear_errors(gpt2, tmp_path, monkeypatch):
    d = width(gpt2)
    w = draw(d)
    with pytest.raises(SAEFormatError, match="no 'b_dec'"):
        load_sae(write_saelens(tmp_path / "missing", w, "standard", 0, "hook_resid_pre", drop=("b_dec",)))
    bad = dict(w, b_enc=torch.zeros(D_SAE + 1))
    with pytest.raises(SAEFormatError, match=r"b_enc has shape \(65,\), expected \(64,\)"):
        load_sae(write_saelens(tmp_path / "shape", bad, "standard", 0, "hook_resid_pre"))
    nan = dict(w, W_dec=w["W_dec"].clone())
    nan["W_dec"][3, 4] = float("nan")
    with pytest.raises(SAEFormatError, match="W_dec holds 1 non-finite"):
        load_sae(write_saelens(tmp_path / "nan", nan, "standard", 0, "hook_resid_pre"))
    scope = dict(w)
    scope["threshold"] = scope["threshold"].clone()
    scope["threshold"][0] = float("inf")
    with pytest.raises(SAEFormatError, match="threshold holds 1 non-finite"):
        load_sae(write_scope(tmp_path / "gemma-scope-2b-pt-res" / "layer_0" / "w" / "params.npz", scope))
    with pytest.raises(SAEFormatError, match="no 'threshold'"):
        np.savez(str(tmp_path / "nothr.npz"), **{k: w[k].numpy() for k in ("W_enc", "W_dec", "b_enc", "b_dec")})
        load_sae(tmp_path / "nothr.npz", layer=0, site="resid_post")
    # d_in / hook site that do not fit the model: a ValueError naming both
    wide = draw(d + 8)
    with pytest.raises(ValueError, match=rf"d_in={d + 8} at resid_pre of block 0, but tiny has {d} numbers"):
        gpt2.add_sae(write_saelens(tmp_path / "wide", wide, "standard", 0, "hook_resid_pre"))
    with pytest.raises(ValueError, match=r"reads block 9 \(resid_pre\), but tiny has blocks 0..3"):
        gpt2.add_sae(write_saelens(tmp_path / "deep", w, "standard", 9, "hook_resid_pre"))
    with pytest.raises(ValueError, match="hook site 'blocks.0.attn.hook_z' is not one neuronwidget can hook"):
        load_sae(write_saelens(tmp_path / "z", w, "standard", 0, "attn.hook_z"))
    with pytest.raises(ValueError, match="site must be one of resid_pre"):
        load_sae(tmp_path / "missing", site="resid")
    with pytest.raises(ValueError, match="no SAE at"):
        load_sae(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="units must be 'neurons' or 'sae:NAME'"):
        gpt2.index(CORPUS, units="latents", progress=False)
    with pytest.raises(ValueError, match="no SAE named 'nope' is attached"):
        gpt2.activations("x", 0, 0, units="sae:nope")
    # a hub id offline with an empty cache: a clear error, not a hang
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SAEUnavailableError, match="cannot fetch 'hf:someone/no-such-sae/layer_3'"):
        load_sae("hf:someone/no-such-sae/layer_3")



def test_a_hub_id_reads_the_hugging_face_cache_offline(gpt2, tmp_path, monkeypatch):
    """hf:OWNER/REPO/SUBFOLDER goes through huggingface_hub's own cache (laid out here as the hub lays
    it out), the same SAE as the folder itself, with no network."""
    import huggingface_hub

    cache = tmp_path / "hub"
    snap = cache / "models--someone--my-saes" / "snapshots" / ("a" * 40)
    w = draw(width(gpt2), seed=13)
    local = write_saelens(snap / "layer_1", w, "jumprelu", 1, "hook_resid_post")
    (cache / "models--someone--my-saes" / "refs").mkdir(parents=True)
    (cache / "models--someone--my-saes" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    got = load_sae("hf:someone/my-saes/layer_1", lm=gpt2.lm)
    assert got.identity == load_sae(local).identity and (got.layer, got.site, got.activation) == (1, "resid_post", "jumprelu")
    assert load_sae("hf:someone/my-saes/layer_1", name="mine").name == "mine"
    with pytest.raises(SAEUnavailableError, match="cannot fetch 'hf:someone/other-saes'"):
        load_sae("hf:someone/other-saes")


# -- explain / score / connections on latents ------------------------------------------------------
def test_explain_and_score_a_latent_with_the_rules_explainer(gpt2, tmp_path):
    w = draw(width(gpt2), seed=11)
    gpt2.add_sae(write_saelens(tmp_path / "e", w, "topk", 2, "hook_resid_post", k=K), name="expl")
    idx = gpt2.index(CORPUS, units="sae:expl", progress=False)
    latent = int(np.argmax(idx.densities(2) * (idx.extremes()[1][0] > 0)))
    rec = idx.record(2, latent)
    expl = nw.explain(rec, "rules")
    assert expl and isinstance(expl[0], str)
    scored = nw.score(rec, expl[0], "rules", store=False)
    assert scored.explanation == expl[0]
    # the new scorers take a latent's record too: detection on the sparsest latent (random windows must not fire)
    dens = idx.densities(2)
    sparse = int(np.argmin(np.where(dens > 0, dens, np.inf)))
    srec = idx.record(2, sparse)
    got = nw.score(srec, nw.explain(srec, "rules")[0], "rules", scorer="detection", store=False)
    assert got.scorer == "detection" and got.score is not None and 0 <= got.score <= 1, got.note
    # fuzzing marks a top window's active tokens: a latent active on some tokens, not all (the sparsest),
    # with held-out top windows (a corpus ten times longer gives them)
    longer = gpt2.index([f"{t} Line {j}." for j in range(10) for t in CORPUS], units="sae:expl", progress=False)
    lrec = longer.record(2, sparse)
    fuzz = nw.score(lrec, nw.explain(lrec, "rules")[0], "rules", scorer="fuzzing", store=False)
    assert fuzz.scorer == "fuzzing" and fuzz.score is not None and 0 <= fuzz.score <= 1, fuzz.note
    # the search store keeps it under the unit space, apart from the model's neurons
    from neuronwidget.explanations.store import ExplanationStore

    store = ExplanationStore(tmp_path / "store.sqlite")
    assert rec.model == "tiny sae:expl"
    nw.score(rec, expl[0], "rules", store=store)
    word = next(w for w in re.findall(r"[A-Za-z]{3,}", expl[0]))
    found = nw.search(word, model="tiny sae:expl", store=store)
    assert list(found[["layer", "neuron"]].itertuples(index=False, name=None)) == [(2, latent)]
    assert nw.search(word, model="tiny", store=store).empty


def test_trained_topk_sae_on_a_tiny_slice_is_cached_and_loads_as_saelens(gpt2, tmp_path):
    from neuronwidget.activations.sae_train import train_sae

    kw = dict(layer=1, site="resid_post", d_sae=48, k=4, steps=60, batch_tokens=256, max_tokens=2048,
              cache_dir=tmp_path, progress=False)
    sae, report = train_sae(gpt2.lm, CORPUS, **kw)
    assert (sae.activation, sae.k, sae.d_sae, sae.format) == ("topk", 4, 48, "saelens")
    assert 0.2 < report["fraction_variance_explained"] <= 1
    assert report["l0"] <= 4
    again, report2 = train_sae(gpt2.lm, CORPUS, **kw)  # from the cache: no second training
    assert report2 == report and torch.equal(again.W_enc, sae.W_enc)
    assert (sae.W_dec.norm(dim=1) - 1).abs().max() < 1e-4


def test_nw_api_connections_top_latents_and_effect(tmp_path):
    from neuronwidget.api import get_engine

    eng = get_engine("tiny")
    w = draw(width(eng), seed=13)
    sae = nw.load_sae(write_saelens(tmp_path / "api", w, "topk", 2, "hook_resid_post", k=K), model="tiny", name="api")
    assert sae.units == "sae:api" and eng.saes["api"] is sae
    con = nw.latent_connections(2, 7, units="sae:api", model="tiny", k=5)
    m = eng.lm.model
    logits = m.lm_head.weight.detach() @ (m.transformer.ln_f.weight.detach() * w["W_dec"][7])
    strings = eng.lm.token_strings()
    assert [t for t, _ in con.output_tokens] == [strings[int(i)] for i in logits.topk(5).indices]
    assert [t for t, _ in con.suppressed_tokens] == [strings[int(i)] for i in (-logits).topk(5).indices]
    reads = m.transformer.wte.weight.detach() @ w["W_enc"][:, 7]
    assert [t for t, _ in con.input_tokens] == [strings[int(i)] for i in reads.topk(5).indices]
    dec = w["W_dec"] / w["W_dec"].norm(dim=1, keepdim=True)
    cos = dec @ dec[7]
    cos[7] = -2
    assert [i for i, _ in con.nearest] == cos.topk(5).indices.tolist()
    assert "<code>" in con._repr_html_()
    text = "The Eiffel Tower is in Paris."
    top = nw.top_latents(text, -1, units="sae:api", model="tiny")
    ids = eng.lm.encode(text)
    f = reference_encode("topk", w, hooked(eng, [ids], 2, "resid_post"), K)[0, -1]
    assert [i for i, _ in top] == [int(i) for i in f.topk(len(top)).indices] and len(top) == K
    eff = nw.latent_effect(text, top[0][0], units="sae:api", model="tiny")
    assert len(eff.tokens) == len(eff.kl) == len(eff.values) == len(ids) and eff.delta_logp[-1] is None
    assert max(eff.kl) > 0 and eff.values[-1] == pytest.approx(top[0][1], rel=1e-4)
    # what ablating it promotes and suppresses: the largest rises and falls of the next-token
    # probabilities, from the clean and ablated logits (latent_logits == a manual hook, tested above)
    from neuronwidget.explore.latents import _sae
    from neuronwidget.subject.units import latent_logits

    clean, ablated = latent_logits(eng.lm, _sae("sae:api", "tiny")[1], ids, ablate=[top[0][0]])
    change = torch.softmax(ablated[-1], -1) - torch.softmax(clean[-1], -1)
    strings = eng.lm.token_strings()
    assert [t for t, _ in eff.promoted[-1]] == [strings[i] for i in change.topk(5).indices.tolist()][:len(eff.promoted[-1])]
    assert [t for t, _ in eff.suppressed[-1]] == [strings[i] for i in (-change).topk(5).indices.tolist()][:len(eff.suppressed[-1])]
    assert len(eff.promoted) == len(eff.suppressed) == len(ids)
    for ups, downs in zip(eff.promoted, eff.suppressed):
        assert len(ups) <= 5 and all(v > 0 for _, v in ups) and [v for _, v in ups] == sorted((v for _, v in ups), reverse=True)
        assert all(v < 0 for _, v in downs)
    steered = nw.steer_latent("The Eiffel Tower is", {7: 50.0}, units="sae:api", model="tiny", max_new_tokens=6)
    assert steered.plain != steered.steered
    with pytest.raises(ValueError, match="reads layer 2, not 1"):
        nw.latent_connections(1, 7, units="sae:api", model="tiny")


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_one_pass_builds_neurons_and_saes_equal_to_separate_builds(which, request, tmp_path):
    eng = request.getfixturevalue(which)
    d = width(eng)
    a = eng.add_sae(write_saelens(tmp_path / "a", draw(d, seed=21), "topk", 1, "hook_resid_post", k=K), name=f"{which}-a")
    b = eng.add_sae(write_saelens(tmp_path / "b", draw(d, seed=22), "jumprelu", 2, "hook_mlp_out"), name=f"{which}-b")
    corpus = CORPUS[:20]
    together = tmp_path / "together"
    idx = eng.index(corpus, with_units=[a.units, b.units], progress=False, cache_dir=together)
    assert idx.ready_layers() == list(range(eng.n_layers))
    # the same indexes, bit for bit, as separate builds in another cache folder
    from neuronwidget.activations.build import IndexBuilder

    for units in (None, a.units, b.units):
        both = IndexBuilder(eng.unit_model(units), corpus, cache_dir=together)
        got = both.run(progress=False)
        assert not both.built  # found on disk, written by the one pass
        one = IndexBuilder(eng.unit_model(units), corpus, cache_dir=tmp_path / "apart")
        assert one.run(progress=False).checksums() == got.checksums() and one.built
    assert eng.index(corpus, units=b.units, progress=False, cache_dir=together).density(2, 0) >= 0


def test_neuronview_shows_a_latent(tmp_path):
    from neuronwidget.api import get_engine
    from neuronwidget.widgets import NeuronView

    eng = get_engine("tiny")
    w = draw(width(eng), seed=17)
    nw.load_sae(write_saelens(tmp_path / "view", w, "topk", 2, "hook_resid_post", k=K), model="tiny", name="view")
    idx = eng.index(CORPUS, units="sae:view", progress=False)
    latent = int(np.argmax(idx.extremes()[1][0]))
    view = NeuronView(2, latent, model="tiny", index=idx, explainer="rules", simulator="rules")
    top = idx.record(2, latent).most_positive_activation_records[0]
    assert [round(float(v), 3) for v in top.activations if v] and view._data["top_total"] == len(
        idx.record(2, latent).most_positive_activation_records)
    assert "sae:view" in view._data["header"]["model"] and not view.signed
    from test_widgets import ask

    text = "The Eiffel Tower is in Paris."
    reply = ask(view, "try", text=text)  # the front end's command, through the widget's comm handler
    want = eng.activations(text, 2, latent, units="sae:view").activations
    from neuronwidget.widgets import present as pr

    row = reply["row"]
    assert reply["type"] == "try" and len(row["text"]) == len(want)
    tips = "\n".join(pr.tip(row, i) for i in range(len(row["text"])))
    for i, v in enumerate(want):
        assert f" at {i}: {pr.format_activation(v)} (" in tips
    ids = eng.lm.encode(text)
    direct = reference_encode("topk", w, hooked(eng, [ids], 2, "resid_post"), K)[0, :, latent]
    np.testing.assert_allclose(want, direct.numpy(), rtol=1e-4, atol=1e-4)
    steer = ask(view, "steer", prompt="The Eiffel Tower", strength=5)
    assert steer["type"] == "steer" and "decoder direction" in steer["note"], steer
    eff = ask(view, "effect", text=text)
    assert eff["type"] == "effect" and "ablating sae:view latent" in eff["title"], eff
    want_eff = nw.latent_effect(text, latent, units="sae:view", model="tiny")
    assert eff["kl"] == pytest.approx(want_eff.kl)
    shown = [[x["token"] for x in p] for p in eff["promoted"]]  # the view shows the first few of each
    assert [t[:len(v)] for t, v in zip(([t for t, _ in p] for p in want_eff.promoted), shown)] == shown
    assert all(bool(v) == bool(p) for v, p in zip(shown, want_eff.promoted))
    with pytest.raises(ValueError, match="has latents at layer 2 only"):
        view.goto(1, 0)


def test_neuronview_draws_a_latents_connections(tmp_path):
    from neuronwidget.api import get_engine
    from neuronwidget.widgets import NeuronView

    eng = get_engine("tiny")
    w = draw(width(eng), seed=19)
    nw.load_sae(write_saelens(tmp_path / "conn", w, "standard", 1, "hook_resid_post"), model="tiny", name="conn")
    idx = eng.index(CORPUS, units="sae:conn", progress=False)
    view = NeuronView(1, 4, model="tiny", index=idx, explainer="rules", simulator="rules")
    got = view._data["connections"]
    want = nw.latent_connections(1, 4, units="sae:conn", model="tiny", k=8)
    assert "error" not in got and got["family"] == "latent"
    assert [x["token"] for x in got["output_promoted"]] == [t for t, _ in want.output_tokens]
    assert [x["token"] for x in got["input_tokens"]] == [t for t, _ in want.input_tokens]
    # the nearest latents by decoder cosine: buttons that go to them (not repeated in the definition line)
    assert [(x["layer"], x["neuron"]) for x in got["nearest"]] == [(1, i) for i, _ in want.nearest]
    assert got["nearest"][0]["label"] == f"latent {want.nearest[0][0]} (cos {want.nearest[0][1]:.2f})"
    assert "nearest latents" not in got["definition"]


def test_top_neurons_ranks_latents_with_units(tmp_path):
    from neuronwidget.api import get_engine

    eng = get_engine("tiny")
    w = draw(width(eng), seed=23)
    nw.load_sae(write_saelens(tmp_path / "top", w, "topk", 3, "hook_resid_pre", k=K), model="tiny", name="top")
    idx = eng.index(CORPUS, units="sae:top", progress=False)
    text = "The Eiffel Tower is in Paris."
    table = nw.top_neurons(text, 2, k=4, model="tiny", index=idx, units="sae:top")
    f = reference_encode("topk", w, hooked(eng, [eng.lm.encode(text)], 3, "resid_pre"), K)[0, 2]
    mx = idx.extremes()[1][0]
    want = sorted(((float(f[i]) / mx[i], i) for i in range(D_SAE) if f[i] > 0), reverse=True)[:4]
    assert table["neuron"].tolist() == [i for _, i in want] and set(table["layer"]) == {3}
    np.testing.assert_allclose(table["normalized"], [v for v, _ in want], rtol=1e-4)
    np.testing.assert_allclose(table["activation"], [float(f[i]) for _, i in want], rtol=1e-4)
    with pytest.raises(ValueError, match="by='effect' ranks neurons"):
        nw.top_neurons(text, 2, model="tiny", index=idx, units="sae:top", by="effect")


def test_an_interrupted_one_pass_build_resumes_to_the_same_indexes(gpt2, tmp_path):
    from neuronwidget.activations.build import IndexBuilder
    from neuronwidget.activations.together import build_together

    sae = gpt2.add_sae(write_saelens(tmp_path / "r", draw(width(gpt2), seed=29), "topk", 1, "hook_resid_post", k=K),
                       name="resume")
    um = gpt2.unit_model(sae.units)
    settings = dict(batch_size=4, checkpoint_every=1, checkpoint_seconds=0.0, cache_dir=tmp_path / "c")

    def stop_after_3(done, total, message):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_together(gpt2.lm, [um], CORPUS, progress=stop_after_3, **settings)
    parts = [IndexBuilder(gpt2.lm, CORPUS, **settings), IndexBuilder(um, CORPUS, **settings)]
    assert all(b.checkpoint_path.exists() for b in parts)
    seen = []
    nidx, (uidx,) = build_together(gpt2.lm, [um], CORPUS, progress=lambda d, t, m: seen.append((d, m)), **settings)
    assert seen[0] == (3, "resumed") and not any(b.checkpoint_path.exists() for b in parts)
    for model, got in ((gpt2.lm, nidx), (um, uidx)):
        apart = IndexBuilder(model, CORPUS, batch_size=4, cache_dir=tmp_path / "apart")
        assert apart.run(progress=False).checksums() == got.checksums()
