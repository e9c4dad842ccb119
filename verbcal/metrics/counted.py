"""The standard metrics of rows that repeat: each distinct row once, with a count.

A bootstrap resample of ``n`` rows draws each row 0, 1, 2… times. Verbalized
probabilities take few distinct values, so the rows fall into few groups of
equal (probability rows, gold label); a resample is then a vector of counts per
group, and a metric of it costs O(groups) instead of O(n). This is what makes
:func:`~verbcal.metrics.compare_metrics` fast on large inputs.

Each metric here equals the metric of the same name of
:func:`~verbcal.metrics.standard_metrics` on the rows repeated ``counts``
times, up to the rounding of float sums taken in another order (about 1e-16
relative): counts of correct rows and per-bin counts are exact integers, the
per-bin sums of scores, the Brier score and the log loss are sums of
``count * value`` instead of ``value + value + ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from verbcal.metrics.binning import (
    BinSums,
    assign_bins,
    assign_uniform,
    uniform_edges,
    uniform_floor_is_exact,
)
from verbcal.metrics.scores import NLL_EPS

__all__ = ["CountedRows", "group_rows"]

#: Rows handled at a time when numbering groups (keeps the temporaries small).
_BLOCK = 65_536


def group_rows(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows equal in every column share a group.

    Groups are numbered in the sorted order of their rows (first column first).
    One sort of the row numbers does it; the rest goes a block of rows at a
    time, so that besides the sort only the group numbers take a full-length
    array (this runs on every row of a large report).

    Parameters
    ----------
    columns : sequence of 1-D arrays of length n
        The values that define a row (every probability column, the label).

    Returns
    -------
    first : ndarray of shape (G,)
        The first row of each group (its representative).
    group : ndarray of shape (n,)
        The group of each row, in ``0..G-1``.

    Examples
    --------
    >>> first, group = group_rows([np.array([0.9, 0.2, 0.9]), np.array([0, 1, 0])])
    >>> first.tolist(), group.tolist()
    ([1, 0], [1, 0, 1])
    """
    n = len(columns[0])
    # Sorted, equal rows are next to each other, and the sort being stable, each run of
    # them starts with its earliest row.
    order = np.lexsort(columns[::-1])  # lexsort sorts by its last key first
    starts = np.zeros(n, dtype=bool)  # in sorted order: the row differs from the one before
    starts[:1] = True
    for begin in range(1, n, _BLOCK):
        rows = order[begin - 1 : begin + _BLOCK]
        for column in columns:
            values = column[rows]
            starts[begin : begin + _BLOCK] |= values[1:] != values[:-1]
    first = order[starts]
    group = np.empty(n, dtype=np.int64)
    n_earlier = 0  # groups that start before the block
    for begin in range(0, n, _BLOCK):
        block = slice(begin, begin + _BLOCK)
        numbers = n_earlier + np.cumsum(starts[block]) - 1
        group[order[block]] = numbers
        n_earlier = int(numbers[-1]) + 1
    return first, group


@dataclass(frozen=True)
class CountedRows:
    """The distinct rows of one probability array, ready to score any counts of them.

    Build it with :meth:`of` from the checked rows ``P[first]``, ``y[first]``
    of :func:`group_rows`; :meth:`metrics` then gives every standard metric of
    the rows repeated ``counts`` times.
    """

    n_bins: int
    correct: np.ndarray  # (G,) bool: the first maximising class is the gold one
    confidence: np.ndarray  # (G,) the largest probability
    top_bin: np.ndarray  # (G,) uniform bin of the confidence
    class_bins: np.ndarray  # (K, G) uniform bin of each class's probability
    class_scores: np.ndarray  # (K, G) each class's probability
    class_outcomes: np.ndarray  # (K, G) bool: the gold label is that class
    brier: np.ndarray  # (G,) sum over classes of the squared gap to the one-hot label
    log_loss: np.ndarray  # (G,) -log of the clipped gold-class probability

    @classmethod
    def of(cls, P: np.ndarray, y: np.ndarray, n_bins: int) -> CountedRows:
        """The per-row values of checked rows ``P`` (G, K) with gold labels ``y``."""
        rows = np.arange(P.shape[0])
        confidence = P.max(axis=1)
        gap = P.copy()
        gap[rows, y] -= 1.0
        edges = uniform_edges(n_bins)
        classes = np.arange(P.shape[1])
        return cls(
            n_bins=n_bins,
            correct=P.argmax(axis=1) == y,  # numpy's first-maximum rule, as the metrics use
            confidence=confidence,
            top_bin=assign_uniform(confidence, n_bins, uniform_floor_is_exact(n_bins)),
            class_bins=np.stack([assign_bins(P[:, k], edges) for k in classes]),
            class_scores=np.ascontiguousarray(P.T),
            class_outcomes=classes[:, None] == y[None, :],
            brier=np.einsum("ij,ij->i", gap, gap),
            log_loss=-np.log(np.clip(P[rows, y], NLL_EPS, 1.0 - NLL_EPS)),
        )

    def _sums(self, bins: np.ndarray, scores, outcomes, counts: np.ndarray) -> BinSums:
        weights = counts.astype(np.float64)
        count = np.bincount(bins, weights=weights, minlength=self.n_bins)
        positive = np.bincount(bins, weights=weights * outcomes, minlength=self.n_bins)
        return BinSums(
            uniform_edges(self.n_bins),
            count.astype(np.int64),
            positive.astype(np.int64),
            np.bincount(bins, weights=weights * scores, minlength=self.n_bins),
        )

    def metrics(self, counts: np.ndarray) -> dict[str, float]:
        """Every metric of :data:`~verbcal.metrics.METRIC_NAMES` of the rows repeated ``counts``."""
        n = int(counts.sum())
        top = self._sums(self.top_bin, self.confidence, self.correct, counts)
        classwise = [
            self._sums(bins, scores, outcomes, counts).ece()
            for bins, scores, outcomes in zip(
                self.class_bins, self.class_scores, self.class_outcomes, strict=True
            )
        ]
        return {
            "accuracy": int(counts[self.correct].sum()) / n,
            "ece": top.ece(),
            "mce": top.mce(),
            "classwise_ece": float(np.mean(classwise)),
            "brier": float(np.dot(counts, self.brier) / n),
            "nll": float(np.dot(counts, self.log_loss) / n),
        }
