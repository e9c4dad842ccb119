"""Speed of verbcal's top-label ECE and temperature scaling against the peers.

Run as ``.venv/bin/python bench/speed.py [--quick] [--targets-only]``. Prints, for n rows x 10
classes, the best-of-repeats wall time of each implementation, its ratio to
verbcal and to one ``P.max(axis=1)`` pass (the floor), and its peak extra
memory relative to the input as tracemalloc sees it (numpy allocations; torch's
own allocator is invisible to it, shown as "n/a"). Peers that are not installed
print "not installed"; netcal and torchmetrics are optional and not project
dependencies. The machine is shared: expect noise of ten percent or more.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import time
import tracemalloc
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV, calibration_curve
from sklearn.frozen import FrozenEstimator

from verbcal.metrics import ece

K = 15  # bins
N_CLASSES = 10
SIZES = (10**4, 10**5, 10**6, 10**7)
QUICK_SIZES = (10**4, 10**5)
UNCERTAINTY_CALIBRATION_MAX = 10**6  # a Python loop per bin: minutes beyond this
TEMPERATURE_PEER_MAX = 10**6  # keeps the whole run under ~10 minutes
AUTO_EPS_MAX = 10**6  # eps="auto" searches its grid in float32 from a subsample start
TEMPERATURE_SIZES = (10**4, 10**5, 10**6)  # the targets: <= 0.3x scikit-learn here
TEMPERATURE_TARGET = 0.3
AUTO_ROWS, AUTO_CLASSES, AUTO_TARGET = 10**5, 4, 10.0  # AutoCalibrator <= 10x one sklearn fit


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows twice as sharp as the truth (temperature 2 undoes it) and labels drawn from the truth.

    Labels come from the Gumbel-max trick on the true logits; arrays are
    reused in place so that 10^7 x 10 stays within a few input sizes.
    """
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, N_CLASSES))
    noisy = rng.gumbel(size=(n, N_CLASSES))
    noisy += logits
    y = noisy.argmax(axis=1)
    del noisy
    P = logits
    P *= 2.0
    P -= P.max(axis=1, keepdims=True)
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P, y


def best_time(fn: Callable[[], object], repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(fn: Callable[[], object]) -> float:
    """Peak bytes allocated (numpy and Python) while ``fn`` runs."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- ECE implementations


def numpy_two_pass(P: np.ndarray, y: np.ndarray) -> float:
    """The obvious numpy: max, argmax, then bincount."""
    conf, pred = P.max(axis=1), P.argmax(axis=1)
    bins = np.minimum((conf * K).astype(np.intp), K - 1)
    count = np.bincount(bins, minlength=K)
    gap = np.bincount(bins, weights=conf - (pred == y), minlength=K)
    return float(np.abs(gap).sum() / count.sum())


def sklearn_pipeline(P: np.ndarray, y: np.ndarray) -> float:
    """Top-label ECE from scikit-learn's calibration_curve (plus the bin counts it drops)."""
    conf = P.max(axis=1)
    correct = P.argmax(axis=1) == y
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=K)
    edges = np.linspace(0.0, 1.0, K + 1)
    count = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=K)
    weights = count[count > 0] / len(y)
    return float(np.dot(weights, np.abs(prob_true - prob_pred)))


def ece_peers() -> dict[str, tuple[Callable | None, int | None]]:
    """name -> (function(P, y) or None when not installed, largest n to run)."""
    peers: dict[str, tuple[Callable | None, int | None]] = {
        "numpy max+argmax+bincount": (numpy_two_pass, None),
        "scikit-learn calibration_curve": (sklearn_pipeline, None),
    }
    uc = None
    if importlib.util.find_spec("calibration"):
        from calibration import utils as uc
    peers["uncertainty-calibration get_ece"] = (
        (lambda P, y: uc.get_ece(P, y, num_bins=K)) if uc else None,
        UNCERTAINTY_CALIBRATION_MAX,
    )
    netcal_ece = None
    if importlib.util.find_spec("netcal"):
        from netcal.metrics import ECE

        netcal_ece = ECE(bins=K)
    peers["netcal ECE"] = ((lambda P, y: netcal_ece.measure(P, y)) if netcal_ece else None, None)
    torch_ece = None
    if importlib.util.find_spec("torchmetrics"):
        import torch
        from torchmetrics.functional.classification import multiclass_calibration_error

        def torch_ece(P, y):
            return float(
                multiclass_calibration_error(
                    torch.from_numpy(P), torch.from_numpy(y), N_CLASSES, n_bins=K, norm="l1"
                )
            )

    peers["torchmetrics multiclass_calibration_error"] = (torch_ece, None)
    return peers


