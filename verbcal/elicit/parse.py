"""Read a model's verbalized probabilities out of its raw answer text.

``parse_verbalized`` never raises on model output: whatever the text is, it
returns a :class:`ParseResult` whose status says how the reading went.

How an answer is read, in order:

1. Every top-level JSON object in the text is read (code fences and prose
   around it are ignored). Invalid JSON as models write it (single quotes,
   unquoted keys or values, trailing commas, Python literals, stray
   backslashes, unescaped quotes inside strings) is read leniently and the
   leniency is reported as a repair (:mod:`verbcal.elicit.lenient_json`).
   An object the text cuts off (the reply hit its token limit) is read only
   when every value the reading needs is complete: every label has its number
   (``…"C": 0.15, "D": 0.05`` with no closing brace), and a last number that
   runs into the end of the text with fewer than two decimals is confirmed by
   the values summing to 1 (``"D": 0.0`` may be the start of ``0.05``).
   ``"D": "0.`` is refused.
2. In an object, keys that name a label give a distribution (the paper's
   style: ``{"Answer": "C", "A": 0.05, ..., "D": 0.05}``); the ``Answer``
   key is then ignored. Without label keys, a nested object with label keys is
   used; failing that an answer + confidence pair
   (``{"Answer": "C", "Confidence": 0.8}``) puts the confidence on the answer
   and spreads the rest evenly over the other labels. An answer qualified
   after its label (``"True, but only in some states"``) is that label,
   unless the qualification names another label (``"True for some, False for
   others"``); see :meth:`verbcal.labels.LabelSet.match_start`.
3. When several objects state something, the last one that reads as a valid
   distribution wins (models correct themselves at the end).
4. Without any usable JSON, plain text is scanned for ``label: value`` pairs
   or ``Answer: B, confidence 90%``.

Values are then completed into a distribution:

* numbers in quotes are read as numbers; ``"80%"`` is 0.8; values read as
  percentages (out of 100) when some exceeds 1, none exceeds 100, and they
  are all whole numbers or sum to 100 (``{"A": 70, "B": 30}``, confidence 90);
* labels that were not stated share the remainder ``1 - sum(stated)``
  evenly (0 when the stated values already reach 1);
* a sum off 1 by more than ``tolerance`` is renormalised.

Each of these marks the result ``repaired`` and says so in ``detail``.
Negative, NaN or out-of-range values, all-zero distributions, answers outside
the label set (``"None"``, ``""``), and texts that state no distribution
(empty, refusals, "Unknown", JSON cut off before its values are complete)
give ``failed`` with the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from verbcal.elicit.lenient_json import MAX_DEPTH, NUMBER, NUMBER_RE, FoundObject, json_objects
from verbcal.errors import ConfigurationError
from verbcal.labels import LabelSet, normalise_label
from verbcal.predictions import Status

OK: Final = "ok"
REPAIRED: Final = "repaired"
FAILED: Final = "failed"

#: Default allowed deviation of a stated sum from 1 before a row counts as repaired.
SUM_TOLERANCE = 0.01

#: Keys (after :func:`~verbcal.labels.normalise_label`) that hold the chosen label.
ANSWER_KEYS = frozenset({"answer", "final answer", "label", "prediction", "choice"})
#: Keys (normalised) that hold the confidence in the chosen label.
CONFIDENCE_KEYS = frozenset({"confidence", "confidence level", "probability", "certainty"})

_QUOTE = "[\"'*]*"  # quotes or markdown bold around a key or value in plain text


@dataclass(frozen=True, eq=False)
class ParseResult:
    """What ``parse_verbalized`` read from one answer.

    Attributes
    ----------
    probs : numpy.ndarray of shape (K,) or None
        Probabilities in label order, summing to 1; None when ``status`` is
        ``"failed"``.
    status : {"ok", "repaired", "failed"}
        ``ok``: read as stated. ``repaired``: read after the fixes listed in
        ``detail``. ``failed``: no distribution; ``detail`` holds the reason.
    detail : tuple of str
        The repairs made, or the one reason for failing.
    """

    probs: np.ndarray | None
    status: Status
    detail: tuple[str, ...] = field(default=())


class _Rejected(Exception):
    """An answer that states something but cannot be read as a distribution."""


@dataclass
class _Reading:
    probs: np.ndarray | None
    repairs: list[str]
    reason: str = ""
    cut: bool = False  # read from an object the text cuts off


# --------------------------------------------------------------------------- numbers


def _number(value: object, where: str, repairs: list[str]) -> tuple[float, bool]:
    """A stated value as a float, and whether it carried a percent sign."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise _Rejected(f"{where} is {json.dumps(value)}, not a number")
    if isinstance(value, float):
        return value, False
    if isinstance(value, int):  # JSON integers can be too large for a float
        return (float(value) if abs(value) < 1e300 else float("inf")), False
    text = str(value).strip()
    percent = text.endswith("%")
    if percent:
        text = text[:-1].strip()
    if not NUMBER_RE.fullmatch(text):
        raise _Rejected(f"{where} is {value!r}, not a number")
    _add(repairs, "percent signs" if percent else "numbers in quotes")
    return float(text), percent


