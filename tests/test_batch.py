"""Batch jobs (``verbcal elicit --batch``, ``verbcal batch …``) against a loopback Batch API.

The server (``tests/batch_server.py``) implements OpenAI's Files and Batches
endpoints as documented, behind the real ``openai`` SDK over real HTTP; the
rules it enforces cite their sources there. Here: the request files respect
the limits (50,000 requests, 200 MB: openai-python ``types/batch_create_params.py``),
a batch run fills the cache exactly like an interactive run, failures are
re-queued (or not), and a CLI killed with SIGKILL at every stage resumes with
no request line in two batches.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_server import BatchServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verbcal.cli import main
from verbcal.elicit.batch import BatchJobs, CollectSummary, classify_result_line
from verbcal.elicit.batch_records import MAX_FILE_BYTES, MAX_FILE_REQUESTS, BatchRecords
from verbcal.elicit.cache import SCHEMA_VERSION, ResponseCache, encode_request
from verbcal.errors import BackendError, ConfigurationError

LABELS = "negative,positive"


def write_items(path: Path, n: int, offset: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(offset, offset + n):
            label = "positive" if i % 2 else "negative"
            f.write(json.dumps({"id": f"r{i}", "text": f"review {i}: it was ok", "label": label}))
            f.write("\n")
    return path


def elicit_args(tmp_path: Path, server: BatchServer, *extra: str, out="preds.jsonl", cache="c.db"):
    return [
        "elicit",
        "--input",
        str(tmp_path / "items.jsonl"),
        "--labels",
        LABELS,
        "--model",
        "m",
        "--base-url",
        server.base_url,
        "--out",
        str(tmp_path / out),
        "--cache",
        str(tmp_path / cache),
        "--batch-poll",
        "0.02",
        *extra,
    ]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cache_rows(path: Path) -> dict[str, tuple[str, dict]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT key, request, response FROM responses").fetchall()
    return {key: (request, json.loads(response)) for key, request, response in rows}


# ---------------------------------------------------------------- files under the limits


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=60),
    max_requests=st.integers(1, 12),
    extra_bytes=st.integers(0, 900),
)
def test_request_files_stay_under_both_limits_and_hold_each_request_once(
    tmp_path_factory, sizes, max_requests, extra_bytes
):
    folder = tmp_path_factory.mktemp("files")
    max_bytes = 520 + extra_bytes  # at least one line (about 150-510 bytes) fits
    requests = []
    for i, size in enumerate(sizes):
        body = {"model": "m", "messages": [{"role": "user", "content": "é" * (size // 2) + str(i)}]}
        key, text = encode_request({"base_url": "http://127.0.0.1:9/v1", **body})
        requests.append((key, text, body))
    with ResponseCache(folder / "c.db") as cache:
        jobs = BatchJobs(cache, max_requests=max_requests, max_bytes=max_bytes)
        summary = jobs.build(requests, "http://127.0.0.1:9/v1")
        again = jobs.build(requests, "http://127.0.0.1:9/v1")  # nothing goes out twice
        files = jobs.records.files()
        jobs.close()
    distinct = {key for key, _, _ in requests}
    assert summary.added == len(distinct) and again.added == 0
    assert again.already_out == len(requests)
    seen = []
    for f in files:
        data = Path(f.path).read_bytes()
        lines = data.decode().splitlines()
        assert f.state == "built" and len(lines) == f.n_requests <= max_requests
        assert len(data) == f.n_bytes <= max_bytes
        for line in lines:
            row = json.loads(line)
            assert row["method"] == "POST" and row["url"] == "/v1/chat/completions"
            key, _ = encode_request({"base_url": "http://127.0.0.1:9/v1", **row["body"]})
            assert key == row["custom_id"]  # the line's custom_id is the cache key of its body
            seen.append(key)
    assert sorted(seen) == sorted(distinct)


def test_the_documented_limits_are_the_defaults(tmp_path):
    assert (MAX_FILE_REQUESTS, MAX_FILE_BYTES) == (50_000, 200_000_000)
    with ResponseCache(tmp_path / "c.db") as cache:
        jobs = BatchJobs(cache, max_bytes=100)
        body = {"model": "m", "messages": [{"role": "user", "content": "x" * 200}]}
        with pytest.raises(Exception, match="over the 100-byte file limit"):
            jobs.build([("k", "{}", body)], "http://127.0.0.1:9/v1")
        assert jobs.records.files() == []  # nothing half-written is recorded
        jobs.close()
    with pytest.raises(ConfigurationError, match="on-disk"):
        BatchRecords(ResponseCache(":memory:"))


def test_a_cache_written_before_the_batch_tables_opens_and_reads(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the schema of version 1
        conn.execute(
            "CREATE TABLE responses (key TEXT PRIMARY KEY, request TEXT NOT NULL, "
            "response TEXT NOT NULL, created REAL NOT NULL)"
        )
        key, text = encode_request({"model": "m", "seed": 1})
        conn.execute("INSERT INTO responses VALUES (?, ?, ?, 0)", (key, text, '{"a": 1}'))
    with ResponseCache(path) as cache:
        assert cache.get({"model": "m", "seed": 1}) == {"a": 1}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"responses", "batch_files", "batch_requests"} <= tables


def test_requests_to_retry_are_paged_once_each_while_being_moved(tmp_path):
    base_url = "http://127.0.0.1:9/v1"
    requests = []
    for i in range(25):
        body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
        requests.append((*encode_request({"base_url": base_url, **body}), body))
    with ResponseCache(tmp_path / "c.db") as cache:
        jobs = BatchJobs(cache, max_requests=10)
        jobs.build(requests, base_url)
        keys = [key for key, _, _ in requests]
        jobs.records.set_request_states([("retry", "expired", key) for key in keys[:-3]])
        seen = []
        for page in jobs.records.retry_pages(max_attempts=3, page=4):
            assert len(page) <= 4
            seen += [key for key, _, url in page if url == base_url]
            jobs.records.set_request_states([("pending", None, key) for key, _, _ in page])
        jobs.close()
    assert seen == keys[:-3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-poll", "0"], "--batch-poll must be a positive number"),
        (["--batch-max-requests", "0"], "max_requests must be an int >= 1"),
        (["--batch-max-bytes", "10"], "over the 10-byte file limit"),
    ],
)
def test_bad_batch_options_are_refused_before_anything_is_sent(tmp_path, capsys, extra, message):
    write_items(tmp_path / "items.jsonl", 3)
    with BatchServer() as server:
        assert main(elicit_args(tmp_path, server, "--batch", *extra)) == 2
        assert message in capsys.readouterr().err
        assert server.record.uploads == 0 and server.record.chat_requests == 0


# ---------------------------------------------------------------- result lines


@pytest.mark.parametrize(
    ("row", "verdict", "detail"),
    [
        ({"response": None, "error": {"code": "batch_expired", "message": "late"}}, "retry", "ba"),
        ({"response": None, "error": {"code": "batch_cancelled", "message": "x"}}, "failed", "ba"),
        ({"response": None, "error": {"code": "request_timeout", "message": "x"}}, "retry", "re"),
        ({"response": {"status_code": 500, "body": {"error": {"message": "oops"}}}}, "retry", "HT"),
        ({"response": {"status_code": 429, "body": {"error": {"message": "slow"}}}}, "retry", "HT"),
        ({"response": {"status_code": 400, "body": {"error": {"message": "bad"}}}}, "failed", "HT"),
        (
            {"response": {"status_code": 429, "body": {"error": {"code": "insufficient_quota"}}}},
            "failed",
            "HT",
        ),
        ({"response": {"status_code": 200, "body": {"choices": []}}}, "retry", "ma"),
        ({"response": {"status_code": 200, "body": "not json"}}, "retry", "ma"),
        ({"custom_id": "x"}, "retry", "th"),
        ([1, 2], "retry", "th"),
    ],
)
def test_result_lines_are_classified(row, verdict, detail):
    got, why = classify_result_line(row)
    assert got == verdict and why.startswith(detail)


def test_an_answer_line_gives_its_body():
    body = {"choices": [{"message": {"role": "assistant", "content": "{}"}}]}
    assert classify_result_line({"response": {"status_code": 200, "body": body}}) == ("ok", body)


OUTCOMES = (
    "ok",
    "ok_twice",
    "ok_and_500",
    "500",
    "429",
    "400",
    "expired",
    "cancelled",
    "malformed",
    "none",
)


def result_line(key: str, outcome: str, n: int) -> list[str]:
    """The lines a provider may write for one request (BatchRequestOutput, in any order)."""
    answer = {"choices": [{"message": {"role": "assistant", "content": f"answer {n}"}}]}

    def line(response, error=None):
        return json.dumps({"id": f"r{n}", "custom_id": key, "response": response, "error": error})

    if outcome == "ok":
        return [line({"status_code": 200, "request_id": "q", "body": answer})]
    if outcome == "ok_twice":
        other = {"choices": [{"message": {"role": "assistant", "content": "second"}}]}
        return [
            line({"status_code": 200, "body": answer}),
            line({"status_code": 200, "body": other}),
        ]
    if outcome == "ok_and_500":  # in either order: the answer stands
        return result_line(key, "ok", n) + result_line(key, "500", n)
    if outcome in ("500", "429", "400"):
        return [line({"status_code": int(outcome), "body": {"error": {"message": "no"}}})]
    if outcome in ("expired", "cancelled"):
        return [line(None, {"code": f"batch_{outcome}", "message": "not run"})]
    if outcome == "malformed":
        return [line({"status_code": 200, "body": {"choices": []}})]
    return []


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=40),
    foreign=st.integers(0, 3),
    garbage=st.integers(0, 2),
    order=st.randoms(use_true_random=False),
)
def test_collected_results_put_each_request_in_exactly_one_state(
    tmp_path_factory, outcomes, foreign, garbage, order
):
    folder = tmp_path_factory.mktemp("ingest")
    base_url = "http://127.0.0.1:9/v1"
    requests = []
    for i in range(len(outcomes)):
        body = {"model": "m", "messages": [{"role": "user", "content": f"item {i}"}]}
        key, text = encode_request({"base_url": base_url, **body})
        requests.append((key, text, body))
    lines = []
    for n, ((key, _, _), outcome) in enumerate(zip(requests, outcomes, strict=True)):
        lines += result_line(key, outcome, n)
    lines += [json.dumps({"custom_id": f"foreign-{k}", "response": None}) for k in range(foreign)]
    lines += ["{not json"] * garbage
    order.shuffle(lines)
    results = folder / "results.jsonl"
    results.write_text("\n".join(lines) + "\n")
    with ResponseCache(folder / "c.db") as cache:
        jobs = BatchJobs(cache)
        (file_row,) = jobs.build(requests, base_url).files
        summary = jobs.ingest(results, CollectSummary(), file_row=file_row)
        missing = jobs.records.close_file(file_row, "retry", "no result line")
        again = jobs.ingest(results, CollectSummary(), file_row=file_row)  # after a kill
        states = dict(jobs.records.conn.execute("SELECT key, state FROM batch_requests"))
        stored = {key: cache.get_by_key(key) for key, _, _ in requests}
        jobs.close()
    expected = {
        "ok": "answered", "ok_twice": "answered", "ok_and_500": "answered",
        "500": "retry", "429": "retry",
        "400": "failed", "expired": "retry", "cancelled": "failed", "malformed": "retry",
        "none": "retry",
    }  # fmt: skip
    for (key, _, _), outcome in zip(requests, outcomes, strict=True):
        assert states[key] == expected[outcome], outcome
        if outcome.startswith("ok"):
            first = next(
                json.loads(x)
                for x in lines
                if f'"custom_id": "{key}"' in x and '"status_code": 200' in x
            )
            assert stored[key] == first["response"]["body"]  # the first answer line wins
        else:
            assert stored[key] is None
    assert summary.lines == len(lines)
    assert (summary.unexpected, summary.unreadable) == (foreign, garbage)
    assert missing == outcomes.count("none")
    oks = sum(o.startswith("ok") for o in outcomes)
    assert summary.answered == oks + outcomes.count("ok_twice")
    assert again.unexpected == foreign and again.answered == summary.answered


# ---------------------------------------------------------------- batch == interactive


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--samples", "3", "--temperature", "0.7", "--logprobs"],
        ["--probes", "--n-random-probes", "4", "--json-mode", "json_schema"],
    ],
)
def test_a_batch_run_fills_the_cache_like_an_interactive_run(tmp_path, capsys, options):
    write_items(tmp_path / "items.jsonl", 70)
    with BatchServer(rate=2000) as server:
        a_args = elicit_args(tmp_path, server, *options, out="a.jsonl", cache="a.db")
        assert main(a_args) == 0
        interactive = server.record.chat_requests
        assert interactive >= 70
        b_args = elicit_args(
            tmp_path, server, *options, "--batch-max-requests", "30", out="b.jsonl", cache="b.db"
        )
        assert main([*b_args, "--batch-wait"]) == 0
        assert server.record.chat_requests == interactive  # every answer came from the batches
        sizes = [len(v) for v in server.record.batch_lines.values()]
        assert sum(sizes) == interactive and max(sizes) == 30
        # A plain rerun of each sends nothing and writes the same file.
        assert main(a_args) == 0
        b_args[b_args.index("--out") + 1] = str(tmp_path / "b2.jsonl")
        assert main(b_args) == 0
        assert server.record.chat_requests == interactive
    assert cache_rows(tmp_path / "a.db") == cache_rows(tmp_path / "b.db")
    a = (tmp_path / "a.jsonl").read_text()
    assert a == (tmp_path / "b.jsonl").read_text() == (tmp_path / "b2.jsonl").read_text()


def test_submit_without_wait_then_collect_then_plain_rerun(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 40)
    with BatchServer(rate=400, validate_seconds=0.1) as server:
        assert main(elicit_args(tmp_path, server, "--batch")) == 0
        err = capsys.readouterr().err
        assert "verbcal batch collect --cache" in err and "without --batch" in err
        assert not (tmp_path / "preds.jsonl").exists()
        with sqlite3.connect(tmp_path / "c.db") as conn:  # recorded before anything waited
            row = conn.execute("SELECT state, batch_id, file_id, n_requests FROM batch_files")
            state, batch_id, file_id, n = row.fetchone()
        assert (state, n) == ("submitted", 40) and batch_id in server.batches
        assert server.batches[batch_id].obj["input_file_id"] == file_id
        assert main(["batch", "status", "--cache", str(tmp_path / "c.db")]) == 0
        assert batch_id in capsys.readouterr().out
        code = main(["batch", "collect", "--cache", str(tmp_path / "c.db"), "--wait"])
        assert code == 0
        assert "40 answers stored" in capsys.readouterr().out
        assert main(elicit_args(tmp_path, server)) == 0
        assert server.record.chat_requests == 0
        downloads = dict(server.record.downloads)
        assert main(["batch", "collect", "--cache", str(tmp_path / "c.db")]) == 0
        assert dict(server.record.downloads) == downloads  # nothing fetched twice
    assert all(row["status"] == "ok" for row in read_rows(tmp_path / "preds.jsonl"))


# ---------------------------------------------------------------- failures


def test_expired_and_failed_requests_go_out_again_and_nothing_answered_does(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 120)
    # 60 requests a second and a 1 s window: each first batch of 40 expires part-way.
    with BatchServer(rate=60, window_seconds=0.5, error_rate=0.15) as server:
        args = elicit_args(tmp_path, server, "--batch-wait", "--batch-max-requests", "40")
        assert main(args) == 0
        record = server.record
        assert any(b.obj["status"] == "expired" for b in server.batches.values())
        assert answered_then_sent_again(server) == []
        answered = {cid for ids in record.answered.values() for cid in ids}
        assert max(record.submitted().values()) <= 3  # max_attempts
        assert record.chat_requests == 120 - len(answered)  # the rest, interactively
    rows = read_rows(tmp_path / "preds.jsonl")
    assert len(rows) == 120 and all(r["status"] == "ok" for r in rows)


def test_a_bad_request_is_not_sent_again_in_a_batch(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 50)
    with BatchServer(bad_request_rate=0.2) as server:
        assert main(elicit_args(tmp_path, server, "--batch-wait")) == 0
        assert len(server.batches) == 1 and max(server.record.submitted().values()) == 1
        failed = 50 - len(server.record.answered[next(iter(server.batches))])
        assert failed > 0 and server.record.chat_requests == failed
    capsys.readouterr()
    assert main(["batch", "status", "--cache", str(tmp_path / "c.db"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status[0]["requests_by_state"] == {"answered": 50 - failed, "failed": failed}


def test_fallback_interactive_sends_the_retries_itself(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 60)
    with BatchServer(error_rate=0.25) as server:
        args = elicit_args(tmp_path, server, "--batch")
        assert main(args) == 0
        cache = str(tmp_path / "c.db")
        code = main(
            ["batch", "collect", "--cache", cache, "--wait", "--batch-poll", "0.02"]
            + ["--fallback", "interactive", "--model", "m"]
        )
        assert code == 0
        retried = server.record.chat_requests
        assert retried == 60 - len(next(iter(server.record.answered.values()))) > 0
        assert len(server.batches) == 1
        assert main(elicit_args(tmp_path, server)) == 0
        assert server.record.chat_requests == retried  # all in the cache now


def test_lines_for_requests_never_sent_are_not_stored(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 10)
    with BatchServer(foreign_lines=2) as server:
        assert main(elicit_args(tmp_path, server, "--batch-wait")) == 0
        assert "2 lines for requests not sent in that batch" in capsys.readouterr().err
    assert len(cache_rows(tmp_path / "c.db")) == 10


def test_a_batch_that_fails_validation_is_reported(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 12)
    with BatchServer(max_requests=5) as server:  # the server's limit below the client's
        assert (
            main(elicit_args(tmp_path, server, "--batch-wait", "--batch-max-requests", "12")) == 0
        )
        (batch,) = server.batches.values()
        assert batch.obj["status"] == "failed"
        assert server.record.chat_requests == 12  # sent interactively instead
    assert main(["batch", "status", "--cache", str(tmp_path / "c.db")]) == 0
    assert "too_many_requests" in capsys.readouterr().out


def test_cancel_keeps_what_ran_and_does_not_requeue_the_rest(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 200)
    with BatchServer(rate=20) as server:  # 10 s to run: cancelled long before
        assert main(elicit_args(tmp_path, server, "--batch")) == 0
        time.sleep(0.5)
        cache = str(tmp_path / "c.db")
        assert main(["batch", "cancel", "--cache", cache]) == 0
        assert main(["batch", "collect", "--cache", cache, "--wait", "--batch-poll", "0.02"]) == 0
        (batch,) = server.batches.values()
        assert batch.obj["status"] == "cancelled"
        ran = len(server.record.answered[batch.obj["id"]])
        assert 0 < ran < 200
    assert len(cache_rows(tmp_path / "c.db")) == ran


def test_the_server_enforces_the_documented_rules(tmp_path):
    import io

    import openai

    with BatchServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
        rows = [dict(line, body={"model": "m", "messages": []}) for _ in range(2)]
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        f = client.files.create(
            file=("x.jsonl", io.BytesIO(data), "application/jsonl"), purpose="batch"
        )
        assert (f.purpose, f.bytes, f.status) == ("batch", len(data), "processed")
        with pytest.raises(openai.BadRequestError):  # batch_create_params.py: only "24h"
            client.batches.create(
                input_file_id=f.id,
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.status == "validating"
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
        assert batch.status == "failed"  # custom_id "a" twice (vLLM protocol.py: unique)
        assert batch.errors.data[0].code == "duplicate_custom_id" and batch.errors.data[0].line == 2


def test_an_upload_and_a_create_that_fail_are_sent_again_once_nothing_came_of_them(tmp_path):
    with BatchServer() as server:
        server.fail("upload", times=2, status=503)
        server.fail("create", times=1, status=500)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        key, text = encode_request({"base_url": server.base_url, **body})
        said: list[str] = []
        with ResponseCache(tmp_path / "c.db") as cache:
            jobs = BatchJobs(cache, progress=said.append)
            jobs.build([(key, text, body)], server.base_url)
            (f,) = jobs.submit()
            jobs.close()
        assert f.state == "submitted" and f.batch_id in server.batches
        assert (server.record.uploads, server.record.create_calls, len(server.batches)) == (1, 1, 1)
        assert sum("trying again" in line for line in said) == 3
        assert any("HTTP 503" in line for line in said)


def test_a_create_whose_reply_is_lost_is_found_again_even_when_already_finished(tmp_path):
    # The reply to POST /v1/batches never comes (the client times out), and by the time
    # the client looks the batch up it has already completed: it must adopt it, with
    # its result files, and neither create a second batch nor re-queue its requests.
    with BatchServer(validate_seconds=0, finalize_seconds=0, rate=1e9) as server:
        server.block("create")
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        key, text = encode_request({"base_url": server.base_url, **body})
        with ResponseCache(tmp_path / "c.db") as cache:
            jobs = BatchJobs(cache, timeout=0.5)
            jobs.build([(key, text, body)], server.base_url)
            try:
                (f,) = jobs.submit()
            finally:
                server.release("create")
            assert f.status == "completed" and f.output_file_id is not None
            summary = jobs.collect()
            jobs.close()
            assert (summary.answered, summary.requeued, summary.missing) == (1, 0, 0)
            assert cache.get_by_key(key) is not None
        assert server.record.create_calls == len(server.batches) == 1


def test_a_provider_that_is_gone_is_named_and_the_records_stay(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 5)
    with BatchServer() as server:
        assert main(elicit_args(tmp_path, server, "--batch")) == 0
    with ResponseCache(tmp_path / "c.db") as cache:
        jobs = BatchJobs(cache, call_attempts=2)
        with pytest.raises(BackendError, match=r"checking batch_\w+: connection error"):
            jobs.poll()
        (row,) = jobs.status()
        jobs.close()
    assert (row["state"], row["requests_by_state"]) == ("submitted", {"pending": 5})
    with (
        ResponseCache(tmp_path / "c.db") as cache,
        pytest.raises(ConfigurationError, match="call_attempts must be an int >= 1"),
    ):
        BatchJobs(cache, call_attempts=0)


# ---------------------------------------------------------------- vllm run-batch


def vllm_run_batch(requests: Path, results: Path, server: BatchServer, fail: int = 0) -> None:
    """What ``vllm run-batch -i requests -o results`` writes (vLLM ``run_batch.py``: one
    ``BatchRequestOutput`` per input line), answering like the server's chat endpoint."""
    with open(requests) as src, open(results, "w") as out:
        for i, line in enumerate(src):
            row = json.loads(line)
            if i < fail:
                response = {"status_code": 400, "request_id": f"r{i}", "body": None}
                error = "bad request"
            else:
                body = server.chat_answer(row["body"])
                response, error = {"status_code": 200, "request_id": f"r{i}", "body": body}, None
            result = {"id": f"vllm-{i}", "custom_id": row["custom_id"], "response": response}
            out.write(json.dumps(dict(result, error=error)) + "\n")
        out.write(json.dumps({"id": "x", "custom_id": "not-exported", "response": None}) + "\n")


