"""Explorer (text -> the neurons firing at each token) and SearchBox (words -> explanations),
both opening a NeuronView in place with a way back.

Both views precompute or fetch plain rows in Python; the front end (js/explorer.ts) shows
them. The protocol is messages.py's, every request an anywidget command (request/response):
the front end opens a neuron with ``open_request`` (an ``OpenRequest`` in, an ``OpenReply``
back) and SearchBox searches with ``search_request`` (a ``SearchRequest`` in, the results in
``_data``, a ``SearchReply`` back). The NeuronView opened is an ordinary
NeuronView widget held in the ``_child`` trait (anywidget composition): the front end renders
it inside the explorer. Explorer's ``text`` and ``position`` (the token selected) are public
synced traits.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets
from anywidget.experimental import command

from neuronwidget.widgets import present as pr
from neuronwidget.widgets import static_html as sh
from neuronwidget.widgets._base import BaseView
from neuronwidget.widgets.messages import (OPENER_REQUESTS, ErrorReply, OpenedReply, OpenReply, SearchReply,
                                           parse_request)

MAX_EXPLORER_CHARS = 20_000
_WHAT = {"open": "that neuron could not be opened", "search": "the search failed"}


class _OpensNeuronView(BaseView):
    """A view that opens a NeuronView in place (``_child``) when the front end asks."""

    _child = anywidget.WidgetTrait().tag(sync=True)
    _status = traitlets.Dict().tag(sync=True)

    def _setup(self, view_kwargs: dict[str, Any]) -> None:
        self._view_kwargs = view_kwargs
        self._views: dict[Any, Any] = {}

    def _failed(self, kind: Any, e: Exception) -> ErrorReply:
        what = _WHAT.get(str(kind), "the view's request was not understood")
        message = f"{what}: {str(e).strip() or type(e).__name__}"
        self._status = {"task": None, "error": message}
        return {"type": "error", "message": message}

    @command
    def open_request(self, msg: Any, buffers: list[bytes]) -> tuple[OpenReply, list[bytes]]:
        """The front end's "open this neuron" (anywidget command): the answer, never an exception."""
        try:
            req = parse_request(msg, OPENER_REQUESTS)
            if req["type"] != "open":
                raise ValueError(f"open_request takes an open request, got {req['type']!r}")
            model = req.get("model") if isinstance(self, SearchBox) else None
            view = self.open_neuron(req["layer"], req["neuron"], model, req.get("side", "positive"))
            reply: OpenedReply = {"type": "opened", "layer": view.layer, "neuron": view.neuron}
            return reply, []
        except Exception as e:  # shown in the view, never a blank one
            return self._failed("open", e), []

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
            view.goto(layer, neuron, side)
        self._child = view
        self._status = {}
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

    ``text`` and ``position`` (the token selected; the strongest one at first) are synced
    traits: ``ex.text = "..."`` explores another text, ``ex.position = 3`` selects token 3,
    and both follow what the user does in the view (``ex.observe``, ``ipywidgets.link``).

    ``by`` (a synced trait too, and a switch in the view): ``"activation"`` ranks the neurons
    that fire most at the token; ``"effect"`` those that matter most for the model's prediction
    there, as ``nw.top_neurons(text, position, by="effect")`` ranks them (attribution over every
    neuron, the first ``check`` checked by really zeroing them), measured when a token is
    selected (one forward and backward pass) and kept for the text.
    """

    text = traitlets.Unicode("").tag(sync=True)
    position = traitlets.Int(0).tag(sync=True)
    by = traitlets.Unicode("activation").tag(sync=True)

    def __init__(self, text: str, model: Any = None, *, index: Any = None, k: int = 20,
                 store: Any = None, by: str = "activation", check: int = 5, **view_kwargs: Any) -> None:
        from neuronwidget.api import get_engine

        if by not in pr.EXPLORER_RANKINGS:
            raise ValueError(f"by must be one of {sorted(pr.EXPLORER_RANKINGS)}, got {by!r}")
        if isinstance(check, bool) or not isinstance(check, int) or check < 0:
            raise ValueError(f"check must be an int >= 0 (rows checked by true ablation), got {check!r}")
        self._engine = get_engine(model)
        self._given_index, self._k, self._store, self._check = index, k, store, check
        self._ready = False
        data = self._explore(text)
        super().__init__(_view_kind="explorer", _data=data, _status={}, text=text, position=self._peak(data), by=by)
        self._setup(view_kwargs)
        self._ready = True
        self._measure_effect()

    def _explore(self, text: Any) -> dict[str, Any]:
        """One forward pass over ``text``: every token's top neurons (raises ValueError on bad text)."""
        from neuronwidget.explore.top import TextActivations

        if isinstance(text, str) and len(text) > MAX_EXPLORER_CHARS:
            raise ValueError(f"text has {len(text)} characters; the Explorer takes at most {MAX_EXPLORER_CHARS}")
        acts = TextActivations(self._engine, text, self._given_index)
        tops = acts.every_position(self._k, self._store)
        self._acts, self._index = acts, acts.index
        return {
            "model": self._engine.model_name,
            "is_tiny": bool(self._engine.is_tiny),
            "tokens": list(acts.tokens),
            "text": [pr.display_token(t) for t in acts.tokens],
            "level": pr.explorer_levels([max((r["normalized"] for r in rows), default=0.0) for rows in tops]),
            "heads": [pr.explorer_head(t, i, len(rows)) for i, (t, rows) in enumerate(zip(acts.tokens, tops))],
            "k": self._k,
            "tops": [[_row(r) for r in rows] for rows in tops],
            "peak": [max((r["normalized"] for r in rows), default=0.0) for rows in tops],
            "rankings": dict(pr.EXPLORER_RANKINGS),
            "effect": {},
            "effect_heads": {},
        }

    @traitlets.validate("by")
    def _valid_by(self, proposal: Any) -> str:
        if proposal["value"] not in pr.EXPLORER_RANKINGS:
            raise traitlets.TraitError(f"by must be one of {sorted(pr.EXPLORER_RANKINGS)}, got {proposal['value']!r}")
        return proposal["value"]

    def _measure_effect(self) -> None:
        """by="effect": the selected token's ranking, measured once per token of this text."""
        if not self._ready or self.by != "effect" or str(self.position) in self._data["effect"]:
            return
        where = self.position
        self._status = {"task": f"measuring which neurons matter at token {where}", "message": "one backward pass…"}
        try:
            df = self.effects(where)
        except Exception as e:  # shown in the view, never a blank one
            self._status = {"task": None, "error": f"the effects could not be measured: {str(e).strip() or type(e).__name__}"}
            return
        rows = [_effect_row(r) for r in df.to_dict(orient="records")]
        head = pr.explorer_effect_head(self._data["tokens"][where], where, len(rows), str(df.attrs["target"]))
        self._data = {**self._data, "effect": {**self._data["effect"], str(where): rows},
                      "effect_heads": {**self._data["effect_heads"], str(where): head}}
        self._status = {}

    @traitlets.observe("by")
    def _on_by(self, change: Any) -> None:
        self._measure_effect()
        if self._ready:
            self._refresh_fallback()

    @staticmethod
    def _peak(data: dict[str, Any]) -> int:
        return max(range(len(data["tokens"])), key=lambda i: data["peak"][i], default=0)

    @traitlets.validate("position")
    def _valid_position(self, proposal: Any) -> int:
        if not self._ready:
            return proposal["value"]
        return self._acts.position(proposal["value"])

    @traitlets.observe("text")
    def _on_text(self, change: Any) -> None:
        if not self._ready or change["new"] == change["old"]:
            return
        try:
            data = self._explore(change["new"])
        except Exception:
            self._ready = False
            self.text = change["old"]  # what is shown
            self._ready = True
            raise
        with self.hold_sync():
            self._data = data
            self.position = self._peak(data)
        self._measure_effect()
        self._refresh_fallback()

    @traitlets.observe("position")
    def _on_position(self, change: Any) -> None:
        self._measure_effect()
        if self._ready:
            self._refresh_fallback()

    def top(self, position: int | None = None, k: int | None = None):
        """The table shown for token ``position`` (default: the one selected; a DataFrame, as
        :func:`top_neurons` returns)."""
        import pandas as pd

        from neuronwidget.explore.top import TOP_COLUMNS

        where = self.position if position is None else position
        return pd.DataFrame(self._acts.top(where, k or self._data["k"]), columns=TOP_COLUMNS)

    def effects(self, position: int | None = None):
        """The neurons that matter most for the prediction at token ``position`` (default: the
        one selected), as ``nw.top_neurons(text, position, by="effect")`` returns them."""
        from neuronwidget.explore.effects import effect_ranking

        where = self.position if position is None else position
        return effect_ranking(self._engine, self.text, where, k=self._data["k"], check=self._check, store=self._store)

    def _new_view(self, layer: int, neuron: int, model: Any, side: str) -> Any:
        from neuronwidget.widgets.neuron_view import NeuronView

        return NeuronView(layer, neuron, model=_engine_spec(self._engine), index=self._index, side=side,
                          **self._view_kwargs)

    def _static_html(self) -> str:
        """What the view shows, as a template over the same strings (js/explorer.ts draws them live):
        the tokens (the selected one outlined), the selected token's table as ranked now."""
        d = self._data
        at = self.position  # the token selected: what the user last saw
        levels = pr.columns({"text": d["text"], "value": "", "tenth": "", "level": d["level"]})[2]  # type: ignore[typeddict-item]
        toks = "".join(
            f'<span class="nw-xtok" style="{sh.level_style(levels[i])}{"outline:2px solid #333;" if i == at else ""}'
            f'white-space:pre">{sh.esc(t)}</span>' for i, t in enumerate(d["text"]))
        effect = d["effect"].get(str(at)) if self.by == "effect" else None
        rows = effect if effect is not None else (d["tops"][at] if d["tops"] else [])
        head = d["effect_heads"][str(at)] if effect is not None else (d["heads"][at] if d["heads"] else "")
        table = sh.neuron_rows([(r["label"], r["detail"], r["explanation"], r["score_text"]) for r in rows],
                               pr.HEADINGS["explorer_none"])
        return sh.box(f'<div style="font-size:15px;font-weight:600"><span>{sh.esc(d["model"])}</span>'
                      f'<span> · explorer</span></div><div style="color:#5a5a5a">{sh.esc(pr.HEADINGS["explorer_hint"])}</div>'
                      f'<div class="nw-xtext" style="margin:4px 0">{toks}</div>'
                      f'<div class="nw-section" style="font-weight:600">{sh.esc(head)}</div>{table}'
                      f'<div style="color:#5a5a5a">{sh.esc(pr.HEADINGS["explorer_saved"])}</div>')


