"""Save and load fitted calibrators as JSON (never pickle).

A calibrator file records the method, the estimator's class, its parameters,
its fitted attributes (the smoothing ``eps_`` included), the label set and the
verbcal version that wrote it::

    {"format": "verbcal-calibrator", "format_version": 1, "verbcal_version": "0.1.0",
     "method": "temperature", "labels": ["neg", "pos"], "fitted_ids": ["r1", "r4"],
     "calibrator": {"class": "TemperatureScaling", "params": {...}, "fitted": {...}}}

``fitted_ids`` lists the rows the calibrator was fitted on, so that evaluation
can keep them out. Up to :data:`PLAIN_IDS` ids are written as a plain list;
more are packed (:func:`pack_ids`: sorted, delta-coded, zlib, base64), which
keeps the file small (300,000 ids like ``item-0001234``: about 0.3 MB instead
of 4.8 MB) and loads them as one byte array, not a Python string per id.

Only verbcal's own calibrators (and scikit-learn's ``FrozenEstimator`` wrapper
used in chains) can be loaded: a file names a class from a fixed list, it
cannot make verbcal run arbitrary code.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.frozen import FrozenEstimator

from verbcal import calibrators
from verbcal.errors import InvalidInputError, ParseError
from verbcal.outputs import atomic_write
from verbcal.prediction_columns import IdColumn
from verbcal.predictions import check_input_file
from verbcal.schema import check_fitted, check_predicts_probabilities, fail, int_at_least

FORMAT = "verbcal-calibrator"
FORMAT_VERSION = 1

_CLASSES: dict[str, type] = {name: getattr(calibrators, name) for name in calibrators.CALIBRATORS}
_CLASSES["FrozenEstimator"] = FrozenEstimator

#: Fitted ids written as a plain JSON list up to this many; more are packed (:func:`pack_ids`).
PLAIN_IDS = 1000
#: The ``encoding`` of packed ids.
PACKED_IDS = "sorted-utf8-fixed-width+zlib+base64"


def pack_ids(ids: Sequence[str]) -> dict[str, Any] | list[str]:
    """Row ids as the ``fitted_ids`` of a calibrator file: compact when there are many.

    Up to :data:`PLAIN_IDS` ids (and ids ending in a NUL character, which a
    byte matrix cannot hold) give a plain list. Otherwise the ids, sorted, as
    UTF-8 bytes padded with NULs to the longest (a ``count`` x ``width`` byte
    matrix); with ``delta``, each row is stored as its difference from the
    row before, modulo 256 (sorted ids share most bytes, so this is mostly
    zeros); the matrix, row after row, compressed with zlib and base64-encoded.

    Examples
    --------
    >>> ids = [f"item-{i:05d}" for i in range(2000)]
    >>> packed = pack_ids(ids)
    >>> packed["count"], packed["width"], len(json.dumps(packed)) < len(json.dumps(ids)) / 50
    (2000, 10, True)
    >>> unpack_ids(packed)[1999]
    'item-01999'
    """
    if len(ids) <= PLAIN_IDS:
        return list(ids)
    if isinstance(ids, IdColumn) and ids.data.dtype.kind == "S":
        matrix = np.sort(ids.data)
    elif any(i.endswith("\x00") for i in ids):
        return list(ids)
    else:
        matrix = np.sort(np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_))
    width = max(matrix.dtype.itemsize, 1)
    rows = matrix.view(np.uint8).reshape(len(matrix), width)
    delta = np.empty_like(rows)
    delta[0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=delta[1:])  # wraps modulo 256
    plain, coded = zlib.compress(rows.tobytes(), 6), zlib.compress(delta.tobytes(), 6)
    use_delta = len(coded) < len(plain)
    return {
        "encoding": PACKED_IDS,
        "count": len(matrix),
        "width": width,
        "delta": use_delta,
        "data": base64.b64encode(coded if use_delta else plain).decode("ascii"),
    }


def unpack_ids(value: Any, where: str = "fitted_ids") -> list[str] | IdColumn:
    """The ids :func:`pack_ids` wrote (a list of ids, strings or integers, is taken as is).

    Raises
    ------
    ParseError
        Naming ``where`` when the value is neither a list of ids nor a packed id set.
    """
    if isinstance(value, list):
        if not all(isinstance(i, str | int) and not isinstance(i, bool) for i in value):
            raise fail(where, "must be a list of row ids (strings or integers)")
        return [str(i) for i in value]
    if not isinstance(value, dict) or value.get("encoding") != PACKED_IDS:
        raise fail(
            where,
            "must be a list of row ids (strings or integers) or packed ids "
            f"({{'encoding': {PACKED_IDS!r}, ...}}), got {str(value)[:80]}",
        )
    count: Any = value.get("count")
    width: Any = value.get("width")
    data = value.get("data")
    int_at_least(0)(count, f"{where}.count")
    int_at_least(1)(width, f"{where}.width")
    if not isinstance(value.get("delta"), bool):
        raise fail(f"{where}.delta", f"must be true or false, got {value.get('delta')!r}")
    if not isinstance(data, str):
        raise fail(f"{where}.data", "must be a base64 text")
    size = count * width
    try:
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.b64decode(data, validate=True), size + 1)
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise fail(f"{where}.data", f"not base64 zlib data ({exc})") from None
    if len(raw) != size or not inflate.eof:
        raise fail(f"{where}.data", f"does not hold {count} ids of {width} bytes")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(count, width)
    if value["delta"]:
        rows = np.cumsum(rows, axis=0, dtype=np.uint8)  # undoes the differences modulo 256
    ids = IdColumn(rows.reshape(-1).view(f"S{width}"))
    try:
        for start in range(0, count, 1 << 16):  # every id is UTF-8 (error named here, once)
            b"\n".join(ids.data[start : start + (1 << 16)].tolist()).decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"{where}.data", "holds ids that are not UTF-8") from None
    return ids


def _encode(value: Any, plain: bool) -> Any:
    """``value`` as JSON data: tagged so that ``_decode`` restores it, or ``plain`` for reading."""
    if isinstance(value, np.ndarray):
        return (
            value.tolist() if plain else {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
        )
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value) and not plain:
        return {"__float__": repr(value)}
    if isinstance(value, tuple) and not plain:
        return {"__tuple__": [_encode(v, plain) for v in value]}
    if isinstance(value, (list, tuple)):
        return [_encode(v, plain) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v, plain) for k, v in value.items()}
    if hasattr(value, "get_params") and not isinstance(value, type):
        if plain:
            return estimator_to_dict(value, plain=True)
        if type(value).__name__ in _CLASSES:
            return {"__estimator__": estimator_to_dict(value)}
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if plain:
        return repr(value)
    raise InvalidInputError(f"cannot save a value of type {type(value).__name__} as JSON")


def _decode(value: Any, where: str, fitted: bool) -> Any:
    """Rebuild a JSON value written by :func:`_encode`; ``where`` names it in errors.

    ``fitted``: estimators in it must be fitted (fitted attributes); estimators
    among parameters (a chain's unfitted steps) are checked only when they
    carry fitted attributes.
    """
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", fitted) for i, v in enumerate(value)]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        try:
            return np.array(value["__ndarray__"], dtype=np.dtype(value.get("dtype")))
        except (TypeError, ValueError, OverflowError) as exc:
            raise fail(where, f"not a readable array ({exc})") from None
    if "__float__" in value:
        try:
            return float(value["__float__"])
        except (TypeError, ValueError):
            raise fail(where, f"not a number: {value['__float__']!r}") from None
    if "__tuple__" in value:
        items = value["__tuple__"]
        if not isinstance(items, list):
            raise fail(where, f"'__tuple__' must be a list, got {items!r}")
        return tuple(_decode(v, f"{where}[{i}]", fitted) for i, v in enumerate(items))
    if "__estimator__" in value:
        return estimator_from_dict(value["__estimator__"], where=where, fitted=fitted)
    return {k: _decode(v, f"{where}.{k}", fitted) for k, v in value.items()}


def estimator_to_dict(estimator: Any, *, plain: bool = False) -> dict[str, Any]:
    """Class, parameters and fitted attributes of a calibrator, as JSON-ready data.

    Parameters
    ----------
    estimator : calibrator
        Anything with ``get_params``; fitted attributes are its public ones
        ending in ``_``.
    plain : bool, default False
        False: tagged values (arrays with their dtype, tuples, infinities) that
        :func:`estimator_from_dict` restores exactly; only verbcal's classes
        can be nested. True: plain lists and numbers for reading (the report),
        any nested estimator described the same way, anything else as its repr.

    Returns
    -------
    dict
        ``{"class": name, "params": {...}, "fitted": {...}}``.

    Examples
    --------
    >>> from verbcal.calibrators import TemperatureScaling
    >>> cal = TemperatureScaling(eps=0.01).fit([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]], [0, 1, 1])
    >>> estimator_to_dict(cal, plain=True)["fitted"]["classes_"]
    [0, 1]
    >>> estimator_to_dict(cal)["fitted"]["classes_"]["dtype"]
    '<i8'
    """
    fitted = {
        k: _encode(v, plain)
        for k, v in vars(estimator).items()
        if k.endswith("_") and not k.startswith("_")
    }
    params = {k: _encode(v, plain) for k, v in estimator.get_params(deep=False).items()}
    return {"class": type(estimator).__name__, "params": params, "fitted": fitted}


def estimator_from_dict(data: Any, *, where: str = "calibrator", fitted: bool = True):
    """Rebuild a calibrator written by :func:`estimator_to_dict`.

    ``where`` names the document in error messages; with ``fitted`` the
    fitted attributes the class needs must be present and valid (else only
    when the document has any).

    Raises
    ------
    InvalidInputError
        Naming the field (``calibrator.fitted.temperature_``…) that is missing,
        of the wrong type or out of range.
    """
    if not isinstance(data, dict):
        raise fail(where, f"must be an object with 'class', 'params' and 'fitted', got {data!r}")
    name = data.get("class")
    if not isinstance(name, str) or name not in _CLASSES:
        known = ", ".join(sorted(_CLASSES))
        raise fail(f"{where}.class", f"unknown calibrator class {name!r}; known: {known}")
    for key in ("params", "fitted"):
        if not isinstance(data.get(key, {}), dict):
            raise fail(f"{where}.{key}", f"must be an object, got {data[key]!r}")
    params = _decode(data.get("params", {}), f"{where}.params", fitted=False)
    accepted = set(inspect.signature(_CLASSES[name]).parameters)
    for key in params:
        if key not in accepted:
            raise fail(f"{where}.params.{key}", f"{name} has no parameter {key!r}")
    try:
        estimator = _CLASSES[name](**params)
    except (TypeError, ValueError) as exc:
        raise fail(f"{where}.params", f"{name} cannot take these parameters ({exc})") from None
    attributes = _decode(data.get("fitted", {}), f"{where}.fitted", fitted=True)
    if fitted or attributes:
        check_fitted(name, attributes, f"{where}.fitted")
    for key, value in attributes.items():
        setattr(estimator, key, value)
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
    fitted_ids : sequence of str
        Ids of the item rows it was fitted on (rows to keep out of evaluation): a
        list, or an :class:`~verbcal.prediction_columns.IdColumn` (many ids, one byte array).
    n_probes : int
        Content-free probe rows it was fitted on (contextual methods).
    """

    method: str
    calibrator: Any
    labels: list[str]
    fitted_ids: Sequence[str] = field(default_factory=list)
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
        "fitted_ids": pack_ids(record.fitted_ids),
        "n_probes": record.n_probes,
        "calibrator": estimator_to_dict(record.calibrator),
    }
    text = json.dumps(document, indent=1) + "\n"
    atomic_write(path, lambda handle: handle.write(text))


