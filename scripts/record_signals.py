"""Make the multi-signal demo recording shipped in ``verbcal/data/``:

    .venv/bin/python scripts/record_signals.py [--every 1]

The same model and server as ``scripts/record_demo.py``
(Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, llama.cpp on 127.0.0.1), on all 372
reviews of :func:`verbcal.demo.demo_items` (``every=SIGNALS_EVERY``) and their
content-free probes, asked with
:data:`verbcal.demo.SIGNAL_SETTINGS`: three sampled answers per item at
temperature 0.7 and the token probabilities of the first one's answer — what
``verbcal elicit --samples 3 --temperature 0.7 --logprobs`` records. Writes the
predictions (each sample's distribution, their average and the token
probabilities) to ``verbcal/data/demo_signals.jsonl`` and their provenance to
``verbcal/data/demo_signals.provenance.json``.

Interrupted, it resumes from its response cache. Token probabilities are slow
on a CPU (the server scores every prompt token): the 372 reviews and 23 probes took
72 minutes with 2 llama.cpp threads on an idle 2-core machine (about 11 s per review);
``--threads 1`` leaves a core for other work.
"""

from __future__ import annotations

import argparse
import datetime
import json
from importlib import metadata
from pathlib import Path

from local_recording import N_CTX, ask_local_server, stated_accuracy

from verbcal.data import DEMO_LABELS
from verbcal.demo import (
    DEMO_PORT,
    SIGNAL_SETTINGS,
    SIGNALS,
    SIGNALS_EVERY,
    SIGNALS_PROVENANCE,
)
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_models import QWEN_1_5B, fetch_model, models_folder, sha256_of
from verbcal.predictions import write_predictions

DATA = Path(__file__).resolve().parent.parent / "verbcal" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="model folder")
    parser.add_argument("--every", type=int, default=SIGNALS_EVERY, help="demo_items(every=...)")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--port", type=int, default=DEMO_PORT + 3, help="the server's port")
    args = parser.parse_args()

    model_file = fetch_model(QWEN_1_5B, args.models)
    digest = sha256_of(model_file)
    cache = ResponseCache(models_folder() / "signals-recording.db")
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        run = ask_local_server(
            model_file,
            cache,
            port=args.port,
            threads=args.threads,
            timeout=600,
            every=args.every,
            settings=SIGNAL_SETTINGS,
            progress_every=10,
        )
    finally:
        cache.close()
    print(run.summary, flush=True)
    predictions = run.predictions
    write_predictions(DATA / SIGNALS, predictions)
    items = [p for p in predictions if p.kind == "item"]
    scored = [p for p in items if p.probs is not None]
    provenance = {
        "model": QWEN_1_5B.alias,
        "model_file": model_file.name,
        "model_sha256": digest,
        "model_source": QWEN_1_5B.provenance,
        "server": f"llama-cpp-python {metadata.version('llama-cpp-python')} (llama.cpp server)",
        "server_args": {"n_ctx": N_CTX, "n_threads": args.threads},
        "settings": SIGNAL_SETTINGS,
        "labels": list(DEMO_LABELS),
        "reviews": len(items),
        "reviews_subset": f"verbcal.demo.demo_items(every={args.every})",
        "content_free_probes": len(predictions) - len(items),
        "verbcal_version": metadata.version("verbcal"),
        "recorded": started.date().isoformat(),
        "parsed": len(scored),
        "with_token_probs": sum(p.token_probs is not None for p in items),
        "accuracy": stated_accuracy(predictions),
        "seconds": round(run.seconds, 1),
        "requests_sent": run.requests_sent,
        "load_average_before_after": run.load_before_after,
        "command": f".venv/bin/python scripts/record_signals.py --every {args.every} "
        f"--threads {args.threads}",
    }
    (DATA / SIGNALS_PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", "utf-8")
    print(f"wrote {len(predictions)} predictions to {DATA / SIGNALS}; {provenance}")


if __name__ == "__main__":
    main()
