"""Read the recorded LLM answers of ``shared/data/llm-confidence`` into arrays.

Used by tests, benchmarks and notebooks. The data folder is not part of the
package; ``find_recorded_data`` looks for it beside the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verbcal.predictions import read_jsonl

#: Environment variable that points at a ``llm-confidence`` folder elsewhere.
DATA_ENV = "VERBCAL_RECORDED_DATA"


@dataclass
class RecordedTask:
    """One (task, model) file as arrays: rows the source parser read, renormalised."""

    name: str
    labels: list[str]
    P: np.ndarray  # (n, K) stated probabilities, rows renormalised
    y: np.ndarray  # (n,) gold class index
    records: list[dict] = field(repr=False)  # every line of the file, parsed or not
    kept: np.ndarray = field(repr=False)  # indices into records of the rows in P


def find_recorded_data() -> Path | None:
    """The ``llm-confidence`` folder, or None when it is not on this machine."""
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    repo = Path(__file__).resolve().parent.parent
    candidates.append(repo.parent / "shared" / "data" / "llm-confidence")
    for path in candidates:
        if path.is_dir() and any(path.glob("*.jsonl")):
            return path
    return None


def stated_distribution(record: dict) -> np.ndarray | None:
    """The source's reading of one record as a renormalised row, or None.

    Multiple choice: the ``verbalized`` per-option values. BoolQ: ``confidence``
    on the stated ``answer`` and the rest on the other label.
    """
    labels = record["labels"]
    if record.get("verbalized"):
        row = np.array([float(record["verbalized"].get(lab) or 0.0) for lab in labels])
    elif record.get("confidence") is not None and record.get("answer") in labels:
        conf = float(record["confidence"])
        if not 0.0 <= conf <= 1.0:
            return None
        row = np.full(len(labels), (1.0 - conf) / (len(labels) - 1))
        row[labels.index(record["answer"])] = conf
    else:
        return None
    total = row.sum()
    if not np.isfinite(total) or total <= 0 or (row < 0).any():
        return None
    # Round away float noise (1 - 0.7 is 0.30000000000000004) so equal stated values stay equal.
    return np.round(row / total, 12)


def load_recorded_task(path: Path) -> RecordedTask:
    """Load one ``TASK__MODEL.jsonl`` file."""
    records = [record for _, record in read_jsonl(path)]
    labels = records[0]["labels"]
    rows, gold, kept = [], [], []
    for i, record in enumerate(records):
        row = stated_distribution(record) if record.get("parsed_ok") else None
        if row is None or record["gold"] not in labels:
            continue
        rows.append(row)
        gold.append(labels.index(record["gold"]))
        kept.append(i)
    return RecordedTask(
        name=Path(path).stem,
        labels=labels,
        P=np.array(rows),
        y=np.array(gold, dtype=np.int64),
        records=records,
        kept=np.array(kept, dtype=np.int64),
    )


def load_recorded_tasks(folder: Path | None = None) -> list[RecordedTask]:
    """Every file of the folder, sorted by name (empty when the folder is absent)."""
    folder = folder or find_recorded_data()
    if folder is None:
        return []
    return [load_recorded_task(p) for p in sorted(Path(folder).glob("*.jsonl"))]
