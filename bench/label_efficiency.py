"""Calibration quality against the number of labelled rows, on the recorded LLM answers.

Protocol: each of the 9 recorded (task, model) files, 3 random 50/50 calibration/test
splits (``train_test_split(test_size=0.5, random_state=seed)``, seeds 0..2); from
the calibration half, ``m`` labelled rows drawn at random
(``default_rng(10_000 * seed + m).choice``, the same rows for every method) for
m = 25, 50, 100, 200 and the whole half; fit on them, score the test half with
top-label ECE (15 equal-width bins) and NLL (``verbcal.metrics``). Means are over
files of the per-file means over splits.

Printed:

1. the curve: verbcal's AutoCalibrator (as it comes, its pool's weights shrunk
   toward equal weights by a prior worth 300 out-of-fold rows; with a prior
   worth 30; and with the weights as fitted), each of its default candidates
   alone, and
   scikit-learn's temperature and isotonic calibration on the same rows; then two
   population priors evaluated honestly, leave-one-task-out (learned from the
   whole files of the two other tasks, never from the held-out task's rows):
   - the accuracy prior of ``ShrinkageBinning(toward="accuracy")`` with its
     strength ``k = c (1 - c) / tau^2`` (``c`` the labelled rows' mean stated top
     probability, ``tau`` the root mean square gap between accuracy and mean stated
     confidence over the other tasks' files) instead of the shipped ``k = 10``;
   - temperature scaling whose prior is centred on the other tasks' typical
     temperature (geometric mean of their fitted ones) instead of ``T = 1``;
2. per file and size (the demo's multi-signal recording, 372 reviews of a
   real 1.5B model, scored beside the 9 files), each AutoCalibrator setting's
   test NLL minus that of the best single
   candidate on that file (chosen with hindsight, on the test rows), with the
   larger of two standard errors: that of the per-row difference over the pooled
   test rows of the 3 splits, and that of the per-split mean difference (the draw
   of the labelled rows); "within noise" when the difference is below two of them.
   (The best candidate is picked with hindsight among 7, which flatters it;
   a steadier pool has a smaller standard error, so the mean and worst
   excess are printed too.)
3. ``suggest_labels`` (what ``verbcal suggest-labels`` writes) against random
   choice at the same budget, both fitted with AutoCalibrator.

Run: ``.venv/bin/python bench/label_efficiency.py [--json out.json]`` (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from quality import SklearnPeer, Uncalibrated
from recorded import find_recorded_data, load_recorded_tasks
from sklearn.base import clone
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from verbcal.calibrators import (
    AutoCalibrator,
    CalibratorChain,
    ShrinkageBinning,
    TemperatureScaling,
)
from verbcal.calibrators.auto import (
    DEFAULT_PRIOR_STRENGTH,
    TEMPERATURE_PRIOR_SCALE,
    default_candidates,
)
from verbcal.demo import load_demo_signals
from verbcal.labelling import suggest_labels
from verbcal.metrics import ece, nll
from verbcal.predictions import to_arrays

SEEDS = range(3)
SIZES: tuple[int | None, ...] = (25, 50, 100, 200, None)  # None: the whole calibration half
NOISE_SIZES: tuple[int | None, ...] = (25, 50, 200, None)
BUDGETS = (25, 50)
AUTO = "verbcal AutoCalibrator"
LESS = "verbcal AutoCalibrator(anchor_rows=30)"
ANCHORED = "verbcal AutoCalibrator(anchor_rows=0)"  # the weights as fitted
DEMO = "demo__Qwen2.5-Coder-1.5B"  # the real-model recording, scored beside the 9 files


def size_name(size: int | None) -> str:
    return "all" if size is None else str(size)


def split(task, seed: int):
    return train_test_split(task.P, task.y, test_size=0.5, random_state=seed)


def random_rows(n_cal: int, seed: int, size: int | None) -> np.ndarray:
    if size is None or size >= n_cal:
        return np.arange(n_cal)
    return np.random.default_rng(10_000 * seed + size).choice(n_cal, size=size, replace=False)


def demo_task() -> SimpleNamespace:
    """The multi-signal demo recording's reviews (Qwen2.5-Coder-1.5B; stated rows only)."""
    rows = to_arrays(load_demo_signals())
    return SimpleNamespace(name=DEMO, P=rows.P, y=rows.y)


def task_of(name: str) -> str:
    return name.split("__")[0]


class LotoAccuracyShrinkage:
    """``ShrinkageBinning(toward="accuracy")`` whose accuracy prior strength comes from ``tau``."""

    def __init__(self, tau: float):
        self.tau = tau

    def fit(self, P, y):
        c = float(P.max(axis=1).mean())
        self.model = ShrinkageBinning(
            toward="accuracy",
            prior_strength=DEFAULT_PRIOR_STRENGTH,
            temperature_prior_scale=TEMPERATURE_PRIOR_SCALE,
            accuracy_prior_strength=c * (1 - c) / self.tau**2,
        ).fit(P, y)
        return self

    def predict_proba(self, P):
        return self.model.predict_proba(P)


