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


# The node's programs from Debian packages (scripts/install-system-deps.sh installs them all).
NODE_PACKAGES: dict[str, str] = {
    "containerd": "containerd",
    "ctr": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ip": "iproute2",
    "conntrack": "conntrack",
    "openssl": "openssl",
}
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CNI_DIR = Path("/usr/lib/cni")


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    kube_scheduler: Path


def missing_node_programs() -> list[str]:
    """The real node's programs this machine lacks, each named with the Debian package that has
    it (empty when all are there)."""
    missing: list[str] = []
    for program, package in NODE_PACKAGES.items():
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            missing.append(f"{program} (Debian package {package})")
    for plugin in CNI_PLUGINS:
        if not (CNI_DIR / plugin).is_file():
            missing.append(f"{CNI_DIR / plugin} (Debian package containernetworking-plugins)")
    return missing


def find_node_binaries() -> NodeBinaries:
    """kubelet, kube-proxy and kube-scheduler from the kubernetes build, after checking that the
    node's Debian programs are installed; a :class:`MissingBinaryError` names what is missing and
    how to get it."""
    missing = missing_node_programs()
    if missing:
        raise MissingBinaryError(
            "the real node needs programs that are not installed: "
            + "; ".join(missing)
            + ". Install them with `make system-deps` (scripts/install-system-deps.sh)"
        )
    bin_dir = k8s_bin_dir()
    found: dict[str, Path] = {}
    absent = []
    for name in ("kubelet", "kube-proxy", "kube-scheduler"):
        path = bin_dir / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            absent.append(name)
    if absent:
        raise MissingBinaryError(
            f"{', '.join(absent)} not found in {bin_dir}; build them once with "
            f"`make control-plane` (scripts/build-control-plane.sh builds the control plane "
            f"and the node programs, ~25 min cold) or point $ZETA_K8S_BIN_DIR at a directory "
            f"holding kubelet, kube-proxy and kube-scheduler {K8S_VERSION}"
        )
    return NodeBinaries(found["kubelet"], found["kube-proxy"], found["kube-scheduler"])


TOOLS_ENV = "ZETA_ROUTER_TOOLS_BIN"


def tools_dir() -> Path:
    """Where `make tools` (scripts/fetch-helm-kubectl.sh) puts helm and kubectl:
    ``$ZETA_ROUTER_TOOLS_BIN`` when set, else ``<cache>/tools/bin``."""
    explicit = os.environ.get(TOOLS_ENV)
    return Path(explicit) if explicit else cache_root() / "tools" / "bin"


def find_tool(name: str) -> Path:
    """The path of ``helm`` or ``kubectl``; a :class:`MissingBinaryError` says how to get it."""
    path = tools_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(
            f"{name} not found at {path}: run `make tools` (it fetches helm and kubectl), or "
            f"point ${TOOLS_ENV} at a directory holding them"
        )
    return path
