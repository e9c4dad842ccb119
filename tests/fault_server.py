"""A loopback OpenAI-compatible chat server that misbehaves on purpose.

``POST /v1/chat/completions`` answers in OpenAI's JSON shape. The answer is a
function of the messages only: a probability per label derived from a hash of
the messages, written as JSON text in the message content (and, when the
request asks for ``logprobs``, as the top alternatives of the first token).
So a run through faults must end with exactly the answers of a fault-free run.

Faults are injected per request, either at given rates (drawn from a seeded
generator keyed by the messages and by how often they were asked, so the
draws do not depend on thread timing) or from a ``script`` that every message
follows in order (``["429", "500"]``: first ask gets 429, second 500, then 200).

Fault kinds (:data:`FAULT_KINDS`): ``429`` (with Retry-After / retry-after-ms),
``500``, ``502``, ``503``, ``slow`` (answers after ``slow_seconds``, past a
client timeout), ``drop`` (closes the socket without a response),
``invalid_json``, ``no_choices``, ``html`` (a 200 web page, as a proxy or a
wrong base URL gives), ``400``, ``401``, ``403``, ``404``, ``422`` and ``quota``
(429 ``insufficient_quota``).

The server records every request (:class:`Record`), so tests can assert, for
example, that no message was requested again once it had been answered.

Use it as a context manager::

    with FaultServer(latency=0.01, faults={"500": 0.2}, seed=1) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="x")

or run it as a process: ``python tests/fault_server.py --port 8099 --latency 0.1 --fault 500=0.1``.
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import hashlib
import json
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_KINDS = (
    "429",
    "500",
    "502",
    "503",
    "slow",
    "drop",
    "invalid_json",
    "no_choices",
    "html",
    "400",
    "401",
    "403",
    "404",
    "422",
    "quota",
)

_ERROR_BODIES = {
    "400": (400, "invalid_request_error", None, "Invalid value for 'messages'."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "403": (403, "invalid_request_error", "unsupported_country", "Country not supported."),
    "422": (422, "invalid_request_error", None, "Unprocessable entity."),
    "404": (404, "invalid_request_error", "model_not_found", "The model does not exist."),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "quota": (429, "insufficient_quota", "insufficient_quota", "You exceeded your current quota."),
    "500": (500, "server_error", None, "The server had an error."),
    "502": (502, "server_error", None, "Bad gateway."),
    "503": (503, "server_error", None, "The engine is currently overloaded."),
}


def messages_key(messages: object) -> str:
    """Short hash of a request's messages: the unit the server records and answers by."""
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def expected_distribution(messages: object, labels: Sequence[str]) -> dict[str, float]:
    """The probabilities the server states for ``messages`` (rounded to 3 decimals, sum 1)."""
    seed = int(messages_key(messages), 16)
    weights = [1 + (seed >> (8 * i)) % 97 for i in range(len(labels))]
    probs = [round(w / sum(weights), 3) for w in weights]
    probs[-1] = round(1.0 - sum(probs[:-1]), 3)
    return dict(zip(labels, probs, strict=True))


