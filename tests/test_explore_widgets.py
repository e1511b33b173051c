"""Explorer, SearchBox and NeuronView's connections / store hooks, on the real tiny engine."""

import html

import pandas as pd
import pytest

import neuronwidget as nw
from neuronwidget.explore.store import ExplanationStore
from neuronwidget.records import NeuronId, ScoredExplanation, ScoredSimulation

TEXT = "The Eiffel Tower is in Paris. def main(): return 42"


@pytest.fixture(scope="module")
def tiny(tiny_index):
    return tiny_index


def test_explorer_shows_every_tokens_top_neurons_and_opens_one_in_place(tiny, tmp_path):
    _, engine, index = tiny
    st = ExplanationStore(tmp_path / "s.sqlite")
    ex = nw.Explorer(TEXT, model="tiny", k=7, store=st)
    d = ex._data
    assert d["tokens"] == engine.tokenize(TEXT) and ex._view_kind == "explorer"
    for p in (0, 4, len(d["tokens"]) - 1):
        want = nw.top_neurons(TEXT, p, k=7, model="tiny", store=st)
        assert [(r["layer"], r["neuron"]) for r in d["tops"][p]] == list(zip(want.layer, want.neuron))
        assert [r["normalized"] for r in d["tops"][p]] == pytest.approx(want.normalized.tolist(), abs=1e-4)
    table, alone = ex.top(4), nw.top_neurons(TEXT, 4, k=7, model="tiny", store=st)  # alone: tokens 0..4 only
    assert list(zip(table.layer, table.neuron)) == list(zip(alone.layer, alone.neuron))
    assert table.activation.tolist() == pytest.approx(alone.activation.tolist(), rel=1e-4, abs=1e-6)

    # the token selected is the position trait (the strongest token at first); text is a trait too
    assert ex.position == max(range(len(d["peak"])), key=d["peak"].__getitem__)
    ex.position = 4
    assert ex.top().equals(ex.top(4)) and "outline:2px solid #333;white-space:pre\">" + html.escape(d["text"][4]) in ex._repr_html_()
    # tokens coloured by their strongest neuron, as the live view colours them (the same levels)
    levels = nw.widgets.present.columns({"text": d["text"], "value": "", "tenth": "", "level": d["level"]})[2]
    assert levels[max(range(len(d["peak"])), key=d["peak"].__getitem__)] == 20 and len(levels) == len(d["text"])
    with pytest.raises(ValueError, match="out of range"):
        ex.position = len(d["tokens"])
    assert ex.position == 4
    r = d["tops"][4][0]
    assert ex.open_request({"type": "open", "layer": r["layer"], "neuron": r["neuron"]}, []) == \
        ({"type": "opened", "layer": r["layer"], "neuron": r["neuron"]}, [])
    view = ex.neuron_view
    assert isinstance(view, nw.NeuronView) and (view.layer, view.neuron) == (r["layer"], r["neuron"])
    assert view._index is index
    ex.open_request({"type": "open", "layer": 2, "neuron": 5}, [])
    assert ex.neuron_view is view and (view.layer, view.neuron) == (2, 5)  # one view, reloaded
    ex.open_request({"type": "open", "layer": 2, "neuron": 5, "side": "negative"}, [])  # a row of the negative side
    assert ex.neuron_view is view and view.side == ("negative" if view.signed else "positive")
    reply, _ = ex.open_request({"type": "open", "layer": 99, "neuron": 5}, [])  # bad input: an error in the view
    assert reply["type"] == "error" and reply["message"] == ex._status["error"]
    assert ex._status["error"].startswith("that neuron could not be opened: layer") and (view.layer, view.neuron) == (2, 5)
    page = ex._repr_html_()
    assert " · explorer" in page and all(html.escape(t) in page for t in d["tokens"])
    ex.text = "Paris is a city"  # another text: new tokens, the position at its strongest token
    assert ex._data["tokens"] == engine.tokenize("Paris is a city") and ex.position == max(
        range(len(ex._data["peak"])), key=ex._data["peak"].__getitem__)
    with pytest.raises(ValueError, match="at most 20000"):
        ex.text = "x" * 20_001
    assert ex.text == "Paris is a city" and ex._data["tokens"] == engine.tokenize("Paris is a city")


