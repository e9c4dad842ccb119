"""The transport to any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama…).

:class:`OpenAIBackend` sends chat requests with the ``openai`` SDK's
``AsyncOpenAI`` and adds what a long elicitation run needs:

* **Retries owned by tenacity** (the SDK's own ``max_retries`` is 0, or attempts
  would multiply). 408, 409, 429, 5xx, timeouts, dropped connections and
  malformed bodies (invalid JSON, no ``choices``) are retried with jittered
  exponential back-off, waiting at least what ``Retry-After`` /
  ``retry-after-ms`` ask for. 400, 401, 403, 404, 422, any other 4xx and quota
  exhaustion (429 with ``insufficient_quota``) fail at once: retrying cannot fix them.
* **Limits**: at most ``max_concurrency`` requests in flight, and sliding-window
  limits on requests and tokens per minute (:class:`RateLimiter`).
* **The response cache** (:class:`verbcal.elicit.cache.ResponseCache`): looked up before
  sending, written and committed before the answer is returned.
* **A result per request** (:class:`CompletionResult`) and run counters
  (:class:`BackendStats`).
* **Token probabilities** on request: the answer token's top logprobs turned
  into label probabilities (:func:`label_probabilities_from_logprobs`), to
  compare with the probabilities the model states in words. The answer token is
  where the value of a JSON answer's ``"Answer"`` field starts, or in plain text
  the first token that matches a label.

One backend serves one asyncio event loop (its client, semaphore and limiters
bind to the loop that first uses them).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import math
import os
import random
import re
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from verbcal.elicit.cache import ResponseCache, encode_request
from verbcal.errors import BackendError, ConfigurationError, InvalidInputError

__all__ = [
    "BackendStats",
    "CompletionResult",
    "OpenAIBackend",
    "RateLimiter",
    "RequestFailedError",
    "RetryPolicy",
    "estimate_tokens",
    "label_probabilities_from_logprobs",
    "parse_retry_after",
    "prompt_bytes",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Sent as the API key to a loopback server when none is configured (local servers ignore it).
LOOPBACK_API_KEY = "sk-local-no-key"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
_RETRYABLE_STATUS = {408, 409, 429}


# ---------------------------------------------------------------- results and errors


@dataclass(frozen=True)
class CompletionResult:
    """The answer to one chat request.

    Attributes
    ----------
    text : str
        Content of the first choice.
    texts : tuple of str
        Content of every choice (more than one when the request set ``n``).
    key : str
        Cache key of the request (see :func:`verbcal.elicit.cache.request_key`).
    prompt_tokens, completion_tokens : int
        Usage the server reported (0 when it reported none).
    finish_reason : str or None
        Of the first choice: ``"stop"``, ``"length"``, …
    label_probabilities : dict of str to float or None
        Label probabilities from the answer token's logprobs (the ``"Answer"``
        value of a JSON answer, else the first label token), when the request
        named ``logprob_labels`` and the server returned logprobs.
    label_mass : float or None
        Probability the answer token put on tokens matching a label,
        before renormalising (low values: the model mostly said something else).
    attempts : int
        HTTP requests made for this answer; 0 when it came from the cache.
    from_cache : bool
        True when the answer was read from the response cache.
    failed_attempts : tuple of str
        Why each earlier attempt failed, in order.
    response : dict
        The raw response body.
    """

    text: str
    texts: tuple[str, ...]
    key: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    label_probabilities: dict[str, float] | None
    label_mass: float | None
    attempts: int
    from_cache: bool
    failed_attempts: tuple[str, ...]
    response: dict = field(repr=False)


class RequestFailedError(BackendError):
    """A request failed for good: a non-retryable answer, or retries ran out.

    Attributes
    ----------
    kind : str
        What the last attempt got: an HTTP status (``"401"``, ``"503"``),
        ``"quota"``, ``"timeout"``, ``"connection"`` or ``"malformed"``.
    attempts : int
        HTTP requests made.
    reasons : tuple of str
        Why each attempt failed, in order.
    """

    def __init__(self, message: str, *, kind: str, attempts: int, reasons: Sequence[str]):
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts
        self.reasons = tuple(reasons)


class _AttemptError(Exception):
    """One failed HTTP attempt, classified for the retry decision."""

    def __init__(
        self, kind: str, reason: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass
class BackendStats:
    """Counters of one backend, for a run summary.

    ``requests_sent`` counts HTTP attempts; ``retries_by_reason`` counts failed
    attempts that were retried, by kind (``"429"``, ``"timeout"``…);
    ``failures_by_status`` counts requests that failed for good, by the kind of
    their last attempt; tokens are the usage the server reported.
    """

    requests_sent: int = 0
    completed: int = 0
    cache_hits: int = 0
    failed: int = 0
    retries_by_reason: Counter = field(default_factory=Counter)
    failures_by_status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The counters as plain data (counters become dicts)."""
        return {
            "requests_sent": self.requests_sent,
            "completed": self.completed,
            "cache_hits": self.cache_hits,
            "failed": self.failed,
            "retries_by_reason": dict(self.retries_by_reason),
            "failures_by_status": dict(self.failures_by_status),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


# ---------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """When to give up and how long to wait between attempts.

    Parameters
    ----------
    max_attempts : int, default 6
        HTTP attempts per request, the first included.
    max_elapsed : float, default 300.0
        Seconds since the first attempt after which no retry starts (a wait
        that would end later, Retry-After included, ends the request instead).
    backoff_initial : float, default 0.5
        Scale of the exponential back-off: the wait before retry ``i`` is drawn
        uniformly from ``[0, min(backoff_max, backoff_initial * 2**i)]`` ("full jitter").
    backoff_max : float, default 30.0
        Cap of one back-off wait (a longer ``Retry-After`` is still honoured).
    """

    max_attempts: int = 6
    max_elapsed: float = 300.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if not (isinstance(self.max_attempts, int) and self.max_attempts >= 1):
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("max_elapsed", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds a server asks to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date. Returns None
    when neither header is present or readable; never a negative number.

    Examples
    --------
    >>> parse_retry_after({"retry-after-ms": "1500"})
    1.5
    >>> parse_retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=4.0)
    6.0
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        return max(0.0, float(lowered["retry-after-ms"]) / 1000.0)
    except (KeyError, ValueError):
        pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _classify(exc: openai.APIError) -> _AttemptError:
    """Turn an SDK exception into a retryable or final attempt error."""
    if isinstance(exc, openai.APITimeoutError):
        return _AttemptError("timeout", "timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        detail = f": {exc.__cause__}" if exc.__cause__ else ""
        return _AttemptError("connection", f"connection error{detail}", retryable=True)
    if not isinstance(exc, openai.APIStatusError):
        return _AttemptError("client", f"{type(exc).__name__}: {exc}", retryable=False)
    status = exc.status_code
    message = f"HTTP {status}: {_server_message(exc)}"
    if status == 429 and "insufficient_quota" in (exc.code, exc.type):
        return _AttemptError("quota", f"quota exhausted ({message})", retryable=False)
    retryable = status in _RETRYABLE_STATUS or status >= 500
    retry_after = parse_retry_after(exc.response.headers) if retryable else None
    if retry_after is not None:
        message += f" (retry after {retry_after:g} s)"
    return _AttemptError(str(status), message, retryable=retryable, retry_after=retry_after)


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return body["message"]
    return exc.message


def _parse_body(text: str) -> dict:
    """The response JSON, checked to hold a text answer; else a retryable attempt error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"malformed body: invalid JSON ({exc})"
        raise _AttemptError("malformed", reason, retryable=True) from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _AttemptError("malformed", "malformed body: no choices", retryable=True)
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise _AttemptError("malformed", "malformed body: a choice has no text", retryable=True)
    return data


# ---------------------------------------------------------------- rate limiting


class RateLimiter:
    """At most ``limit`` units (requests or tokens) in any ``window`` seconds.

    A grant of ``amount`` units is counted from the moment it is granted until
    ``window`` seconds after it is settled (:meth:`settle`, when the response
    arrived): the server sees the request somewhere in between, so no window
    of the *server's* clock holds more than ``limit`` either. Settling may
    lower the amount (actual usage below the estimate), which frees capacity
    at once. Waiters are served first come, first served.

    The accounting is public: :meth:`in_window` is what is counted now,
    ``history`` lists every settled grant as ``(granted_at, settled_at, amount)``
    on the :func:`time.monotonic` clock.

    Parameters
    ----------
    limit : float
        Units allowed per window.
    window : float, default 60.0
        Window length in seconds (60 for per-minute limits; tests use less).
    """

    def __init__(self, limit: float, window: float = 60.0) -> None:
        for name, value in (("limit", limit), ("window", window)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(
                    f"rate limit {name} must be a positive number, got {value!r}"
                )
        self.limit = float(limit)
        self.window = float(window)
        self.history: list[tuple[float, float, float]] = []
        self._open: dict[int, tuple[float, float]] = {}  # ticket -> (granted_at, amount)
        self._settled: list[tuple[float, float]] = []  # (expires_at, amount)
        self._next_ticket = 0
        self._turn: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None

    def in_window(self, now: float | None = None) -> float:
        """Units counted now: open grants plus grants settled less than ``window`` ago."""
        now = time.monotonic() if now is None else now
        self._settled = [(end, amount) for end, amount in self._settled if end > now]
        return sum(a for _, a in self._open.values()) + sum(a for _, a in self._settled)

    async def acquire(self, amount: float) -> int:
        """Wait until ``amount`` more units fit in the window; return a ticket to settle."""
        if amount > self.limit:
            raise ConfigurationError(
                f"one request needs {amount:g} units but the limit is {self.limit:g} per "
                f"{self.window:g} s; raise the limit or lower max_tokens"
            )
        if self._turn is None:
            self._turn, self._changed = asyncio.Lock(), asyncio.Event()
        async with self._turn:
            while self.in_window() + amount > self.limit:
                await self._wait_for_room()
            ticket = self._next_ticket
            self._next_ticket += 1
            self._open[ticket] = (time.monotonic(), float(amount))
            return ticket

    async def _wait_for_room(self) -> None:
        """Sleep until the oldest settled grant expires or a grant is settled."""
        assert self._changed is not None
        self._changed.clear()
        expiries = [end for end, _ in self._settled]
        timeout = max(0.0, min(expiries) - time.monotonic()) if expiries else None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def settle(self, ticket: int, amount: float | None = None) -> None:
        """Mark a grant finished, with its actual amount (default: as granted)."""
        granted_at, granted = self._open.pop(ticket)
        final = granted if amount is None else float(amount)
        now = time.monotonic()
        self._settled.append((now + self.window, final))
        self.history.append((granted_at, now, final))
        if self._changed is not None:
            self._changed.set()


#: Chat markup tokens counted per message, and once for the reply's priming.
_TOKENS_PER_MESSAGE, _TOKENS_PER_REPLY = 4, 3


def prompt_bytes(messages: Sequence[Mapping[str, Any]]) -> int:
    """UTF-8 bytes of the messages' contents (non-text content counted as its JSON)."""
    total = 0
    for message in messages:
        content = message.get("content", "")
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        total += len(text.encode("utf-8"))
    return total


def estimate_tokens(
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int | None,
    n: int = 1,
    *,
    tokens_per_byte: float = 1.0,
) -> int:
    """Tokens a chat request may use, estimated before it is sent.

    A token is at least one byte of text, so with ``tokens_per_byte=1`` (the
    default) the prompt bound is its UTF-8 byte count plus chat markup (4
    tokens per message, 3 for the reply); the completion takes at most
    ``n * max_tokens``. That bound is loose (English runs about 4 bytes per
    token): :class:`OpenAIBackend` lowers ``tokens_per_byte`` once the server
    has reported usage, and settles every grant with the reported usage.

    Examples
    --------
    >>> estimate_tokens([{"role": "user", "content": "héllo"}], max_tokens=10)
    23
    >>> estimate_tokens([{"role": "user", "content": "héllo"}], max_tokens=10, tokens_per_byte=0.5)
    20
    """
    if max_tokens is None:
        raise ConfigurationError(
            "a tokens-per-minute limit needs max_tokens, to bound the answer's length"
        )
    markup = _TOKENS_PER_MESSAGE * len(messages) + _TOKENS_PER_REPLY
    prompt = math.ceil(tokens_per_byte * prompt_bytes(messages)) + markup
    return prompt + n * int(max_tokens)


# ---------------------------------------------------------------- token probabilities


def _normalise_token(text: str) -> str:
    """Lower-case text without surrounding whitespace, punctuation or quotes."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", text).casefold()


def _match_label(token: str, labels: Sequence[str]) -> int | None:
    """Index of the label ``token`` stands for: equal, or a prefix of exactly one label."""
    norm = _normalise_token(token)
    if not norm:
        return None
    names = [_normalise_token(label) for label in labels]
    if norm in names:
        return names.index(norm)
    prefixed = [i for i, name in enumerate(names) if name.startswith(norm)]
    return prefixed[0] if len(prefixed) == 1 else None


def label_probabilities_from_logprobs(
    top_logprobs: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> tuple[dict[str, float] | None, float]:
    """Label probabilities from one token position's top alternatives.

    Each alternative's token is compared with the labels after lower-casing
    and stripping whitespace, punctuation and quotes; it counts for a label
    when equal to it, or when it is a prefix of exactly one label (``"pos"``
    for ``"positive"``: labels often span several tokens). Alternatives that
    match several or no labels are *non-label mass*: it is dropped and the
    label probabilities are renormalised over the matched mass, i.e. they are
    the token probabilities conditional on the answer being a label. The
    matched mass is returned too, so callers can distrust rows where it is low.
    A label outside the top alternatives gets probability 0.

    Parameters
    ----------
    top_logprobs : sequence of mappings with "token" and "logprob"
        The alternatives at the answer position (OpenAI's ``top_logprobs``).
    labels : sequence of str
        The class labels, in column order.

    Returns
    -------
    probabilities : dict of str to float, or None
        One entry per label, summing to 1; None when no alternative matched.
    label_mass : float
        Total probability of the matched alternatives.

    Examples
    --------
    >>> alts = [{"token": " Positive", "logprob": math.log(0.6)},
    ...         {"token": "neg", "logprob": math.log(0.2)},
    ...         {"token": "The", "logprob": math.log(0.2)}]
    >>> probs, mass = label_probabilities_from_logprobs(alts, ["positive", "negative"])
    >>> {k: round(v, 6) for k, v in probs.items()}, round(mass, 6)
    ({'positive': 0.75, 'negative': 0.25}, 0.8)
    """
    mass = [0.0] * len(labels)
    for alternative in top_logprobs:
        index = _match_label(str(alternative.get("token", "")), labels)
        if index is not None:
            mass[index] += math.exp(float(alternative["logprob"]))
    total = sum(mass)
    if total <= 0:
        return None, 0.0
    return {label: m / total for label, m in zip(labels, mass, strict=True)}, total


#: Where the value of a JSON answer's ``"Answer"`` field starts (after an opening quote).
_ANSWER_VALUE = re.compile(r'"Answer"\s*:\s*"?\s*(?=\w)')


def _answer_position(
    positions: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> Mapping[str, Any] | None:
    """The token position that states the answer label, or None when there is none.

    In a JSON answer (the shipped templates), it is the token where the value
    of the ``"Answer"`` field starts; a JSON answer without that field has no
    answer token (its first label-like tokens are keys). In any other text, it
    is the first token that matches a label (see :func:`label_probabilities_from_logprobs`);
    when no token does (``"The movie review"``), the first token with a word
    character: where an answer that starts with the label would have started.
    """
    tokens = [str(position.get("token", "")) for position in positions]
    text = "".join(tokens)
    match = _ANSWER_VALUE.search(text)
    if match is not None:
        end = 0
        for position, token in zip(positions, tokens, strict=True):
            end += len(token)
            if end > match.end():
                return position
    if text.lstrip().startswith("{"):
        return None
    for position, token in zip(positions, tokens, strict=True):
        if _match_label(token, labels) is not None:
            return position
    return next((p for p, t in zip(positions, tokens, strict=True) if _normalise_token(t)), None)


def _answer_logprobs(response: Mapping[str, Any], labels: Sequence[str]):
    """Label probabilities at the answer token (see :func:`_answer_position`)."""
    logprobs = response["choices"][0].get("logprobs") or {}
    position = _answer_position(logprobs.get("content") or [], labels)
    if position is None:
        return None, None
    return label_probabilities_from_logprobs(position.get("top_logprobs") or [], labels)


# ---------------------------------------------------------------- the backend


def _resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {url!r}")
    return url.rstrip("/")


def _resolve_api_key(api_key: str | None, base_url: str) -> str:
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if urllib.parse.urlsplit(base_url).hostname in _LOOPBACK_HOSTS:
        return LOOPBACK_API_KEY
    raise ConfigurationError(
        f"no API key for {base_url}: set OPENAI_API_KEY or pass api_key= "
        "(only a server on 127.0.0.1/localhost may go without one)"
    )


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible endpoint, with retries, limits and a cache.

    Parameters
    ----------
    model : str
        Model name sent with every request.
    base_url : str, optional
        Endpoint root such as ``"http://127.0.0.1:8080/v1"``; defaults to
        ``$OPENAI_BASE_URL``, then OpenAI's API.
    api_key : str, optional
        Defaults to ``$OPENAI_API_KEY``; a loopback ``base_url`` may go without.
    cache : ResponseCache, optional
        Answers are looked up here before sending and stored before returning.
    max_concurrency : int, default 8
        Requests in flight at once.
    requests_per_minute, tokens_per_minute : float, optional
        Sliding-window limits (see :class:`RateLimiter`).
    rate_window : float, default 60.0
        Length of the rate-limit window in seconds (shorter in tests).
    timeout : float, default 60.0
        Seconds one HTTP attempt may take.
    retry : RetryPolicy, optional
        Attempts and waits; ``RetryPolicy()`` by default.

    Examples
    --------
    >>> backend = OpenAIBackend("any-model", base_url="http://127.0.0.1:8080/v1")
    >>> backend.base_url, backend.stats.requests_sent
    ('http://127.0.0.1:8080/v1', 0)
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        cache: ResponseCache | None = None,
        max_concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        rate_window: float = 60.0,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model must be a non-empty string, got {model!r}")
        if not (isinstance(max_concurrency, int) and max_concurrency >= 1):
            raise ConfigurationError(
                f"max_concurrency must be an int >= 1, got {max_concurrency!r}"
            )
        if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
            raise ConfigurationError(
                f"timeout must be a positive number of seconds, got {timeout!r}"
            )
        self.model = model
        self.max_concurrency = max_concurrency
        self.base_url = _resolve_base_url(base_url)
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self.stats = BackendStats()
        self.request_limiter = (
            RateLimiter(requests_per_minute, rate_window) if requests_per_minute else None
        )
        self.token_limiter = (
            RateLimiter(tokens_per_minute, rate_window) if tokens_per_minute else None
        )
        #: Prompt tokens per byte assumed by the tokens-per-minute estimate; 1 (a strict
        #: bound) until the server reports usage, then 1.25 x the largest ratio seen.
        self.tokens_per_byte = 1.0
        self._largest_tokens_per_byte = 0.0
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._unsaved: list[tuple[tuple[str, str, str], asyncio.Future]] = []
        self._unsaved_lock = threading.Lock()  # shared with the writer thread
        self._writing = False
        self._client = openai.AsyncOpenAI(
            api_key=_resolve_api_key(api_key, self.base_url),
            base_url=self.base_url,
            timeout=float(timeout),
            max_retries=0,  # tenacity retries; SDK retries would multiply attempts
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def build_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = 0.0,
        max_tokens: int | None = 256,
        response_format: Mapping[str, Any] | None = None,
        seed: int | None = None,
        logprob_labels: Sequence[str] | None = None,
        top_logprobs: int = 5,
        **params: Any,
    ) -> dict[str, Any]:
        """The JSON body :meth:`complete` sends (parameters as documented there)."""
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise InvalidInputError(
                "messages must be a non-empty list of {'role', 'content'} dicts"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise InvalidInputError(
                    f"messages[{i}] must be a dict with a 'role', got {message!r}"
                )
        body: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in messages]}
        optional = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "response_format": response_format,
            "seed": seed,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if logprob_labels is not None:
            body.update(logprobs=True, top_logprobs=top_logprobs)
        body.update(params)
        return body

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = 0.0,
        max_tokens: int | None = 256,
        response_format: Mapping[str, Any] | None = None,
        seed: int | None = None,
        logprob_labels: Sequence[str] | None = None,
        top_logprobs: int = 5,
        **params: Any,
    ) -> CompletionResult:
        """Answer one chat request: from the cache, or from the endpoint with retries.

        Parameters
        ----------
        messages : list of dict
            Chat messages, ``{"role": ..., "content": ...}``.
        temperature, max_tokens, seed : optional
            Sent when not None.
        response_format : dict, optional
            Sent as given: ``{"type": "json_schema", ...}`` for OpenAI,
            ``{"type": "json_object", "schema": {...}}`` for llama.cpp.
        logprob_labels : sequence of str, optional
            Ask for ``logprobs`` with ``top_logprobs`` alternatives and turn the
            answer token's into probabilities of these labels (see ``label_probabilities``
            of :class:`CompletionResult`).
        **params
            Any other request parameter (``n``, ``top_p``, ``stop``…), sent as given.

        Returns
        -------
        CompletionResult

        Raises
        ------
        RequestFailedError
            When the endpoint refused the request or retries ran out; its
            ``kind``, ``attempts`` and ``reasons`` say what happened.
        """
        body = self.build_request(
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
            seed=seed,
            logprob_labels=logprob_labels,
            top_logprobs=top_logprobs,
            **params,
        )
        key, request_text = encode_request({"base_url": self.base_url, **body})
        if self.cache is not None:
            # A point lookup on the cache's reading connection takes a few microseconds
            # (in WAL mode it does not wait for a commit); a hop to a thread costs ten times that.
            cached = self.cache.get_by_key(key)
            if cached is not None:
                self.stats.cache_hits += 1
                self.stats.completed += 1
                return _make_result(cached, key, logprob_labels, attempts=0, from_cache=True)
        response, attempts, reasons = await self._send_with_retries(body, key, request_text)
        self.stats.completed += 1
        return _make_result(
            response, key, logprob_labels, attempts=attempts, from_cache=False, reasons=reasons
        )

    async def complete_many(
        self, conversations: Sequence[Sequence[Mapping[str, Any]]], **kwargs: Any
    ) -> list[CompletionResult | RequestFailedError]:
        """:meth:`complete` for every conversation, concurrently, in input order.

        A request that failed for good appears as its :class:`RequestFailedError`
        instead of raising, so one failure does not lose the other answers.
        """

        async def one(messages: Sequence[Mapping[str, Any]]):
            try:
                return await self.complete(messages, **kwargs)
            except RequestFailedError as exc:
                return exc

        return list(await asyncio.gather(*(one(m) for m in conversations)))

    def _retrying(self) -> AsyncRetrying:
        """A retry controller for one request; its strategies are shared by every request."""
        return _retry_template(self.retry).copy()

    async def _send_with_retries(
        self, body: dict[str, Any], key: str, request_text: str
    ) -> tuple[dict, int, tuple[str, ...]]:
        failures: list[_AttemptError] = []

        async def attempt() -> dict:
            try:
                return await self._send_once(body, key, request_text)
            except _AttemptError as error:
                failures.append(error)
                raise

        retrying = self._retrying()
        try:
            # Called, not iterated: iterating keeps the call state on the object, another cycle.
            response = await retrying(attempt)
        except _AttemptError as error:
            self.stats.retries_by_reason.update(f.kind for f in failures[:-1])
            self.stats.failures_by_status[error.kind] += 1
            self.stats.failed += 1
            reasons = [f.reason for f in failures]
            if not error.retryable:
                verdict = "not retryable"
            elif len(failures) >= self.retry.max_attempts:
                verdict = "retries exhausted"
            else:
                verdict = f"the next retry would pass max_elapsed={self.retry.max_elapsed:g} s"
            raise RequestFailedError(
                f"{self.base_url} request failed after {len(failures)} attempt(s), "
                f"{verdict}: {error.reason}",
                kind=error.kind,
                attempts=len(failures),
                reasons=reasons,
            ) from None
        finally:
            _forget_actions(retrying)
        self.stats.retries_by_reason.update(f.kind for f in failures)
        return response, len(failures) + 1, tuple(f.reason for f in failures)

    async def _send_once(self, body: dict[str, Any], key: str, request_text: str) -> dict:
        """One HTTP attempt inside the concurrency and rate limits; the answer is cached.

        The answer is stored before the concurrency slot is released, so at most
        ``max_concurrency`` paid-for answers are ever not yet on disk.
        """
        estimate = None
        if self.token_limiter is not None:
            estimate = estimate_tokens(
                body["messages"],
                body.get("max_tokens"),
                body.get("n", 1),
                tokens_per_byte=self.tokens_per_byte,
            )
        async with self._semaphore:
            request_ticket = token_ticket = None
            used: float | None = 0  # tokens the attempt used; None = unknown, keep the estimate
            try:
                if self.token_limiter is not None:
                    token_ticket = await self.token_limiter.acquire(estimate)
                if self.request_limiter is not None:
                    request_ticket = await self.request_limiter.acquire(1)
                used = None
                used, response, response_text = await self._post(body)
                if self.cache is not None:
                    await self._store((key, request_text, response_text))
                return response
            except _AttemptError as error:
                if error.kind not in ("timeout", "connection", "malformed"):
                    used = 0  # the server answered with an error: no tokens were spent
                raise
            finally:
                if request_ticket is not None:
                    self.request_limiter.settle(request_ticket)
                if token_ticket is not None:
                    self.token_limiter.settle(token_ticket, used)

    async def _store(self, row: tuple[str, str, str]) -> None:
        """Return once ``row`` (key, request JSON, response JSON) is committed to the cache.

        One worker thread at a time writes: it commits whatever answers are
        waiting in ``_unsaved`` together (:meth:`ResponseCache.put_encoded`), so a
        burst of answers pays one ``fsync``, and it keeps going while answers
        arrive. The thread wakes the waiters itself, so an answer is returned a
        single event-loop turn after its commit.
        """
        loop = asyncio.get_running_loop()
        saved = loop.create_future()
        with self._unsaved_lock:
            self._unsaved.append((row, saved))
            start_writer = not self._writing
            self._writing = True
        if start_writer:
            loop.run_in_executor(None, self._write_unsaved, loop)
        await saved

    def _write_unsaved(self, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: commit waiting answers in batches until none is left."""
        assert self.cache is not None
        while True:
            with self._unsaved_lock:
                batch, self._unsaved = self._unsaved, []
                if not batch:
                    self._writing = False
                    return
            error: Exception | None = None
            try:
                self.cache.put_encoded([row for row, _ in batch])
            except Exception as exc:  # every waiter of the batch sees the failure
                error = exc
            loop.call_soon_threadsafe(_settle, [saved for _, saved in batch], error)

    async def _post(self, body: dict[str, Any]) -> tuple[float | None, dict, str]:
        """POST the body; return (total tokens reported or None, parsed response, its text).

        The SDK's generic ``post`` sends the body exactly as built and returns the
        text unparsed (``chat.completions.create`` would re-validate every typed
        parameter and build a response model we do not use); its errors are the same.
        """
        self.stats.requests_sent += 1
        try:
            text = await self._client.post("/chat/completions", body=body, cast_to=str)
        except openai.APIError as exc:
            raise _classify(exc) from exc
        response = _parse_body(text)
        usage = response.get("usage") or {}
        prompt, completion = (
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0),
        )
        self.stats.prompt_tokens += prompt
        self.stats.completion_tokens += completion
        self._learn_tokens_per_byte(body["messages"], prompt)
        return (prompt + completion if usage else None), response, text

    def _learn_tokens_per_byte(self, messages: Sequence[Mapping[str, Any]], prompt: int) -> None:
        """Tighten the token estimate with the prompt size the server reported."""
        nbytes = prompt_bytes(messages)
        if not (prompt and nbytes):
            return
        markup = _TOKENS_PER_MESSAGE * len(messages) + _TOKENS_PER_REPLY
        seen = max(0, prompt - markup) / nbytes
        self._largest_tokens_per_byte = max(self._largest_tokens_per_byte, seen)
        # A margin for prompts that tokenise worse than those seen; never below 1 token
        # per 8 bytes (no tokenizer packs more) and never above the strict bound.
        self.tokens_per_byte = min(1.0, max(0.125, 1.25 * self._largest_tokens_per_byte))


@functools.lru_cache(maxsize=16)
def _retry_template(policy: RetryPolicy) -> AsyncRetrying:
    """Tenacity's stop, wait and retry strategies for ``policy`` (copied for each request)."""
    backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _AttemptError) and error.retry_after is not None:
            # At least what the server asked for, plus a little jitter against herds.
            return error.retry_after + random.uniform(0, min(1.0, 0.1 * error.retry_after))
        return backoff(state)

    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.max_elapsed),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, _AttemptError) and e.retryable),
        reraise=True,
    )


