"""read_columns: the same rows, checks and errors as read_predictions, as columns."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verbcal.calibrators import TemperatureScaling
from verbcal.errors import InvalidInputError
from verbcal.persist import CalibratorRecord
from verbcal.prediction_columns import fitted_mask, read_columns, read_compact
from verbcal.predictions import (
    CONTENT_FREE,
    ITEM,
    read_predictions,
    to_arrays,
    write_predictions,
)
from verbcal.report.compute import summarize_parsing
from verbcal.workflow import apply_calibrator, apply_calibrator_to_file, held_out

LABELS = ["yes", "no"]
STATED = [0.0, 0.2, 0.5, 0.7, 0.9, 1.0]


@st.composite
def prediction_rows(draw) -> list[dict]:
    n = draw(st.integers(1, 40))
    rows = []
    for i in range(n):
        status = draw(st.sampled_from(["ok", "ok", "repaired", "failed"]))
        p = draw(st.sampled_from(STATED))
        row = {
            "id": draw(st.sampled_from([f"r{i}", i, f"é{i}", f"r{i}\x00"])),
            "labels": LABELS,
            "probs": None if status == "failed" else {"yes": p, "no": round(1 - p, 10)},
            "status": status,
            "detail": draw(st.sampled_from(["", "no numbers", "rescaled"])),
            "kind": draw(st.sampled_from([ITEM, ITEM, ITEM, CONTENT_FREE])),
            "suspect": draw(st.booleans()),
        }
        if draw(st.integers(0, 4)):
            row["label"] = draw(st.sampled_from(LABELS))
        if draw(st.integers(0, 9)) == 0:
            row["calibrated_by"] = "temperature"
        rows.append(row)
    return rows


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def outcome(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except InvalidInputError as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=prediction_rows())
def test_columns_give_to_arrays_numbers_and_read_predictions_errors(tmp_path, rows):
    path = tmp_path / "p.jsonl"
    write_rows(path, rows)
    expected = outcome(read_predictions, path)
    columns = outcome(read_columns, path)
    if isinstance(expected, str):  # the same error, named the same way
        assert columns == expected
        return
    assert not isinstance(columns, str)
    assert len(columns) == len(expected)
    for kind in (ITEM, CONTENT_FREE):
        for prefer in (True, False):
            want = outcome(to_arrays, expected, kind=kind, prefer_labelled=prefer)
            got = outcome(columns.arrays, kind=kind, prefer_labelled=prefer)
            if isinstance(want, str):
                assert got == want
                continue
            assert not isinstance(got, str)
            assert list(got.ids) == want.ids
            np.testing.assert_array_equal(got.P, want.P)  # bit for bit
            assert (got.n_failed, got.n_unlabelled) == (want.n_failed, want.n_unlabelled)
            assert (got.y is None) == (want.y is None)
            if want.y is not None:
                np.testing.assert_array_equal(got.y, want.y)
    assert summarize_parsing(columns) == summarize_parsing(expected)
    assert columns.n_suspect() == sum(bool(p.suspect) for p in expected if p.kind == ITEM)
    done = next((p for p in expected if p.calibrated_by), None)
    assert columns.calibrated == (None if done is None else (done.calibrated_by, done.id))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=prediction_rows(), data=st.data())
def test_streamed_apply_writes_the_bytes_apply_calibrator_writes(tmp_path, rows, data):
    path = tmp_path / "p.jsonl"
    write_rows(path, rows)
    predictions = outcome(read_predictions, path)
    if isinstance(predictions, str):
        return
    fitted = data.draw(st.lists(st.sampled_from([p.id for p in predictions]), unique=True))
    record = CalibratorRecord("temperature", TemperatureScaling(), LABELS, fitted)
    record.calibrator.fit(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.array([0, 1, 1]))
    write_predictions(tmp_path / "old.jsonl", apply_calibrator(record, predictions))
    written = apply_calibrator_to_file(record, read_columns(path), tmp_path / "new.jsonl")
    assert written == len(predictions)
    assert (tmp_path / "new.jsonl").read_bytes() == (tmp_path / "old.jsonl").read_bytes()
    want = outcome(held_out, predictions, fitted, LABELS)
    got = outcome(held_out, read_columns(path), fitted, LABELS)
    if isinstance(want, str):
        assert got == want
    else:
        assert not isinstance(got, str)
        assert list(got.ids) == want.ids
        np.testing.assert_array_equal(got.P, want.P)


def test_the_first_error_in_file_order_wins(tmp_path):
    row = {"id": "a", "labels": LABELS, "probs": {"yes": 0.6, "no": 0.4}, "status": "ok"}
    path = tmp_path / "p.jsonl"
    write_rows(path, [row, {**row, "id": "b"}, row, {**row, "id": "c", "status": "odd"}])
    with pytest.raises(InvalidInputError, match=r"line 3: duplicate id 'a' \(also on line 1"):
        read_columns(path)
    write_rows(path, [row, {**row, "id": "c", "status": "odd"}, row])
    with pytest.raises(InvalidInputError, match="line 2: 'status' must be one of"):
        read_columns(path)
    path.write_text("\n\n")
    with pytest.raises(InvalidInputError, match="the file has no predictions"):
        read_columns(path)


def test_ids_with_a_trailing_nul_stay_apart(tmp_path):
    row = {"id": "a", "labels": LABELS, "probs": {"yes": 0.6, "no": 0.4}, "status": "ok"}
    path = tmp_path / "p.jsonl"
    write_rows(path, [row, {**row, "id": "a\x00"}])
    columns = read_columns(path)
    assert list(columns.ids) == ["a", "a\x00"]
    assert fitted_mask(columns.ids, ["a\x00"]).tolist() == [False, True]
    assert fitted_mask(columns.ids, ["a"]).tolist() == [True, False]


def test_rows_with_token_probabilities_are_read_as_predictions(tmp_path):
    row = {"id": "a", "labels": LABELS, "probs": {"yes": 0.6, "no": 0.4}, "status": "ok"}
    path = tmp_path / "p.jsonl"
    write_rows(path, [row, {**row, "id": "b", "token_probs": {"yes": 0.7, "no": 0.3}}])
    assert isinstance(read_compact(path), list)
    write_rows(path, [row])
    assert not isinstance(read_compact(path), list)


def test_a_row_summing_to_zero_is_refused_as_to_arrays_refuses_it(tmp_path):
    row = {"id": "a", "labels": LABELS, "probs": {"yes": 0.6, "no": 0.4}, "status": "ok"}
    path = tmp_path / "p.jsonl"
    write_rows(path, [row, {**row, "id": "z", "probs": {"yes": 0, "no": 0.0}}])
    expected = outcome(to_arrays, read_predictions(path))
    assert "'z' has probabilities that sum to 0" in expected
    assert outcome(read_columns(path).arrays) == expected
