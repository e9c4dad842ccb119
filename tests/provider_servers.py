"""Loopback emulators of the providers verbcal talks to, each enforcing that provider's rules.

One threaded HTTP server on 127.0.0.1 per provider family, reached through the
real ``openai`` SDK. Each accepts what its provider documents, rejects what
it rejects with the provider's own status code and error shape, and answers in
the provider's reply shape. Where each rule comes from:

OpenAI (``openai``, ``openai-reasoning``, shared by ``azure``):
  * openai-python ``types/chat/completion_create_params.py``: the request fields
    (anything else is "Unrecognized request argument supplied"); ``top_logprobs``
    "An integer between 0 and 20"; ``max_tokens`` "is not compatible with
    o-series models"; ``max_completion_tokens`` "including visible output tokens
    and reasoning tokens"; ``n`` "charged based on the number of generated
    tokens across all of the choices" (the prompt once).
  * Reasoning models (issue threads quoted in DESIGN.md "Provider facts"):
    ``max_tokens`` → 400 ``unsupported_parameter`` "Unsupported parameter:
    'max_tokens' is not supported with this model. Use 'max_completion_tokens'
    instead."; temperature other than 1 → 400 ``unsupported_value``
    "Only the default (1) value is supported."; ``logprobs`` → 403 "You are not
    allowed to request logprobs from this model".
  * ``response_format`` ``{"type": "json_object", "schema": ...}`` → 400
    "Unknown parameter: 'response_format.schema'." (DESIGN.md; the schema key is
    a llama.cpp extension).
  * openai-python ``types/completion_usage.py``:
    ``completion_tokens_details.reasoning_tokens``,
    ``prompt_tokens_details.cached_tokens``; success replies carry
    ``x-ratelimit-limit/remaining/reset-requests/-tokens`` (DESIGN.md).
  * ``message.refusal`` (openai-python ``types/chat/chat_completion_message.py``)
    and ``finish_reason`` "content_filter" / "length"
    (``types/chat/chat_completion.py``).
  * Quota exhaustion: 429 with ``"code": "insufficient_quota"``.
Azure (openai-python ``lib/azure.py``): legacy endpoints are
  ``/openai/deployments/{deployment}/chat/completions?api-version=...`` with the
  key in an ``api-key`` header; the v1 endpoint is ``/openai/v1/chat/completions``
  for the plain client. Output stopped by the content filter answers 200 with
  ``finish_reason: "content_filter"`` and ``content_filter_results``.
Anthropic's OpenAI-compatible endpoint (DESIGN.md): ignores
  ``response_format``, ``logprobs``, ``top_logprobs`` and ``seed``; ``n`` must be 1;
  temperature at most 1; errors ``{"type": "error", "error": {...}}``.
Gemini's OpenAI-compatible endpoint (DESIGN.md and its users' issue threads):
  ``/v1beta/openai/chat/completions``; ``seed`` → 400 ``Invalid JSON payload
  received. Unknown name "seed"``; error bodies are JSON lists
  ``[{"error": {"code", "message", "status", "details"}}]``; quota and rate
  limits are 429 ``RESOURCE_EXHAUSTED`` with a ``QuotaFailure`` and a
  ``RetryInfo`` ``retryDelay``.
vLLM: reasoning parsers put the reasoning in ``reasoning_content`` (DESIGN.md);
  ``json_object`` ignores a schema; ``top_logprobs`` at most ``max_logprobs``
  (20 by default); errors ``{"object": "error", "message", "type", "code"}``.
Ollama: one choice per request (no ``n``), no logprobs, ``json_object``
  ignores a schema (DESIGN.md).
LM Studio: ``response_format`` must be ``json_schema`` or ``text`` (a
  ``json_object`` is rejected, DESIGN.md); errors ``{"error": "<text>"}``.
llama.cpp (llama-cpp-python, measured here, DESIGN.md "Local model facts"):
  ``json_schema`` → HTTP 500; ``json_object`` with ``schema`` constrains.

The answer to an item is a function of the messages and the sample index (the
request's ``seed`` plus the choice index), so ``n=k`` in one request equals
``k`` requests with seeds ``seed..seed+k-1``. An item whose text holds a
marker from :data:`SPECIAL_MARKERS` gets a reply without text of that kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from openai.types.chat.completion_create_params import CompletionCreateParamsBase

PROVIDERS = (
    "openai",
    "openai-reasoning",
    "azure",
    "azure-v1",
    "anthropic-compat",
    "gemini-compat",
    "vllm",
    "ollama",
    "lmstudio",
    "llamacpp",
    "generic",
)

#: Marker in an item's text → the reply without text it gets.
SPECIAL_MARKERS = {
    "[[refuse]]": "refusal",
    "[[filter]]": "content_filter",
    "[[reasoning-only]]": "reasoning_only",
}

#: Request fields OpenAI's chat API knows (openai-python completion_create_params.py).
OPENAI_FIELDS = frozenset(CompletionCreateParamsBase.__annotations__)

REFUSAL_TEXT = "I'm sorry, but I can't help with that request."


def count_tokens(text: str) -> int:
    """The default billing tokenizer: one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def answer_distribution(messages: object, sample: int, labels: Sequence[str]) -> dict[str, float]:
    """The probabilities stated for ``messages`` in sample ``sample`` (3 decimals, sum 1)."""
    text = json.dumps([messages, sample], sort_keys=True, ensure_ascii=False)
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)
    weights = [1 + (seed >> (8 * i)) % 97 for i in range(len(labels))]
    probs = [round(w / sum(weights), 3) for w in weights]
    probs[-1] = round(1.0 - sum(probs[:-1]), 3)
    return dict(zip(labels, probs, strict=True))


