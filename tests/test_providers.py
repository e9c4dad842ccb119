"""Provider profiles against loopback emulators of each provider, through the real openai SDK.

The emulators (``tests/provider_servers.py``) enforce each provider's documented
request rules; their module docstring quotes where each rule comes from
(openai-python ``types/chat/completion_create_params.py`` and ``lib/azure.py``,
DESIGN.md "Provider facts" and the issue threads it summarises).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from provider_servers import PROVIDERS, ProviderServer, serving

from verbcal.elicit.provider_errors import error_message, quota_exhausted, retry_delay
from verbcal.elicit.providers import (
    PROFILES,
    build_body,
    get_profile,
    infer_profile,
    make_client,
    parse_param,
)
from verbcal.elicit.replies import read_choice, usage_counts
from verbcal.elicit.templates import load_template, response_format
from verbcal.errors import ConfigurationError

LABELS = ["positive", "negative"]
MESSAGES = [
    {"role": "system", "content": "Reply with JSON."},
    {"role": "user", "content": "Review: a fine film."},
]


def send(server: ProviderServer, body: dict) -> dict | openai.APIStatusError:
    """POST ``body`` with the client verbcal builds for the server's profile."""

    async def go():
        client = make_client(
            get_profile(server.profile), server.base_url, server.api_key, timeout=5.0
        )
        try:
            text = await client.post("/chat/completions", body=body, cast_to=str)
            return json.loads(text)
        except openai.APIStatusError as exc:
            return exc
        finally:
            await client.close()

    return asyncio.run(go())


def naive_body(model: str, json_mode: str = "json_object") -> dict:
    """What verbcal sent to every endpoint before profiles existed."""
    return {
        "model": model,
        "messages": MESSAGES,
        "temperature": 0.0,
        "max_tokens": 256,
        "seed": 0,
        "logprobs": True,
        "top_logprobs": 5,
        "response_format": response_format("distribution", LABELS, json_mode),
    }


# ---------------------------------------------------------------- the emulators enforce the rules


@pytest.mark.parametrize(
    ("provider", "json_mode", "status", "match"),
    [
        # openai-python completion_create_params.py: max_tokens "is not compatible with o-series
        # models"; issue threads: 400 unsupported_parameter "Use 'max_completion_tokens' instead."
        ("openai-reasoning", "none", 400, "Use 'max_completion_tokens' instead"),
        # DESIGN.md: json_object's schema is a llama.cpp extension OpenAI rejects.
        ("openai", "json_object", 400, r"Unknown parameter: 'response_format.schema'"),
        ("azure", "json_object", 400, r"Unknown parameter: 'response_format.schema'"),
        # DESIGN.md / issue threads: Gemini rejects seed with a JSON-list error body.
        # (shown in full, as JSON: the quotes inside the message are escaped)
        ("gemini-compat", "none", 400, 'Unknown name \\"seed\\"'),
        # DESIGN.md: LM Studio accepts only json_schema or text.
        ("lmstudio", "json_object", 400, "must be 'json_schema' or 'text'"),
        # DESIGN.md (measured): llama-cpp-python answers json_schema with HTTP 500.
        ("llamacpp", "json_schema", 500, "Internal Server Error"),
    ],
)
def test_emulators_reject_what_the_provider_rejects(provider, json_mode, status, match):
    """The naive pre-profile body fails on each emulator as it does on the real provider."""
    with serving(provider) as server:
        outcome = send(server, naive_body(server.model, json_mode))
    assert isinstance(outcome, openai.APIStatusError), outcome
    assert outcome.status_code == status
    assert match in error_message(outcome.body, outcome.message)


def test_reasoning_emulator_rejects_temperature_and_logprobs():
    """Issue threads (DESIGN.md): temperature but 1 → 400 unsupported_value; logprobs → 403."""
    with serving("openai-reasoning") as server:
        body = {"model": "o3", "messages": MESSAGES, "max_completion_tokens": 500}
        hot = send(server, {**body, "temperature": 0.0})
        logprobs = send(server, {**body, "logprobs": True, "top_logprobs": 5})
        ok = send(server, body)
    assert hot.status_code == 400 and hot.code == "unsupported_value"
    assert logprobs.status_code == 403
    assert "not allowed to request logprobs" in logprobs.message
    assert ok["choices"][0]["message"]["content"]


