"""Tests for verbcal.thresholds: operating points, curves, predicted precision/recall."""

from __future__ import annotations

import numpy as np
import pytest
from recorded import find_recorded_data, load_recorded_tasks
from scipy import stats
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.thresholds import (
    clopper_pearson,
    operating_point,
    operating_point_from_probabilities,
    operating_points,
    precision_recall_at,
    precision_recall_curve,
    predicted_precision,
    predicted_recall,
)

# A small case worked by hand. Scores of the positive class, and whether each row is positive:
#   threshold  predicted  true pos.  precision  recall
#   0.9        2          1          1/2        1/3
#   0.8        3          2          2/3        2/3
#   0.6        5          3          3/5        1
#   0.3        6          3          1/2        1
HAND_SCORES = np.array([0.9, 0.9, 0.8, 0.6, 0.6, 0.3])
HAND_Y = np.array([1, 0, 1, 1, 0, 0])


def random_binary(seed: int, n: int = 80, coarse: bool = True):
    """Positive-class scores (coarse grids have many ties) and labels loosely following them."""
    rng = np.random.default_rng(seed)
    if coarse:
        scores = rng.choice(np.round(np.arange(0.0, 1.0001, 0.1), 1), size=n)
    else:
        scores = rng.random(n)
    y = (rng.random(n) < 0.2 + 0.6 * scores).astype(int)
    y[rng.integers(n)] = 1  # at least one positive row
    return scores, y


