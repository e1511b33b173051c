"""From any text, any word, to the neurons behind it.

- :func:`top_neurons`: which neurons fire most at one token (all layers, one forward pass).
- :func:`neuron_effect` / :func:`steer`: what a neuron does to the output, by intervening on it.
- :func:`neuron_connections`: what a neuron reads from and writes to, from the weights alone.
- :func:`search`: every explanation recorded (NeuronView, the CLI, OpenAI's published files)
  in one SQLite FTS5 store, searched by words.

This layer sits above ``api`` and below ``widgets``; names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "top_neurons": "neuronwidget.explore.top",
    "TextActivations": "neuronwidget.explore.top",
    "neuron_effect": "neuronwidget.explore.effects",
    "steer": "neuronwidget.explore.effects",
    "effect_ranking": "neuronwidget.explore.effects",
    "neuron_connections": "neuronwidget.explore.api",
    "search": "neuronwidget.explore.api",
    "record_explanation": "neuronwidget.explore.api",
    "import_explanations": "neuronwidget.explore.api",
    "Connections": "neuronwidget.explore.connections",
    "connections": "neuronwidget.explore.connections",
    "ExplanationStore": "neuronwidget.explore.store",
    "get_store": "neuronwidget.explore.store",
    "import_published": "neuronwidget.explore.bulk",
    "load_sae": "neuronwidget.explore.latents",
    "train_sae": "neuronwidget.explore.latents",
    "latent_connections": "neuronwidget.explore.latents",
    "latent_effect": "neuronwidget.explore.latents",
    "steer_latent": "neuronwidget.explore.latents",
    "top_latents": "neuronwidget.explore.latents",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'neuronwidget.explore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
