"""The notebook widgets from Python: state, binary transport, static fallback, security,
and NeuronView's messages on the real tiny engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from neuronwidget.records import (NeuronId, ScoredExplanation, ScoredSequenceSimulation, ScoredSimulation,
                                  SequenceSimulation)
from neuronwidget.widgets import ExplanationCard, TokenView
from neuronwidget.widgets._base import unpack
from neuronwidget.widgets import static_html as sh

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["<script>alert(1)</script>", '" onmouseover="alert(1)', "&lt;", "javascript:alert(1)"]


def state_buffers(widget):
    """The widget's state split as the comm sends it: JSON part + binary buffers."""
    from ipywidgets.widgets.widget import _remove_buffers

    return _remove_buffers(widget.get_state())


def parse_tags(html: str) -> tuple[set[str], set[str]]:
    from html.parser import HTMLParser

    tags: set[str] = set()
    attrs: set[str] = set()

    class P(HTMLParser):
        def handle_starttag(self, tag, a):
            tags.add(tag)
            attrs.update(k for k, _ in a)

    P().feed(html)
    return tags, attrs


def scored_example(explanation: str = "mentions of cats") -> ScoredExplanation:
    seqs = [
        ScoredSequenceSimulation(
            simulation=SequenceSimulation(tokens=[" the", " cat", HOSTILE[0]], expected_activations=[0.0, 10.0, 1.0]),
            true_activations=[0.0, 2.5, 0.25], ev_correlation_score=0.99, kind="top"),
        ScoredSequenceSimulation(
            simulation=SequenceSimulation(tokens=["\n", " dog"], expected_activations=[], error="no parseable numbers"),
            true_activations=[0.0, 0.1], ev_correlation_score=None, kind="random"),
    ]
    sim = ScoredSimulation(scored_sequence_simulations=seqs, ev_correlation_score=0.87, top_only_score=0.99,
                           random_only_score=None, note="1 of 2 records failed to simulate")
    return ScoredExplanation(explanation=explanation, scored_simulation=sim, neuron_id=NeuronId(1, 3),
                             explainer="baseline: token lookup (no LLM)", simulator="baseline")


def test_tokenview_sends_values_as_float32_buffers():
    values = [[0.5, -1.25, 3.0], [2.0]]
    view = TokenView([[" a", "\n", "b"], ["c"]], values)
    state, paths, buffers = state_buffers(view)
    assert paths == [["_buf"]]
    assert "_buf" not in state and all(isinstance(b, (bytes, memoryview)) for b in buffers)
    data = state["_data"]
    assert data["max"] == 3.0 and data["diverging"] is False
    for seq, expected in zip(data["seqs"], values):
        np.testing.assert_array_equal(unpack(buffers[0], seq["a"]), np.asarray(expected, np.float32))
    assert "1.25" not in json.dumps(state)  # values are not duplicated as JSON


@pytest.mark.parametrize("tokens,values,match", [
    ("abc", [1.0], "single str"),
    (["a", "b"], [1.0], "2 tokens but 1 values"),
    ([["a"], ["b"]], [[1.0]], "2 token sequences but 1"),
    (["a"], [float("nan")], "finite"),
])
def test_tokenview_rejects_bad_input_with_what_is_allowed(tokens, values, match):
    with pytest.raises(ValueError, match=match):
        TokenView(tokens, values)


def test_fallback_html_escapes_hostile_strings():
    view = TokenView(HOSTILE + ["\ufffd"], [1.0, 0.5, 0.0, 2.0, 0.1])
    html = view._repr_mimebundle_()[0]["text/html"]
    assert html == view._repr_html_()
    assert "<script" not in html and 'onmouseover="' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot; onmouseover=&quot;alert(1)" in html
    assert "&amp;lt;" in html  # the literal text "&lt;" stays literal text
    tags, attrs = parse_tags(html)
    assert tags <= {"div", "span", "b", "details", "summary"}
    assert attrs <= {"class", "style", "title"}  # no href/src/on*: a javascript: string stays inert text
    # every token carries a tooltip with the exact activation and the 0-10 value
    assert 'title="token &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;\nposition 0\nactivation 1.0000' in html
    assert "scaled 10/10" in html and "multi-byte" in html


def test_fallback_colours_match_contrast_rules():
    html = TokenView(["lo", "mid", "hi", "zero"], [0.1, 0.6, 1.0, 0.0])._repr_html_()
    spans = re.findall(r'<span class="nw-tok"( style="[^"]*")?', html)
    assert spans[3] == ""  # zero: uncoloured
    for style in spans[:3]:
        bg = tuple(int(x) for x in re.search(r"background-color:rgb\((\d+), (\d+), (\d+)\)", style).groups())
        fg = tuple(int(x) for x in re.search(r";color:rgb\((\d+), (\d+), (\d+)\)", style).groups())
        assert sh.contrast_ratio(bg, fg) >= 4.5


def test_explanation_card_state_and_fallback(tmp_path):
    scored = scored_example(HOSTILE[1])
    card = ExplanationCard(scored)
    state, _, buffers = state_buffers(card)
    data = state["_data"]
    assert data["explanation"] == HOSTILE[1] and data["score"] == pytest.approx(0.87)
    assert data["explainer"].startswith("baseline") and data["simulator"] == "baseline"
    top, failed = data["seqs"]
    np.testing.assert_array_equal(unpack(buffers[0], top["real"]), np.float32([0.0, 2.5, 0.25]))
    np.testing.assert_array_equal(unpack(buffers[0], top["sim"]), np.float32([0.0, 10.0, 1.0]))
    assert top["sim_max"] == 10.0 and failed["sim"] is None and failed["error"] == "no parseable numbers"
    html = card._repr_html_()
    assert "&quot; onmouseover=&quot;alert(1)" in html and "simulation failed: no parseable numbers" in html
    assert "1 = perfect" in html
    page = card.save_html(tmp_path / "card.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "0.87" in page
    with pytest.raises(ValueError, match="ScoredExplanation"):
        ExplanationCard({"explanation": "x"})


def test_js_sources_never_write_html():
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|DOMParser|createContextualFragment")
    sources = sorted((ROOT / "js").rglob("*.ts"))
    assert sources
    hits = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1) if forbidden.search(line)]
    assert hits == []


def test_bundle_is_small_and_self_contained():
    js = (ROOT / "neuronwidget" / "static" / "widget.js").read_bytes()
    css = (ROOT / "neuronwidget" / "static" / "widget.css").read_bytes()
    assert len(js) <= 60_000, f"minified bundle is {len(js)} bytes"
    assert b"http://" not in js.replace(b"http://www.w3.org/2000/svg", b"") and b"https://" not in js
    assert b"@import" not in css and b"url(" not in css
    view = TokenView(["a"], [1.0])
    assert view._esm == js.decode() and view._css == css.decode()