def test_export_for_vllm_then_import_its_results(tmp_path, capsys):
    write_items(tmp_path / "items.jsonl", 30)
    with BatchServer() as server:
        assert (
            main(elicit_args(tmp_path, server, "--batch-no-submit", "--batch-max-requests", "20"))
            == 0
        )
        assert server.record.uploads == 0
        cache = str(tmp_path / "c.db")
        assert (
            main(
                [
                    "batch",
                    "export",
                    "--cache",
                    cache,
                    "--format",
                    "vllm",
                    "--out-dir",
                    str(tmp_path / "x"),
                ]
            )
            == 0
        )
        exported = sorted((tmp_path / "x").glob("*.jsonl"))
        assert len(exported) == 2
        results = []
        for i, path in enumerate(exported):
            results.append(path.with_suffix(".out"))
            vllm_run_batch(path, results[-1], server, fail=1 if i == 0 else 0)
        capsys.readouterr()
        assert main(["batch", "import", *map(str, results), "--cache", cache]) == 0
        out = capsys.readouterr().out
        assert "29 answers stored" in out and "1 failed for good" in out and "2 lines for" in out
        assert main(elicit_args(tmp_path, server)) == 0
        assert server.record.chat_requests == 1  # only the one vLLM failed
        assert server.record.uploads == 0


