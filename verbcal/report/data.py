"""What the reliability report shows, as plain data: the dataclasses :func:`compute_report` fills.

Nothing here computes or draws; :mod:`verbcal.report.compute` fills these and
:mod:`verbcal.report.html` draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from verbcal.metrics import ReliabilityTable
from verbcal.metrics.comparison import MetricComparison, Verdict
from verbcal.report.decisions import DecisionData
from verbcal.thresholds import PrecisionRecallCurve, Target

__all__ = [
    "CalibratorInfo",
    "ClassCalibration",
    "CurveData",
    "DecisionData",
    "FailureReason",
    "MetricComparison",
    "OperatingPointCheck",
    "ParseSummary",
    "ProbabilityView",
    "ReportData",
    "Side",
    "SuspectGroup",
    "SuspectReason",
    "SuspectSummary",
    "Verdict",
]

#: Which probabilities a view shows: as stated, or calibrated.
Side = Literal["before", "after"]


@dataclass(frozen=True)
class ClassCalibration:
    """How well one class's probability matches how often the class is right.

    ``frequency`` and ``ece`` (the binned calibration error of ``P[:, k]``
    against ``y == k``; their mean over classes is ``metrics.classwise_ece``)
    are None without gold labels.
    """

    label: str
    mean_probability: float
    frequency: float | None = None
    ece: float | None = None


#: The precision–recall curve of the positive class, as :mod:`verbcal.thresholds` computes it
#: (``precision``/``recall`` None without gold labels).
CurveData = PrecisionRecallCurve


@dataclass(frozen=True)
class OperatingPointCheck:
    """A threshold chosen from the probabilities alone, and what it did on the gold labels.

    ``met`` says whether the *predicted* quantity reaches the target. The
    realised ``precision``/``recall`` and their Clopper–Pearson 95% intervals
    are None without gold labels (``recall`` also when no row is positive).
    """

    label: str
    target: Target
    target_value: float
    met: bool
    threshold: float
    n_predicted: int
    predicted_precision: float
    predicted_recall: float
    precision: float | None = None
    precision_ci: tuple[float, float] | None = None
    recall: float | None = None
    recall_ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class ProbabilityView:
    """Everything the report shows about one set of probability rows (before or after).

    Attributes
    ----------
    name : {"before", "after"}
        Stated or calibrated probabilities.
    edges, histogram : ndarray
        Uniform bin edges of the top-label confidence and the rows per bin.
    mean_confidence : float
        Mean top-label confidence.
    n_distinct : int
        Distinct top-label confidences (verbalized ones are few).
    reliability : ReliabilityTable or None
        Top-label reliability table on the same bins; None without gold labels.
    classes : list of ClassCalibration
    curve : PrecisionRecallCurve or None
        Precision–recall curve of the positive class (None without one).
    operating_point : OperatingPointCheck or None
        Chosen when a target was given.
    """

    name: Side
    edges: np.ndarray
    histogram: np.ndarray
    mean_confidence: float
    n_distinct: int
    reliability: ReliabilityTable | None
    classes: list[ClassCalibration]
    curve: PrecisionRecallCurve | None = None
    operating_point: OperatingPointCheck | None = None


@dataclass(frozen=True)
class FailureReason:
    """A reason answers were repaired or failed, how often, and one answer as an example."""

    status: str
    reason: str
    count: int
    example_id: str
    example_raw: str


@dataclass(frozen=True)
class ParseSummary:
    """How the model's answers were read: rows per status and the commonest problems."""

    n_answers: int
    status_counts: dict[str, int]
    reasons: list[FailureReason]


@dataclass(frozen=True)
class SuspectReason:
    """One reason items were flagged as possible prompt injections, how often, and an example.

    ``reason`` is one of :data:`verbcal.elicit.injection.SUSPECT_REASONS` (or
    the whole reason text when another tool wrote it); ``example`` is what
    matched in the first flagged item (``example_id``). An item flagged for
    two reasons counts under both.
    """

    reason: str
    count: int
    example_id: str
    example: str


@dataclass(frozen=True)
class SuspectGroup:
    """The report's rows that were flagged (or not), on one side: how right and how confident.

    ``accuracy`` (with its Clopper–Pearson 95% interval), ``ece`` and ``nll``
    are None without gold labels.
    """

    side: Side
    flagged: bool
    n_rows: int
    mean_confidence: float
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    ece: float | None = None
    nll: float | None = None


@dataclass(frozen=True)
class SuspectSummary:
    """Items flagged as possible prompt injections (``suspect: true``) and how they did.

    Attributes
    ----------
    n_items : int
        Item rows in the predictions (content-free probes left out).
    n_flagged : int
        Of those, flagged suspect: the count ``verbcal evaluate`` prints.
    n_skipped : int
        Flagged and never sent to the model (``--on-suspect skip``).
    n_kept : int
        Flagged and elicited anyway (``--on-suspect keep``).
    n_kept_parsed : int
        Of the kept, answers that could be read.
    reasons : list of SuspectReason
        Most frequent first.
    n_reported : int
        Flagged rows among the report's rows (held out, parsed).
    groups : list of SuspectGroup
        The report's rows split into flagged and not, per side; empty unless
        some reported row is flagged.
    """

    n_items: int
    n_flagged: int
    n_skipped: int
    n_kept: int
    n_kept_parsed: int
    reasons: list[SuspectReason]
    n_reported: int = 0
    groups: list[SuspectGroup] = field(default_factory=list)

    def group(self, side: Side, flagged: bool) -> SuspectGroup:
        """The group of ``side`` (``"before"``/``"after"``) that is, or is not, flagged."""
        for g in self.groups:
            if g.side == side and g.flagged == flagged:
                return g
        raise KeyError((side, flagged))


@dataclass(frozen=True)
class CalibratorInfo:
    """A calibrator as plain data: method, class, parameters, fitted values, explanation."""

    method: str
    estimator: str = ""
    params: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)
    explanation: str = ""


@dataclass(frozen=True)
class ReportData:
    """Everything the reliability report shows, computed; see :func:`compute_report`."""

    title: str
    labels: list[str]
    n_rows: int
    labelled: bool
    n_bins: int
    n_boot: int
    positive: str | None
    before: ProbabilityView
    after: ProbabilityView | None
    metrics: list[MetricComparison]
    parsing: ParseSummary | None
    calibrator: CalibratorInfo | None
    summary: list[str]
    #: Risk–coverage, routing table, calibration per confidence band, costs.
    decisions: DecisionData | None = None
    #: Items flagged as possible prompt injections (None: no predictions were given).
    suspects: SuspectSummary | None = None

    def metric(self, name: str) -> MetricComparison:
        """The row of the metrics table called ``name`` (e.g. ``"ece"``)."""
        for row in self.metrics:
            if row.name == name:
                return row
        raise KeyError(name)
