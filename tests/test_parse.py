import doctest
import json
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from recorded import load_recorded_task, stated_distribution

import verbcal.elicit.parse
from verbcal import ConfigurationError
from verbcal.elicit.parse import parse_many, parse_verbalized
from verbcal.labels import LabelSet, check_label_names

BOOL = ["True", "False"]
ABCD = ["A", "B", "C", "D"]


def assert_valid(result, k):
    """The contract of every result, whatever the input."""
    assert result.status in ("ok", "repaired", "failed")
    if result.probs is None:
        assert result.status == "failed"
        assert len(result.detail) == 1 and result.detail[0]
        return
    assert result.status != "failed"
    assert (result.status == "ok") == (result.detail == ())
    assert result.probs.shape == (k,)
    assert np.isfinite(result.probs).all()
    assert (result.probs >= 0).all()
    assert abs(result.probs.sum() - 1.0) < 1e-9


# --------------------------------------------------------------------------- hand-written cases

OK_CASES = [
    ('{"A": 0.1, "B": 0.2, "C": 0.3, "D": 0.4}', ABCD, [0.1, 0.2, 0.3, 0.4]),
    ('{"Answer": "C", "A": 0.05, "B": 0.05, "C": 0.85, "D": 0.05}', ABCD, [0.05, 0.05, 0.85, 0.05]),
    ('```json\n{"A": 0.7, "B": 0.1, "C": 0.1, "D": 0.1}\n```', ABCD, [0.7, 0.1, 0.1, 0.1]),
    (
        'Sure! Here it is: {"A": 0.7, "B": 0.1, "C": 0.1, "D": 0.1} Hope it helps.',
        ABCD,
        [0.7, 0.1, 0.1, 0.1],
    ),
    ('{"Reasoning": "a set {} is empty", "Answer": "True", "Confidence": 0.9}', BOOL, [0.9, 0.1]),
    # answer + confidence: the rest is spread evenly over the other labels
    ('{"Answer": "C", "Confidence": 0.7}', ABCD, [0.1, 0.1, 0.7, 0.1]),
    ('{"Answer": "False", "Confidence": 1.0}', BOOL, [0.0, 1.0]),
    # label case, whitespace and punctuation
    ('{" a ": 0.25, "b.": 0.25, "(C)": 0.25, "d": 0.25}', ABCD, [0.25] * 4),
    ('{"answer": "true.", "confidence": 0.6}', BOOL, [0.6, 0.4]),
    # JSON booleans for a True/False label set
    ('{"Answer": false, "Confidence": 0.8}', BOOL, [0.2, 0.8]),
    # a distribution in a nested object
    ('{"Answer": "B", "probabilities": {"A": 0.3, "B": 0.7}}', ["A", "B"], [0.3, 0.7]),
    # a sum within the tolerance is ok (and still renormalised exactly)
    ('{"A": 0.33, "B": 0.33, "C": 0.33}', ["A", "B", "C"], [1 / 3] * 3),
]


@pytest.mark.parametrize(("text", "labels", "expected"), OK_CASES)
def test_reads_well_formed_answers_as_ok(text, labels, expected):
    result = parse_verbalized(text, labels)
    assert result.status == "ok", result.detail
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12)


