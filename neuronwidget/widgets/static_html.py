"""The static fallback: coloured tokens as plain HTML with ``title`` tooltips.

Shown by nbconvert, GitHub and nbviewer where no kernel runs, and written by
``save_html``. Mirrors js/color.ts and js/format.ts; every string is escaped.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

from neuronwidget.records import ScoredExplanation

# Same palettes as js/color.ts (single-hue orange; blue for negatives).
_ORANGE = [(254, 240, 222), (253, 208, 162), (253, 174, 107), (241, 105, 19), (196, 70, 6), (127, 39, 4)]
_BLUE = [(226, 238, 249), (190, 215, 236), (134, 182, 218), (66, 139, 196), (26, 96, 164), (8, 58, 120)]
MIN_VISIBLE = 0.02

SCORE_LEGEND = (
    "Score = correlation between simulated and real activations, pooled over held-out "
    "top-activating and random texts; 1 = perfect, 0 = no better than chance."
)

_BOX = "font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;padding:8px;border:1px solid #ddd;border-radius:6px"
_SEQ = "font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;line-height:1.7;margin:2px 0"
_DIM = "color:#5a5a5a;font-size:12px"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def normalize(value: float, max_abs: float, diverging: bool = False) -> float:
    if not (max_abs > 0) or not math.isfinite(value):
        return 0.0
    t = value / max_abs
    return max(-1.0, min(1.0, t)) if diverging else max(0.0, min(1.0, t))


def discretize(value: float, max_activation: float) -> int:
    if not (max_activation > 0) or not math.isfinite(value):
        return 0
    return min(10, math.floor(10 * max(value, 0.0) / max_activation))


def _ramp(stops, t: float) -> tuple[int, int, int]:
    x = max(0.0, min(1.0, t)) * (len(stops) - 1)
    i = min(len(stops) - 2, math.floor(x))
    f = x - i
    a, b = stops[i], stops[i + 1]
    # round half away from zero, as JS Math.round does for these positive values
    return tuple(math.floor(a[k] + (b[k] - a[k]) * f + 0.5) for k in range(3))  # type: ignore[return-value]


def background(t: float) -> tuple[int, int, int] | None:
    if abs(t) < MIN_VISIBLE:
        return None
    return _ramp(_ORANGE, t) if t > 0 else _ramp(_BLUE, -t)


def luminance(rgb: Sequence[int]) -> float:
    def lin(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast_ratio(a: Sequence[int], b: Sequence[int]) -> float:
    la, lb = luminance(a), luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def text_color(bg: Sequence[int]) -> tuple[int, int, int]:
    """Black or white text, whichever contrasts more with the background."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast_ratio(bg, black) >= contrast_ratio(bg, white) else white


def display_token(tok: str) -> str:
    if tok == "":
        return "∅"
    return tok.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def visible_token(tok: str) -> str:
    return display_token(tok).replace(" ", "·")


def format_activation(v: float) -> str:
    return f"{v:.4f}" if math.isfinite(v) else str(v)


def format_score(s: float | None) -> str:
    return "n/a" if s is None or not math.isfinite(s) else f"{s:.2f}"


def tooltip(tok: str, position: int, value: float, max_activation: float, tenth: int) -> str:
    lines = [f'token "{visible_token(tok)}"', f"position {position}", f"activation {format_activation(value)}",
             f"scaled {tenth}/10 (max {format_activation(max_activation)})"]
    if "\ufffd" in tok:
        lines.append("� = part of a multi-byte character split across tokens")
    return "\n".join(lines)


def token_row(tokens: Sequence[str], values: Sequence[float], max_value: float, *, diverging: bool = False,
              offset: int = 0, tenths_scale: float | None = None) -> str:
    spans = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        v = float(v)
        scale_max = tenths_scale or max_value
        t = normalize(v, scale_max, diverging)
        tenth = min(10, round(10 * v / tenths_scale)) if tenths_scale else discretize(v, max_value)
        bg = background(t)
        style = ""
        if bg:
            style = f' style="background-color:rgb{bg};color:rgb{text_color(bg)}"'
        title = esc(tooltip(tok, offset + i, v, scale_max, tenth))
        spans.append(f'<span class="nw-tok"{style} title="{title}">{esc(display_token(tok))}</span>')
    return f'<div class="nw-seq" style="{_SEQ}">{"".join(spans)}</div>'


def legend(max_value: float, diverging: bool = False) -> str:
    stops = []
    for i in range(11):
        t = -1 + i / 5 if diverging else i / 10
        bg = background(t)
        stops.append(f"rgb{bg}" if bg else "transparent")
    lo = -max_value if diverging else 0.0
    bar = (f'<span style="display:inline-block;width:140px;height:10px;border:1px solid #ddd;'
           f'background:linear-gradient(to right, {", ".join(stops)})"></span>')
    return (f'<div style="{_DIM}">{esc(format_activation(lo))} {bar} {esc(format_activation(max_value))} '
            f"— colour = activation (one scale for the whole view)</div>")


def card_html(scored: ScoredExplanation, max_value: float, details: bool = True) -> str:
    sim = scored.scored_simulation
    seqs = sim.scored_sequence_simulations
    n_top = sum(1 for s in seqs if s.kind == "top")
    n_random = sum(1 for s in seqs if s.kind == "random")
    parts = [
        f'<div class="nw-card" style="border:1px solid #ddd;border-radius:4px;padding:6px;margin:6px 0">',
        f'<div><b style="font-size:16px">{esc(format_score(scored.score))}</b> '
        f'<span style="font-size:14px">{esc(scored.explanation)}</span></div>',
        f'<div style="{_DIM}">top-only {esc(format_score(sim.top_only_score))} · random-only '
        f"{esc(format_score(sim.random_only_score))} · on {n_top} top + {n_random} random held-out texts</div>",
        f'<div style="{_DIM}">{esc(SCORE_LEGEND)}</div>',
        f'<div style="{_DIM}">explainer: {esc(scored.explainer or "unknown")} · simulator: '
        f'{esc(scored.simulator or "unknown")}</div>',
    ]
    if sim.note:
        parts.append(f'<div style="{_DIM}">{esc(sim.note)}</div>')
    if not details:
        return "".join(parts) + "</div>"
    parts.append("<details><summary>scoring details: real vs simulated activations</summary>")
    for s in seqs:
        simulation = s.simulation
        parts.append(f'<div style="{_DIM}">{esc(s.kind or "record")} · r = {esc(format_score(s.ev_correlation_score))}</div>')
        parts.append(token_row(simulation.tokens, s.true_activations, max_value))
        if simulation.failed:
            parts.append(f'<div style="color:#c62828">simulation failed: {esc(simulation.error)}</div>')
        else:
            tenths = 10.0 if simulation.activation_scale == "simulated_normalized_activations" else None
            parts.append(token_row(simulation.tokens, simulation.expected_activations, max_value, tenths_scale=tenths))
    parts.append("</details></div>")
    return "".join(parts)


def box(inner: str) -> str:
    return f'<div class="nw-static" style="{_BOX}">{inner}</div>'


def page(body: str, title: str = "neuronwidget") -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
            f'<body style="margin:16px">{body}</body></html>\n')
