"""Elicitation from a real model: SmolLM2-135M-Instruct behind a real llama.cpp server.

Every shipped template is run on a few items, with the llama.cpp JSON mode
(``json_object`` with the template's schema) and once without a constraint.
SmolLM2 is a weak model: its numbers often break the rules (values above 1,
sums of 1.5) and without JSON mode it mostly echoes the prompt. So the tests
do not ask for good answers; they ask that the whole pipeline turns every real
answer into either probabilities summing to 1 over the labels, agreeing with
what the model wrote, or a failure that says why — and that the cache, the
``verbcal elicit`` command and the token-probability path work against a real
server. Requests are real decodes on a shared 2-core machine: few items and
small ``max_tokens`` keep the file to a few minutes.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import pytest

from verbcal.cli import main
from verbcal.elicit import ElicitationSummary, Elicitor
from verbcal.elicit.backend import OpenAIBackend
from verbcal.elicit.cache import ResponseCache
from verbcal.elicit.local_server import LocalLlamaServer
from verbcal.elicit.templates import list_templates, load_template
from verbcal.predictions import CONTENT_FREE, ITEM, Item, Prediction, read_predictions

pytestmark = pytest.mark.server

SENTIMENT = ["positive", "negative"]
# SmolLM2 answers at temperature 0 are deterministic: with these items every template has
# answers that parse in JSON mode. (With four options SmolLM2 states 0.5, 1.2, 3.4, 6.8 and
# nothing parses; "A warm, funny and beautifully acted film." gets 0.5 and 1.2 as well.)
REVIEWS = [
    Item(id="r1", text="Dull, overlong and badly written.", label="negative"),
    Item(id="r2", text="I loved every minute of it.", label="positive"),
]
CHOICES = ["A", "B"]
QUESTIONS = [
    Item(
        id="q1",
        text="What is the capital of France?",
        label="A",
        options={"A": "Paris", "B": "Rome"},
    ),
    Item(
        id="q2",
        text="Which animal barks?",
        label="B",
        options={"A": "A cat", "B": "A dog"},
    ),
]
ANSWER_TOKENS = 40  # a JSON answer for two labels takes about 25 tokens
REASONING_TOKENS = 120  # the "Reasoning" field comes first
TIMEOUT = 300.0  # seconds per request: the server answers one request at a time

JSON_MODE_TEMPLATES = list_templates()


def task_for(template: str) -> tuple[list[str], list[Item]]:
    """Labels and items: questions with options for multiple-choice templates, else reviews."""
    return (CHOICES, QUESTIONS) if load_template(template).multiple_choice else (SENTIMENT, REVIEWS)


def elicit(
    server: LocalLlamaServer,
    template: str,
    cache: ResponseCache | None = None,
    **options,
) -> tuple[list[Prediction], ElicitationSummary]:
    """Run the template's items through a fresh backend, one request at a time."""
    labels, items = task_for(template)
    options.setdefault(
        "max_tokens", REASONING_TOKENS if load_template(template).reasoning else ANSWER_TOKENS
    )

    async def run():
        async with OpenAIBackend(
            server.model, base_url=server.base_url, cache=cache, max_concurrency=1, timeout=TIMEOUT
        ) as backend:
            return await Elicitor(backend, labels, template=template, **options).arun(items)

    return asyncio.run(run())


# ---------------------------------------------------------------- checks of one prediction


def assert_parsed_or_failed_with_reason(prediction: Prediction, labels: list[str]) -> None:
    """Probabilities over exactly the labels summing to 1, or status failed with a reason."""
    assert prediction.labels == labels
    assert isinstance(prediction.raw, str)  # the request itself succeeded: the model answered
    if prediction.probs is None:
        assert prediction.status == "failed"
        assert prediction.detail.strip(), f"{prediction.id} failed without a reason"
        return
    assert prediction.status in ("ok", "repaired")
    assert list(prediction.probs) == labels
    values = list(prediction.probs.values())
    assert all(0.0 <= v <= 1.0 for v in values)
    assert math.fsum(values) == pytest.approx(1.0, abs=1e-9)
    if prediction.status == "repaired":
        assert prediction.detail.strip(), f"{prediction.id} was repaired without saying how"


def stated_probabilities(raw: str, labels: list[str], answer_format: str) -> list[float] | None:
    """The distribution a well-formed JSON answer states, computed by hand; None otherwise.

    "distribution": every label's value in [0, 1], divided by their sum.
    "top1": the confidence on the answer, the rest shared by the other labels.
    """
    try:
        answer = json.loads(raw)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    if answer_format == "top1":
        confidence, chosen = answer.get("Confidence"), answer.get("Answer")
        if chosen not in labels or not _is_fraction(confidence):
            return None
        rest = (1.0 - confidence) / (len(labels) - 1)
        return [confidence if label == chosen else rest for label in labels]
    values = [answer.get(label) for label in labels]
    if not all(_is_fraction(v) for v in values) or sum(values) == 0:
        return None
    return [v / sum(values) for v in values]


