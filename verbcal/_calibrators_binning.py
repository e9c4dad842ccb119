"""Calibrators that map (bins of) stated probabilities to observed frequencies."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression

from verbcal._calibrators_base import BaseCalibrator
from verbcal._calibrators_scaling import TemperatureScaling
from verbcal._errors import ConfigurationError

#: Prior strengths tried by ``ShrinkageBinning(prior_strength="auto")``.
PRIOR_STRENGTH_GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0, 1000.0)


def _check_min_probability(value) -> None:
    if isinstance(value, bool) or not 0 <= value < 0.5:
        raise ConfigurationError(f"min_probability must be in [0, 0.5), got {value!r}")


def _floor_and_renormalise(Q: np.ndarray, min_probability: float) -> np.ndarray:
    """Raise every one-vs-rest value to at least ``min_probability``, then rows to sum 1.

    A row whose values are all 0 before the floor becomes uniform.
    """
    Q = np.maximum(Q, min_probability)
    sums = Q.sum(axis=1, keepdims=True)
    return np.divide(Q, sums, out=np.full_like(Q, 1.0 / Q.shape[1]), where=sums > 0)


class IsotonicCalibration(BaseCalibrator):
    """One-vs-rest isotonic regression, renormalised (Zadrozny & Elkan 2002).

    For each class ``k`` a non-decreasing map from ``p_k`` to the frequency of
    ``y == k`` is fitted. Isotonic steps often reach exactly 0 or 1, which costs
    an infinite log-loss on the one test row that disagrees; so each value is
    raised to at least ``min_probability`` before the row is renormalised. A
    calibrated probability is then never 0, and never 1 either (the other
    classes keep at least ``min_probability`` each before renormalising).

    Parameters
    ----------
    min_probability : float, default 1e-3
        Floor of each one-vs-rest value.
    renormalize : bool, default False

    Attributes
    ----------
    isotonic_ : list of sklearn.isotonic.IsotonicRegression
        One fitted map per class.

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> cal = IsotonicCalibration().fit(P, [0, 1, 0, 1])
    >>> cal.predict_proba([[0.9, 0.1]]).round(4).tolist()  # 1 and 0, kept off the edges
    [[0.999, 0.001]]
    """

    def __init__(self, min_probability=1e-3, renormalize=False):
        self.min_probability = min_probability
        self.renormalize = renormalize

    def _fit(self, P, y):
        _check_min_probability(self.min_probability)
        self.isotonic_ = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                P[:, k], (y == k).astype(np.float64)
            )
            for k in range(P.shape[1])
        ]

    def _predict_proba(self, P):
        Q = np.column_stack([iso.predict(P[:, k]) for k, iso in enumerate(self.isotonic_)])
        return _floor_and_renormalise(Q, self.min_probability)


class HistogramBinning(BaseCalibrator):
    """One-vs-rest histogram binning with equal-width bins, renormalised.

    Each class's probability is replaced by the frequency of that class among
    the calibration rows whose probability falls in the same bin of
    ``[0, 1]`` (the last bin includes 1.0). A bin no calibration row fell in
    keeps its midpoint. Values are floored at ``min_probability`` and rows
    renormalised, as in :class:`IsotonicCalibration`.

    Parameters
    ----------
    n_bins : int, default 10
    min_probability : float, default 1e-3
    renormalize : bool, default False

    Attributes
    ----------
    bin_edges_ : ndarray of shape (n_bins + 1,)
    bin_values_ : ndarray of shape (K, n_bins)
        Calibrated value of each class and bin.

    Examples
    --------
    >>> P = np.array([[0.95, 0.05], [0.92, 0.08], [0.3, 0.7], [0.25, 0.75]])
    >>> cal = HistogramBinning(n_bins=2).fit(P, [0, 1, 1, 1])
    >>> cal.bin_values_.tolist()
    [[0.0, 0.5], [0.5, 1.0]]
    """

    def __init__(self, n_bins=10, min_probability=1e-3, renormalize=False):
        self.n_bins = n_bins
        self.min_probability = min_probability
        self.renormalize = renormalize

    def _bin(self, p: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.bin_edges_, p, side="right") - 1, 0, self.n_bins - 1)

    def _fit(self, P, y):
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, (int, np.integer)):
            raise ConfigurationError(f"n_bins must be an integer >= 1, got {self.n_bins!r}")
        if self.n_bins < 1:
            raise ConfigurationError(f"n_bins must be an integer >= 1, got {self.n_bins!r}")
        _check_min_probability(self.min_probability)
        self.bin_edges_ = np.linspace(0.0, 1.0, self.n_bins + 1)
        midpoints = (self.bin_edges_[:-1] + self.bin_edges_[1:]) / 2
        values = []
        for k in range(P.shape[1]):
            bins = self._bin(P[:, k])
            counts = np.bincount(bins, minlength=self.n_bins)
            hits = np.bincount(bins, weights=(y == k), minlength=self.n_bins)
            frequency = np.divide(hits, counts, out=midpoints.copy(), where=counts > 0)
            values.append(frequency)
        self.bin_values_ = np.array(values)

    def _predict_proba(self, P):
        Q = np.column_stack([self.bin_values_[k, self._bin(P[:, k])] for k in range(P.shape[1])])
        return _floor_and_renormalise(Q, self.min_probability)


def _replace_top(Q: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Set each row's largest probability to ``top``; rescale the others to fill the rest."""
    rows = np.arange(len(Q))
    winner = Q.argmax(axis=1)
    rest = Q.copy()
    rest[rows, winner] = 0.0
    rest_sum = rest.sum(axis=1, keepdims=True)
    # Rows whose other classes underflowed to 0 share the remainder equally.
    equal = np.where(np.arange(Q.shape[1]) == winner[:, None], 0.0, 1.0 / (Q.shape[1] - 1))
    shares = np.divide(rest, rest_sum, out=equal, where=rest_sum > 0)
    out = shares * (1.0 - top)[:, None]
    out[rows, winner] = top
    return out


