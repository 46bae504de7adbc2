"""Start ``zeta-router router`` as a real process (through the CLI) and talk to it: the router
sidecars of the demo and of the tests that run routers outside a cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from zeta_router_dev.local.llama import set_parent_death_signal


@dataclass
class RouterProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    admin_port: int

    @property
    def url(self) -> str:
        """The client API (what the entry Service exposes)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        """Health and metrics."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        """For the OpenAI client."""
        return self.url + "/v1"

    def log_events(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def settled_metric(
        self, name: str, expected: float, timeout: float = 30.0, **labels: str
    ) -> float:
        """``metric(name, **labels)`` once it equals ``expected``, or its last value when
        ``timeout`` passes first. A streamed answer is counted when the router's handler returns,
        which may be just after the client has read the last chunk: read it with this."""
        deadline = time.monotonic() + timeout
        value = self.metric(name, **labels)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            value = self.metric(name, **labels)
        return value

    def get(self, path: str) -> tuple[int, dict[str, object], dict[str, str]]:
        """GET a JSON endpoint: /healthz, /readyz on the admin port, anything else on the
        client port."""
        base = self.admin_url if path in ("/healthz", "/readyz", "/metrics") else self.url
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, json.loads(r.read()), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read()), dict(e.headers)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
                raise
        return self.process.returncode


def start_router(
    args: list[str], log_dir: Path, timeout: float = 30.0, new_session: bool = False
) -> RouterProcess:
    """Start the router with ``args`` on 127.0.0.1 and free ports (client and admin); returns
    once it listens.

    The router gets SIGTERM when the thread that started it exits. With ``new_session`` it runs
    in its own session, so a terminal's Ctrl-C reaches only the caller, which stops it by PID.
    """
    log_path = log_dir / f"router-{time.monotonic_ns()}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeta_router",
                "router",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--admin-port",
                "0",
                *args,
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=set_parent_death_signal,
            start_new_session=new_session,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "listening":
                return RouterProcess(proc, int(event["port"]), log_path, int(event["admin_port"]))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    raise RuntimeError(f"router did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
