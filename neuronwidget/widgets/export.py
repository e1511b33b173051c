"""Saved notebooks as HTML pages that work offline.

With widget state saved in a notebook, nbconvert draws each widget with
@jupyter-widgets/html-manager loaded from a CDN: offline, every view is blank.
``export_html`` renders the notebook with each view's static fallback instead (what the
user last saw, scored cards included; no script, no network).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from neuronwidget._io import atomic_write_text

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# nbconvert's HTML priority without the widget view: views fall back to their text/html
PRIORITY = ["application/javascript", "text/html", "text/markdown", "image/svg+xml", "text/latex", "image/png",
            "image/jpeg", "text/plain"]


def export_html(notebook: str | os.PathLike | Any, out: str | os.PathLike | None = None) -> Path:
    """Write ``notebook`` (a path or an nbformat node) as one HTML page; returns its path
    (default: next to the notebook, ``.html``). Same as ``jupyter nbconvert --to html`` except
    that widgets show their static fallback, so the page needs no network."""
    try:
        import nbformat
        from nbconvert import HTMLExporter
        from traitlets.config import Config
    except ImportError as e:  # pragma: no cover - jupyter installs both
        raise RuntimeError("export_html needs nbconvert and nbformat (pip install nbconvert)") from e
    if isinstance(notebook, (str, os.PathLike)):
        src = Path(notebook)
        if not src.exists():
            raise ValueError(f"no notebook at {src}")
        nb = nbformat.read(src, as_version=4)
        out = Path(out) if out is not None else src.with_suffix(".html")
    else:
        if out is None:
            raise ValueError("give `out` (where to write the page) when passing a notebook object")
        nb, out = copy.deepcopy(notebook), Path(out)
    nb.metadata.pop("widgets", None)  # no widget manager from a CDN
    config = Config()
    config.NbConvertBase.display_data_priority = PRIORITY
    body, _ = HTMLExporter(config=config).from_notebook_node(nb)
    atomic_write_text(out, body)
    return out
