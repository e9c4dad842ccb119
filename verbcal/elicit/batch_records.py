"""Batch jobs recorded in the response cache: request files, their batches, their requests.

The tables (``batch_files``, ``batch_requests``) live in the cache file next to
the responses (:mod:`verbcal.elicit.cache` creates them). Every step of a batch
job is committed here *before* the step that depends on it starts, so a process
killed at any point resumes from the file alone:

========== ===================================================================
state      meaning (of a ``batch_files`` row)
========== ===================================================================
built      request file written and fsynced (``path``); nothing sent yet
uploading  an upload started; it may have reached the provider (look it up)
uploaded   the provider holds it as ``file_id``
creating   a batch create started; it may exist (look it up by ``file_id``)
submitted  batch ``batch_id`` exists; ``status`` is the provider's last word
exported   written out for another engine (``vllm run-batch``)
collected  every result read into the cache; nothing more to fetch
========== ===================================================================

A ``batch_requests`` row is one request (keyed by its cache key, which is the
line's ``custom_id``) and the file it last went out in; its state is
``pending`` (out, no result yet), ``answered`` (response in the cache),
``retry`` (failed in a way another attempt may fix: expired, 429, 5xx) or
``failed`` (failed for good, e.g. HTTP 400, or its batch was cancelled; a new
``--batch`` run may send it again).

:class:`RequestFileWriter` streams request lines into files under the
provider's limits (50,000 requests, 200 MB): memory stays flat however many
requests there are.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verbcal.elicit.cache import ResponseCache
from verbcal.errors import ConfigurationError, InvalidInputError

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_FILE_REQUESTS",
    "BatchFile",
    "BatchRecords",
    "RequestFileWriter",
    "request_line",
]

#: At most this many requests per batch input file (OpenAI ``batch_create_params.py``).
MAX_FILE_REQUESTS = 50_000
#: At most this many bytes per batch input file ("up to 200 MB", same source).
MAX_FILE_BYTES = 200 * 1000 * 1000

#: States of a request file, in order.
FILE_STATES = (
    "built",
    "uploading",
    "uploaded",
    "creating",
    "submitted",
    "exported",
    "collected",
)


@dataclass(frozen=True)
class BatchFile:
    """One ``batch_files`` row (see the module docstring for ``state``)."""

    id: int
    base_url: str
    endpoint: str
    state: str
    path: str | None
    n_requests: int
    n_bytes: int
    sha256: str
    file_id: str | None
    batch_id: str | None
    status: str | None
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    output_path: str | None
    error_path: str | None
    note: str | None
    created: float
    updated: float

    @property
    def upload_name(self) -> str:
        """The filename it is uploaded under: unique, so a lost upload can be found again."""
        return f"verbcal-{self.id}-{self.sha256[:16]}-{int(self.created * 1e6)}.jsonl"


def request_line(key: str, endpoint: str, body: Mapping[str, Any]) -> str:
    """One batch input line: ``custom_id`` (the cache key), ``method``, ``url``, ``body``.

    Examples
    --------
    >>> request_line("k1", "/v1/chat/completions", {"model": "m", "messages": []})
    '{"custom_id":"k1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}\\n'
    """
    row = {"custom_id": key, "method": "POST", "url": endpoint, "body": body}
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False) + "\n"


class BatchRecords:
    """The batch tables of a response cache, on a connection of their own.

    Parameters
    ----------
    cache : ResponseCache
        An on-disk cache (its file holds the tables); ``":memory:"`` is refused,
        since a batch outlives the process.
    """

    def __init__(self, cache: ResponseCache) -> None:
        if cache.path in ("", ":memory:"):
            raise ConfigurationError("batch jobs need an on-disk response cache (--cache FILE)")
        self.cache = cache
        self.path = cache.path
        self.spool = Path(f"{cache.path}.batch")
        self.conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self.conn.execute("PRAGMA synchronous=FULL")
        self._lock_depth = 0
        self._lock_file: Any = None

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the batch lock of this cache (re-entrant): one process at a time submits,
        collects or re-queues, so two at once cannot both create a batch for one file.

        An advisory ``flock`` on ``CACHE.batch/lock``: the kernel drops it when the
        process dies, however it dies. (Not on Windows, which has no ``fcntl``.)
        """
        if self._lock_depth == 0:
            self.spool.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.spool / "lock", "w")  # noqa: SIM115 (closed below)
            try:
                import fcntl
            except ImportError:  # pragma: no cover - Windows
                pass
            else:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                self._lock_file.close()  # releases the lock
                self._lock_file = None

    # ------------------------------------------------------------------ files

    def files(self, *states: str) -> list[BatchFile]:
        """Request files in any of ``states`` (all when none is named), oldest first."""
        sql = "SELECT * FROM batch_files"
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
        rows = self.conn.execute(sql + " ORDER BY id", states).fetchall()
        return [BatchFile(*row) for row in rows]

    def file(self, file_row: int) -> BatchFile:
        row = self.conn.execute("SELECT * FROM batch_files WHERE id = ?", (file_row,)).fetchone()
        if row is None:
            raise InvalidInputError(f"{self.path}: no batch file #{file_row}")
        return BatchFile(*row)

    def update_file(self, file_row: int, **fields: Any) -> BatchFile:
        """Set columns of a file row and commit (durably) before returning it."""
        fields["updated"] = time.time()
        names = ", ".join(f"{name} = ?" for name in fields)
        self.conn.execute(
            f"UPDATE batch_files SET {names} WHERE id = ?", (*fields.values(), file_row)
        )
        return self.file(file_row)

    # ------------------------------------------------------------------ requests

    def request_counts(self, file_row: int | None = None) -> dict[str, int]:
        """Requests by state, of one file or of all."""
        sql = "SELECT state, COUNT(*) FROM batch_requests"
        args: tuple = ()
        if file_row is not None:
            sql, args = sql + " WHERE file = ?", (file_row,)
        return dict(self.conn.execute(sql + " GROUP BY state", args).fetchall())

    def sent(self, keys: Iterable[str]) -> dict[str, tuple[int, str]]:
        """``key -> (file row, state)`` for those of ``keys`` that were ever sent."""
        keys = list(keys)
        out: dict[str, tuple[int, str]] = {}
        for start in range(0, len(keys), 900):
            chunk = keys[start : start + 900]
            rows = self.conn.execute(
                "SELECT key, file, state FROM batch_requests "
                f"WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            out.update({key: (file, state) for key, file, state in rows})
        return out

    def store_results(
        self,
        answers: Iterable[tuple[str, str]],
        states: Iterable[tuple[str, str | None, str]],
    ) -> None:
        """Store ``(key, response JSON)`` answers and ``(state, error, key)`` states at once.

        Each answer becomes a row of the cache's ``responses`` table with the
        request text recorded when it was sent: the row an interactive answer
        gets (:meth:`ResponseCache.put_encoded`), and like it, a key already
        answered keeps its first response. The request text is copied inside
        SQLite, never read back into Python, and answers and states commit together.
        """
        now = time.time()
        with self._transaction():
            self.conn.executemany(
                "INSERT INTO responses (key, request, response, created) "
                "SELECT key, request, ?, ? FROM batch_requests WHERE key = ? "
                "ON CONFLICT(key) DO NOTHING",
                ((response, now, key) for key, response in answers),
            )
            self.conn.executemany(
                "UPDATE batch_requests SET state = ?, error = ? WHERE key = ?", states
            )

    def set_request_states(self, rows: Iterable[tuple[str, str | None, str]]) -> None:
        """Commit ``(state, error, key)`` updates in one transaction."""
        with self._transaction():
            self.conn.executemany(
                "UPDATE batch_requests SET state = ?, error = ? WHERE key = ?", rows
            )

    def close_file(self, file_row: int, missing_state: str, missing_error: str) -> int:
        """Mark a file collected; its requests still ``pending`` get ``missing_state``.

        Returns how many requests had no result line.
        """
        with self._transaction():
            cursor = self.conn.execute(
                "UPDATE batch_requests SET state = ?, error = ? "
                "WHERE file = ? AND state = 'pending'",
                (missing_state, missing_error, file_row),
            )
            self.conn.execute(
                "UPDATE batch_files SET state = 'collected', updated = ? WHERE id = ?",
                (time.time(), file_row),
            )
        return cursor.rowcount

    def retry_pages(
        self, max_attempts: int | None = None, page: int = 2000
    ) -> Iterator[list[tuple[str, str, str]]]:
        """Requests to send again, a page of ``(key, request JSON, base URL)`` at a time.

        State ``retry`` (with fewer than ``max_attempts`` attempts, when given),
        oldest first. Paged by rowid, so memory stays flat however many there are,
        and rows the caller moves or answers meanwhile are not visited again.
        """
        last = 0
        limit = max_attempts if max_attempts is not None else 2**62
        while True:
            rows = self.conn.execute(
                "SELECT r.rowid, r.key, r.request, f.base_url FROM batch_requests r "
                "JOIN batch_files f ON f.id = r.file "
                "WHERE r.state = 'retry' AND r.attempts < ? AND r.rowid > ? "
                "ORDER BY r.rowid LIMIT ?",
                (limit, last, page),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(key, request, base_url) for _, key, request, base_url in rows]

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on a connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


class RequestFileWriter:
    """Stream requests into request files under the limits, recording each file and request.

    Each file is written, fsynced and renamed into the spool folder
    (``CACHE.batch/``) inside one transaction that also records the file
    (state ``built``) and its requests: a process killed while writing leaves
    nothing recorded (and :meth:`BatchRecords` ignores the orphan file).

    A request already recorded as ``pending``, ``retry`` or ``answered`` is not
    added again (:meth:`add` returns False); one that ``failed`` is moved to the
    new file (``attempts`` + 1).

    Parameters
    ----------
    records : BatchRecords
    base_url : str
        The endpoint the requests are for (part of their cache keys).
    endpoint : str, default "/v1/chat/completions"
    max_requests, max_bytes : int
        Limits of one file (default: OpenAI's 50,000 requests and 200 MB).
    """

    def __init__(
        self,
        records: BatchRecords,
        base_url: str,
        *,
        endpoint: str = "/v1/chat/completions",
        max_requests: int = MAX_FILE_REQUESTS,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        for name, value in (("max_requests", max_requests), ("max_bytes", max_bytes)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        self.records = records
        self.base_url = base_url
        self.endpoint = endpoint
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.written: list[int] = []
        self._file_row: int | None = None
        self._handle: Any = None
        self._tmp: Path | None = None
        self._count = 0
        self._bytes = 0
        self._sha = hashlib.sha256()

    def add(self, key: str, request_text: str, body: Mapping[str, Any]) -> bool:
        """Add one request (its key, canonical request JSON and body); False when already out."""
        line = request_line(key, self.endpoint, body).encode("utf-8")
        if len(line) > self.max_bytes:
            raise InvalidInputError(
                f"one request line is {len(line)} bytes, over the {self.max_bytes}-byte file limit"
            )
        if self._file_row is not None and (
            self._count + 1 > self.max_requests or self._bytes + len(line) > self.max_bytes
        ):
            self.finish()
        if self._file_row is None:
            self._open()
        assert self._file_row is not None
        cursor = self.records.conn.execute(
            "INSERT INTO batch_requests (key, request, file, state) VALUES (?, ?, ?, 'pending') "
            "ON CONFLICT(key) DO UPDATE SET file = excluded.file, state = 'pending', "
            "attempts = attempts + 1, error = NULL WHERE state IN ('failed', 'retry')",
            (key, request_text, self._file_row),
        )
        if cursor.rowcount == 0:
            return False
        self._handle.write(line)
        self._sha.update(line)
        self._count += 1
        self._bytes += len(line)
        return True

    def _open(self) -> None:
        self.records.spool.mkdir(parents=True, exist_ok=True)
        self.records.conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        cursor = self.records.conn.execute(
            "INSERT INTO batch_files (base_url, endpoint, state, n_requests, n_bytes, sha256, "
            "created, updated) VALUES (?, ?, 'building', 0, 0, '', ?, ?)",
            (self.base_url, self.endpoint, now, now),
        )
        self._file_row = cursor.lastrowid
        self._tmp = self.records.spool / f"requests-{self._file_row}.jsonl.tmp"
        self._handle = open(self._tmp, "wb")  # noqa: SIM115 (closed in finish)
        self._count = self._bytes = 0
        self._sha = hashlib.sha256()

    def finish(self) -> None:
        """Close the current file: fsync it, rename it into place and commit its records."""
        if self._file_row is None:
            return
        assert self._tmp is not None
        conn = self.records.conn
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            if self._count == 0:  # every request was already out
                os.remove(self._tmp)
                conn.execute("ROLLBACK")
            else:
                final = self._tmp.with_suffix("")
                os.replace(self._tmp, final)
                conn.execute(
                    "UPDATE batch_files SET state = 'built', path = ?, n_requests = ?, "
                    "n_bytes = ?, sha256 = ? WHERE id = ?",
                    (str(final), self._count, self._bytes, self._sha.hexdigest(), self._file_row),
                )
                conn.execute("COMMIT")
                self.written.append(self._file_row)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            self._file_row = None

    def abort(self) -> None:
        """Drop the file being written (nothing of it is recorded)."""
        if self._file_row is None:
            return
        self._handle.close()
        if self._tmp is not None and self._tmp.exists():
            os.remove(self._tmp)
        if self.records.conn.in_transaction:
            self.records.conn.execute("ROLLBACK")
        self._file_row = None

    def __enter__(self) -> RequestFileWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()
