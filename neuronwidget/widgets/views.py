"""TokenView and ExplanationCard: views of plain data, no engine needed."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from neuronwidget.records import SIDES, ScoredExplanation
from neuronwidget.widgets import present as pr
from neuronwidget.widgets import static_html as sh
from neuronwidget.widgets._base import BaseView
from neuronwidget.widgets.messages import CardData, TokensData
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
        # one symmetric scale for every row
        scale = pr.Scale(float(max_value), -float(max_value) if diverging else 0.0, bool(diverging))
        data: TokensData = {
            "seqs": [pr.row(t, v, scale, groups=char_groups(b)) for t, v, b in zip(seqs, vals, raw)],
            "legend": pr.legend(scale),
        }
        if title:
            data["title"] = str(title)
        super().__init__(_view_kind="tokens", _data=data)

    def _static_html(self) -> str:
        return sh.tokens_html(self._data)


def card_side(scored: ScoredExplanation, side: str | None = None) -> str:
    """Which side a card explains: given, else the explanation's own ``side`` when it has one."""
    side = side or getattr(scored, "side", None) or "positive"
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return side


def card_data(scored: ScoredExplanation, max_value: float, *, side: str | None = None, fresh: bool = False) -> CardData:
    """One explanation card as shown (present.card)."""
    return pr.card(scored, max_value, side=card_side(scored, side), fresh=fresh)


def _max_true(scored: ScoredExplanation) -> float:
    peaks = [max(s.true_activations) for s in scored.scored_simulation.scored_sequence_simulations if s.true_activations]
    return float(max(peaks, default=0.0))


class ExplanationCard(BaseView):
    """An explanation with its score and the real vs simulated activations it was scored on."""

    def __init__(self, scored: ScoredExplanation, *, max_value: float | None = None, side: str | None = None) -> None:
        if not isinstance(scored, ScoredExplanation):
            raise ValueError(f"ExplanationCard needs a ScoredExplanation (from nw.score), got {type(scored).__name__}")
        self._scored = scored
        mx = float(max_value) if max_value is not None else _max_true(scored)
        super().__init__(_view_kind="card", _data=card_data(scored, mx, side=side))

    def _static_html(self) -> str:
        return sh.box(sh.card_html(self._data) + sh.legend_html(self._data["scale"]))
