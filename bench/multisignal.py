"""Multi-signal calibration against the best single signal, on the recorded LLM answers.

Files of ``shared/data/llm-confidence`` whose rows carry token probabilities,
10 random half splits (fit on one half, scored on the other); rows without
token probabilities keep a NaN row (the calibrator falls back). Then the small
multi-class check: 200-row subsamples of the 4-class files, AutoCalibrator
with the verbalized signal alone against AutoCalibrator with every signal.

    .venv/bin/python bench/multisignal.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.recorded import RecordedTask, load_recorded_tasks  # noqa: E402
from verbcal.calibrators import AutoCalibrator, TemperatureScaling  # noqa: E402
from verbcal.calibrators.multisignal import TOKEN_PROBS, MultiSignalCalibrator  # noqa: E402
from verbcal.metrics import debiased_ece, ece, nll  # noqa: E402

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


def methods(P, T, y, train, test):
    """Each row of the table: name → calibrated test rows."""
    signals = {TOKEN_PROBS: T}
    tr = {TOKEN_PROBS: T[train]}
    te = {TOKEN_PROBS: T[test]}
    has_tokens = ~np.isnan(T).any(axis=1)
    T_filled = np.where(has_tokens[:, None], T, P)  # verbalized where a row has no tokens
    out = {
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
    }
    del signals
    return out


def main() -> None:
    tasks = [t for t in load_recorded_tasks() if not np.isnan(token_matrix(t)).all()]
    if not tasks:
        print("shared/data/llm-confidence not found")
        return
    print(f"{SPLITS} random half splits; ECE / NLL on the test half, mean over splits\n")
    totals: dict[str, list[tuple[float, float]]] = {}
    for task in tasks:
        T = token_matrix(task)
        per: dict[str, list[tuple[float, float]]] = {}
        for seed in range(SPLITS):
            train, test = train_test_split(np.arange(len(task.y)), test_size=0.5, random_state=seed)
            for name, Q in methods(task.P, T, task.y, train, test).items():
                per.setdefault(name, []).append(scores(Q, task.y[test]))
        print(f"{task.name} ({len(task.y)} rows, {len(task.labels)} classes)")
        for name, values in per.items():
            e, n, d = np.mean(values, axis=0)
            totals.setdefault(name, []).append((e, n, d))
            print(f"  {name:34s} ECE {e:.4f}  NLL {n:.4f}  (debiased L2 {d:.4f})")
    print("\nmean over files")
    means = {name: np.mean(values, axis=0) for name, values in totals.items()}
    for name, (e, n, d) in means.items():
        print(f"  {name:34s} ECE {e:.4f}  NLL {n:.4f}  (debiased L2 {d:.4f})")
    single = [name for name in means if not name.startswith("stacked")]
    best_ece = min(single, key=lambda name: means[name][0])
    best_nll = min(single, key=lambda name: means[name][1])
    print(
        f"best single signal: ECE {means[best_ece][0]:.4f} ({best_ece}), "
        f"NLL {means[best_nll][1]:.4f} ({best_nll})"
    )
    for name in means:
        if name.startswith("stacked"):
            e, n, _ = means[name]
            beats = e < means[best_ece][0] and n < means[best_nll][1]
            print(f"  {name:34s} beats it on both: {'yes' if beats else 'no'}")

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
