"""The steps the ``verbcal`` commands and ``verbcal demo`` share, on predictions.

``fit`` → ``apply`` → ``evaluate`` / ``threshold`` / ``report``, as plain
functions over :class:`~verbcal.predictions.Prediction` lists, so that the CLI
only parses arguments and prints. ``fit_calibrator``, ``held_out`` and the
report also take :class:`~verbcal.prediction_columns.PredictionColumns` (what
the commands read, a few arrays instead of an object per row), and
``apply_calibrator_to_file`` streams a file's rows out calibrated.

Held-out rows: ``fit_calibrator`` holds out a seeded random share of the
labelled rows (``holdout=0.5`` by default) and records the ids it fitted on in
the calibrator file; evaluation, thresholds and the report then use only rows
whose ids were not fitted on, so their numbers are honest.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import compress
from typing import Any

import numpy as np
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from verbcal import calibrators as cal
from verbcal import thresholds
from verbcal.calibrators.multisignal import (
    PRIOR,
    SAMPLE_SPREAD,
    TOKEN_PROBS,
    fit_with_signals,
    predict_with_signals,
    sample_spread,
    take_rows,
)
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.methods import METHODS
from verbcal.metrics import BootstrapCI, compare_metrics
from verbcal.persist import CalibratorRecord
from verbcal.prediction_columns import (
    IdColumn,
    PredictionColumns,
    arrays_of,
    fitted_mask,
    has_kind,
    labels_of,
)
from verbcal.predictions import (
    CONTENT_FREE,
    ITEM,
    Prediction,
    PredictionArrays,
    signal_arrays,
    to_arrays,
)

#: Predictions as the commands read them: Prediction objects, or columns (large files).
Rows = list[Prediction] | PredictionColumns

#: Method name → calibrator class, for the methods that are one estimator fitted as is.
ESTIMATORS: dict[str, type[cal.BaseCalibrator]] = {
    "temperature": cal.TemperatureScaling,
    "naive-temperature": cal.NaiveTemperatureScaling,
    "batch": cal.BatchCalibration,
    "vector": cal.VectorScaling,
    "matrix": cal.MatrixScaling,
    "platt": cal.PlattScaling,
    "isotonic": cal.IsotonicCalibration,
    "histogram": cal.HistogramBinning,
    "shrinkage": cal.ShrinkageBinning,
    "auto": cal.AutoCalibrator,
}


def split_ids(
    arrays: PredictionArrays, holdout: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, held out), sorted: :func:`split_masks` as row numbers."""
    fit, held = split_masks(arrays, holdout, seed)
    return np.flatnonzero(fit), np.flatnonzero(held)


