"""neuronwidget: explain GPT-2 MLP neurons inside Jupyter.

    import neuronwidget as nw
    nw.NeuronView(5, 131)

Public names are imported on first use, so ``import neuronwidget`` imports neither torch
nor numpy and stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    # settings
    "configure": "neuronwidget.api",
    "settings": "neuronwidget.api",
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
    "Engine": "neuronwidget.activations",
    "get_engine": "neuronwidget.api",
    "use_demo_model": "neuronwidget.api",
    "NeuronIndex": "neuronwidget.activations",
    "Corpus": "neuronwidget.activations",
    "default_corpus": "neuronwidget.activations",
    # explain / simulate / score (with the configured backends)
    "explain": "neuronwidget.api",
    "improve_explanation": "neuronwidget.api",
    "simulate": "neuronwidget.api",
    "score": "neuronwidget.api",
    "explain_neurons": "neuronwidget.api",
    "OpenAIBackend": "neuronwidget.explanations",
    "LocalBackend": "neuronwidget.explanations",
    "RulesBackend": "neuronwidget.explanations",
    "BaselineBackend": "neuronwidget.explanations",
    # published GPT-2 data
    "published_explanations": "neuronwidget.activations.published",
    "published_record": "neuronwidget.activations.published",
    "PublishedIndex": "neuronwidget.activations.published",
    # explore: text -> neurons, weight connections, explanation search
    "top_neurons": "neuronwidget.explore.top",
    # interventions: a neuron's effect on the output, steering
    "neuron_effect": "neuronwidget.explore.effects",
    "steer": "neuronwidget.explore.effects",
    "neuron_connections": "neuronwidget.explore.api",
    "search": "neuronwidget.explore.api",
    "record_explanation": "neuronwidget.explore.api",
    "import_explanations": "neuronwidget.explore.api",
    # SAE latents and transcoder features as units (units="sae:NAME")
    "load_sae": "neuronwidget.explore.latents",
    "train_sae": "neuronwidget.explore.latents",
    "latent_connections": "neuronwidget.explore.latents",
    "latent_effect": "neuronwidget.explore.latents",
    "steer_latent": "neuronwidget.explore.latents",
    "top_latents": "neuronwidget.explore.latents",
    "Explorer": "neuronwidget.widgets.explorer",
    "SearchBox": "neuronwidget.widgets.explorer",
    # widgets
    "NeuronView": "neuronwidget.widgets",
    "TokenView": "neuronwidget.widgets",
    "ExplanationCard": "neuronwidget.widgets",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


# subpackages reachable as attributes of a fresh ``import neuronwidget as nw`` (``nw.widgets.export_html``),
# imported on first use like the names above
_SUBPACKAGES = ("widgets", "explore", "explanations", "activations", "subject", "records", "api", "cli")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"neuronwidget.{name}")
        globals()[name] = value
        return value
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'neuronwidget' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__ + list(_SUBPACKAGES)

