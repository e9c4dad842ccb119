"""Properties of every metric in verbcal.metrics on inputs shaped like real model output.

Inputs come from ``strategies.verbalized`` (coarse grids, float noise, one-hot
rows, exact zeros, ties, absent classes, 1 to 10^5 rows, 2 to 20 classes).
Every number must be finite and in its range, agree with scikit-learn where
it has the same metric, and agree with a plain textbook loop elsewhere. The
number of examples comes from the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss
from strategies import Verbalized, verbalized

from verbcal import InvalidInputError
from verbcal.metrics import (
    METRIC_NAMES,
    accuracy,
    bootstrap_ci,
    brier,
    classwise_ece,
    compare_metrics,
    debiased_ece,
    ece,
    mce,
    nll,
    reliability_table,
    standard_metrics,
)
from verbcal.validation import check_probabilities

TOL = 1e-9
STRATEGIES = ("uniform", "quantile", "distinct")
n_bins = st.sampled_from([1, 2, 5, 10, 15, 20])

#: Fewer examples for the bootstrap properties, scaled from the profile's number.
FEWER = settings(max_examples=max(5, settings.default.max_examples // 3))


def rows(data: Verbalized) -> np.ndarray:
    """The probability rows as the metrics take them (summing to 1)."""
    return check_probabilities(data.P, renormalize=data.renormalize)


def textbook_ece(P, y, n_bins: int | None) -> tuple[float, float]:
    """ECE and MCE by a plain loop: bins ``[i / n_bins, (i + 1) / n_bins)``, the last closed,
    or (``n_bins`` None) one bin per distinct confidence."""
    confidence, correct = P.max(axis=1), P.argmax(axis=1) == y
    if n_bins is None:
        groups = [confidence == value for value in np.unique(confidence)]
    else:
        edges = np.arange(n_bins + 1) / n_bins
        groups = [
            (confidence >= edges[b])
            & ((confidence <= edges[b + 1]) if b == n_bins - 1 else (confidence < edges[b + 1]))
            for b in range(n_bins)
        ]
    gaps = [(g.mean(), abs(correct[g].mean() - confidence[g].mean())) for g in groups if g.any()]
    return sum(w * gap for w, gap in gaps), max(gap for _, gap in gaps)


@given(verbalized(), n_bins, st.sampled_from(STRATEGIES))
def test_calibration_errors_are_finite_and_in_range(data, bins, strategy):
    P, y = rows(data), data.y
    values = {
        "ece": ece(P, y, n_bins=bins, strategy=strategy),
        "mce": mce(P, y, n_bins=bins, strategy=strategy),
        "debiased_ece": debiased_ece(P, y, n_bins=bins, strategy=strategy),
        "classwise_ece": classwise_ece(P, y, n_bins=bins, strategy=strategy),
    }
    for name, value in values.items():
        assert isinstance(value, float), name
        assert np.isfinite(value) and 0.0 <= value <= 1.0, (name, value)
    assert values["ece"] <= values["mce"] + 1e-12


@given(verbalized(), n_bins, st.sampled_from(["uniform", "distinct"]))
def test_ece_and_mce_equal_a_textbook_loop(data, bins, strategy):
    P, y = rows(data), data.y
    expected_ece, expected_mce = textbook_ece(P, y, bins if strategy == "uniform" else None)
    assert ece(P, y, n_bins=bins, strategy=strategy) == pytest.approx(expected_ece, abs=TOL)
    assert mce(P, y, n_bins=bins, strategy=strategy) == pytest.approx(expected_mce, abs=TOL)


@given(verbalized())
def test_scores_agree_with_scikit_learn(data):
    P, y = rows(data), data.y
    labels = list(range(data.n_classes))
    with warnings.catch_warnings():
        # scikit-learn warns when a row misses 1 by float noise; verbcal allows 1e-6
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one", UserWarning)
        expected_nll = log_loss(y, P, labels=labels)
        expected_brier = brier_score_loss(y, P, labels=labels, scale_by_half=False)
    value = nll(P, y)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(expected_nll, abs=TOL)
    value = brier(P, y)
    assert 0.0 <= value <= 2.0
    assert value == pytest.approx(expected_brier, abs=TOL)
    assert accuracy(P, y) == pytest.approx(accuracy_score(y, P.argmax(axis=1)), abs=TOL)


@given(verbalized(), n_bins, st.sampled_from(STRATEGIES), st.data())
def test_reliability_table_is_consistent(data, bins, strategy, draw):
    P, y = rows(data), data.y
    class_index = draw.draw(st.sampled_from([None, *range(data.n_classes)]), label="class")
    table = reliability_table(P, y, n_bins=bins, strategy=strategy, class_index=class_index)
    scores = P.max(axis=1) if class_index is None else P[:, class_index]
    assert table.count.sum() == len(y)
    assert table.n_distinct == np.unique(scores).size
    assert (np.diff(table.edges) >= 0).all()
    assert table.edges[0] <= scores.min() and scores.max() <= table.edges[-1]
    filled = table.count > 0
    for values in (table.accuracy, table.confidence, table.ci_low, table.ci_high):
        assert np.isnan(values[~filled]).all()
        assert ((values[filled] >= 0) & (values[filled] <= 1)).all()
    assert (table.ci_low[filled] <= table.accuracy[filled] + 1e-12).all()
    assert (table.accuracy[filled] <= table.ci_high[filled] + 1e-12).all()
    if strategy == "uniform":
        # every score lies inside the bin it is counted in
        lower, upper = table.edges[:-1][filled], table.edges[1:][filled]
        assert (lower - 1e-12 <= table.confidence[filled]).all()
        assert (table.confidence[filled] <= upper + 1e-12).all()


@given(verbalized(max_classes=2), n_bins)
def test_reliability_table_agrees_with_calibration_curve_off_the_edges(data, bins):
    # scikit-learn's bins are (a, b] and verbcal's [a, b): compare on scores off every edge.
    P = rows(data)
    # (scikit-learn's edges come from np.linspace: its 3 / 5 is 0.6000000000000001)
    edges = np.r_[np.arange(bins + 1) / bins, np.linspace(0.0, 1.0, bins + 1)]
    off_edges = ~np.isin(P[:, 1], edges[(edges > 0) & (edges < 1)])
    if not off_edges.any():
        return
    P, y = P[off_edges], data.y[off_edges]
    table = reliability_table(P, y, n_bins=bins, class_index=1)
    prob_true, prob_pred = calibration_curve(y, P[:, 1], n_bins=bins)
    filled = table.count > 0
    np.testing.assert_allclose(table.accuracy[filled], prob_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(table.confidence[filled], prob_pred, rtol=0, atol=TOL)


@given(verbalized(), st.integers(0, 2**32 - 1))
def test_metrics_ignore_the_order_of_rows(data, seed):
    P, y = rows(data), data.y
    order = np.random.default_rng(seed).permutation(len(y))
    for name, metric in standard_metrics().items():
        assert metric(P[order], y[order]) == pytest.approx(metric(P, y), abs=1e-12), name


@FEWER
@given(verbalized(max_rows=3000), st.sampled_from(METRIC_NAMES), st.integers(0, 2**16))
def test_bootstrap_interval_is_ordered_in_range_and_reproducible(data, name, seed):
    P, y = rows(data), data.y
    metric = standard_metrics()[name]
    estimate, low, high = bootstrap_ci(metric, P, y, n_boot=20, random_state=seed)
    assert estimate == metric(P, y)
    assert low <= high and np.isfinite([low, high]).all()
    upper = {"brier": 2.0, "nll": np.inf}.get(name, 1.0)
    assert low >= 0.0 and high <= upper
    assert bootstrap_ci(metric, P, y, n_boot=20, random_state=seed) == (estimate, low, high)


@FEWER
@given(verbalized(max_rows=3000))
def test_comparing_rows_with_themselves_finds_no_change(data):
    P, y = rows(data), data.y
    comparisons = compare_metrics(P, P.copy(), y, n_boot=20)
    assert [c.name for c in comparisons] == list(METRIC_NAMES)
    for c in comparisons:
        assert c.after is not None and c.change is not None
        assert c.before == c.after
        assert np.isfinite([*c.before, *c.change]).all()
        assert c.verdict == "unclear", c


@given(
    verbalized(max_rows=3000, allow_renormalize=False),
    st.sampled_from(["nan", "negative", "off_sum", "label"]),
    st.sampled_from(sorted(set(METRIC_NAMES) | {"debiased_ece", "reliability_table"})),
    st.data(),
)
def test_invalid_input_is_refused_naming_the_row(data, how, name, draw):
    P, y = data.P.copy(), data.y.copy()
    row = draw.draw(st.integers(0, len(y) - 1), label="row")
    if how == "nan":
        P[row, 0], message = np.nan, f"row {row} contains NaN"
    elif how == "negative":
        P[row, 0], message = -0.05, f"row {row} has a negative value"
    elif how == "off_sum":
        P[row] *= 1.01
        message = f"row {row} sums to 1.01"
    else:
        y[row], message = data.n_classes, rf"y\[{row}\] = {data.n_classes} is outside"
    metric = {"debiased_ece": debiased_ece, "reliability_table": reliability_table}.get(name)
    metric = metric or standard_metrics()[name]
    with pytest.raises(InvalidInputError, match=message):
        metric(P, y)
