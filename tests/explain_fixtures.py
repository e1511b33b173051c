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


ANIMALS = {" cat", " walked"}  # the words the signed neuron below goes strongly negative on


def signed_neuron(layer: int = 1, neuron: int = 2, seed: int = 0, length: int = 16) -> NeuronRecord:
    """A signed neuron (as gated MLPs have): positive on capital cities, strongly negative on
    " cat" and " walked", small elsewhere. Its negative windows are the most_negative records."""
    rng = random.Random(seed)

    def rec() -> ActivationRecord:
        toks = [rng.choice(WORDS) for _ in range(length)]
        acts = [5 + rng.random() if t in CAPITALS else -4 - rng.random() if t in ANIMALS else rng.random() * 0.2 - 0.1
                for t in toks]
        return ActivationRecord(toks, acts)

    pool = [rec() for _ in range(60)]
    top = sorted(pool, key=lambda r: -r.max_activation)[:20]
    bottom = sorted(pool, key=lambda r: r.min_activation)[:20]
    return NeuronRecord(NeuronId(layer, neuron), random_sample=[rec() for _ in range(9)],
                        most_positive_activation_records=top, most_negative_activation_records=bottom)
