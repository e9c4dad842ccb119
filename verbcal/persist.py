"""Save and load fitted calibrators as JSON (never pickle).

A calibrator file records the method, the estimator's class, its parameters,
its fitted attributes (the smoothing ``eps_`` included), the label set and the
verbcal version that wrote it::

    {"format": "verbcal-calibrator", "format_version": 1, "verbcal_version": "0.1.0",
     "method": "temperature", "labels": ["neg", "pos"],
     "calibrator": {"class": "TemperatureScaling", "params": {...}, "fitted": {...}}}

Only verbcal's own calibrators (and scikit-learn's ``FrozenEstimator`` wrapper
used in chains) can be loaded: a file names a class from a fixed list, it
cannot make verbcal run arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.frozen import FrozenEstimator

from verbcal import calibrators
from verbcal.errors import InvalidInputError

FORMAT = "verbcal-calibrator"
FORMAT_VERSION = 1

_CLASSES: dict[str, type] = {name: getattr(calibrators, name) for name in calibrators.CALIBRATORS}
_CLASSES["FrozenEstimator"] = FrozenEstimator


def _encode(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if type(value).__name__ in _CLASSES and hasattr(value, "get_params"):
        return {"__estimator__": estimator_to_dict(value)}
    if value is None or isinstance(value, str | bool | int | float):
        return value
    raise InvalidInputError(f"cannot save a value of type {type(value).__name__} as JSON")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    if "__float__" in value:
        return float(value["__float__"])
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__estimator__" in value:
        return estimator_from_dict(value["__estimator__"])
    return {k: _decode(v) for k, v in value.items()}


def estimator_to_dict(estimator) -> dict:
    """Class, parameters and fitted attributes of a calibrator, as JSON-ready data."""
    fitted = {
        k: _encode(v)
        for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_")
    }
    params = {k: _encode(v) for k, v in estimator.get_params(deep=False).items()}
    return {"class": type(estimator).__name__, "params": params, "fitted": fitted}


def estimator_from_dict(data: dict):
    """Rebuild a calibrator written by :func:`estimator_to_dict`."""
    if not isinstance(data, dict) or data.get("class") not in _CLASSES:
        known = ", ".join(sorted(_CLASSES))
        raise InvalidInputError(f"unknown calibrator class {data.get('class')!r}; known: {known}")
    estimator = _CLASSES[data["class"]](**_decode(data.get("params", {})))
    for name, value in _decode(data.get("fitted", {})).items():
        setattr(estimator, name, value)
    return estimator


@dataclass
class CalibratorRecord:
    """A fitted calibrator with what it was made from: the contents of a calibrator file.

    Attributes
    ----------
    method : str
        Method name (``"temperature"``, ``"auto"``…, see :data:`verbcal.workflow.METHODS`).
    calibrator : fitted verbcal calibrator
    labels : list of str
        Labels of the probability columns, in order.
    fitted_ids : list of str
        Ids of the item rows it was fitted on (rows to keep out of evaluation).
    n_probes : int
        Content-free probe rows it was fitted on (contextual methods).
    """

    method: str
    calibrator: Any
    labels: list[str]
    fitted_ids: list[str] = field(default_factory=list)
    n_probes: int = 0


def save_calibrator(path: str | os.PathLike, record: CalibratorRecord) -> None:
    """Write a fitted calibrator with its labels and provenance to a JSON file.

    Examples
    --------
    >>> import tempfile
    >>> from verbcal.calibrators import TemperatureScaling
    >>> cal = TemperatureScaling(eps=0.01).fit([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], [0, 1, 1])
    >>> path = Path(tempfile.mkdtemp()) / "cal.json"
    >>> save_calibrator(path, CalibratorRecord("temperature", cal, ["neg", "pos"]))
    >>> loaded = load_calibrator(path)
    >>> bool(loaded.calibrator.temperature_ == cal.temperature_), loaded.labels
    (True, ['neg', 'pos'])
    """
    from verbcal import __version__

    fitted_classes = getattr(record.calibrator, "n_features_in_", None)
    if fitted_classes != len(record.labels):
        raise InvalidInputError(
            f"the calibrator was fitted on {fitted_classes} classes "
            f"but {len(record.labels)} labels were given"
        )
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "verbcal_version": __version__,
        "method": record.method,
        "labels": list(record.labels),
        "fitted_ids": list(record.fitted_ids),
        "n_probes": record.n_probes,
        "calibrator": estimator_to_dict(record.calibrator),
    }
    Path(path).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def load_calibrator(path: str | os.PathLike) -> CalibratorRecord:
    """Read a calibrator file written by :func:`save_calibrator`.

    Raises
    ------
    InvalidInputError
        When the file is missing, not JSON, or not a verbcal calibrator file.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InvalidInputError(f"{path}: not a verbcal calibrator file")
    if document.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(
            f"{path}: calibrator format version {document.get('format_version')!r}; "
            f"this verbcal reads version {FORMAT_VERSION}"
        )
    labels = document.get("labels")
    if not (isinstance(labels, list) and len(labels) >= 2):
        raise InvalidInputError(f"{path}: 'labels' must list at least two labels")
    try:
        calibrator = estimator_from_dict(document.get("calibrator"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{path}: cannot rebuild the calibrator ({exc})") from None
    return CalibratorRecord(
        method=str(document.get("method")),
        calibrator=calibrator,
        labels=labels,
        fitted_ids=[str(i) for i in document.get("fitted_ids", [])],
        n_probes=int(document.get("n_probes", 0)),
    )
