"""A local llama.cpp server with Qwen2.5-Coder-1.5B (or SmolLM2) for the live benchmarks.

Run the live benchmarks alone on the machine: llama.cpp with 2 threads on 2
cores slows down several-fold when anything else is busy (each script prints
the load average before and after, so a busy run is visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.elicitor import Elicitor
from verbcal.elicit.local_models import QWEN_1_5B, find_model, models_folder
from verbcal.elicit.local_server import SMOLLM2_ALIAS, LocalLlamaServer
from verbcal.predictions import ITEM, Item, Prediction

BENCH = Path(__file__).resolve().parent
LEGACY = BENCH / "templates"  # the built-in templates as they were before the item went last


@contextlib.contextmanager
def local_server(model: str = "qwen", port: int | None = None) -> Iterator[LocalLlamaServer]:
    """A started server: ``"qwen"`` (Qwen2.5-Coder-1.5B) or ``"smollm2"``."""
    # VERBCAL_BENCH_THREADS=1 leaves a core free: slower, but no collapse on a busy machine.
    threads = int(os.environ.get("VERBCAL_BENCH_THREADS", "2"))
    if model == "qwen":
        server = LocalLlamaServer(
            find_model(QWEN_1_5B), model_alias=QWEN_1_5B.alias, n_threads=threads, port=port
        )
    else:
        server = LocalLlamaServer(n_threads=threads, port=port)
    with server:
        yield server


@dataclasses.dataclass(frozen=True)
class Replay:
    """Stands in for a started server when every answer is already in the bench's cache.

    Same model name and base URL as the server on ``port`` (both are part of each cache
    key), so the requests hit the cache; one that misses finds no server and the run
    stops with the endpoint's error instead of asking anything.
    """

    model: str
    base_url: str


def replay_server(model: str = "qwen", port: int = 0) -> Replay:
    """A :class:`Replay` for :func:`local_server` ``(model, port)``; no weights needed."""
    name = QWEN_1_5B.alias if model == "qwen" else SMOLLM2_ALIAS
    return Replay(name, f"http://{LocalLlamaServer.host}:{port}/v1")


def ask(
    server: LocalLlamaServer | Replay,
    items: Sequence[Item],
    labels: Sequence[str],
    *,
    template,
    cache: ResponseCache | None = None,
    max_tokens: int = 96,
    kind=ITEM,
) -> tuple[list[Prediction], float]:
    """Predictions for ``items`` one request at a time, and the seconds per request."""

    async def run():
        async with OpenAIBackend(
            server.model, base_url=server.base_url, cache=cache, max_concurrency=1, timeout=300
        ) as backend:
            elicitor = Elicitor(
                backend, labels, template=template, json_mode="json_object", max_tokens=max_tokens
            )
            started = time.perf_counter()
            predictions, summary = await elicitor.arun(items, kind=kind)
            sent = max(summary.backend.get("requests_sent", 0), 1)
            return predictions, (time.perf_counter() - started) / sent

    return asyncio.run(run())


def bench_cache(name: str) -> ResponseCache:
    """A response cache kept between runs, so an interrupted live bench resumes."""
    folder = models_folder()
    folder.mkdir(parents=True, exist_ok=True)
    return ResponseCache(folder / f"bench-{name}.db")


def load_line() -> str:
    """The 1-minute load average, for the record."""
    return f"load average {os.getloadavg()[0]:.2f}"
