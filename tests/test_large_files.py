"""Large predictions files: compact fitted ids, the fast stratified split, chunked calibration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split
from strategies import coarse_binary_rows

from verbcal import workflow
from verbcal.calibrators import AutoCalibrator, MultiSignalCalibrator, TemperatureScaling
from verbcal.errors import InvalidInputError, ParseError
from verbcal.persist import (
    PLAIN_IDS,
    CalibratorRecord,
    load_calibrator,
    pack_ids,
    save_calibrator,
    unpack_ids,
)
from verbcal.prediction_columns import IdColumn, fitted_mask, read_columns
from verbcal.predictions import PredictionArrays

rng = np.random.default_rng(3)
P, Y = coarse_binary_rows(rng, 3000, swapped=0.4, right=0.8)


def _saved(tmp_path, ids) -> tuple[dict, CalibratorRecord]:
    cal = TemperatureScaling(eps=0.01).fit(P[:200], Y[:200])
    path = tmp_path / "cal.json"
    save_calibrator(path, CalibratorRecord("temperature", cal, ["a", "b"], ids))
    return json.loads(path.read_text()), load_calibrator(path)


def test_many_fitted_ids_keep_the_file_small_and_load_as_one_array(tmp_path):
    ids = [f"item-{i:07d}" for i in range(0, 200_000, 2)]
    document, record = _saved(tmp_path, IdColumn(np.array([i.encode() for i in ids])))
    size = len((tmp_path / "cal.json").read_bytes())
    assert size < len(json.dumps(ids)) / 50  # a plain list: 1.4 MB
    assert document["fitted_ids"]["count"] == len(ids)
    assert isinstance(record.fitted_ids, IdColumn) and record.fitted_ids.data.dtype.kind == "S"
    assert record.fitted_ids == sorted(ids) and len(record.fitted_ids) == len(ids)
    assert "item-0000002" in record.fitted_ids and "item-0000003" not in record.fitted_ids
    column = IdColumn(np.array([f"item-{i:07d}".encode() for i in range(10)]))
    assert fitted_mask(column, record.fitted_ids).tolist() == [i % 2 == 0 for i in range(10)]


def test_few_fitted_ids_stay_a_plain_list_in_order(tmp_path):
    ids = [f"r{i}" for i in range(PLAIN_IDS, 0, -1)]
    document, record = _saved(tmp_path, ids)
    assert document["fitted_ids"] == ids and record.fitted_ids == ids


@settings(max_examples=40, deadline=None)
@given(st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=40))
def test_packed_ids_round_trip_any_text(texts):
    ids = sorted(texts | {f"pad-{i}" for i in range(PLAIN_IDS)})  # many: packed
    packed = pack_ids(ids)
    again = unpack_ids(json.loads(json.dumps(packed)))
    assert sorted(again) == ids  # ids ending in NUL stay a plain list; any other text packs


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(data="not base64!"), "fitted_ids.data: not base64"),
        (lambda d: d.update(count=d["count"] + 1), "does not hold"),
        (lambda d: d.update(width=0), "fitted_ids.width: must be an integer >= 1"),
        (lambda d: d.update(delta="yes"), "fitted_ids.delta: must be true or false"),
        (lambda d: d.update(encoding="gzip"), "fitted_ids: must be a list of row ids"),
    ],
)
def test_a_damaged_packed_id_set_is_refused_naming_the_field(tmp_path, edit, match):
    ids = IdColumn(np.array([f"item-{i:05d}".encode() for i in range(3000)]))
    document, _ = _saved(tmp_path, ids)
    edit(document["fitted_ids"])
    (tmp_path / "bad.json").write_text(json.dumps(document))
    with pytest.raises(ParseError, match=match):
        load_calibrator(tmp_path / "bad.json")


def test_evaluation_still_refuses_the_rows_fitted_on(tmp_path):
    lines = [
        {"id": f"q{i}", "labels": ["a", "b"], "probs": {"a": p[0], "b": p[1]}, "status": "ok"}
        | {"label": "ab"[y]}
        for i, (p, y) in enumerate(zip(P.tolist(), Y.tolist(), strict=True))
    ]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(row) + "\n" for row in lines))
    columns = read_columns(preds)
    record = workflow.fit_calibrator(columns, "temperature", holdout=0.3)
    assert isinstance(record.fitted_ids, IdColumn)
    save_calibrator(tmp_path / "cal.json", record)
    loaded = load_calibrator(tmp_path / "cal.json")
    assert isinstance(loaded.fitted_ids, IdColumn) and len(loaded.fitted_ids) == 2100
    held = workflow.held_out(columns, loaded.fitted_ids, loaded.labels)
    assert len(held.ids) == 900 and not set(held.ids) & set(loaded.fitted_ids)
    with pytest.raises(InvalidInputError, match="every row was used to fit"):
        workflow.held_out(columns, columns.ids, loaded.labels)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=4, max_size=400),
    st.sampled_from([0.1, 0.25, 0.33, 0.5, 0.7]),
    st.integers(0, 50),
)
def test_the_stratified_split_is_scikit_learns(y, holdout, seed):
    y = np.array(y)
    counts = np.bincount(y)
    n_held = math.ceil(holdout * len(y))
    if (counts[counts > 0] < 2).any() or min(len(y) - n_held, n_held) < (counts > 0).sum():
        return
    fit, held = workflow._stratified_masks(y, n_held, seed)
    expected = train_test_split(np.arange(len(y)), test_size=holdout, random_state=seed, stratify=y)
    np.testing.assert_array_equal(np.flatnonzero(fit), np.sort(expected[0]))
    np.testing.assert_array_equal(np.flatnonzero(held), np.sort(expected[1]))
    if len(y) - n_held < 2:
        return  # too few rows to fit on: split_ids refuses
    ids = [str(i) for i in range(len(y))]
    rows = workflow.split_ids(
        PredictionArrays(list("abcde"), ids, np.zeros((len(y), 5)), y, 0), holdout, seed
    )
    np.testing.assert_array_equal(rows[0], np.sort(expected[0]))
    np.testing.assert_array_equal(rows[1], np.sort(expected[1]))


def test_calibrating_in_chunks_gives_the_numbers_of_one_call(monkeypatch):
    auto = AutoCalibrator().fit(P[:1500], Y[:1500])
    record = CalibratorRecord("auto", auto, ["a", "b"])
    rows = PredictionArrays(["a", "b"], [], P, None, 0)
    whole = auto.predict_proba(P)
    monkeypatch.setattr(workflow, "CALIBRATE_CHUNK", 256)
    np.testing.assert_array_equal(workflow.calibrate(record, rows), whole)


def test_calibrating_in_chunks_cuts_the_signals_with_the_rows(monkeypatch):
    tokens = np.clip(P + np.random.default_rng(8).normal(0, 0.1, size=(len(P), 1)) * [1, -1], 0, 1)
    tokens[::9] = np.nan  # replies without token probabilities
    multi = MultiSignalCalibrator(cv=2).fit(
        P[:1500], Y[:1500], signals={"token_probs": tokens[:1500]}
    )
    record = CalibratorRecord("auto", multi, ["a", "b"])
    rows = PredictionArrays(["a", "b"], [], P, None, 0, token_probs=tokens)
    whole = multi.predict_proba(P, signals={"token_probs": tokens})
    monkeypatch.setattr(workflow, "CALIBRATE_CHUNK", 256)
    np.testing.assert_array_equal(workflow.calibrate(record, rows), whole)


# -- AutoCalibrator's memory savings change no number ----------------------------------------


def _pool_weights_in_one_pass(gold):
    """pool_weights as first written: the gradient from one (n, m) temporary."""
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    gold = np.maximum(gold, 1e-300)

    def loss_and_grad(w):
        mixed = np.maximum(gold @ w, 1e-300)
        return -float(np.log(mixed).mean()), -(gold / mixed[:, None]).mean(axis=0)

    m = gold.shape[1]
    with threadpool_limits(limits=1, user_api="blas"):  # as pool_weights (threads change bits)
        result = minimize(
            loss_and_grad,
            np.full(m, 1.0 / m),
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * m,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
            options={"ftol": 1e-12, "maxiter": 200},
        )
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()


@pytest.mark.parametrize("n", [7, 1000, 40_000])
def test_pool_weights_in_blocks_are_the_one_pass_weights(n):
    from verbcal.calibrators.auto import pool_weights

    gold = np.random.default_rng(n).beta(2, 1, size=(n, 4))
    gold[:, 3] = gold[:, 2]  # two identical candidates: a flat direction
    gold[0, 1] = 0.0  # a zero that needs the floor
    blocks, one_pass = pool_weights(gold), _pool_weights_in_one_pass(gold)
    # the flat direction may split its weight otherwise; the pool itself is the same
    np.testing.assert_allclose(blocks[:2], one_pass[:2], atol=1e-9)
    assert blocks[2] + blocks[3] == pytest.approx(one_pass[2] + one_pass[3], abs=1e-9)
    np.testing.assert_allclose(gold @ blocks, gold @ one_pass, atol=1e-9)


def test_auto_calibrator_in_chunks_with_compact_columns_fits_the_same_numbers(monkeypatch):
    from verbcal.calibrators import auto as auto_module

    def fitted():
        auto = AutoCalibrator().fit(P, Y)
        return auto.weights_, auto.cv_scores_, auto.cv_ece_, auto.predict_proba(P)

    weights, scores, eces, Q = fitted()
    monkeypatch.setattr(auto_module, "POOL_CHUNK", 100)  # out-of-fold rows and the gradient
    monkeypatch.setattr(auto_module, "_compact", lambda column: column)  # no byte codes
    again = fitted()
    assert again[1:3] == (scores, eces)  # the out-of-fold rows are the same, bit for bit
    assert again[0] == pytest.approx(weights, abs=1e-9)  # the gradient summed in other blocks
    np.testing.assert_allclose(again[3], Q, atol=1e-9)


def test_compact_columns_give_back_every_bit():
    from verbcal.calibrators.auto import _Codes, _compact

    few = np.random.default_rng(0).choice([0.1, 1 / 3, 0.7, 1e-300, 0.0], size=1000)
    packed = _compact(few)
    assert isinstance(packed, _Codes) and packed.codes.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(packed), few)
    many = np.random.default_rng(1).random(1000)
    assert _compact(many) is many