def answer_text(dist: Mapping[str, float]) -> str:
    """The JSON answer of the distribution template: the top label, then every probability."""
    top = max(dist, key=lambda label: dist[label])
    return json.dumps({"Answer": top, **dist})


@dataclass
class Bill:
    """Tokens the emulator billed, summed over its 200 replies."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    replies: int = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        self.prompt_tokens += usage["prompt_tokens"]
        self.completion_tokens += usage["completion_tokens"]
        self.reasoning_tokens += usage.get("completion_tokens_details", {}).get(
            "reasoning_tokens", 0
        )
        self.cached_tokens += usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        self.replies += 1

    def cost(self, prices: Mapping[str, float]) -> float:
        """Dollars at ``prices`` per million ``input``/``cached_input``/``output`` tokens."""
        cached_price = prices.get("cached_input", prices["input"])
        return (
            (self.prompt_tokens - self.cached_tokens) * prices["input"]
            + self.cached_tokens * cached_price
            + self.completion_tokens * prices["output"]
        ) / 1e6


@dataclass
class Record:
    """What the emulator saw and answered."""

    bodies: list[dict] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: (status, error message) of every rejected request
    rejected: list[tuple[int, str]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    #: arrival times (time.monotonic()) of requests, and of 429 answers with their delay
    arrivals: list[float] = field(default_factory=list)
    throttled: list[tuple[str, float, float]] = field(default_factory=list)
    bill: Bill = field(default_factory=Bill)
    special: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return len(self.bodies)

    def max_in_window(self, window: float) -> int:
        """Most requests that arrived within any ``window`` seconds."""
        times = sorted(self.arrivals)
        best, start = 0, 0
        for end, t in enumerate(times):
            while times[start] <= t - window:
                start += 1
            best = max(best, end - start + 1)
        return best


class _Reject(Exception):
    def __init__(self, status: int, message: str, body: object, headers: Mapping[str, str] = {}):
        super().__init__(message)
        self.status, self.message, self.body, self.headers = status, message, body, dict(headers)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class ProviderServer:
    """One emulated provider on 127.0.0.1 (see the module docstring for its rules).

    Parameters
    ----------
    provider : str
        One of :data:`PROVIDERS` (``azure`` is the legacy endpoint, ``azure-v1`` the v1 one).
    labels : sequence of str
        Labels of the stated distributions.
    reasoning_tokens : int
        Hidden reasoning tokens each choice spends first (reasoning models).
    requests_per_window, tokens_per_window : int, optional
        Rate limits enforced (429) and advertised in ``x-ratelimit-*`` headers.
    window : float
        Their window in seconds.
    quota_after : int, optional
        Replies served before the quota is spent (then every request fails).
    throttle_first : float, optional
        Gemini: the first ask of every message gets 429 ``RESOURCE_EXHAUSTED``
        with this ``retryDelay`` in seconds.
    tokenizer : callable
        Counts the tokens of a text for billing.
    api_key : str
        The key the server expects.
    deployment, api_version : str
        Azure's deployment name (the model) and required ``api-version``.
    """

    def __init__(
        self,
        provider: str,
        *,
        labels: Sequence[str] = ("positive", "negative"),
        reasoning_tokens: int = 0,
        requests_per_window: int | None = None,
        tokens_per_window: int | None = None,
        window: float = 60.0,
        quota_after: int | None = None,
        throttle_first: float | None = None,
        tokenizer: Callable[[str], int] = count_tokens,
        api_key: str = "sk-test",
        deployment: str = "gpt-4o-deploy",
        api_version: str = "2024-10-21",
        latency: float = 0.0,
    ) -> None:
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known: {PROVIDERS}")
        self.provider = provider
        self.labels = list(labels)
        self.reasoning_tokens = reasoning_tokens
        self.requests_per_window = requests_per_window
        self.tokens_per_window = tokens_per_window
        self.window = window
        self.quota_after = quota_after
        self.throttle_first = throttle_first
        self.tokenizer = tokenizer
        self.api_key = api_key
        self.deployment = deployment
        self.api_version = api_version
        self.latency = latency
        #: Reasoning-model rules: OpenAI's reasoning models, and Azure deployments of them.
        self.reasoning_rules = provider == "openai-reasoning" or (
            provider.startswith("azure") and deployment.startswith(("o1", "o3", "o4", "gpt-5"))
        )
        self.record = Record()
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()  # (time, tokens) of recent requests
        self._asked: Counter = Counter()
        self._seen_prefixes: set[str] = set()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ addresses

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The base URL a user configures for this provider."""
        return self.root + {
            "gemini-compat": "/v1beta/openai",
            "azure": "",
            "azure-v1": "/openai/v1",
        }.get(self.provider, "/v1")

    @property
    def model(self) -> str:
        """The model name to send (Azure: the deployment)."""
        return {
            "openai": "gpt-4o-mini",
            "openai-reasoning": "o4-mini",
            "azure": self.deployment,
            "azure-v1": self.deployment,
            "anthropic-compat": "claude-sonnet-4-5",
            "gemini-compat": "gemini-2.5-flash",
        }.get(self.provider, "local-model")

    @property
    def profile(self) -> str:
        """The verbcal profile for this emulator."""
        return "azure" if self.provider == "azure-v1" else self.provider

    # ------------------------------------------------------------ lifecycle

    def start(self) -> ProviderServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ProviderServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the rules

    def check_route(self, path: str, headers: Mapping[str, str]) -> None:
        """Path, query and authentication of this provider."""
        parts = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(parts.query)
        if self.provider == "azure":
            expected = f"/openai/deployments/{self.deployment}/chat/completions"
            if parts.path != expected:
                raise self.error(404, "Resource not found", code="404")
            if query.get("api-version") != [self.api_version]:
                raise self.error(404, "Resource not found", code="404")
            if headers.get("api-key") != self.api_key:
                raise self.error(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint.",
                    code="401",
                )
            return
        route = urllib.parse.urlsplit(self.base_url).path + "/chat/completions"
        if parts.path != route:
            raise self.error(404, f"no route {parts.path}")
        bearer = headers.get("authorization", "")
        key = headers.get("api-key") if self.provider == "azure-v1" else None
        if bearer != f"Bearer {self.api_key}" and key != self.api_key:
            raise self.error(401, "Incorrect API key provided.", code="invalid_api_key")

    def check_body(self, body: dict) -> None:
        """The provider's request rules (see the module docstring for their sources)."""
        p = self.provider
        fmt = body.get("response_format")
        openai_like = p in ("openai", "openai-reasoning", "azure", "azure-v1")
        if openai_like:
            unknown = sorted(set(body) - OPENAI_FIELDS)
            if unknown:
                raise self.error(
                    400,
                    f"Unrecognized request argument supplied: {unknown[0]}",
                    param=unknown[0],
                    code="unknown_parameter",
                )
            if isinstance(fmt, Mapping) and fmt.get("type") == "json_object" and len(fmt) > 1:
                extra = sorted(set(fmt) - {"type"})[0]
                raise self.error(
                    400,
                    f"Unknown parameter: 'response_format.{extra}'.",
                    param=f"response_format.{extra}",
                    code="unknown_parameter",
                )
            if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
                self._check_strict_schema(fmt)
            top = body.get("top_logprobs")
            if top is not None and not (0 <= top <= 20):
                raise self.error(400, "top_logprobs must be between 0 and 20", param="top_logprobs")
            if top is not None and not body.get("logprobs"):
                raise self.error(400, "logprobs must be true when top_logprobs is set")
        if self.reasoning_rules:
            if "max_tokens" in body:
                raise self.error(
                    400,
                    "Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    param="max_tokens",
                    code="unsupported_parameter",
                )
            if "temperature" in body and body["temperature"] != 1:
                raise self.error(
                    400,
                    f"Unsupported value: 'temperature' does not support {body['temperature']} "
                    "with this model. Only the default (1) value is supported.",
                    param="temperature",
                    code="unsupported_value",
                )
            if body.get("logprobs") or "top_logprobs" in body:
                raise self.error(
                    403, "You are not allowed to request logprobs from this model", code=None
                )
        elif openai_like and "reasoning_effort" in body:
            raise self.error(
                400,
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
                param="reasoning_effort",
                code="unsupported_parameter",
            )
        if p == "anthropic-compat" and body.get("n", 1) != 1:
            raise self.error(400, "n: only n=1 is supported")
        if p == "gemini-compat" and "seed" in body:
            raise self.error(
                400, 'Invalid JSON payload received. Unknown name "seed": Cannot find field.'
            )
        if p == "lmstudio" and isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
            raise self.error(400, "'response_format.type' must be 'json_schema' or 'text'")
        if p == "llamacpp" and isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            raise self.error(500, "Internal Server Error")
        if p == "vllm" and (body.get("top_logprobs") or 0) > 20:
            raise self.error(400, "top_logprobs must be at most max_logprobs (20)")
        temperature = body.get("temperature")
        if temperature is not None and not (0 <= temperature <= 2):
            raise self.error(400, "temperature must be between 0 and 2", param="temperature")

    def _check_strict_schema(self, fmt: Mapping[str, Any]) -> None:
        """OpenAI strict structured outputs: object root, no extra properties, all required."""
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {}
        if spec.get("strict") and (
            schema.get("type") != "object"
            or schema.get("additionalProperties") is not False
            or set(schema.get("required") or []) != set(schema.get("properties") or {})
        ):
            raise self.error(400, "Invalid schema for response_format", param="response_format")

    def error(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        etype: str = "invalid_request_error",
        gemini_status: str = "INVALID_ARGUMENT",
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] = {},
    ) -> _Reject:
        """A rejection in this provider's error shape."""
        p = self.provider
        body: object
        if p == "gemini-compat":
            body = [
                {
                    "error": {
                        "code": status,
                        "message": message,
                        "status": gemini_status,
                        "details": list(details),
                    }
                }
            ]
        elif p == "anthropic-compat":
            body = {"type": "error", "error": {"type": etype, "message": message}}
        elif p == "vllm":
            body = {
                "object": "error",
                "message": message,
                "type": "BadRequestError",
                "code": status,
            }
        elif p == "lmstudio":
            body = {"error": message}
        else:
            body = {"error": {"message": message, "type": etype, "param": param, "code": code}}
        return _Reject(status, message, body, headers)

    # ------------------------------------------------------------ limits

    def check_limits(self, key: str, prompt_tokens: int) -> None:
        """Quota, per-window rate limits and Gemini's first-ask throttle."""
        now = time.monotonic()
        if self.quota_after is not None and self.record.bill.replies >= self.quota_after:
            if self.provider == "gemini-compat":
                raise self.error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                    gemini_status="RESOURCE_EXHAUSTED",
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [
                                {
                                    "quotaMetric": "generativelanguage.googleapis.com/"
                                    "generate_content_free_tier_requests",
                                    "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                                    "quotaValue": str(self.quota_after),
                                }
                            ],
                        },
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"},
                    ],
                )
            raise self.error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                etype="insufficient_quota",
                code="insufficient_quota",
            )
        if self.throttle_first is not None and self._asked[key] == 1:
            delay = self.throttle_first
            self.record.throttled.append((key, now, delay))
            raise self.error(
                429,
                "Resource has been exhausted (e.g. check quota).",
                gemini_status="RESOURCE_EXHAUSTED",
                details=[
                    {
                        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                        "violations": [
                            {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}
                        ],
                    },
                    {
                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": f"{delay}s",
                    },
                ],
            )
        while self._recent and self._recent[0][0] <= now - self.window:
            self._recent.popleft()
        over_requests = (
            self.requests_per_window is not None and len(self._recent) >= self.requests_per_window
        )
        used = sum(tokens for _, tokens in self._recent)
        over_tokens = (
            self.tokens_per_window is not None and used + prompt_tokens > self.tokens_per_window
        )
        if over_requests or over_tokens:
            what = "requests" if over_requests else "tokens"
            raise self.error(
                429,
                f"Rate limit reached for {what}.",
                etype=what,
                code="rate_limit_exceeded",
                headers={"retry-after-ms": "100"},
            )
        self._recent.append((now, prompt_tokens))

    def rate_headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` headers of a success reply (OpenAI and Azure only)."""
        if self.provider not in ("openai", "openai-reasoning", "azure", "azure-v1"):
            return {}
        headers = {}
        if self.requests_per_window is not None:
            headers["x-ratelimit-limit-requests"] = str(self.requests_per_window)
            headers["x-ratelimit-remaining-requests"] = str(
                max(0, self.requests_per_window - len(self._recent))
            )
            headers["x-ratelimit-reset-requests"] = f"{self.window:g}s"
        if self.tokens_per_window is not None:
            used = sum(tokens for _, tokens in self._recent)
            headers["x-ratelimit-limit-tokens"] = str(self.tokens_per_window)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tokens_per_window - used))
            headers["x-ratelimit-reset-tokens"] = f"{self.window:g}s"
        return headers

    # ------------------------------------------------------------ replies

    def prompt_tokens(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Billed prompt tokens: content plus 3 per message and 3 to prime the reply."""
        return sum(self.tokenizer(str(m.get("content", ""))) + 3 for m in messages) + 3

    def reply(self, body: dict, nth: int) -> dict:
        """The 200 reply to an accepted request."""
        p = self.provider
        messages = body.get("messages", [])
        user = str(messages[-1].get("content", "")) if messages else ""
        special = next((kind for m, kind in SPECIAL_MARKERS.items() if m in user), None)
        honours_n = p in (
            "openai",
            "openai-reasoning",
            "azure",
            "azure-v1",
            "vllm",
            "gemini-compat",
        )
        n = int(body.get("n", 1)) if honours_n else 1
        # The sample index: seed + choice; without a seed, how often this was asked before.
        base = body["seed"] if isinstance(body.get("seed"), int) else 1000 * nth
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        choices, completion, reasoning = [], 0, 0
        for j in range(n):
            dist = answer_distribution(messages, base + j, self.labels)
            text = answer_text(dist)
            spent = self.reasoning_tokens if self.reasoning_rules else 0
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            choice: dict[str, Any] = {"index": j, "message": message, "finish_reason": "stop"}
            out = self.tokenizer(text)
            if special == "refusal":
                message.update(content=None, refusal=REFUSAL_TEXT)
                out = self.tokenizer(REFUSAL_TEXT)
            elif special == "content_filter":
                message["content"] = None
                choice["finish_reason"] = "content_filter"
                choice["content_filter_results"] = {
                    "violence": {"filtered": True, "severity": "medium"},
                    "hate": {"filtered": False, "severity": "safe"},
                }
                out = 0
            elif special == "reasoning_only":
                message["content"] = None
                message["reasoning_content"] = "The text is about a film. I think the answer"
                out = self.tokenizer(message["reasoning_content"])
            elif isinstance(cap, int) and spent + out > cap:
                # Hidden reasoning spends the cap first: nothing visible is left.
                spent, out = min(spent, cap), max(0, cap - spent)
                message["content"] = "" if out == 0 else text[: 4 * out]
                choice["finish_reason"] = "length"
            gives_logprobs = p in ("openai", "azure", "azure-v1", "vllm", "llamacpp", "generic")
            if body.get("logprobs") and gives_logprobs and message["content"]:
                choice["logprobs"] = _logprobs(text, dist, int(body.get("top_logprobs") or 0))
            choices.append(choice)
            completion += out + spent
            reasoning += spent
        prompt = self.prompt_tokens(messages)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if p in ("openai", "openai-reasoning", "azure", "azure-v1"):
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
            usage["prompt_tokens_details"] = {"cached_tokens": self._cached(messages)}
        if special:
            self.record.special[special] += 1
        return {
            "id": f"chatcmpl-{len(self.record.bodies)}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model", "m"),
            "choices": choices,
            "usage": usage,
        }

    def _cached(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Prompt-cache hit: the system message's tokens once an earlier request had the same."""
        if not messages or messages[0].get("role") != "system":
            return 0
        prefix = str(messages[0].get("content", ""))
        if prefix in self._seen_prefixes:
            return self.tokenizer(prefix) + 3
        self._seen_prefixes.add(prefix)
        return 0


def _logprobs(text: str, dist: Mapping[str, float], top: int) -> dict:
    """Logprobs of the answer: the label token after ``{"Answer": "`` carries the alternatives."""
    ranked = sorted(dist.items(), key=lambda kv: -kv[1])
    label = ranked[0][0]
    prefix = text[: text.index(label)]
    alternatives = [(lab, 0.95 * p) for lab, p in ranked] + [("The", 0.05)]
    alternatives.sort(key=lambda kv: -kv[1])
    tops = [
        {"token": tok, "logprob": math.log(p) if p > 0 else -1e4, "bytes": None}
        for tok, p in alternatives[: max(top, 1)]
    ]
    rest = text[len(prefix) + len(label) :]
    return {
        "content": [
            {"token": prefix, "logprob": 0.0, "bytes": None, "top_logprobs": []},
            {
                "token": label,
                "logprob": math.log(0.95 * ranked[0][1]),
                "bytes": None,
                "top_logprobs": tops,
            },
            {"token": rest, "logprob": 0.0, "bytes": None, "top_logprobs": []},
        ],
        "refusal": None,
    }


def _make_handler(server: ProviderServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = {}
            with server._lock:
                server.record.bodies.append(body)
                server.record.paths.append(self.path)
                server.record.headers.append(headers)
                server.record.arrivals.append(time.monotonic())
                key = json.dumps(body.get("messages"), sort_keys=True)
                server._asked[key] += 1
                nth = server._asked[key] - 1
            if server.latency:
                time.sleep(server.latency)
            try:
                with server._lock:
                    server.check_route(self.path, headers)
                    server.check_body(body)
                    server.check_limits(key, server.prompt_tokens(body.get("messages", [])))
                    reply = server.reply(body, nth)
                    server.record.bill.add(reply["usage"])
                    extra = server.rate_headers()
            except _Reject as rejection:
                with server._lock:
                    server.record.rejected.append((rejection.status, rejection.message))
                    server.record.statuses[rejection.status] += 1
                self._send(rejection.status, rejection.body, rejection.headers)
                return
            with server._lock:
                server.record.statuses[200] += 1
            self._send(200, reply, extra)

        def _send(self, status: int, body: object, headers: Mapping[str, str]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler


@contextlib.contextmanager
def serving(provider: str, **kwargs: Any) -> Iterator[ProviderServer]:
    """A started :class:`ProviderServer`, stopped on exit."""
    server = ProviderServer(provider, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
