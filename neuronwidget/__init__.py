"""neuronwidget: explain GPT-2 MLP neurons inside Jupyter.

    import neuronwidget as nw
    nw.NeuronView(5, 131)

Public names are imported on first use, so ``import neuronwidget`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    # settings
    "configure": "neuronwidget.config",
    "settings": "neuronwidget.config",
    # records (OpenAI's formats)
    "ActivationRecord": "neuronwidget.records",
    "NeuronId": "neuronwidget.records",
    "NeuronRecord": "neuronwidget.records",
    "SequenceSimulation": "neuronwidget.records",
    "ScoredSequenceSimulation": "neuronwidget.records",
    "ScoredSimulation": "neuronwidget.records",
    "ScoredExplanation": "neuronwidget.records",
    "NeuronSimulationResults": "neuronwidget.records",
    # engine
    "Engine": "neuronwidget.engine",
    "get_engine": "neuronwidget.engine",
    "NeuronIndex": "neuronwidget.index",
    "Corpus": "neuronwidget.corpus",
    "default_corpus": "neuronwidget.corpus",
    # explain / simulate / score
    "explain": "neuronwidget.explain",
    "simulate": "neuronwidget.explain",
    "score": "neuronwidget.explain",
    "explain_neurons": "neuronwidget.explain",
    "OpenAIBackend": "neuronwidget.explain",
    "LocalBackend": "neuronwidget.explain",
    "BaselineBackend": "neuronwidget.explain",
    # published GPT-2 data
    "published_explanations": "neuronwidget.published",
    "published_record": "neuronwidget.published",
    "PublishedIndex": "neuronwidget.published",
    # widgets
    "NeuronView": "neuronwidget.widgets",
    "TokenView": "neuronwidget.widgets",
    "ExplanationCard": "neuronwidget.widgets",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'neuronwidget' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


# `explain` names both a subpackage and a function. Importing the subpackage binds the
# module to `neuronwidget.explain`; rebind the function (the import runs only once).
from .explain import explain  # noqa: E402,F401
