"""SAE latents and transcoder features for users: load or train one, then use ``units="sae:NAME"``.

    sae = nw.load_sae("/path/to/saelens-folder", model="gpt2")   # or params.npz, an OpenAI .pt, hf:OWNER/REPO/...
    sae = nw.train_sae()                                           # SmolLM2-135M, offline, cached
    index = nw.get_engine(model).index(units=sae.units)            # "sae:NAME"
    index.record(sae.layer, 123); index.density(sae.layer, 123)
    nw.latent_connections(sae.layer, 123, units=sae.units)         # output / input tokens, nearest latents
    nw.steer_latent("The capital of France is", {123: 8.0}, units=sae.units)
    nw.latent_effect(text, 123, units=sae.units)                   # ablated at every token: Δ log p, KL
    nw.top_latents(text, position, units=sae.units)

A unit space is an SAE attached to the engine of its model (``Engine.add_sae``); its name is
``"sae:" + sae.name``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..api import get_engine


def _engine(model: Any) -> Any:
    return get_engine(model)


def load_sae(source: Any, model: Any = None, *, name: str | None = None, layer: int | None = None,
             site: str | None = None) -> Any:
    """Load an SAE or transcoder for ``model`` (default: the configured model) and attach it:
    ``units=sae.units`` then names its latents in ``Engine.index``, ``Engine.activations``,
    :func:`latent_connections`, :func:`steer_latent`, :func:`latent_effect`, :func:`top_latents`.
    ``source``: a SAELens folder (cfg.json + sae_weights.safetensors), a Gemma Scope params.npz,
    an OpenAI GPT-2 .pt state dict, ``hf:OWNER/REPO[/SUBFOLDER]`` (online, or in the Hugging Face
    cache), or an SAE. An SAE whose width or layer does not fit the model is a ValueError naming both."""
    return _engine(model).add_sae(source, name=name, layer=layer, site=site)


def train_sae(model: Any = "smollm2-135m", corpus: Any = None, *, progress: bool = True, retrain: bool = False,
              **settings: Any) -> Any:
    """The small TopK SAE trained here on ``model``'s activations over the bundled corpus
    (:func:`neuronwidget.activations.sae_train.train_sae`; cached, so later calls load it),
    attached to the model's engine. Its training report (seconds, variance explained, loss
    increase when spliced in) is ``sae.training``."""
    from ..activations.sae_train import train_sae as _train

    eng = _engine(model)
    sae, report = _train(eng.lm, corpus, progress=progress, retrain=retrain, **settings)
    sae.training = report
    return eng.add_sae(sae)


def _sae(units: Any, model: Any) -> tuple[Any, Any]:
    eng = _engine(model)
    um = eng.unit_model(units)
    if um is eng.lm or len(um.saes) != 1:
        raise ValueError(f"units must name one SAE ('sae:NAME'), got {units!r}")
    return eng, next(iter(um.saes.values()))


@dataclass
class LatentConnections:
    """What a latent reads and writes, from the weights alone."""

    units: str
    layer: int
    latent: int
    output_tokens: list[tuple[str, float]]  # decoder direction through the unembedding: tokens it promotes
    suppressed_tokens: list[tuple[str, float]]  # ... and suppresses (most negative)
    input_tokens: list[tuple[str, float]]  # token embeddings best aligned with its encoder direction
    nearest: list[tuple[int, float]]  # other latents by decoder cosine
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The shape of a neuron's connections (``Connections.to_dict``), so NeuronView draws them,
        plus ``nearest``: the nearest latents by decoder cosine."""
        def toks(items: list[tuple[str, float]]) -> list[dict[str, Any]]:
            return [{"token": t, "value": round(float(v), 6)} for t, v in items]

        return {"model": self.units, "layer": self.layer, "neuron": self.latent, "family": "latent",
                "input_tokens": toks(self.input_tokens), "input_tokens_negative": [],
                "output_promoted": toks(self.output_tokens), "output_suppressed": toks(self.suppressed_tokens),
                "upstream": [], "downstream": [], "nearest": [(i, float(v)) for i, v in self.nearest],
                "definition": ("weights only: input W_E[t]·W_enc[:, i]; output W_dec[i]·diag(final norm)·W_U[t]"
                               + "".join(f"; {n}" for n in self.notes))}

    def _repr_html_(self) -> str:
        def row(title: str, items: list) -> str:
            cells = ", ".join(f"<code>{html.escape(repr(t))}</code> {v:+.2f}" for t, v in items)
            return f"<tr><th style='text-align:left'>{html.escape(title)}</th><td>{cells}</td></tr>"

        return (f"<table><caption>{html.escape(self.units)} layer {self.layer} latent {self.latent}</caption>"
                + row("promotes", self.output_tokens) + row("suppresses", self.suppressed_tokens)
                + row("reads (embeddings)", self.input_tokens) + row("nearest latents (decoder cosine)", self.nearest)
                + "</table>")


