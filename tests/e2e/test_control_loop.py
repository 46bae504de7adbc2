"""The control loop end to end: the operator on the local control plane, a real Prometheus
scraping a real router and two real llama.cpp servers (the data plane of the ZetaRouter's
pods, run on this machine), load sent with the official openai client.

Under load the large tier's Deployment grows and, once it is at its max, thresholds rise in the
routing ConfigMap; status and Events record both. Prometheus stopped: MetricsAvailable=False,
replicas untouched. Advisory mode: the status recommends, nothing is applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from support.cluster import apply, condition_is, events_for, wait_for
from support.fixtures_prometheus import StartPrometheus
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.autoscale.metrics import PrometheusSource
from zeta_router.kube import Kube, api_path
from zeta_router_dev.local.configmap_sync import ConfigMapSync
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.operator_proc import OperatorProcess
from zeta_router_dev.local.prometheus import PrometheusServer, ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.prometheus,
    pytest.mark.llama,
    pytest.mark.slow,
]

NAME = "assistant"
PROMPT = "Write a short poem about the sea, in four lines."


def zetarouter(prometheus_url: str, mode: str) -> dict[str, Any]:
    tier = {"engine": "llamacpp", "model": "SmolLM2-135M-Instruct"}
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": NAME},
        "spec": {
            "tiers": [
                {**tier, "name": "small", "replicas": {"min": 1, "max": 3, "initial": 1}},
                {**tier, "name": "large", "replicas": {"min": 1, "max": 2, "initial": 1}},
            ],
            # The load generator pins its requests to a tier.
            "router": {
                "contexts": [{"name": "default", "thresholds": [0.5]}],
                "allowForceTier": True,
            },
            "autoscaling": {
                "enabled": True,
                "mode": mode,
                "prometheus": {"url": prometheus_url, "timeout": "3s"},
                "interval": "2s",
                # Queue-driven: llama.cpp on one CPU thread is slow to first token anyway.
                "targets": {"queuePerReplica": 1, "ttftP90Seconds": 60},
                "scaleDownDelay": "1h",
            },
            "feedback": {"bounds": [{"context": "default", "min": 0.3, "max": 0.7}]},
        },
    }


@dataclass
class DataPlane:
    router: RouterProcess
    prometheus: PrometheusServer
    sync: ConfigMapSync


@pytest.fixture
def loop_operator(
    zr_crd: object,
    kubelet: None,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[OperatorProcess]:
    monkeypatch.setenv(TICK_ENV, "1")
    proc = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        namespaces=[namespace],
        log_path=tmp_path / "operator.log",
        drift_interval=3.0,
    ).start()
    yield proc
    proc.stop()


def start_data_plane(
    kube: Kube,
    namespace: str,
    servers: dict[str, LlamaServer],
    prometheus_factory: StartPrometheus,
    tmp_path: Path,
    operator: OperatorProcess,
) -> DataPlane:
    """The router sidecar of the small tier's pod, fed the ZetaRouter's routing ConfigMap."""
    urls = {name: s.url for name, s in servers.items()}
    config = tmp_path / "routing.yaml"
    sync = ConfigMapSync(kube, namespace, NAME, config, urls)
    wait_for(sync.sync_once, 60, "the routing ConfigMap")
    router = start_router(
        ["--config", str(config), "--local-tier", "small", "--reload-interval", "0.2"],
        tmp_path,
    )
    sync.start()
    address = {n: u.removeprefix("http://") for n, u in urls.items()}
    prometheus = prometheus_factory(
        [
            ScrapeTarget(address["small"], pod_labels(namespace, NAME, "small", "model-server")),
            ScrapeTarget(address["large"], pod_labels(namespace, NAME, "large", "model-server")),
            ScrapeTarget(
                router.admin_url.removeprefix("http://"),
                pod_labels(namespace, NAME, "small", "router"),
            ),
            # The operator's own metrics, as a cluster's Prometheus scrapes them too.
            ScrapeTarget(
                operator.metrics_url.removeprefix("http://").removesuffix("/metrics"),
                {
                    "app_kubernetes_io_name": "zeta-router",
                    "app_kubernetes_io_component": "operator",
                },
            ),
        ]
    )
    return DataPlane(router, prometheus, sync)


class Load:
    """Keeps ``concurrency`` requests pinned to a tier in flight until stopped."""

    def __init__(self, router: RouterProcess, tier: str, concurrency: int) -> None:
        self.client = openai.OpenAI(
            base_url=router.base_url, api_key="unused", max_retries=0, timeout=120
        )
        self.tier = tier
        self.stopped = threading.Event()
        self.errors: list[str] = []
        self.answered = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.client.chat.completions.create(
                    model="zeta",
                    messages=[{"role": "user", "content": PROMPT}],
                    max_tokens=32,
                    extra_headers={"X-Zeta-Tier": self.tier},
                )
                self.answered += 1
            except openai.OpenAIError as e:
                self.errors.append(str(e))
                time.sleep(0.2)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(120)


def zr(kube: Kube, namespace: str) -> dict[str, Any]:
    return kube.get(api_path("zeta.ai/v1alpha1", "zetarouters", namespace, NAME))


def deployment_replicas(kube: Kube, namespace: str, tier: str) -> int:
    dep = kube.get(api_path("apps/v1", "deployments", namespace, f"{NAME}-{tier}"))
    return int(dep["spec"]["replicas"])


def desired(obj: dict[str, Any], tier: str) -> int | None:
    for t in (obj.get("status") or {}).get("tiers") or []:
        if t.get("name") == tier:
            value = t.get("desiredReplicas")
            return None if value is None else int(value)
    return None


def routing(kube: Kube, namespace: str) -> dict[str, Any]:
    cm = kube.get(api_path("v1", "configmaps", namespace, f"{NAME}-routing"))
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["routing.yaml"])
    return doc


def cut(doc: dict[str, Any], context: str = "default") -> float:
    for ctx in doc["contexts"]:
        if ctx["name"] == context:
            return float(ctx["thresholds"][0])
    raise KeyError(context)


def event_reasons(kube: Kube, namespace: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in events_for(kube, namespace, NAME):
        out.setdefault(str(e.get("reason")), []).append(str(e.get("message")))
    return out


def test_apply_mode_scales_then_shifts_load_and_holds_without_metrics(
    kube: Kube,
    namespace: str,
    loop_operator: OperatorProcess,
    llama_servers: dict[str, LlamaServer],
    prometheus_factory: StartPrometheus,
    tmp_path: Path,
) -> None:
    placeholder = zetarouter("http://127.0.0.1:9", "apply")
    apply(kube, placeholder, namespace)
    wait_for(lambda: deployment_replicas(kube, namespace, "large") == 1, 60, "the Deployments")
    plane = start_data_plane(
        kube, namespace, llama_servers, prometheus_factory, tmp_path, loop_operator
    )
    try:
        apply(kube, zetarouter(plane.prometheus.url, "apply"), namespace)
        wait_for(
            lambda: condition_is(zr(kube, namespace), "MetricsAvailable", "True"),
            60,
            "MetricsAvailable=True",
        )
        start_cut = cut(routing(kube, namespace))
        assert start_cut == 0.5
        with Load(plane.router, "large", concurrency=6) as load:
            # Queue on the large tier -> more replicas, up to its max of 2.
            wait_for(
                lambda: deployment_replicas(kube, namespace, "large") == 2,
                120,
                "the large tier's Deployment to scale to 2",
            )
            # The status is written just after the children are applied: wait for it too.
            wait_for(
                lambda: desired(zr(kube, namespace), "large") == 2,
                30,
                "status.tiers[large].desiredReplicas to say 2",
            )
            # Still queued at max (Prometheus sees one server): thresholds go up.
            wait_for(
                lambda: cut(routing(kube, namespace)) > start_cut,
                120,
                "the routing ConfigMap's threshold to rise",
            )
            doc = routing(kube, namespace)
            # The router picks up the new generation from the ConfigMap copy.
            wait_for(
                lambda: plane.router.metric("zeta_router_config_generation") >= doc["generation"],
                30,
                "the router to run the new routing generation",
            )
            obj = zr(kube, namespace)
            assert 0.5 < obj["status"]["thresholds"]["default"][0] <= 0.7
            assert obj["status"]["lastDecision"]["time"]
            assert obj["status"]["lastDecision"]["reason"]

            # The operator's decisions are in Prometheus too.
            source = PrometheusSource(plane.prometheus.url, timeout_seconds=5)
            query = 'sum(zeta_operator_decisions_total{kind="replicas",direction="up"})'
            wait_for(
                lambda: float((source.query(query) or [{"value": [0, "0"]}])[0]["value"][1]) >= 1,
                30,
                "zeta_operator_decisions_total in Prometheus",
            )

            # Prometheus gone, load still on: MetricsAvailable=False with the reason, and
            # nothing changes any more.
            plane.prometheus.stop()
            wait_for(
                lambda: condition_is(zr(kube, namespace), "MetricsAvailable", "False"),
                60,
                "MetricsAvailable=False",
            )
            before = (
                {t: deployment_replicas(kube, namespace, t) for t in ("small", "large")},
                routing(kube, namespace),
            )
            # Three more intervals, each without metrics (counted by the operator itself).
            loop_operator.wait_counted(
                "zeta_operator_loop_intervals_total",
                3,
                60,
                "three control-loop intervals without metrics",
                metrics="unreachable",
            )
            after = (
                {t: deployment_replicas(kube, namespace, t) for t in ("small", "large")},
                routing(kube, namespace),
            )
            assert after == before
        # On a starved machine a queued request may time out (504); most must be answered.
        assert load.answered >= 6, load.errors[:3]
        assert all("504" in e for e in load.errors), load.errors[:3]
        cond = next(
            c
            for c in zr(kube, namespace)["status"]["conditions"]
            if c["type"] == "MetricsAvailable"
        )
        assert cond["reason"] == "PrometheusUnreachable"
        assert "nothing changed" in cond["message"]
        reasons = event_reasons(kube, namespace)
        assert any("tier large: queue" in m for m in reasons.get("ScaledUp", [])), reasons
        assert any(
            "tier large saturated and cannot grow" in m for m in reasons.get("ThresholdsRaised", [])
        ), reasons
        metrics = loop_operator.metrics()
        assert 'zeta_operator_decisions_total{direction="up",kind="replicas"}' in metrics
        assert 'zeta_operator_decisions_total{direction="up",kind="thresholds"}' in metrics

        # The user edits the context's threshold: the spec's new value is in force at once,
        # over the value the loop chose (which, without metrics, decides nothing now).
        assert cut(routing(kube, namespace)) > 0.5
        edited = zetarouter(plane.prometheus.url, "apply")
        edited["spec"]["router"]["contexts"][0]["thresholds"] = [0.35]
        apply(kube, edited, namespace)
        wait_for(
            lambda: cut(routing(kube, namespace)) == 0.35,
            60,
            "the edited threshold in the routing ConfigMap",
        )
    finally:
        plane.sync.stop()
        plane.router.stop()


def test_advisory_mode_reports_and_applies_nothing(
    kube: Kube,
    namespace: str,
    loop_operator: OperatorProcess,
    llama_servers: dict[str, LlamaServer],
    prometheus_factory: StartPrometheus,
    tmp_path: Path,
) -> None:
    apply(kube, zetarouter("http://127.0.0.1:9", "advisory"), namespace)
    wait_for(lambda: deployment_replicas(kube, namespace, "large") == 1, 60, "the Deployments")
    plane = start_data_plane(
        kube, namespace, llama_servers, prometheus_factory, tmp_path, loop_operator
    )
    try:
        apply(kube, zetarouter(plane.prometheus.url, "advisory"), namespace)
        with Load(plane.router, "large", concurrency=6):
            wait_for(
                lambda: desired(zr(kube, namespace), "large") == 2,
                120,
                "a recommendation of 2 large replicas",
            )
        obj = zr(kube, namespace)
        assert deployment_replicas(kube, namespace, "large") == 1
        assert obj["status"]["lastDecision"]["action"].startswith("recommend")
        assert "advisory" in obj["status"]["lastDecision"]["reason"]
        assert cut(routing(kube, namespace)) == 0.5
        reasons = event_reasons(kube, namespace)
        assert any("not applied" in m for m in reasons.get("RecommendScaledUp", [])), reasons
        assert "ScaledUp" not in reasons
    finally:
        plane.sync.stop()
        plane.router.stop()
