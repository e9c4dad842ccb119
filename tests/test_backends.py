"""The OpenAI-compatible backend, over real HTTP on 127.0.0.1 with the real openai SDK."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.server
import json
import math
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from fault_server import FaultServer, expected_distribution, messages_key

from verbcal import ConfigurationError, InvalidInputError
from verbcal.elicit.backend import LOOPBACK_API_KEY, CompletionResult, OpenAIBackend, RetryPolicy
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.ratelimit import RateLimiter, estimate_tokens, prompt_bytes
from verbcal.elicit.retry import RequestFailedError, parse_retry_after
from verbcal.elicit.token_probs import label_probabilities_from_logprobs

FAST_RETRY = RetryPolicy(max_attempts=6, backoff_initial=0.01, backoff_max=0.05)
LABELS = ("positive", "negative")


def conversation(i: int | str) -> list[dict]:
    return [
        {"role": "system", "content": "Give a probability per label as JSON."},
        {"role": "user", "content": f"Review {i}: a film about things."},
    ]


def expected_text(messages: list[dict]) -> str:
    return json.dumps(expected_distribution(messages, LABELS))


def make_backend(server: FaultServer, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("timeout", 2.0)
    return OpenAIBackend("test-model", base_url=server.base_url, **kwargs)


def run_one(server: FaultServer, messages=None, backend_kwargs=None, **request):
    """Complete one request with a fresh backend; return (result or error, stats)."""

    async def go():
        async with make_backend(server, **(backend_kwargs or {})) as backend:
            try:
                return await backend.complete(messages or conversation(0), **request), backend
            except RequestFailedError as exc:
                return exc, backend

    return asyncio.run(go())


def run_many(server: FaultServer, conversations, backend_kwargs=None, **request):
    async def go():
        async with make_backend(server, **(backend_kwargs or {})) as backend:
            return await backend.complete_many(conversations, **request), backend

    return asyncio.run(go())


# ---------------------------------------------------------------- answers and requests


def test_answer_text_usage_and_request_body():
    with FaultServer() as server:
        result, backend = run_one(
            server,
            temperature=0.3,
            max_tokens=50,
            seed=11,
            response_format={"type": "json_object", "schema": {"type": "object"}},
            top_p=0.5,
        )
    assert isinstance(result, CompletionResult)
    assert result.text == expected_text(conversation(0))
    assert (result.attempts, result.from_cache, result.failed_attempts) == (1, False, ())
    assert result.prompt_tokens == sum(
        math.ceil(len(m["content"]) / 4) + 3 for m in conversation(0)
    )
    assert result.completion_tokens == math.ceil(len(result.text) / 4)
    assert result.finish_reason == "stop"
    body = server.record.bodies[0]
    assert body == {
        "model": "test-model",
        "messages": conversation(0),
        "temperature": 0.3,
        "max_tokens": 50,
        "seed": 11,
        "response_format": {"type": "json_object", "schema": {"type": "object"}},
        "top_p": 0.5,
    }
    assert backend.stats.as_dict() == {
        "requests_sent": 1,
        "completed": 1,
        "cache_hits": 0,
        "failed": 0,
        "retries_by_reason": {},
        "failures_by_status": {},
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
        "no_text": {},
    }


def test_none_parameters_are_not_sent_and_the_cap_is_the_profiles():
    """temperature=None is left out; max_tokens=None sends the profile's default cap."""
    with FaultServer() as server:
        run_one(server, temperature=None, max_tokens=None)
    assert server.record.bodies[0] == {
        "model": "test-model",
        "messages": conversation(0),
        "max_tokens": 256,
    }


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "fault, reason",
    [
        ("429", r"HTTP 429: Rate limit reached .*\(retry after 0\.05 s\)"),
        ("500", r"HTTP 500: The server had an error"),
        ("502", r"HTTP 502: Bad gateway"),
        ("503", r"HTTP 503: The engine is currently overloaded"),
        ("drop", r"connection error"),
        ("slow", r"timed out"),
        ("invalid_json", r"malformed body: invalid JSON"),
        ("no_choices", r"malformed body: no choices"),
    ],
)
def test_retryable_fault_is_retried(fault, reason):
    with FaultServer(script=[fault, fault], slow_seconds=1.0) as server:
        result, backend = run_one(server, backend_kwargs={"timeout": 0.4})
    assert result.text == expected_text(conversation(0))
    assert result.attempts == 3
    assert len(result.failed_attempts) == 2
    assert all(re.match(reason, r) for r in result.failed_attempts)
    assert server.record.requested[messages_key(conversation(0))] == 3
    assert backend.stats.requests_sent == 3
    assert sum(backend.stats.retries_by_reason.values()) == 2


