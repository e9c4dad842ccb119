"""Hand-written inline SVG charts for the report: reliability diagrams, histograms, PR curves.

Each function takes plain data (from :mod:`verbcal.report`) and returns one
``<svg>`` element as a string, with a ``<title>`` and ``<desc>`` for screen
readers. Every text that comes from data is escaped here. Charts draw
aggregates (bins, at most ``MAX_CURVE_POINTS`` curve points), so their size
does not grow with the number of rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np

#: Most points drawn per curve; longer curves are thinned evenly (ends kept).
MAX_CURVE_POINTS = 400

GRID = "#e5e7eb"
INK = "#374151"
MUTED = "#9ca3af"


def esc(text: object) -> str:
    """``text`` escaped for HTML and SVG content and attribute values."""
    return escape(str(text), quote=True)


def _f(value: float) -> str:
    """A coordinate: one decimal is finer than a screen pixel."""
    return f"{value:.1f}"


@dataclass(frozen=True)
class Frame:
    """Pixel layout of one chart and the map from data to pixels (y grows upwards)."""

    width: int = 400
    height: int = 340
    left: int = 60
    right: int = 14
    top: int = 14
    bottom: int = 46
    x_max: float = 1.0
    y_max: float = 1.0

    def x(self, value: float) -> float:
        return self.left + (self.width - self.left - self.right) * value / self.x_max

    def y(self, value: float) -> float:
        return (
            self.height - self.bottom - (self.height - self.top - self.bottom) * value / self.y_max
        )


def _open(frame: Frame, key: str, title: str, desc: str) -> str:
    """Start an ``<svg>`` with an accessible name; ``key`` must be a safe id fragment."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {frame.width} '
        f'{frame.height}" width="{frame.width}" height="{frame.height}" role="img" '
        f'aria-labelledby="{key}-title {key}-desc">'
        f'<title id="{key}-title">{esc(title)}</title><desc id="{key}-desc">{esc(desc)}</desc>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return (
        f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" stroke="{stroke}"{extra}/>'
    )


def _text(x: float, y: float, text: str, extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}"{extra}>{esc(text)}</text>'


def _axes(
    frame: Frame, x_label: str, y_label: str, x_ticks: list[float], y_ticks: list[float]
) -> str:
    """Grid lines, tick labels and axis titles."""
    parts = []
    bottom, top = frame.y(0), frame.y(frame.y_max)
    left, right = frame.x(0), frame.x(frame.x_max)
    for t in x_ticks:
        parts.append(_line(frame.x(t), bottom, frame.x(t), top, GRID))
        parts.append(_text(frame.x(t), bottom + 14, tick_label(t), ' text-anchor="middle"'))
    for t in y_ticks:
        parts.append(_line(left, frame.y(t), right, frame.y(t), GRID))
        parts.append(_text(left - 5, frame.y(t) + 4, tick_label(t), ' text-anchor="end"'))
    parts.append(_line(left, bottom, right, bottom, INK))
    parts.append(_line(left, bottom, left, top, INK))
    parts.append(_text((left + right) / 2, frame.height - 8, x_label, ' text-anchor="middle"'))
    middle = (top + bottom) / 2
    parts.append(
        _text(12, middle, y_label, f' text-anchor="middle" transform="rotate(-90 12 {_f(middle)})"')
    )
    return "".join(parts)


def _legend(frame: Frame, items: list[tuple[str, str]], top: bool) -> str:
    """Legend entries (a small SVG mark, a label) stacked at the top or bottom left of the plot."""
    x = frame.x(0) + 8
    y0 = frame.y(frame.y_max) + 12 if top else frame.y(0) - 8 - 15 * (len(items) - 1)
    parts = []
    for i, (mark, label) in enumerate(items):
        y = y0 + 15 * i
        parts.append(f'<g transform="translate({_f(x)} {_f(y)})">{mark}</g>')
        parts.append(_text(x + 22, y + 4, label))
    return "".join(parts)


