"""The report's plain-language summary: a few sentences a person reads first.

Made from a computed :class:`~verbcal.report.data.ReportData` (its ``summary``
field left empty); :func:`~verbcal.report.compute.compute_report` fills it in.
"""

from __future__ import annotations

from verbcal.metrics import BootstrapCI
from verbcal.metrics.comparison import NEGLIGIBLE
from verbcal.report.data import (
    ParseSummary,
    ProbabilityView,
    ReportData,
    Side,
    SuspectSummary,
)

__all__ = ["summarize"]


def _ci(ci: BootstrapCI) -> str:
    return f"{ci.estimate:.3f} [{ci.low:.3f}, {ci.high:.3f}]"


def _lean(view: ProbabilityView, accuracy: float) -> str:
    gap = view.mean_confidence - accuracy
    said = f"mean confidence {view.mean_confidence:.3f} against accuracy {accuracy:.3f}"
    if abs(gap) < 0.02:
        return f"close to right on average ({said})"
    return f"{'over' if gap > 0 else 'under'}-confident ({said})"


def summarize(data: ReportData) -> list[str]:
    """The report's plain-language summary, one sentence group per item."""
    rows = f"{data.n_rows:,} held-out {'labelled' if data.labelled else 'unlabelled'} rows"
    if not data.labelled:
        text = [f"{rows}: without gold labels only predicted quantities are shown."]
        said = f"The stated confidences average {data.before.mean_confidence:.3f}"
        if data.after is not None:
            said += f" before calibration and {data.after.mean_confidence:.3f} after"
        text.append(said + ".")
    else:
        text = [_calibration_sentence(data, rows)]
        acc = data.metric("accuracy")
        text.append(
            "Before calibration the stated confidences were "
            + _lean(data.before, acc.before.estimate)
            + "."
        )
        if data.after is not None and acc.after is not None:
            text.append("After calibration they are " + _lean(data.after, acc.after.estimate) + ".")
            if abs(acc.after.estimate - acc.before.estimate) > 1e-12:
                text.append(
                    f"Calibration changed which class is predicted for some rows: accuracy "
                    f"went from {acc.before.estimate:.3f} to {acc.after.estimate:.3f}."
                )
    n_distinct = data.before.n_distinct
    if n_distinct <= 20:
        stated = (
            "a single confidence value"
            if n_distinct == 1
            else f"only {n_distinct} distinct confidence values"
        )
        text.append(
            f"The model stated {stated}, so before calibration its rows fall in at most "
            f"{n_distinct} of the {data.n_bins} bins."
        )
    text.extend(_point_sentences(data))
    text.extend(_decision_sentences(data))
    if data.suspects is not None and data.suspects.n_flagged:
        text.extend(_suspect_sentences(data.suspects, data.after is not None))
    if data.parsing is not None:
        skipped = 0 if data.suspects is None else data.suspects.n_skipped
        text.append(_parsing_sentence(data.parsing, skipped))
    return text


def _calibration_sentence(data: ReportData, rows: str) -> str:
    ece = data.metric("ece")
    change = ece.change
    if ece.after is None or change is None:
        return f"ECE {_ci(ece.before)} on {rows} (no calibrated probabilities given)."
    difference = ece.after.estimate - ece.before.estimate
    if abs(difference) <= NEGLIGIBLE:
        text = f"Calibration left ECE at {_ci(ece.before)} on {rows}"
    else:
        moved = "lowered" if difference < 0 else "raised"
        text = f"Calibration {moved} ECE from {_ci(ece.before)} to {_ci(ece.after)} on {rows}"
    text += (
        f"; the paired bootstrap change is {change.estimate:+.3f} [{change.low:+.3f}, "
        f"{change.high:+.3f}]"
    )
    verdict = ece.verdict
    if verdict == "better":
        return text + ", a clear improvement."
    if verdict == "worse":
        return text + ": calibration made these probabilities worse."
    return text + ", which includes 0: no clear difference on these rows."


def _point_sentences(data: ReportData) -> list[str]:
    out = []
    for view in [v for v in (data.before, data.after) if v is not None]:
        point = view.operating_point
        if point is None:
            continue
        which = "stated" if view.name == "before" else "calibrated"
        sentence = (
            f"Aiming at {point.target} ≥ {point.target_value:g} for {point.label!r} with the "
            f"{which} probabilities: threshold {point.threshold:.3f} flags {point.n_predicted:,} "
            f"of {data.n_rows:,} rows and {'meets' if point.met else 'cannot meet'} it by "
            f"prediction (predicted precision {point.predicted_precision:.3f}"
        )
        if point.precision is not None and point.precision_ci is not None:
            low, high = point.precision_ci
            sentence += f", realised {point.precision:.3f} [{low:.3f}, {high:.3f}]"
        out.append(sentence + ").")
    return out


