"""helm and kubectl for the tests: the binaries `make tools` fetches
(scripts/fetch-helm-kubectl.sh).

They are looked up in ``$ZETA_ROUTER_TOOLS_BIN`` when set, else in the script's cache
(``$ZETA_CACHE_DIR``, else ``$XDG_CACHE_HOME/zeta-router``, else ``~/.cache/zeta-router``, then
``tools/bin``). A missing binary fails the test with what to run; it never skips it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from zeta_router_dev.cluster.binaries import TOOLS_ENV, tools_dir


def tool(name: str) -> Path:
    """The path of ``helm`` or ``kubectl``; fails the test when it is not there."""
    path = tools_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} not found at {path}: run `make tools` (it fetches helm and kubectl), "
            f"or point ${TOOLS_ENV} at a directory holding them",
            pytrace=False,
        )
    return path


def run_tool(
    name: str,
    args: Sequence[str],
    *,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``name args...``; with ``check``, a failure fails the test with its output."""
    proc = subprocess.run(
        [str(tool(name)), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{name} {' '.join(args)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc
