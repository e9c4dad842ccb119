"""Thresholds with a finite-sample guarantee: Learn-then-Test with Clopper–Pearson bounds.

A threshold chosen because it reaches precision 0.9 on the calibration rows
reaches about 0.9 on new rows *on average*; half the time it falls short. A
guarantee is a statement about the calibration sample: with probability at
least ``guarantee`` over the draw of the calibration rows, the threshold
returned has precision (or recall, or selective accuracy) at least the target
on new rows from the same distribution.

Method (Angelopoulos et al. 2021, "Learn then Test", fixed-sequence testing):

* Candidate thresholds form a grid fixed before any data is seen (default:
  ``0, 0.001, …, 1``). Between two grid points no calibration score lies, so
  a finer grid changes nothing but the resolution.
* For each candidate ``t`` the null hypothesis is "the rate at ``t`` is below
  the target". Given how many calibration rows count at ``t`` (rows with
  score ``>= t`` for precision; positive rows for recall), the successes among
  them are binomial with the rate at ``t`` as success probability, so the
  one-sided Clopper–Pearson lower bound at level ``guarantee`` rejects the
  null with probability at most ``1 - guarantee`` when it is true.
* The candidates are tested in a fixed order and testing stops at the first
  that fails; every candidate before it is guaranteed at once (fixed-sequence
  testing controls the family-wise error at ``1 - guarantee`` without a
  Bonferroni correction). Precision: strict to loose, starting at the
  strictest threshold that *could* pass: one that selects at least
  :func:`min_trials` rows, the fewest whose bound can clear the target even
  if all are successes. Stricter thresholds select fewer rows and would fail
  whatever the labels, and a first failure would end the sequence at once
  (a coarse model's handful of "100 %" answers would block every threshold).
  The start depends on how many scores lie above each candidate, never on
  the labels. Recall falls as the threshold rises, so it is tested loose to
  strict, and the guaranteed thresholds are exactly those whose bound passes.
* Every candidate that passed is guaranteed; the loosest is returned for a
  precision (or accuracy) target, as it selects the most new rows, and the
  strictest for a recall target, as it selects the fewest negatives.

When no candidate passes, :attr:`GuaranteedThreshold.rows_needed` estimates
how many labelled rows would let one pass if the rates observed stayed the
same: the counts are scaled up until the Clopper–Pearson bound of the first
candidate in the sequence clears the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics.intervals import binomial_intervals
from verbcal.validation import Interval, check_param

__all__ = [
    "DEFAULT_GRID",
    "GuaranteedThreshold",
    "check_guarantee",
    "lower_bound",
    "min_trials",
    "precision_threshold",
    "recall_threshold",
    "rows_for_bound",
]

#: Candidate thresholds fixed before any data is seen: 0, 0.001, …, 1 (exact thousandths).
DEFAULT_GRID = np.arange(1001) / 1000.0


@dataclass(frozen=True)
class GuaranteedThreshold:
    """The outcome of a fixed-sequence test over candidate thresholds.

    Attributes
    ----------
    kind : {"precision", "recall"}
        The rate guaranteed. Selective accuracy is the precision of "correct".
    target, guarantee : float
        The rate asked for, and the probability (over the calibration sample)
        with which it is promised.
    met : bool
        Whether some candidate passed.
    threshold : float or None
        The guaranteed threshold (``score >= threshold``); None when ``met`` is False.
    bound : float
        One-sided Clopper–Pearson lower bound on the rate at ``threshold`` (at
        the first candidate tested when nothing passed).
    successes, trials : int
        The counts behind ``bound``: true positives over predicted positives
        (precision) or over positives (recall).
    n_passed : int
        Candidates guaranteed (all of them hold at once).
    rows_needed : int or None
        When ``met`` is False: the labelled rows in all (these ones included)
        that would let the first candidate pass at the rate observed there;
        None when ``met`` is True, or when the rate observed is not above the
        target (then no number of rows would do).
    n_rows : int
        Labelled rows given.
    """

    kind: str
    target: float
    guarantee: float
    met: bool
    threshold: float | None
    bound: float
    successes: int
    trials: int
    n_passed: int
    rows_needed: int | None
    n_rows: int

    def explain(self, what: str | None = None) -> str:
        """One sentence a user can act on; ``what`` names the rate (default: ``kind``)."""
        what = what or self.kind
        level = f"{self.guarantee:.0%}"
        if self.met:
            return (
                f"with probability >= {level} over the calibration rows, {what} on new "
                f"rows is >= {self.target:g} at threshold {self.threshold:g} (lower bound "
                f"{self.bound:.4f} from {self.successes}/{self.trials})"
            )
        if self.rows_needed is None:
            return (
                f"no threshold can be guaranteed at {level}: the observed {what} "
                f"({self.successes}/{self.trials}) is not above the target {self.target:g}, "
                "so more rows at this rate would not help"
            )
        more = self.rows_needed - self.n_rows
        return (
            f"no threshold can be guaranteed at {level} with {self.n_rows} labelled rows: "
            f"the first candidate's lower bound is {self.bound:.4f} < {self.target:g} "
            f"({self.successes}/{self.trials}); at the observed {what} about "
            f"{self.rows_needed} labelled rows ({more} more) would be needed"
        )


# ----------------------------------------------------------------------------- checks


def check_guarantee(guarantee) -> float:
    """``guarantee`` as a float in (0.5, 1), or raise :class:`ConfigurationError`."""
    if isinstance(guarantee, bool) or not isinstance(guarantee, Real):
        raise ConfigurationError(f"guarantee must be a number in (0.5, 1), got {guarantee!r}")
    value = float(guarantee)
    if not 0.5 < value < 1.0:
        raise ConfigurationError(
            f"guarantee must be in (0.5, 1) (a probability over the calibration sample), "
            f"got {guarantee!r}"
        )
    return value


def _check_target(target) -> float:
    check_param("target", target, [Interval("real", 0, 1, closed="right")])
    if target == 1:
        raise ConfigurationError(
            "a target of 1 can never be guaranteed from a finite sample (no lower bound "
            "reaches 1): ask for less than 1, or drop the guarantee"
        )
    return float(target)


def _check_grid(grid) -> np.ndarray:
    arr = np.unique(np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.isfinite(arr).all():
        raise ConfigurationError("grid must be a non-empty 1-D array of finite thresholds")
    return arr


def _check_scores(scores, success) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    ok = np.asarray(success)
    if s.ndim != 1 or ok.shape != s.shape:
        raise InvalidInputError(
            f"scores and success must be 1-D of the same length, got {s.shape} and {ok.shape}"
        )
    if s.size == 0:
        raise InvalidInputError("no rows: a guarantee needs labelled calibration rows")
    if not np.isfinite(s).all():
        raise InvalidInputError(
            f"scores row {int(np.flatnonzero(~np.isfinite(s))[0])} is not finite"
        )
    if ok.dtype != bool:
        raise InvalidInputError(f"success must be a boolean vector, got dtype {ok.dtype}")
    return s, ok


# ----------------------------------------------------------------------------- bounds


def lower_bound(successes, trials, guarantee: float) -> np.ndarray:
    """One-sided Clopper–Pearson lower bounds at level ``guarantee`` (0 where ``successes`` is 0).

    Counts may be non-integer (used to extrapolate rates to more rows).
    NaN where ``trials`` is 0.

    Examples
    --------
    >>> abs(float(lower_bound(10, 10, 0.95)[0]) - 0.05 ** (1 / 10)) < 1e-12  # k == n
    True
    """
    level = check_guarantee(guarantee)
    # The two-sided interval at 2g - 1 leaves 1 - g in each tail.
    low, _ = binomial_intervals(
        np.atleast_1d(np.asarray(successes, dtype=float)),
        np.atleast_1d(np.asarray(trials, dtype=float)),
        2.0 * level - 1.0,
    )
    return low


def min_trials(target: float, guarantee: float) -> int:
    """Fewest trials whose lower bound can reach ``target``: all successes, ``(1-g)^(1/n) >= t``.

    Examples
    --------
    >>> min_trials(0.9, 0.95)
    29
    """
    value, level = _check_target(target), check_guarantee(guarantee)
    n = max(1, math.ceil(math.log(1.0 - level) / math.log(value)))
    while lower_bound(n, n, level)[0] < value:  # float rounding at the edge
        n += 1
    return n


def rows_for_bound(rate: float, trials: int, target: float, guarantee: float) -> float:
    """Smallest factor ``f >= 1`` with ``lower_bound(f * rate * trials, f * trials) >= target``.

    ``math.inf`` when ``rate <= target`` (no number of rows at that rate would do).

    Examples
    --------
    >>> f = rows_for_bound(1.0, 10, 0.9, 0.95)  # needs n with 0.05 ** (1/n) >= 0.9
    >>> round(f * 10, 2)
    28.43
    """
    if rate <= target:
        return math.inf

    def passes(f: float) -> bool:
        return bool(lower_bound(f * rate * trials, f * trials, guarantee)[0] >= target)

    if passes(1.0):
        return 1.0
    low, high = 1.0, 2.0
    while not passes(high):
        low, high = high, high * 2.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (low, mid) if passes(mid) else (mid, high)
    return high


# ----------------------------------------------------------------------------- procedures


def _count_at_or_above(sorted_desc: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the (decreasing) scores are ``>= t`` for every ``t``."""
    return np.searchsorted(-sorted_desc, -thresholds, side="right")


