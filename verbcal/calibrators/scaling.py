"""Calibrators that are affine maps of the estimated logits ``z = log(p + eps)``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.optimize import minimize
from scipy.special import softmax
from threadpoolctl import threadpool_limits

from verbcal.calibrators.base import EPS, EPS_AUTO, EPS_GRID, BaseCalibrator
from verbcal.calibrators.inverse_temperature import (
    class_major,
    fit_inverse_temperature,
    fit_smoothed_inverse_temperature,
)
from verbcal.calibrators.logits import log_smoothed
from verbcal.errors import InvalidInputError
from verbcal.validation import Constraint, Interval, Options


def _softmax_rows(Z: np.ndarray) -> np.ndarray:
    """``scipy.special.softmax(Z, axis=1)``, the same numbers, computed in ``Z``'s own memory."""
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


class TemperatureScaling(BaseCalibrator):
    """Temperature scaling of estimated logits (Wang et al. 2024, invert softmax).

    ``q = softmax(log(p + eps) / T)``. The temperature ``T`` minimises the
    negative log-likelihood (NLL) of the labelled rows. Stated probabilities of
    exactly 0 and 1 are common in verbalized answers; ``eps`` decides how far
    from certain they are, so by default it is fitted too: each value of a small
    grid gets its own best ``T`` and the pair with the lowest NLL wins.

    Parameters
    ----------
    eps : "auto" or float, default "auto"
        Smoothing added before the log. "auto" picks it from
        ``(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)`` by NLL together with ``T``.
    prior_scale : float or None, default None
        None fits by NLL alone. A number ``s`` fits the posterior mode under
        normal priors ``log(1/T) ~ N(0, s^2)`` and (with ``eps="auto"``)
        ``log10(eps) ~ N(m, s^2)``, ``m`` the middle of the grid: together worth
        a few rows, they steady fits on a few dozen labelled rows (where the
        maximum likelihood can push a confident answer to near certainty) and
        fade with more. :class:`AutoCalibrator` uses ``s = 0.5``.
    renormalize : bool, default False
        Divide rows by their sums instead of refusing rows that do not sum to 1.

    Attributes
    ----------
    temperature_ : float
        Fitted temperature (> 1 softens, < 1 sharpens).
    eps_ : float
        Smoothing used.
    nll_ : float
        Mean NLL of the fitted rows after calibration.
    classes_ : ndarray of shape (K,)
        ``0..K-1``.

    Examples
    --------
    >>> P = np.array([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> cal = TemperatureScaling(eps=1e-2).fit(P, [0, 1, 0, 1])
    >>> bool(cal.temperature_ > 1)  # one confident answer was wrong: soften
    True
    >>> cal.predict_proba([[0.5, 0.5]]).tolist()
    [[0.5, 0.5]]
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "eps": EPS_AUTO,
        "prior_scale": [None, Interval("real", 0, None, closed="neither")],
    }

    def __init__(self, eps="auto", prior_scale=None, renormalize=False):
        self.eps = eps
        self.prior_scale = prior_scale
        self.renormalize = renormalize

    def _fit(self, P, y):
        grid = EPS_GRID if self.eps == "auto" else (float(self.eps),)
        scale = None if self.prior_scale is None else float(self.prior_scale)
        self.nll_, self.eps_, beta = fit_smoothed_inverse_temperature(P, y, grid, scale)
        self.temperature_ = 1.0 / beta

    def _predict_proba(self, P):
        Z = log_smoothed(P, self.eps_)
        Z /= self.temperature_
        return _softmax_rows(Z)


class NaiveTemperatureScaling(BaseCalibrator):
    """Temperature scaling of the probabilities themselves: ``q = softmax(p / T)``.

    The "re-softmax" baseline Wang et al. (2024) warn about: ``p`` is not a logit,
    so even the best ``T`` distorts the distribution (``[1, 0]`` can never go
    above ``e^(1/T) / (1 + e^(1/T))`` with a moderate ``T``). Kept for comparison.

    Parameters
    ----------
    renormalize : bool, default False
        Divide rows by their sums instead of refusing rows that do not sum to 1.

    Attributes
    ----------
    temperature_ : float
        Fitted temperature.

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> cal = NaiveTemperatureScaling().fit(P, [0, 0, 1, 1])
    >>> cal.predict_proba([[0.5, 0.5]]).tolist()
    [[0.5, 0.5]]
    """

    def __init__(self, renormalize=False):
        self.renormalize = renormalize

    def _fit(self, P, y):
        beta, self.nll_ = fit_inverse_temperature(P, y)
        self.temperature_ = 1.0 / beta

    def _predict_proba(self, P):
        return softmax(P / self.temperature_, axis=1)


def _divide_by_prior(P: np.ndarray, prior: np.ndarray, eps: float) -> np.ndarray:
    """``softmax(log(P + eps) - log(prior + eps))``: remove a class prior in logit space."""
    Z = log_smoothed(P, eps)
    Z -= log_smoothed(prior, eps)
    return _softmax_rows(Z)


def _project_to_simplex(V: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto the probability simplex (Duchi et al. 2008)."""
    n, k = V.shape
    U = -np.sort(-V, axis=1)
    cumulative = np.cumsum(U, axis=1) - 1.0
    ranks = np.arange(1, k + 1)
    support = (U - cumulative / ranks) > 0
    last = k - 1 - np.argmax(support[:, ::-1], axis=1)  # largest rank still in the support
    theta = cumulative[np.arange(n), last] / (last + 1)
    return np.maximum(V - theta[:, None], 0.0)