class PopulationTemperature:
    """Temperature scaling with its prior centred on a population temperature ``T0``.

    A frozen first step divides the logits by ``T0`` (with the population's
    smoothing); ``TemperatureScaling(prior_scale=0.5)`` after it has its prior at 1,
    i.e. at ``T0`` for the chain.
    """

    def __init__(self, temperature: float, eps: float):
        self.temperature, self.eps = temperature, eps

    def fit(self, P, y):
        first = TemperatureScaling(eps=self.eps).fit(P, y)
        first.temperature_ = self.temperature
        second = TemperatureScaling(prior_scale=TEMPERATURE_PRIOR_SCALE)
        self.model = CalibratorChain([FrozenEstimator(first), second]).fit(P, y)
        return self

    def predict_proba(self, P):
        return self.model.predict_proba(P)


def population_priors(tasks) -> dict[str, dict]:
    """Per task, the priors learned from the whole files of the other tasks."""
    gaps = {t.name: float((t.P.argmax(1) == t.y).mean() - t.P.max(1).mean()) for t in tasks}
    fits = {t.name: TemperatureScaling().fit(t.P, t.y) for t in tasks}
    print("whole-file fits the leave-one-task-out priors are learned from:")
    for t in tasks:
        print(
            f"  {t.name}: accuracy - mean stated confidence {gaps[t.name]:+.3f}, "
            f"temperature {fits[t.name].temperature_:.3f} (eps {fits[t.name].eps_:g})"
        )
    out = {}
    for task in sorted({task_of(t.name) for t in tasks}):
        others = [t.name for t in tasks if task_of(t.name) != task]
        out[task] = {
            "tau": float(np.sqrt(np.mean([gaps[name] ** 2 for name in others]))),
            "temperature": float(np.exp(np.mean([np.log(fits[n].temperature_) for n in others]))),
            "eps": float(np.exp(np.mean([np.log(fits[n].eps_) for n in others]))),
        }
        print(
            f"  prior for {task} (from the other tasks): tau {out[task]['tau']:.3f}, "
            f"temperature {out[task]['temperature']:.3f}"
        )
    return out


def methods(n_classes: int, priors: dict | None = None) -> dict:
    found = {
        AUTO: AutoCalibrator,
        LESS: lambda: AutoCalibrator(anchor_rows=30),
        ANCHORED: lambda: AutoCalibrator(anchor_rows=0),
    }
    for name, calibrator in default_candidates(n_classes):
        found[f"  candidate {name.replace('_by_class', '')}"] = lambda c=calibrator: clone(c)
    if priors is not None:
        found["  LOTO: accuracy shrinkage, k from the other tasks"] = lambda: LotoAccuracyShrinkage(
            priors["tau"]
        )
        found["  LOTO: temperature, prior at the other tasks' T"] = lambda: PopulationTemperature(
            priors["temperature"], priors["eps"]
        )
    found["scikit-learn temperature"] = lambda: SklearnPeer("temperature")
    found["scikit-learn isotonic"] = lambda: SklearnPeer("isotonic")
    found["uncalibrated"] = Uncalibrated
    return found


def row_nll(Q: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(Q[np.arange(len(y)), y], 1e-300, None))


def run_curve(tasks) -> tuple[dict, dict]:
    """scores[size][method][file] = list of (ece, nll); losses[size][method][file] = rows."""
    scores: dict = {}
    losses: dict = {}
    priors = population_priors([t for t in tasks if t.name != DEMO])
    for size in SIZES:
        for task in tasks:
            for seed in SEEDS:
                P_cal, P_test, y_cal, y_test = split(task, seed)
                rows = random_rows(len(y_cal), seed, size)
                for name, factory in methods(
                    task.P.shape[1], priors.get(task_of(task.name))
                ).items():
                    try:
                        Q = factory().fit(P_cal[rows], y_cal[rows]).predict_proba(P_test)
                        score = (ece(Q, y_test), nll(np.clip(Q, 1e-300, None), y_test))
                        per_row = row_nll(Q, y_test)
                    except Exception:  # a method that cannot fit these rows is a result
                        score, per_row = (np.nan, np.nan), np.full(len(y_test), np.nan)
                    scores.setdefault(size, {}).setdefault(name, {}).setdefault(
                        task.name, []
                    ).append(score)
                    losses.setdefault(size, {}).setdefault(name, {}).setdefault(
                        task.name, []
                    ).append(per_row)
        print(f"  size {size_name(size)} done", file=sys.stderr, flush=True)
    return scores, losses


def mean_scores(per_file: dict) -> tuple[float, float, int]:
    """Mean ECE and NLL over the shared files (the demo recording is scored apart)."""
    means = np.array([np.nanmean(v, axis=0) for f, v in per_file.items() if f != DEMO])
    return float(np.nanmean(means[:, 0])), float(np.nanmean(means[:, 1])), len(means)


