"""The demo's processes with the kubelet stand-in (``--node standin``; the real node is
``realstack``): the local control plane (etcd, kube-apiserver, kube-controller-manager, the
kubelet stand-in), the operator, Prometheus, one llama.cpp server
and one router per tier (standing in for each tier's pod: model server + router sidecar), and
the copy of the routing ConfigMap the routers read (as the kubelet's ConfigMap volume).

Everything binds 127.0.0.1 on ports the OS picks, keeps its state and logs under ``workdir``,
and is stopped by PID in reverse start order by :meth:`DemoStack.stop`, which is safe to call
at any point of :meth:`DemoStack.start` (what has started is stopped).
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeta_router.api.models import API_VERSION, PLURAL
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.controller.status import zetarouter_path
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render.names import ROUTER_KEY_FIELD, router_key_secret_name
from zeta_router_dev.cluster.controlplane import LocalControlPlane
from zeta_router_dev.cluster.processes import log_tail, pid_alive
from zeta_router_dev.demo.resource import NAME, NAMESPACE, TIERS, zetarouter
from zeta_router_dev.local.configmap_sync import ConfigMapSync
from zeta_router_dev.local.llama import LlamaServer, start_llama_server
from zeta_router_dev.local.operator_proc import OperatorProcess
from zeta_router_dev.local.prometheus import (
    PrometheusServer,
    ScrapeTarget,
    pod_labels,
    start_prometheus,
)
from zeta_router_dev.local.router_proc import RouterProcess, start_router

ZR_PATH = zetarouter_path(NAMESPACE, NAME)


class StackError(RuntimeError):
    """A part of the demo could not be started; the message says which and where its log is."""


class Interrupted(Exception):  # noqa: N818 - a request, not an error
    """The user asked to stop (Ctrl-C, SIGTERM) while the stack was starting."""


@dataclass(frozen=True)
class Started:
    name: str
    pid: int


# on_step(name, None) when a step begins, on_step(name, seconds) when it is done.
StepCallback = Callable[[str, float | None], None]


@contextlib.contextmanager
def timed_step(
    name: str, on_step: StepCallback, steps: dict[str, float], interrupted: Callable[[], bool]
) -> Iterator[None]:
    """One start-up step of a demo stack: refused once interrupted, announced to ``on_step``
    before and after, its duration kept in ``steps``."""
    if interrupted():
        raise Interrupted(name)
    on_step(name, None)
    t0 = time.monotonic()
    yield
    steps[name] = time.monotonic() - t0
    on_step(name, steps[name])


@dataclass
class DemoStack:
    workdir: Path
    interrupted: Callable[[], bool] = lambda: False
    plane: LocalControlPlane | None = None
    kube: Kube | None = None
    kubeconfig: Path | None = None
    operator: OperatorProcess | None = None
    llamas: dict[str, LlamaServer] = field(default_factory=dict)
    prometheus: PrometheusServer | None = None
    routers: dict[str, RouterProcess] = field(default_factory=dict)
    sync: ConfigMapSync | None = None
    steps: dict[str, float] = field(default_factory=dict)
    kind: str = "standin"
    # One client per router, kept-alive connections: each router is a process of its own here.
    new_connections = False

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def router_urls(self) -> list[str]:
        """OpenAI base URLs of the routers (the ZetaRouter's entry Service, one per pod)."""
        return [r.base_url for r in self.routers.values()]

    # ---- start ------------------------------------------------------------------------------

    def _step(self, name: str, on_step: StepCallback) -> contextlib.AbstractContextManager[None]:
        return timed_step(name, on_step, self.steps, self.interrupted)

    def start(self, on_step: StepCallback) -> DemoStack:
        """Start everything, in order; raises StackError (or Interrupted between steps)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with self._step("control plane", on_step):
            self._start_control_plane()
        with self._step("ZetaRouter CRD", on_step):
            self._install_crd()
        with self._step("operator", on_step):
            self._start_operator()
        for tier in TIERS:
            with self._step(f"llama.cpp server ({tier})", on_step):
                self.llamas[tier] = self._guard(
                    f"llama.cpp server {tier}",
                    lambda t=tier: start_llama_server(  # type: ignore[misc]
                        t, log_dir=self.logs, threads=1, parallel=2, startup_timeout=120
                    ),
                )
        with self._step("Prometheus", on_step):
            self.prometheus = self._guard(
                "Prometheus",
                lambda: start_prometheus(
                    self._scrape_targets(),
                    data_dir=self.workdir / "prometheus",
                    die_with_parent=True,
                ),
            )
        with self._step("ZetaRouter", on_step):
            self._apply_zetarouter()
        with self._step("routers", on_step):
            self._start_routers()
        with self._step("ready", on_step):
            self._wait_ready()
        return self

    @staticmethod
    def _guard(what: str, start: Callable[[], Any]) -> Any:
        try:
            return start()
        except (RuntimeError, OSError) as e:
            raise StackError(f"{what} did not start: {e}") from e

    def _start_control_plane(self) -> None:
        from zeta_router_dev.cluster.binaries import MissingBinaryError
        from zeta_router_dev.cluster.controlplane import ControlPlaneError

        self.plane = LocalControlPlane(self.workdir / "cluster", die_with_parent=True)
        try:
            state = self.plane.up(timeout=180, kubelet=True)
        except (MissingBinaryError, ControlPlaneError) as e:
            raise StackError(f"the local control plane did not start: {e}") from e
        self.kubeconfig = state.kubeconfig
        self.kube = Kube.from_kubeconfig(state.kubeconfig)

    def _install_crd(self) -> None:
        from zeta_router.api.crd import CRD_NAME, build_crd

        kube = self._kube()
        crds = "apiextensions.k8s.io/v1", "customresourcedefinitions"
        _create_or_replace(kube, api_path(*crds), api_path(*crds, None, CRD_NAME), build_crd())

        def established() -> bool:
            live = kube.get(api_path(*crds, None, CRD_NAME))
            conds = (live.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conds)

        _wait(established, 60, "the ZetaRouter CRD to be established")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        _create_or_replace(
            kube,
            api_path("v1", "namespaces"),
            api_path("v1", "namespaces", None, NAMESPACE),
            namespace,
        )

    def _start_operator(self) -> None:
        assert self.kubeconfig is not None
        self.operator = OperatorProcess(
            kubeconfig=self.kubeconfig,
            namespaces=[NAMESPACE],
            log_path=self.logs / "operator.log",
            drift_interval=5.0,
            # The control loop checks every second whether an interval has passed.
            env={TICK_ENV: "1"},
            new_session=True,
            die_with_parent=True,
        )
        self._guard("the operator", self.operator.start)

    def _scrape_targets(self) -> list[ScrapeTarget]:
        """What the cluster's Prometheus would scrape: each pod's model server and router, and
        the operator."""
        targets = [
            ScrapeTarget(
                s.url.removeprefix("http://"), pod_labels(NAMESPACE, NAME, t, "model-server")
            )
            for t, s in self.llamas.items()
        ]
        targets += [
            ScrapeTarget(
                r.admin_url.removeprefix("http://"), pod_labels(NAMESPACE, NAME, t, "router")
            )
            for t, r in self.routers.items()
        ]
        if self.operator is not None and self.operator.metrics_url:
            address = self.operator.metrics_url.removeprefix("http://").removesuffix("/metrics")
            targets.append(
                ScrapeTarget(
                    address,
                    {
                        "app_kubernetes_io_name": "zeta-router",
                        "app_kubernetes_io_component": "operator",
                    },
                )
            )
        return targets

    def _apply_zetarouter(self) -> None:
        assert self.prometheus is not None
        kube = self._kube()
        body = zetarouter(self.prometheus.url)
        _create_or_replace(kube, api_path(API_VERSION, PLURAL, NAMESPACE), ZR_PATH, body)
        self.sync = ConfigMapSync(
            kube,
            NAMESPACE,
            NAME,
            self.workdir / CONFIGMAP_KEY,
            {t: s.url for t, s in self.llamas.items()},
        )
        _wait(
            self.sync.sync_once,
            90,
            f"the operator to write the routing ConfigMap (log: {self.logs / 'operator.log'})",
        )

    def _router_key_file(self) -> Path:
        """The operator's ``<name>-router-key`` Secret as a file, as the kubelet mounts it: the
        routers share it, so any of them accepts feedback on another's answers."""
        kube = self._kube()
        path = api_path("v1", "secrets", NAMESPACE, router_key_secret_name(NAME))
        found: dict[str, Any] = {}

        def made() -> bool:
            found.update(kube.get_or_none(path) or {})
            return bool(found)

        _wait(
            made, 60, f"the operator to create the router key (log: {self.logs / 'operator.log'})"
        )
        key_file = self.workdir / "router-key"
        key_file.write_bytes(base64.b64decode(found["data"][ROUTER_KEY_FIELD]))
        key_file.chmod(0o600)
        return key_file

    def _start_routers(self) -> None:
        assert self.sync is not None
        assert self.prometheus is not None
        config = self.sync.path
        key_file = self._router_key_file()
        for tier in TIERS:
            self.routers[tier] = self._guard(
                f"the router of tier {tier}",
                lambda t=tier: start_router(  # type: ignore[misc]
                    [
                        "--config",
                        str(config),
                        "--local-tier",
                        t,
                        "--reload-interval",
                        "0.5",
                        "--request-key-file",
                        str(key_file),
                    ],
                    self.logs,
                    new_session=True,
                ),
            )
        self.sync.start()
        self.prometheus.set_targets(self._scrape_targets())

    def _wait_ready(self) -> None:
        kube = self._kube()

        def ready() -> bool:
            conds = (kube.get(ZR_PATH).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        _wait(ready, 90, "the ZetaRouter to become Ready")

    def _kube(self) -> Kube:
        if self.kube is None:
            raise StackError("the control plane is not running")
        return self.kube

    # ---- inspect and stop -------------------------------------------------------------------

    def endpoints(self) -> dict[str, str]:
        out = {f"router {t}": r.base_url for t, r in self.routers.items()}
        if self.prometheus is not None:
            out["prometheus"] = self.prometheus.url
        if self.kubeconfig is not None:
            out["KUBECONFIG"] = str(self.kubeconfig)
        return out

    def processes(self) -> list[Started]:
        """Every process this stack started that it knows the PID of, in start order."""
        out: list[Started] = []
        if self.plane is not None:
            st = self.plane.state()
            if st is not None:
                out += [Started(n, r.pid) for n, r in st.processes.items()]
        if self.operator is not None and self.operator.pid is not None:
            out.append(Started("operator", self.operator.pid))
        out += [Started(f"llama-{t}", s.pid) for t, s in self.llamas.items()]
        if self.prometheus is not None:
            out.append(Started("prometheus", self.prometheus.pid))
        out += [Started(f"router-{t}", r.pid) for t, r in self.routers.items()]
        return out

    def stop(self) -> list[str]:
        """Stop everything (reverse start order), each by PID. Returns problems, if any."""
        problems: list[str] = []

        def attempt(what: str, fn: Callable[[], object]) -> None:
            try:
                fn()
            except Exception as e:
                problems.append(f"stopping {what}: {e}")

        started = self.processes()
        if self.sync is not None:
            attempt("the ConfigMap copy", self.sync.stop)
        for tier, router in reversed(list(self.routers.items())):
            attempt(f"router {tier}", router.stop)
        if self.prometheus is not None:
            attempt("Prometheus", self.prometheus.stop)
        for tier, server in reversed(list(self.llamas.items())):
            attempt(f"llama.cpp server {tier}", server.stop)
        if self.operator is not None:
            attempt("the operator", self.operator.stop)
        if self.plane is not None:
            plane = self.plane
            attempt("the control plane", lambda: plane.down(keep_files=True))
        problems += [f"{p.name} (pid {p.pid}) still running" for p in started if pid_alive(p.pid)]
        return problems

    def log_hint(self) -> str:
        return f"logs: {self.logs} (control plane: {self.workdir / 'cluster' / 'logs'})"


def _create_or_replace(kube: Kube, collection: str, path: str, body: dict[str, Any]) -> None:
    try:
        kube.create(collection, body)
        return
    except ApiError as e:
        if not e.conflict:
            raise
    live = kube.get(path)
    meta = {**body["metadata"], "resourceVersion": live["metadata"]["resourceVersion"]}
    kube.replace(path, {**body, "metadata": meta})


def _wait(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except (ApiError, OSError) as e:
            last = e
        time.sleep(0.3)
    raise StackError(
        f"timed out after {timeout:g}s waiting for {what}" + (f": {last}" if last else "")
    )


def tail(path: Path | str, lines: int = 20) -> str:
    return log_tail(path, lines) if os.path.exists(path) else ""
