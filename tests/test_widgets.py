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
from neuronwidget.widgets import present as pr
from neuronwidget.widgets import static_html as sh

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ["<script>alert(1)</script>", '" onmouseover="alert(1)', "&lt;", "javascript:alert(1)"]


def shows(row, tokens, values):
    """A row shows these tokens and, in its tooltips, every token's position and value as printed
    (a character split over byte tokens is one span listing each piece)."""
    if not any("\ufffd" in t for t in tokens):
        assert row["text"] == [pr.display_token(t) for t in tokens]
    tips = "\n".join(tips_of(row))
    for i, v in enumerate(values):
        assert f" at {i}: {pr.format_activation(v)} (" in tips, (i, v)


def tips_of(row) -> list[str]:
    return [pr.tip(row, i) for i in range(len(row["text"]))]


def _tv(rec):
    return rec.tokens, rec.activations


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


def test_tokenview_state_is_its_presentation():
    """What the view shows, decided in Python: per span its text, tooltip and colour level."""
    values = [[0.5, -1.25, 3.0], [2.0]]
    view = TokenView([[" a", "\n", "b"], ["c"]], values)
    state, paths, buffers = state_buffers(view)
    assert paths == [] and buffers == []  # no binary: the state is what is shown
    data = state["_data"]
    first, second = data["seqs"]
    assert first["text"] == [" a", "↵", "b"] and first["value"] == "0.500 -1.25 3.00"
    assert pr.columns(first) == (["0.500", "-1.25", "3.00"], [1, 0, 10], [pr.level(0.5 / 3), 0, 20])
    assert first["level"][1:] == "DX"  # small integers travel as one character: chr(68 + x)
    assert tips_of(first) == ['" a" at 0: 0.500 (1/10)', '"↵" at 1: -1.25 (0/10)', '"b" at 2: 3.00 (10/10)']
    assert pr.columns(second) == (["2.00"], [6], [pr.level(2 / 3)])
    assert data["legend"] == {"lo": "0.000", "hi": "3.00", "levels": [0, 5, 10, 15, 20],
                              "note": "colour = activation (one scale for the whole view)"}


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
    assert "<script" not in html and "onmouseover='" not in html  # titles are single-quoted: their " is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot; onmouseover=&quot;alert(1)" in html
    assert "&amp;lt;" in html  # the literal text "&lt;" stays literal text
    tags, attrs = parse_tags(html)
    assert tags <= {"div", "span", "b", "details", "summary"}
    assert attrs <= {"class", "style", "title"}  # no href/src/on*: a javascript: string stays inert text
    # every token carries its tooltip (as the live view shows it) and its colour level's style (its black
    # text comes from the rows' box)
    assert ('<span style="background:#f78c3f" title=\'"&lt;script&gt;alert(1)&lt;/script&gt;" at 0: '
            '1.00 (5/10)\'>&lt;script&gt;alert(1)&lt;/script&gt;</span>') in html
    assert "(10/10)" in html and pr.SPLIT_NOTE in html


def test_fallback_colours_match_contrast_rules():
    html = TokenView(["lo", "mid", "hi", "zero"], [0.1, 0.6, 1.0, 0.0])._repr_html_()
    spans = re.findall(r'<span( style="[^"]*")? title=', html)
    assert spans[3] == ""  # zero: uncoloured
    box = re.search(r'<div style="([^"]*)"><div class="nw-seq"', html)[1]  # the rows' box: black text
    assert box.endswith(";color:#000")
    rgb = lambda h: tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # noqa: E731
    for style in spans[:3]:
        bg, fg = re.fullmatch(r' style="background:#(\w+)(?:;color:#(\w+))?"', style).groups()
        bg, fg = (rgb(x if len(x) == 6 else "".join(c + c for c in x)) for x in (bg, fg or "000"))
        assert pr.contrast_ratio(bg, fg) >= 4.5


def test_explanation_card_state_and_fallback(tmp_path):
    scored = scored_example(HOSTILE[1])
    card = ExplanationCard(scored)
    data = card.get_state()["_data"]
    assert data["explanation"] == HOSTILE[1] and data["score"] == pytest.approx(0.87) and data["score_text"] == "0.87"
    assert data["who"] == "explainer: baseline: token lookup (no LLM) · simulator: baseline"
    assert data["sub"] == "top-only 0.99 · random-only undefined · on 1 top + 1 random held-out texts"
    top, failed = data["seqs"]
    assert top["label"] == "top · r = 0.99" and tips_of(top["real"])[1] == "2.50 (10/10)"
    # a simulation on the 0-10 scale: its 0-10 value is the method's (floored), the same live and saved
    assert tips_of({**top["sim"], "text": top["real"]["text"]}) == ["0.000 (0/10)", "10.0 (10/10)", "1.00 (1/10)"]
    assert top["sim"]["text"] == []  # the real row's text, not sent twice
    assert failed["sim"] is None and failed["error"] == "simulation failed: no parseable numbers"
    assert data["side"] == "positive" and ExplanationCard(scored, side="negative")._data["side"] == "negative"
    assert pr.SIDES["negative"] in ExplanationCard(scored, side="negative")._repr_html_()
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


