"""Elicitation over real HTTP: Elicitor and ``verbcal elicit`` against the fault server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_server import FaultServer, expected_distribution, messages_key

from verbcal import BackendError
from verbcal.cli import main
from verbcal.elicit import Elicitor
from verbcal.elicit.backend import OpenAIBackend, RetryPolicy
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.circuit import EndpointDownError
from verbcal.elicit.templates import Template
from verbcal.predictions import Item, read_predictions

LABELS = ["positive", "negative"]
FAST_RETRY = RetryPolicy(max_attempts=12, backoff_initial=0.01, backoff_max=0.05)


def items(n: int) -> list[Item]:
    return [Item(id=f"i{k}", text=f"review number {k}", label=LABELS[k % 2]) for k in range(n)]


def elicit(server: FaultServer, todo, cache=None, elicitor_kwargs=None, **backend_kwargs):
    async def run():
        async with OpenAIBackend(
            "fault-model",
            base_url=server.base_url,
            cache=cache,
            retry=FAST_RETRY,
            timeout=backend_kwargs.pop("timeout", 2.0),
            **backend_kwargs,
        ) as backend:
            return await Elicitor(backend, LABELS, **(elicitor_kwargs or {})).arun(todo)

    return asyncio.run(run())


def test_predictions_equal_the_messages_stated_distribution():
    with FaultServer(labels=LABELS) as server:
        predictions, summary = elicit(server, items(5))
        stated = {
            tuple(expected_distribution(b["messages"], LABELS).values())
            for b in server.record.bodies
        }
    assert [p.id for p in predictions] == [f"i{k}" for k in range(5)]
    assert {p.status for p in predictions} == {"ok"}
    assert {tuple(p.probs.values()) for p in predictions} == stated
    assert summary.by_status == {"ok": 5}
    assert summary.backend["requests_sent"] == 5


def test_faults_at_a_high_rate_change_nothing_and_nothing_is_asked_twice(tmp_path):
    faults = {"429": 0.1, "500": 0.08, "503": 0.04, "drop": 0.05, "invalid_json": 0.04}
    with FaultServer(labels=LABELS) as clean:
        reference, _ = elicit(clean, items(150))
    cache = ResponseCache(tmp_path / "c.db")
    with FaultServer(labels=LABELS, faults=faults, seed=3, retry_after=0.01) as server:
        predictions, summary = elicit(server, items(150), cache=cache, max_concurrency=16)
        record = server.record
        assert max(record.answered.values()) == 1
        assert sum(record.outcomes[k] for k in ("429", "500", "503", "drop")) > 20
        again, summary_again = elicit(server, items(150), cache=cache)
        assert summary_again.backend["requests_sent"] == 0
        assert summary_again.backend["cache_hits"] == 150
    cache.close()
    assert [p.probs for p in predictions] == [p.probs for p in reference]
    assert [p.probs for p in again] == [p.probs for p in reference]
    assert summary.backend["retries_by_reason"]


def test_a_request_that_keeps_failing_is_reported_with_its_reason():
    # Without the circuit breaker every item is tried to the end and reported.
    with FaultServer(labels=LABELS, script=["500"] * 20) as server:
        predictions, summary = elicit(server, items(2), elicitor_kwargs={"circuit_breaker": False})
    assert [p.status for p in predictions] == ["failed", "failed"]
    assert "request failed (500)" in predictions[0].detail
    assert summary.by_status == {"failed": 2}


def test_an_endpoint_that_never_answers_stops_the_run():
    # With it (the default), 5xx only from the first attempt on stops the run.
    with (
        FaultServer(labels=LABELS, script=["500"] * 20) as server,
        pytest.raises(EndpointDownError, match="is not answering.*HTTP 500"),
    ):
        elicit(server, items(2))


def test_a_bad_api_key_stops_the_run():
    with (
        FaultServer(labels=LABELS, script=["401"]) as server,
        pytest.raises(BackendError, match="stopping the run.*401"),
    ):
        elicit(server, items(3))


def test_a_run_stopping_failure_stops_the_other_items():
    with FaultServer(labels=LABELS, script=["401"]) as server:  # later attempts would pass

        async def run():
            async with OpenAIBackend(
                "fault-model", base_url=server.base_url, max_concurrency=2
            ) as backend:
                with pytest.raises(BackendError, match="stopping the run"):
                    await Elicitor(backend, LABELS).arun(items(50))
                await asyncio.sleep(0.3)  # nothing goes on in the background

        asyncio.run(run())
        assert server.record.total <= 4


def test_items_are_prepared_as_slots_free_up(monkeypatch):
    rendered_before_first_answer: list[int] = []
    rendered = 0
    render = Template.render

    def counting_render(self, *args, **kwargs):
        nonlocal rendered
        rendered += 1
        return render(self, *args, **kwargs)

    def progress(done: int, total: int) -> None:
        if done == 1:
            rendered_before_first_answer.append(rendered)

    monkeypatch.setattr(Template, "render", counting_render)
    with FaultServer(labels=LABELS, latency=0.02) as server:

        async def run():
            async with OpenAIBackend("m", base_url=server.base_url, max_concurrency=3) as backend:
                return await Elicitor(backend, LABELS).arun(items(40), progress=progress)

        predictions, _ = asyncio.run(run())
    # At most twice the concurrency is in hand at once, and every item is answered in order.
    assert rendered_before_first_answer[0] <= 2 * 3
    assert [p.id for p in predictions] == [item.id for item in items(40)]
    assert {p.status for p in predictions} == {"ok"} and server.record.max_in_flight == 3


def test_unparseable_answers_are_failed_with_the_parsers_reason():
    with FaultServer(labels=["yes", "no"]) as server:  # states yes/no, we ask positive/negative
        predictions, summary = elicit(server, items(3))
    assert {p.status for p in predictions} == {"failed"}
    assert predictions[0].probs is None
    assert predictions[0].raw.startswith("{")
    assert summary.failure_reasons


def test_token_probabilities_use_the_label_aliases_the_parser_uses():
    """Issue 8: with aliases {"Yes": "True"}, a "Yes" answer token counts for True.

    The server states its answer and its first token's alternatives as "Yes"/"No".
    """
    aliases = {"Yes": "True", "No": "False"}

    async def run(server: FaultServer):
        async with OpenAIBackend("m", base_url=server.base_url, retry=FAST_RETRY) as backend:
            elicitor = Elicitor(backend, ["True", "False"], aliases=aliases, logprobs=True)
            return await elicitor.arun(items(4))

    with FaultServer(labels=["Yes", "No"]) as server:
        predictions, _ = asyncio.run(run(server))
    for prediction in predictions:
        assert prediction.status == "ok"
        # The first token's alternatives carry the stated distribution (95% of the mass,
        # renormalised), so the token probabilities equal the stated ones.
        assert prediction.token_probs == pytest.approx(prediction.probs, abs=1e-12)
        assert list(prediction.token_probs) == ["True", "False"]


def write_items(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for item in items(n):
            handle.write(json.dumps({"id": item.id, "text": item.text, "label": item.label}) + "\n")
    return path


def test_cli_elicit_writes_predictions_and_reruns_from_cache(tmp_path, capsys):
    source = write_items(tmp_path / "items.jsonl", 20)
    out = tmp_path / "preds.jsonl"
    with FaultServer(labels=LABELS) as server:
        argv = ["elicit", "--input", str(source), "--labels", "positive,negative"]
        argv += ["--model", "m", "--base-url", server.base_url, "--out", str(out), "--probes"]
        argv += ["--n-random-probes", "2"]
        assert main(argv) == 0
        first = server.record.total
        assert main(argv) == 0
        assert server.record.total == first  # the rerun asked nothing
    predictions = read_predictions(out)
    assert len(predictions) == 20 + 5
    assert [p.kind for p in predictions].count("content_free") == 5
    line = json.loads(out.read_text().splitlines()[0])
    assert {"id", "probs", "status", "raw", "usage", "label", "labels"} <= set(line)
    err = capsys.readouterr().err
    assert "items: 20 items" in err and "requests sent 0, cache hits 20," in err
    assert "content-free probes: 5 items" in err and "requests sent 0, cache hits 5," in err


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"id": 1, "text": "a"}\nnot json\n', "line 2: not valid JSON"),
        ('{"id": 1, "txt": "a"}\n', "line 1: no text field 'text'"),
        ('{"id": 1, "text": "a", "label": "maybe"}\n', "line 1: label 'maybe' is not one of"),
        ("", "has no items"),
    ],
)
def test_cli_elicit_reports_bad_input_with_line_numbers(tmp_path, capsys, content, match):
    source = tmp_path / "items.jsonl"
    source.write_text(content)
    argv = ["elicit", "--input", str(source), "--labels", "positive,negative", "--model", "m"]
    argv += ["--base-url", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "p.jsonl")]
    assert main(argv) == 2
    assert match in capsys.readouterr().err


def test_cli_elicit_with_probes_prints_the_item_summary_and_the_probe_summary(tmp_path):
    """Issue 8: with --probes, the probe summary ("8 items") was printed instead of the items'."""
    source = write_items(tmp_path / "items.jsonl", 40)
    with FaultServer(labels=LABELS) as server:
        argv = [sys.executable, "-m", "verbcal.cli", "elicit", "--input", str(source)]
        argv += ["--labels", "positive,negative", "--model", "m", "--base-url", server.base_url]
        argv += ["--out", str(tmp_path / "preds.jsonl"), "--probes", "--n-random-probes", "5"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("\r")]
    items_at = next(i for i, line in enumerate(lines) if line.startswith("items: "))
    probes_at = next(i for i, line in enumerate(lines) if line.startswith("content-free probes: "))
    assert re.match(r"items: 40 items in [\d.]+ s: ok 40$", lines[items_at])
    assert lines[items_at + 1].startswith("requests sent 40, cache hits 0,")
    assert re.match(r"content-free probes: 8 items in [\d.]+ s: ok 8$", lines[probes_at])
    assert lines[probes_at + 1].startswith("requests sent 8, cache hits 0,")
    assert "wrote 48 predictions" in done.stdout


