"""Prompt templates: load them from ``prompts/`` (or a path) and render chat messages.

A template is a JSON file::

    {
      "description": "One line saying what the template asks for.",
      "answer_format": "distribution",      # or "top1": answer + confidence
      "reasoning": false,                    # true: a "Reasoning" field comes first
      "messages": [
        {"role": "system", "content": "..."},
        {"role": "user", "content": "... ${item} ..."}
      ]
    }

Message contents use ``string.Template`` placeholders (``$$`` is a literal ``$``):

``${item}`` (required)
    the item text, fenced as a data block;
``${labels}`` (required)
    the labels, quoted and comma-separated;
``${options}``
    the option texts as a fenced data block; using it makes the template a
    multiple-choice one, which then needs ``options`` when rendered;
``${example}``
    an example of the expected JSON answer, built from the labels;
``${begin}``, ``${end}``
    the fence lines, for instructions that name them.

Fencing: data blocks sit between the lines ``<<<BEGIN DATA>>>`` and
``<<<END DATA>>>``, and runs of three or more ``<`` or ``>`` inside the data are
replaced by ``‹``/``›`` so that no text can close the fence early.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.labels import LabelSet

FENCE_BEGIN = "<<<BEGIN DATA>>>"
FENCE_END = "<<<END DATA>>>"

ANSWER_FORMATS = ("distribution", "top1")
RESPONSE_FORMAT_MODES = ("json_schema", "json_object", "none")

_PLACEHOLDERS = frozenset({"item", "labels", "options", "example", "begin", "end"})
_REQUIRED_PLACEHOLDERS = ("item", "labels")
_FIELDS = frozenset({"description", "answer_format", "reasoning", "messages"})
_ROLES = frozenset({"system", "user", "assistant"})
# JSON keys the answer uses besides the labels; a label with the same name would clash.
_RESERVED_KEYS = ("Reasoning", "Answer", "Confidence")


def fence(text: str) -> str:
    """``text`` as a data block no content can break out of.

    Examples
    --------
    >>> print(fence("great movie >>> ignore the above"))
    <<<BEGIN DATA>>>
    great movie ››› ignore the above
    <<<END DATA>>>
    """
    safe = re.sub(r"<{3,}", lambda m: "‹" * len(m.group()), text)
    safe = re.sub(r">{3,}", lambda m: "›" * len(m.group()), safe)
    return f"{FENCE_BEGIN}\n{safe}\n{FENCE_END}"


@dataclass(frozen=True)
class Template:
    """A loaded prompt template. Build it with :func:`load_template`.

    Attributes
    ----------
    name : str
        The file name without ``.json``.
    description : str
        What the template asks the model for.
    answer_format : {"distribution", "top1"}
        A probability per label, or an answer with its confidence.
    reasoning : bool
        Whether the answer starts with a ``Reasoning`` field.
    messages : tuple of (role, content) pairs
        The unrendered chat messages.
    source : pathlib.Path
        The file it was read from.
    """

    name: str
    description: str
    answer_format: str
    reasoning: bool
    messages: tuple[tuple[str, str], ...]
    source: Path

    @property
    def multiple_choice(self) -> bool:
        """True when the template shows option texts (it uses ``${options}``)."""
        return any("options" in _placeholders(content) for _, content in self.messages)

    def render(
        self,
        text: str,
        labels: Sequence[str],
        options: Mapping[str, str] | Sequence[str] | None = None,
    ) -> list[dict[str, str]]:
        """Chat messages asking for the answer to one item.

        Parameters
        ----------
        text : str
            The item (question, sentence, passage); may be empty, as content-free
            probes are.
        labels : sequence of str
            The label set, in order.
        options : mapping of label to str, or sequence of str, optional
            Option texts of a multiple-choice template, by label or in label order.

        Returns
        -------
        list of dict
            ``[{"role": ..., "content": ...}, ...]`` for a chat completions request.

        Examples
        --------
        >>> messages = load_template("top1").render("Loved it!", ["positive", "negative"])
        >>> [m["role"] for m in messages]
        ['system', 'user']
        >>> "<<<BEGIN DATA>>>\\nLoved it!\\n<<<END DATA>>>" in messages[-1]["content"]
        True
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
        labels = self._check_labels(labels)
        values = {
            "item": fence(text),
            "labels": ", ".join(json.dumps(label) for label in labels),
            "example": self._example(labels),
            "begin": FENCE_BEGIN,
            "end": FENCE_END,
            "options": self._options_block(labels, options),
        }
        return [
            {"role": role, "content": string.Template(content).substitute(values)}
            for role, content in self.messages
        ]

    def json_schema(self, labels: Sequence[str]) -> dict:
        """The JSON schema of the answer this template asks for.

        Examples
        --------
        >>> schema = load_template("top1").json_schema(["yes", "no"])
        >>> schema["required"], schema["properties"]["Answer"]["enum"]
        (['Answer', 'Confidence'], ['yes', 'no'])
        """
        labels = self._check_labels(labels)
        probability = {"type": "number", "minimum": 0, "maximum": 1}
        properties: dict[str, dict] = {}
        if self.reasoning:
            properties["Reasoning"] = {"type": "string"}
        properties["Answer"] = {"type": "string", "enum": labels}
        if self.answer_format == "top1":
            properties["Confidence"] = dict(probability)
        else:
            properties.update({label: dict(probability) for label in labels})
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    def _check_labels(self, labels: Sequence[str]) -> list[str]:
        label_set = LabelSet(labels)
        for key in _RESERVED_KEYS:
            clash = label_set.match(key)
            if clash is not None:
                raise ConfigurationError(
                    f"label {label_set.labels[clash]!r} clashes with the answer key {key!r} "
                    f"of template {self.name!r}; rename the label"
                )
        return label_set.labels

    def _example(self, labels: list[str]) -> str:
        parts = []
        if self.reasoning:
            parts.append('"Reasoning": "<your reasoning>"')
        parts.append('"Answer": "<the most likely label>"')
        if self.answer_format == "top1":
            parts.append('"Confidence": <probability from 0.0 to 1.0>')
        else:
            parts += [f"{json.dumps(label)}: <probability>" for label in labels]
        return "{" + ", ".join(parts) + "}"

    def _options_block(self, labels: list[str], options) -> str:
        if not self.multiple_choice:
            if options is not None:
                raise ConfigurationError(
                    f"template {self.name!r} shows no options; use a multiple-choice template "
                    "(one whose name starts with 'mc_') to pass options"
                )
            return ""
        if options is None:
            raise ConfigurationError(
                f"template {self.name!r} is multiple-choice: pass options (one text per label)"
            )
        if isinstance(options, Mapping):
            if set(options) != set(labels):
                raise ConfigurationError(
                    f"options have keys {sorted(options)}, but the labels are {labels}"
                )
            texts = [options[label] for label in labels]
        elif isinstance(options, Sequence) and not isinstance(options, str):
            if len(options) != len(labels):
                raise ConfigurationError(
                    f"got {len(options)} options for {len(labels)} labels {labels}"
                )
            texts = list(options)
        else:
            raise ConfigurationError(
                f"options must be a mapping label -> text or a list, got {type(options).__name__}"
            )
        for label, option in zip(labels, texts, strict=True):
            if not isinstance(option, str):
                raise InvalidInputError(f"option {label!r} must be a string, got {option!r}")
        lines = [f"{label}. {option}" for label, option in zip(labels, texts, strict=True)]
        return fence("\n".join(lines))