def random_multiclass(seed: int, n: int = 90, k: int = 3):
    """Coarse probability rows (multiples of 0.1) and labels in which every class occurs."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(10, np.full(k, 1.0 / k), size=n)
    P = counts / 10.0
    y = np.array([rng.choice(k, p=row) for row in P])
    y[:k] = np.arange(k)
    return P, y


# ----------------------------------------------------------------------------- hand-computed


@pytest.mark.parametrize(
    "target, expected",
    [
        # Both 0.8 and 0.6 meet precision 0.6; 0.6 has more recall.
        ({"target_precision": 0.6}, (True, 0.6, 0.6, 1.0, 5, 3)),
        ({"target_precision": 2 / 3}, (True, 0.8, 2 / 3, 2 / 3, 3, 2)),
        # Nothing reaches 0.7: the best achievable precision, 2/3, is reported.
        ({"target_precision": 0.7}, (False, 0.8, 2 / 3, 2 / 3, 3, 2)),
        ({"target_precision": 1.0}, (False, 0.8, 2 / 3, 2 / 3, 3, 2)),
        # Recall 0.5 is met at 0.8, 0.6 and 0.3; 0.8 has the highest precision.
        ({"target_recall": 0.5}, (True, 0.8, 2 / 3, 2 / 3, 3, 2)),
        ({"target_recall": 1 / 3}, (True, 0.8, 2 / 3, 2 / 3, 3, 2)),
        ({"target_recall": 1.0}, (True, 0.6, 0.6, 1.0, 5, 3)),
    ],
)
def test_operating_point_hand_computed(target, expected):
    op = operating_point(HAND_SCORES, HAND_Y, positive=1, **target)
    met, threshold, precision, recall, n_predicted, n_tp = expected
    assert op.met is met
    assert op.threshold == threshold
    assert op.precision == pytest.approx(precision, abs=1e-15)
    assert op.recall == pytest.approx(recall, abs=1e-15)
    assert (op.n_predicted, op.n_true_positive, op.n_positive, op.n_rows) == (
        n_predicted,
        n_tp,
        3,
        6,
    )
    assert op.precision_ci == clopper_pearson(n_tp, n_predicted)
    assert op.recall_ci == clopper_pearson(n_tp, 3)
    assert op.target == next(iter(target)).removeprefix("target_")
    assert op.target_value == next(iter(target.values()))


def test_unmet_target_is_said_in_words():
    op = operating_point(HAND_SCORES, HAND_Y, positive=1, target_precision=0.7)
    assert "CANNOT MEET" in str(op)
    assert "CANNOT" not in str(operating_point(HAND_SCORES, HAND_Y, 1, target_precision=0.6))


def test_precision_recall_curve_hand_computed():
    curve = precision_recall_curve(HAND_SCORES, HAND_Y, positive=1)
    np.testing.assert_array_equal(curve.thresholds, [0.3, 0.6, 0.8, 0.9])
    np.testing.assert_allclose(curve.precision, [1 / 2, 3 / 5, 2 / 3, 1 / 2], atol=1e-15)
    np.testing.assert_allclose(curve.recall, [1, 1, 2 / 3, 1 / 3], atol=1e-15)
    np.testing.assert_array_equal(curve.n_predicted, [6, 5, 3, 2])
    np.testing.assert_array_equal(curve.n_true_positive, [3, 3, 2, 1])
    assert curve.n_positive == 3
    total = HAND_SCORES.sum()  # 4.1
    np.testing.assert_allclose(
        curve.predicted_precision, [4.1 / 6, 3.8 / 5, 2.6 / 3, 1.8 / 2], atol=1e-15
    )
    np.testing.assert_allclose(
        curve.predicted_recall, [1.0, 3.8 / total, 2.6 / total, 1.8 / total], atol=1e-15
    )


@pytest.mark.parametrize(
    "threshold, precision, recall",
    [
        (0.0, 4.1 / 6, 1.0),
        (0.3, 4.1 / 6, 1.0),
        (0.5, 3.8 / 5, 3.8 / 4.1),  # between scores: same rows as 0.6
        (0.6, 3.8 / 5, 3.8 / 4.1),
        (0.85, 0.9, 1.8 / 4.1),
        (0.9, 0.9, 1.8 / 4.1),
    ],
)
def test_predicted_precision_and_recall_hand_computed(threshold, precision, recall):
    assert predicted_precision(HAND_SCORES, 1, threshold) == pytest.approx(precision, abs=1e-15)
    assert predicted_recall(HAND_SCORES, 1, threshold) == pytest.approx(recall, abs=1e-15)


def test_predicted_quantities_above_every_score_are_undefined_or_zero():
    assert np.isnan(predicted_precision(HAND_SCORES, 1, 0.95))
    assert predicted_recall(HAND_SCORES, 1, 0.95) == 0.0
    assert np.isnan(predicted_recall(np.zeros(4), 1, 0.5))


@pytest.mark.parametrize(
    "target, expected",
    [
        # Predicted precision at 0.9 / 0.8 / 0.6 / 0.3: 0.9, 0.8667, 0.76, 0.6833.
        ({"target_precision": 0.8}, (True, 0.8, 2.6 / 3, 3)),
        ({"target_precision": 0.76}, (True, 0.6, 0.76, 5)),
        ({"target_precision": 0.95}, (False, 0.9, 0.9, 2)),
        # Predicted recall at 0.9 / 0.8 / 0.6: 0.439, 0.634, 0.927.
        ({"target_recall": 0.6}, (True, 0.8, 2.6 / 3, 3)),
        ({"target_recall": 0.9}, (True, 0.6, 0.76, 5)),
        ({"target_recall": 1.0}, (True, 0.3, 4.1 / 6, 6)),
    ],
)
def test_operating_point_from_probabilities_hand_computed(target, expected):
    op = operating_point_from_probabilities(HAND_SCORES, positive=1, **target)
    met, threshold, precision, n_predicted = expected
    assert (op.met, op.threshold, op.n_predicted, op.n_rows) == (met, threshold, n_predicted, 6)
    assert op.predicted_precision == pytest.approx(precision, abs=1e-15)
    assert op.predicted_recall == pytest.approx(predicted_recall(HAND_SCORES, 1, threshold))


# ----------------------------------------------------------------------------- brute force


def brute_force(scores, is_positive, target, value, candidates):
    """Try every threshold in ``candidates`` directly and pick by the documented rules."""
    points = []
    for t in candidates:
        predicted = scores >= t
        if not predicted.any():
            continue
        tp = int((predicted & is_positive).sum())
        pp = int(predicted.sum())
        points.append({"precision": tp / pp, "recall": tp / is_positive.sum(), "pp": pp, "tp": tp})
    meets = [p for p in points if p[target] >= value]
    if meets and target == "precision":
        return True, max(meets, key=lambda p: (p["recall"], p["precision"]))
    if meets:
        return True, max(meets, key=lambda p: (p["precision"], p["recall"]))
    return False, max(points, key=lambda p: (p["precision"], p["recall"]))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("coarse", [True, False])
@pytest.mark.parametrize(
    "target, value",
    [
        ("precision", 0.5),
        ("precision", 0.75),
        ("precision", 0.95),
        ("recall", 0.3),
        ("recall", 0.9),
    ],
)
def test_operating_point_matches_brute_force(seed, coarse, target, value):
    scores, y = random_binary(seed, coarse=coarse)
    is_positive = y == 1
    # Every score, every midpoint between distinct scores, and 0: all thresholds that matter.
    distinct = np.unique(scores)
    candidates = np.r_[0.0, distinct, (distinct[:-1] + distinct[1:]) / 2]
    met, best = brute_force(scores, is_positive, target, value, candidates)

    op = operating_point(scores, y, positive=1, **{f"target_{target}": value})

    assert op.met is met
    assert (op.n_predicted, op.n_true_positive) == (best["pp"], best["tp"])
    assert op.precision == best["precision"]
    assert op.recall == best["recall"]
    # The threshold is a score, and it never splits a run of tied scores.
    assert op.threshold in scores
    assert op.n_predicted == int((scores >= op.threshold).sum())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "target, value", [("precision", 0.5), ("precision", 0.8), ("recall", 0.25), ("recall", 0.8)]
)
def test_operating_point_from_probabilities_matches_brute_force(seed, target, value):
    scores, _ = random_binary(seed)
    points = []
    for t in np.unique(scores):
        chosen = scores[scores >= t]
        points.append((chosen.mean(), chosen.sum() / scores.sum(), chosen.size, t))
    index = 0 if target == "precision" else 1
    meets = [p for p in points if p[index] >= value]
    if meets and target == "precision":
        best = max(meets, key=lambda p: (p[1], p[0]))
    else:
        best = max(meets or points, key=lambda p: (p[0], p[1]))

    op = operating_point_from_probabilities(scores, 1, **{f"target_{target}": value})

    assert op.met is bool(meets)
    assert (op.threshold, op.n_predicted) == (best[3], best[2])
    assert op.predicted_precision == pytest.approx(best[0], abs=1e-12)
    assert op.predicted_recall == pytest.approx(best[1], abs=1e-12)


# ----------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("coarse", [True, False])
def test_curve_agrees_with_sklearn_binary(seed, coarse):
    scores, y = random_binary(seed, n=300, coarse=coarse)
    curve = precision_recall_curve(scores, y, positive=1)
    precision, recall, thresholds = sk_precision_recall_curve(y, scores)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    np.testing.assert_allclose(curve.precision, precision[:-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, recall[:-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("positive", [0, 1, 2])
def test_curve_agrees_with_sklearn_one_vs_rest(seed, positive):
    P, y = random_multiclass(seed)
    curve = precision_recall_curve(P, y, positive=positive)
    precision, recall, thresholds = sk_precision_recall_curve(y == positive, P[:, positive])
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    np.testing.assert_allclose(curve.precision, precision[:-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, recall[:-1], rtol=0, atol=1e-12)


NAMES = ["cat", "dog", "eel"]


@pytest.mark.parametrize("seed", range(3))
def test_positive_is_a_label_of_labels_or_a_column_without_them(seed):
    P, y = random_multiclass(seed)
    by_name = operating_point(P, y, "eel", labels=NAMES, target_precision=0.6)
    by_index = operating_point(P, y, 2, target_precision=0.6)
    assert by_name.positive == "eel" and by_index.positive == 2
    assert (by_name.threshold, by_name.n_predicted) == (by_index.threshold, by_index.n_predicted)
    for call in (
        lambda pos, **kw: precision_recall_curve(P, y, pos, **kw).thresholds,
        lambda pos, **kw: predicted_precision(P, pos, 0.5, **kw),
        lambda pos, **kw: predicted_recall(P, pos, 0.5, **kw),
        lambda pos, **kw: (
            operating_point_from_probabilities(P, pos, target_recall=0.5, **kw).threshold
        ),
        lambda pos, **kw: precision_recall_at(P, y, pos, 0.5, **kw).precision,
    ):
        np.testing.assert_array_equal(call("dog", labels=NAMES), call(1))
    named = operating_points(P, y, target_precision=0.6, labels=NAMES)
    assert [op.positive for op in named] == NAMES


@pytest.mark.parametrize(
    ("positive", "labels", "match"),
    [
        ("fox", NAMES, r"positive label 'fox' is not one of \['cat', 'dog', 'eel'\]"),
        (1, NAMES, "positive label 1 is not one of"),
        ("dog", ["cat", "dog"], "labels has 2 names but P has 3 columns"),
        ("dog", None, "positive must be a label of labels"),
    ],
)
def test_unknown_positive_label(positive, labels, match):
    with pytest.raises(ConfigurationError, match=match):
        operating_point(P3, Y3, positive, labels=labels, target_precision=0.9)


@pytest.mark.parametrize("seed", range(4))
def test_precision_recall_at_counts_and_intervals(seed):
    P, y = random_multiclass(seed)
    threshold = 0.4
    rates = precision_recall_at(P, y, "dog", threshold, labels=NAMES, confidence=0.9)
    flagged, positive = P[:, 1] >= threshold, y == 1
    tp = int((flagged & positive).sum())
    assert (rates.n_predicted, rates.n_true_positive, rates.n_positive) == (
        flagged.sum(),
        tp,
        positive.sum(),
    )
    assert rates.precision == tp / flagged.sum() and rates.recall == tp / positive.sum()
    assert rates.precision_ci == clopper_pearson(tp, int(flagged.sum()), 0.9)
    assert rates.recall_ci == clopper_pearson(tp, int(positive.sum()), 0.9)


def test_precision_recall_at_with_nothing_flagged_has_no_precision():
    rates = precision_recall_at(P3, Y3, 0, 0.99)
    assert rates.n_predicted == 0 and rates.precision is None and rates.precision_ci is None
    assert rates.recall == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_curve_without_labels_is_the_predicted_half_of_the_labelled_curve(seed):
    P, y = random_multiclass(seed)
    labelled, unlabelled = precision_recall_curve(P, y, 0), precision_recall_curve(P, None, 0)
    assert unlabelled.precision is None and unlabelled.n_positive is None
    np.testing.assert_array_equal(unlabelled.thresholds, labelled.thresholds)
    np.testing.assert_array_equal(unlabelled.predicted_precision, labelled.predicted_precision)
    np.testing.assert_array_equal(unlabelled.predicted_recall, labelled.predicted_recall)


@pytest.mark.parametrize("seed", range(4))
def test_curve_predicted_values_agree_with_the_pointwise_functions(seed):
    P, y = random_multiclass(seed)
    curve = precision_recall_curve(P, y, positive=2)
    for i, t in enumerate(curve.thresholds):
        assert curve.predicted_precision[i] == pytest.approx(
            predicted_precision(P, 2, t), abs=1e-12
        )
        assert curve.predicted_recall[i] == pytest.approx(predicted_recall(P, 2, t), abs=1e-12)
    # A higher threshold keeps the rows with the higher scores: predicted precision cannot fall.
    assert (np.diff(curve.predicted_precision) >= -1e-12).all()
    assert (np.diff(curve.recall) <= 0).all()


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("seed", range(3))
def test_row_order_does_not_matter(seed):
    P, y = random_multiclass(seed)
    order = np.random.default_rng(seed).permutation(len(y))
    for target in ({"target_precision": 0.6}, {"target_recall": 0.7}):
        assert operating_points(P, y, **target) == operating_points(P[order], y[order], **target)


@pytest.mark.parametrize("seed", range(3))
def test_relabelling_classes_moves_the_operating_points_with_them(seed):
    P, y = random_multiclass(seed)
    perm = np.array([2, 0, 1])  # new column j holds old class perm[j]
    new_y = np.argsort(perm)[y]
    before = operating_points(P, y, target_precision=0.6)
    after = operating_points(P[:, perm], new_y, target_precision=0.6)
    for j, old in enumerate(perm):
        assert after[j].threshold == before[old].threshold
        assert (after[j].n_predicted, after[j].n_true_positive) == (
            before[old].n_predicted,
            before[old].n_true_positive,
        )


@pytest.mark.parametrize("seed", range(3))
def test_one_vs_rest_equals_the_binary_problem(seed):
    P, y = random_multiclass(seed)
    for k, op in enumerate(operating_points(P, y, target_recall=0.6)):
        binary = operating_point(P[:, k], (y == k).astype(int), positive=1, target_recall=0.6)
        assert op == operating_point(P, y, k, target_recall=0.6)
        assert (op.threshold, op.precision, op.recall, op.precision_ci) == (
            binary.threshold,
            binary.precision,
            binary.recall,
            binary.precision_ci,
        )


def test_one_column_and_two_columns_agree():
    two = np.column_stack([1 - HAND_SCORES, HAND_SCORES])
    one = operating_point(HAND_SCORES, HAND_Y, 1, target_precision=0.6)
    assert operating_point(two, HAND_Y, 1, target_precision=0.6) == one
    # Swapping the columns and the labels: class 0 is now the positive one.
    swapped = operating_point(two[:, ::-1], 1 - HAND_Y, 0, target_precision=0.6)
    assert (swapped.threshold, swapped.precision, swapped.recall) == (0.6, 0.6, 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_a_recall_target_is_always_met_on_labelled_rows(seed):
    P, y = random_multiclass(seed)
    assert all(op.met for op in operating_points(P, y, target_recall=1.0))


def test_renormalize_divides_rows_first():
    raw = np.array([[0.8, 0.4], [0.2, 0.2], [0.1, 0.3]])
    y = [0, 1, 1]
    got = operating_point(raw, y, 1, target_recall=0.5, renormalize=True)
    expected = operating_point(raw / raw.sum(axis=1, keepdims=True), y, 1, target_recall=0.5)
    assert got == expected


# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("k, n", [(0, 1), (0, 7), (3, 3), (1, 2), (7, 20), (450, 500)])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_clopper_pearson_agrees_with_scipy_and_its_definition(k, n, confidence):
    low, high = clopper_pearson(k, n, confidence)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    alpha = 1 - confidence
    # Each bound is the proportion at which k (or a more extreme count) has probability alpha / 2.
    if k > 0:
        assert stats.binom.sf(k - 1, n, low) == pytest.approx(alpha / 2, abs=1e-9)
    if k < n:
        assert stats.binom.cdf(k, n, high) == pytest.approx(alpha / 2, abs=1e-9)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_clopper_pearson_edges_in_closed_form(n):
    assert clopper_pearson(0, n, 0.9) == pytest.approx((0.0, 1 - 0.05 ** (1 / n)), abs=1e-12)
    assert clopper_pearson(n, n, 0.9) == pytest.approx((0.05 ** (1 / n), 1.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_intervals_contain_the_estimates_and_widen_with_confidence(seed):
    P, y = random_multiclass(seed)
    narrow_points = operating_points(P, y, target_precision=0.5, confidence=0.8)
    wide_points = operating_points(P, y, target_precision=0.5, confidence=0.99)
    for narrow, wide in zip(narrow_points, wide_points, strict=True):
        assert narrow.precision_ci[0] <= narrow.precision <= narrow.precision_ci[1]
        assert narrow.recall_ci[0] <= narrow.recall <= narrow.recall_ci[1]
        assert wide.precision_ci[0] <= narrow.precision_ci[0]
        assert wide.precision_ci[1] >= narrow.precision_ci[1]


# ----------------------------------------------------------------------------- calibrated data


def calibrated_sample(seed: int, n: int = 200_000):
    """Coarse scores and labels drawn from them: perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    scores = rng.choice(np.round(np.arange(0.05, 1.0, 0.05), 2), size=n)
    y = (rng.random(n) < scores).astype(int)
    return scores, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.8, 0.95])
