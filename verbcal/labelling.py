"""Which items to label first: a sample stratified by predicted class and stated confidence.

Calibration learns from mistakes, and mistakes gather where the model states
less confidence; a labelling budget spent at random goes mostly to the
commonest, most confident answers. :func:`suggest_labels` splits the items
into strata (predicted class x stated top probability), gives every stratum a
label while the budget allows, and shares the rest in proportion to
``N_h * s_h`` — the stratum's size times the spread ``sqrt(c (1 - c))`` of an
answer stated with confidence ``c`` (Neyman allocation; the spread is floored,
so that confidently wrong answers, the costliest ones, are still looked for).
A calibration map conditions on the stated probabilities, so choosing rows by
them alone (never by their labels) leaves what it learns per stated value
unbiased.
"""

from __future__ import annotations

import numpy as np

from verbcal.errors import ConfigurationError
from verbcal.validation import check_probabilities

__all__ = ["suggest_labels"]

#: Most levels of stated confidence per predicted class (more distinct values are binned
#: at quantiles).
MAX_LEVELS = 8

#: Floor of the spread ``sqrt(c (1 - c))`` used for the allocation: that of c = 0.98.
MIN_SPREAD = float(np.sqrt(0.98 * 0.02))


def _levels(top: np.ndarray) -> np.ndarray:
    """Level index of each stated top probability: its distinct value, or a quantile bin."""
    rounded = np.round(top, 9)
    values, level = np.unique(rounded, return_inverse=True)
    if len(values) <= MAX_LEVELS:
        return level
    edges = np.unique(np.quantile(rounded, np.linspace(0, 1, MAX_LEVELS + 1)[1:-1]))
    return np.searchsorted(edges, rounded, side="right")


def suggest_labels(P, budget: int, *, random_state: int = 0) -> np.ndarray:
    """Indices of the rows of ``P`` to label first, most useful first.

    Parameters
    ----------
    P : array-like of shape (n, K)
        Stated probability rows of the unlabelled items.
    budget : int
        How many to choose (all rows when ``budget >= n``).
    random_state : int, default 0
        Seed of the draws within strata.

    Returns
    -------
    ndarray of int, shape (min(budget, n),)
        Row indices, ordered so that every prefix is itself spread over the strata.

    Examples
    --------
    >>> P = [[0.99, 0.01]] * 90 + [[0.6, 0.4]] * 10   # 90 confident answers, 10 hesitant
    >>> chosen = suggest_labels(P, 10)
    >>> int((np.asarray(P)[chosen, 0] == 0.6).sum())  # random choice would give about 1
    3
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ConfigurationError(f"budget must be an integer >= 1, got {budget!r}")
    P = check_probabilities(P, renormalize=True)
    n = len(P)
    rng = np.random.default_rng(random_state)
    top = P.max(axis=1)
    strata = P.argmax(axis=1) * (MAX_LEVELS + 1) + _levels(top)
    keys, stratum, sizes = np.unique(strata, return_inverse=True, return_counts=True)
    confidence = np.bincount(stratum, weights=top) / sizes
    spread = np.maximum(np.sqrt(confidence * (1.0 - confidence)), MIN_SPREAD)
    allocation = _allocate(sizes, sizes * spread, min(int(budget), n))
    picks, order = [], []
    for h in range(len(keys)):
        members = rng.permutation(np.flatnonzero(stratum == h))[: allocation[h]]
        picks.append(members)
        # systematic interleaving: the j-th pick of a stratum of m sits at (j + 0.5) / m,
        # with a random offset per stratum so that ties do not always favour one stratum
        order.append((np.arange(len(members)) + rng.random()) / max(len(members), 1))
    chosen = np.concatenate(picks)
    return chosen[np.argsort(np.concatenate(order), kind="stable")]


def _allocate(sizes: np.ndarray, weights: np.ndarray, budget: int) -> np.ndarray:
    """Units per stratum: one each by weight while the budget lasts, the rest by weight.

    Largest remainders; never more than a stratum holds.
    """
    allocation = np.zeros(len(sizes), dtype=np.int64)
    first = np.argsort(-weights, kind="stable")[:budget]
    allocation[first] = 1
    left = budget - len(first)
    while left > 0:
        room = sizes - allocation
        share = np.where(room > 0, weights, 0.0)
        target = share / share.sum() * (allocation[room > 0].sum() + left)
        want = np.where(room > 0, np.clip(np.floor(target) - allocation, 0, room), 0)
        if want.sum() == 0 or want.sum() > left:
            # hand out one at a time by the largest remaining shortfall
            gap = np.where(room > 0, target - allocation, -np.inf)
            allocation[int(np.argmax(gap))] += 1
            left -= 1
            continue
        allocation += want.astype(np.int64)
        left -= int(want.sum())
    return allocation
