"""``verbcal pairwise items|combine|bias``: pairwise judges asked in both orders.

The flow, end to end::

    verbcal pairwise items --pairs pairs.jsonl --out items.jsonl      # both orders
    verbcal elicit --input items.jsonl --labels A,B --template pairwise ... --out both.jsonl
    verbcal pairwise bias --preds both.jsonl                           # position bias
    verbcal pairwise combine --preds both.jsonl --out combined.jsonl   # logit mean
    verbcal fit --preds combined.jsonl ...; verbcal evaluate ...; verbcal report ...
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

__all__ = ["add_pairwise_command"]


def add_pairwise_command(sub) -> None:
    """Register ``verbcal pairwise`` and its subcommands."""
    p = sub.add_parser(
        "pairwise",
        help="pairwise judges: items in both orders, position bias, combined orders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inner = p.add_subparsers(dest="pairwise_command", required=True, metavar="STEP")
    items = inner.add_parser(
        "items", help="write each pair twice, (a, b) as ID|AB and (b, a) as ID|BA"
    )
    items.add_argument("--pairs", type=Path, help="JSONL: id, prompt, a, b[, winner A|B]")
    items.add_argument(
        "--builtin", action="store_true", help="use the shipped pairwise set (235 pairs)"
    )
    items.add_argument("--every", type=int, default=1, help="only every K-th pair (default 1)")
    items.add_argument("--limit", type=int, help="only the first N pairs (after --every)")
    items.add_argument("--out", type=Path, required=True)
    items.set_defaults(run=_run_items)
    for name, text in (
        ("bias", "position bias: logit bonus of the first place, flip rate, with intervals"),
        ("combine", "one prediction per pair from the mean of both orders' logits"),
    ):
        q = inner.add_parser(name, help=text, description=text)
        q.add_argument("--preds", type=Path, required=True, help="predictions of both orders")
        q.add_argument("--json", action="store_true", help="print the bias as JSON")
        if name == "combine":
            q.add_argument("--out", type=Path, required=True, help="combined predictions JSONL")
        q.set_defaults(run=_run_bias if name == "bias" else _run_combine)


def _run_items(args: argparse.Namespace) -> int:
    from verbcal.errors import InvalidInputError
    from verbcal.outputs import check_output
    from verbcal.pairwise import load_pairwise_dataset, pair_items, read_pairs

    if (args.pairs is None) == (not args.builtin):
        raise InvalidInputError("give exactly one of --pairs FILE and --builtin")
    pairs = load_pairwise_dataset() if args.builtin else read_pairs(args.pairs)
    if args.every < 1:
        raise InvalidInputError(f"--every must be >= 1, got {args.every}")
    pairs = pairs[:: args.every]
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInputError(f"--limit must be >= 1, got {args.limit}")
        pairs = pairs[: args.limit]
    check_output(args.out, "--out", {"--pairs": args.pairs})
    lines = [
        json.dumps({"id": i.id, "text": i.text, "label": i.label}, ensure_ascii=False)
        for i in pair_items(pairs)
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} items ({len(pairs)} pairs, both orders) to {args.out}")
    return 0


def _bias(args: argparse.Namespace):
    from verbcal.pairwise import position_bias
    from verbcal.predictions import read_predictions

    predictions = read_predictions(args.preds)
    return predictions, position_bias(predictions)


def _print_bias(args, bias) -> None:
    if args.json:
        print(json.dumps(asdict(bias), indent=1))
    else:
        print("\n".join(bias.lines()))


def _run_bias(args: argparse.Namespace) -> int:
    _, bias = _bias(args)
    _print_bias(args, bias)
    return 0


def _run_combine(args: argparse.Namespace) -> int:
    from verbcal.outputs import check_output
    from verbcal.pairwise import combine_orders
    from verbcal.predictions import write_predictions

    check_output(args.out, "--out", {"--preds": args.preds})
    predictions, bias = _bias(args)
    combined = combine_orders(predictions)
    write_predictions(args.out, combined)
    _print_bias(args, bias)
    print(f"wrote {len(combined)} combined predictions to {args.out}", file=sys.stderr)
    return 0
