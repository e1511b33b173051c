"""The notebook widgets from Python: state, binary transport, static fallback, security,
and NeuronView's messages on the real tiny engine."""

from __future__ import annotations

import json
import os
import re
import threading
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


# ---- NeuronView on the real tiny engine ------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_index):
    """The real tiny engine and its index (built once per session, see conftest)."""
    _, engine, index = tiny_index
    return engine, index


def capture(view):
    """Record what the widget sends to the front end (the comm's side of the boundary)."""
    sent: list[tuple[dict, list]] = []
    view.send = lambda content, buffers=None: sent.append((content, list(buffers or [])))
    return sent


def test_neuronview_state_carries_engine_values_as_binary(tiny):
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    state, paths, buffers = state_buffers(view)
    assert paths == [["_buf"]]
    data = state["_data"]
    record = index.record(1, 3)
    hd = data["header"]
    assert hd["model"] == engine.model_name and "random weights" in hd["model"] and hd["is_tiny"]
    assert (hd["layer"], hd["neuron"]) == (1, 3) and hd["max"] == pytest.approx(record.max_activation)
    assert hd["corpus"] == index.corpus_name
    assert data["top_total"] == len(record.most_positive_activation_records) > len(data["top"]) == 10
    for got, want in zip(data["top"], record.most_positive_activation_records):
        assert got["tokens"] == want.tokens
        np.testing.assert_array_equal(unpack(buffers[0], got["a"]), np.float32(want.activations))
    for got, want in zip(data["random"], record.random_sample):
        np.testing.assert_array_equal(unpack(buffers[0], got["a"]), np.float32(want.activations))
    edges, counts = index.histogram(1, 3)
    assert data["hist"]["counts"] == [int(c) for c in counts]
    assert data["cards"] == [] and data["explainer"].startswith("baseline")
    payload = len(json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")})) + sum(map(len, buffers))
    print(f"\ninitial NeuronView payload: {payload} bytes (JSON + float32 buffer, without the bundle)")
    assert payload < 100_000


def test_neuronview_messages_try_more_goto(tiny):
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    sent = capture(view)
    text = "The café’s menu <b>costs</b> 5 €\n\tdone"
    view._on_custom_msg(view, {"type": "try", "text": text, "id": 7}, [])
    view.wait(60)
    (reply, bufs), = sent
    want = engine.activations(text, 1, 3)
    assert reply["type"] == "try" and reply["id"] == 7 and reply["tokens"] == want.tokens
    np.testing.assert_array_equal(unpack(bufs[0], reply["a"]), np.float32(want.activations))

    view._on_custom_msg(view, {"type": "more", "group": "top", "start": 10, "stop": 15}, [])
    reply, bufs = sent[-1]
    want = index.top_records(1, 3, 10, 15)
    assert [r["tokens"] for r in reply["records"]] == [r.tokens for r in want]
    np.testing.assert_array_equal(unpack(bufs[0], reply["records"][4]["a"]), np.float32(want[4].activations))

    view._on_custom_msg(view, {"type": "goto", "layer": 2, "neuron": 5}, [])
    assert (view.layer, view.neuron) == (2, 5) and view._data["header"]["neuron"] == 5
    view._on_custom_msg(view, {"type": "goto", "layer": 99, "neuron": 5}, [])
    assert sent[-1][0]["type"] == "error" and "layer must be in 0..3" in sent[-1][0]["message"]
    assert "layer must be in 0..3" in view._status["error"] and (view.layer, view.neuron) == (2, 5)
    with pytest.raises(ValueError, match="neuron must be in 0..383"):
        NeuronView(1, 384, model="tiny", index=index)


def test_neuronview_test_and_explain_return_scored_cards(tiny):
    from neuronwidget.api import score
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(0, 7, model="tiny", index=index, explainer="baseline", simulator="baseline")
    sent = capture(view)
    view._on_custom_msg(view, {"type": "test", "explanation": HOSTILE[0]}, [])
    view.wait(120)
    (reply, bufs), = [s for s in sent if s[0]["type"] == "card"]
    card = reply["card"]
    want = score(index.record(0, 7), HOSTILE[0], "baseline")
    assert card["explanation"] == HOSTILE[0] and card["score"] == want.score
    assert card["explainer"] == "you (typed in this view)" and card["simulator"].startswith("baseline")
    assert [s["kind"] for s in card["seqs"]] == [s.kind for s in want.scored_simulation.scored_sequence_simulations]
    first = want.scored_simulation.scored_sequence_simulations[0]
    np.testing.assert_array_equal(unpack(bufs[0], card["seqs"][0]["real"]), np.float32(first.true_activations))
    assert view._status == {}

    view._on_custom_msg(view, {"type": "explain"}, [])
    view.wait(120)
    cards = [s[0]["card"] for s in sent if s[0]["type"] == "card"]
    assert len(cards) == 2 and cards[1]["explainer"].startswith("baseline") and cards[1]["explanation"]
    assert [s.explanation for s in view.explanations] == [cards[1]["explanation"], HOSTILE[0]]
    # going away and back keeps them; the static fallback shows them escaped
    view._on_custom_msg(view, {"type": "goto", "layer": 0, "neuron": 8}, [])
    view._on_custom_msg(view, {"type": "goto", "layer": 0, "neuron": 7}, [])
    assert len(view._data["cards"]) == 2
    html = view._repr_html_()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    tags, attrs = parse_tags(html)
    assert attrs <= {"class", "style", "title"}


def test_no_api_key_reaches_widget_state_html_or_errors(tiny):
    from neuronwidget.explanations import OpenAIBackend
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    secret = "sk-test-SECRET-7f3a9c"
    backend = OpenAIBackend("gpt-4.1-mini", base_url="http://127.0.0.1:9/v1", api_key=secret, max_retries=0,
                            timeout=5, cache=False)
    view = NeuronView(1, 3, model="tiny", index=index, explainer=backend, simulator=backend)
    sent = capture(view)
    view._on_custom_msg(view, {"type": "test", "explanation": "anything"}, [])
    view.wait(60)
    # an unreachable simulator shows up in the view: as an error, or as a card of failed records
    failed_card = [c for c, _ in sent if c["type"] == "card" and all(q["error"] for q in c["card"]["seqs"])]
    assert view._status.get("error") or (failed_card and failed_card[0]["card"]["note"])
    blob = json.dumps(view.get_state(), default=lambda b: bytes(b).hex()) + view._repr_html_() + repr(view)
    blob += json.dumps([s[0] for s in sent]) + str(view._repr_mimebundle_())
    assert secret not in blob


def test_neuronview_save_html(tiny, tmp_path):
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    page = view.save_html(tmp_path / "n.html").read_text()
    assert "layer 1 · neuron 3" in page and "random weights" in page and "<script" not in page
    assert page.count('class="nw-tok"') >= 10 * 19 + 2 * 64
    assert len(view._repr_html_()) < 80_000  # saved notebooks stay small


def test_slow_work_reports_progress_and_can_be_cancelled(tiny):
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index, simulator="baseline", diverging=True)
    assert view._data["diverging"] is True
    sent = capture(view)
    statuses: list[dict] = []
    view.observe(lambda change: statuses.append(change["new"]), names="_status")
    gate = threading.Event()
    view._slow.submit(gate.wait, 30)  # hold the worker so the cancel lands before scoring starts
    view._on_custom_msg(view, {"type": "test", "explanation": "objects"}, [])
    assert statuses[-1]["task"] == "scoring your explanation"  # progress shows at once
    view._on_custom_msg(view, {"type": "test", "explanation": "again"}, [])
    assert "still running" in sent[-1][0]["message"]  # one slow task at a time, said in the view
    view._on_custom_msg(view, {"type": "cancel"}, [])
    gate.set()
    view.wait(60)
    assert "cancelled" in view._status["error"]
    assert not [c for c, _ in sent if c["type"] == "card"]
    # and the next request runs normally
    view._on_custom_msg(view, {"type": "test", "explanation": "objects"}, [])
    view.wait(60)
    assert [c for c, _ in sent if c["type"] == "card"] and view._status == {}


def test_split_utf8_characters_get_byte_hints(tiny):
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    sent = capture(view)
    view._on_custom_msg(view, {"type": "try", "text": "café 日本", "id": 1}, [])
    view.wait(60)
    reply = sent[-1][0]
    assert reply["tokens"] == engine.tokenize("café 日本")
    hints = reply["hints"]
    assert len(hints) == len(reply["tokens"])
    for tok, hint in zip(reply["tokens"], hints):
        assert (hint is not None) == ("\ufffd" in tok)
    assert any(h and "of “é”" in h for h in hints) and any(h and "日" in h for h in hints)
    assert any(h and h.startswith("bytes c3") for h in hints)
