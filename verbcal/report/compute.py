"""Compute the report's data (:class:`~verbcal.report.data.ReportData`) from probability rows.

Nothing here draws (:mod:`verbcal.report.html` does) and nothing here computes
a number of its own: metrics come from :mod:`verbcal.metrics`, curves,
operating points and their intervals from :mod:`verbcal.thresholds`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from verbcal import metrics, thresholds
from verbcal.decisions import DEFAULT_BANDS, CostMatrix, cost_matrix
from verbcal.elicit.injection import SKIPPED_DETAIL, SUSPECT_REASONS
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics.binning import assign_bins, uniform_edges
from verbcal.metrics.comparison import compare_metrics
from verbcal.metrics.intervals import clopper_pearson
from verbcal.persist import estimator_to_dict
from verbcal.prediction_columns import IdColumn, PredictionColumns
from verbcal.predictions import ITEM, STATUSES, Prediction, iter_predictions
from verbcal.report.data import (
    CalibratorInfo,
    ClassCalibration,
    FailureReason,
    OperatingPointCheck,
    ParseSummary,
    ProbabilityView,
    ReportData,
    Side,
    SuspectGroup,
    SuspectReason,
    SuspectSummary,
)
from verbcal.report.decisions import compute_decisions
from verbcal.report.summary import summarize
from verbcal.validation import Interval, check_labels, check_params, check_probabilities

__all__ = [
    "compute_report",
    "describe_calibrator",
    "report_from_predictions",
    "summarize_parsing",
    "summarize_suspects",
]

#: Longest example answer kept per failure reason (characters).
MAX_EXAMPLE_CHARS = 400
#: Most failure reasons listed.
MAX_REASONS = 10
#: Level of the report's intervals (bootstrap and Clopper–Pearson).
CONFIDENCE = 0.95


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
    described = estimator_to_dict(calibrator, plain=True)
    return CalibratorInfo(
        method=method or described["class"],
        estimator=described["class"],
        params=described["params"],
        fitted={k: v for k, v in described["fitted"].items() if k != "explanation_"},
        explanation=str(getattr(calibrator, "explanation_", "") or ""),
    )


# ----------------------------------------------------------------------------- parsing


def summarize_parsing(predictions: Sequence[Prediction] | PredictionColumns) -> ParseSummary:
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
    if isinstance(predictions, PredictionColumns):
        n_items, statuses, unusual = predictions.parse_statuses()
    else:
        items = [p for p in predictions if p.kind == ITEM]
        n_items, statuses = len(items), Counter(p.status for p in items)
        unusual = [p for p in items if p.status != "ok"]
    counts: dict[str, int] = {s: statuses[s] for s in STATUSES if statuses[s]}
    groups: dict[tuple[str, str], list[Prediction]] = {}
    for p in unusual:
        groups.setdefault((p.status, p.detail or "(no reason given)"), []).append(p)
    # sorted() is stable: equally common reasons stay in order of first appearance.
    ranked = sorted(groups.items(), key=lambda group: -len(group[1]))[:MAX_REASONS]
    reasons = [
        FailureReason(status, reason, len(group), group[0].id, _example(group[0]))
        for (status, reason), group in ranked
    ]
    return ParseSummary(n_answers=n_items, status_counts=counts, reasons=reasons)


def _example(prediction: Prediction) -> str:
    raw = prediction.raw
    if isinstance(raw, list):  # several samples: the first one stands for them
        raw = raw[0] if raw else ""
    text = "" if raw is None else str(raw)
    if len(text) > MAX_EXAMPLE_CHARS:
        text = text[:MAX_EXAMPLE_CHARS] + f" … ({len(text):,} characters in all)"
    return text


# ----------------------------------------------------------------------------- suspects

#: Where one reason ends and the next begins in a ``suspect_reason`` ("kind: match; kind: match").
_NEXT_REASON = re.compile(
    "; (?=(?:" + "|".join(re.escape(kind) for kind in SUSPECT_REASONS) + "): )"
)


def _reason_parts(text: str | None) -> list[tuple[str, str]]:
    """``(kind, what matched)`` for each reason in a prediction's ``suspect_reason``."""
    if not text:
        return [("(no reason given)", "")]
    parts = []
    for part in _NEXT_REASON.split(text):
        kind, sep, matched = part.partition(": ")
        if sep and kind in SUSPECT_REASONS:
            parts.append((kind, matched))
        else:  # written by another tool: the whole text is the reason
            parts.append((part if len(part) <= 80 else part[:79] + "…", ""))
    return parts


