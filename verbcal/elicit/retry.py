"""When a failed chat request is tried again, and how long to wait first.

Retries are owned by tenacity (the SDK's own ``max_retries`` must be 0, or
attempts would multiply). Each failed HTTP attempt is classified into an
:class:`AttemptError` (:func:`classify_error`): 408, 409, 429, 5xx, timeouts,
dropped connections and malformed bodies are retryable, with jittered
exponential back-off that waits at least what ``Retry-After`` /
``retry-after-ms`` ask for (:func:`parse_retry_after`), or a Gemini body's
``retryDelay``; 400, 401, 403, 404, 422, any other 4xx and quota exhaustion
(``insufficient_quota``, Gemini ``RESOURCE_EXHAUSTED`` on a daily quota: see
:func:`verbcal.elicit.provider_errors.quota_exhausted`) are final, since retrying
cannot fix them. Error bodies that are JSON lists (Gemini) are shown in full.
:func:`call_with_retries` runs one
request's attempts under a :class:`RetryPolicy`; a request that failed for good
is reported as a :class:`RequestFailedError`.
"""

from __future__ import annotations

import email.utils
import functools
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from verbcal.elicit.provider_errors import error_message, quota_exhausted, retry_delay
from verbcal.errors import BackendError, ConfigurationError

__all__ = [
    "AttemptError",
    "RequestFailedError",
    "RetryPolicy",
    "call_with_retries",
    "classify_error",
    "parse_retry_after",
]

#: HTTP statuses below 500 that are worth another attempt.
RETRYABLE_STATUS = frozenset({408, 409, 429})

T = TypeVar("T")


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


class AttemptError(Exception):
    """One failed HTTP attempt, classified for the retry decision.

    Attributes
    ----------
    kind : str
        ``"timeout"``, ``"connection"``, ``"malformed"``, ``"quota"``,
        ``"client"`` or the HTTP status as text.
    reason : str
        What went wrong, for people.
    retryable : bool
        Whether another attempt may succeed.
    retry_after : float or None
        Seconds the server asked to wait before the next attempt.
    """

    def __init__(
        self, kind: str, reason: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


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
        if not (
            isinstance(self.max_attempts, int)
            and not isinstance(self.max_attempts, bool)
            and self.max_attempts >= 1
        ):
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        for name in ("max_elapsed", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")

    def why_stopped(self, last: AttemptError, attempts: int) -> str:
        """Why no further attempt was made after ``attempts`` failed ones ending in ``last``."""
        if not last.retryable:
            return "not retryable"
        if attempts >= self.max_attempts:
            return "retries exhausted"
        return f"the next retry would pass max_elapsed={self.max_elapsed:g} s"


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


def classify_error(exc: openai.APIError) -> AttemptError:
    """Turn an SDK exception into a retryable or final attempt error."""
    if isinstance(exc, openai.APITimeoutError):
        return AttemptError("timeout", "timed out", retryable=True)
    if isinstance(exc, openai.APIConnectionError):
        detail = f": {exc.__cause__}" if exc.__cause__ else ""
        return AttemptError("connection", f"connection error{detail}", retryable=True)
    if not isinstance(exc, openai.APIStatusError):
        return AttemptError("client", f"{type(exc).__name__}: {exc}", retryable=False)
    status = exc.status_code
    message = f"HTTP {status}: {error_message(exc.body, exc.message)}"
    quota = quota_exhausted(exc.body) if status in (403, 429) else None
    if quota is not None:
        return AttemptError(
            "quota",
            f"quota exhausted ({message}): retrying cannot help until the quota is raised or "
            "renewed",
            retryable=False,
        )
    retryable = status in RETRYABLE_STATUS or status >= 500
    retry_after = None
    if retryable:
        # Retry-After headers, else a Google RetryInfo retryDelay in the body (Gemini).
        retry_after = parse_retry_after(exc.response.headers)
        if retry_after is None:
            retry_after = retry_delay(exc.body)
    if retry_after is not None:
        message += f" (retry after {retry_after:g} s)"
    return AttemptError(str(status), message, retryable=retryable, retry_after=retry_after)


async def call_with_retries(policy: RetryPolicy, attempt: Callable[[], Awaitable[T]]) -> T:
    """Await ``attempt()`` until it succeeds or ``policy`` says to stop.

    ``attempt`` signals a failed try by raising :class:`AttemptError`; the last
    one propagates when no further attempt is made. Any other exception
    propagates at once.
    """
    retrying = _retry_template(policy).copy()
    try:
        # Called, not iterated: iterating keeps the call state on the object, another cycle.
        return await retrying(attempt)
    finally:
        _forget_actions(retrying)


@functools.lru_cache(maxsize=16)
def _retry_template(policy: RetryPolicy) -> AsyncRetrying:
    """Tenacity's stop, wait and retry strategies for ``policy`` (copied for each request)."""
    backoff = wait_random_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, AttemptError) and error.retry_after is not None:
            # At least what the server asked for, plus a little jitter against herds.
            return error.retry_after + random.uniform(0, min(1.0, 0.1 * error.retry_after))
        return backoff(state)

    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_before_delay(policy.max_elapsed),
        wait=wait,
        retry=retry_if_exception(lambda e: isinstance(e, AttemptError) and e.retryable),
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