@pytest.mark.parametrize(
    "fault, kind, message",
    [
        ("400", "400", r"not retryable: HTTP 400: Invalid value for 'messages'"),
        ("401", "401", r"not retryable: HTTP 401: Incorrect API key"),
        ("403", "403", r"not retryable: HTTP 403: Country not supported"),
        ("404", "404", r"not retryable: HTTP 404: The model does not exist"),
        ("422", "422", r"not retryable: HTTP 422: Unprocessable entity"),
        ("quota", "quota", r"not retryable: quota exhausted \(HTTP 429: You exceeded"),
    ],
)
def test_non_retryable_fault_fails_fast(fault, kind, message):
    with FaultServer(script=[fault]) as server:
        error, backend = run_one(server)
    assert isinstance(error, RequestFailedError)
    assert error.kind == kind
    assert error.attempts == 1
    assert len(error.reasons) == 1
    with pytest.raises(RequestFailedError, match=message):
        raise error
    assert server.record.total == 1  # neither tenacity nor the SDK tried again
    assert backend.stats.failures_by_status == Counter({kind: 1})
    assert backend.stats.retries_by_reason == Counter()


def test_retries_stop_at_max_attempts():
    with FaultServer(script=["500", "503", "500", "500"]) as server:
        error, backend = run_one(server, backend_kwargs={"retry": RetryPolicy(3, 10, 0.01, 0.01)})
    assert isinstance(error, RequestFailedError)
    assert (error.kind, error.attempts) == ("500", 3)
    assert [r.split(":")[0] for r in error.reasons] == ["HTTP 500", "HTTP 503", "HTTP 500"]
    assert "retries exhausted" in str(error)
    assert server.record.total == 3
    assert backend.stats.retries_by_reason == Counter({"500": 1, "503": 1})
    assert backend.stats.failures_by_status == Counter({"500": 1})


def test_sdk_does_not_retry_on_its_own():
    with FaultServer(script=["500", "500"]) as server:
        error, _ = run_one(server, backend_kwargs={"retry": RetryPolicy(max_attempts=1)})
    assert isinstance(error, RequestFailedError)
    assert server.record.total == 1


def test_retry_after_beyond_the_elapsed_cap_ends_the_request():
    policy = RetryPolicy(max_attempts=5, max_elapsed=1.0, backoff_initial=0.01)
    with FaultServer(script=["429"], retry_after=30) as server:
        start = time.monotonic()
        error, _ = run_one(server, backend_kwargs={"retry": policy})
    assert time.monotonic() - start < 5
    assert isinstance(error, RequestFailedError)
    assert error.attempts == 1
    assert "would pass max_elapsed=1 s: HTTP 429" in str(error)
    assert "retry after 30 s" in str(error)


@pytest.mark.parametrize(
    "style, seconds, at_least",
    [("seconds", 0.4, 0.4), ("ms", 0.4, 0.4), ("both", 0.4, 0.4), ("date", 1.6, 0.55)],
)
def test_retry_after_is_honoured(style, seconds, at_least):
    # The back-off alone would wait at most 0.05 s; the wait must be the server's.
    with FaultServer(script=["429"], retry_after=seconds, retry_after_style=style) as server:
        result, _ = run_one(server)
    (first, _k1, s1, _, _), (second, _k2, s2, _, _) = server.record.events
    assert (s1, s2) == ("429", "200")
    assert second - first >= at_least
    assert second - first < seconds + 1.0
    assert result.attempts == 2


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, 40.0),
        ({"Retry-After": "Thu, 01 Jan 1970 00:00:30 GMT"}, 0.0),  # in the past
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "whenever"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=60.0) == expected


