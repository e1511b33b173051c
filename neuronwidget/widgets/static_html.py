"""The static fallback: a thin HTML template over the presentation model (present.py).

Shown by nbconvert, GitHub and nbviewer where no kernel runs, and written by ``save_html``.
It decides nothing: every string, tooltip and colour level comes from the same payload the
live view draws (``_data``), so a saved notebook prints what the user saw. Every string is
escaped. Kept small: one short inline style per coloured token (the light theme's colours; the
rows' box gives the font and the dark text, a token sets white text only where its colour
needs it), top records as their window around the peak, no script.
"""

from __future__ import annotations

import html
from typing import Any

from neuronwidget.widgets.messages import CardData, Legend, NeuronData, Row, TokensData
from neuronwidget.widgets.present import HEADINGS, columns, hex_color, level_color, text_color, tip, window

# the fallback always draws on its own light box, whatever the host's theme
_BOX = ("font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;padding:8px;border:1px solid #ddd;"
        "border-radius:6px;background:#fff;color:#1a1a1a")
# the rows' box: what every row and token inherits (black text: see _style)
_ROWS = "font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;word-break:break-word;line-height:1.7;color:#000"
_SEQ = "margin:2px 0"
_DIM = "color:#5a5a5a;font-size:12px"
_SECTION = "font-weight:600;margin-top:6px"


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _title(text: str) -> str:
    """A tooltip as a single-quoted attribute: its double quotes (around every token) stay one byte."""
    return "title='" + html.escape(text, quote=False).replace("'", "&#x27;") + "'"


def level_style(lv: int) -> str:
    """A colour level as inline CSS (the light theme's colours): "" for none."""
    bg = level_color(lv)
    return f"background:{hex_color(bg)};color:{hex_color(text_color(bg))};" if bg else ""


def _style(lv: int) -> str:
    """A token's colour inside a rows' box, whose text is already black: its background, and its
    text colour where that is not black."""
    bg = level_color(lv)
    if not bg:
        return ""
    fg = hex_color(text_color(bg))
    return f' style="background:{hex_color(bg)}{"" if fg == "#000" else ";color:" + fg}"'


def rows_html(rows: str) -> str:
    """Rows of tokens (row_html) in the box they inherit their font and black text from."""
    return f'<div style="{_ROWS}">{rows}</div>' if rows else ""


def row_html(r: Row, centred: bool = False) -> str:
    """One row of tokens: each span's text, its colour level, its tooltip as the title; a centred
    row as its window around the peak (… where it is cut)."""
    shown = window(r) if centred else range(len(r["text"]))
    levels = columns(r)[2]
    spans = "".join(f'<span{_style(levels[i])} {_title(tip(r, i))}>{esc(r["text"][i])}</span>' for i in shown)
    before = "…" if centred and r.get("lo", 0) > 0 else ""
    after = "…" if centred and r.get("hi", len(r["text"])) < len(r["text"]) else ""
    return f'<div class="nw-seq" style="{_SEQ}">{before}{spans}{after}</div>'


def legend_html(lg: Legend) -> str:
    """The colour scale: one strip of 14 px cells, one per level (a gradient with hard stops)."""
    n = len(lg["levels"])
    stops = ",".join(f'{hex_color(bg) if (bg := level_color(lv)) else "transparent"} {100 * i / n:g}% {100 * (i + 1) / n:g}%'
                     for i, lv in enumerate(lg["levels"]))
    strip = (f'<span style="display:inline-block;width:{14 * n}px;height:10px;border:1px solid #ddd;'
             f'background:linear-gradient(90deg,{stops})"></span>')
    return (f'<div style="{_DIM}"><span>{esc(lg["lo"])}</span> {strip} '
            f'<span>{esc(lg["hi"])}</span> — <span>{esc(lg["note"])}</span></div>')


def tokens_html(d: TokensData) -> str:
    title = f'<div style="font-weight:600">{esc(d["title"])}</div>' if d.get("title") else ""
    return box(title + rows_html("".join(row_html(r) for r in d["seqs"])) + legend_html(d["legend"]))


