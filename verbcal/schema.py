"""What a calibrator file must hold: each field's rule, checked with the field's name.

A calibrator file is JSON a person may edit by hand. :mod:`verbcal.persist`
checks every field it reads against the rules here and names the field that
breaks one (``calibrator.fitted.temperature_: must be a number > 0, got 0``)
instead of letting a wrong value reach numpy. The rules of the fitted
attributes are declared per calibrator class in :data:`FITTED_RULES`; after
the rules, a rebuilt calibrator must also turn probe rows into probability
rows (:func:`check_predicts_probabilities`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from verbcal.errors import ParseError

__all__ = [
    "FITTED_RULES",
    "array",
    "check_fitted",
    "check_predicts_probabilities",
    "estimator_list",
    "fail",
    "finite",
    "int_at_least",
    "nonnegative",
    "positive",
    "text",
]

#: A rule checks one decoded value; ``where`` names the field for the message.
Rule = Callable[[Any, str], None]


def fail(where: str, message: str) -> ParseError:
    """The error for a field of a calibrator file that breaks its rule."""
    return ParseError(f"{where}: {message}")


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def finite(value: Any, where: str) -> None:
    """A finite real number (not ``true``/``false``, not NaN or infinity)."""
    if not _is_real(value) or not math.isfinite(value):
        raise fail(where, f"must be a finite number, got {value!r}")


def positive(value: Any, where: str) -> None:
    """A finite number > 0 (a temperature)."""
    finite(value, where)
    if value <= 0:
        raise fail(where, f"must be a number > 0, got {value!r}")


def nonnegative(value: Any, where: str) -> None:
    """A finite number >= 0 (a smoothing, a prior strength)."""
    finite(value, where)
    if value < 0:
        raise fail(where, f"must be a number >= 0, got {value!r}")


def text(value: Any, where: str) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise fail(where, f"must be a non-empty string, got {value!r}")


def int_at_least(low: int) -> Rule:
    """An integer >= ``low`` (not ``true``/``false``)."""

    def rule(value: Any, where: str) -> None:
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise fail(where, f"must be an integer >= {low}, got {value!r}")

    return rule


def array(ndim: int, *, nonneg: bool = False, integer: bool = False) -> Rule:
    """A numeric array of ``ndim`` dimensions, every value finite (and >= 0 if ``nonneg``)."""

    def rule(value: Any, where: str) -> None:
        if not isinstance(value, np.ndarray):
            raise fail(where, f"must be an array ({{'__ndarray__': [...]}}), got {value!r}")
        kinds = "iu" if integer else "iuf"
        if value.dtype.kind not in kinds:
            wanted = "integers" if integer else "numbers"
            raise fail(where, f"must hold {wanted}, got dtype {value.dtype}")
        if value.ndim != ndim or value.size == 0:
            raise fail(where, f"must be a non-empty {ndim}-D array, got shape {value.shape}")
        if not np.isfinite(value).all():
            raise fail(where, "must hold finite numbers, found NaN or infinity")
        if nonneg and (value < 0).any():
            raise fail(where, "must hold numbers >= 0, found a negative one")

    return rule


def _estimator(value: Any, where: str) -> None:
    if not hasattr(value, "predict_proba"):
        raise fail(where, f"must be a calibrator ({{'__estimator__': ...}}), got {value!r}")


def estimator_list(value: Any, where: str) -> None:
    """A non-empty list of calibrators."""
    if not isinstance(value, list) or not value:
        raise fail(where, f"must be a non-empty list of calibrators, got {value!r}")
    for i, item in enumerate(value):
        _estimator(item, f"{where}[{i}]")


def _array_list(ndim: int) -> Rule:
    each = array(ndim)

    def rule(value: Any, where: str) -> None:
        if not isinstance(value, list) or not value:
            raise fail(where, f"must be a non-empty list of arrays, got {value!r}")
        for i, item in enumerate(value):
            each(item, f"{where}[{i}]")

    return rule


def _signal_list(value: Any, where: str) -> None:
    """A list of signal names (``"token_probs"``, ``"sample_spread"``)."""
    known = ("token_probs", "sample_spread")
    if not isinstance(value, list) or not all(v in known for v in value):
        raise fail(where, f"must be a list of signal names among {list(known)}, got {value!r}")


_COMMON: dict[str, Rule] = {"classes_": array(1, integer=True), "n_features_in_": int_at_least(2)}

#: Fitted attributes every class needs to predict, and the rule of each.
FITTED_RULES: dict[str, dict[str, Rule]] = {
    "TemperatureScaling": {"temperature_": positive, "eps_": nonnegative},
    "NaiveTemperatureScaling": {"temperature_": positive},
    "ContextualCalibration": {"content_free_proba_": array(1, nonneg=True), "eps_": nonnegative},
    "BatchCalibration": {"prior_": array(1, nonneg=True), "eps_": nonnegative},
    "VectorScaling": {"coef_": array(1), "intercept_": array(1), "eps_": nonnegative},
    "MatrixScaling": {"coef_": array(2), "intercept_": array(1), "eps_": nonnegative},
    "PlattScaling": {"a_": finite, "b_": finite, "eps_": nonnegative},
    "HistogramBinning": {"bin_edges_": array(1), "bin_values_": array(2, nonneg=True)},
    "IsotonicCalibration": {"thresholds_x_": _array_list(1), "thresholds_y_": _array_list(1)},
    "ShrinkageBinning": {
        "temperature_scaling_": _estimator,
        "stated_values_": array(1),
        "block_of_value_": array(1, integer=True),
        "block_counts_": array(1, nonneg=True),
        "block_correct_": array(1, nonneg=True),
        "block_confidence_": array(1, nonneg=True),
        "prior_strength_": nonnegative,
    },
    "AutoCalibrator": {"best_estimator_": _estimator, "chosen_": text},
    "CalibratorChain": {"steps_": estimator_list},
    "LinearPool": {"members_": estimator_list, "weights_": array(1, nonneg=True)},
    "MultiSignalCalibrator": {
        "coef_": array(1),
        "intercept_": array(1),
        "eps_": nonnegative,
        "token_eps_": nonnegative,
        "signals_": _signal_list,
    },
    "TokenProbsCalibrator": {"calibrator_": _estimator, "signals_": _signal_list},
    "FrozenEstimator": {},
}


def check_fitted(class_name: str, fitted: Mapping[str, Any], where: str) -> None:
    """Check the decoded fitted attributes of ``class_name`` against :data:`FITTED_RULES`."""
    rules = FITTED_RULES.get(class_name, {})
    if class_name != "FrozenEstimator":
        rules = {**_COMMON, **rules}
    for name, rule in rules.items():
        if name not in fitted:
            raise fail(f"{where}.{name}", "missing (the calibrator file lacks a fitted value)")
        rule(fitted[name], f"{where}.{name}")


def check_predicts_probabilities(estimator: Any, n_classes: int, where: str) -> None:
    """Raise unless ``estimator`` maps probe rows to finite probability rows.

    The probes are the one-hot rows, the uniform row and a few uneven rows of
    ``n_classes`` columns: whatever the rules above let through, a calibrator
    that cannot predict these (or returns NaN, negative values or rows that do
    not sum to 1) is refused.
    """
    rng = np.random.default_rng(0)
    probes = np.vstack(
        [
            np.eye(n_classes),
            np.full((1, n_classes), 1.0 / n_classes),
            rng.dirichlet(np.ones(n_classes), size=8),
        ]
    )
    name = type(estimator).__name__
    # A calibrator of several signals gets them too: the probe rows as token
    # probabilities, no spread.
    signals = {
        name: probes if name == "token_probs" else np.zeros(len(probes))
        for name in getattr(estimator, "signals_", [])
        if name in ("token_probs", "sample_spread")
    }
    try:
        if getattr(estimator, "accepts_signals", False):
            Q = np.asarray(estimator.predict_proba(probes, signals=signals), dtype=np.float64)
        else:
            Q = np.asarray(estimator.predict_proba(probes), dtype=np.float64)
    except Exception as exc:  # any failure of a hand-edited document is the document's fault
        raise fail(
            where, f"the rebuilt {name} cannot predict ({type(exc).__name__}: {exc})"
        ) from None
    if Q.shape != probes.shape:
        raise fail(where, f"the rebuilt {name} returns shape {Q.shape} for {probes.shape} rows")
    if not np.isfinite(Q).all() or (Q < 0).any() or np.abs(Q.sum(axis=1) - 1).max() > 1e-6:
        raise fail(
            where,
            f"the rebuilt {name} does not return probabilities (NaN, negative values or rows "
            "not summing to 1): a fitted value is out of range",
        )
