"""What every view shows, decided once: the presentation model.

Every display rule lives here and nowhere else: how numbers are written, which colour level
a value gets, each token's tooltip, which window of a record is shown around its peak, the
legend, the strings of a card, a header, a histogram, an effect or a steered continuation.
Both renderers are thin templates over what this module builds: the live view (js/, which
draws DOM from these strings and levels and formats nothing) and the saved HTML
(static_html.py). So the live view and a saved notebook print the same strings, and a rule
is changed in one place. Palettes, the 0-10 rule, the score legend and side labels are data
in display.json; the token colour CSS of both themes is generated from it here
(``python -m neuronwidget.widgets.present > js/levels.css``). The views' fixed headings and
notes are ``HEADINGS`` here, written for the live view as js/headings.ts
(``python -m neuronwidget.widgets.present headings > js/headings.ts``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Sequence

from neuronwidget import records
from neuronwidget.widgets.messages import CardData, CardSeq, Group, Histogram, Legend, Row, Strengths

DISPLAY = json.loads((Path(__file__).with_name("display.json")).read_text(encoding="utf-8"))
PALETTES: dict[str, dict[str, list[list[int]]]] = DISPLAY["palettes"]
LEVELS: int = DISPLAY["levels"]
MIN_VISIBLE: float = DISPLAY["min_visible"]
TENTHS: int = DISPLAY["tenths"]
SCORE_LEGEND: str = DISPLAY["score_legend"]
SIDES: dict[str, str] = DISPLAY["sides"]
CODE_ZERO: int = DISPLAY["code_zero"]  # small integers travel as one character each: chr(CODE_ZERO + x)
TOOLTIP: str = DISPLAY["tooltip"]  # a token's tooltip, filled by both renderers (see tip())
LABELLED: str = DISPLAY["labelled"]
BRIEF: str = DISPLAY["brief"]
SUBMIT_KEYS: str = DISPLAY["submit_keys"]
CONTEXT_LEFT, CONTEXT_RIGHT = 12, 6  # tokens shown before / after a record's peak at first
SPLIT_NOTE = "� = part of a character split across tokens"


# ---- numbers ----------------------------------------------------------------------------------

def _fixed(v: float, decimals: int) -> str:
    # the exact binary value rounded, ties away from zero; never "-0.00"
    s = str(Decimal(v).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))
    return s[1:] if s.startswith("-") and not any(c in "123456789" for c in s) else s


def activation_decimals(v: float) -> int:
    """3 significant digits at most: what the index's float16 storage supports."""
    a = abs(v)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3


def format_activation(v: float) -> str:
    """An activation as printed everywhere: 0.689, 12.3, 123."""
    v = float(v)
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return _fixed(v, activation_decimals(v))


def format_score(s: float | None) -> str:
    return records.format_score(s)


def format_signed(v: float) -> str:
    """A change (Δ log p, a probability's change): 3 decimals, or 2 significant digits when tiny; signed."""
    v = float(v)
    s = _fixed(v, 3) if abs(v) >= 0.01 or v == 0 else f"{v:.2g}"
    return f"+{s}" if v > 0 else s


def format_strength(s: float) -> str:
    return f"{'+' if s > 0 else ''}{s:g}"


# ---- colour -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """A view's colour scale: ``max`` is the positive side's 10/10; ``min`` (<= 0) the negative
    side's extreme when ``diverging``; ``tenths`` set: values already on a 0..tenths scale."""

    max: float
    min: float | None = None
    diverging: bool = False
    tenths: float | None = None


def discretize(value: float, max_activation: float) -> int:
    """The method's 0-10 scale: min(10, floor(10 * max(a, 0) / max_activation))."""
    if not (max_activation > 0) or not math.isfinite(value):
        return 0
    return min(TENTHS, math.floor(TENTHS * max(value, 0.0) / max_activation))


def _low(scale: Scale) -> float:
    return -scale.min if scale.min is not None and scale.min < 0 else scale.max


