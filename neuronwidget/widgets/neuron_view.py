"""NeuronView: everything about one neuron, live against the kernel's engine.

The front end asks for more through anywidget commands (``invoke("try_request", {...})`` in
js/neuronview.ts, a ``@command`` method here; messages.py types every request and reply). A
command answers with its result; one that fails answers with an ErrorReply (and shows it in
``_status``), never an exception. Slow work (explaining, simulating and scoring) runs on a
worker thread: its command answers at once, the work reports progress into ``_status``, puts
its card into ``_data`` and can be cancelled (the ``cancel`` command, answered while it runs).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import wraps
from typing import Any, Callable

import traitlets
from anywidget.experimental import command

from neuronwidget.records import SIDES, ActivationRecord, NeuronRecord, ScoredExplanation
from neuronwidget.widgets import present as pr
from neuronwidget.widgets import static_html as sh
from neuronwidget.widgets._base import BaseView
from neuronwidget.widgets.connections import connections_payload, record_card
from neuronwidget.widgets.messages import (REQUESTS, CancelRequest, CardData, DoneReply, EffectReply, EffectRequest,
                                           ErrorReply, ExplainRequest, MoreReply, MoreRequest, NeuronData, Row,
                                           SamplesRequest, SteerReply, SteerRequest, TestRequest, TryReply, TryRequest,
                                           command_name, parse_request)
from neuronwidget.widgets.tokens import char_groups
from neuronwidget.widgets.views import card_data

MAX_TRY_CHARS = 4000
STATIC_SAMPLES = 1  # rows per opened sample section in the saved fallback (the live view shows them all)
STEER_TOKENS = 24  # tokens the view's steering box generates (nw.steer takes up to 512)
MAX_STRENGTH = 50.0  # |strength| the steering box accepts, in multiples of the neuron's max (or |min|)
EFFECT_TOP = 3  # promoted / suppressed tokens per position in the effect row
FALLBACK_DELAY = 1.5  # s: the saved fallback follows effect / steering results once typing pauses

# What the user did, named in every error the view shows (never an internal function).
_ACTIONS = {
    "goto": "that neuron could not be opened",
    "more": "more examples could not be loaded",
    "try": "your text could not be run",
    "test": "your explanation could not be scored",
    "explain": "this neuron could not be explained",
    "side": "that side could not be shown",
    "effect": "the effect of zeroing this neuron could not be measured",
    "steer": "the steered continuation could not be made",
    "samples": "the samples could not be loaded",
    "cancel": "the task could not be cancelled",
    "request": "the view's request was not understood",
}


def _command(kind: str) -> Callable:
    """A NeuronView method as the anywidget command answering ``kind`` requests (named
    messages.command_name(kind)): the request checked against messages.py's type, the method's
    reply returned; a failure answered as the ErrorReply the view shows."""
    def wrap(method: Callable) -> Callable:
        @wraps(method)
        def answer(self: NeuronView, msg: Any, buffers: list[bytes]) -> tuple[Any, list[bytes]]:
            try:
                reply = method(self, parse_request(msg, {kind: REQUESTS[kind]}))
            except Exception as e:  # shown inside the widget, never a blank view
                return self._error(kind, e), []
            self._clear_error()
            return reply, []

        assert method.__name__ == command_name(kind)
        return command(answer)
    return wrap


def _groups(r: ActivationRecord) -> list:
    return char_groups(getattr(r, "token_bytes", None))


class _Published:
    """OpenAI's published explanations for real GPT-2 small/XL, as one view fetches them. Owned by
    the view: once the published data cannot be reached, this view stops asking (it would wait
    for the timeout on every neuron); another view, or a new one, asks again."""

    def __init__(self) -> None:
        self.offline = False

    def __call__(self, model_name: str, layer: int, neuron: int) -> list[ScoredExplanation]:
        """[] when offline, absent or not GPT-2 small/XL."""
        if model_name not in ("gpt2", "gpt2-xl") or self.offline:
            return []
        try:
            from neuronwidget.activations.published import PublishedDataUnavailable, published_explanations

            res = published_explanations(layer, neuron, model_name, timeout=5.0)
        except PublishedDataUnavailable:
            self.offline = True
            return []
        except Exception:  # a broken published file must not break the view
            return []
        return _named(list(res.scored_explanations) if res else [])


def _named(out: list[ScoredExplanation]) -> list[ScoredExplanation]:
    for s in out:
        s.explainer = s.explainer or "OpenAI (published, GPT-4)"
    return out



def _token_values(items: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """(token, value) pairs as the protocol's TokenValue dicts."""
    return [{"token": tok, "value": float(v)} for tok, v in items]

