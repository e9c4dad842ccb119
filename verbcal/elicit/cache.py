"""A durable store of model responses, keyed by a hash of the full request.

Every answer a run paid for is written to SQLite and committed before the
caller sees it, so a rerun (after a crash, a ``kill -9`` or a finished run)
asks the endpoint nothing it already has.

The key is the SHA-256 of the request as canonical JSON: sorted keys, no
whitespace, and whole-number floats written as integers (``temperature=0``
and ``temperature=0.0`` are the same request). The request is everything that
can change the answer — base URL, model, messages, temperature, max tokens,
response format, seed, ``n``, logprob settings and any other parameter — and
never the API key, which only says who pays.

Concurrency: each :class:`ResponseCache` has a writing and a reading connection
(in WAL mode a lookup need not wait for a commit), each guarded by a lock, so
threads and asyncio tasks (through ``asyncio.to_thread``) can share it; separate
processes may open the same file, SQLite's WAL journal and busy timeout
serialise their writes. Commits use ``synchronous=FULL``: a committed row
survives the process being killed and the machine losing power.

Group commit: a durable commit costs a few milliseconds of ``fsync``, so one
commit per answer would cap a run at a few hundred answers a second. Writers
that call :meth:`ResponseCache.put` at the same time share commits instead: the
first becomes the *leader* and commits its row; rows that arrive meanwhile wait,
and the next leader commits all of them in one transaction. Every caller still
returns only after the transaction holding its row is committed. A caller that
collects answers itself commits them together with :meth:`ResponseCache.put_many`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from verbcal.errors import ConfigurationError, InvalidInputError

__all__ = ["SCHEMA_VERSION", "ResponseCache", "encode_request", "request_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""

#: Tables of batch jobs (:mod:`verbcal.elicit.batch`), in the same file as the responses
#: so that a batch is recorded, and its answers stored, in one place. ``batch_files``:
#: one row per request file (its local path, provider file id, batch id and state,
#: recorded before anything waits on it). ``batch_requests``: one row per request
#: sent, keyed by its cache key, naming the file it went out in. Created when a cache
#: is opened, so caches written before they existed open unchanged (version 1 -> 2).
_BATCH_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS batch_files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    base_url TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    state TEXT NOT NULL,
    path TEXT,
    n_requests INTEGER NOT NULL,
    n_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    output_path TEXT,
    error_path TEXT,
    note TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
)
""",
    """
CREATE TABLE IF NOT EXISTS batch_requests (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    file INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT
)
""",
    "CREATE INDEX IF NOT EXISTS batch_requests_by_file ON batch_requests (file, state)",
)

#: ``PRAGMA user_version`` of a cache with every table above.
SCHEMA_VERSION = 2

_EXACT_INT = 2**53

_INSERT = (
    "INSERT INTO responses (key, request, response, created) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(key) DO NOTHING"
)


@dataclass
class _PendingRow:
    """A row waiting for a group commit; the leader that commits it sets ``done``."""

    values: tuple[str, str, str, float]
    done: bool = False
    error: sqlite3.Error | None = None


def _canonical(value: Any) -> Any:
    """``value`` with whole-number floats as ints, so equal requests serialise equally."""
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INT:
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def canonical_json(request: Mapping[str, Any]) -> str:
    """The request as canonical JSON text (the text the cache key hashes)."""
    try:
        return json.dumps(
            _canonical(request),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"request cannot be written as JSON: {exc}") from None


def encode_request(request: Mapping[str, Any]) -> tuple[str, str]:
    """The key of ``request`` and its canonical JSON text, serialising it once.

    For a caller that stores the request after looking it up
    (:meth:`ResponseCache.put_encoded` takes the text as it is).

    Examples
    --------
    >>> key, text = encode_request({"model": "m", "temperature": 0.0})
    >>> text, key == request_key({"temperature": 0, "model": "m"})
    ('{"model":"m","temperature":0}', True)
    """
    if not isinstance(request, Mapping):
        raise InvalidInputError(f"request must be a mapping, got {type(request).__name__}")
    text = canonical_json(request)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), text