def _is_fraction(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


# ---------------------------------------------------------------- every template, JSON mode


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live") / "responses.db"


@pytest.fixture(scope="module")
def json_mode_runs(llama_server: LocalLlamaServer, cache_path: Path) -> dict:
    """Template name -> (predictions, summary) of a first run, into one shared cache."""
    with ResponseCache(cache_path) as cache:
        return {
            template: elicit(llama_server, template, cache, json_mode="json_object")
            for template in JSON_MODE_TEMPLATES
        }


@pytest.mark.parametrize("template", JSON_MODE_TEMPLATES)
def test_json_mode_every_answer_parsed_or_failed_with_a_reason(json_mode_runs, template):
    labels, items = task_for(template)
    predictions, summary = json_mode_runs[template]
    assert [p.id for p in predictions] == [item.id for item in items]
    assert [p.label for p in predictions] == [item.label for item in items]
    assert {p.kind for p in predictions} == {ITEM}
    for prediction in predictions:
        assert_parsed_or_failed_with_reason(prediction, labels)
    assert sum(summary.by_status.values()) == len(items)
    assert summary.backend["requests_sent"] == len(items)
    assert summary.backend["failed"] == 0


def checked_against_stated_numbers(predictions, labels: list[str], answer_format: str) -> int:
    """How many parsed answers were well-formed JSON; each must equal the numbers it states."""
    checked = 0
    for prediction in predictions:
        if prediction.probs is None:
            continue
        expected = stated_probabilities(prediction.raw, labels, answer_format)
        if expected is not None:
            assert list(prediction.probs.values()) == pytest.approx(expected, abs=1e-9)
            checked += 1
    return checked


@pytest.mark.parametrize("template", JSON_MODE_TEMPLATES)
def test_json_mode_parsed_answers_agree_with_the_stated_numbers(json_mode_runs, template):
    labels, _ = task_for(template)
    predictions, _ = json_mode_runs[template]
    checked_against_stated_numbers(predictions, labels, load_template(template).answer_format)


def test_json_mode_some_real_answers_are_checked(json_mode_runs):
    """The agreement test above must not be empty across the templates.

    SmolLM2-135M often states values outside [0, 1] ({"positive": 0.5, "negative": 1.2}),
    which are refused with a reason, so a given template may yield no checkable answer on
    two reviews; across all templates some answers must be parsed and checked.
    """
    checked = {
        template: checked_against_stated_numbers(
            json_mode_runs[template][0],
            task_for(template)[0],
            load_template(template).answer_format,
        )
        for template in JSON_MODE_TEMPLATES
    }
    assert sum(1 for n in checked.values() if n) >= 3, checked


def test_rerun_from_the_cache_sends_no_request(json_mode_runs, llama_server, cache_path):
    with ResponseCache(cache_path) as cache:
        for template, (first, _) in json_mode_runs.items():
            again, summary = elicit(llama_server, template, cache, json_mode="json_object")
            assert summary.backend["requests_sent"] == 0, template
            assert summary.backend["cache_hits"] == len(first)
            assert [(p.raw, p.probs, p.status) for p in again] == [
                (p.raw, p.probs, p.status) for p in first
            ]
            assert all(p.usage["from_cache"] for p in again)


# ---------------------------------------------------------------- no JSON mode


def test_without_json_mode_answers_are_parsed_or_failed_with_a_reason(llama_server):
    predictions, summary = elicit(llama_server, "distribution", json_mode="none")
    assert summary.backend["requests_sent"] == len(REVIEWS)
    for prediction in predictions:
        assert_parsed_or_failed_with_reason(prediction, SENTIMENT)


# ---------------------------------------------------------------- the command line


def test_cli_elicit_with_probes(json_mode_runs, llama_server, cache_path, tmp_path, capsys):
    """`verbcal elicit --probes` on the cache of the top1 run: only the probes are requested."""
    review = REVIEWS[0]
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": review.id, "text": review.text, "label": review.label}))
    out = tmp_path / "preds.jsonl"
    options = {
        "--input": items,
        "--labels": ",".join(SENTIMENT),
        "--model": llama_server.model,
        "--base-url": llama_server.base_url,
        "--template": "top1",
        "--json-mode": "json_object",
        "--max-tokens": ANSWER_TOKENS,
        "--concurrency": 1,
        "--timeout": TIMEOUT,
        "--out": out,
        "--cache": cache_path,
        "--n-random-probes": 0,
    }
    argv = [word for option, value in options.items() for word in (option, str(value))]
    with ResponseCache(cache_path) as cache:
        stored_before = len(cache)
    code = main(["elicit", *argv, "--probes"])
    assert code == 0, capsys.readouterr().err
    assert f"wrote 4 predictions to {out}" in capsys.readouterr().out
    with ResponseCache(cache_path) as cache:
        assert len(cache) == stored_before + 3  # N/A, "", [MASK]; the review was cached

    predictions = read_predictions(out)
    assert [p.kind for p in predictions] == [ITEM] + [CONTENT_FREE] * 3
    assert [p.label for p in predictions] == [review.label, None, None, None]
    for prediction in predictions:
        assert_parsed_or_failed_with_reason(prediction, SENTIMENT)
    first_run = json_mode_runs["top1"][0][0]
    assert (predictions[0].raw, predictions[0].probs) == (first_run.raw, first_run.probs)


# ---------------------------------------------------------------- token probabilities


ONE_WORD_TEMPLATE = {
    "description": "The label alone, one word: its first token carries the token probabilities.",
    "answer_format": "top1",
    "messages": [
        {"role": "system", "content": "You answer with a single word."},
        {
            "role": "user",
            "content": "Is this movie review ${labels}?\n${item}\nAnswer with one word.",
        },
    ],
}


def label_probabilities_by_hand(response: dict, labels: list[str]) -> dict[str, float] | None:
    """Label probabilities at the answer token of a plain-text answer, written out again.

    A token stands for a label when, lower-cased and stripped of non-word
    characters, it equals the label or begins exactly one label. The answer
    token is the first token that stands for a label, else the first word token;
    its alternatives that stand for a label give the label probabilities.
    """
    words = [label.casefold() for label in labels]

    def label_of(token: str) -> str | None:
        token = re.sub(r"^[\W_]+|[\W_]+$", "", token).casefold()
        matches = [lab for lab, w in zip(labels, words, strict=True) if w.startswith(token)]
        exact = [lab for lab, w in zip(labels, words, strict=True) if w == token]
        chosen = exact or (matches if len(matches) == 1 else [])
        return chosen[0] if token and chosen else None

    positions = response["choices"][0]["logprobs"]["content"]
    naming_a_label = [p for p in positions if label_of(p["token"])]
    with_a_word = [p for p in positions if re.sub(r"[\W_]", "", p["token"])]
    answer = (naming_a_label or with_a_word or [None])[0]
    if answer is None:
        return None
    mass = dict.fromkeys(labels, 0.0)
    for alternative in answer["top_logprobs"]:
        if label := label_of(alternative["token"]):
            mass[label] += math.exp(alternative["logprob"])
    total = sum(mass.values())
    return {label: m / total for label, m in mass.items()} if total > 0 else None


def test_logprobs_run_records_token_probabilities(llama_server, tmp_path):
    template = tmp_path / "one_word.json"
    template.write_text(json.dumps(ONE_WORD_TEMPLATE))
    with ResponseCache(tmp_path / "responses.db") as cache:
        predictions, summary = elicit(
            llama_server, str(template), cache, logprobs=True, max_tokens=3
        )
        responses = [cache.get_by_key(key) for key in cache.keys()]  # noqa: SIM118 (not a dict)
    assert summary.backend["requests_sent"] == len(REVIEWS) == len(responses)
    # The server returned logprobs for every answer ...
    assert all(r["choices"][0]["logprobs"]["content"] for r in responses)
    # ... so every prediction records the label probabilities at its answer token,
    # equal to those computed by hand from the stored response with the same text.
    by_hand = [
        (r["choices"][0]["message"]["content"], label_probabilities_by_hand(r, SENTIMENT))
        for r in responses
    ]
    assert all(probs is not None for _, probs in by_hand), f"no label probabilities: {by_hand}"
    for prediction in predictions:
        assert list(prediction.token_probs) == SENTIMENT
        assert math.fsum(prediction.token_probs.values()) == pytest.approx(1.0, abs=1e-12)
    # Pair predictions with responses by answer text, then by the probabilities themselves.
    recorded = sorted((p.raw, tuple(p.token_probs.values())) for p in predictions)
    expected = sorted((text, tuple(probs.values())) for text, probs in by_hand)
    assert [text for text, _ in recorded] == [text for text, _ in expected]
    for (_, got), (_, want) in zip(recorded, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)
