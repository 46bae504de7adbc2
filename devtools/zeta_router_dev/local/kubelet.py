"""A kubelet stand-in for clusters without nodes (the local control plane): it registers one
fake Node, binds the Pending pods of ZetaRouters to it, reports them Running and Ready (no
container is started), and completes their graceful deletion, so Deployments, ReplicaSets,
Endpoints and the operator's status behave as on a real cluster.

A namespace labelled ``zeta.ai/kubelet-hold=true`` has its pods bound and Running but not
Ready, like model servers still loading; removing the label makes them Ready. Tests use it to
watch a ZetaRouter go from Progressing to Ready. With ``zeta.ai/kubelet-hold=new`` only pods
not Ready yet are held (those that serve keep serving), as during a rollout whose new pods are
still loading.

Run it as ``python -m zeta_router_dev.local.kubelet --kubeconfig FILE`` (what `zeta-router cluster
up` and the test fixtures do, through :class:`KubeletProcess`), or in-process with
:class:`KubeletStandIn`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from zeta_router.kube import STRATEGIC_MERGE_PATCH, ApiError, Kube, api_path
from zeta_router.render import names

log = logging.getLogger("zeta_router.kubelet")

MANAGED_SELECTOR = names.MANAGED_SELECTOR
HOLD_LABEL = "zeta.ai/kubelet-hold"
DEFAULT_NODE_NAME = "zeta-local-node"
NODE_IP = "127.0.0.1"
# Fake pod addresses: Endpoints refuse loopback addresses, so pods get distinct addresses in a
# range nobody routes to here.
POD_NETWORK = (10, 244)


class Action(Enum):
    NONE = "none"
    BIND = "bind"
    START = "start"  # set Running, Ready or not
    FINALIZE = "finalize"  # complete a graceful deletion, as the kubelet does


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            cond: Mapping[str, Any] = c
            return cond
    return None


def pod_is_ready(pod: Mapping[str, Any]) -> bool:
    cond = _condition(pod.get("status") or {}, "Ready")
    return cond is not None and cond.get("status") == "True"


def plan(pod: Mapping[str, Any], node_name: str, held: bool) -> Action:
    """What the kubelet would do next about ``pod`` (pure)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    bound_to = spec.get("nodeName")
    if meta.get("deletionTimestamp"):
        return Action.FINALIZE if bound_to == node_name else Action.NONE
    if not bound_to:
        return Action.BIND
    if bound_to != node_name or status.get("phase") in ("Succeeded", "Failed"):
        return Action.NONE
    if status.get("phase") != "Running" or pod_is_ready(pod) == held:
        return Action.START
    return Action.NONE


def pod_ip_for(uid: str, taken: set[str]) -> str:
    """A stable address for the pod, distinct from those in ``taken``."""
    h = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16)
    for i in range(65534):
        n = (h + i) % 65534 + 1
        ip = f"{POD_NETWORK[0]}.{POD_NETWORK[1]}.{n >> 8}.{n & 255}"
        if ip not in taken:
            return ip
    raise RuntimeError("pod network exhausted")


def build_pod_status(pod: Mapping[str, Any], ready: bool, pod_ip: str, now: str) -> dict[str, Any]:
    """The status a kubelet reports for a running pod whose containers are (not yet) ready."""
    old = pod.get("status") or {}
    flag = "True" if ready else "False"

    def cond(kind: str, value: str) -> dict[str, Any]:
        prev = _condition(old, kind)
        changed = prev is None or prev.get("status") != value
        since = now if changed else (prev or {}).get("lastTransitionTime") or now
        return {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": since}

    containers = (pod.get("spec") or {}).get("containers") or []
    uid = (pod.get("metadata") or {}).get("uid")
    started = old.get("startTime") or now
    return {
        "phase": "Running",
        "hostIP": NODE_IP,
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "conditions": [
            cond("Initialized", "True"),
            cond("Ready", flag),
            cond("ContainersReady", flag),
            cond("PodScheduled", "True"),
        ],
        "containerStatuses": [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "containerID": f"zeta-standin://{uid}/{c['name']}",
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            }
            for c in containers
        ],
    }


def build_node(name: str, now: str) -> dict[str, Any]:
    capacity = {
        "cpu": "64",
        "memory": "512Gi",
        "pods": "1000",
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": "64",
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "zeta.ai/kubelet-stand-in": "true",
            },
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": name},
            ],
            "conditions": node_conditions(now, now),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "v1.20.2-zeta-stand-in",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "zeta-stand-in://0",
                "bootID": "",
                "kernelVersion": "",
                "machineID": "",
                "osImage": "zeta-router kubelet stand-in",
                "systemUUID": "",
            },
        },
    }


