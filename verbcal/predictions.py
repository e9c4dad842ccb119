"""Items in, predictions out: the files the ``verbcal`` commands exchange.

Input items come from CSV or JSONL (a text field, an optional gold-label field,
an optional id). Predictions are JSONL, one object per line::

    {"id": "r1", "kind": "item", "labels": ["neg", "pos"],
     "probs": {"neg": 0.2, "pos": 0.8}, "status": "ok", "detail": "",
     "raw": "...", "usage": {"prompt_tokens": 50, "completion_tokens": 9}, "label": "pos"}

``probs`` is null when the answer could not be parsed. ``kind`` is ``"item"``
for a real input and ``"content_free"`` for a probe such as "N/A", which
contextual calibration fits on. ``label`` (the gold label) is present only when
the input had one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final, Literal

import numpy as np

from verbcal.errors import InvalidInputError, ParseError
from verbcal.outputs import atomic_write

#: How an answer was read: as stated, after repairs, or not at all (``probs`` is None).
Status = Literal["ok", "repaired", "failed"]
STATUSES: tuple[Status, ...] = ("ok", "repaired", "failed")
#: A real input, or a content-free probe (what contextual calibration fits on).
Kind = Literal["item", "content_free"]
ITEM: Final = "item"
CONTENT_FREE: Final = "content_free"


@dataclass
class Item:
    """One input to classify."""

    id: str
    text: str
    label: str | None = None
    options: dict[str, str] | None = None


@dataclass
class Prediction:
    """What the model said about one item, as read by the parser."""

    id: str
    labels: list[str]
    probs: dict[str, float] | None
    status: Status
    detail: str = ""
    raw: str | list[str] | None = None  # a list when several samples were asked for
    usage: dict = field(default_factory=dict)
    label: str | None = None
    kind: Kind = ITEM
    token_probs: dict[str, float] | None = None
    samples: list[dict[str, float]] | None = None  # each parsed sample, when several were asked
    calibrated_by: str | None = None  # method name, once a calibrator was applied
    suspect: bool | None = None  # True: the item text looks like a prompt injection
    suspect_reason: str | None = None  # why (see verbcal.elicit.injection)

    def to_json(self) -> dict:
        """The JSON object written for this prediction (None fields left out).

        Shallow: its values are the prediction's own (serialise it, do not edit it).
        """
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {k: v for k, v in values if v is not None or k == "probs"}


@dataclass
class PredictionArrays:
    """Predictions as arrays ready for calibrators and metrics."""

    labels: list[str]
    ids: Sequence[str]  # a list, or an IdColumn when read by read_columns
    P: np.ndarray  # (n, K) probabilities of the parsed rows
    y: np.ndarray | None  # (n,) gold class indices, or None unless every kept row has one
    n_failed: int  # rows left out because the answer could not be parsed
    n_unlabelled: int = 0  # parsed rows left out because others are labelled and they are not
    token_probs: np.ndarray | None = None  # (n, K), a NaN row where a reply had none; None: none
    samples: list[np.ndarray | None] | None = None  # (S_i, K) per row; None: no row has 2+


def _fail(path: os.PathLike | str, line: int | None, message: str) -> ParseError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return ParseError(f"{where}: {message}")


def read_items(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    label_field: str | None = "label",
    id_field: str = "id",
    labels: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> list[Item]:
    """Read items to classify from a ``.csv`` or ``.jsonl`` file.

    Parameters
    ----------
    path : path-like
        A CSV file with a header row, or JSON Lines (one object per line).
    text_field : str
        Column holding the text to classify.
    label_field : str or None
        Column holding the gold label, if any; a missing or empty value means
        the item is unlabelled.
    id_field : str
        Column holding a unique id; rows without one are numbered from 1.
    labels : sequence of str, optional
        When given, every gold label must be one of these.
    encoding : str, default "utf-8"
        Text encoding of the file. A UTF-8 byte-order mark (as spreadsheet
        exports write) is dropped.

    Returns
    -------
    list of Item

    Raises
    ------
    InvalidInputError
        Naming the file and line: undecodable bytes (and which byte), a record
        without the text field, a duplicate id, an unknown gold label.

    Notes
    -----
    Ids are text: a JSON number id ``2`` is read as ``"2"``, so ``2`` and
    ``"2"`` in one file are the same id and refused as a duplicate.
    """
    path = Path(path)
    check_input_file(path)
    rows = list(_read_rows(path, encoding))
    if not rows:
        raise InvalidInputError(f"{path}: the file has no items")
    items: list[Item] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        text = row.get(text_field)
        if not isinstance(text, str):
            fields = sorted(str(k) for k in row if k is not None)
            raise _fail(path, line, f"no text field {text_field!r} (fields: {fields})")
        raw_id = row.get(id_field)
        item_id = str(len(items) + 1) if raw_id in (None, "") else _id_text(path, line, raw_id)
        if item_id in seen:
            raise _fail(path, line, f"duplicate id {item_id!r} (also on line {seen[item_id]})")
        seen[item_id] = line
        gold = row.get(label_field) if label_field else None
        gold = None if gold in (None, "") else str(gold)
        if gold is not None and labels is not None and gold not in labels:
            raise _fail(path, line, f"label {gold!r} is not one of {list(labels)}")
        options = row.get("options") if isinstance(row.get("options"), dict) else None
        items.append(Item(id=item_id, text=text, label=gold, options=options))
    return items


def check_input_file(path: Path) -> None:
    """Raise an InvalidInputError unless ``path`` is an existing file (a folder is named so)."""
    if path.is_dir():
        raise InvalidInputError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")


def _id_text(path: Path, line: int, value: object) -> str:
    """An id as text: strings as they are, integers in decimal; anything else is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _fail(path, line, f"'id' must be a string or an integer, got {value!r}")


