"""A predictions file read straight into columns: the large-file path of the commands.

:func:`~verbcal.predictions.read_predictions` keeps a
:class:`~verbcal.predictions.Prediction` object per row, about 2 KB each; on a
file of 600,000 rows that is gigabytes for what fits in a few arrays.
:func:`read_columns` reads the same file one row at a time, with the same
checks and the same error messages, and keeps only what ``verbcal fit``,
``evaluate``, ``apply`` and ``report`` use: ids, probabilities, gold labels,
kinds, parse statuses, suspect flags, the first calibrated row, and the rows
that were repaired or failed (for the report's parse section).

The functions :func:`arrays_of`, :func:`has_kind`, :func:`labels_of` and
:func:`first_calibrated` take either form, so the workflow runs on both.
"""

from __future__ import annotations

import json
import os
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import overload

import numpy as np

from verbcal.errors import InvalidInputError, ParseError
from verbcal.outputs import atomic_write
from verbcal.predictions import (
    CONTENT_FREE,
    ITEM,
    STATUSES,
    Kind,
    Prediction,
    PredictionArrays,
    duplicate_id_error,
    iter_predictions,
    no_predictions_error,
    read_predictions,
    to_arrays,
)

__all__ = [
    "IdColumn",
    "PredictionColumns",
    "arrays_of",
    "first_calibrated",
    "has_kind",
    "labels_of",
    "read_columns",
    "read_compact",
]

#: Rows gathered in a Python list before they are packed into a numpy array.
_CHUNK = 1 << 14


