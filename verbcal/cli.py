"""The ``verbcal`` command: elicit, fit, apply, evaluate, threshold, report, demo.

Every subcommand reads and writes files, so they compose in a shell pipeline.
Exit codes: 0 done; 1 the work ran but did not fully succeed (e.g. every item
failed); 2 bad usage or bad input; 3 the model endpoint failed for good;
130 interrupted (rerun to resume: nothing answered is asked again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from verbcal import __version__
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
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--rpm", type=float, help="requests-per-minute limit")
    p.add_argument("--tpm", type=float, help="tokens-per-minute limit")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request attempt")
    p.add_argument(
        "--json-mode",
        choices=["none", "json_object", "json_schema"],
        default="none",
        help="constrain answers: json_schema (OpenAI), json_object (llama.cpp), none",
    )
    p.add_argument("--samples", type=int, default=1, help="answers per item, averaged")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--aliases", type=_aliases, help="other label names, e.g. Yes=True,No=False")
    p.add_argument("--logprobs", action="store_true", help="also record token probabilities")
    p.add_argument(
        "--probes",
        action="store_true",
        help="also elicit content-free probes (N/A, '', [MASK], random in-domain words) "
        "for contextual calibration",
    )
    p.add_argument("--n-random-probes", type=int, default=20)
    p.set_defaults(run=_run_elicit)


def _run_elicit(args: argparse.Namespace) -> int:
    from verbcal.elicit.backend import OpenAIBackend
    from verbcal.elicit.cache import ResponseCache
    from verbcal.elicit.elicitor import Elicitor
    from verbcal.predictions import CONTENT_FREE, read_items, write_predictions

    items = read_items(
        args.input,
        text_field=args.text_field,
        label_field=args.label_field,
        id_field=args.id_field,
        labels=args.labels,
    )
    cache_path = args.cache or args.out.with_suffix(".cache.db")
    cache = ResponseCache(cache_path)

    async def run():
        async with OpenAIBackend(
            args.model,
            base_url=args.base_url,
            cache=cache,
            max_concurrency=args.concurrency,
            requests_per_minute=args.rpm,
            tokens_per_minute=args.tpm,
            timeout=args.timeout,
        ) as backend:
            elicitor = Elicitor(
                backend,
                args.labels,
                template=args.template,
                json_mode=args.json_mode,
                samples=args.samples,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                seed=args.seed,
                aliases=args.aliases,
                logprobs=args.logprobs,
            )
            predictions, summary = await elicitor.arun(items, progress=Progress("elicit"))
            if args.probes:
                probes = elicitor.probe_items(
                    [item.text for item in items], n_random=args.n_random_probes
                )
                more, summary = await elicitor.arun(
                    probes, kind=CONTENT_FREE, progress=Progress("probes")
                )
                predictions += more
            return predictions, summary

    try:
        predictions, summary = asyncio.run(run())
    finally:
        cache.close()
    write_predictions(args.out, predictions)
    print(summary, file=sys.stderr)
    print(f"wrote {len(predictions)} predictions to {args.out} (cache: {cache_path})")
    parsed = sum(p.probs is not None for p in predictions)
    return EXIT_OK if parsed else EXIT_INCOMPLETE


# --------------------------------------------------------------------------- fit / apply


def _add_fit(sub) -> None:
    from verbcal.workflow import METHODS

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
    p.add_argument("--holdout", type=float, default=0.5, help="share of rows kept out of fit")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.set_defaults(run=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    from verbcal.persist import save_calibrator
    from verbcal.predictions import read_predictions
    from verbcal.workflow import fit_calibrator

    record = fit_calibrator(
        read_predictions(args.preds), args.method, holdout=args.holdout, seed=args.seed
    )
    save_calibrator(args.out, record)
    explanation = getattr(record.calibrator, "explanation_", "")
    print(f"fitted {args.method} on {len(record.fitted_ids)} labelled rows", end="")
    print(f" and {record.n_probes} content-free probes" if record.n_probes else "")
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
    p.set_defaults(run=_run_apply)


def _run_apply(args: argparse.Namespace) -> int:
    from verbcal.persist import load_calibrator
    from verbcal.predictions import read_predictions, write_predictions
    from verbcal.workflow import apply_calibrator

    record = load_calibrator(args.calibrator)
    predictions = read_predictions(args.preds)
    calibrated = apply_calibrator(record, predictions)
    write_predictions(args.out, calibrated)
    print(f"wrote {len(calibrated)} calibrated predictions to {args.out}")
    return EXIT_OK


# --------------------------------------------------------------------------- evaluate


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metrics before and after calibration, with bootstrap intervals",
        description="Accuracy, ECE, MCE, classwise ECE, Brier and NLL with bootstrap 95%% "
        "intervals on labelled rows: before calibration, and after it when --calibrator is "
        "given (then only rows the calibrator was not fitted on are used).",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", type=Path)
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from verbcal.persist import load_calibrator
    from verbcal.predictions import ITEM, read_predictions, to_arrays
    from verbcal.workflow import evaluate, held_out

    predictions = read_predictions(args.preds)
    if args.calibrator:
        record = load_calibrator(args.calibrator)
        rows = held_out(predictions, record.fitted_ids, record.labels)
    else:
        record, rows = None, to_arrays(predictions, kind=ITEM)
    if rows.y is None:
        raise _usage_error(f"{args.preds}: evaluation needs predictions with gold labels")
    result = {"rows": len(rows.ids), "failed_to_parse": rows.n_failed}
    result["before"] = evaluate(rows.P, rows.y, n_boot=args.n_boot)
    if record is not None:
        result["method"] = record.method
        Q = record.calibrator.predict_proba(rows.P)
        result["after"] = evaluate(Q, rows.y, n_boot=args.n_boot)
    if args.json:
        print(json.dumps(result, indent=1))
        return EXIT_OK
    print(f"{result['rows']} held-out labelled rows ({rows.n_failed} unparsed rows left out)")
    header = f"{'metric':14} {'before':>26}"
    if "after" in result:
        header += f" {'after (' + record.method + ')':>26}"
    print(header)
    for name, (value, low, high) in result["before"].items():
        line = f"{name:14} {value:>8.4f} [{low:.4f}, {high:.4f}]"
        if "after" in result:
            a, lo, hi = result["after"][name]
            line += f" {a:>8.4f} [{lo:.4f}, {hi:.4f}]"
        print(line)
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
    target.add_argument("--target-precision", type=float)
    target.add_argument("--target-recall", type=float)
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
    result = choose_threshold(
        read_predictions(args.preds),
        record,
        args.positive,
        target_precision=args.target_precision,
        target_recall=args.target_recall,
        guarantee=args.guarantee,
    )
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
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
        "precision-recall curve with operating points, and a plain-language summary. Only "
        "rows the calibrator was not fitted on are used.",
    )
    p.add_argument("--preds", required=True, type=Path)
    p.add_argument("--calibrator", type=Path, help="omit to report on the raw probabilities")
    p.add_argument("--out", required=True, type=Path, help="HTML file to write")
    p.add_argument("--positive", help="label for the precision-recall curve")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-precision", type=float)
    target.add_argument("--target-recall", type=float)
    p.add_argument("--title", default="Calibration report")
    p.set_defaults(run=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from verbcal.persist import load_calibrator
    from verbcal.predictions import read_predictions
    from verbcal.report import report_from_predictions, write_report

    predictions = read_predictions(args.preds)
    record = load_calibrator(args.calibrator) if args.calibrator else None
    if args.positive is not None and args.positive not in predictions[0].labels:
        raise _usage_error(f"--positive {args.positive!r} is not one of {predictions[0].labels}")
    data = report_from_predictions(
        predictions,
        record,
        positive=args.positive,
        target_precision=args.target_precision,
        target_recall=args.target_recall,
        title=args.title,
    )
    path = write_report(args.out, data)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return EXIT_OK


# --------------------------------------------------------------------------- demo


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole job on a real local model (or a shipped recording)",
        description="Elicit the 372 demo reviews and content-free probes from a real local "
        "model (SmolLM2-135M-Instruct in a llama.cpp server on 127.0.0.1 that verbcal starts "
        "and stops), fit temperature, contextual and auto calibration on one half, evaluate "
        "on the other, pick a precision operating point and write the HTML report. "
        "--replay uses the shipped recording of Qwen2.5-Coder-1.5B-Instruct instead (no "
        "server, seconds); --base-url/--model runs against any other endpoint.",
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
    _add_threshold(sub)
    _add_report(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``verbcal`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_sigterm = _stop_on_sigterm()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BackendError as exc:
        print(f"verbcal {args.command}: {exc}", file=sys.stderr)
        return EXIT_BACKEND
    except VerbcalError as exc:
        print(f"verbcal {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        restore_sigterm()


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
    # None: the old handler was not set from Python; the default is the best guess.
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


if __name__ == "__main__":
    sys.exit(main())