def test_azure_legacy_emulator_needs_deployment_path_version_and_api_key():
    """openai-python lib/azure.py: /openai/deployments/{model}, ?api-version=, api-key header.

    The plain client (what verbcal used) reaches a broken URL; the profile's client works.
    """
    with serving("azure") as server:
        body = {"model": server.deployment, "messages": MESSAGES, "max_tokens": 50}
        ok = send(server, body)
        path, headers = server.record.paths[-1], server.record.headers[-1]

        async def plain():
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
            try:
                return await client.post("/chat/completions", body=body, cast_to=str)
            except openai.APIStatusError as exc:
                return exc
            finally:
                await client.close()

        broken = asyncio.run(plain())
    assert ok["choices"][0]["message"]["content"]
    assert (
        path == f"/openai/deployments/{server.deployment}/chat/completions?api-version=2024-10-21"
    )
    assert headers["api-key"] == "sk-test"
    assert isinstance(broken, openai.NotFoundError)


# ---------------------------------------------------------------- bodies built by the profiles


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("json_mode", ["none", "json_object", "json_schema"])
def test_profile_bodies_are_accepted(provider, json_mode):
    """Every profile turns the same neutral request into a body its provider accepts."""
    with serving(provider) as server:
        profile = get_profile(server.profile)
        built = build_body(
            profile,
            server.model,
            MESSAGES,
            temperature=0.0,
            response_format=response_format("distribution", LABELS, json_mode),
            seed=0,
            logprobs=True,
            n=3 if profile.n else 1,
        )
        outcome = send(server, built.body)
    assert not isinstance(outcome, openai.APIStatusError), (built.body, outcome.body)
    assert server.record.rejected == []
    assert len(outcome["choices"]) == (3 if profile.n else 1)
    if not profile.logprobs:
        assert any("logprobs left out" in note for note in built.notes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    profile_name=st.sampled_from(sorted(PROFILES)),
    temperature=st.one_of(st.none(), st.floats(0, 2)),
    max_tokens=st.one_of(st.none(), st.integers(1, 4000)),
    json_mode=st.sampled_from(["none", "json_object", "json_schema"]),
    seed=st.one_of(st.none(), st.integers(0, 2**31)),
    logprobs=st.booleans(),
    top=st.integers(0, 40),
    effort=st.one_of(st.none(), st.sampled_from(["low", "medium", "high"])),
)
def test_any_request_is_accepted_by_its_provider(
    emulators, profile_name, temperature, max_tokens, json_mode, seed, logprobs, top, effort
):
    """Property: whatever the neutral request, the profile's body passes its provider's rules."""
    server = emulators["azure-v1" if profile_name == "azure" else profile_name]
    built = build_body(
        PROFILES[profile_name],
        server.model,
        MESSAGES,
        temperature=temperature,
        max_tokens=max_tokens,
        response_format=response_format("distribution", LABELS, json_mode),
        seed=seed,
        logprobs=logprobs,
        top_logprobs=top,
        reasoning_effort=effort,
    )
    if profile_name == "generic":
        return  # generic sends what it is given: it is the profile that adapts nothing
    outcome = send(server, built.body)
    assert not isinstance(outcome, openai.APIStatusError), (built.body, outcome.body)


@pytest.fixture(scope="module")
def emulators():
    servers = {p: ProviderServer(p).start() for p in PROVIDERS}
    yield servers
    for server in servers.values():
        server.stop()


def test_reasoning_body_and_its_notes():
    built = build_body(
        PROFILES["openai-reasoning"],
        "o4-mini",
        MESSAGES,
        temperature=0.0,
        logprobs=True,
        seed=1,
        reasoning_effort="low",
    )
    assert built.body["max_completion_tokens"] == PROFILES["openai-reasoning"].default_max_tokens
    assert "max_tokens" not in built.body and "temperature" not in built.body
    assert "logprobs" not in built.body and built.body["reasoning_effort"] == "low"
    assert len(built.notes) == 2


@pytest.mark.parametrize(
    ("profile", "json_mode", "expected_type", "has_schema"),
    [
        ("openai", "json_object", "json_object", False),
        ("vllm", "json_object", "json_object", False),
        ("ollama", "json_object", "json_object", False),
        ("lmstudio", "json_object", "json_schema", True),
        ("llamacpp", "json_schema", "json_object", True),
        ("llamacpp", "json_object", "json_object", True),
        ("gemini-compat", "json_object", "json_schema", True),
        ("anthropic-compat", "json_schema", None, False),
        ("generic", "json_object", "json_object", True),
    ],
)
def test_response_format_adapted(profile, json_mode, expected_type, has_schema):
    fmt = response_format("distribution", LABELS, json_mode)
    body = build_body(PROFILES[profile], "m", MESSAGES, response_format=fmt).body
    got = body.get("response_format")
    assert (got or {}).get("type") == expected_type
    if got:
        schema = got.get("schema") or (got.get("json_schema") or {}).get("schema")
        assert (schema == load_template("distribution").json_schema(LABELS)) == has_schema