def tick_label(value: float) -> str:
    """Fractions as they are, large counts with thousands separators.

    Examples
    --------
    >>> tick_label(0.2), tick_label(250.0), tick_label(100000.0)
    ('0.2', '250', '100,000')
    """
    return f"{int(value):,}" if value >= 1000 and value == int(value) else f"{value:g}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is ``>= value`` (1 for 0).

    Examples
    --------
    >>> nice_ceiling(0), nice_ceiling(7), nice_ceiling(180), nice_ceiling(1000)
    (1.0, 10.0, 200.0, 1000.0)
    """
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= value)


# ----------------------------------------------------------------------------- charts


def reliability_diagram(table, key: str, title: str, desc: str, color: str) -> str:
    """Accuracy against confidence per bin, with interval whiskers and the diagonal.

    Each non-empty bin gets a light bar over its range up to its accuracy and a
    point at (mean confidence, accuracy) whose area grows with the bin's rows;
    empty bins draw nothing.
    """
    frame = Frame()
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    parts = [_open(frame, key, title, desc), _axes(frame, "confidence", "accuracy", ticks, ticks)]
    parts.append(
        _line(frame.x(0), frame.y(0), frame.x(1), frame.y(1), MUTED, ' stroke-dasharray="4 3"')
    )
    largest = max(int(table.count.max()), 1)
    for b in np.flatnonzero(table.count > 0):
        parts.append(_bin_mark(frame, table, int(b), largest, color))
    point = f'<circle cx="8" cy="0" r="4" fill="{color}"/>'
    diagonal = _line(0, 5, 16, -5, MUTED, ' stroke-dasharray="4 3"')
    whisker = _line(8, -6, 8, 6, color) + point
    parts.append(
        _legend(
            frame,
            [
                (diagonal, "perfect calibration"),
                (whisker, f"bin accuracy, {table.ci_confidence:.0%} CI"),
            ],
            top=True,
        )
    )
    parts.append("</svg>")
    return "".join(parts)


def _bin_mark(frame: Frame, table, b: int, largest: int, color: str) -> str:
    low_edge, high_edge = table.edges[b], table.edges[b + 1]
    acc, conf, n = table.accuracy[b], table.confidence[b], int(table.count[b])
    ci_low, ci_high = table.ci_low[b], table.ci_high[b]
    x, y = frame.x(conf), frame.y(acc)
    radius = 2.5 + 5.5 * math.sqrt(n / largest)
    tip = (
        f"bin [{low_edge:.3g}, {high_edge:.3g}{']' if b == table.n_bins - 1 else ')'}: "
        f"{n:,} rows, mean confidence {conf:.3f}, accuracy {acc:.3f} "
        f"[{ci_low:.3f}, {ci_high:.3f}]"
    )
    bar_x, bar_w = frame.x(low_edge) + 1, max(frame.x(high_edge) - frame.x(low_edge) - 2, 1)
    return (
        f"<g><title>{esc(tip)}</title>"
        f'<rect x="{_f(bar_x)}" y="{_f(y)}" width="{_f(bar_w)}" height="{_f(frame.y(0) - y)}" '
        f'fill="{color}" fill-opacity="0.15"/>'
        + _line(x, frame.y(ci_low), x, frame.y(ci_high), color, ' stroke-width="1.5"')
        + _line(x - 3, frame.y(ci_low), x + 3, frame.y(ci_low), color)
        + _line(x - 3, frame.y(ci_high), x + 3, frame.y(ci_high), color)
        + f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{radius:.1f}" fill="{color}" '
        f'fill-opacity="0.85" stroke="#fff" stroke-width="0.8"/></g>'
    )


def histogram(
    edges: np.ndarray, counts: np.ndarray, key: str, title: str, desc: str, color: str
) -> str:
    """Rows per confidence bin, as bars; empty bins draw nothing."""
    top = nice_ceiling(float(counts.max()))
    frame = Frame(height=220, y_max=top)
    parts = [
        _open(frame, key, title, desc),
        _axes(frame, "confidence", "rows", [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], [0.0, top / 2, top]),
    ]
    for b in np.flatnonzero(counts > 0):
        x0, x1 = frame.x(edges[b]) + 1, frame.x(edges[b + 1]) - 1
        y = frame.y(float(counts[b]))
        tip = f"[{edges[b]:.3g}, {edges[b + 1]:.3g}): {int(counts[b]):,} rows"
        parts.append(
            f"<g><title>{esc(tip)}</title>"
            f'<rect x="{_f(x0)}" y="{_f(y)}" width="{_f(max(x1 - x0, 1))}" '
            f'height="{_f(frame.y(0) - y)}" fill="{color}" fill-opacity="0.75"/></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def thin(n: int, most: int = MAX_CURVE_POINTS) -> np.ndarray:
    """At most ``most`` evenly spread indices into ``range(n)``, first and last included.

    Examples
    --------
    >>> thin(5).tolist(), thin(10, most=4).tolist()
    ([0, 1, 2, 3, 4], [0, 3, 6, 9])
    """
    if n <= most:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, most).round().astype(int))


def _polyline(frame: Frame, xs: np.ndarray, ys: np.ndarray, color: str, extra: str = "") -> str:
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size == 0:
        return ""
    index = thin(xs.size)
    points = " ".join(
        f"{_f(frame.x(a))},{_f(frame.y(b))}" for a, b in zip(xs[index], ys[index], strict=True)
    )
    return f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8"{extra}/>'


def pr_curve(curve, point, key: str, title: str, desc: str, color: str) -> str:
    """Precision against recall: counted (solid) and predicted (dashed), with the chosen point.

    ``point`` (an ``OperatingPointCheck`` or None) is drawn as a hollow circle
    where the probabilities promise it and a filled one, with its precision
    interval, where the gold labels put it.
    """
    frame = Frame()
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    parts = [_open(frame, key, title, desc), _axes(frame, "recall", "precision", ticks, ticks)]
    dashed = ' stroke-dasharray="5 3"'
    parts.append(_polyline(frame, curve.predicted_recall, curve.predicted_precision, color, dashed))
    legend = [(_line(0, 0, 16, 0, color, dashed + ' stroke-width="1.8"'), "predicted")]
    if curve.precision is not None:
        parts.append(_polyline(frame, curve.recall, curve.precision, color))
        legend.insert(0, (_line(0, 0, 16, 0, color, ' stroke-width="1.8"'), "counted on labels"))
    if point is not None:
        parts.append(_point_marks(frame, point, color))
        legend.append(
            (
                f'<circle cx="8" cy="0" r="4.5" fill="#fff" stroke="{INK}" stroke-width="2"/>',
                "promised",
            )
        )
        if point.precision is not None:
            legend.append((f'<circle cx="8" cy="0" r="4.5" fill="{INK}"/>', "realised"))
    parts.append(_legend(frame, legend, top=False))
    parts.append("</svg>")
    return "".join(parts)


def _point_marks(frame: Frame, point, color: str) -> str:
    px, py = frame.x(point.predicted_recall), frame.y(point.predicted_precision)
    tip = (
        f"threshold {point.threshold:.4g}: predicted precision {point.predicted_precision:.3f}, "
        f"predicted recall {point.predicted_recall:.3f}"
    )
    marks = [
        f'<circle cx="{_f(px)}" cy="{_f(py)}" r="5" fill="#fff" stroke="{INK}" stroke-width="2"/>'
    ]
    if point.precision is not None:
        tip += f"; realised precision {point.precision:.3f}"
        recall = point.recall if point.recall is not None else point.predicted_recall
        rx, ry = frame.x(recall), frame.y(point.precision)
        low, high = point.precision_ci
        marks.insert(0, _line(px, py, rx, ry, INK, ' stroke-dasharray="2 2"'))
        marks.append(_line(rx, frame.y(low), rx, frame.y(high), INK, ' stroke-width="1.5"'))
        marks.append(f'<circle cx="{_f(rx)}" cy="{_f(ry)}" r="5" fill="{INK}"/>')
    return f"<g><title>{esc(tip)}</title>{''.join(marks)}</g>"


def risk_coverage(curves: list, key: str, title: str, desc: str) -> str:
    """Risk (error rate of answered rows) against coverage; one line per ``(curve, color, name)``.

    Each curve is a :class:`verbcal.selective.RiskCoverageCurve`; the line
    starts at the most confident point and steps through every distinct
    confidence to full coverage.
    """
    top = nice_ceiling(max(float(np.max(c.risk)) for c, _, _ in curves))
    frame = Frame(y_max=min(top, 1.0))
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    y_ticks = [frame.y_max * i / 4 for i in range(5)]
    parts = [
        _open(frame, key, title, desc),
        _axes(frame, "coverage", "risk (error rate)", ticks, y_ticks),
    ]
    legend = []
    for curve, color, name in curves:
        parts.append(
            _polyline(frame, np.r_[0.0, curve.coverage], np.r_[curve.risk[0], curve.risk], color)
        )
        legend.append(
            (_line(0, 0, 16, 0, color, ' stroke-width="1.8"'), f"{name} (AURC {curve.aurc:.3f})")
        )
    parts.append(_legend(frame, legend, top=True))
    parts.append("</svg>")
    return "".join(parts)