REPAIR_CASES = [
    # (text, labels, expected probabilities, a repair that must be reported)
    ('{"A": "0.6", "B": "0.4"}', ["A", "B"], [0.6, 0.4], "numbers in quotes"),
    ('{"A": "60%", "B": "40%"}', ["A", "B"], [0.6, 0.4], "percent signs"),
    ('{"A": 60, "B": 30, "C": 10}', ["A", "B", "C"], [0.6, 0.3, 0.1], "percentages"),
    ('{"A": 62.5, "B": 37.5}', ["A", "B"], [0.625, 0.375], "percentages"),
    ('{"Answer": "B", "Confidence": 90}', ["A", "B"], [0.1, 0.9], "percentages"),
    ('{"Answer": "B", "Confidence": "90%"}', ["A", "B"], [0.1, 0.9], "percent signs"),
    ("{'A': 0.2, 'B': 0.8}", ["A", "B"], [0.2, 0.8], "single-quoted strings"),
    ('{"A": 0.2, "B": 0.8,}', ["A", "B"], [0.2, 0.8], "trailing commas"),
    ("{A: 0.2, B: 0.8}", ["A", "B"], [0.2, 0.8], "unquoted keys"),
    ("{Answer: B, Confidence: 0.8}", ["A", "B"], [0.2, 0.8], "unquoted string values"),
    ("{'Answer': True, 'Confidence': 0.7}", BOOL, [0.7, 0.3], "Python literals"),
    (
        '{"Note": "X:\\No Way", "Answer": "True", "Confidence": 0.95}',
        BOOL,
        [0.95, 0.05],
        "invalid backslash escapes",
    ),
    (
        '{"Reasoning": "he is 6\'0", not 5\'9"", "Answer": "False", "Confidence": 0.9}',
        BOOL,
        [0.1, 0.9],
        "unescaped quotes",
    ),
    (
        '{"Reasoning": "line one\nline two", "A": 0.5, "B": 0.5}',
        ["A", "B"],
        [0.5, 0.5],
        "line breaks",
    ),
    # missing labels share the remainder evenly
    ('{"A": 0.6, "B": 0.2}', ABCD, [0.6, 0.2, 0.1, 0.1], "missing labels 'C', 'D'"),
    ('{"A": 0.7, "B": 0.5}', ["A", "B", "C"], [0.7 / 1.2, 0.5 / 1.2, 0.0], "remainder 0"),
    # sums off 1 beyond the tolerance
    ('{"A": 0.5, "B": 0.3}', ["A", "B"], [0.625, 0.375], "summed to 0.8; renormalised"),
    ('{"A": 0.9, "B": 0.9}', ["A", "B"], [0.5, 0.5], "summed to 1.8"),
    # several answers: the last valid one wins (models correct themselves)
    (
        '{"A": 0, "B": 0} Wait, correction: {"A": 0.3, "B": 0.7}',
        ["A", "B"],
        [0.3, 0.7],
        "2 answers",
    ),
    # plain text, no JSON
    ("Answer: B, confidence 90%", ["A", "B"], [0.1, 0.9], "plain text"),
    ("Answer: True, with some caveats\nConfidence: 0.7", BOOL, [0.7, 0.3], "plain text"),
    ("The answer is **C** with probability 0.4", ["A", "B", "C"], [0.3, 0.3, 0.4], "plain text"),
    ("A: 0.7\nB: 0.3", ["A", "B"], [0.7, 0.3], "plain text"),
]


@pytest.mark.parametrize(("text", "labels", "expected", "repair"), REPAIR_CASES)
def test_repairs_are_made_and_reported(text, labels, expected, repair):
    result = parse_verbalized(text, labels)
    assert result.status == "repaired"
    assert any(repair in what for what in result.detail), result.detail
    if '"' not in text and "'" not in text:
        assert "numbers in quotes" not in result.detail
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "aliases", "expected"),
    [
        ('{"Answer": "Yes", "Confidence": 0.8}', {"Yes": "True", "No": "False"}, [0.8, 0.2]),
        ('{"yes": 0.3, "no": 0.7}', {"Yes": "True", "No": "False"}, [0.3, 0.7]),
        ('{"Answer": "T", "Confidence": 0.6}', {"T": "True", "F": "False"}, [0.6, 0.4]),
    ],
)
def test_aliases_map_to_labels(text, aliases, expected):
    result = parse_verbalized(text, BOOL, aliases=aliases)
    assert result.status == "ok"
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12)
    assert parse_verbalized(text, BOOL).status == "failed"