def _decision_sentences(data: ReportData) -> list[str]:
    """Routing at accuracy 0.9, the worst confidence band and the costs, for the last side."""
    d = data.decisions
    if d is None:
        return []
    side = "after" if data.after is not None else "before"
    which = "calibrated" if side == "after" else "stated"
    out = []
    rows = [r for r in d.routing if r.side == side and r.target_accuracy == 0.9]
    if rows and rows[0].met:
        r = rows[0]
        text = (
            f"Routing: answering automatically when the {which} confidence is at least "
            f"{r.threshold:.3g} is predicted to give accuracy {r.predicted_accuracy:.3f} on "
            f"{r.predicted_coverage:.0%} of the rows, the rest going to a person"
        )
        if r.accuracy is not None:
            text += f"; on the gold labels it gave {r.accuracy:.3f}"
        out.append(text + ".")
    bands = [b for b in d.bands.get(side, []) if b.n_rows]
    if bands:
        worst = max(bands, key=lambda b: abs(b.gap))
        lean = "overconfident" if worst.gap > 0 else "underconfident"
        out.append(
            f"By confidence band, the {which} probabilities are furthest off in the "
            f"{worst.name} band ({worst.n_rows:,} rows): {lean} by {abs(worst.gap):.3f}."
        )
    cost = d.costs.get(side)
    if cost is not None and cost.realised_mean_cost is not None and cost.regret is not None:
        out.append(
            f"Under the costs given, decisions from the {which} probabilities were predicted "
            f"to cost {cost.predicted_mean_cost:.3f} per row and cost "
            f"{cost.realised_mean_cost:.3f}; the best fixed threshold in hindsight cost "
            f"{cost.best_threshold_mean_cost:.3f} (regret {cost.regret:+.3f})."
        )
    return out


def _parsing_sentence(parsing: ParseSummary, skipped: int = 0) -> str:
    """Failed and repaired answers; items never asked (skipped as suspect) are not answers."""
    failed = parsing.status_counts.get("failed", 0) - skipped
    repaired = parsing.status_counts.get("repaired", 0)
    answers = parsing.n_answers - skipped
    share = failed / answers if answers else 0.0
    text = (
        f"{failed:,} of {answers:,} answers ({share:.1%}) could not be parsed and "
        f"are left out; {repaired:,} were read after repairs"
    )
    if skipped:
        text += f" ({skipped:,} more items were not asked: flagged suspect and skipped)"
    return text + "."


def _suspect_sentences(s: SuspectSummary, calibrated: bool) -> list[str]:
    """How many items were flagged and why, what was done with them, and how they did."""
    why = ", ".join(f"{r.reason} {r.count:,}" for r in s.reasons)
    done = []
    if s.n_skipped:
        done.append(f"{s.n_skipped:,} were not sent to the model (--on-suspect skip)")
    if s.n_kept:
        done.append(f"{s.n_kept:,} were elicited anyway ({s.n_kept_parsed:,} parsed)")
    text = [
        f"{s.n_flagged:,} of {s.n_items:,} items were flagged as possible prompt injections "
        f"({why}); " + " and ".join(done) + "."
    ]
    side: Side = "after" if calibrated and any(g.side == "after" for g in s.groups) else "before"
    if not s.groups:
        if s.n_kept_parsed:
            text.append("None of the flagged items is among the rows reported here.")
        return text
    groups = {(g.side, g.flagged): g for g in s.groups}
    flagged, other = groups[(side, True)], groups.get((side, False))
    which = "calibrated" if side == "after" else "stated"
    rows = f"{flagged.n_rows:,} flagged row{'s' if flagged.n_rows != 1 else ''}"
    if flagged.accuracy is None or flagged.accuracy_ci is None:
        sentence = f"On the {rows} reported, the mean {which} confidence is "
        sentence += f"{flagged.mean_confidence:.3f}"
        if other is not None:
            sentence += f" against {other.mean_confidence:.3f} on the other rows"
        return [*text, sentence + " (no gold labels to say which were right)."]
    sentence = (
        f"On the {rows} reported, accuracy is {_interval(flagged)} with mean {which} "
        f"confidence {flagged.mean_confidence:.3f}"
    )
    if other is not None and other.accuracy is not None:
        sentence += (
            f"; on the other {other.n_rows:,} rows {_interval(other)} with "
            f"{other.mean_confidence:.3f}"
        )
    return [*text, sentence + " (95% Clopper-Pearson intervals)."]


def _interval(group) -> str:
    low, high = group.accuracy_ci
    return f"{group.accuracy:.3f} [{low:.3f}, {high:.3f}]"
