"""The static fallback: coloured tokens as plain HTML with ``title`` tooltips.

Shown by nbconvert, GitHub and nbviewer where no kernel runs, and written by
``save_html``. Palettes, levels, the 0-10 rule and the legend come from display.json (the
file js/ imports too); numbers are written exactly as js/format.ts writes them
(tests/test_widgets.py runs both and compares). Every string is escaped. Kept small: one
short inline style per coloured token, windows centred on the peak, no script.
"""

from __future__ import annotations

import html
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Sequence

from neuronwidget import records
from neuronwidget.records import ScoredExplanation
from neuronwidget.widgets.messages import Group

DISPLAY = json.loads((Path(__file__).with_name("display.json")).read_text(encoding="utf-8"))
PALETTES: dict[str, dict[str, list[list[int]]]] = DISPLAY["palettes"]
LEVELS: int = DISPLAY["levels"]
MIN_VISIBLE: float = DISPLAY["min_visible"]
TENTHS: int = DISPLAY["tenths"]
SCORE_LEGEND: str = DISPLAY["score_legend"]
SIDES: dict[str, str] = DISPLAY["sides"]
CONTEXT_LEFT, CONTEXT_RIGHT = 12, 6  # as js/neuronview.ts centres top records

# the fallback always draws on its own light box, whatever the host's theme
_BOX = ("font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;padding:8px;border:1px solid #ddd;"
        "border-radius:6px;background:#fff;color:#1a1a1a")
_SEQ = "font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;line-height:1.7;margin:2px 0"
_DIM = "color:#5a5a5a;font-size:12px"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# ---- numbers (as js/format.ts) ---------------------------------------------------------------

