"""Provider profiles: what each family of OpenAI-compatible endpoint accepts.

Endpoints that speak "the OpenAI chat API" differ in what they accept: a
reasoning model rejects ``max_tokens`` and any temperature but 1, Anthropic's
compatibility layer ignores ``response_format``, ``logprobs`` and ``seed``,
LM Studio rejects ``json_object``, only llama.cpp reads a ``schema`` inside
``json_object``… A :class:`ProviderProfile` states, declaratively, what one
family accepts; :func:`build_body` turns a provider-neutral request into the
body that family gets, and says what it had to leave out or change.

Profiles (:data:`PROFILES`): ``openai``, ``openai-reasoning``, ``azure``,
``anthropic-compat``, ``gemini-compat``, ``vllm``, ``ollama``, ``lmstudio``,
``llamacpp`` and ``generic`` (sends what it is given, as before profiles
existed). :func:`infer_profile` picks one from the base URL and model name
when none is named.

Sources of the rules: openai-python ``types/chat/completion_create_params.py``
(``max_completion_tokens`` "including visible output tokens and reasoning
tokens"; ``max_tokens`` "not compatible with o-series models"; ``top_logprobs``
"between 0 and 20"; ``n``; ``reasoning_effort``), openai-python
``lib/azure.py`` (deployment path, ``api-version`` query, ``api-key`` header),
and the providers' OpenAI-compatibility pages and issue threads as summarised
in ``DESIGN.md`` ("Provider facts").
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from verbcal.errors import ConfigurationError

__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "PROFILES",
    "REASONING_EFFORTS",
    "BuiltBody",
    "ProviderProfile",
    "azure_is_v1",
    "build_body",
    "get_profile",
    "infer_profile",
    "is_reasoning_model",
    "make_client",
    "parse_param",
    "resolve_profile",
    "resolve_api_key",
]

JSON_MODES = ("none", "json_object", "json_schema")
_ALL_JSON = frozenset(JSON_MODES)

#: ``reasoning_effort`` values the API documents (openai-python ``shared/reasoning_effort.py``).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class ProviderProfile:
    """What one family of endpoints accepts, and how it answers.

    Attributes
    ----------
    name : str
        The ``--provider`` name.
    summary : str
        One line for the run banner and the README table.
    max_tokens_field : {"max_tokens", "max_completion_tokens"}
        Which field carries the answer-length cap.
    default_max_tokens : int
        The cap sent when the caller gives none (reasoning models spend
        hidden tokens from the same budget, so theirs is larger).
    temperature : {"any", "default_only"}
        ``"default_only"``: the endpoint accepts no temperature but its default
        (1), so none is sent.
    max_temperature : float
        Larger temperatures are lowered to this.
    seed : bool
        Whether ``seed`` is sent (left out where it is rejected or ignored).
    logprobs : bool
        Whether ``logprobs``/``top_logprobs`` are sent.
    max_top_logprobs : int
        ``top_logprobs`` is lowered to this.
    n : bool
        Whether one request may ask for several choices (``n``); where not,
        samples are separate requests.
    json_modes : frozenset of str
        The ``response_format`` types accepted (``"none"`` = no field).
    json_object_schema : bool
        Whether ``{"type": "json_object", "schema": ...}`` (a llama.cpp
        extension) is accepted and constrains the answer.
    reasoning_effort : bool
        Whether ``reasoning_effort`` is sent.
    reasoning_model : bool
        Hidden reasoning spends the answer-length cap (a cut says to raise it).
    auth_header : {"authorization", "api-key"}
        How the API key travels (``Authorization: Bearer`` or ``api-key``).
    url_shape : {"openai", "azure"}
        ``"azure"``: a legacy Azure endpoint
        (``/openai/deployments/{deployment}/chat/completions?api-version=``)
        unless the base URL ends in ``/openai/v1``.
    error_shape : {"object", "list"}
        Error bodies are ``{"error": {...}}``, or a JSON list of those (Gemini).
        Descriptive: :mod:`verbcal.elicit.provider_errors` reads either shape
        from any endpoint.
    api_key_env : tuple of str
        Environment variables read for the key, before ``OPENAI_API_KEY``.
    limits : tuple of str
        Known limits, printed with the profile and listed in the README.
    """

    name: str
    summary: str
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    default_max_tokens: int = 256
    temperature: Literal["any", "default_only"] = "any"
    max_temperature: float = 2.0
    seed: bool = True
    logprobs: bool = True
    max_top_logprobs: int = 20
    n: bool = False
    json_modes: frozenset[str] = _ALL_JSON
    json_object_schema: bool = False
    reasoning_effort: bool = False
    reasoning_model: bool = False
    auth_header: Literal["authorization", "api-key"] = "authorization"
    url_shape: Literal["openai", "azure"] = "openai"
    error_shape: Literal["object", "list"] = "object"
    api_key_env: tuple[str, ...] = ()
    limits: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """For the start of a run: the profile and what it sends, then its known limits.

        Examples
        --------
        >>> print(PROFILES["lmstudio"].describe())  # doctest: +NORMALIZE_WHITESPACE
        provider lmstudio: LM Studio's local server; sends max_tokens, temperature, seed;
        json: json_schema
          known limit: response_format json_object rejected (json_schema or text only)
          known limit: no n
        """
        sends: list[str] = [self.max_tokens_field]
        sends.append("temperature" if self.temperature == "any" else "no temperature (fixed 1)")
        sends += [name for name, on in (("seed", self.seed), ("logprobs", self.logprobs)) if on]
        if self.n:
            sends.append("n")
        modes = ", ".join(m for m in JSON_MODES if m in self.json_modes and m != "none")
        head = (
            f"provider {self.name}: {self.summary}; sends {', '.join(sends)}; json: {modes or '-'}"
        )
        return "\n".join([head, *(f"  known limit: {limit}" for limit in self.limits)])


_OPENAI_JSON = frozenset({"none", "json_object", "json_schema"})

PROFILES: dict[str, ProviderProfile] = {
    p.name: p
    for p in (
        ProviderProfile(
            "openai",
            "OpenAI chat models (gpt-4o, gpt-4.1, ...)",
            max_tokens_field="max_completion_tokens",
            n=True,
            json_modes=_OPENAI_JSON,
            limits=(
                "json_object takes no schema (400 Unknown parameter 'response_format.schema')",
            ),
        ),
        ProviderProfile(
            "openai-reasoning",
            "OpenAI reasoning models (o1, o3, o4-mini, gpt-5 family)",
            max_tokens_field="max_completion_tokens",
            default_max_tokens=4096,
            temperature="default_only",
            logprobs=False,
            n=True,
            json_modes=_OPENAI_JSON,
            reasoning_effort=True,
            reasoning_model=True,
            limits=(
                "no logprobs (403), temperature fixed at 1",
                "hidden reasoning counts against max_completion_tokens: a small cap "
                "returns no text (finish_reason length)",
            ),
        ),
        ProviderProfile(
            "azure",
            "Azure OpenAI (legacy deployment URLs with api-version, or /openai/v1)",
            n=True,
            json_modes=_OPENAI_JSON,
            auth_header="api-key",
            url_shape="azure",
            api_key_env=("AZURE_OPENAI_API_KEY",),
            limits=(
                "content filter can answer 200 with no text (finish_reason content_filter)",
                "the model name is the deployment name",
            ),
        ),
        ProviderProfile(
            "anthropic-compat",
            "Anthropic's OpenAI-compatible endpoint",
            max_temperature=1.0,
            seed=False,
            logprobs=False,
            json_modes=frozenset({"none"}),
            api_key_env=("ANTHROPIC_API_KEY",),
            limits=(
                "ignores response_format, logprobs, top_logprobs and seed; n must be 1; "
                "temperature at most 1",
            ),
        ),
        ProviderProfile(
            "gemini-compat",
            "Gemini's OpenAI-compatible endpoint",
            seed=False,
            logprobs=False,
            n=True,
            max_temperature=2.0,
            json_modes=frozenset({"none", "json_schema"}),
            reasoning_effort=True,
            error_shape="list",
            api_key_env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
            limits=(
                'seed rejected (400 Unknown name "seed")',
                "errors are JSON lists; quota exhaustion is RESOURCE_EXHAUSTED with a retryDelay",
            ),
        ),
        ProviderProfile(
            "vllm",
            "vLLM's OpenAI-compatible server",
            n=True,
            json_modes=_OPENAI_JSON,
            limits=(
                "json_object ignores a schema (use json_schema)",
                "reasoning parsers put the reasoning in a separate field",
            ),
        ),
        ProviderProfile(
            "ollama",
            "Ollama's OpenAI-compatible endpoint (/v1)",
            logprobs=False,
            json_modes=_OPENAI_JSON,
            limits=(
                "json_object ignores a schema (use json_schema)",
                "no n: one choice per request",
            ),
        ),
        ProviderProfile(
            "lmstudio",
            "LM Studio's local server",
            logprobs=False,
            json_modes=frozenset({"none", "json_schema"}),
            limits=("response_format json_object rejected (json_schema or text only)", "no n"),
        ),
        ProviderProfile(
            "llamacpp",
            "llama.cpp / llama-cpp-python server",
            json_modes=frozenset({"none", "json_object"}),
            json_object_schema=True,
            limits=(
                "json_schema rejected (HTTP 500): json_object with a schema constrains instead",
            ),
        ),
        ProviderProfile(
            "generic",
            "any OpenAI-compatible endpoint: parameters sent as given",
            json_object_schema=True,
            limits=("nothing adapted: a parameter the server rejects fails the request",),
        ),
    )
}


#: Azure deployments of reasoning models (recognised by their model-like name) take
#: the reasoning models' rules.
AZURE_REASONING = replace(
    PROFILES["azure"],
    summary="Azure OpenAI, a reasoning-model deployment (o-series, gpt-5 family)",
    max_tokens_field="max_completion_tokens",
    default_max_tokens=4096,
    temperature="default_only",
    logprobs=False,
    reasoning_effort=True,
    reasoning_model=True,
)


def resolve_profile(
    provider: str | ProviderProfile | None, base_url: str, model: str
) -> ProviderProfile:
    """The profile a backend uses: the one named (or inferred), adjusted to the model.

    An Azure deployment whose name is a reasoning model's (``o4-mini``,
    ``gpt-5``…) gets :data:`AZURE_REASONING`.

    Examples
    --------
    >>> resolve_profile("azure", "https://r.openai.azure.com", "o3-mini").reasoning_model
    True
    """
    profile = infer_profile(base_url, model) if provider is None else get_profile(provider)
    if profile.name == "azure" and is_reasoning_model(model):
        return AZURE_REASONING
    return profile


def get_profile(name: str | ProviderProfile) -> ProviderProfile:
    """The profile called ``name`` (a profile is returned as is)."""
    if isinstance(name, ProviderProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown provider {name!r}; known: {', '.join(PROFILES)}"
        ) from None


#: OpenAI reasoning models: o1, o3, o4-mini, ... and the gpt-5 family (but not its chat models).
_REASONING_MODEL = re.compile(r"^(?:.*/)?(?:o\d+(?:-|$)|gpt-5(?!.*chat))", re.IGNORECASE)

_HOST_PROFILES = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure"),
    ("cognitiveservices.azure.com", "azure"),
    ("services.ai.azure.com", "azure"),
    ("api.anthropic.com", "anthropic-compat"),
    ("generativelanguage.googleapis.com", "gemini-compat"),
)
#: Default ports of local servers whose port is distinctive (vLLM's and
#: llama-cpp-python's 8000 and llama.cpp's 8080 are shared by many servers).
_PORT_PROFILES = {11434: "ollama", 1234: "lmstudio"}


def is_reasoning_model(model: str) -> bool:
    """Whether ``model`` names an OpenAI reasoning model (o-series, gpt-5 family but chat).

    Examples
    --------
    >>> [is_reasoning_model(m) for m in ("o3-mini", "gpt-5", "gpt-5-chat-latest", "gpt-4o")]
    [True, True, False, False]
    """
    return bool(_REASONING_MODEL.match(model))


def infer_profile(base_url: str, model: str) -> ProviderProfile:
    """The profile for an endpoint when none is named: from its host, port and model.

    OpenAI's host gives ``openai``, or ``openai-reasoning`` for an o-series or
    gpt-5 model; Azure, Anthropic and Gemini hosts give their profiles;
    Ollama's and LM Studio's default ports theirs; anything else ``generic``.

    Examples
    --------
    >>> infer_profile("https://api.openai.com/v1", "o4-mini").name
    'openai-reasoning'
    >>> infer_profile("http://127.0.0.1:11434/v1", "llama3").name
    'ollama'
    >>> infer_profile("http://127.0.0.1:8080/v1", "m").name
    'generic'
    """
    parts = urllib.parse.urlsplit(base_url)
    host = (parts.hostname or "").lower()
    for suffix, name in _HOST_PROFILES:
        if host == suffix or host.endswith("." + suffix):
            if name == "openai" and is_reasoning_model(model):
                return PROFILES["openai-reasoning"]
            return PROFILES[name]
    if "/openai/deployments/" in parts.path:
        return PROFILES["azure"]
    try:
        port = parts.port
    except ValueError:
        port = None
    if port in _PORT_PROFILES:
        return PROFILES[_PORT_PROFILES[port]]
    return PROFILES["generic"]


# ---------------------------------------------------------------- request bodies


@dataclass(frozen=True)
class BuiltBody:
    """A request body for one profile, and what was left out or changed to build it."""

    body: dict[str, Any]
    notes: tuple[str, ...] = ()


def build_body(
    profile: ProviderProfile,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    temperature: float | None = 0.0,
    max_tokens: int | None = None,
    response_format: Mapping[str, Any] | None = None,
    seed: int | None = None,
    logprobs: bool = False,
    top_logprobs: int = 5,
    n: int = 1,
    reasoning_effort: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> BuiltBody:
    """The chat request body ``profile`` accepts, and notes on what it could not take.

    Parameters
    ----------
    profile : ProviderProfile
    model : str
    messages : list of dict
    temperature : float or None
        Left out when None, or when the profile accepts only its default.
    max_tokens : int or None
        The answer-length cap; None means the profile's ``default_max_tokens``.
        Sent as ``max_tokens`` or ``max_completion_tokens``.
    response_format : dict or None
        In either form verbcal builds (:func:`verbcal.elicit.templates.response_format`):
        ``{"type": "json_schema", ...}`` or ``{"type": "json_object", "schema": ...}``.
        Turned into a form the profile accepts, or left out.
    seed : int or None
    logprobs : bool
        Ask for token log-probabilities with ``top_logprobs`` alternatives.
    n : int
        Choices per request; more than 1 needs a profile with ``n``.
    reasoning_effort : str or None
    params : mapping, optional
        Extra body fields (``--param``), sent as given; they win over the rest.

    Returns
    -------
    BuiltBody
        The body, and one note per parameter left out or changed (callers warn once each).

    Examples
    --------
    >>> built = build_body(PROFILES["openai-reasoning"], "o3", [{"role": "user", "content": "hi"}],
    ...                    temperature=0.0, max_tokens=100, logprobs=True)
    >>> built.body
    {'model': 'o3', 'messages': [{'role': 'user', 'content': 'hi'}], 'max_completion_tokens': 100}
    >>> len(built.notes)
    2
    """
    notes: list[str] = []
    name = profile.name
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}

    if temperature is not None:
        if profile.temperature == "default_only":
            if temperature != 1:
                notes.append(
                    f"temperature {temperature:g} left out: {name} models accept only the "
                    "default temperature 1"
                )
        elif temperature > profile.max_temperature:
            notes.append(
                f"temperature {temperature:g} lowered to {profile.max_temperature:g}, "
                f"the most {name} accepts"
            )
            body["temperature"] = profile.max_temperature
        else:
            body["temperature"] = temperature

    cap = profile.default_max_tokens if max_tokens is None else max_tokens
    if not (isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1):
        raise ConfigurationError(f"max_tokens must be an int >= 1, got {cap!r}")
    body[profile.max_tokens_field] = cap

    if response_format is not None:
        fmt, note = _adapt_response_format(profile, response_format)
        if note:
            notes.append(note)
        if fmt is not None:
            body["response_format"] = fmt

    if seed is not None:
        if profile.seed:
            body["seed"] = seed
        else:
            notes.append(f"seed left out: {name} rejects or ignores it (answers may vary)")

    if logprobs:
        if profile.logprobs:
            top = min(int(top_logprobs), profile.max_top_logprobs)
            if top < top_logprobs:
                notes.append(f"top_logprobs lowered to {top}, the most {name} returns")
            body.update(logprobs=True, top_logprobs=top)
        else:
            notes.append(
                f"logprobs left out: {name} does not return token probabilities "
                "(no token_probs in the predictions)"
            )

    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ConfigurationError(f"n must be an int >= 1, got {n!r}")
    if n > 1:
        if not profile.n:
            raise ConfigurationError(
                f"{name} takes one choice per request (n=1): ask for samples separately"
            )
        body["n"] = n

    if reasoning_effort is not None:
        if reasoning_effort not in REASONING_EFFORTS:
            raise ConfigurationError(
                f"reasoning_effort must be one of {list(REASONING_EFFORTS)}, "
                f"got {reasoning_effort!r}"
            )
        if profile.reasoning_effort:
            body["reasoning_effort"] = reasoning_effort
        else:
            notes.append(f"reasoning_effort left out: {name} does not take it")

    for key, value in (params or {}).items():
        if key in ("max_tokens", "max_completion_tokens") and key != profile.max_tokens_field:
            # The caller knows better (e.g. a reasoning model behind a generic gateway):
            # send the cap under their name only.
            notes.append(f"--param {key} sent instead of {profile.max_tokens_field}")
            body.pop(profile.max_tokens_field, None)
        body[key] = value
    return BuiltBody(body, tuple(notes))


def _adapt_response_format(
    profile: ProviderProfile, fmt: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """``fmt`` in a form ``profile`` accepts (or None: leave it out), and a note when changed."""
    kind = fmt.get("type")
    name = profile.name
    if kind not in ("json_object", "json_schema") or profile.name == "generic":
        return dict(fmt), None
    schema = (
        fmt.get("schema") if kind == "json_object" else (fmt.get("json_schema") or {}).get("schema")
    )
    if kind in profile.json_modes and (
        kind == "json_schema" or schema is None or profile.json_object_schema
    ):
        return dict(fmt), None
    if kind == "json_object" and "json_object" in profile.json_modes:
        # OpenAI rejects the llama.cpp extension; vLLM and Ollama ignore it.
        plain = {k: v for k, v in fmt.items() if k != "schema"}
        return plain, (
            f"response_format.schema left out: {name} does not read a schema inside json_object; "
            "use --json-mode json_schema to constrain answers to it"
        )
    if kind == "json_object" and "json_schema" in profile.json_modes and schema is not None:
        converted = {
            "type": "json_schema",
            "json_schema": {"name": "verbcal_answer", "strict": True, "schema": schema},
        }
        return converted, f"json_object sent as json_schema: {name} rejects json_object"
    if kind == "json_schema" and profile.json_object_schema and schema is not None:
        converted = {"type": "json_object", "schema": schema}
        return converted, (
            f"json_schema sent as json_object with a schema: {name} rejects json_schema"
        )
    if kind == "json_schema" and "json_object" in profile.json_modes:
        return {"type": "json_object"}, f"json_schema sent as plain json_object for {name}"
    return None, (f"response_format left out: {name} ignores it (answers are read from the text)")


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``--param``: the value as JSON when it parses, else as a string.

    Examples
    --------
    >>> parse_param("top_p=0.5"), parse_param("stop=END"), parse_param('stop=["a","b"]')
    (('top_p', 0.5), ('stop', 'END'), ('stop', ['a', 'b']))
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigurationError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# ---------------------------------------------------------------- clients (URL shape and auth)


def resolve_api_key(profile: ProviderProfile, api_key: str | None) -> str | None:
    """The API key: given, else the profile's environment variables, else ``OPENAI_API_KEY``."""
    if api_key:
        return api_key
    for name in (*profile.api_key_env, "OPENAI_API_KEY"):
        value = os.environ.get(name)
        if value:
            return value
    return None