def test_predicted_precision_and_recall_match_realised_on_calibrated_data(seed, threshold):
    scores, y = calibrated_sample(seed)
    chosen = scores >= threshold
    variance = scores * (1 - scores)
    tp, found_elsewhere = y[chosen].sum(), y[~chosen].sum()
    realised_precision = tp / chosen.sum()
    realised_recall = tp / (tp + found_elsewhere)

    # Binomial standard errors given the scores; recall by the delta method on tp / (tp + rest).
    se_precision = np.sqrt(variance[chosen].sum()) / chosen.sum()
    total = tp + found_elsewhere
    se_recall = np.sqrt(
        (found_elsewhere / total**2) ** 2 * variance[chosen].sum()
        + (tp / total**2) ** 2 * variance[~chosen].sum()
    )
    assert abs(predicted_precision(scores, 1, threshold) - realised_precision) < 4 * se_precision
    assert abs(predicted_recall(scores, 1, threshold) - realised_recall) <= 4 * se_recall + 1e-12


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("target", [0.7, 0.9])
def test_threshold_chosen_without_labels_delivers_on_calibrated_data(seed, target):
    scores, y = calibrated_sample(seed)
    op = operating_point_from_probabilities(scores, 1, target_precision=target)
    assert op.met
    chosen = scores >= op.threshold
    realised = y[chosen].mean()
    se = np.sqrt((scores * (1 - scores))[chosen].sum()) / chosen.sum()
    assert realised >= target - 4 * se
    assert realised == pytest.approx(op.predicted_precision, abs=4 * se)


