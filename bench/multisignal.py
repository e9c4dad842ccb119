"""Multi-signal calibration against the best single signal, on recorded LLM answers.

Files of ``shared/data/llm-confidence`` whose rows carry token probabilities,
and the multi-signal demo recording (``verbcal.demo.load_demo_signals()``:
token probabilities and the spread of 3 samples), 10 random half splits each
(fit on one half, scored on the other); rows without token probabilities keep
a NaN row (the calibrator falls back). Issue 12's baseline, a plain logistic
regression on both signals' log-probabilities, is scored beside the stacks.
The summary puts the mean over the shared files and the demo recording side by
side. Then the small multi-class check: 200-row subsamples of the 4-class
files, AutoCalibrator with the verbalized signal alone against AutoCalibrator
with every signal.

    .venv/bin/python bench/multisignal.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.recorded import RecordedTask, load_recorded_tasks  # noqa: E402
from verbcal.calibrators import AutoCalibrator, TemperatureScaling  # noqa: E402
from verbcal.calibrators.multisignal import (  # noqa: E402
    SAMPLE_SPREAD,
    TOKEN_PROBS,
    MultiSignalCalibrator,
    sample_spread,
)
from verbcal.demo import load_demo_signals  # noqa: E402
from verbcal.metrics import debiased_ece, ece, nll  # noqa: E402
from verbcal.predictions import to_arrays  # noqa: E402

SPLITS = 10
SMALL_ROWS = 200


def token_matrix(task: RecordedTask) -> np.ndarray:
    """(n, K) token probabilities of the kept rows, NaN rows where the record has none."""
    out = np.full(task.P.shape, np.nan)
    for row, index in enumerate(task.kept):
        tokens = task.records[index].get("token_probs") or {}
        values = [tokens.get(label) for label in task.labels]
        if all(isinstance(v, int | float) for v in values) and sum(values) > 0:
            out[row] = np.array(values, dtype=np.float64) / sum(values)
    return out


def scores(Q: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """ECE, NLL and the debiased L2 calibration error (less biased on 100-row halves)."""
    return ece(Q, y), nll(Q, y), debiased_ece(Q, y)


def methods(P, signals, y, train, test):
    """Each row of the table: name → calibrated test rows (``signals`` hold the token rows)."""
    T = signals[TOKEN_PROBS]
    tr = {name: value[train] for name, value in signals.items()}
    te = {name: value[test] for name, value in signals.items()}
    has_tokens = ~np.isnan(T).any(axis=1)
    T_filled = np.where(has_tokens[:, None], T, P)  # verbalized where a row has no tokens
    return {
        "verbalized, AutoCalibrator": AutoCalibrator()
        .fit(P[train], y[train])
        .predict_proba(P[test]),
        "token probs, temperature": TemperatureScaling(prior_scale=0.5)
        .fit(T_filled[train], y[train])
        .predict_proba(T_filled[test]),
        "token probs, AutoCalibrator": AutoCalibrator()
        .fit(T_filled[train], y[train])
        .predict_proba(T_filled[test]),
        "stacked, MultiSignalCalibrator": MultiSignalCalibrator()
        .fit(P[train], y[train], signals=tr)
        .predict_proba(P[test], signals=te),
        "stacked, AutoCalibrator": AutoCalibrator()
        .fit(P[train], y[train], signals=tr)
        .predict_proba(P[test], signals=te),
        "stacked, plain logistic regression": naive_stack(P, T_filled, y, train, test),
    }


def naive_stack(P, T, y, train, test) -> np.ndarray:
    """Issue 12's baseline: scikit-learn's logistic regression on both signals' log-probs."""
    features = np.log(np.column_stack([P, T]) + 1e-3)
    model = LogisticRegression(max_iter=1000).fit(features[train], y[train])
    Q = np.zeros((len(test), P.shape[1]))
    Q[:, model.classes_] = model.predict_proba(features[test])  # a class absent from train: 0
    return Q


def evaluate(name: str, P: np.ndarray, y: np.ndarray, signals: dict) -> dict[str, np.ndarray]:
    """Mean (ECE, NLL, debiased L2) of each method over the half splits; printed."""
    per: dict[str, list[tuple[float, float, float]]] = {}
    for seed in range(SPLITS):
        train, test = train_test_split(np.arange(len(y)), test_size=0.5, random_state=seed)
        for method, Q in methods(P, signals, y, train, test).items():
            per.setdefault(method, []).append(scores(Q, y[test]))
    print(f"{name} ({len(y)} rows, {P.shape[1]} classes)", flush=True)
    means = {method: np.mean(values, axis=0) for method, values in per.items()}
    for method, (e, n, d) in means.items():
        print(f"  {method:34s} ECE {e:.4f}  NLL {n:.4f}  (debiased L2 {d:.4f})")
    return means


