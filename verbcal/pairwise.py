"""Pairwise LLM judges: ask in both orders, measure the position bias, combine, ensemble.

A pair is a request with two answers ``a`` and ``b``; a judge (a model with the
built-in ``pairwise`` template, or any two-label template) states the
probability that the answer shown first ("A") is better. Each pair is asked
twice, once as (a, b) and once swapped as (b, a), so that

* the **position bias** can be measured: with ``z1`` the judge's logit that
  ``a`` is better when ``a`` is shown first and ``z2`` the same when ``a`` is
  shown second, ``(z1 - z2) / 2`` is how much being shown first is worth, in
  logits, and the verdict *flips* when ``z1`` and ``z2`` have opposite signs;
* the two orders can be **combined** in logit space,
  ``z = (z1 + z2) / 2`` (the mean of logit p(a≻b) from (a, b) and of
  logit(1 − p(b≻a)) from (b, a)), which cancels a constant position bonus.

The combined rows are ordinary two-label predictions (labels ``A`` = ``a`` is
better, ``B`` = ``b`` is better): ``verbcal fit``/``evaluate``/``report``
calibrate and score them like any other. :class:`LogitEnsemble` combines
several judges in logit space with weights chosen by cross-validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.stats import bootstrap

from verbcal.calibrators.logits import invert_softmax
from verbcal.elicit.parse import FAILED, OK, REPAIRED
from verbcal.errors import InvalidInputError
from verbcal.metrics.intervals import clopper_pearson
from verbcal.predictions import Item, Prediction, read_jsonl

__all__ = [
    "PAIR_LABELS",
    "LogitEnsemble",
    "Pair",
    "PositionBias",
    "combine_orders",
    "load_pairwise_dataset",
    "pair_items",
    "pair_logits",
    "position_bias",
    "read_pairs",
]

#: Labels of a pairwise judgement: the answer shown first (A) or second (B) is better.
PAIR_LABELS = ("A", "B")
#: Suffixes of the two order's item ids.
ORDERS = ("|AB", "|BA")
#: Smoothing of stated 0/1 before taking logits (as everywhere in verbcal).
EPS = 1e-3


@dataclass(frozen=True)
class Pair:
    """A request and two answers; ``winner`` is "A" (``a`` is better), "B", or None."""

    id: str
    prompt: str
    a: str
    b: str
    winner: str | None = None


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Read pairs from JSON Lines: ``id``, ``prompt``, ``a``, ``b``, optional ``winner`` (A/B).

    Raises
    ------
    InvalidInputError
        Naming the file and line of a missing field, a bad winner or a duplicate id.
    """
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for line, row in read_jsonl(path):
        for key in ("id", "prompt", "a", "b"):
            if not isinstance(row.get(key), str | int) or isinstance(row.get(key), bool):
                raise InvalidInputError(f"{path}, line {line}: field {key!r} must be text")
        winner = row.get("winner")
        if winner is not None and winner not in PAIR_LABELS:
            raise InvalidInputError(
                f'{path}, line {line}: \'winner\' must be "A", "B" or absent, got {winner!r}'
            )
        pair_id = str(row["id"])
        if pair_id in seen:
            raise InvalidInputError(
                f"{path}, line {line}: duplicate id {pair_id!r} (also line {seen[pair_id]})"
            )
        seen[pair_id] = line
        pairs.append(Pair(pair_id, str(row["prompt"]), str(row["a"]), str(row["b"]), winner))
    if not pairs:
        raise InvalidInputError(f"{path}: no pairs")
    return pairs


def load_pairwise_dataset() -> list[Pair]:
    """The shipped labelled pairwise set (235 pairs; see ``verbcal/data/PAIRWISE_DATACARD.md``).

    Examples
    --------
    >>> pairs = load_pairwise_dataset()
    >>> len(pairs), sorted({p.winner for p in pairs})
    (235, ['A', 'B'])
    """
    from importlib import resources

    path = resources.files("verbcal.data").joinpath("pairwise.jsonl")
    return read_pairs(str(path))


def _pair_text(prompt: str, first: str, second: str) -> str:
    return f"Request:\n{prompt}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}"


def _swap(winner: str | None) -> str | None:
    return None if winner is None else PAIR_LABELS[1 - PAIR_LABELS.index(winner)]


