"""Calibrators that map (bins of) stated probabilities to observed frequencies."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.isotonic import IsotonicRegression

from verbcal.calibrators.base import EPS_AUTO, BaseCalibrator
from verbcal.calibrators.scaling import TemperatureScaling
from verbcal.metrics.binning import assign_bins, uniform_edges
from verbcal.validation import Constraint, Interval, Options

#: Prior strengths tried by ``ShrinkageBinning(prior_strength="auto")``.
PRIOR_STRENGTH_GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0, 1000.0)

#: Stated values equal to this many decimals are one value: renormalising a row leaves
#: float noise (0.6 becomes 0.6000000000000001, or 0.5999999986 after a 1e-9 floor),
#: which is not a different statement and must not land in a different bin. Six
#: decimals, as rows may miss summing to 1 by 1e-6 (``validation.SUM_TOLERANCE``).
STATED_DECIMALS = 6


def _as_stated(P: np.ndarray) -> np.ndarray:
    """``P`` rounded to ``STATED_DECIMALS``: the values the binning calibrators compare."""
    return np.round(P, STATED_DECIMALS)


#: What a ``min_probability`` floor may be.
MIN_PROBABILITY: list[Constraint] = [Interval("real", 0, 0.5, closed="left")]


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
    Probabilities are compared rounded to 6 decimals, so float noise left by
    renormalising (0.6 and 0.6000000000000001) is one stated value.

    Parameters
    ----------
    min_probability : float, default 1e-3
        Floor of each one-vs-rest value.
    renormalize : bool, default False

    Attributes
    ----------
    thresholds_x_, thresholds_y_ : list of ndarray
        Per class, the knots of the fitted non-decreasing map (scikit-learn's
        ``IsotonicRegression.X_thresholds_`` / ``y_thresholds_``); predictions
        interpolate linearly between them and clip outside, as scikit-learn does.

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    >>> cal = IsotonicCalibration().fit(P, [0, 1, 0, 1])
    >>> cal.predict_proba([[0.9, 0.1]]).round(4).tolist()  # 1 and 0, kept off the edges
    [[0.999, 0.001]]
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "min_probability": MIN_PROBABILITY,
    }

    def __init__(self, min_probability=1e-3, renormalize=False):
        self.min_probability = min_probability
        self.renormalize = renormalize

    def _fit(self, P, y):
        P = _as_stated(P)
        fits = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                P[:, k], (y == k).astype(np.float64)
            )
            for k in range(P.shape[1])
        ]
        # Plain arrays rather than the fitted objects, so calibrator files stay JSON.
        self.thresholds_x_ = [fit.X_thresholds_ for fit in fits]
        self.thresholds_y_ = [fit.y_thresholds_ for fit in fits]

    def _predict_proba(self, P):
        P = _as_stated(P)
        Q = np.column_stack(
            [
                np.interp(P[:, k], x, y)
                for k, (x, y) in enumerate(zip(self.thresholds_x_, self.thresholds_y_, strict=True))
            ]
        )
        return _floor_and_renormalise(Q, self.min_probability)


class HistogramBinning(BaseCalibrator):
    """One-vs-rest histogram binning with equal-width bins, renormalised.

    Each class's probability is replaced by the frequency of that class among
    the calibration rows whose probability falls in the same bin of
    ``[0, 1]``: the bins of :mod:`verbcal.metrics`, edges ``i / n_bins``,
    ``[a, b)`` with the last one closed. A bin no calibration row fell in
    keeps its midpoint. Values are floored at ``min_probability`` and rows
    renormalised, as in :class:`IsotonicCalibration`. Probabilities are binned
    rounded to 6 decimals, so a stated 0.6 renormalised to 0.5999999999999999
    stays in the bin 0.6 opens.

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

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "n_bins": [Interval("integer", 1, None)],
        "min_probability": MIN_PROBABILITY,
    }

    def __init__(self, n_bins=10, min_probability=1e-3, renormalize=False):
        self.n_bins = n_bins
        self.min_probability = min_probability
        self.renormalize = renormalize

    def _bin(self, p: np.ndarray) -> np.ndarray:
        return assign_bins(_as_stated(p), self.bin_edges_)

    def _fit(self, P, y):
        self.bin_edges_ = uniform_edges(int(self.n_bins))
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