def _forget_actions(retrying: AsyncRetrying) -> None:
    """Drop the actions tenacity keeps after its last attempt.

    They are bound methods of ``retrying`` that ``retrying`` keeps (in the
    ``iter_state`` of tenacity 9): a reference cycle per request that only the
    garbage collector frees. At hundreds of requests a second these cycles fill
    the older generations and cost full collections of the heap.
    """
    iter_state = getattr(retrying, "iter_state", None)
    if iter_state is not None:
        iter_state.reset()


def _settle(waiters: Sequence[asyncio.Future], error: Exception | None) -> None:
    """Wake the waiters of a cache commit (with its error, if it failed)."""
    for saved in waiters:
        if saved.done():  # its waiter was cancelled
            continue
        if error is None:
            saved.set_result(None)
        else:
            saved.set_exception(error)


def _make_result(
    response: dict,
    key: str,
    labels: Sequence[str] | None,
    *,
    attempts: int,
    from_cache: bool,
    reasons: Sequence[str] = (),
) -> CompletionResult:
    choices = response["choices"]
    usage = response.get("usage") or {}
    probabilities, mass = _answer_logprobs(response, labels) if labels else (None, None)
    return CompletionResult(
        text=choices[0]["message"]["content"],
        texts=tuple(c["message"]["content"] for c in choices),
        key=key,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        finish_reason=choices[0].get("finish_reason"),
        label_probabilities=probabilities,
        label_mass=mass,
        attempts=attempts,
        from_cache=from_cache,
        failed_attempts=tuple(reasons),
        response=response,
    )
