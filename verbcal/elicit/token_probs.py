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

from verbcal.elicit.parse import ANSWER_KEYS
from verbcal.labels import LabelSet

__all__ = ["answer_label_probabilities", "answer_position", "label_probabilities_from_logprobs"]


def label_probabilities_from_logprobs(
    top_logprobs: Sequence[Mapping[str, Any]], labels: Sequence[str] | LabelSet
) -> tuple[dict[str, float] | None, float]:
    """Label probabilities from one token position's top alternatives.

    Each alternative's token is compared with the labels (and their aliases)
    as :meth:`verbcal.labels.LabelSet.match_token` does, ignoring case,
    whitespace, punctuation and quotes: it counts for a label when it names
    it, or when it is a prefix of exactly one label's names (``"pos"`` for
    ``"positive"``: labels often span several tokens). Alternatives that
    match several or no labels are *non-label mass*: it is dropped and the
    label probabilities are renormalised over the matched mass, i.e. they are
    the token probabilities conditional on the answer being a label. The
    matched mass is returned too, so callers can distrust rows where it is low.
    A label outside the top alternatives gets probability 0.

    Parameters
    ----------
    top_logprobs : sequence of mappings with "token" and "logprob"
        The alternatives at the answer position (OpenAI's ``top_logprobs``).
    labels : sequence of str or LabelSet
        The class labels, in column order; a LabelSet brings its aliases
        (with ``{"Yes": "True"}``, a ``"Yes"`` token counts for ``"True"``).

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
    label_set = LabelSet.of(labels)
    mass = [0.0] * len(label_set)
    for alternative in top_logprobs:
        index = label_set.match_token(str(alternative.get("token", "")))
        if index is not None:
            mass[index] += math.exp(float(alternative["logprob"]))
    total = sum(mass)
    if total <= 0:
        return None, 0.0
    return {label: m / total for label, m in zip(label_set.labels, mass, strict=True)}, total


#: Where the value of a JSON answer's ``"Answer"`` field (or another answer key the parser
#: reads, in any case) starts: after an opening quote and brackets.
_ANSWER_KEY_FORMS = sorted(ANSWER_KEYS, key=lambda key: (-len(key), key))
_ANSWER_VALUE = re.compile(
    "[\"'](?:"
    + "|".join(key.replace(" ", r"[\W_]+") for key in _ANSWER_KEY_FORMS)
    + r")[\"']\s*:\s*[\"']?[\s(\[*]*(?=[^\W_])",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W_]")


def answer_position(
    positions: Sequence[Mapping[str, Any]], labels: Sequence[str] | LabelSet
) -> Mapping[str, Any] | None:
    """The token position that states the answer label, or None when there is none.

    In a JSON answer (the shipped templates), it is the token where the value
    of the ``"Answer"`` field (or another key in
    :data:`verbcal.elicit.parse.ANSWER_KEYS`) starts; a JSON answer without one has no
    answer token (its first label-like tokens are keys). In any other text, it
    is the first token that matches a label (see :func:`label_probabilities_from_logprobs`);
    when no token does (``"The movie review"``), the first token with a word
    character: where an answer that starts with the label would have started.
    """
    label_set = LabelSet.of(labels)
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
        if label_set.match_token(token) is not None:
            return position
    return next((p for p, t in zip(positions, tokens, strict=True) if _WORD.search(t)), None)


def answer_label_probabilities(
    response: Mapping[str, Any], labels: Sequence[str] | LabelSet
) -> tuple[dict[str, float] | None, float | None]:
    """Label probabilities at the answer token of a chat completion response.

    Returns ``(None, None)`` when the response has no answer token (no
    logprobs, or a JSON answer without an ``"Answer"`` field); else what
    :func:`label_probabilities_from_logprobs` returns at :func:`answer_position`.
    """
    label_set = LabelSet.of(labels)
    logprobs = response["choices"][0].get("logprobs") or {}
    position = answer_position(logprobs.get("content") or [], label_set)
    if position is None:
        return None, None
    return label_probabilities_from_logprobs(position.get("top_logprobs") or [], label_set)