def colour_t(v: float, scale: Scale) -> float:
    """A value on the scale: [0, 1], or [-1, 1] when diverging (each side to its extreme)."""
    if not math.isfinite(v):
        return 0.0
    if scale.tenths:
        return min(1.0, max(0.0, v / scale.tenths))
    if v >= 0:
        return min(1.0, v / scale.max) if scale.max > 0 else 0.0
    if not scale.diverging:
        return 0.0
    lo = _low(scale)
    return -min(1.0, -v / lo) if lo > 0 else 0.0


def tenth_of(v: float, scale: Scale) -> int:
    """0-10 on the side the value is on (negative values: of the lowest activation, shown as -k).
    A simulation (``tenths``) is already on the 0-10 scale: floored as the method scales real ones."""
    if scale.tenths:
        return discretize(v, scale.tenths)
    if v < 0 and scale.diverging:
        k = discretize(-v, _low(scale))
        return -k if k else 0
    return discretize(v, scale.max)


def level(t: float) -> int:
    """Signed colour level in -LEVELS..LEVELS; 0 = no colour (below MIN_VISIBLE of the scale)."""
    if not math.isfinite(t) or abs(t) < MIN_VISIBLE:
        return 0
    lv = max(1, min(LEVELS, math.floor(abs(t) * LEVELS + 0.5)))
    return lv if t > 0 else -lv


def _ramp(stops: list[list[int]], t: float) -> tuple[int, int, int]:
    x = max(0.0, min(1.0, t)) * (len(stops) - 1)
    i = min(len(stops) - 2, math.floor(x))
    f = x - i
    a, b = stops[i], stops[i + 1]
    return tuple(math.floor(a[k] + (b[k] - a[k]) * f + 0.5) for k in range(3))  # type: ignore[return-value]


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


def hex_color(rgb: Sequence[int]) -> str:
    h = "#%02x%02x%02x" % tuple(rgb)
    return h[::2] if h[1] == h[2] and h[3] == h[4] and h[5] == h[6] else h  # #000000 -> #000


def level_class(lv: int) -> str:
    """The CSS class of a level, as js/levels.css names it: nw-p7 / nw-n7; "" for none."""
    return "" if lv == 0 else f"{'nw-p' if lv > 0 else 'nw-n'}{abs(lv)}"


# where a theme is dark: JupyterLab's dark themes and VS Code's dark / high-contrast ones
DARK_SELECTORS = ('body[data-jp-theme-light="false"] .nw-root', "body.vscode-dark .nw-root",
                  "body.vscode-high-contrast:not(.vscode-high-contrast-light) .nw-root")


def theme_css() -> str:
    """js/levels.css: every level's background and text colour in both themes (light by default)."""
    out = ["/* GENERATED by python -m neuronwidget.widgets.present > js/levels.css (from display.json); do not edit */"]
    for theme in ("light", "dark"):
        scopes = (".nw-root",) if theme == "light" else DARK_SELECTORS
        for a in range(1, LEVELS + 1):
            for lv in (a, -a):
                bg = level_color(lv, theme)
                sel = ", ".join(f"{s} .{level_class(lv)}" for s in scopes)
                out.append(f"{sel} {{ background-color: {hex_color(bg)}; color: {hex_color(text_color(bg))}; }}")
    return "\n".join(out) + "\n"


# ---- tokens -----------------------------------------------------------------------------------

def display_token(tok: str) -> str:
    """A token as shown inline: whitespace kept, control characters made visible."""
    if tok == "":
        return "∅"
    return tok.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def tooltip(tok: str, position: int, value: float, tenth: int) -> str:
    """A token's tooltip: display.json's template (the token as shown, in quotes that make its
    spaces visible), plus a note on a piece of a split character."""
    line = TOOLTIP.format(token=display_token(tok), pos=position, value=format_activation(value), tenth=tenth)
    return f"{line}\n{SPLIT_NOTE}" if "\ufffd" in tok else line


def columns(r: Row) -> tuple[list[str], list[int], list[int]]:
    """A row's values as printed, 0-10 values and levels, one per span (js/tokens.ts columns)."""
    values = r["value"].split(" ") if r["value"] or r["text"] else []
    return values, [ord(c) - CODE_ZERO for c in r["tenth"]], [ord(c) - CODE_ZERO for c in r["level"]]


