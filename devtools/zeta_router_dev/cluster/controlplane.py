"""A real Kubernetes control plane on this machine: etcd, kube-apiserver and
kube-controller-manager as background processes, with their data, keys, logs, kubeconfig and
PIDs under one state directory.

``LocalControlPlane(state_dir).up()`` is what `zeta-router cluster up` and the test fixtures
call; ``down()`` stops the processes by PID. By default everything listens on 127.0.0.1 and there
is no kubelet and no scheduler: pods of ZetaRouters are bound and marked ready by
``zeta_router_dev.local.kubelet``, which ``up()`` starts when asked to. For a real node
(``zeta_router_dev.cluster.node``) the apiserver listens on the node's bridge address instead
(``advertise_address``), so that pods reach it, directly and through the ``kubernetes`` Service.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeta_router_dev.cluster import pki as pki_mod
from zeta_router_dev.cluster.binaries import Binaries, cache_root, find_binaries
from zeta_router_dev.cluster.kubeconfig import build_kubeconfig, write_kubeconfig
from zeta_router_dev.cluster.processes import ProcessRecord, free_port, log_tail, spawn

STATE_FILE = "state.json"
# A range reserved for network testing (RFC 2544): no Service address can ever be a real
# network's. Pods of a real node live in 198.18.0.0/24 (zeta_router_dev.cluster.nodeconfig).
SERVICE_CLUSTER_IP_RANGE = "198.19.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
KUBELET_NODE_NAME = "zeta-local-node"
# Order matters: started in this order, stopped in the reverse one.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet")
_PORT_RETRIES = 3


def default_state_dir() -> Path:
    return cache_root() / "cluster"


def kubernetes_service_ip(service_range: str = SERVICE_CLUSTER_IP_RANGE) -> str:
    """The ClusterIP of the ``kubernetes`` Service: the first address of the Service range."""
    return str(next(ipaddress.ip_network(service_range).hosts()))


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message carries the failing log's tail."""


@dataclass
class ClusterState:
    state_dir: Path
    kubeconfig: Path
    server: str
    ca_cert: Path
    admin_token: str
    ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    address: str = "127.0.0.1"
    """Where the apiserver listens."""

    def save(self) -> None:
        data = {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "caCert": str(self.ca_cert),
            "adminToken": self.admin_token,
            "address": self.address,
            "ports": self.ports,
            "processes": {k: v.to_json() for k, v in self.processes.items()},
        }
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        try:
            data = json.loads((state_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            state_dir=state_dir,
            kubeconfig=Path(data["kubeconfig"]),
            server=str(data["server"]),
            ca_cert=Path(data["caCert"]),
            admin_token=str(data["adminToken"]),
            address=str(data.get("address", "127.0.0.1")),
            ports={str(k): int(v) for k, v in data.get("ports", {}).items()},
            processes={
                str(k): ProcessRecord.from_json(v) for k, v in data.get("processes", {}).items()
            },
        )


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    log: str


@dataclass(frozen=True)
class ClusterStatus:
    state_dir: Path
    exists: bool
    components: tuple[ComponentStatus, ...]
    ready: bool
    ready_detail: str
    kubeconfig: Path | None
    server: str | None

    @property
    def running(self) -> bool:
        return self.exists and self.ready and all(c.alive for c in self.components)


def _ssl_context(ca_cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_cert))


