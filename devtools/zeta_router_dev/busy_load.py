"""A machine kept busy on purpose, for measurements that must hold on a loaded machine: ``count``
processes that each spin on a core until :meth:`BusyLoad.stop` (by their PIDs) or until their
own bound passes, whichever comes first, so a crashed caller leaves nothing spinning for long.

    with BusyLoad(count=2, bound_seconds=3600):
        ...  # measure

or, around any command (here the whole test suite on a loaded machine)::

    .venv/bin/python -m zeta_router_dev.busy_load --count 2 -- make test
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import TracebackType

from zeta_router_dev.local.llama import set_parent_death_signal

_SPIN = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
)


class BusyLoad:
    def __init__(self, count: int | None = None, bound_seconds: float = 3600.0) -> None:
        """``count`` spinning processes (default: one per core); each stops by itself after
        ``bound_seconds``."""
        self.count = (os.cpu_count() or 1) if count is None else count
        self.bound_seconds = bound_seconds
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def start(self) -> BusyLoad:
        for _ in range(self.count):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", _SPIN, str(self.bound_seconds)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=set_parent_death_signal,  # and with the caller, if it dies
                )
            )
        return self

    def stop(self) -> None:
        """Stop each process by its PID (only those started here)."""
        for p in self.processes:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
        self.processes.clear()

    def __enter__(self) -> BusyLoad:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeta_router_dev.busy_load",
        description="Run a command while COUNT processes spin on the cores; they are stopped by "
        "their PIDs when the command ends (or by themselves after --bound seconds). Exits with "
        "the command's status.",
    )
    parser.add_argument(
        "--count", type=int, default=None, help="spinning processes (default: one per core)"
    )
    parser.add_argument(
        "--bound",
        type=float,
        default=7200.0,
        metavar="S",
        help="each spinner stops by itself after S seconds (default 7200)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given: put it after --, e.g. -- make test")
    if args.count is not None and args.count < 1:
        parser.error("--count must be at least 1")
    with BusyLoad(args.count, args.bound) as busy:
        print(
            f"{busy.count} spinning processes (PIDs {busy.pids}) while: {' '.join(command)}",
            file=sys.stderr,
            flush=True,
        )
        try:
            return subprocess.call(command)
        except FileNotFoundError:
            print(f"no such command: {command[0]}", file=sys.stderr)
            return 127


if __name__ == "__main__":
    sys.exit(main())
