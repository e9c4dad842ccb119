"""Split-conformal label sets from calibrated probabilities (multi-class).

Instead of one label, give each item the *set* of labels that contains the
true one with probability at least ``1 - alpha``: a small set when the model
is sure, a larger one when it is not. The guarantee is marginal (over items
and over the draw of the calibration rows) and needs only that calibration
rows and new items are exchangeable; it does not depend on the probabilities
being calibrated (calibration makes the sets smaller and better balanced).

Method (split conformal; Vovk et al. 2005, Angelopoulos & Bates 2021):

1. A *nonconformity score* ``s(p, k)`` says how unusual label ``k`` is for a
   row ``p`` of probabilities (:data:`SCORES`):

   * ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019):
     ``1 - p[k]``; sets are the labels with ``p[k] >= 1 - q``; the smallest
     sets on average, possibly empty;
   * ``"aps"`` (adaptive prediction sets, Romano et al. 2020): the mass of
     every label ranked at or above ``k`` (labels ranked by probability, ties
     by column); sets are the top labels up to mass ``q``, growing with the
     row's uncertainty;
   * ``"raps"`` (regularised APS, Angelopoulos et al. 2021): APS plus
     ``lam * max(0, rank(k) - k_reg)``, which keeps unlikely labels out.

   APS and RAPS are *randomised* by default, as in both papers: a row's own
   probability ``p[k]`` counts only by a uniform random share ``1 - u`` (one
   ``u`` per row). Without it, a confident model's true label scores close
   to 1 (the mass through it) even when it is ranked first, and every set
   grows to nearly all labels; verbalized probabilities, coarse and often
   0.9+, are the extreme case. ``randomized=False`` gives the deterministic
   sets (same guarantee, larger sets). Randomised sets can be empty.

2. On ``n`` labelled calibration rows, ``q`` is the ``ceil((n + 1)(1 - alpha))``-th
   smallest score of the true labels (``+inf`` when that rank exceeds ``n``:
   too few rows for this ``alpha``, every set is full).
3. A new row's set is every label whose score is ``<= q``. A new row's true
   label has score ``<= q`` with probability ``>= 1 - alpha``.

``class_conditional=True`` computes one ``q`` per true class (Mondrian
conformal prediction, Vovk 2003), so coverage holds for every class
separately, at the price of larger sets for rare or hard classes.

Sets are computed exactly as the scores are, so a label exactly at the
threshold is in (no tolerance). Ties in verbalized probabilities make the
scores coarse; coverage is then at least ``1 - alpha`` and often more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from verbcal.errors import InvalidInputError
from verbcal.validation import (
    Interval,
    Options,
    check_labels,
    check_params,
    check_probabilities,
)

__all__ = [
    "SCORES",
    "ConformalSets",
    "SetSummary",
    "conformal_quantile",
    "coverage",
    "nonconformity",
    "summarize_sets",
]

Score = Literal["lac", "aps", "raps"]
#: The nonconformity scores: least ambiguous sets, adaptive, regularised adaptive.
SCORES: tuple[str, ...] = ("lac", "aps", "raps")


def conformal_quantile(scores, alpha: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest score.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Nonconformity scores of the true labels of the calibration rows.
    alpha : float in (0, 1)
        Miscoverage allowed.

    Returns
    -------
    float
        ``+inf`` when the rank exceeds ``n`` (too few rows for this ``alpha``).

    Examples
    --------
    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], 0.25)  # rank ceil(5 * 0.75) = 4
    0.4
    >>> conformal_quantile([0.1, 0.4, 0.2, 0.3], 0.1)  # rank 5 > 4 rows
    inf
    """
    check_params({"alpha": alpha}, {"alpha": [Interval("real", 0, 1, closed="neither")]})
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.ndim != 1 or s.size == 0:
        raise InvalidInputError("conformal_quantile needs a non-empty 1-D array of scores")
    # The rank is computed in exact arithmetic: (n + 1)(1 - alpha) in floats can land a
    # hair above an integer and round up one rank too far.
    rank = math.ceil(round((s.size + 1) * (1.0 - alpha), 9))
    return math.inf if rank > s.size else float(s[rank - 1])


def _ranked(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column order by decreasing probability (ties by column) and each column's 1-based rank."""
    order = np.argsort(-P, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, P.shape[1] + 1)[None, :], axis=1)
    return order, rank


