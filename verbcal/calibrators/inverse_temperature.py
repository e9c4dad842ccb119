"""Fitting ``beta = 1/T`` of ``softmax(beta * z)`` by Newton's method, a few passes over the data.

The negative log-likelihood (NLL) of the gold classes,
``F(beta) = mean_i[log sum_k exp(beta z_ik) - beta z_iy]``, is convex in
``beta``; its derivatives are ``F' = mean_i(E_q[z_i] - z_iy)`` and
``F'' = mean_i Var_q[z_i]`` under the scaled softmax ``q``. One pass over the
logits gives the value and both, and Newton's method converges quadratically.

Speed comes from four choices, each checked in ``bench/speed.py``: the logits are
kept class-major (``(K, n)``: a sum over the classes of an item then reads
contiguous memory); a fit on a systematic subsample gives the first guess; the
search over smoothings runs in float32 (half the memory traffic); and the
chosen smoothing is finished by float64 Newton steps, so the fitted values
are float64-exact.
"""

from __future__ import annotations

import numpy as np

from verbcal.calibrators.logits import check_log_defined

__all__ = [
    "BETA_BOUNDS",
    "class_major",
    "fit_inverse_temperature",
    "fit_smoothed_inverse_temperature",
    "inverse_temperature_by_newton",
]

#: Bounds of a fitted inverse temperature (1/T): wide enough for any real data set.
BETA_BOUNDS = (1e-3, 1e3)

#: Newton stops once a step moves ``beta`` by less than this fraction of it (float64);
#: the step is still taken, and the next would have moved it by about its square.
NEWTON_STEP_TOLERANCE = 1e-5

#: The same for float32 logits, whose rounding makes the gradient noisy near 1e-7:
#: they only rank the smoothings and give the float64 steps their start.
FLOAT32_STEP_TOLERANCE = 1e-3

#: A fit on at most about this many items (every ``m``-th, ``m >= 8``) gives the first
#: guess, so that the full data are read two or three times per fit instead of six.
WARM_START_ROWS = 8192

#: ... provided the subsample would hold at least this many items.
MIN_SUBSAMPLE_ROWS = 512

#: Items per block when the input is copied class-major (a block fits in the CPU cache).
TRANSPOSE_BLOCK = 8192

#: Items per chunk of a pass over the logits: K x 4096 values stay in the CPU cache
#: while they are exponentiated and summed (one read from memory per pass).
CHUNK_ITEMS = 4096


