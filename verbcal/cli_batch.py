"""``verbcal elicit --batch`` and ``verbcal batch status|collect|cancel|export|import``.

The argument parsing and printing of the batch path; the work is done by
:class:`verbcal.elicit.batch.BatchJobs`. Kept apart from :mod:`verbcal.cli`
so that the batch options live in one place.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_batch_command", "add_batch_options", "run_batch_command", "run_batch_stage"]

EXIT_OK, EXIT_INCOMPLETE = 0, 1


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _AlsoBatch(argparse.Action):
    """A flag that also turns ``--batch`` on."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, True)
        namespace.batch = True


def add_batch_options(p: argparse.ArgumentParser) -> None:
    """The ``--batch…`` options of ``verbcal elicit``."""
    g = p.add_argument_group(
        "batch",
        "send the requests as provider batch jobs (OpenAI Batch API) instead of one by one",
    )
    g.add_argument(
        "--batch",
        action="store_true",
        help="write the requests not yet answered into batch files, upload them and create "
        "the batches (recorded in the cache before anything waits)",
    )
    g.add_argument(
        "--batch-wait",
        action=_AlsoBatch,
        help="wait for the batches (polling with back-off), collect them and write the "
        "predictions; without it the command exits after submitting",
    )
    g.add_argument(
        "--batch-no-submit",
        action=_AlsoBatch,
        help="only write and record the request files (for 'verbcal batch export')",
    )
    _add_common(g)


def _add_common(g: Any) -> None:
    g.add_argument(
        "--fallback",
        choices=["batch", "interactive"],
        default="batch",
        help="where requests go whose batch result may pass another time (expired, 429, "
        "5xx): a new batch (default) or the interactive path",
    )
    g.add_argument(
        "--batch-poll",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="first wait between polls (then x1.5 each time, at most 120 s)",
    )
    g.add_argument(
        "--batch-max-requests",
        type=int,
        default=50_000,
        metavar="N",
        help="requests per batch file (OpenAI's limit: 50,000)",
    )
    g.add_argument(
        "--batch-max-bytes",
        type=int,
        default=200_000_000,
        metavar="N",
        help="bytes per batch file (OpenAI's limit: 200 MB)",
    )


def _jobs(args: argparse.Namespace, cache: Any) -> Any:
    from verbcal.elicit.batch import BatchJobs
    from verbcal.errors import InvalidInputError

    poll = getattr(args, "batch_poll", 1.0)
    if not poll > 0:  # also refuses NaN
        raise InvalidInputError(f"--batch-poll must be a positive number of seconds, got {poll}")

    return BatchJobs(
        cache,
        max_requests=args.batch_max_requests,
        max_bytes=args.batch_max_bytes,
        progress=_say,
    )


def run_batch_stage(
    args: argparse.Namespace,
    cache: Any,
    items: Sequence[Any],
    make_backend: Callable[[], Any],
    make_elicitor: Callable[[Any], Any],
) -> int | None:
    """The batch part of ``verbcal elicit --batch``.

    Returns an exit code when the command ends here (submitted without
    ``--batch-wait``), or None when every batch is collected and the ordinary
    run should now write the predictions from the cache.
    """
    backend = make_backend()
    elicitor = make_elicitor(backend)
    everything = list(items)
    if args.probes:
        everything += elicitor.probe_items(
            [item.text for item in items], n_random=args.n_random_probes
        )
    jobs = _jobs(args, cache)
    try:
        built = jobs.build_from_elicitor(backend, elicitor, everything)
        _say(f"batch: {built}")
        if args.batch_no_submit:
            _say(f"recorded in {cache.path}: run 'verbcal batch export --cache {cache.path}'")
            return EXIT_OK
        jobs.submit()
        if not args.batch_wait:
            if jobs.active():
                _say(
                    "batches submitted (recorded in the cache). Resume with:\n"
                    f"  verbcal batch status --cache {cache.path}\n"
                    f"  verbcal batch collect --cache {cache.path} --wait\n"
                    "then rerun this command without --batch to write the predictions "
                    "(it sends only what the batches did not answer)"
                )
                return EXIT_OK
            return None
        summary = jobs.wait(fallback=args.fallback, poll_initial=args.batch_poll)
        _say(f"batch: {summary}")
        return None
    finally:
        jobs.close()


# --------------------------------------------------------------------------- verbcal batch


