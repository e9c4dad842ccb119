"""What ``record_demo.py`` and ``record_signals.py`` share: ask a local server the demo's items.

Both scripts serve Qwen2.5-Coder-1.5B with llama.cpp on 127.0.0.1, ask the
reviews of :func:`verbcal.demo.demo_items` and their content-free probes one
request at a time through verbcal's own Elicitor and a response cache, and
write down how long that took and how busy the machine was.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verbcal.demo import RECORDED_EVERY, elicit_demo
from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_models import QWEN_1_5B
from verbcal.elicit.local_server import LocalLlamaServer
from verbcal.predictions import Prediction

#: The server's context size in every recording (its provenance says so).
N_CTX = 2048


@dataclass
class LocalRun:
    """The answers of one elicitation run and what its provenance records about it."""

    predictions: list[Prediction]
    summary: str
    base_url: str
    seconds: float  # wall time of the elicitation
    requests_sent: int  # answers asked in this run; the others came from the cache
    load_before_after: list[float] | None  # 1-minute load average, or None when not measured


def ask_local_server(
    model_file: Path,
    cache: ResponseCache,
    *,
    port: int | None,
    threads: int = 2,
    timeout: float = 300.0,
    every: int = RECORDED_EVERY,
    settings: dict[str, Any] | None = None,
    progress_every: int = 20,
) -> LocalRun:
    """Serve ``model_file`` on ``port`` and ask it the demo's items (``elicit_demo``).

    One request at a time: the server decodes one anyway, and in order each
    request reuses the cached prompt prefix. Answers already in ``cache`` are
    not asked again, so an interrupted run resumes.
    """
    load_before = os.getloadavg()[0]
    server = LocalLlamaServer(
        model_file, model_alias=QWEN_1_5B.alias, port=port, n_ctx=N_CTX, n_threads=threads
    )
    with server:
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if done % progress_every == 0 or done == total:
                print(f"  {done}/{total}  {time.perf_counter() - t0:.0f} s", flush=True)

        async def run():
            async with OpenAIBackend(
                server.model,
                base_url=server.base_url,
                cache=cache,
                max_concurrency=1,
                timeout=timeout,
            ) as backend:
                result = await elicit_demo(
                    backend, progress=progress, every=every, settings=settings
                )
                return result, backend.stats.requests_sent

        (predictions, summary), sent = asyncio.run(run())
        seconds = time.perf_counter() - t0
        base_url = server.base_url
    return LocalRun(
        predictions,
        summary,
        base_url,
        seconds,
        sent,
        [round(load_before, 2), round(os.getloadavg()[0], 2)],
    )


def stated_accuracy(predictions: list[Prediction]) -> float:
    """Share of the reviews whose stated top label is the gold one (unparsed ones count wrong)."""
    items = [p for p in predictions if p.kind == "item"]
    correct = sum(
        p.probs is not None and max(p.probs, key=p.probs.__getitem__) == p.label for p in items
    )
    return round(correct / len(items), 4)
