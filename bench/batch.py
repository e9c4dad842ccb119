"""Batch path at scale: 200,000 items through ``verbcal elicit --batch`` and back.

Run as ``.venv/bin/python bench/batch.py`` (``--items N`` for another size).
The loopback Batch API of the test suite (``tests/batch_server.py``) runs in a
child process; every verbcal step runs as its own ``verbcal`` process, whose
peak resident memory is read from ``wait4``'s rusage.

1. Build and upload: ``verbcal elicit --batch`` writes the request files
   (under 50,000 requests and 200 MB each), uploads them, creates the batches
   and exits. Timed, with its peak memory (target: under 500 MB).
2. The server runs the batches (not timed: the provider's time); this script
   polls it with the ``openai`` SDK until every batch is completed.
3. Collect: ``verbcal batch collect`` downloads every output file and stores
   each answer in the cache. Timed, with its peak memory, and compared with
   the floor: one pass reading the same output files line by line (and, for
   reference, a pass that also decodes each line's JSON).
4. A plain ``verbcal elicit`` rerun: it must send 0 requests and write every
   prediction. Timed, with its peak memory.

Prints a markdown table; exits with status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
VERBCAL = [sys.executable, "-m", "verbcal.cli"]
MEMORY_TARGET_MB = 500.0
SENTENCE = (
    "the plot was thin but the acting carried it and the music was loud in places "
    "a quiet film about a family that never quite talks to each other"
)
WORDS = SENTENCE.split(" ")


def write_items(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = [WORDS[(i * 7 + k * 13) % len(WORDS)] for k in range(12 + i % 25)]
            label = "positive" if i % 2 else "negative"
            f.write(json.dumps({"id": f"r{i}", "text": f"#{i} " + " ".join(words), "label": label}))
            f.write("\n")


def run(args: list[str]) -> tuple[float, float, str]:
    """Run a verbcal command; return (seconds, its peak resident MB, its output)."""
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(VERBCAL + args, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this child alone
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if proc.returncode != 0:
        raise SystemExit(f"verbcal {' '.join(args[:2])} failed ({proc.returncode}):\n{text}")
    return seconds, usage.ru_maxrss / 1024, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    opts = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="verbcal-batch-bench-"))
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "batch_server.py"), "--rate", "1e9"],
        stdout=subprocess.PIPE,
        text=True,
    )
    rows: list[tuple[str, str, str]] = []
    missed = []
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().split()[-1]
        items = work / "items.jsonl"
        write_items(items, opts.items)
        cache = work / "cache.db"
        elicit = [
            "elicit", "--input", str(items), "--labels", "negative,positive", "--model", "m",
            "--base-url", base_url, "--out", str(work / "preds.jsonl"), "--cache", str(cache),
        ]  # fmt: skip

        # 1. build and upload
        seconds, peak, log = run(elicit + ["--batch"])
        files = re.search(r"written to (\d+) new request file", log)
        rows.append(("build + upload + create", f"{seconds:.1f} s", f"{peak:.0f} MB"))
        if peak > MEMORY_TARGET_MB:
            missed.append(f"build peak {peak:.0f} MB > {MEMORY_TARGET_MB:.0f} MB")
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=3, timeout=600)
        batches = list(client.batches.list(limit=100))
        sizes = [b.request_counts.total if b.request_counts else 0 for b in batches]
        print(f"{files.group(1) if files else '?'} request files, batches: {len(batches)}")
        input_sizes = [client.files.retrieve(b.input_file_id).bytes for b in batches]
        print(f"input file sizes (bytes): {sorted(input_sizes)}")

        # 2. the provider runs them (not timed)
        started = time.perf_counter()
        while True:
            states = [client.batches.retrieve(b.id) for b in batches]
            if all(b.status == "completed" for b in states):
                break
            time.sleep(0.5)
        print(f"server ran the batches in {time.perf_counter() - started:.1f} s")
        sizes = [b.request_counts.total for b in states]  # type: ignore[union-attr]
        if max(sizes) > 50_000 or max(input_sizes) > 200_000_000 or sum(sizes) != opts.items:
            missed.append(f"file limits or request count broken: {sizes}, {input_sizes}")

        # The floor: one pass reading the output files (downloaded here, outside the timing).
        outputs = []
        for b in states:
            path = work / f"{b.id}.out.jsonl"
            with client.files.with_streaming_response.content(str(b.output_file_id)) as r:
                r.stream_to_file(path)
            outputs.append(path)
        floor = _time_pass(outputs, decode=False)
        decoded = _time_pass(outputs, decode=True)

        # 3. collect
        seconds, peak, log = run(["batch", "collect", "--cache", str(cache)])
        stored = re.search(r"(\d+) answers stored", log)
        rows.append(("collect into the cache", f"{seconds:.1f} s", f"{peak:.0f} MB"))
        rows.append(("  floor: read the output files once", f"{floor:.2f} s", ""))
        rows.append(("  reference: read + json.loads each line", f"{decoded:.2f} s", ""))
        rows.append(("  collect / floor", f"{seconds / floor:.1f}x", ""))
        if peak > MEMORY_TARGET_MB:
            missed.append(f"collect peak {peak:.0f} MB > {MEMORY_TARGET_MB:.0f} MB")
        if not stored or int(stored.group(1)) != opts.items:
            missed.append(f"collect stored {stored.group(1) if stored else '?'} answers")

        # 4. plain rerun
        seconds, peak, log = run(elicit)
        sent = re.search(r"requests sent (\d+)", log)
        wrote = re.search(r"wrote (\d+) predictions", log)
        rows.append(("plain rerun (writes predictions)", f"{seconds:.1f} s", f"{peak:.0f} MB"))
        rows.append(("  requests sent by the rerun", sent.group(1) if sent else "?", ""))
        if not sent or sent.group(1) != "0" or not wrote or int(wrote.group(1)) != opts.items:
            missed.append("the rerun sent requests or wrote too few predictions")
    finally:
        server.kill()
        server.wait()
        if not opts.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{opts.items} items\n")
    print("| step | time | peak memory |\n|---|---|---|")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if missed else 0


def _time_pass(paths: list[Path], *, decode: bool) -> float:
    started = time.perf_counter()
    n = 0
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if decode:
                    json.loads(line)
                n += 1
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