def test_n_on_a_profile_without_n_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="one choice per request"):
        build_body(PROFILES["ollama"], "m", MESSAGES, n=3)
    with pytest.raises(ConfigurationError, match="reasoning_effort must be one of"):
        build_body(PROFILES["openai-reasoning"], "m", MESSAGES, reasoning_effort="extreme")
    with pytest.raises(ConfigurationError, match="unknown provider 'openia'"):
        get_profile("openia")


def test_temperature_capped_for_anthropic():
    built = build_body(PROFILES["anthropic-compat"], "claude", MESSAGES, temperature=1.5, seed=3)
    assert built.body["temperature"] == 1.0 and "seed" not in built.body
    assert any("lowered to 1" in n for n in built.notes)


def test_param_overrides_and_renames():
    """--param wins; a cap under the other field's name replaces the profile's own."""
    built = build_body(
        PROFILES["vllm"], "o3", MESSAGES, params={"max_completion_tokens": 900, "top_p": 0.5}
    )
    assert built.body["max_completion_tokens"] == 900 and "max_tokens" not in built.body
    assert built.body["top_p"] == 0.5
    assert built.notes == ("--param max_completion_tokens sent instead of max_tokens",)
    assert parse_param('stop=["x"]') == ("stop", ["x"])
    with pytest.raises(ConfigurationError, match="KEY=VALUE"):
        parse_param("novalue")


@pytest.mark.parametrize(
    ("url", "model", "expected"),
    [
        ("https://api.openai.com/v1", "gpt-4o-mini", "openai"),
        ("https://api.openai.com/v1", "o3-mini", "openai-reasoning"),
        ("https://api.openai.com/v1", "gpt-5-mini", "openai-reasoning"),
        ("https://api.openai.com/v1", "gpt-5-chat-latest", "openai"),
        ("https://api.openai.com/v1", "o1", "openai-reasoning"),
        ("https://res.openai.azure.com", "dep", "azure"),
        ("https://res.openai.azure.com/openai/v1", "dep", "azure"),
        ("https://api.anthropic.com/v1/", "claude-sonnet-4-5", "anthropic-compat"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "gemini-2.5", "gemini-compat"),
        ("http://localhost:11434/v1", "llama3", "ollama"),
        ("http://127.0.0.1:1234/v1", "qwen", "lmstudio"),
        ("http://127.0.0.1:8080/v1", "o3", "generic"),
        ("https://proxy.example/openai/deployments/x", "m", "azure"),
    ],
)
def test_infer_profile(url, model, expected):
    assert infer_profile(url, model).name == expected


# ---------------------------------------------------------------- error bodies and replies


def test_gemini_errors_read_in_full():
    """Gemini list bodies: shown in full; per-day quota fails fast; per-minute has a retryDelay."""
    with serving("gemini-compat", quota_after=0) as server:
        quota = send(server, {"model": server.model, "messages": MESSAGES, "max_tokens": 9})
    assert quota.status_code == 429 and isinstance(quota.body, list)
    assert quota.message == "Error code: 429"  # what users saw before
    shown = error_message(quota.body, quota.message)
    assert "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in shown
    assert quota_exhausted(quota.body).startswith("RESOURCE_EXHAUSTED")
    with serving("gemini-compat", throttle_first=0.25) as server:
        limited = send(server, {"model": server.model, "messages": MESSAGES, "max_tokens": 9})
    assert quota_exhausted(limited.body) is None
    assert retry_delay(limited.body) == 0.25


def test_openai_quota_and_reply_kinds():
    with serving("openai", quota_after=0) as server:
        quota = send(server, {"model": server.model, "messages": MESSAGES})
    assert quota_exhausted(quota.body) == "insufficient_quota"
    refusal = read_choice({"message": {"content": None, "refusal": "No."}, "finish_reason": "stop"})
    filtered = read_choice(
        {
            "message": {"content": None},
            "finish_reason": "content_filter",
            "content_filter_results": {"violence": {"filtered": True}},
        }
    )
    cut = read_choice(
        {"message": {"content": ""}, "finish_reason": "length"},
        usage={"completion_tokens": 64, "completion_tokens_details": {"reasoning_tokens": 64}},
    )
    thinking = read_choice({"message": {"content": None, "reasoning_content": "hmm"}})
    assert (refusal.kind, filtered.kind, cut.kind, thinking.kind) == (
        "refusal",
        "content_filter",
        "length",
        "reasoning_only",
    )
    assert "violence" in filtered.reason and "raise --max-tokens" in cut.reason
    assert usage_counts({"prompt_tokens": True}) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "reasoning_tokens": 0,
        "cached_tokens": 0,
    }


# ---------------------------------------------------------------- verbcal elicit against each


