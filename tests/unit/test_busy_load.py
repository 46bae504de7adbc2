"""The load generator the loaded-machine measurements use: its spinners run while the command
does and are gone when it ends, and the command's exit status comes back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zeta_router_dev.busy_load import BusyLoad, main


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped child is gone; an unreaped zombie is not spinning either.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_the_spinners_run_during_the_block_and_are_stopped_by_pid_after() -> None:
    with BusyLoad(count=2, bound_seconds=600) as busy:
        pids = list(busy.pids)
        assert len(pids) == 2
        assert all(_alive(p) for p in pids)
    assert not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids)


def test_the_command_line_returns_the_commands_status_with_the_spinners_running(
    tmp_path: Path,
) -> None:
    # The command lists its siblings that spin (children of the runner, this process, which
    # may have other children: servers of session fixtures) and exits with a status of its own.
    seen = tmp_path / "spinners"
    script = (
        "import os, sys\n"
        "ppid = str(os.getppid())\n"
        "def parent(p):\n"
        "    return open(f'/proc/{p}/stat').read().rsplit(') ', 1)[1].split()[1]\n"
        "def spins(p):\n"
        "    return b'time.monotonic() < end' in open(f'/proc/{p}/cmdline', 'rb').read()\n"
        "pids = []\n"
        "for p in os.listdir('/proc'):\n"
        "    try:\n"
        "        if p.isdigit() and p != str(os.getpid()) and parent(p) == ppid and spins(p):\n"
        "            pids.append(p)\n"
        "    except OSError:\n"
        "        pass\n"
        "open(sys.argv[1], 'w').write(' '.join(pids))\n"
        "sys.exit(7)\n"
    )
    assert main(["--count", "2", "--", sys.executable, "-c", script, str(seen)]) == 7
    pids = [int(p) for p in seen.read_text().split()]
    assert len(pids) == 2
    assert not any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids)  # stopped after


def test_the_command_line_refuses_no_command_and_a_count_below_one() -> None:
    for argv in ([], ["--count", "0", "--", "true"]):
        r = subprocess.run(
            [sys.executable, "-m", "zeta_router_dev.busy_load", *argv],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 2
        assert "error:" in r.stderr


def test_a_missing_command_is_named() -> None:
    assert main(["--count", "1", "--", "/nonexistent/zeta-no-such-command"]) == 127
