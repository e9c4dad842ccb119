"""Content-free probe texts for contextual calibration.

A content-free probe ("N/A", "", "[MASK]"; Zhao et al. 2021) or a string of
random in-domain words (Fei et al. 2023) is rendered like any item; what the
model answers to it measures its bias towards each label, which
:class:`verbcal.ContextualCalibration` and :class:`verbcal.BatchCalibration`
remove.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

from verbcal.errors import ConfigurationError, InvalidInputError

__all__ = ["CONTENT_FREE_PROBES", "content_free_inputs", "sample_in_domain_words"]

#: Content-free probes of contextual calibration (Zhao et al. 2021).
CONTENT_FREE_PROBES = ("N/A", "", "[MASK]")


def sample_in_domain_words(
    texts: Iterable[str], n_words: int, *, seed: int | np.random.Generator | None = 0
) -> str:
    """``n_words`` words drawn at random (with replacement) from the words of ``texts``.

    Words are drawn in proportion to how often they occur, as in domain-context
    calibration (Fei et al. 2023).

    Examples
    --------
    >>> sample_in_domain_words(["the plot was thin", "a thin plot"], 3, seed=1) == (
    ...     sample_in_domain_words(["the plot was thin", "a thin plot"], 3, seed=1))
    True
    """
    words = _words(texts)
    if isinstance(n_words, bool) or not isinstance(n_words, (int, np.integer)) or n_words < 1:
        raise ConfigurationError(f"n_words must be a positive integer, got {n_words!r}")
    rng = np.random.default_rng(seed)
    return " ".join(words[i] for i in rng.integers(0, len(words), size=int(n_words)))


def content_free_inputs(
    in_domain_texts: Iterable[str] | None = None,
    *,
    n_random: int = 20,
    n_words: int | None = None,
    seed: int | np.random.Generator | None = 0,
) -> list[str]:
    """Content-free probe texts for contextual calibration, rendered like any item.

    Parameters
    ----------
    in_domain_texts : iterable of str, optional
        Unlabelled texts of the task. When given, ``n_random`` strings of
        random in-domain words are added (Fei et al. 2023).
    n_random : int
        How many random-word probes to add (ignored without texts).
    n_words : int, optional
        Words per random probe; default: the mean word count of the texts.
    seed : int or numpy.random.Generator, optional
        Seed of the word sampling: the same seed gives the same probes.

    Returns
    -------
    list of str
        ``["N/A", "", "[MASK]"]`` followed by the random-word probes.

    Examples
    --------
    >>> content_free_inputs()
    ['N/A', '', '[MASK]']
    >>> len(content_free_inputs(["a good film", "a bad film"], n_random=5))
    8
    """
    probes = list(CONTENT_FREE_PROBES)
    if in_domain_texts is None:
        return probes
    texts = _texts(in_domain_texts)
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 0:
        raise ConfigurationError(f"n_random must be a non-negative integer, got {n_random!r}")
    if n_words is None:
        n_words = max(1, round(float(np.mean([len(_WORD.findall(t)) for t in _texts(texts)]))))
    rng = np.random.default_rng(seed)
    return probes + [sample_in_domain_words(texts, n_words, seed=rng) for _ in range(n_random)]


_WORD = re.compile(r"\w+(?:['’]\w+)*")


def _texts(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("in-domain texts must be a list of texts, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"in-domain text {i} must be a string, got {text!r}")
    if not texts:
        raise InvalidInputError("in-domain texts are empty: give at least one text")
    return texts


def _words(texts: Iterable[str]) -> list[str]:
    words = [word for text in _texts(texts) for word in _WORD.findall(text)]
    if not words:
        raise InvalidInputError("the in-domain texts contain no words to sample from")
    return words