def write_items(path, n: int, markers: dict[int, str] | None = None) -> None:
    """``n`` labelled review items; item ``i`` gets the marker ``markers[i]`` in its text."""
    rows = []
    for i in range(n):
        marker = (markers or {}).get(i, "")
        text = f"Review {i}: the plot {'held' if i % 2 else 'lost'} me. {marker}".strip()
        rows.append({"id": f"r{i}", "text": text, "label": LABELS[i % 2]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def elicit(server: ProviderServer, tmp_path, capsys, *extra: str, n_items: int = 50, name="out"):
    """Run ``verbcal elicit`` against ``server``; return (exit code, predictions, output)."""
    from verbcal.cli import main
    from verbcal.predictions import read_predictions

    items = tmp_path / "items.jsonl"
    if not items.exists():
        write_items(items, n_items)
    out = tmp_path / f"{name}.jsonl"
    argv = [
        "elicit",
        "--input",
        str(items),
        "--labels",
        ",".join(LABELS),
        "--model",
        server.model,
        "--base-url",
        server.base_url,
        "--provider",
        server.profile,
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "cache.db"),
        "--timeout",
        "10",
        *extra,
    ]
    code = main(argv)
    captured = capsys.readouterr()
    return code, (read_predictions(out) if out.exists() else []), captured.err + captured.out


@pytest.fixture
def api_key(monkeypatch):
    for name in ("AZURE_OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_elicit_50_items_with_3_samples_against_each_provider(provider, tmp_path, capsys, api_key):
    """Done-when of issue 10: every item read, no request rejected, the right token counts.

    Distribution template, --json-mode json_schema (each profile sends the form its
    provider takes), --logprobs where the profile allows it, --samples 3: one request
    with n=3 where the provider takes n, three requests elsewhere.
    """
    with serving(provider, reasoning_tokens=40) as server:
        profile = get_profile(server.profile)
        extra = ["--samples", "3", "--temperature", "0.7", "--json-mode", "json_schema"]
        if profile.logprobs:
            extra.append("--logprobs")
        code, predictions, err = elicit(server, tmp_path, capsys, *extra)
        first_requests = server.record.total
        code2, again, _ = elicit(server, tmp_path, capsys, *extra, name="again")
    assert code == 0 and code2 == 0, err
    assert server.record.rejected == []
    assert first_requests == (50 if profile.n else 150)
    assert server.record.total == first_requests  # the rerun came from the cache
    assert len(predictions) == 50 and all(p.status == "ok" for p in predictions)
    assert all(len(p.raw) == 3 for p in predictions)
    bill = server.record.bill
    for key in ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens"):
        assert sum(p.usage[key] for p in predictions) == getattr(bill, key), key
        assert sum(p.usage[key] for p in again) == getattr(bill, key), key
    assert all(not p.usage["from_cache"] for p in predictions)
    assert all(p.usage["from_cache"] for p in again)
    if profile.logprobs:
        assert all(p.token_probs is not None for p in predictions)
    if provider == "openai-reasoning":
        assert bill.reasoning_tokens == 50 * 3 * 40
    assert f"provider {profile.name}:" in err
    assert f"tokens {bill.prompt_tokens} prompt ({bill.cached_tokens} cached)" in err


def test_reasoning_model_with_logprobs_drops_them_with_one_warning(tmp_path, capsys, api_key):
    """A reasoning model answers logprobs with 403 (issue threads): verbcal leaves them out,
    says so once on stderr, and the run goes on."""
    with serving("openai-reasoning", reasoning_tokens=30) as server:
        code, predictions, err = elicit(server, tmp_path, capsys, "--logprobs")
    notes = [line for line in err.splitlines() if line.startswith("verbcal: provider: ")]
    assert code == 0 and server.record.rejected == []
    assert notes == [
        "verbcal: provider: temperature 0 left out: openai-reasoning models accept only the "
        "default temperature 1",
        "verbcal: provider: logprobs left out: openai-reasoning does not return token "
        "probabilities (no token_probs in the predictions)",
    ]
    assert all(p.status == "ok" and p.token_probs is None for p in predictions)
    assert all("max_completion_tokens" in b and "logprobs" not in b for b in server.record.bodies)


def test_library_notes_are_provider_warnings_once_each(api_key):
    """Through the API (no CLI), each note is one ProviderWarning per backend."""
    from verbcal.elicit.backend import OpenAIBackend, ProviderWarning
    from verbcal.elicit.elicitor import Elicitor
    from verbcal.predictions import Item

    with serving("anthropic-compat") as server:
        backend = OpenAIBackend(server.model, base_url=server.base_url, provider=server.profile)
        elicitor = Elicitor(backend, LABELS, json_mode="json_schema", seed=None, logprobs=True)
        items = [Item(id=str(i), text=f"text {i}") for i in range(5)]

        async def go():
            async with backend:
                return await elicitor.arun(items)

        with pytest.warns(ProviderWarning) as caught:
            predictions, _ = asyncio.run(go())
    assert sorted(str(w.message).split(":")[0] for w in caught) == [
        "logprobs left out",
        "response_format left out",
    ]
    assert all(p.status == "ok" for p in predictions)
    assert all("seed" not in b and "response_format" not in b for b in server.record.bodies)


@pytest.mark.parametrize("provider", ["openai", "azure", "vllm"])
def test_replies_without_text_are_asked_once_cached_and_reported(
    provider, tmp_path, capsys, api_key
):
    """A refusal (message.refusal), Azure's content filter and vLLM's reasoning-only reply:
    paid for, so cached and reported as failed with the reason; a rerun sends nothing."""
    markers = {3: "[[refuse]]", 7: "[[filter]]", 11: "[[reasoning-only]]"}
    write_items(tmp_path / "items.jsonl", 20, markers)
    with serving(provider) as server:
        code, predictions, err = elicit(server, tmp_path, capsys)
        sent = server.record.total
        code2, again, err2 = elicit(server, tmp_path, capsys, name="again")
    assert code == 0 and sent == 20 and server.record.total == 20  # asked once, rerun sends 0
    by_id = {p.id: p for p in predictions}
    assert by_id["r3"].status == "failed"
    assert by_id["r3"].detail == f"no answer text: refused: {REFUSAL}"
    assert by_id["r7"].detail == "no answer text: stopped by the content filter (violence)"
    assert by_id["r11"].detail.startswith("no answer text: the reply holds reasoning but no")
    assert sum(p.status == "ok" for p in predictions) == 17
    assert [p.detail for p in again] == [p.detail for p in predictions]
    assert "content_filter 1" in err and "refusal 1" in err and "reasoning_only 1" in err
    # Their tokens were paid for and are counted.
    assert by_id["r3"].usage["completion_tokens"] > 0
    assert sum(p.usage["prompt_tokens"] for p in predictions) == server.record.bill.prompt_tokens


REFUSAL = "I'm sorry, but I can't help with that request."


def test_length_cut_on_a_reasoning_model_says_to_raise_max_tokens(tmp_path, capsys, api_key):
    with serving("openai-reasoning", reasoning_tokens=200) as server:
        code, predictions, err = elicit(server, tmp_path, capsys, "--max-tokens", "120")
        sent = server.record.total
        elicit(server, tmp_path, capsys, "--max-tokens", "120", name="again")
    assert code == 1 and sent == 50 and server.record.total == 50
    assert all(p.status == "failed" for p in predictions)
    assert predictions[0].detail == (
        "no answer text: cut at the length limit while reasoning (120 reasoning tokens), "
        "before any answer: raise --max-tokens"
    )
    assert all(p.usage["reasoning_tokens"] == 120 for p in predictions)


def test_samples_reuse_cached_choices_when_k_changes(tmp_path, capsys, api_key):
    """n=k: one cache entry holds k choices; k=5 after k=3 asks only for 2 more (n=2,
    seed+3); k=2 after that asks for nothing."""
    write_items(tmp_path / "items.jsonl", 10)
    with serving("openai") as server:
        common = ["--temperature", "0.7"]
        elicit(server, tmp_path, capsys, *common, "--samples", "3")
        assert [b["n"] for b in server.record.bodies] == [3] * 10
        code, five, _ = elicit(server, tmp_path, capsys, *common, "--samples", "5", name="five")
        later = server.record.bodies[10:]
        code2, two, _ = elicit(server, tmp_path, capsys, *common, "--samples", "2", name="two")
    assert code == 0 and code2 == 0
    assert [(b["n"], b["seed"]) for b in later] == [(2, 3)] * 10
    assert server.record.total == 20
    assert all(len(p.raw) == 5 for p in five) and all(len(p.raw) == 2 for p in two)
    assert [p.raw[:2] for p in five] == [p.raw for p in two]


def test_dry_run_sends_nothing_and_prints_the_counts(tmp_path, capsys, api_key):
    """Ollama takes no n: --samples 2 is two requests per item; nothing is sent or created."""
    write_items(tmp_path / "items.jsonl", 40)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"default": {"input": 1.0, "output": 4.0}}))
    with serving("ollama") as server:
        code, predictions, err = elicit(
            server,
            tmp_path,
            capsys,
            "--dry-run",
            "--samples",
            "2",
            "--temperature",
            "1",
            "--prices",
            str(prices),
        )
    assert code == 0 and server.record.total == 0 and predictions == []
    assert not (tmp_path / "cache.db").exists()
    numbers = dry_run_numbers(err)
    assert numbers["requests"] == 80
    assert "provider ollama:" in err and "at most" in err


