"""The report's decision section as plain data: risk–coverage, routing table, bands, costs.

:func:`compute_decisions` fills a :class:`DecisionData` from the report's
held-out rows (stated and, when there is one, calibrated); ``verbcal.report.html``
draws it. The numbers come from :mod:`verbcal.selective` and
:mod:`verbcal.decisions`, which tests check on their own.

The routing table follows the report's convention for operating points: the
threshold for each target accuracy is chosen from the probabilities alone
(the accuracy they predict on the answered rows), and, with gold labels, the
accuracy and coverage realised on the same rows are shown beside the promise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from verbcal.decisions import (
    DEFAULT_BANDS,
    BandCalibration,
    CostEvaluation,
    CostMatrix,
    band_calibration,
    evaluate_costs,
)
from verbcal.metrics.intervals import clopper_pearson
from verbcal.selective import RiskCoverageCurve, predicted_selective_threshold, risk_coverage_curve

__all__ = ["ROUTING_TARGETS", "DecisionData", "RoutingRow", "compute_decisions"]

#: Target accuracies of the routing table.
ROUTING_TARGETS = (0.8, 0.9, 0.95, 0.99)


@dataclass(frozen=True)
class RoutingRow:
    """One target accuracy: the threshold the probabilities pick, and what it does.

    ``accuracy``/``accuracy_ci``/``coverage`` are realised on gold labels (None
    without them, or ``accuracy`` when nothing is answered).
    """

    side: str
    target_accuracy: float
    met: bool
    threshold: float
    predicted_accuracy: float
    predicted_coverage: float
    n_answered: int
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class DecisionData:
    """Everything the report's decision section shows.

    Attributes
    ----------
    risk_coverage : dict of str to RiskCoverageCurve
        Per side (``before``/``after``); empty without gold labels.
    routing : list of RoutingRow
    bands : dict of str to list of BandCalibration
        Per side; empty without gold labels.
    costs : dict of str to CostEvaluation
        Per side; empty without a cost matrix.
    cost_matrix : CostMatrix or None
    """

    risk_coverage: dict[str, RiskCoverageCurve]
    routing: list[RoutingRow]
    bands: dict[str, list[BandCalibration]]
    costs: dict[str, CostEvaluation]
    cost_matrix: CostMatrix | None


def _routing_row(side: str, P: np.ndarray, y, target: float) -> RoutingRow:
    chosen = predicted_selective_threshold(P, target)
    row = RoutingRow(
        side=side,
        target_accuracy=target,
        met=chosen.met,
        threshold=chosen.threshold,
        predicted_accuracy=chosen.accuracy,
        predicted_coverage=chosen.coverage,
        n_answered=chosen.n_answered,
    )
    if y is None:
        return row
    answered = P.max(axis=1) >= chosen.threshold
    right = int((P.argmax(axis=1) == y)[answered].sum())
    n = int(answered.sum())
    return replace(
        row,
        accuracy=right / n if n else None,
        accuracy_ci=clopper_pearson(right, n) if n else None,
    )


def compute_decisions(
    sides: dict[str, np.ndarray],
    y=None,
    *,
    costs: CostMatrix | None = None,
    bands: Sequence[float] = DEFAULT_BANDS,
    targets: Sequence[float] = ROUTING_TARGETS,
    n_boot: int = 200,
    seed: int = 0,
) -> DecisionData:
    """The decision section's data for checked probability rows of each side.

    Parameters
    ----------
    sides : dict of str to numpy.ndarray
        ``{"before": P, "after": Q}`` (``after`` optional), rows already checked.
    y : numpy.ndarray, optional
        Checked gold class indices.
    costs : CostMatrix, optional
    bands : sequence of float
        Cuts of the confidence bands.
    targets : sequence of float
        Target accuracies of the routing table.
    n_boot, seed : int
        Bootstrap of the realised cost interval.

    Returns
    -------
    DecisionData

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> data = compute_decisions({"before": P}, np.array([0, 0, 1, 1]), targets=(0.8,))
    >>> round(data.risk_coverage["before"].aurc, 4), data.routing[0].threshold
    (0.0625, 0.7)
    """
    labelled = y is not None
    return DecisionData(
        risk_coverage={s: risk_coverage_curve(P, y) for s, P in sides.items()} if labelled else {},
        routing=[_routing_row(s, P, y, t) for s, P in sides.items() for t in targets],
        bands={s: band_calibration(P, y, bands) for s, P in sides.items()} if labelled else {},
        costs=(
            {}
            if costs is None
            else {
                s: evaluate_costs(P, costs, y, n_boot=n_boot, seed=seed) for s, P in sides.items()
            }
        ),
        cost_matrix=costs,
    )
