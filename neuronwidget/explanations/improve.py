"""Better explanations from any explainer: best-of-n and the paper's revision step.

Both choose between explanations by their score on HELD-IN records: the calibration split
(top and random), which explainers may read and the final score never uses. The records
that score an explanation for good (the valid and test splits) are never simulated, shown
or otherwise read here, so a score after ``improve_explanation`` is as honest as one
after a single shot.

* best-of-n: ``explainer.explain(record, n=best_of)`` gives up to n candidates (an LLM
  sampled at its temperature, > 0 by default; the rules explainer's alternatives); each
  is simulated on the held-in records and the best kept.
* revision: the explainer sees its explanation together with the held-in records where
  simulation and truth disagree most, and writes a revised one (``explainer.revise``,
  which every chat explainer has, and the rules explainer too). The revision is kept
  only if it scores higher on the held-in records.

The cost of the whole search (calls and tokens of explainer and simulator) is reported.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..records import ActivationRecord, NeuronRecord, SequenceSimulation
from ._common import ExplanationError, ProgressFn, add_costs, check_cancel, cost_since, usage_snapshot
from .prompts import scale
from .scoring import score_sequences
from .simulator import simulate

HELD_IN_TOP = 5
HELD_IN_RANDOM = 5
N_EVIDENCE = 3  # held-in records shown to the explainer when it revises


@dataclass
class Candidate:
    explanation: str
    held_in_score: float | None  # Pearson r on the held-in records (None: undefined)
    origin: str  # "candidate 2 of 5", "revision of candidate 1"


@dataclass
class ImprovedExplanation:
    """The outcome of a best-of-n / revision search for one neuron's side."""

    explanation: str  # the one kept
    held_in_score: float | None
    candidates: list[Candidate]  # every explanation tried, in the order tried
    revised: bool  # True when a revision beat the best candidate
    # explainer_calls / simulator_calls (asked of each role), and what reached the backends:
    # calls, cached, prompt_tokens, completion_tokens (None where a backend does not count)
    cost: dict[str, Any] = field(default_factory=dict)

    def ranked(self) -> list[str]:
        """Distinct explanations, the kept one first, then by held-in score."""
        rest = sorted(self.candidates, key=lambda c: -2.0 if c.held_in_score is None else -c.held_in_score)
        out = [self.explanation]
        for c in rest:
            if c.explanation not in out:
                out.append(c.explanation)
        return out


def held_in_records(record: NeuronRecord, n_top: int = HELD_IN_TOP,
                    n_random: int = HELD_IN_RANDOM) -> tuple[list[ActivationRecord], list[str]]:
    """The calibration split's records (top first, then random) and their kinds."""
    top = record.top_split("calibration")[:n_top]
    rand = record.random_split("calibration")[:n_random]
    return top + rand, ["top"] * len(top) + ["random"] * len(rand)


class _Meter:
    """Calls per role, and what the backends used (``_common.cost_since``; a backend playing
    both roles is counted once)."""

    def __init__(self, explainer, simulator):
        self.backends = list({id(b): b for b in (explainer, simulator)}.values())
        self.snapshots = [usage_snapshot(b) for b in self.backends]
        self.calls = {"explainer": 0, "simulator": 0}

    def report(self) -> dict[str, Any]:
        used = add_costs(*(cost_since(b, s) for b, s in zip(self.backends, self.snapshots)))
        return {"explainer_calls": self.calls["explainer"], "simulator_calls": self.calls["simulator"], **used}


def _disagreement(real: ActivationRecord, sim: SequenceSimulation, max_activation: float) -> float:
    if sim.failed:
        return -1.0
    truth = np.asarray(scale(real.activations, max_activation), dtype=float)
    pred = np.asarray(sim.expected_activations, dtype=float)
    return float(np.mean(np.abs(truth - pred))) if truth.size else 0.0


def improve_explanation(
    record: NeuronRecord,
    explainer,
    simulator,
    *,
    best_of: int = 5,
    revise: bool = True,
    held_in_top: int = HELD_IN_TOP,
    held_in_random: int = HELD_IN_RANDOM,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> ImprovedExplanation:
    """Best-of-``best_of`` explanations of ``record`` (already the side to explain), then
    (``revise=True``) one revision; kept by held-in score. ``explainer`` and ``simulator``
    are resolved backends (``neuronwidget.api.explain`` resolves the configured ones)."""
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"improve_explanation() needs a NeuronRecord, got {type(record).__name__}")
    if isinstance(best_of, bool) or not isinstance(best_of, int) or best_of < 1:
        raise ValueError(f"best_of must be an integer >= 1, got {best_of!r}")
    held, kinds = held_in_records(record, held_in_top, held_in_random)
    if not held:
        raise ValueError(f"{record.neuron_id} ({record.side} side) has no calibration-split records "
                         "to compare explanations on")
    if revise and not callable(getattr(explainer, "revise", None)):
        raise ValueError(f"{explainer.name} cannot revise explanations (it has no revise() method); "
                         "use revise=False or a chat explainer (OpenAIBackend, LocalBackend) or the rules explainer")
    meter = _Meter(explainer, simulator)
    steps = best_of + (1 if revise else 0)
    done = 0

    def tick(msg: str) -> None:
        if progress:
            progress(done, steps, msg)

    def held_in(explanation: str) -> tuple[float | None, list[SequenceSimulation]]:
        meter.calls["simulator"] += 1
        sims = simulate(explanation, held, simulator, max_activation=record.max_activation,
                        lookup=record, cancel=cancel)
        scored = score_sequences(sims, [r.activations for r in held], kinds)
        return scored.ev_correlation_score, sims

    tick(f"asking {explainer.name} for {best_of} explanation(s)")
    meter.calls["explainer"] += 1
    proposals = [p.strip() for p in explainer.explain(record, n=best_of, cancel=cancel) if isinstance(p, str) and p.strip()]
    proposals = list(dict.fromkeys(proposals))
    if not proposals:
        raise ExplanationError(f"{explainer.name} gave no explanation for {record.neuron_id}")
    candidates: list[Candidate] = []
    sims_of: dict[str, list[SequenceSimulation]] = {}
    for i, text in enumerate(proposals, 1):
        check_cancel(cancel)
        value, sims = held_in(text)
        candidates.append(Candidate(text, value, f"candidate {i} of {len(proposals)}"))
        sims_of[text] = sims
        done += 1
        tick(f"compared {i} of {len(proposals)} candidates on held-in records")
    best = max(candidates, key=lambda c: -2.0 if c.held_in_score is None else c.held_in_score)
    chosen, revised = best, False
    if revise:
        check_cancel(cancel)
        ranked = sorted(zip(held, sims_of[best.explanation]),
                        key=lambda rs: -_disagreement(rs[0], rs[1], record.max_activation))
        evidence = [(r, s) for r, s in ranked if not s.failed][:N_EVIDENCE]
        meter.calls["explainer"] += 1
        tick(f"asking {explainer.name} to revise the best candidate")
        for text in explainer.revise(record, best.explanation, evidence, cancel=cancel):
            text = text.strip() if isinstance(text, str) else ""
            if not text or text in sims_of:
                continue
            value, sims = held_in(text)
            sims_of[text] = sims
            cand = Candidate(text, value, f"revision of {best.origin}")
            candidates.append(cand)
            if value is not None and (chosen.held_in_score is None or value > chosen.held_in_score):
                chosen, revised = cand, True
        done += 1
        tick("revised")
    return ImprovedExplanation(chosen.explanation, chosen.held_in_score, candidates, revised, meter.report())


__all__ = ["Candidate", "ImprovedExplanation", "held_in_records", "improve_explanation"]
