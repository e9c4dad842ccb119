"""Replies without text: a 200 answer that was paid for but carries no answer to parse.

A chat reply can be well-formed and still hold no text: the model refused
(``message.refusal``, structured outputs), a content filter stopped it
(``finish_reason: "content_filter"``, Azure), the length cap was spent before
any answer (``finish_reason: "length"``; on a reasoning model, on hidden
reasoning: ``usage.completion_tokens_details.reasoning_tokens``), or the text
is all in a reasoning field (vLLM's ``reasoning_content``). Such a reply is
not malformed: retrying the same request buys the same answer again. It is
cached like any answer and reported with the reason :func:`read_choice` gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NO_TEXT_KINDS",
    "REASONING_FIELDS",
    "ChoiceText",
    "read_choice",
    "reasoning_tokens",
    "usage_counts",
]

#: Kinds of replies without text.
NO_TEXT_KINDS = ("refusal", "content_filter", "length", "reasoning_only", "empty")

#: Fields where OpenAI-compatible servers put a reasoning model's visible reasoning.
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class ChoiceText:
    """The text of one choice, or why there is none.

    Attributes
    ----------
    text : str or None
        The answer text; None for a reply without text.
    kind : str or None
        None when there is text, else one of :data:`NO_TEXT_KINDS`.
    reason : str
        A sentence for the prediction's ``detail`` (empty when there is text).
    """

    text: str | None
    kind: str | None = None
    reason: str = ""


def read_choice(
    choice: Mapping[str, Any],
    *,
    usage: object = None,
    reasoning_model: bool = False,
) -> ChoiceText:
    """The text of a chat choice, or the kind of reply without text it is.

    Parameters
    ----------
    choice : mapping
        One element of ``choices`` (a dict with ``message`` and ``finish_reason``).
    usage : mapping, optional
        The reply's ``usage``, for the reasoning tokens a length cut spent.
    reasoning_model : bool
        The model reasons before answering: a length cut says to raise ``--max-tokens``
        even when no reasoning tokens were reported.

    Examples
    --------
    >>> read_choice({"message": {"content": "{}"}, "finish_reason": "stop"}).text
    '{}'
    >>> read_choice({"message": {"content": None, "refusal": "I can't help."}}).kind
    'refusal'
    """
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    content = message.get("content")
    finish = choice.get("finish_reason")
    if isinstance(content, str) and content.strip() and finish != "content_filter":
        return ChoiceText(content)
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        return ChoiceText(None, "refusal", f"refused: {refusal.strip()}")
    if finish == "content_filter":
        filtered = _filtered_categories(choice)
        which = f" ({', '.join(filtered)})" if filtered else ""
        return ChoiceText(None, "content_filter", f"stopped by the content filter{which}")
    reasoning = next(
        (message[f] for f in REASONING_FIELDS if isinstance(message.get(f), str) and message[f]),
        None,
    )
    if finish == "length":
        spent = reasoning_tokens(usage)
        if reasoning_model or spent or reasoning:
            on = f" ({spent} reasoning tokens)" if spent else ""
            return ChoiceText(
                None,
                "length",
                f"cut at the length limit while reasoning{on}, before any answer: "
                "raise --max-tokens",
            )
        return ChoiceText(None, "length", "cut at the length limit before any answer text")
    if reasoning is not None:
        return ChoiceText(
            None,
            "reasoning_only",
            "the reply holds reasoning but no answer text (the server put all of it in the "
            "reasoning field)",
        )
    return ChoiceText(None, "empty", f"the reply holds no text (finish_reason {finish!r})")


def _filtered_categories(choice: Mapping[str, Any]) -> list[str]:
    """Azure's ``content_filter_results`` categories marked ``filtered``."""
    results = choice.get("content_filter_results")
    if not isinstance(results, Mapping):
        return []
    return [
        name
        for name, verdict in results.items()
        if isinstance(verdict, Mapping) and verdict.get("filtered")
    ]


def _count(value: object) -> int:
    """A token count from untrusted JSON: a finite number >= 0, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if math.isfinite(value) and value >= 0 else 0


def _detail_count(usage: object, group: str, name: str) -> int:
    details = usage.get(group) if isinstance(usage, Mapping) else None
    return _count(details.get(name)) if isinstance(details, Mapping) else 0


def reasoning_tokens(usage: object) -> int:
    """``usage.completion_tokens_details.reasoning_tokens`` (0 when absent)."""
    return _detail_count(usage, "completion_tokens_details", "reasoning_tokens")


def usage_counts(usage: object) -> dict[str, int]:
    """Prompt, completion, reasoning and cached tokens of a reply's ``usage`` (0 when absent).

    Reasoning tokens are part of the completion tokens and cached tokens part
    of the prompt tokens, as the API reports them
    (openai-python ``types/completion_usage.py``).

    Examples
    --------
    >>> usage_counts({"prompt_tokens": 10, "completion_tokens": 7,
    ...               "completion_tokens_details": {"reasoning_tokens": 5},
    ...               "prompt_tokens_details": {"cached_tokens": 4}})
    {'prompt_tokens': 10, 'completion_tokens': 7, 'reasoning_tokens': 5, 'cached_tokens': 4}
    """
    top = usage if isinstance(usage, Mapping) else {}
    return {
        "prompt_tokens": _count(top.get("prompt_tokens")),
        "completion_tokens": _count(top.get("completion_tokens")),
        "reasoning_tokens": reasoning_tokens(usage),
        "cached_tokens": _detail_count(usage, "prompt_tokens_details", "cached_tokens"),
    }
