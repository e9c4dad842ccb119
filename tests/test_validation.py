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
