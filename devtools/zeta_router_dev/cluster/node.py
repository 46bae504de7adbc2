"""A real single-node Kubernetes 1.20 on this machine: the local control plane plus containerd
and runc (Debian), the kubelet, kube-proxy (iptables) and kube-scheduler (the same build as the
control plane), a CNI bridge, and a small cluster DNS. Pods run from images built here
(``zeta_router_dev.images``), loaded into containerd; there is no registry.

``RealNode(state_dir).up()`` is what ``zeta-router cluster up --node real``, the test fixtures
and the demo call; ``down()`` stops everything by PID and undoes every change to the machine
(``hostchanges``), also after a crash or a failed start. One real node per machine: ``up``
takes the host-wide lock (``lock``) and keeps it until ``down``.

Order of ``up``: lock -> record the machine -> bridge -> control plane (its apiserver on the
bridge address) -> credentials -> containerd (+ images) -> kubelet, kube-scheduler, kube-proxy,
cluster DNS -> wait until the node is Ready, kube-proxy answers for the ``kubernetes`` Service
and the DNS resolves it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import yaml

from zeta_router_dev.cluster import hostchanges, lock, nodeconfig, pki
from zeta_router_dev.cluster.binaries import (
    MissingBinaryError,
    NodeBinaries,
    cache_root,
    find_binaries,
    find_node_binaries,
)
from zeta_router_dev.cluster.controlplane import (
    SERVICE_CLUSTER_IP_RANGE,
    ClusterState,
    ControlPlaneError,
    LocalControlPlane,
    kubernetes_service_ip,
)
from zeta_router_dev.cluster.kubeconfig import write_kubeconfig
from zeta_router_dev.cluster.nodeconfig import (
    BRIDGE,
    BRIDGE_ADDRESS,
    CLUSTER_DOMAIN,
    NODE_NAME,
    RUN_DIR,
    NodeLayout,
)
from zeta_router_dev.cluster.processes import ProcessRecord, log_tail, spawn
from zeta_router_dev.images.build import (
    IMAGE_NAMES,
    PAUSE_IMAGE,
    BuiltImage,
    ImageBuilder,
    ImageBuildError,
    load_images,
    loaded_images,
)

NODE_STATE: Final = "node.json"
HOST_RECORD: Final = "host.json"
OWNER_FILE: Final = RUN_DIR / "owner"
RUN_RECORD: Final = RUN_DIR / HOST_RECORD
"""A copy of the host record next to the owner, for when the node's own folder is gone."""
"""Names the state folder of the node that made the machine's changes (a later ``up`` cleans
up after a node that was never brought down)."""
# Started in this order, stopped in the reverse one (the control plane and the lock apart).
NODE_COMPONENTS: Final = ("containerd", "kubelet", "kube-scheduler", "kube-proxy", "cluster-dns")

Say = Callable[[str], None]


def default_node_dir() -> Path:
    return cache_root() / "node"


def default_image_store() -> Path:
    return cache_root() / "containerd"


def unavailable_reason() -> str | None:
    """Why a real node cannot start here now (``None``: it can): not root, programs or images
    missing, or the machine's one real node already taken."""
    if os.geteuid() != 0:
        return "it needs root"
    try:
        find_node_binaries()
        find_binaries()
    except MissingBinaryError as e:
        return str(e)
    index = ImageBuilder().index()
    missing = [n for n in IMAGE_NAMES if n not in index or not Path(index[n].archive).is_file()]
    if missing:
        return f"images not built ({', '.join(missing)}): run `make images`"
    if lock.holder() is not None and not lock.held_by_ancestor():
        return lock.busy_message()
    return None


class NodeError(RuntimeError):
    """The real node could not be started or stopped; the message says why and what to do."""


