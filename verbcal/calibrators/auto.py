"""AutoCalibrator (a calibrator chosen by cross-validation) and CalibratorChain."""

from __future__ import annotations

import warnings
from typing import ClassVar

import numpy as np
from scipy.optimize import minimize
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from verbcal.calibrators.base import BaseCalibrator
from verbcal.calibrators.binning import HistogramBinning, IsotonicCalibration, ShrinkageBinning
from verbcal.calibrators.multisignal import (
    SIGNAL_PARAMETERS,
    TOKEN_PROBS,
    MultiSignalCalibrator,
    SignalsMixin,
    TokenProbsCalibrator,
    check_signals,
    fit_with_signals,
    predict_with_signals,
    required_signals,
    signals_help,
    take_rows,
    within_one_se,
)
from verbcal.calibrators.scaling import (
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics import ece
from verbcal.validation import Constraint, Interval, Options

__all__ = [
    "AutoCalibrator",
    "CalibratorChain",
    "LinearPool",
    "anchored_weights",
    "default_candidates",
    "fitted_parameters",
    "labelled_events",
    "pool_weights",
]

#: Prior strength (``alpha``) of the ShrinkageBinning candidate, which shrinks each
#: stated value's accuracy toward the overall accuracy: a block follows its own
#: accuracy once it holds well over 20 rows. On the recorded answers
#: (``bench/label_efficiency.py``) 10 and 50 do about as well; the leave-one-out
#: choice (``prior_strength="auto"``) picks small values on a few dozen rows and
#: loses NLL there.
DEFAULT_PRIOR_STRENGTH = 20.0

#: Out-of-fold rows' worth of prior on equal pool weights (``AutoCalibrator(anchor_rows=...)``).
ANCHOR_ROWS = 300

#: ``prior_scale`` of the temperature candidates (:class:`TemperatureScaling`).
TEMPERATURE_PRIOR_SCALE = 0.5

#: Labelled events a candidate needs per fitted parameter to be compared at all: the
#: "ten events per variable" of logistic regression (Peduzzi et al. 1996). An event is
#: the rarer of a right and a wrong stated answer (a model right 97% of the time on 200
#: rows gives 6): calibration learns from the mistakes.
EVENTS_PER_PARAMETER = 10

#: From this many rows on, cross-validation uses 2 folds instead of ``cv``: each
#: training half then holds 25,000 rows or more, plenty for every candidate, and
#: the fits cost a quarter as much (every row is still scored once).
LARGE_ROWS = 50_000

#: Candidates whose pooled weight is below this are dropped before the refit.
MIN_WEIGHT = 1e-3

#: Rows at a time in :func:`pool_weights`' gradient and in out-of-fold predictions
#: (bounds their temporaries; the numbers are those of one pass).
POOL_CHUNK = 1 << 14


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
    """The calibrators :class:`AutoCalibrator` compares when given none, simplest first.

    Shrinkage binning toward the overall accuracy (each stated value's
    accuracy shrunk, with prior strength 20, toward the accuracy of all the
    rows, itself shrunk toward their mean stated confidence with a prior worth
    10 rows: see :class:`ShrinkageBinning`), temperature scaling with priors on
    its temperature and smoothing (one parameter, the priors worth a few
    rows), Platt scaling (binary problems), vector and matrix scaling,
    histogram binning and isotonic regression. :func:`fitted_parameters` says how many parameters
    each fits; :class:`AutoCalibrator` compares only those the labelled rows
    can support. Naive temperature scaling, a distorting baseline, is not among
    them.

    Examples
    --------
    >>> [name for name, _ in default_candidates(2)]  # doctest: +NORMALIZE_WHITESPACE
    ['shrinkage_accuracy_20', 'temperature', 'platt', 'vector', 'matrix', 'histogram',
     'isotonic']
    >>> [name for name, _ in default_candidates(4)][:3]
    ['shrinkage_accuracy_20', 'temperature', 'vector']
    """
    shrinkage = ShrinkageBinning(
        prior_strength=DEFAULT_PRIOR_STRENGTH,
        toward="accuracy",
        temperature_prior_scale=TEMPERATURE_PRIOR_SCALE,
    )
    candidates: list[tuple[str, BaseCalibrator]] = [
        (f"shrinkage_accuracy_{DEFAULT_PRIOR_STRENGTH:g}", shrinkage),
        ("temperature", TemperatureScaling(prior_scale=TEMPERATURE_PRIOR_SCALE)),
        ("vector", VectorScaling()),
        ("matrix", MatrixScaling()),
        ("histogram", HistogramBinning()),
        ("isotonic", IsotonicCalibration()),
    ]
    if n_classes == 2:
        candidates.insert(2, ("platt", PlattScaling()))
    return candidates


def fitted_parameters(calibrator: BaseCalibrator, n_classes: int) -> int:
    """How many free parameters a candidate fits, for the events-per-parameter rule.

    Parameters held by a prior (the temperature of ``TemperatureScaling`` with
    ``prior_scale``, shrinkage binning's bins) count 0: they fall back to the
    prior when the rows say little. Isotonic regression counts as a 10-bin
    histogram. A calibrator of the token probabilities counts as the
    calibrator it applies; the multi-signal one 2 (its penalty holds the
    rest). Unknown calibrators count 0 (always compared).

    Examples
    --------
    >>> fitted_parameters(MatrixScaling(), 4), fitted_parameters(VectorScaling(), 4)
    (20, 8)
    """
    if isinstance(calibrator, TemperatureScaling):
        return 0 if calibrator.prior_scale is not None else 1
    if isinstance(calibrator, NaiveTemperatureScaling):
        return 1
    if isinstance(calibrator, PlattScaling):
        return 2
    if isinstance(calibrator, VectorScaling):
        return 2 * n_classes
    if isinstance(calibrator, MatrixScaling):
        return n_classes * n_classes + n_classes
    if isinstance(calibrator, HistogramBinning):
        return int(calibrator.n_bins)
    if isinstance(calibrator, IsotonicCalibration):
        return 10
    if isinstance(calibrator, MultiSignalCalibrator):
        return 2  # the two weights of its anchor; the others are held by its penalty
    if isinstance(calibrator, TokenProbsCalibrator):
        return fitted_parameters(calibrator.calibrator, n_classes)
    return 0


def labelled_events(P: np.ndarray, y: np.ndarray) -> int:
    """The rarer of right and wrong stated answers (``argmax(P) == y``) among the rows."""
    right = int(np.count_nonzero(P.argmax(axis=1) == y))
    return min(right, len(y) - right)


def pool_weights(gold: np.ndarray) -> np.ndarray:
    """Weights ``w`` on the simplex maximising ``sum_i log(gold[i] @ w)``.

    ``gold[i, m]`` is candidate ``m``'s out-of-fold probability of row ``i``'s
    gold class. The problem is concave; SLSQP with the exact gradient solves it,
    weights at 0 included (a candidate that adds nothing gets none).

    Examples
    --------
    >>> gold = np.array([[0.9, 0.5], [0.9, 0.5], [0.1, 0.5]])
    >>> pool_weights(gold).round(3).tolist()
    [0.417, 0.583]
    """
    n, m = gold.shape
    if not (gold >= 1e-300).all():  # a copy only when some probability needs the floor
        gold = np.maximum(gold, 1e-300)

    def loss_and_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        mixed = np.maximum(gold @ w, 1e-300)
        # the mean of gold / mixed summed block by block: no (n, m) temporary on a large file
        grad = sum(
            (gold[start : start + POOL_CHUNK] / mixed[start : start + POOL_CHUNK, None]).sum(0)
            for start in range(0, n, POOL_CHUNK)
        )
        return -float(np.log(mixed).mean()), -grad / n

    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            loss_and_grad,
            np.full(m, 1.0 / m),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
            options={"ftol": 1e-12, "maxiter": 200},
        )
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()


