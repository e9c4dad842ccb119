"""Compute the report's data (:class:`ReportData`) from probability rows; nothing here draws."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from numbers import Integral
from pathlib import Path

import numpy as np

from verbcal import metrics, thresholds
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics import BootstrapCI, ReliabilityTable
from verbcal.metrics.binning import assign_bins, uniform_edges
from verbcal.metrics.scores import resampling_checked_rows
from verbcal.predictions import ITEM, Prediction
from verbcal.validation import check_labels, check_probabilities

__all__ = [
    "CalibratorInfo",
    "ClassCalibration",
    "CurveData",
    "FailureReason",
    "MetricComparison",
    "OperatingPointCheck",
    "ParseSummary",
    "ProbabilityView",
    "ReportData",
    "compare_metrics",
    "compute_report",
    "describe_calibrator",
    "predicted_curve",
    "render_html",
    "report_from_predictions",
    "summarize_parsing",
    "write_report",
]

#: Metrics of the table, in display order; all but accuracy are better when lower.
METRIC_NAMES = ("accuracy", "ece", "mce", "classwise_ece", "brier", "nll")
HIGHER_IS_BETTER = frozenset({"accuracy"})
#: Changes of a metric smaller than this are float noise, not a change.
NEGLIGIBLE = 1e-9

#: Longest example answer kept per failure reason (characters).
MAX_EXAMPLE_CHARS = 400
#: Most failure reasons listed.
MAX_REASONS = 10


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class MetricComparison:
    """One metric before and after calibration, with 95% bootstrap intervals.

    ``after`` and ``change`` (after − before, paired bootstrap) are None when
    the report has no calibrated probabilities.
    """

    name: str
    before: BootstrapCI
    after: BootstrapCI | None = None
    change: BootstrapCI | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.name in HIGHER_IS_BETTER

    @property
    def verdict(self) -> str | None:
        """ "better" or "worse" when the change's interval excludes 0, else "unclear".

        Changes within ``NEGLIGIBLE`` of 0 count as 0, so float noise (an
        identity calibrator that renormalises) is never called a change.
        None when there is no change to judge.
        """
        if self.change is None:
            return None
        if self.change.low <= NEGLIGIBLE and self.change.high >= -NEGLIGIBLE:
            return "unclear"
        return "better" if (self.change.low > 0) == self.higher_is_better else "worse"


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


@dataclass(frozen=True)
class CurveData:
    """Precision and recall of one class at every distinct probability, thresholds increasing.

    ``predicted_*`` come from the probabilities alone (as if calibrated);
    ``precision`` and ``recall`` are counted on gold labels (None without them).
    """

    label: str
    thresholds: np.ndarray
    predicted_precision: np.ndarray
    predicted_recall: np.ndarray
    precision: np.ndarray | None = None
    recall: np.ndarray | None = None


@dataclass(frozen=True)
class OperatingPointCheck:
    """A threshold chosen from the probabilities alone, and what it did on the gold labels.

    ``met`` says whether the *predicted* quantity reaches the target. The
    realised ``precision``/``recall`` and their Clopper–Pearson 95% intervals
    are None without gold labels (``recall`` also when no row is positive).
    """

    label: str
    target: str
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
    name : str
        "before" or "after".
    edges, histogram : ndarray
        Uniform bin edges of the top-label confidence and the rows per bin.
    mean_confidence : float
        Mean top-label confidence.
    n_distinct : int
        Distinct top-label confidences (verbalized ones are few).
    reliability : ReliabilityTable or None
        Top-label reliability table on the same bins; None without gold labels.
    classes : list of ClassCalibration
    curve : CurveData or None
        Precision–recall curve of the positive class (None without one).
    operating_point : OperatingPointCheck or None
        Chosen when a target was given.
    """

    name: str
    edges: np.ndarray
    histogram: np.ndarray
    mean_confidence: float
    n_distinct: int
    reliability: ReliabilityTable | None
    classes: list[ClassCalibration]
    curve: CurveData | None = None
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

    def metric(self, name: str) -> MetricComparison:
        """The row of the metrics table called ``name`` (e.g. ``"ece"``)."""
        for row in self.metrics:
            if row.name == name:
                return row
        raise KeyError(name)


# ----------------------------------------------------------------------------- calibrator