def test_high_fault_rate_gives_the_fault_free_answers():
    faults = {
        "429": 0.06,
        "500": 0.04,
        "502": 0.03,
        "503": 0.04,
        "drop": 0.04,
        "invalid_json": 0.03,
        "no_choices": 0.03,
        "slow": 0.01,
        "400": 0.02,  # fails for good: must be reported, not lost
    }
    conversations = [conversation(i) for i in range(300)]
    policy = RetryPolicy(max_attempts=10, backoff_initial=0.005, backoff_max=0.02)
    with FaultServer(faults=faults, seed=3, retry_after=0.01, slow_seconds=1.0) as server:
        results, backend = run_many(
            server, conversations, backend_kwargs={"retry": policy, "timeout": 0.5}
        )
    with FaultServer() as clean:
        clean_results, _ = run_many(clean, conversations)

    failed = [r for r in results if isinstance(r, RequestFailedError)]
    assert failed, "the seed should give some 400s"
    assert all(e.kind == "400" and "HTTP 400" in e.reasons[-1] for e in failed)
    assert len(failed) == server.record.outcomes["400"]
    for got, clean_result in zip(results, clean_results, strict=True):
        if isinstance(got, CompletionResult):
            assert got.text == clean_result.text
            assert got.attempts == len(got.failed_attempts) + 1
    assert sum(isinstance(r, CompletionResult) for r in results) + len(failed) == 300
    assert sum(1 for r in results if isinstance(r, CompletionResult) and r.attempts > 1) > 50

    # The server's view: one 200 per answered message, and it is that message's last request.
    record = server.record
    assert set(record.answered.values()) == {1}
    last_outcome = {key: outcome for _, key, outcome, _, _ in sorted(record.events)}
    assert all(last_outcome[k] == "200" for k in record.answered)
    stats = backend.stats
    # A timed-out attempt may not have reached the server (a connect timeout under load).
    assert 0 <= stats.requests_sent - record.total <= stats.retries_by_reason["timeout"]
    assert stats.completed + stats.failed == 300
    assert sum(stats.retries_by_reason.values()) == stats.requests_sent - 300


# ---------------------------------------------------------------- limits


def test_answered_requests_leave_no_reference_cycles():
    # Cyclic garbage of every request would pile up and cost full collections of the heap.
    with FaultServer() as server:

        async def go():
            async with make_backend(server, max_concurrency=4) as backend:
                await backend.complete(conversation(0))  # connect, import lazily
                gc.collect()
                gc.disable()
                try:
                    await backend.complete_many([conversation(i) for i in range(1, 41)])
                    return gc.collect()
                finally:
                    gc.enable()

        assert asyncio.run(go()) < 40  # tenacity's cycles alone were 40 objects a request


def test_concurrency_limit_is_respected_and_used():
    with FaultServer(latency=0.05) as server:
        results, _ = run_many(
            server, [conversation(i) for i in range(24)], backend_kwargs={"max_concurrency": 3}
        )
    assert all(isinstance(r, CompletionResult) for r in results)
    assert server.record.max_in_flight == 3


def test_requests_per_window_limit():
    window, limit = 1.0, 8
    with FaultServer(latency=0.01) as server:
        start = time.monotonic()
        results, backend = run_many(
            server,
            [conversation(i) for i in range(20)],
            backend_kwargs={"requests_per_minute": limit, "rate_window": window},
        )
        elapsed = time.monotonic() - start
    assert all(isinstance(r, CompletionResult) for r in results)
    assert server.record.max_in_window(window) <= limit
    # 20 requests at 8 per window: two full waits, and not much more (the limit is used).
    assert 2 * window <= elapsed < 2 * window + 0.8
    assert len(backend.request_limiter.history) == 20


