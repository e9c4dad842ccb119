"""The reliability report: what it shows, computed as plain data, then written as one HTML file.

:func:`compute_report` turns held-out probability rows (before and after
calibration), their gold labels when there are any, the parse statuses of the
answers and a description of the calibrator into a :class:`ReportData`: metric
tables with bootstrap intervals, reliability tables, confidence histograms,
per-class calibration, precision–recall curves, operating points, the items
flagged as possible prompt injections (and how the reported ones did against
the others) and a plain-language summary. The modules, in the order data flows:

* :mod:`verbcal.report.data`: the dataclasses (plain data, no behaviour);
* :mod:`verbcal.report.compute`: fills them, calling :mod:`verbcal.metrics`
  and :mod:`verbcal.thresholds` for every number (tests check the numbers
  against those);
* :mod:`verbcal.report.summary`: the plain-language sentences;
* :mod:`verbcal.report.html` and :mod:`verbcal.report.svg`: draw the data
  (:func:`render_html`, :func:`write_report`).

Conventions:

* Confidence histograms, reliability tables and the binned errors use the same
  ``n_bins`` uniform bins of the top-label confidence (``[a, b)``, the last one
  closed), so a diagram and the ECE next to it describe the same bins.
* Metric intervals are percentile bootstrap intervals that resample rows, with
  resample ``b`` the same for every metric and for "before" and "after": each
  interval equals ``metrics.bootstrap_ci(metric, P, y, n_boot, random_state=seed)``,
  and the change "after − before" is a *paired* bootstrap interval, which is
  narrower than comparing two intervals by eye.
* An operating point is chosen from the probabilities alone (the precision they
  predict, assuming they are calibrated); with gold labels, the precision it
  actually reaches on the same rows is shown beside the promise.
"""

from verbcal.metrics.comparison import compare_metrics
from verbcal.report.compute import (
    compute_report,
    describe_calibrator,
    report_from_predictions,
    summarize_parsing,
    summarize_suspects,
)
from verbcal.report.data import (
    CalibratorInfo,
    ClassCalibration,
    CurveData,
    FailureReason,
    MetricComparison,
    OperatingPointCheck,
    ParseSummary,
    ProbabilityView,
    ReportData,
    SuspectGroup,
    SuspectReason,
    SuspectSummary,
)
from verbcal.report.html import render_html, write_report
from verbcal.report.summary import summarize

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
    "SuspectGroup",
    "SuspectReason",
    "SuspectSummary",
    "compare_metrics",
    "compute_report",
    "describe_calibrator",
    "render_html",
    "report_from_predictions",
    "summarize",
    "summarize_parsing",
    "summarize_suspects",
    "write_report",
]