def dry_run_numbers(text: str) -> dict[str, float]:
    """Requests, prompt tokens and cost from the --dry-run printout."""
    requests = re.search(r"(\d+) requests to send", text)
    prompt = re.search(r"prompt tokens (\d+)", text)
    cost = re.search(r"estimated cost \$([\d.]+)", text)
    assert requests and prompt and cost, text
    return {
        "requests": int(requests.group(1)),
        "prompt_tokens": int(prompt.group(1)),
        "cost": float(cost.group(1)),
    }


def review_items(path, n: int) -> None:
    """``n`` items from the shipped demo reviews (real English review texts), cycled."""
    from verbcal.data import __file__ as data_init

    source = Path(data_init).with_name("demo_reviews.jsonl")
    texts = [json.loads(line)["text"] for line in source.read_text().splitlines() if line]
    rows = [{"id": f"r{i}", "text": f"({i}) {texts[i % len(texts)]}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The vocabulary of SmolLM2-135M (a real BPE tokenizer), as the emulator's billing."""
    from conftest import skip_or_fail

    from verbcal.elicit.dryrun import gguf_tokenizer
    from verbcal.elicit.local_server import find_smollm2_model

    try:
        path = find_smollm2_model()
        return path, gguf_tokenizer(path)
    except ConfigurationError as error:
        skip_or_fail(f"no SmolLM2 GGUF / llama-cpp-python: {error}")


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_dry_run_of_1000_items_within_5_percent_of_the_bill(
    provider, tmp_path, capsys, api_key, smollm2_tokenizer
):
    """Done-when of issue 10: --dry-run on 1,000 items prints requests, prompt tokens and a
    cost within 5% of what the emulator then bills for the real run.

    The emulator bills with a real BPE tokenizer (SmolLM2's vocabulary); the dry run
    counts with the same vocabulary (--tokenizer). The completion is the dry run's
    typical-answer estimate. Prices: input 2.5, output 10 dollars per million tokens.
    """
    path, count = smollm2_tokenizer
    review_items(tmp_path / "items.jsonl", 1000)
    prices = {"input": 2.5, "output": 10.0}
    (tmp_path / "prices.json").write_text(json.dumps({"default": prices}))
    args = ["--json-mode", "json_schema", "--concurrency", "16", "--samples", "3"]
    args += ["--temperature", "0.7", "--prices", str(tmp_path / "prices.json")]
    with serving(provider, tokenizer=count) as server:
        code, _, printed = elicit(
            server, tmp_path, capsys, *args, "--dry-run", "--tokenizer", str(path)
        )
        assert code == 0 and server.record.total == 0
        dry = dry_run_numbers(printed)
        code, predictions, _ = elicit(server, tmp_path, capsys, *args)
        code_estimate, _, printed_estimate = elicit(
            server, tmp_path, capsys, *args, "--dry-run", "--cache", str(tmp_path / "new.db")
        )
    bill = server.record.bill
    assert code == 0 and all(p.status == "ok" for p in predictions)
    assert dry["requests"] == server.record.total == (1000 if provider == "openai" else 3000)
    billed = bill.cost(prices)
    assert abs(dry["prompt_tokens"] / bill.prompt_tokens - 1) < 0.05
    assert abs(dry["cost"] / billed - 1) < 0.05, (dry, billed)
    # Without a tokenizer, the documented 4-bytes-per-token estimate (measured, not bounded
    # by the issue): report how far it lands.
    estimate = dry_run_numbers(printed_estimate)
    print(
        f"{provider}: billed ${billed:.4f}, dry run with tokenizer ${dry['cost']:.4f}, "
        f"estimate ${estimate['cost']:.4f} ({estimate['cost'] / billed - 1:+.1%})"
    )
    assert abs(estimate["cost"] / billed - 1) < 0.35


# ---------------------------------------------------------------- limits, quota, retry delays


def run_elicitor(server: ProviderServer, n_items: int, **backend_kwargs):
    """Elicit ``n_items`` through the API against ``server``; return (predictions, backend)."""
    from verbcal.elicit.backend import OpenAIBackend, RetryPolicy
    from verbcal.elicit.elicitor import Elicitor
    from verbcal.predictions import Item

    backend_kwargs.setdefault("retry", RetryPolicy(backoff_initial=0.01, backoff_max=0.05))
    backend = OpenAIBackend(
        server.model,
        base_url=server.base_url,
        api_key=server.api_key,
        provider=server.profile,
        **backend_kwargs,
    )
    items = [Item(id=str(i), text=f"Review {i}: fine.") for i in range(n_items)]

    async def go():
        async with backend:  # closes its connections: no server thread outlives the test
            return await Elicitor(backend, LABELS, seed=None).arun(items)

    predictions, summary = asyncio.run(go())
    return predictions, backend, summary


def test_pace_below_announced_rate_limits():
    """Success replies carry x-ratelimit-limit-requests (DESIGN.md); without --rpm the backend
    paces at 90% of it, so the emulator, which answers 429 above its limit, never has to."""
    with serving("openai", requests_per_window=20, window=1.0) as server:
        predictions, backend, _ = run_elicitor(server, 60, max_concurrency=8, rate_window=1.0)
    assert all(p.status == "ok" for p in predictions)
    assert server.record.statuses[429] == 0
    assert backend.request_limiter is not None and backend.request_limiter.limit == 18
    assert backend.server_limits.limit_requests == 20
    assert server.record.max_in_window(1.0) <= 20
    # 60 requests at 18 per second cannot finish in under two windows.
    arrivals = sorted(server.record.arrivals)
    assert arrivals[-1] - arrivals[0] >= 2.0


def test_without_the_headers_the_limit_is_hit_and_retried():
    """The same run against a server that announces nothing meets 429s (and retries them):
    the pacing above is what kept them away."""
    from verbcal.elicit.backend import RetryPolicy

    patient = RetryPolicy(max_attempts=50, backoff_initial=0.01, backoff_max=0.05)
    with serving("vllm", requests_per_window=20, window=1.0) as server:
        predictions, backend, _ = run_elicitor(
            server, 60, max_concurrency=8, rate_window=1.0, retry=patient
        )
    assert all(p.status == "ok" for p in predictions)
    assert server.record.statuses[429] > 0
    assert backend.request_limiter is None


def test_gemini_retry_delay_is_honoured():
    """429 RESOURCE_EXHAUSTED on a per-minute quota carries RetryInfo.retryDelay: the retry of
    each request waits at least that long (issue threads, DESIGN.md)."""
    with serving("gemini-compat", throttle_first=0.3) as server:
        predictions, backend, _ = run_elicitor(server, 6, max_concurrency=6)
    assert all(p.status == "ok" for p in predictions)
    assert server.record.statuses[429] == 6 and server.record.statuses[200] == 6
    retried = {}
    for body, arrival in zip(server.record.bodies, server.record.arrivals, strict=True):
        retried.setdefault(json.dumps(body["messages"]), []).append(arrival)
    gaps = [times[1] - times[0] for times in retried.values()]
    assert len(gaps) == 6 and min(gaps) >= 0.3
    assert backend.stats.retries_by_reason["429"] == 6


@pytest.mark.parametrize("provider", ["gemini-compat", "openai"])
def test_quota_exhaustion_stops_the_run_at_once(provider, tmp_path, capsys, api_key):
    """insufficient_quota (OpenAI) and RESOURCE_EXHAUSTED on a per-day quota (Gemini) are not
    retried: the run stops with exit 3 and the provider's whole error body."""
    with serving(provider, quota_after=5) as server:
        code, _, printed = elicit(server, tmp_path, capsys, "--concurrency", "1")
    assert code == 3
    # Not retried: every request the quota refused is a different item (the run's other
    # worker may have had one request waiting for the slot when the first was refused).
    refused = [json.dumps(b["messages"]) for b in server.record.bodies[5:]]
    assert 1 <= len(refused) <= 2 and len(set(refused)) == len(refused)
    assert server.record.statuses[429] == len(refused)
    assert "quota exhausted" in printed
    if provider == "gemini-compat":
        assert "GenerateRequestsPerDayPerProjectPerModel-FreeTier" in printed
        assert '"status": "RESOURCE_EXHAUSTED"' in printed


# ---------------------------------------------------------------- small parts


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    message=st.dictionaries(
        st.sampled_from(["content", "refusal", "reasoning_content", "reasoning", "role"]),
        JSON_VALUES,
    ),
    finish=JSON_VALUES,
    filtered=JSON_VALUES,
    usage=JSON_VALUES,
    reasoning_model=st.booleans(),
)
def test_reading_any_reply_never_raises(message, finish, filtered, usage, reasoning_model):
    """Model output is untrusted: any choice and usage shape gives text or a kind with a reason."""
    choice = {"message": message, "finish_reason": finish, "content_filter_results": filtered}
    read = read_choice(choice, usage=usage, reasoning_model=reasoning_model)
    assert (read.text is None) == (read.kind is not None)
    assert read.kind is None or read.reason
    counts = usage_counts(usage)
    assert all(isinstance(v, int) and v >= 0 for v in counts.values())


@settings(max_examples=200, deadline=None)
@given(hours=st.integers(0, 3), minutes=st.integers(0, 59), millis=st.integers(0, 59_999))
def test_parse_duration_reads_go_durations(hours, minutes, millis):
    from verbcal.elicit.server_limits import parse_duration

    seconds = millis / 1000
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + f"{seconds:g}s"
    assert parse_duration(text) == pytest.approx(3600 * hours + 60 * minutes + seconds)
    assert parse_duration(f"{millis}ms") == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("[1, 2]", "expected a JSON object"),
        ("{", "not JSON"),
        ('{"other-model": {"input": 1, "output": 2}}', "no prices for model 'm'"),
        ('{"default": {"input": -1, "output": 2}}', "'input' as a number >= 0"),
        ('{"input": 1, "output": true}', "'output' as a number >= 0"),
    ],
)
def test_bad_prices_file_is_named(tmp_path, content, match):
    from verbcal.elicit.dryrun import load_prices
    from verbcal.errors import InvalidInputError

    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=match):
        load_prices(path, "m")


