"""Large runs on a provider's batch engine (OpenAI Batch API, Azure, ``vllm run-batch``).

Instead of holding a process open for hours at the edge of a rate limit,
:class:`BatchJobs` writes the requests an elicitation needs into JSONL files,
uploads them (``/v1/files``, purpose ``batch``), creates one batch per file
(``/v1/batches``, ``completion_window: "24h"``) and later reads the results
back into the response cache. Nothing downstream changes: every line's
``custom_id`` is the request's cache key, made by the same
:meth:`OpenAIBackend.prepare <verbcal.elicit.backend.OpenAIBackend.prepare>`
as an interactive request, and each answer that passes the same
:func:`~verbcal.elicit.backend.check_reply` becomes the same cache row an
interactive answer would (key, request text, response). An ordinary
``verbcal elicit`` afterwards finds every answer in the cache, sends nothing,
and writes the same predictions file an interactive run would have.

Resuming: every step is recorded in the cache file before the next one starts
(:mod:`verbcal.elicit.batch_records`). A process killed while uploading finds
its upload again by its unique filename (or uploads again: a file alone runs
nothing); killed after creating a batch but before recording it, it finds the
batch by its input file id instead of creating a second one; killed while
polling, it polls again; killed while collecting, it reads the result files it
already downloaded (an answer stored twice keeps the first). A request is sent
again only after its result said it failed in a way that may pass next time
(expired, 408/409/429/5xx, malformed), at most ``max_attempts`` times in all.

Sources: the input-file limits and ``completion_window`` from openai-python
``types/batch_create_params.py``; statuses and ``request_counts`` from
``types/batch.py``; the line formats from vLLM ``entrypoints/openai/protocol.py``
(``BatchRequestInput``, ``BatchRequestOutput``), which ``vllm run-batch`` reads
and writes as OpenAI does.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import shutil
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai

from verbcal.elicit.backend import LOOPBACK_API_KEY, OpenAIBackend, check_reply
from verbcal.elicit.batch_records import (
    MAX_FILE_BYTES,
    MAX_FILE_REQUESTS,
    BatchFile,
    BatchRecords,
    RequestFileWriter,
)
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.provider_errors import error_message, quota_exhausted
from verbcal.elicit.retry import RETRYABLE_STATUS, AttemptError, RequestFailedError, classify_error
from verbcal.errors import BackendError, ConfigurationError, InvalidInputError

__all__ = [
    "FALLBACKS",
    "TERMINAL_STATUSES",
    "BatchJobs",
    "BuildSummary",
    "CollectSummary",
    "classify_result_line",
]

#: Batch statuses after which nothing more happens (openai-python ``types/batch.py``).
TERMINAL_STATUSES = frozenset({"completed", "expired", "cancelled", "failed"})
#: Where requests that failed in a retryable way go: a new batch, or the interactive path.
FALLBACKS = ("batch", "interactive")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
F = TypeVar("F", bound=Callable[..., Any])


def _exclusive(method: F) -> F:
    """Run a :class:`BatchJobs` method holding the cache's batch lock."""

    @functools.wraps(method)
    def locked(self: BatchJobs, *args: Any, **kwargs: Any) -> Any:
        with self.records.exclusive():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


_INGEST_CHUNK = 5000  # result lines read, stored and committed together


@dataclass
class BuildSummary:
    """What :meth:`BatchJobs.build` did with the requests it was given."""

    requests: int = 0
    cached: int = 0
    already_out: int = 0
    added: int = 0
    files: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.requests} requests: {self.cached} already answered in the cache, "
            f"{self.already_out} already in a batch, {self.added} written to "
            f"{len(self.files)} new request file(s)"
        )


@dataclass
class CollectSummary:
    """What reading result files into the cache did, line by line."""

    lines: int = 0
    answered: int = 0
    retry: int = 0
    failed: int = 0
    missing: int = 0
    unexpected: int = 0
    unreadable: int = 0
    requeued: int = 0
    interactive: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        text = (
            f"{self.lines} result lines: {self.answered} answers stored, {self.retry} to retry, "
            f"{self.failed} failed for good, {self.missing} requests without a result line"
        )
        if self.unexpected or self.unreadable:
            text += (
                f"; {self.unexpected} lines for requests not sent in that batch and "
                f"{self.unreadable} unreadable lines were left out"
            )
        if self.requeued:
            text += f"; {self.requeued} requests queued again in a new batch"
        if self.interactive:
            text += f"; {self.interactive} requests sent interactively"
        return text