def test_views_share_one_copy_of_the_bundle():
    """Each view carries a 1 KB loader; one model per kernel holds the JS/CSS (saved once)."""
    from neuronwidget.widgets._base import shared_bundle

    js = (ROOT / "neuronwidget" / "static" / "widget.js").read_text()
    css = (ROOT / "neuronwidget" / "static" / "widget.css").read_text()
    views = [TokenView(["a"], [1.0]), TokenView(["b"], [2.0]), ExplanationCard(scored_example())]
    holder = shared_bundle()
    assert holder.code == js and holder.style == css
    for view in views:
        state = view.get_state()
        assert state["_bundle_id"] == holder.model_id and state["_bundle_digest"] == holder.digest
        assert state["_esm"] == (ROOT / "neuronwidget" / "static" / "loader.js").read_text() and len(state["_esm"]) < 2_000
        assert state["_css"] == "" and js not in json.dumps(state, default=str)
    # a host whose widget manager cannot hand out the holder: the loader asks the view's kernel side
    assert ask(views[0], "bundle") == {"type": "bundle", "code": js, "style": css}
    holder.close()
    assert shared_bundle() is not holder and shared_bundle().code == js  # made again after a close


def test_esm_and_css_are_paths_for_hot_reload():
    """With ANYWIDGET_HMR=1 views carry the built files as paths (anywidget watches them)."""
    import subprocess
    import sys

    code = ("from neuronwidget.widgets._base import BaseView\n"
            "from pathlib import Path\n"
            "for key in ('_esm', '_css'):\n"
            "    v = BaseView.__dict__[key]\n"
            "    assert key not in BaseView.class_traits()\n"
            "    print(Path(getattr(v, '_path', v)).resolve())\n")
    env = {**os.environ, "ANYWIDGET_HMR": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(ROOT / "neuronwidget" / "static" / "widget.js"), str(ROOT / "neuronwidget" / "static" / "widget.css")]


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


def ask(view, kind: str, name: str | None = None, **fields):
    """One request as the front end sends it (anywidget's invoke): the command message through the
    widget's own comm handler; returns the answer anywidget sends back for it."""
    from neuronwidget.widgets.messages import command_name

    sent: list[dict] = []
    view.send = lambda content, buffers=None: sent.append(content)
    try:
        view._handle_custom_msg({"kind": "anywidget-command", "id": "req-1", "name": name or command_name(kind),
                                 "msg": {"type": kind, **fields}}, [])
    finally:
        del view.send
    (answer,) = sent
    assert answer["kind"] == "anywidget-command-response" and answer["id"] == "req-1"
    return answer["response"]


