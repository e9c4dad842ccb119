import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recorded import find_recorded_data, load_recorded_tasks
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from verbcal import ConfigurationError, InvalidInputError
from verbcal.calibrators import (
    AutoCalibrator,
    BatchCalibration,
    CalibratorChain,
    ContextualCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    ShrinkageBinning,
    TemperatureScaling,
    VectorScaling,
)
from verbcal.calibrators.auto import (
    EVENTS_PER_PARAMETER,
    default_candidates,
    fitted_parameters,
    labelled_events,
    pool_weights,
)
from verbcal.calibrators.base import EPS_GRID, BaseCalibrator
from verbcal.calibrators.inverse_temperature import fit_inverse_temperature
from verbcal.calibrators.logits import invert_softmax
from verbcal.metrics import ece, nll

SUPERVISED = [
    TemperatureScaling,
    NaiveTemperatureScaling,
    VectorScaling,
    MatrixScaling,
    IsotonicCalibration,
    HistogramBinning,
    ShrinkageBinning,
]
UNSUPERVISED = [ContextualCalibration, BatchCalibration]


def overconfident_data(n=600, k=3, seed=0):
    """Rows that claim more than they know: true probabilities, then sharpened and rounded."""
    rng = np.random.default_rng(seed)
    truth = softmax(rng.normal(scale=1.0, size=(n, k)), axis=1)
    y = np.array([rng.choice(k, p=row) for row in truth])
    stated = softmax(4 * np.log(truth), axis=1).round(2)
    stated /= stated.sum(axis=1, keepdims=True)
    return stated, y


# -- scikit-learn's estimator checks -----------------------------------------------------

# The checks build X from arbitrary features and y from arbitrary labels. A calibrator's
# input is probability rows whose columns *are* the classes, which some checks contradict.
LABELS_NOT_COLUMNS = (
    "the check's labels are not column indices of its X (e.g. 3 classes, 2 columns); "
    "a calibrator's classes are the columns of P"
)
VERBCAL_MESSAGES = "verbcal.validation words this error its own way (InvalidInputError)"
ONE_D_IS_BINARY = "a 1-D P is read as binary positive-class probabilities, by design"
IGNORES_LABELS = "fitted from unlabelled rows: y is ignored"

COMMON_EXPECTED_FAILURES = {
    "check_estimators_overwrite_params": LABELS_NOT_COLUMNS,
    "check_estimators_fit_returns_self": LABELS_NOT_COLUMNS,
    "check_readonly_memmap_input": LABELS_NOT_COLUMNS,
    "check_estimators_dtypes": LABELS_NOT_COLUMNS,
    "check_classifier_data_not_an_array": LABELS_NOT_COLUMNS,
    "check_classifiers_train": LABELS_NOT_COLUMNS,
    "check_supervised_y_2d": LABELS_NOT_COLUMNS,
    "check_classifiers_classes": "string labels: a calibrator's classes are the columns of P",
    "check_complex_data": VERBCAL_MESSAGES,
    "check_dtype_object": VERBCAL_MESSAGES + " (a ValueError, where the check wants TypeError)",
    "check_positive_only_tag_during_fit": VERBCAL_MESSAGES,
    "check_fit2d_predict1d": ONE_D_IS_BINARY,
}


TWO_COLUMNS_ONLY = "Platt scaling needs exactly 2 columns; the check's X has more (or negatives)"
PLATT_EXPECTED_FAILURES = {
    check: TWO_COLUMNS_ONLY
    for check in [
        "check_fit_score_takes_y",
        "check_dont_overwrite_parameters",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
        "check_classifiers_regression_target",
        "check_classifier_not_supporting_multiclass",
        "check_fit2d_1sample",
    ]
}


def expected_failed_checks(estimator):
    failures = dict(COMMON_EXPECTED_FAILURES)
    if isinstance(estimator, (PlattScaling, *UNSUPERVISED)):
        # these see labels within the columns: binary y, or no y at all
        for check in [
            "check_estimators_overwrite_params",
            "check_estimators_fit_returns_self",
            "check_readonly_memmap_input",
        ]:
            del failures[check]
    if isinstance(estimator, PlattScaling):
        del failures["check_classifiers_train"]
        failures.update(PLATT_EXPECTED_FAILURES)
    if isinstance(estimator, tuple(UNSUPERVISED)):
        failures["check_classifiers_one_label"] = IGNORES_LABELS
        failures["check_classifiers_regression_target"] = IGNORES_LABELS
    return failures


ALL_FOR_CHECKS = [cls(renormalize=True) for cls in SUPERVISED + UNSUPERVISED] + [
    PlattScaling(renormalize=True),
    CalibratorChain([TemperatureScaling()], renormalize=True),
    AutoCalibrator(
        [("temperature", TemperatureScaling()), ("isotonic", IsotonicCalibration())],
        cv=2,
        renormalize=True,
    ),
]


