"""Precision/recall operating points on calibrated probabilities.

A user who promised "90 % of what we flag is right" needs the threshold that
delivers it. This module finds it, one class at a time, one-vs-rest: the
*score* of a row is its probability of the ``positive`` class, and a row is
predicted positive when ``score >= threshold``.

``positive`` is the *label* of the positive class, as everywhere in verbcal:
one of ``labels`` when the columns of ``P`` are named (``labels=["neg",
"pos"]``, ``positive="pos"``). Without ``labels`` the classes are named by
their column indices, the values ``y`` holds, so ``positive=1`` is column 1
(scikit-learn's ``pos_label``). Result objects carry the label given.

Two situations are covered:

* **Labelled rows** (``operating_point``, ``operating_points``,
  ``precision_recall_curve``, ``precision_recall_at``): precision and recall
  are counted, with exact Clopper–Pearson intervals.
* **Unlabelled rows** (``predicted_precision``, ``predicted_recall``,
  ``operating_point_from_probabilities``): if the probabilities are
  calibrated, a row with score ``p`` is positive with probability ``p``, so
  the expected number of true positives among the predicted rows is the sum
  of their scores. Precision and recall are then *predicted* from the scores
  alone. The prediction is only as good as the calibration.

Candidate thresholds are the distinct score values. Verbalized probabilities
are coarse (0.8, 0.9, 0.95 …) and full of ties; a threshold never splits tied
scores, since every threshold between two adjacent distinct scores predicts
the same rows as the higher of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Literal

import numpy as np

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.guarantee import check_guarantee, precision_threshold, recall_threshold
from verbcal.metrics.intervals import CONFIDENCE, clopper_pearson
from verbcal.validation import (
    Constraint,
    Interval,
    check_labels,
    check_param,
    check_probabilities,
)

__all__ = [
    "OperatingPoint",
    "PrecisionRecallCurve",
    "PredictedOperatingPoint",
    "ThresholdRates",
    "clopper_pearson",
    "operating_point",
    "operating_point_from_probabilities",
    "operating_points",
    "precision_recall_at",
    "precision_recall_curve",
    "predicted_precision",
    "predicted_recall",
]


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen on labelled rows, and what it achieves on them.

    Attributes
    ----------
    positive : str or int
        Label of the class treated as positive (the others are negative): one
        of ``labels``, or a column index when no labels were given.
    target : {"precision", "recall"}
        Which quantity was asked for (a :data:`Target`).
    target_value : float
        The value asked for.
    met : bool
        Whether some threshold reaches the target. When False, the fields
        describe the best achievable point: the highest precision (for a
        precision target).
    threshold : float
        Predict positive when the positive-class probability is ``>= threshold``.
    precision, recall : float
        Achieved on the given rows.
    n_predicted, n_true_positive : int
        Rows predicted positive, and how many of them are positive.
    n_positive, n_rows : int
        Positive rows, and all rows.
    precision_ci, recall_ci : tuple of float
        Clopper–Pearson intervals at level ``confidence``. They hold for a
        threshold fixed in advance; choosing the threshold on the same rows
        makes them somewhat optimistic.
    confidence : float
        Level of the intervals.
    guarantee : float or None
        When set, ``met`` means the target holds on new rows with at least this
        probability over the calibration rows (see :mod:`verbcal.guarantee`);
        the threshold is then the guaranteed one.
    bound : float or None
        With a guarantee: the one-sided Clopper–Pearson lower bound (level
        ``guarantee``) on the target quantity that the test used.
    rows_needed : int or None
        With a guarantee that could not be given: the labelled rows in all that
        would let one threshold pass at the rates observed (None when none would).
    """

    positive: str | int
    target: Target
    target_value: float
    met: bool
    threshold: float
    precision: float
    recall: float
    n_predicted: int
    n_true_positive: int
    n_positive: int
    n_rows: int
    precision_ci: tuple[float, float]
    recall_ci: tuple[float, float]
    confidence: float
    guarantee: float | None = None
    bound: float | None = None
    rows_needed: int | None = None

    def __str__(self) -> str:
        verdict = "meets" if self.met else "CANNOT MEET (best achievable shown)"
        if self.guarantee is not None:
            verdict = (
                f"guarantees (probability {self.guarantee:g}, lower bound {self.bound:.4f})"
                if self.met
                else f"CANNOT GUARANTEE at {self.guarantee:g} (unguaranteed choice shown; "
                + (
                    f"about {self.rows_needed} labelled rows, "
                    f"{self.rows_needed - self.n_rows} more, would be needed)"
                    if self.rows_needed is not None
                    else "more rows at these rates would not help)"
                )
            )
        level = f"{self.confidence:.0%}"
        return (
            f"class {self.positive}: threshold {self.threshold:.6g} {verdict} "
            f"target {self.target} >= {self.target_value:g}: "
            f"precision {self.precision:.4f} ({level} CI {self.precision_ci[0]:.4f}"
            f"-{self.precision_ci[1]:.4f}), recall {self.recall:.4f} ({level} CI "
            f"{self.recall_ci[0]:.4f}-{self.recall_ci[1]:.4f}), "
            f"{self.n_true_positive}/{self.n_predicted} predicted positives correct, "
            f"{self.n_positive} positives in {self.n_rows} rows"
        )


