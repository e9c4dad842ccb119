"""Tests for the reliability report: the numbers (verbcal.report) and the page (HTML + SVG).

The numbers are checked against the public metrics/thresholds functions they
must equal; the page is checked for escaping, well-formedness, size, and by
opening it in a real headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pytest
from recorded import load_recorded_task

from verbcal import metrics, thresholds
from verbcal.calibrators import AutoCalibrator, TemperatureScaling
from verbcal.elicit.parse import parse_verbalized
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.predictions import CONTENT_FREE, Prediction
from verbcal.report import (
    CalibratorInfo,
    compare_metrics,
    compute_report,
    describe_calibrator,
    render_html,
    report_from_predictions,
    summarize_parsing,
    write_report,
)
from verbcal.report.compute import MAX_EXAMPLE_CHARS
from verbcal.workflow import fit_calibrator, held_out

N_BOOT = 30  # enough resamples to test the intervals; keeps the file fast
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


# ----------------------------------------------------------------------------- helpers


def dirichlet_rows(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated-by-construction rows: y is drawn from each row's own distribution."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(k, 0.6), size=n)
    y = (rng.random(n)[:, None] > np.cumsum(P, axis=1)).sum(axis=1)
    return P, np.minimum(y, k - 1)


def sharpen(P: np.ndarray, power: float) -> np.ndarray:
    """``P ** power`` renormalised: power > 1 makes rows over-confident."""
    Q = P**power
    return Q / Q.sum(axis=1, keepdims=True)


def recorded_predictions(task) -> list[Prediction]:
    """Every recorded answer read by verbcal's own parser, with status and reason."""
    out = []
    for record in task.records:
        result = parse_verbalized(record["raw"], task.labels)
        probs = (
            None
            if result.probs is None
            else dict(zip(task.labels, result.probs.tolist(), strict=True))
        )
        out.append(
            Prediction(
                id=str(record["id"]),
                labels=task.labels,
                probs=probs,
                status=result.status,
                detail="; ".join(result.detail),
                raw=record["raw"],
                label=record["gold"],
            )
        )
    return out


@pytest.fixture(scope="module", params=["boolq__gpt-4o", "sciq__claude-3-7-sonnet-20250219"])
def recorded_report(request, recorded_data):
    """A report on the held-out half of a recorded task, calibrated on the other half."""
    task = load_recorded_task(recorded_data / f"{request.param}.jsonl")
    order = np.random.default_rng(0).permutation(task.y.size)
    fit, held = order[::2], order[1::2]
    calibrator = TemperatureScaling().fit(task.P[fit], task.y[fit])
    P, Q, y = task.P[held], calibrator.predict_proba(task.P[held]), task.y[held]
    data = compute_report(
        task.labels,
        P,
        Q,
        y,
        predictions=recorded_predictions(task),
        calibrator=describe_calibrator(calibrator, "temperature"),
        positive=task.labels[0],
        target_precision=0.9,
        n_boot=N_BOOT,
    )
    return data, P, Q, y, calibrator