def bench_ece(sizes: tuple[int, ...]) -> None:
    print(f"\n== top-label ECE, {K} bins, n x {N_CLASSES} float64 ==")
    peers = ece_peers()
    print(
        f"{'n':>9}  {'implementation':42} {'seconds':>9} {'/verbcal':>9} {'/floor':>7} "
        f"{'mem/input':>9}  ECE"
    )
    for n in sizes:
        P, y = make_data(n)
        repeats = 3 if n < 10**7 else 2
        floor = best_time(lambda P=P: P.max(axis=1), repeats)
        ours = best_time(lambda P=P, y=y: ece(P, y, n_bins=K), repeats)
        rows = [("P.max(axis=1) (floor)", floor, None, None)]
        rows.append(("verbcal.metrics.ece", ours, lambda P=P, y=y: ece(P, y, n_bins=K), ece(P, y)))
        for name, (fn, max_n) in peers.items():
            if fn is None:
                print(f"{n:>9}  {name:42} not installed")
                continue
            if max_n is not None and n > max_n:
                continue
            seconds = best_time(lambda fn=fn, P=P, y=y: fn(P, y), 1 if n >= 10**6 else repeats)
            rows.append((name, seconds, lambda fn=fn, P=P, y=y: fn(P, y), fn(P, y)))
        for name, seconds, call, value in rows:
            mem = "n/a"
            if call is not None and "torch" not in name:
                mem = f"{peak_memory(call) / P.nbytes:.3f}"
            shown = "" if value is None else f"{value:.6f}"
            print(
                f"{n:>9}  {name:42} {seconds:9.4f} {seconds / ours:9.2f} "
                f"{seconds / floor:7.2f} {mem:>9}  {shown}"
            )
        del P, y
        gc.collect()


# ---------------------------------------------------------------- temperature scaling