@dataclass(frozen=True)
class PredictedOperatingPoint:
    """A threshold chosen on unlabelled rows by the precision/recall calibration predicts.

    Attributes
    ----------
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    target : {"precision", "recall"}
        Which quantity was asked for (a :data:`Target`).
    target_value : float
        The value asked for.
    met : bool
        Whether some threshold reaches the target by prediction. When False,
        the fields describe the highest predicted precision.
    threshold : float
        Predict positive when the positive-class probability is ``>= threshold``.
    predicted_precision, predicted_recall : float
        Expected precision and recall, assuming calibrated probabilities.
    n_predicted, n_rows : int
        Rows predicted positive, and all rows.
    """

    positive: str | int
    target: Target
    target_value: float
    met: bool
    threshold: float
    predicted_precision: float
    predicted_recall: float
    n_predicted: int
    n_rows: int


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Precision and recall at every distinct score, as plain arrays for plotting.

    All arrays have one entry per threshold, thresholds increasing (the order
    of :func:`sklearn.metrics.precision_recall_curve`, whose extra end point
    ``precision=1, recall=0`` is left out).

    Attributes
    ----------
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    thresholds : numpy.ndarray of float
        The distinct positive-class probabilities, increasing.
    precision, recall : numpy.ndarray of float, or None
        Counted on the labelled rows (None without gold labels).
    predicted_precision, predicted_recall : numpy.ndarray of float
        Expected from the probabilities alone, assuming they are calibrated.
    n_predicted : numpy.ndarray of int
        Rows predicted positive.
    n_true_positive : numpy.ndarray of int, or None
        How many of them are positive (None without gold labels).
    n_positive : int or None
        Positive rows (None without gold labels).
    """

    positive: str | int
    thresholds: np.ndarray
    precision: np.ndarray | None
    recall: np.ndarray | None
    predicted_precision: np.ndarray
    predicted_recall: np.ndarray
    n_predicted: np.ndarray
    n_true_positive: np.ndarray | None
    n_positive: int | None


@dataclass(frozen=True)
class ThresholdRates:
    """What a fixed threshold achieves on labelled rows, with exact intervals.

    Attributes
    ----------
    positive : str or int
        Label of the class treated as positive.
    threshold : float
        Rows whose positive-class probability is ``>= threshold`` are flagged.
    n_predicted, n_true_positive, n_positive, n_rows : int
        Rows flagged, flagged rows that are positive, positive rows, all rows.
    precision, recall : float or None
        ``n_true_positive / n_predicted`` and ``n_true_positive / n_positive``;
        None when the denominator is 0.
    precision_ci, recall_ci : tuple of float, or None
        Clopper–Pearson intervals at level ``confidence`` (None with the rate).
    confidence : float
        Level of the intervals.
    """

    positive: str | int
    threshold: float
    n_predicted: int
    n_true_positive: int
    n_positive: int
    n_rows: int
    precision: float | None
    precision_ci: tuple[float, float] | None
    recall: float | None
    recall_ci: tuple[float, float] | None
    confidence: float


def _rates_from_counts(
    positive: str | int,
    threshold: float,
    tp: int,
    n_predicted: int,
    n_positive: int,
    n_rows: int,
    confidence: float = 0.95,
) -> ThresholdRates:
    """:class:`ThresholdRates` from counts: the one place a realised rate gets its interval."""

    def rate(k: int, n: int) -> tuple[float | None, tuple[float, float] | None]:
        return (k / n, clopper_pearson(k, n, confidence)) if n else (None, None)

    precision, precision_ci = rate(tp, n_predicted)
    recall, recall_ci = rate(tp, n_positive)
    return ThresholdRates(
        positive=positive,
        threshold=float(threshold),
        n_predicted=n_predicted,
        n_true_positive=tp,
        n_positive=n_positive,
        n_rows=n_rows,
        precision=precision,
        precision_ci=precision_ci,
        recall=recall,
        recall_ci=recall_ci,
        confidence=confidence,
    )


# ----------------------------------------------------------------------------- checks


#: What an operating point aims at.
Target = Literal["precision", "recall"]

#: What the numbers of this module may be (checked by ``check_param``).
TARGET: list[Constraint] = [Interval("real", 0, 1, closed="right")]
THRESHOLD: list[Constraint] = [Interval("real", 0, 1)]


def _class(positive, labels: Sequence[str] | None, n_classes: int) -> tuple[int, str | int]:
    """The column of the class labelled ``positive``, and that label."""
    if labels is not None:
        names = list(labels)
        if len(names) != n_classes:
            raise ConfigurationError(
                f"labels has {len(names)} names but P has {n_classes} columns: {names}"
            )
        if not isinstance(positive, str) or positive not in names:
            raise ConfigurationError(f"positive label {positive!r} is not one of {names}")
        return names.index(positive), positive
    if isinstance(positive, bool) or not isinstance(positive, Integral):
        raise ConfigurationError(
            "positive must be a label of labels=[...] or, without labels, a class index "
            f"(a column of P), got {positive!r}"
        )
    column = int(positive)
    if not 0 <= column < n_classes:
        raise ConfigurationError(
            f"positive class {positive} is unknown: P has columns 0..{n_classes - 1}"
        )
    return column, column


def _check_target(target_precision, target_recall) -> tuple[Target, float]:
    if (target_precision is None) == (target_recall is None):
        raise ConfigurationError(
            "give exactly one of target_precision and target_recall, "
            f"got target_precision={target_precision!r}, target_recall={target_recall!r}"
        )
    if target_precision is not None:
        check_param("target_precision", target_precision, TARGET)
        return "precision", float(target_precision)
    check_param("target_recall", target_recall, TARGET)
    return "recall", float(target_recall)


def _check_confidence(confidence) -> float:
    check_param("confidence", confidence, CONFIDENCE)
    return float(confidence)


def _scores(P, positive, labels, renormalize: bool) -> tuple[np.ndarray, int, str | int]:
    """Positive-class scores, the column and the positive label."""
    arr = check_probabilities(P, renormalize=renormalize)
    column, name = _class(positive, labels, arr.shape[1])
    return arr[:, column], column, name


def _labelled(P, y, positive, labels, renormalize: bool):
    """Positive-class scores, a boolean "is positive" vector, and the positive label."""
    arr = check_probabilities(P, renormalize=renormalize)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    column, name = _class(positive, labels, arr.shape[1])
    return arr[:, column], _positives_of(gold, column, name), name


def _positives_of(gold: np.ndarray, column: int, name: str | int) -> np.ndarray:
    is_positive = gold == column
    if not is_positive.any():
        raise InvalidInputError(
            f"y has no row of class {name!r}, so recall against it is undefined"
        )
    return is_positive


# ----------------------------------------------------------------------------- core


@dataclass(frozen=True)
class _Sweep:
    """Counts at every distinct score, thresholds *decreasing* (rows sorted by score)."""

    thresholds: np.ndarray
    n_predicted: np.ndarray
    score_sum: np.ndarray  # sum of the scores of the predicted rows
    n_true_positive: np.ndarray | None  # None for unlabelled rows

    @property
    def predicted_precision(self) -> np.ndarray:
        return self.score_sum / self.n_predicted

    @property
    def predicted_recall(self) -> np.ndarray:
        """NaN when every score is 0 (recall is 0 / 0)."""
        with np.errstate(invalid="ignore"):
            return self.score_sum / self.score_sum[-1]


def _sweep(scores: np.ndarray, is_positive: np.ndarray | None = None) -> _Sweep:
    order = np.argsort(scores, kind="stable")[::-1]
    ranked = scores[order]
    # The last row of each run of tied scores: a threshold takes the whole run.
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tp = None if is_positive is None else np.cumsum(is_positive[order])[last]
    return _Sweep(
        thresholds=ranked[last],
        n_predicted=last + 1,
        score_sum=np.cumsum(ranked)[last],
        n_true_positive=tp,
    )


def _select(
    target: str, value: float, precision: np.ndarray, recall: np.ndarray
) -> tuple[int, bool]:
    """Index of the chosen threshold, and whether the target is met.

    Precision target: the most recall among thresholds that meet it, then the
    highest precision. Recall target: the highest precision among those that
    meet it, then the most recall. Nothing meets it: the highest precision,
    then the most recall.
    """
    meets = (precision if target == "precision" else recall) >= value
    met = bool(meets.any())
    candidates = np.flatnonzero(meets) if met else np.arange(precision.size)
    if target == "precision" and met:
        primary, secondary = recall, precision
    else:
        primary, secondary = precision, recall
    # np.lexsort sorts by its last key first; the last index is the largest.
    best = candidates[np.lexsort((secondary[candidates], primary[candidates]))[-1]]
    return int(best), met


def _operating_point(
    scores: np.ndarray,
    is_positive: np.ndarray,
    positive: str | int,
    target: Target,
    value: float,
    confidence: float,
    guarantee: float | None = None,
) -> OperatingPoint:
    sweep = _sweep(scores, is_positive)
    counts = sweep.n_true_positive
    assert counts is not None  # labelled rows
    n_positive = int(counts[-1])
    precision = counts / sweep.n_predicted
    recall = counts / n_positive
    i, met = _select(target, value, precision, recall)
    tp, pp = int(counts[i]), int(sweep.n_predicted[i])
    if guarantee is not None:
        test = (precision_threshold if target == "precision" else recall_threshold)(
            scores, is_positive, value, guarantee
        )
        if test.met and test.threshold is not None:
            t = float(test.threshold)
            predicted = scores >= t
            tp, pp = int((predicted & is_positive).sum()), int(predicted.sum())
            return OperatingPoint(
                positive=positive,
                target=target,
                target_value=value,
                met=True,
                threshold=t,
                precision=tp / pp if pp else float("nan"),
                recall=tp / n_positive,
                n_predicted=pp,
                n_true_positive=tp,
                n_positive=n_positive,
                n_rows=int(scores.size),
                precision_ci=clopper_pearson(tp, pp, confidence) if pp else (0.0, 1.0),
                recall_ci=clopper_pearson(tp, n_positive, confidence),
                confidence=confidence,
                guarantee=test.guarantee,
                bound=test.bound,
            )
        met = False
    return OperatingPoint(
        positive=positive,
        target=target,
        target_value=value,
        met=met,
        threshold=float(sweep.thresholds[i]),
        precision=float(precision[i]),
        recall=float(recall[i]),
        n_predicted=pp,
        n_true_positive=tp,
        n_positive=n_positive,
        n_rows=int(scores.size),
        precision_ci=clopper_pearson(tp, pp, confidence),
        recall_ci=clopper_pearson(tp, n_positive, confidence),
        confidence=confidence,
        guarantee=None if guarantee is None else test.guarantee,
        bound=None if guarantee is None else test.bound,
        rows_needed=None if guarantee is None else test.rows_needed,
    )


# ----------------------------------------------------------------------------- labelled rows


def operating_point(
    P,
    y,
    positive: str | int,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    confidence: float = 0.95,
    renormalize: bool = False,
    guarantee: float | None = None,
    labels: Sequence[str] | None = None,
) -> OperatingPoint:
    """The threshold that meets a precision or recall target on labelled rows.

    Class ``positive`` is scored one-vs-rest by its probability. With a
    precision target, the threshold chosen is the one that meets it with the
    most recall; with a recall target, the one that meets it with the highest
    precision. When no threshold meets the target, the result has
    ``met=False`` and describes the highest precision achievable.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows (calibrated, ideally). A 1-D array is the probability
        of class 1 of a binary problem.
    y : array-like of shape (n,)
        Gold class indices (columns of ``P``).
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    target_precision, target_recall : float in (0, 1]
        Give exactly one.
    confidence : float, default 0.95
        Level of the Clopper–Pearson intervals on precision and recall.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    guarantee : float in (0.5, 1), optional
        Promise the target on *new* rows with at least this probability over
        the draw of these rows, instead of reaching it on these rows (which
        falls short on new rows about half the time). The threshold is chosen
        by fixed-sequence testing with one-sided Clopper–Pearson bounds
        (Learn-then-Test; :mod:`verbcal.guarantee`). When no threshold can be
        guaranteed, ``met`` is False, the fields describe the unguaranteed
        choice and ``rows_needed`` says how many labelled rows would do.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    OperatingPoint

    Examples
    --------
    >>> p_yes = [0.9, 0.9, 0.8, 0.6, 0.6, 0.3]
    >>> y = [1, 0, 1, 1, 0, 0]
    >>> op = operating_point(p_yes, y, positive=1, target_precision=0.6)
    >>> op.met, op.threshold, op.precision, op.recall, op.n_predicted
    (True, 0.6, 0.6, 1.0, 5)
    >>> operating_point(p_yes, y, positive=1, target_precision=0.7).met
    False
    >>> operating_point(p_yes, y, "yes", labels=["no", "yes"], target_precision=0.6).threshold
    0.6
    >>> p_yes, y = [0.9] * 30 + [0.6] * 30, [1] * 30 + [1] * 10 + [0] * 20
    >>> op = operating_point(p_yes, y, positive=1, target_precision=0.9, guarantee=0.9)
    >>> op.met, op.threshold, round(op.bound, 4)
    (True, 0.601, 0.9261)
    >>> p_yes, y = [0.9] * 25 + [0.6] * 10, [1] * 24 + [0] * 11  # 24/25 right: too few rows
    >>> op = operating_point(p_yes, y, positive=1, target_precision=0.9, guarantee=0.9)
    >>> op.met, op.precision, op.rows_needed
    (False, 0.96, 75)
    """
    target, value = _check_target(target_precision, target_recall)
    level = _check_confidence(confidence)
    if guarantee is not None:
        guarantee = check_guarantee(guarantee)
    scores, is_positive, name = _labelled(P, y, positive, labels, renormalize)
    return _operating_point(scores, is_positive, name, target, value, level, guarantee)


def operating_points(
    P,
    y,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    confidence: float = 0.95,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> list[OperatingPoint]:
    """One-vs-rest operating points for every class, in column order.

    Each class in turn is the positive one, and gets the threshold on its own
    probability chosen as in :func:`operating_point`. Every class must occur
    in ``y``.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows.
    y : array-like of shape (n,)
        Gold class indices.
    target_precision, target_recall : float in (0, 1]
        Give exactly one; the same target applies to every class.
    confidence : float, default 0.95
        Level of the Clopper–Pearson intervals.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``, used as the ``positive`` of each point.

    Returns
    -------
    list of OperatingPoint
        Element ``k`` treats class ``k`` as positive.

    Examples
    --------
    >>> P = [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]]
    >>> points = operating_points(P, [0, 1, 2, 1], target_precision=1.0)
    >>> [(op.threshold, op.recall) for op in points]
    [(0.7, 1.0), (0.4, 1.0), (0.6, 1.0)]
    """
    target, value = _check_target(target_precision, target_recall)
    level = _check_confidence(confidence)
    arr = check_probabilities(P, renormalize=renormalize)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    names = [_class(k, None, arr.shape[1])[1] for k in range(arr.shape[1])]
    if labels is not None:
        names = [_class(label, labels, arr.shape[1])[1] for label in labels]
    return [
        _operating_point(arr[:, k], _positives_of(gold, k, name), name, target, value, level)
        for k, name in enumerate(names)
    ]


def precision_recall_curve(
    P,
    y,
    positive: str | int,
    *,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> PrecisionRecallCurve:
    """Realised and predicted precision/recall at every distinct score.

    The counted precision and recall equal
    :func:`sklearn.metrics.precision_recall_curve` on ``(y == positive,
    P[:, positive])`` without its end point. The predicted ones are
    :func:`predicted_precision` and :func:`predicted_recall` at each threshold.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows.
    y : array-like of shape (n,), or None
        Gold class indices; None gives the predicted curves only.
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    PrecisionRecallCurve

    Examples
    --------
    >>> curve = precision_recall_curve([0.9, 0.9, 0.8, 0.3], [1, 0, 1, 0], positive=1)
    >>> curve.thresholds.tolist(), curve.precision.tolist(), curve.recall.tolist()
    ([0.3, 0.8, 0.9], [0.5, 0.6666666666666666, 0.5], [1.0, 1.0, 0.5])
    >>> curve.predicted_precision.round(4).tolist()
    [0.725, 0.8667, 0.9]
    >>> precision_recall_curve([0.9, 0.8, 0.6, 0.3], None, 1).predicted_recall.round(4).tolist()
    [1.0, 0.8846, 0.6538, 0.3462]
    """
    if y is None:
        scores, _, name = _scores(P, positive, labels, renormalize)
        is_positive = None
    else:
        scores, is_positive, name = _labelled(P, y, positive, labels, renormalize)
    sweep = _sweep(scores, is_positive)
    tp = sweep.n_true_positive
    increasing = slice(None, None, -1)
    return PrecisionRecallCurve(
        positive=name,
        thresholds=sweep.thresholds[increasing],
        precision=None if tp is None else (tp / sweep.n_predicted)[increasing],
        recall=None if tp is None else (tp / tp[-1])[increasing],
        predicted_precision=sweep.predicted_precision[increasing],
        predicted_recall=sweep.predicted_recall[increasing],
        n_predicted=sweep.n_predicted[increasing],
        n_true_positive=None if tp is None else tp[increasing],
        n_positive=None if tp is None else int(tp[-1]),
    )


def precision_recall_at(
    P,
    y,
    positive: str | int,
    threshold: float,
    *,
    confidence: float = 0.95,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> ThresholdRates:
    """Precision and recall that a threshold fixed in advance achieves on labelled rows.

    Unlike :func:`operating_point`, the threshold is not chosen on these rows,
    so the Clopper–Pearson intervals are honest for them (held-out rows).

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows.
    y : array-like of shape (n,)
        Gold class indices.
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    threshold : float in [0, 1]
        Rows whose positive-class probability is ``>= threshold`` are flagged.
    confidence : float, default 0.95
        Level of the intervals.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    ThresholdRates
        Precision (recall) is None when no row is flagged (positive).

    Examples
    --------
    >>> rates = precision_recall_at([0.9, 0.9, 0.8, 0.3], [1, 0, 1, 0], 1, 0.8)
    >>> rates.precision, rates.recall, round(rates.precision_ci[0], 4)
    (0.6666666666666666, 1.0, 0.0943)
    """
    check_param("threshold", threshold, THRESHOLD)
    level = _check_confidence(confidence)
    arr = check_probabilities(P, renormalize=renormalize)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    column, name = _class(positive, labels, arr.shape[1])
    flagged = arr[:, column] >= threshold
    is_positive = gold == column
    return _rates_from_counts(
        name,
        threshold,
        int((flagged & is_positive).sum()),
        int(flagged.sum()),
        int(is_positive.sum()),
        int(arr.shape[0]),
        level,
    )


# ----------------------------------------------------------------------------- unlabelled rows


def predicted_precision(
    P,
    positive: str | int,
    threshold: float,
    *,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> float:
    """Precision expected at ``threshold`` on unlabelled rows, if ``P`` is calibrated.

    Calibration means a row with positive-class probability ``p`` is positive
    with probability ``p``. The expected number of true positives among the
    rows predicted positive (``p >= threshold``) is then the sum of their
    ``p``, and the expected precision (given which rows are predicted) is
    the mean of their ``p``. Over- or under-confident probabilities make this
    estimate too high or too low; calibrate first.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows.
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    threshold : float in [0, 1]
        Predict positive when the positive-class probability is ``>= threshold``.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    float
        NaN when no row reaches the threshold (precision is 0 / 0).

    Examples
    --------
    >>> round(predicted_precision([0.9, 0.8, 0.6, 0.3], positive=1, threshold=0.6), 4)
    0.7667
    """
    check_param("threshold", threshold, THRESHOLD)
    scores, _, _ = _scores(P, positive, labels, renormalize)
    chosen = scores >= threshold
    if not chosen.any():
        return float("nan")
    return float(scores[chosen].sum() / chosen.sum())


def predicted_recall(
    P,
    positive: str | int,
    threshold: float,
    *,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> float:
    """Recall expected at ``threshold`` on unlabelled rows, if ``P`` is calibrated.

    Under calibration (see :func:`predicted_precision`) the expected number
    of positive rows is the sum of all positive-class probabilities and the
    expected number found is the sum over rows with ``p >= threshold``; the
    predicted recall is their ratio.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows.
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    threshold : float in [0, 1]
        Predict positive when the positive-class probability is ``>= threshold``.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    float
        NaN when every positive-class probability is 0 (recall is 0 / 0).

    Examples
    --------
    >>> round(predicted_recall([0.9, 0.8, 0.6, 0.3], positive=1, threshold=0.8), 4)
    0.6538
    """
    check_param("threshold", threshold, THRESHOLD)
    scores, _, _ = _scores(P, positive, labels, renormalize)
    total = scores.sum()
    if total == 0:
        return float("nan")
    return float(scores[scores >= threshold].sum() / total)


def operating_point_from_probabilities(
    P,
    positive: str | int,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    renormalize: bool = False,
    labels: Sequence[str] | None = None,
) -> PredictedOperatingPoint:
    """Choose a threshold on unlabelled rows by their predicted precision/recall.

    The rules are those of :func:`operating_point`, applied to
    :func:`predicted_precision` and :func:`predicted_recall` at each distinct
    score. Trustworthy only as far as ``P`` is calibrated.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Calibrated probability rows.
    positive : str or int
        Label of the class treated as positive (a column index without ``labels``).
    target_precision, target_recall : float in (0, 1]
        Give exactly one.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.
    labels : sequence of str, optional
        Names of the columns of ``P``; ``positive`` is then one of them.

    Returns
    -------
    PredictedOperatingPoint

    Examples
    --------
    >>> op = operating_point_from_probabilities(
    ...     [0.95, 0.9, 0.8, 0.6, 0.3], positive=1, target_precision=0.85
    ... )
    >>> op.met, op.threshold, op.n_predicted, round(op.predicted_precision, 4)
    (True, 0.8, 3, 0.8833)
    """
    target, value = _check_target(target_precision, target_recall)
    scores, _, name = _scores(P, positive, labels, renormalize)
    if target == "recall" and not scores.any():
        raise InvalidInputError(
            f"every probability of class {name!r} is 0, so its predicted recall is undefined"
        )
    sweep = _sweep(scores)
    precision, recall = sweep.predicted_precision, sweep.predicted_recall
    i, met = _select(target, value, precision, recall)
    return PredictedOperatingPoint(
        positive=name,
        target=target,
        target_value=value,
        met=met,
        threshold=float(sweep.thresholds[i]),
        predicted_precision=float(precision[i]),
        predicted_recall=float(recall[i]),
        n_predicted=int(sweep.n_predicted[i]),
        n_rows=int(scores.size),
    )
