"""Draw the report: one self-contained HTML page from a :class:`~verbcal.report.data.ReportData`.

Inline CSS, inline SVG (from :mod:`verbcal.report.svg`), no scripts, no
external assets. Every string that comes from the data or the model goes
through :func:`verbcal.report.svg.esc`.
"""

from __future__ import annotations

import math
import os
from functools import partial
from pathlib import Path

from verbcal.metrics import BootstrapCI
from verbcal.report import svg as _svg
from verbcal.report.data import (
    CalibratorInfo,
    MetricComparison,
    OperatingPointCheck,
    ParseSummary,
    ProbabilityView,
    ReportData,
    Side,
    SuspectSummary,
)
from verbcal.report.svg import esc

__all__ = ["format_value", "render_html", "write_report"]

COLORS = {"before": "#c2410c", "after": "#1d4ed8"}
SIDE_NAMES = {"before": "Before calibration", "after": "After calibration"}
METRIC_TITLES = {
    "accuracy": "Accuracy",
    "ece": "ECE (top-label)",
    "mce": "MCE (top-label)",
    "classwise_ece": "Classwise ECE",
    "brier": "Brier score",
    "nll": "NLL (nats)",
}
#: Longest value shown in the calibrator tables, and most list items.
MAX_VALUE_CHARS = 300
MAX_LIST_ITEMS = 8

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif;
  color: #1f2937; max-width: 1120px; margin: 2rem auto; padding: 0 1.25rem; line-height: 1.5; }