REJECTIONS = [
    # (text, labels, pattern the reason must match)
    ('{"A": -0.2, "B": 1.2}', ["A", "B"], r"value for 'A' is -0.2, negative"),
    ('{"A": NaN, "B": 0.5}', ["A", "B"], r"value for 'A' is nan, not a finite"),
    ('{"A": 0.5, "B": 150}', ["A", "B"], r"value for 'B' is 150, above 1"),
    ('{"A": 0.5, "B": 50}', ["A", "B"], r"value for 'B' is 50, above 1"),
    ('{"A": "120%", "B": 0.1}', ["A", "B"], r"value for 'A' is 120, above 1"),
    ('{"A": "high", "B": "low"}', ["A", "B"], r"value for 'A' is 'high', not a number"),
    ('{"A": true, "B": false}', ["A", "B"], r"value for 'A' is true, not a number"),
    ('{"A": 0.0, "B": 0.0}', ["A", "B"], "sum to 0"),
    ('{"A": 0.5, "a": 0.5}', ["A", "B"], "label 'A' is given more than once"),
    ('{"Answer": "E", "Confidence": 0.9}', ABCD, r"answer 'E' is not one of the labels"),
    ('{"Answer": "Unknown", "Confidence": "0.0"}', BOOL, r"answer 'Unknown' is not one of"),
    ('{"Answer": "True or False", "Confidence": 0.8}', BOOL, "not one of the labels"),
    ('{"Answer": "B"}', ABCD, r"answer 'B' comes with no probability"),
    ('{"Answer": "B", "Confidence": 1.5}', ABCD, r"confidence is 1.5, above 1"),
    ('{"Answer": "B", "Confidence": -0.1}', ABCD, r"confidence is -0.1, negative"),
    ('{"Reasoning": "The passage says", "Answer": "C", "A": "0.2", "B": "0.', ABCD, "truncated"),
    ("", ABCD, "empty"),
    ("   \n", ABCD, "empty"),
    ("I cannot help with that.", ABCD, "no probabilities"),
    ('{"Reasoning": "no idea"}', ABCD, "no probabilities"),
    ("Answer: B", ["A", "B"], "no probability or confidence"),
]


@pytest.mark.parametrize(("text", "labels", "reason"), REJECTIONS)
def test_rejections_fail_with_the_reason(text, labels, reason):
    result = parse_verbalized(text, labels)
    assert result.status == "failed"
    assert result.probs is None
    assert re.search(reason, result.detail[0]), result.detail


# ------------------------------------------------------------ issue 9: reading like a careful human
# Each answer is written as models write them: reasoning first, then the answer.

QUALIFIED = [
    (
        '{"Reasoning": "Most jurisdictions allow it, but a few restrict the practice, so the '
        'statement holds in general.", "Answer": "True, with some caveats", "Confidence": 0.7}',
        [0.7, 0.3],
        "'True, with some caveats' read as 'True'",
    ),
    (
        "Let me think. In the film the character dies, but the question is about the book.\n\n"
        '{"Reasoning": "The question asks about the novel, not the film.", "Answer": "False, the '
        'character survives in the novel and only dies in the film", "Confidence": 0.85}',
        [0.15, 0.85],
        "read as 'False'",
    ),
    (
        '```json\n{"Reasoning": "Only some states have adopted the rule; federal law is '
        'silent.", "Answer": "True, but only in some states", "Confidence": "80%"}\n```',
        [0.8, 0.2],
        "'True, but only in some states' read as 'True'",
    ),
]


@pytest.mark.parametrize(("text", "expected", "repair"), QUALIFIED)
def test_a_qualified_answer_is_the_label_it_starts_with(text, expected, repair):
    result = parse_verbalized(text, BOOL)
    assert result.status == "repaired", result.detail
    assert any(repair in what for what in result.detail), result.detail
    np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12)


MC_REASONING = (
    '{"Reasoning": "Oxidants damage cells and antioxidants protect them; the passage says the '
    'cells were protected, which points to B, though C is possible.", "Answer": "B", '
)


