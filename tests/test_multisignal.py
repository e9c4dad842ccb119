"""Multi-signal calibration: the model, AutoCalibrator with signals, the files and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fault_server import FaultServer
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded import load_recorded_task
from recorded_predictions import recorded_predictions
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from test_elicit import elicit, items

from verbcal import InvalidInputError
from verbcal.calibrators import (
    AutoCalibrator,
    MultiSignalCalibrator,
    TemperatureScaling,
    TokenProbsCalibrator,
)
from verbcal.calibrators.multisignal import (
    BINNING_BINS,
    MIN_POOL_WEIGHT,
    SIGNAL_PARAMETERS,
    TOKEN_BASIS,
    VERBAL_BASIS,
    sample_spread,
)
from verbcal.cli import main
from verbcal.metrics import nll
from verbcal.persist import CalibratorRecord, load_calibrator, save_calibrator
from verbcal.predictions import read_predictions, to_arrays, write_predictions


def synthetic(n=600, k=2, seed=0, missing=0.0):
    """Verbalized rows that say little, token rows that say more, some token rows missing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    right = rng.random(n) < 0.75
    stated = np.where(right, y, (y + 1) % k)
    P = np.full((n, k), 0.3 / (k - 1))
    P[np.arange(n), stated] = 0.7
    token_right = rng.random(n) < 0.85
    said = np.where(token_right, y, (y + 1 + rng.integers(0, k - 1, n)) % k)
    T = rng.dirichlet(np.ones(k), size=n) * 0.2
    T[np.arange(n), said] += 0.8
    T[rng.random(n) < missing] = np.nan
    return P, T, y


def test_sample_spread_is_the_mean_standard_deviation_over_classes():
    rows = [np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]]), np.array([[1.0, 0.0]]), None]
    spread = sample_spread(rows)
    assert spread[0] == pytest.approx(np.std([0.9, 0.5, 0.7]), abs=1e-12)
    assert np.isnan(spread[1]) and np.isnan(spread[2])


def test_without_penalty_it_is_logistic_regression_on_the_log_odds():
    # Binary, no missing rows: q1 = sigmoid(sum_j w_j (F_j1 - F_j0) + b1 - b0), which is
    # scikit-learn's unpenalised logistic regression on the log-odds of each feature.
    P, T, y = synthetic(400, seed=1)
    P = np.clip(P + np.random.default_rng(2).normal(0, 0.05, P.shape), 0.01, None)
    P /= P.sum(axis=1, keepdims=True)
    cal = MultiSignalCalibrator(penalties=(1e-9,), single_signals=False, binning=False)
    cal.fit(P, y, signals={"token_probs": T})
    assert cal.features_ == [
        "verbalized",
        "token_probs",
        "token_probs_missing*verbalized",
        *(f"verbalized@{e:g}" for e in VERBAL_BASIS),
        *(f"token_probs@{e:g}" for e in TOKEN_BASIS),
    ]
    logits = [
        np.log(P + cal.eps_),
        np.log(T + cal.token_eps_),
        *(np.log(P + e) for e in VERBAL_BASIS),
        *(np.log(T + e) for e in TOKEN_BASIS),
    ]
    X = np.column_stack([z[:, 1] - z[:, 0] for z in logits])
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(X, y)
    # The model is that logistic regression: with its weights it predicts the same rows.
    fitted = nll(cal.predict_proba(P, signals={"token_probs": T}), y)
    # (no row lacks token probabilities: the missing-indicator feature is 0 everywhere)
    assert cal.weights_ == {"1e-09": 1.0}
    cal.members_ = [
        (np.insert(reference.coef_[0], 2, 0.0), np.array([0.0, reference.intercept_[0]]))
    ]
    np.testing.assert_allclose(
        cal.predict_proba(P, signals={"token_probs": T}), reference.predict_proba(X), atol=1e-9
    )
    # Nine nearly collinear log-odds leave a flat valley (weights in the hundreds) where
    # L-BFGS stops a little short of the maximum likelihood.
    assert nll(reference.predict_proba(X), y) <= fitted < nll(reference.predict_proba(X), y) + 5e-3


