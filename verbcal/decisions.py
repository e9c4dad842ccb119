"""Decisions with costs, and calibration where the decisions are made.

A cost matrix says what each decision costs when the truth is each label.
The decisions are the labels (answer with that label) and, optionally,
``"abstain"`` (hand the item to a person). With calibrated probabilities the
*Bayes-optimal* decision of a row is the one of least expected cost
``sum_k P[i, k] * cost[decision, k]``, and the sum of those least expected
costs *predicts* what the decisions will cost. On labelled rows the cost
*realised* is counted, and compared with the best fixed threshold chosen in
hindsight (the regret of the probabilities: negative when they beat every
threshold).

Costs file (``verbcal route --costs``, ``verbcal evaluate --costs``,
``verbcal report --costs``): a JSON object whose keys are decisions (labels,
and ``"abstain"`` if a person may take the item) and whose values map every
label (the truth) to a finite cost; negative costs are gains. For example,
for labels ``True``/``False``::

    {
      "True":    {"True": 0, "False": 5},
      "False":   {"True": 1, "False": 0},
      "abstain": {"True": 0.5, "False": 0.5}
    }

Confidence bands (:func:`band_calibration`): a model can be calibrated on
average and wrong exactly where decisions are made, so the top-label
calibration gap is also reported per band of confidence (``low``,
``medium``, ``high`` by default, cut at 0.6 and 0.8; the cuts are configurable).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics.intervals import binomial_intervals
from verbcal.validation import check_labels, check_probabilities

__all__ = [
    "ABSTAIN",
    "DEFAULT_BANDS",
    "BandCalibration",
    "CostEvaluation",
    "CostMatrix",
    "band_calibration",
    "bayes_decisions",
    "cost_matrix",
    "evaluate_costs",
    "expected_costs",
    "format_bands",
    "format_costs",
    "load_costs",
    "parse_bands",
]

#: The decision "hand this item to a person".
ABSTAIN = "abstain"

#: Default cuts of the confidence bands: low [0, 0.6), medium [0.6, 0.8), high [0.8, 1].
DEFAULT_BANDS = (0.6, 0.8)


# ----------------------------------------------------------------------------- cost matrix


@dataclass(frozen=True)
class CostMatrix:
    """Costs of decisions (rows) against true labels (columns).

    Attributes
    ----------
    decisions : list of str
        Labels and possibly :data:`ABSTAIN`, in the order given.
    labels : list of str
        The true labels, in the column order of the probabilities.
    C : numpy.ndarray of shape (len(decisions), len(labels))
        ``C[d, k]``: cost of decision ``d`` when the truth is label ``k``.
    """

    decisions: list[str]
    labels: list[str]
    C: np.ndarray

    @property
    def can_abstain(self) -> bool:
        return ABSTAIN in self.decisions

    def to_json(self) -> dict:
        return {
            d: {lab: float(c) for lab, c in zip(self.labels, row, strict=True)}
            for d, row in zip(self.decisions, self.C, strict=True)
        }


def cost_matrix(costs: Mapping, labels: Sequence[str], *, where: str = "costs") -> CostMatrix:
    """Check a ``{decision: {truth: cost}}`` mapping against the labels and make it a matrix.

    Parameters
    ----------
    costs : mapping
        Keys: labels and optionally ``"abstain"``; values: a mapping of every
        label to a finite cost.
    labels : sequence of str
        The labels, in the column order of the probabilities.
    where : str
        What to call the costs in error messages (a file name).

    Returns
    -------
    CostMatrix

    Examples
    --------
    >>> m = cost_matrix({"yes": {"yes": 0, "no": 4}, "no": {"yes": 1, "no": 0}}, ["no", "yes"])
    >>> m.decisions, m.C.tolist()
    (['yes', 'no'], [[4.0, 0.0], [0.0, 1.0]])
    """
    labels = list(labels)
    if ABSTAIN in labels:
        raise ConfigurationError(
            f"{where}: a label is called {ABSTAIN!r}, the name of the abstain decision"
        )
    if not isinstance(costs, Mapping) or not costs:
        raise InvalidInputError(
            f"{where}: expected a JSON object {{decision: {{label: cost}}}}, got {costs!r:.80}"
        )
    rows = []
    for decision, row in costs.items():
        if decision != ABSTAIN and decision not in labels:
            raise InvalidInputError(
                f"{where}: decision {decision!r} is neither a label {labels} nor {ABSTAIN!r}"
            )
        if not isinstance(row, Mapping):
            raise InvalidInputError(
                f"{where}: the costs of decision {decision!r} must be an object "
                f"{{label: cost}}, got {row!r:.80}"
            )
        missing = [lab for lab in labels if lab not in row]
        extra = [k for k in row if k not in labels]
        if missing or extra:
            raise InvalidInputError(
                f"{where}: decision {decision!r} must give a cost for every label {labels}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        values = []
        for lab in labels:
            v = row[lab]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InvalidInputError(
                    f"{where}: cost of decision {decision!r} when the truth is {lab!r} must be "
                    f"a finite number, got {v!r}"
                )
            values.append(float(v))
        rows.append(values)
    return CostMatrix(decisions=list(costs), labels=labels, C=np.array(rows, dtype=np.float64))


def load_costs(path: str | os.PathLike, labels: Sequence[str]) -> CostMatrix:
    """Read a costs file (format in the module notes) for these labels."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such costs file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a JSON costs file: {exc}") from None
    return cost_matrix(data, labels, where=str(path))


