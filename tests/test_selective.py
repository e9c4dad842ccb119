"""Selective prediction: risk-coverage, AURC, the accuracy threshold and routing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded import load_recorded_task
from sklearn.model_selection import train_test_split

from verbcal.calibrators import TemperatureScaling
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.selective import (
    aurc,
    excess_aurc,
    optimal_aurc,
    risk_coverage_curve,
    route,
    selective_threshold,
)


def _rows(conf, pred, K=3):
    """Probability rows with the given top probability and top class."""
    P = np.full((len(conf), K), 0.0)
    for i, (c, k) in enumerate(zip(conf, pred, strict=True)):
        P[i] = (1 - c) / (K - 1)
        P[i, k] = c
    return P


def _per_row_aurc(order_wrong):
    """Geifman et al.'s AURC for one ranking: mean over k of errors in the first k / k."""
    wrong = np.asarray(order_wrong, dtype=float)
    return float(np.mean(np.cumsum(wrong) / np.arange(1, wrong.size + 1)))


def test_aurc_by_hand():
    # Confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong): risks 0, 1/2, 1/3, 2/4.
    P = _rows([0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])
    y = [0, 1, 0, 1]
    expected = (0 + 1 / 2 + 1 / 3 + 2 / 4) / 4
    assert aurc(P, y) == pytest.approx(expected, abs=1e-12)
    # Perfect ranking of 2 errors in 4: risks 0, 0, 1/3, 2/4.
    assert optimal_aurc(4, 2) == pytest.approx((1 / 3 + 1 / 2) / 4, abs=1e-12)
    assert excess_aurc(P, y) == pytest.approx(expected - (1 / 3 + 1 / 2) / 4, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=7))
def test_tied_aurc_is_the_mean_over_every_order_of_the_tied_rows(rows):
    """Brute force: average the per-row AURC over all permutations inside each tie run."""
    levels = np.array([r[0] for r in rows])
    wrong = np.array([r[1] for r in rows])
    conf = 0.5 + levels / 10
    P = _rows(conf, [0] * len(rows))
    y = np.where(wrong, 1, 0)
    runs = [np.flatnonzero(levels == v) for v in sorted(set(levels), reverse=True)]
    values = [
        _per_row_aurc(np.concatenate([wrong[list(p)] for p in perm]))
        for perm in itertools.product(*(itertools.permutations(r) for r in runs))
    ]
    assert aurc(P, y) == pytest.approx(np.mean(values), abs=1e-9)


def test_without_ties_aurc_is_the_per_row_formula():
    rng = np.random.default_rng(0)
    conf = rng.permutation(np.linspace(0.4, 0.99, 500))
    pred = rng.integers(0, 3, 500)
    y = np.where(rng.uniform(size=500) < conf, pred, (pred + 1) % 3)
    P = _rows(conf, pred)
    wrong_ranked = (pred != y)[np.argsort(-conf)]
    assert aurc(P, y) == pytest.approx(_per_row_aurc(wrong_ranked), abs=1e-9)
    # Perfect ranking: the per-row formula with every error last; large-n limit of Geifman.
    n_err = int((pred != y).sum())
    perfect = np.r_[np.zeros(500 - n_err), np.ones(n_err)]
    assert optimal_aurc(500, n_err) == pytest.approx(_per_row_aurc(perfect), abs=1e-12)
    r = n_err / 500
    assert optimal_aurc(500, n_err) == pytest.approx(r + (1 - r) * np.log(1 - r), abs=2e-3)


def test_curve_points_are_counts():
    P = _rows([0.9, 0.9, 0.7, 0.5, 0.5], [0, 1, 2, 0, 1])
    y = [0, 0, 2, 0, 0]
    curve = risk_coverage_curve(P, y)
    assert curve.thresholds.tolist() == [0.9, 0.7, 0.5]
    assert curve.n_answered.tolist() == [2, 3, 5]
    assert curve.n_errors.tolist() == [1, 1, 2]
    np.testing.assert_allclose(curve.coverage, [0.4, 0.6, 1.0])
    np.testing.assert_allclose(curve.risk, [0.5, 1 / 3, 0.4])


