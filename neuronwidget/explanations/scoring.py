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

Every correlation score comes with a 90% interval (``ScoredSimulation.ev_correlation_interval``,
``ScoredExplanation.interval``): a stratified bootstrap over the scored records (see
``correlation_interval``).

``score(..., scorer=...)`` is the one entry point of all scorers: "simulation" (the paper's,
above), "detection" and "fuzzing" (balanced accuracy of a classifier, see ``classify``).
Scorers read held-out records only: the valid split, then the test split when more are asked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from ..records import NeuronRecord, ScoredExplanation, ScoredSequenceSimulation, ScoredSimulation, SequenceSimulation
from . import classify as _classify
from ._common import ProgressFn, check_counts, check_explanation, cost_since, held_out, usage_snapshot
from .backends import resolve_simulator
from .simulator import simulate

N_SCORE_TOP = 5
N_SCORE_RANDOM = 5
SCORERS = ("simulation", "detection", "fuzzing")

# The interval: a percentile bootstrap, INTERVAL_LEVEL wide, over BOOTSTRAP_RESAMPLES resamples
# drawn with a fixed seed (the same records and predictions always give the same interval).
INTERVAL_LEVEL = 0.90
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# More undefined resamples than this fraction (e.g. resamples holding only records on which
# the prediction is constant) and no interval is given: dropping them would hide too much.
MAX_UNDEFINED_FRACTION = 0.10


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