def pair_items(pairs: Sequence[Pair]) -> list[Item]:
    """Two items per pair: ``ID|AB`` shows (a, b), ``ID|BA`` shows (b, a); gold labels follow.

    Examples
    --------
    >>> first, second = pair_items([Pair("p1", "2+2?", "4", "5", "A")])
    >>> first.id, first.label, second.id, second.label
    ('p1|AB', 'A', 'p1|BA', 'B')
    """
    items = []
    for pair in pairs:
        items.append(
            Item(pair.id + ORDERS[0], _pair_text(pair.prompt, pair.a, pair.b), pair.winner)
        )
        items.append(
            Item(pair.id + ORDERS[1], _pair_text(pair.prompt, pair.b, pair.a), _swap(pair.winner))
        )
    return items


def _logit_first(prediction: Prediction) -> float | None:
    """logit P(the answer shown first is better), from a two-label prediction."""
    if prediction.probs is None:
        return None
    row = np.array([[prediction.probs[label] for label in prediction.labels]])
    row = row / row.sum()
    z = invert_softmax(row, eps=EPS)[0]
    return float(z[0] - z[1])


def pair_logits(predictions: Sequence[Prediction]) -> dict[str, dict[str, Any]]:
    """Per pair id: ``z1`` (a shown first), ``z2`` (a shown second), both logits that a is better.

    Either is None when that order's answer did not parse; ``winner`` is the
    gold label of the (a, b) order.
    """
    out: dict[str, dict[str, Any]] = {}
    for p in predictions:
        if p.kind != "item" or not p.id.endswith(ORDERS):
            continue
        if list(p.labels) != list(PAIR_LABELS):
            raise InvalidInputError(
                f"pairwise predictions need labels {list(PAIR_LABELS)}, got {p.labels} ({p.id})"
            )
        pair_id, order = p.id[:-3], p.id[-3:]
        row = out.setdefault(pair_id, {"z1": None, "z2": None, "winner": None})
        z = _logit_first(p)
        if order == ORDERS[0]:
            row["z1"] = z
            row["winner"] = p.label
        else:
            row["z2"] = None if z is None else -z
            if row["winner"] is None:
                row["winner"] = _swap(p.label)
    if not out:
        raise InvalidInputError("no pairwise predictions (ids ending in |AB or |BA)")
    return out


def combine_orders(predictions: Sequence[Prediction]) -> list[Prediction]:
    """One prediction per pair: P(a better) from the mean of both orders' logits.

    A pair with one order unparsed keeps the other order's probability, with
    status ``repaired`` and a note; with neither, it is ``failed``.
    """
    out = []
    for pair_id, row in pair_logits(predictions).items():
        zs = [z for z in (row["z1"], row["z2"]) if z is not None]
        prediction = Prediction(id=pair_id, labels=list(PAIR_LABELS), probs=None, status=FAILED)
        prediction.label = row["winner"]
        if not zs:
            prediction.detail = "neither order parsed"
        else:
            z = float(np.mean(zs))
            p = float(1 / (1 + np.exp(-z)))
            prediction.probs = {"A": p, "B": 1 - p}
            prediction.status = OK if len(zs) == 2 else REPAIRED
            prediction.detail = "" if len(zs) == 2 else "one order unparsed: the other alone"
        out.append(prediction)
    return out