#: The api-version sent to a legacy Azure endpoint when neither the URL nor
#: ``OPENAI_API_VERSION`` names one (the GA version of October 2024).
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def azure_is_v1(base_url: str) -> bool:
    """Whether an Azure base URL is the v1 endpoint (``.../openai/v1``), not a legacy one."""
    return urllib.parse.urlsplit(base_url).path.rstrip("/").endswith("/openai/v1")


def make_client(profile: ProviderProfile, base_url: str, api_key: str, *, timeout: float) -> Any:
    """An ``openai.AsyncOpenAI`` client that reaches ``base_url`` the way ``profile`` needs.

    Legacy Azure endpoints get ``openai.AsyncAzureOpenAI`` (which puts
    ``/openai/deployments/{model}`` in the path, ``api-version`` in the query and
    the key in an ``api-key`` header); the ``api-version`` comes from the base
    URL's query, else ``$OPENAI_API_VERSION``, else
    :data:`DEFAULT_AZURE_API_VERSION`. Every other endpoint gets the plain client.
    The SDK's own retries are off (``max_retries=0``): the backend owns retries.
    """
    import openai

    if profile.url_shape == "azure" and not azure_is_v1(base_url):
        parts = urllib.parse.urlsplit(base_url)
        query = urllib.parse.parse_qs(parts.query)
        version = (query.get("api-version") or [""])[0] or os.environ.get(
            "OPENAI_API_VERSION", DEFAULT_AZURE_API_VERSION
        )
        root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        if "/openai/deployments/" in parts.path:
            return openai.AsyncAzureOpenAI(
                base_url=root, api_key=api_key, api_version=version, timeout=timeout, max_retries=0
            )
        return openai.AsyncAzureOpenAI(
            azure_endpoint=root.split("/openai")[0],
            api_key=api_key,
            api_version=version,
            timeout=timeout,
            max_retries=0,
        )
    headers = {"api-key": api_key} if profile.auth_header == "api-key" else None
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=0,
        default_headers=headers,
    )
