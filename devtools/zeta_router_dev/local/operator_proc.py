"""``zeta-router operator`` as a child process on this machine, started and stopped by PID: what
the demo runs, and the operator under test in the cluster tests.

    proc = OperatorProcess(kubeconfig, ["team-a"], log_path).start()  # waits for /healthz
    ...
    proc.stop()

Its liveness and metrics endpoints listen on 127.0.0.1, on ports the OS picks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from zeta_router_dev.cluster.processes import free_port, log_tail
from zeta_router_dev.local.llama import set_parent_death_signal


class OperatorStartError(RuntimeError):
    """The operator exited or did not answer its liveness endpoint in time (log tail inside)."""


@dataclass
class OperatorProcess:
    kubeconfig: Path
    namespaces: Iterable[str]
    log_path: Path
    drift_interval: float = 3.0
    extra_args: list[str] = field(default_factory=list)
    standalone: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    """Set in the operator's environment on top of this process's (``KUBECONFIG`` is dropped)."""
    new_session: bool = False
    """Run in its own session, so a terminal's Ctrl-C reaches only the caller."""
    die_with_parent: bool = False
    """SIGTERM from the kernel when the thread that started it exits (Linux)."""
    launcher: list[str] = field(default_factory=lambda: ["-m", "zeta_router"])
    """The interpreter's arguments before the command (``zeta_router_dev.local.memprofile``
    runs it with its memory profiled)."""
    proc: subprocess.Popen[bytes] | None = None
    liveness_url: str = ""
    metrics_url: str = ""

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, timeout: float = 60.0) -> OperatorProcess:
        health_port, metrics_port = free_port(), free_port()
        self.liveness_url = f"http://127.0.0.1:{health_port}/healthz"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        argv = [
            sys.executable,
            *self.launcher,
            "operator",
            *[f"--namespace={ns}" for ns in self.namespaces],
            f"--drift-interval={self.drift_interval}",
            f"--liveness={self.liveness_url}",
            f"--metrics-address=127.0.0.1:{metrics_port}",
            *(["--standalone"] if self.standalone else []),
            f"--kubeconfig={self.kubeconfig}",
            "--workers=4",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=self.new_session,
                preexec_fn=set_parent_death_signal if self.die_with_parent else None,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if time.monotonic() > deadline:
                raise OperatorStartError(
                    f"timed out after {timeout:g}s waiting for the operator's liveness endpoint "
                    f"({self.log_path}); log tail:\n{self.log_tail()}"
                )
            time.sleep(0.2)
        return self

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise OperatorStartError(f"operator exited; log tail:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.liveness_url, timeout=2) as resp:
                return int(resp.status) == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def wait_counted(self, name: str, count: int, timeout: float, what: str, **labels: str) -> None:
        """Wait until the counter ``name`` (with ``labels``) has grown by ``count`` from now:
        the way to know that the operator has looked ``count`` more times (a drift check, a
        control-loop interval) without guessing how long that takes. TimeoutError with
        ``what`` after ``timeout`` seconds."""
        target = self.metric(name, **labels) + count
        deadline = time.monotonic() + timeout
        while (now := self.metric(name, **labels)) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout:g}s waiting for {what} "
                    f"({name} at {now:g}, waiting for {target:g})"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        """As a crash would: no graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)