def _flagged_items(predictions: Sequence[Prediction] | PredictionColumns) -> Iterator[Prediction]:
    """The flagged item predictions, in file order (columns: the file is read again for them)."""
    rows: Iterable[Prediction]
    if isinstance(predictions, PredictionColumns):
        if not predictions.n_suspect():
            return
        rows = (p for _, p in iter_predictions(predictions.path))
    else:
        rows = predictions
    for p in rows:
        if p.kind == ITEM and p.suspect:
            yield p


def summarize_suspects(
    predictions: Sequence[Prediction] | PredictionColumns,
) -> SuspectSummary:
    """Items flagged as possible prompt injections: how many, why, skipped or kept.

    Only item predictions count (content-free probes are left out), as in
    ``verbcal evaluate``. An item was skipped when it was flagged and never sent
    to the model (``--on-suspect skip``: its ``detail`` is
    :data:`~verbcal.elicit.injection.SKIPPED_DETAIL`), kept otherwise. Reasons
    are most frequent first (ties by first appearance), each with the first
    flagged item and what matched in it. The report's own rows are split by
    :func:`compute_report` (``groups``).

    Examples
    --------
    >>> from verbcal.predictions import Prediction
    >>> from verbcal.elicit.injection import SKIPPED_DETAIL
    >>> preds = [
    ...     Prediction("1", ["a", "b"], {"a": 0.4, "b": 0.6}, "ok"),
    ...     Prediction("2", ["a", "b"], {"a": 0.9, "b": 0.1}, "ok", suspect=True,
    ...                suspect_reason="instruction override: ignore all previous instructions"),
    ...     Prediction("3", ["a", "b"], None, "failed", SKIPPED_DETAIL, suspect=True,
    ...                suspect_reason='answer JSON: {"Answer":; fence line: <<<'),
    ... ]
    >>> s = summarize_suspects(preds)
    >>> s.n_items, s.n_flagged, s.n_skipped, s.n_kept, s.n_kept_parsed
    (3, 2, 1, 1, 1)
    >>> [(r.reason, r.count, r.example_id) for r in s.reasons]
    [('instruction override', 1, '2'), ('answer JSON', 1, '3'), ('fence line', 1, '3')]
    """
    if isinstance(predictions, PredictionColumns):
        n_items = int((~predictions.content_free).sum())
    else:
        n_items = sum(p.kind == ITEM for p in predictions)
    n_flagged = n_skipped = n_kept_parsed = 0
    counts: Counter[str] = Counter()
    first: dict[str, tuple[str, str]] = {}  # reason: (id, what matched) of its first item
    for p in _flagged_items(predictions):
        n_flagged += 1
        if p.status == "failed" and p.probs is None and p.detail == SKIPPED_DETAIL:
            n_skipped += 1
        elif p.probs is not None:
            n_kept_parsed += 1
        for kind, matched in _reason_parts(p.suspect_reason):
            counts[kind] += 1
            first.setdefault(kind, (p.id, matched))
    if isinstance(predictions, PredictionColumns) and n_flagged != predictions.n_suspect():
        raise InvalidInputError(f"{predictions.path} changed while the report was being made")
    ranked = sorted(first, key=lambda kind: -counts[kind])  # stable: ties stay in order
    reasons = [SuspectReason(kind, counts[kind], *first[kind]) for kind in ranked]
    return SuspectSummary(
        n_items=n_items,
        n_flagged=n_flagged,
        n_skipped=n_skipped,
        n_kept=n_flagged - n_skipped,
        n_kept_parsed=n_kept_parsed,
        reasons=reasons,
    )


def _suspect_groups(
    sides: dict[Side, np.ndarray], y, flagged: np.ndarray, n_bins: int
) -> list[SuspectGroup]:
    """The report's rows, flagged and not, per side (empty unless a row is flagged)."""
    if not flagged.any():
        return []
    out = []
    for side, P in sides.items():
        for is_flagged in (True, False):
            rows = flagged if is_flagged else ~flagged
            n = int(rows.sum())
            if not n:
                continue
            part = P[rows]
            group = SuspectGroup(
                side=side,
                flagged=is_flagged,
                n_rows=n,
                mean_confidence=float(part.max(axis=1).mean()),
            )
            if y is not None:
                truth = y[rows]
                acc = metrics.accuracy(part, truth)
                group = replace(
                    group,
                    accuracy=acc,
                    accuracy_ci=clopper_pearson(round(acc * n), n, CONFIDENCE),
                    ece=metrics.ece(part, truth, n_bins=n_bins),
                    nll=metrics.nll(part, truth),
                )
            out.append(group)
    return out


def _row_flags(ids, flagged_ids: list[str]) -> np.ndarray:
    """Which of the report's row ``ids`` are among ``flagged_ids``."""
    if isinstance(ids, IdColumn):
        return ids.isin(flagged_ids)
    wanted = set(flagged_ids)
    return np.array([i in wanted for i in ids], dtype=bool)