def latent_connections(layer: int, latent: int, *, units: str, model: Any = None, k: int = 10) -> LatentConnections:
    """A latent's connections: its decoder direction through the model's final norm weight and
    unembedding (the output tokens it promotes and suppresses), its encoder direction against the
    token embeddings (the input tokens it reads), and the ``k`` latents whose decoder directions
    are nearest by cosine."""
    from ..subject.units import embed_scores, unembed_scores

    eng, sae = _sae(units, model)
    if layer != sae.layer:
        raise ValueError(f"{units} reads layer {sae.layer}, not {layer}")
    latent = sae.check_latent(latent)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 100:
        raise ValueError(f"k must be an integer in 1..100, got {k!r}")
    strings = eng.lm.token_strings()
    out = unembed_scores(eng.lm, sae.W_dec[latent])
    inp = embed_scores(eng.lm, sae.W_enc[:, latent]) if sae.normalize != "layer_norm" else None
    dec = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = dec @ dec[latent]
    cos[latent] = -2
    near = torch.topk(cos, min(k, sae.d_sae - 1))
    top = torch.topk(out, k)
    bottom = torch.topk(-out, k)
    notes = []
    if sae.normalize == "layer_norm":
        notes.append("this SAE layer-normalises its input: input tokens are not shown")
    if inp is not None:
        ti = torch.topk(inp, k)
        input_tokens = [(strings[int(i)], float(v)) for v, i in zip(ti.values, ti.indices)]
    else:
        input_tokens = []
    return LatentConnections(
        units=units, layer=layer, latent=latent,
        output_tokens=[(strings[int(i)], float(v)) for v, i in zip(top.values, top.indices)],
        suppressed_tokens=[(strings[int(i)], -float(v)) for v, i in zip(bottom.values, bottom.indices)],
        input_tokens=input_tokens,
        nearest=[(int(i), float(v)) for v, i in zip(near.values, near.indices)], notes=notes)


@dataclass
class LatentSteering:
    prompt: str
    plain: str
    steered: str
    strengths: dict[int, float]
    units: str

    def __repr__(self) -> str:
        return f"LatentSteering({self.units}, {self.strengths}):\n  plain:   {self.plain!r}\n  steered: {self.steered!r}"


def steer_latent(prompt: str, strengths: dict[int, float], *, units: str, model: Any = None,
                 max_new_tokens: int = 40) -> LatentSteering:
    """Greedy continuations of ``prompt`` without and with ``strength × W_dec[latent]`` added where
    the SAE writes (its site; a transcoder: the MLP output), at every text position."""
    from ..subject.units import latent_greedy

    eng, sae = _sae(units, model)
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    if not isinstance(strengths, dict) or not strengths:
        raise ValueError("strengths must be a non-empty dict {latent: strength}")
    ids = eng.lm.encode(prompt)
    plain = latent_greedy(eng.lm, sae, ids, max_new_tokens, steer={next(iter(strengths)): 0.0})
    steered = latent_greedy(eng.lm, sae, ids, max_new_tokens, steer=strengths)
    dec = eng.lm.tokenizer.decode
    return LatentSteering(prompt, dec(plain), dec(steered), {int(k): float(v) for k, v in strengths.items()}, units)


@dataclass
class LatentEffect:
    """Per token: the latent's value, and what ablating it (removing f × W_dec there) does to the
    next-token prediction (Δ log p of the actual next token, KL(clean ‖ ablated), and the
    tokens whose probability rises most (``promoted``) and falls most (``suppressed``), as
    ``neuron_effect``'s table gives them for a neuron)."""

    units: str
    latent: int
    tokens: list[str]
    values: list[float]
    delta_logp: list[float | None]
    kl: list[float]
    promoted: list[list[tuple[str, float]]] = field(default_factory=list)
    suppressed: list[list[tuple[str, float]]] = field(default_factory=list)