# The expected failures are asserted to fail here rather than marked xfail: pytest
# renders every xfail's traceback through estimator_checks.py, which took most of
# this file's run time, and an expected failure that starts passing now shows up.
@parametrize_with_checks(ALL_FOR_CHECKS)
def test_sklearn_compatible(estimator, check):
    if getattr(check, "func", check).__name__ in expected_failed_checks(estimator):
        with pytest.raises((AssertionError, ValueError, TypeError)):
            check(estimator)
    else:
        check(estimator)


# -- hand-computed values ----------------------------------------------------------------


def mirrored_rows(a, n_right, n_wrong):
    """Rows [a, 1 - a] and [1 - a, a]; the stated winner is right n_right times per side."""
    P = np.array([[a, 1 - a]] * (n_right + n_wrong) + [[1 - a, a]] * (n_right + n_wrong))
    y = np.array([0] * n_right + [1] * n_wrong + [1] * n_right + [0] * n_wrong)
    return P, y


@pytest.mark.parametrize("eps", [1e-3, 0.05])
def test_temperature_closed_form(eps):
    # Right 3 times in 4: the best softmax(d / T) puts 0.75 on the winner, so d / T = log 3.
    P, y = mirrored_rows(0.9, n_right=3, n_wrong=1)
    cal = TemperatureScaling(eps=eps).fit(P, y)
    d = np.log((0.9 + eps) / (0.1 + eps))
    assert cal.temperature_ == pytest.approx(d / np.log(3), rel=1e-7)
    assert cal.eps_ == eps
    np.testing.assert_allclose(cal.predict_proba(P[:1]), [[0.75, 0.25]], rtol=1e-7)


def test_naive_temperature_closed_form():
    P, y = mirrored_rows(0.9, n_right=3, n_wrong=1)
    cal = NaiveTemperatureScaling().fit(P, y)
    assert cal.temperature_ == pytest.approx(0.8 / np.log(3), rel=1e-7)


def test_temperature_auto_eps_handles_exact_zeros_and_ones():
    # Stated certainty that is wrong 1 time in 10: only a finite logit gap can fit that.
    P, y = mirrored_rows(1.0, n_right=9, n_wrong=1)
    cal = TemperatureScaling().fit(P, y)
    np.testing.assert_allclose(cal.predict_proba([[1.0, 0.0]]), [[0.9, 0.1]], rtol=1e-6)
    assert np.isfinite(cal.nll_)


def test_temperature_first_order_condition_on_messy_rows():
    P, y = overconfident_data()
    cal = TemperatureScaling(eps=1e-2).fit(P, y)
    Z = np.log(P + 1e-2)
    Q = cal.predict_proba(P)
    # d NLL / d(1/T) = mean(sum_k q_k z_k - z_y) vanishes at the optimum
    gradient = np.mean((Q * Z).sum(axis=1) - Z[np.arange(len(y)), y])
    assert abs(gradient) < 1e-6
    assert cal.temperature_ > 1  # the rows are overconfident


# -- the Newton fit of the temperature against independent optimisers ---------------------


def reference_inverse_temperature(Z, y):
    """beta = 1/T by the previous optimiser: a bounded scalar search on log(beta).

    Written from scratch with scipy (no verbcal code); the NLL from scipy's log_softmax.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    rows = np.arange(len(y))

    def loss(log_beta):
        return -log_softmax(np.exp(log_beta) * Z, axis=1)[rows, y].mean()

    result = minimize_scalar(
        loss, bounds=(np.log(1e-3), np.log(1e3)), method="bounded", options={"xatol": 1e-10}
    )
    return float(np.exp(result.x)), float(result.fun)


def root_of_the_gradient(Z, y):
    """The beta where d NLL / d beta = mean(E_q[z] - z_y) is 0, by scipy's brentq to 1e-15."""
    from scipy.optimize import brentq

    rows = np.arange(len(y))

    def gradient(beta):
        return np.mean((softmax(beta * Z, axis=1) * Z).sum(axis=1) - Z[rows, y])

    return brentq(gradient, 1e-3, 1e3, xtol=1e-15, rtol=1e-15)


