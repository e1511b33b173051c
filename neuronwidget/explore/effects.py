"""What a neuron does to the model's output, measured by intervening on it.

- :func:`neuron_effect`: replace one neuron's value on a text (zero, the corpus mean, a
  constant, k × its own value) and compare the next-token distributions at every position;
  plus the *measured* output side: over the neuron's top records from the index, ablated where
  it fires, which next tokens lose or gain the most probability (beside the weight-based
  output tokens of :func:`neuronwidget.explore.connections.connections`).
- :func:`steer`: greedy continuations of a prompt with and without neurons clamped.
- :func:`effect_ranking` (``top_neurons(..., by="effect")``): every neuron of every layer ranked
  by attribution (activation × gradient of the next-token log-probability), the strongest
  checked by true ablation.

All model work goes through :mod:`neuronwidget.subject.intervene` (the capture seam); this
module only resolves the user's terms (the corpus mean, strengths as multiples of a neuron's
maximum) and presents the results. Model and user text reach HTML escaped, as text.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..records import check_layer_neuron
from ..subject.intervene import Edit, ablate_at, attribution, edited_logits, greedy

MODES = ("zero", "mean", "constant", "scale")
MAX_NEW_TOKENS = 512
FIRES = 0.5  # "where it fires": at least this fraction of the window's own extreme activation


# -- checks --------------------------------------------------------------------------------------
def _engine(model: Any) -> Any:
    from ..api import get_engine

    return get_engine(model)


def _text_ids(engine: Any, text: Any, what: str = "text") -> list[int]:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a non-empty string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} is empty; give at least one word of {what}")
    ids = engine._ids(text)
    limit = engine.lm.max_text_tokens
    if len(ids) > limit:
        raise ValueError(f"{what} has {len(ids)} tokens; at most {limit} fit in {engine.lm.short_name}'s context")
    return ids


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or isinstance(value, (str, bytes)) or not hasattr(value, "__float__"):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return v


def resolve_mode(mode: Any, value: Any, index_fn: Any, layer: int, neuron: int) -> tuple[str, float]:
    """The subject-level (mode, value) for a user's mode: "mean" reads the index's mean."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in MODES)}; got {mode!r}")
    if mode in ("zero", "mean"):
        if value is not None:
            raise ValueError(f"mode={mode!r} takes no value (value= is for 'constant' and 'scale')")
        if mode == "zero":
            return "zero", 0.0
        index = index_fn()
        mean = index.mean_activation(layer, neuron) if hasattr(index, "mean_activation") else index.record(layer, neuron).mean
        if mean is None or not math.isfinite(mean):
            raise ValueError(f"the index records no mean activation for L{layer}/N{neuron}; use mode='zero' or 'constant'")
        return "constant", float(mean)
    if value is None:
        what = "the constant to put in" if mode == "constant" else "the factor k (value = k × its own value)"
        raise ValueError(f"mode={mode!r} needs value=: {what}")
    return mode, _number(value, "value")


def _show(token: str) -> str:
    return token.replace("\n", "↵").replace("\t", "⇥")


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


# -- the effect on one text ------------------------------------------------------------------------
@dataclass
class MeasuredOutput:
    """Over a neuron's top (or bottom) records, the neuron ablated (zeroed) where it fires:
    mean change of each next token's probability at those positions."""

    side: str
    n_records: int
    n_positions: int
    lost: list[tuple[str, float]]  # lose probability when ablated: the neuron promotes them
    gained: list[tuple[str, float]]  # gain probability when ablated: the neuron suppresses them
    mean_kl: float
    weight_promoted: list[tuple[str, float]] = field(default_factory=list)  # from the weights (connections)
    weight_suppressed: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def toks(items):
            return [{"token": t, "value": float(v)} for t, v in items]

        return {"side": self.side, "n_records": self.n_records, "n_positions": self.n_positions,
                "lost": toks(self.lost), "gained": toks(self.gained), "mean_kl": self.mean_kl,
                "weight_promoted": toks(self.weight_promoted), "weight_suppressed": toks(self.weight_suppressed)}


TABLE_COLUMNS = ["position", "token", "next_token", "activation", "intervened", "delta_logprob", "kl",
                 "promoted", "suppressed"]


