"""The one seam every view reads a neuron through: a :class:`RecordSource`.

A locally built :class:`~neuronwidget.activations.store.NeuronIndex` and OpenAI's
published files (:class:`~neuronwidget.activations.published.PublishedIndex`) both satisfy
it; a new source (a remote index, another lab's published data) is one new class.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..records import ActivationRecord, NeuronRecord


@runtime_checkable
class RecordSource(Protocol):
    """Recorded activations of every neuron of one model over one corpus."""

    model_name: str  # what users see
    # Optional (read with getattr): ``model``, the model's name as get_engine loads it and the
    # explanation store keys it; records carry it as NeuronRecord.model.
    corpus_name: str  # what users see: the corpus and its size
    n_layers: int
    n_neurons: int
    # True when records come from files alone and no model was loaded to make them: a view
    # then loads the model named ``model_name`` only when the user runs text of their own.
    precomputed: bool
    histogram_caption: str  # what the histogram counts, shown under it

    def record(self, layer: int, neuron: int) -> NeuronRecord:
        """Everything recorded about one neuron, in OpenAI's NeuronRecord format."""
        ...

    def top_records(self, layer: int, neuron: int, start: int = 0, stop: int | None = None) -> list[ActivationRecord]:
        """Top windows ``start:stop``, highest maximum activation first."""
        ...

    def histogram(self, layer: int, neuron: int) -> tuple[np.ndarray, np.ndarray]:
        """(edges, counts) of the neuron's activation over the corpus."""
        ...


__all__ = ["RecordSource"]
