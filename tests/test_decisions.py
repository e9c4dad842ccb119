"""Cost-weighted decisions, calibration per band; route/conformal/report commands end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded_predictions import write_recorded_predictions

from verbcal.cli import main
from verbcal.data import DEMO_LABELS, load_demo_dataset
from verbcal.decisions import (
    band_calibration,
    bayes_decisions,
    cost_matrix,
    evaluate_costs,
    load_costs,
    parse_bands,
)
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.persist import load_calibrator
from verbcal.predictions import ITEM, read_predictions, to_arrays
from verbcal.selective import selective_threshold
from verbcal.workflow import held_out

BOOL_COSTS = {
    "True": {"True": 0, "False": 5},
    "False": {"True": 2, "False": 0},
    "abstain": {"True": 0.6, "False": 0.6},
}


# ----------------------------------------------------------------------------- costs


@pytest.mark.parametrize(
    ("costs", "match"),
    [
        ({"yes": {"yes": 0}}, "missing \\['no'\\]"),
        ({"maybe": {"yes": 0, "no": 1}}, "neither a label"),
        ({"yes": {"yes": 0, "no": float("inf")}}, "finite number"),
        ({"yes": {"yes": 0, "no": True}}, "finite number"),
        ({"yes": {"yes": 0, "no": 1, "other": 2}}, "unknown \\['other'\\]"),
        ({"yes": [0, 1]}, "must be an object"),
        ([], "expected a JSON object"),
    ],
)
def test_bad_costs_name_the_problem(costs, match):
    with pytest.raises(InvalidInputError, match=match):
        cost_matrix(costs, ["no", "yes"])


def test_a_label_called_abstain_is_refused():
    with pytest.raises(ConfigurationError, match="abstain"):
        cost_matrix({"abstain": {"abstain": 0, "x": 1}}, ["abstain", "x"])


def test_costs_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(InvalidInputError, match="c.json: not a JSON costs file"):
        load_costs(path, ["a", "b"])
    with pytest.raises(InvalidInputError, match="no such costs file"):
        load_costs(tmp_path / "missing.json", ["a", "b"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.001, 1), min_size=3, max_size=3),
    st.lists(st.lists(st.floats(-5, 5), min_size=3, max_size=3), min_size=4, max_size=4),
)
def test_bayes_decision_is_the_least_expected_cost(weights, table):
    p = np.array(weights) / sum(weights)
    costs = cost_matrix(
        {d: dict(zip("abc", row, strict=True)) for d, row in zip("abc", table, strict=False)}
        | {"abstain": dict(zip("abc", table[3], strict=True))},
        list("abc"),
    )
    chosen = bayes_decisions(p[None, :], costs)[0]
    expected = [sum(p[k] * costs.C[d, k] for k in range(3)) for d in range(4)]
    assert expected[chosen] <= min(expected) + 1e-12


def test_predicted_cost_matches_realised_cost_when_calibrated():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, 40_000)
    y = (rng.uniform(size=p.size) < p).astype(int)  # calibrated by construction
    P = np.column_stack([1 - p, p])
    costs = cost_matrix(
        {"0": {"0": 0, "1": 3}, "1": {"0": 1, "1": 0}, "abstain": {"0": 0.4, "1": 0.4}},
        ["0", "1"],
    )
    e = evaluate_costs(P, costs, y, n_boot=100)
    low, high = e.realised_interval
    assert low <= e.predicted_mean_cost <= high
    # The Bayes rule on calibrated probabilities is the best policy there is: no fixed
    # threshold does better beyond sampling noise.
    assert e.regret <= 0.005


def test_best_fixed_threshold_by_brute_force():
    rng = np.random.default_rng(1)
    P = rng.dirichlet([1, 1], 300)
    y = rng.integers(0, 2, 300)
    costs = cost_matrix(BOOL_COSTS, ["True", "False"])
    e = evaluate_costs(P, costs, y, n_boot=10)
    conf, top = P.max(axis=1), P.argmax(axis=1)
    best = np.inf
    for t in np.r_[np.unique(conf), np.inf]:
        decision = np.where(conf >= t, top, 2)  # top label, else abstain (row 2)
        best = min(best, costs.C[decision, y].mean())
    assert e.best_threshold_mean_cost == pytest.approx(best, abs=1e-12)
    realised = costs.C[bayes_decisions(P, costs), y].mean()
    assert e.realised_mean_cost == pytest.approx(realised, abs=1e-12)
    assert e.regret == pytest.approx(realised - best, abs=1e-12)


def test_without_labels_only_the_prediction():
    costs = cost_matrix(BOOL_COSTS, ["True", "False"])
    e = evaluate_costs([[0.9, 0.1], [0.5, 0.5]], costs)
    assert e.realised_mean_cost is None and e.regret is None
    assert e.decision_counts == {"True": 1, "False": 0, "abstain": 1}
    assert e.predicted_mean_cost == pytest.approx((0.5 + 0.6) / 2)


# ----------------------------------------------------------------------------- bands


def test_bands_by_hand():
    P = [[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.5, 0.5]]
    y = [0, 1, 1, 1, 0]
    low, medium, high = band_calibration(P, y)
    assert (low.n_rows, medium.n_rows, high.n_rows) == (2, 1, 2)
    assert high.confidence == pytest.approx(0.925) and high.accuracy == 0.5
    assert high.gap == pytest.approx(0.425)
    assert low.accuracy == pytest.approx(0.5) and low.share == pytest.approx(0.4)
    four = band_calibration(P, y, bands=(0.55, 0.7, 0.92))
    assert [b.name for b in four] == ["band 1", "band 2", "band 3", "band 4"]
    assert [b.n_rows for b in four] == [1, 1, 2, 1]  # 0.5 | 0.55 | 0.7, 0.9 | 0.95


@pytest.mark.parametrize("text", ["0.8,0.6", "0,0.5", "1.0", "a,b", ""])
def test_bad_bands(text):
    with pytest.raises(ConfigurationError, match="bands"):
        parse_bands(text)


# ----------------------------------------------------------------------------- the commands


@pytest.fixture
def boolq(recorded_data, tmp_path, capsys):
    preds = write_recorded_predictions(recorded_data / "boolq__gpt-4o.jsonl", tmp_path / "p.jsonl")
    cal = tmp_path / "cal.json"
    assert main(["fit", "--preds", str(preds), "--method", "auto", "--out", str(cal)]) == 0
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps(BOOL_COSTS))
    capsys.readouterr()
    return preds, cal, costs


def _routed(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_route_target_accuracy_end_to_end(boolq, tmp_path, capsys):
    preds, cal, _ = boolq
    out = tmp_path / "routed.jsonl"
    base = ["route", "--preds", str(preds), "--calibrator", str(cal), "--out", str(out)]
    assert main([*base, "--target-accuracy", "0.9", "--guarantee", "0.9", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = _routed(out)
    predictions = read_predictions(preds)
    assert [r["id"] for r in rows] == [p.id for p in predictions]
    # The threshold is selective_threshold's on the rows the calibrator was fitted on.
    record = load_calibrator(cal)
    items = to_arrays(predictions, kind=ITEM)
    fitted = np.isin(items.ids, record.fitted_ids)
    Q = record.calibrator.predict_proba(items.P)
    expected = selective_threshold(Q[fitted], items.y[fitted], 0.9, guarantee=0.9)
    assert summary["selection"]["threshold"] == expected.threshold and expected.met
    by_id = dict(zip(items.ids, Q, strict=True))
    for row in rows:
        q = by_id.get(row["id"])
        if q is None:
            assert row["decision"] == "human" and "parsed" in row["reason"]
        elif q.max() >= expected.threshold:
            assert row["decision"] == "auto" and row["label"] == record.labels[int(q.argmax())]
        else:
            assert row["decision"] == "human" and row["label"] is None
    auto = sum(r["decision"] == "auto" for r in rows)
    assert summary["expected"]["coverage"] == pytest.approx(auto / len(rows))
    # Realised on held-out labelled rows: accuracy of the automatic answers reaches the target.
    held = held_out(predictions, record.fitted_ids, record.labels)
    Qh = record.calibrator.predict_proba(held.P)
    answered = Qh.max(axis=1) >= expected.threshold
    accuracy = (Qh.argmax(axis=1) == held.y)[answered].mean()
    assert summary["realised"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy >= 0.9
    # Plain text: the coverage to expect.
    assert main([*base, "--target-accuracy", "0.9"]) == 0
    assert "expected coverage" in capsys.readouterr().out


def test_route_unreachable_target_sends_everything_to_people(boolq, tmp_path, capsys):
    preds, cal, _ = boolq
    out = tmp_path / "routed.jsonl"
    argv = ["route", "--preds", str(preds), "--calibrator", str(cal), "--out", str(out)]
    assert main([*argv, "--target-accuracy", "0.999", "--guarantee", "0.95"]) == 1
    text = capsys.readouterr().out
    assert "no threshold can be guaranteed" in text
    assert all(r["decision"] == "human" for r in _routed(out))


def test_route_with_costs_end_to_end(boolq, tmp_path, capsys):
    preds, cal, costs = boolq
    out = tmp_path / "routed.jsonl"
    argv = ["route", "--preds", str(preds), "--calibrator", str(cal), "--costs", str(costs)]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = _routed(out)
    decisions = {r["decision"] for r in rows}
    assert decisions == {"auto", "human"}
    for row in rows:
        if row["confidence"] is not None:
            # abstain costs 0.6; answering True costs 5 P(False), False costs 2 P(True).
            p_true = row["confidence"] if row["label"] == "True" else None
            if row["decision"] == "auto" and p_true is not None:
                assert 5 * (1 - p_true) <= 0.6 + 1e-9
    c = summary["realised"]["costs"]
    assert c["regret"] == pytest.approx(c["realised_mean_cost"] - c["best_threshold_mean_cost"])
    # Calibrated probabilities predict the cost they realise, within its interval.
    assert c["realised_interval"][0] <= c["predicted_mean_cost"] <= c["realised_interval"][1]


def test_route_bad_usage(boolq, tmp_path, capsys):
    preds, cal, costs = boolq
    base = ["route", "--preds", str(preds), "--calibrator", str(cal)]
    out = ["--out", str(tmp_path / "r.jsonl")]
    with pytest.raises(SystemExit):
        main([*base, *out])  # neither a target nor costs
    with pytest.raises(SystemExit):
        main([*base, *out, "--target-accuracy", "0.9", "--costs", str(costs)])
    assert main([*base, *out, "--costs", str(costs), "--guarantee", "0.9"]) == 2
    assert "guarantee goes with a target accuracy" in capsys.readouterr().err
    assert main([*base, "--out", str(preds), "--target-accuracy", "0.9"]) == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"True": {"True": 0}}))
    assert main([*base, *out, "--costs", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err


def test_evaluate_and_report_with_costs_and_bands(boolq, tmp_path, capsys):
    preds, cal, costs = boolq
    argv = ["--preds", str(preds), "--calibrator", str(cal), "--costs", str(costs)]
    assert main(["evaluate", *argv, "--bands", "0.7,0.9", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    record = load_calibrator(cal)
    held = held_out(read_predictions(preds), record.fitted_ids, record.labels)
    Q = record.calibrator.predict_proba(held.P)
    expected = band_calibration(Q, held.y, (0.7, 0.9))
    assert [b["n_rows"] for b in result["bands"]["after"]] == [b.n_rows for b in expected]
    assert result["bands"]["after"][2]["gap"] == pytest.approx(expected[2].gap, abs=1e-12)
    m = load_costs(costs, record.labels)
    e = evaluate_costs(Q, m, held.y, n_boot=200)
    assert result["costs"]["after"]["realised_mean_cost"] == pytest.approx(e.realised_mean_cost)
    assert main(["evaluate", *argv]) == 0
    text = capsys.readouterr().out
    assert "calibration by confidence band" in text and "regret" in text
    page = tmp_path / "r.html"
    assert main(["report", *argv, "--out", str(page)]) == 0
    html = page.read_text()
    assert 'id="dec-h"' in html and "Risk–coverage" in html and "Bayes decisions" in html


def test_conformal_command_on_recorded_answers(recorded_data, tmp_path, capsys):
    preds = write_recorded_predictions(recorded_data / "sciq__gpt-4o.jsonl", tmp_path / "p.jsonl")
    cal = tmp_path / "cal.json"
    assert main(["fit", "--preds", str(preds), "--method", "temperature", "--out", str(cal)]) == 0
    out = tmp_path / "sets.jsonl"
    argv = ["conformal", "--preds", str(preds), "--calibrator", str(cal), "--out", str(out)]
    assert main([*argv, "--alpha", "0.1", "--score", "raps"]) == 0
    assert "RAPS sets with coverage >= 0.9" in capsys.readouterr().out
    rows = _routed(out)
    labels = read_predictions(preds)[0].labels
    assert all(set(r["set"]) <= set(labels) and r["size"] == len(r["set"]) for r in rows)
    with pytest.raises(SystemExit):
        main([*argv, "--alpha", "1.5"])


# ----------------------------------------------------------------------------- a live model


def test_route_and_costs_on_answers_of_the_local_model(llama_server, tmp_path, capsys):
    """A handful of demo reviews, elicited over HTTP from SmolLM2, then fit/route/report."""
    reviews = [r for r in load_demo_dataset() if r["difficulty"] == "easy"][:6]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in reviews))
    preds = tmp_path / "preds.jsonl"
    options = {
        "--input": items,
        "--labels": ",".join(DEMO_LABELS),
        "--model": llama_server.model,
        "--base-url": llama_server.base_url,
        "--json-mode": "json_object",
        "--max-tokens": 40,
        "--concurrency": 1,
        "--timeout": 300,
        "--out": preds,
    }
    argv = [word for option, value in options.items() for word in (option, str(value))]
    assert main(["elicit", *argv]) in (0, 1), capsys.readouterr().err
    predictions = read_predictions(preds)
    assert len(predictions) == 6
    if sum(p.probs is not None for p in predictions) < 4:
        pytest.skip("the local model's answers could not be parsed often enough to fit")
    cal = tmp_path / "cal.json"
    assert main(["fit", "--preds", str(preds), "--method", "temperature", "--out", str(cal)]) == 0
    capsys.readouterr()
    routed = tmp_path / "routed.jsonl"
    base = ["--preds", str(preds), "--calibrator", str(cal)]
    code = main(["route", *base, "--target-accuracy", "0.6", "--out", str(routed), "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    summary = json.loads(captured.out)
    rows = _routed(routed)
    assert [r["id"] for r in rows] == [r["id"] for r in reviews]
    assert code == (0 if summary["selection"]["met"] else 1)
    assert summary["expected"]["n_items"] == 6
    costs = tmp_path / "costs.json"
    names = list(DEMO_LABELS)
    costs.write_text(
        json.dumps(
            {
                names[0]: {names[0]: 0, names[1]: 1},
                names[1]: {names[0]: 1, names[1]: 0},
                "abstain": {names[0]: 0.3, names[1]: 0.3},
            }
        )
    )
    assert main(["route", *base, "--costs", str(costs), "--out", str(routed)]) == 0
    assert "expected mean cost" in capsys.readouterr().out
    page = tmp_path / "report.html"
    assert main(["report", *base, "--costs", str(costs), "--out", str(page)]) == 0
    assert 'id="dec-h"' in page.read_text()


# ----------------------------------------------------------------------------- the report's data


def test_report_decision_data_are_the_module_numbers():
    from verbcal.report import compute_report
    from verbcal.selective import aurc, excess_aurc, predicted_selective_threshold

    rng = np.random.default_rng(5)
    p = rng.choice([0.05, 0.2, 0.5, 0.8, 0.95], 400)
    y = (rng.uniform(size=400) < p).astype(int)
    P = np.column_stack([1 - p, p])
    Q = np.column_stack([1 - np.sqrt(p), np.sqrt(p)])  # some other rows for "after"
    data = compute_report(["no", "yes"], P, Q, y, n_boot=20, costs=BOOL_COSTS_YN, bands=(0.7, 0.9))
    d = data.decisions
    assert d.risk_coverage["before"].aurc == pytest.approx(aurc(P, y), abs=1e-12)
    assert d.risk_coverage["after"].excess_aurc == pytest.approx(excess_aurc(Q, y), abs=1e-12)
    for row in d.routing:
        rows = P if row.side == "before" else Q
        chosen = predicted_selective_threshold(rows, row.target_accuracy)
        assert row.threshold == chosen.threshold
        answered = rows.max(axis=1) >= row.threshold
        assert row.accuracy == pytest.approx((rows.argmax(axis=1) == y)[answered].mean())
    assert [b.n_rows for b in d.bands["after"]] == [
        b.n_rows for b in band_calibration(Q, y, (0.7, 0.9))
    ]
    costs = cost_matrix(BOOL_COSTS_YN, ["no", "yes"])
    e = evaluate_costs(P, costs, y, n_boot=20)
    assert d.costs["before"].realised_mean_cost == pytest.approx(e.realised_mean_cost)
    assert d.costs["before"].regret == pytest.approx(e.regret)


BOOL_COSTS_YN = {
    "yes": {"yes": 0, "no": 5},
    "no": {"yes": 2, "no": 0},
    "abstain": {"yes": 0.6, "no": 0.6},
}


def test_route_and_conformal_new_items_with_labelled_predictions(recorded_data, tmp_path, capsys):
    """Fit and choose on labelled items; route and make sets for new items without labels."""
    from dataclasses import replace

    from verbcal.predictions import write_predictions

    source = write_recorded_predictions(
        recorded_data / "sciq__gpt-4o.jsonl", tmp_path / "all.jsonl"
    )
    everything = read_predictions(source)
    labelled, new = tmp_path / "labelled.jsonl", tmp_path / "new.jsonl"
    write_predictions(labelled, everything[:600])
    write_predictions(new, [replace(p, label=None) for p in everything[600:]])
    cal = tmp_path / "cal.json"
    assert (
        main(["fit", "--preds", str(labelled), "--method", "temperature", "--out", str(cal)]) == 0
    )
    capsys.readouterr()
    out = tmp_path / "routed.jsonl"
    argv = ["--preds", str(new), "--calibrator", str(cal), "--labelled", str(labelled)]
    assert (
        main(
            [
                "route",
                *argv,
                "--target-accuracy",
                "0.95",
                "--guarantee",
                "0.9",
                "--out",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["rule"].startswith("threshold chosen on 600 labelled items")
    assert summary["realised"] is None and len(_routed(out)) == 400
    record = load_calibrator(cal)
    rows = to_arrays(read_predictions(labelled), kind=ITEM)
    Q = record.calibrator.predict_proba(rows.P)
    assert summary["selection"]["threshold"] == (
        selective_threshold(Q, rows.y, 0.95, guarantee=0.9).threshold
    )
    sets = tmp_path / "sets.jsonl"
    assert main(["conformal", *argv, "--out", str(sets)]) == 0
    # The sets are calibrated on the 300 labelled items the calibrator was not fitted on.
    assert "calibrated on 300 labelled items" in capsys.readouterr().out
    assert len(_routed(sets)) == 400
    assert (
        main(
            [
                "route",
                *argv[:4],
                "--labelled",
                str(new),
                "--target-accuracy",
                "0.9",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "have no gold labels" in capsys.readouterr().err