def print_curve(scores: dict) -> None:
    names = list(next(iter(scores.values())))
    header = "| method | " + " | ".join(f"{size_name(s)} rows" for s in SIZES) + " |"
    print(header)
    print("|---" * (len(SIZES) + 1) + "|")
    for name in names:
        cells = []
        for size in SIZES:
            e, n, files = mean_scores(scores[size][name])
            cells.append(f"{e:.3f} / {n:.3f}" + ("" if files == 9 else f" ({files} files)"))
        print(f"| {name.strip()} | " + " | ".join(cells) + " |")
    print("(cells: mean ECE / mean NLL over files)")
    demo = [name for name in names if DEMO in scores[SIZES[0]][name]]
    if demo:
        reviews = len(demo_task().y)
        print(
            f"\n{DEMO} ({reviews} reviews, halves of {reviews // 2}): ECE / NLL, mean over splits"
        )
        for name in demo:
            cells = [
                "{:.3f} / {:.3f}".format(*np.nanmean(scores[size][name][DEMO], axis=0))
                for size in SIZES
            ]
            print(f"| {name.strip()} | " + " | ".join(cells) + " |")


def print_noise(losses: dict, method: str = "") -> bool:
    """``method`` against the best single candidate per file; True when within noise."""
    method = method or AUTO
    print(f"\n{method} - best single candidate, test NLL per file (2 SE in brackets):")
    ok = True
    within_count = cases = 0
    excess = []
    for size in NOISE_SIZES:
        cells = []
        for file, auto_rows in losses[size][method].items():
            auto = np.concatenate(auto_rows)
            best, best_name = None, ""
            for name, per_file in losses[size].items():
                if not name.strip().startswith("candidate") or file not in per_file:
                    continue  # (Platt scaling only has the binary files)
                rows = np.concatenate(per_file[file])
                if np.isnan(rows).any():
                    continue
                if best is None or rows.mean() < best.mean():
                    best, best_name = rows, name.strip().removeprefix("candidate ")
            diff = auto - best
            # Two sources of noise: the test rows (standard error of the per-row
            # difference) and the draw of the labelled rows (standard error of the
            # per-split mean difference over the splits); the larger one counts.
            per_split = [
                np.mean(a - b)
                for a, b in zip(
                    losses[size][method][file],
                    losses[size][f"  candidate {best_name}"][file],
                    strict=True,
                )
            ]
            se = max(
                diff.std() / np.sqrt(len(diff)), np.std(per_split, ddof=1) / np.sqrt(len(per_split))
            )
            within = diff.mean() <= 2 * se + 1e-12
            ok &= bool(within)
            within_count += int(within)
            cases += 1
            excess.append(diff.mean())
            mark = "" if within else " NOT within noise"
            cells.append(
                f"{file.split('__')[0]}/{file.split('__')[1][:10]} {diff.mean():+.3f} "
                f"[{2 * se:.3f}] vs {best_name}{mark}"
            )
        print(f"  {size_name(size)} rows: " + "; ".join(cells))
    print(
        f"  within noise in {within_count} of {cases} (file, size) cases; test NLL above the "
        f"best single candidate's: mean {np.mean(excess):+.4f}, worst {np.max(excess):+.3f}"
    )
    return ok


def run_suggest(tasks) -> dict:
    results: dict = {}
    for budget in BUDGETS:
        for task in tasks:
            for seed in SEEDS:
                P_cal, P_test, y_cal, y_test = split(task, seed)
                for how, rows in (
                    ("random", random_rows(len(y_cal), seed, budget)),
                    ("suggest-labels", suggest_labels(P_cal, budget, random_state=seed)),
                ):
                    Q = AutoCalibrator().fit(P_cal[rows], y_cal[rows]).predict_proba(P_test)
                    results.setdefault(budget, {}).setdefault(how, {}).setdefault(
                        task.name, []
                    ).append((ece(Q, y_test), nll(Q, y_test)))
    print("\nlabelled rows chosen by suggest_labels vs at random (AutoCalibrator, ECE / NLL):")
    for budget, by_how in results.items():
        cells = [
            f"{how} {mean_scores(per)[0]:.3f} / {mean_scores(per)[1]:.3f}"
            for how, per in by_how.items()
        ]
        print(f"  {budget} rows: " + ", ".join(cells))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the mean scores to this file")
    args = parser.parse_args(argv)
    tasks = load_recorded_tasks()
    if not tasks:
        print(f"no recorded data found (looked for {find_recorded_data()!r})")
        return 1
    print(f"{len(tasks)} files x {len(SEEDS)} splits")
    warnings.filterwarnings("ignore")  # peers warn about log(0) and convergence
    scores, losses = run_curve([*tasks, demo_task()])
    print_curve(scores)
    within = print_noise(losses)
    print_noise(losses, LESS)
    print_noise(losses, ANCHORED)
    suggest = run_suggest(tasks)
    if args.json:
        out = {
            "curve": {
                size_name(s): {m: mean_scores(f)[:2] for m, f in by.items()}
                for s, by in scores.items()
            },
            "auto_within_noise_of_best_single": within,
            "suggest": {
                str(b): {h: mean_scores(f)[:2] for h, f in by.items()} for b, by in suggest.items()
            },
        }
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