def verdicts(means: dict[str, np.ndarray]) -> dict[str, str]:
    """Best single signal (with hindsight, per metric) and whether each stack beats it on both."""
    single = [name for name in means if not name.startswith("stacked")]
    best_ece = min(single, key=lambda name: means[name][0])
    best_nll = min(single, key=lambda name: means[name][1])
    out = {"best single signal": f"{means[best_ece][0]:.4f} / {means[best_nll][1]:.4f}"}
    for name in means:
        if name.startswith("stacked"):
            e, n, _ = means[name]
            both = e < means[best_ece][0] and n < means[best_nll][1]
            out[f"{name} beats it on both"] = "yes" if both else "no"
    return out


def demo_signals() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The multi-signal demo recording's reviews: P, y and the token and spread signals."""
    rows = to_arrays(load_demo_signals())
    assert rows.y is not None and rows.token_probs is not None and rows.samples is not None
    signals = {TOKEN_PROBS: rows.token_probs, SAMPLE_SPREAD: sample_spread(rows.samples)}
    return rows.P, rows.y, signals


def main() -> None:
    tasks = [t for t in load_recorded_tasks() if not np.isnan(token_matrix(t)).all()]
    print(f"{SPLITS} random half splits; ECE / NLL on the test half, mean over splits\n")
    totals: dict[str, list[np.ndarray]] = {}
    for task in tasks:
        for name, values in evaluate(
            task.name, task.P, task.y, {TOKEN_PROBS: token_matrix(task)}
        ).items():
            totals.setdefault(name, []).append(values)
    P, y, signals = demo_signals()
    demo = evaluate("demo recording (multi-signal)", P, y, signals)
    columns = {"demo recording": demo}
    if tasks:
        columns = {
            f"mean over {len(tasks)} shared files": {
                name: np.mean(values, axis=0) for name, values in totals.items()
            },
            **columns,
        }
    else:
        print("shared/data/llm-confidence not found: the demo recording alone")
    print("\nside by side (ECE / NLL; debiased L2 in brackets)")
    print(f"  {'':34s}" + "".join(f"{title:>32s}" for title in columns))
    for name in demo:
        cells = (
            f"{m[name][0]:.4f} / {m[name][1]:.4f} ({m[name][2]:.4f})" for m in columns.values()
        )
        print(f"  {name:34s}" + "".join(f"{cell:>32s}" for cell in cells))
    checks = {title: verdicts(m) for title, m in columns.items()}
    for key in next(iter(checks.values())):
        print(f"  {key:34s}" + "".join(f"{c[key]:>32s}" for c in checks.values()))

    print(f"\nsmall multi-class files: {SMALL_ROWS} rows subsampled, half splits")
    for task in tasks:
        if len(task.labels) < 4:
            continue
        T = token_matrix(task)
        rows: dict[str, list[tuple[float, float]]] = {}
        for seed in range(SPLITS):
            rng = np.random.default_rng(seed)
            sub = rng.choice(len(task.y), size=min(SMALL_ROWS, len(task.y)), replace=False)
            train, test = train_test_split(sub, test_size=0.5, random_state=seed)
            P, y = task.P, task.y
            one = AutoCalibrator().fit(P[train], y[train]).predict_proba(P[test])
            many = (
                AutoCalibrator()
                .fit(P[train], y[train], signals={TOKEN_PROBS: T[train]})
                .predict_proba(P[test], signals={TOKEN_PROBS: T[test]})
            )
            rows.setdefault("verbalized only", []).append(scores(one, y[test]))
            rows.setdefault("every signal", []).append(scores(many, y[test]))
        print(f"{task.name}")
        (e1, n1, _), (e2, n2, _) = (np.mean(values, axis=0) for values in rows.values())
        for name, values in rows.items():
            e, n, d = np.mean(values, axis=0)
            print(f"  AutoCalibrator, {name:18s} ECE {e:.4f}  NLL {n:.4f}  (debiased L2 {d:.4f})")
        verdict = "no" if (e2 > e1 or n2 > n1) else "yes"
        print(f"  every signal never worse (ECE and NLL): {verdict}")


if __name__ == "__main__":
    main()
