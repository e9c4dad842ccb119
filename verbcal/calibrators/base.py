"""What every verbcal calibrator shares: the estimator contract and its checks.

A calibrator maps probability rows ``P`` (n, K) to calibrated rows ``Q`` (n, K).
Subclasses declare what each parameter may be in ``_parameter_constraints``
(as scikit-learn does; checked by :func:`verbcal.validation.check_params` when
``fit`` starts) and implement ``_fit(P, y)`` and ``_predict_proba(P)`` on
arrays that have already been checked here, once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.validation import (
    Constraint,
    Interval,
    Options,
    check_labels,
    check_params,
    check_probabilities,
)

__all__ = [
    "EPS",
    "EPS_AUTO",
    "EPS_GRID",
    "BaseCalibrator",
    "NotFittedError",
    "check_fitted",
]

#: Smoothings tried by ``eps="auto"``: from "trust a stated 0" to "a stated 0 is a 3% chance".
EPS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)

#: What a smoothing ``eps`` may be: a finite number >= 0 (``EPS_AUTO`` also allows "auto").
EPS: list[Constraint] = [Interval("real", 0, None)]
EPS_AUTO: list[Constraint] = [Options(("auto",)), *EPS]


def _shape(P) -> tuple:
    """Shape of an array-like; () for ragged input, which check_probabilities then explains."""
    try:
        return np.shape(P)
    except ValueError:
        return ()


class NotFittedError(ConfigurationError, SklearnNotFittedError):
    """A calibrator was asked to predict before ``fit``.

    Also scikit-learn's ``NotFittedError`` (a ``ValueError`` and ``AttributeError``),
    so code written against scikit-learn's contract catches it.
    """


def check_fitted(estimator) -> None:
    """Raise :class:`NotFittedError` ("call fit first") unless ``estimator`` is fitted."""
    try:
        check_is_fitted(estimator)
    except SklearnNotFittedError:
        name = type(estimator).__name__
        raise NotFittedError(
            f"this {name} is not fitted yet: call fit first (fit(P, y)), then predict_proba"
        ) from None


class BaseCalibrator(ClassifierMixin, BaseEstimator):
    """Estimator contract shared by the calibrators (not for direct use).

    ``fit(P, y)`` checks the parameters against ``_parameter_constraints`` and
    its input once, then calls ``_fit``; ``predict_proba`` checks that the
    estimator is fitted and that ``P`` has the fitted number of columns, then
    calls ``_predict_proba``.
    """

    #: False for calibrators that learn from unlabelled rows: ``fit`` drops ``y``.
    _needs_labels = True

    #: Parameter name → what it may be; every parameter of ``__init__`` is listed.
    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {"renormalize": [bool]}

    def _validate_params(self) -> None:
        """Raise a ConfigurationError naming the first parameter that breaks its constraint."""
        check_params(self.get_params(deep=False), self._parameter_constraints)

    def fit(self, P, y=None):
        """Learn the calibration map from probability rows ``P`` and class indices ``y``.

        Parameters
        ----------
        P : array-like of shape (n, K) or (n,)
            Probability rows (a 1-D array is the positive-class probability of a
            binary problem).
        y : array-like of shape (n,), or None
            Gold class indices 0..K-1 (column numbers of ``P``). Ignored by the
            label-free calibrators (contextual and batch calibration).

        Returns
        -------
        self
        """
        self._validate_params()
        P = self._check_P(P)
        self._check_n_classes(P.shape[1])
        y = self._check_y(y, P) if self._needs_labels else None
        self.classes_ = np.arange(P.shape[1])
        self.n_features_in_ = P.shape[1]
        self._fit(P, y)
        return self

    def predict_proba(self, P) -> np.ndarray:
        """Calibrated probability rows, shape (n, K)."""
        check_fitted(self)
        shape = _shape(P)
        if len(shape) == 2 and shape[1] != self.n_features_in_:
            name = type(self).__name__
            raise InvalidInputError(
                f"X has {shape[1]} features, but {name} is expecting {self.n_features_in_} "
                f"features as input: P must have the {self.n_features_in_} class columns "
                "the calibrator was fitted on"
            )
        return self._predict_proba(self._check_P(P))

    def predict(self, P) -> np.ndarray:
        """Most probable class index of each calibrated row."""
        check_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(P), axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        # The input is a classifier's output, not features: argmax(P) is the floor.
        tags.classifier_tags.poor_score = True
        tags.target_tags.required = self._needs_labels
        return tags

    # -- checks, done once at the boundary ---------------------------------------------

    def _check_n_classes(self, n_classes: int) -> None:
        """Raise if the method cannot handle ``n_classes`` columns (all can, by default)."""

    def _check_P(self, P) -> np.ndarray:
        if issparse(P):
            raise InvalidInputError(
                "P is a sparse matrix; sparse input is not supported: pass a dense array"
            )
        shape = _shape(P)
        if len(shape) == 2 and shape[1] < 2:
            raise InvalidInputError(
                f"P has {shape[1]} feature(s) (shape={shape}) while a minimum of 2 is required: "
                "probability rows need a column per class"
            )
        return check_probabilities(P, renormalize=getattr(self, "renormalize", False))

    def _check_y(self, y, P: np.ndarray) -> np.ndarray:
        name = type(self).__name__
        if y is None:
            raise InvalidInputError(
                f"{name} requires y to be passed, but the target y is None: "
                "give the gold class index of each row"
            )
        arr = np.asarray(y)
        if arr.dtype == object:  # e.g. a pandas column of Python ints
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"y must hold integer class indices 0..{P.shape[1] - 1}"
                ) from None
        if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
            raise InvalidInputError(
                f"y holds continuous values; it must hold integer class indices 0..{P.shape[1] - 1}"
            )
        y = check_labels(arr, P.shape[0], P.shape[1])
        if self._needs_labels and not (y != y[0]).any():
            raise InvalidInputError(
                f"y contains one class only (class {y[0]}); {name} needs labels of at least "
                "2 classes to learn anything"
            )
        return y
