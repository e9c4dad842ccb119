"""The labelled demo dataset shipped with verbcal: short reviews with a sentiment label.

372 product, movie, restaurant and app reviews, written for this project, each
labelled ``negative`` or ``positive``; most are deliberately hard (sarcasm,
mixed verdicts, negation, faint praise, ...). ``DATACARD.md`` beside this file
says how it was written, how it is labelled and what it is for.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from verbcal.errors import VerbcalError
from verbcal.predictions import parse_jsonl

#: The two labels of the demo dataset, in the column order of a probability matrix.
DEMO_LABELS = ("negative", "positive")

_FILENAME = "demo_reviews.jsonl"


def demo_dataset_path() -> Path:
    """Path of the packaged ``demo_reviews.jsonl`` file (one JSON object a line).

    Returns
    -------
    pathlib.Path
        The file inside the installed ``verbcal.data`` package.

    Raises
    ------
    VerbcalError
        If verbcal is imported from a zip archive, where the file has no path of
        its own; ``load_demo_dataset`` still works there.

    Examples
    --------
    >>> demo_dataset_path().name
    'demo_reviews.jsonl'
    """
    resource = resources.files(__name__).joinpath(_FILENAME)
    if not isinstance(resource, Path):
        raise VerbcalError(
            f"the demo dataset is inside an archive ({resource}) and has no file path; "
            "use load_demo_dataset() to read it"
        )
    return resource


def load_demo_dataset() -> list[dict]:
    """Read the demo dataset, one dict per review, in file order.

    Returns
    -------
    list of dict
        Each dict has the keys ``id`` (``"r0001"``, ...), ``text``, ``label``
        (one of ``DEMO_LABELS``), ``difficulty`` (``"easy"`` or ``"hard"``),
        ``phenomenon`` (``"plain"``, ``"sarcasm"``, ``"mixed"``, ...) and
        ``domain`` (``"product"``, ``"movie"``, ``"restaurant"`` or ``"app"``).
        The order is a fixed shuffle, so any contiguous half mixes labels,
        difficulties and domains.

    Examples
    --------
    >>> rows = load_demo_dataset()
    >>> len(rows)
    372
    >>> rows[0]["id"], rows[0]["label"] in DEMO_LABELS
    ('r0001', True)
    >>> y = [DEMO_LABELS.index(row["label"]) for row in rows]
    """
    text = resources.files(__name__).joinpath(_FILENAME).read_text(encoding="utf-8")
    return [row for _, row in parse_jsonl(text, source=_FILENAME)]
