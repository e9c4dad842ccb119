"""Split-conformal label sets: the quantile, the scores, the coverage promise, MAPIE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded import load_recorded_task
from scipy.stats import binom

from verbcal.calibrators import TemperatureScaling
from verbcal.conformal import (
    ConformalSets,
    conformal_quantile,
    coverage,
    nonconformity,
    summarize_sets,
)
from verbcal.errors import ConfigurationError, InvalidInputError

# bench/ is on the test path (pyproject): the benchmark's MAPIE adapter and coverage law.
from conformal import coverage_floor, mapie_sets, split  # noqa: E402  isort: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.floats(0.01, 0.99))
def test_quantile_is_the_finite_sample_order_statistic(scores, alpha):
    n = len(scores)
    q = conformal_quantile(scores, alpha)
    rank = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    if rank > n:
        assert q == math.inf
    else:
        assert q == sorted(scores)[rank - 1]
        # At least ceil((n + 1)(1 - alpha)) scores are <= q: a new exchangeable score is too
        # with probability >= 1 - alpha.
        assert sum(s <= q for s in scores) >= rank


def test_quantile_by_hand_and_at_integer_ranks():
    assert conformal_quantile([0.1, 0.4, 0.2, 0.3], 0.25) == 0.4
    # (9 + 1) * 0.9 = 9.000000000000002 in floats: the rank is 9, not 10 (-> inf).
    assert conformal_quantile(np.arange(9) / 10, 0.1) == 0.8


def test_scores_by_hand():
    P = np.array([[0.5, 0.2, 0.3]])
    np.testing.assert_allclose(nonconformity(P, "lac"), [[0.5, 0.8, 0.7]])
    np.testing.assert_allclose(nonconformity(P, "aps"), [[0.5, 1.0, 0.8]])
    np.testing.assert_allclose(nonconformity(P, "raps", lam=0.5, k_reg=1), [[0.5, 2.0, 1.3]])
    np.testing.assert_allclose(nonconformity(P, "aps", u=[1.0]), [[0.0, 0.8, 0.5]])
    # Ties are ranked by column, as a stable sort does.
    np.testing.assert_allclose(nonconformity([[0.4, 0.4, 0.2]], "aps"), [[0.4, 0.8, 1.0]])


def test_sets_are_the_labels_within_the_threshold():
    P = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    cs = ConformalSets(alpha=0.5, score="lac").fit(P, [0, 1])
    # LAC scores of the true labels: 0.3, 0.65; rank ceil(3 * 0.5) = 2 -> q = 0.65.
    assert cs.quantile_ == pytest.approx(0.65)
    sets = cs.predict_sets(P)
    assert sets.tolist() == [[True, False, False], [True, True, False]]
    assert coverage(sets, [0, 1]) == 1.0


def test_aps_sets_are_prefixes_of_the_ranking():
    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(5) * 0.5, 400)
    y = np.array([rng.choice(5, p=p) for p in P])
    sets = ConformalSets(0.1, "aps", random_state=1).fit(P[:200], y[:200]).predict_sets(P[200:])
    order = np.argsort(-P[200:], axis=1, kind="stable")
    ranked = np.take_along_axis(sets, order, axis=1)
    # Once a label is left out, every less likely one is too.
    assert (np.diff(ranked.astype(int), axis=1) <= 0).all()


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_class_conditional_sets_cover_every_class(score):
    rng = np.random.default_rng(7)
    n = 6000
    P = rng.dirichlet([2, 1, 0.5], n)
    # A miscalibrated model: class 2 is much more frequent than P says.
    logits = np.log(P) + np.array([0.0, 0.0, 1.5])
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.uniform(size=n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    cs = ConformalSets(0.1, score, class_conditional=True, random_state=0).fit(P[:3000], y[:3000])
    summary = summarize_sets(cs.predict_sets(P[3000:]), y[3000:])
    for k, cov in summary.class_coverage.items():
        n_k = int((y[3000:] == k).sum())
        assert cov >= binom.ppf(0.001, n_k, 0.9) / n_k, (k, cov)
    # Marginal sets under-cover the class the model under-predicts.
    marginal = ConformalSets(0.1, score, random_state=0).fit(P[:3000], y[:3000])
    worst = summarize_sets(marginal.predict_sets(P[3000:]), y[3000:]).class_coverage
    assert min(worst.values()) < min(summary.class_coverage.values())


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_coverage_over_100_splits_of_recorded_answers(recorded_data, score):
    """sciq (gpt-4o, 4 options): every split's coverage within its 99% band.

    Given the calibration rows, a split's covered count is binomial; the
    conformal threshold makes its rate Beta(n + 1 - l, l), so the count is
    beta-binomial (bench/conformal.py). At most binom.ppf(0.999, 100, 0.005) = 3
    splits may fall below the 0.5% quantile, and the mean coverage lies within
    the binomial 99% band of the pooled rows around [1 - alpha, 1 - alpha + 1/(n + 1)].
    """
    alpha = 0.1
    task = load_recorded_task(recorded_data / "sciq__gpt-4o.jsonl")
    covs = []
    for seed in range(100):
        fit, cal, test = split(len(task.y), seed)
        Q = TemperatureScaling().fit(task.P[fit], task.y[fit]).predict_proba(task.P)
        cs = ConformalSets(alpha, score, random_state=seed).fit(Q[cal], task.y[cal])
        covs.append(coverage(cs.predict_sets(Q[test]), task.y[test]))
    covs = np.array(covs)
    floor = coverage_floor(len(cal), len(test), alpha)
    assert (covs < floor).sum() <= binom.ppf(0.999, 100, 0.005)
    pooled = 100 * len(test)
    half_width = 2.576 * math.sqrt(alpha * (1 - alpha) / pooled)
    assert 1 - alpha - half_width <= covs.mean()
    if score != "lac":  # LAC on coarse stated values has ties, which only add coverage
        assert covs.mean() <= 1 - alpha + 1 / (len(cal) + 1) + half_width


@pytest.mark.parametrize("score", ["lac", "aps", "raps"])
def test_sets_no_larger_than_mapies_for_the_same_score(recorded_data, score):
    pytest.importorskip("mapie", reason="MAPIE is a benchmark peer (the bench extra)")
    task = load_recorded_task(recorded_data / "sciq__claude-3-7-sonnet-20250219.jsonl")
    ours_sizes, theirs_sizes = [], []
    for seed in range(10):
        fit, cal, test = split(len(task.y), seed)
        Q = TemperatureScaling().fit(task.P[fit], task.y[fit]).predict_proba(task.P)
        cs = ConformalSets(0.1, score, random_state=seed).fit(Q[cal], task.y[cal])
        ours = cs.predict_sets(Q[test])
        theirs = mapie_sets(Q[cal], task.y[cal], Q[test], 0.1, score, seed)
        ours_sizes.append(ours.sum(axis=1).mean())
        theirs_sizes.append(theirs.sum(axis=1).mean())
        if score == "lac":  # the same rule: MAPIE only adds labels within 1e-8 of the threshold
            assert (ours <= theirs).all()
            near = np.abs((1 - Q[test]) - cs.quantile_) <= 1e-8
            assert (ours == theirs)[~near].all()
    assert np.mean(ours_sizes) <= np.mean(theirs_sizes)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: ConformalSets(alpha=1.0).fit([[0.5, 0.5]], [0]), ConfigurationError, "alpha"),
        (lambda: ConformalSets(score="x").fit([[0.5, 0.5]], [0]), ConfigurationError, "score"),
        (lambda: ConformalSets().predict_sets([[0.5, 0.5]]), InvalidInputError, "call fit"),
        (
            lambda: ConformalSets().fit([[0.5, 0.5]], [0]).predict_sets([[0.2, 0.3, 0.5]]),
            InvalidInputError,
            "columns",
        ),
        (lambda: nonconformity([[0.5, 0.5]], "aps", u=[2.0]), InvalidInputError, "u must"),
        (lambda: conformal_quantile([], 0.1), InvalidInputError, "non-empty"),
        (lambda: ConformalSets().fit([[0.5, 0.6]], [0]), InvalidInputError, "sums to"),
    ],
)
def test_bad_input_names_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_too_few_rows_give_full_sets():
    cs = ConformalSets(alpha=0.05).fit([[0.9, 0.1]] * 5, [0] * 5)
    assert cs.quantile_ == math.inf and cs.predict_sets([[0.99, 0.01]]).all()
