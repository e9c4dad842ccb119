"""The circuit breaker's rules, on a fake clock (the CLI tests run it against real servers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verbcal.elicit.circuit import CircuitBreaker, EndpointDownError, is_transport_failure
from verbcal.elicit.retry import AttemptError, RequestFailedError
from verbcal.errors import ConfigurationError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failure(kind: str = "connection") -> AttemptError:
    return AttemptError(kind, f"{kind} failure", retryable=True)


def breaker(clock: Clock, **kwargs) -> CircuitBreaker:
    return CircuitBreaker("http://127.0.0.1:9/v1", clock=clock, **kwargs)


def test_first_failures_open_it_once_they_span_min_seconds():
    clock = Clock()
    b = breaker(clock)
    for _ in range(20):  # a burst at one instant is not yet an outage
        b.observe(failure())
    clock.now = 1.0
    with pytest.raises(EndpointDownError, match=r"the first 21 attempts all failed.*1\.0 s"):
        b.observe(failure("timeout"))
    with pytest.raises(EndpointDownError):  # open for good: every later attempt stops too
        b.observe(None)


def test_answers_raise_the_bar_and_reset_the_streak():
    clock = Clock()
    b = breaker(clock, consecutive_failures=4)
    b.observe(None)
    for step in range(10):
        clock.now = float(step)
        for _ in range(3):
            b.observe(failure("503"))
        b.observe(None)  # one answer in four: a struggling endpoint, not a dead one
    for _ in range(3):
        b.observe(failure("503"))
    with pytest.raises(
        EndpointDownError, match="the last 4 attempts all failed, after 11 answered"
    ):
        clock.now += 2
        b.observe(failure("503"))


def test_answers_with_an_error_status_are_not_transport_failures():
    clock = Clock()
    b = breaker(clock, first_failures=1, min_seconds=0)
    for kind in ("429", "400", "401", "404", "quota", "client"):
        assert not is_transport_failure(kind)
        b.observe(failure(kind))
    for kind in ("connection", "timeout", "malformed", "500", "502", "503", "504"):
        assert is_transport_failure(kind)


def test_a_request_that_failed_for_good_opens_it_only_before_any_answer():
    clock = Clock()
    error = RequestFailedError("x", kind="timeout", attempts=6, reasons=["timed out"] * 6)
    b = breaker(clock)
    b.observe(None)
    b.request_failed(error)  # an endpoint that answered: one bad item is reported, not fatal
    with pytest.raises(EndpointDownError, match="a request failed all 6 attempts"):
        breaker(clock).request_failed(error)
    breaker(clock).request_failed(RequestFailedError("x", kind="429", attempts=6, reasons=[]))


def test_settings_are_checked():
    with pytest.raises(ConfigurationError, match="first_failures"):
        CircuitBreaker("u", first_failures=0)
    with pytest.raises(ConfigurationError, match="min_seconds"):
        CircuitBreaker("u", min_seconds=float("nan"))


@given(
    st.lists(
        st.tuples(st.integers(0, 31), st.sampled_from(["connection", "500", "429", "timeout"])),
        max_size=50,
    )
)
def test_a_healthy_run_never_opens_it(bursts):
    """Fewer than ``consecutive_failures`` transport failures between answers never stop a run."""
    clock = Clock()
    b = breaker(clock)
    b.observe(None)
    for n, kind in bursts:
        for _ in range(n):
            clock.now += 0.5
            b.observe(failure(kind))
        b.observe(None)
    assert b.error is None
