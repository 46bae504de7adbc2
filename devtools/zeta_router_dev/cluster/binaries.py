"""Where the control-plane programs live: etcd from Debian's `etcd-server` package, and
kube-apiserver / kube-controller-manager built once by `scripts/build-control-plane.sh` into
the cache directory."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

K8S_VERSION = "1.20.2"


class MissingBinaryError(RuntimeError):
    """A program the local control plane needs is not installed; the message says how to get it."""


def cache_root() -> Path:
    """``$ZETA_CACHE_DIR``, else ``$XDG_CACHE_HOME/zeta-router``, else ``~/.cache/zeta-router``
    (the same rule as the build script, so both agree on where the binaries are)."""
    explicit = os.environ.get("ZETA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "zeta-router"


def k8s_bin_dir() -> Path:
    """``$ZETA_K8S_BIN_DIR`` if set (e.g. binaries from an upstream release), else the cache."""
    explicit = os.environ.get("ZETA_K8S_BIN_DIR")
    return Path(explicit) if explicit else cache_root() / f"k8s-{K8S_VERSION}"


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path


def find_binaries() -> Binaries:
    etcd = shutil.which("etcd")
    if etcd is None:
        raise MissingBinaryError(
            "etcd not found on PATH: run `make system-deps` (scripts/install-system-deps.sh "
            "installs Debian's etcd-server), or put an etcd 3.4+ binary on PATH"
        )
    bin_dir = k8s_bin_dir()
    found: dict[str, Path] = {}
    for name in ("kube-apiserver", "kube-controller-manager"):
        path = bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingBinaryError(
                f"{path} not found; build it once with `make control-plane` "
                f"(scripts/build-control-plane.sh, 7-25 min on 2 cores) or point "
                f"$ZETA_K8S_BIN_DIR at a directory holding kube-apiserver and "
                f"kube-controller-manager {K8S_VERSION}"
            )
        found[name] = path
    return Binaries(
        etcd=Path(etcd),
        kube_apiserver=found["kube-apiserver"],
        kube_controller_manager=found["kube-controller-manager"],
    )