def _fixed(v: float, decimals: int) -> str:
    # JS toFixed: the exact binary value rounded, ties away from zero
    s = str(Decimal(v).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
    return s[1:] if s.startswith("-") and not any(c in "123456789" for c in s) else s


def activation_decimals(v: float) -> int:
    """3 significant digits at most: what the index's float16 storage supports."""
    a = abs(v)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def format_activation(v: float) -> str:
    v = float(v)
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return _fixed(v, activation_decimals(v))


def format_score(s: float | None) -> str:
    return records.format_score(s)


# ---- colour (as js/color.ts) -----------------------------------------------------------------

def normalize(value: float, max_abs: float, diverging: bool = False) -> float:
    if not (max_abs > 0) or not math.isfinite(value):
        return 0.0
    t = value / max_abs
    return max(-1.0, min(1.0, t)) if diverging else max(0.0, min(1.0, t))


def discretize(value: float, max_activation: float) -> int:
    """The method's 0-10 scale: min(10, floor(10 * max(a, 0) / max_activation))."""
    if not (max_activation > 0) or not math.isfinite(value):
        return 0
    return min(TENTHS, math.floor(TENTHS * max(value, 0.0) / max_activation))


def level(t: float) -> int:
    if not math.isfinite(t) or abs(t) < MIN_VISIBLE:
        return 0
    lv = max(1, min(LEVELS, _round_half_up(abs(t) * LEVELS)))
    return lv if t > 0 else -lv


def _round_half_up(x: float) -> int:  # JS Math.round for x >= 0
    return math.floor(x + 0.5)


def _ramp(stops: list[list[int]], t: float) -> tuple[int, int, int]:
    x = max(0.0, min(1.0, t)) * (len(stops) - 1)
    i = min(len(stops) - 2, math.floor(x))
    f = x - i
    a, b = stops[i], stops[i + 1]
    return tuple(_round_half_up(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


def level_color(lv: int, theme: str = "light") -> tuple[int, int, int] | None:
    if lv == 0:
        return None
    pal = PALETTES[theme]
    return _ramp(pal["positive"] if lv > 0 else pal["negative"], abs(lv) / LEVELS)


def background(t: float, theme: str = "light") -> tuple[int, int, int] | None:
    return level_color(level(t), theme)


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


def colour_t(v: float, max_value: float, min_value: float | None, diverging: bool) -> float:
    """As js/tokens.ts colourT: [0, 1], or [-1, 1] when diverging (each side to its extreme)."""
    if not math.isfinite(v):
        return 0.0
    if v >= 0:
        return min(1.0, v / max_value) if max_value > 0 else 0.0
    if not diverging:
        return 0.0
    lo = -min_value if min_value is not None and min_value < 0 else max_value
    return -min(1.0, -v / lo) if lo > 0 else 0.0


def tenth_of(v: float, max_value: float, min_value: float | None, diverging: bool) -> int:
    if v < 0 and diverging:
        lo = -min_value if min_value is not None and min_value < 0 else max_value
        k = discretize(-v, lo)
        return -k if k else 0
    return discretize(v, max_value)


def _hex(rgb: Sequence[int]) -> str:
    h = "#%02x%02x%02x" % tuple(rgb)
    return h[::2] if h[1] == h[2] and h[3] == h[4] and h[5] == h[6] else h  # #000000 -> #000


# ---- tokens ----------------------------------------------------------------------------------

def display_token(tok: str) -> str:
    if tok == "":
        return "∅"
    return tok.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def visible_token(tok: str) -> str:
    return display_token(tok).replace(" ", "·")


SPLIT_NOTE = "� = part of a character split across tokens"


def tooltip(tok: str, position: int, value: float, tenth: int) -> str:
    line = f'"{visible_token(tok)}" at {position}: {format_activation(value)} ({tenth}/10)'
    return f"{line}\n{SPLIT_NOTE}" if "\ufffd" in tok else line


def short_tip(value: float, tenth: int) -> str:
    """A static token's title: the value as stored, and its 0-10 value when not 0."""
    return f"{format_activation(value)} ({tenth}/10)" if tenth else format_activation(value)


def token_row(tokens: Sequence[str], values: Sequence[float], max_value: float, *, min_value: float | None = None,
              diverging: bool = False, offset: int = 0, tenths_scale: float | None = None,
              groups: Sequence[Group] = ()) -> str:
    """One row of coloured tokens; a character split over byte tokens is one span."""
    vals = [float(v) for v in values]

    def tenth(v: float) -> int:
        if tenths_scale:
            return min(10, _round_half_up(10 * v / tenths_scale))
        return tenth_of(v, max_value, min_value, diverging)

    def t_of(v: float) -> float:
        if tenths_scale:
            return min(1.0, max(0.0, v / tenths_scale))
        return colour_t(v, max_value, min_value, diverging)

    starts = {g["i"]: g for g in groups if g["n"] > 1 and 0 <= g["i"] and g["i"] + g["n"] <= len(tokens)}
    spans = []
    i = 0
    while i < len(tokens):
        g = starts.get(i)
        n = g["n"] if g else 1
        if g:
            v = max(vals[i:i + n], key=abs)
            pieces = [f"bytes {g['bytes'][k]} at {offset + i + k}: {format_activation(vals[i + k])} ({tenth(vals[i + k])}/10)"
                      for k in range(n)]
            title = f'"{display_token(g["text"])}" = {n} tokens (one character split into bytes):\n  ' + "\n  ".join(pieces)
            text = g["text"]
        else:  # the token is on the page already: its title is its value (keeps saved notebooks small)
            v = vals[i] if i < len(vals) else 0.0
            title, text = short_tip(v, tenth(v)), tokens[i]
            if "\ufffd" in text:
                title += f"\n{SPLIT_NOTE}"
        bg = background(t_of(v))
        style = f' style="background:{_hex(bg)};color:{_hex(text_color(bg))}"' if bg else ""
        spans.append(f'<span{style} title="{esc(title)}">{esc(display_token(text))}</span>')
        i += n
    return f'<div class="nw-seq" style="{_SEQ}">{"".join(spans)}</div>'


def centred(values: Sequence[float], negative: bool = False, groups: Sequence[Group] = ()) -> tuple[int, int]:
    """[lo, hi) of the window around the peak (the lowest value when ``negative``), never
    cutting a character in two: as js/neuronview.ts centres top records."""
    if not values:
        return 0, 0
    pick = min if negative else max
    peak = pick(range(len(values)), key=values.__getitem__)
    lo, hi = max(0, peak - CONTEXT_LEFT), min(len(values), peak + CONTEXT_RIGHT + 1)
    for g in groups:
        if g["i"] < lo < g["i"] + g["n"]:
            lo = g["i"]
        if g["i"] < hi < g["i"] + g["n"]:
            hi = g["i"] + g["n"]
    return lo, hi


def window_groups(groups: Sequence[Group], lo: int, hi: int) -> list[Group]:
    return [{**g, "i": g["i"] - lo} for g in groups if g["i"] >= lo and g["i"] + g["n"] <= hi]


def legend(max_value: float, diverging: bool = False, min_value: float | None = None) -> str:
    steps = [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1] if diverging else [0, 0.25, 0.5, 0.75, 1]
    cells = "".join(f'<span style="display:inline-block;width:14px;height:10px;background:{_hex(bg) if bg else "transparent"}">'
                    f"</span>" for bg in (background(t) for t in steps))
    lo = (min_value if min_value is not None and min_value < 0 else -max_value) if diverging else 0.0
    note = "blue = negative, orange = positive activation" if diverging else "colour = activation (one scale for the whole view)"
    return (f'<div style="{_DIM}">{esc(format_activation(lo))} <span style="border:1px solid #ddd">{cells}</span> '
            f"{esc(format_activation(max_value))} — {note}</div>")


def card_html(scored: ScoredExplanation, max_value: float, details: bool = True, side: str = "positive") -> str:
    """One scored explanation; the details show each record's window around its peak."""
    sim = scored.scored_simulation
    seqs = sim.scored_sequence_simulations
    n_top = sum(1 for s in seqs if s.kind == "top")
    n_random = sum(1 for s in seqs if s.kind == "random")
    parts = [
        '<div class="nw-card" style="border:1px solid #ddd;border-radius:4px;padding:6px;margin:6px 0">',
        f'<div><b style="font-size:16px">{esc(scored.formatted())}</b> '
        f'<span style="font-size:14px">{esc(scored.explanation)}</span></div>',
        f'<div style="{_DIM};font-weight:600">{esc(SIDES.get(side, side))}</div>',
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
    what = "real (−activation) vs simulated" if side == "negative" else "real vs simulated activations"
    parts.append(f"<details><summary>scoring details: {what}, around each record's peak</summary>")
    for s in seqs:
        simulation = s.simulation
        real = list(s.true_activations)
        lo, hi = centred(real)
        toks = simulation.tokens[lo:hi]
        parts.append(f'<div style="{_DIM}">{esc(s.kind or "record")} · r = {esc(format_score(s.ev_correlation_score))}'
                     f"{' · tokens %d–%d of %d' % (lo, hi - 1, len(real)) if (lo, hi) != (0, len(real)) else ''}</div>")
        parts.append(token_row(toks, real[lo:hi], max_value, offset=lo))
        if simulation.failed:
            parts.append(f'<div style="color:#c62828">simulation failed: {esc(simulation.error)}</div>')
        else:
            tenths = 10.0 if simulation.activation_scale == "simulated_normalized_activations" else None
            parts.append(token_row(toks, simulation.expected_activations[lo:hi], max_value, tenths_scale=tenths, offset=lo))
    parts.append("</details></div>")
    return "".join(parts)


# ---- what the neuron does (NeuronView's Effect section) -------------------------------------------

def _changes(items: Sequence[Any]) -> str:
    return ", ".join(f'"{display_token(x["token"])}" {x["value"]:+.2g}' for x in items) or "none"


def effect_tip(reply: Any, i: int) -> str:
    """A token's tooltip in the saved effect row (KL, the next token's Δ log p, what rose and fell)."""
    lines = [f"KL(clean ‖ zeroed) {reply['kl'][i]:.3g}"]
    if i < len(reply["next"]):
        lines.append(f'next "{display_token(reply["next"][i])}": Δ log p {reply["dlogp"][i]:+.3g}')
    lines.append(f"promoted: {_changes(reply['promoted'][i])}")
    lines.append(f"suppressed: {_changes(reply['suppressed'][i])}")
    return "\n".join(lines)


def effect_html(reply: Any, layer: int, neuron: int) -> str:
    """The last effect measured on the user's text: tokens coloured by KL, changes in titles."""
    if not reply:
        return ""
    kl = [float(x) for x in reply["kl"]]
    top = max(kl) if kl else 0.0
    spans = []
    for i, tok in enumerate(reply["tokens"]):
        bg = background(min(1.0, kl[i] / top) if top > 0 else 0.0)
        style = f' style="background:{_hex(bg)};color:{_hex(text_color(bg))}"' if bg else ""
        spans.append(f'<span{style} title="{esc(effect_tip(reply, i))}">{esc(display_token(tok))}</span>')
    return (f'<div style="font-weight:600;margin-top:6px">Effect of zeroing L{layer}/N{neuron} at every token</div>'
            f'<div style="{_DIM}">colour = KL(clean ‖ zeroed) of the next-token prediction (darkest {top:.3g}); '
            f'hover a token for the tokens it promotes and suppresses</div>'
            f'<div class="nw-seq" style="{_SEQ}">{"".join(spans)}</div>')


def steer_html(reply: Any) -> str:
    """The last steered continuation beside the plain one."""
    if not reply:
        return ""
    cell = "white-space:pre-wrap;vertical-align:top;border:1px solid #ccc;padding:4px;font-size:12px"
    return (f'<div style="font-weight:600;margin-top:6px">Steering: strength {reply["strength"]:+g} '
            f'(clamped to {format_activation(reply["value"])} at every token)</div>'
            f'<div style="{_SEQ}">{esc(reply["prompt"])}</div>'
            f'<table style="border-collapse:collapse"><tr><th>plain</th><th>steered</th></tr>'
            f'<tr><td style="{cell}">{esc(reply["plain"])}</td><td style="{cell}">{esc(reply["steered"])}</td></tr></table>')


def box(inner: str) -> str:
    return f'<div class="nw-static" style="{_BOX}">{inner}</div>'


def page(body: str, title: str = "neuronwidget") -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
            f'<body style="margin:16px">{body}</body></html>\n')
