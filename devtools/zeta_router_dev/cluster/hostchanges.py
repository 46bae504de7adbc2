"""What a real node changes on the machine, recorded before it changes anything and undone by
``cluster down``, even after a crash or a failed start.

The kubelet, kube-proxy, containerd and the CNI plugins change the host: kernel settings
(``vm.overcommit_memory``, ``kernel.panic``, ``route_localnet``, ``ip_forward``, ...), iptables
chains (``KUBE-*``, ``CNI-*``, in iptables and ip6tables), the pods' bridge and its veths,
network namespaces, ``kubepods`` cgroups, bind mounts (the kubelet mounts its root folder onto
itself; volumes and container root filesystems are mounts), and a few folders (containerd's
shim sockets, the CNI result cache, pod logs, iptables' lock file).

:class:`HostRecord` is the record (a JSON file in the node's state folder), taken by
:func:`record_host` at the start of ``up``; :func:`restore_host` undoes whatever differs from it,
touching only what was not there before. :func:`host_snapshot` describes the same things, so a
test can compare the machine before ``up`` and after ``down``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

SYSCTLS: Final = (
    # the kubelet (setupKernelTunables)
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    # the bridge plugin (isGateway) and kube-proxy
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.forwarding",
    "net.ipv6.conf.all.forwarding",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    # kube-proxy's conntrack settings (left alone by our configuration; restored if touched)
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)

WATCHED_PATHS: Final = (
    "/run/containerd",  # containerd 1.6 puts its shims' sockets in /run/containerd/s
    "/var/lib/cni",  # libcni's result cache
    "/var/log/pods",  # the kubelet's container logs
    "/var/log/containers",
    "/run/xtables.lock",  # iptables -w
    "/run/mount",  # libmount's utab (mount and umount write it)
    "/run/netns",
    "/opt/containerd",
    "/opt/cni",
    "/etc/cni",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/etc/kubernetes",
)
CHAIN_PREFIXES: Final = ("KUBE-", "CNI-")
IPTABLES: Final = ("iptables", "ip6tables")
TABLES: Final = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
POD_CGROUP: Final = "kubepods"
_MAX_TREE_ENTRIES = 5000

Say = Callable[[str], None]


# ---- reading the machine ---------------------------------------------------------------------


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str) -> str | None:
    try:
        return " ".join(sysctl_path(key).read_text().split())
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    sysctl_path(key).write_text(value + "\n")


def tree(path: Path) -> list[str] | None:
    """Entries under ``path`` (relative, sorted; ``[]`` for a file), ``None`` when absent."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_dir() or path.is_symlink():
        return []
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = Path(dirpath).relative_to(path)
        for name in dirnames + filenames:
            out.append(str(rel / name) if str(rel) != "." else name)
            if len(out) > _MAX_TREE_ENTRIES:
                return sorted(out)
    return sorted(out)


def run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)


def iptables_rules(binary: str, table: str) -> list[str]:
    """``-S`` rules of a table (``[]`` when the binary or table is unavailable)."""
    if shutil.which(binary) is None:
        return []
    proc = run([binary, "-w", "-t", table, "-S"])
    return proc.stdout.splitlines() if proc.returncode == 0 else []


def chains_of(rules: Iterable[str], prefixes: tuple[str, ...] = CHAIN_PREFIXES) -> list[str]:
    """User chains (``-N NAME``) whose names start with one of ``prefixes``."""
    return sorted(
        r.split()[1]
        for r in rules
        if r.startswith("-N ") and len(r.split()) > 1 and r.split()[1].startswith(prefixes)
    )


def jumps_to(rule: str, chains: set[str]) -> bool:
    words = rule.split()
    for flag in ("-j", "-g"):
        if flag in words:
            i = words.index(flag)
            if i + 1 < len(words) and words[i + 1] in chains:
                return True
    return False


def pod_cgroups(root: Path = CGROUP_ROOT) -> list[str]:
    """The ``kubepods`` cgroup of each hierarchy that has one."""
    found = []
    with contextlib.suppress(OSError):
        if (root / POD_CGROUP).is_dir():
            found.append(str(root / POD_CGROUP))
        for controller in sorted(root.iterdir()):
            candidate = controller / POD_CGROUP
            if candidate.is_dir():
                found.append(str(candidate))
    return found