class _Codes:
    """A float64 vector of few distinct values kept as one byte per row: ``values[codes]``.

    Lossless (``np.asarray`` gives the vector back, bit for bit). Out-of-fold
    probabilities of coarse stated values take a few distinct values per fold.
    """

    __slots__ = ("codes", "values")

    def __init__(self, values: np.ndarray, codes: np.ndarray) -> None:
        self.values, self.codes = values, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.values[self.codes]
        return out if dtype is None else out.astype(dtype, copy=False)


def _compact(column: np.ndarray) -> np.ndarray | _Codes:
    """``column`` as :class:`_Codes` when it holds at most 256 distinct values, else itself."""
    values, codes = np.unique(column, return_inverse=True)
    if len(values) > 256:
        return column
    return _Codes(values, codes.astype(np.uint8))


def _row_mask(rows: np.ndarray, n: int) -> np.ndarray:
    """The boolean mask of ``rows`` among ``n``."""
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _pop_columns(columns: dict[str, np.ndarray | _Codes], names: list[str]) -> np.ndarray:
    """``np.column_stack([columns[name] for name in names])``, emptying ``columns`` on the
    way, so that the vectors and the matrix are not both held."""
    out = np.empty((len(columns[names[0]]), len(names)))  # columns may be _Codes
    for j, name in enumerate(names):
        out[:, j] = columns.pop(name)
    return out


