"""Client-side rate limits: requests and tokens per window, and token estimates.

:class:`RateLimiter` keeps at most ``limit`` units in any sliding window;
:func:`estimate_tokens` bounds what a chat request may use before it is sent,
and :class:`TokenEstimator` tightens that bound from the usage servers report.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from verbcal.errors import ConfigurationError

__all__ = [
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_REPLY",
    "RateLimiter",
    "TokenEstimator",
    "estimate_tokens",
    "prompt_bytes",
]


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

    def record(self, amount: float) -> None:
        """Count ``amount`` units spent outside the limiter (before it existed), from now on.

        A limiter made from the limits a server announced starts with what the
        server says was already used (``x-ratelimit-limit`` minus ``-remaining``).
        """
        if amount > 0:
            now = time.monotonic()
            self._settled.append((now + self.window, float(amount)))
            self.history.append((now, now, float(amount)))


#: Chat markup tokens counted per message, and once for the reply's priming.
TOKENS_PER_MESSAGE, TOKENS_PER_REPLY = 4, 3


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
    markup = TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY
    prompt = math.ceil(tokens_per_byte * prompt_bytes(messages)) + markup
    return prompt + n * int(max_tokens)


class TokenEstimator:
    """Token estimates of chat requests that tighten as servers report usage.

    ``tokens_per_byte`` starts at 1 (a strict bound: a token is at least one
    byte) and, once a server reported the prompt size, becomes 1.25 times the
    largest ratio seen: a margin for prompts that tokenise worse than those
    seen, never below 1 token per 8 bytes (no tokenizer packs more) and never
    above the strict bound.

    Examples
    --------
    >>> estimator = TokenEstimator()
    >>> messages = [{"role": "user", "content": "x" * 100}]
    >>> estimator.estimate(messages, max_tokens=10)
    117
    >>> estimator.learn(messages, prompt_tokens=32)  # 25 tokens for 100 bytes
    >>> estimator.tokens_per_byte, estimator.estimate(messages, max_tokens=10)
    (0.3125, 49)
    """

    def __init__(self) -> None:
        self.tokens_per_byte = 1.0
        self.largest_seen = 0.0

    def estimate(
        self, messages: Sequence[Mapping[str, Any]], max_tokens: int | None, n: int = 1
    ) -> int:
        """:func:`estimate_tokens` at the current ``tokens_per_byte``."""
        return estimate_tokens(messages, max_tokens, n, tokens_per_byte=self.tokens_per_byte)

    def learn(self, messages: Sequence[Mapping[str, Any]], prompt_tokens: int) -> None:
        """Account for a server's report that ``messages`` took ``prompt_tokens``."""
        nbytes = prompt_bytes(messages)
        if not (prompt_tokens and nbytes):
            return
        markup = TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY
        self.largest_seen = max(self.largest_seen, max(0, prompt_tokens - markup) / nbytes)
        self.tokens_per_byte = min(1.0, max(0.125, 1.25 * self.largest_seen))
