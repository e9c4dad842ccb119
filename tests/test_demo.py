"""``verbcal demo --replay``: the shipped recording, end to end, with no server."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

import verbcal.demo
from verbcal.cli import main
from verbcal.data import load_demo_dataset
from verbcal.demo import (
    DEMO_METHODS,
    ELICIT_SETTINGS,
    LIVE_EVERY,
    SIGNAL_SETTINGS,
    SIGNALS_EVERY,
    SIGNALS_PROVENANCE,
    chance_line,
    demo_items,
    load_demo_signals,
    recording_provenance,
    run_demo,
)
from verbcal.predictions import to_arrays
from verbcal.workflow import evaluate


def test_recording_carries_its_provenance():
    provenance = recording_provenance()
    for field in ("model", "model_file", "model_sha256", "server", "base_url", "recorded"):
        assert provenance[field], field
    assert len(provenance["model_sha256"]) == 64
    assert provenance["settings"] == ELICIT_SETTINGS
    assert provenance["command"] == ".venv/bin/python scripts/record_demo.py"
    assert provenance["responses"] == len(demo_items()) + 23
    assert provenance["accuracy"] >= 0.75


def test_replay_runs_in_seconds_and_calibration_lowers_held_out_ece(tmp_path):
    started = time.perf_counter()
    result = run_demo(tmp_path, replay=True, log=lambda line: None)
    assert time.perf_counter() - started < 30
    before = result.evaluation["uncalibrated"]["ece"][0]
    after = result.evaluation["auto"]["ece"][0]
    assert after < before - 0.05, (before, after)
    assert set(result.evaluation) == {"uncalibrated", *DEMO_METHODS}
    assert result.threshold is not None and result.threshold.positive == "positive"
    html = result.report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "qwen2.5" in html
    assert result.report.stat().st_size < 2 * 1024 * 1024
    lines = result.predictions.read_text().splitlines()
    assert len(lines) == len(demo_items()) + 23
    assert all(json.loads(line)["usage"]["from_cache"] for line in lines)


def test_cli_demo_replay(tmp_path, capsys):
    assert main(["demo", "--replay", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out
    digest = hashlib.sha256((tmp_path / "predictions.jsonl").read_bytes()).hexdigest()
    assert main(["demo", "--replay", "--out-dir", str(tmp_path / "again")]) == 0
    again = hashlib.sha256((tmp_path / "again" / "predictions.jsonl").read_bytes()).hexdigest()
    assert digest == again  # a replay is deterministic


def test_replay_and_base_url_exclude_each_other(tmp_path, capsys):
    code = main(["demo", "--replay", "--base-url", "http://127.0.0.1:9/v1", "--out-dir", "x"])
    assert code == 2 and "exclude each other" in capsys.readouterr().err


def test_demo_items_are_a_stratified_half():
    everything, half = load_demo_dataset(), demo_items()
    groups = Counter((r["label"], r["phenomenon"], r["difficulty"]) for r in everything)
    assert len(half) == sum((count + 1) // 2 for count in groups.values())
    assert {i.id for i in half} <= {r["id"] for r in everything}
    positive = sum(i.label == "positive" for i in half) / len(half)
    assert 0.45 <= positive <= 0.55
    quarter = demo_items(every=LIVE_EVERY)  # what the live demo asks: inside the recording
    assert {i.id for i in quarter} < {i.id for i in half}
    assert 0.45 <= sum(i.label == "positive" for i in quarter) / len(quarter) <= 0.55


def test_console_says_when_the_model_is_at_chance():
    y = np.array([0, 1] * 50)
    coin = np.tile([[0.5, 0.5]], (100, 1))
    coin[::3] = [0.6, 0.4]
    assert "AT CHANCE" in chance_line(evaluate(coin, y, n_boot=100), y)
    good = np.where(y[:, None] == np.arange(2), 0.9, 0.1)
    assert "above chance" in chance_line(evaluate(good, y, n_boot=100), y)


def test_replay_console_prints_accuracy_and_nll_beside_ece(tmp_path):
    lines: list[str] = []
    run_demo(tmp_path, replay=True, log=lines.append)
    metric_lines = [line for line in lines if line.startswith(("uncalibrated", "auto"))]
    assert len(metric_lines) == 2
    assert all("accuracy" in line and "NLL" in line and "ECE" in line for line in metric_lines)
    assert "change" in metric_lines[1]
    assert any("chance" in line for line in lines)


def test_multi_signal_recording_carries_every_signal_and_its_provenance():
    provenance = json.loads(
        (Path(verbcal.demo.__file__).parent / "data" / SIGNALS_PROVENANCE).read_text()
    )
    assert provenance["settings"] == SIGNAL_SETTINGS
    assert provenance["model_sha256"] == recording_provenance()["model_sha256"]
    predictions = load_demo_signals()
    items = [p for p in predictions if p.kind == "item"]
    assert provenance["reviews_subset"] == f"verbcal.demo.demo_items(every={SIGNALS_EVERY})"
    assert [p.id for p in items] == [i.id for i in demo_items(every=SIGNALS_EVERY)]
    assert len(predictions) - len(items) == provenance["content_free_probes"] > 0
    scored = [p for p in items if p.probs is not None]
    assert len(scored) == provenance["parsed"]
    correct = sum(max(p.probs, key=p.probs.__getitem__) == p.label for p in scored)
    assert round(correct / len(items), 4) == provenance["accuracy"]
    # each parsed item keeps its 3 samples (their average is probs) and the first one's tokens
    assert sum(p.token_probs is not None for p in items) == provenance["with_token_probs"]
    assert provenance["with_token_probs"] >= 0.9 * len(items)
    for p in scored:
        assert 1 <= len(p.samples or [None]) <= 3
        assert all(set(s) == set(p.labels) for s in p.samples or [])
    arrays = to_arrays(predictions)
    assert arrays.token_probs is not None and arrays.samples is not None
