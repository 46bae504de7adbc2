"""The demo on a real local node: the node itself (control plane, containerd, kubelet,
kube-proxy, kube-scheduler, cluster DNS), a Prometheus that discovers pods through the chart's
monitors, the operator installed by the chart as a pod, and the demo's ZetaRouter with the local
model-server image: each tier a real pod (llama.cpp + router sidecar). The workload goes through
the ZetaRouter's entry Service (its ClusterIP, from this machine).

Same interface as :class:`~zeta_router_dev.demo.stack.DemoStack` (``start``, ``stop``,
``processes``, ``endpoints``, ...); ``stop`` brings the node down, which restores the machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeta_router.api.models import API_VERSION, PLURAL
from zeta_router.kube import Kube, api_path
from zeta_router_dev.cluster.binaries import MissingBinaryError
from zeta_router_dev.cluster.node import NodeError, RealNode
from zeta_router_dev.cluster.processes import pid_alive
from zeta_router_dev.cluster.workloads import (
    WorkloadError,
    install_operator,
    localize_zetarouter,
    render_monitors,
    service_url,
    start_cluster_prometheus,
)
from zeta_router_dev.demo.resource import NAME, NAMESPACE, zetarouter
from zeta_router_dev.demo.stack import (
    ZR_PATH,
    StackError,
    Started,
    StepCallback,
    _create_or_replace,
    _wait,
    timed_step,
)
from zeta_router_dev.local.prometheus import PrometheusError, PrometheusServer

OPERATOR_NAMESPACE = "zeta-system"
RELEASE = "zeta-router"


@dataclass
class RealNodeStack:
    workdir: Path
    interrupted: Callable[[], bool] = lambda: False
    node: RealNode | None = None
    kube: Kube | None = None
    kubeconfig: Path | None = None
    prometheus: PrometheusServer | None = None
    entry_url: str | None = None
    steps: dict[str, float] = field(default_factory=dict)
    kind: str = "real"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def router_urls(self) -> list[str]:
        """The entry Service: the routers of every pod of the ZetaRouter behind one ClusterIP."""
        return [f"{self.entry_url}/v1"] if self.entry_url else []

    # The Service spreads connections, not requests: the workload opens one per request.
    new_connections = True

    def _step(self, name: str, on_step: StepCallback) -> contextlib.AbstractContextManager[None]:
        return timed_step(name, on_step, self.steps, self.interrupted)

    def start(self, on_step: StepCallback) -> RealNodeStack:
        self.logs.mkdir(parents=True, exist_ok=True)
        with self._step("real node", on_step):
            self.node = RealNode(self.workdir / "node", die_with_parent=True)
            try:
                info = self.node.up(timeout=300)
            except (NodeError, MissingBinaryError) as e:
                raise StackError(f"the real node did not start: {e}") from e
            self.kubeconfig = info.kubeconfig
            self.kube = Kube.from_kubeconfig(info.kubeconfig)
        kube = self.kube
        with self._step("Prometheus (pods found through the chart's monitors)", on_step):
            try:
                self.prometheus = start_cluster_prometheus(
                    kube,
                    info.server,
                    info.ca_cert,
                    self.workdir / "prometheus",
                    render_monitors(RELEASE, OPERATOR_NAMESPACE, [NAMESPACE], "1s"),
                    account_namespace=OPERATOR_NAMESPACE,
                    die_with_parent=True,
                )
            except (WorkloadError, PrometheusError, MissingBinaryError) as e:
                raise StackError(f"Prometheus did not start: {e}") from e
        with self._step("operator (helm install, as a pod)", on_step):
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
            _create_or_replace(
                kube,
                api_path("v1", "namespaces"),
                api_path("v1", "namespaces", None, NAMESPACE),
                namespace,
            )
            try:
                install_operator(info.kubeconfig, RELEASE, OPERATOR_NAMESPACE, [NAMESPACE], RELEASE)
            except (WorkloadError, MissingBinaryError) as e:
                raise StackError(f"the operator did not install: {e}") from e
        with self._step("ZetaRouter (tiers as pods)", on_step):
            self._apply_zetarouter()
        with self._step("ready", on_step):
            _wait(self._ready, 300, "the ZetaRouter to become Ready (its pods pass their probes)")
            self.entry_url = service_url(kube, NAMESPACE, NAME)
        return self

    def _apply_zetarouter(self) -> None:
        assert self.kube is not None
        assert self.prometheus is not None
        body = localize_zetarouter(zetarouter(self.prometheus.url), namespace=NAMESPACE)
        # The demo's own loop settings (scale-down delay, bounds) stay as the demo sets them.
        body["spec"]["autoscaling"] = zetarouter(self.prometheus.url)["spec"]["autoscaling"]
        _create_or_replace(self.kube, api_path(API_VERSION, PLURAL, NAMESPACE), ZR_PATH, body)

    def _ready(self) -> bool:
        assert self.kube is not None
        conds = (self.kube.get(ZR_PATH).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    # ---- inspect and stop -------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.entry_url:
            out["entry Service"] = f"{self.entry_url}/v1"
        if self.prometheus is not None:
            out["prometheus"] = self.prometheus.url
        if self.kubeconfig is not None:
            out["KUBECONFIG"] = str(self.kubeconfig)
        return out

    def processes(self) -> list[Started]:
        out: list[Started] = []
        if self.node is not None:
            plane = self.node.plane.state()
            if plane is not None:
                out += [Started(n, r.pid) for n, r in plane.processes.items()]
            st = self.node.state()
            if st is not None:
                out += [Started(n, r.pid) for n, r in st.processes.items()]
        if self.prometheus is not None:
            out.append(Started("prometheus", self.prometheus.pid))
        return out

    def stop(self) -> list[str]:
        problems: list[str] = []
        started = self.processes()
        if self.prometheus is not None:
            try:
                self.prometheus.stop()
            except Exception as e:
                problems.append(f"stopping Prometheus: {e}")
        if self.node is not None:
            left: list[str] = []
            try:
                self.node.down(keep_files=True, log=lambda m: left.append(m))
            except Exception as e:
                problems.append(f"stopping the real node: {e}")
            problems += [m for m in left if m.startswith(("left behind", "could not"))]
        problems += [f"{p.name} (pid {p.pid}) still running" for p in started if pid_alive(p.pid)]
        return problems

    def log_hint(self) -> str:
        return (
            f"logs: {self.workdir / 'node' / 'logs'} (node), "
            f"{self.workdir / 'node' / 'cluster' / 'logs'} (control plane); pods: "
            f"kubectl --kubeconfig {self.kubeconfig} -n {NAMESPACE} logs <pod> -c model|router"
        )


def describe(stack: Any) -> str:
    """Which kind of node ran the demo, for the summary."""
    if getattr(stack, "kind", "standin") == "real":
        return "real (containerd, kubelet, kube-proxy; tiers and the operator as pods)"
    return "stand-in (the kubelet stand-in; llama.cpp servers and routers as local processes)"