@dataclass(frozen=True)
class PositionBias:
    """The judge's position bias, from pairs whose both orders parsed.

    Attributes
    ----------
    n_pairs : int
    shift : tuple of float
        Mean logit bonus of being shown first, ``mean((z1 - z2) / 2)``, with a
        95% percentile bootstrap interval.
    flip_rate : tuple of float
        Share of pairs whose verdict reverses when the order is swapped (one
        order prefers a, the other b; a 50/50 answer is no verdict), with a
        Clopper–Pearson interval.
    first_rate : tuple of float
        Share of the answers with a verdict that prefer the answer shown first
        (0.5: no bias), with a Clopper–Pearson interval; NaN when every answer is 50/50.
    ties : int
        Answers (of ``2 * n_pairs``) that state exactly 50/50: no verdict.
    accuracy_first_order, accuracy_combined : float or None
        Accuracy of the (a, b) order alone and of the combined orders
        (labelled pairs; a 50/50 answer counts as half right).
    """

    n_pairs: int
    shift: tuple[float, float, float]
    flip_rate: tuple[float, float, float]
    first_rate: tuple[float, float, float]
    ties: int
    accuracy_first_order: float | None
    accuracy_combined: float | None

    def lines(self) -> list[str]:
        """A short console report."""

        def ci(v, digits=3):
            return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"

        out = [
            f"pairs with both orders parsed: {self.n_pairs}",
            f"position bias (logit bonus for being shown first): {ci(self.shift)}",
            f"verdict flips when swapped: {ci(self.flip_rate)}",
            f"answers preferring the first shown: {ci(self.first_rate)} (0.5 = no bias), "
            f"of {2 * self.n_pairs - self.ties} with a verdict ({self.ties} answered 50/50)",
        ]
        if self.accuracy_first_order is not None:
            out.append(
                f"accuracy: one order {self.accuracy_first_order:.3f}, both orders combined "
                f"{self.accuracy_combined:.3f}"
            )
        return out


