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
    # every token carries a tooltip with its value (as stored) and the 0-10 value
    assert '<span style="background:#f78c3f;color:#000" title="1.00 (5/10)">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in html
    assert "(10/10)" in html and sh.SPLIT_NOTE in html


def test_fallback_colours_match_contrast_rules():
    html = TokenView(["lo", "mid", "hi", "zero"], [0.1, 0.6, 1.0, 0.0])._repr_html_()
    spans = re.findall(r'<span( style="[^"]*")? title=', html)
    assert spans[3] == ""  # zero: uncoloured
    rgb = lambda h: tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))  # noqa: E731
    for style in spans[:3]:
        bg, fg = (rgb(x if len(x) == 6 else "".join(c + c for c in x))
                  for x in re.fullmatch(r' style="background:#(\w+);color:#(\w+)"', style).groups())
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
    assert data["side"] == "positive" and ExplanationCard(scored, side="negative")._data["side"] == "negative"
    assert sh.SIDES["negative"] in ExplanationCard(scored, side="negative")._repr_html_()
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
    sent = capture(views[0])
    views[0]._handle_custom_msg({"type": "bundle"}, [])
    assert sent == [({"type": "bundle", "code": js, "style": css}, [])]
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
    assert (state["model"], state["layer"], state["neuron"], state["side"]) == ("tiny", 1, 3, "positive")
    assert hd["max"] == pytest.approx(record.max_activation)
    assert hd["corpus"] == index.corpus_name
    assert data["top_total"] == len(record.most_positive_activation_records) > len(data["top"]) == 10
    for got, want in zip(data["top"], record.most_positive_activation_records):
        assert got["tokens"] == want.tokens
        np.testing.assert_array_equal(unpack(buffers[0], got["a"]), np.float32(want.activations))
    for got, want in zip(data["random"], record.random_sample):
        np.testing.assert_array_equal(unpack(buffers[0], got["a"]), np.float32(want.activations))
    edges, counts = index.histogram(1, 3)
    assert data["hist"]["counts"] == [int(c) for c in counts]
    assert data["cards"] == [] and data["explainer"].startswith("rules")
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

    view._on_custom_msg(view, {"type": "more", "start": 10, "stop": 15}, [])
    reply, bufs = sent[-1]
    want = index.top_records(1, 3, 10, 15)
    assert [r["tokens"] for r in reply["records"]] == [r.tokens for r in want]
    np.testing.assert_array_equal(unpack(bufs[0], reply["records"][4]["a"]), np.float32(want[4].activations))

    # the front end navigates by setting the traits (one update, both at once)
    view.set_state({"layer": 2, "neuron": 5})
    assert (view.layer, view.neuron) == (2, 5)
    assert view._data["top"][0]["tokens"] == index.record(2, 5).most_positive_activation_records[0].tokens
    view.set_state({"layer": 99, "neuron": 5})
    assert sent[-1][0] == {"type": "error", "message": "that neuron could not be opened: layer must be in 0..3 for "
                           f"{engine.model_name}, got 99"}
    assert "layer must be in 0..3" in view._status["error"] and (view.layer, view.neuron) == (2, 5)
    # requests outside the protocol are refused, saying what is allowed
    view._on_custom_msg(view, {"type": "more", "group": "top", "start": 0, "stop": 1}, [])
    assert "unexpected ['group']" in sent[-1][0]["message"]
    view.set_state({"layer": None, "neuron": 5})  # an emptied number box
    assert sent[-1][0]["message"] == "that neuron could not be opened: layer must be an integer, got None"
    assert (view.layer, view.neuron) == (2, 5)
    view._on_custom_msg(view, {"type": "launch"}, [])
    assert "expected one of more, try, test, explain, cancel" in sent[-1][0]["message"]
    with pytest.raises(ValueError, match="neuron must be in 0..383"):
        NeuronView(1, 384, model="tiny", index=index)


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
    assert view._data["top"][0]["tokens"] == index.record(2, 3).most_positive_activation_records[0].tokens
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
    sents = [capture(v) for v in views]
    texts = [f"The {w} sat on the mat, and then {w} left. " * (1 + i % 3) for i, w in enumerate(["cat", "dog", "eel"] * 3)]
    barrier = threading.Barrier(2)

    def run(view):
        barrier.wait()
        for i, text in enumerate(texts):
            view._on_custom_msg(view, {"type": "try", "text": text, "id": i}, [])
            view._on_custom_msg(view, {"type": "effect", "text": text, "id": i}, [])
        view.wait(300)

    threads = [threading.Thread(target=run, args=(v,)) for v in views]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    for view, sent in zip(views, sents):
        assert not [c for c, _ in sent if c["type"] == "error"], [c for c, _ in sent if c["type"] == "error"][:1]
        tries = [(c, b) for c, b in sent if c["type"] == "try"]
        assert [c["id"] for c, _ in tries] == list(range(len(texts)))
        for (reply, bufs), text in zip(tries, texts):
            want = engine.activations(text, view.layer, view.neuron)
            np.testing.assert_array_equal(unpack(bufs[0], reply["a"]), np.float32(want.activations))
        assert len([c for c, _ in sent if c["type"] == "effect"]) == len(texts)
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
    sent = capture(view)
    view._on_custom_msg(view, {"type": "test", "explanation": HOSTILE[0]}, [])
    view.wait(120)
    assert not [s for s in sent if s[0]["type"] == "error"]
    state, _, bufs = state_buffers(view)
    (card,) = state["_data"]["cards"]
    assert card["fresh"] and card["side"] == "positive"
    want = score(index.record(0, 7), HOSTILE[0], "rules")
    assert card["explanation"] == HOSTILE[0] and card["score"] == want.score and card["score_text"] == want.formatted()
    assert card["explainer"] == "you (typed in this view)" and card["simulator"].startswith("rules")
    assert [s["kind"] for s in card["seqs"]] == [s.kind for s in want.scored_simulation.scored_sequence_simulations]
    first = want.scored_simulation.scored_sequence_simulations[0]
    np.testing.assert_array_equal(unpack(bufs[0], card["seqs"][0]["real"]), np.float32(first.true_activations))
    assert view._status == {}

    view._on_custom_msg(view, {"type": "explain", "best_of": 1}, [])
    view.wait(120)
    cards = view._data["cards"]
    assert len(cards) == 2 and cards[0]["explainer"].startswith("rules") and cards[0]["explanation"]
    assert [s.explanation for s in view.explanations] == [cards[0]["explanation"], HOSTILE[0]]
    # "Explain (best of 5, revised)": chosen on held-in records, and the card says so
    view._on_custom_msg(view, {"type": "explain", "best_of": 5}, [])
    view.wait(120)
    best = view._data["cards"][0]
    assert best["explainer"].endswith("(best of 5 on held-in records)") and len(view._data["cards"]) == 3
    view._on_custom_msg(view, {"type": "explain", "best_of": 50}, [])
    assert "best_of must be in 1..20" in sent[-1][0]["message"]
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
    sent = capture(view)
    view._on_custom_msg(view, {"type": "explain", "best_of": 1}, [])
    view.wait(60)
    # an unreachable explainer shows up in the view: as an error naming what the user did
    assert view._status["error"].startswith("this neuron could not be explained: connection refused")
    assert "_run_slow" not in view._status["error"] and "run_slow" not in view._status["error"]
    blob = json.dumps(view.get_state(), default=lambda b: bytes(b).hex()) + view._repr_html_() + repr(view)
    blob += json.dumps([s[0] for s in sent]) + str(view._repr_mimebundle_())
    assert secret not in blob


