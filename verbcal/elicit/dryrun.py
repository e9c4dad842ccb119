"""What a run would send and cost, counted before anything is sent.

``verbcal elicit --dry-run`` renders every request of a run and counts:

* **requests**: one per item, or one per sample where the provider takes no ``n``;
  requests already answered in the response cache are counted apart (a rerun
  does not pay for them again);
* **prompt tokens**: with a tokenizer when one is given (a GGUF file through
  ``llama-cpp-python``: exact for a model served by llama.cpp), otherwise the
  documented estimate of one token per 4 bytes of UTF-8 text (OpenAI's rule
  of thumb for English, "1 token ≈ 4 characters") plus chat markup of
  :data:`~verbcal.elicit.ratelimit.TOKENS_PER_MESSAGE` tokens per message and
  :data:`~verbcal.elicit.ratelimit.TOKENS_PER_REPLY` for the reply;
* **completion tokens**: the tokens of a typical answer to the template (its
  JSON schema filled with the longest label and two-decimal probabilities) per
  choice, and the cap (``max_tokens`` per choice) as an upper bound. A
  template with free text (reasoning) is counted at the cap: its length is
  unknown before the run. A reasoning model's hidden reasoning tokens are
  unknown too: its estimate covers the answers, and the cap bounds the rest;
* **cost**, given prices per million tokens (:func:`load_prices`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verbcal.elicit.ratelimit import TOKENS_PER_MESSAGE, TOKENS_PER_REPLY, prompt_bytes
from verbcal.errors import ConfigurationError, InvalidInputError

__all__ = [
    "BYTES_PER_TOKEN",
    "CostEstimate",
    "Prices",
    "estimate_run",
    "estimate_text_tokens",
    "gguf_tokenizer",
    "load_prices",
    "prompt_tokens",
    "typical_answer",
]

#: The documented estimate: one token per 4 bytes of (English) text.
BYTES_PER_TOKEN = 4.0

Tokenizer = Callable[[str], int]


def estimate_text_tokens(text: str) -> int:
    """Tokens of ``text`` by the documented estimate: UTF-8 bytes / 4, rounded up.

    Examples
    --------
    >>> estimate_text_tokens("The plot was thin."), estimate_text_tokens("")
    (5, 0)
    """
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def prompt_tokens(messages: Sequence[Mapping[str, Any]], count: Tokenizer | None = None) -> int:
    """Prompt tokens of chat ``messages``: their contents plus chat markup.

    Examples
    --------
    >>> prompt_tokens([{"role": "user", "content": "x" * 40}])
    17
    """
    markup = TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REPLY
    if count is None:
        return math.ceil(prompt_bytes(messages) / BYTES_PER_TOKEN) + markup
    total = 0
    for message in messages:
        content = message.get("content", "")
        total += count(content if isinstance(content, str) else json.dumps(content))
    return total + markup


def gguf_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Token counts from the vocabulary of a GGUF model file (needs ``llama-cpp-python``).

    Only the vocabulary is loaded (``vocab_only``), not the weights' compute.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"--tokenizer {path}: no such file")
    try:
        import llama_cpp
    except ImportError:
        raise ConfigurationError(
            "--tokenizer with a GGUF file needs llama-cpp-python (pip install llama-cpp-python)"
        ) from None
    model = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        if not text:
            return 0
        return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return count


def typical_answer(schema: Mapping[str, Any]) -> str | None:
    """A typical JSON answer to ``schema``: longest enum value, probabilities as ``0.25``.

    Returns None when the schema has a free-text field (its length is unknown).

    Examples
    --------
    >>> typical_answer({"type": "object", "properties": {
    ...     "Answer": {"type": "string", "enum": ["neg", "positive"]},
    ...     "neg": {"type": "number"}, "positive": {"type": "number"}}})
    '{"Answer": "positive", "neg": 0.25, "positive": 0.75}'
    """
    answer: dict[str, Any] = {}
    numbers = [k for k, v in schema.get("properties", {}).items() if v.get("type") == "number"]
    for key, spec in schema.get("properties", {}).items():
        if spec.get("type") == "number":
            answer[key] = 0.75 if key == numbers[-1] else 0.25
        elif spec.get("enum"):
            answer[key] = max((str(v) for v in spec["enum"]), key=len)
        else:
            return None
    return json.dumps(answer)


@dataclass(frozen=True)
class Prices:
    """Dollars per million tokens: prompt (``input``), cached prompt and completion (``output``)."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, prompt: float, completion: float, cached: float = 0.0) -> float:
        """Dollars for these token counts (``cached`` is part of ``prompt``)."""
        cached_price = self.input if self.cached_input is None else self.cached_input
        return (
            (prompt - cached) * self.input + cached * cached_price + completion * self.output
        ) / 1e6