class ContextualCalibration(BaseCalibrator):
    """Contextual calibration (Zhao et al. 2021, "Calibrate Before Use").

    Fitted on the probability rows a model gives to *content-free* inputs
    ("N/A", "", "[MASK]"), which should be uniform but are not; their mean,
    renormalised, is ``p_cf``. No labels are needed: ``fit(P_content_free)``.

    How calibrated probabilities come out:

    - ``mode="diagonal"`` (``W = diag(p_cf)^-1, b = 0``): ``q ∝ (p + eps) / (p_cf + eps)``,
      i.e. in estimated-logit space ``softmax(log(p + eps) - log(p_cf + eps))``.
      The content-free rows map to uniform.
    - ``mode="bias"`` (``W = I, b = -p_cf``): the correction is additive in
      *probability* space, so it is applied there: ``p - p_cf + 1/K`` (the added
      ``1/K`` makes the row sum to 1 and does not change the argmax of Zhao et al.),
      then projected onto the probability simplex (the closest distribution in
      Euclidean distance; it only clips and shifts, so the argmax is kept).

    Both are cheap and label-free; to also fix the confidence *scale*, chain a
    temperature fitted on labelled rows after it:
    ``CalibratorChain([FrozenEstimator(ContextualCalibration().fit(P_cf)),
    TemperatureScaling(eps=0)])`` gives ``softmax((log(p + eps) - log(p_cf + eps)) / T)``.

    Parameters
    ----------
    mode : {"diagonal", "bias"}, default "diagonal"
    eps : float, default 1e-3
        Smoothing of ``p`` and ``p_cf`` before the log (diagonal mode), so a
        content-free probability of 0 stays finite.
    renormalize : bool, default False
        Divide rows by their sums instead of refusing rows that do not sum to 1.

    Attributes
    ----------
    content_free_proba_ : ndarray of shape (K,)
        ``p_cf``.
    eps_ : float

    Examples
    --------
    >>> cal = ContextualCalibration().fit([[0.9, 0.1]])
    >>> cal.predict_proba([[0.9, 0.1], [0.99, 0.01]]).round(3).tolist()
    [[0.5, 0.5], [0.91, 0.09]]
    >>> ContextualCalibration(mode="bias").fit([[0.9, 0.1]]).predict_proba([[0.9, 0.1]]).tolist()
    [[0.5, 0.5]]
    """

    _needs_labels = False

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "mode": [Options(("diagonal", "bias"))],
        "eps": EPS,
    }

    def __init__(self, mode="diagonal", eps=1e-3, renormalize=False):
        self.mode = mode
        self.eps = eps
        self.renormalize = renormalize

    def _fit(self, P, y):
        mean = P.mean(axis=0)
        self.content_free_proba_ = mean / mean.sum()
        self.eps_ = float(self.eps)

    def _predict_proba(self, P):
        if self.mode == "diagonal":
            return _divide_by_prior(P, self.content_free_proba_, self.eps_)
        k = P.shape[1]
        return _project_to_simplex(P - self.content_free_proba_ + 1.0 / k)