def node_conditions(heartbeat: str, since: str) -> list[dict[str, Any]]:
    def c(kind: str, value: str, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": value,
            "reason": reason,
            "message": "reported by the zeta-router kubelet stand-in",
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
        }

    return [
        c("Ready", "True", "KubeletReady"),
        c("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID"),
    ]


class KubeletStandIn:
    """Watches pods matching ``label_selector`` (all namespaces) and acts as their kubelet.

    ``run()`` blocks until ``stop()``; ``start()`` runs it in daemon threads.
    """

    def __init__(
        self,
        kube: Kube,
        node_name: str = DEFAULT_NODE_NAME,
        label_selector: str = MANAGED_SELECTOR,
        heartbeat_seconds: float = 10.0,
    ) -> None:
        self.kube = kube
        self.node_name = node_name
        self.label_selector = label_selector
        self.heartbeat_seconds = heartbeat_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._held_new: set[str] = set()  # namespaces where only pods not yet Ready are held
        self._ips: dict[str, str] = {}  # pod uid -> address
        self._acted_rv: dict[str, int] = {}  # pod uid -> resourceVersion our last write made
        self._threads: list[threading.Thread] = []
        self._node_since = now_rfc3339()

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.register_node()
        for target, name in (
            (self._watch_namespaces, "namespaces"),
            (self._watch_pods, "pods"),
            (self._heartbeat, "heartbeat"),
        ):
            t = threading.Thread(target=target, name=f"kubelet-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def run(self) -> None:
        self.start()
        self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    # ---- node ---------------------------------------------------------------------------------

    def register_node(self) -> None:
        now = now_rfc3339()
        try:
            self.kube.create(api_path("v1", "nodes"), build_node(self.node_name, now))
            log.info("registered node %s", self.node_name)
        except ApiError as e:
            if not e.conflict:
                raise
            self._report_node(now)
            log.info("node %s already registered; reporting it Ready", self.node_name)

    def delete_node(self) -> None:
        with contextlib.suppress(ApiError):
            self.kube.delete(api_path("v1", "nodes", name=self.node_name))

    def _report_node(self, now: str) -> None:
        self.kube.patch(
            api_path("v1", "nodes", name=self.node_name, subresource="status"),
            {"status": {"conditions": node_conditions(now, self._node_since)}},
            STRATEGIC_MERGE_PATCH,
        )

    def _heartbeat(self) -> None:
        # The node lifecycle controller marks a node that stops reporting NotReady and then
        # evicts its pods; a real kubelet reports every 10 s.
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._report_node(now_rfc3339())
            except Exception as e:
                log.warning("node heartbeat failed: %s", e)

    # ---- namespaces ---------------------------------------------------------------------------

    def _watch_namespaces(self) -> None:
        path = api_path("v1", "namespaces")
        while not self._stop.is_set():
            try:
                listing = self.kube.list(path, label_selector=HOLD_LABEL)
                modes = {
                    ns["metadata"]["name"]: (ns["metadata"].get("labels") or {}).get(HOLD_LABEL)
                    for ns in listing.get("items", [])
                }
                self._set_held(modes)
                rv = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    for kind, obj in self.kube.watch(path, rv):
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if kind == "BOOKMARK":
                            continue
                        name = obj["metadata"]["name"]
                        mode = (
                            None
                            if kind == "DELETED"
                            else (obj["metadata"].get("labels") or {}).get(HOLD_LABEL)
                        )
                        if mode != modes.get(name):
                            modes = {**modes, name: mode}
                            self._set_held(modes)
            except Exception as e:
                if not self._stop.is_set():
                    log.warning("namespace watch restarting: %s", e)
                    self._stop.wait(1.0)

    def _set_held(self, modes: Mapping[str, str | None]) -> None:
        held = {ns for ns, mode in modes.items() if mode == "true"}
        held_new = {ns for ns, mode in modes.items() if mode == "new"}
        with self._lock:
            changed = held.symmetric_difference(self._held) | held_new.symmetric_difference(
                self._held_new
            )
            self._held, self._held_new = held, held_new
        for ns in sorted(changed):
            self._resync_namespace(ns)

    def _resync_namespace(self, namespace: str) -> None:
        try:
            listing = self.kube.list(
                api_path("v1", "pods", namespace), label_selector=self.label_selector
            )
        except Exception as e:
            log.warning("listing pods in %s failed: %s", namespace, e)
            return
        for pod in listing.get("items", []):
            self.handle(pod)

    # ---- pods ---------------------------------------------------------------------------------

    def _watch_pods(self) -> None:
        path = api_path("v1", "pods")
        while not self._stop.is_set():
            try:
                listing = self.kube.list(path, label_selector=self.label_selector)
                for pod in listing.get("items", []):
                    ip = (pod.get("status") or {}).get("podIP")
                    if ip:
                        with self._lock:
                            self._ips[pod["metadata"]["uid"]] = ip
                for pod in listing.get("items", []):
                    self.handle(pod)
                rv = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    for kind, obj in self.kube.watch(path, rv, self.label_selector):
                        rv = obj["metadata"].get("resourceVersion", rv)
                        if kind == "BOOKMARK":
                            continue
                        if kind == "DELETED":
                            uid = obj["metadata"]["uid"]
                            with self._lock:
                                self._ips.pop(uid, None)
                                self._acted_rv.pop(uid, None)
                            continue
                        self.handle(obj)
            except Exception as e:
                if not self._stop.is_set():
                    log.warning("pod watch restarting: %s", e)
                    self._stop.wait(1.0)

    def handle(self, pod: Mapping[str, Any]) -> None:
        """Act on one pod as its kubelet would; errors are logged, never raised."""
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            held = meta["namespace"] in self._held or (
                meta["namespace"] in self._held_new and not pod_is_ready(pod)
            )
            seen = self._acted_rv.get(uid)
        rv = _rv(meta.get("resourceVersion"))
        if seen is not None and rv is not None and rv < seen:
            return  # an event from before our own last write
        action = plan(pod, self.node_name, held)
        if action is Action.NONE:
            return
        name, ns = meta["name"], meta["namespace"]
        try:
            if action is Action.FINALIZE:
                # The grace period goes in the body: a body's options override the query's.
                self.kube.delete(
                    api_path("v1", "pods", ns, name),
                    {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                )
                log.info("pod %s/%s deleted", ns, name)
                return
            if action is Action.BIND:
                self.kube.create(
                    api_path("v1", "pods", ns, name, "binding"),
                    {
                        "apiVersion": "v1",
                        "kind": "Binding",
                        "metadata": {"name": name, "namespace": ns},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
                    },
                )
                log.info("pod %s/%s bound to %s", ns, name, self.node_name)
            with self._lock:
                ip = self._ips.get(uid) or pod_ip_for(uid, set(self._ips.values()))
                self._ips[uid] = ip
            status = build_pod_status(pod, ready=not held, pod_ip=ip, now=now_rfc3339())
            updated = self.kube.patch(
                api_path("v1", "pods", ns, name, "status"),
                {"status": status},
                STRATEGIC_MERGE_PATCH,
            )
            new_rv = _rv(updated["metadata"].get("resourceVersion"))
            if new_rv is not None:
                with self._lock:
                    self._acted_rv[uid] = new_rv
            log.info("pod %s/%s running, %s", ns, name, "not ready" if held else "ready")
        except ApiError as e:
            # 404: gone meanwhile; 409: bound by someone else (a real scheduler) or changed.
            if e.status not in (404, 409):
                log.warning("pod %s/%s: %s failed: %s", ns, name, action.value, e)
        except Exception as e:
            log.warning("pod %s/%s: %s failed: %s", ns, name, action.value, e)


def _rv(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class KubeletProcess:
    """The stand-in as a child process (its own interpreter, so it never competes with the
    caller's threads), stopped by PID."""

    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        node_name: str = DEFAULT_NODE_NAME,
        delete_node_on_exit: bool = False,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.node_name = node_name
        self.delete_node_on_exit = delete_node_on_exit
        self.pid: int | None = None
        self._proc: Any = None

    def start(self) -> KubeletProcess:
        import subprocess

        argv = [
            sys.executable,
            "-m",
            "zeta_router_dev.local.kubelet",
            f"--kubeconfig={self.kubeconfig}",
            f"--node-name={self.node_name}",
        ]
        if self.delete_node_on_exit:
            argv.append("--delete-node-on-exit")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.pid = self._proc.pid
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        import subprocess

        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeta_router_dev.local.kubelet",
        description="Kubelet stand-in: binds ZetaRouter pods to a fake node and reports them "
        f"Running/Ready (namespaces labelled {HOLD_LABEL}=true: Running, not Ready).",
    )
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig")
    parser.add_argument("--context", default=None, help="kubeconfig context (default: current)")
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="name of the fake node")
    parser.add_argument(
        "--selector", default=MANAGED_SELECTOR, help="label selector of the pods to run"
    )
    parser.add_argument("--heartbeat", type=float, default=10.0, help="node heartbeat seconds")
    parser.add_argument(
        "--delete-node-on-exit",
        action="store_true",
        help="delete the fake node when stopped (its pods are then garbage-collected)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    kubelet = KubeletStandIn(
        Kube.from_kubeconfig(args.kubeconfig, args.context),
        args.node_name,
        args.selector,
        args.heartbeat,
    )
    signal.signal(signal.SIGTERM, lambda *_: kubelet.stop())
    signal.signal(signal.SIGINT, lambda *_: kubelet.stop())
    kubelet.run()
    if args.delete_node_on_exit:
        kubelet.delete_node()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
