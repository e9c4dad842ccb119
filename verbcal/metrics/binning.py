"""Bin edges, bin assignment and per-bin sums shared by the binned metrics.

Conventions (the public docstrings in ``verbcal.metrics`` repeat them):

* Every bin is closed on the left and open on the right, ``[a, b)``, except the
  last, which is closed, ``[a, 1]``. A score of exactly 0.0 lands in the first
  bin and exactly 1.0 in the last.
* Binning is a function of the score alone, so equal scores always share a bin:
  a tied value is never split, whatever the strategy.
* ``uniform`` edges are ``i / n_bins`` (correctly rounded division, so the
  stated 0.8 is exactly the left edge of the bin ``[0.8, 0.8 + 1/n_bins)`` when
  ``n_bins`` is a multiple of 5; ``np.linspace`` edges can miss it by one ulp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("uniform", "quantile", "distinct")


def uniform_edges(n_bins: int) -> np.ndarray:
    """``n_bins + 1`` equally spaced edges from 0 to 1."""
    return np.arange(n_bins + 1) / n_bins


def quantile_edges(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges that give each bin about the same number of scores.

    The sorted scores are cut into ``n_bins`` runs as ``np.array_split``
    does; each interior edge is the midpoint between the last score of one run
    and the first of the next (the rule of uncertainty-calibration's
    ``get_equal_bins``). A cut that falls inside a run of equal scores gives an
    edge equal to that score, so the whole run starts the upper bin. Edges that
    coincide are merged: heavily tied scores give fewer bins than asked for.
    """
    n = scores.shape[0]
    n_bins = min(n_bins, n)
    sizes = np.full(n_bins, n // n_bins)
    sizes[: n % n_bins] += 1
    cuts = np.cumsum(sizes)[:-1]
    # A partial sort around the cut positions is enough and much faster than a full sort.
    kth = np.unique(np.concatenate([cuts - 1, cuts]))
    ordered = np.partition(scores, kth) if kth.size else scores
    below, above = ordered[cuts - 1], ordered[cuts]
    middle = (below + above) / 2.0
    # Between neighbouring floats the midpoint rounds to one of them: keep `below` below.
    interior = np.where(middle > below, middle, above)
    # 1.0 is appended after merging: a run of 1.0 at a cut keeps its own last bin, [1, 1].
    return np.append(np.unique(np.concatenate([[0.0], interior])), 1.0)


def distinct_edges(scores: np.ndarray) -> np.ndarray:
    """Edges that give every distinct score a bin of its own: the values themselves, then 1.

    Bin ``i`` is ``[v_i, v_(i+1))`` and holds exactly the value ``v_i``, even
    when two values are neighbouring floats (renormalised rows give 0.7 and
    0.7000000000000001), where midpoints would merge them. When the largest
    value is 1.0, the last bin is ``[1, 1]``.
    """
    return np.append(np.unique(scores), 1.0)


def bin_edges(scores: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Edges for ``strategy`` (one of ``STRATEGIES``, already checked)."""
    if strategy == "uniform":
        return uniform_edges(n_bins)
    if strategy == "quantile":
        return quantile_edges(scores, n_bins)
    return distinct_edges(scores)


def assign_bins(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every score: ``[a, b)`` bins, the last one closed."""
    return np.searchsorted(edges[1:-1], scores, side="right")


def uniform_floor_is_exact(n_bins: int) -> bool:
    """Whether ``floor(score * n_bins)`` gives the same bins as ``assign_bins`` for every score.

    Both maps are monotone step functions of the score, so they agree
    everywhere when they step at the same place: at each interior edge ``e``,
    ``floor(e * n_bins)`` must be the bin starting at ``e`` and the float just
    below ``e`` must still fall in the bin before.
    """
    edges = uniform_edges(n_bins)[1:-1]
    at = np.floor(edges * n_bins)
    below = np.floor(np.nextafter(edges, 0.0) * n_bins)
    bins = np.arange(1, n_bins)
    return bool(np.array_equal(at, bins) and np.array_equal(below, bins - 1))


def assign_uniform(scores: np.ndarray, n_bins: int, exact_floor: bool) -> np.ndarray:
    """``assign_bins(scores, uniform_edges(n_bins))``, by multiplication when that is exact."""
    if not exact_floor:
        return assign_bins(scores, uniform_edges(n_bins))
    bins = (scores * n_bins).astype(np.intp)
    return np.minimum(bins, n_bins - 1, out=bins)


@dataclass
class BinSums:
    """Per-bin sums from which every binned metric is computed."""

    edges: np.ndarray  # (B + 1,)
    count: np.ndarray  # (B,) int64, scores per bin
    positive: np.ndarray  # (B,) int64, outcomes equal to 1 (correct predictions) per bin
    score_sum: np.ndarray  # (B,) float64, sum of scores per bin

    @classmethod
    def empty(cls, edges: np.ndarray) -> BinSums:
        n_bins = edges.shape[0] - 1
        zeros = np.zeros(n_bins, dtype=np.int64)
        return cls(edges, zeros, zeros.copy(), np.zeros(n_bins))

    @classmethod
    def of(cls, scores: np.ndarray, outcomes: np.ndarray, edges: np.ndarray) -> BinSums:
        sums = cls.empty(edges)
        sums.add(assign_bins(scores, edges), scores, outcomes)
        return sums

    def add(self, bins: np.ndarray, scores: np.ndarray, outcomes: np.ndarray) -> None:
        """Add scores in bins ``bins`` with boolean ``outcomes``."""
        n_bins = self.count.shape[0]
        # One integer bincount over (bin, outcome) pairs yields both counts.
        pairs = np.bincount(2 * bins + outcomes, minlength=2 * n_bins)
        self.count += pairs[0::2] + pairs[1::2]
        self.positive += pairs[1::2]
        self.score_sum += np.bincount(bins, weights=scores, minlength=n_bins)

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean outcome and mean score per bin (NaN in empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.positive / self.count, self.score_sum / self.count

    def ece(self) -> float:
        return float(np.abs(self.score_sum - self.positive).sum() / self.n)

    def mce(self) -> float:
        accuracy, confidence = self.means()
        filled = self.count > 0
        return float(np.abs(confidence[filled] - accuracy[filled]).max())

    def debiased_l2(self) -> float:
        """Kumar et al. (2019): squared gaps minus their sampling variance, bins of >= 2 only."""
        accuracy, confidence = self.means()
        used = self.count >= 2
        acc, cnt = accuracy[used], self.count[used]
        square = (confidence[used] - acc) ** 2 - acc * (1.0 - acc) / (cnt - 1.0)
        return float(np.sqrt(max(np.dot(cnt, square) / self.n, 0.0)))
