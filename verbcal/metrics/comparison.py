"""Every standard metric before and after calibration, with paired bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from verbcal.errors import InvalidInputError
from verbcal.metrics.counted import CountedRows, group_rows
from verbcal.metrics.scores import (
    HIGHER_IS_BETTER,
    PARAMETER_CONSTRAINTS,
    BootstrapCI,
    percentile_interval,
    standard_metrics,
)
from verbcal.validation import check_labels, check_params, check_probabilities

__all__ = ["NEGLIGIBLE", "MetricComparison", "Verdict", "compare_metrics"]

#: Changes of a metric smaller than this are float noise, not a change.
NEGLIGIBLE = 1e-9

#: What a metric's paired change says.
Verdict = Literal["better", "worse", "unclear"]


@dataclass(frozen=True)
class MetricComparison:
    """One metric before and after calibration, with bootstrap intervals.

    ``after`` and ``change`` (after − before, paired bootstrap) are None when
    there are no calibrated probabilities.
    """

    name: str
    before: BootstrapCI
    after: BootstrapCI | None = None
    change: BootstrapCI | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.name in HIGHER_IS_BETTER

    @property
    def verdict(self) -> Verdict | None:
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


def compare_metrics(
    P_before,
    P_after,
    y,
    *,
    n_bins: int = 15,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> list[MetricComparison]:
    """Every metric of :func:`~verbcal.metrics.standard_metrics` before and after, with intervals.

    Resample ``b`` is ``rng.integers(0, n, n)`` from ``np.random.default_rng(seed)``,
    shared by every metric and both sides, so each interval equals
    ``metrics.bootstrap_ci(metric, P, y, n_boot, confidence, random_state=seed)``
    and the change interval is the percentile interval of the per-resample
    differences (a *paired* interval, narrower than comparing two by eye).
    A resample is scored as counts of the distinct rows
    (:class:`~verbcal.metrics.counted.CountedRows`), so each costs O(distinct
    rows) after drawing its indices; float sums taken in that other order can
    differ from ``bootstrap_ci``'s in the last bits (well under 1e-12).

    Parameters
    ----------
    P_before : array-like of shape (n, K)
        Probability rows as stated.
    P_after : array-like of shape (n, K), or None
        The same rows calibrated; None compares nothing (``after`` and ``change`` None).
    y : array-like of shape (n,)
        Gold class indices.
    n_bins : int, default 15
        Uniform bins of the binned errors.
    n_boot : int, default 200
        Bootstrap resamples.
    seed : int, default 0
        Seed of the resamples.
    confidence : float, default 0.95
        Level of the intervals.

    Returns
    -------
    list of MetricComparison
        In the order of :data:`~verbcal.metrics.METRIC_NAMES`.

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> rows = compare_metrics(P, None, np.array([0, 1, 1, 0]), n_boot=50)
    >>> rows[0].name, rows[0].before.estimate
    ('accuracy', 0.75)
    """
    check_params(
        {"n_bins": n_bins, "n_boot": n_boot, "confidence": confidence},
        {name: PARAMETER_CONSTRAINTS[name] for name in ("n_bins", "n_boot", "confidence")},
    )
    P_before = check_probabilities(P_before, name="P_before")
    y = check_labels(y, P_before.shape[0], P_before.shape[1])
    sides = [P_before]
    if P_after is not None:
        P_after = check_probabilities(P_after, name="P_after")
        if P_after.shape != P_before.shape:
            raise InvalidInputError(
                f"P_after has shape {P_after.shape}, P_before {P_before.shape}: "
                "they must hold the same rows"
            )
        sides.append(P_after)
    functions = standard_metrics(n_bins)
    values = np.empty((len(functions), len(sides), n_boot))
    rng = np.random.default_rng(seed)
    n = y.shape[0]
    # A resample is a count per group of equal rows (few groups for stated probabilities).
    first, group = group_rows([*(P[:, k] for P in sides for k in range(P.shape[1])), y])
    counted = [CountedRows.of(P[first], y[first], n_bins) for P in sides]
    for b in range(n_boot):
        counts = np.bincount(group[rng.integers(0, n, n)], minlength=first.shape[0])
        for s, rows in enumerate(counted):
            resampled = rows.metrics(counts)
            for m, name in enumerate(functions):
                values[m, s, b] = resampled[name]
    out = []
    for m, (name, fn) in enumerate(functions.items()):
        estimates = [fn(P, y) for P in sides]
        cis = [percentile_interval(e, values[m, s], confidence) for s, e in enumerate(estimates)]
        if len(sides) == 1:
            out.append(MetricComparison(name, cis[0]))
            continue
        change = percentile_interval(
            estimates[1] - estimates[0], values[m, 1] - values[m, 0], confidence
        )
        out.append(MetricComparison(name, cis[0], cis[1], change))
    return out
