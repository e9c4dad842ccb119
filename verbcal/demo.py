"""``verbcal demo``: the whole job on a real local model, or on a shipped recording.

1. Elicit a probability per label for a stratified share of the demo reviews
   (see :func:`demo_items`) and the content-free probes, from a real chat
   model behind an OpenAI-compatible server: by default
   Qwen2.5-Coder-1.5B-Instruct (fetched by ``scripts/setup.sh``, see
   :mod:`verbcal.elicit.local_models`) in a llama.cpp server that verbcal
   starts and stops on 127.0.0.1, on a quarter of the reviews (101 of 372,
   about 3 s per answer on 2 idle cores); any other endpoint with
   ``base_url``/``model`` (the same quarter); or, with ``replay=True``, the
   shipped recording of the same model's answers on half of the reviews
   (191, made by ``scripts/record_demo.py`` through verbcal's own cache),
   which needs no server at all.
2. Fit temperature scaling, contextual calibration (+ temperature) and the
   auto choice on one half of the reviews, evaluate on the other half.
3. Pick the threshold on P(positive) for a target precision, and write the
   HTML reliability report.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from verbcal.data import DEMO_LABELS, load_demo_dataset
from verbcal.errors import ConfigurationError, VerbcalError
from verbcal.metrics import compare_metrics
from verbcal.persist import CalibratorRecord, save_calibrator
from verbcal.predictions import (
    CONTENT_FREE,
    ITEM,
    Item,
    Prediction,
    parse_jsonl,
    read_predictions,
    write_predictions,
)
from verbcal.workflow import (
    Evaluation,
    ThresholdChoice,
    choose_threshold,
    evaluate,
    fit_calibrator,
    held_out,
)

__all__ = [
    "DEMO_METHODS",
    "DEMO_PORT",
    "ELICIT_SETTINGS",
    "LIVE_EVERY",
    "N_RANDOM_PROBES",
    "POSITIVE",
    "PROVENANCE",
    "RECORDED_EVERY",
    "RECORDING",
    "SIGNALS",
    "SIGNALS_EVERY",
    "SIGNALS_PROVENANCE",
    "SIGNAL_SETTINGS",
    "TARGET_PRECISION",
    "DemoResult",
    "chance_line",
    "demo_items",
    "elicit_demo",
    "load_demo_signals",
    "load_recording_into",
    "metric_line",
    "port_is_free",
    "recording_provenance",
    "run_demo",
]

#: How the demo asks (the recording was made with exactly these settings).
ELICIT_SETTINGS: dict[str, Any] = {
    "template": "distribution",
    "json_mode": "json_object",
    "max_tokens": 96,
    "temperature": 0.0,
    "seed": 0,
}
#: Random in-domain word probes added to "N/A", "" and "[MASK]".
N_RANDOM_PROBES = 20
#: Methods compared in the demo; the report shows the first one found in this order.
DEMO_METHODS = ("auto", "temperature", "contextual+temperature", "contextual")
POSITIVE = "positive"
TARGET_PRECISION = 0.9

#: The recording holds every 2nd review of each group (191); the live demo asks every 4th (101).
RECORDED_EVERY = 2
LIVE_EVERY = 4

#: Port of the live demo's server (and of scripts/record_demo.py's), when free.
DEMO_PORT = 8765

RECORDING = "demo_recording.jsonl"
PROVENANCE = "demo_recording.provenance.json"

#: The multi-signal recording (scripts/record_signals.py): the same model and
#: reviews, three sampled answers per item and the first one's token probabilities.
SIGNAL_SETTINGS: dict[str, Any] = {
    **ELICIT_SETTINGS,
    "temperature": 0.7,
    "samples": 3,
    "logprobs": True,
}
#: The multi-signal recording holds every review (372): its half splits fit on
#: 186 rows, about the 200 on which issue 12 measured stacking.
SIGNALS_EVERY = 1
SIGNALS = "demo_signals.jsonl"
SIGNALS_PROVENANCE = "demo_signals.provenance.json"


@dataclass
class DemoResult:
    """Where the demo wrote its files, and its headline numbers."""

    out_dir: Path
    report: Path
    predictions: Path
    evaluation: dict[str, Evaluation]  # method -> held-out metrics, and "uncalibrated"
    threshold: ThresholdChoice | None  # None when no labelled method could be fitted
    source: str


def demo_items(*, every: int = RECORDED_EVERY) -> list[Item]:
    """The demo reviews as items with gold labels, a stratified share of them.

    Parameters
    ----------
    every : int, default 2
        Within every (label, phenomenon, difficulty) group, keep every
        ``every``-th review in file order (the first, then the ``every + 1``-th…):
        2 gives the half the recording holds, 4 the quarter the live demo asks
        (a subset of that half), 1 all 372.

    Examples
    --------
    >>> len(demo_items()), len(demo_items(every=LIVE_EVERY)), len(demo_items(every=1))
    (191, 101, 372)
    """
    rows = load_demo_dataset()
    seen: Counter = Counter()
    kept = []
    for row in rows:
        group = (row["label"], row["phenomenon"], row["difficulty"])
        if seen[group] % every == 0:
            kept.append(row)
        seen[group] += 1
    rows = kept
    return [Item(id=r["id"], text=r["text"], label=r["label"]) for r in rows]


def recording_provenance() -> dict:
    """Provenance of the shipped recording (model file, sha256, server, settings, date)."""
    text = resources.files("verbcal.data").joinpath(PROVENANCE).read_text(encoding="utf-8")
    return json.loads(text)


def load_demo_signals() -> list[Prediction]:
    """The multi-signal recording: predictions with ``samples`` and ``token_probs``.

    Made by ``scripts/record_signals.py`` with :data:`SIGNAL_SETTINGS` on all
    the reviews of :func:`demo_items` (:data:`SIGNALS_EVERY`) and their
    content-free probes; its provenance is
    ``verbcal/data/demo_signals.provenance.json``.
    """
    with resources.as_file(resources.files("verbcal.data").joinpath(SIGNALS)) as path:
        return read_predictions(path)


def load_recording_into(cache) -> int:
    """Copy the shipped recording's request/response rows into ``cache``; return how many."""
    text = resources.files("verbcal.data").joinpath(RECORDING).read_text(encoding="utf-8")
    rows = [row for _, row in parse_jsonl(text, source=RECORDING)]
    for row in rows:
        cache.put(row["request"], row["response"])
    return len(rows)


