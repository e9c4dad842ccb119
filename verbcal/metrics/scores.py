"""The metrics: calibration errors, proper scores, reliability tables, bootstrap intervals.

The conventions are in the package docstring (:mod:`verbcal.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from verbcal.errors import InvalidInputError
from verbcal.metrics.binning import (
    STRATEGIES,
    BinSums,
    assign_uniform,
    bin_edges,
    uniform_edges,
    uniform_floor_is_exact,
)
from verbcal.metrics.intervals import CONFIDENCE, binomial_intervals
from verbcal.metrics.toplabel import iter_top_label
from verbcal.validation import (
    Constraint,
    Interval,
    Options,
    check_labels,
    check_params,
    check_probabilities,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "BootstrapCI",
    "ReliabilityTable",
    "accuracy",
    "bootstrap_ci",
    "brier",
    "class_ece",
    "classwise_ece",
    "debiased_ece",
    "ece",
    "mce",
    "nll",
    "reliability_table",
    "standard_metrics",
]

#: Default clipping of the gold-class probability in ``nll``: scikit-learn's (float64 eps).
NLL_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class ReliabilityTable:
    """Per-bin reliability data, ready to draw (no plotting here).

    Attributes
    ----------
    edges : ndarray of shape (B + 1,)
        Bin edges; bin ``b`` is ``[edges[b], edges[b + 1])``, the last one closed.
    count : ndarray of shape (B,)
        Rows per bin.
    accuracy : ndarray of shape (B,)
        Fraction of correct predictions (or of positives, for a class
        table) per bin; NaN for an empty bin.
    confidence : ndarray of shape (B,)
        Mean score per bin; NaN for an empty bin.
    ci_low, ci_high : ndarray of shape (B,)
        Clopper–Pearson (exact binomial) interval of the accuracy at level
        ``ci_confidence``; NaN for an empty bin.
    n_distinct : int
        Number of distinct scores. Verbalized probabilities are coarse: a
        value far below ``n`` says that bins hold a few stated values each.
    strategy : str
        Binning strategy used.
    ci_confidence : float
        Level of the intervals ``ci_low``, ``ci_high`` (0.95 for 95% intervals).
    class_index : int or None
        None for the top-label table, else the class whose probability is binned.
    """

    edges: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_distinct: int
    strategy: str
    ci_confidence: float
    class_index: int | None

    @property
    def n_bins(self) -> int:
        return int(self.count.shape[0])


class BootstrapCI(NamedTuple):
    """A bootstrap confidence interval, unpackable as ``estimate, low, high``."""

    estimate: float  #: The metric on all rows.
    low: float  #: Lower percentile bound.
    high: float  #: Upper percentile bound.


# ---------------------------------------------------------------- input checks


#: True while the metrics run on resamples of rows that were checked once already.
_ROWS_CHECKED: ContextVar[bool] = ContextVar("verbcal_rows_checked", default=False)


@contextmanager
def resampling_checked_rows() -> Iterator[None]:
    """Skip the input checks inside: the caller passes resamples of checked rows only.

    Checking each of hundreds of bootstrap resamples again costs more than the
    metrics themselves on large inputs.
    """
    token = _ROWS_CHECKED.set(True)
    try:
        yield
    finally:
        _ROWS_CHECKED.reset(token)


def _checked(P, y) -> tuple[np.ndarray, np.ndarray]:
    """Fully checked ``P`` (float64, (n, K)) and ``y``."""
    if _ROWS_CHECKED.get():
        return P, y
    P = check_probabilities(P)
    return P, check_labels(y, P.shape[0], P.shape[1])


def _checked_for_pass(P, y) -> tuple[np.ndarray, np.ndarray]:
    """Like ``_checked``, but a float64 matrix is left for ``iter_top_label`` to check rows.

    Checking the rows inside the single pass over ``P`` is what makes ``ece``
    about as fast as one ``P.max(axis=1)``; ``check_probabilities`` alone would
    cost several passes.
    """
    if _ROWS_CHECKED.get():
        return P, y
    plain = isinstance(P, np.ndarray) and P.dtype == np.float64 and P.ndim == 2
    if not (plain and P.shape[0] > 0 and P.shape[1] >= 2):
        P = check_probabilities(P)
    return P, check_labels(y, P.shape[0], P.shape[1])


#: What each parameter of the metrics may be (checked by ``check_params``).
PARAMETER_CONSTRAINTS: dict[str, list[Constraint]] = {
    "n_bins": [Interval("integer", 1, None)],
    "strategy": [Options(STRATEGIES)],
    "confidence": CONFIDENCE,
    "n_boot": [Interval("integer", 1, None)],
    "eps": [Interval("real", 0, 0.5, closed="neither")],
    "metric": [callable],
}


def _check(**values) -> None:
    check_params(values, {name: PARAMETER_CONSTRAINTS[name] for name in values})


# ---------------------------------------------------------------- binned sums


def _top_label(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and correctness of every row, as full arrays."""
    confidence = np.empty(P.shape[0])
    correct = np.empty(P.shape[0], dtype=bool)
    for start, conf, ok in iter_top_label(P, y):
        confidence[start : start + conf.shape[0]] = conf
        correct[start : start + conf.shape[0]] = ok
    return confidence, correct