def precision_threshold(
    scores,
    success,
    target: float,
    guarantee: float,
    *,
    grid=None,
) -> GuaranteedThreshold:
    """The loosest threshold whose precision on new rows is guaranteed to reach ``target``.

    Parameters
    ----------
    scores : array-like of shape (n,)
        A score per labelled calibration row (a probability or a confidence).
    success : array-like of bool, shape (n,)
        Whether the row counts as a success when selected (is positive; is
        answered correctly).
    target : float in (0, 1)
        Precision (share of successes among rows with ``score >= threshold``).
    guarantee : float in (0.5, 1)
        Probability over the calibration sample that the promise holds.
    grid : array-like, optional
        Candidate thresholds, fixed in advance (default :data:`DEFAULT_GRID`).

    Returns
    -------
    GuaranteedThreshold

    Examples
    --------
    >>> scores = [0.95] * 40 + [0.8] * 40
    >>> success = [True] * 40 + [True] * 28 + [False] * 12
    >>> g = precision_threshold(scores, success, 0.9, 0.9)
    >>> g.met, g.threshold, g.successes, g.trials, round(g.bound, 4)
    (True, 0.801, 40, 40, 0.9441)
    """
    s, ok = _check_scores(scores, success)
    value, level, grid_ = _check_target(target), check_guarantee(guarantee), _check_grid(grid)
    order = np.argsort(-s, kind="stable")
    n_sel = _count_at_or_above(s[order], grid_[::-1])  # strict -> loose
    hits = np.r_[0, np.cumsum(ok[order])][n_sel]
    testable = np.flatnonzero(n_sel >= min_trials(value, level))
    # Too few rows for any threshold to pass: the loosest one stands for the estimate below.
    start = int(testable[0]) if testable.size else n_sel.size - 1
    if n_sel[start] == 0:
        raise InvalidInputError(
            f"no score reaches the grid's smallest threshold {grid_[0]:g}: nothing to test"
        )
    seq = start + np.arange(n_sel.size - start)
    bounds = lower_bound(hits[seq], n_sel[seq], level)
    failed = np.flatnonzero(bounds < value)
    n_passed = int(failed[0]) if failed.size else int(seq.size)
    if n_passed == 0:
        first = seq[0]
        rate = hits[first] / n_sel[first]
        factor = rows_for_bound(rate, int(n_sel[first]), value, level)
        return GuaranteedThreshold(
            kind="precision",
            target=value,
            guarantee=level,
            met=False,
            threshold=None,
            bound=float(bounds[0]),
            successes=int(hits[first]),
            trials=int(n_sel[first]),
            n_passed=0,
            rows_needed=None if math.isinf(factor) else math.ceil(factor * s.size),
            n_rows=int(s.size),
        )
    # Every passed candidate is guaranteed; the loosest selects the most new rows.
    best = seq[n_passed - 1]
    return GuaranteedThreshold(
        kind="precision",
        target=value,
        guarantee=level,
        met=True,
        threshold=float(grid_[::-1][best]),
        bound=float(bounds[best - seq[0]]),
        successes=int(hits[best]),
        trials=int(n_sel[best]),
        n_passed=n_passed,
        rows_needed=None,
        n_rows=int(s.size),
    )