#: The top probability stays this far below 1 and each other class gets at least this
#: share of the rest: a block that was always right, or a temperature-scaled probability
#: that underflowed to 0, must not become a certain "always" or "never".
_MIN_SHARE = 1e-6


def _replace_top(Q: np.ndarray, top: np.ndarray, winner: np.ndarray) -> np.ndarray:
    """Set each row's ``winner`` probability to ``top``; rescale the others to fill the rest."""
    rows = np.arange(len(Q))
    rest = Q.copy()
    rest[rows, winner] = 0.0
    rest_sum = rest.sum(axis=1, keepdims=True)
    # Rows whose other classes underflowed to 0 share the remainder equally.
    equal = np.where(np.arange(Q.shape[1]) == winner[:, None], 0.0, 1.0 / (Q.shape[1] - 1))
    shares = np.divide(rest, rest_sum, out=equal, where=rest_sum > 0)
    shares = np.maximum(shares, _MIN_SHARE)
    shares[rows, winner] = 0.0
    shares /= shares.sum(axis=1, keepdims=True)
    out = shares * (1.0 - top)[:, None]
    out[rows, winner] = top
    return out


def _monotone_blocks(counts: np.ndarray, hits: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Block index of each value once adjacent values that break monotonicity are pooled.

    Pool-adjacent-violators on the accuracies ``hits / counts`` of values sorted
    ascending (every count > 0), separately within each run of equal ``groups``:
    the blocks are the runs of equal isotonic fit.
    """
    fitted = np.empty(len(counts))
    for group in np.unique(groups):
        members = groups == group
        fitted[members] = IsotonicRegression().fit_transform(
            np.flatnonzero(members), hits[members] / counts[members], sample_weight=counts[members]
        )
    same = np.isclose(fitted[1:], fitted[:-1], rtol=0.0, atol=1e-12) & (groups[1:] == groups[:-1])
    return np.cumsum(np.r_[True, ~same]) - 1


class ShrinkageBinning(BaseCalibrator):
    """Top-label binning of the stated confidence, shrunk toward temperature scaling or accuracy.

    Verbalized confidences are coarse (a handful of distinct values such as
    0.8, 0.9, 0.95, 1.0), so the distinct stated top probabilities make natural
    bins. Adjacent values whose accuracies are out of order are pooled into one
    block (pool-adjacent-violators, as isotonic regression does), so that a
    handful of rows at 0.7 cannot claim to be more reliable than 0.8. In block
    ``g`` with ``n_g`` calibration rows, ``a_g`` of them answered correctly and a
    mean temperature-scaled confidence ``c_g``, the top class gets::

        (a_g + alpha * c_g) / (n_g + alpha)

    the posterior mean of a Beta prior of strength ``alpha`` centred on
    temperature scaling. Big blocks follow their observed accuracy (what makes
    isotonic regression good on ECE); small blocks stay near temperature
    scaling (what makes it good on NLL). The other classes share the rest in
    their temperature-scaled proportions. The top probability is at most
    1 - 1e-6 and every other class gets at least 1e-6 of the rest, so one
    confidently wrong answer never costs an infinite NLL. Stated values are
    compared rounded to 6 decimals, so that float noise left by renormalising
    (0.6 and 0.6000000000000001) does not make two values of one. A stated
    value never seen in calibration goes to the block of the nearest seen
    value; beyond ``max_bins`` distinct values, values are merged at quantiles
    first.

    With ``toward="accuracy"`` every block shrinks toward one number instead,
    the accuracy of all the rows, itself the posterior mean of a Beta prior
    centred on their mean stated top probability (``c``) with strength
    ``accuracy_prior_strength`` (``k``)::

        level = (a + k * c) / (n + k)

    (``a`` of the ``n`` rows right). The prior says "the stated confidences
    are right on average", worth ``k`` rows: on the recorded answers the gap
    between a file's accuracy and its mean stated confidence has a root mean
    square of about 0.1, and ``k = 10`` matches that for accuracies of
    0.85–0.9 (``k = c (1 - c) / 0.1^2``). With few labelled rows the overall
    accuracy is the one thing the labels pin down; a map that varies with the
    stated value on top of it mostly adds noise, which the test-set ECE counts
    (``bench/label_efficiency.py``). The blocks still take over as their rows
    grow: at ``alpha = 20``, a block of 200 rows follows its own accuracy to
    within a tenth of the gap.

    Parameters
    ----------
    prior_strength : "auto" or float, default "auto"
        ``alpha``. "auto" picks it from ``(0.5, 1, 2, 5, …, 1000)`` by the
        leave-one-out NLL of the calibration rows (each row calibrated by the
        counts of its block without itself).
    by_class : bool, default False
        Bin the rows of each predicted class separately (binary problems, where
        "yes, 0.9" and "no, 0.9" may be right at different rates, gain most).
    max_bins : int, default 30
        Most bins (distinct stated values) before merging at quantiles.
    eps : "auto" or float, default "auto"
        Passed to the inner :class:`TemperatureScaling`.
    temperature_prior_scale : float or None, default None
        ``prior_scale`` of the inner :class:`TemperatureScaling` (priors on its
        temperature and smoothing, for few labelled rows).
    toward : {"temperature", "accuracy"}, default "temperature"
        What the blocks shrink toward: each block's mean temperature-scaled
        confidence, or the overall accuracy (above).
    accuracy_prior_strength : float, default 10.0
        ``k`` above (``toward="accuracy"`` only).
    renormalize : bool, default False

    Attributes
    ----------
    temperature_scaling_ : TemperatureScaling
    stated_values_ : ndarray
        The distinct stated top probabilities seen in calibration (ascending).
    block_of_value_ : ndarray of int
        Block of each stated value.
    block_counts_, block_correct_, block_confidence_ : ndarray
        Rows, correct answers and what each block shrinks toward (its mean
        temperature-scaled confidence, or ``accuracy_``).
    accuracy_ : float
        The overall accuracy the blocks shrink toward (``toward="accuracy"``
        only).
    prior_strength_ : float

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> P = np.tile([[0.9, 0.1], [0.6, 0.4]], (100, 1))
    >>> y = (rng.random(200) > np.tile([0.8, 0.6], 100)).astype(int)  # 80% and 60% right
    >>> cal = ShrinkageBinning().fit(P, y)
    >>> cal.stated_values_.tolist(), cal.block_counts_.tolist()
    ([0.6, 0.9], [100, 100])
    >>> cal.predict_proba([[0.9, 0.1]]).round(2).tolist()
    [[0.72, 0.28]]

    Toward the accuracy: 10 rows stated 0.9 (5 right) and 0.6 (2 of 5 right);
    the level is ``(7 + 10 * 0.75) / (10 + 10) = 0.725``, and the block of 0.9
    gets ``(5 + 20 * 0.725) / (5 + 20) = 0.78``.

    >>> P10, y10 = P[:10], np.array([0, 0, 0, 1, 0, 1, 0, 0, 0, 1])
    >>> cal = ShrinkageBinning(toward="accuracy", prior_strength=20.0).fit(P10, y10)
    >>> float(cal.accuracy_), cal.predict_proba([[0.9, 0.1], [0.6, 0.4]])[:, 0].round(3).tolist()
    (0.725, [0.78, 0.66])
    """

    def __init__(
        self,
        prior_strength="auto",
        by_class=False,
        max_bins=30,
        eps="auto",
        temperature_prior_scale=None,
        toward="temperature",
        accuracy_prior_strength=10.0,
        renormalize=False,
    ):
        self.prior_strength = prior_strength
        self.by_class = by_class
        self.max_bins = max_bins
        self.eps = eps
        self.temperature_prior_scale = temperature_prior_scale
        self.toward = toward
        self.accuracy_prior_strength = accuracy_prior_strength
        self.renormalize = renormalize

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "prior_strength": [Options(("auto",)), Interval("real", 0, None, closed="neither")],
        "by_class": [bool],
        "max_bins": [Interval("integer", 1, None)],
        "eps": EPS_AUTO,
        "temperature_prior_scale": [None, Interval("real", 0, None, closed="neither")],
        "toward": [Options(("temperature", "accuracy"))],
        "accuracy_prior_strength": [Interval("real", 0, None)],
    }

    def _key(self, P: np.ndarray) -> np.ndarray:
        """The stated top probability (rounded), shifted by 2 per predicted class if ``by_class``.

        Distinct keys differ by at least about ``10**-STATED_DECIMALS``, so the
        midpoint between two of them lies strictly between them. Unrounded, the
        midpoint of 0.6 and 0.6000000000000001 is 0.6000000000000001 itself:
        that value then held no calibration rows and its accuracy was 0 / 0.
        """
        top = _as_stated(P.max(axis=1))
        return top + (2.0 * self._top_class(P) if self.by_class else 0.0)

    @staticmethod
    def _top_class(P: np.ndarray) -> np.ndarray:
        """The predicted class: the first of the largest stated values, compared rounded.

        So float noise never decides a tie: 0.5 and 0.5000000000000001 are a tie,
        and both ``[0.5, 0.5]`` and its renormalised neighbours predict class 0.
        """
        return _as_stated(P).argmax(axis=1)

    def _block(self, P: np.ndarray) -> np.ndarray:
        """Block of each row: that of the stated value nearest its key."""
        midpoints = (self.stated_values_[1:] + self.stated_values_[:-1]) / 2
        return self.block_of_value_[np.searchsorted(midpoints, self._key(P))]

    def _fit(self, P, y):
        self.temperature_scaling_ = TemperatureScaling(
            eps=self.eps, prior_scale=self.temperature_prior_scale
        ).fit(P, y)
        Q = self.temperature_scaling_.predict_proba(P)
        top = self._key(P)
        values = np.unique(top)
        if len(values) > self.max_bins:
            quantiles = np.linspace(0, 1, self.max_bins)
            values = np.unique(np.quantile(top, quantiles, method="inverted_cdf"))
        self.stated_values_ = values
        self.block_of_value_ = np.arange(len(values))
        winner = self._top_class(P)
        correct = (winner == y).astype(np.float64)
        value_index = self._block(P)  # one block per value so far
        self.block_of_value_ = _monotone_blocks(
            np.bincount(value_index, minlength=len(values)),
            np.bincount(value_index, weights=correct, minlength=len(values)),
            groups=np.floor(values / 2.0),
        )
        blocks = self.block_of_value_[value_index]
        self.block_counts_ = np.bincount(blocks)
        self.block_correct_ = np.bincount(blocks, weights=correct)
        if self.toward == "accuracy":
            k = float(self.accuracy_prior_strength)
            stated = float(np.mean(P[np.arange(len(P)), winner]))
            self.accuracy_ = (float(correct.sum()) + k * stated) / (len(y) + k)
            self.block_confidence_ = np.full(len(self.block_counts_), self.accuracy_)
        else:
            confidence = Q[np.arange(len(Q)), winner]
            self.block_confidence_ = np.bincount(blocks, weights=confidence) / self.block_counts_
        if self.prior_strength == "auto":
            self.loo_nll_ = {
                a: self._loo_nll(Q, y, winner, blocks, correct, a) for a in PRIOR_STRENGTH_GRID
            }
            self.prior_strength_ = min(self.loo_nll_, key=self.loo_nll_.__getitem__)
        else:
            self.prior_strength_ = float(self.prior_strength)

    def _shrunk_top(self, blocks, alpha, n=None, a=None) -> np.ndarray:
        n = self.block_counts_[blocks] if n is None else n
        a = self.block_correct_[blocks] if a is None else a
        top = (a + alpha * self.block_confidence_[blocks]) / (n + alpha)
        return np.minimum(top, 1.0 - _MIN_SHARE)

    def _loo_nll(self, Q, y, winner, blocks, correct, alpha) -> float:
        """Mean NLL when each row is calibrated by its block's counts without itself."""
        n = self.block_counts_[blocks] - 1
        a = self.block_correct_[blocks] - correct
        shrunk = _replace_top(Q, self._shrunk_top(blocks, alpha, n, a), winner)
        return float(-np.mean(np.log(shrunk[np.arange(len(y)), y])))

    def _predict_proba(self, P):
        Q = self.temperature_scaling_.predict_proba(P)
        top = self._shrunk_top(self._block(P), self.prior_strength_)
        return _replace_top(Q, top, self._top_class(P))
