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