class NeuronView(BaseView):
    """Everything about one MLP neuron: ``NeuronView(5, 131)``.

    Shows the top-activating corpus texts, random and quantile samples, an activation
    histogram and scored explanations; lets you try your own text and test your own
    explanation (Enter adds a line, Ctrl/Cmd+Enter scores). ``model`` defaults to
    ``configure(model=...)``; ``index`` to the engine's default-corpus index;
    ``explainer``/``simulator`` to the configured backends.

    Signed neurons (records with ``most_negative_activation_records``, e.g. gated MLPs) get
    a positive / negative side switch; ``side`` picks the first one shown. Explaining,
    scoring and "test your explanation" work on the side shown (the negative side is the
    method applied to -activation). ``diverging`` (default: True for signed neurons) also
    colours negative activations (blue).
    """

    # What the view shows, in the open: setting any of them navigates (``view.layer = 9``), the
    # front end sets them too (the layer/neuron boxes, prev/next, the side switch), and
    # ``view.observe`` / ``ipywidgets.link`` work on them. An impossible value is refused: from
    # Python with the error, from the front end with the error shown in the view; either way
    # the traits go back to what is shown.
    model = traitlets.Unicode("", help="the model read (what get_engine takes; the published model's name)").tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    neuron = traitlets.Int(0).tag(sync=True)
    side = traitlets.Enum(list(SIDES), "positive", help="the side shown, explained and scored").tag(sync=True)
    _status = traitlets.Dict().tag(sync=True)
    # the rows of the folded sample sections the user opened (Folded.key -> rows), for the neuron shown
    _samples = traitlets.Dict().tag(sync=True)

    def __init__(self, layer: int, neuron: int, model: Any = None, *, index: Any = None,
                 explainer: Any = None, simulator: Any = None, n_top: int = 10, n_random: int = 10,
                 diverging: bool | None = None, side: str = "positive", units: str | None = None) -> None:
        from neuronwidget.api import get_engine, resolve_explainer, resolve_simulator, settings

        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        self._given_index = index is not None and not index.precomputed
        self._published_only = index is not None and index.precomputed
        if self._published_only:
            engine = None  # published records alone: a model is loaded only for "try your text"
            spec = index.model_name
        else:
            engine = get_engine(model)
            spec = model if isinstance(model, str) else settings().model if model is None else engine.model_name
            units = units or getattr(index, "units", None)  # SAE latents: units="sae:NAME" (see subject/units.py)
            if index is None:
                # a neuron's first view waits for a pass up to its layer only (lazy)
                index = engine.index(units=units) if units else engine.index(lazy=True)
            elif units is None:
                self._check_index(engine, index)
        self._engine, self._index = engine, index
        self._units = None if self._published_only else units
        self._engine_lock = threading.Lock()  # this view's lazy engine (a published-records view)
        self._explainer = resolve_explainer(explainer)
        self._simulator = resolve_simulator(simulator)
        self._n_top, self._n_random = n_top, n_random
        self._diverging_arg = None if diverging is None else bool(diverging)
        # explanations shown per (model, corpus, layer, neuron, side): navigating back shows them
        self._cards: dict[tuple[str, str, int, int, str], list[ScoredExplanation]] = {}
        self._published = _Published()
        self._fresh: set[int] = set()  # ids of explanations made in this view (highlighted)
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="nw-slow")
        self._futures: list[Future] = []
        self._cancel = threading.Event()
        self._busy = False
        self._applying = False  # the view itself is setting its traits
        self._from_front = False  # the front end is setting them
        self._shown_key: tuple[str, int, int, str] | None = None
        super().__init__(_view_kind="neuron", _status={})
        self._apply(str(spec), layer, neuron, side)

    @classmethod
    def published(cls, layer: int, neuron: int, model: str = "gpt2", **kwargs: Any) -> NeuronView:
        """A view of OpenAI's published records and explanations alone, without running any model
        (GPT-2 small "gpt2" or "gpt2-xl"; needs the network once per neuron, then the cache)."""
        from neuronwidget.activations.published import PublishedIndex

        return cls(layer, neuron, index=PublishedIndex(model), **kwargs)

    @staticmethod
    def _check_index(engine: Any, index: Any) -> None:
        if (index.n_layers, index.n_neurons) != (engine.n_layers, engine.n_neurons):
            raise ValueError(
                f"index has {index.n_layers}x{index.n_neurons} neurons but the model {engine.model_name} has "
                f"{engine.n_layers}x{engine.n_neurons}; pass the index built for this model (engine.index())"
            )

    # ---- navigation: the traits ------------------------------------------------------------
    def goto(self, layer: int, neuron: int, side: str | None = None) -> None:
        """Show another neuron (and side) at once; raises ValueError when it does not exist."""
        self._navigate(self.model, layer, neuron, side or self.side, "goto")

    def set_state(self, sync_data: dict[str, Any]) -> None:
        """The front end's changes: a box left empty is refused here, saying so, not by traitlets."""
        sync_data = dict(sync_data)
        for name in ("layer", "neuron"):
            value = sync_data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                sync_data.pop(name)
                self._error("goto", ValueError(f"{name} must be an integer, got {value!r}"))
                self.send_state(name)  # the front end shows what is shown again
        self._from_front = True
        try:
            super().set_state(sync_data)
        finally:
            self._from_front = False

    @traitlets.observe("model", "layer", "neuron", "side")
    def _on_trait(self, change: Any) -> None:
        if self._applying or self._shown_key is None:
            return
        want = (self.model, self.layer, self.neuron, self.side)
        if want == self._shown_key:
            return
        action = "side" if want[:3] == self._shown_key[:3] else "goto"
        try:
            self._navigate(*want, action)
        except Exception as e:
            if not self._from_front:
                raise
            self._error(action, e)

    def _navigate(self, model: str, layer: int, neuron: int, side: str, action: str) -> None:
        """Show (model, layer, neuron, side); on failure the traits go back to what is shown."""
        try:
            if action == "side" and side == "negative" and not self.signed:
                raise ValueError("this neuron has no negative side recorded (its index keeps the top windows only)")
            self._apply(model, layer, neuron, side)
        except Exception:
            self._set_traits(*self._shown_key)  # type: ignore[misc]
            raise

    def _set_traits(self, model: str, layer: int, neuron: int, side: str) -> None:
        self._applying = True
        try:
            self.model, self.layer, self.neuron, self.side = model, layer, neuron, side
        finally:
            self._applying = False

    def _open_model(self, model: str) -> None:
        """Read another model: its engine and default index (a published view: its published index)."""
        from neuronwidget.api import get_engine

        if self._published_only:
            from neuronwidget.activations.published import PublishedIndex

            self._engine, self._index = None, PublishedIndex(model)
        elif self._given_index or self._units:
            raise ValueError("this view was given its index or units; make a NeuronView with model=... for another model")
        else:
            self._engine = get_engine(model)
            self._index = self._engine.index()

    def _apply(self, model: str, layer: int, neuron: int, side: str) -> None:
        from neuronwidget.records import check_layer_neuron

        if self._shown_key is not None and model != self._shown_key[0]:
            self._open_model(model)
        ix = self._index
        layer, neuron = check_layer_neuron(layer, neuron, ix.n_layers, ix.n_neurons, ix.model_name)
        self._record = ix.record(layer, neuron)
        self._last_effect: EffectReply | None = None  # what the effect / steering parts show (another neuron: none)
        self._last_steer: SteerReply | None = None
        if side not in SIDES or not self.signed:
            side = "positive"
        self._diverging = self.signed if self._diverging_arg is None else self._diverging_arg
        self._shown_key = (model, layer, neuron, side)
        with self.hold_sync():
            self._set_traits(model, layer, neuron, side)
            self._data = self._payload()
            self._samples = {}
            self._status = {}
        self._refresh_fallback()

    # ---- data -----------------------------------------------------------------------------
    @property
    def signed(self) -> bool:
        """Whether this neuron has a negative side worth showing (recorded, and below zero)."""
        neg = self._record.most_negative_activation_records
        return bool(neg) and min(r.min_activation for r in neg) < 0

    @property
    def record(self) -> NeuronRecord:
        """The neuron's record as the method sees the side shown (``for_side``)."""
        return self._record.for_side(self.side)

    @property
    def explanations(self) -> list[ScoredExplanation]:
        """Scored explanations shown for this neuron and side (newest first)."""
        return self._known()

    def _known(self, side: str | None = None) -> list[ScoredExplanation]:
        side = side or self.side
        key = (self._index.model_name, self._index.corpus_name, self.layer, self.neuron, side)
        if key not in self._cards:
            from neuronwidget.explore.api import neuron_explanations  # stored in any session, newest first

            published = self._published(self._index.model_name, self.layer, self.neuron) if side == "positive" else []
            self._cards[key] = neuron_explanations(getattr(self._index, "model", self._index.model_name), self.layer,
                                              self.neuron, side, extra=published)
        return self._cards[key]

    def _shown(self) -> list[ActivationRecord]:
        """The records at the top of the view: highest first, or lowest first on the negative side."""
        r = self._record
        return r.most_negative_activation_records if self.side == "negative" else r.most_positive_activation_records

    def _extremes(self) -> tuple[float, float]:
        r = self._record
        mx = float(r.max_activation)
        lows = [x.min_activation for x in r.most_negative_activation_records]
        mn = float(min(lows)) if lows else min(0.0, min((x.min_activation for x in r.random_sample), default=0.0))
        return mx, min(0.0, mn)

    def _scale(self) -> pr.Scale:
        mx, mn = self._extremes()
        return pr.Scale(mx, mn, self._diverging)

    def _row(self, r: ActivationRecord, centre: bool = False) -> Row:
        return pr.row(r.tokens, r.activations, self._scale(), groups=_groups(r),
                      centre=("negative" if self.side == "negative" else True) if centre else False)

    def _payload(self) -> NeuronData:
        """What the view shows, every string and colour level decided (present.py); the saved
        fallback is a template over the same payload."""
        ix, record = self._index, self._record
        mx, mn = self._extremes()
        scale = self._scale()
        edges, counts = ix.histogram(self.layer, self.neuron)
        shown = self._shown()
        method = self.record  # the side as the method sees it: cards' scale is its max
        signed = self.signed
        data: NeuronData = {
            "header": {"model": ix.model_name, "title": pr.neuron_title(self.layer, self.neuron, self._units),
                       "meta": f"{pr.activation_range(mx, mn, signed)} · corpus: {ix.corpus_name}",
                       "is_tiny": bool(self._engine and self._engine.is_tiny),
                       "n_layers": ix.n_layers, "n_neurons": ix.n_neurons, "max": mx, "signed": signed,
                       "side_note": pr.SIDES[self.side]},
            "top_title": pr.top_title(self.side),
            "test_title": pr.test_title(self.side, signed),
            "empty": pr.no_explanation(self.side, signed),
            "top": [self._row(r, centre=True) for r in shown[: self._n_top]],
            "top_total": len(shown),
            "samples": self._folded(),
            "hist": pr.histogram(edges, counts, ix.histogram_caption),
            "cards": [self._card(s, method.max_activation) for s in self._known()],
            "explainer": self._explainer.name,
            "simulator": self._simulator.name,
            "legend": pr.legend(scale),
            "strengths": pr.strengths(mx, mn, signed),
            "connections": connections_payload(self._engine, self.layer, self.neuron) if not self._units else
            self._latent_connections(),
        }
        return data

    def _folded(self) -> list[dict[str, str]]:
        """The folded sample sections' headings: the random samples, then one per quantile."""
        record = self._record
        bounds = list(record.quantile_boundaries or [])
        out = [{"key": "random", "title": pr.random_title(len(record.random_sample[: self._n_random]))}]
        out += [{"key": f"q{i}", "title": pr.quantile_title(pr.quantile_label(i, bounds))}
                for i, group in enumerate(record.random_sample_by_quantile or []) if group]
        return out

    def _sample_rows(self, key: str) -> list[Row]:
        """The rows of folded section ``key``: the random samples, or 2 of quantile ``q<i>``."""
        record = self._record
        if key == "random":
            return [self._row(r) for r in record.random_sample[: self._n_random]]
        groups = record.random_sample_by_quantile or []
        if key[:1] == "q" and key[1:].isdigit() and int(key[1:]) < len(groups):
            return [self._row(r) for r in groups[int(key[1:])][:2]]
        raise ValueError(f"no sample section {key!r}; this neuron has {[f['key'] for f in self._folded()]}")

    def _latent_connections(self) -> dict[str, Any]:
        """A latent's connections (nw.latent_connections) in the shape the section draws; its nearest
        latents by decoder cosine as a list the view turns into buttons (they navigate to the latent)."""
        from neuronwidget.explore.latents import latent_connections
        from neuronwidget.widgets.connections import shown

        try:
            c = latent_connections(self.layer, self.neuron, units=self._units, model=self.model, k=8)
        except Exception as e:  # never break the view
            return {"error": f"connections unavailable: {type(e).__name__}: {e}"}
        d = shown(c.to_dict())
        d["nearest"] = [{"layer": self.layer, "neuron": i, "value": v, "label": pr.nearest_latent(i, v),
                         "title": pr.goto_latent(i)} for i, v in d["nearest"]]
        return d

    def _card(self, scored: ScoredExplanation, max_value: float) -> CardData:
        return card_data(scored, max_value, side=self.side, fresh=id(scored) in self._fresh)

    # ---- requests from the front end: anywidget commands -----------------------------------
    @_command("more")
    def more_request(self, req: MoreRequest) -> MoreReply:
        """More of the top (or, on the negative side, bottom) records: [start, stop)."""
        start, stop = req["start"], max(req["start"], req["stop"])
        if self.side == "negative":
            bottom = getattr(self._index, "bottom_records", None)
            records = (bottom(self.layer, self.neuron, start, stop) if bottom
                       else self._record.most_negative_activation_records[start:stop])
        else:
            records = self._index.top_records(self.layer, self.neuron, start, stop)
        return {"type": "more", "start": start, "records": [self._row(r, centre=True) for r in records]}

    @_command("samples")
    def samples_request(self, req: SamplesRequest) -> DoneReply:
        """A folded section's rows, opened by the user: into ``_samples`` (a saved notebook keeps
        what was opened; the widget state does not carry the sections nobody opened)."""
        self._samples = {**self._samples, req["key"]: self._sample_rows(req["key"])}
        self._refresh_fallback()
        return {"type": "done"}

    @_command("try")
    def try_request(self, req: TryRequest) -> TryReply:
        """The user's text through the model: its activations as a row."""
        text = self._runnable(req["text"], "your text")
        # no lock here: passes on one model take turns inside the capture (subject.capture.pass_lock)
        rec = self._model_engine().activations(text, self.layer, self.neuron,
                                               **({"units": self._units} if self._units else {}))
        raw = getattr(rec, "token_bytes", None) or self._token_bytes(text, len(rec.tokens))
        return {"type": "try", "row": pr.row(rec.tokens, rec.activations, self._scale(), groups=char_groups(raw))}

    @_command("effect")
    def effect_request(self, req: EffectRequest) -> EffectReply:
        """The unit zeroed at every token of the user's text: per token, how the next-token prediction changes."""
        reply = self._effect(self._runnable(req["text"], "your text"))
        self._keep_for_fallback("_last_effect", reply)
        return reply

    @_command("steer")
    def steer_request(self, req: SteerRequest) -> SteerReply:
        """The model continues ``prompt`` with the unit clamped at ``strength`` × its max, and without."""
        reply = self._steer(req["prompt"], req["strength"])
        self._keep_for_fallback("_last_steer", reply)
        return reply

    @_command("test")
    def test_request(self, req: TestRequest) -> DoneReply:
        """Score the user's explanation (slow: progress in ``_status``, the card in ``_data``)."""
        self._start_slow("test", "scoring your explanation", self._test, req["explanation"].strip())
        return {"type": "done"}

    @_command("explain")
    def explain_request(self, req: ExplainRequest) -> DoneReply:
        """Explain and score the side shown (slow: progress in ``_status``, the card in ``_data``)."""
        best_of = req["best_of"]
        if not 1 <= best_of <= 20:
            raise ValueError(f"best_of must be in 1..20, got {best_of}")
        how = f"the best of {best_of}, revised" if best_of > 1 else "one explanation"
        self._start_slow("explain", f"explaining with {self._explainer.name} ({how})", self._explain, best_of)
        return {"type": "done"}

    @_command("cancel")
    def cancel_request(self, req: CancelRequest) -> DoneReply:
        """Cancel the slow task running (its worker stops at the next step and says so in ``_status``)."""
        self._cancel.set()
        return {"type": "done"}

    def _runnable(self, text: str, what: str) -> str:
        if not text.strip():
            raise ValueError(f"type {what} first")
        if len(text) > MAX_TRY_CHARS:
            raise ValueError(f"it has {len(text)} characters; at most {MAX_TRY_CHARS} are run at once")
        return text

    def _submit(self, action: str, fn, *args) -> None:
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._slow.submit(self._guard, action, fn, *args))

    def _guard(self, action: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            self._error(action, e)

    def _start_slow(self, action: str, task: str, fn, *args) -> None:
        if self._busy:
            raise RuntimeError("another task is still running: wait for it or press Cancel")
        self._busy = True
        self._cancel = threading.Event()
        self._status = {"task": task, "done": 0, "total": 0, "message": f"{task}…"}
        self._submit(action, self._run_slow, task, fn, *args)

    def _run_slow(self, task: str, fn, *args) -> None:
        from neuronwidget.explanations import Cancelled

        try:
            fn(task, *args)
            self._status = {}
        except Cancelled:
            self._status = {"task": None, "error": f"{task}: cancelled. Press the button again to restart."}
        finally:
            self._busy = False

    def _progress(self, task: str):
        last = [0.0]

        def report(done: int, total: int, message: str = "") -> None:
            now = time.monotonic()
            if now - last[0] > 0.1 or done >= total:
                last[0] = now
                self._status = {"task": task, "done": int(done), "total": int(total), "message": message or task}

        return report

    # ---- what the neuron does: its effect on the user's text, steering ---------------------
    def _model_engine(self) -> Any:
        with self._engine_lock:
            if self._engine is None:  # a published-records view loads the model on first use
                from neuronwidget.api import get_engine

                self._engine = get_engine(self._index.model_name)
            return self._engine

    def _effect(self, text: str) -> EffectReply:
        """The neuron (or latent) zeroed at every token of ``text``, as the Effect section shows it."""
        from neuronwidget.explore.effects import neuron_effect

        engine = self._model_engine()
        if self._units:  # a latent ablated at every token (its own part f × W_dec removed where its SAE writes)
            from neuronwidget.explore.latents import latent_effect

            e = latent_effect(text, self.neuron, units=self._units, model=self.model, k=EFFECT_TOP)
            reply: EffectReply = {
                "type": "effect", "tokens": e.tokens, "kl": e.kl, "next": e.tokens[1:],
                "dlogp": [float(x) for x in e.delta_logp[:-1]], "promoted": [_token_values(x) for x in e.promoted],
                "suppressed": [_token_values(x) for x in e.suppressed]}  # type: ignore[typeddict-item]
            pr.effect(reply, self.layer, self.neuron)
            reply["title"] = (f"Effect of ablating {self._units} latent {self.neuron} at every token "
                              "(its part f × W_dec removed)")
            return reply
        t = neuron_effect(text, self.layer, self.neuron, model=engine.lm, records=0, k=EFFECT_TOP).table
        reply = {
            "type": "effect", "tokens": [str(x) for x in t.token], "kl": [float(x) for x in t.kl],
            "next": [str(x) for x in t.next_token[:-1]], "dlogp": [float(x) for x in t.delta_logprob[:-1]],
            "promoted": [_token_values(x) for x in t.promoted], "suppressed": [_token_values(x) for x in t.suppressed],
        }  # type: ignore[typeddict-item]
        pr.effect(reply, self.layer, self.neuron)
        return reply

    def _steer_value(self, strength: float) -> float:
        """The activation a strength means in this view: × its max, or × |min| below 0 on a signed neuron."""
        mx, mn = self._extremes()
        return pr.steer_value(strength, mx, mn, self.signed)

    def _steer(self, prompt: str, strength: float) -> SteerReply:
        from neuronwidget.explore.effects import steer

        if not prompt.strip():
            raise ValueError("type a prompt first: the model continues it with and without the neuron clamped")
        if not abs(strength) <= MAX_STRENGTH:
            raise ValueError(f"strength must be in -{MAX_STRENGTH:g}..{MAX_STRENGTH:g} (× the neuron's max), got {strength}")
        if len(prompt) > MAX_TRY_CHARS:
            raise ValueError(f"the prompt has {len(prompt)} characters; at most {MAX_TRY_CHARS} are run at once")
        engine = self._model_engine()
        value = self._steer_value(float(strength))
        if self._units:  # a latent: value × its decoder direction added where its SAE writes
            from neuronwidget.explore.latents import steer_latent

            s = steer_latent(prompt, {self.neuron: value}, units=self._units, model=self.model,
                             max_new_tokens=STEER_TOKENS)
        else:
            s = steer(prompt, {(self.layer, self.neuron): value}, max_new_tokens=STEER_TOKENS, model=engine.lm,
                      absolute=True)
        reply: SteerReply = {"type": "steer", "prompt": prompt, "strength": float(strength), "value": float(value),
                             "plain": s.plain, "steered": s.steered}  # type: ignore[typeddict-item]
        pr.steer(reply)
        if self._units:
            reply["note"] = (f"{value:.3g} × the latent's decoder direction added where its SAE writes, at every token "
                             f"of “{prompt}” and its continuation")
        return reply

    def _keep_for_fallback(self, name: str, reply: dict[str, Any]) -> None:
        """Show ``reply`` in the saved fallback: a refresh re-renders the live view (which asks for
        the effect of its text again), so refresh only when the result differs from the one shown,
        and once results stop coming for FALLBACK_DELAY seconds (and a box of the view no longer has
        the keyboard: BaseView._refresh_fallback)."""
        same = getattr(self, name) == reply
        setattr(self, name, reply)
        if same:
            return
        timer = getattr(self, "_fallback_timer", None)
        if timer is not None:
            timer.cancel()
        self._fallback_timer = threading.Timer(FALLBACK_DELAY, self._refresh_fallback)
        self._fallback_timer.daemon = True
        self._fallback_timer.start()

    def _token_bytes(self, text: str, n: int) -> list[bytes] | None:
        """Each token's raw bytes from the subject model, when the engine did not attach them."""
        lm = getattr(self._engine, "lm", None)
        pieces = getattr(lm, "pieces", None)
        if pieces is None:
            return None
        _, raw = pieces(lm.encode(text), text)
        return list(raw) if len(raw) == n else None

    def _test(self, task: str, explanation: str) -> None:
        from neuronwidget.api import score

        if not explanation:
            raise ValueError("type an explanation first, then press “Simulate & score”")
        scored = score(self.record, explanation, self._simulator, progress=self._progress(task), cancel=self._cancel,
                       store=False)
        scored.explainer = "you (typed in this view)"
        self._add_card(scored)

    def _explain(self, task: str, best_of: int = 1) -> None:
        from neuronwidget.api import explain, score

        record = self.record
        improve = best_of > 1
        texts = explain(record, self._explainer, best_of=best_of, revise=improve and hasattr(self._explainer, "revise"),
                        simulator=self._simulator, progress=self._progress(task), cancel=self._cancel)
        scored = score(record, texts[0], self._simulator, progress=self._progress("scoring the explanation"),
                       cancel=self._cancel, store=False)
        scored.explainer = self._explainer.name + (f" (best of {best_of} on held-in records)" if improve else "")
        self._add_card(scored)

    def _add_card(self, scored: ScoredExplanation) -> None:
        """The new card goes into the view's state (so a saved notebook keeps it) and the fallback."""
        self._known().insert(0, scored)
        record_card(getattr(self._index, "model", self._index.model_name), self.layer, self.neuron, scored, self.side)  # the searchable store
        self._fresh.add(id(scored))
        with self.hold_sync():
            self._data = self._payload()
            self._status = {}
        self._refresh_fallback()

    def _clear_error(self) -> None:
        if self._status.get("error"):
            self._status = {}

    def _error(self, action: str, err: Exception) -> ErrorReply:
        """What failed, as the view shows it: in the status line (but the effect of a text that cannot
        run, which would repeat the try box's error: the Effect section shows that one)."""
        detail = str(err).strip() or type(err).__name__
        message = f"{_ACTIONS.get(action, _ACTIONS['request'])}: {detail}"
        if action != "effect":
            self._status = {"task": None, "error": message}
        return {"type": "error", "message": message}

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the slow tasks started so far (explain, test) are done (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        for f in list(self._futures):
            f.result(timeout=max(0.0, deadline - time.monotonic()))

    # ---- static fallback -----------------------------------------------------------------
    def _static_html(self) -> str:
        """What the view shows now, small: the same payload as the live view, through the static template
        (its cards as ``explanations`` holds them now, so an explanation added there is saved too)."""
        cards = [self._card(c, self.record.max_activation) for c in self._known()]
        opened = [(f["title"], self._samples[f["key"]][:STATIC_SAMPLES]) for f in self._data["samples"]
                  if f["key"] in self._samples]  # folded sections show as the user left them
        return sh.neuron_html({**self._data, "cards": cards}, samples=opened, effect=self._last_effect,
                              steer=self._last_steer)

    def close(self) -> None:
        timer = getattr(self, "_fallback_timer", None)
        if timer is not None:
            timer.cancel()
        if hasattr(self, "_slow"):  # construction may have failed before the pools existed
            self._cancel.set()
            self._slow.shutdown(wait=False)
        super().close()