@pytest.mark.parametrize(
    "ending",
    [
        '"A": 0.05, "B": 0.75, "C": 0.15, "D": 0.05',  # cut right after the last number
        '"A": 0.05, "B": 0.75, "C": 0.15, "D": 0.05,\n',
        '"A": 0.05, "B": 0.75, "C": 0.15, "D": "0.05"',
        '"A": 0.05, "B": 0.75, "C": 0.15, "D": 0.05, "Explanation": "The cells were prot',
        '"A": 5, "B": 75, "C": 15, "D": 5',
    ],
)
def test_an_answer_cut_off_after_every_label_has_its_number_is_read(ending):
    result = parse_verbalized(MC_REASONING + ending, ABCD)
    assert result.status == "repaired", result.detail
    assert any("cut off after" in what for what in result.detail), result.detail
    np.testing.assert_allclose(result.probs, [0.05, 0.75, 0.15, 0.05], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        # two decimals are taken as written, even when the stated values do not sum to 1
        ('"A": 0.05, "B": 0.70, "C": 0.15, "D": 0.05', [0.05, 0.70, 0.15, 0.05]),
        ('"A": 0.1, "B": 0.6, "C": 0.2, "D": 0.1', [0.1, 0.6, 0.2, 0.1]),  # sums to 1
    ],
)
def test_a_cut_off_last_number_is_read_when_it_cannot_be_longer(ending, expected):
    result = parse_verbalized(MC_REASONING + ending, ABCD)
    assert result.status == "repaired", result.detail
    np.testing.assert_allclose(result.probs, np.array(expected) / sum(expected), atol=1e-12)


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ('"A": 0.05, "B": 0.75, "C": 0.15, "D": "0.', "ends before the value for 'D'"),
        ('"A": 0.05, "B": 0.75, "C": 0.15, "D": 0.', "ends before the value for 'D'"),
        ('"A": 0.05, "B": 0.75, "C": 0.15, "D', "ends before the value for 'D'"),
        ('"A": 0.05, "B": 0.75, "C": 0.1', "ends before the value for 'D'"),
        # "0.0" may be the start of "0.05": the stated values do not reach 1, so it is not read
        ('"A": 0.05, "B": 0.75, "C": 0.15, "D": 0.0', r"last value may be cut off .*sum to 0.95"),
        ('"A": 0.05, "B": 0.75, "C": 0.1', "ends before the value for 'D'"),
        ('"A": 0.1, "B": 0.6, "C": 0.1, "D": 0.1', r"last value may be cut off .*sum to 0.9"),
        ('"A": 5, "B": 75, "C": 15, "D": 0', r"last value may be cut off"),
        ('"A": 0.05, "B": 0.', "ends before the values for 'B', 'C', 'D'"),
    ],
)
def test_an_answer_cut_inside_a_number_fails_as_truncated(ending, reason):
    result = parse_verbalized(MC_REASONING + ending, ABCD)
    assert result.status == "failed"
    assert "truncated" in result.detail[0]
    assert re.search(reason, result.detail[0]), result.detail


TOP1_REASONING = '{"Reasoning": "The treaty was signed in 1648, which settles it.", '


@pytest.mark.parametrize(
    ("ending", "expected", "reason"),
    [
        ('"Answer": "True", "Confidence": 0.9, "Note": "the date is', [0.9, 0.1], None),
        ('"Answer": "True", "Confidence": 0.85', [0.85, 0.15], None),
        ('"Answer": "True", "Confidence": 0.9', None, "confidence may be cut off"),
        ('"Answer": "True", "Confidence": 0.', None, "ends before the confidence"),
        ('"Answer": "True", "Conf', None, "ends before the confidence"),
        ('"Answer": "Tr', None, "truncated"),
    ],
)
def test_a_cut_off_answer_with_a_confidence(ending, expected, reason):
    result = parse_verbalized(TOP1_REASONING + ending, BOOL)
    if expected is None:
        assert result.status == "failed"
        assert "truncated" in result.detail[0] and reason in result.detail[0], result.detail
    else:
        assert result.status == "repaired", result.detail
        np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "labels", "reason"),
    [
        (
            '{"Reasoning": "The passage does not support any option.", "Answer": "A", '
            '"A": 0, "B": 0, "C": 0, "D": 0}',
            ABCD,
            "the stated probabilities sum to 0",
        ),
        (
            '{"Reasoning": "No option fits.", "Answer": "A", "A": "0%", "B": "0%", "C": "0%", '
            '"D": "0%"}',
            ABCD,
            "the stated probabilities sum to 0",
        ),
        (
            '{"Reasoning": "None of the options fit the description.", "Answer": "None", '
            '"Confidence": 0.9}',
            ABCD,
            r"the answer 'None' is not one of the labels \['A', 'B', 'C', 'D'\]",
        ),
        (
            '{"Reasoning": "I am not sure which applies.", "Answer": "", "Confidence": 0.5}',
            BOOL,
            "the answer is empty",
        ),
        (
            '{"Reasoning": "I am not sure which applies.", "Answer": null, "Confidence": 0.5}',
            BOOL,
            "the answer is empty",
        ),
    ],
)
def test_zero_distributions_and_answers_outside_the_labels_fail_with_the_reason(
    text, labels, reason
):
    result = parse_verbalized(text, labels)
    assert result.status == "failed" and result.probs is None
    assert re.search(reason, result.detail[0]), result.detail


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"A": 1' + "0" * 400 + ', "B": 0.5}', r"value for 'A' is inf, not a finite"),
        ('{"A": "1' + "0" * 5000 + '", "B": 0.5}', r"value for 'A' is inf, not a finite"),
        ("{'A': 1" + "0" * 5000 + ", 'B': 0.5}", r"value for 'A' is inf, not a finite"),
        ('{"x": ' * 3000 + "1" + "}" * 3000, "no probabilities"),
        ("[" * 5000, "no probabilities"),
        ("{" * 5000, "truncated"),
    ],
)
def test_pathological_texts_fail_cleanly(text, reason):
    result = parse_verbalized(text, ["A", "B"])
    assert result.status == "failed"
    assert re.search(reason, result.detail[0]), result.detail


