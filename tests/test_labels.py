"""One label normalisation and alias table for the parser, the templates and token probabilities."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verbcal import ConfigurationError
from verbcal.elicit.parse import parse_verbalized
from verbcal.elicit.templates import load_template
from verbcal.elicit.token_probs import label_probabilities_from_logprobs
from verbcal.labels import LabelSet, check_label_names, normalise_label

YES_NO = LabelSet(["True", "False"], aliases={"Yes": "True", "No": "False"})


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("True", 0),
        (" true. ", 0),
        ('"FALSE"', 1),
        ("**Yes**", 0),
        ("no", 1),
        (True, 0),
        (False, 1),
        ("maybe", None),
        ("", None),
        (None, None),
        (0.5, None),
    ],
)
def test_match_reads_case_punctuation_and_aliases(written, expected):
    assert YES_NO.match(written) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (" Yes", 0),
        ("Fal", 1),  # a prefix of one label
        ("N", 1),  # a prefix of the alias "No" only
        (" ", None),
        ("{", None),
        ("Maybe", None),
    ],
)
def test_match_token_reads_prefixes_of_labels_and_aliases(token, expected):
    assert YES_NO.match_token(token) == expected


def test_a_prefix_shared_by_two_labels_names_neither():
    labels = LabelSet(["positive", "negative", "neutral"])
    assert labels.match_token("ne") is None
    assert labels.match_token("neg") == 1
    assert LabelSet(["A", "AB"]).match_token("A") == 0  # a whole label beats a prefix


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("True, with some caveats", 0),
        ("False, the character survives in the novel", 1),
        ("True, but only in some states", 0),
        ("Yes - mostly", 0),
        ("(False) because of the second clause", 1),
        ("True or False", None),
        ("True/False", None),
        ("False, and True in some cases", None),
        ("True for older generations, False for the latest generation", None),
        ("False for many nationalities, but Yes for some", None),  # an alias names True
        ("False, the claim that it is true is a myth", 1),  # a word, not the label
        ("Not true", None),
        ("Untrue", None),
        ("Truest of all", None),
        ("None", None),
        ("", None),
    ],
)
def test_match_start_reads_qualified_answers(answer, expected):
    assert YES_NO.match_start(answer) == expected


def test_one_letter_labels_need_punctuation_before_a_qualification():
    letters = LabelSet(["A", "B", "C", "D"])
    assert letters.match_start("B) Paris, the capital") == 1
    assert letters.match_start("C. because oxidants react") == 2
    assert letters.match_start("A lot of evidence points to C") is None
    assert letters.match_start("B Paris") is None


@pytest.mark.parametrize(
    ("labels", "aliases", "match"),
    [
        (["A", "a"], None, "cannot be told apart from label 'A'"),
        (["A"], None, "need at least 2 labels"),
        ("AB", None, "labels must be a list of strings"),
        (["A", " "], None, "label 1 must be a non-empty string"),
        (["A", "B"], {"x": "C"}, "alias 'x' points to 'C'"),
        (["A", "B"], {"b": "A"}, "alias 'b' cannot be told apart from label 'B'"),
        (["A", "B"], ["x"], "aliases must be a mapping"),
    ],
)
def test_bad_label_sets_are_refused(labels, aliases, match):
    with pytest.raises(ConfigurationError, match=match):
        LabelSet(labels, aliases)
    with pytest.raises(ConfigurationError, match=match):
        check_label_names(labels, aliases)


def test_every_reader_agrees_on_an_alias():
    """The parser, the token probabilities and the template label check use one table."""
    answer = '{"Answer": "Yes", "Confidence": 0.8}'
    assert parse_verbalized(answer, YES_NO).probs.tolist() == pytest.approx([0.8, 0.2])
    alternatives = [{"token": " Yes", "logprob": math.log(0.6)}, {"token": "No", "logprob": -2.0}]
    probs, _ = label_probabilities_from_logprobs(alternatives, YES_NO)
    assert probs is not None and probs["True"] > 0.5
    with pytest.raises(ConfigurationError, match="clashes with the answer key 'Answer'"):
        load_template("top1").render("x", ["answer.", "other"])


def test_parse_refuses_aliases_given_twice():
    with pytest.raises(ConfigurationError, match="inside the LabelSet"):
        parse_verbalized("{}", YES_NO, aliases={"Yes": "True"})


@given(st.text(max_size=30))
def test_normalise_label_is_idempotent_and_matching_never_raises(text):
    once = normalise_label(text)
    assert normalise_label(once) == once
    assert YES_NO.match(text) in (None, 0, 1)
    assert YES_NO.match_token(text) in (None, 0, 1)
    assert YES_NO.match_start(text) in (None, 0, 1)