def class_major(P: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``P.T`` as a C-contiguous ``(K, n)`` array of ``dtype``, copied block by block."""
    n, k = P.shape
    out = np.empty((k, n), dtype=dtype)
    for start in range(0, n, TRANSPOSE_BLOCK):
        stop = min(start + TRANSPOSE_BLOCK, n)
        out[:, start:stop] = P[start:stop].T
    return out


def fit_inverse_temperature(Z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The ``beta = 1/T`` minimising the NLL of ``softmax(beta * Z)``, and that NLL.

    Parameters
    ----------
    Z : ndarray of shape (n, K)
        Finite logits (each row is defined up to a constant).
    y : ndarray of shape (n,)
        Gold class indices.

    Returns
    -------
    beta : float
        Within ``BETA_BOUNDS``.
    nll : float
        Mean NLL at ``beta``.

    Examples
    --------
    >>> Z = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> beta, nll = fit_inverse_temperature(Z, np.array([0, 0, 0, 0]))
    >>> round(beta, 6), round(float(np.exp(beta) / (1 + np.exp(beta))), 6)  # 3 in 4 right
    (1.098612, 0.75)
    """
    Zt = class_major(np.asarray(Z, dtype=np.float64))
    Zt -= Zt.max(axis=0)
    gold = Zt[y, np.arange(len(y))]
    return inverse_temperature_by_newton(Zt, gold)


def fit_smoothed_inverse_temperature(
    P: np.ndarray, y: np.ndarray, eps_grid: tuple[float, ...], prior_scale: float | None = None
) -> tuple[float, float, float]:
    """The smoothing and inverse temperature of ``softmax(beta * log(P + eps))`` with least NLL.

    Every ``eps`` of the grid gets its best ``beta`` (float32 logits); the pair
    with the lowest NLL is then refined on float64 logits.

    With ``prior_scale`` ``s``, the fit is the posterior mode under normal priors
    ``log(beta) ~ N(0, s^2)`` (the stated values are taken as they are unless the
    labels say otherwise) and ``log10(eps) ~ N(m, s^2)``, ``m`` the middle of the
    grid on the log scale: the penalised NLL is
    ``NLL + (log(beta)^2 + (log10(eps) - m)^2) / (2 s^2 n)``. The priors weigh as
    much as a few rows, so they decide with 25 labelled rows and vanish with thousands.

    Parameters
    ----------
    P : ndarray of shape (n, K)
        Probability rows (checked).
    y : ndarray of shape (n,)
        Gold class indices.
    eps_grid : tuple of float
        Smoothings to compare (each >= 0; 0 only when ``P`` has no exact 0).
    prior_scale : float, optional
        ``s`` above; None fits by NLL alone (maximum likelihood).

    Returns
    -------
    nll, eps, beta : float
        The (unpenalised) NLL at the fitted pair, the smoothing and the inverse temperature.
    """
    for eps in eps_grid:
        check_log_defined(P, eps)
    n, k = P.shape
    # Memory: one (K, n) array of logits at a time (float32 for the search, then
    # float64), read from P chunk by chunk, and four length-n vectors besides
    # Newton's; each smoothing's vectors overwrite the previous one's.
    top = P.max(axis=1)
    gold_p = P[np.arange(n), y]
    log_top = np.empty(n)  # log(max(P) + eps) per item, for the smoothing in use
    gold = np.empty(n)  # the gold class's shifted logit, for the same smoothing

    weight = 0.0 if prior_scale is None else 1.0 / (prior_scale**2 * n)
    middle = float(np.mean(np.log10(np.maximum(eps_grid, 1e-12))))

    def eps_penalty(eps: float) -> float:
        if len(eps_grid) == 1:
            return 0.0
        return weight * (np.log10(max(eps, 1e-12)) - middle) ** 2 / 2

    if len(eps_grid) == 1:
        eps, beta = eps_grid[0], None
    else:
        # The search runs on float32 logits; each smoothing starts from the previous
        # one's fit (the best beta grows smoothly with eps).
        Zt = np.empty((k, n), dtype=np.float32)
        fits = []
        beta, curvature = None, np.nan
        for eps in eps_grid:
            gold_logits = _smoothing(eps, top, gold_p, log_top, gold)
            beta, objective, curvature = _newton(
                _shifted_logits(P, eps, log_top, Zt),
                gold_logits,
                beta,
                curvature,
                prior_weight=weight,
            )
            fits.append((objective + eps_penalty(eps), eps, beta))
        del Zt
        _, eps, beta = min(fits)
    gold_logits = _smoothing(eps, top, gold_p, log_top, gold)
    del top, gold_p
    Zt = _shifted_logits(P, eps, log_top, np.empty((k, n)))
    del log_top
    beta, objective, _ = _newton(Zt, gold_logits, beta, subsample=False, prior_weight=weight)
    return float(objective - weight * np.log(beta) ** 2 / 2), float(eps), float(beta)


def _smoothing(
    eps: float, top: np.ndarray, gold_p: np.ndarray, log_top: np.ndarray, gold: np.ndarray
) -> np.ndarray:
    """Fill ``log_top`` with ``log(top + eps)`` and ``gold`` with the gold class's shifted
    logit ``log(gold_p + eps) - log(top + eps)``; returns ``gold``."""
    np.log(np.add(top, eps, out=log_top), out=log_top)
    with np.errstate(divide="ignore"):
        np.log(np.add(gold_p, eps, out=gold), out=gold)
    return np.subtract(gold, log_top, out=gold)


def _shifted_logits(P: np.ndarray, eps: float, log_top: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``log(P + eps) - log(max(P) + eps)`` class-major in ``out`` (each item's largest is 0).

    ``log_top`` is ``log(max(P) + eps)`` (:func:`_smoothing`). Chunks of items stay
    in cache; ``P`` is rounded to ``out``'s dtype before ``eps`` is added, as
    ``P.astype(out.dtype)`` would.
    """
    for start in range(0, P.shape[0], CHUNK_ITEMS):
        part = slice(start, start + CHUNK_ITEMS)
        chunk = out[:, part]
        chunk[...] = P[part].T
        np.add(chunk, eps, out=chunk)
        with np.errstate(divide="ignore"):
            np.log(chunk, out=chunk)
        chunk -= log_top[part].astype(out.dtype)
    return out


def inverse_temperature_by_newton(
    Zt: np.ndarray, gold: np.ndarray, start: float | None = None
) -> tuple[float, float]:
    """Minimise the NLL of ``softmax(beta * z_i)`` over ``beta`` by safeguarded Newton steps.

    float64 logits get exact Newton steps (the curvature from the same pass).
    float32 logits, which only need to rank smoothings and give a start, save
    the curvature's share of each pass when a first value of it is known (from
    the subsample fit); later ones come from the last two gradients (secant steps).
    A step that would leave the bracket of known gradient signs is replaced
    by bisection of ``log(beta)``; a minimum beyond ``BETA_BOUNDS`` ends at
    the bound. For many items, a fit on a systematic subsample gives the start.

    Parameters
    ----------
    Zt : ndarray of shape (K, n), float64 or float32
        Logits, class-major, shifted so that each item's largest logit is 0
        (then ``exp(beta * z) <= 1`` never overflows and each item's sum is >= 1).
    gold : ndarray of shape (n,)
        The gold class's logit of each item (shifted the same way).
    start : float, optional
        First guess for ``beta``; without one, a fit on a subsample gives it.

    Returns
    -------
    beta, nll : float
    """
    beta, value, _ = _newton(Zt, gold, start, subsample=start is None)
    return float(beta), float(value)


def _newton(
    Zt: np.ndarray,
    gold: np.ndarray,
    start: float | None,
    curvature: float = np.nan,
    *,
    subsample: bool = True,
    prior_weight: float = 0.0,
) -> tuple[float, float, float]:
    """:func:`inverse_temperature_by_newton`, with a first guess of the curvature ``F''``.

    With ``subsample`` and enough items, a fit on every ``m``-th item (``m >= 8``,
    at most about ``WARM_START_ROWS`` items) refines ``start`` and ``curvature``
    first. ``prior_weight`` adds ``prior_weight * log(beta)**2 / 2`` to the mean
    NLL (a normal prior on ``log(beta)``, divided by the number of items).
    Returns ``(beta, objective, curvature)``: the objective is the penalised mean
    NLL and the curvature the last one used.
    """
    n = Zt.shape[1]
    if subsample and n >= 8 * MIN_SUBSAMPLE_ROWS:
        every = max(8, n // WARM_START_ROWS)
        start, _, curvature = _newton(
            np.ascontiguousarray(Zt[:, ::every]),
            gold[::every],
            start,
            curvature,
            subsample=False,
            prior_weight=prior_weight,
        )
    exact = Zt.dtype == np.float64 or np.isnan(curvature)
    tolerance = NEWTON_STEP_TOLERANCE if Zt.dtype == np.float64 else FLOAT32_STEP_TOLERANCE
    mean_gold = float(np.mean(gold, dtype=np.float64))
    k = Zt.shape[0]
    block = min(n, CHUNK_ITEMS)
    work = np.empty((k, block), dtype=Zt.dtype)  # cache-sized scratch, reused per chunk
    square = np.empty((k, block), dtype=Zt.dtype) if exact else None
    s0, s1 = np.empty(n), np.empty(n)
    s2 = np.empty(n) if exact else None

    def evaluate(beta: float) -> tuple[float, float, float]:
        # Chunk by chunk, so that the exponentials are summed while still in cache:
        # the logits are read from memory once per evaluation.
        scale = Zt.dtype.type(beta)
        for start in range(0, n, block):
            stop = min(start + block, n)
            Z, w = Zt[:, start:stop], work[:, : stop - start]
            np.multiply(Z, scale, out=w)
            np.exp(w, out=w)
            s0[start:stop] = w.sum(axis=0)  # K terms each: float32 sums suffice
            s1[start:stop] = np.einsum("kn,kn->n", w, Z)
            if square is not None and s2 is not None:
                z2 = np.multiply(Z, Z, out=square[:, : stop - start])
                s2[start:stop] = np.einsum("kn,kn->n", w, z2)
        # The per-item sums become the moments in place (no length-n temporaries).
        mean_z = np.divide(s1, s0, out=s1)  # E_q[z] per item
        if s2 is not None:
            np.divide(s2, s0, out=s2)  # E_q[z^2]
        log_sum = np.log(s0, out=s0)
        u = np.log(beta)
        value = float(log_sum.mean()) - beta * mean_gold + prior_weight * u * u / 2
        gradient = float(mean_z.mean()) - mean_gold + prior_weight * u / beta
        if s2 is None:
            return value, gradient, np.nan
        variance = np.subtract(s2, np.multiply(mean_z, mean_z, out=s0), out=s2)
        return value, gradient, float(variance.mean()) + prior_weight * (1.0 - u) / beta**2

    low, high = BETA_BOUNDS
    low_known = high_known = False  # has the gradient's sign been seen at low / high?
    beta = float(np.clip(1.0 if start is None else start, low, high))
    value = np.nan
    previous: tuple[float, float] | None = None
    for _ in range(200):
        value, gradient, exact_curvature = evaluate(beta)
        if exact:
            curvature = exact_curvature
        elif previous is not None and previous[0] != beta:
            secant = (gradient - previous[1]) / (beta - previous[0])
            curvature = secant if secant > 0 else curvature
        previous = (beta, gradient)
        if gradient == 0.0:
            break
        if gradient < 0:
            low, low_known = beta, True
        else:
            high, high_known = beta, True
        if low >= BETA_BOUNDS[1] or high <= BETA_BOUNDS[0]:
            break  # the minimum lies beyond the bounds
        step = -gradient / curvature if curvature > 0 else np.copysign(np.inf, -gradient)
        newton = beta + step
        if low < newton < high:
            if abs(step) <= tolerance * beta:
                # F(beta + step) from the quadratic model; exact to O(step^3)
                return newton, value + 0.5 * gradient * step, curvature
            beta = newton
        elif newton >= high and not high_known:
            beta = high  # try the upper bound itself
        elif newton <= low and not low_known:
            beta = low
        elif high - low <= tolerance * beta:
            break
        else:
            beta = float(np.sqrt(low * high))
    return beta, value, curvature