# ---------------------------------------------------------------- SIGKILL at every stage


def run_cli(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "verbcal.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


@pytest.mark.slow
def test_killed_at_every_stage_it_resumes_and_sends_no_line_twice(tmp_path):
    write_items(tmp_path / "items.jsonl", 90)
    with BatchServer(rate=300) as server:
        args = elicit_args(tmp_path, server, "--batch-wait", "--batch-max-requests", "40")
        # "content" after one skipped: killed while collecting, one batch already collected.
        stages = [("upload", 0), ("uploaded", 0), ("create", 0), ("retrieve", 0), ("content", 1)]
        for stage, skip in stages:
            server.block(stage, skip)
            child = run_cli(args)
            try:
                assert server.wait_reached(stage, timeout=60), child.stderr.read()
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
            finally:
                server.release(stage)
                child.kill()
                child.stderr.close()
            assert not (tmp_path / "preds.jsonl").exists()
        assert 0 < len(cache_rows(tmp_path / "c.db")) < 90  # killed between two collections
        # The upload whose reply was lost (stage "uploaded") was found again, not repeated.
        child = run_cli(args)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        submitted = server.record.submitted()
        assert sorted(submitted) == sorted(
            {cid for ids in server.record.batch_lines.values() for cid in ids}
        )
        assert len(submitted) == 90 and max(submitted.values()) == 1  # no line in two batches
        assert server.record.create_calls == len(server.batches) == 3  # no batch made twice
        inputs = [b.obj["input_file_id"] for b in server.batches.values()]
        assert len(set(inputs)) == 3
        assert server.record.chat_requests == 0
        assert server.record.uploads == 3
        # Result files: each fetched once, except the one cut off mid-download (the second).
        assert sorted(server.record.downloads.values()) == [1, 1, 2]
    rows = read_rows(tmp_path / "preds.jsonl")
    assert len(rows) == 90 and all(r["status"] == "ok" for r in rows)


def answered_then_sent_again(server: BatchServer) -> list[str]:
    """custom_ids that went out in a batch after an earlier batch had answered them."""
    answered: set[str] = set()
    again = []
    for batch_id, ids in server.record.batch_lines.items():  # creation order
        again += [cid for cid in ids if cid in answered]
        answered.update(server.record.answered.get(batch_id, []))
    return again


@pytest.mark.slow
def test_two_collectors_at_once_make_no_batch_twice(tmp_path):
    write_items(tmp_path / "items.jsonl", 90)
    with BatchServer(rate=500, error_rate=0.3) as server:
        assert main(elicit_args(tmp_path, server, "--batch", "--batch-max-requests", "30")) == 0
        collect = ["batch", "collect", "--cache", str(tmp_path / "c.db"), "--wait"]
        children = [run_cli([*collect, "--batch-poll", "0.02"]) for _ in range(2)]
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
        assert len(server.batches) > 3  # errors were re-queued
        inputs = [b.obj["input_file_id"] for b in server.batches.values()]
        assert server.record.create_calls == len(set(inputs)) == len(inputs)
        assert answered_then_sent_again(server) == []
        assert main(elicit_args(tmp_path, server)) == 0
        assert server.record.chat_requests == 90 - len(
            {c for ids in server.record.answered.values() for c in ids}
        )


def test_collecting_again_after_a_kill_mid_ingest_stores_nothing_twice(tmp_path):
    """Reading the same result file twice (as after a kill while collecting) is harmless."""
    write_items(tmp_path / "items.jsonl", 30)
    with BatchServer() as server:
        assert main(elicit_args(tmp_path, server, "--batch-wait")) == 0
        batch_id = next(iter(server.batches))
        output = server.file_path(server.batches[batch_id].obj["output_file_id"])
        with ResponseCache(tmp_path / "c.db") as cache:
            before = cache_rows(tmp_path / "c.db")
            jobs = BatchJobs(cache)
            summary = jobs.ingest(output, CollectSummary(), file_row=1)
            jobs.close()
        assert summary.answered == 30 and cache_rows(tmp_path / "c.db") == before
