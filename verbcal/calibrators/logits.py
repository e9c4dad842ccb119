"""Between probabilities and estimated logits.

A verbalized distribution has no logits behind it, so verbcal estimates some:
``z = log(p + eps)``. Scaling those (temperature, contextual, vector scaling)
and applying softmax then gives back a distribution without the distortion of
"re-softmaxing" the probabilities themselves (Wang et al. 2024).
"""

from __future__ import annotations

import numpy as np

from verbcal.errors import InvalidInputError
from verbcal.validation import Interval, check_param, check_probabilities

__all__ = ["DEFAULT_EPS", "check_log_defined", "invert_softmax", "log_smoothed", "softmax"]

#: Smoothing added to every probability before the log, so that a stated 0.0 stays finite.
DEFAULT_EPS = 1e-3


def check_log_defined(P: np.ndarray, eps: float) -> None:
    """Raise unless every ``log(P + eps)`` is finite (an exact 0 with ``eps`` = 0 is not)."""
    if eps == 0 and (P == 0).any():
        row = int(np.flatnonzero((P == 0).any(axis=-1))[0]) if P.ndim == 2 else 0
        raise InvalidInputError(
            f"P row {row} has a probability of exactly 0 and eps is 0, so its logit would be "
            "-inf; use eps > 0"
        )


def log_smoothed(P: np.ndarray, eps: float) -> np.ndarray:
    """Estimated logits ``log(P + eps)`` of checked rows (defined up to a constant per row)."""
    check_log_defined(P, eps)
    Z = np.add(P, eps)
    with np.errstate(divide="ignore"):
        return np.log(Z, out=Z)  # in place: one array of P's size, not two


def softmax(Z, axis: int = -1) -> np.ndarray:
    """Softmax of ``Z`` along ``axis``, stable for large and ``-inf`` logits.

    Parameters
    ----------
    Z : array-like
        Logits. ``-inf`` entries get probability 0; a row must have at least
        one finite entry.
    axis : int
        Axis holding the classes.

    Returns
    -------
    numpy.ndarray
        Probabilities of the same shape, summing to 1 along ``axis``.

    Examples
    --------
    >>> softmax([[0.0, 0.0], [0.0, np.log(3.0)]]).round(6).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    """
    z = np.asarray(Z, dtype=np.float64)
    if np.isnan(z).any() or np.isposinf(z).any():
        raise InvalidInputError("softmax input contains NaN or +inf")
    top = z.max(axis=axis, keepdims=True)
    if np.isneginf(top).any():
        raise InvalidInputError("softmax input has a row whose logits are all -inf")
    e = np.exp(z - top)
    return e / e.sum(axis=axis, keepdims=True)


def invert_softmax(P, eps: float = DEFAULT_EPS, *, renormalize: bool = False) -> np.ndarray:
    """Estimated logits of probability rows: ``log((P + eps) / (1 + K * eps))``.

    The smoothing keeps stated zeros finite. It is normalised so that
    ``softmax(invert_softmax(P, eps)) == (P + eps) / (1 + K * eps)`` exactly,
    which is ``P`` when ``eps == 0`` and within ``K * eps`` of it otherwise.
    Logits are defined up to a constant per row; this choice makes them
    log-probabilities.

    Parameters
    ----------
    P : array-like of shape (n, K) or (n,)
        Probability rows (a 1-D array is the positive-class probability of a
        binary problem).
    eps : float, default 1e-3
        Smoothing added to every probability. ``0`` is allowed only when no
        entry is 0.
    renormalize : bool, default False
        Divide rows by their sums first instead of requiring them to sum to 1.

    Returns
    -------
    numpy.ndarray of shape (n, K)

    Examples
    --------
    >>> Z = invert_softmax([[0.9, 0.1, 0.0]], eps=0.01)
    >>> softmax(Z).round(4).tolist()
    [[0.8835, 0.1068, 0.0097]]
    """
    check_param("eps", eps, [Interval("real", 0, None)])
    arr = check_probabilities(P, renormalize=renormalize)
    return log_smoothed(arr, eps) - np.log1p(arr.shape[1] * eps)