@pytest.mark.parametrize("depth", [1, 50, 500])
def test_deeply_nested_distributions_are_found(depth):
    text = '{"x": ' * depth + '{"A": 0.25, "B": 0.75}' + "}" * depth
    assert parse_verbalized(text, ["A", "B"]).probs.tolist() == [0.25, 0.75]


def test_labels_with_spaces_match_underscores_and_any_iterable_of_labels():
    labels = np.array(["label 0", "label 1"])
    for text in ("label_0: 0.6, label_1: 0.4", '{"LABEL-0": 0.6, "label 1": 0.4}'):
        np.testing.assert_allclose(parse_verbalized(text, labels).probs, [0.6, 0.4], atol=1e-15)


@pytest.mark.parametrize("text", [None, 0.7, b'{"A": 1.0}', ["A"], {"A": 1.0}])
def test_non_text_answers_fail_without_raising(text):
    result = parse_verbalized(text, ["A", "B"])
    assert result.status == "failed"
    assert f"is {type(text).__name__}, not text" in result.detail[0]


@pytest.mark.parametrize(
    ("labels", "aliases", "tolerance", "match"),
    [
        (["A"], None, 0.01, "at least 2 labels"),
        ("AB", None, 0.01, "list of strings"),
        (["A", ""], None, 0.01, "label 1 must be a non-empty string"),
        (["A", 3], None, 0.01, "label 1 must be a non-empty string"),
        (["yes", "Yes."], None, 0.01, "label 'Yes.' cannot be told apart from label 'yes'"),
        (BOOL, {"Yes": "Maybe"}, 0.01, "alias 'Yes' points to 'Maybe'"),
        (BOOL, {"false": "True"}, 0.01, "alias 'false' cannot be told apart"),
        (BOOL, [("Yes", "True")], 0.01, "aliases must be a mapping"),
        (BOOL, None, 1.5, "tolerance must be a number in"),
        (BOOL, None, "0.1", "tolerance must be a number in"),
    ],
)
def test_bad_configuration_raises(labels, aliases, tolerance, match):
    with pytest.raises(ConfigurationError, match=match):
        parse_verbalized('{"True": 1.0}', labels, aliases=aliases, tolerance=tolerance)


def test_tolerance_decides_between_ok_and_repaired():
    text = '{"A": 0.5, "B": 0.45}'
    assert parse_verbalized(text, ["A", "B"], tolerance=0.1).status == "ok"
    strict = parse_verbalized(text, ["A", "B"], tolerance=0.01)
    assert strict.status == "repaired"
    np.testing.assert_allclose(strict.probs, [0.5 / 0.95, 0.45 / 0.95], rtol=0, atol=1e-15)


def test_relabelling_permutes_the_probabilities():
    text = '{"cat": 0.5, "dog": 0.3, "eel": 0.2}'
    labels = ["cat", "dog", "eel"]
    base = parse_verbalized(text, labels).probs
    for order in ([2, 0, 1], [1, 2, 0], [2, 1, 0]):
        permuted = parse_verbalized(text, [labels[i] for i in order]).probs
        np.testing.assert_array_equal(permuted, base[order])


def test_parse_many_stacks_rows_with_nan_for_failures():
    P, results = parse_many(['{"A": 0.3, "B": 0.7}', None, "A: 0.9, B: 0.1"], ["A", "B"])
    assert [r.status for r in results] == ["ok", "failed", "repaired"]
    np.testing.assert_array_equal(P[[0, 2]], [[0.3, 0.7], [0.9, 0.1]])
    assert np.isnan(P[1]).all()


def test_check_label_names():
    assert check_label_names(("x", "y")) == ["x", "y"]
    with pytest.raises(ConfigurationError, match="cannot be told apart"):
        check_label_names(["A", "a"])


def test_docstring_examples_run():
    assert doctest.testmod(verbcal.elicit.parse).failed == 0


# --------------------------------------------------------------------------- properties

LABEL_SETS = st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True)


def usable(labels):
    try:
        check_label_names(labels)
    except ConfigurationError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), labels=LABEL_SETS)