def test_tokens_per_window_limit_reconciles_with_reported_usage():
    window = 1.0
    messages = [conversation(i) for i in range(12)]
    estimate = estimate_tokens(messages[0], max_tokens=20)
    limit = 3 * estimate  # three requests fit before any usage is known
    with FaultServer(latency=0.01) as server:
        results, backend = run_many(
            server,
            messages,
            max_tokens=20,
            backend_kwargs={"tokens_per_minute": limit, "rate_window": window},
        )
    assert all(isinstance(r, CompletionResult) for r in results)
    assert server.record.max_in_window(window, "tokens") <= limit
    limiter = backend.token_limiter
    settled = [amount for _, _, amount in limiter.history]
    used = [r.prompt_tokens + r.completion_tokens for r in results]
    assert sorted(settled) == sorted(used)  # each grant settled to the server's usage
    assert max(used) < estimate
    # The estimate learnt from the reported prompt sizes: 1.25 x the largest tokens per byte.
    seen = max(
        (r.prompt_tokens - (4 * len(m) + 3)) / prompt_bytes(m)
        for r, m in zip(results, messages, strict=True)
    )
    assert backend.token_estimator.tokens_per_byte == pytest.approx(1.25 * seen, rel=1e-12)
    assert 0.125 < backend.token_estimator.tokens_per_byte < 1
    # Settling to actual usage lets more than three requests into one window.
    assert server.record.max_in_window(window) > 3


def test_rate_limiter_counts_until_a_window_after_settling():
    async def go():
        limiter = RateLimiter(limit=3, window=0.3)
        tickets = [await limiter.acquire(1) for _ in range(3)]
        assert limiter.in_window() == 3
        waiter = asyncio.ensure_future(limiter.acquire(1))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # nothing settled: open grants never expire
        start = time.monotonic()
        limiter.settle(tickets[0], amount=0.5)
        assert limiter.in_window() == 2.5
        await waiter  # 2.5 + 1 > 3: waits for the settled grant to leave the window
        waited = time.monotonic() - start
        assert 0.29 <= waited < 0.5
        for t in tickets[1:]:
            limiter.settle(t)
        return limiter

    limiter = asyncio.run(go())
    assert [amount for _, _, amount in limiter.history] == [0.5, 1.0, 1.0]


def test_rate_limiter_refuses_impossible_requests():
    with pytest.raises(ConfigurationError, match="needs 11 units but the limit is 10"):
        asyncio.run(RateLimiter(10).acquire(11))
    with pytest.raises(ConfigurationError, match="limit must be a positive number"):
        RateLimiter(0)


def test_estimate_tokens_bounds_the_servers_count():
    messages = conversation("héllo wörld " * 20)
    bound = estimate_tokens(messages, max_tokens=0)
    assert bound == sum(len(m["content"].encode()) + 4 for m in messages) + 3
    assert prompt_bytes(messages) == sum(len(m["content"].encode()) for m in messages)
    halved = estimate_tokens(messages, max_tokens=7, n=2, tokens_per_byte=0.5)
    assert halved == math.ceil(prompt_bytes(messages) / 2) + 4 * len(messages) + 3 + 14
    with pytest.raises(ConfigurationError, match="needs max_tokens"):
        estimate_tokens(messages, max_tokens=None)


# ---------------------------------------------------------------- cache