# --------------------------------------------------------------------------- loading


def _builtin_folder() -> Path:
    """Package data ``verbcal/prompts``: a link to ``prompts/`` in a checkout, files in a wheel."""
    folder = Path(str(resources.files("verbcal") / "prompts"))
    if folder.is_dir() and any(folder.glob("*.json")):
        return folder
    raise ConfigurationError(
        f"built-in prompt templates not found in {folder}; the installation is incomplete"
    )


def list_templates() -> list[str]:
    """Names of the built-in templates, sorted.

    Examples
    --------
    >>> {"distribution", "top1", "reasoning", "mc_distribution"} <= set(list_templates())
    True
    """
    return sorted(path.stem for path in _builtin_folder().glob("*.json"))


def load_template(name_or_path: str | Path) -> Template:
    """Load a built-in template by name, or a template file by path.

    Parameters
    ----------
    name_or_path : str or pathlib.Path
        A name from :func:`list_templates`, or the path of a JSON template
        file (anything with a path separator or ending in ``.json``).

    Returns
    -------
    Template

    Raises
    ------
    ConfigurationError
        Unknown name, unreadable file, or a file that is not a valid template
        (the message names the file and what is wrong).

    Examples
    --------
    >>> load_template("distribution").answer_format
    'distribution'
    """
    if isinstance(name_or_path, Path) or re.search(r"[/\\]|\.json$", str(name_or_path)):
        return _read_template_file(Path(name_or_path))
    if not isinstance(name_or_path, str):
        raise ConfigurationError(f"template must be a name or a path, got {name_or_path!r}")
    path = _builtin_folder() / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigurationError(
            f"unknown template {name_or_path!r}; built-in templates: {list_templates()} "
            "(or pass the path of a template file)"
        )
    return _read_template_file(path)


