"""The transport to any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama…).

:class:`OpenAIBackend` sends chat requests with the ``openai`` SDK's
``AsyncOpenAI`` and adds what a long elicitation run needs:

* **Retries** (:mod:`verbcal.elicit.retry`): transient failures are retried
  with back-off under a :class:`RetryPolicy`; a request that failed for good
  raises :class:`~verbcal.elicit.retry.RequestFailedError`.
* **Limits** (:mod:`verbcal.elicit.ratelimit`): at most ``max_concurrency``
  requests in flight, and sliding-window limits on requests and tokens per minute.
* **The response cache** (:class:`verbcal.elicit.cache.ResponseCache`): looked up before
  sending, written and committed before the answer is returned.
* **A result per request** (:class:`CompletionResult`) and run counters
  (:class:`BackendStats`).
* **Token probabilities** on request (:mod:`verbcal.elicit.token_probs`): the
  answer token's top logprobs turned into label probabilities, to compare with
  the probabilities the model states in words.

One backend serves one asyncio event loop (its client, semaphore and limiters
bind to the loop that first uses them).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

from verbcal.elicit.cache import ResponseCache, encode_request
from verbcal.elicit.providers import (
    ProviderProfile,
    build_body,
    make_client,
    resolve_api_key,
    resolve_profile,
)
from verbcal.elicit.ratelimit import RateLimiter, TokenEstimator
from verbcal.elicit.replies import ChoiceText, read_choice, usage_counts
from verbcal.elicit.retry import (
    AttemptError,
    RequestFailedError,
    RetryPolicy,
    call_with_retries,
    classify_error,
)
from verbcal.elicit.server_limits import ServerLimits, read_ratelimit_headers
from verbcal.elicit.token_probs import answer_label_probabilities
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.labels import LabelSet
from verbcal.validation import Interval

__all__ = [
    "DEFAULT_BASE_URL",
    "LOOPBACK_API_KEY",
    "BackendStats",
    "CompletionResult",
    "OpenAIBackend",
    "ProviderWarning",
    "RetryPolicy",
    "check_reply",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Sent as the API key to a loopback server when none is configured (local servers ignore it).
LOOPBACK_API_KEY = "sk-local-no-key"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
#: Share of a limit the server announces (``x-ratelimit-limit-*``) that the backend uses.
LEARNED_LIMIT_SHARE = 0.9


class ProviderWarning(UserWarning):
    """A request parameter the provider does not take was left out or changed."""


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class CompletionResult:
    """The answer to one chat request.

    Attributes
    ----------
    text : str
        Content of the first choice ("" when it holds no text: see ``choices``).
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
    choices : tuple of ChoiceText
        Every choice's text, or the kind of reply without text it is and why
        (refusal, content filter, length, reasoning only: see
        :func:`verbcal.elicit.replies.read_choice`).
    usage : dict
        Prompt, completion, reasoning and cached tokens the server reported
        (:func:`verbcal.elicit.replies.usage_counts`).
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
    choices: tuple[ChoiceText, ...] = ()
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class BackendStats:
    """Counters of one backend, for a run summary.

    ``requests_sent`` counts HTTP attempts; ``retries_by_reason`` counts failed
    attempts that were retried, by kind (``"429"``, ``"timeout"``…);
    ``failures_by_status`` counts requests that failed for good, by the kind of
    their last attempt; tokens are the usage the server reported for the
    replies received (cache hits excluded; replies without text included:
    they were paid for), reasoning tokens being part of the completion tokens
    and cached tokens part of the prompt tokens; ``no_text`` counts received
    choices without text by kind (``"refusal"``, ``"content_filter"``…).
    """

    requests_sent: int = 0
    completed: int = 0
    cache_hits: int = 0
    failed: int = 0
    retries_by_reason: Counter = field(default_factory=Counter)
    failures_by_status: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    no_text: Counter = field(default_factory=Counter)

    def since(self, earlier: Mapping[str, Any]) -> dict[str, Any]:
        """The counters gained since ``earlier``, an :meth:`as_dict` taken before.

        Examples
        --------
        >>> stats = BackendStats()
        >>> before = stats.as_dict()
        >>> stats.requests_sent += 2
        >>> stats.retries_by_reason["429"] += 1
        >>> gained = stats.since(before)
        >>> gained["requests_sent"], gained["retries_by_reason"], gained["cache_hits"]
        (2, {'429': 1}, 0)
        """
        gained: dict[str, Any] = {}
        for name, now in self.as_dict().items():
            if isinstance(now, dict):
                was = earlier.get(name) or {}
                counts = {key: count - was.get(key, 0) for key, count in now.items()}
                gained[name] = {key: count for key, count in counts.items() if count}
            else:
                gained[name] = now - earlier.get(name, 0)
        return gained

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
            "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens,
            "no_text": dict(self.no_text),
        }


