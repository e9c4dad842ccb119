"""The ``verbcal`` command: elicit, fit, apply, evaluate, threshold, route, conformal, report, demo.

Every subcommand reads and writes files, so they compose in a shell pipeline.
Exit codes: 0 done; 1 the work ran but did not fully succeed (e.g. every item
failed); 2 bad usage or bad input; 3 the model endpoint failed for good;
130 interrupted (rerun to resume: nothing answered is asked again). A reader
that closes the pipe early (``verbcal evaluate --json | head``) ends the
command quietly with 1: its output was cut short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from verbcal import __version__
from verbcal.cli_batch import (
    add_batch_command,
    add_batch_options,
    run_batch_command,
    run_batch_stage,
)
from verbcal.cli_pairwise import add_pairwise_command
from verbcal.cli_providers import (
    add_provider_options,
    backend_options,
    run_dry,
)
from verbcal.cli_suggest import add_suggest_labels_command
from verbcal.errors import BackendError, VerbcalError

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_BACKEND, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Progress:
    """A one-line progress bar on stderr (plain periodic lines when not a terminal)."""

    def __init__(self, what: str, stream=None) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < (0.1 if self.tty else 5.0):
            return
        self.last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = f"{self.what} [{bar}] {done}/{total} {rate:.1f}/s"
        if self.tty:
            end = "\n" if done >= total else ""
            self.stream.write(f"\r{line}{end}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _labels(text: str) -> list[str]:
    labels = [part.strip() for part in text.split(",")]
    if len(labels) < 2 or not all(labels):
        raise argparse.ArgumentTypeError(f"expected at least two comma-separated labels: {text!r}")
    return labels


def _number(kind: str, low: float | None, high: float | None = None, closed: str = "both"):
    """An argparse type: a number inside an interval, refused with the interval's words."""
    from verbcal.validation import Interval

    interval = Interval(kind, low, high, closed)  # type: ignore[arg-type]

    def convert(text: str) -> float | int:
        try:
            value: float | int = int(text) if kind == "integer" else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {interval}, got {text!r}") from None
        if not interval.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {interval}, got {text!r}")
        return value

    convert.__name__ = str(interval)  # argparse names the type in its messages
    return convert


#: Fewest bootstrap resamples: fewer give 95% intervals that are mostly noise.
MIN_BOOT = 100


def _aliases(text: str) -> dict[str, str]:
    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not all(len(p) == 2 and p[0].strip() and p[1].strip() for p in pairs):
        raise argparse.ArgumentTypeError(f"expected ALIAS=LABEL[,ALIAS=LABEL…]: {text!r}")
    return {alias.strip(): label.strip() for alias, label in pairs}


# --------------------------------------------------------------------------- elicit


