"""Shared fixtures: one real llama.cpp server per test session, and the recorded LLM answers.

A test that needs what is not installed here is skipped with the reason, except
in CI (the ``CI`` environment variable is set), where ``scripts/setup.sh`` has
installed everything and a missing part is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from recorded import find_recorded_data

from verbcal.elicit.local_server import LocalLlamaServer, check_llama_cpp_server, find_smollm2_model
from verbcal.errors import ConfigurationError


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# Hypothesis profiles. "ci" (chosen when CI is set): the same examples on every run, few
# enough that the property suites stay within about two minutes on 2 cores. "dev" (the
# default elsewhere): as many examples, drawn afresh each run. "thorough", by hand:
# HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties_*.py
settings.register_profile(
    "ci", derandomize=True, max_examples=30, deadline=None, database=None, print_blob=True
)
settings.register_profile("dev", max_examples=30, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if in_ci() else "dev"))


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it in CI, where nothing may be missing."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: scripts/setup.sh must have installed it)")
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real server (directly or through a fixture) as ``server``."""
    for item in items:
        if "llama_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LocalLlamaServer]:
    """A running llama.cpp server with SmolLM2-135M-Instruct, shared by the whole session.

    Use ``llama_server.base_url`` and ``llama_server.model`` with any
    OpenAI-compatible client. Requests to it are real model decodes: keep them
    short (``max_tokens``) and few.
    """
    try:
        check_llama_cpp_server()
        find_smollm2_model()
    except ConfigurationError as error:
        skip_or_fail(f"no local model server: {error}")
    # One decoding thread: on a 2-core machine busy with other work two threads took 5.9 s
    # per short JSON answer and one 1.9 s; when idle, 0.39 s and 0.51 s (measured here).
    with LocalLlamaServer(n_threads=1) as server:
        yield server


@pytest.fixture(scope="session")
def recorded_data() -> Path:
    """The ``llm-confidence`` folder of recorded LLM answers (see its README)."""
    folder = find_recorded_data()
    if folder is None:
        pytest.skip(
            "recorded LLM answers not found: expected shared/data/llm-confidence beside "
            "the repository, or a folder named by VERBCAL_RECORDED_DATA"
        )
    return folder