def load_calibrator(path: str | os.PathLike) -> CalibratorRecord:
    """Read a calibrator file written by :func:`save_calibrator`.

    Raises
    ------
    InvalidInputError
        When the file is missing or cannot be read.
    ParseError
        (an InvalidInputError) When it is not JSON, not a verbcal calibrator
        file, or a field is missing, of the wrong type or out of range (the
        message names the field, e.g. ``calibrator.fitted.temperature_``), or
        the rebuilt calibrator does not turn probability rows into probability rows.
    """
    path = Path(path)
    check_input_file(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParseError(f"{path}: not a JSON file ({exc})") from None
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ParseError(f"{path}: not a verbcal calibrator file")
    version = document.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ParseError(
            f"{path}: calibrator format version {document.get('format_version')!r}; "
            f"this verbcal reads version {FORMAT_VERSION}"
        )
    return _record_from_document(document, path)


def _record_from_document(document: dict, path: Path) -> CalibratorRecord:
    """Check every field of a calibrator document, naming the first that is wrong."""

    def where(field: str) -> str:
        return f"{path}: {field}"

    labels = document.get("labels")
    if not (
        isinstance(labels, list)
        and len(labels) >= 2
        and all(isinstance(x, str) and x for x in labels)
        and len(set(labels)) == len(labels)
    ):
        raise fail(where("labels"), f"must list at least two distinct label names, got {labels!r}")
    calibrator = estimator_from_dict(document.get("calibrator"), where=where("calibrator"))
    n_features = getattr(calibrator, "n_features_in_", None)
    if n_features != len(labels):
        raise fail(
            where("calibrator.fitted.n_features_in_"),
            f"the calibrator has {n_features} class columns but 'labels' lists {len(labels)}",
        )
    method = document.get("method")
    if not isinstance(method, str) or not method:
        raise fail(where("method"), f"must be a method name, got {method!r}")
    fitted_ids = unpack_ids(document.get("fitted_ids", []), where("fitted_ids"))
    n_probes = document.get("n_probes", 0)
    int_at_least(0)(n_probes, where("n_probes"))
    check_predicts_probabilities(calibrator, len(labels), where("calibrator"))
    return CalibratorRecord(
        method=method,
        calibrator=calibrator,
        labels=labels,
        fitted_ids=fitted_ids,
        n_probes=n_probes,
    )