def test_predicted_precision_is_wrong_on_overconfident_scores():
    # The assumption matters: when the truth is p**2, the prediction overstates precision.
    scores, _ = calibrated_sample(0)
    y = (np.random.default_rng(1).random(scores.size) < scores**2).astype(int)
    realised = y[scores >= 0.5].mean()
    assert predicted_precision(scores, 1, 0.5) > realised + 0.05


# ----------------------------------------------------------------------------- bad input

P3 = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
Y3 = np.array([0, 1, 2])


@pytest.mark.parametrize("positive", [3, -1, 1.0, "A", True, None])
@pytest.mark.parametrize(
    "call",
    [
        lambda pos: operating_point(P3, Y3, pos, target_precision=0.9),
        lambda pos: precision_recall_curve(P3, Y3, pos),
        lambda pos: predicted_precision(P3, pos, 0.5),
        lambda pos: predicted_recall(P3, pos, 0.5),
        lambda pos: operating_point_from_probabilities(P3, pos, target_recall=0.5),
    ],
)
def test_unknown_positive_class(call, positive):
    with pytest.raises(ConfigurationError, match="positive"):
        call(positive)


def test_unknown_positive_class_names_the_columns():
    with pytest.raises(ConfigurationError, match=r"positive class 3 is unknown: .* 0\.\.2"):
        operating_point(P3, Y3, 3, target_precision=0.9)


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.0001, 2, float("nan"), float("inf"), "0.9"])
@pytest.mark.parametrize("name", ["target_precision", "target_recall"])
@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: operating_point(P3, Y3, 0, **kw),
        lambda **kw: operating_points(P3, Y3, **kw),
        lambda **kw: operating_point_from_probabilities(P3, 0, **kw),
    ],
)
def test_target_outside_zero_one(call, name, value):
    with pytest.raises(ConfigurationError, match=rf"{name} must be .*\(0, 1\]"):
        call(**{name: value})