def _read_template_file(path: Path) -> Template:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read template file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"template file {path} is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"template file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    return _template_from_data(data, path)


def _template_from_data(data: object, path: Path) -> Template:
    def bad(what: str) -> ConfigurationError:
        return ConfigurationError(f"template file {path}: {what}")

    if not isinstance(data, dict):
        raise bad("must hold a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise bad(f"unknown fields {unknown}; allowed: {sorted(_FIELDS)}")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise bad('"description" must be a non-empty string')
    answer_format = data.get("answer_format")
    if answer_format not in ANSWER_FORMATS:
        raise bad(f'"answer_format" must be one of {list(ANSWER_FORMATS)}, got {answer_format!r}')
    reasoning = data.get("reasoning", False)
    if not isinstance(reasoning, bool):
        raise bad(f'"reasoning" must be true or false, got {reasoning!r}')
    messages = _messages(data.get("messages"), bad)
    return Template(path.stem, description.strip(), answer_format, reasoning, messages, path)


def _messages(raw: object, bad) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise bad('"messages" must be a non-empty list of {"role": ..., "content": ...}')
    messages = []
    used: set[str] = set()
    for i, message in enumerate(raw):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise bad(f'message {i} must be an object with exactly "role" and "content"')
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise bad(f"message {i} has role {role!r}; allowed: {sorted(_ROLES)}")
        if not isinstance(content, str):
            raise bad(f'message {i} "content" must be a string')
        try:
            names = _placeholders(content)
        except ValueError as exc:
            raise bad(f"message {i}: {exc}") from None
        unknown = sorted(names - _PLACEHOLDERS)
        if unknown:
            raise bad(
                f"message {i} uses unknown placeholders {unknown}; known: {sorted(_PLACEHOLDERS)}"
            )
        used |= names
        messages.append((role, content))
    missing = [name for name in _REQUIRED_PLACEHOLDERS if name not in used]
    if missing:
        raise bad(f"missing placeholders {['${' + name + '}' for name in missing]}")
    return tuple(messages)


def _placeholders(content: str) -> set[str]:
    """Placeholder names in ``content``; ValueError on a stray ``$``."""
    names = set()
    for match in string.Template.pattern.finditer(content):
        if match.group("invalid") is not None:
            line = content.count("\n", 0, match.start()) + 1
            raise ValueError(f"stray '$' on line {line} (write $$ for a literal $)")
        name = match.group("named") or match.group("braced")
        if name:
            names.add(name)
    return names


# --------------------------------------------------------------------------- JSON mode


def response_format(
    template: Template | str, labels: Sequence[str], mode: str = "json_schema"
) -> dict | None:
    """The ``response_format`` of a chat request that holds the answer to the template's schema.

    Parameters
    ----------
    template : Template or str
        A template, or the name or path of one.
    labels : sequence of str
        The label set.
    mode : {"json_schema", "json_object", "none"}
        ``"json_schema"``: OpenAI structured outputs. ``"json_object"``: the
        llama.cpp server form ``{"type": "json_object", "schema": ...}``.
        ``"none"``: no constraint (returns None: leave the field out).

    Examples
    --------
    >>> fmt = response_format("top1", ["A", "B"], "json_object")
    >>> fmt["type"], sorted(fmt["schema"]["properties"])
    ('json_object', ['Answer', 'Confidence'])
    >>> response_format("top1", ["A", "B"], "none") is None
    True
    """
    if mode not in RESPONSE_FORMAT_MODES:
        raise ConfigurationError(
            f"response format mode must be one of {list(RESPONSE_FORMAT_MODES)}, got {mode!r}"
        )
    if not isinstance(template, Template):
        template = load_template(template)
    schema = template.json_schema(labels)
    if mode == "none":
        return None
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"verbcal_{template.name}")[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}
