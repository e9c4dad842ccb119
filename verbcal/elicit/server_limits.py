"""Rate limits a server announces on its successful replies.

OpenAI and Azure send ``x-ratelimit-limit-requests``, ``-remaining-requests``,
``-reset-requests`` and the same three for ``-tokens`` with every successful
reply (DESIGN.md "Provider facts"; OpenAI's rate-limit guide). The limits are
per minute; the reset is a duration such as ``"1s"``, ``"6m0s"`` or ``"20ms"``.
The backend paces below what is announced when the user set no ``--rpm``/``--tpm``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ServerLimits", "parse_duration", "read_ratelimit_headers"]

_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``"6m0s"``, ``"1.5s"``, ``"20ms"``), or None.

    Examples
    --------
    >>> parse_duration("6m0s"), parse_duration("20ms"), parse_duration("1h2m3.5s")
    (360.0, 0.02, 3723.5)
    >>> parse_duration("soon") is None
    True
    """
    text = text.strip()
    parts = _PART.findall(text)
    if not parts or "".join(a + b for a, b in parts) != text:
        try:
            return max(0.0, float(text))  # a bare number of seconds
        except ValueError:
            return None
    return sum(float(amount) * _UNIT[unit] for amount, unit in parts)


@dataclass(frozen=True)
class ServerLimits:
    """What one reply's ``x-ratelimit-*`` headers say (None where a header is absent)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens: float | None = None

    @property
    def empty(self) -> bool:
        """True when the reply announced no limit."""
        return self.limit_requests is None and self.limit_tokens is None


def read_ratelimit_headers(headers: Mapping[str, str]) -> ServerLimits:
    """The limits announced in ``headers`` (names compared case-insensitively).

    Examples
    --------
    >>> read_ratelimit_headers({"x-ratelimit-limit-requests": "500",
    ...                         "x-ratelimit-reset-requests": "120ms"}).reset_requests
    0.12
    """
    lowered = {k.lower(): v for k, v in headers.items()}

    def number(name: str) -> float | None:
        try:
            value = float(lowered[f"x-ratelimit-{name}"])
        except (KeyError, ValueError):
            return None
        return value if value >= 0 else None

    def duration(name: str) -> float | None:
        value = lowered.get(f"x-ratelimit-{name}")
        return None if value is None else parse_duration(value)

    return ServerLimits(
        limit_requests=number("limit-requests"),
        remaining_requests=number("remaining-requests"),
        reset_requests=duration("reset-requests"),
        limit_tokens=number("limit-tokens"),
        remaining_tokens=number("remaining-tokens"),
        reset_tokens=duration("reset-tokens"),
    )