class Identity(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose predicted probabilities are its input."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def temperature_fitters() -> dict[str, tuple[Callable | None, int | None]]:
    from verbcal.calibrators import TemperatureScaling

    fitters: dict[str, tuple[Callable | None, int | None]] = {
        "verbcal TemperatureScaling(eps=1e-3)": (
            lambda P, y: TemperatureScaling(eps=1e-3).fit(P, y),
            None,
        ),
        'verbcal TemperatureScaling(eps="auto")': (
            lambda P, y: TemperatureScaling().fit(P, y),
            AUTO_EPS_MAX,
        ),
        "scikit-learn CalibratedClassifierCV(temperature)": (
            lambda P, y: CalibratedClassifierCV(
                FrozenEstimator(Identity().fit(P, y)), method="temperature"
            ).fit(P, y),
            TEMPERATURE_PEER_MAX,
        ),
    }
    netcal_ts = None
    if importlib.util.find_spec("netcal"):
        from netcal.scaling import TemperatureScaling as netcal_ts
    fitters["netcal TemperatureScaling"] = (
        (lambda P, y: netcal_ts().fit(P, y)) if netcal_ts else None,
        TEMPERATURE_PEER_MAX,
    )
    return fitters


def bench_temperature(sizes: tuple[int, ...]) -> None:
    if importlib.util.find_spec("verbcal.calibrators") is None:
        print("\n== temperature scaling: verbcal.calibrators not available, skipped ==")
        return
    print(f"\n== temperature scaling fit, n x {N_CLASSES} float64 ==")
    fitters = temperature_fitters()
    print(f"{'n':>9}  {'implementation':50} {'seconds':>9} {'/verbcal':>9}  temperature")
    for n in sizes:
        P, y = make_data(n, seed=1)
        baseline = None
        for name, (fit, max_n) in fitters.items():
            if fit is None:
                print(f"{n:>9}  {name:50} not installed")
                continue
            if max_n is not None and n > max_n:
                continue
            fitted = None

            def run(fit=fit, P=P, y=y):
                nonlocal fitted
                fitted = fit(P, y)

            seconds = best_time(run, 1 if n >= 10**6 else 2)
            baseline = baseline or seconds
            temperature = _temperature(fitted)
            print(f"{n:>9}  {name:50} {seconds:9.3f} {seconds / baseline:9.2f}  {temperature}")
        del P, y
        gc.collect()


def _temperature(fitted) -> str:
    """The fitted temperature, wherever the implementation keeps it."""
    if hasattr(fitted, "temperature_"):
        return f"{fitted.temperature_:.4f}"
    if hasattr(fitted, "calibrated_classifiers_"):
        return f"{1.0 / fitted.calibrated_classifiers_[0].calibrators[0].beta_:.4f}"
    if hasattr(fitted, "temperature"):  # netcal keeps the factor on the logits, 1 / T
        return f"{1.0 / float(np.ravel(fitted.temperature)[0]):.4f}"
    return "?"


def sklearn_temperature(P: np.ndarray, y: np.ndarray):
    return CalibratedClassifierCV(FrozenEstimator(Identity().fit(P, y)), method="temperature").fit(
        P, y
    )


def side_by_side(ours: Callable[[], object], theirs: Callable[[], object], repeats: int):
    """Best-of-``repeats`` seconds of each, run alternately so both see the same load."""
    best = [np.inf, np.inf]
    for _ in range(repeats):
        for i, fn in enumerate((ours, theirs)):
            gc.collect()
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def bench_targets(sizes: tuple[int, ...]) -> None:
    """The issue's speed targets, as ratios to scikit-learn's temperature fit measured alongside."""
    from verbcal.calibrators import AutoCalibrator, TemperatureScaling

    print("\n== targets: verbcal / scikit-learn temperature fit, side by side (best of repeats) ==")
    print(f"{'fit':46} {'n':>9} {'verbcal s':>10} {'sklearn s':>10} {'ratio':>7} {'target':>7}")
    for n in sizes:
        P, y = make_data(n, seed=1)
        ours, theirs = side_by_side(
            lambda P=P, y=y: TemperatureScaling().fit(P, y),
            lambda P=P, y=y: sklearn_temperature(P, y),
            repeats=5 if n <= 10**4 else 3 if n <= 10**5 else 2,
        )
        print(
            f"{'TemperatureScaling (eps=auto) x 10 classes':46} {n:>9} {ours:10.4f} "
            f"{theirs:10.4f} {ours / theirs:7.3f} {TEMPERATURE_TARGET:7.2f}"
        )
        del P, y
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=1.5, size=(AUTO_ROWS, AUTO_CLASSES))
    y = (logits + rng.gumbel(size=logits.shape)).argmax(axis=1)
    P = np.exp(2 * logits - (2 * logits).max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    ours, theirs = side_by_side(
        lambda: AutoCalibrator().fit(P, y), lambda: sklearn_temperature(P, y), repeats=2
    )
    print(
        f"{f'AutoCalibrator x {AUTO_CLASSES} classes':46} {AUTO_ROWS:>9} {ours:10.4f} "
        f"{theirs:10.4f} {ours / theirs:7.3f} {AUTO_TARGET:7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 10^4 and 10^5 rows")
    parser.add_argument(
        "--targets-only", action="store_true", help="only the ratios to scikit-learn's fit"
    )
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else SIZES
    warnings.filterwarnings("ignore")  # peers' deprecation chatter
    if not args.targets_only:
        bench_ece(sizes)
        bench_temperature(sizes)
    bench_targets(TEMPERATURE_SIZES if not args.quick else QUICK_SIZES)


if __name__ == "__main__":
    main()
