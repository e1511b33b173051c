"""TokenView and ExplanationCard: views of plain data, no engine needed."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from neuronwidget.records import SIDES, ScoredExplanation
from neuronwidget.widgets import static_html as sh
from neuronwidget.widgets._base import BaseView, Packer
from neuronwidget.widgets.messages import CardData, CardSeq, Rec, TokensData
from neuronwidget.widgets.tokens import char_groups


def _as_sequences(tokens: Any, values: Any) -> tuple[list[list[str]], list[np.ndarray]]:
    if isinstance(tokens, str):
        raise ValueError("tokens must be a list of token strings (or a list of such lists), got a single str")
    tokens = list(tokens)
    nested = bool(tokens) and not isinstance(tokens[0], str)
    seqs = [list(t) for t in tokens] if nested else [tokens]
    vals = [np.asarray(v, dtype=np.float32).ravel() for v in values] if nested else [np.asarray(values, dtype=np.float32).ravel()]
    if len(seqs) != len(vals):
        raise ValueError(f"got {len(seqs)} token sequences but {len(vals)} value sequences; give one per sequence")
    for i, (t, v) in enumerate(zip(seqs, vals)):
        if not all(isinstance(x, str) for x in t):
            raise ValueError(f"sequence {i}: tokens must be strings")
        if len(t) != len(v):
            raise ValueError(f"sequence {i}: {len(t)} tokens but {len(v)} values; give one value per token")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"sequence {i}: values must be finite numbers (found NaN or inf)")
    return seqs, vals


def _as_bytes(token_bytes: Any, seqs: list[list[str]]) -> list[list[bytes] | None]:
    if token_bytes is None:
        return [None] * len(seqs)
    rows = list(token_bytes)
    nested = len(seqs) > 1 or (bool(rows) and not isinstance(rows[0], (bytes, bytearray)))
    rows = [list(r) for r in rows] if nested else [rows]
    if len(rows) != len(seqs) or any(len(r) != len(t) for r, t in zip(rows, seqs)):
        raise ValueError("token_bytes must be shaped like tokens: one bytes object per token")
    if not all(isinstance(b, (bytes, bytearray)) for r in rows for b in r):
        raise ValueError("token_bytes must hold bytes objects (the raw bytes of each token)")
    return [[bytes(b) for b in r] for r in rows]


class TokenView(BaseView):
    """Coloured tokens for any sequence(s) and values: ``TokenView(tokens, values)``.

    ``tokens`` is a list of strings, or a list of such lists (one row each) with
    ``values`` shaped alike. One colour scale is shared by all rows: ``max_value``
    (default: the largest absolute value). ``diverging=True`` colours negatives blue.
    ``token_bytes`` (shaped like ``tokens``; e.g. ``ActivationRecord.token_bytes``) lets a
    character split over byte tokens show as the character.
    """

    def __init__(self, tokens: Sequence[str] | Sequence[Sequence[str]], values: Any, *,
                 max_value: float | None = None, diverging: bool = False, title: str | None = None,
                 token_bytes: Sequence[bytes] | Sequence[Sequence[bytes]] | None = None) -> None:
        seqs, vals = _as_sequences(tokens, values)
        raw = _as_bytes(token_bytes, seqs)
        if max_value is None:
            peaks = [float(np.max(np.abs(v) if diverging else v)) for v in vals if v.size]
            max_value = max(peaks, default=0.0)
        if not np.isfinite(max_value):
            raise ValueError(f"max_value must be a finite number, got {max_value}")
        pk = Packer()
        self._groups = [char_groups(b) for b in raw]
        rows: list[Rec] = []
        for t, v, g in zip(seqs, vals, self._groups):
            rows.append({"tokens": t, "a": pk.add(v), **({"g": g} if g else {})})  # type: ignore[typeddict-item]
        data: TokensData = {
            "seqs": rows,
            "max": float(max_value),
            "min": -float(max_value) if diverging else 0.0,  # one symmetric scale
            "diverging": bool(diverging),
        }
        if title:
            data["title"] = str(title)
        super().__init__(_view_kind="tokens", _data=data, _buf=pk.tobytes())
        self._seqs, self._vals = seqs, vals

    def _static_html(self) -> str:
        d = self._data
        rows = "".join(sh.token_row(t, v.tolist(), d["max"], min_value=d["min"], diverging=d["diverging"], groups=g)
                       for t, v, g in zip(self._seqs, self._vals, self._groups))
        title = f'<div style="font-weight:600">{sh.esc(d["title"])}</div>' if d.get("title") else ""
        return sh.box(title + rows + sh.legend(d["max"], d["diverging"], d["min"]))


def card_side(scored: ScoredExplanation, side: str | None = None) -> str:
    """Which side a card explains: given, else the explanation's own ``side`` when it has one."""
    side = side or getattr(scored, "side", None) or "positive"
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def card_data(scored: ScoredExplanation, pk: Packer, max_value: float, *, side: str | None = None,
              fresh: bool = False) -> CardData:
    """JSON for one explanation card; activations go into ``pk``'s buffer."""
    sim = scored.scored_simulation
    seqs: list[CardSeq] = []
    for s in sim.scored_sequence_simulations:
        simulation = s.simulation
        normalized = simulation.activation_scale == "simulated_normalized_activations"
        seqs.append({
            "kind": s.kind,
            "tokens": list(simulation.tokens),
            "real": pk.add(s.true_activations),
            "sim": None if simulation.failed else pk.add(simulation.expected_activations),
            "sim_max": 10.0 if normalized else float(max_value),
            "error": simulation.error,
            "score": s.ev_correlation_score,
        })
    return {
        "explanation": scored.explanation,
        "score": scored.score,
        "score_text": scored.formatted(),
        "top_score": sim.top_only_score,
        "random_score": sim.random_only_score,
        "rsquared": sim.rsquared_score,
        "explainer": scored.explainer,
        "simulator": scored.simulator,
        "note": sim.note,
        "neuron": str(scored.neuron_id) if scored.neuron_id else None,
        "side": card_side(scored, side),  # type: ignore[typeddict-item]
        "max": float(max_value),
        "fresh": bool(fresh),
        "seqs": seqs,
    }


def _max_true(scored: ScoredExplanation) -> float:
    peaks = [max(s.true_activations) for s in scored.scored_simulation.scored_sequence_simulations if s.true_activations]
    return float(max(peaks, default=0.0))


class ExplanationCard(BaseView):
    """An explanation with its score and the real vs simulated activations it was scored on."""

    def __init__(self, scored: ScoredExplanation, *, max_value: float | None = None, side: str | None = None) -> None:
        if not isinstance(scored, ScoredExplanation):
            raise ValueError(f"ExplanationCard needs a ScoredExplanation (from nw.score), got {type(scored).__name__}")
        self._scored = scored
        self._side = card_side(scored, side)
        self._max = float(max_value) if max_value is not None else _max_true(scored)
        pk = Packer()
        data = card_data(scored, pk, self._max, side=self._side)
        super().__init__(_view_kind="card", _data=data, _buf=pk.tobytes())

    def _static_html(self) -> str:
        return sh.box(sh.card_html(self._scored, self._max, side=self._side) + sh.legend(self._max))
