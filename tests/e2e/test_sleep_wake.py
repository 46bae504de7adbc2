"""A tier that sleeps at zero and wakes on demand, end to end on the local control plane: the
operator, a real Prometheus scraping a real router and two real llama.cpp servers (the data
plane of the ZetaRouter's pods, on this machine; the router is fed the routing ConfigMap as the
kubelet would), requests sent with the official openai client.

The large tier (min 0, sleepAfter 20s) goes to zero once idle; requests decided for it are then
answered by the small tier (fallback: none fails, each marked X-Zeta-Tier-Asleep) and wake it
through the router's admin port; once its replica is ready the routers send it requests again;
idle again, it goes back to zero. The time from the first request to the first answer on the
woken tier is printed, not asserted (benchmarks report timings).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from support.cluster import apply, events_for, wait_for
from support.fixtures_cluster import StartOperator
from support.fixtures_prometheus import StartPrometheus
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.autoscale.wake import WAKE_POLL_ENV
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.configmap_sync import ConfigMapSync
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.operator_proc import OperatorProcess
from zeta_router_dev.local.prometheus import ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import start_router

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.prometheus,
    pytest.mark.llama,
    pytest.mark.slow,
]

NAME = "nightly"
#: A deadline for each step on a loaded 2-core machine; nothing waits for it.
STEP = 300.0


def zetarouter(prometheus_url: str) -> dict[str, Any]:
    tier = {"engine": "llamacpp", "model": "SmolLM2-135M-Instruct"}
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": NAME},
        "spec": {
            "tiers": [
                {**tier, "name": "small", "replicas": {"min": 1, "max": 1}},
                {
                    **tier,
                    "name": "large",
                    "replicas": {"min": 0, "max": 1, "initial": 1, "sleepAfter": "20s"},
                },
            ],
            # Cut point 0: every request is decided for the large tier.
            "router": {"contexts": [{"name": "default", "thresholds": [0.0]}]},
            "autoscaling": {
                "enabled": True,
                "prometheus": {"url": prometheus_url, "timeout": "3s"},
                "interval": "2s",
                "targets": {"queuePerReplica": 4, "ttftP90Seconds": 60},
                "scaleDownDelay": "1h",
            },
        },
    }


@pytest.fixture
def sleep_operator(start_operator: StartOperator) -> OperatorProcess:
    return start_operator({TICK_ENV: "1", WAKE_POLL_ENV: "0.5"})


def _replicas(kube: Kube, namespace: str) -> int | None:
    dep = kube.get_or_none(api_path("apps/v1", "deployments", namespace, f"{NAME}-large"))
    return None if dep is None else int(dep["spec"]["replicas"])


def _routing(kube: Kube, namespace: str) -> dict[str, Any]:
    cm = kube.get(api_path("v1", "configmaps", namespace, names.routing_configmap_name(NAME)))
    doc: dict[str, Any] = yaml.safe_load(cm["data"]["routing.yaml"])
    return doc


def _asleep_in_configmap(kube: Kube, namespace: str) -> bool:
    return bool(_routing(kube, namespace)["tiers"][1].get("asleep"))


def _reasons(kube: Kube, namespace: str) -> list[str]:
    return [str(e.get("reason")) for e in events_for(kube, namespace, NAME)]


def test_large_tier_sleeps_wakes_on_traffic_and_sleeps_again(
    kube: Kube,
    namespace: str,
    sleep_operator: OperatorProcess,
    llama_servers: dict[str, LlamaServer],
    prometheus_factory: StartPrometheus,
    addresses: Path,
    tmp_path: Path,
) -> None:
    apply(kube, zetarouter("http://127.0.0.1:9"), namespace)
    wait_for(lambda: _replicas(kube, namespace) == 1, 60, "the Deployments")
    urls = {n: s.url for n, s in llama_servers.items()}
    config = tmp_path / "routing.yaml"
    sync = ConfigMapSync(kube, namespace, NAME, config, urls)
    wait_for(sync.sync_once, 60, "the routing ConfigMap")
    router = start_router(
        ["--config", str(config), "--local-tier", "small", "--reload-interval", "0.2"], tmp_path
    )
    sync.start()
    try:
        address = {n: u.removeprefix("http://") for n, u in urls.items()}
        prometheus = prometheus_factory(
            [
                ScrapeTarget(
                    address["small"], pod_labels(namespace, NAME, "small", "model-server")
                ),
                ScrapeTarget(
                    address["large"], pod_labels(namespace, NAME, "large", "model-server")
                ),
                ScrapeTarget(
                    router.admin_url.removeprefix("http://"),
                    pod_labels(namespace, NAME, "small", "router"),
                ),
            ]
        )

        def small_pod_ip() -> str | None:
            selector = ",".join(f"{k}={v}" for k, v in names.router_selector(NAME).items())
            pods = kube.list(api_path("v1", "pods", namespace), f"{selector},{names.TIER}=small")
            ips = [
                str(p["status"]["podIP"])
                for p in pods.get("items") or []
                if (p.get("status") or {}).get("podIP")
            ]
            return ips[0] if ips else None

        ip = wait_for(small_pod_ip, 60, "the small tier's pod")
        addresses.write_text(json.dumps({ip: router.admin_url.removeprefix("http://")}))
        apply(kube, zetarouter(prometheus.url), namespace)

        # Idle from the start: the large tier sleeps, and the router is told so.
        wait_for(lambda: _replicas(kube, namespace) == 0, STEP, "the large tier asleep")
        wait_for(lambda: "TierSlept" in _reasons(kube, namespace), STEP, "a TierSlept Event")
        wait_for(lambda: _asleep_in_configmap(kube, namespace), STEP, "asleep in the ConfigMap")
        # The generation of the ConfigMap that says so (the router's file follows it, later).
        generation = _routing(kube, namespace)["generation"]
        wait_for(
            lambda: router.metric("zeta_router_config_generation") >= generation,
            STEP,
            "the router on the config that marks large asleep",
        )

        client = openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0)
        failures: list[str] = []
        served: list[tuple[str, str | None]] = []
        first = time.monotonic()
        answered_by_large: float | None = None
        deadline = first + STEP
        while answered_by_large is None and time.monotonic() < deadline:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="assistant",
                    messages=[{"role": "user", "content": "Say hello."}],
                    max_tokens=4,
                    timeout=120,
                )
            except openai.OpenAIError as e:
                failures.append(str(e))
                continue
            tier = raw.headers["x-zeta-tier"]
            served.append((tier, raw.headers.get("x-zeta-tier-asleep")))
            if tier == "large":
                answered_by_large = time.monotonic()
        assert answered_by_large is not None, f"never answered by large: {served[-5:]}"
        print(
            f"\nwake: {answered_by_large - first:.1f}s from the first request to the first "
            f"answer on the woken tier; {len(served)} requests, {len(failures)} failed"
        )
        assert failures == []
        assert served[0] == ("small", "large")  # answered by the small tier, marked
        assert all(a == "large" for t, a in served if t == "small")
        assert router.metric("zeta_router_wake_requests_total", tier="large") >= 1
        wait_for(lambda: "TierWoken" in _reasons(kube, namespace), STEP, "a TierWoken Event")

        # Idle again: back to zero after the idle period.
        wait_for(lambda: _replicas(kube, namespace) == 0, STEP, "the large tier asleep again")
        wait_for(lambda: _asleep_in_configmap(kube, namespace), STEP, "asleep in the ConfigMap")
    finally:
        sync.stop()
        assert router.stop() == 0