def test_neuronview_save_html(tiny, tmp_path):
    from neuronwidget.widgets import NeuronView

    _, index = tiny
    view = NeuronView(1, 3, model="tiny", index=index)
    page = view.save_html(tmp_path / "n.html").read_text()
    assert "layer 1 · neuron 3" in page and "random weights" in page and "<script" not in page
    assert page.count("<span title=") + page.count("<span style=") >= 10 * 19 + 64
    assert len(view._repr_html_()) < 30_000  # saved notebooks stay small (was ~50-80 KB)


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
    assert view._data["cards"] == []
    # and the next request runs normally, clearing the error
    view._on_custom_msg(view, {"type": "test", "explanation": "objects"}, [])
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
    sent = capture(view)
    for i, text in enumerate([JAPANESE, EMOJI], 1):
        view._on_custom_msg(view, {"type": "try", "text": text, "id": i}, [])
        view.wait(60)
        reply, bufs = sent[-1]
        want = engine.activations(text, 1, 3)
        assert reply["tokens"] == want.tokens and reply["a"][1] == len(want.tokens)  # one value per token
        shown, k = [], 0
        starts = {g["i"]: g for g in reply["g"]}
        while k < len(reply["tokens"]):
            g = starts.get(k)
            shown.append(g["text"] if g else reply["tokens"][k])
            if g:
                assert bytes.fromhex(" ".join(g["bytes"])).decode("utf-8") == g["text"]
                assert len(g["bytes"]) == g["n"]
            k += g["n"] if g else 1
        assert "".join(shown) == text
        assert "\ufffd" not in "".join(shown)
        assert set(JAPANESE if i == 1 else "🙂👍") <= set("".join(g["text"] for g in reply["g"]))