@dataclass
class NodeState:
    state_dir: Path
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    kubeconfig: str = ""
    server: str = ""
    images: list[str] = field(default_factory=list)
    ready_seconds: float | None = None

    def save(self) -> None:
        data = {
            "kubeconfig": self.kubeconfig,
            "server": self.server,
            "images": self.images,
            "readySeconds": self.ready_seconds,
            "processes": {k: v.to_json() for k, v in self.processes.items()},
        }
        path = self.state_dir / NODE_STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> NodeState | None:
        try:
            data = json.loads((state_dir / NODE_STATE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            state_dir=state_dir,
            processes={
                str(k): ProcessRecord.from_json(v) for k, v in data.get("processes", {}).items()
            },
            kubeconfig=str(data.get("kubeconfig", "")),
            server=str(data.get("server", "")),
            images=[str(i) for i in data.get("images", [])],
            ready_seconds=data.get("readySeconds"),
        )


@dataclass(frozen=True)
class NodeInfo:
    """A running node: what clients need."""

    state_dir: Path
    kubeconfig: Path
    server: str
    ca_cert: Path
    admin_token: str
    ready_seconds: float


@dataclass(frozen=True)
class NodeStatus:
    state_dir: Path
    exists: bool
    components: tuple[tuple[str, int, bool, str], ...]
    node_ready: bool
    detail: str
    kubeconfig: str

    @property
    def running(self) -> bool:
        return self.exists and self.node_ready and all(c[2] for c in self.components)


def _ssl_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _get(url: str, token: str, ctx: ssl.SSLContext, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout)


def _must(argv: Sequence[str], what: str) -> str:
    proc = _run(argv)
    if proc.returncode != 0:
        raise NodeError(f"{what}: `{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout


class RealNode:
    """The real node whose files live under ``state_dir`` (default ``<cache>/node``)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        die_with_parent: bool = False,
        image_store: Path | None = None,
    ) -> None:
        self.state_dir = (state_dir or default_node_dir()).resolve()
        # One store for every node of this machine (one runs at a time): images unpacked once.
        self.layout = NodeLayout(
            self.state_dir, image_store=(image_store or default_image_store()).resolve()
        )
        self.die_with_parent = die_with_parent

    @property
    def plane(self) -> LocalControlPlane:
        return LocalControlPlane(
            self.layout.cluster_dir,
            die_with_parent=self.die_with_parent,
            advertise_address=BRIDGE_ADDRESS,
        )

    def state(self) -> NodeState | None:
        return NodeState.load(self.state_dir)

    # ---- status -------------------------------------------------------------------------------

    def status(self) -> NodeStatus:
        st = self.state()
        if st is None:
            return NodeStatus(self.state_dir, False, (), False, "not started", "")
        comps = tuple(
            (name, rec.pid, rec.alive(), rec.log)
            for name, rec in st.processes.items()
            if name != "lock"
        )
        plane = self.plane.status()
        comps = tuple((c.name, c.pid, c.alive, c.log) for c in plane.components) + comps
        cluster = self.plane.state()
        ready, detail = False, "apiserver unreachable"
        if cluster is not None and plane.ready:
            ready, detail = self._node_ready(cluster)
        return NodeStatus(self.state_dir, True, comps, ready, detail, st.kubeconfig)

    def _node_ready(self, cluster: ClusterState) -> tuple[bool, str]:
        try:
            ctx = _ssl_context(cluster.ca_cert)
        except (OSError, ssl.SSLError):
            return False, "cluster keys unreadable"
        code, body = _get(f"{cluster.server}/api/v1/nodes/{NODE_NAME}", cluster.admin_token, ctx)
        if code != 200:
            return False, f"node {NODE_NAME} not registered"
        conds = {
            c["type"]: c for c in (json.loads(body).get("status") or {}).get("conditions") or []
        }
        ready = conds.get("Ready") or {}
        if ready.get("status") == "True":
            return True, f"node {NODE_NAME} Ready"
        return False, f"node {NODE_NAME} not Ready: {ready.get('message') or 'no status yet'}"

    # ---- up -----------------------------------------------------------------------------------

    def up(
        self,
        timeout: float = 300.0,
        lock_wait: float = 0.0,
        images: Sequence[BuiltImage] | None = None,
        log: Say | None = None,
        take_lock: bool = True,
    ) -> NodeInfo:
        """Start the node (or return the one already running from this state folder) and wait
        until it is Ready and serves Services. ``images``: what to load into containerd
        (default: the images ``make images`` built). ``take_lock=False``: the caller already
        holds the host-wide lock (``lock.held``). A failure leaves the machine as it was."""
        t0 = time.monotonic()
        tell = log or (lambda _m: None)

        def say(msg: str) -> None:
            tell(f"[{time.monotonic() - t0:5.1f}s] {msg}")

        current = self.status()
        if current.running:
            say(f"real node already running ({self.state_dir})")
            return self._info()
        if os.geteuid() != 0:
            raise NodeError(
                "the real node needs root (it runs containerd and the kubelet, and changes "
                "iptables, sysctls and network interfaces); run it as root, or use "
                "`--node standin`"
            )
        binaries = find_node_binaries()
        find_binaries()  # etcd and the control plane, checked before anything starts
        chosen = list(images) if images is not None else self._built_images()
        if current.exists:
            say("removing a stopped or incomplete real node")
            self.down(log=say)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        st = NodeState(self.state_dir)
        if take_lock and lock.held_by_ancestor():
            say(f"the real node lock {lock.LOCK_PATH} is held by a process this one runs under")
        elif take_lock:
            try:
                st.processes["lock"] = self._take_lock(lock_wait, say)
            except lock.NodeLockBusyError as e:
                raise NodeError(str(e)) from e
        st.save()
        deadline = time.monotonic() + timeout
        try:
            self.clean_after_stale_node(say)
            record = hostchanges.record_host([self.state_dir, RUN_DIR, self.layout.containerd_root])
            record.save(self.state_dir / HOST_RECORD)
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            OWNER_FILE.write_text(str(self.state_dir) + "\n")
            record.save(RUN_RECORD)
            say(f"creating the bridge {BRIDGE} ({BRIDGE_ADDRESS}/{nodeconfig.bridge_prefix()})")
            self._make_bridge(record)
            say("starting the control plane")
            cluster = self.plane.up(timeout=max(deadline - time.monotonic(), 10), kubelet=False)
            st.kubeconfig, st.server = str(cluster.kubeconfig), cluster.server
            st.save()
            self._write_config(cluster)
            say("starting containerd")
            self._start_containerd(st, deadline)
            say(
                f"loading images (imported once into {self.layout.containerd_root}): "
                f"{', '.join(i.ref for i in chosen)}"
            )
            self._load(chosen)
            st.images = [i.containerd_ref for i in chosen]
            st.save()
            say("starting the kubelet, kube-scheduler, kube-proxy and the cluster DNS")
            self._start_components(st, binaries)
            say("waiting for the node to be Ready and Services to answer")
            self._wait_ready(st, cluster, deadline)
        except BaseException as e:
            say(f"start failed ({e.__class__.__name__}: {e}); undoing every change")
            with contextlib.suppress(Exception):
                self.down(keep_files=True, log=say)
            if isinstance(e, ImageBuildError | ControlPlaneError | MissingBinaryError):
                raise NodeError(str(e)) from e
            raise
        st.ready_seconds = time.monotonic() - t0
        st.save()
        return self._info()

    def _built_images(self) -> list[BuiltImage]:
        index = ImageBuilder().index()
        missing = [n for n in IMAGE_NAMES if n not in index or not Path(index[n].archive).is_file()]
        if missing:
            raise NodeError(
                f"images not built: {', '.join(missing)}; build them with `make images` "
                "(zeta-router images build: a few minutes the first time, cached after)"
            )
        return [
            BuiltImage(n, index[n].ref, index[n].digest, index[n].archive, 0.0, True)
            for n in IMAGE_NAMES
        ]

    def _info(self) -> NodeInfo:
        cluster = self.plane.state()
        st = self.state()
        if cluster is None or st is None:
            raise NodeError(f"no real node in {self.state_dir}")
        return NodeInfo(
            self.state_dir,
            cluster.kubeconfig,
            cluster.server,
            cluster.ca_cert,
            cluster.admin_token,
            st.ready_seconds or 0.0,
        )

    def _take_lock(self, wait: float, say: Say) -> ProcessRecord:
        log_path = self.layout.logs / "lock.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        rec = spawn(
            "lock",
            [
                sys.executable, "-m", "zeta_router_dev.cluster.lock",
                "--state-dir", str(self.state_dir), "--wait", str(wait),
            ],
            log_path,
            die_with_parent=self.die_with_parent,
        )  # fmt: skip
        if wait > 0:
            say(f"waiting up to {wait:g}s for the real node lock {lock.LOCK_PATH}")
        deadline = time.monotonic() + wait + 30
        try:
            while time.monotonic() < deadline:
                text = log_path.read_text()
                if text.startswith("locked"):
                    return rec
                if not rec.alive():
                    raise lock.NodeLockBusyError(text.strip() or lock.busy_message())
                time.sleep(0.1)
            raise NodeError(f"the lock holder did not report in time; see {log_path}")
        except BaseException:
            # Whatever ends the wait (busy, too slow, a test's timeout, Ctrl-C), the holder we
            # started must not live on and take the lock for a node nobody starts.
            rec.stop()
            raise

    def clean_after_stale_node(self, say: Say) -> None:
        """A node that crashed or was never brought down left its changes: undo them first
        (the caller holds the lock).
        One that still runs (started under the same lock holder, `flock LOCK make test`) is
        refused instead: one real node per machine."""
        try:
            stale = Path(OWNER_FILE.read_text().strip())
        except OSError:
            stale = None
        if stale is not None and stale != self.state_dir:
            other = RealNode(stale)
            st = other.state()
            if st is not None and any(r.alive() for n, r in st.processes.items() if n != "lock"):
                raise NodeError(
                    f"a real node is already running on this machine, from {stale}: only one "
                    f"may run at a time (lock {lock.LOCK_PATH}); stop it with "
                    f"`zeta-router cluster down --state-dir {stale}`"
                )
            if (stale / HOST_RECORD).exists():
                say(f"cleaning up after the real node of {stale}, which was not brought down")
                other.down(keep_files=True, log=say)
            elif RUN_RECORD.exists():
                # Its folder is gone (a temporary folder someone removed): the copy of its
                # record in the runtime folder still says what to undo.
                say(f"cleaning up after the real node of {stale}, whose folder is gone")
                self._kill_orphan_shims()
                record = hostchanges.HostRecord.load(RUN_RECORD)
                if record is not None:
                    hostchanges.restore_host(record, BRIDGE, say)
                    hostchanges.remove_new_entries(
                        str(RUN_DIR), record.paths.get(str(RUN_DIR)), say
                    )
        if any(str(link.get("ifname")) == BRIDGE for link in hostchanges.links()):
            raise NodeError(
                f"the bridge {BRIDGE} exists but no node of ours is recorded as its owner; "
                f"remove it (`ip link del {BRIDGE}`) if nothing else uses it"
            )

    def _make_bridge(self, record: hostchanges.HostRecord) -> None:
        record.created_links.append(BRIDGE)
        record.save(self.state_dir / HOST_RECORD)
        record.save(RUN_RECORD)
        prefix = nodeconfig.bridge_prefix()
        _must(["ip", "link", "add", BRIDGE, "type", "bridge"], "creating the node's bridge")
        _must(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/{prefix}", "dev", BRIDGE], "bridge address")
        _must(["ip", "link", "set", BRIDGE, "up"], "bridge up")
        # Service addresses route to the bridge: kube-proxy's rules rewrite them to pods, and
        # one without rules yet stays on this machine instead of leaving by the default route.
        _must(
            ["ip", "route", "add", SERVICE_CLUSTER_IP_RANGE, "dev", BRIDGE],
            "routing the Service range to the bridge",
        )

    def _write_config(self, cluster: ClusterState) -> None:
        lay = self.layout
        for d in (lay.etc, lay.pki, lay.logs, lay.cni_conf_dir, lay.kubelet_root, RUN_DIR):
            d.mkdir(parents=True, exist_ok=True)
        ca_pem = cluster.ca_cert.read_bytes()
        ca_key = cluster.ca_cert.parent / "ca.key"
        identities = {
            **nodeconfig.COMPONENT_IDENTITIES,
            # Default RBAC binds the role system:kube-dns (read Services and Endpoints) to this
            # service account's user name, which a certificate can carry.
            "cluster-dns": ("system:serviceaccount:kube-system:kube-dns", ""),
        }
        for component, (user, group) in identities.items():
            cert = pki.issue_client_cert(cluster.ca_cert, ca_key, lay.pki, component, user, group)
            write_kubeconfig(
                lay.kubeconfig(component),
                nodeconfig.client_kubeconfig(cluster.server, ca_pem, cert.cert, cert.key, user),
            )
        lay.containerd_config.write_text(nodeconfig.containerd_config(lay, PAUSE_IMAGE))
        (lay.cni_conf_dir / f"10-{nodeconfig.CNI_NETWORK}.conflist").write_text(
            json.dumps(nodeconfig.cni_conflist(lay), indent=2)
        )
        lay.kubelet_config.write_text(
            yaml.safe_dump(nodeconfig.kubelet_config(lay, cluster.ca_cert), sort_keys=False)
        )
        lay.kube_proxy_config.write_text(
            yaml.safe_dump(nodeconfig.kube_proxy_config(lay), sort_keys=False)
        )

    def _spawn(self, st: NodeState, name: str, argv: list[str]) -> ProcessRecord:
        rec = spawn(
            name, argv, self.layout.logs / f"{name}.log", die_with_parent=self.die_with_parent
        )
        st.processes[name] = rec
        st.save()
        return rec

    def _start_containerd(self, st: NodeState, deadline: float) -> None:
        rec = self._spawn(
            st, "containerd", ["containerd", "--config", str(self.layout.containerd_config)]
        )
        sock = str(self.layout.containerd_socket)
        while time.monotonic() < deadline:
            if _run(["ctr", "--address", sock, "version"], timeout=10).returncode == 0:
                return
            if not rec.alive():
                raise NodeError(f"containerd exited; last lines of {rec.log}:\n{log_tail(rec.log)}")
            time.sleep(0.2)
        raise NodeError(f"containerd did not answer in time; see {rec.log}")

    def _start_components(self, st: NodeState, b: NodeBinaries) -> None:
        lay = self.layout
        self._spawn(st, "kubelet", nodeconfig.kubelet_args(lay, b.kubelet, PAUSE_IMAGE))
        self._spawn(st, "kube-scheduler", nodeconfig.kube_scheduler_args(lay, b.kube_scheduler))
        self._spawn(
            st, "kube-proxy", [str(b.kube_proxy), f"--config={lay.kube_proxy_config}", "--v=2"]
        )
        self._spawn(
            st,
            "cluster-dns",
            [
                sys.executable, "-m", "zeta_router_dev.cluster.dns",
                f"--kubeconfig={lay.kubeconfig('cluster-dns')}",
                f"--listen={BRIDGE_ADDRESS}", f"--domain={CLUSTER_DOMAIN}",
            ],
        )  # fmt: skip

    def _wait_ready(self, st: NodeState, cluster: ClusterState, deadline: float) -> None:
        from zeta_router_dev.cluster.dns import lookup

        ctx = _ssl_context(cluster.ca_cert)
        service_ip = kubernetes_service_ip()
        dns_name = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        checks: list[tuple[str, Callable[[], bool]]] = [
            (f"node {NODE_NAME} Ready", lambda: self._node_ready(cluster)[0]),
            (
                # Through kube-proxy's rules: the `kubernetes` Service's ClusterIP reaches the
                # apiserver, as it does from a pod.
                f"the kubernetes Service at https://{service_ip}:443",
                lambda: _get(f"https://{service_ip}/readyz", cluster.admin_token, ctx, 3)[0] == 200,
            ),
            (
                f"the cluster DNS to resolve {dns_name}",
                lambda: lookup(dns_name, BRIDGE_ADDRESS) == [service_ip],
            ),
        ]
        for what, check in checks:
            while not check():
                for name, rec in st.processes.items():
                    if not rec.alive():
                        raise NodeError(
                            f"{name} exited while waiting for {what}; last lines of {rec.log}:"
                            f"\n{log_tail(rec.log)}"
                        )
                if time.monotonic() > deadline:
                    raise NodeError(
                        f"timed out waiting for {what}; logs under {self.layout.logs} "
                        f"(kubelet: {log_tail(self.layout.logs / 'kubelet.log', 15)})"
                    )
                time.sleep(0.5)

    # ---- images -------------------------------------------------------------------------------

    def load_images(self, images: Sequence[BuiltImage]) -> None:
        """Import images into the running node's containerd."""
        st = self.state()
        rec = st.processes.get("containerd") if st else None
        if st is None or rec is None or not rec.alive():
            raise NodeError(f"no real node is running in {self.state_dir}")
        self._load(images)
        st.images = sorted(set(st.images) | {i.containerd_ref for i in images})
        st.save()

    def _load(self, images: Sequence[BuiltImage]) -> None:
        """Import what the image store does not have yet (by the images' input hashes)."""
        record_path = self.layout.containerd_root / "imported.json"
        try:
            imported: dict[str, str] = json.loads(record_path.read_text())
        except (OSError, ValueError):
            imported = {}
        sock, log = str(self.layout.containerd_socket), self.layout.logs / "ctr.log"
        present = set(loaded_images(sock, log))
        todo = [
            i
            for i in images
            if imported.get(i.containerd_ref) != i.digest or i.containerd_ref not in present
        ]
        load_images(sock, todo, log)
        imported.update({i.containerd_ref: i.digest for i in todo})
        record_path.write_text(json.dumps(imported, indent=1, sort_keys=True))
        present = set(loaded_images(sock, log))
        missing = [i.containerd_ref for i in images if i.containerd_ref not in present]
        if missing:
            raise NodeError(
                f"images not loaded into the node's containerd: {', '.join(missing)}; see {log}"
            )

    # ---- down ---------------------------------------------------------------------------------

    def down(self, keep_files: bool = False, log: Say | None = None) -> list[str]:
        """Stop everything by PID and restore the machine; safe after any failure. Returns the
        names of the processes that were running."""
        say = log or (lambda _m: None)
        st = self.state()
        record = hostchanges.HostRecord.load(self.state_dir / HOST_RECORD)
        stopped: list[str] = []
        if st is None and record is None:
            if not keep_files and self.state_dir.exists() and not any(self.state_dir.iterdir()):
                self.state_dir.rmdir()
            return stopped
        procs = st.processes if st else {}
        cluster = self.plane.state()
        kubelet = procs.get("kubelet")
        if kubelet is not None and kubelet.alive() and cluster is not None:
            say("deleting pods through the kubelet (so their networks are torn down)")
            self._drain(procs, cluster, say)
        for name in reversed(NODE_COMPONENTS):
            rec = procs.get(name)
            if rec is None:
                continue
            if name == "containerd" and rec.alive():
                self._remove_containers(say)
            if rec.alive():
                stopped.append(name)
            rec.stop(timeout=20)
        self._kill_orphan_shims()
        binaries = None
        with contextlib.suppress(MissingBinaryError):
            binaries = find_node_binaries()
        if binaries is not None:
            _run([str(binaries.kube_proxy), "--cleanup"], timeout=120)
        if record is not None:
            say("restoring the machine's settings")
            hostchanges.restore_host(record, BRIDGE, say)
        stopped += self.plane.down(keep_files=keep_files)
        with contextlib.suppress(OSError):
            if OWNER_FILE.read_text().strip() == str(self.state_dir):
                OWNER_FILE.unlink()
        if record is not None:
            hostchanges.remove_new_entries(str(RUN_DIR), record.paths.get(str(RUN_DIR)), say)
            left = hostchanges.leftovers(record, BRIDGE)
            for item in left:
                say(f"left behind: {item}")
        with contextlib.suppress(FileNotFoundError):
            if RUN_DIR.exists() and not any(RUN_DIR.iterdir()):
                RUN_DIR.rmdir()
        holder = procs.get("lock")
        if holder is not None:
            holder.stop()
        if keep_files:
            if st is not None:
                st.processes = {}
                st.save()
            (self.state_dir / HOST_RECORD).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return stopped

    def _drain(self, procs: dict[str, ProcessRecord], cluster: ClusterState, say: Say) -> None:
        from zeta_router.kube import ApiError, Kube, api_path

        # No new pod may be placed on the node meanwhile (controllers recreate what we delete).
        sched = procs.get("kube-scheduler")
        if sched is not None:
            sched.stop()
        try:
            kube = Kube.from_kubeconfig(cluster.kubeconfig)
            pods = kube.list(api_path("v1", "pods"))["items"]
            for pod in pods:
                meta = pod["metadata"]
                with contextlib.suppress(ApiError):
                    kube.delete(
                        api_path("v1", "pods", meta["namespace"], meta["name"]),
                        {"gracePeriodSeconds": 2},
                    )
        except Exception as e:
            say(f"could not delete pods through the API: {e}")
            return
        netns_dir = self.layout.netns_dir
        sock = str(self.layout.containerd_socket)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            tasks = _run(["ctr", "--address", sock, "-n", "k8s.io", "tasks", "ls", "-q"], 10)
            netns = list(netns_dir.iterdir()) if netns_dir.is_dir() else []
            if tasks.returncode == 0 and not tasks.stdout.strip() and not netns:
                return
            time.sleep(0.5)
        say("pods did not all stop within 90s; removing what is left directly")

    def _remove_containers(self, say: Say) -> None:
        sock = str(self.layout.containerd_socket)
        base = ["ctr", "--address", sock, "-n", "k8s.io"]
        tasks = _run([*base, "tasks", "ls", "-q"], 20).stdout.split()
        for task in tasks:
            _run([*base, "tasks", "kill", "-s", "SIGKILL", task], 20)
        for task in tasks:
            _run([*base, "tasks", "delete", "-f", task], 30)
        for container in _run([*base, "containers", "ls", "-q"], 20).stdout.split():
            _run([*base, "containers", "delete", container], 30)
        if tasks:
            say(f"killed {len(tasks)} container(s) the kubelet had not stopped")

    def _kill_orphan_shims(self) -> None:
        """containerd's shims outlive it; ours are the ones started for our socket."""
        marker = str(self.layout.containerd_socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"containerd-shim-runc-v2") and marker in cmdline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)