def test_arbitrary_text_never_raises(text, labels):
    assume(usable(labels))
    assert_valid(parse_verbalized(text, labels), len(labels))


FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"',
        "'",
        ":",
        ",",
        " ",
        "\n",
        "```json",
        "\\",
        "A",
        "B",
        "True",
        "false",
        "None",
        "null",
        "NaN",
        "1e400",
        "-1",
        "0.5",
        "80",
        "80%",
        "0.",
        '"Answer"',
        '"Confidence"',
        "Answer:",
        "confidence",
        '"A": ',
        '"B": ',
        "Yes",
        '"True, with some caveats"',
        ", but only in some states",
        '"D": "0.',
        '"D": 0.05',
        '"C": 0.15, ',
        '"Reasoning": "',
    ]
)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(FRAGMENTS, max_size=40))
def test_arbitrary_jsonish_text_never_raises(parts):
    text = "".join(parts)
    for labels, aliases in ((["A", "B"], None), (BOOL, {"Yes": "True"})):
        assert_valid(parse_verbalized(text, labels, aliases=aliases), 2)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    labels=LABEL_SETS,
    values=st.lists(JSON_VALUES, min_size=1, max_size=6),
    extra=st.dictionaries(st.sampled_from(["Answer", "Confidence", "x"]), JSON_VALUES),
)
def test_label_keyed_objects_never_raise(labels, values, extra):
    assume(usable(labels))
    obj = dict(zip(labels, values, strict=False)) | extra
    assert_valid(parse_verbalized(json.dumps(obj), labels), len(labels))


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6).filter(lambda w: sum(w) > 0.1),
    wrap=st.sampled_from(["{}", "```json\n{}\n```", "Here you go: {} -- done", "{}\n\n{{}}"]),
)
def test_stated_distributions_round_trip(weights, wrap):
    labels = [f"label {i}" for i in range(len(weights))]
    probs = np.array(weights) / sum(weights)
    text = wrap.replace("{}", json.dumps(dict(zip(labels, probs.tolist(), strict=True))), 1)
    result = parse_verbalized(text, labels)
    assert result.status == "ok", result.detail
    np.testing.assert_allclose(result.probs, probs, rtol=0, atol=1e-12)


@st.composite
def full_answers(draw):
    """A reasoning-first distribution answer on a 0.05 grid summing to 1, and its labels."""
    k = draw(st.integers(2, 6))
    labels = draw(st.sampled_from([list("ABCDEF"[:k]), [f"class {i}" for i in range(k)]]))
    cuts = sorted(draw(st.lists(st.integers(0, 20), min_size=k - 1, max_size=k - 1)))
    twentieths = np.diff([0, *cuts, 20])
    quote = draw(st.sampled_from(["", '"']))
    values = ", ".join(
        f"{json.dumps(label)}: {quote}{n / 20:g}{quote}"
        for label, n in zip(labels, twentieths, strict=True)
    )
    answer = labels[int(np.argmax(twentieths))]
    text = f'{{"Reasoning": "It is {answer}, not the others.", "Answer": "{answer}", {values}}}'
    return text, labels


@settings(max_examples=60, deadline=None)
@given(answer=full_answers())
def test_a_cut_off_answer_is_read_as_the_whole_answer_or_refused(answer):
    """Never silently wrong: every prefix of an answer reads as the whole one, or fails."""
    text, labels = answer
    whole = parse_verbalized(text, labels)
    assert whole.status == "ok" or whole.detail == ("numbers in quotes",), whole.detail
    for end in range(len(text)):
        result = parse_verbalized(text[:end], labels)
        assert_valid(result, len(labels))
        if result.probs is not None:
            np.testing.assert_allclose(result.probs, whole.probs, rtol=0, atol=1e-12)
            assert any("cut off after" in d for d in result.detail), result.detail


# --------------------------------------------------------------------------- recorded answers


def recorded_files(folder):
    files = sorted(folder.glob("*.jsonl"))
    assert files, f"no recorded files in {folder}"
    return [load_recorded_task(path) for path in files]


