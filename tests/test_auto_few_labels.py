"""Few labelled rows (issue 12, parts 2 and 3): shrinkage toward the accuracy, anchored pool.

With 25 labelled rows the labels pin down the overall accuracy and little else;
``ShrinkageBinning(toward="accuracy")`` shrinks each stated value's accuracy
toward it (the first default candidate of ``AutoCalibrator``), and
``AutoCalibrator`` keeps its pool's weights near equal (``anchor_rows``) until
the out-of-fold rows can tell the candidates apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import train_test_split

from verbcal.calibrators import AutoCalibrator, ShrinkageBinning, TemperatureScaling
from verbcal.calibrators.auto import ANCHOR_ROWS, anchored_weights
from verbcal.metrics import ece, nll

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_shrinkage_toward_accuracy_by_hand():
    # 3 classes. Stated top 0.8 (4 rows, 3 right) and 0.5 (4 rows, 1 right):
    # accuracy 4/8, mean stated top 0.65; with k = 2 the level is (4 + 2 * 0.65) / 10 = 0.53.
    P = np.array([[0.8, 0.1, 0.1]] * 4 + [[0.5, 0.3, 0.2]] * 4)
    y = np.array([0, 0, 0, 1, 0, 1, 2, 1])
    cal = ShrinkageBinning(
        toward="accuracy", accuracy_prior_strength=2.0, prior_strength=4.0, eps=1e-3
    ).fit(P, y)
    assert cal.accuracy_ == pytest.approx(0.53)
    np.testing.assert_allclose(cal.block_confidence_, [0.53, 0.53])
    Q = cal.predict_proba([[0.8, 0.1, 0.1], [0.5, 0.3, 0.2]])
    # block 0.5: (1 + 4 * 0.53) / (4 + 4) = 0.39; block 0.8: (3 + 4 * 0.53) / 8 = 0.64
    np.testing.assert_allclose(Q[:, 0], [0.64, 0.39])
    # the rest in the temperature-scaled proportions (equal for 0.1 / 0.1)
    np.testing.assert_allclose(Q[0, 1:], [0.18, 0.18])
    assert Q[1, 1] > Q[1, 2]
    np.testing.assert_allclose(Q.sum(axis=1), 1.0)


def test_shrinkage_toward_temperature_is_unchanged_and_records_no_accuracy():
    P = np.array([[0.8, 0.2]] * 4 + [[0.6, 0.4]] * 4)
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    cal = ShrinkageBinning(prior_strength=3.0, eps=1e-3).fit(P, y)
    assert not hasattr(cal, "accuracy_")
    Q = TemperatureScaling(eps=1e-3).fit(P, y).predict_proba(P)
    np.testing.assert_allclose(cal.block_confidence_, [Q[4:, 0].mean(), Q[:4, 0].mean()])


@given(
    n=st.integers(4, 60),
    k=st.integers(2, 5),
    seed=st.integers(0, 2**16),
    strength=st.sampled_from([0.0, 1.0, 10.0]),
)
@settings(max_examples=60, deadline=None)
def test_shrinkage_toward_accuracy_properties(n, k, seed, strength):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(k), size=n).round(2)
    P[:, 0] += 1 - P.sum(axis=1)  # rows on a 0.01 grid that sum to 1
    P = np.clip(P, 0, 1)
    P /= P.sum(axis=1, keepdims=True)
    y = rng.integers(0, k, size=n)
    y[:2] = [0, 1]  # two classes at least
    right = (ShrinkageBinning._top_class(P) == y).sum()
    stated = P.max(axis=1).mean()
    # An overwhelming prior strength: every row's top probability is the level,
    # the Beta posterior mean of the accuracy.
    cal = ShrinkageBinning(
        toward="accuracy", accuracy_prior_strength=strength, prior_strength=1e12
    ).fit(P, y)
    level = (right + strength * stated) / (n + strength)
    assert cal.accuracy_ == pytest.approx(level)
    Q = cal.predict_proba(P)
    np.testing.assert_allclose(Q.sum(axis=1), 1.0)
    top = np.minimum(level, 1 - 1e-6)
    np.testing.assert_allclose(Q[np.arange(n), ShrinkageBinning._top_class(P)], top, atol=1e-9)
    # A weak prior: each block follows its own accuracy, between it and the level.
    cal = ShrinkageBinning(toward="accuracy", prior_strength=1.0).fit(P, y)
    blocks = cal._block(P)
    own = cal.block_correct_[blocks] / cal.block_counts_[blocks]
    q = cal.predict_proba(P)[np.arange(n), ShrinkageBinning._top_class(P)]
    low, high = np.minimum(own, cal.accuracy_), np.maximum(own, cal.accuracy_)
    assert (q >= low - 1e-9).all() and (q <= np.minimum(high, 1 - 1e-6) + 1e-9).all()


def test_anchored_weights_fade_with_the_rows():
    fitted = np.array([0.0, 0.3, 0.7])
    w = anchored_weights(fitted, 25, ANCHOR_ROWS)
    assert w.sum() == pytest.approx(1.0)
    share = ANCHOR_ROWS / (25 + ANCHOR_ROWS)  # the prior's share of the weights
    np.testing.assert_allclose(w, (1 - share) * fitted + share / 3)
    assert w.max() - w.min() < 0.1  # mostly equal with 25 rows
    big = anchored_weights(fitted, 10**6, ANCHOR_ROWS)
    np.testing.assert_allclose(big, fitted, atol=1e-3)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=8).filter(lambda w: sum(w) > 0),
    st.integers(1, 10**6),
    st.floats(0, 1e4),
)
def test_anchored_weights_stay_on_the_simplex_between_fitted_and_equal(raw, n_rows, anchor):
    fitted = np.array(raw) / sum(raw)
    w = anchored_weights(fitted, n_rows, anchor)
    assert w.sum() == pytest.approx(1.0)
    equal = 1.0 / len(w)
    assert (w >= np.minimum(fitted, equal) - 1e-12).all()
    assert (w <= np.maximum(fitted, equal) + 1e-12).all()


def overconfident_rows(n, seed):
    """A model right 75% of the time whatever it states (0.8, 0.9 or 1.0)."""
    rng = np.random.default_rng(seed)
    conf = rng.choice([0.8, 0.9, 1.0], size=n)
    P = np.column_stack([conf, 1 - conf])
    y = (rng.random(n) > 0.75).astype(int)
    return P, y


def test_auto_keeps_its_weights_near_equal_with_few_rows():
    # Honest stated values (0.55 or 0.95, right at those rates): the folds favour the
    # candidates that follow them, but 25 rows weigh less than the prior's 300.
    rng = np.random.default_rng(4)
    conf = rng.choice([0.55, 0.95], size=25)
    P = np.column_stack([conf, 1 - conf])
    y = (rng.random(25) > conf).astype(int)
    auto = AutoCalibrator().fit(P, y)
    plain = AutoCalibrator(anchor_rows=0).fit(P, y)
    assert set(auto.weights_) == set(plain.weights_) == set(auto.cv_scores_)
    fitted = np.array([plain.weights_[name] for name in auto.weights_])
    np.testing.assert_allclose(
        list(auto.weights_.values()), anchored_weights(fitted, len(y), ANCHOR_ROWS), atol=1e-6
    )
    assert np.ptp(list(auto.weights_.values())) < np.ptp(fitted)
    # the one-standard-error rule has no weights to anchor
    one_se = AutoCalibrator(rule="one_se").fit(P, y)
    assert one_se.chosen_ == AutoCalibrator(anchor_rows=0, rule="one_se").fit(P, y).chosen_


def test_auto_with_few_rows_softens_an_uninformative_certainty():
    # Stated 1.0 is right 75% of the time: the calibrated value must come close to that.
    P, y = overconfident_rows(50, seed=2)
    P_test, y_test = overconfident_rows(4000, seed=3)
    auto = AutoCalibrator().fit(P, y)
    top = auto.predict_proba([[1.0, 0.0]])[0, 0]
    assert 0.6 < top < 0.9
    assert ece(auto.predict_proba(P_test), y_test) < 0.06


@pytest.mark.parametrize(
    ("anchor_rows", "most_ece", "most_nll"), [(0, 0.055, 0.366), (ANCHOR_ROWS, 0.054, 0.34)]
)
def test_few_labels_on_recorded_answers(recorded_data, anchor_rows, most_ece, most_nll):
    """Mean test ECE and NLL over the 9 files, 3 splits, 50 labelled rows (the bench's protocol).

    Before the candidate shrinking toward the accuracy: ECE 0.058, NLL 0.369
    (``bench/label_efficiency.py``); with it 0.051 / 0.363 with the weights as
    fitted (``anchor_rows=0``), and 0.051 / 0.337 with the default prior on
    equal weights.
    """
    from label_efficiency import random_rows
    from recorded import load_recorded_tasks

    per_file = []
    for task in load_recorded_tasks(recorded_data):
        scores = []
        for seed in range(3):
            P_cal, P_test, y_cal, y_test = train_test_split(
                task.P, task.y, test_size=0.5, random_state=seed
            )
            rows = random_rows(len(y_cal), seed, 50)
            auto = AutoCalibrator(anchor_rows=anchor_rows).fit(P_cal[rows], y_cal[rows])
            Q = auto.predict_proba(P_test)
            scores.append((ece(Q, y_test), nll(Q, y_test)))
        per_file.append(np.mean(scores, axis=0))
    mean_ece, mean_nll = np.mean(per_file, axis=0)
    assert mean_ece < most_ece
    assert mean_nll < most_nll
