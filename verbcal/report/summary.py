"""The report's plain-language summary: a few sentences a person reads first.

Made from a computed :class:`~verbcal.report.data.ReportData` (its ``summary``
field left empty); :func:`~verbcal.report.compute.compute_report` fills it in.
"""

from __future__ import annotations

from verbcal.metrics import BootstrapCI
from verbcal.metrics.comparison import NEGLIGIBLE
from verbcal.report.data import ParseSummary, ProbabilityView, ReportData

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
    if data.parsing is not None:
        text.append(_parsing_sentence(data.parsing))
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


def _parsing_sentence(parsing: ParseSummary) -> str:
    failed = parsing.status_counts.get("failed", 0)
    repaired = parsing.status_counts.get("repaired", 0)
    share = failed / parsing.n_answers if parsing.n_answers else 0.0
    return (
        f"{failed:,} of {parsing.n_answers:,} answers ({share:.1%}) could not be parsed and "
        f"are left out; {repaired:,} were read after repairs."
    )
