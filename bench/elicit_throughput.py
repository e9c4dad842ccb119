"""Elicitation throughput: verbcal's Elicitor against a plain sequential ``openai`` loop.

Run as ``.venv/bin/python bench/elicit_throughput.py``. Every run talks real
HTTP to the fault server of the test suite (``tests/fault_server.py``), which
answers each request after a fixed 100 ms; it runs in a child process so that
its threads do not compete for the GIL with the client being measured.

1. 2,000 items at concurrency 64 through ``Elicitor`` with a fresh response
   cache, against the ideal 2,000 x 0.1 s / 64 = 3.125 s (target: within 1.25x).
   When missed (or with ``--explain``), the run is taken apart: without the cache; the bare
   ``AsyncOpenAI`` SDK at the same concurrency, through ``chat.completions.create``
   and through its generic ``post``; one ``ResponseCache.put`` against rows
   committed 64 at a time; and a cProfile of the client grouped by package.
2. The peer: one ``OpenAI().chat.completions.create`` after another with the
   same messages, timed on a subset and extrapolated to 2,000 items.
3. A rerun of the 2,000 from the same cache: under 2 s, and the server must
   receive no request.
4. A request limit and a token limit with a 10 s window (the backend's
   ``rate_window``, instead of a minute, so each run stays well under a
   minute), checked from the server's record of arrivals: never above the
   limit in any window, and at least 90 % of it used in the whole windows of
   the busy part of the run.

Prints a markdown table and exits with status 1 when a target is missed. The
machine is shared: expect noise.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import multiprocessing
import pstats
import re
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
from openai import AsyncOpenAI, OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fault_server import FaultServer, Record  # noqa: E402

from verbcal.elicit import Elicitor  # noqa: E402
from verbcal.elicit.backend import OpenAIBackend  # noqa: E402
from verbcal.elicit.cache import ResponseCache  # noqa: E402
from verbcal.elicit.templates import load_template  # noqa: E402
from verbcal.predictions import Item  # noqa: E402

LABELS = ["positive", "negative"]
MODEL = "bench-model"
TEMPLATE = "distribution"
MAX_TOKENS = 32  # the fault server's answers take about 12 tokens
LATENCY = 0.1
N_ITEMS = 2000
CONCURRENCY = 64
IDEAL_SECONDS = N_ITEMS * LATENCY / CONCURRENCY
TARGET_RATIO = 1.25
PEER_ITEMS = 100
RERUN_TARGET_SECONDS = 2.0

RATE_WINDOW = 10.0  # seconds; the backend's limits count per rate_window, not per minute
RATE_ITEMS = 300
REQUEST_LIMIT = 100  # per window: the 300 items need three windows
TOKEN_LIMIT = 20_000  # per window: about 100 of these requests (~190 tokens each)
MIN_USE = 0.9

SENTENCES = (
    "A warm, funny and beautifully acted film that stays with you.",
    "The plot collapses in the second half and the jokes never land.",
    "Solid performances, although the pacing drags in places.",
    "I walked out before the end; two hours I will not get back.",
)


@dataclass
class Result:
    """One row of the results table."""

    run: str
    measured: str
    target: str
    met: bool | None  # None: no target, for information


def make_items(n: int) -> list[Item]:
    """Distinct review-like items (distinct texts are distinct requests and cache keys)."""
    return [Item(id=f"i{k}", text=f"Review {k}: {SENTENCES[k % len(SENTENCES)]}") for k in range(n)]


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds ``fn()`` takes, and its value.

    The garbage left by the imports and by earlier runs is collected first: a run
    should not pay for a full collection that other work made due (it costs about
    70 ms here and lands in the first run's opening wave of requests).
    """
    gc.collect()
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# ---------------------------------------------------------------- the server process


def _serve(conn, latency: float) -> None:
    """Child process: run a FaultServer; send its record on each "record" message until "stop"."""
    # The child inherits the benchmark's heap (numpy, openai, ...). Frozen, it is left out
    # of the server's own collections, a full one of which stalls every answer ~65 ms.
    gc.freeze()
    with FaultServer(latency=latency, labels=LABELS) as server:
        conn.send(server.base_url)
        while conn.recv() == "record":
            conn.send(server.record)


