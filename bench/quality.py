"""Calibration quality of verbcal's calibrators and their peers on the recorded LLM answers.

Protocol: each of the recorded (task, model) files, 5 random 50/50
calibration/test splits (``train_test_split(test_size=0.5, random_state=seed)``,
seeds 0..4); fit on the calibration half, score the test half with top-label ECE
(15 equal-width bins) and NLL (``verbcal.metrics``); report the mean over files
and splits. Every method gets the same probability rows.

Run: ``.venv/bin/python bench/quality.py [--json out/quality.json]``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from recorded import find_recorded_data, load_recorded_tasks
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from verbcal import calibrators as vc
from verbcal.metrics import ece, nll

SEEDS = range(5)


class IdentityClassifier(ClassifierMixin, BaseEstimator):
    """A "classifier" whose probabilities are its input rows (for scikit-learn's calibrator)."""

    def fit(self, P, y):
        self.classes_ = np.arange(P.shape[1])
        return self

    def predict_proba(self, P):
        return P

    def predict(self, P):
        return np.argmax(P, axis=1)


class SklearnPeer:
    """``CalibratedClassifierCV(FrozenEstimator(identity), method=...)``."""

    def __init__(self, method: str):
        self.method = method

    def fit(self, P, y):
        frozen = FrozenEstimator(IdentityClassifier().fit(P, y))
        self.model = CalibratedClassifierCV(frozen, method=self.method).fit(P, y)
        return self

    def predict_proba(self, P):
        return self.model.predict_proba(P)


class NetcalPeer:
    """netcal's ``TemperatureScaling`` fitted on the probability rows."""

    def fit(self, P, y):
        from netcal.scaling import TemperatureScaling

        self.model = TemperatureScaling()
        self.model.fit(P, y)
        return self

    def predict_proba(self, P):
        Q = np.asarray(self.model.transform(P), dtype=np.float64)
        return np.column_stack([1.0 - Q, Q]) if Q.ndim == 1 else Q


class ReferenceTemperature:
    """Temperature scaling on ``log(p + 1e-3)`` in twenty lines, independent of verbcal."""

    eps = 1e-3

    def _log_proba(self, P, temperature):
        Z = np.log(P + self.eps) / temperature
        Z -= Z.max(axis=1, keepdims=True)
        return Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))

    def fit(self, P, y):
        def loss(log_t):
            return -self._log_proba(P, np.exp(log_t))[np.arange(len(y)), y].mean()

        self.temperature = float(np.exp(minimize_scalar(loss, bounds=(-5, 5), method="bounded").x))
        return self

    def predict_proba(self, P):
        return np.exp(self._log_proba(P, self.temperature))


class Uncalibrated:
    def fit(self, P, y):
        return self

    def predict_proba(self, P):
        return P


def netcal_installed() -> bool:
    try:
        import netcal.scaling  # noqa: F401
    except ImportError:
        return False
    return True


def methods() -> list[tuple[str, Callable[[], object] | None]]:
    """(row label, factory); a None factory prints "not installed"."""
    return [
        ("uncalibrated (rows renormalised)", Uncalibrated),
        ("netcal `TemperatureScaling`", NetcalPeer if netcal_installed() else None),
        (
            'scikit-learn `CalibratedClassifierCV(method="temperature")`',
            lambda: SklearnPeer("temperature"),
        ),
        (
            'scikit-learn `CalibratedClassifierCV(method="isotonic")`',
            lambda: SklearnPeer("isotonic"),
        ),
        ("temperature scaling on log(p + 1e-3) (a 20-line reference)", ReferenceTemperature),
        ("verbcal `NaiveTemperatureScaling`", vc.NaiveTemperatureScaling),
        ("verbcal `BatchCalibration` (no labels)", vc.BatchCalibration),
        ("verbcal `TemperatureScaling`", vc.TemperatureScaling),
        ("verbcal `VectorScaling`", vc.VectorScaling),
        ("verbcal `MatrixScaling`", vc.MatrixScaling),
        ("verbcal `IsotonicCalibration`", vc.IsotonicCalibration),
        ("verbcal `HistogramBinning`", vc.HistogramBinning),
        ("verbcal `ShrinkageBinning`", vc.ShrinkageBinning),
        ("verbcal `ShrinkageBinning(by_class=True)`", lambda: vc.ShrinkageBinning(by_class=True)),
        (
            'verbcal `ShrinkageBinning(toward="accuracy")`',
            lambda: vc.ShrinkageBinning(toward="accuracy"),
        ),
        ("verbcal `AutoCalibrator`", vc.AutoCalibrator),
        (
            "verbcal `AutoCalibrator(anchor_rows=0)` (pool weights as fitted)",
            lambda: vc.AutoCalibrator(anchor_rows=0),
        ),
    ]


def evaluate(factory, tasks) -> dict:
    """Mean ECE and NLL over files and splits, with per-file means."""
    per_file = {}
    for task in tasks:
        scores = []
        for seed in SEEDS:
            P_cal, P_test, y_cal, y_test = train_test_split(
                task.P, task.y, test_size=0.5, random_state=seed
            )
            Q = factory().fit(P_cal, y_cal).predict_proba(P_test)
            scores.append((ece(Q, y_test), nll(Q, y_test)))
        per_file[task.name] = dict(
            zip(("ece", "nll"), np.mean(scores, axis=0).tolist(), strict=True)
        )
    return {
        "mean_ece": float(np.mean([s["ece"] for s in per_file.values()])),
        "mean_nll": float(np.mean([s["nll"] for s in per_file.values()])),
        "per_file": per_file,
    }


def run(tasks) -> list[dict]:
    rows = []
    for label, factory in methods():
        row = {"method": label}
        if factory is None:
            row["status"] = "not installed"
        else:
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # peers warn about log(0) and convergence
                    row.update(evaluate(factory, tasks))
                row["status"] = "ok"
            except Exception as exc:  # a peer that fails is a result, not a crash
                row["status"] = f"failed: {type(exc).__name__}: {exc}"
            row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(f"  {label}: {row['status']} ({row.get('seconds', 0)} s)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| method | mean ECE | mean NLL |", "|---|---|---|"]
    for row in rows:
        if row["status"] == "ok":
            lines.append(f"| {row['method']} | {row['mean_ece']:.3f} | {row['mean_nll']:.3f} |")
        else:
            lines.append(f"| {row['method']} | {row['status']} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    tasks = load_recorded_tasks()
    if not tasks:
        print(f"no recorded data found (looked for {find_recorded_data()!r}); nothing to measure")
        return 1
    print(f"{len(tasks)} files x {len(SEEDS)} splits:", ", ".join(t.name for t in tasks))
    rows = run(tasks)
    print()
    print(markdown(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        protocol = {
            "files": [t.name for t in tasks],
            "splits": "train_test_split(test_size=0.5, random_state=seed), seeds 0..4",
            "ece": "verbcal.metrics.ece, top-label, 15 uniform bins",
            "nll": "verbcal.metrics.nll",
        }
        args.json.write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=2))
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