def _checked(P, costs: CostMatrix) -> np.ndarray:
    arr = check_probabilities(P)
    if arr.shape[1] != len(costs.labels):
        raise InvalidInputError(
            f"P has {arr.shape[1]} columns but the costs name {len(costs.labels)} labels"
        )
    return arr


# ----------------------------------------------------------------------------- decisions


def expected_costs(P, costs: CostMatrix) -> np.ndarray:
    """Expected cost of every decision for every row: ``P @ C.T``, shape (n, D)."""
    return _checked(P, costs) @ costs.C.T


def bayes_decisions(P, costs: CostMatrix) -> np.ndarray:
    """Index (into ``costs.decisions``) of the least expected cost decision of every row.

    Ties go to the decision listed first.

    Examples
    --------
    >>> m = cost_matrix(
    ...     {"a": {"a": 0, "b": 1}, "b": {"a": 1, "b": 0}, "abstain": {"a": 0.3, "b": 0.3}},
    ...     ["a", "b"],
    ... )
    >>> [m.decisions[d] for d in bayes_decisions([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]], m)]
    ['a', 'abstain', 'b']
    """
    return expected_costs(P, costs).argmin(axis=1)


@dataclass(frozen=True)
class CostEvaluation:
    """Costs of the Bayes decisions: predicted by the probabilities, realised on labels.

    Attributes
    ----------
    n_rows : int
    decision_counts : dict
        How many rows got each decision.
    predicted_mean_cost : float
        Mean of the least expected costs (what calibrated probabilities promise).
    realised_mean_cost : float or None
        Mean cost of the decisions against the gold labels (None without labels).
    realised_interval : tuple of float or None
        Percentile bootstrap 95% interval of the realised mean cost.
    best_threshold : float or None
        The fixed confidence threshold of least realised cost in hindsight
        (see :func:`evaluate_costs` for the family), None without labels.
    best_threshold_policy : str
        What the threshold family decides.
    best_threshold_mean_cost : float or None
    regret : float or None
        ``realised_mean_cost - best_threshold_mean_cost``: what the decisions
        lose against the best fixed threshold chosen with the answers known
        (negative: they beat every threshold).
    """

    n_rows: int
    decision_counts: dict
    predicted_mean_cost: float
    realised_mean_cost: float | None
    realised_interval: tuple[float, float] | None
    best_threshold: float | None
    best_threshold_policy: str
    best_threshold_mean_cost: float | None
    regret: float | None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _threshold_family(P: np.ndarray, costs: CostMatrix) -> tuple[str, np.ndarray, np.ndarray]:
    """The fixed-threshold policies: (description, scores, decision if >= t, decision if < t).

    With an abstain decision: answer the top label when its probability is
    ``>= t``, else abstain. Without one, for two labels: decide the second
    label when its probability is ``>= t``, else the first. Otherwise the top
    label always (a single policy).
    """
    labels = costs.labels
    top = P.argmax(axis=1)
    index = {d: i for i, d in enumerate(costs.decisions)}
    if costs.can_abstain and all(lab in index for lab in labels):
        answer = np.array([index[labels[k]] for k in top])
        return (
            f"answer the top label when its probability >= t, else {ABSTAIN}",
            P.max(axis=1),
            np.stack([answer, np.full(top.size, index[ABSTAIN])]),
        )
    if len(labels) == 2 and all(lab in index for lab in labels):
        return (
            f"decide {labels[1]!r} when its probability >= t, else {labels[0]!r}",
            P[:, 1],
            np.stack([np.full(top.size, index[labels[1]]), np.full(top.size, index[labels[0]])]),
        )
    if all(lab in index for lab in labels):
        answer = np.array([index[labels[k]] for k in top])
        return "the top label always", np.ones(top.size), np.stack([answer, answer])
    raise ConfigurationError(
        "the costs must list every label as a decision to compare with fixed thresholds"
    )


