"""Background processes started by the local control plane, recorded so that another process
(`zeta-router cluster down`) can stop them later by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name, from field 3 (the state) on.
    The name (field 2) may contain spaces and parentheses; the fields after its last closing
    paren are fixed. Raises OSError once the process is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a running (not zombie) process."""
    try:
        return stat_fields(pid)[0] != "Z"
    except (OSError, IndexError, ValueError):
        return False


def _start_ticks(pid: int) -> int | None:
    """The process start time from /proc, used to tell our process from a recycled PID."""
    try:
        return int(stat_fields(pid)[19])
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (raises OSError once it is gone)."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int | None
    log: str
    argv: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
            log=str(data["log"]),
            argv=[str(a) for a in data.get("argv", [])],
        )

    def alive(self) -> bool:
        ticks = _start_ticks(self.pid)
        if ticks is None:
            return False
        if self.start_ticks is not None and ticks != self.start_ticks:
            return False  # the PID now belongs to someone else
        return pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Safe to call on a dead process."""
        if not self.alive():
            _reap(self.pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(self.pid)
            if not self.alive():
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        for _ in range(50):
            _reap(self.pid)
            if not self.alive():
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    # When the process is our own child, collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> ProcessRecord:
    """Start ``argv`` in its own session (so it outlives the command that started it and is not
    hit by a terminal's Ctrl-C), with stdout and stderr appended to ``log_path``. With
    ``die_with_parent`` it gets SIGTERM when the thread that started it exits (Linux)."""
    preexec = None
    if die_with_parent:
        from zeta_router_dev.local.llama import set_parent_death_signal

        preexec = set_parent_death_signal
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec,
        )
    return ProcessRecord(
        name=name,
        pid=proc.pid,
        start_ticks=_start_ticks(proc.pid),
        log=str(log_path),
        argv=list(argv),
    )


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
