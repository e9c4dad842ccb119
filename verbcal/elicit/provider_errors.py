"""How providers' error bodies look: their message, quota exhaustion, retry delays.

OpenAI-compatible servers answer an error with ``{"error": {"message", "type",
"code"}}`` (the SDK hands over the inner object); Gemini's compatibility
endpoint with a JSON *list* of ``{"error": {"code", "message", "status",
"details"}}``, whose ``details`` carry a ``QuotaFailure`` (which quota) and a
``RetryInfo`` (``retryDelay``) — DESIGN.md "Provider facts" and the issue
threads it summarises. :mod:`verbcal.elicit.retry` decides with these whether
and when to try again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["error_message", "quota_exhausted", "retry_delay"]


def _error_objects(body: object) -> list[Mapping[str, Any]]:
    """The error objects in an error body: OpenAI's ``{"error": {...}}`` (or its inner
    object, as the SDK hands it over) or Gemini's JSON list of those."""
    items = body if isinstance(body, list) else [body]
    found = []
    for item in items:
        if isinstance(item, Mapping):
            inner = item.get("error")
            found.append(inner if isinstance(inner, Mapping) else item)
    return found


def error_message(body: object, fallback: str) -> str:
    """What an error body says, for a person.

    A JSON-list body (Gemini's) is shown in full: its details (quota, retry
    delay, which field was unknown) are the useful part. A single error object
    gives its ``message``; anything else the ``fallback`` (the SDK's text).

    Examples
    --------
    >>> error_message({"message": "Rate limit reached", "type": "requests"}, "Error code: 429")
    'Rate limit reached'
    >>> error_message([{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}], "Error code: 400")
    '[{"error": {"code": 400, "status": "INVALID_ARGUMENT"}}]'
    """
    if isinstance(body, list):
        return json.dumps(body, ensure_ascii=False)
    if isinstance(body, str) and body.strip():
        return body.strip()  # LM Studio: {"error": "<text>"}; a server's plain-text error
    objects = _error_objects(body)
    if objects and isinstance(objects[0].get("message"), str) and objects[0]["message"]:
        return str(objects[0]["message"])
    return fallback


def _details(body: object) -> list[Mapping[str, Any]]:
    return [
        d
        for obj in _error_objects(body)
        for d in (obj.get("details") or [])
        if isinstance(d, Mapping)
    ]


def quota_exhausted(body: object) -> str | None:
    """Why an error body means the quota is spent (retrying will not help), or None.

    OpenAI: ``insufficient_quota`` as the error code or type. Gemini:
    ``RESOURCE_EXHAUSTED`` whose ``QuotaFailure`` names a per-day quota, or
    that carries no ``retryDelay`` to wait for (a per-minute limit that
    comes back after its ``retryDelay`` is a rate limit, and is retried).

    Examples
    --------
    >>> quota_exhausted({"code": "insufficient_quota", "message": "You exceeded your quota"})
    'insufficient_quota'
    >>> quota_exhausted([{"error": {"status": "RESOURCE_EXHAUSTED", "details": [
    ...     {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "20s"}]}}]) is None
    True
    """
    for obj in _error_objects(body):
        if "insufficient_quota" in (obj.get("code"), obj.get("type")):
            return "insufficient_quota"
        if obj.get("status") == "RESOURCE_EXHAUSTED":
            quota_ids = [
                str(v.get("quotaId", ""))
                for d in _details(body)
                if str(d.get("@type", "")).endswith("QuotaFailure")
                for v in (d.get("violations") or [])
                if isinstance(v, Mapping)
            ]
            daily = [q for q in quota_ids if "PerDay" in q]
            if daily:
                return f"RESOURCE_EXHAUSTED ({', '.join(daily)})"
            if retry_delay(body) is None:
                return "RESOURCE_EXHAUSTED"
    return None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)s\s*$")


def retry_delay(body: object) -> float | None:
    """Seconds a Google ``RetryInfo`` detail asks to wait (``"retryDelay": "37s"``), or None.

    Examples
    --------
    >>> retry_delay([{"error": {"details": [
    ...     {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}])
    1.5
    """
    for detail in _details(body):
        if not str(detail.get("@type", "")).endswith("RetryInfo"):
            continue
        delay = detail.get("retryDelay")
        if isinstance(delay, str):
            match = _DURATION.match(delay)
            if match:
                return float(match.group(1))
        elif isinstance(delay, Mapping):
            return float(delay.get("seconds", 0)) + float(delay.get("nanos", 0)) / 1e9
    return None