def test_rerun_asks_nothing_it_already_has(tmp_path):
    conversations = [conversation(i) for i in range(40)]
    with (
        ResponseCache(tmp_path / "c.sqlite") as cache,
        FaultServer(faults={"500": 0.2, "drop": 0.1}, seed=5) as server,
    ):
        first, _ = run_many(server, conversations, backend_kwargs={"cache": cache})
        sent = server.record.total
        again, backend = run_many(
            server, conversations, backend_kwargs={"cache": cache, "api_key": "another-key"}
        )
        assert server.record.total == sent
    assert all(r.from_cache and r.attempts == 0 for r in again)
    assert [r.text for r in again] == [r.text for r in first]
    assert [r.key for r in again] == [r.key for r in first]
    assert backend.stats.cache_hits == 40
    assert backend.stats.requests_sent == 0


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"seed": 1},
        {"max_tokens": 99},
        {"response_format": {"type": "json_object"}},
        {"logprob_labels": LABELS},
        {"top_p": 0.9},
    ],
)
def test_changed_parameter_misses_the_cache(tmp_path, change):
    with ResponseCache(tmp_path / "c.sqlite") as cache, FaultServer() as server:
        first, _ = run_one(server, backend_kwargs={"cache": cache})
        second, _ = run_one(server, backend_kwargs={"cache": cache}, **change)
        assert server.record.total == 2
        assert not second.from_cache and second.key != first.key
        third, _ = run_one(server, backend_kwargs={"cache": cache}, **change)
        assert third.from_cache and server.record.total == 2