def _add(repairs: list[str], what: str) -> None:
    if what not in repairs:
        repairs.append(what)


def _look_like_percentages(values: list[float]) -> bool:
    """Some value above 1, none above 100, and all whole numbers or summing to 100."""
    if not values or max(values) <= 1 or max(values) > 100:
        return False
    return all(x == round(x) for x in values) or abs(sum(values) - 100) <= 1


def _to_fractions(values: dict[str, tuple[float, bool]], repairs: list[str]) -> dict[str, float]:
    """Check stated values and bring them to [0, 1] (percent signs, percentage scale)."""
    for where, (x, _) in values.items():
        if not np.isfinite(x):
            raise _Rejected(f"{where} is {x}, not a finite number")
        if x < 0:
            raise _Rejected(f"{where} is {x:g}, negative")
    plain = [x for x, percent in values.values() if not percent]
    as_percentages = _look_like_percentages(plain)
    if as_percentages:
        _add(repairs, "values read as percentages (out of 100)")
    fractions = {}
    for where, (x, percent) in values.items():
        fraction = x / 100 if percent or as_percentages else x
        if fraction > 1:
            raise _Rejected(f"{where} is {x:g}, above 1 (and not a percentage)")
        fractions[where] = fraction
    return fractions


# --------------------------------------------------------------------------- readings


def _distribution(
    stated: dict[int, tuple[float, bool]],
    label_set: LabelSet,
    tolerance: float,
    *,
    open_end: bool = False,
) -> _Reading:
    """Complete per-label values into a distribution (missing labels, renormalising).

    With ``open_end`` (the last value runs into the end of a cut-off text, so
    it may be the start of a longer number), the values must sum to 1.
    """
    repairs: list[str] = []
    names = {i: f"the value for {label_set.labels[i]!r}" for i in stated}
    fractions = _to_fractions({names[i]: v for i, v in stated.items()}, repairs)
    k = len(label_set.labels)
    probs = np.zeros(k)
    for i in stated:
        probs[i] = fractions[names[i]]
    missing = [i for i in range(k) if i not in stated]
    if missing:
        rest = max(0.0, 1.0 - probs.sum())
        probs[missing] = rest / len(missing)
        labels = ", ".join(repr(label_set.labels[i]) for i in missing)
        repairs.append(f"missing labels {labels} given the remainder {rest:.4g}, split evenly")
    total = probs.sum()
    if total <= 0:
        raise _Rejected("the stated probabilities sum to 0")
    if open_end and abs(total - 1.0) > tolerance + 1e-12:
        raise _Rejected(
            f"the answer is truncated: its last value may be cut off (the stated values sum "
            f"to {total:.4g})"
        )
    if abs(total - 1.0) > tolerance + 1e-12:  # slack for 0.33 + 0.33 + 0.33 in floating point
        repairs.append(f"probabilities summed to {total:.4g}; renormalised")
    return _Reading(probs / total, repairs)


def _answer_with_confidence(
    answer: object, confidence: object, label_set: LabelSet, *, has_confidence: bool
) -> _Reading:
    """Confidence on the stated answer, the rest spread evenly over the other labels.

    An answer that is no label but starts with one ("True, with some caveats")
    is that label, reported as a repair.
    """
    repairs: list[str] = []
    label = label_set.match(answer)
    if label is None:
        label = label_set.match_start(answer)
        if label is not None:
            repairs.append(
                f"the answer {answer!r} read as {label_set.labels[label]!r}, the label it "
                "starts with"
            )
    if label is None:
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise _Rejected("the answer is empty")
        raise _Rejected(f"the answer {answer!r} is not one of the labels {label_set.labels}")
    if not has_confidence:
        raise _Rejected(f"the answer {answer!r} comes with no probability or confidence")
    stated = {"the confidence": _number(confidence, "the confidence", repairs)}
    conf = _to_fractions(stated, repairs)["the confidence"]
    k = len(label_set.labels)
    probs = np.full(k, (1.0 - conf) / (k - 1))
    probs[label] = conf
    return _Reading(probs, repairs)