def recall_threshold(
    scores,
    positive,
    target: float,
    guarantee: float,
    *,
    grid=None,
) -> GuaranteedThreshold:
    """The strictest threshold whose recall on new rows is guaranteed to reach ``target``.

    Recall at ``t`` is the share of positive rows with ``score >= t``; it can
    only fall as ``t`` rises, so candidates are tested loose to strict.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Positive-class score per labelled calibration row.
    positive : array-like of bool, shape (n,)
        Whether the row is positive.
    target : float in (0, 1)
        Recall asked for.
    guarantee : float in (0.5, 1)
        Probability over the calibration sample that the promise holds.
    grid : array-like, optional
        Candidate thresholds, fixed in advance (default :data:`DEFAULT_GRID`).

    Returns
    -------
    GuaranteedThreshold

    Examples
    --------
    >>> scores = [0.9] * 50 + [0.6] * 40 + [0.2] * 10
    >>> g = recall_threshold(scores, [True] * 95 + [False] * 5, 0.8, 0.9)
    >>> g.met, g.threshold, g.successes, g.trials
    (True, 0.6, 90, 95)
    """
    s, pos = _check_scores(scores, positive)
    value, level, grid_ = _check_target(target), check_guarantee(guarantee), _check_grid(grid)
    n_pos = int(pos.sum())
    if n_pos == 0:
        raise InvalidInputError("no positive row: recall cannot be bounded")
    found = _count_at_or_above(np.sort(s[pos])[::-1], grid_)  # loose -> strict
    bounds = lower_bound(found, np.full(found.shape, n_pos), level)
    failed = np.flatnonzero(bounds < value)
    n_passed = int(failed[0]) if failed.size else int(grid_.size)
    if n_passed == 0:
        factor = rows_for_bound(found[0] / n_pos, n_pos, value, level)
        return GuaranteedThreshold(
            kind="recall",
            target=value,
            guarantee=level,
            met=False,
            threshold=None,
            bound=float(bounds[0]),
            successes=int(found[0]),
            trials=n_pos,
            n_passed=0,
            rows_needed=None if math.isinf(factor) else math.ceil(factor * s.size),
            n_rows=int(s.size),
        )
    # Every passed candidate is guaranteed; the strictest selects the fewest negatives.
    best = n_passed - 1
    return GuaranteedThreshold(
        kind="recall",
        target=value,
        guarantee=level,
        met=True,
        threshold=float(grid_[best]),
        bound=float(bounds[best]),
        successes=int(found[best]),
        trials=n_pos,
        n_passed=n_passed,
        rows_needed=None,
        n_rows=int(s.size),
    )