def sharpened_rows(n, k, temperature=2.0, seed=0):
    """Continuous rows `temperature` times too sharp, labels drawn from the truth."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    y = (logits + rng.gumbel(size=(n, k))).argmax(axis=1)
    return softmax(temperature * logits, axis=1), y


@pytest.mark.parametrize(
    ("n", "k"),
    [(50, 2), (3_000, 3), (5_000, 10), (40_000, 4)],  # 5,000 and 40,000 use the subsample start
)
def test_temperature_scaling_matches_the_previous_optimiser(n, k):
    P, y = sharpened_rows(n, k, seed=n)
    cal = TemperatureScaling().fit(P, y)
    fits = {eps: reference_inverse_temperature(np.log(P + eps), y) for eps in EPS_GRID}
    best = min(fits, key=lambda eps: fits[eps][1])
    assert cal.eps_ == best
    assert 1.0 / cal.temperature_ == pytest.approx(fits[best][0], rel=1e-6)
    assert cal.nll_ == pytest.approx(fits[best][1], rel=1e-9)
    assert cal.nll_ == pytest.approx(nll(cal.predict_proba(P), y), rel=1e-9)


@pytest.mark.parametrize("eps", [1e-3, 3e-2])
@pytest.mark.parametrize("n", [200, 40_000])
def test_temperature_with_a_fixed_eps_is_the_root_of_the_gradient(eps, n):
    P, y = sharpened_rows(n, 5, temperature=0.6, seed=1)  # underconfident: T < 1
    cal = TemperatureScaling(eps=eps).fit(P, y)
    assert 1.0 / cal.temperature_ == pytest.approx(
        root_of_the_gradient(np.log(P + eps), y), rel=1e-9
    )
    assert cal.temperature_ < 1


@given(
    n=st.integers(4, 60),
    k=st.integers(2, 6),
    concentration=st.sampled_from([0.05, 0.3, 1.0, 5.0]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_fit_inverse_temperature_property(n, k, concentration, seed):
    """Any rows and labels: the fit is the reference's minimum, or a bound the NLL falls toward."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(k, concentration), size=n)
    y = rng.integers(0, k, size=n)
    Z = np.log(P + 1e-3)
    beta, value = fit_inverse_temperature(Z, y)
    ref_beta, ref_value = reference_inverse_temperature(Z, y)
    assert 1e-3 <= beta <= 1e3
    # never a worse NLL than the reference, and the same minimiser where it is interior
    assert value <= ref_value + 1e-9
    # (separable rows have their minimum at infinity: the NLL flattens to 0 on the way)
    if 2e-3 < ref_beta < 5e2 and np.ptp(Z, axis=1).max() > 1e-6 and ref_value > 1e-3:
        assert beta == pytest.approx(ref_beta, rel=1e-5)


def test_fit_inverse_temperature_sharpens_until_the_nll_vanishes_when_every_answer_is_right():
    # No finite minimum: the search stops at the bound or where the gradient underflows to 0.
    Z = np.log(np.array([[0.9, 0.1], [0.2, 0.8]] * 5))
    beta, value = fit_inverse_temperature(Z, np.array([0, 1] * 5))
    assert 100 < beta <= 1e3 and 0 <= value < 1e-100


def test_fit_inverse_temperature_on_uniform_rows_keeps_them_uniform():
    P = np.full((6, 3), 1 / 3)
    cal = TemperatureScaling().fit(P, [0, 1, 2, 0, 1, 2])
    np.testing.assert_allclose(cal.predict_proba(P), P)
    assert np.isfinite(cal.temperature_)


@pytest.mark.parametrize("mode", ["diagonal", "bias"])
def test_contextual_seed_example(mode):
    cal = ContextualCalibration(mode=mode).fit([[0.9, 0.1]])
    assert cal.predict_proba([[0.9, 0.1]]).tolist() == [[0.5, 0.5]]


def test_contextual_content_free_rows_are_averaged_and_renormalised():
    cal = ContextualCalibration(renormalize=True).fit([[1.6, 0.4], [2.0, 0.0]])
    np.testing.assert_allclose(cal.content_free_proba_, [0.9, 0.1])


def test_contextual_diagonal_by_hand():
    cal = ContextualCalibration(eps=1e-3).fit([[0.9, 0.1]])
    # q ∝ (p + eps) / (p_cf + eps)
    q0 = (0.501 / 0.901) / (0.501 / 0.901 + 0.501 / 0.101)
    np.testing.assert_allclose(cal.predict_proba([[0.5, 0.5]]), [[q0, 1 - q0]], rtol=1e-12)


@pytest.mark.parametrize(
    ("row", "expected"),
    [([0.95, 0.05], [0.55, 0.45]), ([0.2, 0.8], [0.0, 1.0]), ([1.0, 0.0], [0.6, 0.4])],
)
def test_contextual_bias_by_hand(row, expected):
    cal = ContextualCalibration(mode="bias").fit([[0.9, 0.1]])
    np.testing.assert_allclose(cal.predict_proba([row]), [expected], atol=1e-12)


def test_contextual_bias_is_the_simplex_projection():
    # KKT conditions of the Euclidean projection of v = p - p_cf + 1/K
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(5) * 0.3, size=50)
    p_cf = rng.dirichlet(np.ones(5))
    Q = ContextualCalibration(mode="bias").fit(p_cf[None, :]).predict_proba(P)
    V = P - p_cf + 0.2
    np.testing.assert_allclose(Q.sum(axis=1), 1.0)
    for v, q in zip(V, Q, strict=True):
        theta = (v - q)[q > 0]
        np.testing.assert_allclose(theta, theta[0], atol=1e-12)
        assert np.all(v[q == 0] <= theta[0] + 1e-12)
        assert v.argmax() == q.argmax()


