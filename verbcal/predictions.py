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
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from verbcal.errors import InvalidInputError

ITEM = "item"
CONTENT_FREE = "content_free"


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
    status: str
    detail: str = ""
    raw: str | list[str] | None = None  # a list when several samples were asked for
    usage: dict = field(default_factory=dict)
    label: str | None = None
    kind: str = ITEM
    token_probs: dict[str, float] | None = None
    calibrated_by: str | None = None  # method name, once a calibrator was applied

    def to_json(self) -> dict:
        """The JSON object written for this prediction (None fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k == "probs"}


@dataclass
class PredictionArrays:
    """Predictions as arrays ready for calibrators and metrics."""

    labels: list[str]
    ids: list[str]
    P: np.ndarray  # (n, K) probabilities of the parsed rows
    y: np.ndarray | None  # (n,) gold class indices, or None when no row has a gold label
    n_failed: int  # rows left out because the answer could not be parsed


def _fail(path: os.PathLike | str, line: int | None, message: str) -> InvalidInputError:
    where = f"{path}" if line is None else f"{path}, line {line}"
    return InvalidInputError(f"{where}: {message}")


def read_items(
    path: str | os.PathLike,
    *,
    text_field: str = "text",
    label_field: str | None = "label",
    id_field: str = "id",
    labels: Sequence[str] | None = None,
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

    Returns
    -------
    list of Item
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    rows = list(_read_rows(path))
    if not rows:
        raise InvalidInputError(f"{path}: the file has no items")
    items, seen = [], set()
    for line, row in rows:
        text = row.get(text_field)
        if not isinstance(text, str):
            raise _fail(path, line, f"no text field {text_field!r} (fields: {sorted(row)})")
        item_id = str(row.get(id_field) or len(items) + 1)
        if item_id in seen:
            raise _fail(path, line, f"duplicate id {item_id!r}")
        seen.add(item_id)
        gold = row.get(label_field) if label_field else None
        gold = None if gold in (None, "") else str(gold)
        if gold is not None and labels is not None and gold not in labels:
            raise _fail(path, line, f"label {gold!r} is not one of {list(labels)}")
        options = row.get("options") if isinstance(row.get("options"), dict) else None
        items.append(Item(id=item_id, text=text, label=gold, options=options))
    return items


def _read_rows(path: Path) -> Iterable[tuple[int, dict]]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            yield from enumerate(csv.DictReader(handle), start=2)
        return
    yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise _fail(path, None, f"not UTF-8 text ({exc.reason})") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(path, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise _fail(path, number, "expected a JSON object")
        yield number, row


def write_predictions(path: str | os.PathLike, predictions: Iterable[Prediction]) -> None:
    """Write predictions as JSONL, atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for prediction in predictions:
                handle.write(json.dumps(prediction.to_json(), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read a predictions JSONL file, checking every line.

    Raises
    ------
    InvalidInputError
        Naming the file and line of the first malformed prediction.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    predictions: list[Prediction] = []
    for number, row in _read_jsonl(path):
        prediction = _prediction_from_json(path, number, row)
        if predictions and prediction.labels != predictions[0].labels:
            raise _fail(
                path, number, f"labels {prediction.labels} differ from {predictions[0].labels}"
            )
        predictions.append(prediction)
    if not predictions:
        raise InvalidInputError(f"{path}: the file has no predictions")
    return predictions


def _prediction_from_json(path: Path, line: int, row: dict) -> Prediction:
    for key in ("id", "labels", "probs", "status"):
        if key not in row:
            raise _fail(path, line, f"missing field {key!r}")
    labels = row["labels"]
    if not (
        isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)
    ):
        raise _fail(path, line, "'labels' must be a list of at least two strings")
    probs = row["probs"]
    if probs is not None:
        if not isinstance(probs, dict) or set(probs) != set(labels):
            raise _fail(path, line, f"'probs' must map exactly the labels {labels} to numbers")
        values = [probs[label] for label in labels]
        if not all(isinstance(v, int | float) and 0 <= v <= 1 for v in values):
            raise _fail(path, line, f"'probs' values must be numbers in [0, 1], got {values}")
    gold = row.get("label")
    if gold is not None and gold not in labels:
        raise _fail(path, line, f"gold label {gold!r} is not one of {labels}")
    kind = row.get("kind", ITEM)
    if kind not in (ITEM, CONTENT_FREE):
        raise _fail(path, line, f"'kind' must be {ITEM!r} or {CONTENT_FREE!r}, got {kind!r}")
    return Prediction(
        id=str(row["id"]),
        labels=labels,
        probs=probs,
        status=str(row["status"]),
        detail=str(row.get("detail", "")),
        raw=row.get("raw"),
        usage=row.get("usage") or {},
        label=gold,
        kind=kind,
        token_probs=row.get("token_probs"),
        calibrated_by=row.get("calibrated_by"),
    )


def to_arrays(predictions: Sequence[Prediction], *, kind: str = ITEM) -> PredictionArrays:
    """The parsed rows of one kind as arrays (rows renormalised to sum to 1).

    Rows whose answer failed to parse are left out and counted in ``n_failed``.
    ``y`` holds gold class indices when every kept row has a gold label, and is
    None when none has; a mix of labelled and unlabelled rows is an error.
    """
    chosen = [p for p in predictions if p.kind == kind]
    if not chosen:
        raise InvalidInputError(f"there are no predictions of kind {kind!r}")
    labels = chosen[0].labels
    kept = [p for p in chosen if p.probs is not None]
    if not kept:
        raise InvalidInputError(f"none of the {len(chosen)} {kind} predictions could be parsed")
    P = np.array([[p.probs[label] for label in labels] for p in kept], dtype=np.float64)
    sums = P.sum(axis=1, keepdims=True)
    if (sums <= 0).any():
        bad = kept[int(np.flatnonzero(sums[:, 0] <= 0)[0])].id
        raise InvalidInputError(f"prediction {bad!r} has probabilities that sum to 0")
    has_gold = [p.label is not None for p in kept]
    if all(has_gold):
        y = np.array([labels.index(p.label) for p in kept], dtype=np.int64)
    elif not any(has_gold):
        y = None
    else:
        missing = kept[has_gold.index(False)].id
        raise InvalidInputError(
            f"some predictions have gold labels and some do not (first without: {missing!r})"
        )
    return PredictionArrays(
        labels=labels, ids=[p.id for p in kept], P=P / sums, y=y, n_failed=len(chosen) - len(kept)
    )