def _best_fixed_threshold(P, y, costs: CostMatrix) -> tuple[str, float, float]:
    policy, scores, choice = _threshold_family(P, costs)
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    cost_hi = costs.C[choice[0][order], y[order]]
    cost_lo = costs.C[choice[1][order], y[order]]
    # Threshold just above everything (nothing "high"), then at every distinct score.
    cum_hi = np.r_[0.0, np.cumsum(cost_hi)]
    cum_lo = np.r_[0.0, np.cumsum(cost_lo)]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1] + 1  # rows "high" at each
    counts = np.r_[0, last]
    totals = cum_hi[counts] + (cum_lo[-1] - cum_lo[counts])
    best = int(np.argmin(totals))
    threshold = math.inf if best == 0 else float(ranked[counts[best] - 1])
    return policy, threshold, float(totals[best] / y.size)


def evaluate_costs(P, costs: CostMatrix, y=None, *, n_boot: int = 200, seed: int = 0):
    """Bayes decisions and their cost: predicted, realised, and regret against fixed thresholds.

    Parameters
    ----------
    P : array-like of shape (n, K)
        Calibrated probability rows.
    costs : CostMatrix
    y : array-like of shape (n,), optional
        Gold class indices; without them only the predicted cost is given.
    n_boot : int, default 200
        Bootstrap resamples for the interval of the realised mean cost.
    seed : int, default 0

    Returns
    -------
    CostEvaluation

    Examples
    --------
    >>> m = cost_matrix({"a": {"a": 0, "b": 1}, "b": {"a": 1, "b": 0}}, ["a", "b"])
    >>> e = evaluate_costs([[0.9, 0.1], [0.3, 0.7]], m, [0, 0], n_boot=10)
    >>> e.predicted_mean_cost, e.realised_mean_cost, e.best_threshold_mean_cost, e.regret
    (0.2, 0.5, 0.0, 0.5)
    """
    arr = _checked(P, costs)
    expected = arr @ costs.C.T
    decided = expected.argmin(axis=1)
    counts = {d: int((decided == i).sum()) for i, d in enumerate(costs.decisions)}
    predicted = float(expected.min(axis=1).mean())
    policy = _threshold_family(arr, costs)[0]
    if y is None:
        return CostEvaluation(arr.shape[0], counts, predicted, None, None, None, policy, None, None)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    realised_each = costs.C[decided, gold]
    realised = float(realised_each.mean())
    rng = np.random.default_rng(seed)
    boots = realised_each[rng.integers(0, gold.size, (n_boot, gold.size))].mean(axis=1)
    interval = (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))
    policy, threshold, best = _best_fixed_threshold(arr, gold, costs)
    return CostEvaluation(
        n_rows=int(arr.shape[0]),
        decision_counts=counts,
        predicted_mean_cost=predicted,
        realised_mean_cost=realised,
        realised_interval=interval,
        best_threshold=threshold,
        best_threshold_policy=policy,
        best_threshold_mean_cost=best,
        regret=realised - best,
    )


# ----------------------------------------------------------------------------- bands


@dataclass(frozen=True)
class BandCalibration:
    """Top-label calibration in one band of confidence.

    Attributes
    ----------
    name : str
        ``low``, ``medium``, ``high`` for three bands, else ``band 1``, ``band 2``…
    low, high : float
        The band is ``[low, high)``, the last one ``[low, 1]``.
    n_rows : int
    share : float
        Share of all rows in the band.
    confidence, accuracy : float
        Mean top-label probability and accuracy (NaN when the band is empty).
    gap : float
        ``confidence - accuracy`` (positive: overconfident there).
    accuracy_interval : tuple of float or None
        Clopper–Pearson 95% interval of the accuracy.
    """

    name: str
    low: float
    high: float
    n_rows: int
    share: float
    confidence: float
    accuracy: float
    gap: float
    accuracy_interval: tuple[float, float] | None

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_bands(text: str) -> tuple[float, ...]:
    """Band cuts from ``"0.6,0.8"``: increasing numbers strictly inside (0, 1).

    Examples
    --------
    >>> parse_bands("0.5, 0.9")
    (0.5, 0.9)
    """
    try:
        cuts = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"bands must be comma-separated numbers, got {text!r}") from None
    return _check_bands(cuts)


def _check_bands(cuts: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(c) for c in cuts)
    if not values or any(not 0 < c < 1 for c in values) or list(values) != sorted(set(values)):
        raise ConfigurationError(
            f"bands must be increasing cuts strictly between 0 and 1, e.g. 0.6,0.8; got {cuts!r}"
        )
    return values


