"""Which neurons fire at one token: every layer's MLP activations from one forward pass,
normalised by each neuron's maximum over the index so that neurons of different scales compare.

The value ranked is ``activation / max`` for a positive activation (``max``: the neuron's
largest activation in the index) and, for signed (gated-MLP) neurons, ``activation / min``
for a negative one (side "negative"; ``min``: its lowest activation in the index). GPT-2's
GELU neurons rank their positive side only: their minimum is GELU's (about -0.17).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..subject import mlp_activations
from .store import ExplanationStore, get_store, model_key

TOP_COLUMNS = ["layer", "neuron", "side", "activation", "normalized", "explanation", "score"]


def index_extremes(index: Any, signed: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(max [layers, neurons], min [layers, neurons] or None) of every neuron over ``index``.

    The minimum is given only for ``signed`` neurons (gated MLPs) and when the index records
    it: a GELU neuron's minimum is GELU's own (about -0.17), not something it detects.
    """
    if not callable(getattr(index, "extremes", None)):
        raise ValueError(f"{type(index).__name__} does not give every neuron's maximum; use an engine's index()")
    mn, mx = index.extremes()
    return mx, (mn if signed else None)


def normalise(acts: np.ndarray, mx: np.ndarray, mn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(normalised value, is_negative_side) for activations ``acts`` shaped like ``mx``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where((acts > 0) & (mx > 0), acts / mx, -np.inf)
        if mn is None:
            return pos, np.zeros(acts.shape, dtype=bool)
        neg = np.where((acts < 0) & (mn < 0), acts / mn, -np.inf)
    is_neg = neg > pos
    return np.where(is_neg, neg, pos), is_neg


class TextActivations:
    """Every neuron's activation on every token of one text (one forward pass), ready to rank."""

    def __init__(self, engine: Any, text: str, index: Any = None, *, upto: int | None = None):
        """``upto``: run the model on tokens 0..upto only (attention is causal, so their activations
        are the same as in the whole text): what one position needs, and no more."""
        self.engine = engine
        lm = engine.lm
        ids = engine._ids(text)
        limit = int(getattr(lm, "max_text_tokens", lm.n_ctx))
        if len(ids) > limit:
            raise ValueError(f"text has {len(ids)} tokens; at most {limit} fit in {lm.short_name}'s context")
        self.tokens = engine.token_strings(ids)
        run = ids if upto is None else ids[: self.position(upto) + 1]
        acts = mlp_activations(lm, torch.tensor([run]), range(lm.n_layers))
        # [tokens, layers, neurons]
        self.acts = np.stack([acts[layer][0].numpy() for layer in range(lm.n_layers)], axis=1)
        self.index = index if index is not None else engine.index()
        self.signed = bool(lm.signed)  # gated MLPs: both sides compete
        self.max, self.min = index_extremes(self.index, self.signed)
        if self.max.shape != self.acts.shape[1:]:
            raise ValueError(f"index has {self.max.shape[0]}x{self.max.shape[1]} neurons but the model has "
                             f"{self.acts.shape[1]}x{self.acts.shape[2]}; pass the index built for this model")
        self.model = model_key(lm.short_name)

    def position(self, position: Any) -> int:
        n = len(self.tokens)
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)):
            raise ValueError(f"position must be an int token index in 0..{n - 1} (or -{n}..-1), got {position!r}")
        if not -n <= position < n:
            raise ValueError(f"position {position} is out of range: the text has {n} tokens, "
                             f"so position must be in 0..{n - 1} (or -{n}..-1 from the end)")
        p = int(position) % n
        if hasattr(self, "acts") and p >= len(self.acts):
            raise ValueError(f"position {position}: only tokens 0..{len(self.acts) - 1} were run (upto=)")
        return p

    def top(self, position: Any, k: int = 20, store: ExplanationStore | None = None) -> list[dict[str, Any]]:
        """The ``k`` neurons with the largest normalised activation at token ``position``."""
        rows = self._ranked(self.position(position), _check_k(k))
        self._join(rows, store)
        return rows

    def every_position(self, k: int = 20, store: ExplanationStore | None = None) -> list[list[dict[str, Any]]]:
        """:meth:`top` at every token, with one look-up of known explanations for all of them."""
        tops = [self._ranked(p, _check_k(k)) for p in range(len(self.tokens))]
        self._join([r for rows in tops for r in rows], store)
        return tops

    def _join(self, rows: list[dict[str, Any]], store: ExplanationStore | None) -> None:
        known = (store or get_store()).best(self.model, {(r["layer"], r["neuron"], r["side"]) for r in rows})
        for r in rows:
            hit = known.get((r["layer"], r["neuron"], r["side"]))
            if hit:
                r["explanation"], r["score"] = hit

    def _ranked(self, p: int, k: int) -> list[dict[str, Any]]:
        a = self.acts[p]
        norm, is_neg = normalise(a, self.max, self.min)
        flat = norm.ravel()
        k = min(k, int(np.isfinite(flat).sum()))
        if k == 0:
            return []
        idx = np.argpartition(-flat, k - 1)[:k]
        idx = idx[np.lexsort((idx, -flat[idx]))]  # by value, ties by (layer, neuron)
        n = a.shape[1]
        rows = []
        for i in idx:
            layer, neuron = divmod(int(i), n)
            rows.append({"layer": layer, "neuron": neuron, "side": "negative" if is_neg.ravel()[i] else "positive",
                         "activation": float(a[layer, neuron]), "normalized": float(flat[i]),
                         "explanation": None, "score": None})
        return rows


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    return k


