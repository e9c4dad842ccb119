"""Few-shot templates: labelled exemplars, and content-free exemplars, before the item.

A few-shot template renders like the template it wraps, with worked examples in
front of the item as earlier chat turns: for every exemplar, the wrapped
template's user message with the exemplar's text fenced as data (exactly as an
item is fenced), then an assistant message holding the exemplar's answer as
the JSON the template asks for. The item's own messages come last, so the
response cache's key (the full messages) covers the exemplars, and a run whose
exemplars are fixed shares one prompt prefix (prefix caches keep working).

Content-free exemplars (``content_free=True``) are the inputs "N/A", "" and
"[MASK]" answered with the uniform distribution (every label equally likely):
they show the model, inside the prompt, that an input without content carries
no preference for any label, the prompt-side counterpart of contextual
calibration (Zhao et al. 2021).

Exemplars are chosen balanced over the labels (round-robin, each label's turn
in a shuffled order), either once per run (``per_item=False``: the same
exemplars for every item) or per item (``per_item=True``: seeded by a hash of
the item text, so a rerun asks exactly the same requests); an exemplar whose
text equals the item's is never shown with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from verbcal.elicit.probes import CONTENT_FREE_PROBES
from verbcal.elicit.templates import Template, load_template
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.labels import LabelSet
from verbcal.predictions import read_jsonl

__all__ = ["FewShotTemplate", "Shot", "few_shot", "read_shots", "shot_answer"]

#: Probability a shot without ``probs`` states for its gold label (the rest is spread evenly).
DEFAULT_SHOT_CONFIDENCE = 0.9
_SHOT_FIELDS = frozenset({"text", "label", "probs", "reasoning", "options", "id"})


@dataclass(frozen=True)
class Shot:
    """One labelled exemplar.

    Attributes
    ----------
    text : str
        The exemplar input.
    label : str or None
        Its gold label (None for content-free exemplars).
    probs : mapping of label to float, optional
        The answer shown for it; None: ``confidence`` on the gold label.
    reasoning : str, optional
        The ``Reasoning`` shown (needed by reasoning templates).
    options : mapping of label to str, optional
        Option texts, for multiple-choice templates.
    """

    text: str
    label: str | None
    probs: Mapping[str, float] | None = None
    reasoning: str | None = None
    options: Mapping[str, str] | None = None


def read_shots(path: str | os.PathLike, labels: Sequence[str]) -> list[Shot]:
    """Read labelled exemplars from a JSON Lines file.

    Each line is ``{"text": ..., "label": ...}``, optionally with ``"probs"``
    (the answer to show: a probability per label, summing to 1),
    ``"reasoning"`` and ``"options"``.

    Raises
    ------
    InvalidInputError
        Naming the file and line of a missing field, an unknown label or a bad
        ``probs``.
    """
    label_set = LabelSet(labels)
    shots = []
    for line, row in read_jsonl(path):

        def bad(what: str, line: int = line) -> InvalidInputError:
            return InvalidInputError(f"{path}, line {line}: {what}")

        unknown = sorted(set(row) - _SHOT_FIELDS)
        if unknown:
            raise bad(f"unknown fields {unknown}; allowed: {sorted(_SHOT_FIELDS)}")
        text, label = row.get("text"), row.get("label")
        if not isinstance(text, str):
            raise bad('"text" must be a string')
        index = label_set.match(label) if isinstance(label, str) else None
        if index is None:
            raise bad(f'"label" must be one of {label_set.labels}, got {label!r}')
        label = label_set.labels[index]
        reasoning = row.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            raise bad('"reasoning" must be a string')
        options = row.get("options")
        if options is not None and not (
            isinstance(options, dict) and all(isinstance(v, str) for v in options.values())
        ):
            raise bad('"options" must be an object label -> text')
        try:
            probs = _check_probs(row.get("probs"), label_set.labels)
        except InvalidInputError as exc:
            raise bad(str(exc)) from None
        shots.append(Shot(text, label, probs, reasoning, options))
    if not shots:
        raise InvalidInputError(f"{path}: no exemplars")
    return shots


def _check_probs(probs: object, labels: list[str]) -> dict[str, float] | None:
    if probs is None:
        return None
    if not isinstance(probs, dict) or set(probs) != set(labels):
        raise InvalidInputError(f'"probs" must give a probability for each of {labels}')
    values = [probs[label] for label in labels]
    if not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
        for v in values
    ):
        raise InvalidInputError(f'"probs" must be numbers from 0 to 1, got {probs}')
    if abs(sum(values) - 1) > 1e-6:
        raise InvalidInputError(f'"probs" must sum to 1, got {sum(values):.6g}')
    return {label: float(probs[label]) for label in labels}


def shot_answer(
    template: Template,
    labels: Sequence[str],
    probs: Mapping[str, float],
    *,
    answer: str | None = None,
    reasoning: str | None = None,
) -> str:
    """The JSON answer an exemplar shows, in the form ``template`` asks for.

    Parameters
    ----------
    template : Template
        Decides the form (a probability per label, or answer + confidence,
        with or without reasoning).
    labels : sequence of str
        The label set, in order.
    probs : mapping of label to float
        The distribution the answer states.
    answer : str, optional
        The label under ``"Answer"`` (default: the most likely one, the first on ties).
    reasoning : str, optional
        Required by reasoning templates.

    Examples
    --------
    >>> shot_answer(load_template("top1"), ["neg", "pos"], {"neg": 0.2, "pos": 0.8})
    '{"Answer": "pos", "Confidence": 0.8}'
    >>> shot_answer(load_template("distribution"), ["neg", "pos"], {"neg": 0.5, "pos": 0.5},
    ...             answer="pos")
    '{"Answer": "pos", "neg": 0.5, "pos": 0.5}'
    """
    labels = list(labels)
    if answer is None:
        answer = max(labels, key=lambda label: probs[label])
    out: dict[str, object] = {}
    if template.reasoning:
        if reasoning is None:
            raise ConfigurationError(
                f"template {template.name!r} asks for reasoning: every exemplar needs a "
                '"reasoning" field'
            )
        out["Reasoning"] = reasoning
    out["Answer"] = answer
    if template.answer_format == "top1":
        out["Confidence"] = round(float(probs[answer]), 4)
    else:
        out.update({label: round(float(probs[label]), 4) for label in labels})
    return json.dumps(out, ensure_ascii=False)


@dataclass(frozen=True)
class FewShotTemplate(Template):
    """A template with exemplars before the item. Build it with :func:`few_shot`.

    Attributes (besides :class:`Template`'s)
    ----------------------------------------
    shots : tuple of Shot
        The pool of labelled exemplars.
    k : int
        Labelled exemplars shown per item.
    per_item : bool
        Choose the exemplars per item (seeded by its text) instead of once per run.
    seed : int
        Seed of the choice.
    content_free : bool
        Show the content-free exemplars first.
    confidence : float
        Probability stated for the gold label by exemplars without ``probs``.
    """

    shots: tuple[Shot, ...] = ()
    k: int = 0
    per_item: bool = False
    seed: int = 0
    content_free: bool = False
    confidence: float = DEFAULT_SHOT_CONFIDENCE
    base: Template | None = field(default=None, compare=False, repr=False)

    def render(
        self,
        text: str,
        labels: Sequence[str],
        options: Mapping[str, str] | Sequence[str] | None = None,
    ) -> list[dict[str, str]]:
        """Chat messages: system, exemplar turns (content-free first), then the item.

        Examples
        --------
        >>> shots = [Shot("Loved it", "pos"), Shot("Awful", "neg")]
        >>> t = few_shot("top1", shots, k=2, content_free=True)
        >>> messages = t.render("Fine film", ["neg", "pos"])
        >>> [m["role"] for m in messages][:3], len(messages)  # 3 content-free + 2 exemplar turns
        (['system', 'user', 'assistant'], 12)
        >>> messages[2]["content"]
        '{"Answer": "neg", "Confidence": 0.5}'
        """
        base = self.base or self
        item_messages = Template.render(base, text, labels, options)
        labels = list(LabelSet(labels).labels)
        turns: list[dict[str, str]] = []
        uniform = {label: 1 / len(labels) for label in labels}
        if self.content_free:
            for i, probe in enumerate(CONTENT_FREE_PROBES):
                answer = labels[i % len(labels)]
                turns += self._turn(probe, labels, None, uniform, answer, "No content to judge.")
        for shot in self.choose(text, labels):
            probs = shot.probs or self._stated(shot.label, labels)
            turns += self._turn(shot.text, labels, shot.options, probs, shot.label, shot.reasoning)
        n_system = sum(m["role"] == "system" for m in item_messages[:1])
        return item_messages[:n_system] + turns + item_messages[n_system:]

    def _stated(self, label: str | None, labels: list[str]) -> dict[str, float]:
        rest = (1 - self.confidence) / (len(labels) - 1)
        return {lab: self.confidence if lab == label else rest for lab in labels}

    def _turn(self, text, labels, options, probs, answer, reasoning) -> list[dict[str, str]]:
        base = self.base or self
        if options is None and base.multiple_choice:
            options = {label: "N/A" for label in labels}
        messages = Template.render(base, text, labels, options)
        asked = [m for m in messages if m["role"] != "system"]
        reply = shot_answer(base, labels, probs, answer=answer, reasoning=reasoning)
        return [*asked, {"role": "assistant", "content": reply}]

    def choose(self, text: str, labels: Sequence[str]) -> list[Shot]:
        """The labelled exemplars shown with the item ``text``, in order.

        Balanced over the labels (their counts differ by at most one), never an
        exemplar with the item's own text; the same for every item unless
        ``per_item``.
        """
        if self.k == 0:
            return []
        seed_text = f"{self.seed}\0{text}" if self.per_item else f"{self.seed}"
        digest = hashlib.sha256(seed_text.encode("utf-8")).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        pools = {}
        for label in labels:
            pool = [s for s in self.shots if s.label == label and s.text != text]
            pools[label] = [pool[i] for i in rng.permutation(len(pool))]
        order = [labels[i] for i in rng.permutation(len(labels))]
        chosen: list[Shot] = []
        while len(chosen) < self.k and any(pools.values()):
            for label in order:
                if pools[label] and len(chosen) < self.k:
                    chosen.append(pools[label].pop())
        return chosen


def few_shot(
    template: str | os.PathLike | Template,
    shots: Sequence[Shot] | str | os.PathLike = (),
    *,
    labels: Sequence[str] | None = None,
    k: int = 4,
    per_item: bool = False,
    seed: int = 0,
    content_free: bool = False,
    confidence: float = DEFAULT_SHOT_CONFIDENCE,
) -> FewShotTemplate:
    """A few-shot version of ``template``.

    Parameters
    ----------
    template : str, path or Template
        The template to wrap (a built-in name, a path, or a loaded one).
    shots : sequence of Shot, or path
        The exemplar pool, or a JSON Lines file of them (see :func:`read_shots`;
        then ``labels`` is required).
    labels : sequence of str, optional
        The label set; checked against the shots (every label needs one when ``k > 0``).
    k : int, default 4
        Labelled exemplars per item (at most the pool's size).
    per_item : bool, default False
        Choose per item (deterministic in the item text) instead of once per run.
    seed : int, default 0
    content_free : bool, default False
        Add the content-free exemplars ("N/A", "", "[MASK]" answered uniformly).
    confidence : float, default 0.9
        Probability stated for the gold label by exemplars without ``probs``.

    Returns
    -------
    FewShotTemplate

    Examples
    --------
    >>> t = few_shot("distribution", [Shot("Great", "pos"), Shot("Bad", "neg")], k=2)
    >>> sum(m["role"] == "assistant" for m in t.render("Okay", ["neg", "pos"]))
    2
    """
    if isinstance(template, Template):
        base = template
    else:
        base = load_template(template if isinstance(template, str) else Path(template))
    if isinstance(base, FewShotTemplate):
        raise ConfigurationError("the template already has exemplars")
    if isinstance(shots, (str, os.PathLike)):
        if labels is None:
            raise ConfigurationError("reading shots from a file needs labels")
        shots = read_shots(Path(shots), labels)
    shots = tuple(shots)
    if not all(isinstance(s, Shot) for s in shots):
        raise ConfigurationError("shots must be Shot objects or the path of a shots file")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(shots):
        raise ConfigurationError(
            f"k must be an integer from 0 to {len(shots)} (the shots), got {k!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigurationError(f"seed must be an integer, got {seed!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence <= 1):
        raise ConfigurationError(f"confidence must be in (0, 1], got {confidence!r}")
    if k == 0 and not content_free:
        raise ConfigurationError("nothing to show: k is 0 and content_free is False")
    if base.reasoning and any(s.reasoning is None for s in shots[: len(shots) if k else 0]):
        raise ConfigurationError(
            f'template {base.name!r} asks for reasoning: every exemplar needs a "reasoning"'
        )
    if labels is not None and k:
        missing = [lab for lab in LabelSet(labels).labels if not any(s.label == lab for s in shots)]
        if missing:
            raise ConfigurationError(
                f"no exemplar labelled {missing}: a balanced choice needs at least one per label"
            )
    return replace(
        FewShotTemplate(
            **{f: getattr(base, f) for f in ("name", "description", "answer_format")},
            reasoning=base.reasoning,
            messages=base.messages,
            source=base.source,
        ),
        shots=shots,
        k=k,
        per_item=per_item,
        seed=seed,
        content_free=content_free,
        confidence=float(confidence),
        base=base,
    )
