"""Scoring against cases computed by hand from the definitions."""

import math

import pytest

from neuronwidget.explanations.scoring import (
    absolute_dev_explained, correlation, fit_linear_calibration, rsquared, score_sequences,
)
from neuronwidget.records import SequenceSimulation


def test_correlation_by_hand():
    # r = [1,2,3], p = [1,3,2]: deviations (-1,0,1) and (-1,1,0): cov 1, var 2 and 2 -> r = 0.5
    assert correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_rsquared_and_absolute_deviation_by_hand():
    real, pred = [1, 2, 3], [1, 3, 2]
    # mean((r-p)^2) = (0+1+1)/3, mean(r^2) = 14/3 -> 1 - 2/14
    assert rsquared(real, pred) == pytest.approx(1 - 2 / 14)
    # mean|r-p| = 2/3, mean|r| = 2 -> 1 - 1/3
    assert absolute_dev_explained(real, pred) == pytest.approx(1 - 1 / 3)
    assert rsquared([0, 0], [1, 2]) is None
    assert absolute_dev_explained([0, 0], [1, 2]) is None


def test_constant_prediction_is_undefined_with_a_note():
    assert correlation([1, 2, 3], [4, 4, 4]) is None
    sims = [SequenceSimulation(["a", "b", "c"], [0.0, 0.0, 0.0])]
    scored = score_sequences(sims, [[1.0, 2.0, 3.0]], ["top"])
    assert scored.ev_correlation_score is None
    assert "same value" in scored.note
    assert scored.scored_sequence_simulations[0].ev_correlation_score is None
    # constant truth is undefined too, and says so
    scored = score_sequences([SequenceSimulation(["a", "b"], [1.0, 2.0])], [[0.5, 0.5]], ["random"])
    assert scored.ev_correlation_score is None and "real activations are constant" in scored.note


def test_pooled_random_only_top_only_and_failed_records():
    top = SequenceSimulation(["a", "b"], [0.0, 10.0])
    rand = SequenceSimulation(["c", "d"], [1.0, 0.0])
    failed = SequenceSimulation(["e", "f"], [], error="unparseable")
    scored = score_sequences([top, rand, failed], [[0.0, 4.0], [0.0, 1.0], [9.0, 9.0]], ["top", "random", "random"])
    # pooled over the two good records only: r = [0,4,0,1], p = [0,10,1,0]
    r, p = [0, 4, 0, 1], [0, 10, 1, 0]
    mr, mp = sum(r) / 4, sum(p) / 4
    cov = sum((a - mr) * (b - mp) for a, b in zip(r, p))
    expected = cov / math.sqrt(sum((a - mr) ** 2 for a in r) * sum((b - mp) ** 2 for b in p))
    assert scored.ev_correlation_score == pytest.approx(expected)
    assert scored.top_only_score == pytest.approx(1.0)
    assert scored.random_only_score == pytest.approx(-1.0)
    assert "1 of 3 records could not be simulated" in scored.note
    assert [s.kind for s in scored.scored_sequence_simulations] == ["top", "random", "random"]
    assert scored.scored_sequence_simulations[2].ev_correlation_score is None


def test_linear_calibration():
    slope, intercept = fit_linear_calibration([1, 3, 5], [0, 1, 2])
    assert (slope, intercept) == (pytest.approx(2.0), pytest.approx(1.0))
    assert fit_linear_calibration([1, 3], [2, 2]) == (0.0, 2.0)


def test_bad_input_says_what_is_allowed():
    with pytest.raises(ValueError, match="same length"):
        correlation([1, 2], [1])
    with pytest.raises(ValueError, match="'top' or 'random'"):
        score_sequences([SequenceSimulation(["a"], [1.0])], [[1.0]], ["middle"])


# ---------- the 90% interval, more records, one entry point, cost ----------

import random  # noqa: E402

from neuronwidget.explanations import OpenAIBackend  # noqa: E402
from neuronwidget.explanations.scoring import correlation_interval, score  # noqa: E402
from neuronwidget.records import ActivationRecord, NeuronId, NeuronRecord  # noqa: E402

CAPITALS = {" Paris", " London", " Rome", " Berlin"}
WORDS = sorted(CAPITALS) + [" the", " city", " of", " and", " is", " cat", " dog", ".", " walked", " big"]


def big_neuron(n_top=80, n_random=60, length=16, seed=5) -> NeuronRecord:
    """Fires on capitals; enough records for 20 top + 20 random held-out (valid + test)."""
    rng = random.Random(seed)

    def rec():
        toks = [rng.choice(WORDS) for _ in range(length)]
        return ActivationRecord(toks, [4 + 2 * rng.random() if t in CAPITALS else rng.random() * 0.3 for t in toks])

    top = sorted((rec() for _ in range(n_top)), key=lambda r: -r.max_activation)
    return NeuronRecord(NeuronId(0, 1), random_sample=[rec() for _ in range(n_random)],
                        most_positive_activation_records=top)


class NoisySimulator:
    """Deterministic, imperfect: 10 on " Paris", " Rome" and " cat" (a wrong one), 0 elsewhere."""

    name = "noisy"
    cheap = True
    simulator_name = "noisy (test)"

    def simulate(self, explanation, token_lists, *, max_activation, lookup=None, progress=None, cancel=None):
        return [SequenceSimulation(list(t), [10.0 if x in (" Paris", " Rome", " cat") else 0.0 for x in t])
                for t in token_lists]

    def explain(self, record, *, n=1, cancel=None):
        return ["x"]


