"""Pairwise judges: both orders, position bias, combined orders, logit ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fault_server import FaultServer
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from verbcal.cli import main
from verbcal.errors import InvalidInputError
from verbcal.pairwise import (
    LogitEnsemble,
    combine_orders,
    load_pairwise_dataset,
    pair_items,
    position_bias,
    read_pairs,
)
from verbcal.predictions import Prediction, read_predictions


def judged(pair_id, p_first_ab, p_first_ba, winner="A"):
    """Predictions of both orders: P(first shown is better) in each."""
    out = []
    for suffix, p, label in (
        ("|AB", p_first_ab, winner),
        ("|BA", p_first_ba, "B" if winner == "A" else "A"),
    ):
        pred = Prediction(pair_id + suffix, ["A", "B"], {"A": p, "B": 1 - p}, "ok")
        pred.label = label
        out.append(pred)
    return out


EPS = 1e-3  # verbcal's smoothing of stated probabilities before taking logits


def logit(p):
    """The smoothed logit verbcal uses: log(p + eps) - log(1 - p + eps)."""
    return np.log((p + EPS) / (1 - p + EPS))


def sig(z):
    """The inverse of the smoothed logit, so that logit(sig(z)) == z."""
    r = np.exp(z)
    return (r * (1 + EPS) - EPS) / (1 + r)


@settings(max_examples=100, deadline=None)
@given(
    s=st.floats(-3, 3),
    delta=st.floats(-2, 2),
)
def test_combining_the_orders_cancels_a_constant_position_bonus(s, delta):
    # a is better by s logits; being first is worth delta
    preds = judged("x", sig(s + delta), sig(-s + delta))
    (combined,) = combine_orders(preds)
    assert np.log(combined.probs["A"] / combined.probs["B"]) == pytest.approx(s, abs=1e-9)
    preds += judged("y", sig(-s + delta), sig(s + delta))
    bias = position_bias(preds)
    assert bias.shift[0] == pytest.approx(delta, abs=1e-9)


def test_hand_computed_bias_and_flip_rate():
    preds = judged("1", 0.8, 0.6) + judged("2", 0.7, 0.2) + judged("3", 0.3, 0.6, "B")
    bias = position_bias(preds)
    z1 = logit(np.array([0.8, 0.7, 0.3]))
    z2 = -logit(np.array([0.6, 0.2, 0.6]))
    assert bias.shift[0] == pytest.approx(np.mean((z1 - z2) / 2), abs=1e-12)
    assert bias.flip_rate[0] == pytest.approx(1 / 3)  # pair 1: a first → a, a second → b
    assert bias.first_rate[0] == pytest.approx(4 / 6)
    assert bias.accuracy_first_order == pytest.approx(1.0)
    assert bias.accuracy_combined == pytest.approx(1.0)
    assert bias.shift[1] <= bias.shift[0] <= bias.shift[2]


def test_a_50_50_answer_is_no_verdict_and_half_right():
    # What Qwen2.5-Coder-1.5B did on 89 of 120 answers: exactly 50/50, else prefer the first.
    preds = judged("1", 0.5, 0.5) + judged("2", 0.9, 0.5) + judged("3", 0.5, 0.9, "B")
    bias = position_bias(preds)
    assert bias.ties == 4
    assert bias.flip_rate[0] == 0  # no pair has opposite verdicts
    assert bias.first_rate[0] == 1  # both answers with a verdict prefer the first shown
    assert bias.accuracy_first_order == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert bias.shift[0] > 0
    assert "(4 answered 50/50)" in "\n".join(bias.lines())
    everything_tied = position_bias(judged("1", 0.5, 0.5) + judged("2", 0.5, 0.5))
    assert np.isnan(everything_tied.first_rate[0]) and everything_tied.ties == 4


def test_one_order_unparsed_keeps_the_other_and_says_so():
    preds = judged("1", 0.8, 0.4)
    preds[1].probs, preds[1].status = None, "failed"
    (combined,) = combine_orders(preds)
    assert combined.status == "repaired" and combined.probs["A"] == pytest.approx(0.8, abs=1e-3)


def test_shipped_set_is_valid_and_balanced():
    pairs = load_pairwise_dataset()
    assert len(pairs) >= 200
    assert abs(sum(p.winner == "A" for p in pairs) - len(pairs) / 2) <= 1
    assert len({p.id for p in pairs}) == len(pairs)
    assert all(p.a != p.b for p in pairs)
    items = pair_items(pairs)
    assert len(items) == 2 * len(pairs) and {i.label for i in items} == {"A", "B"}


def test_bad_pairs_file_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 1, "prompt": "q", "a": "x", "b": "y", "winner": "C"}\n')
    with pytest.raises(InvalidInputError, match="line 1.*winner"):
        read_pairs(path)


def test_ensemble_is_never_worse_than_its_best_judge_on_held_out_rows():
    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 400
        y = rng.integers(0, 2, n)
        signal = (2 * y - 1) * 1.5
        good = signal + rng.normal(0, 1.0, n)
        biased = 3 * signal + 2 + rng.normal(0, 3.0, n)  # overconfident and biased
        noise = rng.normal(0, 2.0, n)
        Z = np.column_stack([good, biased, noise])
        train, test = slice(0, 200), slice(200, None)
        ens = LogitEnsemble().fit(Z[train], y[train])

        def nll(z, yy):
            return float(np.mean(np.logaddexp(0, z) - yy * z))

        singles = []
        for j in range(3):
            single = LogitEnsemble().fit(Z[train][:, [j]], y[train])
            singles.append(nll(single.decision_function(Z[test][:, [j]]), y[test]))
        assert nll(ens.decision_function(Z[test]), y[test]) <= min(singles) + 0.02, trial


def test_weighted_candidate_matches_sklearn_logistic_regression():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(300, 2))
    y = (Z @ [1.5, -0.5] + 0.3 + rng.logistic(size=300) > 0).astype(int)
    ens = LogitEnsemble(l2=0.0).fit(Z, y)
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(Z, y)
    if ens.choice_ == "weighted":
        assert ens.weights_[:2] == pytest.approx(reference.coef_[0], abs=1e-4)
        assert ens.weights_[2] == pytest.approx(reference.intercept_[0], abs=1e-4)
    assert ens.choice_ == "weighted"


def test_cli_end_to_end_over_http(tmp_path, capsys):
    items, both, combined = tmp_path / "i.jsonl", tmp_path / "both.jsonl", tmp_path / "c.jsonl"
    argv = ["pairwise", "items", "--builtin", "--every", "5", "--limit", "40", "--out", str(items)]
    assert main(argv) == 0
    assert json.loads(items.read_text().splitlines()[2])["id"] == "p006|AB"
    with FaultServer(labels=["A", "B"]) as server:
        argv = ["elicit", "--input", str(items), "--labels", "A,B", "--template", "pairwise"]
        argv += ["--model", "m", "--base-url", server.base_url, "--out", str(both)]
        assert main(argv) == 0
        assert "Answer A:" in server.record.bodies[0]["messages"][-1]["content"]
    capsys.readouterr()
    assert main(["pairwise", "bias", "--preds", str(both), "--json"]) == 0
    bias = json.loads(capsys.readouterr().out)
    assert bias["n_pairs"] == 40 and 0 <= bias["flip_rate"][0] <= 1
    assert main(["pairwise", "combine", "--preds", str(both), "--out", str(combined)]) == 0
    rows = read_predictions(combined)
    assert len(rows) == 40 and all(r.labels == ["A", "B"] and r.label for r in rows)
    calibrator = tmp_path / "cal.json"
    assert (
        main(["fit", "--preds", str(combined), "--method", "temperature", "--out", str(calibrator)])
        == 0
    )
    assert main(["evaluate", "--preds", str(combined), "--calibrator", str(calibrator)]) == 0
