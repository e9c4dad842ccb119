"""Calibrators on inputs shaped like real verbalized answers (issue 9).

Stated probabilities are coarse (a 0.05 or 0.1 grid) and, once renormalised,
differ from each other by float rounding only (0.6 and 0.6000000000000001).
Before the fix, ShrinkageBinning (and so AutoCalibrator, whose default it is,
and any chain holding it) crashed on them inside scikit-learn's
IsotonicRegression with "Input y contains NaN".
"""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression

from verbcal import InvalidInputError
from verbcal.calibrators import (
    AutoCalibrator,
    BatchCalibration,
    CalibratorChain,
    ContextualCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    ShrinkageBinning,
    TemperatureScaling,
    VectorScaling,
)
from verbcal.calibrators.auto import default_candidates, fitted_parameters


def stated_on_a_grid(n_classes, n=1000, seed=0, step=0.05):
    """The issue's snippet: true probabilities, stated on a grid, renormalised; labels drawn."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, n_classes)) * 2
    truth = np.exp(Z) / np.exp(Z).sum(1, keepdims=True)
    P = np.round(truth / step) * step + 1e-9
    P /= P.sum(1, keepdims=True)
    y = np.array([rng.choice(n_classes, p=p) for p in truth])
    return P, y


def every_calibrator(n_classes):
    calibrators = [
        TemperatureScaling(),
        NaiveTemperatureScaling(),
        ContextualCalibration(),
        BatchCalibration(),
        VectorScaling(),
        MatrixScaling(),
        IsotonicCalibration(),
        HistogramBinning(),
        ShrinkageBinning(),
        ShrinkageBinning(by_class=True),
        CalibratorChain([TemperatureScaling(), ShrinkageBinning()]),
        AutoCalibrator(),
    ]
    if n_classes == 2:
        calibrators.append(PlattScaling())
    return calibrators


def assert_probability_rows(Q, n, n_classes):
    assert Q.shape == (n, n_classes)
    assert np.isfinite(Q).all() and (Q >= 0).all()
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=0, atol=1e-9)


# Before the fix, seed 0 crashed AutoCalibrator at 4 and 10 classes, seeds 1 and 2 crashed
# ShrinkageBinning itself at 3 and 4 classes (see the closing note of issue 9).
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_classes", [2, 3, 4, 5, 10])
def test_every_calibrator_fits_the_issue_snippet(n_classes, seed):
    P, y = stated_on_a_grid(n_classes, seed=seed)
    P_new, _ = stated_on_a_grid(n_classes, n=200, seed=seed + 100)
    for calibrator in every_calibrator(n_classes):
        fitted = calibrator.fit(P, y)
        assert_probability_rows(fitted.predict_proba(P_new), 200, n_classes)


@pytest.mark.parametrize("step", [0.1, 0.25])
def test_shrinkage_binning_on_coarser_grids(step):
    P, y = stated_on_a_grid(4, seed=0, step=step)
    assert_probability_rows(ShrinkageBinning().fit(P, y).predict_proba(P), len(P), 4)


def test_stated_values_that_differ_by_float_rounding_are_one_value():
    # (0.6 + 0.6000000000000001) / 2 rounds to 0.6000000000000001: a bin boundary
    # placed halfway between the two fell on the upper one, which then held no rows.
    upper = np.nextafter(0.6, 1.0)
    P = np.tile([[0.6, 0.4], [upper, 1.0 - upper], [0.9, 0.1]], (40, 1))
    y = np.tile([0, 1, 0], 40)
    cal = ShrinkageBinning(prior_strength=1.0).fit(P, y)
    assert cal.stated_values_.tolist() == [0.6, 0.9]
    assert cal.block_counts_.sum() == len(P)
    Q = cal.predict_proba([[0.6, 0.4], [upper, 1.0 - upper]])
    assert Q[0].tolist() == Q[1].tolist()
    # 40 of the 80 rows stated 0.6 were right; the shrinkage toward the temperature-scaled
    # confidence of those rows is small at alpha = 1
    assert Q[0, 0] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("cls", [HistogramBinning, IsotonicCalibration, ShrinkageBinning])
def test_float_noise_of_renormalising_is_the_same_stated_value(cls):
    # 0.6 sits on a bin edge (6 / 10); renormalised it may come out an ulp below, or, after
    # the issue's 1e-9 floor on 4 classes, at (0.6 + 1e-9) / (1 + 4e-9) = 0.5999999986.
    below, above = np.nextafter(0.6, 0.0), np.nextafter(0.6, 1.0)
    floored = (0.6 + 1e-9) / (1 + 4e-9)
    rows = np.array([[0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    P, y = np.tile(rows, (30, 1)), np.tile([0, 1, 1], 30)
    noisy = P.copy()
    noisy[::9] = [below, 1.0 - below]
    noisy[3::9] = [above, 1.0 - above]
    noisy[6::9] = [floored, 1.0 - floored]
    clean_fit, noisy_fit = cls().fit(P, y), cls().fit(noisy, y)
    probe = np.array([[0.6, 0.4], *([v, 1.0 - v] for v in (below, above, floored))])
    expected = np.repeat(clean_fit.predict_proba(probe[:1]), len(probe), axis=0)
    for fitted in (clean_fit, noisy_fit):
        np.testing.assert_allclose(fitted.predict_proba(probe), expected, atol=1e-12)


@pytest.mark.parametrize("by_class", [False, True])
def test_float_noise_never_decides_a_tie(by_class):
    # "50/50" is a common verbalized answer; renormalised it may come out an ulp apart.
    rows = np.array([[0.5, 0.5], [0.8, 0.2], [0.3, 0.7]])
    P, y = np.tile(rows, (30, 1)), np.tile([1, 0, 1], 30)
    fitted = ShrinkageBinning(by_class=by_class).fit(P, y)
    up, down = np.nextafter(0.5, 1.0), np.nextafter(0.5, 0.0)
    Q = fitted.predict_proba([[0.5, 0.5], [up, down], [down, up]])
    np.testing.assert_allclose(Q, np.repeat(Q[:1], 3, axis=0), atol=1e-12)


# -- AutoCalibrator goes on when a candidate cannot ----------------------------------------


def test_auto_calibrator_skips_a_candidate_that_raises_any_error():
    P, y = stated_on_a_grid(3, n=300, seed=3)
    # A frozen calibrator that was never fitted raises scikit-learn's NotFittedError
    # (not a verbcal error) on its first prediction.
    unfitted = FrozenEstimator(TemperatureScaling())
    with pytest.raises(NotFittedError):
        unfitted.predict_proba(P)
    auto = AutoCalibrator(
        candidates=[("frozen_unfitted", unfitted), ("temperature", TemperatureScaling())]
    ).fit(P, y)
    assert auto.chosen_ == "temperature"
    assert auto.cv_scores_["frozen_unfitted"] == np.inf
    assert auto.cv_errors_["frozen_unfitted"].startswith("NotFittedError: ")
    assert "frozen_unfitted failed: NotFittedError: " in auto.explanation_
    assert_probability_rows(auto.predict_proba(P), len(P), 3)


def test_auto_calibrator_skips_a_candidate_whose_output_has_the_wrong_shape():
    # scikit-learn's LogisticRegression on P as features knows only the classes it saw:
    # with class 2 never in y it predicts 2 columns for a 3-class problem.
    P, y = stated_on_a_grid(3, n=300, seed=4)
    y = np.where(y == 2, 0, y)
    auto = AutoCalibrator(
        candidates=[("logistic", LogisticRegression()), ("shrinkage", ShrinkageBinning())]
    ).fit(P, y)
    assert auto.chosen_ == "shrinkage"
    assert "returned shape (60, 2)" in auto.cv_errors_["logistic"]
    assert "expected (60, 3)" in auto.cv_errors_["logistic"]


def test_auto_calibrator_raises_naming_every_reason_when_all_candidates_fail():
    P, y = stated_on_a_grid(3, n=300, seed=5)
    candidates = [
        ("platt", PlattScaling()),
        ("frozen_unfitted", FrozenEstimator(TemperatureScaling())),
    ]
    with pytest.raises(InvalidInputError) as raised:
        AutoCalibrator(candidates=candidates).fit(P, y)
    message = str(raised.value)
    assert "every candidate failed" in message
    assert "platt: " in message and "Only binary" in message
    assert "frozen_unfitted: NotFittedError: " in message


@pytest.mark.parametrize("random_state", range(10))
def test_auto_calibrator_spreads_a_rare_class_over_the_folds(random_state):
    # Two rows of class 1 among 52: plain shuffled folds put both in one fold for half of
    # these seeds, leaving a training fold with class 0 only, on which every candidate
    # failed. Stratified folds give each of them a fold of its own.
    rng = np.random.default_rng(0)
    confidence = rng.choice([0.6, 0.8, 0.9, 1.0], 52)
    P = np.column_stack([confidence, 1 - confidence])
    y = np.r_[np.zeros(50, dtype=int), np.ones(2, dtype=int)]
    auto = AutoCalibrator(random_state=random_state).fit(P, y)
    assert not auto.cv_errors_
    assert_probability_rows(auto.predict_proba(P), 52, 2)


def test_auto_calibrator_refuses_a_class_of_one_row_with_every_reason():
    # With a single row of class 1, the fold that holds it trains on class 0 alone.
    P = np.tile([[0.9, 0.1], [0.6, 0.4]], (10, 1))
    y = np.r_[np.zeros(19, dtype=int), [1]]
    with pytest.raises(InvalidInputError, match="every candidate failed") as raised:
        AutoCalibrator().fit(P, y)
    # one labelled event (the wrong answer): only the candidates held by priors are compared
    compared = [c for _, c in default_candidates(2) if fitted_parameters(c, 2) == 0]
    assert str(raised.value).count("one class only") == len(compared) == 2