def test_contextual_then_temperature_is_the_closed_form():
    rng = np.random.default_rng(2)
    content_free = rng.dirichlet([5, 1, 1], size=3)
    P, y = overconfident_data(seed=2)
    contextual = ContextualCalibration(eps=1e-3).fit(content_free)
    chain = CalibratorChain([FrozenEstimator(contextual), TemperatureScaling(eps=0)]).fit(P, y)
    T = chain.steps_[1].temperature_
    p_cf = content_free.mean(axis=0)
    expected = softmax((np.log(P + 1e-3) - np.log(p_cf + 1e-3)) / T, axis=1)
    np.testing.assert_allclose(chain.predict_proba(P), expected, rtol=1e-12, atol=1e-15)
    # and the temperature is the one fitted directly on the corrected rows
    direct = TemperatureScaling(eps=0).fit(contextual.predict_proba(P), y)
    assert pytest.approx(direct.temperature_, rel=1e-12) == T
    # the frozen step was not refitted on the labelled rows
    np.testing.assert_array_equal(chain.steps_[0].content_free_proba_, p_cf)


def test_batch_calibration_removes_the_batch_prior():
    P = np.array([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.6, 0.4]])
    cal = BatchCalibration(eps=1e-3).fit(P)
    np.testing.assert_allclose(cal.prior_, [0.675, 0.325])
    expected = softmax(np.log(P + 1e-3) - np.log(cal.prior_ + 1e-3), axis=1)
    np.testing.assert_allclose(cal.predict_proba(P), expected, rtol=1e-12)
    # the mean row itself becomes uniform
    np.testing.assert_allclose(cal.predict_proba([cal.prior_]), [[0.5, 0.5]])


def test_platt_matches_scikit_learn_sigmoid():
    class LogOdds(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            self.classes_ = np.array([0, 1])
            return self

        def decision_function(self, X):
            return X[:, 1]

        def predict(self, X):
            return (X[:, 1] > 0).astype(int)

    rng = np.random.default_rng(3)
    P = np.column_stack([1 - (p := rng.uniform(0.05, 0.95, 300)), p])
    y = (rng.random(300) < p**2).astype(int)
    ours = PlattScaling(eps=0).fit(P, y)
    s = np.log(P[:, 1]) - np.log(P[:, 0])
    frozen = FrozenEstimator(LogOdds().fit(None, y))
    theirs = CalibratedClassifierCV(frozen, method="sigmoid").fit(np.column_stack([s, s]), y)
    sigmoid = theirs.calibrated_classifiers_[0].calibrators[0]
    assert ours.a_ == pytest.approx(-sigmoid.a_, rel=1e-5)
    assert ours.b_ == pytest.approx(-sigmoid.b_, rel=1e-5)
    np.testing.assert_allclose(ours.predict_proba(P)[:, 1], expit(ours.a_ * s + ours.b_))


def test_matrix_scaling_without_penalty_is_multinomial_logistic_regression():
    P, y = overconfident_data(n=400, seed=4)
    ours = MatrixScaling(reg_off_diagonal=0.0, reg_intercept=0.0, eps=1e-2).fit(P, y)
    Z = np.log(P + 1e-2)
    theirs = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(Z, y)
    np.testing.assert_allclose(ours.predict_proba(P), theirs.predict_proba(Z), atol=1e-5)


def test_isotonic_is_one_vs_rest_isotonic_floored_and_renormalised():
    P, y = overconfident_data(n=300, seed=5)
    cal = IsotonicCalibration(min_probability=0.01).fit(P, y)
    columns = [
        IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")
        .fit(P[:, k], y == k)
        .predict(P[:, k])
        for k in range(3)
    ]
    expected = np.maximum(np.column_stack(columns), 0.01)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(cal.predict_proba(P), expected, rtol=1e-12)
    assert cal.predict_proba(P).min() > 0 and cal.predict_proba(P).max() < 1


def test_histogram_binning_by_hand():
    P = np.array([[1.0, 0.0], [1.0, 0.0], [0.55, 0.45], [0.05, 0.95]])
    cal = HistogramBinning(n_bins=4, min_probability=0.0).fit(P, [0, 1, 0, 1])
    # class 0: bin [0.75, 1] (1.0 lands in the closed last bin) holds 1 hit in 2; bin [0.5,
    # 0.75) 1 in 1; bin [0, 0.25) 0 in 1; the empty bin [0.25, 0.5) keeps its midpoint.
    # class 1: 0.0 twice (1 hit), 0.45 (miss), 0.95 (hit); [0.5, 0.75) is empty
    np.testing.assert_allclose(cal.bin_values_[0], [0.0, 0.375, 1.0, 0.5])
    np.testing.assert_allclose(cal.bin_values_[1], [0.5, 0.0, 0.625, 1.0])


def test_histogram_binning_puts_stated_values_on_an_edge_in_the_bin_they_start():
    # Regression: np.linspace(0, 1, 11) puts its edges 0.3, 0.6 and 0.7 one ulp above
    # those values, so stated 0.3, 0.6 and 0.7 fell one bin low. Bins are [a, b), the
    # bins of verbcal.metrics (edges i / n_bins).
    P = np.array([[0.7, 0.3], [0.7, 0.3], [0.4, 0.6], [0.4, 0.6]])
    cal = HistogramBinning(n_bins=10, min_probability=0.0).fit(P, [0, 1, 1, 1])
    np.testing.assert_array_equal(cal.bin_edges_, np.arange(11) / 10)
    assert cal.bin_values_[0, 7] == 0.5 and cal.bin_values_[0, 4] == 0.0
    assert cal.bin_values_[1, 3] == 0.5 and cal.bin_values_[1, 6] == 1.0
    # The bins below hold no row and keep their midpoints.
    np.testing.assert_allclose(cal.bin_values_[[0, 1], [6, 2]], [0.65, 0.25])


def test_shrinkage_binning_by_hand():
    # Stated 0.9: right 8 times in 10; stated 0.6: right 6 times in 10.
    P = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    y = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    cal = ShrinkageBinning(prior_strength=5.0, eps=1e-3).fit(P, y)
    c = cal.temperature_scaling_.predict_proba(P)[:, 0]
    assert cal.block_counts_.tolist() == [10, 10]
    assert cal.block_correct_.tolist() == [6, 8]
    top_09 = (8 + 5 * c[:10].mean()) / (10 + 5)
    np.testing.assert_allclose(cal.predict_proba([[0.9, 0.1]]), [[top_09, 1 - top_09]])
    # an unseen stated value goes to the block of the nearest seen one
    np.testing.assert_allclose(cal.predict_proba([[0.85, 0.15]]), [[top_09, 1 - top_09]])


def test_shrinkage_binning_pools_values_whose_accuracy_is_out_of_order():
    # 0.7 is right more often than 0.8: the two become one block of 20 rows, 15 right.
    P = np.array([[0.7, 0.3]] * 10 + [[0.8, 0.2]] * 10)
    y = np.array([0] * 9 + [1] + [0] * 6 + [1] * 4)
    cal = ShrinkageBinning(prior_strength=1e-9, eps=1e-3).fit(P, y)
    assert cal.block_counts_.tolist() == [20]
    np.testing.assert_allclose(cal.predict_proba([[0.7, 0.3], [0.8, 0.2]])[:, 0], 0.75)


def test_shrinkage_binning_never_states_certainty():
    # Always right: temperature scaling sharpens until the top class rounds to 1 and
    # the last class to almost 0, and the block's accuracy is 1; yet a wrong answer
    # must still cost a finite NLL.
    P = np.tile([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]], (50, 1))
    y = np.tile([0, 2], 50)
    cal = ShrinkageBinning().fit(P, y)
    sharpened = cal.temperature_scaling_.predict_proba(P[:1])[0]
    assert sharpened[0] == 1.0 and sharpened[2] < 1e-50
    Q = cal.predict_proba(P[:1])[0]
    # the top at 1 - 1e-6; the rest to the middle class but for a 1e-6 share of it
    np.testing.assert_allclose(Q, [1 - 1e-6, 1e-6 / (1 + 1e-6), 1e-12 / (1 + 1e-6)], rtol=1e-9)