def test_shipped_prices_example_loads():
    from verbcal.data import __file__ as data_init
    from verbcal.elicit.dryrun import load_prices

    example = Path(data_init).with_name("prices.example.json")
    assert load_prices(example, "o4-mini").cached_input is not None
    assert load_prices(example, "any-model") == load_prices(example, "default")
    # Dollars per million tokens: a million prompt tokens cost the input price.
    prices = load_prices(example, "gpt-4o-mini")
    assert prices.cost(1_000_000, 0) == prices.input


def test_samples_without_a_seed_are_told_apart_in_the_cache_key():
    """Anthropic takes no seed: sample j > 0 of the same prompt gets its own key."""
    from verbcal.elicit.backend import OpenAIBackend

    backend = OpenAIBackend("claude", base_url="https://api.anthropic.com/v1", api_key="k")
    assert backend.profile.name == "anthropic-compat"
    with pytest.warns(UserWarning, match="seed left out"):
        keys = [backend.prepare(MESSAGES, seed=j, sample=j)[1] for j in range(3)]
    assert len(set(keys)) == 3
    seeded = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", provider="vllm")
    assert seeded.prepare(MESSAGES, seed=5, sample=2)[1] == seeded.prepare(MESSAGES, seed=5)[1]


def test_param_and_reasoning_effort_from_the_command_line(tmp_path, capsys, api_key):
    """--param fields reach the body; the emulator rejects a field OpenAI does not know
    ("Unrecognized request argument supplied", completion_create_params.py lists them)."""
    write_items(tmp_path / "items.jsonl", 4)
    with serving("openai-reasoning") as server:
        code, predictions, printed = elicit(
            server, tmp_path, capsys, "--param", "top_p=0.5", "--reasoning-effort", "low"
        )
        body = server.record.bodies[0]
    assert code == 0 and body["top_p"] == 0.5 and body["reasoning_effort"] == "low"
    with serving("openai") as server:
        code, predictions, printed = elicit(
            server, tmp_path, capsys, "--param", "bogus=1", "--reasoning-effort", "low", name="b"
        )
    assert "reasoning_effort left out: openai does not take it" in printed
    assert code == 1 and all(p.status == "failed" for p in predictions)
    assert "Unrecognized request argument supplied: bogus" in predictions[0].detail


