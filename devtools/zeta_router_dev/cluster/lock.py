"""The host-wide lock of the real node: one machine runs at most one real node (its bridge,
address ranges, iptables chains and /run folder are fixed), whoever starts it.

The lock is ``flock(2)`` on :data:`LOCK_PATH`, the file people also take by hand
(``flock /run/lock/zeta-real-node.lock ...``). A node outlives the command that started it, so
the lock is held by a small process of its own (``python -m zeta_router_dev.cluster.lock``),
started first by ``cluster up`` and stopped last by ``cluster down``. It writes who it is into
the file; when the lock is taken, the message says who holds it (from that note, or from
``/proc/locks`` for a lock taken by hand).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import getpass
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from zeta_router_dev.cluster.processes import stat_fields

LOCK_PATH: Final = Path("/run/lock/zeta-real-node.lock")
BUSY_EXIT: Final = 75  # EX_TEMPFAIL


class NodeLockBusyError(RuntimeError):
    """Another real node (or someone holding the lock by hand) has the machine."""


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    note: dict[str, str]

    def describe(self) -> str:
        parts = [f"PID {self.pid}"]
        if self.command:
            parts.append(f"({self.command})")
        if self.note.get("state_dir"):
            parts.append(f"for the node in {self.note['state_dir']}")
        if self.note.get("user"):
            parts.append(f"started by {self.note['user']}")
        if self.note.get("since"):
            parts.append(f"since {self.note['since']}")
        return " ".join(parts)


def lock_holder_pids(lock_path: Path = LOCK_PATH, locks: str | None = None) -> list[int]:
    """PIDs holding a lock on ``lock_path``, from ``/proc/locks`` (pure given ``locks``)."""
    try:
        st = lock_path.stat()
        text = Path("/proc/locks").read_text() if locks is None else locks
    except OSError:
        return []
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF": major and minor in hex, the inode
        # in decimal; blocked waiters carry "->".
        if "->" in parts or len(parts) < 6:
            continue
        with contextlib.suppress(ValueError, IndexError):
            major, minor, inode = parts[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == want:
                pids.append(int(parts[4]))
    return pids


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def holder(lock_path: Path = LOCK_PATH) -> Holder | None:
    """Who holds the lock now, ``None`` when nobody does."""
    pids = lock_holder_pids(lock_path)
    if not pids:
        return None
    note: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(lock_path.read_text() or "{}")
        if isinstance(data, dict) and int(data.get("pid", -1)) in pids:
            note = {str(k): str(v) for k, v in data.items()}
    pid = pids[0]
    return Holder(pid, _cmdline(pid)[:200], note)


def _parent(pid: int) -> int | None:
    try:
        return int(stat_fields(pid)[1])
    except OSError:
        return None


def held_by_ancestor(lock_path: Path = LOCK_PATH, pid: int | None = None) -> bool:
    """Whether the lock is held by this process or one it descends from: what
    ``flock /run/lock/zeta-real-node.lock make test`` does, so everything under it may use the
    machine's real node without taking the lock again (which would wait for itself)."""
    holders = set(lock_holder_pids(lock_path))
    current: int | None = os.getpid() if pid is None else pid
    while current is not None and current > 1:
        if current in holders:
            return True
        current = _parent(current)
    return False


def busy_message(lock_path: Path = LOCK_PATH) -> str:
    h = holder(lock_path)
    who = h.describe() if h else "another process (it let go meanwhile: try again)"
    hint = (
        f"stop it with `zeta-router cluster down --state-dir {h.note['state_dir']}`"
        if h and h.note.get("state_dir")
        else "wait for it to finish"
    )
    return (
        f"the real node lock {lock_path} is held by {who}: only one real node may run on "
        f"this machine; {hint}, or start a control plane with the kubelet stand-in "
        "(`zeta-router cluster up --node standin`)"
    )


@contextlib.contextmanager
def held(wait: float = 0.0, lock_path: Path = LOCK_PATH, note: str = "") -> Iterator[None]:
    """Hold the lock in this process for the ``with`` block (a test that brings several nodes
    up and down in a row, with nobody else's node in between)."""
    if held_by_ancestor(lock_path):
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise NodeLockBusyError(busy_message(lock_path)) from None
                time.sleep(0.5)
        info = {"pid": str(os.getpid()), "state_dir": note, "user": getpass.getuser()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def hold(lock_path: Path, state_dir: str, wait: float) -> int:
    """Take the lock (waiting up to ``wait`` seconds), print ``locked``, keep it until SIGTERM."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                print(busy_message(lock_path), flush=True)
                return BUSY_EXIT
            time.sleep(0.5)
    note = {
        "pid": str(os.getpid()),
        "state_dir": state_dir,
        "user": getpass.getuser(),
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
    stop = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    print("locked", flush=True)
    signal.sigwait(stop)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeta_router_dev.cluster.lock",
        description="Hold the real node's host-wide lock until SIGTERM (started by "
        "`zeta-router cluster up --node real`).",
    )
    parser.add_argument("--path", type=Path, default=LOCK_PATH)
    parser.add_argument("--state-dir", required=True, help="the node this lock is held for")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the lock")
    args = parser.parse_args(argv)
    return hold(args.path, args.state_dir, args.wait)


if __name__ == "__main__":
    sys.exit(main())
