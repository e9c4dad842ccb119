"""Input checks done once, at the public boundary, with messages that say what is wrong.

Every public function that takes probabilities or labels calls these; nothing
below them re-checks.

Parameters (numbers of bins, smoothings, levels, modes) are checked
declaratively, as scikit-learn does with ``_parameter_constraints``: each
parameter has a list of constraints (:class:`Interval`, :class:`Options`,
``None``, ``bool``, ``callable``) and :func:`check_params` raises one
:class:`~verbcal.errors.ConfigurationError` naming the parameter, what it may
be and what it got. Integer intervals refuse ``True`` and ``False``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

from verbcal.errors import ConfigurationError, InvalidInputError

__all__ = [
    "SUM_TOLERANCE",
    "Constraint",
    "Interval",
    "Options",
    "check_labels",
    "check_param",
    "check_params",
    "check_probabilities",
]


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind between two bounds.

    Parameters
    ----------
    kind : {"integer", "real"}
        ``"integer"`` accepts Python and numpy integers but never a bool;
        ``"real"`` accepts any real number but a bool, and never NaN or infinity.
    low, high : float or None
        Bounds; None leaves that side open.
    closed : {"both", "left", "right", "neither"}, default "both"
        Which bounds belong to the interval.

    Examples
    --------
    >>> Interval("real", 0, 0.5, closed="left").accepts(0.5), str(Interval("integer", 1, None))
    (False, 'an integer >= 1')
    """

    kind: Literal["integer", "real"]
    low: float | None
    high: float | None
    closed: Literal["both", "left", "right", "neither"] = "both"

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is a number of this kind inside the bounds."""
        if isinstance(value, (bool, np.bool_)):
            return False
        kind = numbers.Integral if self.kind == "integer" else numbers.Real
        if not isinstance(value, kind):
            return False
        number = float(value)
        if not math.isfinite(number):
            return False
        if self.low is not None:
            below = number < self.low if self.closed in ("both", "left") else number <= self.low
            if below:
                return False
        if self.high is not None:
            above = number > self.high if self.closed in ("both", "right") else number >= self.high
            if above:
                return False
        return True

    def __str__(self) -> str:
        noun = "an integer" if self.kind == "integer" else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"
        if self.kind == "real":
            noun = "a finite number"
        if self.low is not None:
            return f"{noun} {'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        return noun


@dataclass(frozen=True)
class Options:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def accepts(self, value: object) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        quoted = [f'"{v}"' for v in self.values]
        if len(quoted) <= 2:
            return " or ".join(quoted)
        return "one of " + ", ".join(quoted)


#: A constraint: an Interval, Options, ``None`` (the value None), ``bool`` (True or
#: False) or ``callable`` (anything callable).
Constraint: TypeAlias = Interval | Options | None | type[bool] | Callable[[object], bool]


def _accepts(constraint: Constraint, value: object) -> bool:
    if constraint is None:
        return value is None
    if constraint is bool:
        return isinstance(value, (bool, np.bool_))
    if constraint is callable:
        return callable(value)
    if isinstance(constraint, (Interval, Options)):
        return constraint.accepts(value)
    raise TypeError(f"unknown parameter constraint {constraint!r}")


def _describe(constraint: Constraint) -> str:
    if constraint is None:
        return "None"
    if constraint is bool:
        return "True or False"
    if constraint is callable:
        return "callable"
    return str(constraint)


def check_param(name: str, value: object, constraints: Sequence[Constraint]) -> None:
    """Raise a ConfigurationError unless ``value`` satisfies one of ``constraints``.

    Examples
    --------
    >>> check_param("eps", "auto", [Options(("auto",)), Interval("real", 0, None)])
    >>> check_param("n_bins", True, [Interval("integer", 1, None)])
    Traceback (most recent call last):
    ...
    verbcal.errors.ConfigurationError: n_bins must be an integer >= 1, got True
    """
    if any(_accepts(c, value) for c in constraints):
        return
    allowed = " or ".join(_describe(c) for c in constraints)
    raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")


def check_params(
    values: Mapping[str, object], constraints: Mapping[str, Sequence[Constraint]]
) -> None:
    """:func:`check_param` for every name of ``constraints`` (in their order)."""
    for name, allowed in constraints.items():
        check_param(name, values[name], allowed)


#: Rows of a probability array may miss summing to 1 by this much before they are refused.
SUM_TOLERANCE = 1e-6


def _first_bad_row(mask: np.ndarray | np.generic) -> int:
    return int(np.flatnonzero(mask)[0])


def check_probabilities(
    P,
    *,
    name: str = "P",
    renormalize: bool = False,
    tolerance: float = SUM_TOLERANCE,
    min_classes: int = 2,
) -> np.ndarray:
    """Return ``P`` as a float64 (n, K) array of probability rows, or raise.

    A 1-D array is read as the probability of the *positive* class (column 1)
    of a binary problem and becomes the rows ``[1 - p, p]``.

    Parameters
    ----------
    P : array-like of shape (n,) or (n, K)
        Probabilities, one row per item.
    name : str
        What to call the array in error messages.
    renormalize : bool
        If True, divide each row by its sum (rows must still be non-negative
        with a positive sum). If False, every row must sum to 1 within
        ``tolerance``.
    tolerance : float
        Allowed absolute deviation of a row sum from 1 when not renormalising.
    min_classes : int
        Fewest columns accepted.

    Returns
    -------
    numpy.ndarray of shape (n, K), dtype float64
    """
    try:
        arr = np.asarray(P, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be an array of numbers: {exc}") from None
    if arr.ndim == 1:
        arr = np.column_stack([1.0 - arr, arr])
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must have shape (n_rows, n_classes) or (n_rows,), got shape {arr.shape}"
        )
    n, k = arr.shape
    if n == 0:
        raise InvalidInputError(f"{name} has no rows")
    if k < min_classes:
        raise InvalidInputError(f"{name} must have at least {min_classes} columns, got {k}")
    # Two whole-array passes (row sums, minimum) prove most arrays valid; a NaN or an
    # infinity makes its row's sum non-finite, a negative value the minimum negative.
    # Only then are rows looked at one by one, to name the first bad one.
    sums = np.einsum("nk->n", arr)
    if not (np.isfinite(sums).all() and arr.min() >= 0):
        finite = np.isfinite(arr).all(axis=1)
        if not finite.all():
            row = _first_bad_row(~finite)
            raise InvalidInputError(
                f"{name} row {row} contains NaN or infinity: {arr[row].tolist()}"
            )
        negative = (arr < 0).any(axis=1)
        if negative.any():
            row = _first_bad_row(negative)
            raise InvalidInputError(f"{name} row {row} has a negative value: {arr[row].tolist()}")
    if renormalize:
        empty = sums <= 0
        if empty.any():
            raise InvalidInputError(
                f"{name} row {_first_bad_row(empty)} sums to 0 and cannot be renormalised"
            )
        return arr / sums[:, None]
    off = np.abs(sums - 1.0) > tolerance
    if off.any():
        row = _first_bad_row(off)
        raise InvalidInputError(
            f"{name} row {row} sums to {sums[row]:.6g}, not 1 (tolerance {tolerance:g}); "
            "pass renormalize=True to divide rows by their sums"
        )
    return arr


def check_labels(y, n_rows: int, n_classes: int, *, name: str = "y") -> np.ndarray:
    """Return ``y`` as an int64 vector of class indices in ``[0, n_classes)``, or raise.

    Parameters
    ----------
    y : array-like of shape (n_rows,)
        Integer class indices (column numbers of the probability array).
        Floats are accepted only when they are whole numbers.
    n_rows : int
        Required length.
    n_classes : int
        Number of columns of the matching probability array.
    name : str
        What to call the vector in error messages.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise InvalidInputError(f"{name} has {arr.shape[0]} labels but there are {n_rows} rows")
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind != "f":
            raise InvalidInputError(
                f"{name} must hold integer class indices 0..{n_classes - 1}, got dtype {arr.dtype}"
            )
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            row = _first_bad_row(~whole)
            raise InvalidInputError(f"{name}[{row}] = {arr[row].item()!r} is not a class index")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        row = _first_bad_row(bad)
        raise InvalidInputError(
            f"{name}[{row}] = {arr[row]} is outside the class indices 0..{n_classes - 1}"
        )
    return arr