def describe_calibrator(calibrator, method: str | None = None) -> CalibratorInfo:
    """Describe a fitted calibrator as plain data for the report.

    Parameters
    ----------
    calibrator : fitted verbcal calibrator
        Anything with ``get_params``; fitted values are its public attributes
        ending in ``_`` (``explanation_`` becomes the explanation).
    method : str, optional
        Method name as the CLI knows it (``"temperature"``…); defaults to the class name.

    Returns
    -------
    CalibratorInfo

    Examples
    --------
    >>> from verbcal.calibrators import TemperatureScaling
    >>> cal = TemperatureScaling(eps=0.01).fit([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], [0, 1, 1])
    >>> info = describe_calibrator(cal, "temperature")
    >>> info.estimator, info.params["eps"], sorted(info.fitted)
    ('TemperatureScaling', 0.01, ['classes_', 'eps_', 'n_features_in_', 'nll_', 'temperature_'])
    """
    if not hasattr(calibrator, "get_params"):
        raise ConfigurationError(
            f"calibrator must be a fitted calibrator or a CalibratorInfo, got {calibrator!r}"
        )
    described = _plain(calibrator)
    return CalibratorInfo(
        method=method or described["class"],
        estimator=described["class"],
        params=described["params"],
        fitted={k: v for k, v in described["fitted"].items() if k != "explanation_"},
        explanation=str(getattr(calibrator, "explanation_", "") or ""),
    )