def _add_elicit(sub) -> None:
    p = sub.add_parser(
        "elicit",
        help="ask a chat model for a probability per label on every item",
        description="Ask an OpenAI-compatible chat model for a probability per label on "
        "every item of a CSV/JSONL file and write predictions JSONL. Every answer is "
        "stored in the response cache before it is used: rerun the same command to "
        "resume an interrupted run.",
    )
    p.add_argument("--input", required=True, type=Path, help="items, .csv or .jsonl")
    p.add_argument("--labels", required=True, type=_labels, help="label set, e.g. neg,pos")
    p.add_argument("--model", required=True, help="model name sent to the endpoint")
    p.add_argument("--base-url", help="endpoint root (default: $OPENAI_BASE_URL, then OpenAI)")
    p.add_argument("--template", default="distribution", help="template name or path")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label", help="gold label column, if any")
    p.add_argument("--id-field", default="id")
    p.add_argument("--out", required=True, type=Path, help="predictions JSONL to write")
    p.add_argument("--cache", type=Path, help="response cache (default: OUT with .cache.db)")
    p.add_argument("--encoding", default="utf-8", help="text encoding of --input (default utf-8)")
    p.add_argument(
        "--concurrency",
        type=_number("integer", 1),
        default=8,
        help="requests in flight (default 8)",
    )
    p.add_argument("--rpm", type=_number("real", 0, closed="neither"), help="requests per minute")
    p.add_argument("--tpm", type=_number("real", 0, closed="neither"), help="tokens per minute")
    p.add_argument(
        "--timeout",
        type=_number("real", 0, closed="neither"),
        default=60.0,
        help="seconds per request attempt (default 60)",
    )
    p.add_argument(
        "--json-mode",
        choices=["none", "json_object", "json_schema"],
        default="none",
        help="constrain answers: json_schema (OpenAI), json_object (llama.cpp), none",
    )
    p.add_argument(
        "--samples", type=_number("integer", 1), default=1, help="answers per item, averaged"
    )
    p.add_argument("--temperature", type=_number("real", 0, 2), default=0.0, help="0 to 2")
    p.add_argument(
        "--max-tokens",
        type=_number("integer", 1),
        help="answer-length cap (default: the provider's, 256 or 4096 for reasoning models)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aliases", type=_aliases, help="other label names, e.g. Yes=True,No=False")
    p.add_argument("--logprobs", action="store_true", help="also record token probabilities")
    p.add_argument(
        "--probes",
        action="store_true",
        help="also elicit content-free probes (N/A, '', [MASK], random in-domain words) "
        "for contextual calibration",
    )
    p.add_argument("--n-random-probes", type=_number("integer", 0), default=20)
    p.add_argument(
        "--shots", type=Path, help="labelled exemplars (JSONL: text, label[, probs, reasoning])"
    )
    p.add_argument("--k", type=_number("integer", 0), default=4, help="exemplars per item")
    p.add_argument(
        "--shots-per-item",
        action="store_true",
        help="choose the exemplars per item (seeded by its text) instead of once per run",
    )
    p.add_argument(
        "--content-free-shots",
        action="store_true",
        help="add exemplars 'N/A', '' and '[MASK]' answered with the uniform distribution",
    )
    p.add_argument(
        "--on-suspect",
        choices=["keep", "skip"],
        default="keep",
        help="items that look like prompt injections (answer JSON, fence lines, override "
        "phrasing) are flagged 'suspect'; skip: do not send them (default keep)",
    )
    add_batch_options(p)
    add_provider_options(p)
    p.set_defaults(run=_run_elicit)


