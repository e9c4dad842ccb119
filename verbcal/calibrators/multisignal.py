"""Multi-signal calibration: a regularised multinomial model on several estimated logits.

Besides the verbalized distribution ``P``, an API can give the token
probabilities of the answer labels, several sampled answers (whose spread says
how sure the model is of its own statement) and, with probes, the content-free
prior. :class:`MultiSignalCalibrator` stacks what is present as features of

``q_i = softmax(w_v * v_i + w_t * t_i + w_m * m_i * v_i + w_s * s_i * v_i + w_c * c + b)``

with ``v = log(P + eps)`` (the verbalized logits), ``t`` the token logits
``log(T + eps_t)`` (``v`` on rows without token probabilities, ``m`` their 0/1
indicator), ``s`` the spread of the sampled distributions (0 with one sample)
and ``c = log(p_cf + eps)`` the content-free prior. The weights are pulled
toward "verbalized-only temperature scaling" (``w_v = 1/T``, every other
weight and ``b`` at 0) by an L2 penalty whose strength is chosen by
cross-validation among :data:`PENALTIES`, infinity (exactly that temperature
scaling) included: a file too small to learn the extra weights gets the
temperature scaling it would have had.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from verbcal.calibrators.base import BaseCalibrator, check_fitted
from verbcal.calibrators.logits import log_smoothed
from verbcal.calibrators.scaling import TemperatureScaling
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.validation import Constraint, Interval

__all__ = [
    "PENALTIES",
    "PRIOR",
    "ROW_SIGNALS",
    "SAMPLE_SPREAD",
    "TOKEN_PROBS",
    "MultiSignalCalibrator",
    "SignalsMixin",
    "TokenProbsCalibrator",
    "check_signals",
    "fit_with_signals",
    "predict_with_signals",
    "required_signals",
    "sample_spread",
    "take_rows",
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

#: Smoothing of the token probabilities before the log (they are real probabilities,
#: often 1e-5 and below for the labels not chosen).
TOKEN_EPS = 1e-4

#: Smoothing of the second, softer copy of each probability signal (its features bend the map).
SOFT_EPS = 0.1

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


def take_rows(signals: Mapping[str, np.ndarray] | None, rows: np.ndarray) -> dict[str, Any]:
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
        L2 strengths compared by ``cv``-fold cross-validation.
    cv : int, default 5
    random_state : int, default 0
    renormalize : bool, default False

    Attributes
    ----------
    signals_ : list of str
        The per-row signals ``predict_proba`` needs.
    features_ : list of str
        Names of the weights in ``coef_``.
    coef_ : ndarray
        The weights; ``intercept_`` the class biases.
    anchor_ : ndarray
        The weights shrunk toward (verbalized-only temperature scaling).
    penalty_ : float
        The chosen L2 strength (``inf``: the anchor itself).
    cv_nll_ : dict of str to float
        Cross-validated NLL of each penalty.
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
        "cv": [Interval("integer", 2, None)],
        "random_state": [Interval("integer", 0, None)],
    }

    def __init__(self, penalties=PENALTIES, cv=5, random_state=0, renormalize=False):
        self.penalties = penalties
        self.cv = cv
        self.random_state = random_state
        self.renormalize = renormalize

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
        # The same signals smoothed more: with the sharp logits above, a weight on these
        # bends the map (confident statements trusted less than a line would trust them).
        features.append(log_smoothed(P, SOFT_EPS))
        if TOKEN_PROBS in self.signals_:
            filled = np.where(missing[:, None], P, tokens)
            features.append(log_smoothed(filled, SOFT_EPS))
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
        self.features_.append(f"verbalized@{SOFT_EPS:g}")
        if TOKEN_PROBS in self.signals_:
            self.features_.append(f"token_probs@{SOFT_EPS:g}")
        tokens = self._token_rows(P, signals)
        self.anchor_, self.eps_, self.token_eps_ = self._anchor(P, tokens, y, "auto", "auto")
        F = np.stack(self._features(P, signals))
        self.cv_nll_ = self._cross_validate(F, P, tokens, y, penalties)
        self.penalty_ = min(penalties, key=lambda p: (self.cv_nll_[repr(p)], -p))
        self.coef_, self.intercept_ = _fit_weights(F, y, self.anchor_, self.penalty_)

    def _token_rows(self, P: np.ndarray, signals: dict[str, np.ndarray]) -> np.ndarray | None:
        """Token probabilities with the verbalized row where a row has none (or None)."""
        if TOKEN_PROBS not in self.signals_:
            return None
        tokens = signals[TOKEN_PROBS]
        return np.where(np.isnan(tokens).any(axis=1)[:, None], P, tokens)

    def _anchor(
        self, P: np.ndarray, tokens: np.ndarray | None, y: np.ndarray, eps: Any, token_eps: Any
    ) -> tuple[np.ndarray, float, float]:
        """The weights shrunk toward, and the smoothings: the better single-signal temperature.

        Temperature scaling of the verbalized rows, or (when given and better on
        these rows) of the token rows; the smoothing of each is fitted with it.
        """
        n_features = len(self.features_)
        verbal = TemperatureScaling(eps=eps, prior_scale=ANCHOR_PRIOR_SCALE).fit(P, y)
        anchor = np.zeros(n_features)
        if tokens is None:
            anchor[0] = 1.0 / verbal.temperature_
            return anchor, verbal.eps_, TOKEN_EPS
        token = TemperatureScaling(eps=token_eps, prior_scale=ANCHOR_PRIOR_SCALE).fit(tokens, y)
        # Both logits, one weight each, fitted together (two weights: any file supports them).
        both = np.stack([log_smoothed(P, verbal.eps_), log_smoothed(tokens, token.eps_)])
        start = np.array([0.5 / verbal.temperature_, 0.5 / token.temperature_])
        weights, _ = _fit_weights(both, y, start, ANCHOR_PENALTY, intercept=False)
        anchor[:2] = weights
        return anchor, verbal.eps_, token.eps_

    def _cross_validate(
        self,
        F: np.ndarray,
        P: np.ndarray,
        tokens: np.ndarray | None,
        y: np.ndarray,
        penalties: tuple[float, ...],
    ) -> dict[str, float]:
        n_folds = min(self.cv, max(2, int(np.bincount(y).max())))
        splitter = StratifiedKFold if np.bincount(y)[np.bincount(y) > 0].min() >= n_folds else KFold
        folds = splitter(n_folds, shuffle=True, random_state=self.random_state).split(y, y)
        losses = {repr(p): 0.0 for p in penalties}
        for train, test in folds:
            if len(np.unique(y[train])) < 2:
                continue
            rows = None if tokens is None else tokens[train]
            anchor, _, _ = self._anchor(P[train], rows, y[train], self.eps_, self.token_eps_)
            for p in penalties:
                coef, intercept = _fit_weights(F[:, train], y[train], anchor, p)
                logq = log_softmax(np.tensordot(coef, F[:, test], axes=1) + intercept, axis=1)
                losses[repr(p)] -= float(logq[np.arange(len(test)), y[test]].sum())
        return {p: loss / len(y) for p, loss in losses.items()}

    def _predict_proba(self, P):
        signals = check_signals(self.given_signals(), len(P), P.shape[1], fitting=False)
        for name in self.signals_:
            if name not in signals:
                how = "elicit with --logprobs" if name == TOKEN_PROBS else "elicit with --samples"
                raise InvalidInputError(
                    f"this calibrator was fitted with the signal {name!r}, which these "
                    f"predictions lack ({how}, or fit a calibrator without it)"
                )
        F = np.stack(self._features(P, signals))
        Z = np.tensordot(self.coef_, F, axes=1) + self.intercept_
        return np.exp(log_softmax(Z, axis=1))


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
