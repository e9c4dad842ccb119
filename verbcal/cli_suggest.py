"""``verbcal suggest-labels``: which items to label first, for a labelling budget.

Kept apart from :mod:`verbcal.cli` (one command, one module); the choice itself is
:func:`verbcal.labelling.suggest_labels`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_suggest_labels_command"]

EXIT_OK = 0


def _budget(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_suggest_labels_command(sub) -> None:
    """Register ``suggest-labels`` on the ``verbcal`` subcommand parser ``sub``."""
    p = sub.add_parser(
        "suggest-labels",
        help="choose which items to label first for a labelling budget",
        description="Choose --budget items to label among the parsed, unlabelled items of a "
        "predictions file: a sample stratified by predicted class and stated confidence, "
        "leaning toward the less confident answers, where mistakes (what calibration learns "
        "from) gather. Writes their ids, one per line, most useful first: label from the top "
        "and stop anywhere.",
    )
    p.add_argument("--preds", required=True, type=Path, help="predictions JSONL")
    p.add_argument("--budget", required=True, type=_budget, help="how many items to choose")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws within strata")
    p.add_argument("--out", required=True, type=Path, help="text file of ids to write")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from verbcal.errors import InvalidInputError
    from verbcal.labelling import suggest_labels
    from verbcal.outputs import check_output
    from verbcal.predictions import ITEM, read_predictions

    check_output(args.out, "--out", {"--preds": args.preds})
    predictions = read_predictions(args.preds)
    pool = [p for p in predictions if p.kind == ITEM and p.probs is not None and p.label is None]
    if not pool:
        raise InvalidInputError(
            f"{args.preds}: no parsed item is without a gold label: nothing left to suggest"
        )
    labels = pool[0].labels
    P = np.array([[p.probs[label] for label in labels] for p in pool if p.probs is not None])
    chosen = suggest_labels(P, args.budget, random_state=args.seed)
    args.out.write_text("".join(f"{pool[i].id}\n" for i in chosen), encoding="utf-8")
    skipped = len(predictions) - len(pool)
    note = f" ({skipped} rows labelled, unparsed or content-free not considered)" if skipped else ""
    print(f"wrote {len(chosen)} of {len(pool)} unlabelled item ids to {args.out}{note}")
    return EXIT_OK
