"""Predictions JSONL files made from the recorded llm-confidence answers, for CLI tests."""

from __future__ import annotations

from pathlib import Path

from recorded import load_recorded_task, stated_distribution

from verbcal.predictions import Prediction, write_predictions


def recorded_predictions(task_file: Path) -> list[Prediction]:
    """One prediction per recorded answer: the source's reading, or failed when it had none."""
    task = load_recorded_task(task_file)
    out = []
    for record in task.records:
        row = stated_distribution(record) if record.get("parsed_ok") else None
        probs = None if row is None else dict(zip(task.labels, map(float, row), strict=True))
        out.append(
            Prediction(
                id=str(record["id"]),
                labels=task.labels,
                probs=probs,
                status="failed" if probs is None else "ok",
                detail="" if probs is not None else "the source could not read it",
                raw=record["raw"],
                label=record["gold"],
            )
        )
    return out


def write_recorded_predictions(task_file: Path, out: Path) -> Path:
    write_predictions(out, recorded_predictions(task_file))
    return out