def mountpoints() -> list[str]:
    """Every mount point of this mount namespace (octal escapes of /proc decoded)."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split()
            if len(parts) > 4:
                out.append(_unescape(parts[4]))
    return out


def _unescape(text: str) -> str:
    return (text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")).replace(
        "\\134", "\\"
    )


def under(path: str, prefixes: Iterable[Path | str]) -> bool:
    """Whether ``path`` is one of ``prefixes`` or inside one."""
    for prefix in prefixes:
        base = str(prefix).rstrip("/") or "/"
        if path == base or path.startswith(base.rstrip("/") + "/"):
            return True
    return False


def links() -> list[dict[str, Any]]:
    proc = run(["ip", "-j", "-d", "link", "show"])
    if proc.returncode != 0:
        return []
    data: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return data


def link_kind(link: Mapping[str, Any]) -> str:
    info = link.get("linkinfo") or {}
    return str(info.get("info_kind") or "")


# ---- the record -------------------------------------------------------------------------------


@dataclass
class HostRecord:
    """The machine as it was before a node started, and what the node itself created."""

    sysctls: dict[str, str | None] = field(default_factory=dict)
    paths: dict[str, list[str] | None] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    cgroups: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    created_links: list[str] = field(default_factory=list)
    owned_dirs: list[str] = field(default_factory=list)
    """Folders of the node (state and runtime): every mount under them goes on ``down``."""

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1, sort_keys=True))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> HostRecord | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def record_host(owned_dirs: Sequence[Path]) -> HostRecord:
    """The machine now, before the node starts."""
    chains = {
        f"{binary}/{table}": chains_of(iptables_rules(binary, table))
        for binary in IPTABLES
        for table in TABLES
    }
    return HostRecord(
        sysctls={key: read_sysctl(key) for key in SYSCTLS},
        paths={p: tree(Path(p)) for p in WATCHED_PATHS},
        chains=chains,
        cgroups=pod_cgroups(),
        links=sorted(str(link.get("ifname")) for link in links()),
        owned_dirs=[str(d) for d in owned_dirs],
    )


# ---- undoing ----------------------------------------------------------------------------------


def kill_pod_processes(cgroups: Iterable[str]) -> int:
    """SIGKILL every process left in the given cgroup trees (containers whose runtime is gone);
    returns how many were signalled."""
    pids: set[int] = set()
    for root in cgroups:
        for dirpath, _dirs, _files in os.walk(root):
            with contextlib.suppress(OSError):
                for line in (Path(dirpath) / "cgroup.procs").read_text().split():
                    pids.add(int(line))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def remove_cgroups(cgroups: Iterable[str], say: Say) -> None:
    """rmdir each cgroup tree, deepest first, once its processes are gone."""
    for root in cgroups:
        if not Path(root).is_dir():
            continue
        deadline = time.monotonic() + 10
        while True:
            left = []
            for dirpath, _dirs, _files in sorted(
                os.walk(root), key=lambda e: -len(Path(e[0]).parts)
            ):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    left.append(dirpath)
            if not left or time.monotonic() > deadline:
                break
            kill_pod_processes([root])
            time.sleep(0.2)
        if Path(root).exists():
            say(f"could not remove cgroup {root} (processes still in it?)")


def unmount_under(prefixes: Sequence[str], say: Say) -> None:
    """Unmount every mount point under ``prefixes``, deepest first (lazily if busy)."""
    for _ in range(5):
        points = [m for m in mountpoints() if under(m, prefixes)]
        if not points:
            return
        for point in sorted(set(points), key=lambda m: -m.count("/")):
            if run(["umount", point]).returncode != 0:
                run(["umount", "-l", point])
    left = [m for m in mountpoints() if under(m, prefixes)]
    if left:
        say(f"mounts left: {', '.join(left)}")


def remove_chains(record: HostRecord, say: Say) -> None:
    """Delete the ``KUBE-*``/``CNI-*`` chains that were not there before, and the rules of
    other chains that jump to them (iptables and ip6tables, every table)."""
    for binary in IPTABLES:
        if shutil.which(binary) is None:
            continue
        for table in TABLES:
            before = set(record.chains.get(f"{binary}/{table}", []))
            rules = iptables_rules(binary, table)
            ours = set(chains_of(rules)) - before
            if not ours:
                continue
            for rule in rules:
                if rule.startswith("-A ") and rule.split()[1] not in ours and jumps_to(rule, ours):
                    # `-S` prints rules shell-quoted (comments hold quotes of their own).
                    words = shlex.split(rule)
                    run([binary, "-w", "-t", table, "-D", *words[1:]])
            for chain in ours:
                run([binary, "-w", "-t", table, "-F", chain])
            for chain in ours:
                proc = run([binary, "-w", "-t", table, "-X", chain])
                if proc.returncode != 0:
                    say(f"{binary} -t {table} -X {chain}: {proc.stderr.strip()}")


def remove_links(record: HostRecord, bridge: str, say: Say) -> None:
    """Delete the veths on our bridge and the links the node created."""
    for link in links():
        name = str(link.get("ifname"))
        if link.get("master") == bridge and link_kind(link) == "veth":
            run(["ip", "link", "del", name])
    for name in record.created_links:
        if any(str(link.get("ifname")) == name for link in links()):
            proc = run(["ip", "link", "del", name])
            if proc.returncode != 0:
                say(f"ip link del {name}: {proc.stderr.strip()}")


def remove_new_entries(path: str, before: list[str] | None, say: Say) -> None:
    """Return ``path`` to how it was: removed if it was absent, else new entries removed."""
    p = Path(path)
    if before is None:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)
        if p.exists():
            say(f"could not remove {path}")
        return
    now = tree(p) or []
    known = set(before)
    for rel in sorted(set(now) - known, key=lambda r: -r.count("/")):
        target = p / rel
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                target.unlink()


def restore_sysctls(record: HostRecord, say: Say) -> None:
    # ip_forward resets every interface's forwarding flag: restore it before the others.
    keys = sorted(record.sysctls, key=lambda k: k != "net.ipv4.ip_forward")
    for key in keys:
        value = record.sysctls[key]
        if value is None:
            continue
        now = read_sysctl(key)
        if now is not None and now != value:
            try:
                write_sysctl(key, value)
            except OSError as e:
                say(f"could not restore {key}={value} (now {now}): {e}")


def restore_host(record: HostRecord, bridge: str, say: Say) -> None:
    """Undo everything the node changed (best effort: every step runs, problems are told)."""
    steps: list[tuple[str, Callable[[], object]]] = [
        ("pod processes", lambda: kill_pod_processes(set(pod_cgroups()) - set(record.cgroups))),
        ("mounts", lambda: unmount_under(record.owned_dirs, say)),
        ("iptables chains", lambda: remove_chains(record, say)),
        ("links", lambda: remove_links(record, bridge, say)),
        ("cgroups", lambda: remove_cgroups(set(pod_cgroups()) - set(record.cgroups), say)),
        ("sysctls", lambda: restore_sysctls(record, say)),
    ]
    for path, before in record.paths.items():
        steps.append((path, _remover(path, before, say)))
    for name, step in steps:
        try:
            step()
        except Exception as e:
            say(f"restoring {name} failed: {e}")


def _remover(path: str, before: list[str] | None, say: Say) -> Callable[[], None]:
    return lambda: remove_new_entries(path, before, say)


def leftovers(record: HostRecord, bridge: str) -> list[str]:
    """What still differs from the record (empty when the machine is as it was)."""
    out = []
    for key, value in record.sysctls.items():
        current = read_sysctl(key)
        if value is not None and current != value:
            out.append(f"sysctl {key}={current} (was {value})")
    for binary in IPTABLES:
        for table in TABLES:
            extra = set(chains_of(iptables_rules(binary, table))) - set(
                record.chains.get(f"{binary}/{table}", [])
            )
            if extra:
                out.append(f"{binary} -t {table} chains {', '.join(sorted(extra))}")
    names = {str(link.get("ifname")) for link in links()}
    if bridge in names and bridge not in record.links:
        out.append(f"link {bridge}")
    for cg in set(pod_cgroups()) - set(record.cgroups):
        out.append(f"cgroup {cg}")
    for m in mountpoints():
        if under(m, record.owned_dirs):
            out.append(f"mount {m}")
    for path, entries in record.paths.items():
        now = tree(Path(path))
        if (now is None) != (entries is None) or (
            now is not None and entries is not None and set(now) - set(entries)
        ):
            out.append(f"path {path}")
    return out


# ---- a description for tests ------------------------------------------------------------------


def host_snapshot(owned_dirs: Sequence[Path | str] = ()) -> dict[str, Any]:
    """What a node may change, read from the machine: equal before ``up`` and after ``down``
    when the node left nothing behind. Network settings are read wide (every ``all``/
    ``default`` interface setting and the bridge netfilter switches), beyond :data:`SYSCTLS`."""
    sysctls: dict[str, str | None] = {k: read_sysctl(k) for k in SYSCTLS}
    for folder in (
        "net/ipv4/conf/all",
        "net/ipv4/conf/default",
        "net/ipv6/conf/all",
        "net/ipv6/conf/default",
        "net/bridge",
    ):
        base = Path("/proc/sys") / folder
        with contextlib.suppress(OSError):
            for f in sorted(base.iterdir()):
                key = f"{folder.replace('/', '.')}.{f.name}"
                with contextlib.suppress(OSError):
                    sysctls[key] = " ".join(f.read_text().split())
    rules = {
        f"{binary}/{table}": iptables_rules(binary, table)
        for binary in IPTABLES
        for table in TABLES
    }
    return {
        "sysctls": sysctls,
        "iptables": rules,
        "links": sorted(
            str(link.get("ifname"))
            for link in links()
            if link_kind(link) in ("bridge", "veth", "vxlan", "dummy")
        ),
        "routes": run(["ip", "-4", "route", "show", "table", "main"]).stdout.splitlines(),
        "cgroups": pod_cgroups(),
        "mounts": sorted(
            m
            for m in mountpoints()
            if under(m, [*owned_dirs, "/run/netns", "/var/lib/kubelet", "/run/containerd"])
        ),
        "paths": {p: tree(Path(p)) for p in WATCHED_PATHS},
    }
