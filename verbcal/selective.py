"""Selective prediction: answer automatically when confident, hand the rest to a person.

The *confidence* of a row is its top probability ``max_k P[i, k]`` and its
answer the top class (``argmax``, the first among ties, as in
:mod:`verbcal.metrics`). Answering the rows with confidence ``>= t`` and
routing the others to a person trades *coverage* (the share answered) for
*risk* (the error rate among the answered rows).

* :func:`risk_coverage_curve` — risk and coverage at every distinct confidence,
  as plain data for a figure;
* :func:`aurc` and :func:`excess_aurc` — the area under that curve (Geifman et
  al. 2019, "Bias-reduced uncertainty estimation for deep neural
  classifiers") and its excess over a perfect ranking;
* :func:`selective_threshold` — the confidence threshold that reaches a target
  accuracy on the answered rows, optionally with the finite-sample guarantee
  of :mod:`verbcal.guarantee` (accuracy on answered rows is the precision of
  "correct" when "answer" is the positive decision);
* :func:`route` — the decision for every row at a threshold.

Ties: verbalized confidences are coarse, so many rows share one value and a
threshold answers all of them or none. The curve has one point per distinct
value. AURC averages the risk of answering the ``k`` most confident rows over
``k = 1..n``; inside a run of tied rows their order is arbitrary, and AURC is
the *expectation over random orders of the tied rows* (exactly: the errors
among the first ``j`` of ``m`` tied rows holding ``e`` errors average
``j e / m``). Without ties it is the usual per-row AURC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verbcal.errors import InvalidInputError
from verbcal.guarantee import check_guarantee, precision_threshold
from verbcal.thresholds import (
    operating_point,
    operating_point_from_probabilities,
    predicted_precision,
)
from verbcal.validation import Interval, check_labels, check_param, check_probabilities

__all__ = [
    "RiskCoverageCurve",
    "SelectiveThreshold",
    "aurc",
    "excess_aurc",
    "optimal_aurc",
    "predicted_selective_threshold",
    "risk_coverage_curve",
    "route",
    "selective_threshold",
]


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class RiskCoverageCurve:
    """Risk and coverage at every distinct confidence, most confident first.

    Attributes
    ----------
    thresholds : numpy.ndarray of float
        Distinct confidences, decreasing: answer rows with confidence ``>= t``.
    coverage : numpy.ndarray of float
        Share of rows answered at each threshold (increasing to 1).
    risk : numpy.ndarray of float
        Error rate among the answered rows.
    n_answered, n_errors : numpy.ndarray of int
        Rows answered, and how many of them are wrong.
    aurc, excess_aurc : float
        Area under the curve (tie-averaged, see the module notes) and its
        excess over a perfect ranking of the same errors.
    """

    thresholds: np.ndarray
    coverage: np.ndarray
    risk: np.ndarray
    n_answered: np.ndarray
    n_errors: np.ndarray
    aurc: float
    excess_aurc: float


@dataclass(frozen=True)
class SelectiveThreshold:
    """A confidence threshold for answering automatically, and what it does on labelled rows.

    Attributes
    ----------
    target_accuracy : float
        Accuracy asked for on the answered rows.
    guarantee : float or None
        With a guarantee: the probability over the labelled rows that the
        accuracy on new answered rows reaches the target.
    met : bool
        Whether the target is reached (guaranteed, with ``guarantee``).
    threshold : float
        Answer rows with confidence ``>= threshold``; route the others to a
        person. When ``met`` is False: the threshold of the highest accuracy
        (unguaranteed), so that callers can still show it.
    accuracy, coverage : float
        On the labelled rows, at ``threshold``.
    n_answered, n_correct, n_rows : int
        Counts behind them.
    bound : float or None
        With a guarantee: the one-sided Clopper–Pearson lower bound on the accuracy.
    rows_needed : int or None
        With a guarantee that could not be given: labelled rows in all that
        would let one threshold pass at the accuracy observed.
    explanation : str
        One sentence for people.
    """

    target_accuracy: float
    guarantee: float | None
    met: bool
    threshold: float
    accuracy: float
    coverage: float
    n_answered: int
    n_correct: int
    n_rows: int
    bound: float | None
    rows_needed: int | None
    explanation: str


# ----------------------------------------------------------------------------- helpers


def _confidence_and_correct(P, y) -> tuple[np.ndarray, np.ndarray]:
    arr = check_probabilities(P)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    return arr.max(axis=1), arr.argmax(axis=1) == gold


def _tie_runs(confidence: np.ndarray, wrong: np.ndarray):
    """Runs of equal confidence, most confident first: (thresholds, sizes, errors per run)."""
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ranked)) + 1]
    sizes = np.diff(np.r_[starts, ranked.size])
    errors = np.add.reduceat(wrong[order].astype(np.int64), starts)
    return ranked[starts], sizes, errors


def _tie_averaged_aurc(sizes: np.ndarray, errors: np.ndarray) -> float:
    n = int(sizes.sum())
    k = np.arange(1, n + 1, dtype=np.float64)
    run = np.repeat(np.arange(sizes.size), sizes)
    before_n = np.r_[0, np.cumsum(sizes)[:-1]][run]
    before_e = np.r_[0, np.cumsum(errors)[:-1]][run]
    j = k - before_n  # position inside the run, 1..m
    expected_errors = before_e + j * errors[run] / sizes[run]
    return float(np.mean(expected_errors / k))


def optimal_aurc(n_rows: int, n_errors: int) -> float:
    """AURC of a perfect ranking (every correct row before every wrong one).

    Answering the ``k`` most confident of ``n`` rows with ``c = n - e``
    correct ones makes ``max(0, k - c)`` errors, so the area is
    ``mean_k max(0, k - c) / k``. For large ``n`` it tends to
    ``r + (1 - r) ln(1 - r)`` with ``r = e / n`` (Geifman et al. 2019).

    Examples
    --------
    >>> round(optimal_aurc(4, 1), 6)  # only the 4th answer is wrong: (1/4) / 4
    0.0625
    """
    check_param("n_rows", n_rows, [Interval("integer", 1, None)])
    check_param("n_errors", n_errors, [Interval("integer", 0, n_rows)])
    k = np.arange(1, n_rows + 1, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, k - (n_rows - n_errors)) / k))


# ----------------------------------------------------------------------------- curve and areas


def risk_coverage_curve(P, y) -> RiskCoverageCurve:
    """Risk (error rate of the answered rows) against coverage, one point per distinct confidence.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows (calibrated, ideally).
    y : array-like of shape (n,)
        Gold class indices.

    Returns
    -------
    RiskCoverageCurve

    Examples
    --------
    >>> P = [[0.9, 0.1], [0.8, 0.2], [0.8, 0.2], [0.4, 0.6]]
    >>> curve = risk_coverage_curve(P, [0, 0, 1, 0])
    >>> curve.coverage.tolist(), curve.risk.tolist()
    ([0.25, 0.75, 1.0], [0.0, 0.3333333333333333, 0.5])
    """
    confidence, correct = _confidence_and_correct(P, y)
    thresholds, sizes, errors = _tie_runs(confidence, ~correct)
    answered, wrong = np.cumsum(sizes), np.cumsum(errors)
    n = confidence.size
    area = _tie_averaged_aurc(sizes, errors)
    return RiskCoverageCurve(
        thresholds=thresholds,
        coverage=answered / n,
        risk=wrong / answered,
        n_answered=answered,
        n_errors=wrong,
        aurc=area,
        excess_aurc=area - optimal_aurc(n, int(wrong[-1])),
    )


def aurc(P, y) -> float:
    """Area under the risk–coverage curve, averaged over the orders of tied confidences.

    ``mean over k = 1..n`` of the error rate among the ``k`` most confident
    rows (lower is better; a ranking that puts every error last reaches
    :func:`optimal_aurc`).

    Examples
    --------
    >>> round(aurc([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]], [0, 1, 0]), 6)  # (0 + 1/2 + 1/3) / 3
    0.277778
    """
    return risk_coverage_curve(P, y).aurc


def excess_aurc(P, y) -> float:
    """AURC minus the AURC of a perfect ranking of the same errors (0 is perfect).

    Examples
    --------
    >>> round(excess_aurc([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]], [0, 1, 0]), 6)
    0.166667
    """
    return risk_coverage_curve(P, y).excess_aurc


# ----------------------------------------------------------------------------- threshold


def selective_threshold(
    P, y, target_accuracy: float, *, guarantee: float | None = None
) -> SelectiveThreshold:
    """The loosest confidence threshold whose answered rows reach ``target_accuracy``.

    Without ``guarantee`` the accuracy is reached on the given labelled rows
    (the most coverage among thresholds that reach it). With ``guarantee``,
    the accuracy on *new* answered rows is at least the target with
    probability ``guarantee`` over the draw of these rows (Learn-then-Test,
    :func:`verbcal.guarantee.precision_threshold` on "answer correct").

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Calibrated probability rows of labelled rows.
    y : array-like of shape (n,)
        Gold class indices.
    target_accuracy : float in (0, 1]
        Accuracy asked for on the answered rows (below 1 with a guarantee).
    guarantee : float in (0.5, 1), optional
        Probability over the labelled rows that the promise holds.

    Returns
    -------
    SelectiveThreshold

    Examples
    --------
    >>> P = [[0.95, 0.05]] * 40 + [[0.7, 0.3]] * 40
    >>> y = [0] * 40 + [0] * 28 + [1] * 12
    >>> s = selective_threshold(P, y, 0.9)
    >>> s.met, s.threshold, s.coverage, s.accuracy
    (True, 0.95, 0.5, 1.0)
    >>> s = selective_threshold(P, y, 0.9, guarantee=0.9)
    >>> s.met, s.threshold, round(s.bound, 4)
    (True, 0.701, 0.9441)
    """
    check_param("target_accuracy", target_accuracy, [Interval("real", 0, 1, closed="right")])
    confidence, correct = _confidence_and_correct(P, y)
    n = confidence.size
    if not correct.any():
        raise InvalidInputError(
            f"none of the {n} labelled rows is answered correctly: no threshold can reach "
            f"accuracy {target_accuracy:g}"
        )
    # Accuracy on answered rows is the precision of "correct" at a threshold on confidence.
    plain = operating_point(
        confidence, correct.astype(np.int64), 1, target_precision=target_accuracy
    )
    if guarantee is None:
        verdict = "reaches" if plain.met else "cannot reach (highest accuracy shown)"
        return SelectiveThreshold(
            target_accuracy=float(target_accuracy),
            guarantee=None,
            met=plain.met,
            threshold=plain.threshold,
            accuracy=plain.precision,
            coverage=plain.n_predicted / n,
            n_answered=plain.n_predicted,
            n_correct=plain.n_true_positive,
            n_rows=n,
            bound=None,
            rows_needed=None,
            explanation=(
                f"answering confidence >= {plain.threshold:.6g} {verdict} accuracy "
                f"{target_accuracy:g} on these rows: {plain.n_true_positive}/"
                f"{plain.n_predicted} correct, coverage {plain.n_predicted / n:.1%}"
            ),
        )
    test = precision_threshold(confidence, correct, target_accuracy, check_guarantee(guarantee))
    t = plain.threshold if test.threshold is None else test.threshold
    answered = confidence >= t
    n_answered, n_correct = int(answered.sum()), int((answered & correct).sum())
    return SelectiveThreshold(
        target_accuracy=float(target_accuracy),
        guarantee=test.guarantee,
        met=test.met,
        threshold=float(t),
        accuracy=n_correct / n_answered if n_answered else float("nan"),
        coverage=n_answered / n,
        n_answered=n_answered,
        n_correct=n_correct,
        n_rows=n,
        bound=test.bound,
        rows_needed=test.rows_needed,
        explanation=test.explain("accuracy of the automatic answers"),
    )


def predicted_selective_threshold(P, target_accuracy: float) -> SelectiveThreshold:
    """The loosest threshold whose answered rows are *predicted* to reach ``target_accuracy``.

    No labels: if ``P`` is calibrated, the expected accuracy of the answered
    rows is their mean confidence. Only as good as the calibration.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Calibrated probability rows (unlabelled).
    target_accuracy : float in (0, 1]

    Returns
    -------
    SelectiveThreshold
        ``accuracy`` is the predicted accuracy and ``n_correct`` its rounded
        expected count; ``met`` says whether the prediction reaches the target.

    Examples
    --------
    >>> s = predicted_selective_threshold([[0.99, 0.01], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], 0.9)
    >>> s.met, s.threshold, s.coverage, round(s.accuracy, 4)
    (True, 0.9, 0.5, 0.945)
    """
    check_param("target_accuracy", target_accuracy, [Interval("real", 0, 1, closed="right")])
    confidence = check_probabilities(P).max(axis=1)
    point = operating_point_from_probabilities(confidence, 1, target_precision=target_accuracy)
    n = confidence.size
    verdict = "is predicted to reach" if point.met else "cannot be predicted to reach"
    return SelectiveThreshold(
        target_accuracy=float(target_accuracy),
        guarantee=None,
        met=point.met,
        threshold=point.threshold,
        accuracy=point.predicted_precision,
        coverage=point.n_predicted / n,
        n_answered=point.n_predicted,
        n_correct=round(point.predicted_precision * point.n_predicted),
        n_rows=n,
        bound=None,
        rows_needed=None,
        explanation=(
            f"answering confidence >= {point.threshold:.6g} {verdict} accuracy "
            f"{target_accuracy:g} (predicted {point.predicted_precision:.4f} from the "
            f"probabilities alone), coverage {point.n_predicted / n:.1%}"
        ),
    )


def route(P, threshold: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decide every row: answer with its top class when confidence ``>= threshold``.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Calibrated probability rows.
    threshold : float in [0, 1]
        Confidence needed to answer automatically.

    Returns
    -------
    answer : numpy.ndarray of bool
        True: answer automatically; False: hand to a person.
    label : numpy.ndarray of int
        The top class of every row (meaningful where ``answer``).
    expected : dict
        ``coverage`` (share answered), ``accuracy`` (the accuracy the
        calibrated probabilities predict on the answered rows: their mean
        confidence; NaN when none is answered), ``n_answered``, ``n_rows``.

    Examples
    --------
    >>> answer, label, expected = route([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45]], 0.7)
    >>> answer.tolist(), label.tolist(), expected["coverage"], expected["accuracy"]
    ([True, True, False], [0, 1, 0], 0.6666666666666666, 0.8)
    """
    check_param("threshold", threshold, [Interval("real", 0, 1)])
    arr = check_probabilities(P)
    confidence = arr.max(axis=1)
    answer = confidence >= threshold
    if answer.size == 0:
        raise InvalidInputError("no rows to route")
    return (
        answer,
        arr.argmax(axis=1),
        {
            "coverage": float(answer.mean()),
            "accuracy": predicted_precision(confidence, 1, threshold) if answer.any() else np.nan,
            "n_answered": int(answer.sum()),
            "n_rows": int(answer.size),
        },
    )