def test_neuronview_state_carries_engine_values_as_binary(tiny):
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    state, paths, buffers = state_buffers(view)
    assert paths == [] and buffers == []
    data = state["_data"]
    record = index.record(1, 3)
    hd = data["header"]
    assert hd["model"] == engine.model_name and "random weights" in hd["model"] and hd["is_tiny"]
    assert (state["model"], state["layer"], state["neuron"], state["side"]) == ("tiny", 1, 3, "positive")
    assert hd["max"] == pytest.approx(record.max_activation) and hd["title"] == " · layer 1 · neuron 3"
    assert hd["meta"] == f"max activation {pr.format_activation(record.max_activation)} · corpus: {index.corpus_name}"
    assert data["top_total"] == len(record.most_positive_activation_records) > len(data["top"]) == 10
    for got, want in zip(data["top"], record.most_positive_activation_records):
        shows(got, want.tokens, want.activations)
        assert (got["lo"], got["hi"]) == pr.centred(want.activations)  # no character groups in the tiny corpus
    assert [f["title"] for f in data["samples"]][0] == f"Random samples ({len(record.random_sample[:10])})"
    assert "random" not in data and view._samples == {}  # folded: carried once opened
    assert ask(view, "samples", key="random") == {"type": "done"}
    for got, want in zip(view._samples["random"], record.random_sample):
        shows(got, want.tokens, want.activations)
    key = data["samples"][1]["key"]
    ask(view, "samples", key=key)
    assert len(view._samples[key]) == 2 and set(view._samples) == {"random", key}
    assert "no sample section 'q99'" in ask(view, "samples", key="q99")["message"]
    view.neuron = 4  # another neuron: nothing opened yet
    assert view._samples == {}
    edges, counts = index.histogram(1, 3)
    assert data["hist"]["counts"] == [int(c) for c in counts]
    assert data["cards"] == [] and data["explainer"].startswith("rules")
    payload = len(json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")}))
    print(f"\ninitial NeuronView payload: {payload} bytes (JSON, without the bundle)")
    assert payload < 60_000


def test_neuronview_messages_try_more_goto(tiny):
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    text = "The café’s menu <b>costs</b> 5 €\n\tdone"
    reply = ask(view, "try", text=text)
    want = engine.activations(text, 1, 3)
    assert reply["type"] == "try"
    shows(reply["row"], want.tokens, want.activations)

    reply = ask(view, "more", start=10, stop=15)
    want = index.top_records(1, 3, 10, 15)
    for got, rec in zip(reply["records"], want):
        shows(got, rec.tokens, rec.activations)

    # the front end navigates by setting the traits (one update, both at once)
    view.set_state({"layer": 2, "neuron": 5})
    assert (view.layer, view.neuron) == (2, 5)
    shows(view._data["top"][0], *_tv(index.record(2, 5).most_positive_activation_records[0]))
    view.set_state({"layer": 99, "neuron": 5})
    assert view._status["error"] == ("that neuron could not be opened: layer must be in 0..3 for "
                                     f"{engine.model_name}, got 99")
    assert (view.layer, view.neuron) == (2, 5)
    # requests outside the protocol are refused, saying what is allowed, in the answer and the view
    assert ask(view, "more", group="top", start=0, stop=1) == {
        "type": "error", "message": "more examples could not be loaded: request 'more' needs exactly the fields "
        "['start', 'stop', 'type']; missing [], unexpected ['group']"}
    assert "unexpected ['group']" in view._status["error"]
    assert ask(view, "more", start="0", stop=1)["message"].endswith("start must be an integer, got '0'")
    view.set_state({"layer": None, "neuron": 5})  # an emptied number box
    assert view._status["error"] == "that neuron could not be opened: layer must be an integer, got None"
    assert (view.layer, view.neuron) == (2, 5)
    assert ask(view, "try", text="")["message"] == "your text could not be run: type your text first"
    assert ask(view, "launch", name="try_request")["message"].endswith("unknown request 'launch'; expected one of try")
    with pytest.raises(ValueError, match="neuron must be in 0..383"):
        NeuronView(1, 384, model="tiny", index=index)


def test_output_waits_while_the_user_types(tiny):
    """A display update draws the live view again, taking the keyboard from the box being typed in:
    while the front end says a box has it (editing requests), refreshes of the saved fallback wait,
    and the last one is sent when the keyboard is given back."""
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    sent: list[str] = []

    class Handle:  # the display boundary: what IPython's DisplayHandle.update would send
        def update(self, data, metadata=None, raw=False):
            sent.append(data["text/html"])

    view._handles.append(Handle())
    first, second = (f["key"] for f in view._data["samples"][:2])
    ask(view, "samples", key=first)
    assert len(sent) == 1
    assert ask(view, "editing", editing=True) == {"type": "done"}
    ask(view, "samples", key=second)
    view.set_state({"neuron": 4})
    assert len(sent) == 1  # held: nothing drawn under the user's fingers
    assert ask(view, "editing", editing=False) == {"type": "done"}
    assert len(sent) == 2 and "neuron 4" in sent[-1]  # the held refresh, once, as the view is now
    assert ask(view, "editing", editing=False) == {"type": "done"} and len(sent) == 2
    ask(view, "samples", key=first)
    assert len(sent) == 3  # not editing: sent at once
    assert ask(view, "editing", editing="yes")["message"] == (
        "the view's request was not understood: editing must be true or false, got 'yes'")


def test_neuronview_state_is_public_traits(tiny):
    """model, layer, neuron and side are synced traits: setting one navigates, observe and
    ipywidgets.link work, an impossible value is refused and the traits go back."""
    import ipywidgets
    import traitlets

    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    assert {"model", "layer", "neuron", "side"} <= set(view.keys)  # synced with the front end
    seen = []
    view.observe(lambda change: seen.append((change["name"], change["new"])), names=["layer", "neuron"])
    view.layer = 2
    assert seen == [("layer", 2)] and view.record.neuron_id.layer_index == 2
    shows(view._data["top"][0], *_tv(index.record(2, 3).most_positive_activation_records[0]))
    view.goto(0, 9)
    assert (view.layer, view.neuron) == (0, 9) and seen[-2:] == [("layer", 0), ("neuron", 9)]
    with pytest.raises(ValueError, match="neuron must be in 0..383"):
        view.neuron = 384
    assert view.neuron == 9 and view.record.neuron_id.neuron_index == 9  # put back
    with pytest.raises(traitlets.TraitError):
        view.side = "sideways"
    other = NeuronView(1, 3, model="tiny", index=index)
    link = ipywidgets.link((view, "neuron"), (other, "neuron"))
    view.neuron = 4
    assert other.neuron == 4 and other.record.neuron_id.neuron_index == 4
    link.unlink()
    # an unsigned neuron has no negative side: refused from Python, shown from the front end
    if not view.signed:
        with pytest.raises(ValueError, match="no negative side"):
            view.side = "negative"
        assert view.side == "positive"
    # a view given an index cannot switch model; the trait goes back
    with pytest.raises(ValueError, match="given its index"):
        view.model = "gpt2"
    assert view.model == "tiny"


def test_no_module_state_is_shared_by_every_view():
    """Each piece of state has an owner: views own their explanations and published-data
    switch, models own their pass lock. No widget module keeps mutable state at module level."""
    import importlib
    import types

    for name in ("neuron_view", "views", "explorer", "static_html", "messages", "_base"):
        mod = importlib.import_module(f"neuronwidget.widgets.{name}")
        for attr, value in vars(mod).items():
            if attr.startswith("__") or isinstance(value, (types.ModuleType, type, types.FunctionType)):
                continue
            mutable = isinstance(value, (dict, list, set, bool)) and not attr.isupper()
            assert not mutable and "lock" not in attr.lower(), f"{name}.{attr} is module-global state"


def test_two_views_try_at_once_on_one_engine(tiny):
    """No engine-wide lock in the views: two views' tries run on their own threads at once, and
    the capture keeps each forward pass to its own call (the model's pass lock)."""
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    views = [NeuronView(1, 3, model="tiny", index=index), NeuronView(3, 7, model="tiny", index=index)]
    answers: list[list[dict]] = [[], []]
    texts = [f"The {w} sat on the mat, and then {w} left. " * (1 + i % 3) for i, w in enumerate(["cat", "dog", "eel"] * 3)]
    barrier = threading.Barrier(2)

    def run(view, out):
        barrier.wait()
        for text in texts:
            out.append(ask(view, "try", text=text))
            out.append(ask(view, "effect", text=text))

    threads = [threading.Thread(target=run, args=(v, out)) for v, out in zip(views, answers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for view, out in zip(views, answers):
        assert [c["type"] for c in out] == ["try", "effect"] * len(texts), [c for c in out if c["type"] == "error"][:1]
        for reply, text in zip(out[::2], texts):
            want = engine.activations(text, view.layer, view.neuron)
            shows(reply["row"], want.tokens, want.activations)
    # the engine itself, four threads at once: each capture sees its own forward pass only
    errors, results = [], {}

    def capture_many(k):
        try:
            for text in texts:
                results[(k, text)] = engine.activations(text, k % 4, 5).activations
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=capture_many, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    for (k, text), acts in results.items():
        np.testing.assert_array_equal(acts, engine.activations(text, k % 4, 5).activations)


def test_neuronview_test_and_explain_return_scored_cards(tiny):
    from neuronwidget.api import score
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(0, 7, model="tiny", index=index, explainer="rules", simulator="rules", side="positive")
    assert ask(view, "test", explanation=HOSTILE[0]) == {"type": "done"}  # started: the card comes in _data
    view.wait(120)
    (card,) = view.get_state()["_data"]["cards"]
    assert card["fresh"] and card["side"] == "positive"
    want = score(index.record(0, 7), HOSTILE[0], "rules")
    assert card["explanation"] == HOSTILE[0] and card["score"] == want.score and card["score_text"] == want.formatted()
    assert card["explainer"] == "you (typed in this view)" and card["simulator"].startswith("rules")
    assert [s["kind"] for s in card["seqs"]] == [s.kind for s in want.scored_simulation.scored_sequence_simulations]
    first = want.scored_simulation.scored_sequence_simulations[0]
    assert card["seqs"][0]["real"] == pr.row(first.simulation.tokens, first.true_activations,
                                             pr.Scale(index.record(0, 7).max_activation), centre=True, brief=True)
    assert view._status == {}

    ask(view, "explain", best_of=1)
    view.wait(120)
    cards = view._data["cards"]
    assert len(cards) == 2 and cards[0]["explainer"].startswith("rules") and cards[0]["explanation"]
    assert [s.explanation for s in view.explanations] == [cards[0]["explanation"], HOSTILE[0]]
    # "Explain (best of 5, revised)": chosen on held-in records, and the card says so
    ask(view, "explain", best_of=5)
    view.wait(120)
    best = view._data["cards"][0]
    assert best["explainer"].endswith("(best of 5 on held-in records)") and len(view._data["cards"]) == 3
    assert "best_of must be in 1..20" in ask(view, "explain", best_of=50)["message"]
    # going away and back keeps them; the static fallback shows them escaped
    view.neuron = 8
    view.neuron = 7
    assert len(view._data["cards"]) == 3
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
    view = NeuronView(1, 3, model="tiny", index=index, explainer=backend, simulator="baseline")
    answers = [ask(view, "explain", best_of=1)]
    view.wait(60)
    # an unreachable explainer shows up in the view: as an error naming what the user did
    assert view._status["error"].startswith("this neuron could not be explained: connection refused")
    assert "_run_slow" not in view._status["error"] and "run_slow" not in view._status["error"]
    blob = json.dumps(view.get_state(), default=lambda b: bytes(b).hex()) + view._repr_html_() + repr(view)
    blob += json.dumps(answers) + str(view._repr_mimebundle_())
    assert secret not in blob


def test_neuronview_save_html(tiny, tmp_path):
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    view.explanations.insert(0, scored_example("added from code"))  # as `neuronwidget demo` does
    page = view.save_html(tmp_path / "n.html").read_text()
    assert "layer 1 · neuron 3" in page and "random weights" in page and "<script" not in page
    assert "added from code" in page
    assert page.count("<span title=") + page.count("<span style=") >= 10 * 19
    assert "Random samples" not in page  # folded in the view, not opened: not in the saved page
    ask(view, "samples", key="random")  # opened: its first row is saved too
    page = view.save_html(tmp_path / "n.html").read_text()
    assert f"Random samples ({len(view._samples['random'])})" in page
    assert page.count("<span title=") + page.count("<span style=") >= 10 * 19 + 64


def test_slow_work_reports_progress_and_can_be_cancelled(tiny):
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index, simulator="baseline", diverging=True)
    assert view._data["legend"]["levels"][0] == -20  # diverging: the legend runs from the deepest blue
    statuses: list[dict] = []
    view.observe(lambda change: statuses.append(change["new"]), names="_status")
    gate = threading.Event()
    view._slow.submit(gate.wait, 30)  # hold the worker so the cancel lands before scoring starts
    ask(view, "test", explanation="objects")
    assert statuses[-1]["task"] == "scoring your explanation"  # progress shows at once
    assert "still running" in ask(view, "test", explanation="again")["message"]  # one slow task at a time
    assert ask(view, "cancel") == {"type": "done"}  # answered while the task runs
    gate.set()
    view.wait(60)
    assert "cancelled" in view._status["error"]
    assert view._data["cards"] == []
    # and the next request runs normally, clearing the error
    ask(view, "test", explanation="objects")
    view.wait(60)
    assert [c["explanation"] for c in view._data["cards"]] == ["objects"] and view._status == {}


JAPANESE = "東京は日本の首都です。"
EMOJI = "ok 🙂👍🏽 done"


def test_split_characters_read_back_as_the_text(tiny):
    """Byte tokens of one character are one group whose text is the character; records keep
    one entry per token."""
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    for i, text in enumerate([JAPANESE, EMOJI], 1):
        reply = ask(view, "try", text=text)
        want = engine.activations(text, 1, 3)
        shown = reply["row"]["text"]
        assert "".join(shown) == text and "\ufffd" not in "".join(shown)
        assert len(shown) < len(want.tokens)  # a character split over byte tokens is one span
        joined = [(t, tip) for t, tip in zip(shown, tips_of(reply["row"])) if "one character split into bytes" in tip]
        assert set(JAPANESE if i == 1 else "🙂👍") <= set("".join(t for t, _ in joined))
        for t, tip in joined:  # the tooltip lists every byte piece, in order, with its value
            pieces = re.findall(r"bytes ([0-9a-f]{2}) at (\d+): ", tip)
            assert bytes.fromhex("".join(b for b, _ in pieces)).decode("utf-8") == t.strip()
            assert [int(k) for _, k in pieces] == list(range(int(pieces[0][1]), int(pieces[0][1]) + len(pieces)))


def test_static_fallback_shows_characters_not_replacement_marks(tiny):
    from neuronwidget.records import ActivationRecord

    engine, _ = tiny
    rec = engine.activations(JAPANESE + " " + EMOJI, 1, 3)
    assert rec.token_bytes is not None
    from neuronwidget.widgets.tokens import char_groups

    html = sh.row_html(pr.row(rec.tokens, rec.activations, pr.Scale(1.0), groups=char_groups(rec.token_bytes)))
    text = re.sub(r"<[^>]+>", "", html)
    assert __import__("html").unescape(text) == JAPANESE + " " + EMOJI
    assert "\ufffd" not in html and "one character split into bytes" in html
    assert ActivationRecord(rec.tokens, rec.activations).token_bytes is None  # never serialised


def test_signed_neuron_sides_payload_and_scoring(tiny):
    """A neuron with a negative tail: side switch, diverging colour by default, and test /
    explain on the side shown (the method applied to -activation)."""
    from neuronwidget.api import score
    from neuronwidget.widgets import NeuronView

    engine, _ = tiny
    index = engine.index(bottom_k=40, progress=False)  # GPT-2's bottom tail is opt-in
    record = index.record(2, 11)
    assert record.most_negative_activation_records and record.most_negative_activation_records[0].min_activation < 0
    view = NeuronView(2, 11, model="tiny", index=index, simulator="baseline")
    hd = view._data["header"]
    low = record.most_negative_activation_records[0].min_activation
    assert hd["signed"] and view.side == "positive" and view._data["legend"]["lo"] == pr.format_activation(low)
    assert hd["meta"].startswith(f"activations {pr.format_activation(low)} to ")
    view.set_state({"side": "negative"})  # the side switch
    state = view.get_state()
    data = state["_data"]
    assert state["side"] == "negative" and view.side == "negative"
    first = record.most_negative_activation_records[0]
    shows(data["top"][0], first.tokens, first.activations)  # as they are
    assert (data["top"][0]["lo"], data["top"][0]["hi"]) == pr.centred(first.activations, negative=True)
    assert -20 in pr.columns(data["top"][0])[2]  # the lowest value: the deepest blue
    assert ask(view, "test", explanation="closing brackets") == {"type": "done"}
    view.wait(120)
    (card,) = view._data["cards"]
    assert card["side"] == "negative"
    want = score(record.for_side("negative"), "closing brackets", "baseline")
    assert card["score"] == want.score
    assert pr.SIDES["negative"] in view._repr_html_() and "Most negative examples" in view._repr_html_()
    # the positive side keeps its own explanations
    view.side = "positive"
    assert view._data["cards"] == [] or all(c["side"] == "positive" for c in view._data["cards"])
    assert ask(view, "more", start=10, stop=12)["type"] == "more"


# ---- one protocol, one source: Python and TypeScript checked against each other -------------

def test_message_protocol_is_generated_from_python():
    """js/messages.ts is messages.py's types written as TypeScript (no parsing of the TS: tsc
    checks every view against the generated file). Fails when either side was edited alone."""
    import typing

    from neuronwidget.widgets import messages as m

    source = (ROOT / "js" / "messages.ts").read_text()
    assert source == m.typescript(), "js/messages.ts is out of date: python -m neuronwidget.widgets.messages > js/messages.ts"
    # what the generator writes, checked on a few shapes that matter
    assert "export interface OpenRequest {\n  type: \"open\";\n  layer: number;\n  neuron: number;\n  model?: string;\n" \
           "  side?: Side;\n}" in source
    assert "  sim: Row | null;\n" in source and "  tops: TopRow[][];\n" in source
    for union in ("Request", "Reply", "OpenerRequest", "OpenReply"):
        members = " | ".join(t.__name__ for t in typing.get_args(getattr(m, union)))
        assert f"export type {union} = {members};" in source
    every = {*m.PAYLOADS, *m.REQUESTS.values(), *m.REPLIES.values(), *m.OPENER_REQUESTS.values(), m.OpenedReply}
    assert all(f"export interface {t.__name__} {{" in source for t in every)
    # the Explorer's and SearchBox's messages are checked like NeuronView's
    with pytest.raises(ValueError, match="side must be one of"):
        m.parse_request({"type": "open", "layer": 1, "neuron": 2, "side": "up"}, m.OPENER_REQUESTS)
    with pytest.raises(ValueError, match="unexpected \\['x'\\]"):
        m.parse_request({"type": "search", "query": "a", "x": 1}, m.OPENER_REQUESTS)


def _run_js(tmp_path, code: str, payload) -> object:
    """Bundle `code` (importing js/ sources) with esbuild and run it in node: the real TS."""
    import shutil
    import subprocess

    node = shutil.which("node")
    esbuild = ROOT / "node_modules" / ".bin" / "esbuild"
    if not node or not esbuild.exists():
        pytest.skip("node and npm dependencies are needed (npm ci)")
    entry = tmp_path / "entry.ts"
    entry.write_text(code.replace("@js/", str(ROOT / "js") + "/").replace("@nm/", str(ROOT / "node_modules") + "/"))
    out = tmp_path / "entry.mjs"
    subprocess.run([str(esbuild), str(entry), "--bundle", "--platform=node", "--format=esm", f"--outfile={out}",
                    "--log-level=error"], check=True, cwd=ROOT)
    res = subprocess.run([node, str(out)], input=json.dumps(payload), capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def _render_live(tmp_path, views: dict[str, dict]) -> dict:
    """Render each view's state with the real TypeScript views (bundled by esbuild, run in node on
    jsdom): per view, every token span shown (text, tooltip, level class, whether hidden) and the
    text of every element."""
    return _run_js(tmp_path, """
import { readFileSync } from "node:fs";
const jsdom = "@nm/jsdom/lib/api.js";
const { JSDOM } = await import(jsdom);
const dom = new JSDOM("<!DOCTYPE html><body></body>");
Object.assign(globalThis, { window: dom.window, document: dom.window.document, HTMLElement: dom.window.HTMLElement,
  Node: dom.window.Node, KeyboardEvent: dom.window.KeyboardEvent, MouseEvent: dom.window.MouseEvent, Event: dom.window.Event });
const { default: widget } = await import("@js/widget");
const views = JSON.parse(readFileSync(0, "utf8"));
const out = {};
for (const [name, state] of Object.entries(views)) {
  const model = { get: (k) => state[k], set: (k, v) => { state[k] = v; }, on() {}, off() {}, send() {}, save_changes() {} };
  const el = document.createElement("div");
  document.body.appendChild(el);
  widget.render({ model, el, experimental: {} });
  const hidden = (e) => !!e.closest("[hidden]");
  const spans = (sel) => Array.from(el.querySelectorAll(sel)).map((r) =>
    Array.from(r.querySelectorAll(".nw-tok")).map((s) => [s.textContent, s.dataset.tip, s.className]));
  out[name] = {
    top: spans(".nw-top .nw-seq:not([hidden])"),
    random: spans(".nw-samples .nw-seq"),
    spans: Array.from(el.querySelectorAll(".nw-tok")).map((s) => [s.textContent, s.dataset.tip, s.className, hidden(s)]),
    rows: Array.from(el.querySelectorAll(".nw-seq")).map((r) => [hidden(r),
      Array.from(r.querySelectorAll(".nw-tok")).map((s) => [s.textContent, s.dataset.tip, s.className])]),
    texts: Array.from(el.querySelectorAll("*")).filter((e) => !e.children.length).map((e) => e.textContent),
  };
}
console.log(JSON.stringify(out));
""", views)


def _static_rows(html_text: str) -> list[list[tuple[str, str, str]]]:
    """The static HTML's token rows: per span its text, title and level class (from its colour)."""
    from html.parser import HTMLParser

    colours = {pr.hex_color(pr.level_color(lv)): pr.level_class(lv) for lv in range(-pr.LEVELS, pr.LEVELS + 1) if lv}
    rows: list[list[tuple[str, str, str]]] = []

    class P(HTMLParser):
        span = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "div" and a.get("class") == "nw-seq":
                rows.append([])
            elif tag == "span" and "title" in a and rows:
                bg = re.search(r"background:(#\w+)", a.get("style") or "")
                self.span = [a["title"], colours[bg[1]] if bg else "", ""]

        def handle_data(self, data):
            if self.span is not None:
                self.span[2] += data

        def handle_endtag(self, tag):
            if tag == "span" and self.span is not None:
                title, cls, text = self.span
                rows[-1].append((text, title, cls))
                self.span = None

    P().feed(html_text)
    return rows


def _live(spans) -> list[tuple[str, str, str]]:
    return [(text, tip, " ".join(c for c in cls.split() if c != "nw-tok")) for text, tip, cls in spans]


def _text_of(html_text: str) -> str:
    return __import__("html").unescape(re.sub(r"<[^>]+>", "\n", html_text))


def test_live_view_and_saved_html_show_the_same(tmp_path, tiny):
    """The live view (the real TS, in node) and the saved HTML of the same views: the same token
    texts, tooltips and colour levels, and every string of the saved page is in the live view."""
    from neuronwidget.widgets import NeuronView

    engine, index = tiny
    text = "東京 🙂"
    raw = [bytes([b]) for b in text.encode("utf-8")]
    tokens = [b.decode("utf-8", errors="replace") for b in raw]
    views = {
        "tokens": TokenView([HOSTILE + [" x\n", "\ufffd"], tokens], [[1.0, -0.5, 0.0, 2.0, 0.1, 0.3], [0.1 * i for i in range(len(raw))]],
                            diverging=True, token_bytes=[[b"a"] * 6, raw]),
        "card": ExplanationCard(scored_example(HOSTILE[1])),
        "neuron": NeuronView(3, 21, model="tiny", index=index),  # a neuron no other test scores (the store remembers)
    }
    view = views["neuron"]
    ask(view, "test", explanation=HOSTILE[0])
    view.wait(120)
    ask(view, "samples", key="random")  # the folded random samples, opened
    live = _render_live(tmp_path, {name: v.get_state() for name, v in views.items()})

    # TokenView: every span, the same
    static = _static_rows(views["tokens"]._repr_html_())
    assert [s for r in static for s in r] == _live(x[:3] for x in live["tokens"]["spans"])
    assert any("one character split into bytes" in tip for _, tip, _ in static[1])
    # a card: the saved page shows each record's window around its peak, the live view the whole row
    card_rows = [_live(r) for hidden, r in live["card"]["rows"]]
    static = _static_rows(views["card"]._repr_html_())
    assert len(static) == len(card_rows) and static
    for got, full in zip(static, card_rows):
        assert any(full[k:k + len(got)] == got for k in range(len(full) - len(got) + 1)), (got, full)
    # NeuronView: the top records' windows as first shown, the first random sample, cards and header
    static = _static_rows(view._repr_html_())
    top = [_live(r) for r in live["neuron"]["top"]]
    assert len(top) == len(view._data["top"]) == 10 and static[:len(top)] == top
    assert static[len(top)] == _live(live["neuron"]["random"][0])  # the random samples, opened: the first
    live_text = "\n".join(live["neuron"]["texts"] + live["card"]["texts"] + live["tokens"]["texts"])
    for page in (view._repr_html_(), views["card"]._repr_html_(), views["tokens"]._repr_html_()):
        for line in _text_of(page).split("\n"):
            line = line.strip(" …—")
            if line:
                assert line in live_text, line
    assert f"{view._data['header']['model']}" in live_text and HOSTILE[0] in live_text


# arithmetic in the views that decides nothing shown: neuron navigation, the histogram's layout
NOT_DISPLAY_RULES = ("Math.floor(flat / hd.n_neurons)", "Math.floor(Math.random()")


def _code_strings(path: Path) -> str:
    """What a source file writes, without its comments and docstrings (which may name a section):
    Python's string constants; TypeScript without comments."""
    import ast

    src = path.read_text()
    if path.suffix == ".ts":
        return "\n".join(line.split("//")[0] for line in re.sub(r"/\*.*?\*/", "", src, flags=re.S).splitlines())
    tree = ast.parse(src)
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return "\n".join(n.value for n in ast.walk(tree)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs)


def test_every_display_rule_exists_once():
    """Number formats, colour levels, the 0-10 rule, tooltips, centring and card strings are
    decided in widgets/present.py alone: the TypeScript formats and computes none of them, and
    static_html.py is a template (it imports the rules, defines none)."""
    ts = {p.name: p.read_text() for p in sorted((ROOT / "js").glob("*.ts"))}
    rules = {
        "a number format": r"toFixed|toPrecision|toLocaleString|Intl\.",
        "rounding or flooring (levels, 0-10)": r"Math\.(round|floor|ceil)\((?!Math\.random)",
        "a 0-10 scale": r"/\s*10\b|\b10\s*\*|TENTHS|discretize",
        "a tooltip text": r"\bat \$\{|/10\)|tooltip(Text)?\(",
        "centring around the peak": r"CONTEXT_(LEFT|RIGHT)|argmax",
        "the colour ramp": r"palettes|levelColor|ramp\(|luminance",
        "activation or score formatting": r"format(Activation|Score)|displayToken|visibleToken",
    }
    found = [f"{name}: {what}" for name, src in ts.items() for what, pattern in rules.items()
             for line in re.sub(r"/\*.*?\*/", "", src, flags=re.S).splitlines()
             if re.search(pattern, line.split("//")[0]) and not any(ok in line for ok in NOT_DISPLAY_RULES)]
    assert found == []
    static = (ROOT / "neuronwidget" / "widgets" / "static_html.py").read_text()
    assert not re.search(r"\bdef (format_\w+|level|colour_t|tenth_of|discretize|tooltip|centred|legend)\(|\bround\(|:\.\dg", static)
    # the level colours the live view uses are generated from present.py's rules
    assert (ROOT / "js" / "levels.css").read_text() == pr.theme_css(), \
        "js/levels.css is out of date: python -m neuronwidget.widgets.present > js/levels.css"
    assert "levels.css" in ts["widget.ts"]
    # the views' headings and notes: present.HEADINGS alone (js/headings.ts is generated from it)
    assert ts["headings.ts"] == pr.headings_ts(), \
        "js/headings.ts is out of date: python -m neuronwidget.widgets.present headings > js/headings.ts"
    written = {p.relative_to(ROOT).as_posix(): _code_strings(p) for p in
               [*(ROOT / "js").glob("*.ts"), *(ROOT / "neuronwidget" / "widgets").glob("*.py")]
               if p.name not in ("headings.ts", "present.py")}
    twice = [f"{name}: {text!r}" for text in pr.HEADINGS.values() for name, src in written.items() if text in src]
    assert twice == []


def test_present_rules():
    """The rules themselves: numbers as people read them, never "-0.00", the method's 0-10 scale,
    levels and contrast in both themes."""
    assert [pr.format_activation(v) for v in (0.6894, 12.34, 123.4, -0.0004, 1.125, 99.96, 0.0)] == \
        ["0.689", "12.3", "123", "0.000", "1.13", "100.0", "0.000"]
    assert [pr.format_score(s) for s in (-0.001, 0.125, None, float("nan"))] == ["0.00", "0.13", "undefined", "undefined"]
    scale = pr.Scale(4.5, -6.0, True)
    assert [pr.tenth_of(v, scale) for v in (4.5, 4.49, -6.0, -0.5, 0.0)] == [10, 9, -10, 0, 0]
    assert pr.tenth_of(6.7, pr.Scale(4.5, tenths=10.0)) == 6  # a simulation's 0-10 value: floored, as real ones
    assert [pr.level(t) for t in (0.0, 0.01, 0.025, 1.0, -1.0, -0.5)] == [0, 0, 1, 20, -20, -10]
    for theme in ("light", "dark"):
        for lv in range(1, pr.LEVELS + 1):
            for signed_lv in (lv, -lv):
                bg = pr.level_color(signed_lv, theme)
                assert pr.contrast_ratio(bg, pr.text_color(bg)) >= 4.5
    assert pr.centred(list(range(40))) == (27, 40) and pr.centred([5.0] + [0.0] * 30) == (0, 7)
    assert pr.centred([0.0] * 20, negative=True) == (0, 7)
    g = [{"i": 5, "n": 3, "text": "東", "bytes": ["e6", "9d", "b1"]}]
    assert pr.centred([0.0] * 6 + [9.0] + [0.0] * 30, groups=g) == (0, 13)


def test_display_constants_exist_once():
    """Palettes, the 0-10 rule, the score legend and side labels live in display.json only."""
    display = json.loads((ROOT / "neuronwidget" / "widgets" / "display.json").read_text())
    for p in sorted((ROOT / "js").glob("*.ts")) + sorted((ROOT / "neuronwidget" / "widgets").glob("*.py")):
        text = p.read_text()
        assert display["score_legend"][:40] not in text, p
        for theme in display["palettes"].values():
            for stops in theme.values():
                assert str(stops[2])[1:-1] not in text and "%d, %d, %d" % tuple(stops[2]) not in text, p
    assert pr.SCORE_LEGEND == display["score_legend"] and pr.PALETTES == display["palettes"]
    from neuronwidget.subject.tokens import bytes_to_unicode  # the one GPT-2 byte table

    assert bytes_to_unicode()[ord(" ")] == "Ġ"
    for p in (ROOT / "neuronwidget").rglob("*.py"):
        if p.name != "tokens.py" or p.parent.name != "subject":
            assert 'ord("¡")' not in p.read_text(), f"a second byte table in {p}"


# ---- saved notebooks ------------------------------------------------------------------------

def _own_state(view) -> int:
    """A view's own widget state as a saved notebook writes it (JSON; the bundle is stored once)."""
    state, _, buffers = state_buffers(view)
    assert buffers == []
    return len(json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")}))


def test_saved_neuronview_stays_small(tiny):
    """What one NeuronView adds to a saved notebook, bounded: its static fallback and its own widget
    state. Before the folded samples were loaded on opening and the rows' shared style moved to their
    box, the tiny model's views took 20-21 KB (fallback) and ~42 KB (state); SmolLM2's alike."""
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    for layer, neuron in [(1, 3), (2, 11), (0, 7)]:
        view = NeuronView(layer, neuron, model="tiny", index=index)
        fallback, state = len(view._repr_html_().encode()), _own_state(view)
        print(f"\nNeuronView({layer}, {neuron}) of tiny: fallback {fallback} B, state {state} B", end="")
        assert fallback <= 15_500 and state <= 23_000
        ask(view, "samples", key="random")  # the user opens the random samples: both keep what is shown
        fallback, state = len(view._repr_html_().encode()), _own_state(view)
        print(f"; random samples opened: {fallback} B, {state} B", end="")
        assert fallback <= 19_500 and state <= 33_000


def test_saved_notebook_carries_scored_cards_and_stays_small(tiny_index, tmp_path):
    """3 NeuronViews and 2 explanations scored in one of them, run by a real kernel and saved
    the way Jupyter saves: the fallback shows the cards, and it is small; offline HTML shows them."""
    import nbformat
    from nbclient import NotebookClient

    from neuronwidget.widgets import export_html

    cache = tiny_index[0]
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"import neuronwidget as nw\nnw.configure(model='tiny', cache_dir={str(cache)!r}, "
                                  "explainer='baseline', simulator='baseline')"),
        nbformat.v4.new_code_cell("v1 = nw.NeuronView(1, 3)\nv1"),
        nbformat.v4.new_code_cell("v2 = nw.NeuronView(2, 11)\nv2"),
        nbformat.v4.new_code_cell("v3 = nw.NeuronView(0, 7, diverging=False)\nv3"),
        # what the buttons send, through the widget's own message handler
        nbformat.v4.new_code_cell("v1.test_request({'type': 'test', 'explanation': 'the word object'}, []); v1.wait(120)\n"
                                  "v1.explain_request({'type': 'explain', 'best_of': 1}, []); v1.wait(120)\n"
                                  "print([s.explanation for s in v1.explanations])"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)

    # newest first; the store may remember explanations of this neuron from earlier sessions (or tests)
    explanations = eval(nb.cells[4].outputs[-1]["text"])[:2]
    assert len(explanations) == 2 and "the word object" in explanations
    html = [c.outputs[0]["data"]["text/html"] for c in nb.cells[1:4]]
    assert all(o["output_type"] == "display_data" and "application/vnd.jupyter.widget-view+json" in o["data"]
               for c in nb.cells[1:4] for o in c.outputs[:1])
    for text in explanations:  # the scored cards are in the saved fallback of the view they were made in
        assert sh.esc(text) in html[0]
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    sizes = {"file": path.stat().st_size, "fallback per view": [len(h.encode()) for h in html],
             "widget state": len(json.dumps(state))}
    print(f"\nsaved notebook, 3 NeuronViews + 2 scored cards: {sizes}")
    assert max(sizes["fallback per view"]) < 22_000  # was ~50-80 KB per view before, 20-22 KB with no card
    js = (ROOT / "neuronwidget" / "static" / "widget.js").read_text()
    copies = [m for m in state.values() if m["state"].get("code") == js or m["state"].get("_esm") == js]
    assert len(copies) == 1, "the widget state should hold one copy of the JS bundle, not one per view"
    assert all(len(m["state"].get("_esm", "")) < 2_000 for m in state.values())

    page = export_html(path, tmp_path / "saved.html").read_text()
    assert "the word object" in page and "layer 1 · neuron 3" in page
    assert 'type="application/vnd.jupyter.widget-view+json"' not in page and "html-manager" not in page


def test_tokenview_groups_characters_when_bytes_are_given():
    text = "東京 🙂"
    raw = [bytes([b]) for b in text.encode("utf-8")]  # one token per byte, as byte-level BPE may split
    tokens = [b.decode("utf-8", errors="replace") for b in raw]
    view = TokenView(tokens, [0.1 * i for i in range(len(raw))], token_bytes=raw)
    (row,) = view._data["seqs"]
    assert row["text"] == ["東", "京", " ", "🙂"]
    assert "bytes e6 at 0: 0.000 (0/10)" in tips_of(row)[0] and "bytes ba at 4" in tips_of(row)[1]
    html = view._repr_html_()
    assert __import__("html").unescape(re.sub(r"<[^>]+>", "", html)).startswith(text)
    with pytest.raises(ValueError, match="shaped like tokens"):
        TokenView(tokens, [0.0] * len(raw), token_bytes=raw[:-1])
