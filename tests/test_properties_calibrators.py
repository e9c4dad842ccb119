"""Properties every calibrator keeps on inputs shaped like real model output (hypothesis).

The inputs (``strategies.verbalized``): 2 to 20 classes, 1 to 10^5 rows, values
on a 0.05 / 0.1 / 0.25 grid with float noise and renormalisation, one-hot rows,
exact zeros, one to three distinct rows, classes absent from the labels or from
the top answer, near-duplicate values, rows summing to 0.99 or 1.01 with
``renormalize=True``. The number of examples comes from the hypothesis profile
(tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from strategies import Verbalized, build_verbalized, unseen_rows, verbalized

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
from verbcal.validation import check_probabilities

CALIBRATORS = {
    "temperature": TemperatureScaling(),
    "naive_temperature": NaiveTemperatureScaling(),
    "contextual": ContextualCalibration(),
    "contextual_bias": ContextualCalibration(mode="bias"),
    "batch": BatchCalibration(),
    "vector": VectorScaling(),
    "matrix": MatrixScaling(),
    "platt": PlattScaling(),
    "isotonic": IsotonicCalibration(),
    "histogram": HistogramBinning(),
    "shrinkage": ShrinkageBinning(),
    "shrinkage_by_class": ShrinkageBinning(by_class=True),
    "shrinkage_accuracy": ShrinkageBinning(toward="accuracy"),
    "chain": CalibratorChain([TemperatureScaling(), ShrinkageBinning()]),
    "auto": AutoCalibrator(),
}
UNSUPERVISED = {"contextual", "contextual_bias", "batch"}

#: Largest rows x classes drawn per calibrator: cross-validating eight candidates, or a
#: full K x K matrix, on 10^5 rows of 20 classes would take most of the time budget.
MAX_CELLS = {"auto": 40_000, "chain": 400_000, "matrix": 400_000}

#: Fewer examples for the costly ones, scaled from the profile's number.
FEWER = settings(max_examples=max(5, settings.default.max_examples // 3))


def calibrator_data(name: str, **limits) -> st.SearchStrategy[Verbalized]:
    classes = {"max_classes": 2} if name == "platt" else {}
    return verbalized(max_cells=MAX_CELLS.get(name, 2_000_000), **classes, **limits)


def fresh(name: str, data: Verbalized):
    return clone(CALIBRATORS[name]).set_params(renormalize=data.renormalize)


def refusal(name: str, data: Verbalized) -> str | None:
    """The message a calibrator must refuse this (valid-looking) input with, or None."""
    if name in UNSUPERVISED:
        return None
    if data.n_label_classes < 2:
        return "one class only"
    if name == "auto" and len(data.y) < 10:
        return "needs at least 10 rows"
    return None


def assert_probability_rows(Q, n_rows: int, n_classes: int) -> None:
    assert Q.shape == (n_rows, n_classes)
    assert np.isfinite(Q).all()
    assert (Q >= 0).all()
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, rtol=0, atol=1e-9)


def fit_or_refuse(name: str, data: Verbalized):
    """The fitted calibrator, or None after checking that it refused clearly."""
    calibrator = fresh(name, data)
    expected = refusal(name, data)
    if expected is not None:
        with pytest.raises(InvalidInputError, match=expected):
            calibrator.fit(data.P, data.y)
        return None
    if name == "auto":
        try:
            return calibrator.fit(data.P, data.y)
        except InvalidInputError as error:
            # Only when a cross-validation training fold must lack every class but one:
            # at most one class has two rows or more (stratified folds spread the others).
            assert "every candidate failed" in str(error)
            assert (np.bincount(data.y) >= 2).sum() <= 1, str(error)
            return None
    return calibrator.fit(data.P, data.y)


COSTLY = ("auto", "chain", "matrix")
CHEAP = [name for name in CALIBRATORS if name not in COSTLY]


def check_fit_and_predict(name: str, draw) -> None:
    data = draw.draw(calibrator_data(name), label="data")
    fitted = fit_or_refuse(name, data)
    if fitted is None:
        return
    n, k = data.P.shape
    Q = fitted.predict_proba(data.P)
    assert_probability_rows(Q, n, k)
    if name not in UNSUPERVISED:
        # No calibrated probability of a gold label is 0 on the rows it was fitted on.
        gold = Q[np.arange(n), data.y]
        assert np.isfinite(-np.log(gold)).all(), gold.min()
    new = draw.draw(unseen_rows(k), label="unseen rows")
    assert_probability_rows(fitted.predict_proba(new), len(new), k)
    assert fitted.predict(new).shape == (len(new),)


@pytest.mark.parametrize("name", CHEAP)
@given(st.data())
def test_fit_gives_probability_rows_with_finite_nll_and_predicts_new_rows(name, draw):
    check_fit_and_predict(name, draw)


@pytest.mark.parametrize("name", COSTLY)
@FEWER
@given(st.data())
def test_costly_fit_gives_probability_rows_with_finite_nll_and_predicts_new_rows(name, draw):
    check_fit_and_predict(name, draw)


@pytest.mark.parametrize("name", CALIBRATORS)
def test_the_largest_inputs_on_every_run(name):
    # Hypothesis draws 10^4 to 10^5 rows rarely; this size runs every time.
    n, k = (20_000, 3) if name == "auto" else (100_000, 2 if name == "platt" else 4)
    data = build_verbalized(n, k, kind="mixed", step=0.05, floor=1e-9, never_top=1, seed=n + k)
    fitted = fit_or_refuse(name, data)
    Q = fitted.predict_proba(data.P)
    assert_probability_rows(Q, n, k)
    if name not in UNSUPERVISED:  # the bias mode's simplex projection may state 0
        assert np.isfinite(-np.log(Q[np.arange(n), data.y])).all()


@pytest.mark.parametrize("name", CALIBRATORS)
@FEWER
@given(st.data())
def test_results_are_deterministic(name, draw):
    data = draw.draw(calibrator_data(name, max_rows=3000), label="data")
    first = fit_or_refuse(name, data)
    if first is None:
        return
    again = fresh(name, data).fit(data.P.copy(), data.y.copy())
    np.testing.assert_array_equal(first.predict_proba(data.P), again.predict_proba(data.P))


@pytest.mark.parametrize("name", CALIBRATORS)
@FEWER
@given(st.data())
def test_float_noise_does_not_move_the_output(name, draw):
    data = draw.draw(calibrator_data(name, max_rows=3000), label="data")
    fitted = fit_or_refuse(name, data)
    if fitted is None:
        return
    P = check_probabilities(data.P, renormalize=data.renormalize)
    seed = draw.draw(st.integers(0, 2**32 - 1), label="noise seed")
    ulps = np.random.default_rng(seed).integers(-2, 3, size=P.shape)
    noisy = P + np.where(P > 0, ulps, 0) * np.spacing(P)
    np.testing.assert_allclose(fitted.predict_proba(noisy), fitted.predict_proba(P), atol=1e-6)


# A monotone calibrator keeps the order of the scores: within a row, a larger stated
# probability never becomes a smaller calibrated one (so the top class stays on top);
# across the rows of a binary problem, a larger P(class 1) never gets a smaller Q(class 1).
WITHIN_ROWS = ["temperature", "naive_temperature"]
ACROSS_BINARY_ROWS = ["temperature", "naive_temperature", "isotonic"]


@pytest.mark.parametrize("name", WITHIN_ROWS)
@given(verbalized())
def test_monotone_calibrators_keep_the_order_within_each_row(name, data):
    fitted = fit_or_refuse(name, data)
    if fitted is None:
        return
    P = check_probabilities(data.P, renormalize=data.renormalize)
    Q = fitted.predict_proba(P)
    rows = np.arange(len(P))[:, None]
    order = np.argsort(P, axis=1, kind="stable")
    sorted_P, sorted_Q = P[rows, order], Q[rows, order]
    larger = np.diff(sorted_P, axis=1) > 0
    assert (np.diff(sorted_Q, axis=1)[larger] >= -1e-12).all()
    # The calibrated top class is a stated top class (a tie up to float noise may go either way).
    top = P.max(axis=1, keepdims=True) - P <= 1e-12
    assert top[np.arange(len(P)), Q.argmax(axis=1)].all()


@pytest.mark.parametrize("name", ACROSS_BINARY_ROWS)
@given(verbalized(max_classes=2))
def test_monotone_calibrators_keep_the_order_across_binary_rows(name, data):
    fitted = fit_or_refuse(name, data)
    if fitted is None:
        return
    P = check_probabilities(data.P, renormalize=data.renormalize)
    Q = fitted.predict_proba(P)
    order = np.argsort(P[:, 1], kind="stable")
    larger = np.diff(P[order, 1]) > 0
    assert (np.diff(Q[order, 1])[larger] >= -1e-12).all()


# -- invalid input is refused with InvalidInputError naming the problem -----------------------


def spoil(data: Verbalized, how: str, row: int) -> tuple[np.ndarray, np.ndarray, str]:
    P, y = data.P.copy(), data.y.copy()
    if how == "nan":
        P[row, 0] = np.nan
        return P, y, f"row {row} contains NaN"
    if how == "negative":
        P[row, 0] = -0.1
        return P, y, f"row {row} has a negative value"
    if how == "zero_row":
        P[row] = 0.0
        return P, y, f"row {row} sums to 0"
    if how == "label_out_of_range":
        y[row] = P.shape[1]
        return P, y, rf"y\[{row}\] = {P.shape[1]} is outside the class indices"
    if how == "labels_short":
        return P, y[:-1], f"y has {len(y) - 1} labels but there are {len(y)} rows"
    raise AssertionError(how)


@pytest.mark.parametrize("name", CALIBRATORS)
@FEWER
@given(
    st.data(),
    st.sampled_from(["nan", "negative", "zero_row", "label_out_of_range", "labels_short"]),
)
def test_invalid_input_is_refused_naming_the_problem(name, draw, how):
    data = draw.draw(calibrator_data(name, max_rows=2000), label="data")
    assume(name not in UNSUPERVISED or how in ("nan", "negative", "zero_row"))  # no labels
    row = draw.draw(st.integers(0, len(data.y) - 1), label="row")
    P, y, message = spoil(data, how, row)
    calibrator = fresh(name, data)
    with pytest.raises(InvalidInputError, match=message):
        calibrator.fit(P, y)
