"""Zero-shot vs few-shot vs few-shot with content-free exemplars, on the demo reviews.

    .venv/bin/python bench/fewshot.py [--n 60] [--k 4] [--random-probes 5] [--model qwen]

Asks ``n`` of the demo's reviews (every other one of :func:`verbcal.demo.demo_items`,
so the label, phenomenon and difficulty mix is kept) with the ``distribution``
template three ways: zero-shot; ``k`` exemplars from ``verbcal/data/review_shots.jsonl``
(written for this, not demo reviews), fixed for the run; and the same plus the
content-free exemplars ("N/A", "", "[MASK]" answered 50/50). Each way also asks
its own content-free probes. Then, on the same held-out half of the reviews,
prints accuracy, ECE and NLL with 95% bootstrap intervals: raw, after contextual
calibration (fitted on that way's probes) and after the automatic calibrator
(fitted on the other half). Run it alone on the machine (see bench/live.py).
``--replay`` re-scores the answers of an earlier run from the bench's response
cache, with no server (to re-measure after a calibrator changes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from importlib import resources

from live import ask, bench_cache, load_line, local_server, replay_server

from verbcal.data import DEMO_LABELS
from verbcal.demo import DEMO_PORT, demo_items, load_recording_into
from verbcal.elicit.probes import content_free_inputs
from verbcal.elicit.shots import few_shot
from verbcal.predictions import CONTENT_FREE, Item
from verbcal.workflow import evaluate, fit_calibrator, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--random-probes", type=int, default=5)
    parser.add_argument("--model", default="qwen")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--replay",
        action="store_true",
        help="answers from the bench's response cache only, no server (a missing one fails)",
    )
    args = parser.parse_args()
    pool = demo_items()
    items = pool[:: max(1, len(pool) // args.n)][: args.n]
    labels = list(DEMO_LABELS)
    probes = [
        Item(f"cf{i}", text)
        for i, text in enumerate(
            content_free_inputs([i.text for i in pool], n_random=args.random_probes)
        )
    ]
    shots = str(resources.files("verbcal.data").joinpath("review_shots.jsonl"))
    ways = {
        "zero-shot": "distribution",
        f"{args.k}-shot": few_shot("distribution", shots, labels=labels, k=args.k),
        f"{args.k}-shot + content-free": few_shot(
            "distribution", shots, labels=labels, k=args.k, content_free=True
        ),
    }
    print(f"{len(items)} reviews, {len(probes)} probes per way; {load_line()}")
    results = {}
    # Resumable; and on the demo's port the recorded zero-shot answers are cache hits.
    cache = bench_cache(f"fewshot-{args.model}")
    if args.model == "qwen":
        load_recording_into(cache)
    if args.replay:
        serving = contextlib.nullcontext(replay_server(args.model, port=DEMO_PORT))
    else:
        serving = local_server(args.model, port=DEMO_PORT)
    with serving as server:
        for way, template in ways.items():
            predictions, seconds = ask(server, items, labels, template=template, cache=cache)
            timing = "replayed" if args.replay else f"{seconds:.2f} s/request"
            more, _ = ask(server, probes, labels, template=template, kind=CONTENT_FREE, cache=cache)
            predictions += more
            auto = fit_calibrator(predictions, "auto", holdout=0.5, seed=0)
            contextual = fit_calibrator(predictions, "contextual", holdout=0.5, seed=0)
            rows = held_out(predictions, auto.fitted_ids, labels)
            assert rows.y is not None
            parsed = sum(p.probs is not None for p in predictions if p.kind == "item")
            print(
                f"\n{way}: {timing}, {parsed}/{len(items)} parsed, "
                f"held-out {len(rows.y)}; {load_line()}"
            )
            per_request = None if args.replay else seconds
            results[way] = {"seconds_per_request": per_request, "parsed": parsed}
            for name, P in (
                ("raw", rows.P),
                ("contextual", contextual.calibrator.predict_proba(rows.P)),
                ("auto", auto.calibrator.predict_proba(rows.P)),
            ):
                ev = evaluate(P, rows.y, n_boot=1000)
                cells = [
                    f"{m} {ev[m][0]:.3f} [{ev[m][1]:.3f}, {ev[m][2]:.3f}]"
                    for m in ("accuracy", "ece", "nll")
                ]
                print(f"  {name:11} " + "  ".join(cells))
                results[way][name] = ev.to_json()
    if args.json:
        with open(args.json, "w") as handle:
            note = (
                f"{len(items)} demo reviews, {len(probes)} probes per way, model {args.model}, "
                f"k={args.k}; held-out half scored; {load_line()} at the end"
            )
            if args.replay:
                note += "; replayed from the bench's response cache (no server)"
            json.dump({"ways": results, "note": note}, handle, indent=1)


if __name__ == "__main__":
    main()