def committed_message_keys(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT request FROM responses").fetchall()
    return {messages_key(json.loads(row[0])["messages"]) for row in rows}


def test_kill_minus_9_mid_run_then_resume_asks_nothing_twice(tmp_path):
    source = write_items(tmp_path / "items.jsonl", 500)
    out, cache = tmp_path / "preds.jsonl", tmp_path / "cache.db"
    with FaultServer(labels=LABELS, latency=0.02, faults={"500": 0.1}, retry_after=0.01) as server:
        argv = [sys.executable, "-m", "verbcal.cli", "elicit", "--input", str(source)]
        argv += ["--labels", "positive,negative", "--model", "m", "--base-url", server.base_url]
        argv += ["--out", str(out), "--cache", str(cache), "--concurrency", "8"]
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while sum(server.record.answered.values()) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        answered_before = dict(server.record.answered)
        assert 100 <= len(answered_before) < 500, "the kill should land mid-run"
        assert not out.exists()
        saved = committed_message_keys(cache)
        # Answers in flight when the process died were sent but never received: at most one
        # per concurrent request. Every answer that was received is on disk.
        assert len(saved) >= len(answered_before) - 8
        assert main(argv[3:]) == 0
        asked_again = {k for k, n in server.record.answered.items() if n > 1}
        assert not asked_again & saved  # nothing that was on disk was asked again
        assert len(asked_again) <= 8
        assert len(server.record.answered) == 500
    predictions = read_predictions(out)
    assert len(predictions) == 500
    assert all(p.status == "ok" for p in predictions)