def test_infinite_penalty_is_verbalized_temperature_scaling():
    P, _, y = synthetic(300, k=4, seed=3)
    cal = MultiSignalCalibrator(penalties=(np.inf,), single_signals=False, binning=False).fit(P, y)
    reference = TemperatureScaling(prior_scale=0.5).fit(P, y)
    np.testing.assert_allclose(cal.predict_proba(P), reference.predict_proba(P), atol=1e-12)
    assert cal.signals_ == []
    assert cal.features_ == ["verbalized", *(f"verbalized@{e:g}" for e in VERBAL_BASIS)]


def test_token_probabilities_lower_held_out_nll():
    P, T, y = synthetic(1200, k=4, seed=4, missing=0.2)
    fit, test = np.arange(600), np.arange(600, 1200)
    cal = MultiSignalCalibrator().fit(P[fit], y[fit], signals={"token_probs": T[fit]})
    stacked = cal.predict_proba(P[test], signals={"token_probs": T[test]})
    verbal = TemperatureScaling(prior_scale=0.5).fit(P[fit], y[fit]).predict_proba(P[test])
    assert nll(stacked, y[test]) < nll(verbal, y[test]) - 0.05
    assert cal.penalty_ < np.inf and cal.signals_ == ["token_probs"]


def near_one(n, seed):
    """Token probabilities whose information lies in how close the chosen label is to 1.

    The chosen label has ``1 - 10**-depth``, depth uniform in 1..12, and is right
    more often the deeper it is (as GPT-4o's answer tokens: 0.9999 and 0.999999999
    are different statements); the verbalized rows always say 0.9.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    depth = rng.uniform(1, 12, n)
    right = rng.random(n) < 1 / (1 + np.exp(-(depth - 5)))
    said = np.where(right, y, 1 - y)
    rows = np.arange(n)
    T = np.empty((n, 2))
    T[rows, said], T[rows, 1 - said] = 1 - 10.0**-depth, 10.0**-depth
    P = np.empty((n, 2))
    P[rows, said], P[rows, 1 - said] = 0.9, 0.1
    return P, T, y


def test_token_probabilities_near_one_are_told_apart():
    # A smoothing of 1e-4 makes 1 - 1e-6 and 1 - 1e-11 one value (held-out NLL 0.406 with the
    # two-copy model before the basis); the basis down to 1e-8 keeps them apart (0.293).
    P, T, y = near_one(1200, seed=0)
    fit, test = np.arange(600), np.arange(600, 1200)
    cal = MultiSignalCalibrator().fit(P[fit], y[fit], signals={"token_probs": T[fit]})
    stacked = cal.predict_proba(P[test], signals={"token_probs": T[test]})
    token = TemperatureScaling(prior_scale=0.5).fit(T[fit], y[fit]).predict_proba(T[test])
    assert nll(stacked, y[test]) < 0.33
    assert nll(stacked, y[test]) < nll(token, y[test]) - 0.2


def test_choice_is_the_best_calibrated_within_one_standard_error_of_the_best_nll():
    P, T, y = synthetic(400, k=3, seed=11, missing=0.1)
    cal = MultiSignalCalibrator(rule="choose").fit(P, y, signals={"token_probs": T})
    assert {"verbalized alone", "token_probs alone", "inf"} <= set(cal.cv_nll_)
    assert set(cal.cv_ece_) == set(cal.cv_nll_)
    best = min(cal.cv_nll_, key=cal.cv_nll_.__getitem__)
    if best.endswith("alone"):
        assert cal.choice_ == best
    else:
        assert cal.cv_ece_[cal.choice_] <= cal.cv_ece_[best]
        assert not cal.choice_.endswith("alone")


def test_a_signal_alone_is_its_temperature_scaling():
    # Verbalized rows that are noise, token rows that say everything: CV keeps the tokens alone
    # or a stack at least as good, never the verbalized rows alone.
    P, T, y = synthetic(600, k=2, seed=14)
    P = np.random.default_rng(15).dirichlet([1.0, 1.0], size=600)
    cal = MultiSignalCalibrator().fit(P, y, signals={"token_probs": T})
    assert cal.choice_ != "verbalized alone"
    assert cal.cv_nll_[cal.choice_] < cal.cv_nll_["verbalized alone"] - 0.1
    only = MultiSignalCalibrator(penalties=(np.inf,), rule="choose", binning=False)
    only.fit(P, y, signals={"token_probs": T})
    if only.choice_ == "token_probs alone":
        reference = TemperatureScaling(prior_scale=0.5, eps=only.token_eps_).fit(T, y)
        np.testing.assert_allclose(
            only.predict_proba(P, signals={"token_probs": T}), reference.predict_proba(T), atol=1e-9
        )


def test_rows_without_token_probabilities_fall_back_to_the_verbalized_logits():
    P, T, y = synthetic(600, seed=5, missing=0.3)
    cal = MultiSignalCalibrator(rule="choose", binning=False).fit(P, y, signals={"token_probs": T})
    missing = np.isnan(T).any(axis=1)
    Q = cal.predict_proba(P, signals={"token_probs": T})
    assert np.isfinite(Q).all()
    w_v, w_t, w_m, *basis = cal.coef_
    w_verbal, w_token = basis[: len(VERBAL_BASIS)], basis[len(VERBAL_BASIS) :]
    z = (w_v + w_t + w_m) * np.log(P[missing] + cal.eps_)
    z += sum(w * np.log(P[missing] + e) for w, e in zip(w_verbal, VERBAL_BASIS, strict=True))
    z += sum(w * np.log(P[missing] + e) for w, e in zip(w_token, TOKEN_BASIS, strict=True))
    expected = softmax(z + cal.intercept_, axis=1)
    np.testing.assert_allclose(Q[missing], expected, atol=1e-12)


def test_the_pool_is_the_mixture_of_its_choices_fitted_alone():
    # Differential: each kept choice refitted on its own (one penalty, or one signal's
    # temperature scaling) and mixed with the pool's weights gives the pool's rows.
    P, T, y = synthetic(400, k=3, seed=21)  # no missing row: T is the token signal itself
    signals = {"token_probs": T}
    cal = MultiSignalCalibrator(binning=False).fit(P, y, signals=signals)
    weights = np.array(list(cal.weights_.values()))
    assert abs(weights.sum() - 1) < 1e-12 and (weights >= MIN_POOL_WEIGHT).all()
    assert cal.choice_ == max(cal.weights_, key=cal.weights_.__getitem__)
    T_filled = np.where(np.isnan(T).any(axis=1)[:, None], P, T)
    expected = np.zeros(P.shape)
    for choice, weight in cal.weights_.items():
        if choice == "verbalized alone":
            rows = TemperatureScaling(prior_scale=0.5).fit(P, y).predict_proba(P)
        elif choice == "token_probs alone":
            token = TemperatureScaling(prior_scale=0.5).fit(T_filled, y)
            rows = token.predict_proba(T_filled)
        else:
            alone = MultiSignalCalibrator(
                penalties=(float(choice),), single_signals=False, rule="choose", binning=False
            ).fit(P, y, signals=signals)
            rows = alone.predict_proba(P, signals=signals)
        expected += weight * rows
    np.testing.assert_allclose(cal.predict_proba(P, signals=signals), expected, atol=1e-8)


def test_the_final_binning_is_chosen_out_of_fold():
    P, T, y = synthetic(600, k=2, seed=22)
    signals = {"token_probs": T}
    cal = MultiSignalCalibrator().fit(P, y, signals=signals)
    assert set(cal.binning_cv_nll_) == {"none", *(f"{b} bins" for b in BINNING_BINS)}
    best = min(cal.binning_cv_nll_, key=cal.binning_cv_nll_.__getitem__)
    assert cal.binning_cv_ece_[cal.binning_choice_] <= cal.binning_cv_ece_[best]
    bare = MultiSignalCalibrator(binning=False).fit(P, y, signals=signals)
    Q, Q_bare = cal.predict_proba(P, signals=signals), bare.predict_proba(P, signals=signals)
    if cal.binning_choice_ == "none":
        assert cal.binning_ is None
        np.testing.assert_allclose(Q, Q_bare, atol=1e-12)
    else:  # shrinkage binning of the stack's rows: fewer distinct confidences
        assert len(np.unique(Q.max(axis=1).round(9))) < len(np.unique(Q_bare.max(axis=1).round(9)))
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, atol=1e-9)


def test_fitting_is_deterministic_and_survives_a_calibrator_file(tmp_path):
    P, T, y = synthetic(300, k=3, seed=23, missing=0.2)
    signals = {"token_probs": T}
    one = MultiSignalCalibrator().fit(P, y, signals=signals)
    two = MultiSignalCalibrator().fit(P, y, signals=signals)
    Q = one.predict_proba(P, signals=signals)
    np.testing.assert_array_equal(Q, two.predict_proba(P, signals=signals))
    path = tmp_path / "cal.json"
    save_calibrator(path, CalibratorRecord("multisignal", one, ["a", "b", "c"], []))
    loaded = load_calibrator(path).calibrator
    np.testing.assert_allclose(loaded.predict_proba(P, signals=signals), Q, atol=1e-12)


def few_events(n, k, wrong, seed):
    """Stated answers wrong on ``wrong`` rows, informative token rows."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    stated = y.copy()
    bad = rng.choice(n, wrong, replace=False)
    stated[bad] = (y[bad] + 1) % k
    P = np.full((n, k), 0.1 / (k - 1))
    P[np.arange(n), stated] = 0.9
    T = rng.dirichlet(np.ones(k), size=n) * 0.1
    T[np.arange(n), stated] += np.where(np.isin(np.arange(n), bad), 0.5, 0.9)
    return P, T / T.sum(axis=1, keepdims=True), y