def anchored_weights(weights: np.ndarray, n_rows: int, anchor_rows: float) -> np.ndarray:
    """Pool weights fitted on ``n_rows`` shrunk toward equal weights.

    ``(n_rows * weights + anchor_rows / m) / (n_rows + anchor_rows)`` for ``m``
    candidates: as if ``anchor_rows`` more out-of-fold rows had said nothing
    about which candidate is best.

    Examples
    --------
    >>> anchored_weights(np.array([0.0, 1.0]), 25, anchor_rows=100).tolist()
    [0.4, 0.6]
    >>> anchored_weights(np.array([0.0, 1.0]), 9700, anchor_rows=300).round(3).tolist()
    [0.015, 0.985]
    """
    return (n_rows * weights + anchor_rows / len(weights)) / (n_rows + anchor_rows)


class LinearPool(SignalsMixin, BaseCalibrator):
    """A weighted average of calibrators' probability rows (a linear opinion pool).

    Built by :class:`AutoCalibrator` from its candidates, with weights fitted on
    their out-of-fold predictions; ``fit`` refits every member on the rows given
    and keeps the weights.

    Parameters
    ----------
    members : list of (name, calibrator) pairs
    weights : list of float
        One per member, >= 0, summing to 1.
    renormalize : bool, default False

    Attributes
    ----------
    members_ : list of calibrators
        The fitted members.
    weights_ : ndarray of shape (n_members,)
    signals_ : list of str
        Signals besides ``P`` that some member needs (``fit(P, y, signals=...)``,
        see :class:`~verbcal.calibrators.multisignal.MultiSignalCalibrator`).

    Examples
    --------
    >>> from verbcal import HistogramBinning, TemperatureScaling
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> pool = LinearPool([("t", TemperatureScaling()), ("h", HistogramBinning())], [0.5, 0.5])
    >>> pool.fit(P, [0, 0, 1, 1]).predict_proba(P).shape
    (4, 2)
    """

    def __init__(self, members, weights, renormalize=False):
        self.members = members
        self.weights = weights
        self.renormalize = renormalize

    def _fit(self, P, y):
        weights = np.asarray(self.weights, dtype=np.float64)
        members = list(self.members)
        if (
            not members
            or len(members) != len(weights)
            or not all(isinstance(m, tuple) and len(m) == 2 for m in members)
        ):
            raise ConfigurationError(
                "members must be a non-empty list of (name, calibrator), one weight each"
            )
        if not np.all(np.isfinite(weights)) or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigurationError(f"weights must be >= 0 with a positive sum, got {weights}")
        self.weights_ = weights / weights.sum()
        signals = self.given_signals()
        self.members_ = [fit_with_signals(clone(c), P, y, signals) for _, c in members]
        self.signals_ = sorted({s for m in self.members_ for s in required_signals(m)})

    def _predict_proba(self, P):
        signals = self.given_signals()
        return sum(
            w * predict_with_signals(m, P, signals)
            for w, m in zip(self.weights_, self.members_, strict=True)
        )


