"""Explorer (text -> the neurons firing at each token) and SearchBox (words -> explanations),
both opening a NeuronView in place with a way back.

Both views precompute or fetch plain rows in Python; the front end (js/explorer.ts) shows
them and asks for a neuron with ``{"type": "open", "layer", "neuron", "model"}``. The
NeuronView opened is an ordinary NeuronView widget held in the ``_child`` trait (anywidget
composition): the front end renders it inside the explorer.
"""

from __future__ import annotations

import html
from typing import Any

import anywidget
import traitlets

from neuronwidget.widgets._base import BaseView

MAX_EXPLORER_CHARS = 20_000


class _OpensNeuronView(BaseView):
    """A view that opens a NeuronView in place (``_child``) when the front end asks."""

    _child = anywidget.WidgetTrait().tag(sync=True)
    _status = traitlets.Dict().tag(sync=True)

    def _setup(self, view_kwargs: dict[str, Any]) -> None:
        self._view_kwargs = view_kwargs
        self._views: dict[Any, Any] = {}
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget: Any, content: Any, buffers: Any = None) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        try:
            if kind == "open":
                model = content.get("model") if isinstance(self, SearchBox) else None
                side = content.get("side") if content.get("side") in ("positive", "negative") else "positive"
                self.open_neuron(content.get("layer"), content.get("neuron"), model, side)
            else:
                self._handle(kind, content)
        except Exception as e:  # shown in the view, never a blank one
            what = {"open": "that neuron could not be opened", "search": "the search failed"}.get(
                str(kind), "the view's request was not understood")
            message = f"{what}: {str(e).strip() or type(e).__name__}"
            self._status = {"task": None, "error": message}
            self.send({"type": "error", "message": message})

    def _handle(self, kind: Any, content: dict[str, Any]) -> None:
        raise ValueError(f"unknown request {kind!r}")

    def _new_view(self, layer: int, neuron: int, model: Any, side: str) -> Any:
        raise NotImplementedError

    def open_neuron(self, layer: Any, neuron: Any, model: Any = None, side: str = "positive") -> Any:
        """Open neuron (layer, neuron) in place, on ``side``; returns the NeuronView shown."""
        key = model
        view = self._views.get(key)
        self._status = {"task": f"opening layer {layer}, neuron {neuron}", "message": "loading…"}
        if view is None:
            view = self._new_view(layer, neuron, model, side)
            self._views[key] = view
        else:
            view._load(layer, neuron, side)
        self._child = view
        self._status = {}
        self.send({"type": "opened", "layer": view.layer, "neuron": view.neuron})
        return view

    @property
    def neuron_view(self) -> Any:
        """The NeuronView opened last (None before any)."""
        return self._child

    def close(self) -> None:
        for view in getattr(self, "_views", {}).values():
            view.close()
        super().close()


class Explorer(_OpensNeuronView):
    """Which neurons fire on each word of a text: ``nw.Explorer("The Eiffel Tower is in Paris")``.

    The text is shown as tokens; click (or focus) a token and the ``k`` neurons with the
    largest normalised activation there appear, over all layers, with their best known
    explanation; click a neuron to open its NeuronView in place (and "back" to return).
    One forward pass through all layers when the view is made. ``model``/``index`` as for
    :func:`neuronwidget.top_neurons`; extra keywords go to the NeuronView opened.
    """

    def __init__(self, text: str, model: Any = None, *, index: Any = None, k: int = 20,
                 store: Any = None, **view_kwargs: Any) -> None:
        from neuronwidget.api import get_engine
        from neuronwidget.explore.top import TextActivations

        if isinstance(text, str) and len(text) > MAX_EXPLORER_CHARS:
            raise ValueError(f"text has {len(text)} characters; the Explorer takes at most {MAX_EXPLORER_CHARS}")
        self._engine = get_engine(model)
        self._acts = TextActivations(self._engine, text, index)
        self._index = self._acts.index
        tops = self._acts.every_position(k, store)
        data = {
            "model": self._engine.model_name,
            "is_tiny": bool(self._engine.is_tiny),
            "tokens": list(self._acts.tokens),
            "k": k,
            "tops": [[_row(r) for r in rows] for rows in tops],
            "peak": [max((r["normalized"] for r in rows), default=0.0) for rows in tops],
        }
        super().__init__(_view_kind="explorer", _data=data, _status={})
        self._setup(view_kwargs)

    def top(self, position: int, k: int | None = None):
        """The table shown for token ``position`` (a DataFrame, as :func:`top_neurons` returns)."""
        import pandas as pd

        from neuronwidget.explore.top import TOP_COLUMNS

        return pd.DataFrame(self._acts.top(position, k or self._data["k"]), columns=TOP_COLUMNS)

    def _new_view(self, layer: int, neuron: int, model: Any, side: str) -> Any:
        from neuronwidget.widgets.neuron_view import NeuronView

        return NeuronView(layer, neuron, model=_engine_spec(self._engine), index=self._index, side=side,
                          **self._view_kwargs)

    def _static_html(self) -> str:
        d = self._data
        peak = max(range(len(d["tokens"])), key=lambda i: d["peak"][i], default=0)
        toks = "".join(
            f'<span style="{"background:#ffd27a;" if i == peak else ""}white-space:pre">{html.escape(t)}</span>'
            for i, t in enumerate(d["tokens"]))
        rows = "".join(
            f"<tr><td>{r['layer']}</td><td>{r['neuron']}</td><td>{r['normalized']:.2f}</td>"
            f"<td>{html.escape(r['explanation'] or '')}</td></tr>" for r in d["tops"][peak][:10]) if d["tops"] else ""
        return (f'<div style="font-family:system-ui,sans-serif;font-size:13px">'
                f'<div style="font-weight:600">Explorer · {html.escape(d["model"])}</div>'
                f'<div style="margin:4px 0">{toks}</div>'
                f'<div>Top neurons at the highlighted token (activation ÷ the neuron\'s max):</div>'
                f'<table><tr><th>layer</th><th>neuron</th><th>÷ max</th><th>explanation</th></tr>{rows}</table>'
                f'<div style="color:#5a5a5a">Run the notebook to click tokens and open neurons.</div></div>')