class BatchCalibration(BaseCalibrator):
    """Batch calibration (Zhou et al. 2023): remove the batch's class prior in logit space.

    The prior ``p_batch`` is the mean probability row of an *unlabelled* batch
    (typically the rows to be calibrated themselves); then
    ``q = softmax(log(p + eps) - log(p_batch + eps))``. This is the diagonal
    contextual correction with the batch mean in place of content-free probes.

    Parameters
    ----------
    eps : float, default 1e-3
        Smoothing before the log.
    renormalize : bool, default False
        Divide rows by their sums instead of refusing rows that do not sum to 1.

    Attributes
    ----------
    prior_ : ndarray of shape (K,)
        The batch's mean row.

    Examples
    --------
    >>> P = [[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]]   # the model leans to class 0
    >>> cal = BatchCalibration().fit(P)
    >>> cal.prior_.round(2).tolist()
    [0.7, 0.3]
    >>> cal.predict([[0.8, 0.2], [0.6, 0.4]]).tolist()
    [0, 1]
    """

    _needs_labels = False

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "eps": EPS,
    }

    def __init__(self, eps=1e-3, renormalize=False):
        self.eps = eps
        self.renormalize = renormalize

    def _fit(self, P, y):
        self.prior_ = P.mean(axis=0)
        self.eps_ = float(self.eps)

    def _predict_proba(self, P):
        return _divide_by_prior(P, self.prior_, self.eps_)


def _fit_affine(Z, y, *, diagonal: bool, reg_off_diagonal: float, reg_intercept: float):
    """Minimise NLL of ``softmax(Z @ W.T + b)`` plus ODIR penalties (Kull et al. 2019).

    Penalties: ``reg_off_diagonal`` times the mean squared off-diagonal weight
    and ``reg_intercept`` times the mean squared intercept. Returns ``(W, b)``.
    """
    n, k = Z.shape
    off = ~np.eye(k, dtype=bool)
    # Class-major logits: the per-item sums over classes then read contiguous memory
    # (numpy's reductions along a short axis 1 are several times slower).
    Zt = class_major(Z)
    items = np.arange(n)

    def unpack(theta):
        W = np.diag(theta[:k]) if diagonal else theta[: k * k].reshape(k, k)
        return W, theta[-k:]

    def loss_and_grad(theta):
        W, b = unpack(theta)
        S = (theta[:k, None] * Zt if diagonal else W @ Zt) + b[:, None]  # (K, n) scores
        S -= S.max(axis=0)
        gold = S[y, items]
        np.exp(S, out=S)
        total = S.sum(axis=0)
        loss = (np.log(total).sum() - gold.sum()) / n + reg_intercept * np.mean(b**2)
        S /= total  # the softmax, then its gradient (Q - Y) / n, transposed
        S[y, items] -= 1.0
        S /= n
        grad_W = S @ Z
        grad_b = S.sum(axis=1) + 2 * reg_intercept * b / k
        if diagonal:
            return loss, np.concatenate([np.diag(grad_W), grad_b])
        if k > 1:
            loss += reg_off_diagonal * np.sum(W[off] ** 2) / (k * (k - 1))
            grad_W = grad_W + 2 * reg_off_diagonal * np.where(off, W, 0.0) / (k * (k - 1))
        return loss, np.concatenate([grad_W.ravel(), grad_b])

    start = np.concatenate([np.ones(k) if diagonal else np.eye(k).ravel(), np.zeros(k)])
    # L-BFGS-B calls LAPACK on tiny matrices; threaded BLAS only adds contention
    # there (40x slower on a busy 2-core machine), so one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(
            loss_and_grad, start, jac=True, method="L-BFGS-B", options={"maxiter": 100}
        )
    return unpack(result.x)


#: What a regularisation strength may be.
REGULARISATION: list[Constraint] = [Interval("real", 0, None)]