def request_key(request: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of ``request``.

    Parameters
    ----------
    request : mapping
        The full request: base URL, model, messages and every parameter sent.

    Returns
    -------
    str
        64 hexadecimal characters.

    Examples
    --------
    >>> a = request_key({"model": "m", "temperature": 0, "messages": []})
    >>> a == request_key({"messages": [], "temperature": 0.0, "model": "m"})
    True
    >>> a == request_key({"model": "m", "temperature": 0.5, "messages": []})
    False
    """
    return encode_request(request)[0]


class ResponseCache:
    """Responses stored in an SQLite file, one row per distinct request.

    Parameters
    ----------
    path : str or os.PathLike
        The database file; created with its table if missing. ``":memory:"``
        gives a cache that lives as long as the object.
    timeout : float, default 30.0
        Seconds to wait for another process's write lock before failing.

    Examples
    --------
    >>> cache = ResponseCache(":memory:")
    >>> request = {"base_url": "http://127.0.0.1:8080/v1", "model": "m", "messages": []}
    >>> cache.get(request) is None
    True
    >>> key = cache.put(request, {"choices": [{"message": {"content": "hi"}}]})
    >>> cache.get(request)["choices"][0]["message"]["content"], len(cache)
    ('hi', 1)
    >>> cache.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive, got {timeout!r}")
        self.path = os.fspath(path)
        #: Transactions committed so far (fewer than rows stored when writers overlap).
        self.commits = 0
        self._lock = threading.Lock()  # guards the writing connection
        self._writes = threading.Condition()  # guards the pending rows and the leader flag
        self._pending: list[_PendingRow] = []
        self._leader_busy = False
        try:
            self._conn = self._open_writer(timeout)
            self._reader, self._read_lock = self._open_reader(timeout)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open response cache {self.path!r}: {exc}") from None

    def _open_writer(self, timeout: float) -> sqlite3.Connection:
        """The writing connection, with WAL on and the table created.

        Two processes creating the same new file can get "database is locked"
        at once, without SQLite waiting for ``timeout`` (switching to WAL takes
        an exclusive lock that its busy handler does not always wait for), so
        the setup is retried until ``timeout`` has passed.
        """
        deadline = time.monotonic() + timeout
        while True:
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(_SCHEMA)
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    for statement in _BATCH_SCHEMA:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def _open_reader(self, timeout: float) -> tuple[sqlite3.Connection, threading.Lock]:
        """A second connection for reads, so lookups need not wait for a commit's fsync.

        WAL lets it read the last committed state while the writer commits. An
        in-memory database exists only in its one connection, which then does both.
        """
        if self.path in ("", ":memory:"):
            return self._conn, self._lock
        reader = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        return reader, threading.Lock()

    def get(self, request: Mapping[str, Any]) -> dict | None:
        """The stored response to ``request``, or None when it was never stored."""
        return self.get_by_key(request_key(request))

    def get_by_key(self, key: str) -> dict | None:
        """The stored response under ``key`` (see :func:`request_key`), or None."""
        with self._read_lock:
            row = self._reader.execute(
                "SELECT response FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, request: Mapping[str, Any], response: Mapping[str, Any]) -> str:
        """Store ``response`` for ``request`` and commit it; return the key.

        A request already stored keeps its first response, so every reader
        sees one answer per request. Concurrent calls share one commit (see the
        module docstring); each returns once its row is durable.
        """
        return self.put_many([(request, response)])[0]

    def put_many(self, pairs: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]]) -> list[str]:
        """Store ``(request, response)`` pairs in one transaction; return their keys.

        Like :meth:`put` for each pair, with one commit for all of them (shared
        with concurrent callers): the caller that collects answers in batches
        pays one ``fsync`` per batch.

        Examples
        --------
        >>> with ResponseCache(":memory:") as cache:
        ...     keys = cache.put_many([({"seed": 1}, {"a": 1}), ({"seed": 2}, {"a": 2})])
        ...     len(keys), len(cache), cache.commits
        (2, 2, 1)
        """
        return self.put_encoded(self._encode(request, response) for request, response in pairs)

    def put_encoded(self, entries: Iterable[tuple[str, str, str]]) -> list[str]:
        """:meth:`put_many` for rows already encoded: ``(key, request JSON, response JSON)``.

        For a caller that holds the key and canonical text of each request
        (:func:`encode_request`) and each response as the JSON text it received,
        so nothing is serialised twice. The key must be the one
        :func:`encode_request` gives for the request text, and the response text
        valid JSON: neither is checked.
        """
        created = time.time()
        rows = [
            _PendingRow((key, request, response, created)) for key, request, response in entries
        ]
        if not rows:
            return []
        with self._writes:
            self._pending.extend(rows)
            while not rows[0].done:  # appended together, so committed in the same batch
                if self._leader_busy:
                    self._writes.wait()
                else:
                    self._lead_commit()
        error = rows[0].error  # the batch's, shared by every row in it
        if error is not None:
            raise type(error)(f"response cache {self.path!r}: {error}")
        return [row.values[0] for row in rows]

    @staticmethod
    def _encode(request: Mapping[str, Any], response: Mapping[str, Any]) -> tuple[str, str, str]:
        key, request_text = encode_request(request)
        try:
            response_text = json.dumps(response, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"response cannot be written as JSON: {exc}") from None
        return key, request_text, response_text

    def _lead_commit(self) -> None:
        """Commit every pending row in one transaction (called holding ``_writes``)."""
        batch, self._pending = self._pending, []
        self._leader_busy = True
        self._writes.release()  # rows arriving during the commit queue for the next one
        error = None
        try:
            self._commit_rows([row.values for row in batch])
        except sqlite3.Error as exc:
            error = exc
        finally:
            self._writes.acquire()
            self._leader_busy = False
        for row in batch:
            row.done, row.error = True, error
        self._writes.notify_all()

    def _commit_rows(self, rows: list[tuple[str, str, str, float]]) -> None:
        with self._lock:
            # IMMEDIATE takes the write lock up front (waiting up to the busy timeout
            # for other processes), so the transaction cannot fail half-way on a lock.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self.commits += 1

    def __contains__(self, request: Mapping[str, Any]) -> bool:
        return self.get(request) is not None

    def __len__(self) -> int:
        with self._read_lock:
            return self._reader.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def keys(self) -> Iterator[str]:
        """The keys of every stored response, oldest first."""
        with self._read_lock:
            rows = self._reader.execute("SELECT key FROM responses ORDER BY created").fetchall()
        return iter([row[0] for row in rows])

    def close(self) -> None:
        """Close the connections (every row is already committed)."""
        with self._lock:
            self._conn.close()
        with self._read_lock:  # the same connection and lock for ":memory:"; closing twice is fine
            self._reader.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({self.path!r})"