def test_interval_contains_the_score_and_narrows_with_more_records():
    record = big_neuron()
    small = score(record, "capitals", NoisySimulator(), n_top=5, n_random=5)
    large = score(record, "capitals", NoisySimulator(), n_top=20, n_random=20)
    for s in (small, large):
        low, high = s.interval
        assert low < s.score < high
        assert s.scored_simulation.ev_correlation_interval == [low, high]
        assert s.formatted() == f"{s.score:.2f} ({low:.2f}\u2013{high:.2f})"
    assert large.interval[1] - large.interval[0] < 0.7 * (small.interval[1] - small.interval[0])
    # reproducible: a fixed seed
    assert score(record, "capitals", NoisySimulator(), n_top=5, n_random=5).interval == small.interval
    assert small.cost == {"calls": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0}


def test_interval_is_undefined_when_the_score_is():
    scored = score(big_neuron(), "nothing at all", "baseline")  # the baseline predicts 0 everywhere
    assert scored.score is None and scored.interval is None and scored.formatted() == "undefined"
    assert correlation_interval([[1.0, 2.0]], [[3.0, 3.0]], ["top"]) == (None, None)


def test_interval_counts_undefined_resamples_honestly():
    vary, flat = ([0.0, 1.0, 2.0], [0.0, 2.0, 1.0]), ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    # 2 of 5 top records vary: a resample of only flat ones (p = 0.6^5 ~ 8%) has no r
    real, pred = zip(*([vary] * 2 + [flat] * 3))
    interval, note = correlation_interval(real, pred, ["top"] * 5)
    assert interval is not None and interval[0] <= correlation(sum(real, []), sum(pred, [])) <= interval[1]
    n = int(note.split(" of ")[0])
    assert 40 < n < 120 and "bootstrap resamples had an undefined correlation" in note
    # 1 of 2 varies: a quarter of the resamples have no r -> no interval, and why
    interval, note = correlation_interval([vary[0], flat[0]], [vary[1], flat[1]], ["top", "top"])
    assert interval is None and "undefined in" in note
    # one record per stratum: nothing to resample
    interval, note = correlation_interval([vary[0], [1.0, 0.0, 0.0]], [vary[1], [0.0, 1.0, 0.0]], ["top", "random"])
    assert interval is None and "too few to resample" in note


def test_more_records_come_from_the_test_split():
    record = big_neuron(n_top=24, n_random=18)  # 6 valid + 6 test of each
    scored = score(record, "capitals", NoisySimulator(), n_top=8, n_random=7)
    seqs = scored.scored_simulation.scored_sequence_simulations
    expected = record.top_split("valid") + record.top_split("test")[:2] + record.random_split("valid") \
        + record.random_split("test")[:1]
    assert [s.true_activations for s in seqs] == [r.activations for r in expected]
    assert scored.scored_simulation.note is None
    scored = score(record, "capitals", NoisySimulator(), n_top=20, n_random=0)
    assert len(scored.scored_simulation.scored_sequence_simulations) == 12
    assert "20 top + 0 random records were asked for, but only 12 top + 0 random" in scored.scored_simulation.note


def test_score_rejects_bad_arguments_naming_what_is_allowed():
    record = big_neuron(n_top=8, n_random=6)
    with pytest.raises(ValueError, match="scorer must be one of 'simulation', 'detection', 'fuzzing'"):
        score(record, "x", "baseline", scorer="Simulation")
    for kw in ({"n_top": -1}, {"n_random": False}, {"n_top": 2.0}, {"n_top": "5"}):
        with pytest.raises(ValueError, match="must be an integer >= 0"):
            score(record, "x", "baseline", **kw)
    with pytest.raises(ValueError, match="n_top \\+ n_random must be >= 1"):
        score(record, "x", "baseline", n_top=0, n_random=0)
    with pytest.raises(ValueError, match="non-empty string of at most 1000"):
        score(record, " \n", "baseline")
    with pytest.raises(ValueError, match="1001 characters long; at most 1000"):
        score(record, "y" * 1001, "baseline")
    assert score(record, "y" * 1000, "baseline").explanation == "y" * 1000


def test_simulation_cost_counts_calls_and_tokens(tmp_path):
    from servers.scripted_server import ScriptedServer

    record = big_neuron(n_top=8, n_random=6)
    with ScriptedServer(["[[0, 10]]"], prompt_tokens=50, completion_tokens=4) as server:
        b = OpenAIBackend("scripted", base_url=server.base_url, api_key="none", simulation="json",
                          cache_dir=tmp_path)
        scored = score(record, "capitals", b, n_top=2, n_random=2)
        assert server.requests == 4
        assert scored.cost == {"calls": 4, "cached": 0, "prompt_tokens": 200, "completion_tokens": 16}
        again = score(record, "capitals", b, n_top=2, n_random=2)  # all from the on-disk cache
        assert server.requests == 4
        assert again.cost == {"calls": 0, "cached": 4, "prompt_tokens": 0, "completion_tokens": 0}


def test_the_default_set_is_the_papers_valid_split():
    record = big_neuron(n_top=24, n_random=9)  # valid: 6 top, 3 random
    scored = score(record, "capitals", NoisySimulator())
    seqs = scored.scored_simulation.scored_sequence_simulations
    assert [s.true_activations for s in seqs] == [r.activations for r in record.top_split("valid")[:5]
                                                  + record.random_split("valid")]
    assert scored.scored_simulation.note is None
    # one count given: the other is 5, and both may reach into the test split
    seqs = score(record, "capitals", NoisySimulator(), n_top=5).scored_simulation.scored_sequence_simulations
    assert [s.kind for s in seqs] == ["top"] * 5 + ["random"] * 5