def load_prices(path: str | os.PathLike[str], model: str) -> Prices:
    """Prices for ``model`` from a JSON file the user keeps.

    The file maps model names to ``{"input": ..., "output": ..., "cached_input": ...}``
    in dollars per million tokens, with an optional ``"default"`` entry; a file
    holding one such object applies to every model. ``verbcal/data/prices.example.json``
    shows the format: the figures in it are examples, not current prices.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"--prices {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--prices {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"--prices {path}: expected a JSON object")
    entry = data if "input" in data else data.get(model, data.get("default"))
    if entry is None:
        known = sorted(k for k in data if not k.startswith("_"))
        raise InvalidInputError(
            f"--prices {path}: no prices for model {model!r} and no 'default' (has {known})"
        )
    values = {}
    for name in ("input", "output", "cached_input"):
        value = entry.get(name)
        if value is None and name == "cached_input":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InvalidInputError(
                f"--prices {path}: {model!r} needs {name!r} as a number >= 0 "
                f"(dollars per million tokens), got {value!r}"
            )
        values[name] = float(value)
    return Prices(**values)


@dataclass
class CostEstimate:
    """Counts of a dry run (see the module docstring for how each is estimated)."""

    items: int = 0
    requests: int = 0
    cached_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    max_completion_tokens: int = 0
    completion_known: bool = True
    hidden_reasoning: bool = False
    tokenizer: str = "estimated at 1 token per 4 bytes"
    prices: Prices | None = None

    def add(self, prompt: int, completion: int | None, cap: int, *, cached: bool) -> None:
        """Count one request (its prompt tokens, typical completion and cap over all choices)."""
        if cached:
            self.cached_requests += 1
            return
        self.requests += 1
        self.prompt_tokens += prompt
        self.max_completion_tokens += cap
        if completion is None:
            self.completion_known = False
            completion = cap
        self.completion_tokens += completion

    @property
    def cost(self) -> float | None:
        """Estimated dollars, or None without prices."""
        if self.prices is None:
            return None
        return self.prices.cost(self.prompt_tokens, self.completion_tokens)

    @property
    def max_cost(self) -> float | None:
        """Dollars if every answer ran to its cap."""
        if self.prices is None:
            return None
        return self.prices.cost(self.prompt_tokens, self.max_completion_tokens)

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain data."""
        return {
            "items": self.items,
            "requests": self.requests,
            "cached_requests": self.cached_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "cost": self.cost,
            "max_cost": self.max_cost,
        }

    def __str__(self) -> str:
        completion = "typical answer" if self.completion_known else "at the cap (length unknown)"
        if self.hidden_reasoning:
            completion += " plus hidden reasoning, unknown before the run"
        lines = [
            f"dry run: {self.items} items, {self.requests} requests to send"
            + (
                f" ({self.cached_requests} more already in the cache)"
                if self.cached_requests
                else ""
            ),
            f"prompt tokens {self.prompt_tokens} ({self.tokenizer})",
            f"completion tokens {self.completion_tokens} ({completion}), "
            f"at most {self.max_completion_tokens}",
        ]
        if self.prices is not None:
            bound = "with hidden reasoning up to" if self.hidden_reasoning else "at most"
            lines.append(f"estimated cost ${self.cost:.4f} ({bound} ${self.max_cost:.4f})")
        else:
            lines.append("cost: pass --prices FILE (dollars per million tokens) to estimate it")
        return "\n".join(lines)


def estimate_run(
    elicitor: Any,
    items: Sequence[Any],
    *,
    count: Tokenizer | None = None,
    tokenizer_name: str | None = None,
    prices: Prices | None = None,
) -> CostEstimate:
    """Render every request ``elicitor`` would make for ``items`` and count it; send nothing.

    Parameters
    ----------
    elicitor : verbcal.elicit.Elicitor
        Its backend's profile shapes the bodies; its cache (if any) says which
        requests are already answered.
    items : sequence of Item
    count : callable, optional
        Tokens of a text (e.g. :func:`gguf_tokenizer`); default the 4-bytes estimate.
    tokenizer_name : str, optional
        How the prompt tokens were counted, for the printout.
    prices : Prices, optional

    Returns
    -------
    CostEstimate
    """
    backend = elicitor.backend
    profile = backend.profile
    answer = typical_answer(elicitor.template.json_schema(elicitor.labels))
    per_choice = None if answer is None else (count or estimate_text_tokens)(answer)
    estimate = CostEstimate(items=len(items), prices=prices)
    estimate.hidden_reasoning = profile.reasoning_model
    if tokenizer_name:
        estimate.tokenizer = tokenizer_name
    for item in items:
        for messages, kwargs in elicitor.requests(item):
            body, key, _ = backend.prepare(messages, **kwargs)
            n = int(body.get("n", 1))
            cached = backend.cache is not None and backend.cache.get_by_key(key) is not None
            estimate.add(
                prompt_tokens(body["messages"], count),
                None if per_choice is None else per_choice * n,
                int(body[profile.max_tokens_field]) * n,
                cached=cached,
            )
    return estimate