def add_batch_command(sub: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """The ``verbcal batch`` command and its subcommands."""
    p = sub.add_parser(
        "batch",
        help="follow, collect, cancel, export or import batch jobs recorded in a cache",
        description="Batch jobs that 'verbcal elicit --batch' recorded in a response cache.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("status", "the state of every recorded batch"),
        ("collect", "read finished batches into the cache; re-queue what may pass"),
        ("cancel", "ask the provider to cancel every batch still running"),
        ("export", "write unsent request files for another engine (vllm run-batch)"),
        ("import", "read an engine's result file (vllm run-batch -o) into the cache"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--cache", required=True, type=Path, help="the response cache file")
        a.set_defaults(run=run, batch_action=name)
        if name == "collect":
            a.add_argument("--wait", action="store_true", help="wait until every batch is done")
            a.add_argument("--model", help="model for --fallback interactive")
            a.add_argument(
                "--concurrency", type=int, default=8, help="requests in flight for the fallback"
            )
            _add_common(a)
        elif name == "export":
            a.add_argument("--format", choices=["vllm"], default="vllm")
            a.add_argument("--out-dir", required=True, type=Path)
        elif name == "import":
            a.add_argument("files", nargs="+", type=Path, metavar="FILE")
        elif name == "status":
            a.add_argument("--json", action="store_true", help="print JSON")


def run_batch_command(args: argparse.Namespace) -> int:
    """Run ``verbcal batch ACTION``."""
    from verbcal.elicit.cache import ResponseCache
    from verbcal.errors import InvalidInputError

    if not args.cache.exists():
        raise InvalidInputError(f"no response cache at {args.cache}")
    cache = ResponseCache(args.cache)
    defaults = {"batch_max_requests": 50_000, "batch_max_bytes": 200_000_000}
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    jobs = _jobs(args, cache)
    try:
        return _ACTIONS[args.batch_action](args, jobs)
    finally:
        jobs.close()
        cache.close()


def _status(args: argparse.Namespace, jobs: Any) -> int:
    from verbcal.errors import BackendError

    try:
        jobs.poll()
    except BackendError as exc:  # the records are still worth showing
        _say(f"could not ask the provider ({exc}): showing the last recorded states")
    rows = jobs.status()
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    if not rows:
        print("no batch recorded")
        return EXIT_OK
    for row in rows:
        states = ", ".join(f"{k} {v}" for k, v in sorted(row["requests_by_state"].items()))
        print(
            f"#{row['file']} {row['state']:10} {row['batch_id'] or '-':28} "
            f"{row['status'] or '-':11} {row['requests']} requests "
            f"(provider: {row['provider_completed']} done, {row['provider_failed']} failed; "
            f"here: {states})" + (f" {row['note']}" if row["note"] else "")
        )
    return EXIT_OK


def _collect(args: argparse.Namespace, jobs: Any) -> int:
    make_backend = None
    if args.fallback == "interactive":
        from verbcal.elicit.backend import OpenAIBackend
        from verbcal.errors import InvalidInputError

        urls = {f.base_url for f in jobs.records.files()}
        if not args.model or len(urls) > 1:
            raise InvalidInputError(
                "--fallback interactive needs --model (and batches of one endpoint)"
            )
        base_url = urls.pop() if urls else None

        def make_backend() -> OpenAIBackend:
            return OpenAIBackend(
                args.model, base_url=base_url, cache=jobs.cache, max_concurrency=args.concurrency
            )

    if args.wait:
        summary = jobs.wait(
            fallback=args.fallback, poll_initial=args.batch_poll, make_backend=make_backend
        )
    else:
        jobs.submit()
        jobs.poll()
        summary = jobs.collect(fallback=args.fallback, make_backend=make_backend)
    print(summary)
    if jobs.active():
        print("batches still running: run 'verbcal batch collect' again later (or with --wait)")
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cancel(args: argparse.Namespace, jobs: Any) -> int:
    cancelled = jobs.cancel()
    print(f"asked to cancel {len(cancelled)} batch(es); 'verbcal batch collect' keeps what ran")
    return EXIT_OK


def _export(args: argparse.Namespace, jobs: Any) -> int:
    paths = jobs.export(args.out_dir, args.format)
    for path in paths:
        print(path)
    print(
        f"wrote {len(paths)} request file(s); run each with "
        "'vllm run-batch -i FILE -o RESULTS --model MODEL', then "
        f"'verbcal batch import RESULTS --cache {jobs.cache.path}'",
        file=sys.stderr,
    )
    return EXIT_OK


def _import(args: argparse.Namespace, jobs: Any) -> int:
    from verbcal.elicit.batch import CollectSummary
    from verbcal.errors import InvalidInputError

    total = CollectSummary()
    for path in args.files:
        if not path.exists():
            raise InvalidInputError(f"no result file at {path}")
        jobs.import_results(path, total)
    print(total)
    return EXIT_OK if total.answered else EXIT_INCOMPLETE


_ACTIONS: dict[str, Callable[[argparse.Namespace, Any], int]] = {
    "status": _status,
    "collect": _collect,
    "cancel": _cancel,
    "export": _export,
    "import": _import,
}