def split_masks(
    arrays: PredictionArrays, holdout: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows to fit on and which to hold out: a seeded split, stratified when every
    class allows (the rows of scikit-learn's ``train_test_split``), as two boolean masks."""
    n = len(arrays.ids)
    if isinstance(holdout, bool) or not (isinstance(holdout, int | float) and 0 <= holdout < 1):
        raise ConfigurationError(f"holdout must be a number in [0, 1), got {holdout!r}")
    if holdout == 0:
        return np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    n_held = math.ceil(holdout * n)  # as train_test_split rounds
    if n - n_held < 2 or n_held < 1:
        raise InvalidInputError(
            f"holdout {holdout:g} of {n} rows leaves {n - n_held} to fit on and {n_held} to "
            "evaluate on: both need rows (fitting at least 2); choose another holdout"
        )
    stratify = arrays.y
    if stratify is not None:
        counts = np.bincount(stratify)
        classes = int((counts > 0).sum())
        if counts[counts > 0].min() < 2 or min(n - n_held, n_held) < classes:
            stratify = None
    if stratify is not None:
        return _stratified_masks(stratify, n_held, seed)
    fit_rows, held_rows = train_test_split(np.arange(n), test_size=holdout, random_state=seed)
    fit, held = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    fit[fit_rows], held[held_rows] = True, True
    return fit, held


def _stratified_masks(y: np.ndarray, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``train_test_split(arange(n), test_size=n_held, random_state=seed,
    stratify=y)`` as masks (fit, held out); ``y`` holds class indices (integers >= 0).

    The same rows from the same random draws as scikit-learn's
    ``StratifiedShuffleSplit`` (1.9), without its per-row Python list (seconds
    and tens of MB at 10^5 rows and more), its sort of ``y``, or row numbers:
    each class's rows are the positions of its mask in file order, and its
    shuffle marks which of them go where. (scikit-learn's last shuffle of the
    chosen rows changes their order, not which rows they are, so it is left
    out.) Each class needs 2 rows.
    """
    n = y.shape[0]
    n_fit = n - n_held
    all_counts = np.bincount(y)
    classes = np.flatnonzero(all_counts)  # np.unique(y) of class indices
    counts = all_counts[classes]
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_fit, rng)
    t_i = _approximate_mode(counts - n_i, n_held, rng)
    fit, held = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i, c in enumerate(classes):
        shuffle = rng.permutation(counts[i])  # the class's rows in file order, shuffled
        in_class = y == c
        chosen = np.zeros(counts[i], dtype=bool)
        chosen[shuffle[: n_i[i]]] = True
        fit[in_class] = chosen
        chosen[:] = False
        chosen[shuffle[n_i[i] : n_i[i] + t_i[i]]] = True
        held[in_class] = chosen
    return fit, held


def _approximate_mode(
    class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState
) -> np.ndarray:
    """Rows to draw from each class (scikit-learn's ``utils.extmath._approximate_mode``):
    the floor of each class's share, then one more for the largest remainders, ties broken
    at random."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def fit_calibrator(
    predictions: Rows, method: str, *, holdout: float = 0.5, seed: int = 0
) -> CalibratorRecord:
    """Fit the calibrator ``method`` (a key of :data:`METHODS`) on predictions.

    Labelled methods fit on the item rows not held out; ``contextual`` fits on
    the content-free probe rows; ``batch`` on the item rows not held out, with
    their labels unused.
    """
    if method not in METHODS:
        raise ConfigurationError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    needs = METHODS[method][0]
    # Labelled methods fit on the labelled rows of a file that mixes labelled and unlabelled
    # ones (those stay unfitted, usable by threshold and apply); batch uses every row.
    items = arrays_of(predictions, kind=ITEM, prefer_labelled=needs != "unlabelled")
    fit_rows, _ = split_masks(items, holdout, seed)
    n_fit = int(np.count_nonzero(fit_rows))
    if needs in ("labels", "both") and items.y is None:
        raise InvalidInputError(f"method {method!r} needs predictions with gold labels")
    if needs in ("labels", "both", "unlabelled") and n_fit < 2:
        raise InvalidInputError(f"too few rows to fit {method!r}: {n_fit}")
    P, y = items.P[fit_rows], None if items.y is None else _small_ints(items.y[fit_rows])
    labels, ids = items.labels, items.ids
    signals = row_signals(items, fit_rows) if method == "auto" else {}
    del items  # its copy of every row's label (the ids and P are the file's own)
    probes = _probe_rows(predictions) if needs in ("probes", "both") else None
    if method == "auto" and signals and has_kind(predictions, CONTENT_FREE):
        signals[PRIOR] = _probe_rows(predictions).P.mean(axis=0)
    fitted_ids: Sequence[str] = (
        ids[fit_rows]  # one byte array, not a string per row
        if isinstance(ids, IdColumn)
        else list(compress(ids, fit_rows))
    )
    # Nothing else is read from the predictions: a caller that passes the only reference
    # (as ``verbcal fit`` does) has the file's columns freed here.
    del predictions, ids

    if probes is not None:
        n_probes = len(probes.P)
        contextual = cal.ContextualCalibration(
            mode="bias" if method == "contextual-bias" else "diagonal"
        )
        contextual.fit(probes.P)
        if needs == "probes":
            return CalibratorRecord(method, contextual, labels, [], n_probes)
        chain = cal.CalibratorChain([FrozenEstimator(contextual), cal.TemperatureScaling()])
        return CalibratorRecord(method, chain.fit(P, y), labels, fitted_ids, n_probes)
    estimator = ESTIMATORS[method]()
    if method == "auto":  # every signal the predictions carry (none: the verbalized rows alone)
        fit_with_signals(estimator, P, y, signals)
    else:
        estimator.fit(P, y if needs == "labels" else None)
    return CalibratorRecord(method, estimator, labels, fitted_ids)


def _small_ints(y: np.ndarray) -> np.ndarray:
    """Class indices in the smallest integer type that holds them (a calibrator's ``fit``
    checks them into its own int64 copy: the caller's need not be another)."""
    return y.astype(np.min_scalar_type(int(y.max()))) if len(y) else y


def row_signals(arrays: PredictionArrays, rows: np.ndarray | slice | None = None) -> dict[str, Any]:
    """The per-row signals besides ``P`` that the predictions carry, for ``rows`` (default all;
    row numbers or a mask).

    ``token_probs`` (a NaN row where a reply had none) and ``sample_spread``
    (:func:`~verbcal.calibrators.multisignal.sample_spread`, NaN with one sample);
    a signal no row carries is left out.
    """
    if rows is None:
        rows = slice(None)  # every row, without row numbers
    signals: dict[str, Any] = {}
    if arrays.token_probs is not None:
        signals[TOKEN_PROBS] = arrays.token_probs[rows]
    if arrays.samples is not None:
        signals[SAMPLE_SPREAD] = sample_spread(arrays.samples)[rows]
    return signals


#: Rows calibrated at a time by :func:`calibrate` (bounds the calibrators' temporaries).
CALIBRATE_CHUNK = 1 << 14


def calibrate(record: CalibratorRecord, arrays: PredictionArrays) -> np.ndarray:
    """The calibrated rows of ``arrays``, given the signals the calibrator needs.

    Every calibrator maps each row on its own, so many rows are calibrated
    :data:`CALIBRATE_CHUNK` at a time into one output array: the same
    numbers, with the calibrator's temporaries the size of a chunk.

    Raises
    ------
    InvalidInputError
        Naming a signal the calibrator was fitted with and the predictions lack.
    """
    signals = row_signals(arrays)
    P = arrays.P
    n = P.shape[0]
    if n <= CALIBRATE_CHUNK:
        return predict_with_signals(record.calibrator, P, signals)
    out: np.ndarray | None = None
    try:
        for start in range(0, n, CALIBRATE_CHUNK):
            part = slice(start, start + CALIBRATE_CHUNK)
            Q = predict_with_signals(record.calibrator, P[part], take_rows(signals, part))
            if out is None:
                out = np.empty((n, Q.shape[1]), dtype=Q.dtype)
            out[part] = Q
    except InvalidInputError:  # the message of the whole array (row numbers in it)
        return predict_with_signals(record.calibrator, P, signals)
    assert out is not None
    return out


def _probe_rows(predictions: Rows) -> PredictionArrays:
    if not has_kind(predictions, CONTENT_FREE):
        raise InvalidInputError(
            "contextual calibration needs content-free probe predictions: "
            "run 'verbcal elicit' with --probes"
        )
    return arrays_of(predictions, kind=CONTENT_FREE)


def check_same_labels(predictions: Rows, labels: list[str]) -> None:
    """Raise unless the predictions' label set is the calibrator's, in the same order."""
    own = labels_of(predictions)
    if own is not None and own != list(labels):
        raise InvalidInputError(
            f"the predictions' labels {own} are not the calibrator's labels {list(labels)}"
        )


def held_out(
    predictions: Rows,
    fitted_ids: Sequence[str],
    labels: list[str],
    *,
    prefer_labelled: bool = True,
) -> PredictionArrays:
    """The parsed item rows whose ids the calibrator was not fitted on.

    With ``prefer_labelled`` (for metrics), a file that mixes labelled and
    unlabelled rows gives its labelled rows (see :func:`~verbcal.predictions.to_arrays`).
    """
    check_same_labels(predictions, labels)
    items = arrays_of(predictions, kind=ITEM, prefer_labelled=prefer_labelled)
    keep = ~fitted_mask(items.ids, fitted_ids)
    if not keep.any():
        raise InvalidInputError(
            "every row was used to fit the calibrator: evaluate on other predictions, "
            "or fit with --holdout > 0"
        )
    return PredictionArrays(
        labels=items.labels,
        ids=items.ids[keep] if isinstance(items.ids, IdColumn) else list(compress(items.ids, keep)),
        P=items.P[keep],
        y=None if items.y is None else items.y[keep],
        n_failed=items.n_failed,
        n_unlabelled=items.n_unlabelled,
        token_probs=None if items.token_probs is None else items.token_probs[keep],
        samples=None
        if items.samples is None
        else [s for s, k in zip(items.samples, keep, strict=True) if k],
    )


@dataclass(frozen=True)
class Evaluation:
    """The standard metrics of labelled rows, each with a percentile bootstrap interval.

    ``evaluation["ece"]`` is the :class:`~verbcal.metrics.BootstrapCI` of a
    metric (``estimate, low, high``); the names are
    :data:`verbcal.metrics.METRIC_NAMES`.
    """

    n_rows: int
    n_boot: int
    confidence: float
    metrics: dict[str, BootstrapCI]

    def __getitem__(self, name: str) -> BootstrapCI:
        return self.metrics[name]

    def to_json(self) -> dict[str, list[float]]:
        """Metric name → ``[estimate, low, high]``, as ``verbcal evaluate --json`` prints it."""
        return {name: [float(v) for v in ci] for name, ci in self.metrics.items()}


def evaluate(
    P: np.ndarray, y: np.ndarray, *, n_boot: int = 200, seed: int = 0, confidence: float = 0.95
) -> Evaluation:
    """Every standard metric with a bootstrap interval (:func:`verbcal.metrics.compare_metrics`).

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> result = evaluate(P, np.array([0, 1, 1, 0]), n_boot=50)
    >>> result["accuracy"].estimate, list(result.to_json())[:2]
    (0.75, ['accuracy', 'ece'])
    """
    rows = compare_metrics(P, None, y, n_boot=n_boot, seed=seed, confidence=confidence)
    return Evaluation(
        n_rows=len(y),
        n_boot=n_boot,
        confidence=confidence,
        metrics={row.name: row.before for row in rows},
    )


def apply_calibrator(record: CalibratorRecord, predictions: list[Prediction]) -> list[Prediction]:
    """Copies of ``predictions`` with calibrated ``probs`` (unparsed rows unchanged)."""
    check_same_labels(predictions, record.labels)
    labels = predictions[0].labels
    parsed = [p for p in predictions if p.probs is not None]
    if not parsed:
        return list(predictions)
    P = np.array([[p.probs[label] for label in labels] for p in parsed if p.probs is not None])
    token_probs, samples = signal_arrays(parsed, labels)
    rows = PredictionArrays(
        labels, [p.id for p in parsed], P / P.sum(axis=1, keepdims=True), None, 0
    )
    rows.token_probs, rows.samples = token_probs, samples
    Q = calibrate(record, rows)
    calibrated = iter(Q)
    out = []
    for p in predictions:
        if p.probs is None:
            out.append(p)
            continue
        row = next(calibrated)
        out.append(
            replace(
                p,
                probs={label: float(q) for label, q in zip(labels, row, strict=True)},
                calibrated_by=record.method,
            )
        )
    return out


def apply_calibrator_to_file(
    record: CalibratorRecord, rows: PredictionColumns, out: str | os.PathLike
) -> int:
    """Write ``rows``' file to ``out`` with calibrated ``probs``, a row at a time.

    The rows written are :func:`apply_calibrator`'s (unparsed rows unchanged);
    returns how many.
    """
    check_same_labels(rows, record.labels)
    P = rows.probs if rows.parsed.all() else rows.probs[rows.parsed]  # rows summing to 1
    Q = P
    if P.shape[0]:
        Q = calibrate(record, PredictionArrays(rows.labels, [], P, None, 0))
    return rows.write_calibrated(out, Q, record.method)


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold chosen for a target, and how it does on the held-out rows.

    Attributes
    ----------
    positive : str
        The label treated as positive.
    target : {"precision", "recall"}
    target_value : float
    threshold : float
        Flag a row when its calibrated probability of ``positive`` is ``>= threshold``.
    met : bool
        Whether the target is met where the threshold was chosen (or guaranteed).
    chosen_on : str
        Which rows it was chosen on, in words.
    evaluated_on_rows : int
        Held-out rows (not fitted on).
    predicted_precision, predicted_recall : float
        On the held-out rows, from their calibrated probabilities alone.
    realised : ThresholdRates or None
        Counted on the labelled held-out rows (None when none is labelled).
    guarantee, lower_bound, rows_needed, explanation
        With a guarantee: its probability, the lower bound the test used, and
        when it could not be given, the labelled rows that would do and why.
    """

    positive: str
    target: thresholds.Target
    target_value: float
    threshold: float
    met: bool
    chosen_on: str
    evaluated_on_rows: int
    predicted_precision: float
    predicted_recall: float
    realised: thresholds.ThresholdRates | None = None
    guarantee: float | None = None
    lower_bound: float | None = None
    rows_needed: int | None = None
    explanation: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields as ``verbcal threshold --json`` prints them (realised rates flattened)."""
        out: dict[str, Any] = {
            "positive": self.positive,
            "target": self.target,
            "target_value": self.target_value,
            "threshold": self.threshold,
            "met": self.met,
            "chosen_on": self.chosen_on,
            "evaluated_on_rows": self.evaluated_on_rows,
            "predicted_precision": self.predicted_precision,
            "predicted_recall": self.predicted_recall,
        }
        if self.guarantee is not None:
            out.update(guarantee=self.guarantee, lower_bound=self.lower_bound)
            if not self.met:
                out.update(rows_needed=self.rows_needed, explanation=self.explanation)
        rates = self.realised
        if rates is not None:
            if rates.n_rows != self.evaluated_on_rows:
                out["realised_on_labelled_rows"] = rates.n_rows
            for name, value, ci in (
                ("precision", rates.precision, rates.precision_ci),
                ("recall", rates.recall, rates.recall_ci),
            ):
                out[f"realised_{name}"] = float("nan") if value is None else value
                out[f"realised_{name}_ci"] = ci
        return out


def choose_threshold(
    predictions: list[Prediction],
    record: CalibratorRecord,
    positive: str,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    guarantee: float | None = None,
) -> ThresholdChoice:
    """A threshold on calibrated probabilities for a target, and how it does on held-out rows.

    With ``guarantee`` (a probability in (0.5, 1)), the threshold must reach
    the target on new rows with that probability over the labelled calibration
    rows (:func:`verbcal.thresholds.operating_point`); the result then says
    whether it could be guaranteed and, if not, how many labelled rows would do.

    The threshold is chosen on the labelled rows the calibrator was fitted on
    (calibrated), or, when there are none, from the calibrated probabilities
    of the held-out rows alone (predicted precision/recall). On the held-out
    rows it reports the precision predicted without labels and, when they are
    labelled, the precision and recall realised, with Clopper–Pearson intervals.
    """
    # The checks evaluate makes: the same label set, and rows the calibrator was not fitted on.
    held_out(predictions, record.fitted_ids, record.labels, prefer_labelled=False)
    items = to_arrays(predictions, kind=ITEM, prefer_labelled=False)
    index = {
        p.id: items.labels.index(p.label)
        for p in predictions
        if p.kind == ITEM and p.label is not None
    }
    gold = np.array([index.get(i, -1) for i in items.ids], dtype=np.int64)  # -1: no gold label
    labels = record.labels
    Q = calibrate(record, items)
    fit_rows = fitted_mask(items.ids, record.fitted_ids)
    other = ~fit_rows
    choose_on = fit_rows & (gold >= 0)
    point: thresholds.OperatingPoint | thresholds.PredictedOperatingPoint
    if choose_on.any():
        point = thresholds.operating_point(
            Q[choose_on],
            gold[choose_on],
            positive,
            labels=labels,
            guarantee=guarantee,
            target_precision=target_precision,
            target_recall=target_recall,
        )
        chosen_on = f"{int(choose_on.sum())} labelled calibration rows"
    elif guarantee is not None:
        raise ConfigurationError(
            "a guarantee needs labelled rows the calibrator was fitted on: fit with a "
            "labelled method (the calibrator file lists no labelled fitted rows)"
        )
    else:
        point = thresholds.operating_point_from_probabilities(
            Q[other],
            positive,
            labels=labels,
            target_precision=target_precision,
            target_recall=target_recall,
        )
        chosen_on = f"calibrated probabilities of {int(other.sum())} rows (no labels)"
    t = float(point.threshold)
    realise_on = other & (gold >= 0)
    return ThresholdChoice(
        positive=positive,
        target=point.target,
        target_value=point.target_value,
        threshold=t,
        met=bool(point.met),
        chosen_on=chosen_on,
        evaluated_on_rows=int(other.sum()),
        predicted_precision=thresholds.predicted_precision(Q[other], positive, t, labels=labels),
        predicted_recall=thresholds.predicted_recall(Q[other], positive, t, labels=labels),
        realised=thresholds.precision_recall_at(
            Q[realise_on], gold[realise_on], positive, t, labels=labels
        )
        if realise_on.any()
        else None,
        guarantee=guarantee,
        lower_bound=getattr(point, "bound", None),
        rows_needed=None if point.met else getattr(point, "rows_needed", None),
        explanation=None if point.met or guarantee is None else str(point),
    )