def card_html(c: CardData, details: bool = True) -> str:
    """One scored explanation; the details show each record's window around its peak."""
    parts = [
        '<div class="nw-card" style="border:1px solid #ddd;border-radius:4px;padding:6px;margin:6px 0">',
        f'<div><b style="font-size:16px">{esc(c["score_text"])}</b> '
        f'<span style="font-size:14px">{esc(c["explanation"])}</span></div>',
        f'<div style="{_DIM};font-weight:600">{esc(c["side_label"])}</div>',
        f'<div style="{_DIM}">{esc(c["sub"])}</div>',
        f'<div style="{_DIM}">{esc(c["legend"])}</div>',
        f'<div style="{_DIM}">{esc(c["who"])}</div>',
    ]
    if c["note"]:
        parts.append(f'<div style="{_DIM}">{esc(c["note"])}</div>')
    if not details:
        return "".join(parts) + "</div>"
    parts.append(f"<details><summary>{esc(c['summary'])}</summary>")
    for s in c["seqs"]:
        parts.append(f'<div style="{_DIM}">{esc(s["label"])}</div>')
        if s["sim"] is None:
            parts.append(rows_html(row_html(s["real"], centred=True)))
            parts.append(f'<div style="color:#c62828">{esc(s["error"])}</div>')
        else:
            parts.append(rows_html(row_html(s["real"], centred=True)
                                   + row_html({**s["sim"], "text": s["real"]["text"]}, centred=True)))
    parts.append("</details></div>")
    return "".join(parts)


def effect_html(reply: Any) -> str:
    """The last effect measured on the user's text: tokens coloured by KL, changes in titles."""
    if not reply:
        return ""
    return (f'<div style="{_SECTION}">{esc(reply["title"])}</div><div style="{_DIM}">{esc(reply["note"])}</div>'
            + rows_html(row_html(reply["row"])))


def steer_html(reply: Any) -> str:
    """The last steered continuation beside the plain one."""
    if not reply:
        return ""
    cell = "white-space:pre-wrap;vertical-align:top;border:1px solid #ccc;padding:4px;font-size:12px"
    return (f'<div style="{_SECTION}">{esc(reply["title"])}</div><div style="{_DIM}">{esc(reply["note"])}</div>'
            f'<table style="border-collapse:collapse"><tr><th>plain</th><th>steered</th></tr>'
            f'<tr><td style="{cell}">{esc(reply["plain"])}</td><td style="{cell}">{esc(reply["steered"])}</td></tr></table>')


def neuron_html(d: NeuronData, *, samples: Any = (), effect: Any = None, steer: Any = None) -> str:
    """NeuronView as last seen, small: header, cards (without their details), the top records'
    windows, the sample sections the user opened (``samples``: (title, rows) pairs, the rows
    as many as the caller keeps), the last effect and steering, the legend."""
    hd = d["header"]
    parts = [f'<div style="font-size:15px;font-weight:600"><span>{esc(hd["model"])}</span><span>{esc(hd["title"])}</span></div>',
             f'<div style="{_DIM}">{esc(hd["meta"])}</div>']
    if hd["signed"]:
        parts.append(f'<div style="font-size:12px;font-weight:600">{esc(hd["side_note"])}</div>')
    parts.append(f'<div style="{_SECTION}">{esc(HEADINGS["explanations"])}</div>')
    parts += [card_html(c, details=False) for c in d["cards"]] or [f'<div style="color:#5a5a5a">{esc(d["empty"])}</div>']
    parts.append(f'<div style="{_SECTION}">{esc(d["top_title"])}</div>')
    parts.append(rows_html("".join(row_html(r, centred=True) for r in d["top"])))
    for title, rows in samples:
        parts.append(f'<div style="{_SECTION}">{esc(title)}</div>')
        parts.append(rows_html("".join(row_html(r) for r in rows)))
    parts += [effect_html(effect), steer_html(steer), legend_html(d["legend"])]
    return box("".join(parts))


def neuron_rows(rows: list[tuple[str, str, str | None, str | None]], empty: str | None) -> str:
    """The Explorer's and SearchBox's rows of neurons: name, detail, explanation (or that there is
    none yet), score; ``empty`` when there are none."""
    if not rows:
        return f'<div style="color:#5a5a5a">{esc(empty)}</div>' if empty else ""
    cell = "margin-right:8px"
    return "".join(
        f'<div class="nw-xrow"><span class="nw-xid" style="{cell};font-weight:600">{esc(name)}</span>'
        f'<span class="nw-xval" style="{cell}">{esc(detail)}</span>'
        f'<span class="nw-xexpl" style="{cell}{"" if expl else ";color:#5a5a5a"}">{esc(expl or HEADINGS["no_explanation_yet"])}</span>'
        + (f'<span class="nw-xscore">{esc(score)}</span>' if score else "") + "</div>"
        for name, detail, expl, score in rows)


def box(inner: str) -> str:
    return f'<div class="nw-static" style="{_BOX}">{inner}</div>'


def page(body: str, title: str = "neuronwidget") -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
            f'<body style="margin:16px">{body}</body></html>\n')
