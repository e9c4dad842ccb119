"""Thresholds with a finite-sample guarantee (verbcal.guarantee, operating_point(guarantee=...))."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded_predictions import write_recorded_predictions
from scipy.stats import beta, binomtest

from verbcal.cli import main
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.guarantee import (
    lower_bound,
    min_trials,
    precision_threshold,
    recall_threshold,
    rows_for_bound,
)
from verbcal.thresholds import operating_point


@pytest.mark.parametrize(
    ("k", "n", "g"), [(0, 5, 0.9), (3, 10, 0.95), (10, 10, 0.8), (97, 120, 0.99)]
)
def test_lower_bound_is_the_one_sided_clopper_pearson_bound(k, n, g):
    expected = 0.0 if k == 0 else beta.ppf(1 - g, k, n - k + 1)
    assert lower_bound(k, n, g)[0] == pytest.approx(expected, abs=1e-9)
    if k > 0:  # an independent implementation: scipy's exact binomial test interval
        # binomtest's two-sided interval at level 2g - 1 has the same lower end.
        ci = binomtest(k, n).proportion_ci(confidence_level=2 * g - 1, method="exact")
        assert lower_bound(k, n, g)[0] == pytest.approx(ci.low, abs=1e-9)


def test_min_trials_is_the_first_count_whose_perfect_bound_reaches_the_target():
    n = min_trials(0.9, 0.95)
    assert lower_bound(n, n, 0.95)[0] >= 0.9 > lower_bound(n - 1, n - 1, 0.95)[0]


def test_rows_for_bound_is_the_smallest_factor():
    f = rows_for_bound(0.95, 100, 0.9, 0.95)
    assert lower_bound(0.95 * 100 * f, 100 * f, 0.95)[0] >= 0.9 - 1e-12
    assert lower_bound(0.95 * 100 * f * 0.99, 100 * f * 0.99, 0.95)[0] < 0.9
    assert math.isinf(rows_for_bound(0.9, 100, 0.9, 0.95))


@pytest.mark.parametrize("bad", [0.5, 1.0, 0.3, True, "0.9", float("nan")])
def test_guarantee_must_be_a_probability_above_one_half(bad):
    with pytest.raises(ConfigurationError, match="guarantee"):
        precision_threshold([0.9, 0.8], [True, False], 0.8, bad)


def test_target_one_cannot_be_guaranteed():
    with pytest.raises(ConfigurationError, match="target of 1"):
        operating_point([0.9, 0.8], [1, 0], 1, target_precision=1.0, guarantee=0.9)


def test_bad_scores_name_the_problem():
    with pytest.raises(InvalidInputError, match="same length"):
        precision_threshold([0.9, 0.8], [True], 0.8, 0.9)
    with pytest.raises(InvalidInputError, match="boolean"):
        precision_threshold([0.9, 0.8], [1, 0], 0.8, 0.9)
    with pytest.raises(InvalidInputError, match="no positive"):
        recall_threshold([0.9, 0.8], [False, False], 0.8, 0.9)


#: The population: scores uniform on 0.00, 0.01, ..., 1.00, and P(positive | s) = s ** 0.7.
GRID = np.arange(101) / 100
WEIGHT = GRID**0.7


def _population(rng, n):
    s = rng.choice(GRID, n)
    return s, rng.uniform(0, 1, n) < s**0.7


def _true_precision(t):
    chosen = t - 1e-12 <= GRID
    return WEIGHT[chosen].mean()


def _true_recall(t):
    return WEIGHT[t - 1e-12 <= GRID].sum() / WEIGHT.sum()


@pytest.mark.parametrize(("target", "g"), [(0.85, 0.9), (0.9, 0.8)])
def test_precision_guarantee_holds_over_repeated_calibration_samples(target, g):
    """The promise is about the draw of calibration rows: over 300 draws it fails <= 1 - g."""
    rng = np.random.default_rng(0)
    failures = met = plain_failures = 0
    for _ in range(300):
        s, pos = _population(rng, 300)
        result = precision_threshold(s, pos, target, g)
        if result.met:
            met += 1
            failures += _true_precision(result.threshold) < target
        plain = operating_point(s, pos.astype(int), 1, target_precision=target)
        plain_failures += _true_precision(plain.threshold) < target
    assert met > 100  # the test has power here
    assert plain_failures > 90  # and teeth: without the guarantee the target is often missed
    # Binomial(300, 1 - g) exceeds this with probability < 0.1%.
    assert failures <= binom_limit(300, 1 - g)


def binom_limit(n, p):
    from scipy.stats import binom

    return binom.ppf(0.999, n, p)


def test_recall_guarantee_holds_over_repeated_calibration_samples():
    rng = np.random.default_rng(1)
    target, g = 0.8, 0.9
    failures = 0
    for _ in range(300):
        s, pos = _population(rng, 300)
        result = recall_threshold(s, pos, target, g)
        assert result.met
        failures += _true_recall(result.threshold) < target
    assert failures <= binom_limit(300, 1 - g)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 20), min_size=5, max_size=80),
    st.lists(st.booleans(), min_size=80, max_size=80),
    st.floats(0.5, 0.95),
    st.floats(0.6, 0.99),
)
def test_every_guaranteed_threshold_passed_its_test(levels, outcomes, target, g):
    scores = np.array(levels) / 20
    success = np.array(outcomes[: len(levels)])
    result = precision_threshold(scores, success, target, g)
    if result.met:
        chosen = scores >= result.threshold
        assert result.trials == chosen.sum() and result.successes == success[chosen].sum()
        assert lower_bound(result.successes, result.trials, g)[0] >= target
    else:
        assert result.threshold is None
        if result.rows_needed is not None:
            assert result.rows_needed > result.n_rows or result.trials < min_trials(target, g)


def test_operating_point_guarantee_off_is_unchanged():
    p, y = [0.9, 0.9, 0.8, 0.6, 0.6, 0.3], [1, 0, 1, 1, 0, 0]
    plain = operating_point(p, y, 1, target_precision=0.6)
    assert plain.guarantee is None and plain.bound is None and plain.rows_needed is None


def test_operating_point_guarantee_is_stricter_than_the_plain_threshold():
    rng = np.random.default_rng(3)
    s, pos = _population(rng, 2000)
    plain = operating_point(s, pos.astype(int), 1, target_precision=0.85)
    sure = operating_point(s, pos.astype(int), 1, target_precision=0.85, guarantee=0.95)
    assert sure.met and sure.guarantee == 0.95
    assert sure.threshold >= plain.threshold and sure.recall <= plain.recall
    assert sure.bound >= 0.85
    assert "guarantees" in str(sure)


def test_operating_point_says_how_many_rows_would_do():
    p, y = [0.9] * 25 + [0.6] * 10, [1] * 24 + [0] * 11
    op = operating_point(p, y, 1, target_precision=0.9, guarantee=0.9)
    assert not op.met and op.rows_needed == 75
    assert "75 labelled rows" in str(op)
    # 75 rows at the same rates do pass.
    op = operating_point(
        [0.9] * 75 + [0.6] * 30, [1] * 72 + [0] * 33, 1, target_precision=0.9, guarantee=0.9
    )
    assert op.met


def test_cli_threshold_guarantee_on_recorded_answers(recorded_data, tmp_path, capsys):
    preds = write_recorded_predictions(recorded_data / "boolq__gpt-4o.jsonl", tmp_path / "p.jsonl")
    cal = tmp_path / "cal.json"
    assert main(["fit", "--preds", str(preds), "--method", "auto", "--out", str(cal)]) == 0
    capsys.readouterr()
    args = ["threshold", "--preds", str(preds), "--calibrator", str(cal), "--positive", "True"]
    assert main([*args, "--target-precision", "0.9", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*args, "--target-precision", "0.9", "--guarantee", "0.95", "--json"]) == 0
    sure = json.loads(capsys.readouterr().out)
    assert sure["met"] and sure["guarantee"] == 0.95 and sure["lower_bound"] >= 0.9
    assert sure["threshold"] >= plain["threshold"]
    # Precision 0.97 cannot be guaranteed from ~1600 rows of this model: exit 1, with advice.
    assert main([*args, "--target-precision", "0.97", "--guarantee", "0.95", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["met"] and "CANNOT GUARANTEE" in out["explanation"]
    assert main([*args, "--target-precision", "0.9", "--guarantee", "1.5"]) == 2
    assert "guarantee" in capsys.readouterr().err


def test_operating_point_recall_guarantee():
    rng = np.random.default_rng(4)
    s, pos = _population(rng, 1500)
    plain = operating_point(s, pos.astype(int), 1, target_recall=0.8)
    sure = operating_point(s, pos.astype(int), 1, target_recall=0.8, guarantee=0.9)
    assert sure.met and sure.threshold <= plain.threshold and sure.recall >= 0.8
    direct = recall_threshold(s, pos, 0.8, 0.9)
    assert sure.threshold == direct.threshold and sure.bound == direct.bound
    # The bound is the one-sided Clopper-Pearson bound of the positives found.
    found = int((s[pos] >= sure.threshold).sum())
    assert sure.bound == pytest.approx(beta.ppf(0.1, found, pos.sum() - found + 1), abs=1e-9)
