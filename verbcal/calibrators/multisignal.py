"""Multi-signal calibration: a regularised multinomial model on several estimated logits.

Besides the verbalized distribution ``P``, an API can give the token
probabilities of the answer labels, several sampled answers (whose spread says
how sure the model is of its own statement) and, with probes, the content-free
prior. :class:`MultiSignalCalibrator` stacks what is present as features of

``q_i = softmax(w_v * v_i + w_t * t_i + w_m * m_i * v_i + w_s * s_i * v_i + w_c * c
+ sum_e a_e * log(P_i + e) + sum_e b_e * log(T_i + e) + b)``

with ``v = log(P + eps)`` (the verbalized logits), ``t`` the token logits
``log(T + eps_t)`` (``v`` on rows without token probabilities, ``m`` their 0/1
indicator), ``s`` the spread of the sampled distributions (0 with one sample),
``c = log(p_cf + eps)`` the content-free prior, and copies of both logits
smoothed by each ``e`` of :data:`VERBAL_BASIS` and :data:`TOKEN_BASIS` (a
monotone basis that lets the map bend; ``P`` stands in for ``T`` on rows
without it). The weights are pulled toward a two-weight temperature fit of
the two logits (``w_v``, ``w_t``; every other weight and ``b`` at 0) by an L2
penalty on standardised features, whose strength is chosen by cross-validation
among :data:`PENALTIES`, infinity (exactly that anchor) included, and each
signal's temperature scaling alone is a choice too. By default
(``rule="pool"``) the result is the linear pool of the choices, with weights
maximising the likelihood of their out-of-fold rows (:func:`mixture_weights`):
on a hundred rows, picking one choice (``rule="choose"``: among the strengths
whose out-of-fold NLL is within one standard error of the lowest, the one with
the lowest out-of-fold ECE; one signal alone when it has the lowest NLL)
flipped between signals from split to split. A final shrinkage binning of the
pool's rows (:class:`ShrinkageBinning` on a few quantile bins, fitted on the
out-of-fold rows: cross-fitted) or none is chosen by the same
ECE-within-one-SE rule, by cross-validation on those rows; binning coarsens the
rows, which a binned ECE rewards. :func:`signals_help` is the check
:class:`~verbcal.calibrators.AutoCalibrator` makes before pooling candidates
that use other signals, and :data:`SIGNAL_PARAMETERS` the labelled events it
asks for.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from verbcal.calibrators.base import BaseCalibrator, check_fitted
from verbcal.calibrators.binning import ShrinkageBinning
from verbcal.calibrators.logits import log_smoothed
from verbcal.calibrators.scaling import TemperatureScaling
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics import ece
from verbcal.validation import Constraint, Interval, Options

__all__ = [
    "BINNING_BINS",
    "MIN_POOL_WEIGHT",
    "PENALTIES",
    "PRIOR",
    "ROW_SIGNALS",
    "SAMPLE_SPREAD",
    "SIGNAL_PARAMETERS",
    "TOKEN_BASIS",
    "TOKEN_PROBS",
    "VERBAL_BASIS",
    "MultiSignalCalibrator",
    "SignalsMixin",
    "TokenProbsCalibrator",
    "check_signals",
    "fit_with_signals",
    "predict_with_signals",
    "required_signals",
    "sample_spread",
    "mixture_weights",
    "signals_help",
    "take_rows",
    "within_one_se",
]

#: Signal names. Per-row signals are given to ``fit`` and ``predict_proba``; the
#: content-free prior only to ``fit`` (it is one row, kept in the calibrator).
TOKEN_PROBS = "token_probs"
SAMPLE_SPREAD = "sample_spread"
PRIOR = "prior"
ROW_SIGNALS = (TOKEN_PROBS, SAMPLE_SPREAD)

#: L2 strengths compared by cross-validation (the penalty is added to the summed NLL,
#: so it fades as rows accumulate); ``inf`` is verbalized-only temperature scaling.
PENALTIES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, np.inf)

#: Names of the single-signal choices (temperature scaling of one signal) beside the penalties.
VERBAL_ALONE = "verbalized alone"
TOKEN_ALONE = "token_probs alone"

#: Smoothing of the token probabilities before the log (they are real probabilities,
#: often 1e-5 and below for the labels not chosen).
TOKEN_EPS = 1e-4

#: Smoothings of the extra copies of the verbalized logits, ``log(P + e)``: together with
#: the sharp copy they form a monotone basis, so the stack can bend the map of a stated
#: value (a stated 0.99 trusted less than a line through 0.8 and 0.9 would trust it).
VERBAL_BASIS = (0.03, 0.1, 1.0)

#: The same for the token probabilities, whose information sits in how close the chosen
#: label is to 1 (1 - 1e-3, 1 - 1e-6, 1 - 1e-12…): smoothings down to 1e-8 keep it apart.
TOKEN_BASIS = (1e-8, 1e-6, 1e-2, 0.1, 1.0)

#: Parameters a calibrator using signals besides the verbalized one fits at least: how
#: much to trust the other signal (a pool's share for the candidates using it; the
#: multi-signal model's anchor fits two weights, counted by ``fitted_parameters``).
#: :class:`~verbcal.calibrators.AutoCalibrator` asks each of its candidates using other
#: signals for the labelled events of that many parameters at least (10 each): on fewer,
#: the verbalized candidates alone are compared and the result is theirs exactly.
SIGNAL_PARAMETERS = 1

#: Quantile bins compared (with no binning) for the final binning step.
BINNING_BINS = (3, 5, 10, 20, 30)

#: Members of the pool of choices below this weight are dropped.
MIN_POOL_WEIGHT = 1e-3

#: L2 strength of the anchor's two weights around the average of the two temperatures.
ANCHOR_PENALTY = 1.0

#: Prior scale of the verbalized-only temperature scaling the weights shrink toward.
ANCHOR_PRIOR_SCALE = 0.5


def sample_spread(samples: Sequence[np.ndarray | None]) -> np.ndarray:
    """How much each row's sampled distributions disagree: NaN for rows with fewer than 2.

    Parameters
    ----------
    samples : sequence of (S_i, K) arrays or None
        The parsed distributions of each row's samples.

    Returns
    -------
    ndarray of shape (n,)
        The mean over classes of the standard deviation of the sampled
        probabilities (0: every sample said the same; at most 0.5).

    Examples
    --------
    >>> sample_spread([np.array([[0.9, 0.1], [0.5, 0.5]]), None]).tolist()
    [0.2, nan]
    """
    out = np.full(len(samples), np.nan)
    for i, rows in enumerate(samples):
        if rows is not None and len(rows) >= 2:
            out[i] = float(np.asarray(rows, dtype=np.float64).std(axis=0).mean())
    return out


def check_signals(signals: Any, n: int, k: int, *, fitting: bool) -> dict[str, np.ndarray]:
    """The signals as arrays (NaN rows: missing), each checked against the rows of ``P``.

    ``n`` rows, ``k`` classes; ``fitting`` allows the content-free prior. Signals
    given as None or missing on every row are left out; probability rows are
    renormalised, and a token row of zeros (no label among the top tokens) is
    missing.
    """
    if signals is None:
        return {}
    if not isinstance(signals, Mapping):
        raise InvalidInputError(
            f"signals must be a mapping of signal name to array, got {signals!r}"
        )
    known = (*ROW_SIGNALS, PRIOR) if fitting else ROW_SIGNALS
    out: dict[str, np.ndarray] = {}
    for name, value in signals.items():
        if value is None:
            continue
        if name not in known:
            raise InvalidInputError(f"unknown signal {name!r}; known: {', '.join(known)}")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"signal {name!r} must hold numbers") from None
        shape = {TOKEN_PROBS: (n, k), SAMPLE_SPREAD: (n,), PRIOR: (k,)}[name]
        if arr.shape != shape:
            raise InvalidInputError(f"signal {name!r} has shape {arr.shape}, expected {shape}")
        present = ~np.isnan(arr) if arr.ndim == 1 else ~np.isnan(arr).any(axis=-1)
        values = arr[present]
        if not np.isfinite(values).all() or (values < 0).any():
            raise InvalidInputError(f"signal {name!r} holds infinite or negative values")
        if name in (TOKEN_PROBS, PRIOR):
            arr = arr.reshape(-1, k).copy()
            sums = arr.sum(axis=1)
            if name == TOKEN_PROBS:  # no label among the top tokens: missing, as no logprobs
                arr[sums == 0] = np.nan
            elif sums[0] <= 0:
                raise InvalidInputError("signal 'prior' sums to 0")
            arr = (arr / sums[:, None]).reshape(shape)
            present = ~np.isnan(arr) if arr.ndim == 1 else ~np.isnan(arr).any(axis=-1)
        if name == PRIOR and not present.all():
            raise InvalidInputError("signal 'prior' holds NaN")
        if present.any():
            out[name] = arr
    return out


def take_rows(signals: Mapping[str, np.ndarray] | None, rows: np.ndarray | slice) -> dict[str, Any]:
    """The per-row signals restricted to ``rows`` (the prior kept whole)."""
    if not signals:
        return {}
    return {name: value if name == PRIOR else value[rows] for name, value in signals.items()}


def fit_with_signals(estimator: Any, P: np.ndarray, y: np.ndarray | None, signals: Any) -> Any:
    """``estimator.fit(P, y)``, with ``signals`` when it takes them (``accepts_signals``)."""
    if signals and getattr(estimator, "accepts_signals", False):
        return estimator.fit(P, y, signals=signals)
    return estimator.fit(P, y)


def predict_with_signals(estimator: Any, P: np.ndarray, signals: Any) -> np.ndarray:
    """``estimator.predict_proba(P)``, with ``signals`` when it takes them."""
    if getattr(estimator, "accepts_signals", False):
        row_signals = {k: v for k, v in (signals or {}).items() if k != PRIOR}
        return estimator.predict_proba(P, signals=row_signals)
    return estimator.predict_proba(P)


def required_signals(estimator: Any) -> list[str]:
    """The per-row signals a fitted calibrator needs to predict, besides ``P`` (often none)."""
    return list(getattr(estimator, "signals_", []))


class SignalsMixin:
    """``fit(P, y, signals=None)`` and ``predict_proba(P, signals=None)`` for a calibrator.

    Put before :class:`BaseCalibrator` among the bases; ``_fit`` and
    ``_predict_proba`` read the signals of the call with :meth:`given_signals`.
    """

    #: ``fit`` and ``predict_proba`` take ``signals``.
    accepts_signals: ClassVar[bool] = True

    def given_signals(self) -> Any:
        """The ``signals`` of the ``fit`` or ``predict_proba`` call under way (None outside)."""
        return getattr(self, "_given_signals", None)

    def fit(self, P, y=None, signals=None):
        """Fit on probability rows ``P``, gold classes ``y`` and the ``signals`` present.

        Returns
        -------
        self
        """
        self._given_signals = signals
        try:
            return super().fit(P, y)  # type: ignore[misc]
        finally:
            del self._given_signals

    def predict_proba(self, P, signals=None) -> np.ndarray:
        """Calibrated rows; ``signals`` must hold every signal in ``signals_``."""
        self._given_signals = signals
        try:
            return super().predict_proba(P)  # type: ignore[misc]
        finally:
            del self._given_signals

    def predict(self, P, signals=None) -> np.ndarray:
        """Most probable class index of each calibrated row."""
        check_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(P, signals), axis=1)]  # type: ignore[attr-defined]


class MultiSignalCalibrator(SignalsMixin, BaseCalibrator):
    """Calibration from every signal given: verbalized, token probabilities, sample spread, prior.

    ``fit(P, y, signals={...})`` with ``signals`` mapping :data:`TOKEN_PROBS`
    to an (n, K) array (a row of NaN where a reply had none), :data:`SAMPLE_SPREAD`
    to an (n,) array (:func:`sample_spread`; NaN with one sample) and
    :data:`PRIOR` to the (K,) content-free prior. ``predict_proba(P, signals)``
    needs the per-row signals it was fitted with (``signals_``) and raises an
    InvalidInputError naming a missing one; rows where one is NaN fall back as
    in fitting (verbalized logits for the token logits, spread 0).

    Parameters
    ----------
    penalties : tuple of float, default :data:`PENALTIES`
        L2 strengths (on standardised features) compared by ``cv``-fold
        cross-validation.
    single_signals : bool, default True
        Compare each signal's temperature scaling alone too (a member of the
        pool, or the fallback when cross-validation says the stack does not help).
    cv : int, default 5
    random_state : int, default 0
    renormalize : bool, default False
    binning : bool, default True
        End with a shrinkage binning of the rows, or none, chosen by
        cross-validation (``binning_choice_``).
    rule : {"pool", "choose"}, default "pool"
        Pool the choices (penalties, signals alone) with weights fitted on
        their out-of-fold rows, or keep one (``choice_``).

    Attributes
    ----------
    signals_ : list of str
        The per-row signals ``predict_proba`` needs.
    features_ : list of str
        Names of the weights in ``coef_``.
    weights_ : dict of str to float
        Weight of each choice kept in the pool (one choice with weight 1 for
        ``rule="choose"``).
    members_ : list of (ndarray, ndarray)
        Weights of the raw features and class biases of each choice in ``weights_``.
    coef_ : ndarray
        The weights of the raw features of ``choice_``; ``intercept_`` its class biases.
    binning_ : ShrinkageBinning or None
        The final binning (None: none), fitted on the out-of-fold rows.
    binning_choice_ : str
        ``"none"`` or the number of bins (``"5 bins"``).
    binning_cv_nll_, binning_cv_ece_ : dict of str to float
        Cross-validated NLL and ECE of each binning choice.
    anchor_ : ndarray
        The weights shrunk toward (verbalized-only temperature scaling).
    choice_ : str
        The pool's member with the most weight, or (``rule="choose"``) what
        cross-validation chose: one signal's temperature scaling alone
        (``"verbalized alone"``, ``"token_probs alone"``) when it has the
        lowest cross-validated NLL, else a penalty (its ``repr``): the lowest
        cross-validated ECE among those within one standard error of the
        lowest cross-validated NLL.
    penalty_ : float
        The chosen L2 strength (``inf``: the anchor itself, or one signal alone).
    cv_nll_, cv_ece_ : dict of str to float
        Cross-validated NLL and top-label ECE of each choice.
    eps_, token_eps_ : float
        Smoothing of the verbalized and token probabilities.
    prior_ : ndarray or None
        The content-free prior, when given.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 300)
    >>> token = np.where(rng.random(300) < 0.8, y, 1 - y)
    >>> T = np.column_stack([token == 0, token == 1]) * 0.8 + 0.1
    >>> P = np.full((300, 2), 0.5)
    >>> cal = MultiSignalCalibrator().fit(P, y, signals={"token_probs": T})
    >>> cal.signals_, bool(cal.coef_[1] > 0.5)  # the token logits carry the information
    (['token_probs'], True)
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "single_signals": [bool],
        "binning": [bool],
        "rule": [Options(("pool", "choose"))],
        "cv": [Interval("integer", 2, None)],
        "random_state": [Interval("integer", 0, None)],
    }

    def __init__(
        self,
        penalties=PENALTIES,
        single_signals=True,
        cv=5,
        random_state=0,
        renormalize=False,
        binning=True,
        rule="pool",
    ):
        self.penalties = penalties
        self.single_signals = single_signals
        self.cv = cv
        self.random_state = random_state
        self.renormalize = renormalize
        self.binning = binning
        self.rule = rule

    # -- model ---------------------------------------------------------------------------

    def _features(self, P: np.ndarray, signals: dict[str, np.ndarray]) -> list[np.ndarray]:
        v = log_smoothed(P, self.eps_)
        features = [v]
        if TOKEN_PROBS in self.signals_:
            tokens = signals[TOKEN_PROBS]
            missing = np.isnan(tokens).any(axis=1)
            t = v.copy()
            if (~missing).any():
                t[~missing] = log_smoothed(tokens[~missing], self.token_eps_)
            features += [t, missing[:, None] * v]
        if SAMPLE_SPREAD in self.signals_:
            features.append(np.nan_to_num(signals[SAMPLE_SPREAD], nan=0.0)[:, None] * v)
        if self.prior_ is not None:
            features.append(np.broadcast_to(log_smoothed(self.prior_, self.eps_), P.shape))
        features += [log_smoothed(P, e) for e in VERBAL_BASIS]
        if TOKEN_PROBS in self.signals_:
            filled = np.where(missing[:, None], P, tokens)
            features += [log_smoothed(filled, e) for e in TOKEN_BASIS]
        return features

    def _fit(self, P, y):
        signals = check_signals(self.given_signals(), len(P), P.shape[1], fitting=True)
        try:  # checked here: the constraints have no "sequence of numbers"
            penalties = tuple(float(p) for p in self.penalties)
        except (TypeError, ValueError):
            penalties = ()
        if not penalties or any(not p > 0 for p in penalties):
            raise ConfigurationError(f"penalties must be numbers > 0, got {self.penalties!r}")
        self.signals_ = [name for name in ROW_SIGNALS if name in signals]
        self.prior_ = signals.get(PRIOR)
        self.features_ = ["verbalized"]
        if TOKEN_PROBS in self.signals_:
            self.features_ += ["token_probs", "token_probs_missing*verbalized"]
        if SAMPLE_SPREAD in self.signals_:
            self.features_.append("sample_spread*verbalized")
        if self.prior_ is not None:
            self.features_.append("prior")
        self.features_ += [f"verbalized@{e:g}" for e in VERBAL_BASIS]
        if TOKEN_PROBS in self.signals_:
            self.features_ += [f"token_probs@{e:g}" for e in TOKEN_BASIS]
        tokens = self._token_rows(P, signals)
        self.anchor_, self.eps_, self.token_eps_, singles = self._anchor(
            P, tokens, y, "auto", "auto"
        )
        F = np.stack(self._features(P, signals))
        # The penalty acts on standardised features (each basis copy has its own scale:
        # log(T + 1e-8) spans 18 nats, log(T + 1) less than one); the weights kept are
        # those of the raw features.
        scales = _feature_scales(F, fixed=len(self.features_) - self._n_basis())
        F = F / scales[:, None, None]
        anchor = self.anchor_ * scales
        self.cv_nll_, self.cv_ece_, losses, oof = self._cross_validate(
            F, P, tokens, y, penalties, scales
        )
        if self.rule == "pool":
            names = list(oof)
            rows = np.arange(len(y))
            weights = mixture_weights(np.column_stack([oof[c][rows, y] for c in names]))
            kept = [(c, w) for c, w in zip(names, weights, strict=True) if w >= MIN_POOL_WEIGHT]
            total = sum(w for _, w in kept)
            self.weights_ = {c: float(w / total) for c, w in kept}
        else:
            self.weights_ = {_choose(self.cv_nll_, self.cv_ece_, losses): 1.0}
        self.choice_ = max(self.weights_, key=self.weights_.__getitem__)
        self.members_ = []
        for choice in self.weights_:
            if choice in singles:  # one signal alone: its temperature scaling
                self.members_.append((singles[choice], np.zeros(P.shape[1])))
            else:
                coef, intercept = _fit_weights(F, y, anchor, float(choice))
                self.members_.append((coef / scales, intercept))
        self.coef_, self.intercept_ = self.members_[list(self.weights_).index(self.choice_)]
        self.penalty_ = np.inf if self.choice_ in singles else float(self.choice_)
        self.binning_, self.binning_choice_ = None, "none"
        self.binning_cv_nll_, self.binning_cv_ece_ = {}, {}
        if self.binning:  # cross-fitted: on the out-of-fold rows of the result
            pooled = np.zeros(P.shape)
            for choice, weight in self.weights_.items():
                pooled += weight * oof[choice]
            self.binning_choice_, self.binning_ = self._fit_binning(pooled, y)

    def _fit_binning(self, Q: np.ndarray, y: np.ndarray) -> tuple[str, ShrinkageBinning | None]:
        """The final binning of the out-of-fold rows ``Q`` (or none), chosen by cross-validation.

        Each :data:`BINNING_BINS` count of quantile bins (shrinkage toward the
        rows themselves, strength by leave-one-out, :class:`ShrinkageBinning`)
        and no binning at all are scored out of fold; the choice follows the
        rule of the penalties: the lowest out-of-fold ECE among those within one
        standard error of the lowest out-of-fold NLL.
        """
        candidates: dict[str, ShrinkageBinning | None] = {"none": None}
        for bins in BINNING_BINS:
            candidates[f"{bins} bins"] = ShrinkageBinning(
                prior_strength="auto", max_bins=bins, temperature_prior_scale=ANCHOR_PRIOR_SCALE
            )
        oof = {name: Q.copy() for name in candidates}
        for train, test in self._splits(y):
            if len(np.unique(y[train])) < 2:
                continue
            for name, binning in candidates.items():
                if binning is not None:
                    oof[name][test] = clone(binning).fit(Q[train], y[train]).predict_proba(Q[test])
        rows = np.arange(len(y))
        with np.errstate(divide="ignore"):
            losses = {name: -np.log(R[rows, y]) for name, R in oof.items()}
        self.binning_cv_nll_ = {name: float(loss.mean()) for name, loss in losses.items()}
        self.binning_cv_ece_ = {name: ece(R, y) for name, R in oof.items()}
        choice = _one_se_lowest_ece(self.binning_cv_nll_, self.binning_cv_ece_, losses)
        binning = candidates[choice]
        return choice, None if binning is None else clone(binning).fit(Q, y)

    def _splits(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The cross-validation folds (stratified when every class fills them)."""
        n_folds = min(self.cv, max(2, int(np.bincount(y).max())))
        splitter = StratifiedKFold if np.bincount(y)[np.bincount(y) > 0].min() >= n_folds else KFold
        return list(splitter(n_folds, shuffle=True, random_state=self.random_state).split(y, y))

    def _n_basis(self) -> int:
        return len(VERBAL_BASIS) + (len(TOKEN_BASIS) if TOKEN_PROBS in self.signals_ else 0)

    def _token_rows(self, P: np.ndarray, signals: dict[str, np.ndarray]) -> np.ndarray | None:
        """Token probabilities with the verbalized row where a row has none (or None)."""
        if TOKEN_PROBS not in self.signals_:
            return None
        tokens = signals[TOKEN_PROBS]
        return np.where(np.isnan(tokens).any(axis=1)[:, None], P, tokens)

    def _anchor(
        self, P: np.ndarray, tokens: np.ndarray | None, y: np.ndarray, eps: Any, token_eps: Any
    ) -> tuple[np.ndarray, float, float, dict[str, np.ndarray]]:
        """The weights shrunk toward, the smoothings, and each signal's temperature alone.

        The anchor: one weight on each signal's logits, fitted together around the
        average of their temperatures (the verbalized temperature alone without
        token rows); the smoothing of each is fitted with its temperature. The
        last item maps ``"verbalized alone"`` (and ``"token_probs alone"``) to
        the weights of that signal's temperature scaling.
        """
        n_features = len(self.features_)
        verbal = TemperatureScaling(eps=eps, prior_scale=ANCHOR_PRIOR_SCALE).fit(P, y)
        anchor = np.zeros(n_features)
        anchor[0] = 1.0 / verbal.temperature_
        singles = {VERBAL_ALONE: anchor.copy()}
        if tokens is None:
            return anchor, verbal.eps_, TOKEN_EPS, singles
        token = TemperatureScaling(eps=token_eps, prior_scale=ANCHOR_PRIOR_SCALE).fit(tokens, y)
        singles[TOKEN_ALONE] = np.zeros(n_features)
        singles[TOKEN_ALONE][1] = 1.0 / token.temperature_
        # Both logits, one weight each, fitted together (two weights: any file supports them).
        both = np.stack([log_smoothed(P, verbal.eps_), log_smoothed(tokens, token.eps_)])
        start = np.array([0.5 / verbal.temperature_, 0.5 / token.temperature_])
        weights, _ = _fit_weights(both, y, start, ANCHOR_PENALTY, intercept=False)
        anchor[:2] = weights
        return anchor, verbal.eps_, token.eps_, singles

    def _cross_validate(
        self,
        F: np.ndarray,
        P: np.ndarray,
        tokens: np.ndarray | None,
        y: np.ndarray,
        penalties: tuple[float, ...],
        scales: np.ndarray,
    ) -> tuple[dict[str, float], dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Out-of-fold NLL, ECE, per-row losses and rows of each penalty and single signal."""
        folds = self._splits(y)
        choices = [repr(p) for p in penalties]
        if self.single_signals:
            choices += [VERBAL_ALONE] if tokens is None else [VERBAL_ALONE, TOKEN_ALONE]
        oof = {choice: np.full(P.shape, 1.0 / P.shape[1]) for choice in choices}
        for train, test in folds:
            if len(np.unique(y[train])) < 2:
                continue
            rows = None if tokens is None else tokens[train]
            anchor, _, _, singles = self._anchor(
                P[train], rows, y[train], self.eps_, self.token_eps_
            )
            for name, coef in singles.items() if self.single_signals else ():
                Z = np.tensordot(coef * scales, F[:, test], axes=1)
                oof[name][test] = np.exp(log_softmax(Z, axis=1))
            for p in penalties:
                coef, intercept = _fit_weights(F[:, train], y[train], anchor * scales, p)
                Z = np.tensordot(coef, F[:, test], axes=1) + intercept
                oof[repr(p)][test] = np.exp(log_softmax(Z, axis=1))
        rows_ = np.arange(len(y))
        with np.errstate(divide="ignore"):
            losses = {p: -np.log(Q[rows_, y]) for p, Q in oof.items()}
        nlls = {p: float(loss.mean()) for p, loss in losses.items()}
        eces = {p: ece(Q, y) for p, Q in oof.items()}
        return nlls, eces, losses, oof

    def _predict_proba(self, P):
        signals = check_signals(self.given_signals(), len(P), P.shape[1], fitting=False)
        for name in self.signals_:
            if name not in signals:
                how = "elicit with --logprobs" if name == TOKEN_PROBS else "elicit with --samples"
                raise InvalidInputError(
                    f"this calibrator was fitted with the signal {name!r}, which these "
                    f"predictions lack ({how}, or fit a calibrator without it)"
                )
        Q = self._stack_proba(P, signals)
        return Q if self.binning_ is None else self.binning_.predict_proba(Q)

    def _stack_proba(self, P: np.ndarray, signals: dict[str, np.ndarray]) -> np.ndarray:
        """The multinomial model's rows, before the final binning."""
        F = np.stack(self._features(P, signals))
        out = np.zeros(P.shape)
        for w, (coef, intercept) in zip(self.weights_.values(), self.members_, strict=True):
            out += w * np.exp(log_softmax(np.tensordot(coef, F, axes=1) + intercept, axis=1))
        return out


class TokenProbsCalibrator(SignalsMixin, BaseCalibrator):
    """A calibrator of the token probabilities instead of the verbalized rows.

    ``fit(P, y, signals={"token_probs": T})`` fits ``calibrator`` on ``T``,
    the verbalized row ``P`` standing in on rows whose token probabilities are
    missing (NaN); ``predict_proba`` does the same. :class:`AutoCalibrator`
    pools such candidates with the verbalized ones when token probabilities
    are given.

    Parameters
    ----------
    calibrator : calibrator
    renormalize : bool, default False

    Attributes
    ----------
    calibrator_ : calibrator
        Fitted on the token rows.
    signals_ : list of str
        ``["token_probs"]``.
    """

    def __init__(self, calibrator, renormalize=False):
        self.calibrator = calibrator
        self.renormalize = renormalize

    def _rows(self, P: np.ndarray, fitting: bool) -> np.ndarray:
        signals = check_signals(self.given_signals(), len(P), P.shape[1], fitting=fitting)
        if TOKEN_PROBS not in signals:
            raise InvalidInputError(
                f"this calibrator needs the signal {TOKEN_PROBS!r}, which these predictions "
                "lack (elicit with --logprobs, or fit a calibrator without it)"
            )
        tokens = signals[TOKEN_PROBS]
        return np.where(np.isnan(tokens).any(axis=1)[:, None], P, tokens)

    def _fit(self, P, y):
        self.calibrator_ = clone(self.calibrator).fit(self._rows(P, fitting=True), y)
        self.signals_ = [TOKEN_PROBS]

    def _predict_proba(self, P):
        return self.calibrator_.predict_proba(self._rows(P, fitting=False))


def _fit_weights(
    F: np.ndarray, y: np.ndarray, anchor: np.ndarray, penalty: float, intercept: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and biases minimising summed NLL + ``penalty * |(w, b) - (anchor, 0)|^2``.

    Without ``intercept`` the biases stay 0.
    """
    m, n, k = F.shape
    if np.isinf(penalty):
        return anchor.copy(), np.zeros(k)
    onehot = np.eye(k)[y]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:m], theta[m:]
        logq = log_softmax(np.tensordot(w, F, axes=1) + b, axis=1)
        residual = np.exp(logq) - onehot
        shift = theta - np.concatenate([anchor, np.zeros(k)])
        loss = -float(logq[np.arange(n), y].sum()) + penalty * float(shift @ shift)
        grad = np.concatenate([np.einsum("mnk,nk->m", F, residual), residual.sum(axis=0)])
        grad = grad + 2 * penalty * shift
        if not intercept:
            grad[m:] = 0.0
        return loss, grad

    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            loss_and_grad,
            np.concatenate([anchor, np.zeros(k)]),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 500},
        )
    return result.x[:m], result.x[m:]


def _feature_scales(F: np.ndarray, fixed: int) -> np.ndarray:
    """Root mean square of each feature's row-centred values (1 for the first ``fixed``)."""
    centred = F - F.mean(axis=2, keepdims=True)
    scales = np.sqrt((centred**2).mean(axis=(1, 2)))
    scales[:fixed] = 1.0
    return np.where(scales > 1e-12, scales, 1.0)


def _choose(
    nlls: Mapping[str, float], eces: Mapping[str, float], losses: Mapping[str, np.ndarray]
) -> str:
    """A single signal alone if it has the lowest out-of-fold NLL, else an ECE-aware penalty.

    NLL (a proper score) decides first: when one signal's temperature scaling
    alone beats every penalty, the stack does not help and that signal is
    kept. Otherwise, among the penalties NLL cannot tell apart from the best
    (paired per-row loss differences within one standard error, the rule of
    Breiman et al. 1984), the one with the lowest out-of-fold ECE wins, ties
    to the stronger penalty.
    """
    singles = (VERBAL_ALONE, TOKEN_ALONE)

    def strength(choice: str) -> float:
        return np.inf if choice in singles else float(choice)

    best = min(nlls, key=lambda c: (nlls[c], -strength(c)))
    if best in singles:
        return best
    near = within_one_se(losses, best, [c for c in nlls if c not in singles])
    return min(near or [best], key=lambda c: (eces[c], -strength(c)))


def _one_se_lowest_ece(
    nlls: Mapping[str, float], eces: Mapping[str, float], losses: Mapping[str, np.ndarray]
) -> str:
    """The lowest ECE among the choices within one standard error of the lowest NLL.

    Ties go to the first choice in order.
    """
    best = min(nlls, key=nlls.__getitem__)
    near = within_one_se(losses, best, list(nlls))
    return min(near or [best], key=eces.__getitem__)


def within_one_se(losses: Mapping[str, Any], best: str, choices: Sequence[str]) -> list[str]:
    """The ``choices`` whose per-row loss is within one standard error of ``best``'s.

    The test is paired: the mean of the per-row differences
    ``losses[choice] - losses[best]`` is at most their standard error (the
    one-standard-error rule of Breiman et al. 1984). A choice with an infinite
    loss on some row is never within.

    Parameters
    ----------
    losses : mapping of str to array-like of shape (n,)
        Each choice's per-row loss (e.g. out-of-fold negative log-likelihood).
    best : str
        The reference choice, usually the one with the lowest mean loss.
    choices : sequence of str
        The choices to test, in the order they are returned.

    Returns
    -------
    list of str

    Examples
    --------
    >>> losses = {"a": [0.2, 0.4, 0.3], "b": [0.3, 0.4, 0.2], "c": [0.9, 0.9, 0.9]}
    >>> within_one_se(losses, "a", ["a", "b", "c"])
    ['a', 'b']
    """
    near = []
    for choice in choices:
        with np.errstate(invalid="ignore"):  # inf - inf: never within
            diff = np.asarray(losses[choice]) - np.asarray(losses[best])
        if np.all(np.isfinite(diff)) and diff.mean() <= diff.std() / np.sqrt(len(diff)):
            near.append(choice)
    return near


def signals_help(
    verbal: Mapping[str, Any],
    extra: Mapping[str, Any],
    out_of_fold: Callable[[Any], np.ndarray],
    y: np.ndarray,
) -> tuple[bool, str]:
    """Whether candidates using other signals earn their place beside the verbalized ones.

    The linear pool (maximum-likelihood weights, :func:`mixture_weights`, each
    fifth of the rows pooled with weights fitted on the rest) of the
    ``verbal`` candidates' out-of-fold rows is compared with the pool of every
    candidate: the signals are kept when the pool of every candidate has a
    lower out-of-fold NLL by more than one standard error of the paired per-row
    differences (the out-of-fold ECE of both is reported, not used: on a
    thousand rows it moved against the test halves' ECE). On a few hundred rows
    with a handful of wrong answers the token candidates otherwise win the
    pool by chance and lose on new rows.

    Parameters
    ----------
    verbal, extra : mapping of name to calibrator
        The candidates on the verbalized rows alone, and those using other signals.
    out_of_fold : callable
        A candidate's out-of-fold probability rows (raising when it fails: left out).
    y : ndarray of shape (n,)

    Returns
    -------
    (bool, str)
        Whether to keep the ``extra`` candidates, and why.
    """
    rows = np.arange(len(y))
    oof: dict[str, dict[str, np.ndarray]] = {"verbal": {}, "extra": {}}
    for group, candidates in (("verbal", verbal), ("extra", extra)):
        for name, candidate in candidates.items():
            try:
                Q = np.asarray(out_of_fold(candidate), dtype=np.float64)
            except Exception:  # a failing candidate is judged (and skipped) by the caller
                continue
            if Q.shape == (len(y), Q.shape[1]) and np.isfinite(Q).all() and (Q >= 0).all():
                oof[group][name] = Q
    if not oof["extra"]:
        return False, "no candidate using the other signals could be fitted"
    if not oof["verbal"]:
        return True, "no verbalized candidate could be fitted"

    # The pool weights are themselves judged on rows they were not fitted on (5 folds of
    # the out-of-fold rows): a pool of more candidates always fits its own rows better.
    fold = np.random.default_rng(0).permutation(len(y)) % 5

    def pooled(members: dict[str, np.ndarray]) -> np.ndarray:
        gold = np.column_stack([Q[rows, y] for Q in members.values()])
        stacked = np.stack(list(members.values()))
        out = np.empty_like(stacked[0])
        for k in range(5):
            held = fold == k
            weights = mixture_weights(gold[~held] if (~held).any() else gold)
            out[held] = np.tensordot(weights, stacked[:, held], axes=1)
        return out

    alone, every = pooled(oof["verbal"]), pooled({**oof["verbal"], **oof["extra"]})
    with np.errstate(divide="ignore"):
        diff = np.log(every[rows, y]) - np.log(alone[rows, y])  # > 0: the signals help
    diff = np.nan_to_num(diff, nan=0.0, posinf=50.0, neginf=-50.0)
    gain, se = float(diff.mean()), float(diff.std() / np.sqrt(len(diff)))
    ece_alone, ece_every = ece(alone, y), ece(every, y)
    text = (
        f"out-of-fold NLL {gain:+.4f} (standard error {se:.4f}) and ECE "
        f"{ece_alone:.4f} -> {ece_every:.4f} with the other signals"
    )
    return gain > se, text


def mixture_weights(gold: np.ndarray, iterations: int = 1000, tol: float = 1e-10) -> np.ndarray:
    """Weights on the simplex maximising ``sum_i log(gold[i] @ w)``, by EM.

    Each step ``w_m <- mean_i w_m gold[i, m] / (gold[i] @ w)`` raises the
    likelihood (Dempster, Laird & Rubin 1977), so a pool of more candidates
    never scores below a pool of some of them, as a general-purpose optimiser
    started at equal weights can on a dozen candidates.

    Examples
    --------
    >>> gold = np.array([[0.9, 0.5], [0.9, 0.5], [0.1, 0.5]])
    >>> mixture_weights(gold).round(3).tolist()
    [0.417, 0.583]
    """
    gold = np.maximum(np.asarray(gold, dtype=np.float64), 1e-300)
    weights = np.full(gold.shape[1], 1.0 / gold.shape[1])
    for _ in range(iterations):
        share = gold * weights
        share /= share.sum(axis=1, keepdims=True)
        new = share.mean(axis=0)
        if np.abs(new - weights).max() < tol:
            return new
        weights = new
    return weights
