"""The provider options of ``verbcal elicit`` and its ``--dry-run``.

Kept apart from :mod:`verbcal.cli` so that these options live in one place:
``--provider``, ``--param KEY=VALUE``, ``--reasoning-effort``, ``--dry-run``,
``--prices`` and ``--tokenizer`` (see :mod:`verbcal.elicit.providers` and
:mod:`verbcal.elicit.dryrun`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["add_provider_options", "backend_options", "run_dry"]

EXIT_OK = 0


def _param(text: str) -> tuple[str, Any]:
    from verbcal.elicit.providers import parse_param
    from verbcal.errors import ConfigurationError

    try:
        return parse_param(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_provider_options(p: argparse.ArgumentParser) -> None:
    """The provider and cost options of ``verbcal elicit``."""
    from verbcal.elicit.providers import PROFILES, REASONING_EFFORTS

    g = p.add_argument_group(
        "provider",
        "what the endpoint accepts, and what a run costs (see the README's Providers table)",
    )
    g.add_argument(
        "--provider",
        choices=list(PROFILES),
        help="provider profile: which parameters are sent and how (default: inferred from "
        "--base-url and --model, else generic)",
    )
    g.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="extra request field, VALUE as JSON when it parses (repeatable), e.g. top_p=0.9",
    )
    g.add_argument(
        "--reasoning-effort",
        choices=list(REASONING_EFFORTS),
        help="sent to providers that take it (OpenAI reasoning models, Gemini)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="render every request and print requests, prompt tokens and (with --prices) "
        "the estimated cost; send nothing",
    )
    g.add_argument(
        "--prices",
        type=Path,
        help="JSON of dollars per million tokens (input, cached_input, output), per model or "
        "'default'; see verbcal/data/prices.example.json",
    )
    g.add_argument(
        "--tokenizer",
        type=Path,
        help="a GGUF model file whose vocabulary counts the prompt tokens of --dry-run "
        "(needs llama-cpp-python); default: 1 token per 4 bytes",
    )


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`~verbcal.elicit.backend.OpenAIBackend` from the options."""
    return {"provider": args.provider, "params": dict(args.param), "on_note": _say_note}


def _say_note(note: str) -> None:
    """A parameter the provider profile left out or changed: one line on stderr."""
    print(f"verbcal: provider: {note}", file=sys.stderr)


def run_dry(
    args: argparse.Namespace,
    items: Sequence[Any],
    make_backend: Callable[..., Any],
    make_elicitor: Callable[[Any], Any],
    cache_path: Path,
) -> int:
    """``verbcal elicit --dry-run``: print what the run would send and cost; send nothing.

    Requests already answered in an existing cache at ``cache_path`` are
    counted apart; no cache file is created.
    """
    from verbcal.elicit.cache import ResponseCache
    from verbcal.elicit.dryrun import estimate_run, gguf_tokenizer, load_prices

    prices = load_prices(args.prices, args.model) if args.prices else None
    count = gguf_tokenizer(args.tokenizer) if args.tokenizer else None
    cache = ResponseCache(cache_path) if cache_path.exists() else None
    try:
        # No key is needed to count: nothing is sent.
        backend = make_backend(cache, api_key="dry-run")
        elicitor = make_elicitor(backend)
        print(backend.profile.describe(), file=sys.stderr)
        todo = list(items)
        if args.probes:
            todo += elicitor.probe_items(
                [item.text for item in items], n_random=args.n_random_probes
            )
        estimate = estimate_run(
            elicitor,
            todo,
            count=count,
            tokenizer_name=f"tokenizer of {args.tokenizer.name}" if args.tokenizer else None,
            prices=prices,
        )
    finally:
        if cache is not None:
            cache.close()
    print(estimate)
    return EXIT_OK