def _top_label_sums(P, y, n_bins: int, strategy: str) -> BinSums:
    _check(n_bins=n_bins, strategy=strategy)
    P, y = _checked_for_pass(P, y)
    if strategy != "uniform":
        confidence, correct = _top_label(P, y)
        return BinSums.of(confidence, correct, bin_edges(confidence, n_bins, strategy))
    # Uniform bins are known up front: bin each chunk while it is in cache.
    sums = BinSums.empty(uniform_edges(n_bins))
    exact_floor = uniform_floor_is_exact(n_bins)
    for _, conf, correct in iter_top_label(P, y):
        sums.add(assign_uniform(conf, n_bins, exact_floor), conf, correct)
    return sums


# ---------------------------------------------------------------- metrics


def ece(P, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    ``sum_b (n_b / n) * |accuracy_b - confidence_b|`` over bins of the
    confidence ``max_k P[i, k]``, where a prediction is correct when the first
    maximising class is the gold label.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
        Number of bins (``"uniform"``, ``"quantile"``).
    strategy : {"uniform", "quantile", "distinct"}, default "uniform"
        Binning of the confidence (see the module docstring). Bins are
        ``[a, b)``, the last one ``[a, 1]``.

    Returns
    -------
    float
        In ``[0, 1]``.

    Examples
    --------
    >>> P = [[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
    >>> round(ece(P, [0, 1, 1, 0], n_bins=10), 6)  # (2 * 0.4 + 0.2 + 0.4) / 4
    0.35
    """
    return _top_label_sums(P, y, n_bins, strategy).ece()


def mce(P, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label maximum calibration error: the largest ``|accuracy_b - confidence_b|``.

    Only non-empty bins count. Parameters and conventions as in :func:`ece`.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
    strategy : {"uniform", "quantile", "distinct"}, default "uniform"

    Returns
    -------
    float

    Examples
    --------
    >>> P = [[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]
    >>> round(mce(P, [0, 1, 1, 0], n_bins=10), 6)
    0.4
    """
    return _top_label_sums(P, y, n_bins, strategy).mce()


def debiased_ece(P, y, n_bins: int = 15, strategy: str = "quantile") -> float:
    """Debiased top-label L2 calibration error (Kumar, Liang & Ma 2019).

    The plug-in squared gap of a bin overestimates the true one by the
    variance of the bin's accuracy; this estimator subtracts it::

        sqrt(max(0, sum_b (n_b / n) * [(conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1)]))

    where bins with fewer than 2 rows contribute 0. This is the estimator of
    uncertainty-calibration's ``get_calibration_error(P, y, p=2, debias=True,
    mode="top-label")``, whose binning is equal-mass for continuous scores
    (``strategy="quantile"``) and one bin per value for discrete ones
    (``strategy="distinct"``). It is an L2 error: compare it with other L2
    errors, not with the L1 :func:`ece`.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
    strategy : {"quantile", "uniform", "distinct"}, default "quantile"

    Returns
    -------
    float

    Examples
    --------
    >>> P = [[0.9, 0.1]] * 10 + [[0.3, 0.7]] * 10
    >>> y = [0] * 9 + [1] + [1] * 7 + [0] * 3
    >>> debiased_ece(P, y, strategy="distinct")  # each bin is perfectly calibrated
    0.0
    """
    return _top_label_sums(P, y, n_bins, strategy).debiased_l2()


def classwise_ece(P, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Class-wise ECE (Kull et al. 2019): the mean over classes of the ECE of ``P[:, k]``.

    For each class ``k``, the scores ``P[:, k]`` are binned against the
    outcomes ``y == k``; all K columns count, including the zeros a
    verbalized answer often states. Equals uncertainty-calibration's
    ``get_ece(P, y, mode="marginal")`` for uniform bins.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
    strategy : {"uniform", "quantile", "distinct"}, default "uniform"

    Returns
    -------
    float

    Examples
    --------
    >>> round(classwise_ece([[0.8, 0.2], [0.8, 0.2]], [0, 1], n_bins=10), 6)
    0.3
    """
    _check(n_bins=n_bins, strategy=strategy)
    P, y = _checked(P, y)
    return float(np.mean([_class_sums(P, y, k, n_bins, strategy).ece() for k in range(P.shape[1])]))


def _class_sums(P: np.ndarray, y: np.ndarray, k: int, n_bins: int, strategy: str) -> BinSums:
    """Bins of ``P[:, k]`` against the outcomes ``y == k`` (checked input)."""
    scores = np.ascontiguousarray(P[:, k])
    return BinSums.of(scores, y == k, bin_edges(scores, n_bins, strategy))


def class_ece(P, y, class_index: int, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Calibration error of one class's probability: the ECE of ``P[:, k]`` against ``y == k``.

    ``sum_b (n_b / n) * |frequency_b - mean_b|`` over bins of ``P[:, k]``; the
    mean over classes is :func:`classwise_ece`.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    class_index : int
        The class ``k`` in ``0..K-1``.
    n_bins : int, default 15
    strategy : {"uniform", "quantile", "distinct"}, default "uniform"

    Returns
    -------
    float

    Examples
    --------
    >>> round(class_ece([[0.8, 0.2], [0.8, 0.2]], [0, 1], class_index=1, n_bins=10), 6)
    0.3
    """
    _check(n_bins=n_bins, strategy=strategy)
    P, y = _checked(P, y)
    check_params(
        {"class_index": class_index},
        {"class_index": [Interval("integer", 0, P.shape[1] - 1)]},
    )
    return _class_sums(P, y, class_index, n_bins, strategy).ece()


def brier(P, y) -> float:
    """Multi-class Brier score: mean over rows of ``sum_k (P[i, k] - [y_i == k])^2``.

    Ranges over ``[0, 2]``. For a binary problem it is **twice**
    scikit-learn's ``brier_score_loss(y, P[:, 1])``, which scores the
    positive class only; it equals ``brier_score_loss(y, P,
    scale_by_half=False)`` (scikit-learn >= 1.7) for any K.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.

    Returns
    -------
    float

    Examples
    --------
    >>> brier([[1.0, 0.0], [0.5, 0.5]], [0, 1])  # (0 + 0.25 + 0.25) / 2
    0.25
    """
    P, y = _checked(P, y)
    gap = P.copy()
    gap[np.arange(P.shape[0]), y] -= 1.0
    return float(np.einsum("ij,ij->", gap, gap) / P.shape[0])


def nll(P, y, eps: float = NLL_EPS) -> float:
    """Negative log-likelihood (log loss) of the gold labels, in nats.

    ``-mean_i log(clip(P[i, y_i], eps, 1 - eps))``. Verbalized answers often
    give the gold class exactly 0, whose log is -inf: the clipping turns that
    into ``-log(eps)`` (about 36 for the default, which is scikit-learn's
    ``log_loss`` clipping, so the two agree). The value is dominated by such
    rows; pass a larger ``eps`` (e.g. ``1e-3``, the smoothing of
    ``invert_softmax``) for a number less driven by a few confident mistakes,
    and say which one you used.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    eps : float, default float64 machine epsilon (2.2e-16)
        Clipping, in ``(0, 0.5)``.

    Returns
    -------
    float

    Examples
    --------
    >>> round(nll([[0.5, 0.5], [0.2, 0.8]], [0, 1]), 6)  # -(log 0.5 + log 0.8) / 2
    0.458145
    """
    _check(eps=eps)
    P, y = _checked(P, y)
    gold = np.clip(P[np.arange(P.shape[0]), y], eps, 1.0 - eps)
    return float(-np.mean(np.log(gold)))


def accuracy(P, y) -> float:
    """Fraction of rows whose first maximising class is the gold label.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1 (so
        ``p = 0.5`` predicts class 0).
    y : array-like of shape (n,)
        Gold class indices.

    Returns
    -------
    float

    Examples
    --------
    >>> accuracy([[0.5, 0.5], [0.3, 0.7], [0.6, 0.4]], [1, 1, 0])  # a tie predicts class 0
    0.6666666666666666
    """
    P, y = _checked_for_pass(P, y)
    correct = sum(int(ok.sum()) for _, _, ok in iter_top_label(P, y))
    return correct / P.shape[0]


def reliability_table(
    P,
    y,
    n_bins: int = 15,
    strategy: str = "uniform",
    confidence: float = 0.95,
    *,
    class_index: int | None = None,
) -> ReliabilityTable:
    """Per-bin counts, accuracy, confidence and exact binomial intervals.

    Computes what a reliability diagram draws; drawing is left to the caller.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
    strategy : {"uniform", "quantile", "distinct"}, default "uniform"
        See the module docstring; bins are ``[a, b)``, the last ``[a, 1]``,
        and equal scores are never split between bins.
    confidence : float, default 0.95
        Level of the per-bin intervals (Clopper–Pearson, from ``scipy.stats.beta``).
    class_index : int or None, default None
        None bins the top-label confidence against correctness. An integer
        ``k`` bins ``P[:, k]`` against ``y == k`` (for a binary problem,
        ``class_index=1`` is scikit-learn's ``calibration_curve``).

    Returns
    -------
    ReliabilityTable

    Examples
    --------
    >>> table = reliability_table([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7]], [0, 1, 1], n_bins=5)
    >>> table.count.tolist(), table.accuracy.tolist()[3:], table.n_distinct
    ([0, 0, 0, 1, 2], [1.0, 0.5], 2)
    """
    _check(n_bins=n_bins, strategy=strategy, confidence=confidence)
    if class_index is None:
        scores, outcomes = _top_label(*_checked_for_pass(P, y))
    else:
        P, y = _checked(P, y)
        check_params(
            {"class_index": class_index},
            {"class_index": [None, Interval("integer", 0, P.shape[1] - 1)]},
        )
        scores, outcomes = np.ascontiguousarray(P[:, class_index]), y == class_index
    sums = BinSums.of(scores, outcomes, bin_edges(scores, n_bins, strategy))
    acc, conf = sums.means()
    low, high = binomial_intervals(sums.positive, sums.count, confidence)
    return ReliabilityTable(
        edges=sums.edges,
        count=sums.count,
        accuracy=acc,
        confidence=conf,
        ci_low=low,
        ci_high=high,
        n_distinct=int(np.unique(scores).shape[0]),
        strategy=strategy,
        ci_confidence=float(confidence),
        class_index=class_index,
    )


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    P,
    y,
    n_boot: int = 1000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = None,
) -> BootstrapCI:
    """Percentile bootstrap interval of any metric ``metric(P, y) -> float``.

    Rows are resampled with replacement (P and y together). Resample ``b``
    uses the indices ``rng.integers(0, n, n)`` drawn in turn from
    ``rng = np.random.default_rng(random_state)``, and the bounds are the
    ``alpha / 2`` and ``1 - alpha / 2`` percentiles (linear interpolation) of
    the resampled values, ``alpha = 1 - confidence``: the same numbers as
    ``scipy.stats.bootstrap`` of the
    row numbers with ``method="percentile", batch=1`` and the same generator.
    Pass extra metric arguments with ``functools.partial``.

    Parameters
    ----------
    metric : callable
        ``metric(P, y)`` returning a float, e.g. :func:`ece`.
    P : array-like of shape (n, K) or (n,)
        Probability rows; a 1-D array is the probability of class 1.
    y : array-like of shape (n,)
        Gold class indices.
    n_boot : int, default 1000
        Number of resamples.
    confidence : float, default 0.95
        Level of the interval.
    random_state : int, numpy.random.Generator or None
        Seed or generator, for reproducible intervals.

    Returns
    -------
    BootstrapCI
        ``(estimate, low, high)``, ``estimate = metric(P, y)`` on all rows.

    Examples
    --------
    >>> P, y = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]], [0, 1, 1, 0]
    >>> est, low, high = bootstrap_ci(accuracy, P, y, n_boot=200, random_state=0)
    >>> est, bool(0 <= low <= est <= high <= 1)
    (0.75, True)
    """
    _check(metric=metric, n_boot=n_boot, confidence=confidence)
    P, y = _checked(P, y)
    rng = np.random.default_rng(random_state)
    n = P.shape[0]
    values = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, n, n)
        values[b] = metric(P[rows], y[rows])
    if not np.isfinite(values).all():
        raise InvalidInputError(f"metric {metric!r} returned a non-finite value on a resample")
    return percentile_interval(metric(P, y), values, confidence)


def percentile_interval(estimate: float, values: np.ndarray, confidence: float) -> BootstrapCI:
    """``estimate`` with the central ``confidence`` percentile range of resampled ``values``."""
    alpha = 1.0 - confidence
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(float(estimate), float(low), float(high))


#: The metrics ``verbcal evaluate`` and the report show, in display order.
METRIC_NAMES = ("accuracy", "ece", "mce", "classwise_ece", "brier", "nll")
#: Those better when higher (all others are better when lower).
HIGHER_IS_BETTER = frozenset({"accuracy"})


def standard_metrics(n_bins: int = 15) -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    """The metrics of :data:`METRIC_NAMES` as ``metric(P, y)`` functions, binned ones on ``n_bins``.

    Examples
    --------
    >>> list(standard_metrics())
    ['accuracy', 'ece', 'mce', 'classwise_ece', 'brier', 'nll']
    """
    _check(n_bins=n_bins)
    return {
        "accuracy": accuracy,
        "ece": partial(ece, n_bins=n_bins),
        "mce": partial(mce, n_bins=n_bins),
        "classwise_ece": partial(classwise_ece, n_bins=n_bins),
        "brier": brier,
        "nll": nll,
    }