def _parse_body(text: str) -> dict:
    """The response JSON, checked to hold a text answer; else a retryable attempt error."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"malformed body: invalid JSON ({exc})"
        raise AttemptError("malformed", reason, retryable=True) from None
    return check_reply(data)


def check_reply(data: object) -> dict:
    """``data``, a decoded chat response, when it is an answer to keep; else an AttemptError.

    The one test of what the cache stores, for answers received interactively
    and for those a batch returns (:mod:`verbcal.elicit.batch`). The error is
    retryable: a malformed body may come out right next time.

    A choice whose message holds no text (``content`` null or empty: a refusal,
    a content filter, a length cut, reasoning only) is kept: the reply is
    well-formed and was paid for, and asking again buys the same answer
    (:func:`verbcal.elicit.replies.read_choice` says why it has no text).
    """
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(choices, list) or not choices:
        raise AttemptError("malformed", "malformed body: no choices", retryable=True)
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else 0
        if not isinstance(message, dict) or not (content is None or isinstance(content, str)):
            raise AttemptError(
                "malformed", "malformed body: a choice has no message", retryable=True
            )
    return data


# ---------------------------------------------------------------- the backend


def _resolve_base_url(base_url: str | None) -> str:
    url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL with a host, got {url!r}")
    return url.rstrip("/")


def _resolve_api_key(api_key: str | None, base_url: str, profile: ProviderProfile) -> str:
    key = resolve_api_key(profile, api_key)
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
    provider : str or ProviderProfile, optional
        What the endpoint accepts (:mod:`verbcal.elicit.providers`): the
        parameters each request sends and how, the URL shape and the auth
        header. Inferred from ``base_url`` and ``model`` when not given
        (``generic``, which sends parameters as given, when nothing matches).
    params : mapping, optional
        Extra body fields sent with every request (``--param``).
    on_note : callable, optional
        Called once with each note on a parameter the provider profile left out
        or changed (default: a :class:`ProviderWarning`).

    Rate limits a server announces on its replies (``x-ratelimit-limit-requests``,
    ``-tokens``) are paced at :data:`LEARNED_LIMIT_SHARE` of the announced
    limit per ``rate_window`` when ``requests_per_minute`` / ``tokens_per_minute``
    are not given.

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
        provider: str | ProviderProfile | None = None,
        params: Mapping[str, Any] | None = None,
        on_note: Callable[[str], None] | None = None,
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
        for name, limit in (
            ("requests_per_minute", requests_per_minute),
            ("tokens_per_minute", tokens_per_minute),
        ):  # 0 is refused, not read as "no limit"
            if limit is not None and not Interval("real", 0, None, closed="neither").accepts(limit):
                raise ConfigurationError(
                    f"{name}: limit must be a positive number (or None), got {limit!r}"
                )
        self.model = model
        self.max_concurrency = max_concurrency
        self.base_url = _resolve_base_url(base_url)
        self.profile = resolve_profile(provider, self.base_url, model)
        self.params = dict(params or {})
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self.stats = BackendStats()
        #: Called after every HTTP attempt with its AttemptError, or None when it was
        #: answered; an observer may raise to stop the request (a circuit breaker does).
        self.attempt_observers: list[Callable[[AttemptError | None], None]] = []
        self.request_limiter = (
            RateLimiter(requests_per_minute, rate_window) if requests_per_minute else None
        )
        self.token_limiter = (
            RateLimiter(tokens_per_minute, rate_window) if tokens_per_minute else None
        )
        self.rate_window = rate_window
        self._learn_requests = not requests_per_minute
        self._learn_tokens = not tokens_per_minute
        #: The limits the server announced last (``x-ratelimit-*``), when it did.
        self.server_limits: ServerLimits | None = None
        self._noted: set[str] = set()
        self._on_note = on_note
        #: Token estimates of the tokens-per-minute limit, tightened by reported usage.
        self.token_estimator = TokenEstimator()
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._unsaved: list[tuple[tuple[str, str, str], asyncio.Future]] = []
        self._unsaved_lock = threading.Lock()  # shared with the writer thread
        self._writing = False
        # max_retries=0 in the client: tenacity retries; SDK retries would multiply attempts
        self._client = make_client(
            self.profile,
            self.base_url,
            _resolve_api_key(api_key, self.base_url, self.profile),
            timeout=float(timeout),
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
        max_tokens: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        seed: int | None = None,
        logprob_labels: Sequence[str] | LabelSet | None = None,
        top_logprobs: int = 5,
        n: int = 1,
        reasoning_effort: str | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """The JSON body :meth:`complete` sends (parameters as documented there).

        The provider profile decides what is sent and how
        (:func:`verbcal.elicit.providers.build_body`); each parameter it leaves
        out or changes is reported once per backend as a :class:`ProviderWarning`.
        """
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise InvalidInputError(
                "messages must be a non-empty list of {'role', 'content'} dicts"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping) or "role" not in message:
                raise InvalidInputError(
                    f"messages[{i}] must be a dict with a 'role', got {message!r}"
                )
        built = build_body(
            self.profile,
            self.model,
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
            seed=seed,
            logprobs=logprob_labels is not None,
            top_logprobs=top_logprobs,
            n=n,
            reasoning_effort=reasoning_effort,
            params={**self.params, **params},
        )
        for note in built.notes:
            if note not in self._noted:
                self._noted.add(note)
                if self._on_note is not None:
                    self._on_note(note)
                else:
                    warnings.warn(note, ProviderWarning, stacklevel=3)
        return built.body

    def prepare(
        self, messages: Sequence[Mapping[str, Any]], *, sample: int = 0, **kwargs: Any
    ) -> tuple[dict[str, Any], str, str]:
        """The body :meth:`complete` would send, its cache key and its canonical JSON text.

        The one place a request and its key are made: :meth:`complete` and the
        batch path (:mod:`verbcal.elicit.batch`) both call it, so a request sent
        either way is the same cache entry. Keyword arguments as for :meth:`complete`.

        The key is the body and the base URL. A body without a ``seed`` (the
        caller gave none, or the provider takes none) cannot tell repeated
        samples of one prompt apart, so for ``sample`` > 0 the key also holds
        the sample's index.
        """
        body = self.build_request(messages, **kwargs)
        keyed = {"base_url": self.base_url, **body}
        if sample and "seed" not in body:
            keyed["verbcal_sample"] = sample
        key, request_text = encode_request(keyed)
        return body, key, request_text

    def lookup(
        self, messages: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> CompletionResult | None:
        """The cached answer to a request, or None (nothing is sent and nothing counted)."""
        if self.cache is None:
            return None
        _, key, _ = self.prepare(messages, **kwargs)
        cached = self.cache.get_by_key(key)
        if cached is None:
            return None
        return _make_result(
            cached,
            key,
            kwargs.get("logprob_labels"),
            attempts=0,
            from_cache=True,
            reasoning_model=self.profile.reasoning_model,
        )

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        temperature: float | None = 0.0,
        max_tokens: int | None = None,
        response_format: Mapping[str, Any] | None = None,
        seed: int | None = None,
        logprob_labels: Sequence[str] | LabelSet | None = None,
        top_logprobs: int = 5,
        n: int = 1,
        reasoning_effort: str | None = None,
        sample: int = 0,
        **params: Any,
    ) -> CompletionResult:
        """Answer one chat request: from the cache, or from the endpoint with retries.

        Parameters
        ----------
        messages : list of dict
            Chat messages, ``{"role": ..., "content": ...}``.
        temperature, seed : optional
            Sent when not None and the provider takes them.
        max_tokens : int, optional
            Answer-length cap, as ``max_tokens`` or ``max_completion_tokens``
            (the provider's field); None: the provider profile's default.
        response_format : dict, optional
            ``{"type": "json_schema", ...}`` or ``{"type": "json_object", "schema": {...}}``,
            turned into the form the provider accepts.
        n : int, default 1
            Choices in one request (providers whose profile has ``n``).
        reasoning_effort : str, optional
            Sent to providers that take it.
        sample : int, default 0
            Index of the first sample this request answers (see :meth:`prepare`).
        logprob_labels : sequence of str or LabelSet, optional
            Ask for ``logprobs`` with ``top_logprobs`` alternatives and turn the
            answer token's into probabilities of these labels (see ``label_probabilities``
            of :class:`CompletionResult`); a :class:`verbcal.labels.LabelSet`
            also counts the tokens of its aliases for their labels.
        **params
            Any other request parameter (``top_p``, ``stop``…), sent as given.

        Returns
        -------
        CompletionResult

        Raises
        ------
        RequestFailedError
            When the endpoint refused the request or retries ran out; its
            ``kind``, ``attempts`` and ``reasons`` say what happened.
        """
        body, key, request_text = self.prepare(
            messages,
            temperature=temperature,
            max_tokens=max_tokens,
            response_format=response_format,
            seed=seed,
            logprob_labels=logprob_labels,
            top_logprobs=top_logprobs,
            n=n,
            reasoning_effort=reasoning_effort,
            sample=sample,
            **params,
        )
        reasoning_model = self.profile.reasoning_model
        if self.cache is not None:
            # A point lookup on the cache's reading connection takes a few microseconds
            # (in WAL mode it does not wait for a commit); a hop to a thread costs ten times that.
            cached = self.cache.get_by_key(key)
            if cached is not None:
                self.stats.cache_hits += 1
                self.stats.completed += 1
                return _make_result(
                    cached,
                    key,
                    logprob_labels,
                    attempts=0,
                    from_cache=True,
                    reasoning_model=reasoning_model,
                )
        response, attempts, reasons = await self._send_with_retries(body, key, request_text)
        self.stats.completed += 1
        return _make_result(
            response,
            key,
            logprob_labels,
            attempts=attempts,
            from_cache=False,
            reasons=reasons,
            reasoning_model=reasoning_model,
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

    async def _send_with_retries(
        self, body: dict[str, Any], key: str, request_text: str
    ) -> tuple[dict, int, tuple[str, ...]]:
        failures: list[AttemptError] = []

        async def attempt() -> dict:
            try:
                response = await self._send_once(body, key, request_text)
            except AttemptError as error:
                failures.append(error)
                for observe in self.attempt_observers:
                    observe(error)
                raise
            for observe in self.attempt_observers:
                observe(None)
            return response

        try:
            response = await call_with_retries(self.retry, attempt)
        except AttemptError as error:
            self.stats.retries_by_reason.update(f.kind for f in failures[:-1])
            self.stats.failures_by_status[error.kind] += 1
            self.stats.failed += 1
            raise RequestFailedError(
                f"{self.base_url} request failed after {len(failures)} attempt(s), "
                f"{self.retry.why_stopped(error, len(failures))}: {error.reason}",
                kind=error.kind,
                attempts=len(failures),
                reasons=[f.reason for f in failures],
            ) from None
        self.stats.retries_by_reason.update(f.kind for f in failures)
        return response, len(failures) + 1, tuple(f.reason for f in failures)

    async def _send_once(self, body: dict[str, Any], key: str, request_text: str) -> dict:
        """One HTTP attempt inside the concurrency and rate limits; the answer is cached.

        The answer is stored before the concurrency slot is released, so at most
        ``max_concurrency`` paid-for answers are ever not yet on disk.
        """
        async with self._semaphore:
            # Read inside the slot: a limiter learned from a reply meanwhile applies at once.
            requests, tokens = self.request_limiter, self.token_limiter
            estimate = 0
            if tokens is not None:
                estimate = self.token_estimator.estimate(
                    body["messages"], body.get(self.profile.max_tokens_field), body.get("n", 1)
                )
            request_ticket = token_ticket = None
            used: float | None = 0  # tokens the attempt used; None = unknown, keep the estimate
            try:
                if tokens is not None:
                    token_ticket = await tokens.acquire(estimate)
                if requests is not None:
                    request_ticket = await requests.acquire(1)
                used = None
                used, response, response_text = await self._post(body)
                if self.cache is not None:
                    await self._store((key, request_text, response_text))
                return response
            except AttemptError as error:
                if error.kind not in ("timeout", "connection", "malformed"):
                    used = 0  # the server answered with an error: no tokens were spent
                raise
            finally:
                if requests is not None and request_ticket is not None:
                    requests.settle(request_ticket)
                if tokens is not None and token_ticket is not None:
                    tokens.settle(token_ticket, used)

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
            reply = await self._client.post("/chat/completions", body=body, cast_to=httpx2.Response)
        except openai.APIError as exc:
            raise classify_error(exc) from exc
        text = reply.text
        response = _parse_body(text)
        self._learn_limits(reply.headers)
        counts = usage_counts(response.get("usage"))
        self.stats.prompt_tokens += counts["prompt_tokens"]
        self.stats.completion_tokens += counts["completion_tokens"]
        self.stats.reasoning_tokens += counts["reasoning_tokens"]
        self.stats.cached_tokens += counts["cached_tokens"]
        for choice in response["choices"]:
            kind = read_choice(choice, reasoning_model=self.profile.reasoning_model).kind
            if kind is not None:
                self.stats.no_text[kind] += 1
        self.token_estimator.learn(body["messages"], counts["prompt_tokens"])
        used = counts["prompt_tokens"] + counts["completion_tokens"]
        return (used if response.get("usage") else None), response, text

    def _learn_limits(self, headers: Mapping[str, str]) -> None:
        """Pace below the limits a reply announces, where the user set none.

        The first announcement of a request (token) limit installs a limiter at
        :data:`LEARNED_LIMIT_SHARE` of it per ``rate_window``; a later, different
        announcement adjusts it.
        """
        if (
            "x-ratelimit-limit-requests" not in headers
            and "x-ratelimit-limit-tokens" not in headers
        ):
            return  # the common case off OpenAI and Azure: a lookup instead of a parse
        limits = read_ratelimit_headers(headers)
        if limits.empty:
            return
        self.server_limits = limits
        if self._learn_requests and limits.limit_requests:
            used = max(
                limits.limit_requests - (limits.remaining_requests or limits.limit_requests),
                self.stats.requests_sent,  # those still in flight are not counted by the server
            )
            self.request_limiter = _learned(
                self.request_limiter, limits.limit_requests, used, self.rate_window
            )
        if self._learn_tokens and limits.limit_tokens:
            used = limits.limit_tokens - (limits.remaining_tokens or limits.limit_tokens)
            self.token_limiter = _learned(
                self.token_limiter, limits.limit_tokens, used, self.rate_window
            )


def _learned(
    limiter: RateLimiter | None, announced: float, used: float, window: float
) -> RateLimiter:
    """A limiter at :data:`LEARNED_LIMIT_SHARE` of an announced limit (``limiter`` if it is).

    A new limiter starts with ``used`` units in its window: what was spent
    before the first announcement arrived.
    """
    limit = max(1.0, math.floor(LEARNED_LIMIT_SHARE * announced))
    if limiter is not None:
        limiter.limit = limit  # keeps what is in its window
        return limiter
    limiter = RateLimiter(limit, window)
    limiter.record(used)
    return limiter


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
    labels: Sequence[str] | LabelSet | None,
    *,
    attempts: int,
    from_cache: bool,
    reasons: Sequence[str] = (),
    reasoning_model: bool = False,
) -> CompletionResult:
    choices = response["choices"]
    usage = usage_counts(response.get("usage"))
    read = tuple(
        read_choice(c, usage=response.get("usage"), reasoning_model=reasoning_model)
        for c in choices
    )
    probabilities, mass = (None, None)
    if labels and read[0].text is not None:
        probabilities, mass = answer_label_probabilities(response, labels)
    return CompletionResult(
        text=read[0].text or "",
        texts=tuple(r.text or "" for r in read),
        key=key,
        prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"],
        finish_reason=choices[0].get("finish_reason"),
        label_probabilities=probabilities,
        label_mass=mass,
        attempts=attempts,
        from_cache=from_cache,
        failed_attempts=tuple(reasons),
        response=response,
        choices=read,
        usage=usage,
    )
