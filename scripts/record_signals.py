"""Make the multi-signal demo recording shipped in ``verbcal/data/``:

    .venv/bin/python scripts/record_signals.py [--every 2]

The same model, server and reviews as ``scripts/record_demo.py``
(Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, llama.cpp on 127.0.0.1, the reviews of
:func:`verbcal.demo.demo_items` and their content-free probes), asked with
:data:`verbcal.demo.SIGNAL_SETTINGS`: three sampled answers per item at
temperature 0.7 and the token probabilities of the first one's answer — what
``verbcal elicit --samples 3 --temperature 0.7 --logprobs`` records. Writes the
predictions (each sample's distribution, their average and the token
probabilities) to ``verbcal/data/demo_signals.jsonl`` and their provenance to
``verbcal/data/demo_signals.provenance.json``.

Interrupted, it resumes from its response cache. Token probabilities are slow
on a CPU (the server scores every prompt token), so plan about 8 s per item on
an idle 2-core machine; ``--threads 1`` leaves a core for other work.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import time
from importlib import metadata
from pathlib import Path

from verbcal.data import DEMO_LABELS
from verbcal.demo import (
    DEMO_PORT,
    SIGNAL_SETTINGS,
    SIGNALS,
    SIGNALS_PROVENANCE,
    elicit_demo,
)
from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_models import QWEN_1_5B, fetch_model, models_folder, sha256_of
from verbcal.elicit.local_server import LocalLlamaServer
from verbcal.predictions import write_predictions

DATA = Path(__file__).resolve().parent.parent / "verbcal" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="model folder")
    parser.add_argument("--every", type=int, default=2, help="demo_items(every=...)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--port", type=int, default=DEMO_PORT + 3, help="the server's port")
    args = parser.parse_args()

    model_file = fetch_model(QWEN_1_5B, args.models)
    digest = sha256_of(model_file)
    cache = ResponseCache(models_folder() / "signals-recording.db")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()[0]
    server = LocalLlamaServer(
        model_file, model_alias=QWEN_1_5B.alias, port=args.port, n_threads=args.threads
    )
    with server:

        def progress(done: int, total: int) -> None:
            if done % 10 == 0 or done == total:
                print(f"  {done}/{total}  {time.perf_counter() - t0:.0f} s", flush=True)

        async def run():
            async with OpenAIBackend(
                server.model, base_url=server.base_url, cache=cache, max_concurrency=1, timeout=600
            ) as backend:
                result = await elicit_demo(
                    backend, progress=progress, every=args.every, settings=SIGNAL_SETTINGS
                )
                return result, backend.stats.requests_sent

        t0 = time.perf_counter()
        (predictions, summary), sent = asyncio.run(run())
        seconds = time.perf_counter() - t0
    cache.close()
    print(summary, flush=True)
    write_predictions(DATA / SIGNALS, predictions)
    items = [p for p in predictions if p.kind == "item"]
    scored = [p for p in items if p.probs is not None]
    correct = sum(max(p.probs, key=p.probs.__getitem__) == p.label for p in scored)
    provenance = {
        "model": QWEN_1_5B.alias,
        "model_file": model_file.name,
        "model_sha256": digest,
        "model_source": QWEN_1_5B.provenance,
        "server": f"llama-cpp-python {metadata.version('llama-cpp-python')} (llama.cpp server)",
        "server_args": {"n_ctx": 2048, "n_threads": args.threads},
        "settings": SIGNAL_SETTINGS,
        "labels": list(DEMO_LABELS),
        "reviews": len(items),
        "reviews_subset": f"verbcal.demo.demo_items(every={args.every})",
        "content_free_probes": len(predictions) - len(items),
        "verbcal_version": metadata.version("verbcal"),
        "recorded": started.date().isoformat(),
        "parsed": len(scored),
        "with_token_probs": sum(p.token_probs is not None for p in items),
        "accuracy": round(correct / len(items), 4),
        "seconds": round(seconds, 1),
        "requests_sent": sent,
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": f".venv/bin/python scripts/record_signals.py --every {args.every} "
        f"--threads {args.threads}",
    }
    (DATA / SIGNALS_PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", "utf-8")
    print(f"wrote {len(predictions)} predictions to {DATA / SIGNALS}; {provenance}")


if __name__ == "__main__":
    main()
