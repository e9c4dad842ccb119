import numpy as np
import pytest

from verbcal import ConfigurationError, InvalidInputError, invert_softmax, softmax


def test_softmax_hand_computed():
    out = softmax([[0.0, np.log(3.0)], [1000.0, 1000.0]])
    np.testing.assert_allclose(out, [[0.25, 0.75], [0.5, 0.5]], rtol=0, atol=1e-15)


def test_softmax_accepts_minus_inf_and_rejects_all_minus_inf():
    np.testing.assert_array_equal(softmax([[0.0, -np.inf]]), [[1.0, 0.0]])
    with pytest.raises(InvalidInputError, match="all -inf"):
        softmax([[-np.inf, -np.inf]])
    with pytest.raises(InvalidInputError, match="NaN"):
        softmax([[np.nan, 0.0]])


@pytest.mark.parametrize("shift", [-50.0, 0.0, 3.7, 1e4])
def test_softmax_is_invariant_to_shifting_logits(shift):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(20, 4))
    np.testing.assert_allclose(softmax(Z + shift), softmax(Z), atol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 1e-6, 1e-3, 0.05])
def test_round_trip_equals_documented_smoothing(eps):
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(5), size=50)
    P[0] = [1.0, 0.0, 0.0, 0.0, 0.0] if eps > 0 else P[0]
    expected = (P + eps) / (1 + 5 * eps)
    np.testing.assert_allclose(softmax(invert_softmax(P, eps=eps)), expected, atol=1e-14)


def test_invert_softmax_logits_are_log_probabilities():
    Z = invert_softmax([[0.9, 0.1, 0.0]], eps=0.01)
    np.testing.assert_allclose(np.exp(Z).sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_allclose(Z[0, 0], np.log(0.91 / 1.03), atol=1e-15)


def test_one_dimensional_input_is_positive_class_probability():
    np.testing.assert_allclose(
        softmax(invert_softmax([0.8, 0.25], eps=0)), [[0.2, 0.8], [0.75, 0.25]], atol=1e-15
    )


@pytest.mark.parametrize(
    ("P", "kwargs", "match"),
    [
        ([[0.5, 0.5, 0.0]], {"eps": 0.0}, "row 0 has a probability of exactly 0"),
        ([[0.5, 0.6]], {}, "row 0 sums to 1.1"),
        ([[0.5, 0.5], [np.nan, 1.0]], {}, "row 1 contains NaN"),
        ([[0.5, 0.5], [1.5, -0.5]], {}, "row 1 has a negative value"),
        ([[[0.5, 0.5]]], {}, "shape"),
        ([["a", "b"]], {}, "array of numbers"),
        (np.zeros((0, 3)), {}, "no rows"),
        ([[1.0]], {}, "at least 2 columns"),
    ],
)
def test_invert_softmax_rejects_bad_input(P, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        invert_softmax(P, **kwargs)


def test_invert_softmax_refuses_a_negative_eps():
    # eps is a parameter, not input data: a ConfigurationError, as for every calibrator.
    with pytest.raises(ConfigurationError, match="eps must be a finite number >= 0, got -1.0"):
        invert_softmax([[0.5, 0.5]], eps=-1.0)


def test_renormalize_opt_in():
    Z = invert_softmax([[2.0, 6.0]], eps=0, renormalize=True)
    np.testing.assert_allclose(softmax(Z), [[0.25, 0.75]], atol=1e-15)
    with pytest.raises(InvalidInputError, match="sums to 0"):
        invert_softmax([[0.0, 0.0]], renormalize=True)