def _run_elicit(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output
    from verbcal.predictions import CONTENT_FREE, read_items, write_predictions

    # Everything that can be refused is refused before the cache file is made and
    # before the first request is paid for (files first: before the heavy imports).
    items = read_items(
        args.input,
        text_field=args.text_field,
        label_field=args.label_field,
        id_field=args.id_field,
        labels=args.labels,
        encoding=args.encoding,
    )
    cache_path = args.cache or args.out.with_suffix(".cache.db")
    read = {"--input": args.input, "--shots": args.shots, "--prices": args.prices}
    check_output(args.out, "--out", {**read, "--cache": cache_path})
    check_output(cache_path, "--cache", read)

    from verbcal.elicit.backend import OpenAIBackend
    from verbcal.elicit.cache import ResponseCache
    from verbcal.elicit.elicitor import Elicitor
    from verbcal.elicit.injection import flag_predictions, skip_suspects

    all_items, skipped = items, []
    if args.on_suspect == "skip":
        items, skipped = skip_suspects(items, args.labels)
    template = args.template
    if args.shots is not None or args.content_free_shots:
        from verbcal.elicit.shots import few_shot

        template = few_shot(
            args.template,
            args.shots or (),
            labels=args.labels,
            k=args.k if args.shots is not None else 0,
            per_item=args.shots_per_item,
            seed=args.seed,
            content_free=args.content_free_shots,
        )

    def make_backend(cache=None, api_key=None):
        return OpenAIBackend(
            args.model,
            base_url=args.base_url,
            api_key=api_key,
            **backend_options(args),
            cache=cache,
            max_concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            timeout=args.timeout,
        )

    def make_elicitor(backend):
        return Elicitor(
            backend,
            args.labels,
            template=template,
            json_mode=args.json_mode,
            samples=args.samples,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            seed=args.seed,
            aliases=args.aliases,
            logprobs=args.logprobs,
            reasoning_effort=args.reasoning_effort,
        )

    if args.dry_run:
        return run_dry(args, items, make_backend, make_elicitor, cache_path)
    elicitor = make_elicitor(make_backend())  # checks labels, template and options
    print(elicitor.backend.profile.describe(), file=sys.stderr)
    probes = []
    if args.probes:
        probes = elicitor.probe_items([item.text for item in items], n_random=args.n_random_probes)

    async def run(backend):
        async with backend:
            elicitor = make_elicitor(backend)
            predictions, summary = await elicitor.arun(items, progress=Progress("elicit"))
            summaries = [("items", summary)]
            if probes:
                more, probe_summary = await elicitor.arun(
                    probes, kind=CONTENT_FREE, progress=Progress("probes")
                )
                predictions += more
                summaries.append(("content-free probes", probe_summary))
            return predictions, summaries

    cache = ResponseCache(cache_path)
    try:
        if args.batch:
            code = run_batch_stage(args, cache, items, lambda: make_backend(cache), make_elicitor)
            if code is not None:
                return code
        predictions, summaries = asyncio.run(run(make_backend(cache)))
    finally:
        cache.close()
    position = {item.id: i for i, item in enumerate(all_items)}
    predictions = sorted(
        predictions + skipped, key=lambda p: (p.kind == CONTENT_FREE, position.get(p.id, 0))
    )
    n_suspect = flag_predictions(predictions, all_items)
    write_predictions(args.out, predictions)
    if n_suspect:
        what = "skipped" if args.on_suspect == "skip" else "elicited anyway"
        print(f"{n_suspect} items flagged suspect (prompt injection?), {what}", file=sys.stderr)
    for what, summary in summaries:
        print(f"{what}: {summary}", file=sys.stderr)
    print(f"wrote {len(predictions)} predictions to {args.out} (cache: {cache_path})")
    parsed = sum(p.probs is not None for p in predictions)
    return EXIT_OK if parsed else EXIT_INCOMPLETE


# --------------------------------------------------------------------------- fit / apply


def _add_fit(sub) -> None:
    from verbcal.methods import METHODS

    methods = "\n".join(f"  {name:24} {text}" for name, (_, text) in METHODS.items())
    p = sub.add_parser(
        "fit",
        help="fit a calibrator on predictions and save it as JSON",
        description="Fit a calibrator on predictions JSONL. Labelled methods fit on the rows "
        "not held out (--holdout, default 0.5) and record which ids they used, so that "
        "evaluate/threshold/report use only the other rows.\n\nmethods:\n" + methods,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preds", required=True, type=Path, help="predictions JSONL from elicit")
    p.add_argument("--method", required=True, choices=list(METHODS), metavar="METHOD")
    p.add_argument("--out", required=True, type=Path, help="calibrator JSON to write")
    p.add_argument(
        "--holdout",
        type=_number("real", 0, 1, closed="left"),
        default=0.5,
        help="share of the labelled rows kept out of the fit, in [0, 1) (default 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.set_defaults(run=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output

    check_output(args.out, "--out", {"--preds": args.preds})  # before the heavy imports
    from verbcal.persist import save_calibrator
    from verbcal.prediction_columns import arrays_of, read_compact
    from verbcal.predictions import ITEM
    from verbcal.workflow import METHODS, fit_calibrator

    read = [read_compact(args.preds)]
    labelled = METHODS[args.method][0] in ("labels", "both")
    left_out = arrays_of(read[0], kind=ITEM).n_unlabelled if labelled else 0
    # fit_calibrator holds the only reference: the columns are freed once it has read them
    record = fit_calibrator(read.pop(), args.method, holdout=args.holdout, seed=args.seed)
    save_calibrator(args.out, record)
    explanation = getattr(record.calibrator, "explanation_", "")
    print(
        f"fitted {args.method} on {len(record.fitted_ids)} {'labelled ' if labelled else ''}rows",
        end="",
    )
    print(f" and {record.n_probes} content-free probes" if record.n_probes else "")
    if left_out:
        print(
            f"left out {left_out} rows without a gold label (they stay usable by threshold "
            "and apply)"
        )
    if explanation:
        print(explanation)
    print(f"wrote {args.out}")
    return EXIT_OK


def _add_apply(sub) -> None:
    p = sub.add_parser(
        "apply",
        help="write calibrated predictions",
        description="Apply a saved calibrator to predictions JSONL; rows that failed to "
        "parse are copied unchanged. Each calibrated row gets 'calibrated_by': METHOD.",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    _add_allow_calibrated(p)
    p.set_defaults(run=_run_apply)


def _add_allow_calibrated(p) -> None:
    p.add_argument(
        "--allow-calibrated",
        action="store_true",
        help="accept predictions that were already calibrated (rows with calibrated_by)",
    )


def _refuse_calibrated(args: argparse.Namespace, predictions) -> None:
    """Calibrating calibrated rows again is almost always a mistake: refuse unless allowed."""
    from verbcal.prediction_columns import first_calibrated

    done = first_calibrated(predictions)
    if done is not None and not args.allow_calibrated:
        raise _usage_error(
            f"{args.preds}: the predictions were already calibrated ({done[0]!r}, "
            f"row {done[1]!r}); give the uncalibrated predictions, or --allow-calibrated"
        )


def _run_apply(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output

    check_output(args.out, "--out", {"--preds": args.preds, "--calibrator": args.calibrator})
    from verbcal.persist import load_calibrator
    from verbcal.prediction_columns import PredictionColumns, read_compact
    from verbcal.predictions import write_predictions
    from verbcal.workflow import apply_calibrator, apply_calibrator_to_file

    record = load_calibrator(args.calibrator)
    predictions = read_compact(args.preds)
    _refuse_calibrated(args, predictions)
    if isinstance(predictions, PredictionColumns):  # streamed: no row object is kept
        written = apply_calibrator_to_file(record, predictions, args.out)
    else:
        calibrated = apply_calibrator(record, predictions)
        write_predictions(args.out, calibrated)
        written = len(calibrated)
    print(f"wrote {written} calibrated predictions to {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics before and after calibration, with bootstrap intervals",
        description="Accuracy, ECE, MCE, classwise ECE, Brier and NLL with bootstrap 95% "
        "intervals on labelled rows: before calibration, and after it when --calibrator is "
        "given (then only rows the calibrator was not fitted on are used).",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", type=Path)
    p.add_argument(
        "--n-boot",
        type=_number("integer", MIN_BOOT),
        default=200,
        help=f"bootstrap resamples, at least {MIN_BOOT} (default 200)",
    )
    _add_allow_calibrated(p)
    _add_decision_options(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_run_evaluate)


def _parse_bands(text: str):
    from verbcal.decisions import parse_bands  # on use: it imports SciPy

    return parse_bands(text)


def _add_decision_options(p) -> None:
    p.add_argument(
        "--bands",
        type=_argparse_type(_parse_bands),
        default=(0.6, 0.8),
        metavar="CUTS",
        help="cuts of the confidence bands for calibration per band (default 0.6,0.8: "
        "low, medium, high)",
    )
    p.add_argument(
        "--costs",
        type=Path,
        help="JSON costs of each (decision, truth) pair, 'abstain' allowed "
        "(format: see verbcal.decisions): Bayes decisions, predicted vs realised cost, "
        "regret against the best fixed threshold",
    )


def _argparse_type(parse):
    """An argparse type from a parser that raises ConfigurationError."""
    from verbcal.errors import ConfigurationError

    def convert(text: str):
        try:
            return parse(text)
        except ConfigurationError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _decision_results(args, labels, sides: dict) -> dict:
    """Calibration per band and, with --costs, cost evaluations, for each probability side."""
    from verbcal.decisions import band_calibration, evaluate_costs, load_costs

    y = sides.pop("y")
    out: dict = {"bands": {n: band_calibration(P, y, args.bands) for n, P in sides.items()}}
    if args.costs:
        costs = load_costs(args.costs, labels)
        out["costs"] = {
            n: evaluate_costs(P, costs, y, n_boot=args.n_boot) for n, P in sides.items()
        }
    return out


def _run_evaluate(args: argparse.Namespace) -> int:
    from verbcal.persist import load_calibrator
    from verbcal.prediction_columns import PredictionColumns, arrays_of, read_compact
    from verbcal.predictions import ITEM
    from verbcal.workflow import calibrate, evaluate, held_out

    predictions = read_compact(args.preds)
    if args.calibrator:
        record = load_calibrator(args.calibrator)
        _refuse_calibrated(args, predictions)
        rows = held_out(predictions, record.fitted_ids, record.labels)
    else:
        record, rows = None, arrays_of(predictions, kind=ITEM)
    if rows.y is None:
        raise _usage_error(f"{args.preds}: evaluation needs predictions with gold labels")
    result: dict[str, Any] = {
        "rows": len(rows.ids),
        "failed_to_parse": rows.n_failed,
        "unlabelled_left_out": rows.n_unlabelled,
        "suspect": predictions.n_suspect()
        if isinstance(predictions, PredictionColumns)
        else sum(bool(p.suspect) for p in predictions if p.kind == ITEM),
    }
    del predictions  # rows holds copies of what is left to use: the file's columns can go
    result["before"] = evaluate(rows.P, rows.y, n_boot=args.n_boot).to_json()
    sides = {"y": rows.y, "before": rows.P}
    if record is not None:
        result["method"] = record.method
        Q = calibrate(record, rows)
        result["after"] = evaluate(Q, rows.y, n_boot=args.n_boot).to_json()
        sides["after"] = Q
    decided = _decision_results(args, rows.labels, sides)
    result["bands"] = {n: [b.to_json() for b in v] for n, v in decided["bands"].items()}
    if "costs" in decided:
        result["costs"] = {n: e.to_json() for n, e in decided["costs"].items()}
    if args.json:
        print(json.dumps(result, indent=1))
        return EXIT_OK
    which = "held-out labelled rows" if record is not None else "labelled rows"
    left_out = f"{rows.n_failed} unparsed"
    if rows.n_unlabelled:
        left_out += f" and {rows.n_unlabelled} unlabelled"
    print(f"{result['rows']} {which} ({left_out} rows left out)")
    if result["suspect"]:
        print(f"{result['suspect']} items flagged suspect (possible prompt injection)")
    header = f"{'metric':14} {'before':>26}"
    if record is not None:
        header += f" {'after (' + record.method + ')':>26}"
    print(header)
    for name, (value, low, high) in result["before"].items():
        line = f"{name:14} {value:>8.4f} [{low:.4f}, {high:.4f}]"
        if "after" in result:
            a, lo, hi = result["after"][name]
            line += f" {a:>8.4f} [{lo:.4f}, {hi:.4f}]"
        print(line)
    from verbcal.decisions import format_bands, format_costs

    print()
    print("\n".join(format_bands(decided["bands"])))
    if "costs" in decided:
        print()
        print("\n".join(format_costs(decided["costs"])))
    return EXIT_OK


# --------------------------------------------------------------------------- route


def _add_route(sub) -> None:
    p = sub.add_parser(
        "route",
        help="answer confident items automatically, hand the rest to a person",
        description="Decide every item: 'auto' with a label, or 'human'. With "
        "--target-accuracy, answer when the calibrated top probability reaches the threshold "
        "that gives that accuracy on the automatic answers (chosen on the labelled rows the "
        "calibrator was fitted on; with --guarantee G the accuracy on new items holds with "
        "probability G). With --costs, take the decision of least expected cost ('abstain' "
        "goes to a person). Unparsed answers go to a person. Writes one JSON object per item "
        "and prints the coverage to expect (and, on labelled held-out items, what was "
        "realised). Exit 1 when the target cannot be reached (or guaranteed).",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", required=True, type=Path)
    rule = p.add_mutually_exclusive_group(required=True)
    rule.add_argument(
        "--target-accuracy",
        type=_number("real", 0, 1, "right"),
        help="accuracy wanted on the automatic answers, e.g. 0.95",
    )
    rule.add_argument("--costs", type=Path, help="JSON costs per (decision, truth) pair")
    p.add_argument(
        "--guarantee",
        type=_number("real", 0.5, 1, "neither"),
        help="probability (0.5-1) that the accuracy holds on new items",
    )
    p.add_argument(
        "--labelled",
        type=Path,
        help="labelled predictions to choose the threshold on (default: the labelled rows "
        "of --preds the calibrator was fitted on); for routing new, unlabelled items",
    )
    p.add_argument("--out", required=True, type=Path, help="routed JSONL to write")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_run_route)


def _run_route(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from verbcal.decisions import load_costs
    from verbcal.outputs import check_output
    from verbcal.persist import load_calibrator
    from verbcal.predictions import read_predictions
    from verbcal.routing import route_predictions, write_routed

    check_output(
        args.out,
        "--out",
        {
            "--preds": args.preds,
            "--calibrator": args.calibrator,
            "--costs": args.costs,
            "--labelled": args.labelled,
        },
    )
    record = load_calibrator(args.calibrator)
    predictions = read_predictions(args.preds)
    costs = None if args.costs is None else load_costs(args.costs, record.labels)
    routing = route_predictions(
        predictions,
        record,
        target_accuracy=args.target_accuracy,
        guarantee=args.guarantee,
        costs=costs,
        labelled=None if args.labelled is None else read_predictions(args.labelled),
    )
    write_routed(args.out, routing)
    if args.json:
        summary = {
            "rule": routing.rule,
            "selection": None if routing.selection is None else asdict(routing.selection),
            "expected": routing.expected,
            "realised": routing.realised,
            "out": str(args.out),
        }
        print(json.dumps(summary, indent=1))
    else:
        print("\n".join(routing.summary_lines()))
        print(f"wrote {len(routing.rows)} decisions to {args.out}")
    met = routing.selection is None or routing.selection.met
    return EXIT_OK if met else EXIT_INCOMPLETE


# --------------------------------------------------------------------------- conformal


def _add_conformal(sub) -> None:
    from verbcal.conformal import SCORES

    p = sub.add_parser(
        "conformal",
        help="a label set per item that holds the true label with probability >= 1 - alpha",
        description="Split-conformal label sets from calibrated probabilities: each item gets "
        "the labels whose nonconformity score is within the threshold calibrated on the "
        "labelled items the calibrator was not fitted on, so the set holds the true label "
        "with probability at least 1 - alpha (marginally, or for every class with "
        "--class-conditional). Scores: lac (smallest sets), aps and raps (adaptive; "
        "randomised). Writes one JSON object per item: id, set, size.",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", required=True, type=Path)
    p.add_argument(
        "--alpha",
        type=_number("real", 0, 1, "neither"),
        default=0.1,
        help="miscoverage allowed (default 0.1: sets hold the truth >= 90%% of the time)",
    )
    p.add_argument("--score", choices=SCORES, default="lac", help="nonconformity score")
    p.add_argument("--class-conditional", action="store_true", help="coverage per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the aps/raps randomisation")
    p.add_argument(
        "--labelled",
        type=Path,
        help="labelled predictions to calibrate the sets on (those the calibrator was not "
        "fitted on; default: the labelled rows of --preds it was not fitted on)",
    )
    p.add_argument("--out", required=True, type=Path, help="label sets JSONL to write")
    p.set_defaults(run=_run_conformal)


def _run_conformal(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output
    from verbcal.persist import load_calibrator
    from verbcal.predictions import read_predictions
    from verbcal.routing import conformal_predictions, write_routed

    check_output(
        args.out,
        "--out",
        {"--preds": args.preds, "--calibrator": args.calibrator, "--labelled": args.labelled},
    )
    record = load_calibrator(args.calibrator)
    result = conformal_predictions(
        read_predictions(args.preds),
        record,
        alpha=args.alpha,
        score=args.score,
        class_conditional=args.class_conditional,
        seed=args.seed,
        labelled=None if args.labelled is None else read_predictions(args.labelled),
    )
    write_routed(args.out, result)
    print("\n".join(result.summary_lines()))
    print(f"wrote {len(result.rows)} label sets to {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- threshold


def _add_threshold(sub) -> None:
    p = sub.add_parser(
        "threshold",
        help="pick a threshold for a target precision or recall",
        description="Choose the threshold on the calibrated probability of --positive that "
        "meets a target precision (or recall). The threshold is chosen on the labelled rows "
        "the calibrator was fitted on when there are any, else from the calibrated "
        "probabilities alone. On the other rows it reports the precision and recall "
        "realised (when they are labelled) and the precision predicted without labels. "
        "With --guarantee G the target must hold on new rows with probability at least G "
        "over the labelled calibration rows (Learn-then-Test with Clopper-Pearson bounds); "
        "when no threshold can be guaranteed it says how many labelled rows would do, and "
        "exits with 1.",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", required=True, type=Path)
    p.add_argument("--positive", required=True, help="the label treated as positive")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-precision", type=_number("real", 0, 1, closed="right"))
    target.add_argument("--target-recall", type=_number("real", 0, 1, closed="right"))
    _add_allow_calibrated(p)
    p.add_argument(
        "--guarantee",
        type=float,
        help="probability (0.5-1) that the target holds on new rows, e.g. 0.95",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run_threshold)


def _run_threshold(args: argparse.Namespace) -> int:
    from verbcal.persist import load_calibrator
    from verbcal.predictions import read_predictions
    from verbcal.workflow import choose_threshold

    record = load_calibrator(args.calibrator)
    if args.positive not in record.labels:
        raise _usage_error(f"--positive {args.positive!r} is not one of {record.labels}")
    predictions = read_predictions(args.preds)
    _refuse_calibrated(args, predictions)
    result = choose_threshold(
        predictions,
        record,
        args.positive,
        target_precision=args.target_precision,
        target_recall=args.target_recall,
        guarantee=args.guarantee,
    ).to_json()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    if not result["met"]:
        why = result.get("explanation") or (
            f"no threshold reaches {result['target']} {result['target_value']:g} for "
            f"{result['positive']!r} on the {result['chosen_on']}; the closest, "
            f"{result['threshold']:.4g}, is reported"
        )
        print(f"verbcal threshold: target not met: {why}", file=sys.stderr)
    return EXIT_OK if result["met"] else EXIT_INCOMPLETE


def _usage_error(message: str):
    from verbcal.errors import InvalidInputError

    return InvalidInputError(message)


# --------------------------------------------------------------------------- report


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML reliability report",
        description="Write one self-contained HTML file: reliability diagrams before/after "
        "calibration with per-bin intervals, confidence histograms, metrics with bootstrap "
        "intervals, per-class calibration, the calibrator, parse statuses, the "
        "precision-recall curve with operating points, the risk-coverage curve and routing "
        "table, calibration per confidence band (--bands), Bayes decisions under --costs, "
        "items flagged as possible prompt injections (by reason, skipped or kept, and the "
        "flagged rows against the others) and a plain-language summary. Only rows the "
        "calibrator was not fitted on are used.",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", type=Path, help="omit to report on the raw probabilities")
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--positive", help="label for the precision-recall curve")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=_number("real", 0, 1, closed="right"))
    target.add_argument("--target-recall", type=_number("real", 0, 1, closed="right"))
    p.add_argument("--title", default="Calibration report")
    _add_decision_options(p)
    _add_allow_calibrated(p)
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output

    check_output(
        args.out,
        "--out",
        {"--preds": args.preds, "--calibrator": args.calibrator, "--costs": args.costs},
    )
    from verbcal.decisions import load_costs
    from verbcal.persist import load_calibrator
    from verbcal.prediction_columns import labels_of, read_compact
    from verbcal.report import report_from_predictions, write_report

    predictions = read_compact(args.preds)
    labels = labels_of(predictions) or []
    record = load_calibrator(args.calibrator) if args.calibrator else None
    costs = None if args.costs is None else load_costs(args.costs, labels)
    if record is not None:
        _refuse_calibrated(args, predictions)
    if args.positive is not None and args.positive not in labels:
        raise _usage_error(f"--positive {args.positive!r} is not one of {labels}")
    # report_from_predictions holds the only reference: the columns are freed once it has read them
    read = [predictions]
    del predictions
    data = report_from_predictions(
        read.pop(),
        record,
        positive=args.positive,
        target_precision=args.target_precision,
        target_recall=args.target_recall,
        title=args.title,
        costs=costs,
        bands=args.bands,
    )
    path = write_report(args.out, data)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    flagged = data.suspects
    if flagged is not None and flagged.n_flagged:  # the count `evaluate` prints, and what became
        print(
            f"{flagged.n_flagged} items flagged suspect (possible prompt injection): "
            f"{flagged.n_skipped} skipped, {flagged.n_kept} kept, {flagged.n_reported} reported"
        )
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole job on a real local model (or a shipped recording)",
        description="Elicit a stratified quarter of the demo reviews (101 of 372) and "
        "content-free probes from a real local model (Qwen2.5-Coder-1.5B-Instruct, fetched "
        "by scripts/setup.sh, in a llama.cpp server on 127.0.0.1 that verbcal starts and "
        "stops; about 6 minutes on an idle 2-core machine), fit temperature, contextual and "
        "auto calibration on one half, evaluate on the other (accuracy, NLL and ECE with "
        "intervals), pick a precision operating point and write the HTML report. "
        "--replay uses the shipped recording of the same model on half of the reviews (191) "
        "instead (no server, seconds); --base-url/--model runs against any other endpoint.",
    )
    p.add_argument("--out-dir", type=Path, default=Path("verbcal-demo"), help="output folder")
    p.add_argument("--replay", action="store_true", help="use the shipped recording")
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint instead of the local one")
    p.add_argument("--model", help="model name at --base-url")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from verbcal.demo import run_demo

    if args.replay and args.base_url:
        raise _usage_error("--replay and --base-url exclude each other")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        raise _usage_error(f"--out-dir {args.out_dir} is a file: give a folder")
    result = run_demo(
        args.out_dir,
        replay=args.replay,
        base_url=args.base_url,
        model=args.model,
        progress=Progress("elicit"),
    )
    print(f"open {result.report.resolve()}")
    return EXIT_OK


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``verbcal`` command."""
    parser = argparse.ArgumentParser(
        prog="verbcal",
        description="Calibrate the verbalized probabilities of API-only language models.",
    )
    parser.add_argument("--version", action="version", version=f"verbcal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_elicit(sub)
    _add_fit(sub)
    _add_apply(sub)
    _add_evaluate(sub)
    add_suggest_labels_command(sub)
    add_pairwise_command(sub)
    _add_threshold(sub)
    _add_route(sub)
    _add_conformal(sub)
    _add_report(sub)
    _add_demo(sub)
    add_batch_command(sub, run_batch_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``verbcal`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_sigterm = _stop_on_sigterm()
    stop_progress = _progress_lines(args.command)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (`verbcal evaluate --json | head`): not an error worth a
        # traceback, but the output was cut short. Later writes go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_INCOMPLETE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackendError as exc:
        print(f"verbcal {args.command}: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    except VerbcalError as exc:
        print(f"verbcal {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file that could not be read or written after the checks
        print(f"verbcal {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        stop_progress()
        restore_sigterm()


#: A command still running after PROGRESS_AFTER seconds says so on stderr, then every
#: PROGRESS_EVERY seconds (on a terminal, or with VERBCAL_PROGRESS=1).
PROGRESS_AFTER, PROGRESS_EVERY = 3.0, 10.0

#: Commands that report their own progress.
_OWN_PROGRESS = frozenset({"elicit", "demo", "batch"})


def _progress_lines(command: str) -> Callable[[], None]:
    """Start printing "verbcal COMMAND: still working (N s)" while a long command runs.

    Returns the function that stops it. Nothing is printed when stderr is not a
    terminal (unless ``VERBCAL_PROGRESS=1``): pipes and logs keep only results.
    """
    wanted = sys.stderr.isatty() or os.environ.get("VERBCAL_PROGRESS") == "1"
    if command in _OWN_PROGRESS or not wanted:
        return lambda: None
    done = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        wait = PROGRESS_AFTER
        while not done.wait(wait):
            elapsed = time.monotonic() - start
            print(
                f"verbcal {command}: still working ({elapsed:.0f} s)", file=sys.stderr, flush=True
            )
            wait = PROGRESS_EVERY

    thread = threading.Thread(target=tick, name="verbcal-progress", daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join(timeout=1.0)

    return stop


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C until the returned function restores the old handler.

    SIGTERM's default action ends the process at once, leaving a local model
    server it started running; as an interrupt, ``with`` blocks stop it.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        # None: the old handler was not set from Python; the default is the best guess.
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


if __name__ == "__main__":
    sys.exit(main())