class AutoCalibrator(SignalsMixin, BaseCalibrator):
    """Pools the candidate calibrators with weights fitted by cross-validation.

    1. Candidates the labelled rows cannot support are left out: each needs
       ``EVENTS_PER_PARAMETER`` (10) labelled events per fitted parameter
       (:func:`fitted_parameters`), an event being the rarer of a right and a
       wrong stated answer (:func:`labelled_events`). With the default
       candidates, 25 labelled rows compare temperature scaling and shrinkage
       binning (both held by priors); matrix scaling of 4 classes waits for 200
       events.
    2. Every remaining candidate is fitted on ``cv - 1`` folds of the rows and
       predicts the held-out fold (2 folds from ``LARGE_ROWS`` rows on).
    3. ``rule="stack"`` (default): the weights of a linear pool of the
       candidates' out-of-fold rows are fitted by maximum likelihood
       (:func:`pool_weights`), and the pool of the candidates refitted on all
       rows is the result (a candidate with almost all the weight stands alone).
       This is stacking (Wolpert 1992; Breiman 1996) with probabilities as
       the outputs: no candidate is preferred, and one that only fits noise in
       the folds gets little weight, since the weights are judged on rows each
       candidate did not see. ``rule="one_se"``: the simplest candidate (the
       first in ``candidates``) whose cross-validated NLL is within one standard
       error of the lowest (the one-standard-error rule, Breiman et al. 1984).
    4. The fitted weights are shrunk toward equal weights, as if
       ``anchor_rows`` (300) more out-of-fold rows had favoured no candidate
       (:func:`anchored_weights`): 92% equal weights on 25 rows, 16% on 1,600,
       under 1% from 50,000. Weights fitted on 25 out-of-fold rows (folds of
       5) are mostly noise, and an equal-weight average of forecasts is hard to
       beat when the fitted weights are uncertain (the "forecast combination
       puzzle": Clemen 1989; Smith and Wallis 2009). No candidate is favoured.
       With other signals, weights are evened out within each family (the
       verbalized rows' candidates, the other signals' candidates) and each
       family keeps its fitted share: how much to trust another signal is
       left to the out-of-fold rows.

    The first default candidate shrinks toward the overall accuracy because
    with 25 labelled rows the labels pin down the accuracy (to about ±0.08)
    and little else; a map that also varies with the stated value mostly adds
    noise (which the test-set ECE counts), while the stated confidences are
    right on average to about 0.1 on the recorded answers, which the
    accuracy's prior uses. Priors learned from other files do not do better
    (``bench/label_efficiency.py``, leave-one-task-out: learned from the other
    two tasks' files): the accuracy prior's strength learned that way scores as
    the shipped one, and a temperature prior centred on the other tasks'
    temperature gains no ECE (BoolQ answers are overconfident, SAT-EN and SciQ
    ones underconfident: the population temperature points the wrong way).

    On the recorded LLM answers (``bench/label_efficiency.py``: 9 files, 3
    splits), the equal-weight prior lowers the mean test NLL at every number
    of labelled rows (25: 0.355 to 0.337; 50: 0.363 to 0.337; all: 0.320 to
    0.315), its mean ECE within 0.002 of the fitted weights' (lower at 25
    and 200 rows, higher at 100), and brings the pool closer to the
    best single candidate picked with hindsight per file: its test NLL is above
    that candidate's by 0.006 on average and by 0.033 at worst over the 40
    (file, size) cases (the demo recording included), against 0.019 and 0.109
    with the weights as fitted (``anchor_rows=0``).

    Signals besides the verbalized rows (``fit(P, y, signals=...)``: token
    probabilities, sample spread, content-free prior; see
    :class:`~verbcal.calibrators.multisignal.MultiSignalCalibrator`) add a
    ``multisignal`` candidate to the default ones, and with token
    probabilities the default ones applied to them; these join the pool only
    when their pool beats the verbalized one out of fold by more than one
    standard error of NLL (:func:`~verbcal.calibrators.multisignal.signals_help`).
    ``predict_proba(P,
    signals=...)`` then needs the per-row signals in ``signals_``. Without
    signals nothing changes.

    Only the rows given to ``fit`` are ever used. A candidate that raises on a
    fold (any exception: say, a fold with a single class) or predicts rows of
    the wrong shape or with NaN scores infinity, is skipped, and the reason is
    kept in ``cv_errors_`` and ``explanation_``; ``fit`` raises only when every
    candidate failed, naming each reason.

    Parameters
    ----------
    candidates : list of (name, calibrator) pairs, default None
        Simplest first. None: :func:`default_candidates`, of which only those
        the rows support are compared (a given list is compared whole).
    cv : int, default 5
        Number of folds (stratified when some class has that many rows).
    rule : {"stack", "one_se"}, default "stack"
    random_state : int, default 0
        Seed of the fold shuffle.
    renormalize : bool, default False
    anchor_rows : float, default 300
        Out-of-fold rows' worth of prior on equal weights (step 4); 0 keeps
        the weights as fitted.

    Attributes
    ----------
    chosen_ : str
        Name of the candidate with the most weight (``rule="stack"``) or the
        chosen one.
    weights_ : dict of str to float
        Each kept candidate's weight in the result (1 for a single one).
    best_estimator_ : calibrator
        The result, fitted on all rows: a :class:`LinearPool` or one candidate.
    signals_ : list of str
        Per-row signals the result needs besides ``P`` (empty unless the
        ``multisignal`` candidate kept some weight).
    cv_scores_ : dict of str to float
        Cross-validated NLL of each compared candidate (inf when it failed).
    cv_ece_ : dict of str to float
        Cross-validated top-label ECE of each candidate that did not fail.
    cv_errors_ : dict of str to str
        Why a candidate failed (exception type and message), for those that did.
    skipped_ : dict of str to str
        Default candidates left out, and why (too few labelled events).
    explanation_ : str
        The choice in plain language.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.choice([0.6, 0.9, 1.0], size=200)
    >>> P = np.column_stack([conf, 1 - conf])
    >>> y = (rng.random(200) > 0.75).astype(int)   # right 75% of the time, whatever it says
    >>> auto = AutoCalibrator().fit(P, y)
    >>> auto.chosen_ in auto.cv_scores_, round(sum(auto.weights_.values()), 9)
    (True, 1.0)
    >>> bool(auto.predict_proba([[1.0, 0.0]])[0, 0] < 0.85)  # a stated certainty is softened
    True
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "cv": [Interval("integer", 2, None)],
        "rule": [Options(("stack", "one_se"))],
        "anchor_rows": [Interval("real", 0, None)],
    }

    def __init__(
        self,
        candidates=None,
        cv=5,
        rule="stack",
        random_state=0,
        renormalize=False,
        anchor_rows=ANCHOR_ROWS,
    ):
        self.candidates = candidates
        self.cv = cv
        self.rule = rule
        self.random_state = random_state
        self.renormalize = renormalize
        self.anchor_rows = anchor_rows

    def _candidates(self, P: np.ndarray, y: np.ndarray) -> list[tuple[str, BaseCalibrator]]:
        self.skipped_: dict[str, str] = {}
        if self.candidates is None:
            k = P.shape[1]
            events = labelled_events(P, y)
            kept = []
            for name, calibrator in default_candidates(k):
                needed = EVENTS_PER_PARAMETER * fitted_parameters(calibrator, k)
                if events >= needed:
                    kept.append((name, calibrator))
                else:
                    self.skipped_[name] = f"needs {needed} labelled events, has {events}"
            return kept
        pairs = list(self.candidates)
        if not pairs or not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
            raise ConfigurationError("candidates must be a non-empty list of (name, calibrator)")
        return pairs

    def _signal_candidates(
        self,
        candidates: dict[str, BaseCalibrator],
        signals: dict,
        P: np.ndarray,
        y: np.ndarray,
        folds: list[tuple[np.ndarray, np.ndarray]],
    ) -> dict[str, BaseCalibrator]:
        """The candidates that use signals besides ``P``, those the rows support.

        The verbalized candidates applied to the token probabilities, and
        :class:`MultiSignalCalibrator`; each needs the labelled events of
        :func:`fitted_parameters`, and at least those of ``SIGNAL_PARAMETERS`` (1):
        trusting another signal is itself fitted.
        """
        extra: dict[str, BaseCalibrator] = {}
        if TOKEN_PROBS in signals:
            for name, calibrator in candidates.items():
                extra[f"token_{name}"] = TokenProbsCalibrator(calibrator)
        extra["multisignal"] = MultiSignalCalibrator()
        k, events = P.shape[1], labelled_events(P, y)
        kept = {}
        for name, calibrator in extra.items():
            parameters = max(SIGNAL_PARAMETERS, fitted_parameters(calibrator, k))
            needed = EVENTS_PER_PARAMETER * parameters
            if events >= needed:
                kept[name] = calibrator
            else:
                self.skipped_[name] = f"needs {needed} labelled events, has {events}"
        if kept:  # the other signals must earn their place: multisignal.signals_help
            fold_rows = lambda c: self._out_of_fold(c, P, y, folds, signals)  # noqa: E731
            keep, why = signals_help(candidates, kept, fold_rows, y)
            if not keep:
                self.skipped_.update(dict.fromkeys(kept, f"the other signals do not help ({why})"))
                return {}
        return kept

    def _n_folds(self, n_rows: int) -> int:
        return self.cv if n_rows < LARGE_ROWS else 2

    def _folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train, held-out) row masks: 2 bytes per row and fold instead of 8 for indices."""
        if len(y) < 2 * self.cv:
            raise InvalidInputError(
                f"AutoCalibrator needs at least {2 * self.cv} rows for {self.cv}-fold "
                f"cross-validation, got {len(y)}"
            )
        n_folds = self._n_folds(len(y))
        # Stratified whenever some class can fill every fold: a rare class is then spread
        # over as many folds as it has rows, so no training fold loses a class of 2+ rows
        # (plain folds could put all 3 rows of a class in one fold, leaving a training fold
        # with a single class, on which every supervised candidate fails).
        splitter = StratifiedKFold if np.bincount(y).max() >= n_folds else KFold
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            split = splitter(n_folds, shuffle=True, random_state=self.random_state).split(y, y)
            return [(_row_mask(train, len(y)), _row_mask(test, len(y))) for train, test in split]

    @staticmethod
    def _out_of_fold(estimator, P, y, folds, signals=None) -> np.ndarray:
        Q = np.empty_like(P)
        for train, test in folds:
            fitted = fit_with_signals(
                clone(estimator), P[train], y[train], take_rows(signals, train)
            )
            held = np.flatnonzero(test)
            for start in range(0, len(held), POOL_CHUNK):  # chunk-sized temporaries
                rows = held[start : start + POOL_CHUNK]
                fold = np.asarray(predict_with_signals(fitted, P[rows], take_rows(signals, rows)))
                if fold.shape != (len(rows), P.shape[1]):
                    raise InvalidInputError(
                        f"predict_proba returned shape {fold.shape}, expected "
                        f"{(len(rows), P.shape[1])}"
                    )
                if not np.isfinite(fold).all() or (fold < 0).any():
                    raise InvalidInputError(
                        "predict_proba returned NaN, infinite or negative values"
                    )
                Q[rows] = fold
        return Q

    def _fit(self, P, y):
        signals = check_signals(self.given_signals(), len(y), P.shape[1], fitting=True)
        candidates = dict(self._candidates(P, y))
        verbalized = list(candidates)  # the candidates of the verbalized rows alone
        folds = self._folds(y)
        if signals and self.candidates is None:
            candidates.update(self._signal_candidates(candidates, signals, P, y, folds))
        gold, self.cv_scores_, self.cv_ece_, self.cv_errors_ = {}, {}, {}, {}
        for name, estimator in candidates.items():
            try:
                Q = self._out_of_fold(estimator, P, y, folds, signals)
            except Exception as exc:  # one candidate's failure must not stop the others
                self.cv_scores_[name] = np.inf
                self.cv_errors_[name] = f"{type(exc).__name__}: {exc}"
                continue
            gold[name] = _compact(Q[np.arange(len(y)), y])
            with np.errstate(divide="ignore"):
                self.cv_scores_[name] = float(-np.log(gold[name]).mean())
            self.cv_ece_[name] = ece(Q, y)
            del Q  # before the next candidate's fit
        del folds
        if not gold:
            raise InvalidInputError(
                "every candidate failed in cross-validation: "
                + "; ".join(f"{name}: {error}" for name, error in self.cv_errors_.items())
            )
        if self.rule == "stack":
            names = list(gold)
            weights = pool_weights(_pop_columns(gold, names))
            # The prior spreads weight only over candidates that never gave the truth 0,
            # and within a family (the verbalized rows' candidates, the other signals'):
            # how much to trust another signal stays as fitted (signals_help vetted it).
            finite = np.isfinite([self.cv_scores_[name] for name in names])
            from_verbalized = np.isin(names, verbalized)
            for family in (from_verbalized, ~from_verbalized):
                in_family = finite & family
                total = weights[in_family].sum()
                if self.anchor_rows > 0 and total > 0:
                    weights[in_family] = total * anchored_weights(
                        weights[in_family] / total, len(y), float(self.anchor_rows)
                    )
            kept = weights >= MIN_WEIGHT
            share = weights[kept] / weights[kept].sum()
            self.weights_ = dict(zip(np.array(names)[kept].tolist(), share.tolist(), strict=True))
        else:
            self.weights_ = {self._one_se(gold): 1.0}
        self.chosen_ = max(self.weights_, key=self.weights_.__getitem__)
        if len(self.weights_) == 1:
            best = clone(candidates[self.chosen_])
        else:
            members = [(name, candidates[name]) for name in self.weights_]
            best = LinearPool(members, list(self.weights_.values()))
        self.best_estimator_ = fit_with_signals(best, P, y, signals)
        self.signals_ = required_signals(self.best_estimator_)
        self.explanation_ = self._explain(len(y))

    def _one_se(self, gold: dict[str, np.ndarray | _Codes]) -> str:
        """The first candidate whose NLL is within one standard error of the lowest."""
        with np.errstate(divide="ignore"):
            losses = {name: -np.log(g) for name, g in gold.items()}
        best = min(losses, key=lambda name: losses[name].mean())
        return (within_one_se(losses, best, list(losses)) or [best])[0]

    def _explain(self, n_rows: int) -> str:
        ranked = sorted(self.cv_scores_, key=self.cv_scores_.__getitem__)
        scores = ", ".join(
            f"{name} NLL {self.cv_scores_[name]:.4f} / ECE {self.cv_ece_.get(name, np.nan):.4f}"
            for name in ranked
        )
        how = f"{self._n_folds(n_rows)}-fold cross-validation on the {n_rows} calibration rows"
        if self.rule == "one_se":
            text = (
                f"Chose {self.chosen_} ({type(self.best_estimator_).__name__}), the simplest "
                f"candidate within one standard error of the lowest NLL ({ranked[0]}), by {how}."
            )
        elif len(self.weights_) == 1:
            text = (
                f"Chose {self.chosen_} ({type(self.best_estimator_).__name__}): it takes all "
                f"the weight of the pool fitted to the out-of-fold predictions of {how}."
            )
        else:
            parts = ", ".join(
                f"{name} {weight:.2f}"
                for name, weight in sorted(self.weights_.items(), key=lambda item: -item[1])
            )
            prior = (
                f" (shrunk toward equal weights by a prior worth {self.anchor_rows:g} rows)"
                if self.anchor_rows > 0
                else ""
            )
            text = (
                f"Pooled the candidates with weights fitted to their out-of-fold predictions "
                f"by {how}{prior}: {parts}."
            )
        text += f" Scores: {scores}."
        for name, reason in self.skipped_.items():
            text += f" {name} not compared: {reason}."
        for name, error in self.cv_errors_.items():
            text += f" {name} failed: {error}."
        return text

    def _predict_proba(self, P):
        return predict_with_signals(self.best_estimator_, P, self.given_signals())