@dataclass
class NeuronEffect:
    """The result of :func:`neuron_effect`. ``table``: one row per token (see TABLE_COLUMNS);
    ``measured``: the output side measured over the index's records (None if not asked)."""

    model: str
    layer: int
    neuron: int
    mode: str
    value: float | None  # what was put in (mode "mean": the index's mean; "scale": k)
    table: Any  # pandas DataFrame
    measured: MeasuredOutput | None = None

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for r in self.table.itertuples(index=False):
            rows.append({"position": int(r.position), "token": r.token,
                         "next_token": r.next_token if isinstance(r.next_token, str) else None,
                         "activation": float(r.activation), "intervened": float(r.intervened),
                         "delta_logprob": None if r.delta_logprob != r.delta_logprob else float(r.delta_logprob),
                         "kl": float(r.kl),
                         "promoted": [{"token": t, "value": float(v)} for t, v in r.promoted],
                         "suppressed": [{"token": t, "value": float(v)} for t, v in r.suppressed]})
        return {"model": self.model, "layer": self.layer, "neuron": self.neuron, "mode": self.mode,
                "value": self.value, "rows": rows,
                "measured": None if self.measured is None else self.measured.to_dict()}

    def _repr_html_(self) -> str:
        v = self.value
        what = "zeroed" if self.mode == "zero" else {"mean": f"set to its corpus mean ({v:.4g})",
                                                     "constant": f"set to {v:.4g}", "scale": f"scaled by {v:.4g}"}[self.mode]
        head = (f"<div class='nw-effect'><b>L{self.layer}/N{self.neuron}</b> {_esc(what)} — {_esc(self.model)}"
                "<table><tr><th>token</th><th>next</th><th>act.</th><th>Δ log p(next)</th><th>KL</th>"
                "<th>promoted</th><th>suppressed</th></tr>")

        def toks(items):
            return ", ".join(f"{_esc(repr(_show(t)))} {v:+.3g}" for t, v in items)

        body = []
        for r in self.table.itertuples(index=False):
            dl = "" if r.delta_logprob != r.delta_logprob else f"{r.delta_logprob:+.4f}"
            nxt = _esc(repr(_show(r.next_token))) if isinstance(r.next_token, str) else ""
            body.append(f"<tr><td>{_esc(repr(_show(r.token)))}</td><td>{nxt}</td><td>{r.activation:.3g}</td>"
                        f"<td>{dl}</td><td>{r.kl:.4f}</td><td>{toks(r.promoted)}</td><td>{toks(r.suppressed)}</td></tr>")
        out = head + "".join(body) + "</table>"
        m = self.measured
        if m is not None:
            def col(items):
                return "<br>".join(f"{_esc(repr(_show(t)))} {v:+.3g}" for t, v in items) or "—"

            out += (f"<p>Measured over {m.n_records} {'top' if m.side == 'positive' else 'bottom'} records "
                    f"({m.n_positions} positions where it fires), zeroed there; mean KL {m.mean_kl:.4f}</p>"
                    "<table><tr><th>lose probability (measured)</th><th>promoted by its weights</th>"
                    "<th>gain probability (measured)</th><th>suppressed by its weights</th></tr>"
                    f"<tr><td>{col(m.lost)}</td><td>{col(m.weight_promoted)}</td><td>{col(m.gained)}</td>"
                    f"<td>{col(m.weight_suppressed)}</td></tr></table>")
        return out + "</div>"