def classify_result_line(row: object) -> tuple[str, Any]:
    """What one result line says: ``("ok", body)``, ``("retry", why)`` or ``("failed", why)``.

    A line is ``{"id", "custom_id", "response": {"status_code", "request_id",
    "body"}, "error"}``. A 200 whose body :func:`~verbcal.elicit.backend.check_reply`
    accepts is an answer; a malformed 200, 408/409/429/5xx and
    ``error.code`` ``batch_expired`` or ``request_timeout`` may pass another
    time; any other status (400, 401, quota…) and ``batch_cancelled`` are final.

    Examples
    --------
    >>> classify_result_line({"response": None, "error": {"code": "batch_expired",
    ...                       "message": "not executed in time"}})
    ('retry', 'batch_expired: not executed in time')
    >>> classify_result_line({"response": {"status_code": 400, "body": {"error": {
    ...     "message": "Invalid 'seed'"}}}, "error": None})
    ('failed', "HTTP 400: Invalid 'seed'")
    """
    if not isinstance(row, Mapping):
        return "retry", "the result line is not a JSON object"
    response, error = row.get("response"), row.get("error")
    if isinstance(response, Mapping) and isinstance(response.get("status_code"), int):
        status, body = response["status_code"], response.get("body")
        if status == 200:
            try:
                return "ok", check_reply(body)
            except AttemptError as exc:
                return "retry", exc.reason
        message = f"HTTP {status}: {error_message(body, 'no message')}"
        if quota_exhausted(body):
            return "failed", f"{message} (quota exhausted)"
        retryable = status in RETRYABLE_STATUS or status >= 500
        return ("retry" if retryable else "failed"), message
    if isinstance(error, Mapping):
        code, message = error.get("code"), error.get("message") or ""
        if code == "batch_cancelled":
            return "failed", f"batch_cancelled: {message}"
        return "retry", f"{code}: {message}"
    return "retry", "the result line has neither a response nor an error"


