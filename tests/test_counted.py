"""Metrics of counted distinct rows equal the metrics of the rows repeated; group_rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import Verbalized, verbalized

from verbcal.metrics import METRIC_NAMES, standard_metrics
from verbcal.metrics.counted import CountedRows, group_rows
from verbcal.validation import check_probabilities


def rows(data: Verbalized) -> np.ndarray:
    return check_probabilities(data.P, renormalize=data.renormalize)


@settings(max_examples=40, deadline=None)
@given(verbalized(max_rows=400), st.integers(0, 2**32 - 1), st.sampled_from([1, 10, 15]))
def test_counted_metrics_equal_the_metrics_of_the_repeated_rows(data, seed, n_bins):
    P, y = rows(data), data.y
    first, group = group_rows([*P.T, y])
    # every row equals its group's representative, and representatives differ
    np.testing.assert_array_equal(P, P[first][group])
    np.testing.assert_array_equal(y, y[first][group])
    assert len({(*P[i], y[i]) for i in first}) == len(first)
    rng = np.random.default_rng(seed)
    resample = rng.integers(0, len(y), len(y))
    counts = np.bincount(group[resample], minlength=len(first))
    got = CountedRows.of(P[first], y[first], n_bins).metrics(counts)
    assert list(got) == list(METRIC_NAMES)
    for name, fn in standard_metrics(n_bins).items():
        expected = fn(P[resample], y[resample])
        assert abs(got[name] - expected) <= 1e-12 * max(1.0, abs(expected)), name


def test_group_rows_keeps_rows_that_differ_in_any_column_apart():
    P = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    y = np.array([0, 0, 0, 1])
    first, group = group_rows([*P.T, y])
    assert group.tolist()[:2] == [group[0]] * 2
    assert len(set(group.tolist())) == 3
    assert sorted(first.tolist()) == [0, 2, 3]


def groups_by_hand(columns: list[np.ndarray]) -> tuple[list[int], list[int]]:
    """``group_rows`` in plain Python: groups numbered in the sorted order of their rows."""
    rows = list(zip(*(column.tolist() for column in columns), strict=True))
    number = {row: g for g, row in enumerate(sorted(set(rows)))}
    first: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row, i)
    return [first[row] for row in sorted(first)], [number[row] for row in rows]


@settings(max_examples=40, deadline=None)
@given(verbalized(max_rows=400))
def test_group_rows_equals_grouping_by_hand(data):
    P, y = rows(data), data.y
    first, group = group_rows([*P.T, y])
    assert (first.tolist(), group.tolist()) == groups_by_hand([*P.T, y])


@pytest.mark.parametrize("n_values", [3, 2_000])
def test_group_rows_across_blocks_equals_grouping_by_hand(n_values):
    # more rows than two blocks of group_rows (65,536 rows), coarse or many distinct values
    rng = np.random.default_rng(n_values)
    n = 150_007
    columns = [np.round(rng.integers(0, n_values, n) / n_values, 4) for _ in range(2)]
    columns.append(rng.integers(0, 3, n))
    columns[1][::1_000] = -0.0  # equal to 0.0: the same group
    first, group = group_rows(columns)
    assert (first.tolist(), group.tolist()) == groups_by_hand(columns)
    assert first.dtype == group.dtype == np.int64


def test_counts_of_zero_leave_a_row_out():
    P = np.array([[0.9, 0.1], [0.3, 0.7]])
    counted = CountedRows.of(P, np.array([0, 0]), 10)
    assert counted.metrics(np.array([3, 0]))["accuracy"] == 1.0
    assert counted.metrics(np.array([0, 2]))["accuracy"] == 0.0
    assert counted.metrics(np.array([1, 1]))["brier"] == pytest.approx(0.5, abs=1e-15)