def latent_effect(text: str, latent: int, *, units: str, model: Any = None, k: int = 5) -> LatentEffect:
    from ..subject.units import latent_logits
    from .effects import _top_changes

    eng, sae = _sae(units, model)
    latent = sae.check_latent(latent)
    ids = eng._ids(text)
    clean, ablated = latent_logits(eng.lm, sae, ids, ablate=[latent])
    lp_c, lp_a = torch.log_softmax(clean, -1), torch.log_softmax(ablated, -1)
    kl = (lp_c.exp() * (lp_c - lp_a)).sum(-1).clamp(min=0)
    nxt = ids[1:]
    delta: list[float | None] = [float(lp_a[i, t] - lp_c[i, t]) for i, t in enumerate(nxt)] + [None]
    values = eng.activations(text, sae.layer, latent, units=units).activations
    strings = eng.lm.token_strings()
    changes = [_top_changes(lp_a[i].exp() - lp_c[i].exp(), strings, k) for i in range(len(ids))]
    return LatentEffect(units, latent, eng.tokenize(text), list(values), delta, kl.tolist(),
                        [up for up, _ in changes], [dn for _, dn in changes])


def top_latents(text: str, position: int = -1, *, units: str, model: Any = None, k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` most active latents at token ``position`` of ``text``: [(latent, value)]."""
    eng, sae = _sae(units, model)
    tokens, acts = eng.layer_activations(text, sae.layer, units=units)
    n = len(tokens)
    if isinstance(position, bool) or not isinstance(position, int) or not -n <= position < n:
        raise ValueError(f"position must be an integer in {-n}..{n - 1} for this text, got {position!r}")
    row = np.asarray(acts[position])
    order = np.argsort(-row, kind="stable")[:k]
    return [(int(i), float(row[i])) for i in order if row[i] > 0]


def top_units_rows(engine: Any, text: str, position: int, k: int, units: str, index: Any = None,
                   store: Any = None) -> list[dict[str, Any]]:
    """``top_neurons(..., units="sae:NAME")``: the ``k`` latents with the largest activation ÷
    their index maximum at token ``position`` (rows of ``top.TOP_COLUMNS``; latents have no
    negative side), with the best stored explanation of each."""
    from .store import get_store, model_key

    um = engine.unit_model(units)
    if um is engine.lm:
        raise ValueError(f"units must name an SAE ('sae:NAME'), got {units!r}")
    idx = index if index is not None else engine.index(units=units)
    if getattr(idx, "units", None) != um.units:
        raise ValueError(f"the index given is not of {um.units}; pass engine.index(units={um.units!r})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    rows = []
    for layer in um.unit_layers:
        tokens, acts = engine.layer_activations(text, layer, units=units)
        n = len(tokens)
        if isinstance(position, bool) or not isinstance(position, int) or not -n <= position < n:
            raise ValueError(f"position must be an integer in {-n}..{n - 1} for this text, got {position!r}")
        a = np.asarray(acts[position], dtype=np.float64)
        mx = np.asarray(idx.layer_arrays(layer)["extremes"][:, 1], dtype=np.float64)
        norm = np.where(mx > 0, a / np.where(mx > 0, mx, 1), 0.0)
        for i in np.flatnonzero(a > 0):
            rows.append({"layer": layer, "neuron": int(i), "side": "positive", "activation": float(a[i]),
                         "normalized": float(norm[i]), "explanation": None, "score": None})
    rows.sort(key=lambda r: (-r["normalized"], r["layer"], r["neuron"]))
    rows = rows[:k]
    known = (store or get_store()).best(model_key(um.short_name), {(r["layer"], r["neuron"], "positive") for r in rows})
    for r in rows:
        hit = known.get((r["layer"], r["neuron"], "positive"))
        if hit:
            r["explanation"], r["score"] = hit
    return rows


__all__ = ["LatentConnections", "LatentEffect", "LatentSteering", "latent_connections", "latent_effect", "load_sae",
           "steer_latent", "top_latents", "train_sae"]