class BatchJobs:
    """Batch jobs recorded in a response cache: build, submit, follow, collect, cancel.

    Parameters
    ----------
    cache : ResponseCache
        An on-disk cache: its file holds the answers and the batch records.
    api_key : str, optional
        For the provider's Files and Batches endpoints; defaults to
        ``$OPENAI_API_KEY`` (a loopback base URL may go without).
    max_requests, max_bytes : int
        Limits of one request file (OpenAI: 50,000 requests, 200 MB).
    max_attempts : int, default 3
        Times a request may go out in a batch before it is left to the
        interactive path.
    timeout : float, default 600.0
        Seconds one HTTP call to the Files/Batches endpoints may take.
    call_attempts : int, default 6
        Attempts of a call that is safe to repeat (listing, polling, downloading)
        when it fails in a retryable way, with exponential back-off between them.
    progress : callable, optional
        Called with one line of text about what is happening (default: nothing).

    Examples
    --------
    >>> import os, tempfile
    >>> from verbcal.elicit.cache import encode_request
    >>> base_url = "http://127.0.0.1:9/v1"
    >>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    >>> key, text = encode_request({"base_url": base_url, **body})  # as OpenAIBackend.prepare
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with ResponseCache(os.path.join(folder, "c.db")) as cache:
    ...         jobs = BatchJobs(cache)
    ...         summary = jobs.build([(key, text, body)], base_url)
    ...         files = jobs.records.files()
    ...         jobs.close()
    >>> summary.added, [(f.state, f.n_requests) for f in files]
    (1, [('built', 1)])
    """

    def __init__(
        self,
        cache: ResponseCache,
        *,
        api_key: str | None = None,
        max_requests: int = MAX_FILE_REQUESTS,
        max_bytes: int = MAX_FILE_BYTES,
        max_attempts: int = 3,
        timeout: float = 600.0,
        call_attempts: int = 6,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        for name, value in (("max_attempts", max_attempts), ("call_attempts", call_attempts)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        self.cache = cache
        self.records = BatchRecords(cache)
        self.api_key = api_key
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.call_attempts = call_attempts
        self.progress = progress or (lambda line: None)
        self._clients: dict[str, openai.OpenAI] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self.records.close()

    def __enter__(self) -> BatchJobs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ building

    @_exclusive
    def build(
        self, requests: Iterable[tuple[str, str, Mapping[str, Any]]], base_url: str
    ) -> BuildSummary:
        """Write ``(key, request JSON, body)`` requests not yet answered nor out into files.

        Streams: one line at a time goes to disk, files close at the limits.
        """
        summary = BuildSummary()
        with RequestFileWriter(
            self.records, base_url, max_requests=self.max_requests, max_bytes=self.max_bytes
        ) as writer:
            for key, request_text, body in requests:
                summary.requests += 1
                if self.cache.get_by_key(key) is not None:
                    summary.cached += 1
                elif writer.add(key, request_text, body):
                    summary.added += 1
                else:
                    summary.already_out += 1
        summary.files = writer.written
        return summary

    def build_from_elicitor(
        self, backend: OpenAIBackend, elicitor: Any, items: Iterable[Any]
    ) -> BuildSummary:
        """:meth:`build` for every request ``elicitor`` would send for ``items``."""

        def requests():
            for item in items:
                for messages, kwargs in elicitor.requests(item):
                    body, key, request_text = backend.prepare(messages, **kwargs)
                    yield key, request_text, body

        return self.build(requests(), backend.base_url)

    # ------------------------------------------------------------------ the provider

    def client(self, base_url: str) -> openai.OpenAI:
        """A client for ``base_url`` (the SDK's own retries off: each step decides)."""
        if base_url not in self._clients:
            key = self.api_key or os.environ.get("OPENAI_API_KEY")
            if not key:
                if urllib.parse.urlsplit(base_url).hostname not in _LOOPBACK_HOSTS:
                    raise ConfigurationError(
                        f"no API key for {base_url}: set OPENAI_API_KEY or pass api_key="
                    )
                key = LOOPBACK_API_KEY
            self._clients[base_url] = openai.OpenAI(
                base_url=base_url, api_key=key, timeout=self.timeout, max_retries=0
            )
        return self._clients[base_url]

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """``call()`` with retries on retryable errors (for calls that are safe to repeat)."""
        attempts = self.call_attempts
        for attempt in range(attempts):
            try:
                return call()
            except openai.APIError as exc:
                error = classify_error(exc)
                if not error.retryable or attempt == attempts - 1:
                    raise BackendError(f"{what}: {error.reason}") from None
                wait = error.retry_after or min(30.0, 0.5 * 2**attempt) * random.random()
                self.progress(f"{what}: {error.reason}; trying again in {wait:.1f} s")
                time.sleep(wait)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ submitting

    @_exclusive
    def submit(self) -> list[BatchFile]:
        """Upload every built file and create its batch; return the files submitted now."""
        done = []
        for f in self.records.files("built", "uploading", "uploaded", "creating"):
            if f.state in ("built", "uploading"):
                f = self._upload(f)
            f = self._create(f)
            done.append(f)
            self.progress(f"submitted {f.n_requests} requests as {f.batch_id} ({f.status})")
        return done

    def _upload(self, f: BatchFile) -> BatchFile:
        client = self.client(f.base_url)
        if f.state == "uploading":  # a past upload may have reached the provider
            found = self._find_upload(client, f)
            if found is not None:
                return self.records.update_file(f.id, state="uploaded", file_id=found)
        if f.path is None or not os.path.exists(f.path):
            raise InvalidInputError(f"request file #{f.id} is gone from {f.path}: build it again")
        path = f.path
        f = self.records.update_file(f.id, state="uploading")

        def send() -> str:
            with open(path, "rb") as handle:
                uploaded = client.files.create(
                    file=(f.upload_name, handle, "application/jsonl"), purpose="batch"
                )
            return str(uploaded.id)

        file_id = self._send_once(
            f"uploading request file #{f.id}", send, lambda: self._find_upload(client, f)
        )
        return self.records.update_file(f.id, state="uploaded", file_id=file_id)

    def _send_once(self, what: str, send: Callable[[], Any], find: Callable[[], Any]) -> Any:
        """``send()``, and after a failure that may not be final, ``find()`` its effect
        (an upload or batch the provider made although the reply was lost) before
        sending again: what is sent is never made twice."""
        for attempt in range(self.call_attempts):
            try:
                return send()
            except openai.APIError as exc:
                error = classify_error(exc)
                if not error.retryable:
                    raise BackendError(f"{what}: {error.reason}") from None
                found = find()
                if found is not None:
                    return found
                if attempt == self.call_attempts - 1:
                    raise BackendError(f"{what}: {error.reason}") from None
                wait = error.retry_after or min(30.0, 0.5 * 2**attempt) * random.random()
                self.progress(f"{what}: {error.reason}; trying again in {wait:.1f} s")
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _find_upload(self, client: openai.OpenAI, f: BatchFile) -> str | None:
        """The id of a file uploaded under ``f``'s name and size, if the provider holds one."""

        def search() -> str | None:
            for obj in client.files.list(purpose="batch", limit=100):  # newest first
                if obj.filename == f.upload_name and obj.bytes == f.n_bytes:
                    return str(obj.id)
                if obj.created_at < f.created - 3600:  # older ones cannot be ours
                    break
            return None

        return self._call("listing files", search)

    def _create(self, f: BatchFile) -> BatchFile:
        client = self.client(f.base_url)
        if f.state == "creating":  # a past create may have made the batch
            found = self._find_batch(client, f)
            if found is not None:
                return self._submitted(f, found)
        f = self.records.update_file(f.id, state="creating")

        def send() -> Any:
            return client.batches.create(
                input_file_id=str(f.file_id),
                endpoint=f.endpoint,  # type: ignore[arg-type]
                completion_window="24h",
                metadata={"verbcal_file": f.upload_name},
            )

        batch = self._send_once(
            f"creating the batch of file #{f.id}", send, lambda: self._find_batch(client, f)
        )
        return self._submitted(f, batch)

    def _find_batch(self, client: openai.OpenAI, f: BatchFile) -> Any:
        """The batch created from ``f``'s uploaded file, if there is one."""

        def search() -> Any:
            for batch in client.batches.list(limit=100):  # newest first
                if batch.input_file_id == f.file_id:
                    return batch
                if batch.created_at < f.created - 3600:
                    break
            return None

        return self._call("listing batches", search)

    def _submitted(self, f: BatchFile, batch: Any) -> BatchFile:
        # A batch found again may have finished meanwhile: record all it says.
        f = self._record(f, batch, state="submitted", batch_id=batch.id, path=None)
        local = self.records.spool / f"requests-{f.id}.jsonl"
        if local.exists():
            os.remove(local)  # the provider holds it; our records hold every request
        return f

    # ------------------------------------------------------------------ following

    def poll(self) -> list[BatchFile]:
        """Ask the provider about every submitted batch not yet finished; return all submitted."""
        out = []
        for f in self.records.files("submitted"):
            if f.status not in TERMINAL_STATUSES:
                client, batch_id = self.client(f.base_url), str(f.batch_id)
                retrieve = functools.partial(client.batches.retrieve, batch_id)
                f = self._record(f, self._call(f"checking {batch_id}", retrieve))
            out.append(f)
        return out

    def _record(self, f: BatchFile, batch: Any, **fields: Any) -> BatchFile:
        """Record what the provider says of ``f``'s batch: status, counts, result files."""
        counts = batch.request_counts
        return self.records.update_file(
            f.id,
            status=batch.status,
            completed=counts.completed if counts else 0,
            failed=counts.failed if counts else 0,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            note=_batch_errors(batch),
            **fields,
        )

    def progress_line(self, files: list[BatchFile]) -> str:
        """One line: done / failed / expired requests per batch (totals when there are many)."""
        parts = []
        totals = [0, 0, 0, 0]
        for f in files:
            expired = f.n_requests - f.completed - f.failed if f.status == "expired" else 0
            totals = [
                a + b
                for a, b in zip(totals, (f.n_requests, f.completed, f.failed, expired), strict=True)
            ]
            parts.append(
                f"{f.batch_id} {f.status}: {f.completed}/{f.n_requests} done, "
                f"{f.failed} failed, {expired} expired"
            )
        if len(parts) > 4:
            n, done, failed, expired = totals
            return f"{len(files)} batches: {done}/{n} done, {failed} failed, {expired} expired"
        return "; ".join(parts)

    def active(self) -> bool:
        """Whether any batch is still to submit, running or to collect."""
        return bool(self.records.files("built", "uploading", "uploaded", "creating", "submitted"))

    def wait(
        self,
        *,
        fallback: str = "batch",
        poll_initial: float = 5.0,
        poll_max: float = 120.0,
        make_backend: Callable[[], OpenAIBackend] | None = None,
    ) -> CollectSummary:
        """Submit, poll with back-off, collect and re-queue until no batch is left running."""
        summary = CollectSummary()
        delay = poll_initial
        while True:
            self.submit()
            files = self.poll()
            if files:
                self.progress(self.progress_line(files))
            self.collect(fallback=fallback, summary=summary, make_backend=make_backend)
            if not self.active():
                return summary
            time.sleep(delay)
            delay = min(poll_max, delay * 1.5)

    # ------------------------------------------------------------------ collecting

    @_exclusive
    def collect(
        self,
        *,
        fallback: str = "batch",
        summary: CollectSummary | None = None,
        make_backend: Callable[[], OpenAIBackend] | None = None,
    ) -> CollectSummary:
        """Read every finished batch's results into the cache, then re-queue what may pass.

        Parameters
        ----------
        fallback : {"batch", "interactive"}
            Where requests go whose results say another attempt may pass: a
            new batch, or the interactive path through a backend from
            ``make_backend`` (without one, a plain ``verbcal elicit`` rerun
            sends them).
        summary : CollectSummary, optional
            Counts are added to it (a new one by default).
        make_backend : callable, optional
            Makes the :class:`~verbcal.elicit.backend.OpenAIBackend` (with this
            cache) for ``fallback="interactive"``.
        """
        if fallback not in FALLBACKS:
            raise ConfigurationError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        summary = summary or CollectSummary()
        for f in self.records.files("submitted"):
            if f.status in TERMINAL_STATUSES:
                self._collect_file(f, summary)
        if fallback == "batch":
            summary.requeued += self._requeue()
        elif make_backend is not None:
            summary.interactive += self._send_interactively(make_backend)
        return summary

    def _collect_file(self, f: BatchFile, summary: CollectSummary) -> None:
        client = self.client(f.base_url)
        for id_field, path_field in (
            ("output_file_id", "output_path"),
            ("error_file_id", "error_path"),
        ):
            remote = getattr(f, id_field)
            if remote and not getattr(f, path_field):
                target = self.records.spool / f"{f.batch_id}-{path_field[:-5]}.jsonl"
                self._download(client, remote, target)
                f = self.records.update_file(f.id, **{path_field: str(target)})
        for path in (f.output_path, f.error_path):
            if path:
                self.ingest(path, summary, file_row=f.id)
        if f.status == "cancelled":
            missing_state, why = "failed", "batch cancelled before it ran"
        elif f.status == "failed":
            missing_state, why = "failed", f"batch failed: {f.note or 'no reason given'}"
        else:
            missing_state, why = "retry", f"batch {f.status} without a result for it"
        summary.missing += self.records.close_file(f.id, missing_state, why)
        for path in (f.output_path, f.error_path):
            if path and os.path.exists(path):
                os.remove(path)
        self.progress(f"collected {f.batch_id} ({f.status})")

    def _download(self, client: openai.OpenAI, file_id: str, target: Path) -> None:
        """Stream a result file to ``target`` (whole, fsynced, then renamed into place)."""
        partial = target.with_suffix(".part")

        def fetch() -> None:
            with (
                client.files.with_streaming_response.content(file_id) as response,
                open(partial, "wb") as out,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())

        self._call(f"downloading {file_id}", fetch)
        os.replace(partial, target)

    @_exclusive
    def ingest(
        self, path: str | os.PathLike[str], summary: CollectSummary, *, file_row: int | None = None
    ) -> CollectSummary:
        """Read one result file into the cache, checking each ``custom_id`` against what was sent.

        With ``file_row``, a line counts only for a request sent in that file;
        without, for a request in any exported file (results of ``vllm
        run-batch``) not yet answered. Safe to run again on the same file: an
        answer already stored keeps its first version.
        """
        files = {file_row} if file_row is not None else self._exported()
        chunk: list[str] = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    chunk.append(line)
                    if len(chunk) == _INGEST_CHUNK:
                        self._ingest_lines(chunk, summary, files)
                        chunk = []
        if chunk:
            self._ingest_lines(chunk, summary, files)
        return summary

    def _exported(self) -> set[int]:
        """Rows of every file written out for another engine (collected or not)."""
        rows = self.records.conn.execute(
            "SELECT DISTINCT file FROM batch_requests WHERE file IN "
            "(SELECT id FROM batch_files WHERE state = 'exported' OR "
            "(state = 'collected' AND batch_id IS NULL))"
        )
        return {row[0] for row in rows}

    def _ingest_lines(self, lines: list[str], summary: CollectSummary, files: set[int]) -> None:
        parsed = []
        for line in lines:
            summary.lines += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                summary.unreadable += 1
                continue
            key = row.get("custom_id") if isinstance(row, dict) else None
            if not isinstance(key, str):
                summary.unreadable += 1
                continue
            parsed.append((key, row))
        sent = self.records.sent(key for key, _ in parsed)
        answers: list[tuple[str, str]] = []
        answered: set[str] = set()
        states: list[tuple[str, str | None, str]] = []
        for key, row in parsed:
            where = sent.get(key)
            if where is None or where[0] not in files:
                summary.unexpected += 1  # not a request sent in this batch (or export)
                continue
            verdict, detail = classify_result_line(row)
            if verdict != "ok" and (where[1] == "answered" or key in answered):
                continue  # an error line does not undo an answer
            if verdict == "ok":
                answered.add(key)
                answers.append((key, json.dumps(detail, ensure_ascii=False)))
                states.append(("answered", None, key))
                summary.answered += 1
                continue
            states.append((verdict, detail, key))
            setattr(summary, verdict, getattr(summary, verdict) + 1)
            reason = detail.split(":")[0]
            summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
        if states:
            self.records.store_results(answers, states)

    def _requeue(self) -> int:
        """Move requests to retry into new request files and submit them; return how many."""
        moved = 0
        urls = self.records.conn.execute(
            "SELECT DISTINCT f.base_url FROM batch_requests r JOIN batch_files f "
            "ON f.id = r.file WHERE r.state = 'retry' AND r.attempts < ?",
            (self.max_attempts,),
        ).fetchall()
        for (base_url,) in urls:

            def rows(url: str = base_url) -> Iterator[tuple[str, str, dict[str, Any]]]:
                for page in self.records.retry_pages(self.max_attempts):
                    for key, text, row_url in page:
                        if row_url == url:
                            yield key, text, _body_of(text)

            moved += self.build(rows(), base_url).added
        if moved:
            self.progress(f"{moved} requests queued again in a new batch")
            self.submit()
        return moved

    def _send_interactively(self, make_backend: Callable[[], OpenAIBackend]) -> int:
        """Send the requests to retry interactively (``make_backend()``); return how many."""
        import asyncio

        pages = self.records.retry_pages(page=500)
        first = next(pages, None)
        if first is None:
            return 0

        async def send() -> int:
            answered = 0
            async with make_backend() as backend:
                for page in itertools.chain([first], pages):
                    states = await asyncio.gather(*(one(backend, k, t) for k, t, _ in page))
                    self.records.set_request_states(states)
                    answered += sum(state == "answered" for state, _, _ in states)
            return answered

        async def one(backend: OpenAIBackend, key: str, text: str) -> tuple[str, str | None, str]:
            # The stored body, as keyword arguments that make the same body again
            # (checked below: the key must come out the same).
            body, sample = _split_request(text)
            kwargs: dict[str, Any] = {"temperature": None, "max_tokens": None}
            kwargs.update(body, sample=sample)
            messages = kwargs.pop("messages")
            kwargs.pop("model", None)
            if kwargs.pop("logprobs", False):
                kwargs["logprob_labels"] = ()
            try:
                result = await backend.complete(messages, **kwargs)
            except RequestFailedError as exc:
                return "failed", str(exc), key
            if result.key != key:
                return "failed", "sent again interactively as a different request", key
            return "answered", None, key

        return asyncio.run(send())

    # ------------------------------------------------------------------ other commands

    @_exclusive
    def cancel(self) -> list[BatchFile]:
        """Ask the provider to cancel every batch still running; return those asked."""
        cancelled = []
        for f in self.poll():
            if f.status in TERMINAL_STATUSES or f.status == "cancelling":
                continue
            client = self.client(f.base_url)
            try:
                batch = client.batches.cancel(str(f.batch_id))
            except openai.APIStatusError as exc:
                if exc.status_code != 409:  # 409: it finished meanwhile
                    raise BackendError(f"cancelling {f.batch_id}: {exc.message}") from None
                continue
            cancelled.append(self.records.update_file(f.id, status=batch.status))
        return cancelled

    def status(self) -> list[dict[str, Any]]:
        """Every recorded request file: its state, batch and request counts."""
        out = []
        for f in self.records.files():
            counts = self.records.request_counts(f.id)
            out.append(
                {
                    "file": f.id,
                    "state": f.state,
                    "batch_id": f.batch_id,
                    "status": f.status,
                    "requests": f.n_requests,
                    "provider_completed": f.completed,
                    "provider_failed": f.failed,
                    "requests_by_state": counts,
                    "note": f.note,
                }
            )
        return out

    @_exclusive
    def export(self, out_dir: str | os.PathLike[str], fmt: str = "vllm") -> list[Path]:
        """Write the built, unsent request files for another engine; return their paths.

        ``fmt="vllm"``: the lines are already what ``vllm run-batch -i`` reads.
        The files are recorded as ``exported``: feed the engine's output to
        :meth:`ingest` (``verbcal batch import``).
        """
        if fmt != "vllm":
            raise ConfigurationError(f"export format must be 'vllm', got {fmt!r}")
        target = Path(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for f in self.records.files("built"):
            assert f.path is not None
            path = target / f"verbcal-requests-{f.id}.jsonl"
            shutil.copyfile(f.path, path)
            self.records.update_file(f.id, state="exported")
            written.append(path)
        return written

    @_exclusive
    def import_results(
        self, path: str | os.PathLike[str], summary: CollectSummary | None = None
    ) -> CollectSummary:
        """Read an engine's result file (``vllm run-batch -o``) into the cache.

        Exported files with no request left pending are then marked collected.
        """
        summary = self.ingest(path, summary or CollectSummary())
        for f in self.records.files("exported"):
            if not self.records.request_counts(f.id).get("pending"):
                self.records.update_file(f.id, state="collected")
        return summary


def _split_request(request_text: str) -> tuple[dict[str, Any], int]:
    """The body and sample index of a request stored under its cache key.

    The stored request is what :meth:`OpenAIBackend.prepare` hashed: the body,
    plus ``base_url`` and, for a repeated sample sent without a seed,
    ``verbcal_sample``, neither of which is sent.

    >>> _split_request('{"base_url":"http://h/v1","model":"m","verbcal_sample":2}')
    ({'model': 'm'}, 2)
    """
    body = json.loads(request_text)
    body.pop("base_url", None)
    return body, int(body.pop("verbcal_sample", 0))


def _body_of(request_text: str) -> dict[str, Any]:
    """The body a request stored under its cache key was sent with."""
    return _split_request(request_text)[0]


def _batch_errors(batch: Any) -> str | None:
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) if errors is not None else None
    if not data:
        return None
    return "; ".join(
        f"{e.code or 'error'}" + (f" (line {e.line})" if e.line else "") + f": {e.message}"
        for e in data[:5]
    )
