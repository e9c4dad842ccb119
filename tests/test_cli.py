"""The fit / apply / evaluate / threshold commands on real recorded predictions and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from recorded_predictions import recorded_predictions, write_recorded_predictions

from verbcal.cli import main
from verbcal.metrics import ece
from verbcal.persist import load_calibrator
from verbcal.predictions import read_predictions, write_predictions


@pytest.fixture
def boolq_preds(recorded_data, tmp_path):
    return write_recorded_predictions(recorded_data / "boolq__gpt-4o.jsonl", tmp_path / "p.jsonl")


@pytest.fixture
def sciq_preds(recorded_data, tmp_path):
    path = recorded_data / "sciq__claude-3-7-sonnet-20250219.jsonl"
    return write_recorded_predictions(path, tmp_path / "sciq.jsonl")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("method", ["temperature", "shrinkage", "vector", "platt", "histogram"])
def test_fit_then_evaluate_lowers_ece_on_held_out_rows(boolq_preds, tmp_path, capsys, method):
    cal = tmp_path / "cal.json"
    code, out, _ = run(capsys, "fit", "--preds", boolq_preds, "--method", method, "--out", cal)
    assert code == 0 and "wrote" in out
    record = load_calibrator(cal)
    assert record.method == method and record.labels == ["True", "False"]
    code, out, _ = run(
        capsys, "evaluate", "--preds", boolq_preds, "--calibrator", cal, "--json", "--n-boot", 100
    )
    assert code == 0
    result = json.loads(out)
    assert result["rows"] + len(record.fitted_ids) + result["failed_to_parse"] == 3270
    assert result["after"]["ece"][0] < result["before"]["ece"][0] - 0.03
    assert result["after"]["nll"][0] < result["before"]["nll"][0]


def test_evaluate_numbers_equal_the_metric_functions(boolq_preds, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    run(capsys, "fit", "--preds", boolq_preds, "--method", "temperature", "--out", cal)
    code, out, _ = run(capsys, "evaluate", "--preds", boolq_preds, "--calibrator", cal, "--json")
    record = load_calibrator(cal)
    rows = [p for p in read_predictions(boolq_preds) if p.probs and p.id not in record.fitted_ids]
    P = np.array([[p.probs["True"], p.probs["False"]] for p in rows])
    y = np.array([["True", "False"].index(p.label) for p in rows])
    result = json.loads(out)
    assert result["before"]["ece"][0] == pytest.approx(ece(P, y), abs=1e-12)
    Q = record.calibrator.predict_proba(P)
    assert result["after"]["ece"][0] == pytest.approx(ece(Q, y), abs=1e-12)


def test_evaluate_prints_a_table(sciq_preds, capsys):
    code, out, _ = run(capsys, "evaluate", "--preds", sciq_preds, "--n-boot", 100)
    assert code == 0
    assert "ece" in out and "nll" in out and "[" in out


def test_apply_writes_calibrated_rows_and_keeps_failed_ones(boolq_preds, tmp_path, capsys):
    cal, out_path = tmp_path / "cal.json", tmp_path / "q.jsonl"
    run(capsys, "fit", "--preds", boolq_preds, "--method", "temperature", "--out", cal)
    code, _, _ = run(
        capsys, "apply", "--preds", boolq_preds, "--calibrator", cal, "--out", out_path
    )
    assert code == 0
    before, after = read_predictions(boolq_preds), read_predictions(out_path)
    assert [p.id for p in before] == [p.id for p in after]
    for b, a in zip(before, after, strict=True):
        assert (b.probs is None) == (a.probs is None)
        if a.probs is not None:
            assert a.calibrated_by == "temperature"
            assert sum(a.probs.values()) == pytest.approx(1.0)


def test_threshold_for_target_precision(boolq_preds, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    run(capsys, "fit", "--preds", boolq_preds, "--method", "temperature", "--out", cal)
    argv = ["threshold", "--preds", boolq_preds, "--calibrator", cal, "--positive", "True"]
    code, out, _ = run(capsys, *argv, "--target-precision", "0.9", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["met"] and 0 < result["threshold"] < 1
    assert result["realised_precision"] > 0.85
    assert 0 < result["predicted_precision"] <= 1
    code, out, _ = run(capsys, *argv, "--target-recall", "0.5", "--json")
    assert code == 0 and json.loads(out)["target"] == "recall"


def test_threshold_works_on_unlabelled_rows(recorded_data, tmp_path, capsys):
    predictions = recorded_predictions(recorded_data / "boolq__gpt-4o.jsonl")
    labelled = tmp_path / "l.jsonl"
    write_predictions(labelled, predictions)
    cal = tmp_path / "cal.json"
    run(capsys, "fit", "--preds", labelled, "--method", "temperature", "--out", cal)
    unlabelled = tmp_path / "u.jsonl"
    for p in predictions:
        p.label, p.id = None, "new-" + p.id
    write_predictions(unlabelled, predictions)
    argv = ["threshold", "--preds", unlabelled, "--calibrator", cal, "--positive", "True"]
    code, out, _ = run(capsys, *argv, "--target-precision", "0.9", "--json")
    result = json.loads(out)
    assert code == 0
    assert "no labels" in result["chosen_on"]
    assert result["predicted_precision"] >= 0.9
    assert "realised_precision" not in result


def test_contextual_needs_probes(boolq_preds, tmp_path, capsys):
    code, _, err = run(
        capsys, "fit", "--preds", boolq_preds, "--method", "contextual", "--out", tmp_path / "c"
    )
    assert code == 2 and "--probes" in err


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "has no predictions"),
        ('{"id": "1"}\n', "line 1: missing field 'labels'"),
        (
            '{"id": "1", "labels": ["a", "b"], "probs": {"a": 1, "b": 0}, "status": "ok"}\n{oops\n',
            "line 2: not valid JSON",
        ),
        (
            '{"id": "1", "labels": ["a", "b"], "probs": {"a": 1.5, "b": 0}, "status": "ok"}\n',
            r"line 1: 'probs' values must be numbers in \[0, 1\]",
        ),
        (
            '{"id": "1", "labels": ["a", "b"], "probs": {"a": 1, "c": 0}, "status": "ok"}\n',
            "line 1: 'probs' must map exactly the labels",
        ),
        (
            '{"id": "1", "labels": ["a", "b"], "probs": null, "status": "failed", "label": "z"}\n',
            "line 1: gold label 'z' is not one of",
        ),
    ],
)
def test_malformed_predictions_name_the_line(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code, _, err = run(capsys, "fit", "--preds", bad, "--method", "temperature", "--out", "x")
    assert code == 2
    assert str(bad) in err
    assert re.search(match, err)


def test_missing_file_and_foreign_calibrator(boolq_preds, sciq_preds, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--preds", tmp_path / "nope.jsonl")
    assert code == 2 and "no such file" in err
    cal = tmp_path / "cal.json"
    run(capsys, "fit", "--preds", sciq_preds, "--method", "temperature", "--out", cal)
    code, _, err = run(capsys, "evaluate", "--preds", boolq_preds, "--calibrator", cal)
    assert code == 2 and "not the calibrator's labels" in err
    code, _, err = run(
        capsys,
        "threshold",
        "--preds",
        boolq_preds,
        "--calibrator",
        cal,
        "--positive",
        "Maybe",
        "--target-precision",
        "0.9",
    )
    assert code == 2 and "'Maybe' is not one of" in err
    (tmp_path / "junk.json").write_text("{}")
    code, _, err = run(
        capsys, "evaluate", "--preds", boolq_preds, "--calibrator", tmp_path / "junk.json"
    )
    assert code == 2 and "not a verbcal calibrator file" in err


def test_unknown_method_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--preds", "p", "--method", "magic", "--out", "x"])
    assert exc.value.code == 2
    for command in ("elicit", "fit", "apply", "evaluate", "threshold"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0


def test_apply_help_names_the_field_apply_writes(capsys):
    # Regression: the help said each row gets 'calibrated': true; the field is calibrated_by.
    with pytest.raises(SystemExit):
        main(["apply", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'calibrated_by'" in text and "'calibrated': true" not in text


def test_report_writes_a_self_contained_page(boolq_preds, tmp_path, capsys):
    cal, page = tmp_path / "cal.json", tmp_path / "report.html"
    run(capsys, "fit", "--preds", boolq_preds, "--method", "temperature", "--out", cal)
    argv = ["report", "--preds", boolq_preds, "--calibrator", cal, "--out", page]
    code, out, _ = run(capsys, *argv, "--positive", "True", "--target-precision", "0.9")
    assert code == 0 and "wrote" in out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    assert page.stat().st_size < 2 * 1024 * 1024
    code, _, err = run(capsys, *argv, "--positive", "Maybe")
    assert code == 2 and "'Maybe' is not one of" in err


def test_report_without_calibrator(sciq_preds, tmp_path, capsys):
    page = tmp_path / "raw.html"
    code, _, _ = run(capsys, "report", "--preds", sciq_preds, "--out", page)
    assert code == 0 and "<svg" in page.read_text()