def _engine_spec(engine: Any) -> Any:
    """What NeuronView's ``model=`` takes to get this same engine back."""
    lm = engine.lm
    return "tiny" if lm.is_tiny else (lm.name if isinstance(lm.name, str) and lm.name in ("gpt2", "gpt2-medium",
                                                                                        "gpt2-large", "gpt2-xl")
                                      else lm.model)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    return {"layer": r["layer"], "neuron": r["neuron"], "side": r["side"],
            "activation": round(float(r["activation"]), 5), "normalized": round(float(r["normalized"]), 5),
            "explanation": r["explanation"], "score": r["score"]}


class SearchBox(_OpensNeuronView):
    """Search every recorded explanation by words; click a result to open its NeuronView.

    ``nw.SearchBox("capital cities", model="gpt2")``. Results come from the explanation store
    (NeuronView, ``neuronwidget published --all``, ``nw.record_explanation``). A result of
    GPT-2 small/XL whose weights are not here opens from OpenAI's published records.
    """

    def __init__(self, query: str = "", model: str | None = None, limit: int = 20, *, store: Any = None,
                 **view_kwargs: Any) -> None:
        self._model, self._limit, self._store = model, limit, store
        super().__init__(_view_kind="search", _data={"query": str(query), "model": model, "limit": limit,
                                                      "results": [], "error": None}, _status={})
        self._setup(view_kwargs)
        if str(query).strip():
            self.search(str(query))

    def search(self, query: str):
        """Run ``query`` (as typing it in the box does); returns the results as a DataFrame."""
        from neuronwidget.explore.api import search

        try:
            df = search(query, model=self._model, limit=self._limit, store=self._store)
        except ValueError as e:
            self._data = {**self._data, "query": str(query), "results": [], "error": str(e)}
            raise
        rows = [{k: (None if v != v else v) for k, v in r.items()}  # NaN -> None for JSON
                for r in df.to_dict(orient="records")]
        for r in rows:
            r["layer"], r["neuron"] = int(r["layer"]), int(r["neuron"])
        self._data = {**self._data, "query": str(query), "results": rows, "error": None}
        return df

    def _handle(self, kind: Any, content: dict[str, Any]) -> None:
        if kind != "search":
            raise ValueError(f"unknown request {kind!r}; expected search or open")
        if not str(content.get("query", "")).strip():  # an emptied box: no results, no complaint
            self._data = {**self._data, "query": "", "results": [], "error": None}
            return
        try:
            self.search(str(content.get("query", "")))
        except ValueError:
            pass  # the message is in _data["error"], shown under the box

    def _new_view(self, layer: int, neuron: int, model: Any, side: str) -> Any:
        from neuronwidget.subject import gpt2_available
        from neuronwidget.widgets.neuron_view import NeuronView

        if model in ("gpt2", "gpt2-xl") and not gpt2_available(model):
            return NeuronView.published(layer, neuron, model=model, **self._view_kwargs)
        return NeuronView(layer, neuron, model=model, side=side, **self._view_kwargs)

    def _static_html(self) -> str:
        d = self._data
        items = "".join(
            f"<li>{html.escape(str(r['model']))} L{r['layer']} N{r['neuron']}: {html.escape(str(r['explanation']))}"
            f" ({'n/a' if r['score'] is None else format(r['score'], '.2f')})</li>" for r in d["results"])
        return (f'<div style="font-family:system-ui,sans-serif;font-size:13px"><div style="font-weight:600">'
                f'Explanation search: {html.escape(d["query"])}</div><ul>{items}</ul></div>')


__all__ = ["Explorer", "SearchBox"]