def _engine_spec(engine: Any) -> Any:
    """What NeuronView's ``model=`` takes to get this same engine back: the model's name where it
    was loaded by one ("gpt2", "tiny", "smollm2-135m", a hub id or path: ``lm.source``, the same
    string as ``lm.short_name``), else the model object itself."""
    lm = engine.lm
    return lm.source if lm.source is not None else lm.model


def _row(r: dict[str, Any]) -> dict[str, Any]:
    act, norm = round(float(r["activation"]), 5), round(float(r["normalized"]), 5)
    return {"layer": r["layer"], "neuron": r["neuron"], "label": pr.neuron_label(r["layer"], r["neuron"]), "side": r["side"], "activation": act, "normalized": norm,
            "explanation": r["explanation"], "score": r["score"], "detail": pr.top_row_detail(norm, act, r["side"]),
            "score_text": pr.score_text(r["score"])}


def _effect_row(r: dict[str, Any]) -> dict[str, Any]:
    act = round(float(r["activation"]), 5)
    return {"layer": int(r["layer"]), "neuron": int(r["neuron"]), "label": pr.neuron_label(r["layer"], r["neuron"]),
            "side": r["side"], "activation": act,
            "normalized": round(float(r["attribution"]), 5), "explanation": r["explanation"], "score": r["score"],
            "detail": pr.effect_row_detail(float(r["attribution"]), float(r["ablation"]), act),
            "score_text": pr.score_text(r["score"])}


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
            r["score_text"] = pr.score_text(r["score"])
            r["label"] = pr.search_label(r["model"], r["layer"], r["neuron"], r["side"])
        self._data = {**self._data, "query": str(query), "results": rows, "error": None}
        return df

    @command
    def search_request(self, msg: Any, buffers: list[bytes]) -> tuple[SearchReply, list[bytes]]:
        """The front end's search (anywidget command): the results go into ``_data`` (a query the
        search refuses too: its message is ``_data["error"]``, shown under the box); the answer
        says done, or why the request itself was refused."""
        try:
            req = parse_request(msg, OPENER_REQUESTS)
            if req["type"] != "search":
                raise ValueError(f"search_request takes a search request, got {req['type']!r}")
        except Exception as e:
            return self._failed("search", e), []
        if not req["query"].strip():  # an emptied box: no results, no complaint
            self._data = {**self._data, "query": "", "results": [], "error": None}
        else:
            try:
                self.search(req["query"])
            except ValueError:
                pass  # the message is in _data["error"], shown under the box
            except Exception as e:  # shown in the view, never a blank one
                return self._failed("search", e), []
        return {"type": "done"}, []

    def _new_view(self, layer: int, neuron: int, model: Any, side: str) -> Any:
        from neuronwidget.subject import gpt2_available
        from neuronwidget.widgets.neuron_view import NeuronView

        if model in ("gpt2", "gpt2-xl") and not gpt2_available(model):
            return NeuronView.published(layer, neuron, model=model, **self._view_kwargs)
        return NeuronView(layer, neuron, model=model, side=side, **self._view_kwargs)

    def _static_html(self) -> str:
        """The query and its results as js/explorer.ts draws them (a template over the same strings)."""
        d = self._data
        table = sh.neuron_rows([(r["label"], r["explainer"] or "", r["explanation"], r["score_text"]) for r in d["results"]],
                               pr.HEADINGS["search_none"] if d["query"] else None)
        error = f'<div class="nw-error" style="color:#c62828">{sh.esc(d["error"])}</div>' if d["error"] else ""
        return sh.box(f'<div style="font-weight:600">{sh.esc(pr.HEADINGS["search"])}</div>'
                      f'<div class="nw-search-input" style="border:1px solid #ccc;padding:2px 4px">{sh.esc(d["query"])}</div>'
                      f'{error}{table if not d["error"] else ""}')


__all__ = ["Explorer", "SearchBox"]