def nonconformity(
    P, score: Score = "lac", *, lam: float = 0.01, k_reg: int = 1, u=None
) -> np.ndarray:
    """The score of every label of every row, shape (n, K): lower is more conforming.

    Parameters
    ----------
    P : array-like of shape (n, K)
        Probability rows.
    score : {"lac", "aps", "raps"}
        See the module notes.
    lam, k_reg : float, int
        RAPS penalty per rank beyond ``k_reg`` (ignored by the other scores).
    u : array-like of shape (n,), optional
        APS/RAPS randomisation: ``u[i] * P[i, k]`` is taken off the mass
        through label ``k`` (so the row's own probability counts by ``1 - u``).

    Returns
    -------
    numpy.ndarray of shape (n, K)

    Examples
    --------
    >>> nonconformity([[0.6, 0.3, 0.1]], "aps").round(6).tolist()
    [[0.6, 0.9, 1.0]]
    >>> nonconformity([[0.6, 0.3, 0.1]], "raps", lam=0.1, k_reg=1).round(6).tolist()
    [[0.6, 1.0, 1.2]]
    >>> nonconformity([[0.6, 0.3, 0.1]], "aps", u=[0.5]).round(6).tolist()
    [[0.3, 0.75, 0.95]]
    """
    check_params(
        {"score": score, "lam": lam, "k_reg": k_reg},
        {
            "score": [Options(SCORES)],
            "lam": [Interval("real", 0, None)],
            "k_reg": [Interval("integer", 0, None)],
        },
    )
    arr = check_probabilities(P)
    if score == "lac":
        return 1.0 - arr
    order, rank = _ranked(arr)
    mass = np.cumsum(np.take_along_axis(arr, order, axis=1), axis=1)
    through = np.empty_like(mass)
    np.put_along_axis(through, order, mass, axis=1)
    if u is not None:
        shares = np.asarray(u, dtype=np.float64)
        if shares.shape != (arr.shape[0],) or not ((shares >= 0) & (shares <= 1)).all():
            raise InvalidInputError("u must hold one number in [0, 1] per row of P")
        through = through - shares[:, None] * arr
    if score == "aps":
        return through
    return through + lam * np.maximum(0, rank - k_reg)


@dataclass(frozen=True)
class SetSummary:
    """How useful a batch of label sets is.

    Attributes
    ----------
    n_rows : int
    mean_size : float
        Mean number of labels per set.
    singleton_rate, empty_rate : float
        Share of sets with exactly one label, with none.
    size_counts : dict of int to int
        Sets per size.
    coverage : float or None
        Share of sets holding the true label (None without labels).
    class_coverage : dict of int to float, or None
        Coverage among rows of each true class.
    """

    n_rows: int
    mean_size: float
    singleton_rate: float
    empty_rate: float
    size_counts: dict
    coverage: float | None
    class_coverage: dict | None


def coverage(sets, y) -> float:
    """Share of rows whose set holds the true label.

    Examples
    --------
    >>> coverage([[True, False], [True, True], [False, True]], [0, 0, 0])
    0.6666666666666666
    """
    mask = np.asarray(sets, dtype=bool)
    gold = check_labels(y, mask.shape[0], mask.shape[1])
    return float(mask[np.arange(gold.size), gold].mean())


def summarize_sets(sets, y=None) -> SetSummary:
    """Mean size, singleton and empty rates, and coverage (with labels) of label sets."""
    mask = np.asarray(sets, dtype=bool)
    if mask.ndim != 2 or mask.shape[0] == 0:
        raise InvalidInputError(f"sets must be a non-empty (n, K) boolean array, got {mask.shape}")
    size = mask.sum(axis=1)
    counts = np.bincount(size, minlength=mask.shape[1] + 1)
    cov = class_cov = None
    if y is not None:
        gold = check_labels(y, mask.shape[0], mask.shape[1])
        hit = mask[np.arange(gold.size), gold]
        cov = float(hit.mean())
        class_cov = {int(k): float(hit[gold == k].mean()) for k in np.unique(gold)}
    return SetSummary(
        n_rows=int(mask.shape[0]),
        mean_size=float(size.mean()),
        singleton_rate=float((size == 1).mean()),
        empty_rate=float((size == 0).mean()),
        size_counts={int(k): int(c) for k, c in enumerate(counts) if c},
        coverage=cov,
        class_coverage=class_cov,
    )