async def elicit_demo(
    backend,
    *,
    progress: Callable[[int, int], None] | None = None,
    circuit_breaker: bool = True,
    every: int = RECORDED_EVERY,
    settings: dict[str, Any] | None = None,
) -> tuple[list[Prediction], object]:
    """Predictions for the demo items and the content-free probes, through ``backend``.

    ``circuit_breaker=False`` for a replay: a request there means the recording
    lacks an answer, not that an endpoint is down. The items are
    ``demo_items(every=every)``; ``settings`` are the Elicitor's keyword
    arguments (default :data:`ELICIT_SETTINGS`).
    """
    from verbcal.elicit.elicitor import Elicitor
    from verbcal.elicit.injection import flag_predictions

    elicitor = Elicitor(
        backend,
        list(DEMO_LABELS),
        circuit_breaker=circuit_breaker,
        **(ELICIT_SETTINGS if settings is None else settings),
    )
    items = demo_items(every=every)
    predictions, _ = await elicitor.arun(items, progress=progress)
    flag_predictions(predictions, items)  # as `verbcal elicit` does: the report counts them
    probes = elicitor.probe_items([i.text for i in items], n_random=N_RANDOM_PROBES)
    more, summary = await elicitor.arun(probes, kind=CONTENT_FREE, progress=progress)
    return predictions + more, summary


def _elicit(
    out_dir: Path,
    *,
    replay: bool,
    base_url: str | None,
    model: str | None,
    progress: Callable[[int, int], None] | None,
    log: Callable[[str], None],
) -> tuple[list[Prediction], str]:
    from verbcal.elicit.backend import RetryPolicy
    from verbcal.elicit.cache import ResponseCache

    if replay:
        provenance = recording_provenance()
        cache = ResponseCache(":memory:")
        n = load_recording_into(cache)
        log(f"replaying {n} recorded answers of {provenance['model']} (no server needed)")
        backend_args = {
            "base_url": provenance["base_url"],
            "model": provenance["model"],
            "retry": RetryPolicy(max_attempts=1),
        }
        source = f"recording of {provenance['model']} ({provenance['recorded']})"
        return _run_elicitation(cache, backend_args, progress, replay=True), source
    cache = ResponseCache(out_dir / "cache.db")
    if base_url is not None:
        if not model:
            raise ConfigurationError("--base-url needs --model")
        return _run_elicitation(
            cache, {"base_url": base_url, "model": model}, progress, every=LIVE_EVERY
        ), f"{model} at {base_url}"
    from verbcal.elicit.local_models import QWEN_1_5B, find_model
    from verbcal.elicit.local_server import LocalLlamaServer

    model_file = find_model(QWEN_1_5B)
    log(f"starting the local llama.cpp server with {QWEN_1_5B.alias} …")
    # A fixed port when it is free: the cache key holds the base URL, so an
    # interrupted demo resumes from out_dir/cache.db only if the URL is the same.
    port = DEMO_PORT if port_is_free(DEMO_PORT) else None
    with LocalLlamaServer(model_file, model_alias=QWEN_1_5B.alias, port=port, n_ctx=2048) as server:
        log(f"server ready at {server.base_url}")
        backend_args = {"base_url": server.base_url, "model": server.model, "timeout": 300}
        # One request at a time: the server decodes one anyway, and in order each
        # request reuses the cached prompt prefix (instructions before the item).
        predictions = _run_elicitation(
            cache, backend_args, progress, concurrency=1, every=LIVE_EVERY
        )
    return predictions, f"{server.model} (llama.cpp, local)"


