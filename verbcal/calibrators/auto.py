"""AutoCalibrator (a calibrator chosen by cross-validation) and CalibratorChain."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold

from verbcal.calibrators.base import BaseCalibrator
from verbcal.calibrators.binning import HistogramBinning, IsotonicCalibration, ShrinkageBinning
from verbcal.calibrators.scaling import (
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics import ece
from verbcal.validation import Constraint, Interval

__all__ = ["AutoCalibrator", "CalibratorChain", "default_candidates"]

#: Prior strength of the ShrinkageBinning candidate that AutoCalibrator keeps by default.
DEFAULT_PRIOR_STRENGTH = 5.0

#: How many standard errors of cross-validated NLL AutoCalibrator treats as a tie.
TIE_STANDARD_ERRORS = 2.0


class CalibratorChain(BaseCalibrator):
    """Calibrators applied one after the other: each is fitted on the previous one's output.

    A step that must not be refitted on the labelled rows (a
    :class:`ContextualCalibration` fitted on content-free inputs, say) goes in
    wrapped in :class:`sklearn.frozen.FrozenEstimator`, whose ``fit`` does nothing.

    Parameters
    ----------
    steps : list of calibrators
    renormalize : bool, default False
        Applies to the chain's input; later steps receive proper rows.

    Attributes
    ----------
    steps_ : list
        The fitted steps.

    Examples
    --------
    Contextual calibration from content-free rows, then a temperature fitted on
    labelled rows: ``softmax((log(p + eps) - log(p_cf + eps)) / T)``.

    >>> from sklearn.frozen import FrozenEstimator
    >>> from verbcal import ContextualCalibration, TemperatureScaling
    >>> contextual = ContextualCalibration().fit([[0.7, 0.3], [0.9, 0.1]])
    >>> chain = CalibratorChain([FrozenEstimator(contextual), TemperatureScaling(eps=0)])
    >>> P = np.array([[0.9, 0.1], [0.6, 0.4], [0.95, 0.05], [0.7, 0.3]])
    >>> chain.fit(P, [0, 1, 0, 1]).predict(P).tolist()
    [0, 1, 0, 1]
    """

    def __init__(self, steps, renormalize=False):
        self.steps = steps
        self.renormalize = renormalize

    def _fit(self, P, y):
        if not isinstance(self.steps, (list, tuple)) or not self.steps:
            raise ConfigurationError("steps must be a non-empty list of calibrators")
        self.steps_ = []
        for step in self.steps:
            if not hasattr(step, "predict_proba"):
                raise ConfigurationError(f"step {step!r} has no predict_proba")
            fitted = clone(step).fit(P, y)
            P = fitted.predict_proba(P)
            self.steps_.append(fitted)

    def _predict_proba(self, P):
        for step in self.steps_:
            P = step.predict_proba(P)
        return P


def default_candidates(n_classes: int) -> list[tuple[str, BaseCalibrator]]:
    """The calibrators :class:`AutoCalibrator` compares when given none, the default first.

    The first candidate, which :class:`AutoCalibrator` keeps unless the
    calibration rows show another one is better, is :class:`ShrinkageBinning`
    with prior strength 5: verbalized confidences take a handful of values, and
    shrinkage binning sits between temperature scaling (a very strong prior)
    and per-value binning (no prior). Binary problems bin each predicted class
    separately, so that P(positive) stays calibrated for threshold tuning. The
    alternatives are temperature scaling, naive temperature scaling, Platt
    scaling (binary only), vector and matrix scaling, isotonic regression and
    histogram binning.

    On the recorded LLM answers (``bench/quality.py``) shrinkage binning has
    the lowest mean ECE of the single methods and an NLL close to the lowest;
    that is why it comes first, and also why that benchmark flatters this
    default somewhat.

    Examples
    --------
    >>> [name for name, _ in default_candidates(2)]  # doctest: +NORMALIZE_WHITESPACE
    ['shrinkage_by_class_5', 'temperature', 'naive_temperature', 'platt', 'vector', 'matrix',
     'isotonic', 'histogram']
    >>> [name for name, _ in default_candidates(4)][0]
    'shrinkage_5'
    """
    by_class = n_classes == 2
    prefix = "shrinkage_by_class" if by_class else "shrinkage"
    default = ShrinkageBinning(prior_strength=DEFAULT_PRIOR_STRENGTH, by_class=by_class)
    candidates = [
        (f"{prefix}_{DEFAULT_PRIOR_STRENGTH:g}", default),
        ("temperature", TemperatureScaling()),
        ("naive_temperature", NaiveTemperatureScaling()),
        ("vector", VectorScaling()),
        ("matrix", MatrixScaling()),
        ("isotonic", IsotonicCalibration()),
        ("histogram", HistogramBinning()),
    ]
    if by_class:
        candidates.insert(3, ("platt", PlattScaling()))
    return candidates


class AutoCalibrator(BaseCalibrator):
    """Picks a calibrator by cross-validated NLL, keeping the first candidate unless beaten.

    Every candidate is fitted on ``cv - 1`` folds of the calibration rows and
    predicts the held-out fold. Scores are the negative log-likelihood (NLL) and
    the top-label ECE (15 bins) of these out-of-fold predictions. The rule:

    1. the candidate with the lowest cross-validated NLL is the reference;
    2. candidates whose NLL is within two standard errors of the reference's
       (the standard error of the per-row NLL difference) are as good on NLL
       as the data can tell;
    3. if the first candidate (the default) is among those, it is chosen;
       otherwise the one with the lowest cross-validated ECE among them is;
       the choice is then refitted on all rows.

    This is the one-standard-error rule with the candidates' order as the
    preference: another candidate replaces the default only when the
    calibration rows clearly favour it, which happens more readily the more
    rows there are. Two standard errors rather than one, because the per-row
    standard error understates how much a cross-validated difference varies
    (the folds share training rows; Bengio & Grandvalet 2004) and several
    candidates are compared at once. On the recorded LLM answers
    (``bench/quality.py``), choosing freely among candidates within one
    standard error by ECE followed noise on a few hundred rows and calibrated
    worse on new rows.

    Only the rows given to ``fit`` are ever used. A candidate that raises on a
    fold (any exception: say, a fold with a single class) or predicts rows of
    the wrong shape or with NaN scores infinity, is skipped, and the reason is
    kept in ``cv_errors_`` and ``explanation_``; ``fit`` raises only when every
    candidate failed, naming each reason.

    Parameters
    ----------
    candidates : list of (name, calibrator) pairs, default None
        The most trusted first. None compares :class:`ShrinkageBinning` (the
        default; by predicted class for binary problems) with temperature,
        naive temperature, Platt (binary), vector and matrix scaling, isotonic
        regression and histogram binning; see :func:`default_candidates`.
    cv : int, default 5
        Number of folds (stratified when some class has that many rows).
    random_state : int, default 0
        Seed of the fold shuffle.
    renormalize : bool, default False

    Attributes
    ----------
    chosen_ : str
        Name of the chosen candidate.
    best_estimator_ : calibrator
        The chosen candidate, refitted on all rows.
    cv_scores_ : dict of str to float
        Cross-validated NLL of each candidate (inf when it failed).
    cv_ece_ : dict of str to float
        Cross-validated top-label ECE of each candidate that did not fail.
    cv_errors_ : dict of str to str
        Why a candidate failed (exception type and message), for those that did.
    explanation_ : str
        The choice in plain language.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.choice([0.6, 0.9, 1.0], size=200)
    >>> P = np.column_stack([conf, 1 - conf])
    >>> y = (rng.random(200) > 0.75).astype(int)   # right 75% of the time, whatever it says
    >>> auto = AutoCalibrator().fit(P, y)
    >>> auto.chosen_ in auto.cv_scores_
    True
    >>> bool(abs(auto.predict_proba([[1.0, 0.0]])[0, 0] - 0.75) < 0.1)
    True
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "cv": [Interval("integer", 2, None)],
    }

    def __init__(self, candidates=None, cv=5, random_state=0, renormalize=False):
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.renormalize = renormalize

    def _candidates(self, n_classes: int) -> list[tuple[str, BaseCalibrator]]:
        if self.candidates is None:
            return default_candidates(n_classes)
        pairs = list(self.candidates)
        if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise ConfigurationError("candidates must be a non-empty list of (name, calibrator)")
        return pairs

    def _folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        if len(y) < 2 * self.cv:
            raise InvalidInputError(
                f"AutoCalibrator needs at least {2 * self.cv} rows for {self.cv}-fold "
                f"cross-validation, got {len(y)}"
            )
        # Stratified whenever some class can fill every fold: a rare class is then spread
        # over as many folds as it has rows, so no training fold loses a class of 2+ rows
        # (plain folds could put all 3 rows of a class in one fold, leaving a training fold
        # with a single class, on which every supervised candidate fails).
        splitter = StratifiedKFold if np.bincount(y).max() >= self.cv else KFold
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            split = splitter(self.cv, shuffle=True, random_state=self.random_state).split(y, y)
            return list(split)

    @staticmethod
    def _out_of_fold(estimator, P, y, folds) -> np.ndarray:
        Q = np.empty_like(P)
        for train, test in folds:
            fold = np.asarray(clone(estimator).fit(P[train], y[train]).predict_proba(P[test]))
            if fold.shape != (len(test), P.shape[1]):
                raise InvalidInputError(
                    f"predict_proba returned shape {fold.shape}, expected {(len(test), P.shape[1])}"
                )
            if not np.isfinite(fold).all() or (fold < 0).any():
                raise InvalidInputError("predict_proba returned NaN, infinite or negative values")
            Q[test] = fold
        return Q

    def _fit(self, P, y):
        candidates = dict(self._candidates(P.shape[1]))
        folds = self._folds(y)
        row_nll, self.cv_scores_, self.cv_ece_, self.cv_errors_ = {}, {}, {}, {}
        for name, estimator in candidates.items():
            try:
                Q = self._out_of_fold(estimator, P, y, folds)
            except Exception as exc:  # one candidate's failure must not stop the others
                self.cv_scores_[name] = np.inf
                self.cv_errors_[name] = f"{type(exc).__name__}: {exc}"
                continue
            with np.errstate(divide="ignore"):
                row_nll[name] = -np.log(Q[np.arange(len(y)), y])
            self.cv_scores_[name] = float(row_nll[name].mean())
            self.cv_ece_[name] = ece(Q, y)
        if not row_nll:
            raise InvalidInputError(
                "every candidate failed in cross-validation: "
                + "; ".join(f"{name}: {error}" for name, error in self.cv_errors_.items())
            )
        default = next(iter(candidates))
        tied = self._tied(row_nll)
        self.chosen_ = default if default in tied else min(tied, key=self.cv_ece_.__getitem__)
        self.best_estimator_ = clone(candidates[self.chosen_]).fit(P, y)
        self.explanation_ = self._explain(len(y), default, tied)

    @staticmethod
    def _tied(row_nll: dict[str, np.ndarray]) -> list[str]:
        """The lowest-NLL candidate and those within TIE_STANDARD_ERRORS of it, best first."""
        best = min(row_nll, key=lambda name: row_nll[name].mean())
        tied = [best]
        for name, losses in row_nll.items():
            if name == best or not np.all(np.isfinite(losses)):
                continue  # a candidate that gave some row probability 0 is never tied
            diff = losses - row_nll[best]
            if diff.mean() <= TIE_STANDARD_ERRORS * diff.std() / np.sqrt(len(diff)):
                tied.append(name)
        return tied

    def _explain(self, n_rows: int, default: str, tied: list[str]) -> str:
        ranked = sorted(self.cv_scores_, key=self.cv_scores_.__getitem__)
        scores = ", ".join(
            f"{name} NLL {self.cv_scores_[name]:.4f} / ECE {self.cv_ece_.get(name, np.nan):.4f}"
            for name in ranked
        )
        text = (
            f"Chose {self.chosen_} ({type(self.best_estimator_).__name__}) by {self.cv}-fold "
            f"cross-validation on the {n_rows} calibration rows. Lowest NLL: {tied[0]}"
        )
        within = f"within {TIE_STANDARD_ERRORS:g} standard errors of it"
        if self.chosen_ == default == tied[0]:
            text += ", the default"
        elif self.chosen_ == default:
            text += f"; the default {default} is {within}, so it is kept"
        else:
            if default in self.cv_errors_:
                status = "failed"
            elif self.cv_scores_[default] == np.inf:
                status = "gave some row probability 0"
            else:
                status = f"is not {within}"
            text += f"; the default {default} {status}"
            if len(tied) > 1:
                text += (
                    f"; {within}: {', '.join(sorted(tied))}; "
                    f"of these {self.chosen_} has the lowest ECE"
                )
        text += f". Scores: {scores}."
        for name, error in self.cv_errors_.items():
            text += f" {name} failed: {error}."
        return text

    def _predict_proba(self, P):
        return self.best_estimator_.predict_proba(P)