def test_azure_reasoning_deployment_gets_the_reasoning_rules(tmp_path, capsys, api_key):
    """An Azure deployment named like a reasoning model takes max_completion_tokens and no
    temperature or logprobs (the reasoning rules, on Azure's legacy URL and api-key)."""
    write_items(tmp_path / "items.jsonl", 6)
    with serving("azure", deployment="o4-mini", reasoning_tokens=50) as server:
        code, predictions, printed = elicit(server, tmp_path, capsys, "--logprobs")
    assert code == 0 and server.record.rejected == []
    assert all(p.status == "ok" and p.usage["reasoning_tokens"] == 50 for p in predictions)
    assert "reasoning-model deployment" in printed
    assert all(path.startswith("/openai/deployments/o4-mini/") for path in server.record.paths)


def test_dry_run_for_a_reasoning_model_bounds_the_hidden_reasoning(tmp_path, capsys, api_key):
    write_items(tmp_path / "items.jsonl", 10)
    (tmp_path / "p.json").write_text('{"input": 1, "output": 4}')
    with serving("openai-reasoning") as server:
        code, _, printed = elicit(
            server, tmp_path, capsys, "--dry-run", "--prices", str(tmp_path / "p.json")
        )
    assert code == 0 and server.record.total == 0
    assert "plus hidden reasoning, unknown before the run), at most 40960" in printed
    assert "with hidden reasoning up to $0.16" in printed  # 10 x 4096 tokens at $4/M + prompts