def _run_elicitation(
    cache,
    backend_args,
    progress,
    *,
    replay: bool = False,
    concurrency: int = 4,
    every: int = RECORDED_EVERY,
) -> list[Prediction]:
    from verbcal.elicit.backend import OpenAIBackend

    async def run():
        async with OpenAIBackend(
            cache=cache, max_concurrency=concurrency, **backend_args
        ) as backend:
            predictions, summary = await elicit_demo(
                backend, progress=progress, circuit_breaker=not replay, every=every
            )
            if replay and backend.stats.requests_sent:
                raise ConfigurationError(
                    "the shipped recording does not hold every demo answer; "
                    "re-make it with scripts/record_demo.py"
                )
            return predictions

    try:
        return asyncio.run(run())
    finally:
        cache.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _ci(ci) -> str:
    return f"{ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}]"


def metric_line(method: str, result: Evaluation, changes: dict | None = None) -> str:
    """One console line: accuracy, NLL and ECE with intervals (and their paired changes)."""
    parts = [f"{method:24}", f"accuracy {_ci(result['accuracy'])}"]
    for name, shown in (("nll", "NLL"), ("ece", "ECE")):
        part = f"{shown} {_ci(result[name])}"
        change = (changes or {}).get(name)
        if change is not None:
            zero = "includes 0: no clear change" if change[1] <= 0 <= change[2] else "excludes 0"
            part += f" (change {change[0]:+.3f} [{change[1]:+.3f}, {change[2]:+.3f}], {zero})"
        parts.append(part)
    return "  ".join(parts)


def chance_line(result: Evaluation, y) -> str:
    """Says whether the model beats always answering the most frequent label."""
    majority = float(np.bincount(y).max() / len(y))
    accuracy = result["accuracy"]
    if accuracy[1] > majority:
        return (
            f"the model is above chance: accuracy {_ci(accuracy)} > {majority:.3f} "
            "(always answering the most frequent label)"
        )
    return (
        f"the model is AT CHANCE on these reviews: accuracy {_ci(accuracy)} does not exceed "
        f"{majority:.3f} (always answering the most frequent label); a calibrator can then "
        "only learn the base rate, so a lower ECE says nothing about the model"
    )


def run_demo(
    out_dir: str | Path | None = None,
    *,
    replay: bool = False,
    base_url: str | None = None,
    model: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo end to end and write its files into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like, optional
        Where to write predictions, calibrators and ``report.html``
        (default: a new temporary folder).
    replay : bool, default False
        Use the shipped recording instead of a live model.
    base_url, model : str, optional
        Run against this OpenAI-compatible endpoint instead of the embedded
        llama.cpp server.
    progress : callable, optional
        ``progress(done, total)`` during elicitation.
    log : callable, default print
        Receives one line per step.

    Returns
    -------
    DemoResult
    """
    from verbcal.report import report_from_predictions, write_report

    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="verbcal-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    predictions, source = _elicit(
        out, replay=replay, base_url=base_url, model=model, progress=progress, log=log
    )
    preds_path = out / "predictions.jsonl"
    write_predictions(preds_path, predictions)
    n_items = sum(p.kind == ITEM for p in predictions)
    n_parsed = sum(p.kind == ITEM and p.probs is not None for p in predictions)
    log(f"elicited {n_items} reviews ({n_parsed} parsed) and the content-free probes")

    records: dict[str, CalibratorRecord] = {}
    for method in DEMO_METHODS:
        try:
            records[method] = fit_calibrator(predictions, method, holdout=0.5, seed=0)
        except VerbcalError as exc:  # a weak model may leave too few parsed rows for a method
            log(f"{method:24} skipped: {exc}")
            continue
        save_calibrator(out / f"calibrator-{method}.json", records[method])
    # Labelled methods share one split (same seed); the first fitted one names the held-out half.
    main = next((r for r in records.values() if r.fitted_ids), None)
    evaluation: dict[str, Evaluation] = {}
    threshold: ThresholdChoice | None = None
    if main is not None:
        rows = held_out(predictions, main.fitted_ids, list(DEMO_LABELS))
        y = rows.y
        assert y is not None  # the demo reviews are labelled
        evaluation["uncalibrated"] = evaluate(rows.P, y, n_boot=200)
        log(f"held-out half: {len(y)} reviews (95% bootstrap intervals in brackets)")
        log(chance_line(evaluation["uncalibrated"], y))
        log(metric_line("uncalibrated", evaluation["uncalibrated"]))
        for method, record in records.items():
            Q = record.calibrator.predict_proba(rows.P)
            evaluation[method] = evaluate(Q, y, n_boot=200)
            changes = {c.name: c.change for c in compare_metrics(rows.P, Q, y, n_boot=200)}
            log(metric_line(method, evaluation[method], changes))
        threshold = choose_threshold(predictions, main, POSITIVE, target_precision=TARGET_PRECISION)
    data = report_from_predictions(
        predictions,
        main,
        positive=POSITIVE,
        target_precision=TARGET_PRECISION,
        title=f"verbcal demo: {source}",
    )
    report = out / "report.html"
    write_report(report, data)
    log(f"report: {report}")
    return DemoResult(out, report, preds_path, evaluation, threshold, source)