def band_calibration(P, y, bands: Sequence[float] = DEFAULT_BANDS) -> list[BandCalibration]:
    """Top-label confidence, accuracy and their gap in each confidence band.

    Parameters
    ----------
    P : array-like of shape (n, K)
        Probability rows.
    y : array-like of shape (n,)
        Gold class indices.
    bands : sequence of float, default (0.6, 0.8)
        Cuts between bands; ``(0.6, 0.8)`` makes low ``[0, 0.6)``, medium
        ``[0.6, 0.8)`` and high ``[0.8, 1]``.

    Returns
    -------
    list of BandCalibration

    Examples
    --------
    >>> rows = band_calibration([[0.9, 0.1], [0.85, 0.15], [0.55, 0.45]], [0, 1, 0])
    >>> [(b.name, b.n_rows, round(b.gap, 3)) for b in rows]
    [('low', 1, -0.45), ('medium', 0, nan), ('high', 2, 0.375)]
    """
    cuts = _check_bands(bands)
    arr = check_probabilities(P)
    gold = check_labels(y, arr.shape[0], arr.shape[1])
    conf = arr.max(axis=1)
    correct = arr.argmax(axis=1) == gold
    edges = np.r_[0.0, cuts, 1.0]
    which = np.searchsorted(np.asarray(cuts), conf, side="right")
    names = (
        ["low", "medium", "high"]
        if len(cuts) == 2
        else [f"band {i + 1}" for i in range(len(edges) - 1)]
    )
    counts = np.bincount(which, minlength=len(names))
    hits = np.bincount(which, weights=correct, minlength=len(names))
    lo, hi = binomial_intervals(hits, counts)
    out = []
    for b, name in enumerate(names):
        n = int(counts[b])
        inside = which == b
        mean_conf = float(conf[inside].mean()) if n else math.nan
        acc = float(hits[b] / n) if n else math.nan
        out.append(
            BandCalibration(
                name=name,
                low=float(edges[b]),
                high=float(edges[b + 1]),
                n_rows=n,
                share=n / conf.size,
                confidence=mean_conf,
                accuracy=acc,
                gap=mean_conf - acc,
                accuracy_interval=(float(lo[b]), float(hi[b])) if n else None,
            )
        )
    return out


# ----------------------------------------------------------------------------- text


def _band_cells(band: BandCalibration) -> str:
    if not band.n_rows:
        return f"{'0':>6} {'—':>7} {'—':>7} {'—':>8}"
    return f"{band.n_rows:>6} {band.confidence:>7.4f} {band.accuracy:>7.4f} {band.gap:>+8.4f}"


def format_bands(columns: Mapping[str, list[BandCalibration]]) -> list[str]:
    """Text table of :func:`band_calibration` results, one column group per name (before/after).

    Examples
    --------
    >>> bands = band_calibration([[0.9, 0.1], [0.55, 0.45]], [0, 1])
    >>> print("\\n".join(format_bands({"stated": bands})))  # doctest: +NORMALIZE_WHITESPACE
    calibration by confidence band (gap = confidence - accuracy; > 0: overconfident)
                        |             stated
    band                |   rows    conf     acc      gap
    low [0, 0.6)        |      1  0.5500  0.0000  +0.5500
    medium [0.6, 0.8)   |      0       —       —        —
    high [0.8, 1]       |      1  0.9000  1.0000  -0.1000
    """
    names = list(columns)
    lines = [
        "calibration by confidence band (gap = confidence - accuracy; > 0: overconfident)",
        (f"{'':20}" + "".join(f"| {n:^31} " for n in names)).rstrip(),
        (
            f"{'band':20}"
            + "".join(f"| {'rows':>6} {'conf':>7} {'acc':>7} {'gap':>8} " for _ in names)
        ).rstrip(),
    ]
    for i, band in enumerate(columns[names[0]]):
        closing = "]" if band.high == 1.0 else ")"
        label = f"{band.name} [{band.low:g}, {band.high:g}{closing}"
        lines.append(
            f"{label:20}" + "".join(f"| {_band_cells(columns[n][i])} " for n in names).rstrip()
        )
    return lines


def format_costs(columns: Mapping[str, CostEvaluation]) -> list[str]:
    """Text lines describing :func:`evaluate_costs` results, one block per name."""
    lines = []
    for name, e in columns.items():
        counts = ", ".join(f"{d}: {c}" for d, c in e.decision_counts.items())
        lines.append(f"{name}: Bayes decisions ({counts})")
        lines.append(f"  predicted mean cost {e.predicted_mean_cost:.4f}")
        if e.realised_mean_cost is not None and e.realised_interval is not None:
            low, high = e.realised_interval
            lines.append(
                f"  realised mean cost  {e.realised_mean_cost:.4f} (95% bootstrap "
                f"{low:.4f}-{high:.4f})"
            )
            lines.append(
                f"  best fixed threshold in hindsight ({e.best_threshold_policy}, "
                f"t = {e.best_threshold:.4g}): {e.best_threshold_mean_cost:.4f}; "
                f"regret {e.regret:+.4f}"
            )
    return lines