def decode_text(path: Path, encoding: str = "utf-8") -> str:
    """The text of a file, a UTF-8 byte-order mark dropped.

    Raises
    ------
    InvalidInputError
        Naming the file, the line and the first byte that is not valid in
        ``encoding`` (or an unknown encoding).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    utf8 = encoding.replace("_", "-").lower() in ("utf-8", "utf8")
    skip = 3 if utf8 and data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[skip:].decode(encoding)
    except LookupError:
        raise InvalidInputError(f"unknown text encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise _fail(
            path,
            line,
            f"byte 0x{data[offset]:02x} (column {column}, offset {offset}) is not valid "
            f"{encoding}: give the file's encoding (--encoding latin-1, for example)",
        ) from None
    return text.removeprefix("\ufeff")


def _read_rows(path: Path, encoding: str = "utf-8") -> Iterable[tuple[int, dict]]:
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path, encoding)
        return
    yield from read_jsonl(path, encoding)


def _read_csv(path: Path, encoding: str) -> Iterable[tuple[int, dict]]:
    """CSV records with the physical line each starts on (quoted fields may span lines)."""
    reader = csv.DictReader(io.StringIO(decode_text(path, encoding), newline=""), strict=True)
    start = 2  # the header is line 1 (a multi-line header is read before the first record)
    try:
        if reader.fieldnames is not None:
            start = reader.line_num + 1
        for row in reader:
            if None in row:
                raise _fail(
                    path, start, f"the record has more fields than the header ({row[None]})"
                )
            yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        line = reader.reader.line_num  # DictReader's own line_num is set only after a record
        if "unexpected end of data" in str(exc):
            why = f"a quoted field of this record is never closed (read to line {line}, the end)"
            raise _fail(path, start, f"not valid CSV: {why}") from None
        where = f" (in the record that starts on line {start})" if line > start else ""
        raise _fail(path, line, f"not valid CSV: {exc}{where}") from None


def read_jsonl(path: str | os.PathLike, encoding: str = "utf-8") -> Iterable[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON Lines file.

    Lines end at ``\\n`` only (a raw U+2028 inside a JSON string is text, not
    a line break).

    Raises
    ------
    ParseError
        Naming the file and line of undecodable bytes, invalid JSON or a value
        that is not an object.
    """
    path = Path(path)
    if encoding.replace("_", "-").lower() not in ("utf-8", "utf8"):
        yield from parse_jsonl(decode_text(path, encoding), source=str(path))
        return
    # UTF-8 is read line by line (a byte 0x0a is always a line end there), so memory
    # holds one line, not the file, its text and its list of lines.
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    with handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _fail(
                    path,
                    number,
                    f"byte 0x{raw[exc.start]:02x} (column {exc.start + 1}, offset "
                    f"{offset + exc.start}) is not valid {encoding}: give the file's encoding "
                    "(--encoding latin-1, for example)",
                ) from None
            offset += len(raw)
            row = _parse_line(line.removeprefix("\ufeff") if number == 1 else line, number, path)
            if row is not None:
                yield number, row


