"""Hand-built NeuronRecords for the explain tests (no engine needed)."""

from __future__ import annotations

import random

from neuronwidget.records import ActivationRecord, NeuronId, NeuronRecord

WORDS = [" Paris", " London", " the", " city", " of", " Rome", " and", " is", " big", ".", " Berlin", " cat", " walked"]
CAPITALS = {" Paris", " London", " Rome", " Berlin"}


def capital_neuron(layer: int = 1, neuron: int = 2, seed: int = 0, length: int = 16) -> NeuronRecord:
    """A neuron that fires on capital-city tokens (plus a little noise elsewhere)."""
    rng = random.Random(seed)

    def rec() -> ActivationRecord:
        toks = [rng.choice(WORDS) for _ in range(length)]
        return ActivationRecord(toks, [5 + rng.random() if t in CAPITALS else rng.random() * 0.2 - 0.05 for t in toks])

    top = sorted((rec() for _ in range(20)), key=lambda r: -r.max_activation)
    return NeuronRecord(NeuronId(layer, neuron), random_sample=[rec() for _ in range(9)],
                        most_positive_activation_records=top)
