"""The real node's host-wide lock: who holds it is named (from its note, or from /proc/locks for
a lock taken by hand), a second holder is refused or waits, and it is released with its holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zeta_router_dev.cluster import lock


def test_holder_pids_from_proc_locks(tmp_path: Path) -> None:
    path = tmp_path / "l"
    path.write_text("")
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = (
        f"1: FLOCK  ADVISORY  WRITE 4242 {dev} 0 EOF\n"
        f"1: -> FLOCK  ADVISORY  WRITE 5151 {dev} 0 EOF\n"  # a waiter, not a holder
        "2: POSIX  ADVISORY  WRITE 99 00:01:1 0 EOF\n"
    )
    assert lock.lock_holder_pids(path, locks) == [4242]
    assert lock.lock_holder_pids(tmp_path / "absent", locks) == []


def test_a_lock_taken_by_hand_is_named_by_its_command(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"
    script = (
        "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, 2); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        deadline = time.monotonic() + 10
        while lock.holder(path) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        found = lock.holder(path)
        assert found is not None
        assert found.pid == holder.pid
        assert "time.sleep(30)" in found.command
        message = lock.busy_message(path)
        assert str(path) in message
        assert "--node standin" in message
        with pytest.raises(lock.NodeLockBusyError, match="held by PID"), lock.held(0.2, path):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert lock.holder(path) is None


def test_the_holder_process_notes_its_node_and_a_second_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.lock"

    def start(state: str, wait: float = 0.0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "zeta_router_dev.cluster.lock", "--path", str(path),
             "--state-dir", state, "--wait", str(wait)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = start("/nodes/one")
    assert first.stdout is not None
    try:
        assert first.stdout.readline().strip() == "locked"
        note = json.loads(path.read_text())
        assert note["state_dir"] == "/nodes/one"
        assert int(note["pid"]) == first.pid
        second = start("/nodes/two")
        out, _ = second.communicate(timeout=30)
        assert second.returncode == lock.BUSY_EXIT
        assert f"PID {first.pid}" in out
        assert "/nodes/one" in out
        assert "zeta-router cluster down --state-dir /nodes/one" in out
        # One that waits gets it once the first lets go.
        third = start("/nodes/three", wait=30)
        first.terminate()
        first.wait(10)
        assert third.stdout is not None
        assert third.stdout.readline().strip() == "locked"
        third.terminate()
        third.wait(10)
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()
    assert lock.holder(path) is None


def test_a_lock_held_by_an_ancestor_counts_as_ours(tmp_path: Path) -> None:
    """`flock LOCK make test`: whatever runs under it uses the node without waiting for itself."""
    path = tmp_path / "node.lock"
    code = (
        "import sys; from pathlib import Path; from zeta_router_dev.cluster import lock; "
        "p = Path(sys.argv[1]); print(lock.held_by_ancestor(p));"
        "ctx = lock.held(0.0, p); ctx.__enter__(); print('entered')"
    )
    out = subprocess.run(
        ["flock", str(path), sys.executable, "-c", code, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["True", "entered"]
    assert not lock.held_by_ancestor(path)  # not ours here: nobody holds it
