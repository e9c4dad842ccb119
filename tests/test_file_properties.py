"""Files users hand to verbcal, generated: a reader returns good data or raises InvalidInputError.

Whatever the bytes of an items or predictions file, and whatever a hand edit
puts into any field of a calibrator file, verbcal either reads it (and then
what it read is usable: a loaded calibrator predicts probability rows) or
raises :class:`~verbcal.errors.InvalidInputError` naming the file; never
another exception, never NaN passed on.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verbcal import InvalidInputError, load_calibrator, read_items, read_predictions
from verbcal.persist import save_calibrator
from verbcal.predictions import Prediction
from verbcal.workflow import METHODS, fit_calibrator

LABELS = ["neg", "pos"]

#: JSON values a hand edit may leave in a field.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.0, -0.0, 1e-300, -2.5, 0.5, 1e300, float("nan"), float("inf")])
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


def _predictions(n: int = 60) -> list[Prediction]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p = round(float(rng.choice([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])), 1)
        top = int(rng.integers(2))
        probs = {LABELS[top]: p, LABELS[1 - top]: round(1 - p, 1)}
        gold = top if rng.random() < 0.7 else 1 - top
        rows.append(Prediction(f"r{i}", list(LABELS), probs, "ok", label=LABELS[gold]))
    for i in range(5):
        probs = {"neg": 0.4 + 0.05 * i, "pos": 0.6 - 0.05 * i}
        rows.append(Prediction(f"cf{i}", list(LABELS), probs, "ok", kind="content_free"))
    return rows


@pytest.fixture(scope="module")
def documents() -> dict[str, dict]:
    """A saved calibrator document of every method."""
    folder = Path(tempfile.mkdtemp())
    out = {}
    for method in METHODS:
        save_calibrator(folder / f"{method}.json", fit_calibrator(_predictions(), method))
        out[method] = json.loads((folder / f"{method}.json").read_text())
    return out


def _paths(value, prefix=()):
    """Every (path of keys) inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replace(document, path, value):
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(method=st.sampled_from(sorted(METHODS)), pick=st.integers(0, 10**6), value=json_values)
def test_any_hand_edit_of_a_calibrator_is_read_whole_or_refused(documents, method, pick, value):
    document = documents[method]
    paths = [p for p in _paths(document) if p[:1] != ("verbcal_version",)]
    edited = _replace(document, paths[pick % len(paths)], value)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cal.json"
        path.write_text(json.dumps(edited))
        try:
            record = load_calibrator(path)
        except InvalidInputError as error:
            assert str(path) in str(error)
            return
    # Read: then it must be usable, whatever was edited.
    P = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0], [0.35, 0.65]])
    Q = record.calibrator.predict_proba(P)
    assert Q.shape == P.shape and np.isfinite(Q).all() and (Q >= 0).all()
    np.testing.assert_allclose(Q.sum(axis=1), 1.0, atol=1e-6)


@settings(deadline=None)
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".jsonl"]))
def test_any_bytes_as_items_are_read_or_refused(data, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"items{suffix}"
        path.write_bytes(data)
        try:
            items = read_items(path, label_field="label", labels=["a", "b"])
        except InvalidInputError as error:
            assert str(path) in str(error)
            return
    assert items and len({item.id for item in items}) == len(items)
    assert all(isinstance(item.text, str) for item in items)


prediction_rows = st.fixed_dictionaries(
    {
        "id": st.one_of(st.text(max_size=3), st.integers(0, 5), json_values),
        "labels": st.one_of(st.just(LABELS), json_values),
        "probs": st.one_of(
            st.fixed_dictionaries({"neg": json_values, "pos": json_values}),
            st.just({"neg": 0.25, "pos": 0.75}),
            json_values,
        ),
        "status": st.sampled_from(["ok", "repaired", "failed"]),
    },
    optional={"label": json_values, "kind": json_values, "calibrated_by": json_values},
)


@settings(deadline=None)
@given(rows=st.lists(prediction_rows, min_size=1, max_size=5), junk=st.binary(max_size=20))
def test_any_predictions_file_is_read_or_refused(rows, junk):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.jsonl"
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + junk)
        try:
            predictions = read_predictions(path)
        except InvalidInputError as error:
            assert str(path) in str(error)
            return
    keys = [(p.kind, p.id) for p in predictions]
    assert len(set(keys)) == len(keys)
    for p in predictions:
        assert len(set(p.labels)) == len(p.labels) >= 2
        if p.probs is not None:
            values = [p.probs[label] for label in p.labels]
            assert all(type(v) in (int, float) and 0 <= v <= 1 for v in values)