@settings(max_examples=6, deadline=None)
@given(
    n=st.integers(60, 150),
    k=st.integers(2, 5),
    wrong=st.integers(3, 9),
    seed=st.integers(0, 10_000),
)
def test_auto_with_fewer_than_ten_events_is_the_verbalized_auto(n, k, wrong, seed):
    # Trusting another signal is fitted (SIGNAL_PARAMETERS): with fewer than 10 wrong (or
    # right) stated answers the result is exactly the verbalized-only AutoCalibrator.
    P, T, y = few_events(n, k, wrong, seed)
    auto = AutoCalibrator().fit(P, y, signals={"token_probs": T})
    plain = AutoCalibrator().fit(P, y)
    assert auto.signals_ == [] and auto.weights_ == plain.weights_
    np.testing.assert_array_equal(
        auto.predict_proba(P, signals={"token_probs": T}), plain.predict_proba(P)
    )
    assert auto.skipped_["token_temperature"] == f"needs 10 labelled events, has {wrong}"
    assert auto.skipped_["multisignal"] == f"needs 20 labelled events, has {wrong}"


def test_auto_with_ten_events_compares_the_other_signals():
    P, T, y = few_events(150, 3, 10, seed=24)
    auto = AutoCalibrator().fit(P, y, signals={"token_probs": T})
    # compared: in the pool, or rejected by signals_help, but not for want of events
    for name in ("token_temperature", "token_shrinkage_accuracy_20"):
        assert not auto.skipped_.get(name, "").startswith("needs"), auto.skipped_[name]
    assert auto.skipped_["multisignal"] == "needs 20 labelled events, has 10"


