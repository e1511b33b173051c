"""Records -> explanations: what any ``Explainer`` backend writes, checked."""

from __future__ import annotations

import threading

from ..records import NeuronRecord
from ._common import ExplanationError, ProgressFn, check_cancel
from .backends import resolve_explainer, resolve_simulator
from .backends.base import N_EXPLAINER_RECORDS  # noqa: F401 (re-exported)
from .prompts import parse_explanation  # noqa: F401 (re-exported: answers are parsed by the chat explainer)


def explain(
    record: NeuronRecord,
    backend=None,
    *,
    n: int = 1,
    best_of: int = 1,
    revise: bool = False,
    simulator=None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> list[str]:
    """Explanations of one neuron from its 5 top train-split records (``n`` samples asked for).

    Either side of a signed neuron: pass ``record.for_side("negative")`` to explain what
    drives it most negative. Empty or refused answers are left out; if nothing usable comes
    back an ``ExplanationError`` says what the explainer answered instead.

    ``best_of=k`` asks for k candidates and keeps the one whose simulation (by ``simulator``)
    scores best on the held-in calibration records; ``revise=True`` then lets the explainer
    revise it from the held-in records it gets most wrong, kept only if it scores higher
    there (see ``improve``; ``improve_explanation`` also returns the candidates and the
    cost). The records the final score uses are never read. Returns up to ``n``
    explanations, the kept one first.
    """
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"explain() needs a NeuronRecord, got {type(record).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not record.top_split("train"):
        raise ValueError(f"{record.neuron_id} ({record.side} side) has no top records to explain (its record is empty)")
    backend = resolve_explainer(backend)
    check_cancel(cancel)
    if best_of != 1 or revise:
        from .improve import improve_explanation

        found = improve_explanation(record, backend, resolve_simulator(simulator), best_of=best_of,
                                    revise=revise, progress=progress, cancel=cancel)
        return found.ranked()[:n]
    if progress:
        progress(0, 1, f"explaining {record.neuron_id} with {backend.name}")
    answers = backend.explain(record, n=n, cancel=cancel)
    check_cancel(cancel)
    out: list[str] = []
    for a in answers:
        if not isinstance(a, str):
            raise ExplanationError(f"{backend.name} returned a {type(a).__name__} as an explanation; expected str")
        if a.strip() and a.strip() not in out:
            out.append(a.strip())
    if not out:
        raise ExplanationError(f"{backend.name} gave no explanation for {record.neuron_id}")
    if progress:
        progress(1, 1, "explained")
    return out
