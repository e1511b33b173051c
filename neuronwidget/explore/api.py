"""The explore layer's user-facing functions (the configured model and cache are applied here)."""

from __future__ import annotations

import os
from typing import Any

from ..records import NeuronSimulationResults, ScoredExplanation
from . import store as _store
from .connections import Connections, connections


def neuron_connections(layer: int, neuron: int, model: Any = None, k: int = 10) -> Connections:
    """A neuron's connections from the weights alone (no corpus): the tokens that most excite
    it, the tokens it most promotes and suppresses, its strongest upstream and downstream
    neurons. See :mod:`neuronwidget.explore.connections` for the definitions.
    ``model``: None = the configured model."""
    from ..api import get_engine

    engine = get_engine(model)
    lm = engine.lm
    return connections(lm.model, layer, neuron, token_strings=lm.token_strings(), k=k,
                       model_name=_store.model_key(lm.short_name))


def search(query: str, model: str | None = None, limit: int = 20, *, store: _store.ExplanationStore | None = None):
    """Search every recorded explanation by words: ``nw.search("capital cities", model="gpt2")``.

    Returns a pandas DataFrame (model, layer, neuron, side, explanation, score, explainer,
    simulator, source, relevance), best text match first (BM25), then higher score.
    ``model``: None = every model. Punctuation and search operators in ``query`` are
    ignored; a query without any word raises ValueError.
    """
    import pandas as pd

    rows = (store or _store.get_store()).search(query, model=model, limit=limit)
    return pd.DataFrame(rows, columns=_store.COLUMNS)


def record_explanation(scored: ScoredExplanation, model: str, layer: int | None = None, neuron: int | None = None,
                       side: str | None = None, *, store: _store.ExplanationStore | None = None) -> None:
    """Add one scored explanation (e.g. what ``nw.score`` returned) to the searchable store."""
    _store.record(scored, model, layer, neuron, side=side, source="user", store=store)


def neuron_explanations(model: str, layer: int, neuron: int, side: str = "positive", *, extra: Any = (),
                        store: _store.ExplanationStore | None = None) -> list[ScoredExplanation]:
    """What a view shows for one neuron's side: every explanation recorded in the store (by
    NeuronView, ``nw.score``, ``explain_neurons``, imports; in this or any earlier session),
    newest first, each with its score, explainer, simulator and when (``scored_at``), then
    ``extra`` explanations (e.g. OpenAI's published ones) not already among them. An
    ``extra`` explanation with the text of a stored one replaces it in place: it keeps what
    the store does not (the records it was scored on). A store that cannot be read gives
    ``extra`` alone."""
    try:
        stored = (store or _store.get_store()).explanations(model, layer, neuron, side)
    except Exception:  # noqa: BLE001 - a broken or locked cache file must not hide the neuron
        stored = []
    richer = {str(s.explanation).strip(): s for s in extra}
    out = [richer.pop(str(s.explanation).strip(), s) for s in stored]
    return out + [s for s in extra if str(s.explanation).strip() in richer]


def import_explanations(source: Any, model: str, *, store: _store.ExplanationStore | None = None) -> int:
    """Add explanations to the store: an ``explain_neurons`` JSONL file, or NeuronSimulationResults."""
    st = store or _store.get_store()
    if isinstance(source, (str, os.PathLike)):
        return st.import_jsonl(source, model)
    items = [source] if isinstance(source, NeuronSimulationResults) else list(source)
    return st.add_results(items, model, source="user")


__all__ = ["neuron_connections", "search", "record_explanation", "import_explanations", "neuron_explanations"]