def test_predicting_without_a_fitted_signal_names_it():
    P, T, y = synthetic(200, seed=6)
    for cal in (MultiSignalCalibrator(), TokenProbsCalibrator(TemperatureScaling())):
        cal.fit(P, y, signals={"token_probs": T})
        with pytest.raises(InvalidInputError, match="'token_probs'.*--logprobs"):
            cal.predict_proba(P)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(20, 80),
    k=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    missing=st.floats(0, 1),
)
def test_any_signals_give_probability_rows(n, k, seed, missing):
    P, T, y = synthetic(n, k=k, seed=seed, missing=missing)
    if len(np.unique(y)) < 2:
        y[0], y[1] = 0, 1
    spread = np.random.default_rng(seed).random(n) * 0.3
    signals = {"token_probs": T, "sample_spread": spread, "prior": np.full(k, 1.0 / k)}
    cal = MultiSignalCalibrator(cv=2).fit(P, y, signals=signals)
    Q = cal.predict_proba(P, signals={"token_probs": T, "sample_spread": spread})
    assert Q.shape == (n, k) and np.isfinite(Q).all()
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, atol=1e-9)


def test_bad_signals_are_refused_with_their_name():
    P, T, y = synthetic(100, seed=7)
    with pytest.raises(InvalidInputError, match="'token_probs' has shape"):
        MultiSignalCalibrator().fit(P, y, signals={"token_probs": T[:10]})
    with pytest.raises(InvalidInputError, match="unknown signal 'logits'"):
        MultiSignalCalibrator().fit(P, y, signals={"logits": T})
    with pytest.raises(InvalidInputError, match="'token_probs' holds infinite or negative"):
        MultiSignalCalibrator().fit(P, y, signals={"token_probs": -T})


