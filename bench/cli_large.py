"""The ``verbcal`` commands on a large predictions file, against the time to just read it.

Generates, in a temporary folder, a predictions JSONL of ``--rows`` items (default
600,000; 2 labels, every row labelled, a raw answer text of a few hundred
characters, about 200 MB), then runs as separate processes, one after another:

- the floor: a process that imports verbcal, reads and validates the file
  (``read_predictions`` + ``to_arrays``) and exits;
- ``verbcal fit --method auto``, ``evaluate --calibrator``, ``apply`` and ``report``.

For each it prints the wall time, the ratio to the floor (target <= 3), the peak
resident memory of the process (``ru_maxrss``) and that peak minus the resident
memory of a process that only imports verbcal, as a multiple of the arrays the
command needs (P and y: 24 bytes a row for 2 labels; target <= 4; the import-only
process imports everything the commands use), and whether it
printed a progress line to stderr when it ran longer than ``PROGRESS_AFTER``
seconds. Run once; the machine is shared, so expect noise of 10-20%.

Run: ``nice -n 10 .venv/bin/python bench/cli_large.py [--rows N] [--keep DIR [--reuse]]``
(``--reuse``: take ``DIR/preds.jsonl`` as it is when it exists, instead of writing it again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = 600_000
PROGRESS_AFTER = 5.0  # seconds
TARGET_TIME, TARGET_MEMORY = 3.0, 4.0
VERBCAL = [sys.executable, "-m", "verbcal.cli"]
FLOOR = (
    "import sys\n"
    "from verbcal.predictions import ITEM, read_predictions, to_arrays\n"
    "rows = to_arrays(read_predictions(sys.argv[1]), kind=ITEM)\n"
    "print(len(rows.ids))\n"
)
IMPORT_ONLY = (
    "import verbcal.cli, verbcal.predictions, verbcal.calibrators, verbcal.metrics, "
    "verbcal.report, verbcal.workflow, verbcal.persist\n"
)


def write_predictions_file(path: Path, n: int, seed: int = 0) -> None:
    """``n`` labelled 2-label rows with coarse stated values, written in chunks."""
    rng = np.random.default_rng(seed)
    stated = np.array([0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
    chunk = 50_000
    filler = "The passage states it plainly, so the answer follows. " * 4
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            conf = rng.choice(stated, size=m)
            says_yes = rng.random(m) < 0.6
            right = rng.random(m) < 0.8 * conf + 0.1
            lines = []
            for i in range(m):
                p_yes = float(conf[i] if says_yes[i] else round(1 - conf[i], 10))
                truth = (
                    ("yes" if says_yes[i] else "no")
                    if right[i]
                    else ("no" if says_yes[i] else "yes")
                )
                row = {
                    "id": f"item-{start + i:07d}",
                    "labels": ["yes", "no"],
                    "probs": {"yes": p_yes, "no": round(1 - p_yes, 10)},
                    "status": "ok",
                    "label": truth,
                    "raw": json.dumps({"yes": p_yes, "no": round(1 - p_yes, 10), "why": filler}),
                    "usage": {"prompt_tokens": 180, "completion_tokens": 60},
                }
                lines.append(json.dumps(row))
            out.write("\n".join(lines) + "\n")


def run(command: list[str]) -> dict:
    """Wall time, peak RSS (bytes) and stderr of one process."""
    start = time.perf_counter()
    env = {**os.environ, "VERBCAL_PROGRESS": "1"}  # progress lines as on a terminal
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": seconds,
        "peak": usage.ru_maxrss * 1024,  # Linux reports kilobytes
        "code": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temp dir")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: reuse DIR/preds.jsonl when it exists"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        preds = folder / "preds.jsonl"
        start = time.perf_counter()
        if args.reuse and args.keep and preds.exists():
            with preds.open("rb") as handle:
                args.rows = sum(1 for _ in handle)
            how = "reused"
        else:
            write_predictions_file(preds, args.rows)
            how = f"written in {time.perf_counter() - start:.1f} s"
        size = preds.stat().st_size
        print(f"{args.rows:,} rows, {size / 1e6:.0f} MB {how}")
        arrays = args.rows * (2 * 8 + 8)  # P (n x 2 float64) and y (int64)
        base = run([sys.executable, "-c", IMPORT_ONLY])
        floor = run([sys.executable, "-c", FLOOR, str(preds)])
        cal = folder / "cal.json"
        commands = {
            "read + validate (floor)": None,
            "fit --method auto": [
                *VERBCAL,
                "fit",
                "--preds",
                str(preds),
                "--method",
                "auto",
                "--out",
                str(cal),
            ],
            "evaluate --calibrator": [
                *VERBCAL,
                "evaluate",
                "--preds",
                str(preds),
                "--calibrator",
                str(cal),
            ],
            "apply": [
                *VERBCAL,
                "apply",
                "--preds",
                str(preds),
                "--calibrator",
                str(cal),
                "--out",
                str(folder / "applied.jsonl"),
            ],
            "report": [
                *VERBCAL,
                "report",
                "--preds",
                str(preds),
                "--calibrator",
                str(cal),
                "--out",
                str(folder / "report.html"),
            ],
        }
        print(
            f"arrays needed: {arrays / 1e6:.1f} MB; a process that only imports verbcal: "
            f"{base['peak'] / 1e6:.0f} MB resident\n"
        )
        print(
            f"{'command':26} {'seconds':>8} {'/floor':>7} {'peak MB':>8} "
            f"{'(peak-import)/arrays':>21}  progress line"
        )
        for name, command in commands.items():
            result = floor if command is None else run(command)
            if result["code"] != 0:
                print(f"{name:26} failed ({result['code']}): {result['stderr'][-300:]}")
                continue
            extra = f"{(result['peak'] - base['peak']) / arrays:.1f}" if command else "-"
            long = result["seconds"] > PROGRESS_AFTER
            shown = (
                "-"
                if command is None
                else (("yes" if result["stderr"].strip() else "NO") if long else "(short)")
            )
            print(
                f"{name:26} {result['seconds']:8.1f} {result['seconds'] / floor['seconds']:7.2f} "
                f"{result['peak'] / 1e6:8.0f} {extra:>21}  {shown}"
            )
        print(f"\ntargets: /floor <= {TARGET_TIME:g}, (peak-import)/arrays <= {TARGET_MEMORY:g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
