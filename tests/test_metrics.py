"""Tests for verbcal.metrics: hand-computed values, invariances, edge cases, bad input,
and differential tests against uncertainty-calibration, scikit-learn and scipy."""

from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest
from calibration import utils as uc
from recorded import find_recorded_data, load_recorded_tasks
from scipy import stats
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from verbcal import ConfigurationError, InvalidInputError
from verbcal.metrics import (
    BootstrapCI,
    accuracy,
    bootstrap_ci,
    brier,
    class_ece,
    classwise_ece,
    debiased_ece,
    ece,
    mce,
    nll,
    reliability_table,
)
from verbcal.metrics.binning import (
    assign_bins,
    assign_uniform,
    distinct_edges,
    quantile_edges,
    uniform_edges,
    uniform_floor_is_exact,
)
from verbcal.metrics.toplabel import iter_top_label

TOL = 1e-9


def dirichlet(n: int, k: int, seed: int = 0, sharp: float = 1.0):
    """Continuous probability rows (no ties, nothing on a bin edge) and labels drawn from them."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(k, sharp), size=n)
    y = (rng.random(n)[:, None] > np.cumsum(P, axis=1)).sum(axis=1)
    return P, np.minimum(y, k - 1)


def verbalized(n: int, seed: int = 0):
    """Coarse rows as a model states them: ties, exact 0 and 1, values on bin edges."""
    rows = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.5, 0.5, 0.0],
            [0.4, 0.4, 0.2],
            [0.2, 0.4, 0.4],
            [0.8, 0.1, 0.1],
            [0.1, 0.9, 0.0],
            [0.6, 0.2, 0.2],
            [1 / 3, 1 / 3, 1 / 3],
            [0.0, 0.05, 0.95],
        ]
    )
    rng = np.random.default_rng(seed)
    return rows[rng.integers(0, len(rows), n)], rng.integers(0, 3, n)


def naive_top_label(P, y):
    P = np.asarray(P, dtype=float)
    return P.max(axis=1), P.argmax(axis=1) == np.asarray(y)


def naive_ece(P, y, n_bins):
    """Textbook ECE with [a, b) bins (last closed) and a Python loop."""
    conf, correct = naive_top_label(P, y)
    edges = np.arange(n_bins + 1) / n_bins
    total = 0.0
    for b in range(n_bins):
        upper = conf <= edges[b + 1] if b == n_bins - 1 else conf < edges[b + 1]
        in_bin = (conf >= edges[b]) & upper
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


# ---------------------------------------------------------------- the one-pass kernel


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 64, 4096])
@pytest.mark.parametrize("data", ["dirichlet2", "dirichlet10", "verbalized"])
def test_top_label_pass_equals_max_and_argmax_exactly(data, chunk_rows):
    P, y = {
        "dirichlet2": lambda: dirichlet(500, 2, seed=1),
        "dirichlet10": lambda: dirichlet(500, 10, seed=2),
        "verbalized": lambda: verbalized(500, seed=3),
    }[data]()
    conf = np.full(len(y), np.nan)
    correct = np.zeros(len(y), dtype=bool)
    for start, c, ok in iter_top_label(P, y, chunk_rows=chunk_rows):
        conf[start : start + len(c)] = c
        correct[start : start + len(c)] = ok
    expected_conf, expected_correct = naive_top_label(P, y)
    np.testing.assert_array_equal(conf, expected_conf)
    np.testing.assert_array_equal(correct, expected_correct)


@pytest.mark.parametrize("n_bins", [1, 2, 3, 5, 10, 15, 20])
@pytest.mark.parametrize("data", ["dirichlet", "verbalized"])
def test_ece_fast_path_equals_naive(data, n_bins):
    P, y = dirichlet(3000, 4, seed=n_bins) if data == "dirichlet" else verbalized(3000, n_bins)
    assert ece(P, y, n_bins=n_bins) == pytest.approx(naive_ece(P, y, n_bins), abs=1e-12)


def test_first_max_rule_on_ties():
    P = [[0.5, 0.5], [0.25, 0.375, 0.375]]
    assert accuracy([[0.5, 0.5]], [0]) == 1.0
    assert accuracy([[0.5, 0.5]], [1]) == 0.0
    assert accuracy([P[1]], [1]) == 1.0
    assert accuracy([P[1]], [2]) == 0.0


@pytest.mark.parametrize("n_bins", range(1, 101))
def test_uniform_bins_by_multiplication_match_searchsorted(n_bins):
    edges = uniform_edges(n_bins)
    scores = np.concatenate([edges, np.nextafter(edges, 0.0), np.nextafter(edges, 1.0)])
    scores = np.clip(scores, 0.0, 1.0)
    fast = assign_uniform(scores, n_bins, uniform_floor_is_exact(n_bins))
    np.testing.assert_array_equal(fast, assign_bins(scores, edges))


def test_stated_values_land_on_the_bin_they_open():
    # 0.8 = 12 / 15 exactly in floating point: it opens bin 12 of 15.
    table = reliability_table([[0.8, 0.2], [0.2, 0.8]], [0, 1], n_bins=15)
    assert table.count[12] == 2
    assert table.edges[12] == 0.8


# ---------------------------------------------------------------- hand-computed values


def test_hand_computed_ece_mce_and_table():
    P = [[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
    y = [0, 1, 1, 0]
    assert ece(P, y, n_bins=10) == pytest.approx((2 * 0.4 + 0.2 + 0.4) / 4, abs=1e-15)
    assert mce(P, y, n_bins=10) == pytest.approx(0.4, abs=1e-15)
    table = reliability_table(P, y, n_bins=10)
    assert table.count.tolist() == [0] * 6 + [1, 0, 1, 2]
    np.testing.assert_allclose(table.accuracy[[6, 8, 9]], [1.0, 1.0, 0.5])
    np.testing.assert_allclose(table.confidence[[6, 8, 9]], [0.6, 0.8, 0.9])
    assert np.isnan(table.accuracy[:6]).all() and np.isnan(table.ci_low[7])
    assert table.n_distinct == 3 and table.n_bins == 10


def test_hand_computed_brier_nll_classwise():
    P = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]
    y = [0, 1]
    # (0.09 + 0.04 + 0.01 + 0.01 + 0.81 + 0.64) / 2
    assert brier(P, y) == pytest.approx(0.8, abs=1e-15)
    assert nll(P, y) == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2, abs=1e-15)
    # Class 0: bins 7 (0.7, hit) and 1 (0.1, miss): (0.3 + 0.1) / 2; class 1: 0.2 and 0.1 in
    # bins 2 (miss) and 1 (hit): (0.2 + 0.9) / 2; class 2: 0.1 (miss) and 0.8 (miss): 0.45.
    expected = np.mean([0.2, 0.55, 0.45])
    assert classwise_ece(P, y, n_bins=10) == pytest.approx(expected, abs=1e-15)


def test_nll_clips_a_stated_zero():
    assert nll([[1.0, 0.0]], [1]) == pytest.approx(-np.log(np.finfo(float).eps))
    assert nll([[1.0, 0.0]], [1], eps=1e-3) == pytest.approx(-np.log(1e-3))
    assert nll([[1.0, 0.0]], [0]) == pytest.approx(0.0, abs=1e-15)


def test_debiased_ece_hand_computed():
    # One bin of 4 rows at 0.9 with 2 correct: (0.9 - 0.5)^2 - 0.25 / 3 = 0.0766...
    P = [[0.9, 0.1]] * 4
    y = [0, 0, 1, 1]
    expected = np.sqrt(0.4**2 - 0.25 / 3)
    assert debiased_ece(P, y, strategy="distinct") == pytest.approx(expected, abs=1e-15)
    # A bin of one row contributes nothing; a perfectly calibrated bin goes negative -> 0.
    assert debiased_ece([[0.9, 0.1]], [1], strategy="distinct") == 0.0


# ---------------------------------------------------------------- edge cases


def test_exact_zero_and_one_land_in_first_and_last_bins():
    P = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    table = reliability_table(P, [0, 1, 1], n_bins=4, class_index=0)
    assert table.count.tolist() == [1, 0, 0, 2]
    assert table.accuracy[0] == 0.0 and table.accuracy[3] == 0.5
    top = reliability_table(P, [0, 1, 1], n_bins=4)
    assert top.count.tolist() == [0, 0, 0, 3]
    assert ece(P, [0, 1, 1], n_bins=4) == pytest.approx(1 / 3)


@pytest.mark.parametrize("strategy", ["uniform", "quantile", "distinct"])
def test_all_rows_in_one_bin(strategy):
    P = [[0.7, 0.3]] * 10
    y = [0] * 6 + [1] * 4
    assert ece(P, y, strategy=strategy) == pytest.approx(0.1, abs=1e-15)
    assert mce(P, y, strategy=strategy) == pytest.approx(0.1, abs=1e-15)
    table = reliability_table(P, y, strategy=strategy)
    assert table.count.sum() == 10 and (table.count > 0).sum() == 1


def test_quantile_bins_never_split_ties():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.6, 0.8, 0.9, 0.95, 1.0], p=[0.1, 0.1, 0.6, 0.1, 0.1], size=1000)
    edges = quantile_edges(scores, 15)
    bins = assign_bins(scores, edges)
    for value in np.unique(scores):
        assert np.unique(bins[scores == value]).size == 1
    assert len(edges) - 1 < 15  # cuts inside the 0.9 run merged
    top = bins == bins.max()
    assert (scores[top] == 1.0).all() and top.sum() == (scores == 1.0).sum()


def test_quantile_bins_hold_equal_counts_without_ties():
    scores = np.random.default_rng(1).random(1500)
    counts = np.bincount(assign_bins(scores, quantile_edges(scores, 15)))
    assert counts.tolist() == [100] * 15


def test_distinct_keeps_neighbouring_floats_apart():
    scores = np.array([0.7, 0.7000000000000001, 0.7, 0.9])
    edges = distinct_edges(scores)
    assert assign_bins(scores, edges).tolist() == [0, 1, 0, 2]


def test_more_quantile_bins_than_rows():
    P, y = dirichlet(5, 3)
    assert reliability_table(P, y, n_bins=50, strategy="quantile").n_bins <= 5


def test_one_dimensional_scores_are_class_one_probabilities():
    p = np.array([0.1, 0.6, 0.5, 0.95])
    y = np.array([0, 1, 1, 0])
    two = np.column_stack([1 - p, p])
    for metric in (ece, mce, brier, nll, accuracy, classwise_ece):
        assert metric(p, y) == pytest.approx(metric(two, y), abs=1e-15)
    assert accuracy(p, y) == 0.5  # 0.5 is a tie: predicts class 0


# ---------------------------------------------------------------- invariances


@pytest.mark.parametrize(
    "metric",
    [ece, mce, accuracy, brier, nll, classwise_ece, functools.partial(debiased_ece, n_bins=5)],
)
def test_invariant_to_permuting_classes_with_labels_and_rows(metric):
    P, y = dirichlet(400, 5, seed=4)
    rng = np.random.default_rng(5)
    classes, rows = rng.permutation(5), rng.permutation(400)
    inverse = np.argsort(classes)
    assert metric(P[:, classes], inverse[y]) == pytest.approx(metric(P, y), abs=1e-12)
    assert metric(P[rows], y[rows]) == pytest.approx(metric(P, y), abs=1e-12)


def test_input_layout_does_not_matter():
    P, y = dirichlet(1000, 6, seed=6)
    expected = ece(P, y)
    assert ece(np.asfortranarray(P), y) == expected
    assert ece(P.tolist(), y.tolist()) == pytest.approx(expected, abs=1e-15)
    assert ece(P.astype(np.float32).astype(np.float64), y) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- differential tests


@pytest.mark.parametrize("n_bins", [5, 10, 15])
@pytest.mark.parametrize("k", [2, 3, 10])
def test_ece_matches_uncertainty_calibration(k, n_bins):
    P, y = dirichlet(2000, k, seed=k * n_bins)
    assert ece(P, y, n_bins=n_bins) == pytest.approx(uc.get_ece(P, y, num_bins=n_bins), abs=TOL)
    expected_em = uc.get_ece_em(P, y, num_bins=n_bins)
    assert ece(P, y, n_bins=n_bins, strategy="quantile") == pytest.approx(expected_em, abs=TOL)
    expected_cw = uc.get_ece(P, y, num_bins=n_bins, mode="marginal")
    assert classwise_ece(P, y, n_bins=n_bins) == pytest.approx(expected_cw, abs=TOL)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_mce_matches_uncertainty_calibration_bins(strategy):
    P, y = dirichlet(2000, 4, seed=7)
    conf, correct = naive_top_label(P, y)
    scheme = uc.get_equal_prob_bins if strategy == "uniform" else uc.get_equal_bins
    binned = uc.bin(list(zip(conf, correct.astype(float), strict=True)), scheme(conf, num_bins=15))
    expected = max(abs(uc.difference_mean(b)) for b in binned if len(b))
    assert mce(P, y, strategy=strategy) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_debiased_ece_matches_uncertainty_calibration(seed):
    P, y = dirichlet(3000, 4, seed=seed, sharp=0.3)
    assert not uc.is_discrete(P)  # so it bins into 15 equal-mass bins
    expected = uc.get_calibration_error(P, y, p=2, debias=True, mode="top-label")
    assert debiased_ece(P, y) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("n_bins", [5, 10, 20])
@pytest.mark.parametrize("k", [2, 5])
def test_reliability_table_matches_sklearn_calibration_curve(k, n_bins):
    P, y = dirichlet(3000, k, seed=n_bins + k)
    table = reliability_table(P, y, n_bins=n_bins)
    conf, correct = naive_top_label(P, y)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=n_bins)
    filled = table.count > 0
    np.testing.assert_allclose(table.accuracy[filled], prob_true, rtol=0, atol=TOL)
    np.testing.assert_allclose(table.confidence[filled], prob_pred, rtol=0, atol=TOL)
    if k == 2:  # the positive-class curve itself
        table = reliability_table(P, y, n_bins=n_bins, class_index=1)
        prob_true, prob_pred = calibration_curve(y, P[:, 1], n_bins=n_bins)
        filled = table.count > 0
        np.testing.assert_allclose(table.accuracy[filled], prob_true, rtol=0, atol=TOL)
        np.testing.assert_allclose(table.confidence[filled], prob_pred, rtol=0, atol=TOL)


@pytest.mark.parametrize("k", [2, 3, 7])
def test_brier_and_nll_match_sklearn(k):
    P, y = dirichlet(1000, k, seed=k)
    labels = list(range(k))
    assert nll(P, y) == pytest.approx(log_loss(y, P, labels=labels), abs=TOL)
    expected = brier_score_loss(y, P, labels=labels, scale_by_half=False)
    assert brier(P, y) == pytest.approx(expected, abs=TOL)
    if k == 2:
        assert brier(P, y) == pytest.approx(2 * brier_score_loss(y, P[:, 1]), abs=TOL)


@pytest.mark.parametrize("strategy", ["uniform", "quantile", "distinct"])
@pytest.mark.parametrize("seed", range(3))
def test_class_ece_is_the_weighted_gap_of_the_class_table(seed, strategy):
    P, y = dirichlet(500, 4, seed=seed)
    errors = []
    for k in range(4):
        table = reliability_table(P, y, n_bins=10, strategy=strategy, class_index=k)
        full = table.count > 0
        gaps = np.abs(table.accuracy[full] - table.confidence[full])
        expected = np.sum(table.count[full] * gaps) / table.count.sum()
        errors.append(class_ece(P, y, k, n_bins=10, strategy=strategy))
        assert errors[-1] == pytest.approx(expected, abs=TOL)
    assert np.mean(errors) == pytest.approx(
        classwise_ece(P, y, n_bins=10, strategy=strategy), abs=TOL
    )
    with pytest.raises(ConfigurationError, match="class_index must be an integer in"):
        class_ece(P, y, True)


def test_clopper_pearson_matches_scipy_binomtest():
    P, y = verbalized(600, seed=8)
    table = reliability_table(P, y, n_bins=10, confidence=0.9)
    for b in np.flatnonzero(table.count):
        hits = round(table.accuracy[b] * table.count[b])
        ci = stats.binomtest(hits, int(table.count[b])).proportion_ci(0.9, method="exact")
        assert table.ci_low[b] == pytest.approx(ci.low, abs=TOL)
        assert table.ci_high[b] == pytest.approx(ci.high, abs=TOL)


@pytest.mark.parametrize("metric", [accuracy, ece, brier])
def test_bootstrap_matches_scipy(metric):
    P, y = dirichlet(120, 3, seed=9)
    result = bootstrap_ci(metric, P, y, n_boot=200, confidence=0.9, random_state=11)
    # scipy resamples one axis of 1-D samples: resample row numbers and index with them.
    expected = stats.bootstrap(
        (np.arange(len(y)),),
        lambda rows: metric(P[rows], y[rows]),
        vectorized=False,
        n_resamples=200,
        batch=1,
        confidence_level=0.9,
        method="percentile",
        rng=np.random.default_rng(11),
    ).confidence_interval
    assert isinstance(result, BootstrapCI)
    assert result.estimate == metric(P, y)
    assert result.low == pytest.approx(expected.low, abs=TOL)
    assert result.high == pytest.approx(expected.high, abs=TOL)


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    P, y = dirichlet(300, 4, seed=12)
    first = bootstrap_ci(ece, P, y, n_boot=100, random_state=3)
    assert first == bootstrap_ci(ece, P, y, n_boot=100, random_state=3)
    assert first.low < first.estimate < first.high
    constant = bootstrap_ci(accuracy, [[0.9, 0.1]] * 20, [0] * 20, n_boot=50, random_state=0)
    assert tuple(constant) == (1.0, 1.0, 1.0)


RECORDED = {task.name: task for task in load_recorded_tasks()}


@pytest.mark.skipif(
    find_recorded_data() is None, reason="recorded llm-confidence data not on this machine"
)
@pytest.mark.parametrize("task", sorted(RECORDED))
def test_recorded_answers_match_uncertainty_calibration(task):
    recorded = RECORDED[task]
    # Renormalised rows hold neighbouring floats (0.6 and 0.6000000000000001) that
    # uncertainty-calibration's midpoint bins sometimes merge: snap them to the stated values.
    P, y = np.round(recorded.P, 9), recorded.y
    conf = P.max(axis=1)
    # 13 bins: no stated value sits on an interior edge, where the peers' (a, b] bins differ.
    assert not np.isin(conf, uniform_edges(13)[1:-1]).any()
    assert ece(P, y, n_bins=13) == pytest.approx(uc.get_ece(P, y, num_bins=13), abs=TOL)
    assert uc.is_discrete(P)  # so uncertainty-calibration bins one value per bin
    expected = uc.get_calibration_error(P, y, p=2, debias=True, mode="top-label")
    assert debiased_ece(P, y, strategy="distinct") == pytest.approx(expected, abs=TOL)
    assert reliability_table(P, y, strategy="distinct").n_distinct == np.unique(conf).size


# ---------------------------------------------------------------- bad input


def bad_rows(n=10_000):
    P, y = dirichlet(n, 4, seed=13)
    return P.copy(), y


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda P: P.__setitem__((9_999, 2), np.nan), "row 9999 contains NaN"),
        (lambda P: P.__setitem__((5_000, 0), np.inf), "row 5000 contains NaN or infinity"),
        (lambda P: P.__setitem__((4_097, 1), -0.1), "row 4097 has a negative value"),
        (lambda P: P.__setitem__((123, 3), P[123, 3] + 0.01), "row 123 sums to"),
    ],
)
@pytest.mark.parametrize("metric", [ece, mce, accuracy, reliability_table, brier])
def test_bad_probability_rows_are_named(metric, change, match):
    P, y = bad_rows()
    change(P)
    with pytest.raises(InvalidInputError, match=match):
        metric(P, y)


@pytest.mark.parametrize(
    "P, y, match",
    [
        ([[0.5, 0.5]], [2], r"y\[0\] = 2 is outside the class indices 0..1"),
        ([[0.5, 0.5]], [0, 1], "y has 2 labels but there are 1 rows"),
        ([[1.0]], [0], "at least 2 columns"),
        (np.zeros((0, 3)), [], "no rows"),
        ([[0.5, "a"]], [0], "must be an array of numbers"),
        ([1.2], [1], "negative value"),
    ],
)
def test_bad_input_errors(P, y, match):
    for metric in (ece, accuracy, brier, nll, classwise_ece):
        with pytest.raises(InvalidInputError, match=match):
            metric(P, y)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda P, y: ece(P, y, n_bins=0), "n_bins must be an integer >= 1, got 0"),
        (lambda P, y: ece(P, y, n_bins=2.5), "n_bins must be an integer >= 1"),
        (lambda P, y: mce(P, y, n_bins=True), "n_bins must be an integer >= 1, got True"),
        (lambda P, y: ece(P, y, strategy="equal"), "strategy must be one of"),
        (lambda P, y: reliability_table(P, y, confidence=1.5), r"confidence must be .*\(0, 1\)"),
        (lambda P, y: reliability_table(P, y, class_index=2), r"class_index must be None or an"),
        (lambda P, y: nll(P, y, eps=0), r"eps must be a number in \(0, 0.5\)"),
        (lambda P, y: bootstrap_ci(ece, P, y, n_boot=0), "n_boot must be an integer >= 1"),
        (lambda P, y: bootstrap_ci("ece", P, y), "metric must be callable"),
        (lambda P, y: bootstrap_ci(ece, P, y, confidence=0.0), "confidence must be"),
    ],
)
def test_bad_parameters(call, match):
    with pytest.raises(ConfigurationError, match=match):
        call([[0.5, 0.5], [0.2, 0.8]], [0, 1])


# ---------------------------------------------------------------- memory


def test_ece_allocates_little_beyond_the_input():
    P, y = dirichlet(200_000, 10, seed=14)
    y = y.astype(np.int64)
    tracemalloc.start()
    try:
        ece(P, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * P.nbytes