def tip(r: Row, i: int) -> str:
    """Span ``i``'s tooltip: what the live view composes from the same row (js/tokens.ts tipOf)."""
    given = r.get("tips", {}).get(str(i))
    if given is None:
        values, tenths, _ = columns(r)
        given = (BRIEF if r.get("brief") else TOOLTIP).format(token=r["text"][i], pos=r["pos"][i] if "pos" in r else i,
                                                             value=values[i], tenth=tenths[i])
    return LABELLED.format(label=r["label"], tip=given) if r.get("label") else given


def centred(values: Sequence[float], negative: bool = False, groups: Sequence[Group] = ()) -> tuple[int, int]:
    """Tokens [lo, hi) around the peak (the lowest value when ``negative``), never cutting a
    character in two."""
    if not len(values):
        return 0, 0
    vals = [float(v) for v in values]
    pick = min if negative else max
    peak = pick(range(len(vals)), key=vals.__getitem__)
    lo, hi = max(0, peak - CONTEXT_LEFT), min(len(vals), peak + CONTEXT_RIGHT + 1)
    for g in groups:
        if g["i"] < lo < g["i"] + g["n"]:
            lo = g["i"]
        if g["i"] < hi < g["i"] + g["n"]:
            hi = g["i"] + g["n"]
    return lo, hi


def row(tokens: Sequence[str], values: Sequence[float], scale: Scale, *, groups: Sequence[Group] = (),
        label: str | None = None, centre: bool | str = False, brief: bool = False) -> Row:
    """One row of coloured tokens as shown. A character split over byte tokens is one span (its
    tooltip lists every piece with its bytes and value). ``centre`` (True, or "negative" for the
    lowest value): the row also says which spans are shown first, around the peak."""
    vals = [float(v) for v in values]
    starts = {g["i"]: g for g in groups if g["n"] > 1 and 0 <= g["i"] and g["i"] + g["n"] <= len(tokens)}
    text: list[str] = []
    values: list[str] = []
    tenths: list[int] = []
    levels: list[int] = []
    tips: dict[str, str] = {}
    first: list[int] = []  # token index of each span
    i = 0
    while i < len(tokens):
        g = starts.get(i)
        n = g["n"] if g else 1
        v = max(vals[i:i + n], key=abs) if g else (vals[i] if i < len(vals) else 0.0)
        k = len(first)
        if g:
            pieces = [f"  bytes {g['bytes'][j]} at {i + j}: {format_activation(vals[i + j])} "
                      f"({tenth_of(vals[i + j], scale)}/10)" for j in range(n)]
            tips[str(k)] = f'"{display_token(g["text"])}" = {n} tokens (one character split into bytes):\n' + "\n".join(pieces)
        elif "\ufffd" in tokens[i]:
            tips[str(k)] = tooltip(tokens[i], i, v, tenth_of(v, scale))
        text.append(display_token(g["text"] if g else tokens[i]))
        values.append(format_activation(v))
        tenths.append(tenth_of(v, scale))
        levels.append(level(colour_t(v, scale)))
        first.append(i)
        i += n
    out = _row(text, values, tenths, levels)
    if starts:
        out["pos"] = first
    if tips:
        out["tips"] = tips
    if label:
        out["label"] = label
    if brief:
        out["brief"] = True
    if centre:
        lo, hi = centred(vals, centre == "negative", groups)
        out["lo"] = next((k for k, t in enumerate(first) if t >= lo), len(first))
        out["hi"] = next((k for k, t in enumerate(first) if t >= hi), len(first))
    return out


def _row(text: list[str], values: list[str], tenths: list[int], levels: list[int]) -> Row:
    return {"text": text, "value": " ".join(values), "tenth": "".join(chr(CODE_ZERO + x) for x in tenths),
            "level": "".join(chr(CODE_ZERO + x) for x in levels)}


def window(r: Row) -> list[int]:
    """The spans a centred row shows first (all of them when it is not centred)."""
    return list(range(r.get("lo", 0), r.get("hi", len(r["text"]))))