def test_auto_without_signals_is_unchanged():
    P, _, y = synthetic(300, k=4, seed=8)
    plain = AutoCalibrator().fit(P, y)
    none = AutoCalibrator().fit(P, y, signals=None)
    np.testing.assert_array_equal(plain.predict_proba(P), none.predict_proba(P))
    assert not any(n.startswith(("token", "multi")) for n in plain.cv_scores_)
    assert plain.signals_ == []


def test_auto_with_signals_compares_the_token_and_stacked_candidates():
    P, T, y = synthetic(800, k=4, seed=9, missing=0.1)
    auto = AutoCalibrator().fit(P[:400], y[:400], signals={"token_probs": T[:400]})
    assert "multisignal" in auto.cv_scores_ and "token_temperature" in auto.cv_scores_
    assert auto.signals_ == ["token_probs"]
    Q = auto.predict_proba(P[400:], signals={"token_probs": T[400:]})
    verbal = AutoCalibrator().fit(P[:400], y[:400]).predict_proba(P[400:])
    assert nll(Q, y[400:]) < nll(verbal, y[400:])
    with pytest.raises(InvalidInputError, match="token_probs"):
        auto.predict_proba(P[400:])


def test_auto_drops_token_candidates_that_do_not_help_on_a_small_file():
    # 120 rows, 4 classes, token probabilities that are noise: without the check their
    # candidates took a share of the pool by chance on the folds; now the result is the
    # verbalized pool itself, and the explanation says why.
    P, _, y = synthetic(120, k=4, seed=12)
    noise = np.random.default_rng(13).dirichlet(np.ones(4) * 0.3, size=120)
    auto = AutoCalibrator().fit(P, y, signals={"token_probs": noise})
    plain = AutoCalibrator().fit(P, y)
    assert auto.signals_ == [] and auto.weights_ == plain.weights_
    np.testing.assert_allclose(auto.predict_proba(P), plain.predict_proba(P), atol=1e-12)
    assert "the other signals do not help" in auto.skipped_["token_temperature"]


def test_auto_on_a_small_real_file_is_the_verbalized_auto(recorded_data):
    # A 200-row subsample of a real 4-class file (100 rows to fit, a handful wrong): too few
    # labelled events to trust another signal, so the result is exactly the verbalized-only
    # AutoCalibrator (bench/multisignal.py: never worse than it, on every small file).
    task = load_recorded_task(recorded_data / "sciq__gpt-4o.jsonl")
    labels = task.labels
    T = np.array(
        [[task.records[i]["token_probs"][lab] for lab in labels] for i in task.kept], dtype=float
    )
    sub = np.random.default_rng(0).choice(len(task.y), 200, replace=False)
    fit, test = train_test_split(sub, test_size=0.5, random_state=0)
    P, y = task.P, task.y
    auto = AutoCalibrator().fit(P[fit], y[fit], signals={"token_probs": T[fit]})
    plain = AutoCalibrator().fit(P[fit], y[fit])
    events = min(np.sum(P[fit].argmax(axis=1) == y[fit]), np.sum(P[fit].argmax(axis=1) != y[fit]))
    assert events < 10 * SIGNAL_PARAMETERS
    assert auto.skipped_["token_temperature"].startswith("needs 10 labelled events")
    assert auto.skipped_["multisignal"].startswith("needs 20 labelled events")
    assert "token_temperature" not in auto.cv_scores_ and not auto.signals_
    assert auto.weights_ == plain.weights_
    np.testing.assert_array_equal(
        auto.predict_proba(P[test], signals={"token_probs": T[test]}), plain.predict_proba(P[test])
    )