def test_reads_what_the_source_parser_read(recorded_data):
    """Every row the source parsed: the same renormalised reading, to 1e-12."""
    single, corrected = 0, 0
    for task in recorded_files(recorded_data):
        for record in task.records:
            expected = stated_distribution(record) if record["parsed_ok"] else None
            if expected is None:
                continue
            result = parse_verbalized(record["raw"], record["labels"])
            assert_valid(result, len(record["labels"]))
            where = f"{task.name} id {record['id']}: {result.detail}"
            if any("answers in the text" in d for d in result.detail):
                # The model answered twice and corrected itself: verbcal takes the last valid
                # answer, the source took the first. Each answer alone reads as the source read
                # it; a correction the text cuts off is refused, and the first answer stands.
                corrected += 1
                last = record["raw"][
                    record["raw"].rindex("{", 0, record["raw"].rindex('"Answer"')) :
                ]
                first = record["raw"][: record["raw"].index("}") + 1]
                first_reading = parse_verbalized(first, record["labels"]).probs
                last_reading = parse_verbalized(last, record["labels"])
                if last_reading.probs is None:
                    assert "truncated" in last_reading.detail[0], where
                    np.testing.assert_allclose(result.probs, first_reading, atol=1e-12)
                else:
                    np.testing.assert_allclose(result.probs, last_reading.probs, atol=1e-12)
                np.testing.assert_allclose(first_reading, expected, atol=1e-12)
                continue
            single += 1
            np.testing.assert_allclose(result.probs, expected, rtol=0, atol=1e-12, err_msg=where)
            allowed = ("numbers in quotes", "renormalised", "invalid JSON")
            assert all(any(a in d for a in allowed) for d in result.detail), where
    assert single > 10_000 and corrected > 0


def regex_reading(raw, labels):
    """An independent reader for well-formed key-value lines: the last of each key wins."""
    values = {}
    for label in labels:
        found = re.findall(rf'"{label}":\s*"?([0-9.]+)"?', raw)
        if found:
            values[label] = float(found[-1])
    if len(values) == len(labels):
        row = np.array([values[label] for label in labels])
        return row / row.sum()
    answer = re.findall(r'"Answer":\s*"([^"]*)"', raw)[-1]
    confidence = float(re.findall(r'"Confidence":\s*"?([0-9.]+)', raw)[-1])
    row = np.full(len(labels), (1 - confidence) / (len(labels) - 1))
    row[labels.index(answer)] = confidence
    return row


def failure_category(raw, labels):
    """Why the source could not read ``raw``, judged from the text alone."""
    answers = re.findall(r'"Answer":\s*"([^"]*)"', raw)
    values = [float(v) for v in re.findall(r'"[A-D]":\s*"?([0-9.]+)"?\s*[,}\n]', raw)]
    if "{" not in raw:
        return "no JSON"
    if raw.count("{") > raw.count("}"):
        return "truncated"
    if answers and answers[-1] not in labels:
        if LabelSet(labels).match_start(answers[-1]) is not None:
            return "qualified answer"
        return "answer not a label"
    if values and sum(values) == 0:
        return "all zero"
    return "recoverable"


FAILURE_REASONS = {
    "no JSON": "no probabilities and no answer",
    "truncated": "truncated",
    "answer not a label": "is not one of the labels",
    "all zero": "sum to 0",
}


def test_source_failures_are_recovered_or_explained(recorded_data):
    """Each row the source failed on, by category: recovered where the text states one."""
    seen = {}
    for task in recorded_files(recorded_data):
        for record in task.records:
            if record["parsed_ok"]:
                continue
            raw, labels = record["raw"], record["labels"]
            category = failure_category(raw, labels)
            seen[category] = seen.get(category, 0) + 1
            result = parse_verbalized(raw, labels)
            where = f"{task.name} id {record['id']} ({category}): {result.detail}"
            if category == "recoverable":
                assert result.probs is not None, where
                np.testing.assert_allclose(
                    result.probs, regex_reading(raw, labels), rtol=0, atol=1e-12, err_msg=where
                )
            elif category == "qualified answer":  # "True, with exceptions": that label
                assert result.status == "repaired", where
                assert any("the label it starts with" in d for d in result.detail), where
                answer = re.findall(r'"Answer":\s*"([^"]*)"', raw)[-1]
                stated = answer[: answer.index(",")] if "," in answer else answer.split()[0]
                np.testing.assert_allclose(
                    result.probs, regex_reading(raw.replace(answer, stated), labels), atol=1e-12
                )
            else:
                assert result.status == "failed", where
                assert FAILURE_REASONS[category] in result.detail[0], where
    assert set(seen) == {"recoverable", "qualified answer", *FAILURE_REASONS}, seen