def _read_object(
    obj: dict, label_set: LabelSet, tolerance: float, cut: FoundObject | None, depth: int = 0
) -> _Reading | None:
    """The distribution one JSON object states, or None when it says nothing about labels.

    ``cut`` is the object as found when the text ends inside it: it is read
    only when every value the reading needs is complete.
    """
    try:
        reading = _read_object_or_reject(obj, label_set, tolerance, cut, depth)
    except _Rejected as exc:
        reading = _Reading(None, [], str(exc))
    if reading is not None and cut is not None:
        reading.cut = True
        if reading.probs is not None:
            reading.repairs.append(
                "the answer is cut off after its last value (a JSON object is never closed); "
                "read the values it gives"
            )
    return reading


def _read_object_or_reject(
    obj: dict, label_set: LabelSet, tolerance: float, cut: FoundObject | None, depth: int
) -> _Reading | None:
    stated: dict[int, tuple[float, bool]] = {}
    roles: dict[str, object] = {}
    role_keys: dict[str, str] = {}
    repairs: list[str] = []
    for key, value in obj.items():
        label = label_set.match(key)
        if label is None:
            role = normalise_label(key)
            if role in ANSWER_KEYS or role in CONFIDENCE_KEYS:
                roles["answer" if role in ANSWER_KEYS else "confidence"] = value
                role_keys["answer" if role in ANSWER_KEYS else "confidence"] = key
            continue
        if value is None:
            continue
        if label in stated:
            raise _Rejected(f"label {label_set.labels[label]!r} is given more than once")
        stated[label] = _number(value, f"the value for {label_set.labels[label]!r}", repairs)
    if stated:
        missing = [repr(label) for i, label in enumerate(label_set.labels) if i not in stated]
        if cut is not None and missing:
            values = "values" if len(missing) > 1 else "value"
            raise _Rejected(
                f"the answer is truncated: it ends before the {values} for {', '.join(missing)}"
            )
        open_end = cut is not None and cut.open_end
        reading = _distribution(stated, label_set, tolerance, open_end=open_end)
        reading.repairs[:0] = repairs
        return reading
    nested_objects = [value for value in obj.values() if isinstance(value, dict)]
    for value in nested_objects if depth < MAX_DEPTH else []:
        if nested := _read_object(value, label_set, tolerance, cut, depth + 1):
            return nested
    if "answer" in roles and cut is not None:
        if "confidence" not in roles:
            raise _Rejected("the answer is truncated: it ends before the confidence")
        if cut.open_end and list(obj)[-1] in role_keys.values():
            raise _Rejected("the answer is truncated: its confidence may be cut off")
    if "answer" in roles:
        return _answer_with_confidence(
            roles["answer"],
            roles.get("confidence"),
            label_set,
            has_confidence="confidence" in roles,
        )
    return None


def _read_plain_text(text: str, label_set: LabelSet, tolerance: float) -> _Reading | None:
    """``A: 0.7, B: 0.3`` or ``Answer: B, confidence 90%`` in text that has no usable JSON."""
    labels = label_set.pattern()
    pairs = re.finditer(
        rf"(?<![\w]){_QUOTE}({labels}){_QUOTE}\s*[:=]\s*{_QUOTE}({NUMBER})\s*(%?)",
        text,
        flags=re.IGNORECASE,
    )
    stated: dict[int, tuple[float, bool]] = {}
    for m in pairs:
        label = label_set.match(m.group(1))
        if label is not None:
            stated[label] = (float(m.group(2)), bool(m.group(3)))
    answers = re.findall(
        rf"\b(?:final\s+)?answer\b{_QUOTE}\s*(?:[:=]|is)\s*{_QUOTE}\(?({labels})(?!\w)",
        text,
        flags=re.IGNORECASE,
    )
    confidences = re.findall(
        rf"\b(?:confidence|probability|certainty)(?:\s+level)?\b{_QUOTE}\s*(?:[:=]|is|of)?\s*"
        rf"{_QUOTE}({NUMBER}\s*%?)",
        text,
        flags=re.IGNORECASE,
    )
    try:
        if stated:
            reading = _distribution(stated, label_set, tolerance)
        elif answers:
            # A number in prose is no "number in quotes": only a percent sign is worth a note.
            confidence: object = None
            if confidences:
                written = confidences[-1].replace(" ", "")
                confidence = written if written.endswith("%") else float(written)
            reading = _answer_with_confidence(
                answers[-1], confidence, label_set, has_confidence=bool(confidences)
            )
        else:
            return None
    except _Rejected as exc:
        return _Reading(None, [], str(exc))
    reading.repairs.insert(0, "read from plain text (no JSON)")
    return reading