@pytest.mark.parametrize("targets", [{}, {"target_precision": 0.9, "target_recall": 0.5}])
@pytest.mark.parametrize(
    "call",
    [
        lambda **kw: operating_point(P3, Y3, 0, **kw),
        lambda **kw: operating_points(P3, Y3, **kw),
        lambda **kw: operating_point_from_probabilities(P3, 0, **kw),
    ],
)
def test_exactly_one_target(call, targets):
    with pytest.raises(ConfigurationError, match="exactly one of target_precision and target_"):
        call(**targets)


@pytest.mark.parametrize(
    "y, match",
    [
        ([0, 1, 3], r"y\[2\] = 3 is outside the class indices 0\.\.2"),
        ([0, -1, 2], r"y\[1\] = -1 is outside"),
        ([0, 1], "y has 2 labels but there are 3 rows"),
        ([0, 1.5, 2], r"y\[1\] = 1\.5 is not a class index"),
        (["a", "b", "c"], "must hold integer class indices"),
    ],
)
@pytest.mark.parametrize(
    "call",
    [
        lambda y: operating_point(P3, y, 0, target_precision=0.9),
        lambda y: operating_points(P3, y, target_recall=0.9),
        lambda y: precision_recall_curve(P3, y, 0),
    ],
)
def test_bad_labels(call, y, match):
    with pytest.raises(InvalidInputError, match=match):
        call(y)


