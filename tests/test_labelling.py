"""suggest_labels and ``verbcal suggest-labels``: which items to label first."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verbcal import ConfigurationError, InvalidInputError
from verbcal.cli import main
from verbcal.labelling import suggest_labels
from verbcal.predictions import Prediction, write_predictions


@given(
    n=st.integers(1, 300),
    k=st.integers(2, 5),
    budget=st.integers(1, 400),
    coarse=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=60, deadline=None)
def test_suggestions_are_distinct_rows_within_the_budget(n, k, budget, coarse, seed):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(k), size=n)
    if coarse:  # verbalized answers: a handful of stated values
        P = np.round(P * 10) / 10 + 1e-3
    chosen = suggest_labels(P, budget, random_state=seed)
    assert len(chosen) == min(budget, n) == len(set(chosen.tolist()))
    assert chosen.min() >= 0 and chosen.max() < n
    np.testing.assert_array_equal(chosen, suggest_labels(P, budget, random_state=seed))


def test_every_stratum_gets_a_label_and_hesitant_answers_get_more_than_their_share():
    # 3 strata: class 0 stated at 0.99 (800 rows), class 0 at 0.6 (100), class 1 at 0.7 (100)
    P = np.array([[0.99, 0.01]] * 800 + [[0.6, 0.4]] * 100 + [[0.3, 0.7]] * 100)
    chosen = suggest_labels(P, 20)
    stated = P[chosen].max(axis=1)
    counts = {value: int((stated == value).sum()) for value in (0.99, 0.6, 0.7)}
    assert all(count >= 1 for count in counts.values())
    # random choice would give 16 / 2 / 2; the spread sqrt(c (1 - c)) shifts it
    assert counts[0.6] + counts[0.7] > 4 and sum(counts.values()) == 20


def test_more_distinct_values_than_levels_are_binned():
    rng = np.random.default_rng(0)
    top = rng.uniform(0.5, 1.0, size=500)
    P = np.column_stack([top, 1 - top])
    chosen = suggest_labels(P, 40)
    # the least confident fifth of the rows gets more than a fifth of the labels
    assert (P[chosen, 0] < np.quantile(top, 0.2)).sum() > 8


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_budget_must_be_a_positive_integer(budget):
    with pytest.raises(ConfigurationError, match="budget must be an integer >= 1"):
        suggest_labels([[0.5, 0.5]], budget)


def test_bad_rows_are_refused_with_their_row_named():
    with pytest.raises(InvalidInputError, match="row 1 has a negative value"):
        suggest_labels([[0.5, 0.5], [-0.1, 1.1]], 1)


def write_file(path, labelled: int, unlabelled: int):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(labelled + unlabelled):
        p = float(rng.choice([0.6, 0.9, 1.0]))
        rows.append(
            Prediction(
                id=f"item-{i}",
                labels=["yes", "no"],
                probs={"yes": p, "no": round(1 - p, 10)},
                status="ok",
                label=("yes" if i % 3 else "no") if i < labelled else None,
            )
        )
    write_predictions(path, rows)


def test_cli_writes_ids_of_unlabelled_items_only(tmp_path, capsys):
    preds, out = tmp_path / "preds.jsonl", tmp_path / "ids.txt"
    write_file(preds, labelled=30, unlabelled=70)
    assert main(["suggest-labels", "--preds", str(preds), "--budget", "25", "--out", str(out)]) == 0
    ids = out.read_text().split()
    assert len(ids) == len(set(ids)) == 25
    assert all(int(i.removeprefix("item-")) >= 30 for i in ids)
    assert "wrote 25 of 70 unlabelled item ids" in capsys.readouterr().out
    # a budget beyond the pool: every unlabelled item
    main(["suggest-labels", "--preds", str(preds), "--budget", "500", "--out", str(out)])
    assert len(out.read_text().split()) == 70


def test_cli_with_nothing_left_to_label_says_so(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    write_file(preds, labelled=10, unlabelled=0)
    code = main(
        ["suggest-labels", "--preds", str(preds), "--budget", "5", "--out", str(tmp_path / "o")]
    )
    assert code == 2
    assert "no parsed item is without a gold label" in capsys.readouterr().err


def test_cli_refuses_a_zero_budget(tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    write_file(preds, labelled=0, unlabelled=5)
    with pytest.raises(SystemExit):
        main(["suggest-labels", "--preds", str(preds), "--budget", "0", "--out", "x"])
    assert "must be an integer >= 1, got 0" in capsys.readouterr().err


def test_a_long_command_says_it_is_still_working(tmp_path, capsys, monkeypatch):
    import verbcal.cli

    preds, out = tmp_path / "preds.jsonl", tmp_path / "ids.txt"
    write_file(preds, labelled=0, unlabelled=3000)
    monkeypatch.setattr(verbcal.cli, "PROGRESS_AFTER", 0.001)
    monkeypatch.setenv("VERBCAL_PROGRESS", "1")
    assert main(["suggest-labels", "--preds", str(preds), "--budget", "5", "--out", str(out)]) == 0
    assert "verbcal suggest-labels: still working (0 s)" in capsys.readouterr().err
    # without a terminal or VERBCAL_PROGRESS=1: results only
    monkeypatch.delenv("VERBCAL_PROGRESS")
    assert main(["suggest-labels", "--preds", str(preds), "--budget", "5", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
