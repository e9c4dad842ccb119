"""Calibrator files: every calibrator survives a JSON round trip with identical outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.frozen import FrozenEstimator
from strategies import coarse_binary_rows

from verbcal import InvalidInputError, calibrators
from verbcal.persist import CalibratorRecord, load_calibrator, save_calibrator

rng = np.random.default_rng(0)
P, Y = coarse_binary_rows(rng, 400, swapped=0.5, right=0.75)
TOKENS = np.clip(P + rng.normal(0, 0.2, size=(400, 1)) * [1, -1], 0.01, 0.99)  # a second signal
TOKENS[::7] = np.nan  # some replies without token probabilities


def predict(calibrator, Q):
    """predict_proba, with the token signal (``Q`` itself) when the calibrator needs it."""
    if getattr(calibrator, "signals_", None):
        return calibrator.predict_proba(Q, signals={"token_probs": Q})
    return calibrator.predict_proba(Q)


def fitted(name: str):
    cls = getattr(calibrators, name)
    if name == "CalibratorChain":
        contextual = calibrators.ContextualCalibration().fit(P[:20])
        return cls([FrozenEstimator(contextual), calibrators.TemperatureScaling()]).fit(P, Y)
    if name in ("ContextualCalibration", "BatchCalibration"):
        return cls().fit(P)
    if name == "LinearPool":
        members = [("t", calibrators.TemperatureScaling()), ("h", calibrators.HistogramBinning())]
        return cls(members, [0.3, 0.7]).fit(P, Y)
    if name == "TokenProbsCalibrator":
        return cls(calibrators.TemperatureScaling()).fit(P, Y, signals={"token_probs": TOKENS})
    if name == "MultiSignalCalibrator":
        return cls().fit(P, Y, signals={"token_probs": TOKENS})
    return cls().fit(P, Y)


@pytest.mark.parametrize("name", calibrators.CALIBRATORS)
def test_round_trip_gives_identical_probabilities(name, tmp_path):
    calibrator = fitted(name)
    path = tmp_path / "cal.json"
    save_calibrator(path, CalibratorRecord(name, calibrator, ["a", "b"], ["1", "2"], 3))
    json.loads(path.read_text())  # plain JSON
    loaded = load_calibrator(path)
    assert type(loaded.calibrator) is type(calibrator)
    assert (loaded.method, loaded.labels, loaded.fitted_ids, loaded.n_probes) == (
        name,
        ["a", "b"],
        ["1", "2"],
        3,
    )
    grid = np.linspace(0, 1, 41)
    Q = np.column_stack([grid, 1 - grid])
    np.testing.assert_array_equal(predict(loaded.calibrator, Q), predict(calibrator, Q))


def test_file_records_version_labels_and_smoothing(tmp_path):
    path = tmp_path / "cal.json"
    save_calibrator(path, CalibratorRecord("temperature", fitted("TemperatureScaling"), ["a", "b"]))
    document = json.loads(path.read_text())
    assert document["verbcal_version"] and document["labels"] == ["a", "b"]
    assert "eps_" in document["calibrator"]["fitted"]
    assert "temperature_" in document["calibrator"]["fitted"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not a JSON file"),
        ("{}", "not a verbcal calibrator file"),
        ('{"format": "verbcal-calibrator", "format_version": 99}', "format version 99"),
        (
            '{"format": "verbcal-calibrator", "format_version": 1, "labels": ["a", "b"], '
            '"calibrator": {"class": "os.system", "params": {}}}',
            "unknown calibrator class 'os.system'",
        ),
    ],
)
def test_bad_files_are_refused_clearly(tmp_path, content, match):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=match):
        load_calibrator(path)


def test_labels_must_match_the_fitted_classes(tmp_path):
    with pytest.raises(InvalidInputError, match="fitted on 2 classes but 3 labels"):
        save_calibrator(
            tmp_path / "c.json",
            CalibratorRecord("t", fitted("TemperatureScaling"), ["a", "b", "c"]),
        )


@pytest.mark.parametrize("name", calibrators.CALIBRATORS)
def test_plain_description_is_the_saved_one_without_tags(name):
    # One walk over an estimator: the report's plain description and the file's tagged one
    # hold the same values, arrays as lists either way.
    from verbcal.persist import estimator_to_dict

    def untag(value):
        if isinstance(value, dict):
            if "__ndarray__" in value:
                return value["__ndarray__"]
            if "__tuple__" in value:
                return [untag(v) for v in value["__tuple__"]]
            if "__float__" in value:
                return float(value["__float__"])
            if "__estimator__" in value:
                return untag(value["__estimator__"])
            return {k: untag(v) for k, v in value.items()}
        if isinstance(value, list):
            return [untag(v) for v in value]
        return value

    estimator = fitted(name)
    plain = estimator_to_dict(estimator, plain=True)
    json.dumps(plain, allow_nan=True)  # plain data only
    assert plain == untag(estimator_to_dict(estimator))