class ServerProcess:
    """A :class:`FaultServer` in a child process; ``record()`` fetches what it has seen."""

    def __init__(self, latency: float = LATENCY) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_serve, args=(child, latency), daemon=True)

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self.base_url: str = self._conn.recv()
        return self

    def record(self) -> Record:
        self._conn.send("record")
        return self._conn.recv()

    def __exit__(self, *exc_info: object) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)


# ---------------------------------------------------------------- clients


async def elicit(base_url: str, items: list[Item], cache: ResponseCache | None = None, **limits):
    """Run the items through a fresh backend and Elicitor; return (predictions, summary)."""
    async with OpenAIBackend(
        MODEL, base_url=base_url, cache=cache, max_concurrency=CONCURRENCY, **limits
    ) as backend:
        elicitor = Elicitor(backend, LABELS, template=TEMPLATE, max_tokens=MAX_TOKENS)
        return await elicitor.arun(items)


def run_elicitor(base_url: str, items: list[Item], cache: ResponseCache | None = None, **limits):
    """Blocking :func:`elicit`; fails the benchmark unless every item parsed."""
    seconds, (predictions, summary) = timed(
        lambda: asyncio.run(elicit(base_url, items, cache, **limits))
    )
    parsed = sum(p.probs is not None for p in predictions)
    if parsed != len(items):
        raise SystemExit(f"only {parsed} of {len(items)} items parsed: {summary}")
    return seconds, summary


def request_messages(items: list[Item]) -> list[list[dict]]:
    """The chat messages the Elicitor sends for ``items``."""
    template = load_template(TEMPLATE)
    return [template.render(item.text, LABELS) for item in items]


def run_sequential_openai(base_url: str, items: list[Item]) -> float:
    """The peer: a plain loop of blocking ``chat.completions.create`` calls."""
    conversations = request_messages(items)
    with OpenAI(base_url=base_url, api_key="x", max_retries=0) as client:
        start = time.perf_counter()
        for messages in conversations:
            client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0.0, max_tokens=MAX_TOKENS, seed=0
            )
        return time.perf_counter() - start


def run_bare_sdk(base_url: str, items: list[Item], *, generic_post: bool = False) -> float:
    """The SDK alone at the same concurrency: ``AsyncOpenAI`` behind a semaphore.

    With ``generic_post``, requests go through the SDK's documented ``client.post``
    for raw endpoints, which skips ``chat.completions.create``'s typed-parameter
    transform and response model.
    """
    conversations = request_messages(items)

    async def run() -> None:
        semaphore = asyncio.Semaphore(CONCURRENCY)
        async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:

            async def one(messages: list[dict]) -> None:
                body = {"model": MODEL, "messages": messages, "max_tokens": MAX_TOKENS}
                async with semaphore:
                    if generic_post:
                        response = await client.post(
                            "/chat/completions", body=body, cast_to=httpx2.Response
                        )
                        json.loads(response.text)
                    else:
                        await client.chat.completions.create(**body)

            await asyncio.gather(*(one(m) for m in conversations))

    seconds, _ = timed(lambda: asyncio.run(run()))
    return seconds


# ---------------------------------------------------------------- throughput, peer, rerun


