"""A loopback OpenAI Batch API: ``/v1/files`` and ``/v1/batches``, with time passing.

What it implements, and where each rule comes from:

* ``POST /v1/files`` (multipart ``file`` + ``purpose``), ``GET /v1/files`` (newest
  first, ``purpose``/``limit``/``after``), ``GET /v1/files/{id}`` and
  ``GET /v1/files/{id}/content``. File objects have the fields of the openai SDK's
  ``types/file_object.py`` (``id``, ``bytes``, ``created_at``, ``filename``,
  ``object: "file"``, ``purpose``, ``status``, ``expires_at``); a batch input
  must be uploaded with purpose ``batch`` and may hold at most 50,000 requests
  and 200 MB (``types/batch_create_params.py``, ``input_file_id``); result files
  have purpose ``batch_output`` (``file_object.py``).
* ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``
  which must be ``"24h"``, ``metadata``: ``batch_create_params.py``),
  ``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest first, ``limit``/``after``),
  ``POST /v1/batches/{id}/cancel``. Batch objects have the fields and statuses
  of ``types/batch.py``: ``validating`` → ``in_progress`` → ``finalizing`` →
  ``completed``; ``failed`` when validation fails (``errors.data`` holds
  ``BatchError`` rows: ``code``, ``line``, ``message``, ``param`` from
  ``types/batch_error.py``); ``expired`` when the completion window ends first;
  ``cancelling`` → ``cancelled``. ``request_counts`` (``total``, ``completed``,
  ``failed``: ``types/batch_request_counts.py``) grow while it runs.
* Input lines are ``{"custom_id", "method", "url", "body"}``; ``custom_id`` must
  be unique in a file (vLLM ``entrypoints/openai/protocol.py``,
  ``BatchRequestInput``: "Must be unique for each request in a batch"), ``url``
  must be the batch's endpoint and every body must name the same model (OpenAI's
  batch guide). Result lines are ``{"id", "custom_id", "response":
  {"status_code", "request_id", "body"}, "error"}`` (``BatchRequestOutput`` in the
  same vLLM file); successful requests go to the output file, the others to the
  error file, in no particular order. A request the window did not reach is an
  error line with ``response: null`` and ``error.code == "batch_expired"``; one a
  cancel stopped has ``"batch_cancelled"`` (the codes of OpenAI's
  ``BatchRequestOutput.error``, as listed in its OpenAPI spec).
* ``POST /v1/chat/completions`` answers like ``fault_server.FaultServer``, so an
  interactive run against the same base URL gets the same answers.

Time is compressed: ``validate_seconds``, ``rate`` (requests a second),
``finalize_seconds`` and ``window_seconds`` (the "24h" window) are parameters.
A batch's state is computed from the clock whenever it is read.

``block(stage)`` makes the server stop at a stage until ``release(stage)``, so
tests can kill a client there: ``"upload"`` (half the upload body read),
``"uploaded"`` (file stored, reply not sent), ``"create"`` (batch created, reply
not sent), ``"retrieve"`` (before answering a poll), ``"content"`` (half a result
file sent).

Run it as a process: ``python tests/batch_server.py --rate 100000``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

from fault_server import FaultServer

MAX_REQUESTS = 50_000  # types/batch_create_params.py: "up to 50,000 requests"
MAX_BYTES = 200 * 1000 * 1000  # ... "and can be up to 200 MB in size"
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
STAGES = ("upload", "uploaded", "create", "retrieve", "content")
_DAY = 24 * 3600
_EXPIRED = "This request could not be executed before the completion window expired."
_CANCELLED = "This request was not executed because the batch was cancelled."


@dataclass
class BatchRecord:
    """What clients did, for assertions."""

    uploads: int = 0
    create_calls: int = 0
    #: custom_ids of every batch created, by batch id, in creation order.
    batch_lines: dict[str, list[str]] = field(default_factory=dict)
    chat_requests: int = 0
    #: custom_ids that got a 200 in each batch's output file.
    answered: dict[str, list[str]] = field(default_factory=dict)
    downloads: Counter = field(default_factory=Counter)
    retrieves: int = 0

    def submitted(self) -> Counter:
        """How many created batches held each custom_id."""
        return Counter(cid for ids in self.batch_lines.values() for cid in ids)


@dataclass
class _Batch:
    obj: dict[str, Any]
    started: float  # time.monotonic() at creation
    n: int = 0
    in_progress_since: float | None = None
    cancel_requested: float | None = None
    done_at_cancel: int = 0
    finalizing_since: float = 0.0
    outcomes: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class BatchServer:
    """OpenAI's Files and Batches endpoints on 127.0.0.1, with time passing.

    Parameters
    ----------
    port : int
        0 picks a free port.
    labels : sequence of str
        Labels of the answers (as in :class:`fault_server.FaultServer`).
    validate_seconds, finalize_seconds, cancel_seconds : float
        How long a batch stays ``validating``, ``finalizing``, ``cancelling``.
    rate : float
        Requests a batch completes per second while ``in_progress``.
    window_seconds : float or None
        The completion window ("24h") in seconds; None: never expires.
    error_rate : float
        Share of requests answered with HTTP 500 (in the error file).
    bad_request_rate : float
        Share answered with HTTP 400.
    max_requests, max_bytes : int
        The documented limits of one input file.
    seed : int
        Seed of the per-request outcomes.
    foreign_lines : int
        Result lines added to each output file for requests the batch never
        held (a client must not store them).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        labels: Sequence[str] = ("positive", "negative"),
        validate_seconds: float = 0.05,
        rate: float = 10_000.0,
        finalize_seconds: float = 0.05,
        cancel_seconds: float = 0.05,
        window_seconds: float | None = None,
        error_rate: float = 0.0,
        bad_request_rate: float = 0.0,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        seed: int = 0,
        foreign_lines: int = 0,
    ) -> None:
        self.foreign_lines = foreign_lines
        self.labels = list(labels)
        self.validate_seconds = validate_seconds
        self.rate = rate
        self.finalize_seconds = finalize_seconds
        self.cancel_seconds = cancel_seconds
        self.window_seconds = window_seconds
        self.error_rate = error_rate
        self.bad_request_rate = bad_request_rate
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.seed = seed
        self.record = BatchRecord()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, _Batch] = {}
        self._paths: dict[str, str] = {}
        self._dir = tempfile.mkdtemp(prefix="batch-server-")
        self._lock = threading.RLock()
        self._counter = 0
        self._times_sent: Counter = Counter()
        self._blocked: dict[str, threading.Event] = {}
        self._skips: dict[str, int] = {}
        self._failures: dict[str, tuple[int, int]] = {}
        self._reached: dict[str, threading.Event] = {s: threading.Event() for s in STAGES}
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _make_handler(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> BatchServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for event in self._blocked.values():
            event.set()
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> BatchServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test hooks

    def block(self, stage: str, skip: int = 0) -> None:
        """Stop the request that reaches ``stage`` after ``skip`` others, until :meth:`release`."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
        self._reached[stage].clear()
        self._skips[stage] = skip
        self._blocked[stage] = threading.Event()

    def wait_reached(self, stage: str, timeout: float = 30.0) -> bool:
        """Wait until a request is held at ``stage``."""
        return self._reached[stage].wait(timeout)

    def release(self, stage: str) -> None:
        event = self._blocked.pop(stage, None)
        if event is not None:
            event.set()

    def fail(self, route: str, times: int = 1, status: int = 503) -> None:
        """Answer the next ``times`` requests to ``route`` ("upload" or "create") with
        ``status``, doing nothing (the client may try again)."""
        self._failures[route] = (times, status)

    def _failure(self, route: str) -> int | None:
        with self._lock:
            times, status = self._failures.get(route, (0, 0))
            if times <= 0:
                return None
            self._failures[route] = (times - 1, status)
            return status

    def _take(self, stage: str) -> bool:
        """Count one request at ``stage``; True when it is the one to hold."""
        with self._lock:
            if stage not in self._blocked:
                return False
            self._skips[stage] -= 1
            return self._skips[stage] < 0

    def _hold(self, stage: str) -> None:
        event = self._blocked.get(stage)
        if event is None:
            return
        self._reached[stage].set()
        event.wait()

    def _checkpoint(self, stage: str) -> None:
        if self._take(stage):
            self._hold(stage)

    # ------------------------------------------------------------------ files

    def chat_answer(self, request: dict) -> dict:
        """The chat completion :class:`fault_server.FaultServer` gives ``request`` (its labels)."""
        return FaultServer.completion_body(SimpleNamespace(labels=self.labels), request)  # type: ignore[arg-type]

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        return f"{prefix}{hashlib.sha256(f'{self.seed}:{n}'.encode()).hexdigest()[:20]}"

    def add_file(self, path: str, filename: str, purpose: str) -> dict[str, Any]:
        """Register a stored file (moved into the server's folder); return its object."""
        file_id = self._new_id("file-")
        target = os.path.join(self._dir, file_id)
        os.replace(path, target)
        now = int(time.time())
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": os.path.getsize(target),
            "created_at": now,
            "expires_at": now + 30 * _DAY,  # file_create_params.py: batch files expire in 30 days
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }
        with self._lock:
            self.files[file_id] = obj
            self._paths[file_id] = target
        return obj

    def file_path(self, file_id: str) -> str:
        return self._paths[file_id]

    # ------------------------------------------------------------------ batches

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        if body.get("completion_window") != "24h":
            return 400, _error("completion_window must be '24h'", "completion_window")
        if endpoint not in BATCH_ENDPOINTS:
            return 400, _error(f"unsupported endpoint {endpoint!r}", "endpoint")
        file = self.files.get(file_id or "")
        if file is None:
            return 404, _error(f"No such File object: {file_id}", "input_file_id")
        if file["purpose"] != "batch":
            return 400, _error("the input file must be uploaded with purpose 'batch'", "purpose")
        now = int(time.time())
        batch_id = self._new_id("batch_")
        obj: dict[str, Any] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": endpoint,
            "errors": None,
            "input_file_id": file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + _DAY,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            self.record.create_calls += 1
            self.batches[batch_id] = _Batch(obj, time.monotonic())
        return 200, obj

    def retrieve(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            self._advance(batch, time.monotonic())
            return json.loads(json.dumps(batch.obj))

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(f"No such Batch object: {batch_id}", "batch_id")
            now = time.monotonic()
            self._advance(batch, now)
            if batch.obj["status"] not in ("validating", "in_progress"):
                return 409, _error(f"cannot cancel a batch that is {batch.obj['status']}", None)
            batch.cancel_requested = now
            batch.done_at_cancel = self._done(batch, now)
            batch.obj.update(status="cancelling", cancelling_at=int(time.time()))
            return 200, json.loads(json.dumps(batch.obj))

    def _done(self, batch: _Batch, now: float) -> int:
        if batch.in_progress_since is None:
            return 0
        return min(batch.n, int((now - batch.in_progress_since) * self.rate))

    def _advance(self, batch: _Batch, now: float) -> None:
        """Move ``batch`` through its states up to ``now`` (called under the lock)."""
        obj = batch.obj
        if obj["status"] == "validating" and now >= batch.started + self.validate_seconds:
            errors = self._validate(batch)
            if errors:
                obj.update(status="failed", failed_at=int(time.time()))
                obj["errors"] = {"object": "list", "data": errors}
                return
            batch.in_progress_since = batch.started + self.validate_seconds
            obj.update(status="in_progress", in_progress_at=int(time.time()))
            obj["request_counts"]["total"] = batch.n
            self.record.batch_lines[obj["id"]] = ids = self._custom_ids(obj["input_file_id"])
            self._times_sent.update(ids)
        if obj["status"] == "cancelling":
            assert batch.cancel_requested is not None
            if now >= batch.cancel_requested + self.cancel_seconds:
                self._finish(batch, batch.done_at_cancel, "batch_cancelled")
                obj.update(status="cancelled", cancelled_at=int(time.time()))
            return
        if obj["status"] == "in_progress":
            assert batch.in_progress_since is not None
            done = self._done(batch, now)
            failed = sum(o != "200" for o in batch.outcomes[:done])
            obj["request_counts"].update(completed=done - failed, failed=failed)
            # Computed from the clock, however late it is read: the batch expires if
            # the window ends before its last request would have run.
            all_done_at = batch.in_progress_since + batch.n / self.rate
            deadline = batch.started + self.window_seconds if self.window_seconds else None
            if deadline is not None and all_done_at > deadline and now >= deadline:
                self._finish(batch, self._done(batch, deadline), "batch_expired")
                obj.update(status="expired", expired_at=int(time.time()))
                return
            if done >= batch.n:
                obj.update(status="finalizing", finalizing_at=int(time.time()))
                batch.finalizing_since = all_done_at
        if obj["status"] == "finalizing" and now >= batch.finalizing_since + self.finalize_seconds:
            self._finish(batch, batch.n, None)
            obj.update(status="completed", completed_at=int(time.time()))

    def _custom_ids(self, file_id: str) -> list[str]:
        with open(self._paths[file_id], encoding="utf-8") as f:
            return [json.loads(line)["custom_id"] for line in f if line.strip()]

    def _validate(self, batch: _Batch) -> list[dict[str, Any]]:
        """BatchError rows for an input file that breaks the documented rules ([] if none)."""
        obj = batch.obj
        file = self.files[obj["input_file_id"]]
        errors: list[dict[str, Any]] = []
        if file["bytes"] > self.max_bytes:
            errors.append(_batch_error("file_too_large", None, f"over {self.max_bytes} bytes"))
        seen: set[str] = set()
        models: set[str] = set()
        with open(self._paths[obj["input_file_id"]], encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    errors.append(_batch_error("invalid_json_line", number, "not JSON"))
                    continue
                cid = row.get("custom_id")
                if not isinstance(cid, str) or cid in seen:
                    errors.append(_batch_error("duplicate_custom_id", number, repr(cid)))
                seen.add(cid)
                if row.get("method") != "POST" or row.get("url") != obj["endpoint"]:
                    errors.append(_batch_error("invalid_url", number, "method/url"))
                body = row.get("body")
                if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                    errors.append(_batch_error("missing_model", number, "body.model"))
                else:
                    models.add(body["model"])
                batch.outcomes.append(self._outcome(cid))
                if len(errors) >= 10:
                    break
        batch.n = len(batch.outcomes)
        if batch.n > self.max_requests:
            errors.append(_batch_error("too_many_requests", None, f"{batch.n} requests"))
        if len(models) > 1:
            errors.append(_batch_error("mismatched_model", None, f"models {sorted(models)}"))
        if batch.n == 0:
            errors.append(_batch_error("empty_file", None, "no requests"))
        return errors

    def _outcome(self, custom_id: object) -> str:
        """A request's fate: 400 is permanent (a bad request stays bad), 500 transient
        (drawn again each time the request is in a new batch)."""
        if random.Random(f"{self.seed}:{custom_id}").random() < self.bad_request_rate:
            return "400"
        nth = self._times_sent[str(custom_id)]
        if random.Random(f"{self.seed}:{custom_id}:{nth}").random() < self.error_rate:
            return "500"
        return "200"

    def _finish(self, batch: _Batch, done: int, rest_code: str | None) -> None:
        """Write the output and error files: ``done`` requests ran, the rest get ``rest_code``."""
        obj = batch.obj
        out_path = os.path.join(self._dir, f"{obj['id']}.out.tmp")
        err_path = os.path.join(self._dir, f"{obj['id']}.err.tmp")
        n_out = n_err = 0
        answered = self.record.answered.setdefault(obj["id"], [])
        with (
            open(self._paths[obj["input_file_id"]], encoding="utf-8") as source,
            open(out_path, "w", encoding="utf-8") as out,
            open(err_path, "w", encoding="utf-8") as err,
        ):
            lines = (line for line in source if line.strip())
            for index, row, outcome in self._shuffled(lines, batch.outcomes):
                line_id = self._new_id("batch_req_")
                if index >= done:
                    message = _EXPIRED if rest_code == "batch_expired" else _CANCELLED
                    result = {"code": rest_code, "message": message}
                    err.write(_line(line_id, row["custom_id"], None, result))
                    n_err += 1
                elif outcome == "200":
                    body = self.chat_answer(row["body"])
                    out.write(_line(line_id, row["custom_id"], _response(200, body), None))
                    answered.append(row["custom_id"])
                    n_out += 1
                else:
                    status = int(outcome)
                    kind = "server_error" if status == 500 else "invalid_request_error"
                    body = {"error": {"message": f"HTTP {status}", "type": kind, "code": None}}
                    err.write(_line(line_id, row["custom_id"], _response(status, body), None))
                    n_err += 1
            for k in range(self.foreign_lines if n_out else 0):
                body = self.chat_answer({"messages": [{"role": "user", "content": str(k)}]})
                out.write(_line(f"batch_req_x{k}", f"never-sent-{k}", _response(200, body), None))
        for count, path, key, name in (
            (n_out, out_path, "output_file_id", "output"),
            (n_err, err_path, "error_file_id", "error"),
        ):
            if count:
                filename = f"{obj['id']}_{name}.jsonl"
                obj[key] = self.add_file(path, filename, "batch_output")["id"]
            else:
                os.remove(path)
        failed = sum(o != "200" for o in batch.outcomes[:done])
        obj["request_counts"] = {"total": batch.n, "completed": done - failed, "failed": failed}

    @staticmethod
    def _shuffled(
        lines: Iterator[str], outcomes: list[str], block: int = 512
    ) -> Iterator[tuple[int, dict, str]]:
        """(input index, row, outcome), each block of lines in reverse: not input order."""
        chunk: list[tuple[int, dict, str]] = []
        for index, line in enumerate(lines):
            chunk.append((index, json.loads(line), outcomes[index]))
            if len(chunk) == block:
                yield from reversed(chunk)
                chunk = []
        yield from reversed(chunk)


def _line(line_id: str, custom_id: str, response: dict | None, error: dict | None) -> str:
    row = {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(row) + "\n"


def _response(status: int, body: dict) -> dict:
    request_id = "req_" + hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]
    return {"status_code": status, "request_id": request_id, "body": body}


def _error(message: str, param: str | None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param}}


def _batch_error(code: str, line: int | None, message: str) -> dict:
    return {"code": code, "line": line, "message": message, "param": None}


def _page(objects: list[dict], query: dict[str, list[str]]) -> dict:
    """A cursor page, newest first: ``limit`` (1-100, default 20) after the id ``after``."""
    objects = sorted(objects, key=lambda o: (o["created_at"], o["id"]), reverse=True)
    after = query.get("after", [None])[0]
    if after is not None:
        ids = [o["id"] for o in objects]
        objects = objects[ids.index(after) + 1 :] if after in ids else []
    limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
    page = objects[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(objects) > limit,
    }


def _make_handler(server: BatchServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.rstrip("/").split("/")[2:]  # after "/v1"
            query = urllib.parse.parse_qs(url.query)
            if parts == ["files"]:
                with server._lock:
                    files = list(server.files.values())
                purpose = query.get("purpose", [None])[0]
                files = [f for f in files if purpose is None or f["purpose"] == purpose]
                self._send_json(200, _page(files, query))
            elif len(parts) == 2 and parts[0] == "files" and parts[1] in server.files:
                self._send_json(200, server.files[parts[1]])
            elif len(parts) == 3 and parts[0] == "files" and parts[2] == "content":
                self._send_content(parts[1])
            elif parts == ["batches"]:
                with server._lock:
                    ids = list(server.batches)
                objects = [server.retrieve(i) for i in ids]
                self._send_json(200, _page([o for o in objects if o], query))
            elif len(parts) == 2 and parts[0] == "batches":
                server.record.retrieves += 1
                server._checkpoint("retrieve")
                obj = server.retrieve(parts[1])
                if obj is None:
                    self._send_json(404, _error(f"No such Batch object: {parts[1]}", None))
                else:
                    self._send_json(200, obj)
            else:
                self._send_json(404, _error(f"no route {url.path}", None))

        def do_POST(self) -> None:  # noqa: N802
            parts = urllib.parse.urlsplit(self.path).path.rstrip("/").split("/")[2:]
            if parts == ["files"]:
                self._upload()
                return
            raw = self._read_body()
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                self._send_json(400, _error("body is not JSON", None))
                return
            if parts == ["batches"] and (failure := server._failure("create")):
                self._send_json(failure, _error("The server is overloaded.", None))
            elif parts == ["batches"]:
                status, obj = server.create_batch(body)
                server._checkpoint("create")
                self._send_json(status, obj)
            elif len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
                self._send_json(*server.cancel(parts[1]))
            elif parts == ["chat", "completions"]:
                with server._lock:
                    server.record.chat_requests += 1
                self._send_json(200, server.chat_answer(body))
            else:
                self._send_json(404, _error(f"no route {self.path}", None))

        def _read_body(self, half_checkpoint: bool = False) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                    if half_checkpoint and len(chunks) == 1:
                        server._hold("upload")
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length", 0))
            if not half_checkpoint:
                return self.rfile.read(length)
            first = self.rfile.read(length // 2)
            server._hold("upload")
            rest = self.rfile.read(length - len(first))
            return first + rest

        def _upload(self) -> None:
            kind = self.headers.get("Content-Type", "")
            boundary = kind.partition("boundary=")[2].strip('"')
            raw = self._read_body(half_checkpoint=server._take("upload"))
            failure = server._failure("upload")
            if failure:
                self._send_json(failure, _error("The server is overloaded.", None))
                return
            if not boundary or not raw.rstrip().endswith(f"--{boundary}--".encode()):
                self.close_connection = True  # an upload cut short creates no file
                return
            fields: dict[str, tuple[str | None, bytes]] = {}
            for part in raw.split(f"--{boundary}".encode())[1:-1]:
                head, _, content = part[2:].partition(b"\r\n\r\n")
                disposition = head.decode("utf-8", "replace")
                name = _header_param(disposition, "name")
                if name:
                    fields[name] = (_header_param(disposition, "filename"), content[:-2])
            purpose = fields.get("purpose", (None, b""))[1].decode()
            if "file" not in fields or purpose not in ("batch", "fine-tune", "user_data"):
                self._send_json(400, _error("need 'file' and a valid 'purpose'", "purpose"))
                return
            filename, content = fields["file"]
            if purpose == "batch" and len(content) > server.max_bytes:
                self._send_json(400, _error(f"file over {server.max_bytes} bytes", "file"))
                return
            fd, tmp = tempfile.mkstemp(dir=server._dir)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            del raw, fields, content
            obj = server.add_file(tmp, filename or "upload.jsonl", purpose)
            with server._lock:
                server.record.uploads += 1
            server._checkpoint("uploaded")
            self._send_json(200, obj)

        def _send_content(self, file_id: str) -> None:
            if file_id not in server.files:
                self._send_json(404, _error(f"No such File object: {file_id}", None))
                return
            path = server.file_path(file_id)
            size = os.path.getsize(path)
            with server._lock:
                server.record.downloads[file_id] += 1
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                with open(path, "rb") as f:
                    if server._take("content"):
                        self.wfile.write(f.read(size // 2))
                        self.wfile.flush()
                        server._hold("content")
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send_json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


def _header_param(header: str, name: str) -> str | None:
    for piece in header.split(";"):
        key, _, value = piece.strip().partition("=")
        if key == name:
            return value.split("\r\n")[0].strip('"')
    return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10_000.0)
    parser.add_argument("--validate-seconds", type=float, default=0.05)
    parser.add_argument("--finalize-seconds", type=float, default=0.05)
    parser.add_argument("--window-seconds", type=float)
    parser.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = BatchServer(
        port=args.port,
        rate=args.rate,
        validate_seconds=args.validate_seconds,
        finalize_seconds=args.finalize_seconds,
        window_seconds=args.window_seconds,
        error_rate=args.error_rate,
    )
    print(f"listening on {server.base_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()
    server.stop()


if __name__ == "__main__":
    main()
