"""What every neuronwidget view shares: the bundled JS/CSS, the static HTML fallback and
``save_html``."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets
import traitlets
from anywidget.experimental import command

from neuronwidget._io import atomic_write_text, stable_hash

STATIC = Path(__file__).resolve().parent.parent / "static"
_JS = STATIC / "widget.js"
_CSS = STATIC / "widget.css"
_LOADER = STATIC / "loader.js"
# ANYWIDGET_HMR=1 (development): every view carries the bundle as a file path, which anywidget
# watches and reloads. Otherwise views carry a 1 KB loader and ONE shared model per kernel holds
# the bundle, so a notebook saved with widget state has one copy of the JS/CSS, not one per view.
HOT_RELOAD = os.environ.get("ANYWIDGET_HMR") == "1"


def _bundle(path: Path) -> str:
    if not path.exists():
        raise RuntimeError(
            f"the widget bundle {path} is missing: build it with `npm ci && npm run build` "
            "(or reinstall neuronwidget from a wheel, which ships it)"
        )
    return path.read_text(encoding="utf-8")


class _Bundle(ipywidgets.Widget):
    """The views' JS and CSS, once per kernel (a model with no view; saved once with the widget state)."""

    code = traitlets.Unicode("").tag(sync=True)
    style = traitlets.Unicode("").tag(sync=True)
    digest = traitlets.Unicode("").tag(sync=True)


_shared: _Bundle | None = None


def shared_bundle() -> _Bundle:
    """The kernel's one bundle holder (made again if it was closed)."""
    global _shared
    if _shared is None or _shared.comm is None:
        code, style = _bundle(_JS), _bundle(_CSS)
        _shared = _Bundle(code=code, style=style, digest=stable_hash(code + style)[:16])
    return _shared


class BaseView(anywidget.AnyWidget):
    """An anywidget whose data is a JSON dict plus one float32 buffer it points into.

    ``_esm``/``_css`` are the built files as paths: with ``ANYWIDGET_HMR=1`` (and
    ``watchfiles``) a source checkout's views reload live after ``npm run build``.
    Displayed with a display id, so the static fallback saved in the notebook can be
    brought up to date (``_refresh_fallback``) when the view changes.
    """

    _esm = _JS if HOT_RELOAD else (_bundle(_LOADER) if _LOADER.exists() else "")
    _css = _CSS if HOT_RELOAD else ""
    _bundle_id = traitlets.Unicode("").tag(sync=True)
    _bundle_digest = traitlets.Unicode("").tag(sync=True)
    _view_kind = traitlets.Unicode("").tag(sync=True)
    _data = traitlets.Dict().tag(sync=True)
    # stable id of this view's model: the front end keeps what the user typed under it, so an
    # output drawn again (display update) comes back as the user left it
    _uid = traitlets.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        for path in (_JS, _CSS, _LOADER):
            _bundle(path)  # raises, saying how to build it, when missing
        self._handles: list[Any] = []
        # a display update draws the view again, taking the keyboard from the box the user types in:
        # while a box has it, refreshes wait (``_fallback_held``) and one runs when it is given back
        self._editing = False
        self._fallback_held = False
        self._fallback_lock = threading.Lock()
        if not HOT_RELOAD:
            holder = shared_bundle()
            kwargs.update(_bundle_id=holder.model_id, _bundle_digest=holder.digest)
        super().__init__(_uid=uuid.uuid4().hex[:16], **kwargs)

    @command
    def bundle_request(self, msg: Any, buffers: list[bytes]) -> tuple[Any, list[bytes]]:
        """The loader asks for the bundle itself when the shared model cannot be found (a command)."""
        from neuronwidget.widgets.messages import BundleReply

        holder = shared_bundle()
        reply: BundleReply = {"type": "bundle", "code": holder.code, "style": holder.style}
        return reply, []

    @command
    def editing_request(self, msg: Any, buffers: list[bytes]) -> tuple[Any, list[bytes]]:
        """A text box or slider of a live view took the keyboard or gave it back (a command)."""
        from neuronwidget.widgets.messages import DoneReply, EditingRequest, ErrorReply, parse_request

        try:
            req = parse_request(msg, {"editing": EditingRequest})
        except ValueError as e:
            error: ErrorReply = {"type": "error", "message": f"the view's request was not understood: {e}"}
            return error, []
        with self._fallback_lock:
            self._editing = req["editing"]
            due = self._fallback_held and not self._editing
        if due:
            self._refresh_fallback()
        done: DoneReply = {"type": "done"}
        return done, []

    def _static_html(self) -> str:  # pragma: no cover - every view overrides it
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return self._static_html()

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            data, meta = bundle
        else:
            data, meta = (bundle or {}), {}
        data = dict(data)
        data["text/html"] = self._static_html()
        return data, meta

    def _ipython_display_(self) -> None:
        from IPython.display import display

        data, meta = self._repr_mimebundle_()
        handle = display(data, metadata=meta, raw=True, display_id=True)
        if handle is not None:
            self._handles.append(handle)

    def _refresh_fallback(self) -> None:
        """Re-send this view's outputs (same widget, new static HTML): what a saved notebook,
        nbconvert or GitHub show is then what the user last saw, scored cards included. Held back
        while the user types in the view (``editing_request``)."""
        if not self._handles:
            return
        with self._fallback_lock:
            self._fallback_held = self._editing
            if self._editing:
                return
        data, meta = self._repr_mimebundle_()
        for handle in self._handles:
            handle.update(data, metadata=meta, raw=True)

    def save_html(self, path: str | os.PathLike) -> Path:
        """Write a standalone page (inline CSS, no script) that shows this view without a kernel."""
        from neuronwidget.widgets.static_html import page

        path = Path(path)
        atomic_write_text(path, page(self._static_html()))
        return path
