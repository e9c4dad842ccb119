"""Label probabilities from the token probabilities of a chat answer.

When a request asks for ``logprobs``, the answer token's top alternatives are
turned into a probability per label (:func:`label_probabilities_from_logprobs`),
to compare with the probabilities the model states in words. The answer token
(:func:`answer_position`) is where the value of a JSON answer's ``"Answer"``
field starts, or in plain text the first token that matches a label.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["answer_label_probabilities", "answer_position", "label_probabilities_from_logprobs"]


def _normalise_token(text: str) -> str:
    """Lower-case text without surrounding whitespace, punctuation or quotes."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", text).casefold()


def _match_label(token: str, labels: Sequence[str]) -> int | None:
    """Index of the label ``token`` stands for: equal, or a prefix of exactly one label."""
    norm = _normalise_token(token)
    if not norm:
        return None
    names = [_normalise_token(label) for label in labels]
    if norm in names:
        return names.index(norm)
    prefixed = [i for i, name in enumerate(names) if name.startswith(norm)]
    return prefixed[0] if len(prefixed) == 1 else None


def label_probabilities_from_logprobs(
    top_logprobs: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> tuple[dict[str, float] | None, float]:
    """Label probabilities from one token position's top alternatives.

    Each alternative's token is compared with the labels after lower-casing
    and stripping whitespace, punctuation and quotes; it counts for a label
    when equal to it, or when it is a prefix of exactly one label (``"pos"``
    for ``"positive"``: labels often span several tokens). Alternatives that
    match several or no labels are *non-label mass*: it is dropped and the
    label probabilities are renormalised over the matched mass, i.e. they are
    the token probabilities conditional on the answer being a label. The
    matched mass is returned too, so callers can distrust rows where it is low.
    A label outside the top alternatives gets probability 0.

    Parameters
    ----------
    top_logprobs : sequence of mappings with "token" and "logprob"
        The alternatives at the answer position (OpenAI's ``top_logprobs``).
    labels : sequence of str
        The class labels, in column order.

    Returns
    -------
    probabilities : dict of str to float, or None
        One entry per label, summing to 1; None when no alternative matched.
    label_mass : float
        Total probability of the matched alternatives.

    Examples
    --------
    >>> alts = [{"token": " Positive", "logprob": math.log(0.6)},
    ...         {"token": "neg", "logprob": math.log(0.2)},
    ...         {"token": "The", "logprob": math.log(0.2)}]
    >>> probs, mass = label_probabilities_from_logprobs(alts, ["positive", "negative"])
    >>> {k: round(v, 6) for k, v in probs.items()}, round(mass, 6)
    ({'positive': 0.75, 'negative': 0.25}, 0.8)
    """
    mass = [0.0] * len(labels)
    for alternative in top_logprobs:
        index = _match_label(str(alternative.get("token", "")), labels)
        if index is not None:
            mass[index] += math.exp(float(alternative["logprob"]))
    total = sum(mass)
    if total <= 0:
        return None, 0.0
    return {label: m / total for label, m in zip(labels, mass, strict=True)}, total


#: Where the value of a JSON answer's ``"Answer"`` field starts (after an opening quote).
_ANSWER_VALUE = re.compile(r'"Answer"\s*:\s*"?\s*(?=\w)')


def answer_position(
    positions: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> Mapping[str, Any] | None:
    """The token position that states the answer label, or None when there is none.

    In a JSON answer (the shipped templates), it is the token where the value
    of the ``"Answer"`` field starts; a JSON answer without that field has no
    answer token (its first label-like tokens are keys). In any other text, it
    is the first token that matches a label (see :func:`label_probabilities_from_logprobs`);
    when no token does (``"The movie review"``), the first token with a word
    character: where an answer that starts with the label would have started.
    """
    tokens = [str(position.get("token", "")) for position in positions]
    text = "".join(tokens)
    match = _ANSWER_VALUE.search(text)
    if match is not None:
        end = 0
        for position, token in zip(positions, tokens, strict=True):
            end += len(token)
            if end > match.end():
                return position
    if text.lstrip().startswith("{"):
        return None
    for position, token in zip(positions, tokens, strict=True):
        if _match_label(token, labels) is not None:
            return position
    return next((p for p, t in zip(positions, tokens, strict=True) if _normalise_token(t)), None)


def answer_label_probabilities(
    response: Mapping[str, Any], labels: Sequence[str]
) -> tuple[dict[str, float] | None, float | None]:
    """Label probabilities at the answer token of a chat completion response.

    Returns ``(None, None)`` when the response has no answer token (no
    logprobs, or a JSON answer without an ``"Answer"`` field); else what
    :func:`label_probabilities_from_logprobs` returns at :func:`answer_position`.
    """
    logprobs = response["choices"][0].get("logprobs") or {}
    position = answer_position(logprobs.get("content") or [], labels)
    if position is None:
        return None, None
    return label_probabilities_from_logprobs(position.get("top_logprobs") or [], labels)
