"""Scoring: how well simulated activations match the real ones.

Definitions (the paper's "top-and-random" scoring):

* correlation score: Pearson r between real and simulated activations, pooled over
  every token of every scored record (5 held-out top + 5 random records by default);
* r² = ``1 - mean((r - p)^2) / mean(r^2)``;
* absolute deviation explained = ``1 - mean|r - p| / mean|r|``.

A score that is undefined (a constant prediction or constant truth for r; all-zero truth
for r² and absolute deviation) is ``None`` with a note saying why — never a fake 0.
Failed simulations (``SequenceSimulation.error``) are left out of the pooled scores and
the note says how many.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ..records import NeuronRecord, ScoredExplanation, ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation
from ._common import ProgressFn
from .backends import resolve_simulator
from .simulator import simulate

N_SCORE_TOP = 5
N_SCORE_RANDOM = 5


def _arrays(real: Sequence[float], pred: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(real, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if r.shape != p.shape:
        raise ValueError(f"real and predicted activations need the same length, got {r.size} and {p.size}")
    return r, p


def correlation(real: Sequence[float], pred: Sequence[float]) -> float | None:
    """Pearson r, or None when either side is constant (or empty): r is undefined then."""
    r, p = _arrays(real, pred)
    if r.size < 2 or np.ptp(r) == 0 or np.ptp(p) == 0:
        return None
    return float(np.corrcoef(r, p)[0, 1])


def rsquared(real: Sequence[float], pred: Sequence[float]) -> float | None:
    """``1 - mean((r-p)^2) / mean(r^2)``, or None when the real activations are all zero."""
    r, p = _arrays(real, pred)
    denom = np.mean(r**2) if r.size else 0.0
    if denom == 0:
        return None
    return float(1 - np.mean((r - p) ** 2) / denom)


def absolute_dev_explained(real: Sequence[float], pred: Sequence[float]) -> float | None:
    """``1 - mean|r-p| / mean|r|``, or None when the real activations are all zero."""
    r, p = _arrays(real, pred)
    denom = np.mean(np.abs(r)) if r.size else 0.0
    if denom == 0:
        return None
    return float(1 - np.mean(np.abs(r - p)) / denom)


def why_undefined(real: Sequence[float], pred: Sequence[float]) -> str | None:
    """A human sentence saying why the correlation is undefined, or None when it is defined."""
    r, p = _arrays(real, pred)
    if r.size < 2:
        return "fewer than 2 tokens were scored, so no correlation can be computed"
    if np.ptp(p) == 0:
        return f"the simulator predicted the same value ({p[0]:g}) for every token, so the correlation is undefined"
    if np.ptp(r) == 0:
        return f"the real activations are constant ({r[0]:g}) on every scored token, so the correlation is undefined"
    return None


def fit_linear_calibration(real: Sequence[float], pred: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``real ≈ slope * pred + intercept``. A constant prediction gives slope 0."""
    r, p = _arrays(real, pred)
    if r.size == 0:
        raise ValueError("calibration needs at least one token")
    if np.ptp(p) == 0:
        return 0.0, float(np.mean(r))
    slope, intercept = np.polyfit(p, r, 1)
    return float(slope), float(intercept)


def calibrate(sim: SequenceSimulation, slope: float, intercept: float) -> SequenceSimulation:
    """A copy of ``sim`` on the neuron's own scale, keeping the original as ``uncalibrated_simulation``."""
    if sim.failed:
        return sim
    return SequenceSimulation(
        tokens=list(sim.tokens),
        expected_activations=[slope * v + intercept for v in sim.expected_activations],
        activation_scale="neuron_activations",
        uncalibrated_simulation=sim,
    )


def score_sequences(
    simulations: Sequence[SequenceSimulation],
    true_activations: Sequence[Sequence[float]],
    kinds: Sequence[str],
) -> ScoredSimulation:
    """Score each record and the pooled set; ``kinds`` says "top" or "random" per record."""
    if not (len(simulations) == len(true_activations) == len(kinds)):
        raise ValueError(
            f"need one true record and one kind per simulation: got {len(simulations)} simulations, "
            f"{len(true_activations)} true records, {len(kinds)} kinds"
        )
    scored: list[ScoredSequenceSimulation] = []
    for sim, true, kind in zip(simulations, true_activations, kinds):
        if kind not in ("top", "random"):
            raise ValueError(f"kind must be 'top' or 'random', got {kind!r}")
        if sim.failed:
            scored.append(ScoredSequenceSimulation(sim, list(true), None, None, None, kind=kind))
            continue
        pred = sim.expected_activations
        scored.append(
            ScoredSequenceSimulation(
                simulation=sim,
                true_activations=list(true),
                ev_correlation_score=correlation(true, pred),
                rsquared_score=rsquared(true, pred),
                absolute_dev_explained_score=absolute_dev_explained(true, pred),
                kind=kind,
            )
        )
    return _pool(scored)