def top_neurons(text: str, position: int, k: int = 20, model: Any = None, *, index: Any = None,
                store: ExplanationStore | None = None, by: str = "activation", check: int = 10, units: str | None = None):
    """The ``k`` neurons (over all layers) that fire most at token ``position`` of ``text``
    (``by="activation"``), or that matter most to the prediction made there (``by="effect"``).

    ``by="effect"``: every neuron of every layer ranked by |activation × gradient of log p(next
    token)| at that token (one forward and one backward pass; no index needed), the first
    ``check`` rows also measured by true ablation (the neuron zeroed at that token); columns
    layer, neuron, side, activation, gradient, attribution, ablation, explanation, score (see
    :func:`neuronwidget.explore.effects.effect_ranking`).

    Returns a pandas DataFrame with columns layer, neuron, side, activation, normalized
    (activation ÷ the neuron's index maximum, or ÷ its minimum for the negative side),
    explanation and score (the best-scored explanation in the store, when there is one),
    highest normalised value first. ``model``: None = the configured model; ``index``: None =
    the model's default-corpus index (built once, cached). ``position`` may count from the end
    (-1 = the last token). ``units="sae:NAME"``: the latents of that SAE instead (attached with
    ``nw.load_sae``), ranked by activation ÷ their index maximum.
    """
    import pandas as pd

    from ..api import get_engine

    if by not in ("activation", "effect"):
        raise ValueError(f"by must be 'activation' (how strongly neurons fire) or 'effect' (how much they change "
                         f"the prediction), got {by!r}")
    engine = get_engine(model)
    _check_k(k)
    if units not in (None, "neurons"):  # SAE latents (``units="sae:NAME"``): explore/latents.py
        if by != "activation":
            raise ValueError("by='effect' ranks neurons; for a latent's effect use nw.latent_effect")
        from .latents import top_units_rows

        return pd.DataFrame(top_units_rows(engine, text, position, k, units, index, store), columns=TOP_COLUMNS)
    if by == "effect":
        from .effects import effect_ranking

        return effect_ranking(engine, text, position, k, check=check, store=store)
    acts = TextActivations(engine, text, index, upto=position)
    return pd.DataFrame(acts.top(position, k, store), columns=TOP_COLUMNS)


__all__ = ["top_neurons", "TextActivations", "index_extremes", "normalise", "TOP_COLUMNS"]