class VectorScaling(BaseCalibrator):
    """Vector scaling: ``q = softmax(w * log(p + eps) + b)`` with one weight and bias per class.

    Fitted by L2-penalised NLL (the penalty on ``b`` keeps small calibration sets
    from learning a spurious class prior).

    Parameters
    ----------
    reg_intercept : float, default 1e-2
        Weight of the mean squared intercept in the loss.
    eps : float, default 1e-3
    renormalize : bool, default False

    Attributes
    ----------
    coef_ : ndarray of shape (K,)
    intercept_ : ndarray of shape (K,)

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> cal = VectorScaling().fit(P, [0, 0, 1, 1])
    >>> cal.predict(P).tolist()
    [0, 0, 1, 1]
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "reg_intercept": REGULARISATION,
        "eps": EPS,
    }

    def __init__(self, reg_intercept=1e-2, eps=1e-3, renormalize=False):
        self.reg_intercept = reg_intercept
        self.eps = eps
        self.renormalize = renormalize

    def _fit(self, P, y):
        self.eps_ = float(self.eps)
        W, self.intercept_ = _fit_affine(
            log_smoothed(P, self.eps_),
            y,
            diagonal=True,
            reg_off_diagonal=0.0,
            reg_intercept=self.reg_intercept,
        )
        self.coef_ = np.diag(W).copy()

    def _predict_proba(self, P):
        Z = log_smoothed(P, self.eps_)
        Z *= self.coef_
        Z += self.intercept_
        return _softmax_rows(Z)


class MatrixScaling(BaseCalibrator):
    """Matrix scaling of estimated logits: Dirichlet calibration (Kull et al. 2019).

    ``q = softmax(W log(p + eps) + b)`` with a full ``W``, fitted by NLL with
    ODIR regularisation: penalties on the off-diagonal weights and on the
    intercept, so that with few rows it falls back towards vector scaling.

    Parameters
    ----------
    reg_off_diagonal : float, default 1e-2
        Weight of the mean squared off-diagonal entry of ``W``.
    reg_intercept : float, default 1e-2
        Weight of the mean squared intercept.
    eps : float, default 1e-3
    renormalize : bool, default False

    Attributes
    ----------
    coef_ : ndarray of shape (K, K)
        ``W``.
    intercept_ : ndarray of shape (K,)

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> MatrixScaling().fit(P, [0, 0, 1, 1]).coef_.shape
    (2, 2)
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "reg_off_diagonal": REGULARISATION,
        "reg_intercept": REGULARISATION,
        "eps": EPS,
    }

    def __init__(self, reg_off_diagonal=1e-2, reg_intercept=1e-2, eps=1e-3, renormalize=False):
        self.reg_off_diagonal = reg_off_diagonal
        self.reg_intercept = reg_intercept
        self.eps = eps
        self.renormalize = renormalize

    def _fit(self, P, y):
        self.eps_ = float(self.eps)
        self.coef_, self.intercept_ = _fit_affine(
            log_smoothed(P, self.eps_),
            y,
            diagonal=False,
            reg_off_diagonal=self.reg_off_diagonal,
            reg_intercept=self.reg_intercept,
        )

    def _predict_proba(self, P):
        Z = log_smoothed(P, self.eps_) @ self.coef_.T
        Z += self.intercept_
        return _softmax_rows(Z)


class PlattScaling(BaseCalibrator):
    """Platt scaling for binary problems: a logistic fit on the estimated log-odds.

    ``q1 = sigmoid(a * s + c)`` with ``s = log(p1 + eps) - log(p0 + eps)``, fitted
    by NLL against Platt's (1999) smoothed targets ``(N+ + 1) / (N+ + 2)`` and
    ``1 / (N- + 2)``, as scikit-learn's ``CalibratedClassifierCV(method="sigmoid")``.

    Parameters
    ----------
    eps : float, default 1e-3
    renormalize : bool, default False

    Attributes
    ----------
    a_, b_ : float
        Slope and intercept (``q1 = sigmoid(a_ * s + b_)``).

    Examples
    --------
    >>> P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    >>> PlattScaling().fit(P, [0, 0, 1, 1]).predict(P).tolist()
    [0, 0, 1, 1]
    """

    _parameter_constraints: ClassVar[dict[str, list[Constraint]]] = {
        **BaseCalibrator._parameter_constraints,
        "eps": EPS,
    }

    def __init__(self, eps=1e-3, renormalize=False):
        self.eps = eps
        self.renormalize = renormalize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _log_odds(self, P):
        Z = log_smoothed(P, self.eps_)
        return Z[:, 1] - Z[:, 0]

    def _check_n_classes(self, n_classes):
        if n_classes != 2:
            raise InvalidInputError(
                "Only binary classification is supported. PlattScaling needs P with 2 columns, "
                f"got {n_classes}; use TemperatureScaling or VectorScaling for more classes"
            )

    def _fit(self, P, y):
        self.eps_ = float(self.eps)
        s = self._log_odds(P)
        n_pos = np.sum(y == 1)
        target = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (len(y) - n_pos + 2.0))

        def loss_and_grad(theta):
            t = theta[0] * s + theta[1]
            # -[target log sigmoid(t) + (1 - target) log sigmoid(-t)], written stably
            loss = np.logaddexp(0.0, t) - target * t
            residual = 1.0 / (1.0 + np.exp(-t)) - target
            return loss.sum(), np.array([residual @ s, residual.sum()])

        result = minimize(loss_and_grad, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        self.a_, self.b_ = (float(v) for v in result.x)

    def _predict_proba(self, P):
        t = self.a_ * self._log_odds(P) + self.b_
        q1 = 1.0 / (1.0 + np.exp(-t))
        return np.column_stack([1.0 - q1, q1])