def _flagged_ids(predictions: Sequence[Prediction] | PredictionColumns) -> list[str]:
    if isinstance(predictions, PredictionColumns):
        rows = np.flatnonzero(predictions.suspect & ~predictions.content_free)
        return [predictions.ids[int(i)] for i in rows]
    return [p.id for p in predictions if p.kind == ITEM and p.suspect]


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
    positive_int = [Interval("integer", 1, None)]
    check_params(
        {"n_bins": n_bins, "n_boot": n_boot}, {"n_bins": positive_int, "n_boot": positive_int}
    )
    if positive is not None and positive not in labels:
        raise ConfigurationError(f"positive label {positive!r} is not one of {labels}")
    if target_precision is not None and target_recall is not None:
        raise ConfigurationError("give at most one of target_precision and target_recall")
    if (target_precision is not None or target_recall is not None) and positive is None:
        raise ConfigurationError(
            f"a precision or recall target needs a positive label (one of {labels})"
        )


# ----------------------------------------------------------------------------- views


def _confidence_histogram(P: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = uniform_edges(n_bins)
    counts = np.bincount(assign_bins(P.max(axis=1), edges), minlength=n_bins)
    return edges, counts


def _classes(P: np.ndarray, y, labels: list[str], n_bins: int) -> list[ClassCalibration]:
    out = []
    for k, label in enumerate(labels):
        mean = float(P[:, k].mean())
        if y is None:
            out.append(ClassCalibration(label, mean))
            continue
        ece = metrics.class_ece(P, y, k, n_bins=n_bins)
        out.append(ClassCalibration(label, mean, float(np.mean(y == k)), ece))
    return out


def _operating_point(
    P: np.ndarray, y, labels: list[str], positive: str, target_precision, target_recall
) -> OperatingPointCheck:
    point = thresholds.operating_point_from_probabilities(
        P,
        positive,
        labels=labels,
        target_precision=target_precision,
        target_recall=target_recall,
    )
    check = OperatingPointCheck(
        label=positive,
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
    rates = thresholds.precision_recall_at(
        P, y, positive, point.threshold, labels=labels, confidence=CONFIDENCE
    )
    return replace(
        check,
        precision=rates.precision,
        precision_ci=rates.precision_ci,
        recall=rates.recall,
        recall_ci=rates.recall_ci,
    )


def _view(
    name: Side, P, y, labels, n_bins, positive, target_precision, target_recall
) -> ProbabilityView:
    edges, counts = _confidence_histogram(P, n_bins)
    confidence = P.max(axis=1)
    curve = point = None
    if positive is not None:
        # Counted precision and recall need gold labels with at least one positive row.
        has_positive = y is not None and (y == labels.index(positive)).any()
        curve = thresholds.precision_recall_curve(
            P, y if has_positive else None, positive, labels=labels
        )
        if target_precision is not None or target_recall is not None:
            point = _operating_point(P, y, labels, positive, target_precision, target_recall)
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


# ----------------------------------------------------------------------------- entry point


def _cost_matrix(costs, labels: list[str]) -> CostMatrix | None:
    if costs is None:
        return None
    if not isinstance(costs, CostMatrix):
        return cost_matrix(costs, labels)
    if costs.labels != labels:
        raise InvalidInputError(f"the costs are for labels {costs.labels}, the rows for {labels}")
    return costs


def compute_report(
    labels: Sequence[str],
    P_before,
    P_after=None,
    y=None,
    *,
    predictions: Sequence[Prediction] | PredictionColumns | None = None,
    calibrator=None,
    positive: str | None = None,
    target_precision: float | None = None,
    target_recall: float | None = None,
    n_bins: int = 15,
    n_boot: int = 200,
    seed: int = 0,
    title: str = "Calibration report",
    costs=None,
    bands: Sequence[float] = DEFAULT_BANDS,
    suspect=None,
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
    costs : CostMatrix or mapping, optional
        Costs of each (decision, truth) pair (:mod:`verbcal.decisions`): the
        report then compares the Bayes decisions' predicted and realised cost.
    bands : sequence of float, default (0.6, 0.8)
        Cuts of the confidence bands for calibration per band.
    suspect : array-like of shape (n,), bool, optional
        Which rows were flagged as possible prompt injections: the report then
        compares them with the other rows (accuracy with intervals, mean
        confidence, ECE, NLL). The counts of flagged, skipped and kept items
        come from ``predictions`` when given (:func:`summarize_suspects`),
        else from this mask.

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
    return _report_of_rows(
        labels,
        P_before,
        P_after,
        y,
        parsing=None if predictions is None else summarize_parsing(predictions),
        suspects=None if predictions is None else summarize_suspects(predictions),
        calibrator=calibrator,
        positive=positive,
        target_precision=target_precision,
        target_recall=target_recall,
        n_bins=n_bins,
        n_boot=n_boot,
        seed=seed,
        title=title,
        costs=costs,
        bands=bands,
        suspect=suspect,
    )


def _report_of_rows(
    labels: Sequence[str],
    P_before,
    P_after,
    y,
    *,
    parsing: ParseSummary | None,
    suspects: SuspectSummary | None,
    calibrator=None,
    positive: str | None = None,
    target_precision: float | None = None,
    target_recall: float | None = None,
    n_bins: int = 15,
    n_boot: int = 200,
    seed: int = 0,
    title: str = "Calibration report",
    costs=None,
    bands: Sequence[float] = DEFAULT_BANDS,
    suspect=None,
) -> ReportData:
    """:func:`compute_report` with the predictions' summaries already made (same defaults)."""
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
    flagged = None if suspect is None else _check_flags(suspect, n)

    targets = (target_precision, target_recall)
    view_before = _view("before", before, y, labels, n_bins, positive, *targets)
    view_after = (
        None if after is None else _view("after", after, y, labels, n_bins, positive, *targets)
    )
    table = (
        []
        if y is None
        else compare_metrics(
            before, after, y, n_bins=n_bins, n_boot=n_boot, seed=seed, confidence=CONFIDENCE
        )
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
        parsing=parsing,
        calibrator=calibrator,
        summary=[],
        decisions=compute_decisions(
            {"before": before} if after is None else {"before": before, "after": after},
            y,
            costs=_cost_matrix(costs, labels),
            bands=bands,
            n_boot=n_boot,
            seed=seed,
        ),
    )
    data = replace(data, suspects=_suspects(suspects, flagged, before, after, y, n_bins))
    return replace(data, summary=summarize(data))


def _suspects(
    summary: SuspectSummary | None, flagged, before, after, y, n_bins: int
) -> SuspectSummary | None:
    """The predictions' suspect summary (or one made from ``flagged``), with the rows' groups."""
    if summary is None and flagged is None:
        return None
    if summary is None:
        assert flagged is not None
        k = int(flagged.sum())
        summary = SuspectSummary(len(flagged), k, 0, k, k, [])
    if flagged is None:
        return summary
    sides: dict[Side, np.ndarray] = {"before": before}
    if after is not None:
        sides["after"] = after
    return replace(
        summary,
        n_reported=int(flagged.sum()),
        groups=_suspect_groups(sides, y, flagged, n_bins),
    )


def _check_flags(suspect, n: int) -> np.ndarray:
    flags = np.asarray(suspect)
    if flags.shape != (n,) or flags.dtype != bool:
        raise InvalidInputError(
            f"suspect must be {n} booleans (one per row), got shape {flags.shape} of {flags.dtype}"
        )
    return flags


def report_from_predictions(
    predictions: Sequence[Prediction] | PredictionColumns, record=None, **options
) -> ReportData:
    """The report ``verbcal report`` writes: predictions, optionally a calibrator file's record.

    With a :class:`~verbcal.persist.CalibratorRecord`, only the item rows the
    calibrator was not fitted on are reported (``workflow.held_out``), before
    and after applying it. Without one, every parsed item row is reported
    as stated. Items flagged ``suspect`` (possible prompt injections) are
    counted over the whole file, as ``verbcal evaluate`` counts them, and the
    reported rows among them are compared with the others.

    Parameters
    ----------
    predictions : sequence of Prediction
        As read by :func:`verbcal.predictions.read_predictions` (or
        :func:`verbcal.prediction_columns.read_columns`).
    record : CalibratorRecord, optional
        As read by :func:`verbcal.persist.load_calibrator`.
    **options
        Passed to :func:`compute_report` (``positive``, ``target_precision``, ``title``…).

    Returns
    -------
    ReportData
    """
    from verbcal.prediction_columns import PredictionColumns, arrays_of
    from verbcal.workflow import calibrate, held_out

    if record is None:
        rows, after, info = arrays_of(predictions, kind=ITEM), None, None
    else:
        rows = held_out(
            predictions if isinstance(predictions, PredictionColumns) else list(predictions),
            record.fitted_ids,
            record.labels,
        )
        after = calibrate(record, rows)
        info = describe_calibrator(record.calibrator, record.method)
    flagged = _row_flags(rows.ids, _flagged_ids(predictions))
    parsing, suspects = summarize_parsing(predictions), summarize_suspects(predictions)
    labels, P, y = rows.labels, rows.P, rows.y
    # Nothing else is read from the predictions: a caller that passes the only reference
    # (as ``verbcal report`` does) has the file's columns freed here, and the rows' ids.
    del predictions, rows
    return _report_of_rows(
        labels,
        P,
        after,
        y,
        parsing=parsing,
        suspects=suspects,
        calibrator=info,
        suspect=flagged,
        **options,
    )