def count_tokens(text: str) -> int:
    """The server's token count: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


@dataclass
class Record:
    """What the server saw: one ``events`` row per request, counters per message key."""

    requested: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    #: (arrival time.monotonic(), messages key, outcome, prompt tokens, completion tokens)
    events: list[tuple[float, str, str, int, int]] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def total(self) -> int:
        """Requests received (``events`` lists only those already answered or failed)."""
        return sum(self.requested.values())

    def max_in_window(self, window: float, what: str = "requests") -> float:
        """Most requests (or tokens of answered requests) that arrived within any ``window`` s."""
        rows = sorted(self.events)
        best, start, running = 0.0, 0, 0.0
        for t, _key, outcome, prompt, completion in rows:
            running += self._amount(outcome, prompt, completion, what)
            while rows[start][0] <= t - window:
                s = rows[start]
                running -= self._amount(s[2], s[3], s[4], what)
                start += 1
            best = max(best, running)
        return best

    @staticmethod
    def _amount(outcome: str, prompt: int, completion: int, what: str) -> float:
        if what == "requests":
            return 1.0
        return float(prompt + completion) if outcome == "200" else 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog of 5 drops bursts of new connections (the
    # client then waits a 1 s SYN retransmit); benchmarks open hundreds.
    request_queue_size = 1024


class FaultServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 with latency and injected faults.

    Parameters
    ----------
    port : int
        0 picks a free port.
    latency : float
        Seconds every request waits before it is answered (faults included).
    faults : mapping of fault kind to rate
        Probability of each fault per request; rates must sum to at most 1.
    script : sequence of fault kinds or "ok"
        Outcomes of the 1st, 2nd, ... request of each message; afterwards 200.
        Overrides ``faults`` while it lasts.
    seed : int
        Seed of the fault draws.
    labels : sequence of str
        Labels of the stated distribution.
    retry_after : float or None
        Value sent with 429 and 503 answers.
    retry_after_style : {"seconds", "ms", "date", "both"}
        ``Retry-After`` in seconds, ``retry-after-ms``, ``Retry-After`` as an HTTP
        date, or both seconds headers.
    slow_seconds : float
        How long a ``slow`` answer takes.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        faults: Mapping[str, float] | None = None,
        script: Sequence[str] = (),
        seed: int = 0,
        labels: Sequence[str] = ("positive", "negative"),
        retry_after: float | None = 0.05,
        retry_after_style: str = "seconds",
        slow_seconds: float = 3.0,
    ) -> None:
        self.faults = dict(faults or {})
        unknown = set(self.faults) - set(FAULT_KINDS)
        unknown |= set(script) - set(FAULT_KINDS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        if sum(self.faults.values()) > 1:
            raise ValueError("fault rates sum to more than 1")
        self.latency = latency
        self.script = list(script)
        self.seed = seed
        self.labels = list(labels)
        self.retry_after = retry_after
        self.retry_after_style = retry_after_style
        self.slow_seconds = slow_seconds
        self.record = Record()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def choose_outcome(self, key: str, nth: int) -> str:
        """The outcome of the ``nth`` (0-based) request of message ``key``."""
        if nth < len(self.script):
            return self.script[nth]
        u = random.Random(f"{self.seed}:{key}:{nth}").random()
        for kind in FAULT_KINDS:
            u -= self.faults.get(kind, 0.0)
            if u < 0:
                return kind
        return "ok"

    def retry_after_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        style, seconds = self.retry_after_style, self.retry_after
        if style == "date":
            return {"Retry-After": email.utils.formatdate(time.time() + seconds, usegmt=True)}
        headers = {}
        if style in ("seconds", "both"):
            headers["Retry-After"] = f"{seconds:g}"
        if style in ("ms", "both"):
            headers["retry-after-ms"] = f"{seconds * 1000:g}"
        return headers

    def completion_body(self, request: dict) -> dict:
        """The 200 answer to a chat request."""
        messages = request.get("messages", [])
        dist = expected_distribution(messages, self.labels)
        content = json.dumps(dist)
        max_tokens = request.get("max_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and count_tokens(content) > max_tokens:
            content, finish = content[: 4 * max_tokens], "length"
        choice: dict = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish,
        }
        if request.get("logprobs"):
            choice["logprobs"] = _first_token_logprobs(dist, int(request.get("top_logprobs") or 0))
        prompt_tokens = sum(count_tokens(str(m.get("content", ""))) + 3 for m in messages)
        completion_tokens = count_tokens(content)
        return {
            "id": f"chatcmpl-{messages_key(messages)}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": request.get("model", "fault-server"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _first_token_logprobs(dist: Mapping[str, float], top: int) -> dict:
    """Logprobs whose first token is the top label, alternatives = the labels + filler."""
    ranked = sorted(dist.items(), key=lambda kv: -kv[1])
    # 5% of the first token's mass goes to a token that is no label, as real models do.
    alternatives = [(label, 0.95 * p) for label, p in ranked] + [("The", 0.05)]
    alternatives.sort(key=lambda kv: -kv[1])
    alternatives = alternatives[: max(top, 1)]
    return {
        "content": [
            {
                "token": ranked[0][0],
                "logprob": math.log(0.95 * ranked[0][1]),
                "top_logprobs": [
                    {"token": tok, "logprob": math.log(p) if p > 0 else -1e4}
                    for tok, p in alternatives
                ],
            }
        ]
    }


def _make_handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; without TCP_NODELAY the second
        # waits for the client's delayed ACK (~40 ms per request).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # keep test output clean

        def do_POST(self) -> None:  # noqa: N802 (the name http.server dispatches to)
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                request = json.loads(raw)
            except json.JSONDecodeError:
                self._send_json(400, {"error": {"message": "body is not JSON"}})
                return
            with _in_flight(server):
                self._answer(request)

        def _answer(self, request: dict) -> None:
            arrival = time.monotonic()
            key = messages_key(request.get("messages", []))
            with server._lock:
                nth = server.record.requested[key]
                server.record.requested[key] += 1
                server.record.bodies.append(request)
                server.record.headers.append({k.lower(): v for k, v in self.headers.items()})
            outcome = server.choose_outcome(key, nth)
            server.sleep(server.latency)
            prompt = completion = 0
            if outcome == "ok":
                body = server.completion_body(request)
                prompt = body["usage"]["prompt_tokens"]
                completion = body["usage"]["completion_tokens"]
                self._send_json(200, body)
            else:
                self._send_fault(outcome, request)
            with server._lock:
                status = "200" if outcome == "ok" else outcome
                server.record.outcomes[status] += 1
                server.record.events.append((arrival, key, status, prompt, completion))
                if outcome == "ok":
                    server.record.answered[key] += 1

        def _send_fault(self, outcome: str, request: dict) -> None:
            if outcome == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif outcome == "slow":
                server.sleep(server.slow_seconds)
                self._send_json(200, server.completion_body(request))
            elif outcome == "invalid_json":
                self._send_raw(200, b'{"id": "chatcmpl-x", "choices": [')
            elif outcome == "no_choices":
                self._send_json(200, {"id": "chatcmpl-x", "object": "chat.completion"})
            elif outcome == "html":
                page = b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"
                self._send_raw(200, page, content_type="text/html; charset=utf-8")
            else:
                status, etype, code, message = _ERROR_BODIES[outcome]
                headers = server.retry_after_headers() if status in (429, 503) else {}
                if outcome == "quota":
                    headers = {}
                error = {"message": message, "type": etype, "code": code, "param": None}
                self._send_json(status, {"error": error}, headers)

        def _send_json(self, status: int, body: dict, headers: Mapping[str, str] = {}) -> None:
            self._send_raw(status, json.dumps(body).encode(), headers)

        def _send_raw(
            self,
            status: int,
            data: bytes,
            headers: Mapping[str, str] = {},
            content_type: str = "application/json",
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout): nothing to do

    return Handler


@contextlib.contextmanager
def _in_flight(server: FaultServer) -> Iterator[None]:
    """Count concurrent requests in ``server.record`` for the duration of a ``with`` block."""
    with server._lock:
        server.record.in_flight += 1
        server.record.max_in_flight = max(server.record.max_in_flight, server.record.in_flight)
    try:
        yield
    finally:
        with server._lock:
            server.record.in_flight -= 1


def _parse_faults(items: Sequence[str]) -> Iterator[tuple[str, float]]:
    for item in items:
        kind, _, rate = item.partition("=")
        yield kind, float(rate)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=RATE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    server = FaultServer(
        port=args.port,
        latency=args.latency,
        faults=dict(_parse_faults(args.fault)),
        seed=args.seed,
        retry_after=args.retry_after,
        slow_seconds=args.slow_seconds,
    )
    print(f"listening on {server.base_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()


if __name__ == "__main__":
    main()