def test_invariant_to_relabelling_classes():
    rng = np.random.default_rng(2)
    P = rng.dirichlet(np.ones(4), 200)
    y = rng.integers(0, 4, 200)
    perm = np.array([2, 0, 3, 1])
    assert aurc(P[:, perm], np.argsort(perm)[y]) == pytest.approx(aurc(P, y), abs=1e-12)


def test_selective_threshold_reaches_the_accuracy_on_the_rows():
    rng = np.random.default_rng(4)
    conf = rng.choice([0.6, 0.7, 0.8, 0.9, 0.99], 1000)
    pred = rng.integers(0, 3, 1000)
    y = np.where(rng.uniform(size=1000) < conf, pred, (pred + 1) % 3)
    P = _rows(conf, pred)
    s = selective_threshold(P, y, 0.85)
    answered = conf >= s.threshold
    assert s.met and s.accuracy == pytest.approx((pred == y)[answered].mean())
    assert s.accuracy >= 0.85 and s.coverage == answered.mean()
    # The next looser threshold would miss the target.
    looser = conf.max(where=conf < s.threshold, initial=0)
    if looser > 0:
        assert (pred == y)[conf >= looser].mean() < 0.85
    sure = selective_threshold(P, y, 0.85, guarantee=0.9)
    assert sure.met and sure.threshold >= s.threshold and sure.bound >= 0.85
    assert "accuracy of the automatic answers" in sure.explanation


def test_selective_threshold_guarantee_holds_over_draws():
    """Accuracy of the answered rows of the *population* is below target in <= ~10% of draws."""
    levels = np.array([0.6, 0.7, 0.8, 0.9, 0.97])
    rng = np.random.default_rng(5)
    failures = 0
    for _ in range(200):
        conf = rng.choice(levels, 400)
        right = rng.uniform(size=400) < conf  # calibrated
        s = selective_threshold(_rows(conf, [0] * 400), np.where(right, 0, 1), 0.88, guarantee=0.9)
        if s.met:
            failures += levels[levels >= s.threshold].mean() < 0.88
    assert failures <= 33  # Binomial(200, 0.1) exceeds 33 with probability < 0.5%


def test_not_met_says_how_many_rows():
    P = _rows([0.95] * 30 + [0.6] * 10, [0] * 40)
    y = [0] * 29 + [1] + [1] * 10
    s = selective_threshold(P, y, 0.9, guarantee=0.95)
    assert not s.met and s.rows_needed > 40 and "would be needed" in s.explanation


def test_route_decides_every_row():
    P = _rows([0.9, 0.5, 0.8], [2, 1, 0])
    answer, label, expected = route(P, 0.8)
    assert answer.tolist() == [True, False, True] and label.tolist() == [2, 1, 0]
    assert expected == {
        "coverage": 2 / 3,
        "accuracy": pytest.approx(0.85),
        "n_answered": 2,
        "n_rows": 3,
    }


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: route([[0.5, 0.5]], 1.5), ConfigurationError, "threshold"),
        (lambda: selective_threshold([[0.5, 0.5]], [0], 0), ConfigurationError, "target_accuracy"),
        (lambda: aurc([[0.5, 0.6]], [0]), InvalidInputError, "sums to"),
        (lambda: aurc([[0.5, 0.5]], [2]), InvalidInputError, "outside the class"),
        (lambda: selective_threshold([[0.9, 0.1]], [1], 0.8), InvalidInputError, "none of the"),
        (lambda: optimal_aurc(3, 4), ConfigurationError, "n_errors"),
    ],
)
def test_bad_input_names_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_on_recorded_answers_calibration_lowers_excess_aurc_not(recorded_data):
    """Temperature scaling is monotone in each row's confidence for binary rows: AURC unchanged."""
    task = load_recorded_task(recorded_data / "boolq__gpt-4o.jsonl")
    fit, test = train_test_split(np.arange(len(task.y)), test_size=0.5, random_state=0)
    Q = TemperatureScaling().fit(task.P[fit], task.y[fit]).predict_proba(task.P[test])
    assert aurc(Q, task.y[test]) == pytest.approx(aurc(task.P[test], task.y[test]), abs=1e-12)
    curve = risk_coverage_curve(Q, task.y[test])
    assert 0 < curve.excess_aurc < curve.aurc < curve.risk[-1]