# -- invariances ---------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SUPERVISED + UNSUPERVISED)
def test_permuting_classes_permutes_the_output(cls):
    rng = np.random.default_rng(6)
    P = rng.dirichlet(np.ones(3), size=200)  # continuous: no ties in the argmax
    y = np.array([rng.choice(3, p=row) for row in P])
    perm = np.array([2, 0, 1])
    inverse = np.argsort(perm)
    Q = cls().fit(P, y).predict_proba(P)
    Q_perm = cls().fit(P[:, perm], inverse[y]).predict_proba(P[:, perm])
    np.testing.assert_allclose(Q_perm, Q[:, perm], rtol=1e-6, atol=1e-9)


def test_temperature_scaling_ignores_a_constant_shift_of_the_estimated_logits():
    P, y = overconfident_data(seed=7)
    cal = TemperatureScaling().fit(P, y)
    Z = invert_softmax(P, eps=cal.eps_)
    for shift in (0.0, -3.0, 7.5):
        expected = softmax((Z + shift) / cal.temperature_, axis=1)
        np.testing.assert_allclose(cal.predict_proba(P), expected, rtol=1e-12)


@pytest.mark.parametrize("cls", SUPERVISED)
def test_renormalize_accepts_scaled_rows(cls):
    P, y = overconfident_data(n=200, seed=8)
    Q = cls().fit(P, y).predict_proba(P)
    Q_scaled = cls(renormalize=True).fit(3 * P, y).predict_proba(3 * P)
    # equal up to the optimisers' tolerance (the renormalised rows differ in the last bit)
    np.testing.assert_allclose(Q_scaled, Q, rtol=1e-6, atol=1e-9)