def bench_throughput_peer_and_rerun() -> list[Result]:
    items = make_items(N_ITEMS)
    with tempfile.TemporaryDirectory() as folder, ServerProcess() as server:
        # The cache key holds the base URL: the rerun must reach the same server.
        with ResponseCache(Path(folder) / "responses.db") as cache:
            seconds, _ = run_elicitor(server.base_url, items, cache)
            received_first = server.record().total
            rerun_seconds, rerun_summary = run_elicitor(server.base_url, items, cache)
            received_rerun = server.record().total - received_first
        peer_seconds = run_sequential_openai(server.base_url, items[:PEER_ITEMS])
        ratio = seconds / IDEAL_SECONDS
        print(
            f"Elicitor: {N_ITEMS} items in {seconds:.2f} s = {ratio:.2f}x the ideal "
            f"{IDEAL_SECONDS:.3f} s ({received_first} requests received)"
        )
        if ratio > TARGET_RATIO or "--explain" in sys.argv:
            explain_miss(server.base_url, items, Path(folder), missed=ratio > TARGET_RATIO)
    peer_total = peer_seconds * N_ITEMS / PEER_ITEMS
    print(
        f"peer: sequential openai loop, {PEER_ITEMS} items in {peer_seconds:.2f} s, "
        f"extrapolated to {N_ITEMS} items: {peer_total:.1f} s; "
        f"Elicitor speed-up {peer_total / seconds:.1f}x"
    )
    sent = rerun_summary.backend["requests_sent"]
    print(
        f"rerun from the cache: {rerun_seconds:.2f} s, {sent} requests sent, "
        f"{received_rerun} received"
    )
    return [
        Result(
            f"Elicitor, {N_ITEMS} items, concurrency {CONCURRENCY}, fresh cache",
            f"{seconds:.2f} s = {ratio:.2f}x ideal {IDEAL_SECONDS:.3f} s",
            f"<= {TARGET_RATIO}x ideal ({TARGET_RATIO * IDEAL_SECONDS:.2f} s)",
            ratio <= TARGET_RATIO,
        ),
        Result(
            f"peer: sequential `openai` loop ({PEER_ITEMS} items timed, extrapolated x"
            f"{N_ITEMS // PEER_ITEMS})",
            f"{peer_total:.1f} s; Elicitor is {peer_total / seconds:.1f}x faster",
            "",
            None,
        ),
        Result(
            f"rerun of the {N_ITEMS} items from the cache",
            f"{rerun_seconds:.2f} s, {received_rerun} requests received",
            f"< {RERUN_TARGET_SECONDS:g} s, 0 requests",
            rerun_seconds < RERUN_TARGET_SECONDS and sent == 0 and received_rerun == 0,
        ),
    ]


def explain_miss(base_url: str, items: list[Item], folder: Path, *, missed: bool = True) -> None:
    """Take a slow run apart: the cache, the SDK alone, and a profile of the client."""
    print("\nthe target was missed; where the time goes:" if missed else "\nwhere the time goes:")
    no_cache, _ = run_elicitor(base_url, items)
    print(f"  Elicitor without a cache:              {no_cache:6.2f} s")
    print(f"  bare AsyncOpenAI, same concurrency:    {run_bare_sdk(base_url, items):6.2f} s")
    generic = run_bare_sdk(base_url, items, generic_post=True)
    print(f"  the same with AsyncOpenAI.post:        {generic:6.2f} s")
    put_ms = cache_put_milliseconds(folder / "puts.db")
    print(
        f"  ResponseCache.put (one commit each):   {put_ms:6.2f} ms, serialised by its lock: "
        f"{put_ms * N_ITEMS / 1000:.2f} s for {N_ITEMS} items"
    )
    batched_ms = group_commit_milliseconds(folder / "batched.db", CONCURRENCY)
    print(
        f"  sqlite rows committed {CONCURRENCY} at a time:   {batched_ms:6.3f} ms per row "
        "(same WAL + synchronous=FULL)"
    )
    profiler = cProfile.Profile()
    start = time.process_time()
    profiler.runcall(run_elicitor, base_url, items)
    cpu = time.process_time() - start
    print(
        f"  client CPU per request, no cache:      {1000 * cpu / N_ITEMS:6.2f} ms under cProfile; "
        "own time by package:"
    )
    for package, seconds in time_by_package(pstats.Stats(profiler)).most_common(8):
        print(f"    {package:<28} {seconds:6.2f} s")
    print()


def cache_put_milliseconds(path: Path, n: int = 200) -> float:
    """Milliseconds one ResponseCache.put takes, with a prompt-sized request."""
    response = {"choices": [{"message": {"content": '{"positive": 0.3, "negative": 0.7}'}}]}
    conversations = request_messages(make_items(n))
    with ResponseCache(path) as cache:
        seconds, _ = timed(lambda: [cache.put({"messages": m}, response) for m in conversations])
    return 1000 * seconds / n