class TagBalance(HTMLParser):
    """Fails on a closing tag that does not match the open one (void elements aside)."""

    VOID = {"meta", "br", "img", "hr", "input", "link", "line", "circle", "rect", "polyline"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def parse_page(page: str) -> TagBalance:
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def svg_elements(page: str) -> list[ET.Element]:
    """Every inline ``<svg>`` of the page, parsed as XML (so each must be well-formed)."""
    out, start = [], page.find("<svg")
    while start != -1:
        end = page.index("</svg>", start) + len("</svg>")
        out.append(ET.fromstring(page[start:end]))
        start = page.find("<svg", end)
    return out


# ----------------------------------------------------------------------------- recorded data


def test_metrics_equal_the_metrics_functions(recorded_report):
    data, P, Q, y, _ = recorded_report
    functions = {
        "accuracy": metrics.accuracy,
        "ece": metrics.ece,
        "mce": metrics.mce,
        "classwise_ece": metrics.classwise_ece,
        "brier": metrics.brier,
        "nll": metrics.nll,
    }
    assert [row.name for row in data.metrics] == list(functions)
    for name, fn in functions.items():
        row = data.metric(name)
        assert row.before.estimate == fn(P, y)
        assert row.after.estimate == fn(Q, y)
        for got, rows in ((row.before, P), (row.after, Q)):
            expected = metrics.bootstrap_ci(fn, rows, y, n_boot=N_BOOT, random_state=0)
            np.testing.assert_allclose(tuple(got), tuple(expected), rtol=0, atol=1e-12)
        assert row.change.estimate == pytest.approx(row.after.estimate - row.before.estimate)


def test_change_interval_is_a_paired_bootstrap(recorded_report):
    data, P, Q, y, _ = recorded_report
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(N_BOOT):
        rows = rng.integers(0, y.size, y.size)
        diffs.append(metrics.brier(Q[rows], y[rows]) - metrics.brier(P[rows], y[rows]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    change = data.metric("brier").change
    assert (change.low, change.high) == pytest.approx((low, high), abs=1e-12)


def test_tables_and_histograms_equal_reliability_table(recorded_report):
    data, P, Q, y, _ = recorded_report
    for view, rows in ((data.before, P), (data.after, Q)):
        expected = metrics.reliability_table(rows, y, n_bins=15)
        table = view.reliability
        for field in ("edges", "count", "accuracy", "confidence", "ci_low", "ci_high"):
            np.testing.assert_array_equal(getattr(table, field), getattr(expected, field))
        np.testing.assert_array_equal(view.histogram, expected.count)
        np.testing.assert_array_equal(view.edges, expected.edges)
        assert view.n_distinct == expected.n_distinct
        assert view.mean_confidence == pytest.approx(rows.max(axis=1).mean(), abs=1e-15)


def test_per_class_ece_averages_to_classwise_ece(recorded_report):
    data, P, Q, y, _ = recorded_report
    for view, rows in ((data.before, P), (data.after, Q)):
        per_class = [c.ece for c in view.classes]
        assert np.mean(per_class) == pytest.approx(metrics.classwise_ece(rows, y), abs=1e-12)
        frequencies = [c.frequency for c in view.classes]
        np.testing.assert_allclose(frequencies, np.bincount(y, minlength=len(data.labels)) / y.size)
        np.testing.assert_allclose([c.mean_probability for c in view.classes], rows.mean(axis=0))


def test_curves_and_operating_points_equal_thresholds_module(recorded_report):
    data, P, Q, y, _ = recorded_report
    for view, rows in ((data.before, P), (data.after, Q)):
        expected = thresholds.precision_recall_curve(rows, y, positive=0)
        curve = view.curve
        np.testing.assert_array_equal(curve.thresholds, expected.thresholds)
        np.testing.assert_array_equal(curve.precision, expected.precision)
        np.testing.assert_array_equal(curve.recall, expected.recall)
        np.testing.assert_allclose(
            curve.predicted_precision, expected.predicted_precision, atol=1e-9
        )
        np.testing.assert_allclose(curve.predicted_recall, expected.predicted_recall, atol=1e-9)

        point = view.operating_point
        chosen = thresholds.operating_point_from_probabilities(rows, 0, target_precision=0.9)
        assert (point.threshold, point.met, point.n_predicted) == (
            chosen.threshold,
            chosen.met,
            chosen.n_predicted,
        )
        assert point.predicted_precision == chosen.predicted_precision
        flagged = rows[:, 0] >= point.threshold
        assert point.precision == np.mean(y[flagged] == 0)
        assert point.recall == np.sum(flagged & (y == 0)) / np.sum(y == 0)
        tp = int(np.sum(flagged & (y == 0)))
        assert point.precision_ci == thresholds.clopper_pearson(tp, int(flagged.sum()))


def test_recorded_report_summary_and_parsing(recorded_report):
    data, P, _, y, calibrator = recorded_report
    ece = data.metric("ece")
    assert f"{ece.before.estimate:.3f}" in data.summary[0]
    assert f"{y.size:,} held-out labelled rows" in data.summary[0]
    # Temperature scaling leaves the predicted class alone, so accuracy must not move.
    assert data.metric("accuracy").change.estimate == 0
    assert data.parsing.n_answers == sum(data.parsing.status_counts.values())
    assert data.calibrator.fitted["temperature_"] == calibrator.temperature_
    page = render_html(data)
    assert f"{ece.after.estimate:.3f}" in page
    # 2 diagrams, 2 histograms, 2 PR curves, 1 risk-coverage figure
    assert len(svg_elements(page)) == 7


def test_report_from_predictions_uses_held_out_rows(recorded_data):
    task = load_recorded_task(recorded_data / "sat_en__gpt-4o.jsonl")
    predictions = recorded_predictions(task)
    record = fit_calibrator(predictions, "temperature", holdout=0.5, seed=0)
    data = report_from_predictions(predictions, record, n_boot=5)
    rows = held_out(predictions, record.fitted_ids, record.labels)
    assert data.n_rows == len(rows.ids) < len(predictions)
    Q = record.calibrator.predict_proba(rows.P)
    assert data.metric("nll").after.estimate == metrics.nll(Q, rows.y)
    assert data.calibrator.method == "temperature"
    assert data.parsing.n_answers == len(predictions)
    stated_only = report_from_predictions(predictions, n_boot=5)
    assert stated_only.after is None and stated_only.n_rows == len(rows.ids) + len(
        record.fitted_ids
    )


# ----------------------------------------------------------------------------- hand cases


def test_hand_computed_small_report():
    P = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = np.array([0, 1, 1, 0])
    data = compute_report(["neg", "pos"], P, y=y, n_bins=10, n_boot=20)
    assert data.after is None and data.positive == "pos"
    assert data.metric("ece").before.estimate == pytest.approx(0.35)  # (2*.4 + .2 + .4) / 4
    assert data.metric("accuracy").before.estimate == 0.75
    assert data.before.histogram.tolist() == [0] * 6 + [1, 0, 1, 2]
    assert data.before.mean_confidence == pytest.approx(0.8)
    assert "over-confident (mean confidence 0.800 against accuracy 0.750)" in data.summary[1]
    assert (
        "The model stated only 3 distinct confidence values, so before calibration its rows "
        "fall in at most 3 of the 10 bins." in data.summary
    )
    single = compute_report(["neg", "pos"], np.tile([0.7, 0.3], (4, 1)), y=y, n_boot=5)
    assert any(
        line.startswith("The model stated a single confidence value,") for line in single.summary
    )
    # Class "pos" scores 0.1, 0.1, 0.8, 0.4: at threshold 0.4, rows 2 and 3 are flagged.
    np.testing.assert_allclose(data.before.curve.thresholds, [0.1, 0.4, 0.8])
    np.testing.assert_allclose(data.before.curve.precision, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(data.before.curve.predicted_precision, [0.35, 0.6, 0.8])


def test_unlabelled_curve_matches_thresholds_functions():
    scores = np.array([0.9, 0.8, 0.8, 0.6, 0.3, 0.0, 0.3])
    P = np.column_stack([1 - scores, scores])
    curve = compute_report(["neg", "pos"], P, positive="pos").before.curve
    assert curve.positive == "pos" and curve.precision is None
    np.testing.assert_array_equal(curve.thresholds, [0.0, 0.3, 0.6, 0.8, 0.9])
    for i, threshold in enumerate(curve.thresholds):
        expected = thresholds.predicted_precision(P, "pos", threshold, labels=["neg", "pos"])
        assert curve.predicted_precision[i] == pytest.approx(expected, abs=1e-12)
        expected = thresholds.predicted_recall(P, 1, threshold)
        assert curve.predicted_recall[i] == pytest.approx(expected, abs=1e-12)


def test_summary_says_when_calibration_changed_nothing():
    P, y = dirichlet_rows(3000, 3, seed=1)
    noisy = P * (1 + 1e-15)  # float noise, as an identity calibrator that renormalises gives
    data = compute_report(["a", "b", "c"], P, noisy, y, n_boot=N_BOOT)
    assert data.summary[0].startswith("Calibration left ECE at")
    assert "which includes 0: no clear difference" in data.summary[0]
    assert {row.verdict for row in data.metrics} == {"unclear"}
    assert data.summary[1].split("were ")[1] == data.summary[2].split("are ")[1]


def test_summary_says_when_calibration_made_things_worse():
    P, y = dirichlet_rows(3000, 3, seed=1)
    data = compute_report(["a", "b", "c"], P, sharpen(P, 4.0), y, n_boot=N_BOOT)
    assert "raised ECE" in data.summary[0]
    assert "made these probabilities worse" in data.summary[0]
    assert "After calibration they are over-confident" in data.summary[2]
    assert data.metric("ece").verdict == "worse"
    assert data.metric("nll").verdict == "worse"


def test_summary_says_under_confident_and_clear_improvement():
    P, y = dirichlet_rows(3000, 3, seed=2)
    data = compute_report(["a", "b", "c"], sharpen(P, 0.3), P, y, n_boot=N_BOOT)
    assert "a clear improvement" in data.summary[0]
    assert data.metric("ece").verdict == "better"
    assert "Before calibration the stated confidences were under-confident" in data.summary[1]
    assert data.metric("ece").change.high < 0


def test_unlabelled_rows_give_predicted_quantities_only():
    P, _ = dirichlet_rows(500, 2, seed=3)
    data = compute_report(["no", "yes"], P, sharpen(P, 0.8), target_recall=0.5, n_boot=N_BOOT)
    assert not data.labelled and data.metrics == []
    for view in (data.before, data.after):
        assert view.reliability is None
        assert view.histogram.sum() == 500
        assert all(c.frequency is None and c.ece is None for c in view.classes)
        assert view.curve.precision is None and view.curve.recall is None
        point = view.operating_point
        assert point.precision is None and point.recall is None
        assert point.predicted_recall >= 0.5
    assert data.summary[0].startswith("500 held-out unlabelled rows")
    page = render_html(data)
    parse_page(page)
    assert "No gold labels" in page
    assert "Realised" not in page and "gold labels of the same rows" not in page
    assert len(svg_elements(page)) == 4  # histograms and PR curves; no reliability diagrams


def test_report_without_positive_label_for_multiclass():
    P, y = dirichlet_rows(200, 4, seed=4)
    data = compute_report(list("ABCD"), P, y=y, n_boot=10)
    assert data.positive is None and data.before.curve is None
    page = render_html(data)
    assert "Give a positive label" in page


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels": ["only"]}, InvalidInputError, "at least two strings"),
        ({"labels": ["a", "a"]}, InvalidInputError, "distinct"),
        ({"labels": "ab"}, InvalidInputError, "list of strings"),
        ({"labels": ["a", "b", "c"]}, InvalidInputError, "2 columns but there are 3 labels"),
        ({"P_after": np.full((3, 2), 0.5)}, InvalidInputError, "P_after has 3 rows"),
        ({"P_after": np.full((4, 2), 0.7)}, InvalidInputError, "P_after row 0 sums to 1.4"),
        ({"y": [0, 1, 2, 0]}, InvalidInputError, "outside the class indices"),
        ({"y": [0, 1]}, InvalidInputError, "2 labels but there are 4 rows"),
        ({"positive": "maybe"}, ConfigurationError, "'maybe' is not one of"),
        ({"target_precision": 0.9, "target_recall": 0.5}, ConfigurationError, "at most one"),
        ({"target_precision": 1.5}, ConfigurationError, r"target_precision must be .*\(0, 1\]"),
        ({"n_bins": 0}, ConfigurationError, "n_bins must be an integer >= 1"),
        ({"n_boot": True}, ConfigurationError, "n_boot must be an integer >= 1, got True"),
        ({"calibrator": "temperature"}, ConfigurationError, "fitted calibrator or a Calibrator"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs, error, match):
    args = {
        "labels": ["neg", "pos"],
        "P_before": np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]),
        "y": [0, 1, 1, 0],
        "n_boot": 5,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        compute_report(**args)


@pytest.mark.parametrize(
    ("P_after", "y", "match"),
    [
        (np.full((4, 2), 0.7), [0, 1, 1, 0], "P_after row 0 sums to 1.4"),
        (np.full((3, 2), 0.5), [0, 1, 1, 0], "must hold the same rows"),
        (None, [0, 1, 2, 0], "outside the class indices"),
    ],
)
def test_compare_metrics_checks_its_rows_once_then_trusts_the_resamples(P_after, y, match):
    P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    with pytest.raises(InvalidInputError, match=match):
        compare_metrics(P, P_after, np.asarray(y), n_boot=5)
    compare_metrics(P, P, np.array([0, 1, 1, 0]), n_boot=5)
    # the trust in resamples ends with the call: the metrics check their input again
    with pytest.raises(InvalidInputError, match="sums to 1.4"):
        metrics.ece(np.full((4, 2), 0.7), [0, 1, 1, 0])


def test_target_needs_a_positive_label_for_multiclass():
    P, y = dirichlet_rows(50, 3)
    with pytest.raises(ConfigurationError, match="needs a positive label"):
        compute_report(["a", "b", "c"], P, y=y, target_precision=0.8)


# ----------------------------------------------------------------------------- parts


def test_summarize_parsing_counts_reasons_and_examples():
    labels = ["a", "b"]
    long_raw = "x" * (MAX_EXAMPLE_CHARS + 100)
    preds = [
        Prediction("1", labels, {"a": 0.5, "b": 0.5}, "ok"),
        Prediction("2", labels, None, "failed", "no numbers", raw=long_raw),
        Prediction("3", labels, None, "failed", "no numbers", raw="second"),
        Prediction("4", labels, {"a": 0.2, "b": 0.8}, "repaired", "renormalised", raw=["s1", "s2"]),
        Prediction("5", labels, None, "failed", "", raw=None),
        Prediction("cf", labels, None, "failed", "probe", kind=CONTENT_FREE),
    ]
    summary = summarize_parsing(preds)
    assert summary.n_answers == 5
    assert summary.status_counts == {"ok": 1, "repaired": 1, "failed": 3}
    first = summary.reasons[0]
    assert (first.status, first.reason, first.count, first.example_id) == (
        "failed",
        "no numbers",
        2,
        "2",
    )
    assert first.example_raw.startswith("x" * MAX_EXAMPLE_CHARS)
    assert first.example_raw.endswith(f"({MAX_EXAMPLE_CHARS + 100:,} characters in all)")
    by_reason = {r.reason: r for r in summary.reasons}
    assert by_reason["renormalised"].example_raw == "s1"
    assert by_reason["(no reason given)"].example_raw == ""
    assert "probe" not in by_reason


def test_describe_auto_calibrator_is_plain_json_data():
    P, y = dirichlet_rows(300, 2, seed=5)
    auto = AutoCalibrator(cv=3).fit(sharpen(P, 2.0), y)
    info = describe_calibrator(auto, "auto")
    assert info.method == "auto" and info.estimator == "AutoCalibrator"
    assert info.explanation == auto.explanation_ and "explanation_" not in info.fitted
    assert info.fitted["chosen_"] == auto.chosen_
    assert info.fitted["best_estimator_"]["class"] == type(auto.best_estimator_).__name__
    json.dumps([info.params, info.fitted])  # plain data all the way down
    page = render_html(compute_report(["n", "p"], P, y=y, calibrator=info, n_boot=5))
    assert "AutoCalibrator" in page and "cross-validation" in page


# ----------------------------------------------------------------------------- the page


def crafted_report():
    """A report whose every data string is an attack: labels, raw text, reasons, names."""
    labels = [SCRIPT, IMG]
    P, y = dirichlet_rows(400, 2, seed=6)
    preds = [
        Prediction("x" + IMG, labels, None, "failed", f"reason {SCRIPT}", raw=f"{SCRIPT} {IMG}")
    ]
    preds += [
        Prediction(
            str(i), labels, dict(zip(labels, row.tolist(), strict=True)), "ok", label=labels[c]
        )
        for i, (row, c) in enumerate(zip(P, y, strict=True))
    ]
    info = CalibratorInfo(
        method=SCRIPT,
        estimator=IMG,
        params={SCRIPT: IMG},
        fitted={IMG: [SCRIPT] * 3},
        explanation=f"because {IMG}",
    )
    return compute_report(
        labels,
        P,
        sharpen(P, 0.7),
        y,
        predictions=preds,
        calibrator=info,
        positive=IMG,
        target_precision=0.8,
        n_boot=10,
        title=f"Report {SCRIPT}",
    )


def test_every_data_string_is_escaped():
    page = render_html(crafted_report())
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    # The crafted strings appear only as text, also inside the SVG titles and descriptions.
    tags = set(parse_page(page).tags)
    assert "script" not in tags and "img" not in tags
    for svg in svg_elements(page):
        assert svg.find("{http://www.w3.org/2000/svg}title").text


def test_page_is_well_formed_and_accessible(tmp_path):
    data = crafted_report()
    path = write_report(tmp_path / "sub" / "report.html", data)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page
    parse_page(page)
    svgs = svg_elements(page)
    assert len(svgs) == 7  # with the risk-coverage figure
    for svg in svgs:
        assert svg.get("role") == "img"
        ids = svg.get("aria-labelledby").split()
        found = {el.get("id") for el in svg.iter() if el.get("id")}
        assert set(ids) <= found
    for forbidden in ("http://", "https://", "src=", "<link", "@import", "url("):
        remaining = page.replace("http://www.w3.org/2000/svg", "").replace("src=x", "")
        assert forbidden not in remaining, forbidden
    assert page.count('scope="col"') > 10 and "<caption>" in page


def test_empty_bins_draw_nothing():
    P = np.array([[0.95, 0.05]] * 30 + [[0.55, 0.45]] * 30)
    y = np.array([0] * 27 + [1] * 3 + [0] * 15 + [1] * 15)
    data = compute_report(["a", "b"], P, y=y, n_bins=10, n_boot=5)
    page = render_html(data)
    diagram = svg_elements(page)[0]
    bins = [
        g for g in diagram.iter("{http://www.w3.org/2000/svg}g") if g.find("{*}title") is not None
    ]
    assert len(bins) == 2  # one mark per non-empty bin, none for the 8 empty ones
    titles = sorted(g.find("{*}title").text for g in bins)
    assert titles[0].startswith("bin [0.5, 0.6): 30 rows")


def test_size_stays_small_for_many_rows():
    P, y = dirichlet_rows(100_000, 4, seed=7)
    data = compute_report(
        list("ABCD"), P, sharpen(P, 1.3), y, positive="A", target_precision=0.8, n_boot=2
    )
    page = render_html(data)
    assert len(page.encode("utf-8")) < 2_000_000
    assert data.after.curve.thresholds.size > 50_000  # the data keeps the full curve …
    for svg in svg_elements(page):  # … the drawing thins it
        for line in svg.iter("{http://www.w3.org/2000/svg}polyline"):
            assert len(line.get("points").split()) <= 400


# ----------------------------------------------------------------------------- a real browser


def chromium_or_skip() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed (apt-get install chromium)"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{reason}; CI is set, so scripts/setup.sh must install it")
    pytest.skip(reason)


def run_chromium(browser: str, profile, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    try:
        return subprocess.run(
            [browser, *flags, *args], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        # A page that runs a script dialog (an unescaped alert) never finishes loading.
        pytest.fail(f"chromium did not finish {args[0]} within 60 s")


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def test_report_opens_in_headless_chromium(tmp_path):
    browser = chromium_or_skip()
    page = write_report(tmp_path / "report.html", crafted_report())
    url = page.resolve().as_uri()

    shot = tmp_path / "shot.png"
    result = run_chromium(
        browser, tmp_path / "profile1", f"--screenshot={shot}", "--window-size=1280,4000", url
    )
    assert shot.is_file(), result.stderr[-2000:]
    assert png_size(shot) == (1280, 4000)
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kilobytes

    dom = run_chromium(browser, tmp_path / "profile2", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    sections = ("summary-h", "metrics-h", "reliability-h", "classes-h", "pr-h", "dec-h")
    for section in (*sections, "parsing-h"):
        assert f'id="{section}"' in dom.stdout
    assert dom.stdout.count("<svg") == 7 and "</footer>" in dom.stdout
    assert "<script" not in dom.stdout.lower() and "<img" not in dom.stdout.lower()
    console = [
        line
        for line in (result.stderr + dom.stderr).splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Not allowed to load" in line
    ]
    assert console == []