@pytest.mark.parametrize(
    "call",
    [
        lambda: operating_point(P3, [0, 0, 2], 1, target_precision=0.9),
        lambda: operating_points(P3, [0, 0, 2], target_precision=0.9),
        lambda: precision_recall_curve(P3, [0, 0, 2], 1),
    ],
)
def test_a_class_absent_from_the_labels_has_no_recall(call):
    with pytest.raises(InvalidInputError, match="y has no row of class 1, so recall"):
        call()


@pytest.mark.parametrize("threshold", [-0.01, 1.01, float("nan"), "0.5", None])
@pytest.mark.parametrize("function", [predicted_precision, predicted_recall])
def test_threshold_outside_zero_one(function, threshold):
    with pytest.raises(ConfigurationError, match=r"threshold must be .*\[0, 1\]"):
        function(P3, 0, threshold)


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.5, float("nan")])
def test_confidence_strictly_between_zero_and_one(confidence):
    with pytest.raises(ConfigurationError, match="confidence must be"):
        operating_point(P3, Y3, 0, target_precision=0.5, confidence=confidence)


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 4), (0, 0)])
def test_clopper_pearson_counts(k, n):
    with pytest.raises(InvalidInputError, match=r"need 0 <= k <= n and n >= 1"):
        clopper_pearson(k, n)


