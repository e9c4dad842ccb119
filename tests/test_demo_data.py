"""The demo dataset: it loads, is well formed and balanced, and its data card tells the truth."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

import verbcal.data
from verbcal.data import DEMO_LABELS, demo_dataset_path, load_demo_dataset
from verbcal.errors import ParseError
from verbcal.predictions import parse_jsonl

FIELDS = {"id", "text", "label", "difficulty", "phenomenon", "domain"}
CARD = Path(verbcal.data.__file__).with_name("DATACARD.md")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_demo_dataset()


@pytest.fixture(scope="module")
def card() -> dict[str, list[list[str]]]:
    return _card_tables(CARD.read_text(encoding="utf-8"))


def _card_tables(markdown: str) -> dict[str, list[list[str]]]:
    """Body rows of each markdown table, keyed by the heading above it."""
    tables: dict[str, list[list[str]]] = {}
    heading = ""
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            tables.setdefault(heading, []).append(cells)
    # Drop each table's header row and |---| separator.
    return {heading: table[2:] for heading, table in tables.items()}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _max_jaccard(texts: list[str]) -> float:
    word_sets = [_words(text) for text in texts]
    return max(len(a & b) / len(a | b) for a, b in itertools.combinations(word_sets, 2))


def _positive_share(rows: list[dict]) -> float:
    return sum(row["label"] == "positive" for row in rows) / len(rows)


# --- the loader ------------------------------------------------------------------------


def test_demo_labels_are_negative_then_positive():
    assert DEMO_LABELS == ("negative", "positive")


def test_dataset_path_is_the_file_inside_the_package():
    path = demo_dataset_path()
    assert path.is_file()
    assert path.parent == Path(verbcal.data.__file__).parent
    assert path.name == "demo_reviews.jsonl"


def test_load_reads_every_line_of_the_file(rows):
    # Differential check against the plainest possible reader of the same file.
    lines = demo_dataset_path().read_text(encoding="utf-8").splitlines()
    assert rows == [json.loads(line) for line in lines]
    assert len(rows) >= 300


def test_load_returns_fresh_rows_each_call(rows):
    first = load_demo_dataset()
    first[0]["label"] = "edited"
    assert load_demo_dataset()[0]["label"] == rows[0]["label"]


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"id": "r0001"}\n{"id": \n', r"demo\.jsonl, line 2: not valid JSON"),
        ('{"id": "r0001"}\n\n["r0002"]\n', r"demo\.jsonl, line 3: expected a JSON object"),
        ('"just a string"\n', r"demo\.jsonl, line 1: expected a JSON object"),
    ],
)
def test_parse_jsonl_names_the_broken_line(text, match):
    with pytest.raises(ParseError, match=match):
        list(parse_jsonl(text, source="demo.jsonl"))


def test_parse_jsonl_skips_blank_lines():
    rows = parse_jsonl('\n{"a": 1}\n  \n{"b": 2}\n', source="x")
    assert [row for _, row in rows] == [{"a": 1}, {"b": 2}]


# --- the rows --------------------------------------------------------------------------


def test_every_row_has_exactly_the_fields_as_non_empty_strings(rows):
    for row in rows:
        assert set(row) == FIELDS, row["id"]
        assert all(isinstance(value, str) and value for value in row.values()), row["id"]


def test_ids_are_unique_and_numbered_in_file_order(rows):
    assert [row["id"] for row in rows] == [f"r{i:04d}" for i in range(1, len(rows) + 1)]


def test_only_the_two_demo_labels(rows):
    assert {row["label"] for row in rows} == set(DEMO_LABELS)


def test_difficulty_is_easy_exactly_for_plain_items(rows):
    for row in rows:
        expected = "easy" if row["phenomenon"] == "plain" else "hard"
        assert row["difficulty"] == expected, row["id"]


def test_texts_are_unique_and_no_two_are_near_duplicates(rows):
    texts = [row["text"] for row in rows]
    normalised = {" ".join(sorted(_words(text))) for text in texts}
    assert len(normalised) == len(texts)
    assert _max_jaccard(texts) < 0.5


def test_texts_are_short_clean_reviews(rows):
    for row in rows:
        text = row["text"]
        assert text == text.strip() and "  " not in text, row["id"]
        assert 1 <= len(re.findall(r"[.!?]+(?=\s|$)", text)) <= 3, row["id"]
        assert 5 <= len(text.split()) <= 40, row["id"]


@pytest.mark.parametrize(
    "subset",
    [
        lambda rows: rows,
        lambda rows: [row for row in rows if row["difficulty"] == "easy"],
        lambda rows: [row for row in rows if row["difficulty"] == "hard"],
        lambda rows: rows[: len(rows) // 2],
        lambda rows: rows[len(rows) // 2 :],
    ],
    ids=["all", "easy", "hard", "first-half", "second-half"],
)
def test_labels_are_balanced_within_45_to_55_percent(rows, subset):
    assert 0.45 <= _positive_share(subset(rows)) <= 0.55


def test_about_sixty_percent_of_items_are_hard(rows):
    hard = sum(row["difficulty"] == "hard" for row in rows) / len(rows)
    assert 0.55 <= hard <= 0.70


def test_halves_split_every_phenomenon_and_difficulty_evenly(rows):
    half = len(rows) // 2
    for field in ("phenomenon", "difficulty"):
        first = Counter(row[field] for row in rows[:half])
        second = Counter(row[field] for row in rows[half:])
        for value in first | second:
            assert abs(first[value] - second[value]) <= 1, (field, value)


# --- the data card ---------------------------------------------------------------------


@pytest.mark.parametrize("field", ["difficulty", "phenomenon", "domain"])
def test_card_count_table_matches_the_file(rows, card, field):
    table = card[f"By {field}"]
    stated = {cells[0]: [int(cell) for cell in cells[1:]] for cells in table}
    actual = {}
    for value in {row[field] for row in rows} | {"total"}:
        subset = rows if value == "total" else [row for row in rows if row[field] == value]
        n_negative = sum(row["label"] == "negative" for row in subset)
        actual[value] = [n_negative, len(subset) - n_negative, len(subset)]
    assert stated == actual


def test_card_phenomenon_table_lists_every_phenomenon_with_a_real_example(rows, card):
    table = card["Phenomena"]
    assert {cells[0].strip("`") for cells in table} == {row["phenomenon"] for row in rows}
    for cells in table:
        phenomenon, example = cells[0].strip("`"), cells[2].strip('"').rstrip("…")
        texts = [row["text"] for row in rows if row["phenomenon"] == phenomenon]
        assert any(example in text for text in texts), phenomenon


def test_card_fields_table_documents_exactly_the_fields(card):
    assert {cells[0].strip("`") for cells in card["Fields"]} == FIELDS


def test_card_example_row_is_a_row_of_the_file(rows):
    line = re.search(r"^Example: `(\{.*\})`$", CARD.read_text(encoding="utf-8"), re.M)
    example = json.loads(line.group(1))
    assert example in rows


def test_card_prose_numbers_match_the_file(rows):
    text = CARD.read_text(encoding="utf-8")
    words = [len(row["text"].split()) for row in rows]
    stated = f"{min(words)}–{max(words)} words ({sum(words) / len(words):.1f} on average)"
    assert stated in text
    assert f"Jaccard index of {_max_jaccard([row['text'] for row in rows]):.3f}" in text
    assert f"{len(rows)} short English reviews" in text
