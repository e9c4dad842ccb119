"""Label names as models write them: one normalisation and one alias table for every reader.

A model may write a label in any case, with punctuation or quotes around it,
or under another name (``"Yes"`` for ``"True"``). :class:`LabelSet` maps every
such form to the label's column, and is what the answer parser, the prompt
templates and the token-probability reader all use, so that they agree on
what names a label.

Examples
--------
>>> labels = LabelSet(["True", "False"], aliases={"Yes": "True"})
>>> labels.match(" yes."), labels.match("maybe")
(0, None)
>>> labels.match_token(" Fal"), labels.match_start("True, but only in some states")
(1, 0)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from verbcal.errors import ConfigurationError

__all__ = ["LabelSet", "check_label_names", "normalise_label"]

# Words that join two labels into one non-answer ("True or False", "A and B").
_JOINERS = re.compile(r"[\s,]*(?:/|\||&|\bor\b|\band\b|\bnor\b|\bvs\.?)[\s,]*", re.IGNORECASE)


def normalise_label(name: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form of a label or key.

    Runs of letters and digits are kept, lower-cased and joined by one space; a
    name without any (``"+"``) is only stripped.

    Examples
    --------
    >>> normalise_label('  "Not_Entailment." '), normalise_label(" + ")
    ('not entailment', '+')
    """
    folded = name.casefold()
    return " ".join(re.findall(r"[^\W_]+", folded)) or folded.strip()


class LabelSet:
    """A label set and the aliases a model may use for its labels.

    Parameters
    ----------
    labels : sequence of str
        At least two non-empty labels that stay distinct under
        :func:`normalise_label`, in column order.
    aliases : mapping of str to str, optional
        Other names mapped to a label, e.g. ``{"Yes": "True", "No": "False"}``.

    Raises
    ------
    ConfigurationError
        When the labels or aliases cannot be told apart or point nowhere.
    """

    def __init__(self, labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        if isinstance(labels, str) or not isinstance(labels, Iterable):
            raise ConfigurationError(f"labels must be a list of strings, got {labels!r}")
        if aliases is not None and not isinstance(aliases, Mapping):
            raise ConfigurationError(f"aliases must be a mapping alias -> label, got {aliases!r}")
        self.labels: list[str] = list(labels)
        if len(self.labels) < 2:
            raise ConfigurationError(f"need at least 2 labels, got {self.labels!r}")
        self.aliases: dict[str, str] = dict(aliases or {})
        #: Every written form (normalised) to the index of its label.
        self.forms: dict[str, int] = {}
        for i, label in enumerate(self.labels):
            if not isinstance(label, str) or not label.strip():
                raise ConfigurationError(f"label {i} must be a non-empty string, got {label!r}")
            self._add(label, i, f"label {label!r}")
        for alias, target in self.aliases.items():
            if target not in self.labels:
                raise ConfigurationError(
                    f"alias {alias!r} points to {target!r}, which is not one of the labels "
                    f"{self.labels}"
                )
            if not isinstance(alias, str) or not alias.strip():
                raise ConfigurationError(f"alias must be a non-empty string, got {alias!r}")
            self._add(alias, self.labels.index(target), f"alias {alias!r}")
        self._start: re.Pattern[str] | None = None

    @classmethod
    def of(cls, labels: LabelSet | Sequence[str]) -> LabelSet:
        """``labels`` itself when it is a LabelSet, else a LabelSet without aliases."""
        return labels if isinstance(labels, LabelSet) else cls(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"LabelSet({self.labels!r}, aliases={self.aliases!r})"

    def _add(self, form: str, index: int, what: str) -> None:
        key = normalise_label(form)
        if self.forms.get(key, index) != index:
            other = self.labels[self.forms[key]]
            raise ConfigurationError(f"{what} cannot be told apart from label {other!r}")
        self.forms[key] = index

    def match(self, value: object) -> int | None:
        """Index of the label ``value`` names (a string, or a JSON boolean/int), else None."""
        if isinstance(value, (bool, int)):
            value = str(value)
        if not isinstance(value, str):
            return None
        return self.forms.get(normalise_label(value))

    def match_token(self, token: str) -> int | None:
        """Index of the label a token stands for: a form of it, or a prefix of one label's forms.

        Labels often span several tokens, so ``"pos"`` stands for ``"positive"``;
        a prefix shared by forms of two labels stands for none. A token without
        letters, digits or symbols (whitespace) stands for none.
        """
        norm = normalise_label(token)
        if not norm:
            return None
        if norm in self.forms:
            return self.forms[norm]
        prefixed = {index for form, index in self.forms.items() if form.startswith(norm)}
        return prefixed.pop() if len(prefixed) == 1 else None

    def match_start(self, text: object) -> int | None:
        """Index of the label a qualified answer starts with (``"True, with some caveats"``).

        The answer must start with a form of a label, followed by the end of
        the text, punctuation, or (for a form longer than one character) a
        space and more words; and the qualification must not name another
        label as the label set writes it (``"True for some, False for
        others"``; a lower-case ``"true"`` inside a sentence is a word, not a
        label). ``"True or False"`` and ``"A lot of …"`` (for a label ``"A"``)
        name no label.
        """
        if not isinstance(text, str):
            return None
        if self._start is None:
            self._start = re.compile(rf"[\W_]*({self.pattern()})(?![^\W_])", re.IGNORECASE)
        match = self._start.match(text)
        if match is None:
            return None
        index = self.forms.get(normalise_label(match.group(1)))
        rest = text[match.end() :]
        if index is None or (len(match.group(1)) == 1 and re.match(r"[ \t]+\w", rest)):
            return None
        joined = _JOINERS.match(rest)
        if joined is not None and self._start.match(rest[joined.end() :]) is not None:
            return None
        others = [name for name, i in self._written() if i != index]
        named = rf"(?<![^\W_])(?:{'|'.join(map(re.escape, others))})(?![^\W_])"
        if re.search(named, rest) is not None:
            return None
        return index

    def _written(self) -> list[tuple[str, int]]:
        """Each label and alias as written, with its label's index."""
        written = [(label, i) for i, label in enumerate(self.labels)]
        return written + [(alias, self.labels.index(t)) for alias, t in self.aliases.items()]

    def pattern(self) -> str:
        """A regex alternation of every written form, longest first."""
        forms = sorted(self.forms, key=len, reverse=True)
        return "|".join(re.escape(f).replace(r"\ ", r"[\W_]+") for f in forms)


def check_label_names(labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> list[str]:
    """Return ``labels`` as a list, or raise ConfigurationError if they cannot be told apart.

    Labels must be at least two non-empty strings that stay distinct when case,
    whitespace and punctuation are ignored; aliases must point to labels.

    Examples
    --------
    >>> check_label_names(("A", "B"))
    ['A', 'B']
    """
    return LabelSet(labels, aliases).labels