def _http_get(url: str, token: str | None, ctx: ssl.SSLContext | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (urllib.error.URLError, OSError, ValueError):
        # ValueError: a malformed URL from a damaged state file, which is "not running" too.
        return 0, b""


def _bind_failed(record: ProcessRecord) -> bool:
    tail = log_tail(record.log, 60).lower()
    return "address already in use" in tail or "bind: address" in tail


class LocalControlPlane:
    """The control plane under ``state_dir`` (default ``~/.cache/zeta-router/cluster``)."""

    def __init__(
        self,
        state_dir: Path | None = None,
        die_with_parent: bool = False,
        advertise_address: str | None = None,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        # True: the processes get SIGTERM when the thread that started them exits (the demo,
        # which must leave nothing behind); False: they outlive `zeta-router cluster up`.
        self.die_with_parent = die_with_parent
        # None: the apiserver listens on 127.0.0.1 only and the `kubernetes` Service has no
        # endpoints (nothing in a pod could reach it). An address (a real node's bridge): the
        # apiserver listens and advertises there, its certificate names it and the Service's
        # ClusterIP, and it reaches kubelets with a client certificate on their InternalIP.
        self.advertise_address = advertise_address

    @property
    def address(self) -> str:
        return self.advertise_address or "127.0.0.1"

    # ---- public API -------------------------------------------------------------------------

    def state(self) -> ClusterState | None:
        return ClusterState.load(self.state_dir)

    def status(self) -> ClusterStatus:
        st = self.state()
        if st is None:
            return ClusterStatus(self.state_dir, False, (), False, "not started", None, None)
        comps = tuple(
            ComponentStatus(name, rec.pid, rec.alive(), rec.log)
            for name, rec in sorted(
                st.processes.items(),
                key=lambda kv: COMPONENTS.index(kv[0]) if kv[0] in COMPONENTS else 99,
            )
        )
        code, body = 0, b""
        if not st.server:
            # A start interrupted before the apiserver got its port: `up` wipes and restarts.
            detail = "apiserver never started (an interrupted start)"
        else:
            try:
                ctx = _ssl_context(st.ca_cert)
            except (OSError, ssl.SSLError):
                pass  # keys gone or unreadable: a broken state directory
            else:
                code, body = _http_get(f"{st.server}/readyz", st.admin_token, ctx)
            detail = body.decode(errors="replace").strip() if code else "apiserver unreachable"
        return ClusterStatus(
            self.state_dir, True, comps, code == 200, detail, st.kubeconfig, st.server
        )

    def up(
        self,
        timeout: float = 180.0,
        kubelet: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> ClusterState:
        """Start everything and wait until the apiserver is ready and the controller-manager has
        created the default service account's token. Reuses a control plane that is already
        running from this state directory; a stopped or broken one is wiped and started anew."""
        say = log or (lambda _msg: None)
        current = self.status()
        if current.running:
            st = self.state()
            assert st is not None
            if kubelet and "kubelet" not in st.processes:
                self._start_kubelet(st)
                st.save()
            say(f"control plane already running ({st.server})")
            return st
        if current.exists:
            say("removing a stopped or incomplete control plane")
            self.down()
        binaries = find_binaries()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        deadline = time.monotonic() + timeout
        say("generating certificates and tokens")
        extra_ips = [self.address, kubernetes_service_ip()] if self.advertise_address else []
        keys = pki_mod.generate(self.state_dir / "pki", extra_ips)
        st = ClusterState(
            state_dir=self.state_dir,
            kubeconfig=self.state_dir / "kubeconfig",
            server="",
            ca_cert=keys.ca_cert,
            admin_token=keys.admin_token,
            address=self.address,
        )
        st.save()
        try:
            say("starting etcd")
            self._start_etcd(st, binaries, deadline)
            say("starting kube-apiserver")
            self._start_apiserver(st, binaries, keys, deadline)
            write_kubeconfig(
                st.kubeconfig,
                build_kubeconfig(st.server, keys.ca_cert.read_bytes(), keys.admin_token),
            )
            say("starting kube-controller-manager")
            self._start_controller_manager(st, binaries, keys, deadline)
            if kubelet:
                self._start_kubelet(st)
                st.save()
        except BaseException:
            self.down(keep_files=True)
            raise
        return st

    def down(self, keep_files: bool = False) -> list[str]:
        """Stop every recorded process (reverse start order) and, unless ``keep_files``, remove
        the state directory. Returns the names of the processes that were running."""
        st = self.state()
        stopped: list[str] = []
        if st is not None:
            for name in reversed(COMPONENTS):
                rec = st.processes.get(name)
                if rec is None:
                    continue
                if rec.alive():
                    stopped.append(name)
                rec.stop()
        if not keep_files and (self.state_dir / STATE_FILE).exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        elif st is not None:
            st.processes.clear()
            st.save()
        return stopped

    # ---- components -------------------------------------------------------------------------

    def _wait(
        self,
        rec: ProcessRecord,
        check: Callable[[], bool],
        deadline: float,
        what: str,
    ) -> bool:
        """Poll ``check`` until it holds. False when the process died of a port clash (the caller
        retries on other ports); raises on any other failure."""
        delay = 0.1
        while time.monotonic() < deadline:
            if check():
                return True
            if not rec.alive():
                if _bind_failed(rec):
                    return False
                raise ControlPlaneError(
                    f"{rec.name} exited while starting; last lines of {rec.log}:\n"
                    f"{log_tail(rec.log)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        raise ControlPlaneError(
            f"timed out waiting for {what}; last lines of {rec.log}:\n{log_tail(rec.log)}"
        )

    def _spawn_with_ports(
        self,
        st: ClusterState,
        name: str,
        port_names: Sequence[str],
        argv_for: Callable[[dict[str, int]], list[str]],
        ready_for: Callable[[dict[str, int]], Callable[[], bool]],
        deadline: float,
    ) -> None:
        # Ports are picked by the OS and released before the program binds them, so another
        # process can take one in between; then the start is retried on new ports.
        log_path = self.state_dir / "logs" / f"{name}.log"
        for _attempt in range(_PORT_RETRIES):
            ports = {p: free_port() for p in port_names}
            rec = spawn(name, argv_for(ports), log_path, die_with_parent=self.die_with_parent)
            st.processes[name] = rec
            st.ports.update(ports)
            st.save()
            if self._wait(rec, ready_for(ports), deadline, f"{name} to become ready"):
                return
            rec.stop()
        raise ControlPlaneError(f"{name}: no free port after {_PORT_RETRIES} attempts")

    def _start_etcd(self, st: ClusterState, b: Binaries, deadline: float) -> None:
        data_dir = self.state_dir / "etcd"

        def argv(ports: dict[str, int]) -> list[str]:
            if data_dir.exists():
                shutil.rmtree(data_dir)
            client = f"http://127.0.0.1:{ports['etcd-client']}"
            peer = f"http://127.0.0.1:{ports['etcd-peer']}"
            return [
                str(b.etcd),
                "--name=zeta",
                f"--data-dir={data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=zeta={peer}",
                "--initial-cluster-state=new",
                "--snapshot-count=10000",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=10m",
                "--logger=zap",
                "--log-level=warn",
            ]

        def ready(ports: dict[str, int]) -> Callable[[], bool]:
            url = f"http://127.0.0.1:{ports['etcd-client']}/health"

            def check() -> bool:
                code, body = _http_get(url, None, None)
                return code == 200 and b'"true"' in body

            return check

        self._spawn_with_ports(st, "etcd", ["etcd-client", "etcd-peer"], argv, ready, deadline)

    def _start_apiserver(
        self, st: ClusterState, b: Binaries, keys: pki_mod.Pki, deadline: float
    ) -> None:
        etcd_url = f"http://127.0.0.1:{st.ports['etcd-client']}"
        ctx = _ssl_context(keys.ca_cert)
        address = self.address
        if self.advertise_address:
            kubelet_client = pki_mod.issue_client_cert(
                keys.ca_cert,
                keys.ca_key,
                keys.ca_cert.parent,
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                "system:masters",
            )
            node_flags = [
                # The kubelet checks this certificate (x509 authentication, Webhook
                # authorization); it listens on the node's InternalIP, the bridge address.
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            node_flags = [
                # Nothing can reach 127.0.0.1 from a pod, and Endpoints refuse loopback
                # addresses: the `kubernetes` Service keeps no endpoints here.
                "--endpoint-reconciler-type=none",
            ]

        def argv(ports: dict[str, int]) -> list[str]:
            return [
                str(b.kube_apiserver),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={address}",
                f"--advertise-address={address}",
                f"--secure-port={ports['apiserver']}",
                "--insecure-port=0",
                f"--cert-dir={keys.ca_cert.parent}",
                f"--tls-cert-file={keys.serving_cert}",
                f"--tls-private-key-file={keys.serving_key}",
                f"--client-ca-file={keys.ca_cert}",
                f"--token-auth-file={keys.tokens_csv}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={keys.sa_pub}",
                f"--service-account-signing-key-file={keys.sa_key}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                *node_flags,
                "--allow-privileged=true",
                "--profiling=false",
                "--event-ttl=1h",
                "--v=1",
            ]

        def ready(ports: dict[str, int]) -> Callable[[], bool]:
            url = f"https://{address}:{ports['apiserver']}/readyz"
            return lambda: _http_get(url, keys.admin_token, ctx)[0] == 200

        self._spawn_with_ports(st, "kube-apiserver", ["apiserver"], argv, ready, deadline)
        st.server = f"https://{address}:{st.ports['apiserver']}"
        st.save()

    def _start_controller_manager(
        self, st: ClusterState, b: Binaries, keys: pki_mod.Pki, deadline: float
    ) -> None:
        cm_kubeconfig = write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig",
            build_kubeconfig(st.server, keys.ca_cert.read_bytes(), keys.controller_manager_token),
        )
        argv = [
            str(b.kube_controller_manager),
            f"--kubeconfig={cm_kubeconfig}",
            # Every default controller (garbage collector, deployment, replicaset, namespace,
            # serviceaccount, serviceaccount-token, endpoint, node lifecycle, ...).
            "--controllers=*",
            f"--service-account-private-key-file={keys.sa_key}",
            f"--root-ca-file={keys.ca_cert}",
            f"--cluster-signing-cert-file={keys.ca_cert}",
            f"--cluster-signing-key-file={keys.ca_key}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--port=0",
            "--secure-port=0",
            # Above the defaults (20/30): reconciling a hundred routers creates hundreds of
            # ReplicaSets and pods in a burst.
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--v=1",
        ]
        rec = spawn(
            "kube-controller-manager",
            argv,
            self.state_dir / "logs" / "kcm.log",
            die_with_parent=self.die_with_parent,
        )
        st.processes["kube-controller-manager"] = rec
        st.save()
        # Pods are admitted only once their service account has a token, which the
        # controller-manager creates: that is the sign it is working.
        url = f"{st.server}/api/v1/namespaces/default/serviceaccounts/default"
        ctx = _ssl_context(keys.ca_cert)

        def check() -> bool:
            code, body = _http_get(url, keys.admin_token, ctx)
            if code != 200:
                return False
            secrets: list[Any] = json.loads(body).get("secrets") or []
            return len(secrets) > 0

        if not self._wait(rec, check, deadline, "the default service account token"):
            raise ControlPlaneError(
                f"kube-controller-manager failed to start:\n{log_tail(rec.log)}"
            )

    def _start_kubelet(self, st: ClusterState) -> None:
        argv = [
            sys.executable,
            "-m",
            "zeta_router_dev.local.kubelet",
            f"--kubeconfig={st.kubeconfig}",
            f"--node-name={KUBELET_NODE_NAME}",
        ]
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        st.processes["kubelet"] = spawn(
            "kubelet",
            argv,
            self.state_dir / "logs" / "kubelet.log",
            env=env,
            die_with_parent=self.die_with_parent,
        )
