"""Precision operating points on calibrated probabilities, on the recorded BoolQ answers.

For every BoolQ file in ``shared/data/llm-confidence`` (positive = "True"), over
5 random 50/50 calibration/test splits: fit a calibrator on the calibration
half, choose the threshold on P(True) that reaches precision 0.9 there, then on
the test half compare

* the precision the threshold *realises* (labels used), and
* the precision *predicted* from the calibrated probabilities alone (labels unused).

Targets (issue 4): |realised - 0.9| <= 0.03 and |predicted - realised| <= 0.03.

Run: ``.venv/bin/python bench/thresholds.py [--method auto]``
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from recorded import load_recorded_tasks
from sklearn.model_selection import train_test_split

from verbcal import thresholds
from verbcal.workflow import ESTIMATORS as METHODS

TARGET = 0.9
TOLERANCE = 0.03
SEEDS = range(5)


def one_split(P, y, method: str, seed: int) -> dict:
    rows = np.arange(len(y))
    cal_rows, test_rows = train_test_split(rows, test_size=0.5, random_state=seed, stratify=y)
    calibrator = METHODS[method]().fit(P[cal_rows], y[cal_rows])
    Q_cal, Q_test = calibrator.predict_proba(P[cal_rows]), calibrator.predict_proba(P[test_rows])
    point = thresholds.operating_point(Q_cal, y[cal_rows], 0, target_precision=TARGET)
    rates = thresholds.precision_recall_at(Q_test, y[test_rows], 0, point.threshold)
    return {
        "met": point.met,
        "threshold": point.threshold,
        "flagged": rates.n_predicted,
        "realised": rates.precision,
        "interval": rates.precision_ci,
        "predicted": thresholds.predicted_precision(Q_test, 0, point.threshold),
    }


def within_tolerance(split: dict) -> bool:
    return (
        abs(split["realised"] - TARGET) <= TOLERANCE
        and abs(split["predicted"] - split["realised"]) <= TOLERANCE
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="auto", choices=sorted(METHODS))
    args = parser.parse_args()
    tasks = [t for t in load_recorded_tasks() if t.name.startswith("boolq")]
    if not tasks:
        print("recorded data not found (shared/data/llm-confidence): nothing to do")
        return 0
    print(
        f"method {args.method}, target precision {TARGET}, 5 splits: means; "
        f"ok = every split within {TOLERANCE}\n"
    )
    print("| file | threshold | realised precision | predicted precision | |pred - real| | ok |")
    print("|---|---|---|---|---|---|")
    failures, details = 0, []
    for task in tasks:
        assert task.labels[0] == "True"
        splits = [one_split(task.P, task.y, args.method, seed) for seed in SEEDS]
        threshold, realised, predicted = (
            np.mean([split[key] for split in splits])
            for key in ("threshold", "realised", "predicted")
        )
        ok = all(within_tolerance(split) for split in splits)
        failures += not ok
        worst = min(split["realised"] for split in splits)
        print(
            f"| {task.name} | {threshold:.3f} | {realised:.3f} (min {worst:.3f}) "
            f"| {predicted:.3f} | {abs(predicted - realised):.3f} | {'yes' if ok else 'NO'} |"
        )
        details += [(task.name, seed, split) for seed, split in zip(SEEDS, splits, strict=True)]
    print(
        "\nEvery split. met: some threshold reaches the target on the calibration half "
        "(else the threshold of the highest precision there); the interval is the 95% "
        "Clopper-Pearson interval of the realised precision on the test half:\n"
    )
    print("| file | split | met | threshold | flagged | realised (95% interval) | predicted | ok |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seed, split in details:
        low, high = split["interval"]
        print(
            f"| {name} | {seed} | {'yes' if split['met'] else 'no'} | {split['threshold']:.3f} "
            f"| {split['flagged']} "
            f"| {split['realised']:.3f} ({low:.3f}-{high:.3f}) | {split['predicted']:.3f} "
            f"| {'yes' if within_tolerance(split) else 'NO'} |"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