class ConformalSets:
    """Split-conformal label sets with coverage ``>= 1 - alpha``.

    Parameters
    ----------
    alpha : float in (0, 1), default 0.1
        Miscoverage allowed: sets hold the true label with probability ``>= 1 - alpha``.
    score : {"lac", "aps", "raps"}, default "lac"
        Nonconformity score (module notes).
    class_conditional : bool, default False
        One threshold per true class: coverage ``>= 1 - alpha`` for every class.
    lam : float, default 0.01
        RAPS penalty per rank beyond ``k_reg``.
    k_reg : int, default 1
        Ranks free of the RAPS penalty.
    randomized : bool, default True
        Randomise APS/RAPS (module notes); ignored by LAC.
    random_state : int, numpy Generator or None
        Seed of the randomisation.

    Attributes
    ----------
    quantile_ : float or numpy.ndarray
        The threshold (one per class when ``class_conditional``).
    n_calibration_ : int
        Calibration rows used.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> P = rng.dirichlet([1, 1, 1], 500)
    >>> y = np.array([rng.choice(3, p=p) for p in P])  # P is calibrated by construction
    >>> sets = ConformalSets(alpha=0.2).fit(P[:250], y[:250]).predict_sets(P[250:])
    >>> summary = summarize_sets(sets, y[250:])
    >>> summary.coverage >= 0.75, round(summary.mean_size, 2)
    (True, 1.38)
    >>> aps = ConformalSets(alpha=0.2, score="aps", random_state=0).fit(P[:250], y[:250])
    >>> round(summarize_sets(aps.predict_sets(P[250:]), y[250:]).mean_size, 2)
    1.6
    """

    def __init__(
        self,
        alpha: float = 0.1,
        score: Score = "lac",
        *,
        class_conditional: bool = False,
        lam: float = 0.01,
        k_reg: int = 1,
        randomized: bool = True,
        random_state=None,
    ) -> None:
        self.alpha = alpha
        self.score = score
        self.class_conditional = class_conditional
        self.lam = lam
        self.k_reg = k_reg
        self.randomized = randomized
        self.random_state = random_state

    def _validate_params(self) -> None:
        check_params(
            {
                "alpha": self.alpha,
                "class_conditional": self.class_conditional,
                "randomized": self.randomized,
            },
            {
                "alpha": [Interval("real", 0, 1, closed="neither")],
                "class_conditional": [bool],
                "randomized": [bool],
            },
        )

    def _scores(self, P) -> np.ndarray:
        arr = check_probabilities(P)
        u = None
        if self.randomized and self.score != "lac":
            u = self._rng.uniform(size=arr.shape[0])
        return nonconformity(arr, self.score, lam=self.lam, k_reg=self.k_reg, u=u)

    def fit(self, P, y) -> ConformalSets:
        """Compute the threshold(s) on labelled calibration rows; returns ``self``."""
        self._validate_params()
        self._rng = np.random.default_rng(self.random_state)
        S = self._scores(P)
        gold = check_labels(y, S.shape[0], S.shape[1])
        true_scores = S[np.arange(gold.size), gold]
        self.quantile_: float | np.ndarray
        if self.class_conditional:
            present = np.bincount(gold, minlength=S.shape[1])
            self.quantile_ = np.array(
                [
                    conformal_quantile(true_scores[gold == k], self.alpha) if present[k] else np.inf
                    for k in range(S.shape[1])
                ]
            )
        else:
            self.quantile_ = conformal_quantile(true_scores, self.alpha)
        self.n_classes_ = S.shape[1]
        self.n_calibration_ = int(gold.size)
        return self

    def predict_sets(self, P) -> np.ndarray:
        """Boolean (n, K) array: ``True`` where the label is in the row's set."""
        if not hasattr(self, "quantile_"):
            raise InvalidInputError("call fit on labelled calibration rows before predict_sets")
        S = self._scores(P)
        if S.shape[1] != self.n_classes_:
            raise InvalidInputError(
                f"P has {S.shape[1]} columns but the sets were fitted on {self.n_classes_}"
            )
        # One threshold, or one per column (the true class) when class-conditional.
        return np.less_equal(S, np.asarray(self.quantile_))