def test_elicitor_keeps_every_sample_and_the_file_round_trips(tmp_path):
    with FaultServer(labels=["positive", "negative"]) as server:
        predictions, _ = elicit(
            server, items(4), elicitor_kwargs={"samples": 3, "temperature": 0.7}
        )
    for p in predictions:
        assert len(p.samples) == 3
        for sample in p.samples:
            assert sample.keys() == p.probs.keys()
    path = tmp_path / "p.jsonl"
    write_predictions(path, predictions)
    again = read_predictions(path)
    assert [p.samples for p in again] == [p.samples for p in predictions]
    arrays = to_arrays(again)
    assert len(arrays.samples) == 4 and arrays.samples[0].shape == (3, 2)
    np.testing.assert_allclose(sample_spread(arrays.samples), 0.0, atol=1e-12)  # 3 alike


def test_only_the_first_sample_pays_for_token_probabilities():
    with FaultServer(labels=["positive", "negative"]) as server:
        predictions, _ = elicit(
            server,
            items(3),
            elicitor_kwargs={"samples": 3, "temperature": 0.7, "logprobs": True},
        )
        asked = sorted((b["seed"], bool(b.get("logprobs"))) for b in server.record.bodies)
    assert len(asked) == 9  # this server takes no ``n``: one request per sample
    assert {seed for seed, wants in asked if wants} == {0}  # seed 0 + j is sample j
    assert all(p.token_probs is not None and len(p.samples) == 3 for p in predictions)


@pytest.fixture
def token_preds(recorded_data, tmp_path):
    """Real gpt-4o BoolQ answers with their token probabilities (every 10th row without)."""
    source = recorded_data / "boolq__gpt-4o.jsonl"
    records = {str(r["id"]): r for r in map(json.loads, source.read_text().splitlines())}
    out = []
    for number, p in enumerate(recorded_predictions(source)):
        tokens = records[p.id].get("token_probs")
        keep = tokens and number % 10 and p.probs is not None
        out.append(replace(p, token_probs=tokens if keep else None))
    path = tmp_path / "tokens.jsonl"
    write_predictions(path, out)
    return path, out


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_fit_apply_round_trip_and_missing_signal(token_preds, tmp_path, capsys):
    path, predictions = token_preds
    cal = tmp_path / "cal.json"
    code, _, err = run(capsys, "fit", "--preds", path, "--method", "auto", "--out", cal)
    assert code == 0, err
    record = load_calibrator(cal)
    assert record.calibrator.signals_ == ["token_probs"]
    document = json.loads(cal.read_text())
    assert "multisignal" in document["calibrator"]["fitted"]["cv_scores_"]
    out = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "apply", "--preds", path, "--calibrator", cal, "--out", out)
    assert code == 0, err
    applied = read_predictions(out)
    assert all(p.calibrated_by == "auto" for p in applied if p.probs is not None)
    code, outtext, err = run(capsys, "evaluate", "--preds", path, "--calibrator", cal)
    assert code == 0, err
    # The same answers without token probabilities: refused, naming the signal.
    bare = tmp_path / "bare.jsonl"
    write_predictions(bare, [replace(p, token_probs=None) for p in predictions])
    code, _, err = run(capsys, "apply", "--preds", bare, "--calibrator", cal, "--out", out)
    assert code != 0 and "'token_probs'" in err and "--logprobs" in err


def test_the_prior_on_equal_weights_leaves_each_signals_share_as_fitted():
    # The prior evens out the weights within the verbalized candidates and within the
    # other signals' candidates, never between them: how much to trust the token
    # probabilities stays what the out-of-fold rows said.
    P, T, y = synthetic(300, k=2, seed=31)
    signals = {"token_probs": T}
    fitted = AutoCalibrator(anchor_rows=0).fit(P, y, signals=signals)
    evened = AutoCalibrator().fit(P, y, signals=signals)
    verbal = set(fitted.cv_scores_) - {n for n in fitted.cv_scores_ if n.startswith("token_")}
    verbal.discard("multisignal")

    def verbalized_share(auto):
        return sum(w for name, w in auto.weights_.items() if name in verbal)

    assert len(verbal) < len(evened.cv_scores_)  # the signal candidates were compared
    assert verbalized_share(evened) == pytest.approx(verbalized_share(fitted), abs=1e-3)
    assert np.ptp(list(evened.weights_.values())) <= np.ptp(list(fitted.weights_.values()))
