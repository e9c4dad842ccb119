"""Exact (Clopper–Pearson) intervals for binomial proportions: the one place they are computed.

Reliability tables use them per bin, thresholds and reports for a realised
precision or recall.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from verbcal.errors import InvalidInputError
from verbcal.validation import Constraint, Interval, check_param

__all__ = ["CONFIDENCE", "binomial_intervals", "clopper_pearson"]

#: What a ``confidence`` (level of an interval) may be.
CONFIDENCE: list[Constraint] = [Interval("real", 0, 1, closed="neither")]


def binomial_intervals(
    successes: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact intervals for many proportions ``successes / trials`` at once.

    Parameters
    ----------
    successes, trials : array of int
        Counts of the same shape, ``0 <= successes <= trials``.
    confidence : float, default 0.95
        Coverage of each two-sided interval.

    Returns
    -------
    (ndarray, ndarray)
        Lower and upper bounds: 0 where ``successes == 0``, 1 where
        ``successes == trials``, NaN where ``trials == 0``.
    """
    check_param("confidence", confidence, CONFIDENCE)
    alpha = 1.0 - confidence
    k = np.asarray(successes, dtype=float)
    n = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n == 0
    low[empty] = np.nan
    high[empty] = np.nan
    return low, high


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial proportion ``k / n``.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, ``n >= 1``.
    confidence : float, default 0.95
        Coverage of the two-sided interval.

    Returns
    -------
    (float, float)
        Lower and upper bound; 0 and 1 at the edges ``k == 0`` and ``k == n``.

    Examples
    --------
    >>> low, high = clopper_pearson(3, 3)
    >>> round(low, 4), high
    (0.2924, 1.0)
    """
    if n < 1 or not 0 <= k <= n:
        raise InvalidInputError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    low, high = binomial_intervals(np.array([k]), np.array([n]), confidence)
    return float(low[0]), float(high[0])