def _top_changes(delta: torch.Tensor, strings: list[str], k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(most raised, most lowered) of a [vocab] change, strictly positive / negative only."""
    k = min(k, delta.numel())
    up_v, up_i = torch.topk(delta, k)
    dn_v, dn_i = torch.topk(-delta, k)
    up = [(strings[i], float(v)) for v, i in zip(up_v.tolist(), up_i.tolist()) if v > 0]
    dn = [(strings[i], -float(v)) for v, i in zip(dn_v.tolist(), dn_i.tolist()) if v > 0]
    return up, dn


def effect_table(engine: Any, ids: list[int], text: str, layer: int, neuron: int, mode: str, value: float,
                 positions: Any = None, k: int = 5):
    """The per-token DataFrame of one intervention on one text (see :data:`TABLE_COLUMNS`)."""
    import pandas as pd

    lm = engine.lm
    res = edited_logits(lm, torch.tensor([ids]), [Edit(layer, neuron, mode, value, positions)])
    lc = torch.log_softmax(res.clean_logits[0], -1)
    le = torch.log_softmax(res.edited_logits[0], -1)
    pc, pe = lc.exp(), le.exp()
    kl = (pc * (lc - le)).sum(-1).clamp(min=0).tolist()
    delta = pe - pc
    kk = min(k, delta.shape[-1])
    up_v, up_i = (x.tolist() for x in torch.topk(delta, kk, dim=-1))  # every position at once
    dn_v, dn_i = (x.tolist() for x in torch.topk(-delta, kk, dim=-1))
    nxt_ids = torch.tensor(ids[1:] + [0])
    dl = (le.gather(1, nxt_ids[:, None]) - lc.gather(1, nxt_ids[:, None]))[:, 0].tolist()
    strings = lm.token_strings()
    toks = lm.pieces(ids, text)[0]
    before = res.clean_values[(layer, neuron)][0].tolist()
    after = res.edited_values[(layer, neuron)][0].tolist()
    rows = []
    for t in range(len(ids)):
        last = t + 1 == len(ids)
        up = [(strings[i], v) for v, i in zip(up_v[t], up_i[t]) if v > 0]
        dn = [(strings[i], -v) for v, i in zip(dn_v[t], dn_i[t]) if v > 0]
        rows.append((t, toks[t], None if last else toks[t + 1], before[t], after[t],
                     float("nan") if last else dl[t], kl[t], up, dn))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def measured_output(engine: Any, index: Any, layer: int, neuron: int, *, side: str = "positive",
                    n_records: int = 16, k: int = 10, batch: int = 4) -> MeasuredOutput:
    """The neuron zeroed where it fires (≥ FIRES × the window's own maximum; ``side="negative"``:
    ≤ FIRES × its minimum, on the bottom records) in its top ``n_records`` index windows; the
    next tokens whose probability falls / rises most on average over those positions."""
    if not hasattr(index, "window_tokens"):
        raise ValueError(f"{type(index).__name__} keeps no token ids; the measured output side needs an index "
                         f"built by engine.index()")
    lm = engine.lm
    ids, acts = index.window_tokens(layer, neuron, side, stop=n_records)
    if side == "positive":
        ext = acts.max(1, keepdims=True)
        fires = (acts > 0) & (acts >= FIRES * ext)
    else:
        ext = acts.min(1, keepdims=True)
        fires = (acts < 0) & (acts <= FIRES * ext)
    vocab = None
    total, kl_sum, n_pos = None, 0.0, 0
    for s in range(0, len(ids), batch):
        rows = [r for r in range(s, min(s + batch, len(ids))) if fires[r].any()]
        if not rows:
            continue
        mask = torch.from_numpy(fires[rows])
        res = edited_logits(lm, torch.from_numpy(ids[rows]), [Edit(layer, neuron, "zero", 0.0, mask)])
        lc = torch.log_softmax(res.clean_logits, -1)[mask]
        le = torch.log_softmax(res.edited_logits, -1)[mask]
        d = (le.exp() - lc.exp()).sum(0)
        vocab = d.numel()
        total = d if total is None else total + d
        kl_sum += float((lc.exp() * (lc - le)).sum(-1).clamp(min=0).sum())
        n_pos += int(mask.sum())
    if total is None:
        return MeasuredOutput(side, 0, 0, [], [], float("nan"))
    mean = total / max(n_pos, 1)
    strings = lm.token_strings()
    gained, lost = _top_changes(mean, strings[:vocab], k)
    return MeasuredOutput(side, int(min(len(ids), n_records)), n_pos, lost, gained, kl_sum / max(n_pos, 1))


def neuron_effect(text: str, layer: int, neuron: int, mode: str = "zero", value: float | None = None,
                  positions: Any = None, model: Any = None, *, index: Any = None, records: int = 16, side: str = "positive",
                  k: int = 5) -> NeuronEffect:
    """What neuron ``(layer, neuron)`` does to the model's next-token predictions on ``text``.

    The neuron's value is replaced at ``positions`` (None = every token; token indices, negative
    from the end) by: ``mode="zero"``; ``"mean"`` (its mean over the index's corpus);
    ``"constant"`` (``value``); ``"scale"`` (``value`` × its own value). ``.table`` has one row per
    token: the token, the next token, the neuron's activation and the value put in, the change
    in log-probability of the actual next token, KL(clean ‖ intervened) of the next-token
    distributions and the ``k`` tokens whose probability rose / fell most.

    ``records`` > 0 adds ``.measured``: over the neuron's top ``records`` index windows
    (``side="negative"``: bottom windows, for signed neurons), zeroed where it fires, which
    next tokens lose / gain most probability, beside the weight-based output tokens.
    ``model``: None = the configured model; ``index``: None = its default-corpus index (read
    only for mode="mean" and for ``records`` > 0).
    """
    engine = _engine(model)
    lm = engine.lm
    layer, neuron = check_layer_neuron(layer, neuron, lm.n_layers, lm.n_neurons, lm.short_name)
    if isinstance(records, bool) or not isinstance(records, int) or records < 0:
        raise ValueError(f"records must be an int >= 0 (0: no measured output side), got {records!r}")
    if side not in ("positive", "negative"):
        raise ValueError(f"side must be 'positive' or 'negative', got {side!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    ids = _text_ids(engine, text)
    cache: dict[str, Any] = {}

    def get_index() -> Any:
        if "i" not in cache:
            cache["i"] = index if index is not None else engine.index()
        return cache["i"]

    sub_mode, sub_value = resolve_mode(mode, value, get_index, layer, neuron)
    if positions is not None:
        from ..subject.intervene import positions_mask

        positions = positions_mask([positions] if isinstance(positions, int) else positions, len(ids))
    table = effect_table(engine, ids, text, layer, neuron, sub_mode, sub_value, positions, k)
    measured = None
    if records:
        measured = measured_output(engine, get_index(), layer, neuron, side=side, n_records=records, k=10)
        from .connections import connections

        conn = connections(lm.model, layer, neuron, token_strings=lm.token_strings(), k=10)
        measured.weight_promoted, measured.weight_suppressed = conn.output_promoted, conn.output_suppressed
    shown = None if mode == "zero" else sub_value
    return NeuronEffect(lm.short_name, layer, neuron, mode, shown, table, measured)


# -- steering --------------------------------------------------------------------------------------
@dataclass
class Steering:
    """Greedy continuations of ``prompt`` without (``plain``) and with (``steered``) the clamp."""

    model: str
    prompt: str
    strengths: dict[tuple[int, int], float]
    values: dict[tuple[int, int], float]  # the activation each neuron was clamped to
    absolute: bool
    plain: str
    steered: str
    plain_ids: list[int]
    steered_ids: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "prompt": self.prompt, "plain": self.plain, "steered": self.steered,
                "neurons": [{"layer": lay, "neuron": n, "strength": self.strengths[(lay, n)],
                             "value": self.values[(lay, n)]} for lay, n in self.values],
                "absolute": self.absolute}

    def _repr_html_(self) -> str:
        how = ", ".join(f"L{lay}/N{n} = {v:.4g}" + ("" if self.absolute else f" ({self.strengths[(lay, n)]:+g} × range)")
                        for (lay, n), v in self.values.items())
        cell = "style='white-space:pre-wrap;vertical-align:top;border:1px solid #ccc;padding:4px'"
        return (f"<div class='nw-steer'><div>{_esc(self.model)}: clamped {_esc(how)} at every token</div>"
                f"<div style='white-space:pre-wrap'><b>prompt</b> {_esc(self.prompt)}</div>"
                f"<table><tr><th>plain</th><th>steered</th></tr><tr><td {cell}>{_esc(self.plain)}</td>"
                f"<td {cell}>{_esc(self.steered)}</td></tr></table></div>")


def steering_values(engine: Any, neurons: Any, absolute: bool, index_fn: Any) -> tuple[dict, dict]:
    """({(layer, neuron): strength}, {(layer, neuron): activation to clamp to}), checked."""
    lm = engine.lm
    if not isinstance(neurons, dict) or not neurons:
        raise ValueError("neurons must be a non-empty dict {(layer, neuron): strength, ...}")
    strengths, values = {}, {}
    for key, s in neurons.items():
        if not isinstance(key, tuple) or len(key) != 2:
            raise ValueError(f"neurons' keys must be (layer, neuron) tuples, got {key!r}")
        layer, neuron = check_layer_neuron(key[0], key[1], lm.n_layers, lm.n_neurons, lm.short_name)
        s = _number(s, f"strength of L{layer}/N{neuron}")
        strengths[(layer, neuron)] = s
    for (layer, neuron), s in strengths.items():
        if absolute:
            values[(layer, neuron)] = s
            continue
        index = index_fn()
        mx, mn = index.max_activation(layer, neuron), index.min_activation(layer, neuron)
        if s < 0 and lm.signed and mn < 0:
            values[(layer, neuron)] = -s * mn  # the negative side: a multiple of its minimum
        elif mx > 0:
            values[(layer, neuron)] = s * mx
        else:
            raise ValueError(f"L{layer}/N{neuron} never fires above 0 in the index, so a strength relative to its "
                             f"maximum means nothing; pass absolute=True with the activation to clamp to")
    return strengths, values


def steer(prompt: str, neurons: dict[tuple[int, int], float], max_new_tokens: int = 40, model: Any = None, *,
          absolute: bool = False, index: Any = None) -> Steering:
    """Greedy continuations of ``prompt`` with and without neurons clamped, side by side.

    ``neurons``: {(layer, neuron): strength}. A strength is a multiple of the neuron's range in
    the index: ``s >= 0`` clamps to ``s × max``; ``s < 0`` on a signed (gated-MLP) neuron clamps
    to ``|s| × min`` (its negative side), on GPT-2 to ``s × max``. ``absolute=True``: each
    strength is the activation itself (no index read). The clamp holds at every token of the
    prompt and of the continuation (never the BOS). Several neurons at once. Generation uses
    the KV cache and stops after ``max_new_tokens`` (1..512) or at the end-of-text token.
    """
    engine = _engine(model)
    lm = engine.lm
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be an int in 1..{MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    if not isinstance(absolute, bool):
        raise ValueError(f"absolute must be True or False, got {absolute!r}")
    ids = _text_ids(engine, prompt, "prompt")
    if len(ids) >= lm.max_text_tokens:
        raise ValueError(f"prompt has {len(ids)} tokens: no room left to generate in {lm.short_name}'s context "
                         f"of {lm.max_text_tokens}")
    strengths, values = steering_values(engine, neurons, absolute,
                                        lambda: index if index is not None else engine.index())
    edits = [Edit(lay, n, "constant", v) for (lay, n), v in values.items()]
    plain_ids = greedy(lm, ids, [], max_new_tokens)
    steered_ids = greedy(lm, ids, edits, max_new_tokens)
    return Steering(lm.short_name, prompt, strengths, values, absolute, _decode(lm, plain_ids),
                    _decode(lm, steered_ids), plain_ids, steered_ids)


def _decode(lm: Any, ids: list[int]) -> str:
    return lm.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# -- which neurons matter at one token ------------------------------------------------------------
EFFECT_COLUMNS = ["layer", "neuron", "side", "activation", "gradient", "attribution", "ablation", "explanation", "score"]


def effect_ranking(engine: Any, text: str, position: Any, k: int = 20, check: int = 10, store: Any = None):
    """Every neuron of every layer ranked by |activation × gradient| of log p(next token) at
    token ``position`` (the actual next token; the model's top prediction at the last token).
    ``attribution`` = activation × gradient, the linear estimate of how much log p(next) falls
    when the neuron is zeroed there; ``ablation``: the true fall (log p clean − log p with the
    neuron zeroed at that token) for the first ``check`` rows, NaN below. ``df.attrs``: the
    target token and its clean log-probability."""
    import pandas as pd

    from .store import get_store, model_key

    lm = engine.lm
    ids = _text_ids(engine, text)
    n = len(ids)
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not -n <= position < n:
        raise ValueError(f"position must be an int token index in 0..{n - 1} (or -{n}..-1), got {position!r}")
    position = int(position) % n
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if isinstance(check, bool) or not isinstance(check, int) or check < 0:
        raise ValueError(f"check must be an int >= 0, got {check!r}")
    acts, grads, target, logp = attribution(lm, ids, position)
    attr = (acts * grads).numpy()
    flat = np.abs(attr).ravel()
    k = min(k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.lexsort((top, -flat[top]))]
    m = lm.n_neurons
    pairs = [divmod(int(i), m) for i in top]
    ablation = np.full(k, np.nan)
    if check:
        clean, edited = ablate_at(lm, ids, position, pairs[:check])
        lc = torch.log_softmax(clean, -1)[target]
        le = torch.log_softmax(edited, -1)[:, target]
        ablation[: len(pairs[:check])] = (lc - le).numpy()
    rows = []
    for (layer, neuron), abl in zip(pairs, ablation):
        a = float(acts[layer, neuron])
        side = "negative" if lm.signed and a < 0 else "positive"
        rows.append({"layer": layer, "neuron": neuron, "side": side, "activation": a,
                     "gradient": float(grads[layer, neuron]), "attribution": float(attr[layer, neuron]),
                     "ablation": float(abl), "explanation": None, "score": None})
    known = (store or get_store()).best(model_key(lm.short_name), {(r["layer"], r["neuron"], r["side"]) for r in rows})
    for r in rows:
        hit = known.get((r["layer"], r["neuron"], r["side"]))
        if hit:
            r["explanation"], r["score"] = hit
    df = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    df.attrs.update(target=lm.token_strings()[target], target_id=target, logprob=logp, position=position)
    return df


__all__ = ["neuron_effect", "steer", "effect_ranking", "NeuronEffect", "Steering", "MeasuredOutput", "MODES",
           "TABLE_COLUMNS", "EFFECT_COLUMNS", "measured_output", "effect_table", "resolve_mode", "steering_values"]
