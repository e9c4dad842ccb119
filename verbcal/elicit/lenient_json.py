"""Read JSON objects out of model text, leniently: JSON as models write it.

:func:`json_objects` finds every top-level object in a text (prose and code
fences around them are ignored). Strict JSON is read by the standard library;
anything else by a small recursive-descent reader that accepts single quotes,
unquoted keys and values, trailing commas, Python literals, stray backslashes,
line breaks and unescaped quotes inside strings, and names each leniency it
needed so the caller can report it.

An object the text cuts off (a reply that hit its token limit) is returned
with what it holds up to the cut: the members whose values are complete.
:class:`FoundObject` says whether it was cut, and whether its last value is a
bare number that runs into the end of the text and may be the start of a
longer one, which the caller must confirm some other way: a whole number
(``5`` may be ``50``) or one with a single decimal (``0.1`` may be ``0.15``).
Numbers with two or more decimals (``0.05``) are taken as written: stated
probabilities rarely carry more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["MAX_DEPTH", "NUMBER", "NUMBER_RE", "FoundObject", "json_objects"]

#: A number as models write it (sign, integer or decimal part, exponent).
NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
NUMBER_RE = re.compile(NUMBER)

#: Deepest nesting read; deeper texts are not JSON a model means.
MAX_DEPTH = 64
# At most this many "{" positions are tried, so pathological texts stay fast.
_MAX_OBJECT_STARTS = 200


# A number that may be complete if nothing follows it: no trailing "." or exponent sign;
# with two or more decimals and no exponent, it is taken as complete.
_COMPLETE_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?")
_PRECISE_NUMBER = re.compile(r"[+-]?\d*\.\d{2,}")


@dataclass
class FoundObject:
    """One JSON object found in a text.

    Attributes
    ----------
    value : dict
        The object (for a cut-off object: its complete members).
    leniencies : list of str
        The departures from JSON needed to read it ("single-quoted strings"…).
    cut : bool
        The text ends inside the object.
    open_end : bool
        The last value kept is a bare number that runs into the end of the
        text and may be cut short (fewer than two decimals).
    """

    value: dict
    leniencies: list[str] = field(default_factory=list)
    cut: bool = False
    open_end: bool = False


class _JsonishError(Exception):
    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


# A quote ends a string only when what follows looks like JSON structure: this lets
# `"at 6'0", Allen"` stay inside the string while `"x",\n "B": 1` closes it.
_CLOSES_STRING = re.compile(r"\s*(?:$|[:}\]]|,\s*(?:$|[\"'}\]]|[\w -]+\s*:))")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_LITERALS = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}
_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


class _LenientReader:
    """Recursive-descent reader for JSON as models write it; records each leniency used."""

    def __init__(self, text: str, pos: int):
        self.text = text
        self.pos = pos
        self.leniencies: list[str] = []
        self.cut = False  # the text ended inside an object
        self.open_end = False  # the last value kept is a number running into the end
        self._ran_out = False  # the value just read is a number running into the end

    def _note(self, what: str) -> None:
        if what not in self.leniencies:
            self.leniencies.append(what)

    def _skip_space(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        if self.pos >= len(self.text):
            raise _JsonishError("text ends inside a JSON value", truncated=True)
        return self.text[self.pos]

    def value(self, depth: int = 0) -> object:
        if depth > MAX_DEPTH:
            raise _JsonishError("nested too deeply")
        ch = self._skip_space()
        if ch == "{":
            return self._object(depth)
        if ch == "[":
            return self._array(depth)
        if ch in "\"'":
            return self._string()
        return self._bare(stop=",}]\n")

    def _object(self, depth: int) -> dict:
        """An object; when the text ends inside it, its complete members (and ``cut`` is set)."""
        self.pos += 1
        result: dict = {}
        try:
            while self._skip_space() != "}":
                ch = self.text[self.pos]
                if ch in "\"'":
                    key = self._string()
                else:
                    key = self._word(stop=":,}\n")
                    self._note("unquoted keys")
                if self._skip_space() not in ":=":
                    raise _JsonishError("missing ':' after an object key")
                self.pos += 1
                self._ran_out = False
                value = self.value(depth + 1)
                result[key] = value
                if self._ran_out:
                    self.open_end = True
                self._after_item("}")
        except _JsonishError as exc:
            if not exc.truncated:
                raise
            self.cut = True
            return result
        self.pos += 1
        return result

    def _array(self, depth: int) -> list:
        self.pos += 1
        result = []
        while self._skip_space() != "]":
            result.append(self.value(depth + 1))
            self._after_item("]")
        self.pos += 1
        return result

    def _after_item(self, closer: str) -> None:
        ch = self._skip_space()
        if ch == ",":
            self.pos += 1
            if self._skip_space() == closer:
                self._note("trailing commas")
        elif ch != closer:
            raise _JsonishError(f"expected ',' or {closer!r}, found {ch!r}")

    def _string(self) -> str:
        quote = self.text[self.pos]
        if quote == "'":
            self._note("single-quoted strings")
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\":
                out.append(self._escape())
            elif ch == quote and _CLOSES_STRING.match(self.text, self.pos):
                return "".join(out)
            else:
                if ch == quote:
                    self._note("unescaped quotes inside strings")
                elif ch in "\n\r":
                    self._note("line breaks inside strings")
                out.append(ch)
        raise _JsonishError("text ends inside a string", truncated=True)

    def _escape(self) -> str:
        ch = self.text[self.pos : self.pos + 1]
        if ch in _ESCAPES:
            self.pos += 1
            return _ESCAPES[ch]
        digits = self.text[self.pos + 1 : self.pos + 5]
        if ch == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", digits):
            self.pos += 5
            return chr(int(digits, 16))
        self._note("invalid backslash escapes")
        return "\\"

    def _word(self, stop: str, *, to_end: bool = False) -> str:
        """The unquoted text up to the next character in ``stop`` (or the end), stripped."""
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        if self.pos >= len(self.text) and not to_end:
            raise _JsonishError("text ends inside a value", truncated=True)
        word = self.text[start : self.pos].strip()
        if not word:
            raise _JsonishError(f"expected a name or value at position {start}")
        return word

    def _bare(self, stop: str) -> object:
        """A number, literal or unquoted string value.

        A value the text ends in is kept only when it is a complete number
        (``0.05``, not ``0.`` or ``1e``); ``_ran_out`` is set when it has fewer
        than two decimals, so it may be the start of a longer number.
        """
        word = self._word(stop, to_end=True)
        if self.pos >= len(self.text):
            if not _COMPLETE_NUMBER.fullmatch(word):
                raise _JsonishError("text ends inside a value", truncated=True)
            self._ran_out = not _PRECISE_NUMBER.fullmatch(word)
        if re.fullmatch(r"[+-]?\d{1,300}", word):
            return int(word)
        if NUMBER_RE.fullmatch(word):
            return float(word)
        if word in _LITERALS:
            return _LITERALS[word]
        if word in _PYTHON_LITERALS:
            self._note("Python literals")
            return _PYTHON_LITERALS[word]
        if word[0] in "{[\"'":
            raise _JsonishError(f"malformed value {word[:20]!r}")
        self._note("unquoted string values")
        return word


def json_objects(text: str) -> list[FoundObject]:
    """Every top-level JSON object in ``text``, in order, read as leniently as needed.

    Examples
    --------
    >>> [found.value for found in json_objects('Sure: {"A": 0.2, "B": 0.8} and {C: 1}')]
    [{'A': 0.2, 'B': 0.8}, {'C': 1}]
    >>> found = json_objects('{"A": 0.25, "B": 0.75')[0]
    >>> found.value, found.cut, found.open_end
    ({'A': 0.25, 'B': 0.75}, True, False)
    >>> json_objects('{"A": 0.2, "B": 0.8')[0].open_end  # 0.8 may be the start of 0.85
    True
    """
    decoder = json.JSONDecoder()
    objects: list[FoundObject] = []
    pos = 0
    for _ in range(_MAX_OBJECT_STARTS):
        start = text.find("{", pos)
        if start < 0:
            break
        try:
            obj, pos = decoder.raw_decode(text, start)
            objects.append(FoundObject(obj))
            continue
        except (ValueError, RecursionError):
            pass
        reader = _LenientReader(text, start)
        try:
            obj = reader._object(0)  # text[start] is "{"
        except _JsonishError:
            pos = start + 1
            continue
        pos = reader.pos
        objects.append(FoundObject(obj, reader.leniencies, reader.cut, reader.open_end))
    return objects