def test_static_fallback_shows_characters_not_replacement_marks(tiny):
    from neuronwidget.records import ActivationRecord

    engine, _ = tiny
    rec = engine.activations(JAPANESE + " " + EMOJI, 1, 3)
    assert rec.token_bytes is not None
    from neuronwidget.widgets.tokens import char_groups

    html = sh.token_row(rec.tokens, rec.activations, 1.0, groups=char_groups(rec.token_bytes))
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
    sent = capture(view)
    hd = view._data["header"]
    assert hd["signed"] and view.side == "positive" and view._data["diverging"] is True
    assert hd["min"] == pytest.approx(record.most_negative_activation_records[0].min_activation)
    view.set_state({"side": "negative"})  # the side switch
    state, _, bufs = state_buffers(view)
    data = state["_data"]
    assert state["side"] == "negative" and view.side == "negative"
    first = record.most_negative_activation_records[0]
    assert data["top"][0]["tokens"] == first.tokens
    np.testing.assert_array_equal(unpack(bufs[0], data["top"][0]["a"]), np.float32(first.activations))  # as they are
    view._on_custom_msg(view, {"type": "test", "explanation": "closing brackets"}, [])
    view.wait(120)
    assert not [c for c, _ in sent if c["type"] == "error"]
    (card,) = view._data["cards"]
    assert card["side"] == "negative"
    want = score(record.for_side("negative"), "closing brackets", "baseline")
    assert card["score"] == want.score
    assert sh.SIDES["negative"] in view._repr_html_() and "Most negative examples" in view._repr_html_()
    # the positive side keeps its own explanations
    view.side = "positive"
    assert view._data["cards"] == [] or all(c["side"] == "positive" for c in view._data["cards"])
    view._on_custom_msg(view, {"type": "more", "start": 10, "stop": 12}, [])
    assert sent[-1][0]["type"] == "more"


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
    assert "  sim: Span | null;\n" in source and "  tops: TopRow[][];\n" in source
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
    entry.write_text(code.replace("@js/", str(ROOT / "js") + "/"))
    out = tmp_path / "entry.mjs"
    subprocess.run([str(esbuild), str(entry), "--bundle", "--platform=node", "--format=esm", f"--outfile={out}",
                    "--log-level=error"], check=True, cwd=ROOT)
    res = subprocess.run([node, str(out)], input=json.dumps(payload), capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def test_numbers_colours_and_tooltips_agree_between_python_and_typescript(tmp_path):
    rng = np.random.default_rng(0)
    f16 = rng.normal(0, 3, 400).astype(np.float16).astype(float).tolist()  # values as the index stores them
    ties = [1.125, -1.125, 0.125, 0.0625, 2.5, 10.25, 100.5, 0.0005, -0.0005, 99.96, 9.995, 0.99951171875]
    values = [float(v) for v in f16 + ties + [0.0, 1e-9, -1e-9, 1234.5]]
    scores = [-0.001, -0.005, 0.005, 0.125, -0.125, 0.995, -1.0, 1.0, 0.3349] + rng.uniform(-1, 1, 50).tolist()
    ts = [i / 400 for i in range(-400, 401)]
    js = _run_js(tmp_path, """
import { formatActivation, formatScore, tooltipText } from "@js/format";
import { background, discretize, level, textColor } from "@js/color";
import { colourT, tenthOf } from "@js/tokens";
import { readFileSync } from "node:fs";
const p = JSON.parse(readFileSync(0, "utf8"));
const scale = { max: 4.5, min: -6, diverging: true };
console.log(JSON.stringify({
  act: p.values.map(formatActivation),
  score: p.scores.map(formatScore),
  tenth: p.values.map((v) => discretize(v, 4.5)),
  signed: p.values.map((v) => [colourT(v, scale), tenthOf(v, scale), colourT(v, { max: 4.5, diverging: false })]),
  level: p.ts.map(level),
  light: p.ts.map((t) => background(t, "light")),
  dark: p.ts.map((t) => background(t, "dark")),
  text: p.ts.map((t) => { const b = background(t, "dark"); return b && textColor(b); }),
  tip: p.values.slice(0, 20).map((v, i) => tooltipText(i % 2 ? " tok\\n" : "\\ufffd", i, v, discretize(v, 4.5))),
}));
""", {"values": values, "scores": scores, "ts": ts})
    py = {
        "act": [sh.format_activation(v) for v in values],
        "score": [sh.format_score(s) for s in scores],
        "tenth": [sh.discretize(v, 4.5) for v in values],
        "signed": [[sh.colour_t(v, 4.5, -6, True), sh.tenth_of(v, 4.5, -6, True), sh.colour_t(v, 4.5, None, False)]
                   for v in values],
        "level": [sh.level(t) for t in ts],
        "light": [list(b) if (b := sh.background(t, "light")) else None for t in ts],
        "dark": [list(b) if (b := sh.background(t, "dark")) else None for t in ts],
        "text": [list(sh.text_color(b)) if (b := sh.background(t, "dark")) else None for t in ts],
        "tip": [sh.tooltip(" tok\n" if i % 2 else "\ufffd", i, v, sh.discretize(v, 4.5)) for i, v in enumerate(values[:20])],
    }
    for key in py:
        assert js[key] == py[key], key
    assert not [a for a in py["act"] + py["score"] if re.fullmatch(r"-0(\.0*)?", a)]  # no "-0.00"
    # what float16 storage supports: the printed value of a stored number is that of the true number
    true = rng.normal(0, 2, 2000)
    stored = true.astype(np.float16).astype(float)
    differ = sum(sh.format_activation(a) != sh.format_activation(b) for a, b in zip(true, stored))
    assert differ / len(true) < 0.06, differ  # 4 decimals disagreed on ~16%


def test_display_constants_exist_once():
    """Palettes, the 0-10 rule, the score legend and side labels live in display.json only."""
    display = json.loads((ROOT / "neuronwidget" / "widgets" / "display.json").read_text())
    for p in sorted((ROOT / "js").glob("*.ts")) + sorted((ROOT / "neuronwidget" / "widgets").glob("*.py")):
        text = p.read_text()
        assert display["score_legend"][:40] not in text, p
        for theme in display["palettes"].values():
            for stops in theme.values():
                assert str(stops[2])[1:-1] not in text and "%d, %d, %d" % tuple(stops[2]) not in text, p
    assert sh.SCORE_LEGEND == display["score_legend"] and sh.PALETTES == display["palettes"]
    from neuronwidget.subject.tokens import bytes_to_unicode  # the one GPT-2 byte table

    assert bytes_to_unicode()[ord(" ")] == "Ġ"
    for p in (ROOT / "neuronwidget").rglob("*.py"):
        if p.name != "tokens.py" or p.parent.name != "subject":
            assert 'ord("¡")' not in p.read_text(), f"a second byte table in {p}"


# ---- saved notebooks ------------------------------------------------------------------------

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
        nbformat.v4.new_code_cell("v1._on_custom_msg(v1, {'type': 'test', 'explanation': 'the word object'}); v1.wait(120)\n"
                                  "v1._on_custom_msg(v1, {'type': 'explain', 'best_of': 1}); v1.wait(120)\n"
                                  "print([s.explanation for s in v1.explanations])"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)

    explanations = eval(nb.cells[4].outputs[-1]["text"])
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
    assert max(sizes["fallback per view"]) < 30_000  # was ~50-80 KB per view before
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
    assert [g["text"] for g in row["g"]] == ["東", "京", " 🙂"] or [g["text"] for g in row["g"]] == ["東", "京", "🙂"]
    assert row["a"][1] == len(raw)  # one value per token
    html = view._repr_html_()
    assert __import__("html").unescape(re.sub(r"<[^>]+>", "", html)).startswith(text)
    with pytest.raises(ValueError, match="shaped like tokens"):
        TokenView(tokens, [0.0] * len(raw), token_bytes=raw[:-1])
