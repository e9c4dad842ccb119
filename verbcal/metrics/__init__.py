"""How trustworthy are the probabilities? Calibration errors, proper scores, reliability tables.

Conventions shared by every function here:

* ``P`` is an (n, K) array of probability rows (each row sums to 1 within
  ``1e-6``). A 1-D array is read as the probability of class 1 of a binary
  problem, i.e. the rows ``[1 - p, p]`` (``check_probabilities``). ``y`` holds
  the gold class indices ``0..K-1``.
* Top-label metrics (``ece``, ``mce``, ``debiased_ece``, ``accuracy`` and the
  default ``reliability_table``) use the confidence ``max_k P[i, k]`` and the
  prediction ``argmax_k P[i, k]``; among tied maxima the prediction is the
  first class (numpy's ``argmax`` rule), so a row ``[0.5, 0.5]`` predicts
  class 0.
* Bins are ``[a, b)`` except the last, ``[a, 1]``: exact 0.0 lands in the
  first bin and exact 1.0 in the last. A bin is a range of scores, so equal
  scores always share a bin. Strategies:

  - ``"uniform"``: ``n_bins`` bins with edges ``i / n_bins``;
  - ``"quantile"``: about ``n / n_bins`` scores per bin, edges at midpoints
    between neighbouring sorted scores. When a cut falls inside a run of equal
    scores (common with verbalized probabilities such as 0.9), the whole run
    goes to the upper bin and coinciding edges merge, so there may be fewer
    bins than ``n_bins``;
  - ``"distinct"``: one bin per distinct score (``n_bins`` is ignored); the
    natural choice for coarse verbalized probabilities.

* Empty bins are kept in tables (NaN accuracy and confidence) and contribute
  nothing to the errors.
* Interval levels are given as ``confidence`` (0.95 for 95% intervals), here
  and everywhere in verbcal.
* The standard set of metrics (``METRIC_NAMES``, ``standard_metrics``) is
  what ``verbcal evaluate`` and the report show; ``compare_metrics`` computes
  them before and after calibration with paired bootstrap intervals.
"""

from verbcal.metrics.comparison import MetricComparison, compare_metrics
from verbcal.metrics.scores import (
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    BootstrapCI,
    ReliabilityTable,
    accuracy,
    bootstrap_ci,
    brier,
    class_ece,
    classwise_ece,
    debiased_ece,
    ece,
    mce,
    nll,
    reliability_table,
    standard_metrics,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "BootstrapCI",
    "MetricComparison",
    "ReliabilityTable",
    "accuracy",
    "bootstrap_ci",
    "brier",
    "class_ece",
    "classwise_ece",
    "compare_metrics",
    "debiased_ece",
    "ece",
    "mce",
    "nll",
    "reliability_table",
    "standard_metrics",
]