def failure_causes(simulations: Sequence[SequenceSimulation], limit: int = 3) -> str:
    """The distinct reasons simulations failed, with counts, most frequent first:
    ``'2x unparseable simulator answer: ...; 1x chat request ... failed after 5 attempts ...'``."""
    counts: dict[str, int] = {}
    for sim in simulations:
        if sim.failed:
            cause = sim.error if len(sim.error) <= 160 else sim.error[:157] + "..."
            counts[cause] = counts.get(cause, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    text = "; ".join(f"{n}x {cause}" for cause, n in ranked[:limit])
    if len(ranked) > limit:
        text += f"; and {len(ranked) - limit} other cause(s)"
    return text


def _pool(scored: list[ScoredSequenceSimulation]) -> ScoredSimulation:
    ok = [s for s in scored if not s.simulation.failed]
    notes: list[str] = []
    n_failed = len(scored) - len(ok)
    if n_failed:
        notes.append(f"{n_failed} of {len(scored)} records could not be simulated and are left out of the scores "
                     f"({failure_causes([s.simulation for s in scored])})")

    def flat(items: list[ScoredSequenceSimulation]) -> tuple[list[float], list[float]]:
        real = [a for s in items for a in s.true_activations]
        pred = [a for s in items for a in s.simulation.expected_activations]
        return real, pred

    real, pred = flat(ok)
    out = ScoredSimulation(scored_sequence_simulations=scored)
    if not ok:
        notes.append("no record was simulated, so there is no score")
    else:
        out.ev_correlation_score = correlation(real, pred)
        out.rsquared_score = rsquared(real, pred)
        out.absolute_dev_explained_score = absolute_dev_explained(real, pred)
        if out.ev_correlation_score is None:
            notes.append(why_undefined(real, pred) or "the correlation is undefined")
        for kind in ("random", "top"):
            part = [s for s in ok if s.kind == kind]
            value = correlation(*flat(part)) if part else None
            setattr(out, f"{kind}_only_score", value)
            if part and value is None and out.ev_correlation_score is not None:
                notes.append(f"{kind}-only score: {why_undefined(*flat(part))}")
    out.note = "; ".join(notes) or None
    return out


def score(
    record: NeuronRecord,
    explanation: str,
    simulator=None,
    *,
    n_top: int = N_SCORE_TOP,
    n_random: int = N_SCORE_RANDOM,
    calibrated: bool = False,
    explainer: str | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> ScoredExplanation:
    """Simulate ``explanation`` on held-out valid-split records (5 top + 5 random) and score it.

    ``calibrated=True`` also simulates the calibration split and maps predictions linearly
    onto the neuron's scale before r² and absolute deviation (correlation is unchanged).
    ``explainer`` names who wrote the explanation (kept on the result; None = a person/unknown).
    Either side of a signed neuron: pass ``record.for_side("negative")`` to score an
    explanation of its negative side (the result's ``side`` says which).
    """
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"score() needs a NeuronRecord, got {type(record).__name__}")
    top = record.top_split("valid")[:n_top]
    rand = record.random_split("valid")[:n_random]
    if not top and not rand:
        raise ValueError(f"{record.neuron_id} has no valid-split records to score on (needs top or random records)")
    backend = resolve_simulator(simulator)
    records = top + rand
    kinds = ["top"] * len(top) + ["random"] * len(rand)
    extra = []
    if calibrated:
        extra = record.top_split("calibration")[:n_top] + record.random_split("calibration")[:n_random]
    total = len(records) + len(extra)

    def report(done, _total, msg):
        if progress:
            progress(done, total, msg)

    sims = simulate(explanation, records + extra, backend, max_activation=record.max_activation,
                    lookup=record, progress=report, cancel=cancel)
    sims, cal_sims = sims[: len(records)], sims[len(records):]
    note = None
    if calibrated:
        ok = [(r, s) for r, s in zip(extra, cal_sims) if not s.failed]
        if ok:
            real = [a for r, _ in ok for a in r.activations]
            pred = [a for _, s in ok for a in s.expected_activations]
            slope, intercept = fit_linear_calibration(real, pred)
            sims = [calibrate(s, slope, intercept) for s in sims]
        else:
            note = "no calibration records could be simulated, so the scores are uncalibrated"
    scored = score_sequences(sims, [r.activations for r in records], kinds)
    if note:
        scored.note = "; ".join(x for x in (scored.note, note) if x)
    return ScoredExplanation(
        explanation=explanation.strip(),
        scored_simulation=scored,
        neuron_id=record.neuron_id,
        explainer=explainer,
        simulator=backend.simulator_name,
        side=record.side,
    )
