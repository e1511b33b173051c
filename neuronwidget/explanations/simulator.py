"""Explanation + tokens -> predicted activations (0-10 scale), by any ``Simulator`` backend.

The simulators themselves are the backends' (see ``backends``): ``LocalBackend`` reads exact
label probabilities from an in-kernel model (the paper's all-at-once method, all records in
one batch); ``OpenAIBackend`` reads prompt logprobs over HTTP where the server has them, else
asks for JSON; ``BaselineBackend`` looks tokens up in a table.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..records import ActivationRecord, NeuronRecord, SequenceSimulation
from ._common import BackendError, ProgressFn
from .backends import resolve_simulator


def simulate(
    explanation: str,
    records: Sequence[ActivationRecord] | Sequence[Sequence[str]],
    simulator=None,
    *,
    max_activation: float,
    lookup: NeuronRecord | dict[str, float] | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[SequenceSimulation]:
    """Predicted 0-10 activations per record from the explanation alone.

    ``records`` are ActivationRecords or token lists. ``lookup`` (a NeuronRecord or a ready
    table) feeds the baseline simulator's token table; ``max_activation`` scales it.
    """
    if not isinstance(explanation, str) or not explanation.strip():
        raise ValueError("the explanation must be a non-empty string")
    backend = resolve_simulator(simulator)
    token_lists = [list(r.tokens) if isinstance(r, ActivationRecord) else list(r) for r in records]
    sims = backend.simulate(explanation, token_lists, max_activation=max_activation, lookup=lookup,
                            progress=progress, cancel=cancel)
    if len(sims) != len(token_lists) or any(
        not isinstance(s, SequenceSimulation) or list(s.tokens) != t for s, t in zip(sims, token_lists)
    ):
        raise BackendError(f"{backend.simulator_name} did not return one SequenceSimulation per record, "
                           f"in order ({len(sims)} for {len(token_lists)} records)")
    for s in sims:
        if not s.failed and len(s.expected_activations) != len(s.tokens):
            raise BackendError(f"{backend.simulator_name} predicted {len(s.expected_activations)} values for "
                               f"{len(s.tokens)} tokens")
    return sims