class IdColumn(Sequence[str]):
    """Row ids kept as UTF-8 bytes in one numpy array; an element is read back as ``str``.

    An id ending in a NUL character (which numpy's byte strings drop) makes the
    column keep Python strings instead.
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray) -> IdColumn: ...

    def __getitem__(self, index):
        if isinstance(index, int | np.integer):
            value = self.data[index]
            return value.decode("utf-8") if isinstance(value, bytes) else str(value)
        return IdColumn(self.data[index])

    def __iter__(self) -> Iterator[str]:
        for value in self.data:
            yield value.decode("utf-8") if isinstance(value, bytes) else str(value)

    def tolist(self) -> list[str]:
        """The ids as a list of ``str``."""
        return list(self)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, str):
            return False
        if self.data.dtype.kind != "S":
            return bool((self.data == value).any())
        if value.endswith("\x00"):  # an S column holds no such id
            return False
        return bool((self.data == value.encode("utf-8")).any())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdColumn | list | tuple):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(repr(i) for i in self[:3])
        return f"IdColumn([{shown}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    def isin(self, ids: Sequence[str]) -> np.ndarray:
        """A boolean mask: which of these ids are among ``ids``."""
        if not len(ids):
            return np.zeros(len(self), dtype=bool)
        wanted: np.ndarray | None = None
        if self.data.dtype.kind == "S" and isinstance(ids, IdColumn):
            if ids.data.dtype.kind == "S":  # no Python string per id
                wanted = np.sort(ids.data)
        elif self.data.dtype.kind == "S" and not any(i.endswith("\x00") for i in ids):
            width = max(len(i.encode("utf-8")) for i in ids)
            wanted = np.fromiter((i.encode("utf-8") for i in ids), f"S{width}", len(ids))
            wanted.sort()
        if wanted is not None:
            found = np.empty(len(self), dtype=bool)
            for start in range(0, len(self), _CHUNK):  # small temporaries on long columns
                part = self.data[start : start + _CHUNK]
                at = np.searchsorted(wanted, part).clip(max=len(wanted) - 1)
                found[start : start + _CHUNK] = wanted[at] == part
            return found
        seen = set(ids)
        return np.array([i in seen for i in self], dtype=bool)


def _pack_ids(chunks: list[np.ndarray], plain: bool) -> IdColumn:
    """One column of the chunks, which are emptied on the way (no second copy of every id)."""
    if not chunks:
        return IdColumn(np.array([], dtype=np.bytes_))
    if not plain:
        return IdColumn(np.concatenate([c.astype(object) for c in chunks]))
    width = max(c.dtype.itemsize for c in chunks)
    out = np.empty(sum(c.shape[0] for c in chunks), dtype=f"S{width}")
    start = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        out[start : start + chunk.shape[0]] = chunk
        start += chunk.shape[0]
    return IdColumn(out)


@dataclass
class PredictionColumns:
    """The rows of a predictions file as columns, in file order (see :func:`read_columns`).

    Attributes
    ----------
    path : Path
    labels : list of str
    ids : IdColumn
    probs : ndarray of shape (n, K)
        Each parsed row divided by its sum (``P / P.sum(axis=1, keepdims=True)``,
        as ``to_arrays`` and ``apply`` compute it); NaN where ``probs`` is null or sums to 0.
    parsed : ndarray of shape (n,), bool
        Rows whose ``probs`` is not null.
    zero_sum : ndarray of shape (n,), bool
        Parsed rows whose probabilities sum to 0.
    gold : ndarray of shape (n,)
        Gold class index, -1 where the row has no gold label.
    content_free : ndarray of shape (n,), bool
        True for content-free probe rows, False for items.
    status : ndarray of shape (n,)
        Index of the row's status in :data:`~verbcal.predictions.STATUSES`.
    suspect : ndarray of shape (n,), bool
    calibrated : (str, str) or None
        ``(calibrated_by, id)`` of the first row that names a calibrator.
    unusual : list of Prediction
        The item rows whose status is not ``"ok"``, in file order.
    carries_signals : bool
        Whether a row has token probabilities or samples (which this form does not keep).
    """

    path: Path
    labels: list[str]
    ids: IdColumn
    probs: np.ndarray
    parsed: np.ndarray
    zero_sum: np.ndarray
    gold: np.ndarray
    content_free: np.ndarray
    status: np.ndarray
    suspect: np.ndarray
    calibrated: tuple[str, str] | None
    unusual: list[Prediction]
    carries_signals: bool

    def __len__(self) -> int:
        return len(self.ids)

    def kind_mask(self, kind: Kind) -> np.ndarray:
        """Which rows are of ``kind``."""
        return self.content_free if kind == CONTENT_FREE else ~self.content_free

    def arrays(self, *, kind: Kind = ITEM, prefer_labelled: bool = True) -> PredictionArrays:
        """The parsed rows of one kind as arrays: :func:`~verbcal.predictions.to_arrays`'s result.

        Raises
        ------
        InvalidInputError
            As ``to_arrays`` does: no rows of ``kind``, none parsed, or a row
            whose probabilities sum to 0.
        """
        chosen = self.kind_mask(kind)
        n_chosen = int(chosen.sum())
        if not n_chosen:
            raise InvalidInputError(f"there are no predictions of kind {kind!r}")
        parsed = self.parsed
        kept = chosen & parsed
        n_kept = int(kept.sum())
        if not n_kept:
            raise InvalidInputError(f"none of the {n_chosen} {kind} predictions could be parsed")
        labelled = kept & (self.gold >= 0)
        n_labelled, n_unlabelled = int(labelled.sum()), 0
        if prefer_labelled and 0 < n_labelled < n_kept:
            kept, n_unlabelled = labelled, n_kept - n_labelled
        every = n_kept == len(self) and not n_unlabelled
        zero = self.zero_sum & kept
        if zero.any():
            bad = self.ids[int(np.flatnonzero(zero)[0])]
            raise InvalidInputError(f"prediction {bad!r} has probabilities that sum to 0")
        del zero
        # Every row kept: shared, not copied (and no row numbers made).
        rows = slice(None) if every else np.flatnonzero(kept)
        P = self.probs if every else self.probs[rows]
        gold = self.gold if every else self.gold[rows]
        return PredictionArrays(
            labels=self.labels,
            ids=self.ids if every else self.ids[rows],
            P=P,
            y=gold.astype(np.int64) if (gold >= 0).all() else None,
            n_failed=n_chosen - int((chosen & parsed).sum()),
            n_unlabelled=n_unlabelled,
        )

    def parse_statuses(self) -> tuple[int, Counter, list[Prediction]]:
        """Item rows: how many, how many per status, and the ones not ``"ok"``."""
        items = ~self.content_free
        counts = np.bincount(self.status[items], minlength=len(STATUSES))
        statuses = Counter({s: int(c) for s, c in zip(STATUSES, counts, strict=True) if c})
        return int(items.sum()), statuses, self.unusual

    def n_suspect(self) -> int:
        """Item rows flagged as possible prompt injections."""
        return int((self.suspect & ~self.content_free).sum())

    def write_calibrated(self, out: str | os.PathLike, Q: np.ndarray, method: str) -> int:
        """Write the file again to ``out`` with the parsed rows' ``probs`` replaced by ``Q``.

        ``Q`` holds the calibrated rows of every parsed row, in file order;
        each gets ``calibrated_by: method``; unparsed rows are copied as they
        are. Rows are read and written one at a time; the file appears
        atomically. Returns the number of rows written.
        """
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0

        def write(handle) -> None:
            nonlocal written
            calibrated = iter(Q)
            for _, p in iter_predictions(self.path):
                if p.probs is not None:
                    row = next(calibrated)
                    p = replace(
                        p,
                        probs={label: float(q) for label, q in zip(self.labels, row, strict=True)},
                        calibrated_by=method,
                    )
                handle.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
                written += 1

        atomic_write(out, write)
        return written


def read_columns(path: str | os.PathLike, *, encoding: str = "utf-8") -> PredictionColumns:
    """Read a predictions JSONL file into columns, checking every line.

    The checks and error messages are :func:`~verbcal.predictions.read_predictions`'s,
    and the first error in file order is the one raised.

    Raises
    ------
    InvalidInputError
        Naming the file and line of the first malformed prediction (and both
        lines of a duplicate id).
    """
    path = Path(path)
    labels: list[str] = []
    chunks: list[np.ndarray] = []
    pending: list[str] = []
    plain_ids = True
    probs, gold = array("d"), array("i")
    lines = array("i")
    content_free, status, suspect = bytearray(), bytearray(), bytearray()
    status_code = {s: i for i, s in enumerate(STATUSES)}
    calibrated: tuple[str, str] | None = None
    unusual: list[Prediction] = []
    carries_signals = False
    nan_row: list[float] = []
    label_index: dict[str, int] = {}
    try:
        for number, p in iter_predictions(path, encoding=encoding):
            if not labels:
                labels = p.labels
                nan_row = [float("nan")] * len(labels)
                label_index = {label: i for i, label in enumerate(labels)}
            pending.append(p.id)
            plain_ids = plain_ids and not p.id.endswith("\x00")
            if len(pending) == _CHUNK:
                chunks.append(_encode_ids(pending, plain_ids))
                pending = []
            lines.append(number)
            probs.extend(nan_row if p.probs is None else [p.probs[label] for label in labels])
            gold.append(-1 if p.label is None else label_index[p.label])
            content_free.append(p.kind == CONTENT_FREE)
            status.append(status_code[p.status])
            suspect.append(bool(p.suspect))
            if calibrated is None and p.calibrated_by:
                calibrated = (p.calibrated_by, p.id)
            if p.kind == ITEM and p.status != "ok":
                unusual.append(p)
            if p.token_probs is not None or p.samples is not None:
                carries_signals = True
    except ParseError:
        # A duplicate id before the bad line is the error read_predictions raises.
        _check_unique(
            path,
            _pack_ids([*chunks, _encode_ids(pending, plain_ids)], plain_ids),
            np.frombuffer(content_free, dtype=bool),
            np.frombuffer(lines, dtype=np.intc),
        )
        raise
    if not lines:
        raise no_predictions_error(path)
    chunks.append(_encode_ids(pending, plain_ids))
    del pending
    ids = _pack_ids(chunks, plain_ids)
    P = np.frombuffer(probs, dtype=np.float64).reshape(-1, len(labels))  # no copy
    parsed = ~np.isnan(P[:, 0])
    sums = P.sum(axis=1, keepdims=True)
    zero_sum = parsed & (sums[:, 0] <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(P, sums, out=P)  # in place: the numbers of P / sums
    del sums
    kinds = np.frombuffer(content_free, dtype=bool).copy()
    _check_unique(path, ids, kinds, np.frombuffer(lines, dtype=np.intc))
    return PredictionColumns(
        path=path,
        labels=labels,
        ids=ids,
        probs=P,
        parsed=parsed,
        zero_sum=zero_sum,
        gold=np.frombuffer(gold, dtype=np.intc),
        content_free=kinds,
        status=np.frombuffer(status, dtype=np.uint8).copy(),
        suspect=np.frombuffer(suspect, dtype=bool).copy(),
        calibrated=calibrated,
        unusual=unusual,
        carries_signals=carries_signals,
    )


def _encode_ids(ids: list[str], plain: bool) -> np.ndarray:
    if plain:
        return np.array([i.encode("utf-8") for i in ids], dtype=np.bytes_)
    return np.array(ids, dtype=object)


def _check_unique(path: Path, ids: IdColumn, content_free: np.ndarray, lines: np.ndarray) -> None:
    """Raise for the first line (in file order) whose id repeats an earlier one of its kind."""
    worst: tuple[int, int, str] | None = None  # (line, first line, id)
    for kind in (False, True):
        mine = content_free[: len(ids)] == kind
        if mine.all():  # one kind only (the usual file): no copy of the ids
            rows, values = None, ids.data
        else:
            rows = np.flatnonzero(mine)
            values = ids.data[rows]
        if values.shape[0] < 2:
            continue
        ordered = np.sort(values)  # no repeat (the usual file): no row numbers made
        if not (ordered[1:] == ordered[:-1]).any():
            continue
        if rows is None:
            rows = np.arange(len(ids))
        order = np.argsort(values, kind="stable")
        ordered = values[order]
        repeat = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
        if not repeat.shape[0]:
            continue
        at = repeat[np.argmin(lines[rows[order[repeat]]])]
        start = at
        while start > 0 and ordered[start - 1] == ordered[at]:
            start -= 1
        line, first = int(lines[rows[order[at]]]), int(lines[rows[order[start]]])
        if worst is None or line < worst[0]:
            worst = (line, first, ids[int(rows[order[at]])])
    if worst is not None:
        raise duplicate_id_error(path, worst[0], worst[2], worst[1])


def read_compact(
    path: str | os.PathLike, *, encoding: str = "utf-8"
) -> PredictionColumns | list[Prediction]:
    """:func:`read_columns`, or :func:`~verbcal.predictions.read_predictions` when rows
    carry token probabilities or samples (which only the Prediction objects keep)."""
    columns = read_columns(path, encoding=encoding)
    return read_predictions(path, encoding=encoding) if columns.carries_signals else columns


def arrays_of(
    source: PredictionColumns | Sequence[Prediction],
    *,
    kind: Kind = ITEM,
    prefer_labelled: bool = True,
) -> PredictionArrays:
    """:func:`~verbcal.predictions.to_arrays` of predictions in either form."""
    if isinstance(source, PredictionColumns):
        return source.arrays(kind=kind, prefer_labelled=prefer_labelled)
    return to_arrays(source, kind=kind, prefer_labelled=prefer_labelled)


def has_kind(source: PredictionColumns | Sequence[Prediction], kind: Kind) -> bool:
    """Whether any row is of ``kind``."""
    if isinstance(source, PredictionColumns):
        return bool(source.kind_mask(kind).any())
    return any(p.kind == kind for p in source)


def labels_of(source: PredictionColumns | Sequence[Prediction]) -> list[str] | None:
    """The label set of the rows (None for no rows)."""
    if isinstance(source, PredictionColumns):
        return source.labels
    return source[0].labels if source else None


def first_calibrated(source: PredictionColumns | Sequence[Prediction]) -> tuple[str, str] | None:
    """``(calibrated_by, id)`` of the first row that was already calibrated, or None."""
    if isinstance(source, PredictionColumns):
        return source.calibrated
    done = next((p for p in source if p.calibrated_by), None)
    return None if done is None or done.calibrated_by is None else (done.calibrated_by, done.id)


def fitted_mask(ids: Sequence[str], fitted_ids: Sequence[str]) -> np.ndarray:
    """Which of ``ids`` are among ``fitted_ids`` (a boolean array)."""
    if isinstance(ids, IdColumn):
        return ids.isin(fitted_ids)
    seen = set(fitted_ids)
    return np.array([i in seen for i in ids], dtype=bool)