def _read(text: str, label_set: LabelSet, tolerance: float) -> _Reading:
    objects = json_objects(text)
    readings = []
    for found in objects:
        cut = found if found.cut else None
        reading = _read_object(found.value, label_set, tolerance, cut)
        if reading is not None:
            reading.repairs[:0] = [f"invalid JSON: {what}" for what in found.leniencies]
            readings.append(reading)
    valid = [r for r in readings if r.probs is not None]
    if valid:
        chosen = valid[-1]
        if len(readings) > 1:
            chosen.repairs.append(f"{len(readings)} answers in the text; used the last valid one")
        return chosen
    if readings and readings[-1].cut:
        return readings[-1]
    if any(found.cut for found in objects):
        return _Reading(None, [], "the answer is truncated: a JSON object is never closed")
    if readings:
        return readings[-1]
    plain = _read_plain_text(text, label_set, tolerance)
    if plain is not None:
        return plain
    return _Reading(None, [], "no probabilities and no answer with a confidence found")


def parse_verbalized(
    text: object,
    labels: Sequence[str] | LabelSet,
    *,
    aliases: Mapping[str, str] | None = None,
    tolerance: float = SUM_TOLERANCE,
) -> ParseResult:
    """Read the probability per label that a model states in ``text``.

    Never raises on model output: any ``text`` (also None or a non-string)
    gives a result whose ``status`` says what happened. See the module
    docstring for the forms read and the repairs made.

    Parameters
    ----------
    text : str
        The model's raw answer.
    labels : sequence of str or LabelSet
        The label set, in the order of the returned probabilities. Matching is
        insensitive to case, whitespace and punctuation (``" true."`` is
        ``"True"``); JSON booleans match the labels "True"/"False". A
        :class:`verbcal.labels.LabelSet` brings its own aliases.
    aliases : mapping of str to str, optional
        Other names a model may use, mapped to a label, e.g.
        ``{"Yes": "True", "No": "False"}`` (with plain labels only).
    tolerance : float
        A stated sum may miss 1 by this much and still count as ``ok``.

    Returns
    -------
    ParseResult
        ``probs`` (shape (K,), label order, sums to 1) or None, the
        ``status`` ("ok", "repaired", "failed") and the ``detail``.

    Raises
    ------
    ConfigurationError
        If ``labels``, ``aliases`` or ``tolerance`` cannot work (never
        because of ``text``).

    Examples
    --------
    >>> r = parse_verbalized('```json\\n{"Answer": "B", "A": 0.2, "B": 0.8}\\n```', ["A", "B"])
    >>> r.status, r.probs.tolist()
    ('ok', [0.2, 0.8])
    >>> r = parse_verbalized("Answer: yes, confidence 90%", ["True", "False"],
    ...                      aliases={"yes": "True", "no": "False"})
    >>> r.status, r.probs.round(2).tolist()
    ('repaired', [0.9, 0.1])
    >>> parse_verbalized('{"Answer": "Unknown", "Confidence": 0.5}', ["True", "False"]).detail
    ("the answer 'Unknown' is not one of the labels ['True', 'False']",)
    """
    if isinstance(labels, LabelSet):
        if aliases is not None:
            raise ConfigurationError("pass the aliases inside the LabelSet, not as aliases=")
        label_set = labels
    else:
        label_set = LabelSet(labels, aliases)
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ConfigurationError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    if not isinstance(text, str):
        return ParseResult(None, FAILED, (f"the answer is {type(text).__name__}, not text",))
    if not text.strip():
        return ParseResult(None, FAILED, ("the answer is empty",))
    reading = _read(text, label_set, tolerance)
    if reading.probs is None:
        return ParseResult(None, FAILED, (reading.reason,))
    return ParseResult(reading.probs, REPAIRED if reading.repairs else OK, tuple(reading.repairs))


def parse_many(
    texts: Iterable[object], labels: Sequence[str] | LabelSet, **kwargs: Any
) -> tuple[np.ndarray, list[ParseResult]]:
    """Parse several answers: an (n, K) array with NaN rows where parsing failed, and the results.

    Examples
    --------
    >>> P, results = parse_many(['{"A": 0.3, "B": 0.7}', "no idea"], ["A", "B"])
    >>> P.tolist(), [r.status for r in results]
    ([[0.3, 0.7], [nan, nan]], ['ok', 'failed'])
    """
    results = [parse_verbalized(text, labels, **kwargs) for text in texts]
    P = np.full((len(results), len(labels)), np.nan)
    for row, result in zip(P, results, strict=True):
        if result.probs is not None:
            row[:] = result.probs
    return P, results