def group_commit_milliseconds(path: Path, rows_per_commit: int, n: int = 512) -> float:
    """Milliseconds per row when rows of a response-cache size share one durable commit."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, request TEXT, response TEXT)")
    start = time.perf_counter()
    for first in range(0, n, rows_per_commit):
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO responses VALUES (?, ?, ?)",
            [(str(k), "x" * 900, "y" * 200) for k in range(first, first + rows_per_commit)],
        )
        connection.execute("COMMIT")
    seconds = time.perf_counter() - start
    connection.close()
    return 1000 * seconds / n


def time_by_package(stats: pstats.Stats) -> Counter:
    """Own (not cumulative) profiled time, summed by the package or builtin it was spent in."""
    totals: Counter = Counter()
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.stats.items():
        patterns = (r"site-packages/([^/]+)/", r"/(verbcal)/", r"/python3\.\d+/(\w+)")
        match = next(filter(None, (re.search(p, filename) for p in patterns)), None)
        if match:
            package = match.group(1)
        elif filename == "~":
            package = "builtin " + re.sub(r"[<>{}']|method |built-in ", "", function)[:20]
        else:
            package = "other"
        totals[package] += own
    return totals


# ---------------------------------------------------------------- rate limits


def amount(event: tuple, what: str) -> float:
    """Requests (1 each) or tokens (those of answered requests) of one server event."""
    _arrival, _key, outcome, prompt, completion = event
    if what == "requests":
        return 1.0
    return float(prompt + completion) if outcome == "200" else 0.0


def use_of_limit(record: Record, what: str, limit: float) -> float:
    """Share of the limit used in the whole windows between the first and the last arrival.

    A sliding-window limiter lets a burst through, then waits for the window
    to slide; the final window holds whatever is left over, so it is not counted.
    """
    events = sorted(record.events)
    start = events[0][0]
    windows = int((events[-1][0] - start) // RATE_WINDOW)
    if windows == 0:
        return 0.0
    end = start + windows * RATE_WINDOW
    used = sum(amount(event, what) for event in events if event[0] < end)
    return used / (windows * limit)


def bench_limit(what: str, limit: float) -> Result:
    setting = "requests_per_minute" if what == "requests" else "tokens_per_minute"
    items = make_items(RATE_ITEMS)
    with ServerProcess() as server:
        seconds, _ = run_elicitor(
            server.base_url, items, **{setting: limit, "rate_window": RATE_WINDOW}
        )
        record = server.record()
    peak = record.max_in_window(RATE_WINDOW, what)
    use = use_of_limit(record, what, limit)
    met = peak <= limit and use >= MIN_USE
    print(
        f"{what} limit {limit:g} per {RATE_WINDOW:g} s: {RATE_ITEMS} items in {seconds:.1f} s; "
        f"most in any window {peak:g} ({peak / limit:.1%}); {use:.1%} of the limit used "
        "in the whole windows of the run"
    )
    return Result(
        f"{limit:g} {what} per {RATE_WINDOW:g} s window, {RATE_ITEMS} items",
        f"most in any window {peak:g} ({peak / limit:.1%}); {use:.1%} used; {seconds:.1f} s",
        f"<= {limit:g} in every window; >= {MIN_USE:.0%} used",
        met,
    )


# ---------------------------------------------------------------- report


def markdown_table(results: list[Result]) -> str:
    verdict = {True: "met", False: "**missed**", None: ""}
    lines = ["| run | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {r.run} | {r.measured} | {r.target} | {verdict[r.met]} |" for r in results]
    return "\n".join(lines)


def main() -> int:
    print(
        f"fault server: {LATENCY * 1000:.0f} ms per answer, in a child process; "
        f"{N_ITEMS} items at concurrency {CONCURRENCY}; rate-limit window {RATE_WINDOW:g} s\n"
    )
    results = bench_throughput_peer_and_rerun()
    results.append(bench_limit("requests", REQUEST_LIMIT))
    results.append(bench_limit("tokens", TOKEN_LIMIT))
    print()
    print(markdown_table(results))
    missed = [r.run for r in results if r.met is False]
    if missed:
        print(f"\nmissed: {'; '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