class ShrinkageBinning(BaseCalibrator):
    """Top-label binning of the stated confidence, shrunk toward temperature scaling.

    Verbalized confidences are coarse (a handful of distinct values such as
    0.8, 0.9, 0.95, 1.0), so each distinct stated top probability is a natural
    bin. Within bin ``g`` (``n_g`` calibration rows, ``a_g`` of them answered
    correctly) a row whose temperature-scaled confidence is ``c`` gets the
    confidence::

        (a_g + alpha * c) / (n_g + alpha)

    the posterior mean of a Beta prior of strength ``alpha`` centred on ``c``.
    Well-populated bins follow their observed accuracy (what isotonic
    regression does well for ECE); sparse bins stay near temperature scaling
    (what wins on NLL); with ``alpha > 0`` nothing reaches 0 or 1. The other
    classes share the remaining mass in their temperature-scaled proportions.
    A stated value never seen in calibration goes to the bin of the nearest seen
    value; with more than ``max_bins`` distinct values, bins are merged at
    quantiles.

    Parameters
    ----------
    prior_strength : "auto" or float, default "auto"
        ``alpha``. "auto" picks it from a grid by leave-one-out NLL on the
        calibration rows (the bin counts without the row itself).
    max_bins : int, default 30
    eps : "auto" or float, default "auto"
        Passed to the inner :class:`TemperatureScaling`.
    renormalize : bool, default False

    Attributes
    ----------
    temperature_scaling_ : TemperatureScaling
    bin_values_ : ndarray
        Stated top probability that represents each bin.
    bin_counts_, bin_correct_ : ndarray
        Rows and correct answers per bin.
    prior_strength_ : float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> P = np.tile([[0.9, 0.1], [0.6, 0.4]], (50, 1))
    >>> y = (rng.random(100) > np.tile([0.7, 0.6], 50)).astype(int)  # 70% and 60% right
    >>> cal = ShrinkageBinning().fit(P, y)
    >>> cal.bin_values_.tolist(), cal.bin_counts_.tolist()
    ([0.6, 0.9], [50, 50])
    """

    def __init__(self, prior_strength="auto", max_bins=30, eps="auto", renormalize=False):
        self.prior_strength = prior_strength
        self.max_bins = max_bins
        self.eps = eps
        self.renormalize = renormalize

    def _check_params(self):
        alpha = self.prior_strength
        if not (alpha == "auto" if isinstance(alpha, str) else alpha > 0):
            raise ConfigurationError(f'prior_strength must be "auto" or > 0, got {alpha!r}')
        if isinstance(self.max_bins, bool) or not isinstance(self.max_bins, (int, np.integer)):
            raise ConfigurationError(f"max_bins must be an integer >= 1, got {self.max_bins!r}")
        if self.max_bins < 1:
            raise ConfigurationError(f"max_bins must be an integer >= 1, got {self.max_bins!r}")

    def _bin(self, P: np.ndarray) -> np.ndarray:
        """Index of the bin whose representative value is nearest each row's top probability."""
        midpoints = (self.bin_values_[1:] + self.bin_values_[:-1]) / 2
        return np.searchsorted(midpoints, P.max(axis=1))

    def _fit(self, P, y):
        self._check_params()
        self.temperature_scaling_ = TemperatureScaling(eps=self.eps).fit(P, y)
        Q = self.temperature_scaling_.predict_proba(P)
        top = P.max(axis=1)
        values = np.unique(top)
        if len(values) > self.max_bins:
            values = np.unique(np.quantile(top, np.linspace(0, 1, self.max_bins)))
        self.bin_values_ = values
        bins = self._bin(P)
        correct = (Q.argmax(axis=1) == y).astype(np.float64)
        self.bin_counts_ = np.bincount(bins, minlength=len(values))
        self.bin_correct_ = np.bincount(bins, weights=correct, minlength=len(values))
        if self.prior_strength == "auto":
            self.loo_nll_ = {a: self._loo_nll(Q, y, bins, correct, a) for a in PRIOR_STRENGTH_GRID}
            self.prior_strength_ = min(self.loo_nll_, key=self.loo_nll_.get)
        else:
            self.prior_strength_ = float(self.prior_strength)

    def _loo_nll(self, Q, y, bins, correct, alpha) -> float:
        """Mean NLL when each row is calibrated by its bin's counts without itself."""
        n = self.bin_counts_[bins] - 1
        a = self.bin_correct_[bins] - correct
        top = (a + alpha * Q.max(axis=1)) / (n + alpha)
        gold = _replace_top(Q, top)[np.arange(len(y)), y]
        return float(-np.mean(np.log(gold)))

    def _predict_proba(self, P):
        Q = self.temperature_scaling_.predict_proba(P)
        bins = self._bin(P)
        alpha = self.prior_strength_
        top = (self.bin_correct_[bins] + alpha * Q.max(axis=1)) / (self.bin_counts_[bins] + alpha)
        return _replace_top(Q, top)