def legend(scale: Scale) -> Legend:
    steps = [-1, -0.75, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1] if scale.diverging else [0, 0.25, 0.5, 0.75, 1]
    lo = -_low(scale) if scale.diverging else 0.0
    note = ("blue = negative, orange = positive activation" if scale.diverging
            else "colour = activation (one scale for the whole view)")
    return {"lo": format_activation(lo), "hi": format_activation(scale.max), "levels": [level(t) for t in steps],
            "note": note}


# ---- cards ------------------------------------------------------------------------------------

def card(scored: Any, max_value: float, *, side: str = "positive", fresh: bool = False) -> CardData:
    """A scored explanation as shown: its strings and, per held-out record, the real activations
    (on the card's positive scale) and the simulated ones (on 0-10 when the simulator predicted
    that scale)."""
    sim = scored.scored_simulation
    seqs_in = sim.scored_sequence_simulations
    n_top = sum(1 for s in seqs_in if s.kind == "top")
    n_random = sum(1 for s in seqs_in if s.kind == "random")
    scale = Scale(float(max_value))
    seqs: list[CardSeq] = []
    for s in seqs_in:
        simulation = s.simulation
        normalized = simulation.activation_scale == "simulated_normalized_activations"
        # real above simulated (rows labelled so), token for token: tooltips say the value and its 0-10 value
        real = row(simulation.tokens, s.true_activations, scale, centre=True, brief=True)
        predicted = None if simulation.failed else row(
            simulation.tokens, simulation.expected_activations, Scale(float(max_value), tenths=10.0 if normalized else None),
            brief=True)
        if predicted is not None:  # the same window as the real row; its text is the real row's (not sent twice)
            predicted["lo"], predicted["hi"], predicted["text"] = real["lo"], real["hi"], []
        seqs.append({"kind": s.kind, "label": f"{s.kind or 'record'} · r = {format_score(s.ev_correlation_score)}",
                     "real": real, "sim": predicted,
                     "error": None if predicted is not None else f"simulation failed: {simulation.error or 'no prediction'}"})
    what = "real (−activation) vs simulated" if side == "negative" else "real vs simulated activations"
    return {
        "explanation": scored.explanation,
        "score": scored.score,
        "score_text": scored.formatted(),
        "side": side,  # type: ignore[typeddict-item]
        "side_label": SIDES.get(side, side),
        "sub": f"top-only {format_score(sim.top_only_score)} · random-only {format_score(sim.random_only_score)} · "
               f"on {n_top} top + {n_random} random held-out texts",
        "legend": SCORE_LEGEND,
        "who": f"explainer: {scored.explainer or 'unknown'} · simulator: {scored.simulator or 'unknown'}",
        "note": sim.note or None,
        "summary": f"scoring details: {what}",
        "neuron": str(scored.neuron_id) if scored.neuron_id else None,
        "explainer": scored.explainer,
        "simulator": scored.simulator,
        "fresh": bool(fresh),
        "scale": legend(scale),
        "seqs": seqs,
    }


# ---- NeuronView's strings -------------------------------------------------------------------------

def neuron_title(layer: int, neuron: int, units: str | None = None) -> str:
    """The view's title after the model's name (which names the unit space): a neuron, or a
    latent when ``units`` is one ("sae:NAME")."""
    if units:
        return f" · layer {layer} · latent {neuron}"
    return f" · layer {layer} · neuron {neuron}"


def activation_range(max_value: float, min_value: float, signed: bool) -> str:
    return (f"activations {format_activation(min_value)} to {format_activation(max_value)}" if signed
            else f"max activation {format_activation(max_value)}")