def position_bias(
    predictions: Sequence[Prediction],
    *,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> PositionBias:
    """Measure the position bias of a judge from its answers in both orders.

    Examples
    --------
    >>> def pred(i, pa):
    ...     p = Prediction(i, ["A", "B"], {"A": pa, "B": 1 - pa}, "ok")
    ...     p.label = "A" if i.endswith("AB") else "B"
    ...     return p
    >>> bias = position_bias([pred("x|AB", 0.9), pred("x|BA", 0.6), pred("y|AB", 0.7),
    ...                       pred("y|BA", 0.2)])
    >>> bias.flip_rate[0], bias.shift[0] > 0
    (0.5, True)
    """
    rows = [r for r in pair_logits(predictions).values() if None not in (r["z1"], r["z2"])]
    if len(rows) < 2:
        raise InvalidInputError(f"position bias needs >= 2 pairs with both orders, got {len(rows)}")
    z1 = np.array([r["z1"] for r in rows])
    z2 = np.array([r["z2"] for r in rows])
    delta = (z1 - z2) / 2
    if np.ptp(delta) == 0:
        shift = (float(delta[0]),) * 3
    else:
        res = bootstrap(
            (delta,),
            np.mean,
            confidence_level=confidence,
            n_resamples=n_boot,
            method="percentile",
            random_state=seed,
        )
        shift = (
            float(delta.mean()),
            float(res.confidence_interval.low),
            float(res.confidence_interval.high),
        )
    flips = int(np.sum(z1 * z2 < 0))  # opposite verdicts; a 50/50 answer (z = 0) has none
    n = len(rows)
    first = int(np.sum(z1 > 0) + np.sum(z2 < 0))  # order 1 prefers a = first; order 2 prefers b
    decided = int(np.sum(z1 != 0) + np.sum(z2 != 0))
    first_rate = (
        (first / decided, *clopper_pearson(first, decided, confidence))
        if decided
        else (float("nan"),) * 3
    )
    acc_first = acc_comb = None
    labelled = [(r, z) for r, z in zip(rows, (z1 + z2) / 2, strict=True) if r["winner"]]
    if labelled:
        gold = np.array([r["winner"] == "A" for r, _ in labelled])
        acc_first = _accuracy(np.array([r["z1"] for r, _ in labelled]), gold)
        acc_comb = _accuracy(np.array([z for _, z in labelled]), gold)
    return PositionBias(
        n_pairs=n,
        shift=shift,
        flip_rate=(flips / n, *clopper_pearson(flips, n, confidence)),
        first_rate=first_rate,
        ties=2 * n - decided,
        accuracy_first_order=acc_first,
        accuracy_combined=acc_comb,
    )


def _accuracy(z: np.ndarray, a_wins: np.ndarray) -> float:
    """Share of right verdicts (logit z > 0: a is better), a 50/50 answer counting half."""
    return float(np.mean(np.where(z == 0, 0.5, (z > 0) == a_wins)))


# --------------------------------------------------------------------------- ensembles


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary log loss of logits ``z`` for labels ``y`` in {0, 1} (1: a is better)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _fit_weights(Z: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights and bias (last) minimising log loss of ``Z @ w + b`` with a small L2 penalty."""
    X = np.column_stack([Z, np.ones(len(Z))])

    def loss(w):
        z = X @ w
        p = 1 / (1 + np.exp(-z))
        grad = X.T @ (p - y) / len(y)
        grad[:-1] += l2 * w[:-1]
        return _nll(z, y) + 0.5 * l2 * float(w[:-1] @ w[:-1]), grad

    w0 = np.zeros(X.shape[1])
    w0[:-1] = 1.0 / Z.shape[1]
    return minimize(loss, w0, jac=True, method="L-BFGS-B").x


class LogitEnsemble:
    """Combine several judges' logits with weights chosen by cross-validation.

    Candidates: each single judge (its logit scaled and shifted, i.e. temperature
    and bias fitted) and the weighted combination of all judges (fitted
    weights and bias, L2-penalised). :meth:`fit` scores every candidate by
    ``cv``-fold cross-validated log loss on the rows it is given and keeps the
    best, refitted on all of them; so the ensemble is the best single judge
    whenever combining does not help in cross-validation.

    Parameters
    ----------
    cv : int, default 5
    l2 : float, default 1e-3
    seed : int, default 0

    Attributes
    ----------
    choice_ : str
        ``"judge i"`` or ``"weighted"``.
    weights_ : ndarray of shape (n_judges + 1,)
        Weight per judge, then the bias.
    cv_nll_ : dict
        Cross-validated log loss of every candidate.
    """

    def __init__(self, cv: int = 5, l2: float = 1e-3, seed: int = 0) -> None:
        self.cv = cv
        self.l2 = l2
        self.seed = seed

    def fit(self, Z, y) -> LogitEnsemble:
        """Fit on judges' logits ``Z`` (n × judges) that ``a`` is better, labels ``y`` (1: a)."""
        Z, y = self._check(Z, y)
        folds = np.random.default_rng(self.seed).permutation(len(y)) % self.cv
        candidates = {f"judge {j}": [j] for j in range(Z.shape[1])}
        if Z.shape[1] > 1:
            candidates["weighted"] = list(range(Z.shape[1]))
        self.cv_nll_ = {}
        for name, cols in candidates.items():
            losses = []
            for f in range(self.cv):
                train, test = folds != f, folds == f
                if not test.any() or len(np.unique(y[train])) < 2:
                    continue
                w = _fit_weights(Z[train][:, cols], y[train], self.l2)
                losses.append(_nll(Z[test][:, cols] @ w[:-1] + w[-1], y[test]) * test.sum())
            self.cv_nll_[name] = float(np.sum(losses) / len(y))
        self.choice_ = min(self.cv_nll_, key=lambda name: self.cv_nll_[name])
        cols = candidates[self.choice_]
        w = _fit_weights(Z[:, cols], y, self.l2)
        self.weights_ = np.zeros(Z.shape[1] + 1)
        self.weights_[cols] = w[:-1]
        self.weights_[-1] = w[-1]
        return self

    def decision_function(self, Z) -> np.ndarray:
        """Combined logits that ``a`` is better."""
        Z = np.asarray(Z, dtype=float)
        return Z @ self.weights_[:-1] + self.weights_[-1]

    def predict_proba(self, Z) -> np.ndarray:
        """(n, 2) probabilities of labels (A, B)."""
        p = 1 / (1 + np.exp(-self.decision_function(Z)))
        return np.column_stack([p, 1 - p])

    def _check(self, Z, y) -> tuple[np.ndarray, np.ndarray]:
        Z = np.asarray(Z, dtype=float)
        y = np.asarray(y)
        if Z.ndim != 2 or len(Z) != len(y) or not np.all(np.isfinite(Z)):
            raise InvalidInputError(
                f"Z must be a finite (n, judges) array matching y's {len(y)} rows, got {Z.shape}"
            )
        if not np.isin(y, (0, 1)).all() or len(np.unique(y)) < 2:
            raise InvalidInputError("y must hold both 0 and 1 (1: the first answer is better)")
        if len(y) < 2 * self.cv:
            raise InvalidInputError(f"need at least {2 * self.cv} rows for {self.cv}-fold CV")
        return Z, y.astype(float)