# -- calibration really moves ----------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [TemperatureScaling, VectorScaling, IsotonicCalibration, ShrinkageBinning, AutoCalibrator],
)
def test_fitting_on_overconfident_rows_lowers_ece_on_new_rows(cls):
    P, y = overconfident_data(n=2000, seed=9)
    P_cal, P_test, y_cal, y_test = train_test_split(P, y, test_size=0.5, random_state=0)
    Q = cls().fit(P_cal, y_cal).predict_proba(P_test)
    assert ece(P_test, y_test) > 0.15
    assert ece(Q, y_test) < 0.5 * ece(P_test, y_test)
    assert nll(Q, y_test) < nll(P_test, y_test)


def test_outputs_stay_off_zero_and_one_on_stated_certainty():
    P, y = mirrored_rows(1.0, n_right=30, n_wrong=2)
    for cls in [TemperatureScaling, IsotonicCalibration, HistogramBinning, ShrinkageBinning]:
        Q = cls().fit(P, y).predict_proba(P)
        assert Q.min() > 0 and Q.max() < 1, cls.__name__


# -- AutoCalibrator --------------------------------------------------------------------------


class FixedRow(BaseCalibrator):
    """Predicts the same row whatever the input: a candidate whose loss is known by hand."""

    def __init__(self, row=(0.5, 0.5), renormalize=False):
        self.row = row
        self.renormalize = renormalize

    def _fit(self, P, y):
        pass

    def _predict_proba(self, P):
        return np.tile(np.asarray(self.row, dtype=np.float64), (len(P), 1))


def test_auto_calibrator_explains_its_choice():
    P, y = overconfident_data(n=400, seed=10)
    auto = AutoCalibrator().fit(P, y)
    assert list(auto.cv_scores_) == [name for name, _ in default_candidates(3)]
    assert auto.chosen_ in auto.explanation_
    assert f"{auto.cv_scores_[auto.chosen_]:.4f}" in auto.explanation_
    best = min(auto.cv_scores_.values())
    assert auto.cv_scores_[auto.chosen_] <= best + 0.05
    np.testing.assert_allclose(auto.predict_proba(P), auto.best_estimator_.predict_proba(P))


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_auto_calibrator_default_candidates_are_simplest_first_and_supported_by_the_rows(
    n_classes,
):
    binary = n_classes == 2
    candidates = default_candidates(n_classes)
    names = [name for name, _ in candidates]
    assert names[:2] == ["shrinkage_accuracy_20", "temperature"]
    shrinkage = candidates[0][1]
    assert shrinkage.toward == "accuracy" and shrinkage.prior_strength == 20.0
    assert shrinkage.temperature_prior_scale == 0.5 and candidates[1][1].prior_scale == 0.5
    assert {"vector", "matrix", "isotonic", "histogram"} < set(names)
    assert "naive_temperature" not in names
    assert ("platt" in names) is binary
    P, y = overconfident_data(n=3000, k=n_classes, seed=13)
    events = labelled_events(P, y)
    auto = AutoCalibrator().fit(P, y)
    compared = [
        name
        for name, calibrator in candidates
        if events >= EVENTS_PER_PARAMETER * fitted_parameters(calibrator, n_classes)
    ]
    assert list(auto.cv_scores_) == compared and not auto.cv_errors_
    assert set(auto.skipped_) == set(names) - set(compared)
    assert sum(auto.weights_.values()) == pytest.approx(1.0)


def test_auto_calibrator_compares_only_what_few_labels_support():
    P, y = overconfident_data(n=25, k=4, seed=3)
    auto = AutoCalibrator().fit(P, y)
    assert set(auto.cv_scores_) == {"temperature", "shrinkage_accuracy_20"}
    assert "matrix not compared: needs 200 labelled events" in auto.explanation_


def test_labelled_events_counts_the_rarer_of_right_and_wrong_answers():
    P = np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]])
    assert labelled_events(P, np.array([0, 0, 0, 1, 1])) == 1  # one wrong
    assert labelled_events(P, np.array([1, 1, 1, 1, 0])) == 0  # never right
    assert labelled_events(P, np.array([0, 0, 1, 1, 0])) == 2


@given(
    gold=st.lists(st.lists(st.floats(1e-6, 1.0), min_size=3, max_size=3), min_size=2, max_size=40)
)
@settings(max_examples=50, deadline=None)
def test_pool_weights_maximise_the_pooled_likelihood(gold):
    """EM's weights are at least as good as every vertex and a fine grid of the simplex."""
    from scipy.optimize import minimize

    G = np.array(gold)
    w = pool_weights(G)
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    best = np.log(G @ w).sum()
    reference = minimize(lambda a: -np.log(G @ softmax(a)).sum(), np.zeros(3), method="Nelder-Mead")
    assert best >= -reference.fun - 1e-6
    for vertex in np.eye(3):
        assert best >= np.log(G @ vertex).sum() - 1e-9


