"""NeuronView: everything about one neuron, live against the kernel's engine.

The front end asks for more through custom messages; slow work (the user's text through
the model, explaining, simulating and scoring) runs on worker threads, reports progress
into ``_status`` and can be cancelled.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import traitlets

from neuronwidget.records import ActivationRecord, NeuronRecord, ScoredExplanation
from neuronwidget.widgets import static_html as sh
from neuronwidget.widgets._base import BaseView, Packer
from neuronwidget.widgets.tokens import byte_hints
from neuronwidget.widgets.views import card_data

MAX_TRY_CHARS = 4000
# Explanations made in this kernel, per (model, corpus, layer, neuron): navigating back shows them.
_KNOWN: dict[tuple[str, str, int, int], list[ScoredExplanation]] = {}
_engine_lock = threading.Lock()
_published_offline = False


def _rec(r: ActivationRecord, pk: Packer) -> dict[str, Any]:
    return {"tokens": list(r.tokens), "a": pk.add(r.activations)}


def _quantile_label(i: int, bounds: list[float]) -> str:
    f = sh.format_activation
    if i == 0:
        return f"below {f(bounds[0])}"
    if i >= len(bounds):
        return f"above {f(bounds[-1])}"
    return f"{f(bounds[i - 1])} to {f(bounds[i])}"


def _published(model_name: str, layer: int, neuron: int) -> list[ScoredExplanation]:
    """OpenAI's published explanations for real GPT-2 small/XL; [] when offline or absent."""
    global _published_offline
    if model_name not in ("gpt2", "gpt2-xl") or _published_offline:
        return []
    try:
        from neuronwidget.activations.published import PublishedDataUnavailable, published_explanations

        res = published_explanations(layer, neuron, model_name, timeout=5.0)
    except PublishedDataUnavailable:
        _published_offline = True
        return []
    except Exception:  # a broken published file must not break the view
        return []
    out = list(res.scored_explanations) if res else []
    for s in out:
        s.explainer = s.explainer or "OpenAI (published, GPT-4)"
    return out