def test_another_base_url_misses_the_cache(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        with FaultServer() as one:
            first, _ = run_one(one, backend_kwargs={"cache": cache})
        with FaultServer() as two:
            second, _ = run_one(two, backend_kwargs={"cache": cache})
            assert two.record.total == 1
    assert first.text == second.text and first.key != second.key


def test_concurrent_answers_share_cache_commits(tmp_path):
    conversations = [conversation(i) for i in range(48)]
    with ResponseCache(tmp_path / "c.sqlite") as cache, FaultServer(latency=0.02) as server:
        results, _ = run_many(
            server, conversations, backend_kwargs={"cache": cache, "max_concurrency": 16}
        )
        assert len(cache) == 48 and 1 <= cache.commits < 48
        assert all(cache.get_by_key(r.key) == r.response for r in results)


def test_an_answer_that_cannot_be_cached_is_not_returned(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path, timeout=0.2) as cache, FaultServer() as server:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(sqlite3.OperationalError, match="response cache .*locked"):
            run_one(server, backend_kwargs={"cache": cache})
        other.execute("ROLLBACK")
        other.close()
        assert server.record.total == 1 and len(cache) == 0


def test_a_failed_cache_commit_fails_its_requests_and_the_next_commit_works(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path, timeout=0.2) as cache, FaultServer() as server:

        async def go():
            async with make_backend(server, cache=cache) as backend:
                other = sqlite3.connect(path, isolation_level=None)
                other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
                failed = await asyncio.gather(
                    *(backend.complete(conversation(i)) for i in range(3)),
                    return_exceptions=True,
                )
                other.execute("ROLLBACK")
                other.close()
                return failed, await backend.complete(conversation(3))

        failed, result = asyncio.run(go())
        assert all(isinstance(e, sqlite3.OperationalError) for e in failed)
        assert len(cache) == 1 and cache.get_by_key(result.key) == result.response


def test_failures_are_not_cached(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache, FaultServer(script=["400"]) as server:
        error, _ = run_one(server, backend_kwargs={"cache": cache})
        assert isinstance(error, RequestFailedError)
        assert len(cache) == 0
        result, _ = run_one(server, backend_kwargs={"cache": cache})
        assert not result.from_cache and len(cache) == 1
        assert cache.get_by_key(result.key) == result.response


# ---------------------------------------------------------------- token probabilities


def test_logprob_path_returns_label_probabilities():
    with FaultServer() as server:
        result, _ = run_one(server, logprob_labels=LABELS, top_logprobs=3)
    body = server.record.bodies[0]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    expected = expected_distribution(conversation(0), LABELS)
    # The server put 95% of the first token's mass on the labels, 5% on "The".
    assert result.label_mass == pytest.approx(0.95, abs=1e-12)
    assert result.label_probabilities == pytest.approx(expected, abs=1e-12)


def test_logprob_path_without_logprobs_from_the_server():
    with FaultServer() as server:
        result, _ = run_one(server, logprob_labels=LABELS, logprobs=False)
    assert result.label_probabilities is None and result.label_mass is None


def lp(token: str, p: float) -> dict:
    return {"token": token, "logprob": math.log(p)}


@pytest.mark.parametrize(
    "alternatives, labels, expected, mass",
    [
        ([lp("A", 0.5), lp("B", 0.3), lp("C", 0.2)], "ABC", {"A": 0.5, "B": 0.3, "C": 0.2}, 1.0),
        # case, spaces and quotes are ignored; two spellings of a label add up
        (
            [lp(' "Yes', 0.4), lp("yes", 0.2), lp(" no", 0.2), lp("maybe", 0.2)],
            ["yes", "no"],
            {"yes": 0.75, "no": 0.25},
            0.8,
        ),
        # a unique prefix stands for its label; an ambiguous one for none
        (
            [lp("pos", 0.5), lp("neg", 0.25), lp("ne", 0.25)],
            ["positive", "negative", "neutral"],
            {"positive": 2 / 3, "negative": 1 / 3, "neutral": 0.0},
            0.75,
        ),
        # an exact label beats being a prefix of a longer one
        ([lp("A", 0.6), lp("AB", 0.2)], ["A", "AB"], {"A": 0.75, "AB": 0.25}, 0.8),
        ([lp("{", 0.7), lp("The", 0.3)], ["yes", "no"], None, 0.0),
    ],
)
def test_label_probabilities_from_logprobs(alternatives, labels, expected, mass):
    probs, got_mass = label_probabilities_from_logprobs(alternatives, list(labels))
    assert got_mass == pytest.approx(mass, abs=1e-12)
    if expected is None:
        assert probs is None
    else:
        assert probs == pytest.approx(expected, abs=1e-12)
        assert list(probs) == list(labels)


@contextlib.contextmanager
def canned_chat_server(response: dict):
    """A real loopback HTTP server that answers every chat request with ``response``."""
    payload = json.dumps(response).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802 (the http.server spelling)
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def logprobs_response(tokens: list[str], answer_at: int, alternatives: list[dict]) -> dict:
    """A chat response whose content is ``tokens`` joined; ``alternatives`` at ``answer_at``.

    Every other position offers label-like decoys, so reading the wrong one shows.
    """
    decoys = [lp("positive", 0.5), lp("negative", 0.5)]
    content = [
        {"token": t, "logprob": -0.1, "top_logprobs": alternatives if i == answer_at else decoys}
        for i, t in enumerate(tokens)
    ]
    message = {"role": "assistant", "content": "".join(tokens)}
    return {"choices": [{"index": 0, "message": message, "logprobs": {"content": content}}]}


def complete_at(base_url: str, **request) -> CompletionResult:
    async def go():
        async with OpenAIBackend("m", base_url=base_url, retry=FAST_RETRY) as backend:
            return await backend.complete(conversation(0), **request)

    return asyncio.run(go())


ANSWER_ALTERNATIVES = [lp("neg", 0.6), lp(" pos", 0.3), lp("The", 0.1)]


@pytest.mark.parametrize(
    "tokens, answer_at",
    [
        # the distribution template: the "Answer" value, not the first word ("Answer")
        (['{"', "Answer", '":', ' "', "neg", "ative", '",', ' "', "positive", '":', " 0.3}"], 4),
        # the reasoning template: labels inside the reasoning are not the answer
        (
            [
                '{"',
                "Reason",
                "ing",
                '":',
                ' "',
                "Not",
                " positive",
                '.",',
                ' "',
                "Answer",
                '":',
                ' "',
            ]
            + ["negative", '"}'],
            12,
        ),
        # a token that merges the opening quote with the start of the value
        (['{"Answer":', ' "neg', 'ative"}'], 1),
        # another answer key the parser reads, in another case, and a bracketed value
        (['{"', "final", "_answer", '":', ' "(', "neg", 'ative)"}'], 5),
        # plain text: the first token that matches a label
        (["The", " answer", " is", " negative", "."], 3),
        # plain text naming no label: the first word token, where the answer would start
        (["\n", "The", " movie", " review"], 1),
    ],
)
def test_logprobs_are_read_at_the_answer_token(tokens, answer_at):
    with canned_chat_server(logprobs_response(tokens, answer_at, ANSWER_ALTERNATIVES)) as url:
        result = complete_at(url, logprob_labels=LABELS)
    assert result.text == "".join(tokens)
    assert result.label_mass == pytest.approx(0.9, abs=1e-12)
    assert result.label_probabilities == pytest.approx(
        {"positive": 1 / 3, "negative": 2 / 3}, abs=1e-12
    )


@pytest.mark.parametrize(
    "tokens",
    [['{"', "positive", '":', " 0.3,", ' "', "negative", '":', " 0.7}"], ["{", "}"]],
)
def test_json_answer_without_an_answer_field_has_no_token_probabilities(tokens):
    with canned_chat_server(logprobs_response(tokens, 0, ANSWER_ALTERNATIVES)) as url:
        result = complete_at(url, logprob_labels=LABELS)
    assert result.label_probabilities is None and result.label_mass is None


# ---------------------------------------------------------------- configuration


def test_api_key_and_base_url_come_from_the_environment(monkeypatch):
    with FaultServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")

        async def go():
            async with OpenAIBackend("m", retry=FAST_RETRY) as backend:
                return await backend.complete(conversation(1))

        result = asyncio.run(go())
    assert result.text == expected_text(conversation(1))
    assert server.record.headers[0]["authorization"] == "Bearer sk-from-env"


def test_loopback_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FaultServer() as server:
        run_one(server)
    assert server.record.headers[0]["authorization"] == f"Bearer {LOOPBACK_API_KEY}"


def test_remote_endpoint_needs_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="no API key for https://example.com/v1"):
        OpenAIBackend("m", base_url="https://example.com/v1/")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": ""}, "model must be a non-empty string"),
        ({"base_url": "127.0.0.1:8080"}, "base_url must be an http"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"timeout": -1}, "timeout must be a positive number"),
        ({"requests_per_minute": -5}, "limit must be a positive number"),
        ({"rate_window": 0, "tokens_per_minute": 100}, "window must be a positive number"),
    ],
)
def test_bad_configuration_is_refused(kwargs, match):
    kwargs = {"model": "m", "base_url": "http://127.0.0.1:9/v1", **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        OpenAIBackend(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_elapsed": float("inf")}, "max_elapsed must be a finite number"),
        ({"backoff_initial": -1}, "backoff_initial must be a finite number"),
    ],
)
def test_bad_retry_policy_is_refused(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "messages must be a non-empty list"),
        ("hello", "messages must be a non-empty list"),
        ([{"content": "no role"}], r"messages\[0\] must be a dict with a 'role'"),
    ],
)
def test_bad_messages_are_refused(messages, match):
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InvalidInputError, match=match):
        backend.build_request(messages)