def correlation_interval(
    true_activations: Sequence[Sequence[float]],
    predictions: Sequence[Sequence[float]],
    kinds: Sequence[str],
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = INTERVAL_LEVEL,
) -> tuple[tuple[float, float] | None, str | None]:
    """A ``level`` (90%) percentile-bootstrap interval of the pooled Pearson r, and a note.

    Records are the unit: each resample draws the top records with replacement among the top
    records, and the random records among the random ones (stratified: every resample keeps
    the scoring set's mix), pools their tokens and recomputes r. Vectorised: each record is
    reduced to six sums (count, Σr, Σp, Σr², Σp², Σrp, after centring on the pooled means for
    accuracy), a resample is a vector of record counts, so all resamples are one matrix product.

    A resample whose r is undefined (constant truth or prediction over its tokens) is left
    out and counted in the note; above ``MAX_UNDEFINED_FRACTION`` of them, or when no stratum
    has two records to vary (the interval would be a point), the interval is None and the
    note says why. The point score itself being undefined gives None with no note.
    """
    if not (len(true_activations) == len(predictions) == len(kinds)):
        raise ValueError("need one prediction and one kind per true record")
    real = [np.asarray(r, dtype=np.float64) for r in true_activations]
    pred = [np.asarray(p, dtype=np.float64) for p in predictions]
    if correlation(np.concatenate(real or [np.zeros(0)]), np.concatenate(pred or [np.zeros(0)])) is None:
        return None, None
    kinds_arr = np.asarray(kinds)
    strata = [np.flatnonzero(kinds_arr == k) for k in dict.fromkeys(kinds)]
    if all(idx.size < 2 for idx in strata):
        return None, (f"no interval: {len(real)} record(s) ({', '.join(f'{idx.size} {kinds[idx[0]]}' for idx in strata)}) "
                      "are too few to resample")
    mr = np.concatenate(real).mean()
    mp = np.concatenate(pred).mean()
    stats = np.array([[r.size, (r - mr).sum(), (p - mp).sum(), ((r - mr) ** 2).sum(), ((p - mp) ** 2).sum(),
                       ((r - mr) * (p - mp)).sum()] for r, p in zip(real, pred)])
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_resamples, len(real)))
    for idx in strata:
        counts[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_resamples)
    n, sr, sp, srr, spp, srp = (counts @ stats).T
    with np.errstate(divide="ignore", invalid="ignore"):
        var_r = srr - sr * sr / n
        var_p = spp - sp * sp / n
        # relative tests: a constant side leaves only rounding error in its variance
        defined = (n >= 2) & (var_r > 1e-9 * srr) & (var_p > 1e-9 * spp)
        r = np.clip((srp - sr * sp / n) / np.sqrt(var_r * var_p), -1.0, 1.0)[defined]
    n_undefined = n_resamples - r.size
    if n_undefined > MAX_UNDEFINED_FRACTION * n_resamples:
        return None, (f"no interval: the correlation is undefined in {n_undefined} of {n_resamples} bootstrap "
                      "resamples of the records (too few records with varying activations or predictions)")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(r, [tail, 100 - tail])
    note = None
    if n_undefined:
        note = (f"{n_undefined} of {n_resamples} bootstrap resamples had an undefined correlation and are left "
                "out of the interval")
    return (float(low), float(high)), note


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
        else:
            interval, why = correlation_interval([s.true_activations for s in ok],
                                                 [s.simulation.expected_activations for s in ok],
                                                 [s.kind or "top" for s in ok])
            out.ev_correlation_interval = list(interval) if interval else None
            if why:
                notes.append(why)
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
    scorer: str = "simulation",
    n_top: int | None = None,
    n_random: int | None = None,
    calibrated: bool = False,
    explainer: str | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    **options,
):
    """Score ``explanation`` of ``record``'s neuron on held-out records.

    ``scorer``:

    * ``"simulation"`` (the paper's; the default) -> ``ScoredExplanation``: ``simulator``
      predicts activations on ``n_top`` top + ``n_random`` random held-out records from the
      explanation alone; the score is Pearson r pooled over their tokens, with a 90%
      bootstrap interval (``.interval``). ``calibrated=True`` also simulates the calibration
      split and maps predictions linearly onto the neuron's scale before r² and absolute
      deviation (correlation is unchanged).
    * ``"detection"`` / ``"fuzzing"`` -> ``classify.ClassificationScore`` (balanced accuracy,
      ``.score`` and ``.interval`` too): ``simulator`` is the chat model that judges the
      examples (any backend with ``chat``), or a simulator whose predictions stand in for
      its answers (BaselineBackend, rules). ``n_top`` examples the explanation should match,
      ``n_random`` it should not (see ``classify``). ``options``: ``batch_size``,
      ``max_attempts``, ``seed``, ``via`` (see ``classify.detection``).

    Records: held-out only (never train or calibration, which explainers read). With neither
    ``n_top`` nor ``n_random`` given, the paper's set: 5 top + 5 random records of the valid
    split (fewer where it holds fewer) for simulation; 5 + 5 examples for detection/fuzzing.
    Given counts (integers >= 0, together >= 1; an omitted one is 5) are taken from the valid
    split, then the test split when the valid one holds fewer; the result's note says how
    many were used when fewer exist than were asked. The explanation:
    non-empty, at most ``MAX_EXPLANATION_CHARS`` (1,000) characters.
    ``explainer`` names who wrote the explanation (kept on the result; None = a person/unknown).
    Either side of a signed neuron: pass ``record.for_side("negative")`` to score an
    explanation of its negative side (the result's ``side`` says which). ``.cost`` on the
    result: the calls and tokens the scoring took.
    """
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {', '.join(map(repr, SCORERS))}, got {scorer!r}")
    if not isinstance(record, NeuronRecord):
        raise ValueError(f"score() needs a NeuronRecord, got {type(record).__name__}")
    explanation = check_explanation(explanation)
    paper_set = n_top is None and n_random is None
    n_top, n_random = check_counts(N_SCORE_TOP if n_top is None else n_top,
                                   N_SCORE_RANDOM if n_random is None else n_random)
    if scorer != "simulation":
        if calibrated:
            raise ValueError("calibrated=True applies to the simulation scorer only")
        run = _classify.detection if scorer == "detection" else _classify.fuzzing
        return run(record, explanation, simulator, n_top=n_top, n_random=n_random, explainer=explainer,
                   progress=progress, cancel=cancel, **options)
    if options:
        raise ValueError(f"the simulation scorer takes no {', '.join(sorted(options))} "
                         "(those options are for scorer='detection' or 'fuzzing')")
    if paper_set:
        top, rand, short = record.top_split("valid")[:n_top], record.random_split("valid")[:n_random], None
    else:
        top, rand, short = held_out(record, n_top, n_random)
    if not top and not rand:
        raise ValueError(f"{record.neuron_id} has no held-out (valid or test split) records to score on "
                         "(needs top or random records)")
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

    snap = usage_snapshot(backend)
    sims = simulate(explanation, records + extra, backend, max_activation=record.max_activation,
                    lookup=record, progress=report, cancel=cancel)
    cost = cost_since(backend, snap)
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
    scored.note = "; ".join(x for x in (short, scored.note, note) if x) or None
    return ScoredExplanation(
        explanation=explanation,
        scored_simulation=scored,
        neuron_id=record.neuron_id,
        explainer=explainer,
        simulator=backend.simulator_name,
        side=record.side,
        cost=cost,
        scored_at=time.time(),
    )