def parse_jsonl(text: str, source: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of JSON Lines ``text``.

    The one JSON Lines reader: files (:func:`read_jsonl`), packaged data and
    recordings all go through it. Lines end at ``\\n`` only.

    Parameters
    ----------
    text : str
        The whole text.
    source : str
        What to call it in error messages (a file name).

    Raises
    ------
    ParseError
        Naming ``source`` and the line of invalid JSON or of a value that is
        not an object.

    Examples
    --------
    >>> list(parse_jsonl('{"a": 1}\\n\\n{"b": 2}\\n', source="x.jsonl"))
    [(1, {'a': 1}), (3, {'b': 2})]
    """
    for number, line in enumerate(text.split("\n"), start=1):
        row = _parse_line(line, number, source)
        if row is not None:
            yield number, row


def _parse_line(line: str, number: int, source: os.PathLike | str) -> dict | None:
    """The JSON object on one line, None for a blank line; raise naming the line otherwise."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _fail(source, number, f"not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise _fail(source, number, f"expected a JSON object, got {line.strip()[:80]!r}")
    return row


def write_predictions(path: str | os.PathLike, predictions: Iterable[Prediction]) -> None:
    """Write predictions as JSONL, atomically: a reader never sees half a file.

    The file gets the permissions the umask gives any new file (0644 usually).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(handle) -> None:
        for prediction in predictions:
            handle.write(json.dumps(prediction.to_json(), ensure_ascii=False) + "\n")

    atomic_write(path, write)


def read_predictions(path: str | os.PathLike, *, encoding: str = "utf-8") -> list[Prediction]:
    """Read a predictions JSONL file, checking every line.

    Ids are text (a number id ``2`` is read as ``"2"``) and must be unique
    among the rows of one kind: ``2`` and ``"2"`` are the same id.

    Raises
    ------
    InvalidInputError
        Naming the file and line of the first malformed prediction (and both
        lines of a duplicate id).
    """
    predictions: list[Prediction] = []
    seen: dict[tuple[str, str], int] = {}
    for number, prediction in iter_predictions(path, encoding=encoding):
        key = (prediction.kind, prediction.id)
        if key in seen:
            raise duplicate_id_error(path, number, prediction.id, seen[key])
        seen[key] = number
        predictions.append(prediction)
    if not predictions:
        raise no_predictions_error(path)
    return predictions


def iter_predictions(
    path: str | os.PathLike, *, encoding: str = "utf-8"
) -> Iterator[tuple[int, Prediction]]:
    """``(line number, Prediction)`` for each row of a predictions JSONL file, read one at a time.

    Each row is checked as :func:`read_predictions` checks it, and against the
    labels of the first row; duplicate ids are left to the caller
    (:func:`duplicate_id_error`).

    Raises
    ------
    InvalidInputError
        Naming the file and line of the first malformed prediction.
    """
    path = Path(path)
    check_input_file(path)
    labels: list[str] | None = None
    for number, row in read_jsonl(path, encoding):
        prediction = _prediction_from_json(path, number, row)
        if labels is None:
            labels = prediction.labels
        elif prediction.labels != labels:
            raise _fail(path, number, f"labels {prediction.labels} differ from {labels}")
        yield number, prediction


def duplicate_id_error(
    path: str | os.PathLike, line: int, item_id: str, first_line: int
) -> ParseError:
    """The error for a row on ``line`` whose id (of its kind) was first seen on ``first_line``."""
    return _fail(
        path,
        line,
        f"duplicate id {item_id!r} (also on line {first_line}; ids are compared "
        'as text, so 2 and "2" are the same id): every row needs its own id',
    )


def no_predictions_error(path: str | os.PathLike) -> InvalidInputError:
    """The error for a predictions file without a single row."""
    return InvalidInputError(f"{path}: the file has no predictions")


def _prediction_from_json(path: Path, line: int, row: dict) -> Prediction:
    for key in ("id", "labels", "probs", "status"):
        if key not in row:
            raise _fail(path, line, f"missing field {key!r}")
    labels = row["labels"]
    if not (
        isinstance(labels, list)
        and len(labels) >= 2
        and all(isinstance(x, str) and x for x in labels)
        and len(set(labels)) == len(labels)
    ):
        raise _fail(path, line, f"'labels' must list at least two distinct names, got {labels!r}")
    probs = row["probs"]
    if probs is not None:
        if not isinstance(probs, dict) or set(probs) != set(labels):
            raise _fail(path, line, f"'probs' must map exactly the labels {labels} to numbers")
        values = [probs[label] for label in labels]
        if not all(_is_number(v) and 0 <= v <= 1 for v in values):
            raise _fail(path, line, f"'probs' values must be numbers in [0, 1], got {values}")
    gold = row.get("label")
    if gold is not None and gold not in labels:
        raise _fail(path, line, f"gold label {gold!r} is not one of {labels}")
    kind = row.get("kind", ITEM)
    if kind not in (ITEM, CONTENT_FREE):
        raise _fail(path, line, f"'kind' must be {ITEM!r} or {CONTENT_FREE!r}, got {kind!r}")
    status = row["status"]
    if status not in STATUSES:
        raise _fail(path, line, f"'status' must be one of {list(STATUSES)}, got {status!r}")
    calibrated_by = row.get("calibrated_by")
    if calibrated_by is not None and not isinstance(calibrated_by, str):
        raise _fail(path, line, f"'calibrated_by' must be a method name, got {calibrated_by!r}")
    suspect = row.get("suspect")
    if suspect is not None and not isinstance(suspect, bool):
        raise _fail(path, line, f"'suspect' must be true or false, got {suspect!r}")
    return Prediction(
        id=_id_text(path, line, row["id"]),
        labels=labels,
        probs=probs,
        status=status,
        detail=str(row.get("detail", "")),
        raw=row.get("raw"),
        usage=row.get("usage") or {},
        label=gold,
        kind=kind,
        token_probs=_distribution(path, line, row, "token_probs", labels),
        samples=_samples(path, line, row, labels),
        calibrated_by=calibrated_by,
        suspect=suspect,
        suspect_reason=None if row.get("suspect_reason") is None else str(row["suspect_reason"]),
    )


def _distribution(
    path: Path, line: int, row: dict, key: str, labels: list[str]
) -> dict[str, float] | None:
    """An optional label → probability object (``token_probs``), checked."""
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(labels):
        raise _fail(path, line, f"{key!r} must map exactly the labels {labels} to numbers")
    values = [value[label] for label in labels]
    if not all(_is_number(v) and 0 <= v <= 1 for v in values):
        raise _fail(path, line, f"{key!r} values must be numbers in [0, 1], got {values}")
    return value


def _samples(path: Path, line: int, row: dict, labels: list[str]) -> list[dict] | None:
    """The optional list of each sample's parsed distribution, checked."""
    value = row.get("samples")
    if value is None:
        return None
    if not isinstance(value, list):
        raise _fail(path, line, "'samples' must be a list of label → probability objects")
    return [_distribution(path, line, {"samples": s}, "samples", labels) or {} for s in value]


def _is_number(value: object) -> bool:
    """A JSON number: int or float, not ``true``/``false`` (bool is an int in Python)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def signal_arrays(
    predictions: Sequence[Prediction], labels: list[str]
) -> tuple[np.ndarray | None, list[np.ndarray | None] | None]:
    """The token probabilities and sampled distributions of rows, as arrays.

    Returns
    -------
    token_probs : (n, K) array with a NaN row where a row has none, or None when no row has any
    samples : per row an (S, K) array or None, or None when no row has 2 samples or more
    """
    token_probs = None
    if any(p.token_probs for p in predictions):
        token_probs = np.array(
            [
                [p.token_probs[lab] for lab in labels] if p.token_probs else [np.nan] * len(labels)
                for p in predictions
            ],
            dtype=np.float64,
        )
    samples = None
    if any(p.samples and len(p.samples) >= 2 for p in predictions):
        samples = [
            np.array([[s[lab] for lab in labels] for s in p.samples], dtype=np.float64)
            if p.samples
            else None
            for p in predictions
        ]
    return token_probs, samples


def to_arrays(
    predictions: Sequence[Prediction], *, kind: Kind = ITEM, prefer_labelled: bool = True
) -> PredictionArrays:
    """The parsed rows of one kind as arrays (rows renormalised to sum to 1).

    Rows whose answer failed to parse are left out and counted in ``n_failed``.
    When some parsed rows have a gold label and some do not, ``prefer_labelled``
    keeps only the labelled ones (for fitting and evaluating; the others are
    counted in ``n_unlabelled``); without it every row is kept and ``y`` is
    None. ``y`` holds gold class indices when every kept row has a gold label,
    and is None otherwise.
    """
    chosen = [p for p in predictions if p.kind == kind]
    if not chosen:
        raise InvalidInputError(f"there are no predictions of kind {kind!r}")
    labels = chosen[0].labels
    kept = [p for p in chosen if p.probs is not None]
    if not kept:
        raise InvalidInputError(f"none of the {len(chosen)} {kind} predictions could be parsed")
    labelled = [p for p in kept if p.label is not None]
    n_unlabelled = 0
    if prefer_labelled and 0 < len(labelled) < len(kept):
        kept, n_unlabelled = labelled, len(kept) - len(labelled)
    rows = [p.probs for p in kept if p.probs is not None]  # every kept row (typed for mypy)
    P = np.array([[row[label] for label in labels] for row in rows], dtype=np.float64)
    sums = P.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        bad = kept[int(np.flatnonzero(sums[:, 0] <= 0)[0])].id
        raise InvalidInputError(f"prediction {bad!r} has probabilities that sum to 0")
    golds = [p.label for p in kept if p.label is not None]
    y = None
    if len(golds) == len(kept):
        y = np.array([labels.index(gold) for gold in golds], dtype=np.int64)
    token_probs, samples = signal_arrays(kept, labels)
    return PredictionArrays(
        labels=labels,
        ids=[p.id for p in kept],
        P=P / sums,
        y=y,
        n_failed=sum(p.probs is None for p in chosen),
        n_unlabelled=n_unlabelled,
        token_probs=token_probs,
        samples=samples,
    )