def test_tokens_limit_larger_than_a_request_can_use():
    with FaultServer() as server:
        with pytest.raises(ConfigurationError, match="raise the limit or lower max_tokens"):
            run_one(server, max_tokens=5000, backend_kwargs={"tokens_per_minute": 1000})
        assert server.record.total == 0


def test_fault_server_as_a_process_and_a_dead_endpoint(tmp_path):
    script = Path(__file__).with_name("fault_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--latency", "0.01", "--fault", "500=0.5", "--seed", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        base_url = proc.stdout.readline().split()[-1]
        policy = RetryPolicy(max_attempts=2, backoff_initial=0.01)

        async def go():
            async with OpenAIBackend("m", base_url=base_url, retry=policy) as backend:
                answers = await backend.complete_many([conversation(i) for i in range(10)])
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                try:
                    await backend.complete(conversation(99))
                except RequestFailedError as exc:
                    return answers, exc

        answers, dead = asyncio.run(go())
    finally:
        proc.kill()
    for i, answer in enumerate(answers):
        if isinstance(answer, CompletionResult):
            assert answer.text == expected_text(conversation(i))
        else:
            assert (answer.kind, answer.attempts) == ("500", 2)  # 500 twice in a row
    assert sum(isinstance(a, CompletionResult) for a in answers) >= 5
    assert (dead.kind, dead.attempts) == ("connection", 2)
    assert "retries exhausted: connection error" in str(dead)
