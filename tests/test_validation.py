import numpy as np
import pytest

from verbcal import InvalidInputError
from verbcal.validation import check_labels, check_probabilities


def test_tolerance_is_documented_and_applied():
    check_probabilities([[0.5, 0.5 + 5e-7]])
    with pytest.raises(InvalidInputError, match="tolerance"):
        check_probabilities([[0.5, 0.5 + 5e-6]])
    check_probabilities([[0.5, 0.51]], tolerance=0.02)


@pytest.mark.parametrize(
    ("y", "match"),
    [
        ([0, 1, 2], r"y\[2\] = 2 is outside the class indices 0..1"),
        ([0, -1, 1], r"y\[1\] = -1 is outside"),
        ([0, 1], "has 2 labels but there are 3 rows"),
        ([[0, 1, 1]], "one-dimensional"),
        (["a", "b", "a"], "integer class indices"),
        ([0.0, 1.5, 1.0], r"y\[1\] = 1.5 is not a class index"),
    ],
)
def test_check_labels_errors(y, match):
    with pytest.raises(InvalidInputError, match=match):
        check_labels(y, n_rows=3, n_classes=2)


def test_check_labels_accepts_whole_floats_and_bools():
    np.testing.assert_array_equal(check_labels([0.0, 1.0, 1.0], 3, 2), [0, 1, 1])
    np.testing.assert_array_equal(check_labels([False, True, True], 3, 2), [0, 1, 1])
    assert check_labels([0, 1, 1], 3, 2).dtype == np.int64


# ----------------------------------------------------------------------------- parameters

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from verbcal import ConfigurationError  # noqa: E402
from verbcal.validation import Interval, Options, check_param, check_params  # noqa: E402


@pytest.mark.parametrize(
    ("constraints", "value", "match"),
    [
        ([Interval("integer", 1, None)], True, "n must be an integer >= 1, got True"),
        ([Interval("integer", 1, None)], 2.0, "n must be an integer >= 1, got 2.0"),
        ([Interval("real", 0, 1, closed="neither")], 1, r"n must be a number in \(0, 1\), got 1"),
        ([Interval("real", 0, None)], float("inf"), "n must be a finite number >= 0, got inf"),
        ([Interval("real", 0, None)], float("nan"), "got nan"),
        ([Options(("a", "b", "c"))], "d", 'n must be one of "a", "b", "c", got \'d\''),
        ([None, Interval("integer", 0, 3)], 4, r"n must be None or an integer in \[0, 3\], got 4"),
        ([callable], 3, "n must be callable, got 3"),
        ([bool], 1, "n must be True or False, got 1"),
    ],
)
def test_parameter_errors_name_the_parameter_the_rule_and_the_value(constraints, value, match):
    with pytest.raises(ConfigurationError, match=match):
        check_param("n", value, constraints)


@given(
    st.one_of(st.integers(-5, 5), st.floats(-5, 5), st.booleans(), st.none(), st.text(max_size=2)),
    st.sampled_from(["both", "left", "right", "neither"]),
)
def test_an_interval_accepts_exactly_the_numbers_inside_it(value, closed):
    interval = Interval("real", -1, 2, closed=closed)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    inside = is_number and (
        (-1 < value < 2)
        or (value == -1 and closed in ("both", "left"))
        or (value == 2 and closed in ("both", "right"))
    )
    assert interval.accepts(value) == inside
    assert Interval("integer", -1, 2, closed=closed).accepts(value) == (
        inside and isinstance(value, int)
    )


def test_check_params_checks_every_constrained_name_in_order():
    constraints = {"a": [Interval("integer", 0, None)], "b": [Options(("x",))]}
    check_params({"a": np.int64(3), "b": "x", "unconstrained": object()}, constraints)
    with pytest.raises(ConfigurationError, match="^a must be"):
        check_params({"a": -1, "b": "y"}, constraints)