def test_explorer_ranks_by_effect_as_top_neurons_does(tiny, tmp_path):
    """by="effect" (the trait, and the view's switch): the selected token's rows are
    nw.top_neurons(text, position, by="effect"), measured when a token is selected and kept;
    back to "activation" shows the activation rows again."""
    st = ExplanationStore(tmp_path / "s.sqlite")
    ex = nw.Explorer(TEXT, model="tiny", k=6, store=st, check=3)
    assert ex.by == "activation" and ex._data["effect"] == {}  # nothing measured until asked
    ex.position = 4
    ex.by = "effect"
    want = nw.top_neurons(TEXT, 4, k=6, model="tiny", by="effect", check=3, store=st)
    rows = ex._data["effect"]["4"]
    assert [(r["layer"], r["neuron"]) for r in rows] == list(zip(want.layer, want.neuron))
    assert [r["normalized"] for r in rows] == pytest.approx(want.attribution.tolist(), abs=1e-4)
    shown = [r["detail"] for r in rows]
    assert all(d.startswith("Δ log p if zeroed: est. ") for d in shown)
    assert sum(", measured " in d for d in shown) == 3  # the first 3 checked by true ablation
    assert f"est. {-want.attribution[0]:+.3f}, measured {-want.ablation[0]:+.3f}" in shown[0]
    assert repr(want.attrs["target"])[1:-1] in ex._data["effect_heads"]["4"] or want.attrs["target"] in ex._data["effect_heads"]["4"]
    assert ex.effects(4)[["layer", "neuron"]].equals(want[["layer", "neuron"]])
    page = ex._repr_html_()  # the saved fallback follows the ranking shown
    assert html.escape(ex._data["effect_heads"]["4"]) in page and html.escape(shown[0]) in page
    ex.position = 2  # another token: measured when selected
    assert set(ex._data["effect"]) == {"4", "2"} and ex._status == {}
    ex.by = "activation"
    page = ex._repr_html_()
    assert html.escape(ex._data["heads"][2]) in page and html.escape(ex._data["tops"][2][0]["detail"]) in page
    with pytest.raises(Exception, match="by must be one of"):
        ex.by = "loudness"
    assert ex.by == "activation"
    with pytest.raises(ValueError, match="by must be one of"):
        nw.Explorer(TEXT, model="tiny", by="loudness")
    with pytest.raises(ValueError, match="check must be an int"):
        nw.Explorer(TEXT, model="tiny", check=-1)


@pytest.mark.parametrize("text, message", [("", "text is empty"), (None, "non-empty string"),
                                           ("x" * 20_001, "at most 20000")])
def test_explorer_bad_text(tiny, text, message):
    with pytest.raises(ValueError, match=message):
        nw.Explorer(text, model="tiny")


def test_neuronview_shows_weight_connections(tiny):
    view = nw.NeuronView(1, 3, model="tiny")
    got = view._data["connections"]
    want = nw.neuron_connections(1, 3, model="tiny", k=8).to_dict()
    assert got["input_tokens"] and got["downstream"]
    assert [{k: v for k, v in x.items() if k not in ("text", "tip")} for x in got["input_tokens"]] == want["input_tokens"]
    first = got["downstream"][0]  # what is shown, with present.py's number format
    assert first["label"] == f"L{first['layer']}/N{first['neuron']} ({nw.widgets.present.format_activation(first['value'])})"


def test_explanations_made_in_neuronview_become_searchable(tiny):
    # a neuron no other test opens: the kernel remembers cards per neuron for every later view
    view = nw.NeuronView(3, 17, model="tiny")
    assert view.test_request({"type": "test", "explanation": "zanzibar quokka tokens"}, []) == ({"type": "done"}, [])
    view.wait(120)
    df = nw.search("zanzibar quokka", model="tiny")
    assert (df.layer[0], df.neuron[0], df.source[0]) == (3, 17, "NeuronView")
    assert df.explanation[0] == "zanzibar quokka tokens"
    made = view.explanations[0].score  # None when the simulation was constant (no correlation)
    assert pd.isna(df.score[0]) if made is None else df.score[0] == pytest.approx(made)


def test_searchbox_lists_results_and_opens_a_neuronview(tiny, tmp_path):
    st = ExplanationStore(tmp_path / "s.sqlite")
    st.add(ScoredExplanation("closing brackets in code", ScoredSimulation([], ev_correlation_score=0.4),
                             NeuronId(2, 9)), "tiny")
    box = nw.SearchBox("brackets", model="tiny", store=st)
    assert [(r["layer"], r["neuron"]) for r in box._data["results"]] == [(2, 9)]
    # the search_request command: results in _data, the answer says done (or why the request was refused)
    assert box.search_request({"type": "search", "query": "'; DROP TABLE explanations; --"}, []) == ({"type": "done"}, [])
    assert box._data["results"] == [] and box._data["error"] is None
    box.search_request({"type": "search", "query": "*"}, [])
    assert "no words to search for" in box._data["error"]
    box.search_request({"type": "search", "query": "  "}, [])  # the box emptied: cleared, no error
    assert box._data["results"] == [] and box._data["error"] is None
    (reply, _) = box.search_request({"type": "search", "query": "a", "limit": 3}, [])
    assert reply["type"] == "error" and "unexpected ['limit']" in reply["message"]
    box.open_request({"type": "open", "layer": 2, "neuron": 9, "model": "tiny"}, [])
    assert (box.neuron_view.layer, box.neuron_view.neuron) == (2, 9)
    assert st.count() == 1