def _plain(value):
    """``value`` as plain Python data: arrays become lists, estimators nested dicts."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        fitted = {k: v for k, v in vars(value).items() if k.endswith("_") and not k.startswith("_")}
        return {
            "class": type(value).__name__,
            "params": {k: _plain(v) for k, v in value.get_params(deep=False).items()},
            "fitted": {k: _plain(v) for k, v in fitted.items()},
        }
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return repr(value)


# ----------------------------------------------------------------------------- parsing


def summarize_parsing(predictions: Sequence[Prediction]) -> ParseSummary:
    """Rows per parse status and the commonest reasons for repaired or failed answers.

    Only item predictions count (content-free probes are left out). Reasons
    are the predictions' ``detail``, most frequent first (ties by first
    appearance), at most ``MAX_REASONS``, each with the first answer that had it.

    Examples
    --------
    >>> from verbcal.predictions import Prediction
    >>> preds = [Prediction("1", ["a", "b"], None, "failed", "no numbers", raw="hmm"),
    ...          Prediction("2", ["a", "b"], {"a": 0.4, "b": 0.6}, "ok")]
    >>> s = summarize_parsing(preds)
    >>> s.status_counts, s.reasons[0].reason, s.reasons[0].example_raw
    ({'ok': 1, 'failed': 1}, 'no numbers', 'hmm')
    """
    items = [p for p in predictions if p.kind == ITEM]
    statuses = Counter(p.status for p in items)
    order = ["ok", "repaired", "failed"]
    counts = {s: statuses[s] for s in order if statuses[s]}
    counts.update({s: n for s, n in statuses.items() if s not in order})
    groups: dict[tuple[str, str], list[Prediction]] = {}
    for p in items:
        if p.status != "ok":
            groups.setdefault((p.status, p.detail or "(no reason given)"), []).append(p)
    # sorted() is stable: equally common reasons stay in order of first appearance.
    ranked = sorted(groups.items(), key=lambda group: -len(group[1]))[:MAX_REASONS]
    reasons = [
        FailureReason(status, reason, len(group), group[0].id, _example(group[0]))
        for (status, reason), group in ranked
    ]
    return ParseSummary(n_answers=len(items), status_counts=counts, reasons=reasons)


def _example(prediction: Prediction) -> str:
    raw = prediction.raw
    if isinstance(raw, list):  # several samples: the first one stands for them
        raw = raw[0] if raw else ""
    text = "" if raw is None else str(raw)
    if len(text) > MAX_EXAMPLE_CHARS:
        text = text[:MAX_EXAMPLE_CHARS] + f" … ({len(text):,} characters in all)"
    return text


# ----------------------------------------------------------------------------- inputs


def _check_labels_list(labels) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise InvalidInputError(f"labels must be a list of strings, got {labels!r}")
    labels = list(labels)
    if len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise InvalidInputError(f"labels must be at least two strings, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise InvalidInputError(f"labels must be distinct, got {labels!r}")
    return labels


def _check_rows(P, name: str, labels: list[str], n_rows: int | None) -> np.ndarray:
    arr = check_probabilities(P, name=name)
    if arr.shape[1] != len(labels):
        raise InvalidInputError(
            f"{name} has {arr.shape[1]} columns but there are {len(labels)} labels {labels}"
        )
    if n_rows is not None and arr.shape[0] != n_rows:
        raise InvalidInputError(f"{name} has {arr.shape[0]} rows but P_before has {n_rows}")
    return arr


def _check_options(n_bins, n_boot, positive, labels, target_precision, target_recall) -> None:
    for name, value in (("n_bins", n_bins), ("n_boot", n_boot)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    if positive is not None and positive not in labels:
        raise ConfigurationError(f"positive label {positive!r} is not one of {labels}")
    if target_precision is not None and target_recall is not None:
        raise ConfigurationError("give at most one of target_precision and target_recall")
    if (target_precision is not None or target_recall is not None) and positive is None:
        raise ConfigurationError(
            f"a precision or recall target needs a positive label (one of {labels})"
        )


# ----------------------------------------------------------------------------- views


def _metric_functions(n_bins: int) -> dict[str, Callable]:
    return {
        "accuracy": metrics.accuracy,
        "ece": partial(metrics.ece, n_bins=n_bins),
        "mce": partial(metrics.mce, n_bins=n_bins),
        "classwise_ece": partial(metrics.classwise_ece, n_bins=n_bins),
        "brier": metrics.brier,
        "nll": metrics.nll,
    }


def _confidence_histogram(P: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = uniform_edges(n_bins)
    counts = np.bincount(assign_bins(P.max(axis=1), edges), minlength=n_bins)
    return edges, counts


def _table_ece(table: ReliabilityTable) -> float:
    """``sum_b (n_b / n) |accuracy_b - confidence_b|`` over the non-empty bins of a table."""
    full = table.count > 0
    gaps = np.abs(table.accuracy[full] - table.confidence[full])
    return float(np.sum(table.count[full] * gaps) / table.count.sum())


def _classes(P: np.ndarray, y, labels: list[str], n_bins: int) -> list[ClassCalibration]:
    out = []
    for k, label in enumerate(labels):
        mean = float(P[:, k].mean())
        if y is None:
            out.append(ClassCalibration(label, mean))
            continue
        table = metrics.reliability_table(P, y, n_bins, class_index=k)
        out.append(ClassCalibration(label, mean, float(np.mean(y == k)), _table_ece(table)))
    return out


def predicted_curve(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds (the distinct scores, increasing) and the precision/recall they predict.

    Predicting positive when ``score >= t``: the predicted precision is the
    mean score of those rows and the predicted recall their share of the sum
    of all scores (NaN when every score is 0), as
    :func:`verbcal.thresholds.predicted_precision` and ``predicted_recall`` compute them.

    Examples
    --------
    >>> t, pp, pr = predicted_curve(np.array([0.9, 0.8, 0.6, 0.3]))
    >>> t.tolist(), pp.round(4).tolist(), pr.round(4).tolist()
    ([0.3, 0.6, 0.8, 0.9], [0.65, 0.7667, 0.85, 0.9], [1.0, 0.8846, 0.6538, 0.3462])
    """
    values, inverse = np.unique(scores, return_inverse=True)
    count = np.bincount(inverse)
    total = np.bincount(inverse, weights=scores)
    # Rows at or above each threshold: sums from the top down.
    n_above = np.cumsum(count[::-1])[::-1]
    sum_above = np.cumsum(total[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return values, sum_above / n_above, sum_above / sum_above[0]


def _curve(P: np.ndarray, y, column: int, label: str) -> CurveData:
    t, pp, pr = predicted_curve(P[:, column])
    if y is None or not (y == column).any():
        return CurveData(label, t, pp, pr)
    counted = thresholds.precision_recall_curve(P, y, column)
    return CurveData(label, t, pp, pr, counted.precision, counted.recall)


def _operating_point(
    P: np.ndarray, y, column: int, label: str, target_precision, target_recall
) -> OperatingPointCheck:
    point = thresholds.operating_point_from_probabilities(
        P, column, target_precision=target_precision, target_recall=target_recall
    )
    check = OperatingPointCheck(
        label=label,
        target=point.target,
        target_value=point.target_value,
        met=point.met,
        threshold=point.threshold,
        n_predicted=point.n_predicted,
        predicted_precision=point.predicted_precision,
        predicted_recall=point.predicted_recall,
    )
    if y is None:
        return check
    flagged = P[:, column] >= point.threshold
    positive = y == column
    tp, n_pos = int((flagged & positive).sum()), int(positive.sum())
    realised = {
        "precision": tp / point.n_predicted,
        "precision_ci": thresholds.clopper_pearson(tp, point.n_predicted),
    }
    if n_pos:
        realised.update(recall=tp / n_pos, recall_ci=thresholds.clopper_pearson(tp, n_pos))
    return replace(check, **realised)


def _view(name, P, y, labels, n_bins, column, target_precision, target_recall) -> ProbabilityView:
    edges, counts = _confidence_histogram(P, n_bins)
    confidence = P.max(axis=1)
    curve = point = None
    if column is not None:
        curve = _curve(P, y, column, labels[column])
        if target_precision is not None or target_recall is not None:
            point = _operating_point(P, y, column, labels[column], target_precision, target_recall)
    return ProbabilityView(
        name=name,
        edges=edges,
        histogram=counts,
        mean_confidence=float(confidence.mean()),
        n_distinct=int(np.unique(confidence).size),
        reliability=None if y is None else metrics.reliability_table(P, y, n_bins),
        classes=_classes(P, y, labels, n_bins),
        curve=curve,
        operating_point=point,
    )


# ----------------------------------------------------------------------------- metrics


def compare_metrics(
    P_before: np.ndarray,
    P_after: np.ndarray | None,
    y: np.ndarray,
    *,
    n_bins: int = 15,
    n_boot: int = 200,
    seed: int = 0,
) -> list[MetricComparison]:
    """Every metric of the report before and after, with bootstrap and paired-change intervals.

    Resample ``b`` is ``rng.integers(0, n, n)`` from ``np.random.default_rng(seed)``,
    shared by every metric and both sides, so each interval equals
    ``metrics.bootstrap_ci(metric, P, y, n_boot, random_state=seed)`` and the
    change interval is the percentile interval of the per-resample differences.

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> rows = compare_metrics(P, None, np.array([0, 1, 1, 0]), n_boot=50)
    >>> rows[0].name, rows[0].before.estimate
    ('accuracy', 0.75)
    """
    P_before = check_probabilities(P_before, name="P_before")
    y = check_labels(y, P_before.shape[0], P_before.shape[1])
    if P_after is not None:
        P_after = check_probabilities(P_after, name="P_after")
        if P_after.shape != P_before.shape:
            raise InvalidInputError(
                f"P_after has shape {P_after.shape}, P_before {P_before.shape}: "
                "they must hold the same rows"
            )
    functions = _metric_functions(n_bins)
    sides = [P_before] if P_after is None else [P_before, P_after]
    values = np.empty((len(functions), len(sides), n_boot))
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    with resampling_checked_rows():  # resamples of the rows checked above
        for b in range(n_boot):
            rows = rng.integers(0, n, n)
            y_b = y[rows]
            for s, P in enumerate(sides):
                P_b = P[rows]
                for m, fn in enumerate(functions.values()):
                    values[m, s, b] = fn(P_b, y_b)
    out = []
    for m, (name, fn) in enumerate(functions.items()):
        estimates = [fn(P, y) for P in sides]
        cis = [_percentile_ci(est, values[m, s]) for s, est in enumerate(estimates)]
        if P_after is None:
            out.append(MetricComparison(name, cis[0]))
            continue
        change = _percentile_ci(estimates[1] - estimates[0], values[m, 1] - values[m, 0])
        out.append(MetricComparison(name, cis[0], cis[1], change))
    return out


def _percentile_ci(estimate: float, values: np.ndarray, alpha: float = 0.05) -> BootstrapCI:
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(float(estimate), float(low), float(high))


# ----------------------------------------------------------------------------- entry point


def compute_report(
    labels: Sequence[str],
    P_before,
    P_after=None,
    y=None,
    *,
    predictions: Sequence[Prediction] | None = None,
    calibrator=None,
    positive: str | None = None,
    target_precision: float | None = None,
    target_recall: float | None = None,
    n_bins: int = 15,
    n_boot: int = 200,
    seed: int = 0,
    title: str = "Calibration report",
) -> ReportData:
    """Compute everything the reliability report shows, as plain data.

    Parameters
    ----------
    labels : sequence of str
        Class labels, in column order.
    P_before : array-like of shape (n, K)
        Held-out probability rows as the model stated them (rows sum to 1).
    P_after : array-like of shape (n, K), optional
        The same rows after calibration. None reports on ``P_before`` alone.
    y : array-like of shape (n,), optional
        Gold class indices. None (unlabelled rows) leaves out everything that
        needs them: the report then shows predicted quantities and histograms.
    predictions : sequence of Prediction, optional
        All the answers (parsed or not) for the parse-status section.
    calibrator : CalibratorInfo or fitted calibrator, optional
        What calibrated the rows (see :func:`describe_calibrator`).
    positive : str, optional
        Label treated as positive for the precision–recall curve and operating
        points; a binary problem defaults to its second label.
    target_precision, target_recall : float in (0, 1], optional
        At most one: an operating point is chosen for it before and after calibration.
    n_bins : int, default 15
        Uniform bins of the confidence, for diagrams, histograms and binned errors.
    n_boot : int, default 200
        Bootstrap resamples of the metric intervals.
    seed : int, default 0
        Seed of the bootstrap.
    title : str, default "Calibration report"

    Returns
    -------
    ReportData

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> data = compute_report(["neg", "pos"], P, y=[0, 1, 1, 0], n_boot=20)
    >>> data.n_rows, round(data.metric("ece").before.estimate, 6), data.positive
    (4, 0.35, 'pos')
    """
    labels = _check_labels_list(labels)
    before = _check_rows(P_before, "P_before", labels, None)
    n = before.shape[0]
    after = None if P_after is None else _check_rows(P_after, "P_after", labels, n)
    y = None if y is None else check_labels(y, n, len(labels))
    if positive is None and len(labels) == 2:
        positive = labels[1]
    _check_options(n_bins, n_boot, positive, labels, target_precision, target_recall)
    if calibrator is not None and not isinstance(calibrator, CalibratorInfo):
        calibrator = describe_calibrator(calibrator)

    column = None if positive is None else labels.index(positive)
    targets = (target_precision, target_recall)
    view_before = _view("before", before, y, labels, n_bins, column, *targets)
    view_after = (
        None if after is None else _view("after", after, y, labels, n_bins, column, *targets)
    )
    table = (
        []
        if y is None
        else compare_metrics(before, after, y, n_bins=n_bins, n_boot=n_boot, seed=seed)
    )
    data = ReportData(
        title=str(title),
        labels=labels,
        n_rows=n,
        labelled=y is not None,
        n_bins=int(n_bins),
        n_boot=int(n_boot),
        positive=positive,
        before=view_before,
        after=view_after,
        metrics=table,
        parsing=None if predictions is None else summarize_parsing(predictions),
        calibrator=calibrator,
        summary=[],
    )
    return replace(data, summary=summarize(data))


def report_from_predictions(
    predictions: Sequence[Prediction], record=None, **options
) -> ReportData:
    """The report ``verbcal report`` writes: predictions, optionally a calibrator file's record.

    With a :class:`~verbcal.persist.CalibratorRecord`, only the item rows the
    calibrator was not fitted on are reported (``workflow.held_out``), before
    and after applying it. Without one, every parsed item row is reported
    as stated.

    Parameters
    ----------
    predictions : sequence of Prediction
        As read by :func:`verbcal.predictions.read_predictions`.
    record : CalibratorRecord, optional
        As read by :func:`verbcal.persist.load_calibrator`.
    **options
        Passed to :func:`compute_report` (``positive``, ``target_precision``, ``title``…).

    Returns
    -------
    ReportData
    """
    from verbcal.predictions import to_arrays
    from verbcal.workflow import held_out

    if record is None:
        rows, after, info = to_arrays(predictions, kind=ITEM), None, None
    else:
        rows = held_out(predictions, record.fitted_ids, record.labels)
        after = record.calibrator.predict_proba(rows.P)
        info = describe_calibrator(record.calibrator, record.method)
    return compute_report(
        rows.labels, rows.P, after, rows.y, predictions=predictions, calibrator=info, **options
    )


# ----------------------------------------------------------------------------- summary


def _ci(ci: BootstrapCI) -> str:
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _lean(view: ProbabilityView, accuracy: float) -> str:
    gap = view.mean_confidence - accuracy
    said = f"mean confidence {view.mean_confidence:.3f} against accuracy {accuracy:.3f}"
    if abs(gap) < 0.02:
        return f"close to right on average ({said})"
    return f"{'over' if gap > 0 else 'under'}-confident ({said})"


def summarize(data: ReportData) -> list[str]:
    """The report's plain-language summary, one sentence group per item."""
    rows = f"{data.n_rows:,} held-out {'labelled' if data.labelled else 'unlabelled'} rows"
    if not data.labelled:
        text = [f"{rows}: without gold labels only predicted quantities are shown."]
        said = f"The stated confidences average {data.before.mean_confidence:.3f}"
        if data.after is not None:
            said += f" before calibration and {data.after.mean_confidence:.3f} after"
        text.append(said + ".")
    else:
        text = [_calibration_sentence(data, rows)]
        acc = data.metric("accuracy")
        text.append(
            "Before calibration the stated confidences were "
            + _lean(data.before, acc.before.estimate)
            + "."
        )
        if data.after is not None:
            text.append("After calibration they are " + _lean(data.after, acc.after.estimate) + ".")
            if abs(acc.after.estimate - acc.before.estimate) > 1e-12:
                text.append(
                    f"Calibration changed which class is predicted for some rows: accuracy "
                    f"went from {acc.before.estimate:.3f} to {acc.after.estimate:.3f}."
                )
    n_distinct = data.before.n_distinct
    if n_distinct <= 20:
        stated = (
            "a single confidence value"
            if n_distinct == 1
            else f"only {n_distinct} distinct confidence values"
        )
        text.append(
            f"The model stated {stated}, so before calibration its rows fall in at most "
            f"{n_distinct} of the {data.n_bins} bins."
        )
    text.extend(_point_sentences(data))
    if data.parsing is not None:
        text.append(_parsing_sentence(data.parsing))
    return text


def _calibration_sentence(data: ReportData, rows: str) -> str:
    ece = data.metric("ece")
    if ece.after is None:
        return f"ECE {_ci(ece.before)} on {rows} (no calibrated probabilities given)."
    change = ece.change
    difference = ece.after.estimate - ece.before.estimate
    if abs(difference) <= NEGLIGIBLE:
        text = f"Calibration left ECE at {_ci(ece.before)} on {rows}"
    else:
        moved = "lowered" if difference < 0 else "raised"
        text = f"Calibration {moved} ECE from {_ci(ece.before)} to {_ci(ece.after)} on {rows}"
    text += (
        f"; the paired bootstrap change is {change.estimate:+.3f} [{change.low:+.3f}, "
        f"{change.high:+.3f}]"
    )
    verdict = ece.verdict
    if verdict == "better":
        return text + ", a clear improvement."
    if verdict == "worse":
        return text + ": calibration made these probabilities worse."
    return text + ", which includes 0: no clear difference on these rows."


def _point_sentences(data: ReportData) -> list[str]:
    out = []
    for view in (data.before, data.after):
        point = None if view is None else view.operating_point
        if point is None:
            continue
        which = "stated" if view.name == "before" else "calibrated"
        sentence = (
            f"Aiming at {point.target} ≥ {point.target_value:g} for {point.label!r} with the "
            f"{which} probabilities: threshold {point.threshold:.3f} flags {point.n_predicted:,} "
            f"of {data.n_rows:,} rows and {'meets' if point.met else 'cannot meet'} it by "
            f"prediction (predicted precision {point.predicted_precision:.3f}"
        )
        if point.precision is not None:
            low, high = point.precision_ci
            sentence += f", realised {point.precision:.3f} [{low:.3f}, {high:.3f}]"
        out.append(sentence + ").")
    return out


def _parsing_sentence(parsing: ParseSummary) -> str:
    failed = parsing.status_counts.get("failed", 0)
    repaired = parsing.status_counts.get("repaired", 0)
    share = failed / parsing.n_answers if parsing.n_answers else 0.0
    return (
        f"{failed:,} of {parsing.n_answers:,} answers ({share:.1%}) could not be parsed and "
        f"are left out; {repaired:,} were read after repairs."
    )


# ----------------------------------------------------------------------------- output


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts).

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> page = render_html(compute_report(["neg", "pos"], P, y=[0, 1, 1, 0], n_boot=20))
    >>> page.startswith("<!DOCTYPE html>"), "<script" in page
    (True, False)
    """
    from verbcal.report.html import render

    return render(data)


def write_report(path: str | os.PathLike, data: ReportData) -> Path:
    """Write :func:`render_html` of ``data`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path