# The views' fixed headings and notes, shown by the live view (js/headings.ts, generated from this
# dict) and the saved HTML alike; tests/test_widgets.py fails when one is written anywhere else.
HEADINGS: dict[str, str] = {
    "explanations": "Explanations",
    "test": "Test your explanation",
    "try": "Try your text",
    "effect": "Effect: what zeroing or clamping this neuron does",
    "effect_note": ("Type text in “Try your text”: each token shows how much zeroing this neuron there and "
                    "before changes the model's next-token prediction."),
    "steer": "Steer: the model continues a prompt with this neuron clamped at every token",
    "histogram": "Activation histogram",
    "connections": "Connections (from the weights, no corpus)",
    "conn_input": "Input: tokens that excite it most",
    "conn_input_negative": "Input: tokens that drive it most negative",
    "conn_promoted": "Output: tokens it promotes",
    "conn_suppressed": "Output: tokens it suppresses",
    "conn_upstream": "Upstream neurons (strongest)",
    "conn_downstream": "Downstream neurons (strongest)",
    "conn_nearest": "Nearest latents (decoder cosine)",
    "explorer_hint": ("Click or focus a token: the neurons that fire most there, over all layers "
                      "(activation ÷ the neuron's max over the index)."),
    "explorer_none": "No neuron fires above zero here.",
    "explorer_saved": "Run the notebook to click tokens and open neurons.",
    "search": "Search explanations",
    "search_none": "No explanation matches these words.",
    "no_explanation_yet": "no explanation yet",
}


def headings_ts() -> str:
    """js/headings.ts: HEADINGS for the live view."""
    return ("// GENERATED from neuronwidget/widgets/present.py's HEADINGS "
            "(python -m neuronwidget.widgets.present headings > js/headings.ts); do not edit.\n"
            f"export const HEADINGS = {json.dumps(HEADINGS, ensure_ascii=False, indent=2)} as const;\n")


def nearest_latent(latent: int, cosine: float) -> str:
    """A nearest latent's button: its index and its decoder cosine with the latent shown."""
    return f"latent {latent} (cos {_fixed(cosine, 2)})"


def goto_latent(latent: int) -> str:
    return f"go to latent {latent}"


def random_title(n: int) -> str:
    """The folded random samples' heading."""
    return f"Random samples ({n})"


def quantile_title(label: str) -> str:
    """A folded quantile sample's heading."""
    return f"Quantile sample: {label}"


def top_title(side: str) -> str:
    return ("Most negative examples (centred on the lowest token)" if side == "negative"
            else "Top activating examples (centred on the max token)")


def test_title(side: str, signed: bool) -> str:
    return f"{HEADINGS['test']} of the {side} side" if signed else HEADINGS["test"]


def no_explanation(side: str, signed: bool) -> str:
    return f"No explanation for this neuron{f' ({side} side)' if signed else ''} yet."


def quantile_label(i: int, bounds: Sequence[float]) -> str:
    f = format_activation
    if i == 0:
        return f"below {f(bounds[0])}"
    if i >= len(bounds):
        return f"above {f(bounds[-1])}"
    return f"{f(bounds[i - 1])} to {f(bounds[i])}"


def histogram(edges: Sequence[float], counts: Sequence[int], caption: str) -> Histogram:
    e = [round(float(x), 5) for x in edges]
    return {"edges": e, "counts": [int(c) for c in counts],
            "titles": [f"{format_activation(e[i])} to {format_activation(e[i + 1])}: {int(c)} tokens"
                       for i, c in enumerate(counts)],
            "lo": format_activation(e[0]) if e else "", "hi": format_activation(e[-1]) if e else "",
            "caption": str(caption)}


STEER_RANGE, STEER_STEP = 10, 0.5  # the steering slider: -10..10 × the neuron's max (or |min| below 0)


def steer_value(strength: float, max_value: float, min_value: float, signed: bool) -> float:
    """The activation a strength means: × the max, or × |min| below 0 on a signed neuron."""
    return abs(strength) * min_value if (strength < 0 and signed and min_value < 0) else strength * max_value


def strengths(max_value: float, min_value: float, signed: bool) -> Strengths:
    values = [k * STEER_STEP for k in range(int(-STEER_RANGE / STEER_STEP), int(STEER_RANGE / STEER_STEP) + 1)]
    labels = [f"strength {format_strength(s)} {'× |min|' if s < 0 and signed else '× max'} → "
              f"{format_activation(steer_value(s, max_value, min_value, signed))}" for s in values]
    return {"values": values, "labels": labels}


def _changes(items: Sequence[Any]) -> str:
    return ", ".join(f'"{display_token(x["token"])}" {format_signed(x["value"])}' for x in items) or "none"