class NeuronView(BaseView):
    """Everything about one MLP neuron: ``NeuronView(5, 131)``.

    Shows the top-activating corpus texts, random and quantile samples, an activation
    histogram and scored explanations; lets you try your own text and test your own
    explanation. ``model`` defaults to ``configure(model=...)``; ``index`` to the engine's
    default-corpus index; ``explainer``/``simulator`` to the configured backends.
    Colours are positive-only (GELU neurons barely go negative); ``diverging=True`` also
    colours negative activations (blue).
    """

    _status = traitlets.Dict().tag(sync=True)

    def __init__(self, layer: int, neuron: int, model: Any = None, *, index: Any = None,
                 explainer: Any = None, simulator: Any = None, n_top: int = 10, n_random: int = 10,
                 diverging: bool = False) -> None:
        from neuronwidget.api import get_engine, resolve_explainer, resolve_simulator

        if index is not None and index.precomputed:
            engine = None  # published records alone: a model is loaded only for "try your text"
        else:
            engine = get_engine(model)
            if index is None:
                index = engine.index()
            elif (index.n_layers, index.n_neurons) != (engine.n_layers, engine.n_neurons):
                raise ValueError(
                    f"index has {index.n_layers}x{index.n_neurons} neurons but the model {engine.model_name} has "
                    f"{engine.n_layers}x{engine.n_neurons}; pass the index built for this model (engine.index())"
                )
        self._engine, self._index = engine, index
        self._explainer = resolve_explainer(explainer)
        self._simulator = resolve_simulator(simulator)
        self._n_top, self._n_random, self._diverging = n_top, n_random, bool(diverging)
        self._quick = ThreadPoolExecutor(1, thread_name_prefix="nw-quick")
        self._slow = ThreadPoolExecutor(1, thread_name_prefix="nw-slow")
        self._futures: list[Future] = []
        self._cancel = threading.Event()
        self._busy = False
        super().__init__(_view_kind="neuron", _status={})
        self.on_msg(self._on_custom_msg)
        self._load(layer, neuron)

    @classmethod
    def published(cls, layer: int, neuron: int, model: str = "gpt2", **kwargs: Any) -> NeuronView:
        """A view of OpenAI's published records and explanations alone, without running any model
        (GPT-2 small "gpt2" or "gpt2-xl"; needs the network once per neuron, then the cache)."""
        from neuronwidget.activations.published import PublishedIndex

        return cls(layer, neuron, index=PublishedIndex(model), **kwargs)

    # ---- data -----------------------------------------------------------------------------
    @property
    def layer(self) -> int:
        return self._layer

    @property
    def neuron(self) -> int:
        return self._neuron

    @property
    def record(self) -> NeuronRecord:
        return self._record

    @property
    def explanations(self) -> list[ScoredExplanation]:
        """Scored explanations shown for this neuron (newest first)."""
        return self._known()

    def _known(self) -> list[ScoredExplanation]:
        key = (self._index.model_name, self._index.corpus_name, self._layer, self._neuron)
        if key not in _KNOWN:
            _KNOWN[key] = _published(self._index.model_name, self._layer, self._neuron)
        return _KNOWN[key]

    def _load(self, layer: int, neuron: int) -> None:
        from neuronwidget.records import check_layer_neuron

        ix = self._index
        layer, neuron = check_layer_neuron(layer, neuron, ix.n_layers, ix.n_neurons, ix.model_name)
        record = self._index.record(layer, neuron)
        self._layer, self._neuron, self._record = layer, neuron, record
        mx = float(record.max_activation)
        pk = Packer()
        bounds = list(record.quantile_boundaries or [])
        quantiles = [{"label": _quantile_label(i, bounds), "records": [_rec(r, pk) for r in group[:2]]}
                     for i, group in enumerate(record.random_sample_by_quantile or []) if group]
        edges, counts = self._index.histogram(layer, neuron)
        data = {
            "header": {"model": ix.model_name, "is_tiny": bool(self._engine and self._engine.is_tiny),
                       "layer": layer, "neuron": neuron, "n_layers": ix.n_layers, "n_neurons": ix.n_neurons,
                       "max": mx, "corpus": ix.corpus_name},
            "top": [_rec(r, pk) for r in record.most_positive_activation_records[: self._n_top]],
            "top_total": len(record.most_positive_activation_records),
            "random": [_rec(r, pk) for r in record.random_sample[: self._n_random]],
            "quantiles": quantiles,
            "hist": {"edges": [round(float(e), 5) for e in edges], "counts": [int(c) for c in counts],
                     "caption": ix.histogram_caption},
            "cards": [card_data(s, pk, mx) for s in self._known()],
            "explainer": self._explainer.name,
            "simulator": self._simulator.name,
            "diverging": self._diverging,
        }
        with self.hold_sync():
            self._data = data
            self._buf = pk.tobytes()
            self._status = {}

    # ---- messages from the front end -----------------------------------------------------
    def _on_custom_msg(self, _widget: Any, content: Any, buffers: Any = None) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        try:
            if kind == "goto":
                self._load(content.get("layer"), content.get("neuron"))
            elif kind == "more":
                start, stop = int(content.get("start", 0)), int(content.get("stop", 0))
                records = self._index.top_records(self._layer, self._neuron, start, max(start, stop))
                pk = Packer()
                self.send({"type": "more", "start": start, "records": [_rec(r, pk) for r in records]},
                          buffers=[pk.tobytes()])
            elif kind == "try":
                self._submit(self._quick, self._try, str(content.get("text", "")), content.get("id"))
            elif kind == "test":
                self._start_slow("scoring your explanation", self._test, str(content.get("explanation", "")).strip())
            elif kind == "explain":
                self._start_slow(f"explaining with {self._explainer.name}", self._explain)
            elif kind == "cancel":
                self._cancel.set()
            else:
                raise ValueError(f"unknown request {kind!r}; expected goto, more, try, test, explain or cancel")
        except Exception as e:  # shown inside the widget, never a blank view
            self._error(str(kind), e)

    def _submit(self, pool: ThreadPoolExecutor, fn, *args) -> None:
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(pool.submit(self._guard, fn, *args))

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as e:
            self._error(getattr(fn, "__name__", "task").strip("_"), e)

    def _start_slow(self, task: str, fn, *args) -> None:
        if self._busy:
            raise RuntimeError("another task is still running: wait for it or press Cancel")
        self._busy = True
        self._cancel = threading.Event()
        self._status = {"task": task, "done": 0, "total": 0, "message": f"{task}…"}
        self._submit(self._slow, self._run_slow, task, fn, *args)

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

    def _try(self, text: str, req_id: Any) -> None:
        if not text.strip():
            return
        if len(text) > MAX_TRY_CHARS:
            raise ValueError(f"your text has {len(text)} characters; at most {MAX_TRY_CHARS} are run at once")
        with _engine_lock:
            if self._engine is None:  # a published-records view loads the model on first use
                from neuronwidget.api import get_engine

                self._engine = get_engine(self._index.model_name)
            rec = self._engine.activations(text, self._layer, self._neuron)
        reply = {"type": "try", "id": req_id, "tokens": list(rec.tokens)}
        if any("\ufffd" in t for t in rec.tokens):
            tokenizer = self._engine.lm.tokenizer
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == len(rec.tokens):
                reply["hints"] = byte_hints(tokenizer, ids, rec.tokens)
        pk = Packer()
        reply["a"] = pk.add(rec.activations)
        self.send(reply, buffers=[pk.tobytes()])

    def _test(self, task: str, explanation: str) -> None:
        from neuronwidget.api import score

        if not explanation:
            raise ValueError("type an explanation first, then press “Simulate & score”")
        scored = score(self._record, explanation, self._simulator, progress=self._progress(task), cancel=self._cancel)
        scored.explainer = "you (typed in this view)"
        self._add_card(scored)

    def _explain(self, task: str) -> None:
        from neuronwidget.api import explain, score

        texts = explain(self._record, self._explainer, progress=self._progress(task), cancel=self._cancel)
        scored = score(self._record, texts[0], self._simulator, progress=self._progress("scoring the explanation"),
                       cancel=self._cancel)
        scored.explainer = self._explainer.name
        self._add_card(scored)

    def _add_card(self, scored: ScoredExplanation) -> None:
        self._known().insert(0, scored)
        pk = Packer()
        self.send({"type": "card", "card": card_data(scored, pk, self._record.max_activation)}, buffers=[pk.tobytes()])

    def _error(self, task: str, err: Exception) -> None:
        message = f"{task} failed: {type(err).__name__}: {err}"
        self._status = {"task": None, "error": message}
        self.send({"type": "error", "task": task, "message": message})

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the requests sent so far are answered (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        for f in list(self._futures):
            f.result(timeout=max(0.0, deadline - time.monotonic()))

    # ---- static fallback -----------------------------------------------------------------
    def _static_html(self) -> str:
        d = self._data
        hd = d["header"]
        mx = hd["max"]
        parts = [
            f'<div style="font-size:15px;font-weight:600">{sh.esc(hd["model"])} · layer {hd["layer"]} · neuron {hd["neuron"]}</div>',
            f'<div style="color:#5a5a5a;font-size:12px">max activation {sh.esc(sh.format_activation(mx))} · '
            f'corpus: {sh.esc(hd["corpus"])}</div>',
        ]
        known = self._known()
        parts.append('<div style="font-weight:600;margin-top:6px">Explanations</div>')
        parts += [sh.card_html(s, mx, details=False) for s in known] or ['<div style="color:#5a5a5a">No explanation yet.</div>']
        parts.append('<div style="font-weight:600;margin-top:6px">Top activating examples</div>')
        for r in self._record.most_positive_activation_records[: self._n_top]:
            # centred on the max token, as in the live view (keeps saved notebooks small)
            peak = max(range(len(r.activations)), key=r.activations.__getitem__, default=0)
            lo, hi = max(0, peak - 12), peak + 7
            parts.append(sh.token_row(r.tokens[lo:hi], r.activations[lo:hi], mx, diverging=self._diverging, offset=lo))
        parts.append('<div style="font-weight:600;margin-top:6px">Random samples</div>')
        parts += [sh.token_row(r.tokens, r.activations, mx, diverging=self._diverging) for r in self._record.random_sample[:2]]
        parts.append(sh.legend(mx, self._diverging))
        return sh.box("".join(parts))

    def close(self) -> None:
        if hasattr(self, "_slow"):  # construction may have failed before the pools existed
            self._cancel.set()
            self._quick.shutdown(wait=False)
            self._slow.shutdown(wait=False)
        super().close()
