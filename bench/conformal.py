"""Conformal label sets on the recorded multi-class answers, against MAPIE on the same rows.

For every multi-class file in ``shared/data/llm-confidence`` (sciq, sat_en…)
and every score (LAC, APS, RAPS), over random splits of the rows: a quarter
fits a temperature calibrator, a quarter calibrates the conformal threshold,
half is the test set. verbcal's :class:`~verbcal.conformal.ConformalSets` and
MAPIE's ``SplitConformalClassifier`` (prefit, on the same calibrated
probabilities, its default prediction options) get the same rows; the table
gives coverage, mean set size and singleton rate on the test half.

Targets (issue 13): coverage within its 99% band over the splits, and mean
set size no larger than MAPIE's for the same score. The band: given the
calibration rows, coverage is a binomial proportion over the test rows, and
its success probability is itself random through the conformal threshold,
``Beta(n + 1 - l, l)`` with ``l = floor((n + 1) alpha)`` (Vovk 2012;
Angelopoulos & Bates 2021, section 3.2); so one split's covered count is
beta-binomial. A split is outside when its coverage is below that law's 0.5%
quantile (ties in coarse probabilities only push coverage up); at most
``binom.ppf(0.999, splits, 0.005)`` splits may be.

MAPIE's RAPS tunes its penalty on a further 20% of the calibration rows, and
its APS randomises the calibration scores but not the sets (it includes the
label that crosses the threshold); the scores are the same, the rules around
them are not quite.

Run: ``.venv/bin/python bench/conformal.py [--splits 100] [--alpha 0.1]``
(needs ``pip install mapie``, in the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from recorded import load_recorded_tasks
from scipy.stats import betabinom, binom
from sklearn.base import BaseEstimator, ClassifierMixin

from verbcal.calibrators import TemperatureScaling
from verbcal.conformal import SCORES, ConformalSets, summarize_sets


class Probabilities(ClassifierMixin, BaseEstimator):
    """A prefit "classifier" whose features are already its probability rows (for MAPIE)."""

    def __init__(self, n_classes: int = 2) -> None:
        self.n_classes = n_classes

    def fit(self, X, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def mapie_sets(P_cal, y_cal, P_test, alpha: float, score: str, seed: int = 0) -> np.ndarray:
    """MAPIE's split-conformal sets on given probability rows, as an (n, K) boolean array."""
    from mapie.classification import SplitConformalClassifier

    estimator = Probabilities(P_cal.shape[1]).fit(P_cal, y_cal)
    mapie = SplitConformalClassifier(
        estimator=estimator,
        confidence_level=1 - alpha,
        conformity_score=score,
        prefit=True,
        random_state=seed,
    )
    mapie.conformalize(P_cal, y_cal)
    _, sets = mapie.predict_set(P_test)
    return sets[:, :, 0]


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices: calibrator fit (1/4), conformal calibration (1/4), test (1/2)."""
    rows = np.random.default_rng(seed).permutation(n)
    a, b = n // 4, n // 2
    return rows[:a], rows[a:b], rows[b:]


def coverage_floor(n_cal: int, n_test: int, alpha: float) -> float:
    """The 0.5% quantile of one split's coverage (beta-binomial, see the module notes)."""
    l_ = int(np.floor((n_cal + 1) * alpha))
    if l_ == 0:
        return 0.0
    return float(betabinom.ppf(0.005, n_test, n_cal + 1 - l_, l_) / n_test)


def run_file(task, alpha: float, splits: int) -> dict:
    out = {score: {"ours": [], "mapie": []} for score in SCORES}
    for seed in range(splits):
        fit, cal, test = split(len(task.y), seed)
        Q = TemperatureScaling().fit(task.P[fit], task.y[fit]).predict_proba(task.P)
        for score in SCORES:
            ours = ConformalSets(alpha, score).fit(Q[cal], task.y[cal]).predict_sets(Q[test])
            out[score]["ours"].append(summarize_sets(ours, task.y[test]))
            try:
                theirs = mapie_sets(Q[cal], task.y[cal], Q[test], alpha, score, seed)
            except ValueError:  # MAPIE's RAPS needs more rows than a small file gives
                continue
            out[score]["mapie"].append(summarize_sets(theirs, task.y[test]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.1)
    args = parser.parse_args()
    try:
        import mapie  # noqa: F401
    except ImportError:
        print("MAPIE is not installed: pip install mapie (the bench extra)")
        return 2
    tasks = [t for t in load_recorded_tasks() if len(t.labels) > 2]
    if not tasks:
        print("recorded data not found (shared/data/llm-confidence): nothing to do")
        return 0
    print(
        f"alpha {args.alpha} (target coverage {1 - args.alpha:g}), {args.splits} splits per file "
        "(1/4 temperature fit, 1/4 conformal calibration, 1/2 test); means over splits\n"
    )
    print(
        "| file | score | coverage (ours) | coverage (MAPIE) | splits outside 99% band "
        "| mean size (ours) | mean size (MAPIE) | singletons (ours) | singletons (MAPIE) | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for task in tasks:
        results = run_file(task, args.alpha, args.splits)
        _, cal, test = split(len(task.y), 0)
        low = coverage_floor(len(cal), len(test), args.alpha)
        allowed = binom.ppf(0.999, args.splits, 0.005)
        for score, pair in results.items():
            ours, theirs = pair["ours"], pair["mapie"]
            cov = np.array([s.coverage for s in ours])
            outside = int((cov < low).sum())
            size_ours = np.mean([s.mean_size for s in ours])
            size_theirs = np.mean([s.mean_size for s in theirs]) if theirs else np.nan
            ok = outside <= allowed and not size_ours > size_theirs + 1e-12
            failures += not ok
            print(
                f"| {task.name} | {score} | {cov.mean():.4f} "
                f"| {np.mean([s.coverage for s in theirs]) if theirs else np.nan:.4f} "
                f"| {outside}/{len(ours)} "
                f"| {size_ours:.3f} | {size_theirs:.3f} "
                f"| {np.mean([s.singleton_rate for s in ours]):.3f} "
                f"| {np.mean([s.singleton_rate for s in theirs]) if theirs else np.nan:.3f} "
                f"| {'yes' if ok else 'NO'} |"
            )
    print(
        "\nnan: MAPIE refused (its RAPS sets 20% of the calibration rows aside to tune its "
        "penalty and needs more than 1/alpha of them). Outside: a split's coverage below "
        "the 0.5% quantile of its beta-binomial law (module notes)."
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