def effect_tip(reply: Any, i: int) -> str:
    """A token's tooltip in the effect row: KL, the next token's Δ log p, what rose and fell."""
    lines = [f'"{display_token(reply["tokens"][i])}" (token {i}) · KL(clean ‖ zeroed) {reply["kl"][i]:.3g}']
    if i < len(reply["next"]):
        lines.append(f'next "{display_token(reply["next"][i])}": Δ log p {format_signed(reply["dlogp"][i])}')
    lines.append(f"promoted: {_changes(reply['promoted'][i])}")
    lines.append(f"suppressed: {_changes(reply['suppressed'][i])}")
    return "\n".join(lines)


def effect(reply: Any, layer: int, neuron: int) -> None:
    """Add to an effect reply what is shown: the tokens coloured by KL, tooltips, title and note."""
    kl = [float(x) for x in reply["kl"]]
    top = max([x for x in kl if math.isfinite(x)], default=0.0)
    reply["row"] = _row([display_token(t) for t in reply["tokens"]], [f"{x:.3g}" for x in kl], [0] * len(kl),
                        [level(min(1.0, x / top) if top > 0 else 0.0) for x in kl])
    reply["row"]["tips"] = {str(i): effect_tip(reply, i) for i in range(len(kl))}
    reply["title"] = f"Effect of zeroing L{layer}/N{neuron} at every token"
    reply["note"] = (f"colour = KL(clean ‖ zeroed) of each next-token prediction (darkest {top:.3g}); "
                     "hover or click a token for what it promotes and suppresses")


def steer(reply: Any) -> None:
    """Add to a steering reply what is shown above the two continuations."""
    reply["title"] = f"Steering: strength {format_strength(reply['strength'])}"
    reply["note"] = (f"clamped to {format_activation(reply['value'])} (strength {format_strength(reply['strength'])}) "
                     f"at every token of “{reply['prompt']}” and its continuation")


# ---- Explorer and SearchBox rows ------------------------------------------------------------------

def neuron_label(layer: int, neuron: int) -> str:
    """A neuron's name in the Explorer's and SearchBox's rows."""
    return f"L{layer}/N{neuron}"


def search_label(model: str, layer: int, neuron: int, side: str) -> str:
    """A SearchBox result's name: its model and neuron, (−) on the negative side."""
    return f"{model} {neuron_label(layer, neuron)}{' (−)' if side == 'negative' else ''}"


def top_row_detail(normalized: float, activation: float, side: str) -> str:
    return f"{format_activation(normalized)}× max · {format_activation(activation)}" + \
        (" (negative side)" if side == "negative" else "")


def effect_row_detail(attribution: float, ablation: float, activation: float) -> str:
    """An Explorer row ranked by effect, in one convention: the change of log p(next) if the
    neuron is zeroed there, estimated (-attribution, from activation × gradient) and measured
    (-ablation, where checked), then the activation."""
    measured = "" if not math.isfinite(ablation) else f", measured {-ablation:+.3f}"
    return f"Δ log p if zeroed: est. {-attribution:+.3f}{measured} · act. {format_activation(activation)}"


def explorer_effect_head(token: str, position: int, n: int, target: str) -> str:
    return (f"Top {n} neurons for the prediction at {json.dumps(token, ensure_ascii=False)} (token {position}): "
            f"log p({json.dumps(target, ensure_ascii=False)} next)")


EXPLORER_RANKINGS = {"activation": "rank by activation", "effect": "rank by effect on the next token"}


def explorer_levels(peaks: Sequence[float]) -> str:
    """The Explorer's tokens coloured by their strongest neuron (÷ its max), the text's strongest
    token the deepest: levels as one character each (as a Row's)."""
    top = max([p for p in peaks if math.isfinite(p)], default=0.0)
    return "".join(chr(CODE_ZERO + level(min(1.0, p / top) if top > 0 else 0.0)) for p in peaks)


def explorer_head(token: str, position: int, n: int) -> str:
    return f"Top {n} neurons at {json.dumps(token, ensure_ascii=False)} (token {position})"


def score_text(score: float | None) -> str | None:
    return None if score is None else f"score {format_score(score)}"


__all__ = [name for name in dir() if not name.startswith("_")]


if __name__ == "__main__":
    import sys

    sys.stdout.write(headings_ts() if sys.argv[1:] == ["headings"] else theme_css())
