"""Pairwise judges on the shipped set: position bias, combined orders, calibration, ensemble.

    .venv/bin/python bench/pairwise.py [--n 60] [--judges qwen,smollm2]

Asks the first ``n`` pairs of ``verbcal/data/pairwise.jsonl`` in both orders with
the ``pairwise`` template, per judge (a local model). Prints per judge the
position bias (logit bonus of the first place, flip rate, share of answers
preferring the first shown, with intervals), then accuracy / ECE / NLL with 95%
bootstrap intervals of one order alone, of both orders combined in logit
space, and of the combination after temperature scaling fitted on the other
half. Then a logit ensemble of the judges (weights chosen by 5-fold CV) against
its best single judge on held-out pairs (two-fold: fit on one half, score the
other, and the reverse). Run it alone on the machine (see bench/live.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from live import load_line, local_server

from verbcal.cli import main as verbcal_main
from verbcal.errors import InvalidInputError
from verbcal.pairwise import (
    PAIR_LABELS,
    LogitEnsemble,
    combine_orders,
    load_pairwise_dataset,
    pair_items,
    pair_logits,
    position_bias,
)
from verbcal.predictions import read_predictions
from verbcal.workflow import evaluate, fit_calibrator, held_out

JUDGE_PORTS = {"qwen": 8766, "smollm2": 8767}


def cli(argv: list[str]) -> None:
    print("$ verbcal " + " ".join(argv), flush=True)
    code = verbcal_main(argv)
    if code != 0:
        raise SystemExit(f"verbcal {argv[0]} exited with {code}")


def nll(z, y):
    return float(np.mean(np.logaddexp(0, z) - y * z))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--judges", default="qwen,smollm2")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--work", default="pairwise-bench", help="folder for the CLI's files")
    args = parser.parse_args()
    pairs = load_pairwise_dataset()
    # every k-th pair, so arithmetic, factual and summary pairs all appear
    every = max(1, len(pairs) // args.n)  # so arithmetic, factual and summary pairs all appear
    pairs = pairs[::every][: args.n]
    items = pair_items(pairs)
    labels = list(PAIR_LABELS)
    logits, results = {}, {}
    for judge in args.judges.split(","):
        # The whole flow through the command line, against the real local server.
        work = Path(args.work) / judge
        work.mkdir(parents=True, exist_ok=True)
        both, combined_path = work / "both.jsonl", work / "combined.jsonl"
        cal = str(work / "temperature.json")
        cli(
            [
                "pairwise",
                "items",
                "--builtin",
                "--every",
                str(every),
                "--limit",
                str(len(pairs)),
                "--out",
                str(work / "items.jsonl"),
            ]
        )
        # A fixed port per judge: the cache key holds the base URL, so a rerun resumes.
        with local_server(judge, port=JUDGE_PORTS.get(judge)) as server:
            started = time.perf_counter()
            cli(["elicit", "--input", str(work / "items.jsonl"), "--labels", "A,B",
                 "--template", "pairwise", "--json-mode", "json_object", "--max-tokens", "96",
                 "--concurrency", "1", "--timeout", "300", "--model", server.model,
                 "--base-url", server.base_url, "--out", str(both)])  # fmt: skip
            seconds = (time.perf_counter() - started) / len(items)
        cli(["pairwise", "bias", "--preds", str(both)])
        cli(["pairwise", "combine", "--preds", str(both), "--out", str(combined_path)])
        cli(["fit", "--preds", str(combined_path), "--method", "temperature", "--out", cal])
        cli(["evaluate", "--preds", str(combined_path), "--calibrator", cal])
        cli(["report", "--preds", str(combined_path), "--calibrator", cal,
             "--out", str(work / "report.html")])  # fmt: skip
        predictions = read_predictions(both)
        print(f"\n{judge}: {len(pairs)} pairs × 2 orders, {seconds:.2f} s/request; {load_line()}")
        bias = position_bias(predictions)
        print("  " + "\n  ".join(bias.lines()))
        combined = combine_orders(predictions)
        first_only = [p for p in predictions if p.id.endswith("|AB")]
        record = fit_calibrator(combined, "temperature", holdout=0.5, seed=0)
        out = {"bias": bias.__dict__, "seconds_per_request": seconds}
        for name, preds, calibrate in (
            ("one order", first_only, False),
            ("both orders", combined, False),
            ("both + temperature", combined, True),
        ):
            ids = (
                [i + "|AB" for i in record.fitted_ids] if name == "one order" else record.fitted_ids
            )
            rows = held_out(preds, ids, labels)
            P = record.calibrator.predict_proba(rows.P) if calibrate else rows.P
            ev = evaluate(P, rows.y, n_boot=1000)
            cells = [
                f"{m} {ev[m][0]:.3f} [{ev[m][1]:.3f}, {ev[m][2]:.3f}]"
                for m in ("accuracy", "ece", "nll")
            ]
            print(f"  {name:19} (held-out {len(rows.y)}) " + "  ".join(cells))
            out[name] = ev.to_json()
        results[judge] = out
        rows = pair_logits(predictions)
        logits[judge] = {
            pid: np.mean([z for z in (r["z1"], r["z2"]) if z is not None])
            for pid, r in rows.items()
            if r["z1"] is not None or r["z2"] is not None
        }
    judges = list(logits)
    if len(judges) > 1:
        ensemble(pairs, logits, judges, results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1, default=float)


def ensemble(pairs, logits, judges, results) -> None:
    """Two-fold held-out comparison of the logit ensemble with each single judge."""
    try:
        common = [p.id for p in pairs if all(p.id in logits[j] for j in judges)]
        Z = np.array([[logits[j][pid] for j in judges] for pid in common])
        y = np.array([next(p for p in pairs if p.id == pid).winner == "A" for pid in common], float)
        halves = np.arange(len(y)) % 2 == 0
        ens_loss, single_loss = [], {j: [] for j in judges}
        for train in (halves, ~halves):
            test = ~train
            ens = LogitEnsemble(cv=3).fit(Z[train], y[train])
            ens_loss.append(nll(ens.decision_function(Z[test]), y[test]))
            for k, j in enumerate(judges):
                single = LogitEnsemble(cv=3).fit(Z[train][:, [k]], y[train])
                single_loss[j].append(nll(single.decision_function(Z[test][:, [k]]), y[test]))
            print(
                f"  ensemble choice on a half: {ens.choice_}, weights {np.round(ens.weights_, 3)}"
            )
        best = min(judges, key=lambda j: np.mean(single_loss[j]))
        print(
            f"\nheld-out NLL (two-fold): ensemble {np.mean(ens_loss):.4f}; "
            + ", ".join(f"{j} (recalibrated) {np.mean(v):.4f}" for j, v in single_loss.items())
            + f"; best single: {best}"
        )
        results["ensemble"] = {
            "nll": float(np.mean(ens_loss)),
            "single": {j: float(np.mean(v)) for j, v in single_loss.items()},
        }
    except InvalidInputError as exc:  # too few rows of one class in a half
        print(f"ensemble not compared: {exc}")


if __name__ == "__main__":
    main()