h1 { font-size: 1.75rem; margin-bottom: .2rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid #e5e7eb; padding-bottom: .25rem;
  margin-top: 2.4rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
.meta { color: #4b5563; margin-top: 0; }
.summary { background: #f8fafc; border-left: 4px solid #1d4ed8; padding: .6rem 1.2rem; }
.summary li { margin: .3rem 0; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: .5rem 0 1rem; }
caption { text-align: left; color: #4b5563; font-size: .9rem; padding-bottom: .3rem; }
th, td { padding: .35rem .75rem; border-bottom: 1px solid #e5e7eb; text-align: right;
  vertical-align: top; }
th { background: #f9fafb; font-weight: 600; }
tbody th { background: none; }
th:first-child, td:first-child, .text { text-align: left; }
td:not(.text) { white-space: nowrap; }
td.text { max-width: 40rem; overflow-wrap: anywhere; }
.better { color: #15803d; } .worse { color: #b91c1c; } .unclear { color: #4b5563; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5rem 2.5rem; }
figure { margin: 0; }
figcaption { font-size: .9rem; color: #4b5563; max-width: 400px; }
svg.chart { font-size: 11px; max-width: 100%; height: auto; }
svg.chart text { fill: #374151; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 12em; overflow: auto;
  background: #f3f4f6; padding: .5rem; margin: .2rem 0; font-size: .8rem; }
.note { color: #4b5563; font-size: .92rem; }
footer { margin-top: 3rem; color: #6b7280; font-size: .85rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  section, figure, tr { break-inside: avoid; }
  pre { max-height: none; }
  .summary { border-left-color: #000; }
}
"""


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _interval(estimate: float | None, bounds: tuple[float, float] | None) -> str:
    if estimate is None:
        return "—"
    if bounds is None:
        return _num(estimate)
    return f"{_num(estimate)} <small>[{_num(bounds[0])}, {_num(bounds[1])}]</small>"


def _ci(ci: BootstrapCI | None) -> str:
    return "—" if ci is None else _interval(ci.estimate, (ci.low, ci.high))


def _cell(tag: str, content: str, text: bool, extra: str = "") -> str:
    cls = ' class="text"' if text else ""
    return f"<{tag}{extra}{cls}>{content}</{tag}>"


def _table(caption: str, header: list[str], rows: list[list[str]], text_columns=()) -> str:
    """A table; cells are HTML already (escaped by the caller). ``text_columns`` align left."""
    head = "".join(_cell("th", h, i in text_columns, ' scope="col"') for i, h in enumerate(header))
    body = []
    for row in rows:
        cells = [_cell("th", row[0], False, ' scope="row"')]
        cells += [_cell("td", c, i in text_columns) for i, c in enumerate(row[1:], start=1)]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _views(data: ReportData) -> list[ProbabilityView]:
    return [v for v in (data.before, data.after) if v is not None]


# ----------------------------------------------------------------------------- sections


def _header(data: ReportData) -> str:
    from verbcal import __version__

    labels = ", ".join(esc(label) for label in data.labels)
    kind = "labelled" if data.labelled else "unlabelled"
    summary = "".join(f"<li>{esc(s)}</li>" for s in data.summary)
    return (
        f"<header><h1>{esc(data.title)}</h1>"
        f'<p class="meta">{data.n_rows:,} held-out {kind} rows · {len(data.labels)} classes: '
        f"{labels} · verbcal {esc(__version__)}</p></header>"
        f'<section aria-labelledby="summary-h"><h2 id="summary-h">Summary</h2>'
        f'<ul class="summary">{summary}</ul></section>'
    )


def _verdict(row: MetricComparison) -> str:
    verdict = row.verdict
    text = "no clear change" if verdict == "unclear" else verdict
    return f'<span class="{verdict}">{text}</span>'


def _metrics_section(data: ReportData) -> str:
    if not data.labelled:
        return ""
    has_after = data.after is not None
    header = ["Metric", "Before"] + (
        ["After", "Change (after − before)", "Verdict"] if has_after else []
    )
    rows = []
    for row in data.metrics:
        cells = [esc(METRIC_TITLES.get(row.name, row.name)), _ci(row.before)]
        c = row.change
        if has_after and c is not None:
            change = f"{c.estimate:+.3f} <small>[{c.low:+.3f}, {c.high:+.3f}]</small>"
            cells += [_ci(row.after), change, _verdict(row)]
        rows.append(cells)
    caption = (
        f"Estimates with 95% percentile bootstrap intervals ({data.n_boot} resamples of the "
        f"rows; the change is paired: the same resamples before and after). Binned errors use "
        f"{data.n_bins} equal-width confidence bins. Accuracy is better higher, the rest lower."
    )
    return (
        '<section aria-labelledby="metrics-h"><h2 id="metrics-h">Metrics</h2>'
        + _table(caption, header, rows)
        + "</section>"
    )


def _chart_figure(view: ProbabilityView, draw, key: str, chart: str, body: str) -> str:
    """A figure for one side: the SVG (its desc names the side) and a caption saying the same."""
    side = SIDE_NAMES[view.name]
    svg = draw(
        f"{key}-{view.name}", f"{chart}, {side.lower()}", f"{side}: {body}", COLORS[view.name]
    )
    return f"<figure>{svg}<figcaption><strong>{side}.</strong> {esc(body)}</figcaption></figure>"


def _reliability_section(data: ReportData) -> str:
    figures, histograms = [], []
    for view in _views(data):
        table = view.reliability
        if table is not None:
            body = (
                f"Accuracy against mean confidence in {int((table.count > 0).sum())} non-empty "
                f"bins of {table.n_bins}, with {table.ci_confidence:.0%} Clopper-Pearson "
                "intervals; "
                "point area grows with the rows in the bin. Empty bins are not drawn."
            )
            draw = partial(_svg.reliability_diagram, table)
            figures.append(_chart_figure(view, draw, "rel", "Reliability diagram", body))
        body = (
            f"Rows per confidence bin; mean confidence {view.mean_confidence:.3f}, "
            f"{view.n_distinct:,} distinct confidence values."
        )
        draw = partial(_svg.histogram, view.edges, view.histogram)
        histograms.append(_chart_figure(view, draw, "hist", "Confidence histogram", body))
    note = "" if data.labelled else '<p class="note">No gold labels: no reliability diagrams.</p>'
    return (
        '<section aria-labelledby="reliability-h"><h2 id="reliability-h">Reliability</h2>'
        + note
        + (f'<div class="figures">{"".join(figures)}</div>' if figures else "")
        + '<h3>Confidence histograms</h3><div class="figures">'
        + "".join(histograms)
        + "</div></section>"
    )


def _class_section(data: ReportData) -> str:
    views = _views(data)
    header = ["Class"] + [f"Mean probability, {v.name}" for v in views]
    if data.labelled:
        header += ["Frequency"] + [f"ECE of the class, {v.name}" for v in views]
    rows = []
    for k, label in enumerate(data.labels):
        cells = [esc(label)] + [_num(v.classes[k].mean_probability) for v in views]
        if data.labelled:
            cells += [_num(views[0].classes[k].frequency)]
            cells += [_num(v.classes[k].ece) for v in views]
        rows.append(cells)
    caption = (
        "One-vs-rest: the mean probability given to each class against how often it is the "
        f"gold label, and the binned calibration error of its probability ({data.n_bins} bins; "
        "the mean over classes is the classwise ECE)."
        if data.labelled
        else "Mean probability given to each class (no gold labels to compare with)."
    )
    return (
        '<section aria-labelledby="classes-h"><h2 id="classes-h">Per-class calibration</h2>'
        + _table(caption, header, rows)
        + "</section>"
    )


def _pr_section(data: ReportData) -> str:
    if data.positive is None:
        return (
            '<section aria-labelledby="pr-h"><h2 id="pr-h">Precision and recall</h2>'
            '<p class="note">Give a positive label (and a target precision or recall) to see '
            "precision–recall curves and operating points.</p></section>"
        )
    figures, points = [], []
    for view in _views(data):
        if view.curve is None:
            continue
        body = (
            f"Precision against recall for {data.positive!r} at every threshold on its "
            "probability; dashed: predicted from the probabilities alone"
            + ("; solid: counted on the gold labels." if view.curve.precision is not None else ".")
        )
        draw = partial(_svg.pr_curve, view.curve, view.operating_point)
        figures.append(_chart_figure(view, draw, "pr", "Precision–recall curve", body))
        if view.operating_point is not None:
            points.append((view.name, view.operating_point))
    table = ""
    if points:
        header = ["Probabilities", "Target", "Threshold", "Rows flagged", "Predicted precision"]
        header += ["Realised precision [95% CI]"] if data.labelled else []
        header += ["Predicted recall"] + (["Realised recall [95% CI]"] if data.labelled else [])
        caption = (
            "Thresholds chosen from the probabilities alone (the precision or recall they "
            "predict if they are calibrated)"
            + (", then checked on the gold labels of the same rows." if data.labelled else ".")
        )
        rows = [_point_row(name, point, data.labelled) for name, point in points]
        table = _table(caption, header, rows)
    return (
        '<section aria-labelledby="pr-h"><h2 id="pr-h">Precision and recall for '
        f"{esc(data.positive)}</h2>"
        + f'<div class="figures">{"".join(figures)}</div>'
        + table
        + "</section>"
    )


def _decisions_section(data: ReportData) -> str:
    """Risk–coverage figure, routing table, calibration per confidence band, costs."""
    d = data.decisions
    if d is None:
        return ""
    parts = [
        '<section aria-labelledby="dec-h"><h2 id="dec-h">Decisions: answer, hand to a person, '
        "or weigh the costs</h2>"
    ]
    if d.risk_coverage:
        curves = [(c, COLORS[s], SIDE_NAMES[s].lower()) for s, c in d.risk_coverage.items()]
        svg = _svg.risk_coverage(
            curves,
            "rc",
            "Risk–coverage curve",
            "Error rate of the answered items against the share answered, answering the most "
            "confident first.",
        )
        caption = (
            "Answering only the most confident items: the error rate among the answered "
            "(risk) against the share answered (coverage). Lower is better; AURC is the area "
            "under the curve. "
            + "; ".join(
                f"{SIDE_NAMES[s].lower()}: excess AURC {c.excess_aurc:.4f}"
                for s, c in d.risk_coverage.items()
            )
            + " (0 would rank every error last)."
        )
        parts.append(
            f'<div class="figures"><figure>{svg}<figcaption>{esc(caption)}</figcaption>'
            "</figure></div>"
        )
    if d.routing:
        header = ["Probabilities", "Target accuracy", "Threshold", "Answered automatically"]
        header += ["Predicted accuracy"]
        header += ["Realised accuracy [95% CI]"] if data.labelled else []
        rows = []
        for r in d.routing:
            target = f"{r.target_accuracy:g}"
            if not r.met:
                target += ' <span class="worse">(not reachable)</span>'
            row = [
                "stated" if r.side == "before" else "calibrated",
                target,
                _num(r.threshold, 4),
                f"{r.n_answered:,} ({r.predicted_coverage:.1%})",
                _num(r.predicted_accuracy),
            ]
            row += [_interval(r.accuracy, r.accuracy_ci)] if data.labelled else []
            rows.append(row)
        caption = (
            "Routing: answer automatically when the top probability reaches the threshold the "
            "probabilities predict for each target accuracy, hand the rest to a person"
            + (", then checked on the gold labels of the same rows." if data.labelled else ".")
            + " <code>verbcal route --guarantee</code> chooses thresholds with a finite-sample "
            "guarantee on labelled rows instead."
        )
        parts.append(_table(caption, header, rows))
    if d.bands:
        header = ["Band", "Probabilities", "Rows", "Mean confidence", "Accuracy [95% CI]", "Gap"]
        rows = []
        for side, bands in d.bands.items():
            for b in bands:
                closing = "]" if b.high == 1.0 else ")"
                rows.append(
                    [
                        f"{esc(b.name)} [{b.low:g}, {b.high:g}{closing}",
                        "stated" if side == "before" else "calibrated",
                        f"{b.n_rows:,}",
                        _num(b.confidence),
                        _interval(None if b.n_rows == 0 else b.accuracy, b.accuracy_interval),
                        _num(b.gap),
                    ]
                )
        parts.append(
            _table(
                "Calibration by confidence band: a model can be calibrated on average and "
                "wrong where decisions are made. Gap = mean confidence − accuracy (positive: "
                "overconfident in that band).",
                header,
                rows,
            )
        )
    if d.costs and d.cost_matrix is not None:
        m = d.cost_matrix
        cost_rows = [
            [esc(dec)] + [_num(float(c), 3) for c in row]
            for dec, row in zip(m.decisions, m.C, strict=True)
        ]
        parts.append(
            _table(
                "Costs: rows are decisions, columns the true label.",
                ["Decision"] + [f"truth {esc(lab)}" for lab in m.labels],
                cost_rows,
            )
        )
        header = ["Probabilities", "Decisions", "Predicted mean cost"]
        header += ["Realised mean cost [95% CI]", "Best fixed threshold", "Regret"]
        rows = []
        for side, e in d.costs.items():
            counts = ", ".join(f"{esc(k)}: {v:,}" for k, v in e.decision_counts.items())
            best = "—"
            if e.best_threshold_mean_cost is not None:
                t = f"<small>(t = {e.best_threshold:.4g})</small>"
                best = f"{_num(e.best_threshold_mean_cost)} {t}"
            rows.append(
                [
                    "stated" if side == "before" else "calibrated",
                    counts,
                    _num(e.predicted_mean_cost),
                    _interval(e.realised_mean_cost, e.realised_interval),
                    best,
                    _num(e.regret),
                ]
            )
        policy = next(iter(d.costs.values())).best_threshold_policy
        parts.append(
            _table(
                "Bayes decisions (least expected cost under the probabilities): the cost the "
                "probabilities predict against the cost realised on the gold labels, and the "
                f"regret against the best fixed threshold chosen in hindsight ({esc(policy)}); "
                "negative regret: the probabilities beat every threshold.",
                header,
                rows,
                text_columns=(1,),
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _point_row(name: Side, point: OperatingPointCheck, labelled: bool) -> list[str]:
    target = f"{esc(point.target)} ≥ {point.target_value:g}"
    if not point.met:
        target += ' <span class="worse">(not reachable)</span>'
    row = [
        "stated" if name == "before" else "calibrated",
        target,
        _num(point.threshold, 4),
        f"{point.n_predicted:,}",
        _num(point.predicted_precision),
    ]
    row += [_interval(point.precision, point.precision_ci)] if labelled else []
    row += [_num(point.predicted_recall)]
    row += [_interval(point.recall, point.recall_ci)] if labelled else []
    return row


def format_value(value: object) -> str:
    """A parameter or fitted value as short plain text (not escaped).

    Examples
    --------
    >>> format_value(1.23456789), format_value(list(range(10)))
    ('1.235', '[0, 1, 2, 3, 4, 5, 6, 7, … (10 values)]')
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        items = [f"{k}: {format_value(v)}" for k, v in list(value.items())[:MAX_LIST_ITEMS]]
        more = f", … ({len(value)} entries)" if len(value) > MAX_LIST_ITEMS else ""
        text = "{" + ", ".join(items) + more + "}"
    elif isinstance(value, list):
        items = [format_value(v) for v in value[:MAX_LIST_ITEMS]]
        more = f", … ({len(value)} values)" if len(value) > MAX_LIST_ITEMS else ""
        text = "[" + ", ".join(items) + more + "]"
    else:
        text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + " …"


def _calibrator_section(info: CalibratorInfo | None) -> str:
    if info is None:
        return ""
    title = esc(info.method) + (f" ({esc(info.estimator)})" if info.estimator else "")
    parts = [
        '<section aria-labelledby="calibrator-h"><h2 id="calibrator-h">Calibrator</h2>',
        f"<p>Method: <strong>{title}</strong></p>",
    ]
    if info.explanation:
        parts.append(f"<p>{esc(info.explanation)}</p>")
    for caption, values in (("Parameters", info.params), ("Fitted values", info.fitted)):
        if values:
            rows = [[esc(k), esc(format_value(v))] for k, v in values.items()]
            parts.append(_table(caption, ["Name", "Value"], rows, text_columns=(1,)))
    parts.append("</section>")
    return "".join(parts)


def _parsing_section(parsing: ParseSummary | None) -> str:
    if parsing is None:
        return ""
    total = max(parsing.n_answers, 1)
    rows = [[esc(s), f"{n:,}", f"{n / total:.1%}"] for s, n in parsing.status_counts.items()]
    parts = [
        '<section aria-labelledby="parsing-h"><h2 id="parsing-h">Parsing the answers</h2>',
        _table(
            f"{parsing.n_answers:,} answers by parse status.", ["Status", "Answers", "Share"], rows
        ),
    ]
    if parsing.reasons:
        reason_rows = [
            [
                esc(r.status),
                esc(r.reason),
                f"{r.count:,}",
                f"<small>id {esc(r.example_id)}</small><pre>{esc(r.example_raw)}</pre>",
            ]
            for r in parsing.reasons
        ]
        parts.append(
            _table(
                "The commonest reasons answers were repaired or could not be read, with the "
                "first such answer as the model wrote it.",
                ["Status", "Reason", "Answers", "Example"],
                reason_rows,
                text_columns=(1, 3),
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _suspects_section(s: SuspectSummary | None, labelled: bool) -> str:
    """Items flagged as possible prompt injections: counts, reasons, and how the rows did."""
    if s is None:
        return ""
    parts = [
        '<section aria-labelledby="suspect-h"><h2 id="suspect-h">Possible prompt injections</h2>'
    ]
    note = (
        "<code>verbcal elicit</code> flags an item <em>suspect</em> when its text holds the "
        "answer's JSON shape, a line like the data fence, or instruction-override phrasing "
        "(plain patterns: a flag for review, not a defence; paraphrases go unflagged)."
    )
    if not s.n_flagged:
        parts.append(
            f'<p class="note">None of the {s.n_items:,} items is flagged. {note} Predictions '
            "written by other tools carry no flag.</p></section>"
        )
        return "".join(parts)
    parts.append(f'<p class="note">{note}</p>')
    rows = [
        ["Flagged", f"{s.n_flagged:,}", f"{s.n_flagged / max(s.n_items, 1):.1%} of the items"],
        ["Skipped (not sent: --on-suspect skip)", f"{s.n_skipped:,}", ""],
        ["Kept (elicited anyway)", f"{s.n_kept:,}", f"{s.n_kept_parsed:,} parsed"],
        ["Among the rows reported here", f"{s.n_reported:,}", ""],
    ]
    parts.append(
        _table(
            f"{s.n_flagged:,} of {s.n_items:,} items flagged (the count "
            "<code>verbcal evaluate</code> prints).",
            ["Items", "Count", "Note"],
            rows,
        )
    )
    reason_rows = [
        [esc(r.reason), f"{r.count:,}", f"<small>id {esc(r.example_id)}</small> {esc(r.example)}"]
        for r in s.reasons
    ]
    parts.append(
        _table(
            "Why they were flagged (an item can have several reasons), with what matched in "
            "the first such item.",
            ["Reason", "Items", "Example"],
            reason_rows,
            text_columns=(2,),
        )
    )
    if s.groups:
        header = ["Probabilities", "Rows", "Mean confidence"]
        header += ["Accuracy [95% CI]", "ECE", "NLL"] if labelled else []
        group_rows = []
        for g in s.groups:
            row = [
                ("stated" if g.side == "before" else "calibrated")
                + (", flagged" if g.flagged else ", not flagged"),
                f"{g.n_rows:,}",
                _num(g.mean_confidence),
            ]
            if labelled:
                row += [_interval(g.accuracy, g.accuracy_ci), _num(g.ece), _num(g.nll)]
            group_rows.append(row)
        caption = (
            "The reported rows split into flagged and not flagged: an injection that steers "
            "the model shows as lower accuracy on the flagged rows"
            + (
                " (Clopper-Pearson intervals; ECE and NLL are point estimates, unreliable on "
                "a handful of rows)."
                if labelled
                else "; without gold labels only the confidence can be compared."
            )
        )
        parts.append(_table(caption, header, group_rows))
    parts.append("</section>")
    return "".join(parts)


def render_html(data: ReportData) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts).

    Examples
    --------
    >>> import numpy as np
    >>> from verbcal.report import compute_report
    >>> P = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    >>> page = render_html(compute_report(["neg", "pos"], P, y=[0, 1, 1, 0], n_boot=20))
    >>> page.startswith("<!DOCTYPE html>"), "<script" in page
    (True, False)
    """
    body = "".join(
        [
            _header(data),
            _metrics_section(data),
            _reliability_section(data),
            _class_section(data),
            _pr_section(data),
            _decisions_section(data),
            _calibrator_section(data.calibrator),
            _suspects_section(data.suspects, data.labelled),
            _parsing_section(data.parsing),
            "<footer>Generated by verbcal. Self-contained: no scripts, no external files.</footer>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(data.title)}</title><style>{CSS}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    )


def write_report(path: str | os.PathLike, data: ReportData) -> Path:
    """Write :func:`render_html` of ``data`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path