@pytest.mark.parametrize(
    "P, match",
    [
        ([[0.6, 0.6], [0.5, 0.5], [0.1, 0.9]], "P row 0 sums to 1.2, not 1"),
        ([[0.5, 0.5], [np.nan, 0.5], [0.1, 0.9]], "P row 1 contains NaN"),
        ([[0.5, 0.5], [1.5, -0.5], [0.1, 0.9]], "P row 1 has a negative value"),
        (np.zeros((3, 2, 2)), "P must have shape"),
    ],
)
def test_bad_probabilities(P, match):
    with pytest.raises(InvalidInputError, match=match):
        operating_point(P, [0, 1, 1], 1, target_precision=0.9)
    with pytest.raises(InvalidInputError, match=match):
        operating_point_from_probabilities(P, 1, target_recall=0.9)


def test_recall_target_without_any_probability_mass():
    P = np.array([[1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(InvalidInputError, match="every probability of class 1 is 0"):
        operating_point_from_probabilities(P, 1, target_recall=0.5)
    # A precision target is answerable: it cannot be met.
    assert not operating_point_from_probabilities(P, 1, target_precision=0.5).met


# ----------------------------------------------------------------------------- recorded BoolQ


def boolq_tasks():
    if find_recorded_data() is None:
        return []
    return [task for task in load_recorded_tasks() if task.name.startswith("boolq")]


@pytest.mark.skipif(find_recorded_data() is None, reason="recorded llm-confidence data absent")
@pytest.mark.parametrize("task", boolq_tasks(), ids=lambda task: task.name)
def test_recorded_boolq_smoke(task):
    assert task.labels == ["True", "False"]
    P, y = task.P, task.y
    positive = task.labels.index("True")
    base_rate = np.mean(y == positive)

    op = operating_point(P, y, positive, target_precision=0.9)
    assert 0.0 <= op.threshold <= 1.0
    assert op.n_true_positive <= op.n_predicted <= len(y)
    assert op.precision_ci[0] <= op.precision <= op.precision_ci[1]
    assert op.recall_ci[0] <= op.recall <= op.recall_ci[1]
    # Stated confidence carries signal: the chosen point beats answering "True" for every row.
    assert op.precision > base_rate

    curve = precision_recall_curve(P, y, positive)
    precision, recall, _ = sk_precision_recall_curve(y == positive, P[:, positive])
    np.testing.assert_allclose(curve.precision, precision[:-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.recall, recall[:-1], rtol=0, atol=1e-12)
    assert ((curve.predicted_precision >= 0) & (curve.predicted_precision <= 1)).all()

    unlabelled = operating_point_from_probabilities(P, positive, target_recall=0.8)
    assert unlabelled.met
    assert 0.8 <= unlabelled.predicted_recall <= 1.0
    assert len(operating_points(P, y, target_recall=0.8)) == 2
