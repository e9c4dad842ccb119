"""The durable response cache: keys, durability after SIGKILL, concurrent writers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from verbcal import ConfigurationError, InvalidInputError
from verbcal.elicit.cache import ResponseCache, canonical_json, encode_request, request_key

REPO = Path(__file__).resolve().parents[1]

BASE_REQUEST = {
    "base_url": "http://127.0.0.1:8080/v1",
    "model": "smollm2",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "temperature": 0.0,
    "max_tokens": 64,
    "response_format": {"type": "json_object"},
    "seed": 7,
    "n": 1,
    "logprobs": True,
    "top_logprobs": 5,
}


def answer(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


@pytest.mark.parametrize(
    "field, value",
    [
        ("base_url", "https://api.openai.com/v1"),
        ("model", "gpt-4o-mini"),
        ("messages", [{"role": "user", "content": "Hi"}]),
        ("temperature", 0.7),
        ("max_tokens", 65),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("response_format", None),
        ("seed", 8),
        ("n", 2),
        ("logprobs", False),
        ("top_logprobs", 4),
        ("top_p", 0.9),  # a parameter the cache has never heard of
    ],
)
def test_key_changes_with_every_request_parameter(field, value):
    changed = {**BASE_REQUEST, field: value}
    assert request_key(changed) != request_key(BASE_REQUEST)


def test_key_ignores_dict_order_and_int_float_spelling():
    reordered = dict(reversed(list(BASE_REQUEST.items())))
    reordered["temperature"] = 0  # int 0 is the same temperature as 0.0
    reordered["max_tokens"] = 64.0
    assert request_key(reordered) == request_key(BASE_REQUEST)


def test_key_keeps_large_integer_seeds_apart():
    # Floats round above 2**53; seeds must never collide through that.
    a = {**BASE_REQUEST, "seed": 2**60}
    b = {**BASE_REQUEST, "seed": 2**60 + 1}
    assert request_key(a) != request_key(b)


def test_key_is_sha256_of_sorted_compact_json():
    request = {"model": "m", "messages": [{"role": "user", "content": "é"}], "seed": 3}
    text = '{"messages":[{"content":"é","role":"user"}],"model":"m","seed":3}'
    assert canonical_json(request) == text
    assert request_key(request) == hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    "request_, match",
    [
        ({"model": object()}, "cannot be written as JSON"),
        ({"temperature": float("nan")}, "cannot be written as JSON"),
        (["model", "m"], "must be a mapping"),
    ],
)
def test_key_refuses_what_is_not_a_json_request(request_, match):
    with pytest.raises(InvalidInputError, match=match):
        request_key(request_)


def test_put_get_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        assert cache.get(BASE_REQUEST) is None
        assert BASE_REQUEST not in cache
        key = cache.put(BASE_REQUEST, answer("first"))
        assert key == request_key(BASE_REQUEST)
        assert cache.get(BASE_REQUEST) == answer("first")
    with ResponseCache(path) as reopened:
        assert reopened.get_by_key(key) == answer("first")
        assert list(reopened.keys()) == [key]
        assert len(reopened) == 1


def test_encoded_rows_are_stored_as_given_and_read_like_put(tmp_path):
    key, request_text = encode_request(BASE_REQUEST)
    assert (key, request_text) == (request_key(BASE_REQUEST), canonical_json(BASE_REQUEST))
    body = '{"choices": [{"message": {"role": "assistant", "content": "hi"}}]}\n'
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache.put_encoded([(key, request_text, body)]) == [key]
        assert cache.get(BASE_REQUEST) == json.loads(body) == answer("hi")
        stored = cache._reader.execute("SELECT request, response FROM responses").fetchall()
        assert stored == [(request_text, body)]  # the texts as received, not re-serialised
        assert cache.put_encoded([]) == [] and cache.commits == 1


def test_first_stored_answer_wins(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put(BASE_REQUEST, answer("first"))
        cache.put(BASE_REQUEST, answer("second"))
        assert cache.get(BASE_REQUEST) == answer("first")
        assert len(cache) == 1


def test_database_is_in_wal_mode_with_full_sync(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert cache._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cache._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_api_key_is_never_stored(tmp_path):
    # The backend never puts the key into the request; check the file holds none either.
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put(BASE_REQUEST, answer("x"))
    with sqlite3.connect(path) as conn:
        stored = json.loads(conn.execute("SELECT request FROM responses").fetchone()[0])
    assert stored == json.loads(canonical_json(BASE_REQUEST))


def test_refuses_unusable_path_and_timeout(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot open response cache"):
        ResponseCache(tmp_path / "missing-dir" / "c.sqlite")
    with pytest.raises(ConfigurationError, match="timeout must be positive"):
        ResponseCache(tmp_path / "c.sqlite", timeout=0)


def test_threads_share_one_cache(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:

        def write(worker: int) -> None:
            for i in range(50):
                request = {**BASE_REQUEST, "seed": worker * 1000 + i}
                cache.put(request, answer(f"{worker}-{i}"))
                assert cache.get(request) == answer(f"{worker}-{i}")

        threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(cache) == 300


def _put_from_threads(cache: ResponseCache, seeds: range) -> list[object]:
    """``cache.put`` from one thread per seed, all released at once; each thread's key or error."""
    start = threading.Barrier(len(seeds))
    outcomes: list[object] = [None] * len(seeds)

    def put(slot: int, seed: int) -> None:
        start.wait()
        try:
            outcomes[slot] = cache.put({**BASE_REQUEST, "seed": seed}, answer(str(seed)))
        except sqlite3.Error as exc:
            outcomes[slot] = exc

    threads = [threading.Thread(target=put, args=(i, s)) for i, s in enumerate(seeds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_puts_share_commits(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        keys = _put_from_threads(cache, range(48))
        # Each put returned after its row was committed, and rows were grouped.
        assert keys == [request_key({**BASE_REQUEST, "seed": s}) for s in range(48)]
        assert len(cache) == 48
        assert 1 <= cache.commits < 48
    with ResponseCache(tmp_path / "c.sqlite") as reopened:
        assert all(reopened.get_by_key(key) is not None for key in keys)


def test_sequential_puts_commit_one_by_one(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        for seed in range(5):
            cache.put({**BASE_REQUEST, "seed": seed}, answer(str(seed)))
        assert cache.commits == 5


def test_failed_group_commit_fails_every_caller_and_stores_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    with ResponseCache(path, timeout=0.2) as cache:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        outcomes = _put_from_threads(cache, range(8))
        assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
        assert all(re.search(r"response cache .*locked", str(o)) for o in outcomes)
        other.execute("ROLLBACK")
        other.close()
        assert len(cache) == 0 and cache.commits == 0
        # The cache is usable again once the lock is gone.
        assert _put_from_threads(cache, range(8)) == [
            request_key({**BASE_REQUEST, "seed": s}) for s in range(8)
        ]
        assert len(cache) == 8


WRITER = textwrap.dedent(
    """
    import sys
    from verbcal.elicit.cache import ResponseCache

    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = ResponseCache(path)
    for i in range(count):
        request = {"model": "m", "messages": [{"role": "user", "content": f"{tag}-{i}"}]}
        key = cache.put(request, {"choices": [{"message": {"content": str(i)}}]})
        print(key, flush=True)
    """
)


def _writer(path: Path, tag: str, count: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), tag, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def test_committed_rows_survive_sigkill(tmp_path):
    path = tmp_path / "c.sqlite"
    proc = _writer(path, "killed", 1_000_000)
    reported = [proc.stdout.readline().strip() for _ in range(40)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with ResponseCache(path) as cache:
        # Every key the writer printed was committed before put() returned.
        assert all(cache.get_by_key(key) is not None for key in reported)
        assert len(cache) >= len(reported)
        assert cache._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_processes_write_the_same_file(tmp_path):
    path = tmp_path / "c.sqlite"
    procs = [_writer(path, tag, 150) for tag in ("a", "b")]
    outputs = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    with ResponseCache(path) as cache:
        assert len(cache) == 300
        assert set(cache.keys()) == set(outputs[0]) | set(outputs[1])
