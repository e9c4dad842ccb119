"""Stop a run whose endpoint is down instead of retrying every item against it.

Retries are for transient trouble in a healthy run. When nothing answers at
all (connection refused, a server that hangs past the timeout, an HTML page
or an empty ``choices`` list where a chat completion should be, 5xx after
5xx), retrying each item six times only delays the verdict: 40 items against a
closed port took 25 s to fail item by item. A :class:`CircuitBreaker` watches
every HTTP attempt of a run and opens (raising :class:`EndpointDownError`,
which stops the run) when

* the endpoint has never answered and ``first_failures`` attempts have failed
  at the transport level over at least ``min_seconds`` (so the failure outlived
  a back-off), or a request has failed for good at the transport level;
* or, after answers, ``consecutive_failures`` attempts in a row have failed at
  the transport level over at least ``min_seconds``.

Answers already received are in the response cache: rerunning the same command
once the endpoint is back resumes the run. 429s and other 4xx answers are not
transport failures: the endpoint is there, and answering.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from verbcal.elicit.retry import AttemptError, RequestFailedError
from verbcal.errors import BackendError, ConfigurationError

__all__ = ["CircuitBreaker", "EndpointDownError", "is_transport_failure"]

#: Attempt kinds that say the endpoint is not answering chat completions at all.
TRANSPORT_KINDS = frozenset({"connection", "timeout", "malformed"})


class EndpointDownError(BackendError):
    """The endpoint failed at the transport level for long enough to stop the run."""


def is_transport_failure(kind: str) -> bool:
    """True for a failed attempt that says nothing answered: no connection, no reply, 5xx.

    Examples
    --------
    >>> [is_transport_failure(k) for k in ("connection", "503", "429", "401")]
    [True, True, False, False]
    """
    return kind in TRANSPORT_KINDS or (kind.isdigit() and int(kind) >= 500)


class CircuitBreaker:
    """Watches the attempts of one run and stops it when the endpoint is down.

    Parameters
    ----------
    endpoint : str
        What to name in the message (the base URL).
    first_failures : int, default 8
        Transport failures, with no answer yet, that open the breaker.
    consecutive_failures : int, default 32
        Transport failures in a row, after answers, that open the breaker.
    min_seconds : float, default 1.0
        The failures must span at least this long (a burst of simultaneous
        failures is not yet an outage).
    clock : callable, default time.monotonic
        Seconds, for tests.

    Examples
    --------
    >>> breaker = CircuitBreaker("http://127.0.0.1:9/v1", first_failures=2, min_seconds=0)
    >>> breaker.observe(AttemptError("connection", "refused", retryable=True))
    >>> breaker.observe(AttemptError("connection", "refused", retryable=True))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    verbcal.elicit.circuit.EndpointDownError: http://127.0.0.1:9/v1 is not answering: ...
    """

    def __init__(
        self,
        endpoint: str,
        *,
        first_failures: int = 8,
        consecutive_failures: int = 32,
        min_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("first_failures", first_failures),
            ("consecutive_failures", consecutive_failures),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(min_seconds, int | float) or not 0 <= min_seconds < float("inf"):
            raise ConfigurationError(f"min_seconds must be a number >= 0, got {min_seconds!r}")
        self.endpoint = endpoint
        self.first_failures = first_failures
        self.consecutive_failures = consecutive_failures
        self.min_seconds = min_seconds
        self.clock = clock
        self.started = clock()
        self.answers = 0
        self.streak = 0
        self.streak_started = 0.0
        self.last_reason = ""
        self.error: EndpointDownError | None = None

    def observe(self, failure: AttemptError | None) -> None:
        """Record one HTTP attempt (None: it was answered); raise once the endpoint is down.

        Raises
        ------
        EndpointDownError
            Now and for every later attempt, once the breaker is open.
        """
        if self.error is not None:
            raise self.error
        if failure is None:
            self.answers += 1
            self.streak = 0
            return
        if not is_transport_failure(failure.kind):
            return
        now = self.clock()
        if self.streak == 0:
            self.streak_started = now
        self.streak += 1
        self.last_reason = failure.reason
        needed = self.consecutive_failures if self.answers else self.first_failures
        if self.streak >= needed and now - self.streak_started >= self.min_seconds:
            if self.answers:
                self._open(
                    f"the last {self.streak} attempts all failed, after {self.answers} answered"
                )
            else:
                self._open(f"the first {self.streak} attempts all failed and none was answered")

    def request_failed(self, error: RequestFailedError) -> None:
        """Record a request that failed for good; raise if nothing has ever answered."""
        if self.error is not None:
            raise self.error
        if not self.answers and is_transport_failure(error.kind):
            self.last_reason = error.reasons[-1] if error.reasons else str(error)
            self._open(f"a request failed all {error.attempts} attempts and none was answered")

    def _open(self, what: str) -> None:
        seconds = self.clock() - self.started
        self.error = EndpointDownError(
            f"{self.endpoint} is not answering: {what} (last: {self.last_reason}); "
            f"stopped the run after {seconds:.1f} s. Every answer "
            "received is in the response cache: rerun the same command once the endpoint "
            "is up to resume."
        )
        raise self.error