# 60% of the rows are class 0. Per row, "uniform" (0.5, 0.5) loses log(0.6 / 0.5) = 0.1823
# more than "frequencies" (0.6, 0.4) on class 0 and log(0.4 / 0.5) = -0.2231 on class 1:
# mean 0.0201, standard deviation 0.4055 * sqrt(0.6 * 0.4) = 0.1986. One standard error is
# 0.0281 at 50 rows (a tie) and 0.0063 at 1000 rows (no longer a tie).
@pytest.mark.parametrize(
    ("n", "first", "chosen"),
    [
        (50, "uniform", "uniform"),
        (1000, "uniform", "frequencies"),
        (50, "frequencies", "frequencies"),
        (1000, "frequencies", "frequencies"),
    ],
)
def test_auto_calibrator_one_se_rule_takes_the_simplest_within_one_standard_error(n, first, chosen):
    y = np.repeat([0, 1], [6 * n // 10, 4 * n // 10])
    rows = {"uniform": FixedRow((0.5, 0.5)), "frequencies": FixedRow((0.6, 0.4))}
    candidates = sorted(rows.items(), key=lambda pair: pair[0] != first)
    auto = AutoCalibrator(candidates=candidates, rule="one_se").fit(np.full((n, 2), 0.5), y)
    assert auto.chosen_ == chosen
    difference = auto.cv_scores_["uniform"] - auto.cv_scores_["frequencies"]
    assert difference == pytest.approx(0.6 * np.log(1.2) + 0.4 * np.log(0.8))
    assert f"Chose {chosen} (FixedRow), the simplest candidate" in auto.explanation_


@pytest.mark.parametrize("n", [100, 1000])
def test_auto_calibrator_stack_puts_all_the_weight_on_the_true_row_whatever_the_order(n):
    # the frequencies (0.6, 0.4) are the truth: no mixture with (0.5, 0.5) beats them
    y = np.repeat([0, 1], [6 * n // 10, 4 * n // 10])
    rows = {"uniform": FixedRow((0.5, 0.5)), "frequencies": FixedRow((0.6, 0.4))}
    for candidates in (list(rows.items()), list(rows.items())[::-1]):
        # the weights as fitted (anchor_rows=0: no prior on equal weights)
        auto = AutoCalibrator(candidates=candidates, anchor_rows=0).fit(np.full((n, 2), 0.5), y)
        assert auto.weights_ == {"frequencies": 1.0}
        assert isinstance(auto.best_estimator_, FixedRow)
        assert "takes all the weight" in auto.explanation_


def test_auto_calibrator_stack_pools_two_halves_of_the_truth():
    # one candidate is right on class-0 rows, the other on class-1 rows: the pool is
    # the average, which beats both, and is a LinearPool of the two refitted
    P = np.tile([[0.5, 0.5]], (200, 1))
    y = np.tile([0, 1], 100)
    candidates = [("zero", FixedRow((0.8, 0.2))), ("one", FixedRow((0.2, 0.8)))]
    auto = AutoCalibrator(candidates=candidates).fit(P, y)
    assert auto.weights_ == pytest.approx({"zero": 0.5, "one": 0.5}, abs=1e-6)
    np.testing.assert_allclose(auto.predict_proba(P[:1]), [[0.5, 0.5]], atol=1e-6)
    assert "Pooled the candidates" in auto.explanation_


@pytest.mark.parametrize(
    ("candidates", "chosen"),
    [
        ([("certain", FixedRow((1.0, 0.0))), ("uniform", FixedRow((0.5, 0.5)))], "uniform"),
        ([("certain", FixedRow((1.0, 0.0))), ("certain_too", FixedRow((1.0, 0.0)))], "certain"),
    ],
)
def test_auto_calibrator_does_not_keep_a_candidate_that_gives_the_truth_probability_zero(
    candidates, chosen
):
    P, y = overconfident_data(n=100, k=2, seed=14)
    auto = AutoCalibrator(candidates=candidates).fit(P, y)
    assert auto.cv_scores_["certain"] == np.inf
    assert auto.chosen_ == chosen
    if chosen == "uniform":  # the prior on equal weights gives it no share either
        assert "certain" not in auto.weights_


def test_auto_calibrator_prefers_the_right_model_and_records_failures():
    P, y = overconfident_data(n=400, seed=11)
    candidates = [
        ("identity", BatchCalibration(eps=0.5)),
        ("temperature", TemperatureScaling()),
        ("platt", PlattScaling()),
    ]
    auto = AutoCalibrator(candidates=candidates).fit(P, y)
    assert auto.chosen_ == "temperature"
    assert auto.cv_scores_["platt"] == np.inf
    assert "Only binary" in auto.cv_errors_["platt"]
    assert "platt failed" in auto.explanation_


def test_auto_calibrator_uses_only_its_fit_rows():
    P, y = overconfident_data(n=400, seed=12)
    auto = AutoCalibrator().fit(P[:200], y[:200])
    again = AutoCalibrator().fit(P[:200], y[:200])
    np.testing.assert_array_equal(auto.predict_proba(P[200:]), again.predict_proba(P[200:]))
    assert clone(auto).get_params()["cv"] == 5


# -- recorded LLM answers ----------------------------------------------------------------------


@pytest.mark.skipif(find_recorded_data() is None, reason="recorded llm-confidence data absent")
def test_recorded_answers_temperature_scaling_beats_uncalibrated():
    task = next(t for t in load_recorded_tasks() if t.name.startswith("sciq__gpt-4o"))
    P_cal, P_test, y_cal, y_test = train_test_split(task.P, task.y, test_size=0.5, random_state=0)
    Q = TemperatureScaling().fit(P_cal, y_cal).predict_proba(P_test)
    assert ece(Q, y_test) < ece(P_test, y_test)
    assert nll(Q, y_test) < nll(P_test, y_test)


# -- bad input ---------------------------------------------------------------------------------

GOOD_P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
GOOD_Y = np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    ("P", "y", "match"),
    [
        (GOOD_P[None], GOOD_Y, r"shape \(n_rows, n_classes\)"),
        (np.where(GOOD_P == 0.9, np.nan, GOOD_P), GOOD_Y, "row 0 contains NaN or infinity"),
        (np.where(GOOD_P == 0.9, np.inf, GOOD_P), GOOD_Y, "row 0 contains NaN or infinity"),
        ([[1.1, -0.1], [0.5, 0.5]], [0, 1], "row 0 has a negative value"),
        ([[0.9, 0.2], [0.5, 0.5]], [0, 1], "row 0 sums to 1.1.*renormalize=True"),
        (GOOD_P, [0, 1, 2, 1], r"y\[2\] = 2 is outside the class indices 0..1"),
        (GOOD_P, [0, 1, 0], "3 labels but there are 4 rows"),
        (GOOD_P, [0.5, 1, 0, 1], "continuous"),
        (GOOD_P, [1, 1, 1, 1], r"one class only \(class 1\)"),
        (GOOD_P, None, "requires y to be passed"),
        (np.ones((4, 1)), GOOD_Y, "1 feature"),
        (np.zeros((0, 2)), [], "no rows"),
    ],
)
@pytest.mark.parametrize("cls", SUPERVISED)
def test_bad_input_is_refused_clearly(cls, P, y, match):
    with pytest.raises(InvalidInputError, match=match):
        cls().fit(P, y)


@pytest.mark.parametrize("cls", SUPERVISED + UNSUPERVISED)
def test_k_mismatch_between_fit_and_predict(cls):
    cal = cls().fit(GOOD_P, GOOD_Y)
    with pytest.raises(InvalidInputError, match="X has 3 features, but .* expecting 2"):
        cal.predict_proba([[0.2, 0.3, 0.5]])


def test_renormalize_opt_in():
    rows = [[0.9, 0.2], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]
    with pytest.raises(InvalidInputError, match="sums to"):
        TemperatureScaling().fit(rows, GOOD_Y)
    TemperatureScaling(renormalize=True).fit(rows, GOOD_Y)


@pytest.mark.parametrize(
    ("estimator", "match"),
    [
        (TemperatureScaling(eps="big"), 'eps must be "auto" or a finite number >= 0'),
        (TemperatureScaling(eps=-1.0), r"eps must be .* a finite number >= 0, got -1.0"),
        (ContextualCalibration(mode="both"), 'mode must be "diagonal" or "bias"'),
        (ContextualCalibration(eps="auto"), "eps must be a finite number >= 0, got 'auto'"),
        (HistogramBinning(n_bins=0), "n_bins must be an integer >= 1"),
        (
            IsotonicCalibration(min_probability=0.7),
            r"min_probability must be a number in \[0, 0.5\), got 0.7",
        ),
        (
            ShrinkageBinning(prior_strength=0),
            'prior_strength must be "auto" or a finite number > 0, got 0',
        ),
        (ShrinkageBinning(max_bins=True), "max_bins must be an integer >= 1, got True"),
        (HistogramBinning(n_bins=np.int64(3), renormalize="yes"), "renormalize must be True or"),
        (VectorScaling(reg_intercept=-1.0), "reg_intercept must be a finite number >= 0"),
        (AutoCalibrator(cv=1), "cv must be an integer >= 2"),
        (AutoCalibrator(candidates=[]), "candidates must be a non-empty list"),
        (CalibratorChain([]), "steps must be a non-empty list"),
    ],
)
def test_bad_parameters_are_refused_clearly(estimator, match):
    P, y = overconfident_data(n=60, k=2, seed=13)
    with pytest.raises(ConfigurationError, match=match):
        estimator.fit(P, y)


@pytest.mark.parametrize(
    ("estimator", "P", "y", "match"),
    [
        (PlattScaling(), np.full((4, 3), 1 / 3), [0, 1, 2, 0], "Only binary classification"),
        (AutoCalibrator(), GOOD_P, GOOD_Y, "at least 10 rows for 5-fold"),
    ],
)
def test_methods_that_need_more(estimator, P, y, match):
    with pytest.raises(InvalidInputError, match=match):
        estimator.fit(P, y)


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TemperatureScaling().predict_proba(GOOD_P)
