"""The control loop with an external tier, against a real apiserver, a real Prometheus and a
real router process: the router sends requests to a local server playing the provider (it
checks the key and reports usage), counts their cost, Prometheus scrapes it, and the operator
pauses the tier once the estimated spend is over maxCostPerHour (status, Event, the routing
ConfigMap's mark), then resumes it when the spend has fallen back for a window. An external
tier below a served one is refused while the loop runs (SpecValid=False, no children)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import conditions, events_for, wait_for
from support.fake_upstream import FakeUpstream, start_fake_upstream
from support.fixtures_cluster import StartOperator
from support.fixtures_prometheus import StartPrometheus
from support.routing_files import EXTERNAL_KEY_ENV as KEY_ENV
from support.routing_files import external_routing
from support.zetarouters import TIMEOUT, create_zr, get_zr, wait_condition
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.prometheus import ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [pytest.mark.cluster]

KEY = "sk-spend-test-8c2f0a"
# Each answer reports 10 000 + 10 000 tokens: 0.5 x 10 + 1.5 x 10 = 20 per answer.
USAGE = {"prompt_tokens": 10_000, "completion_tokens": 10_000, "total_tokens": 20_000}
CAP = 100.0
# Pausing waits for a scrape and an interval; resuming for the spend to leave the loop's window
# (60 s) and the pause to last that long: a busy machine may take a few minutes.
RESUME_TIMEOUT = 300.0


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "provider.log")
    up.control(api_key=KEY, usage=USAGE)
    yield up
    up.stop()


@pytest.fixture
def cluster_tier(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "cluster-tier.log")
    yield up
    up.stop()


def _router(
    tmp_path: Path, cluster: FakeUpstream, provider: FakeUpstream, mp: pytest.MonkeyPatch
) -> RouterProcess:
    """A router standing in for the pods' sidecars: every request scores 0.5, above the cut
    point 0.4, so it goes to hosted."""
    cfg = external_routing(cluster.url, provider.url, "provider-model", to_external=True)
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mp.setenv(KEY_ENV, KEY)
    return start_router(["--config", str(path)], tmp_path)


def _chat(r: RouterProcess) -> str:
    req = urllib.request.Request(
        r.url + "/v1/chat/completions",
        data=json.dumps(
            {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(resp.headers["x-zeta-tier"])


def _zr(name: str, prometheus_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "metadata": {"name": name},
        "spec": {
            "tiers": [
                {
                    "name": "small",
                    "engine": "llamacpp",
                    "model": "SmolLM2-135M-Instruct",
                    "replicas": {"min": 1, "max": 1},
                },
                {
                    "name": "hosted",
                    "external": {
                        "baseUrl": "https://llm.example.com/v1",
                        "model": "provider-model",
                        "apiKeySecretRef": {"name": "provider-key"},
                        "promptCostPer1kTokens": 0.5,
                        "completionCostPer1kTokens": 1.5,
                        "maxCostPerHour": CAP,
                    },
                },
            ],
            "router": {"contexts": [{"name": "default", "thresholds": [0.4]}]},
            "autoscaling": {
                "enabled": True,
                "interval": "1s",
                "prometheus": {"url": prometheus_url, "timeout": "2s"},
            },
        },
    }


def _external(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    entries = (get_zr(kube, namespace, name).get("status") or {}).get("external") or []
    return entries[0] if entries else None


def _wait_external(
    kube: Kube, namespace: str, name: str, ok: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """``status.external[0]`` once ``ok`` holds for it (the whole status in the failure)."""

    def probe() -> dict[str, Any] | None:
        entry = _external(kube, namespace, name)
        return entry if entry is not None and ok(entry) else None

    try:
        return wait_for(probe, timeout, "status.external")
    except AssertionError as e:
        status = get_zr(kube, namespace, name).get("status")
        raise AssertionError(f"{e}; status: {json.dumps(status)}") from None


def test_an_external_tier_over_its_spend_cap_is_paused_then_resumed(
    kube: Kube,
    namespace: str,
    start_operator: StartOperator,
    prometheus_factory: StartPrometheus,
    provider: FakeUpstream,
    cluster_tier: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "spend"
    kube.create(
        api_path("v1", "secrets", namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "provider-key",
                "annotations": {
                    "zeta.ai/usable-by": name,
                    "zeta.ai/external-urls": "https://llm.example.com/v1",
                },
            },
            "stringData": {"token": KEY},
        },
    )
    router = _router(tmp_path, cluster_tier, provider, monkeypatch)
    try:
        admin = router.admin_url.removeprefix("http://")
        prom = prometheus_factory(
            [
                # The router's admin port, as the pods' routers and (for the loop's "is this
                # ZetaRouter scraped at all") as the small tier's model server.
                ScrapeTarget(admin, pod_labels(namespace, name, "small", "router")),
                ScrapeTarget(
                    admin,
                    pod_labels(namespace, name, "small", "model-server", pod=f"{name}-small-m"),
                ),
            ]
        )
        start_operator({TICK_ENV: "1"})
        create_zr(kube, namespace, _zr(name, prom.url))
        wait_condition(kube, namespace, name, "SpecValid", "True")
        # Once Prometheus has the routers' series, the estimate is there: nothing spent yet.
        first = _wait_external(kube, namespace, name, lambda e: "costPerHour" in e, TIMEOUT)
        assert first["name"] == "hosted"
        assert first["maxCostPerHour"] == CAP
        assert first["paused"] is False
        assert first["costPerHour"] == 0
        # The loop runs for the tier the operator runs, and only for it.
        zr = get_zr(kube, namespace, name)
        assert conditions(zr)["MetricsAvailable"]["status"] == "True"
        assert set(zr["status"]["loopState"]["tiers"]) == {"small"}
        assert [(t["name"], t.get("desiredReplicas")) for t in zr["status"]["tiers"]] == [
            ("small", 1)
        ]
        deps = kube.list(api_path("apps/v1", "deployments", namespace), f"{names.INSTANCE}={name}")
        assert [d["metadata"]["name"] for d in deps["items"]] == [f"{name}-small"]

        # Spend: a few answers at 20 each within the 60 s window is far above 100 per hour.
        for _ in range(3):
            assert _chat(router) == "hosted"
        assert router.metric("zeta_router_cost_total", tier="hosted") == pytest.approx(60.0)

        paused = _wait_external(kube, namespace, name, lambda e: e["paused"], TIMEOUT)
        assert paused["costPerHour"] > CAP, paused
        assert paused["reason"].startswith("tier hosted: paused: spend "), paused
        cm_path = api_path("v1", "configmaps", namespace, names.routing_configmap_name(name))
        routing = yaml.safe_load(kube.get(cm_path)["data"][CONFIGMAP_KEY])
        assert routing["tiers"][1]["external"]["paused"] is True
        (event,) = wait_for(
            lambda: [
                e for e in events_for(kube, namespace, name) if e["reason"] == "ExternalTierPaused"
            ],
            TIMEOUT,
            "an ExternalTierPaused Event",
        )
        assert event["type"] == "Normal"
        assert f"> maxCostPerHour {CAP:g}" in event["message"], event["message"]
        assert KEY not in json.dumps(get_zr(kube, namespace, name)["status"])

        # No more spend: once the window holds none and the pause lasted a window, it resumes.
        resumed = _wait_external(kube, namespace, name, lambda e: not e["paused"], RESUME_TIMEOUT)
        assert resumed["reason"].startswith("tier hosted: resumed: spend "), resumed
        assert resumed["costPerHour"] < CAP * 0.9
        wait_for(
            lambda: "paused" not in kube.get(cm_path)["data"][CONFIGMAP_KEY],
            TIMEOUT,
            "the routing ConfigMap without the paused mark",
        )
        wait_for(
            lambda: any(
                e["reason"] == "ExternalTierResumed" for e in events_for(kube, namespace, name)
            ),
            TIMEOUT,
            "an ExternalTierResumed Event",
        )
    finally:
        assert router.stop() == 0


def test_an_external_tier_below_a_served_one_is_refused_with_the_loop(
    kube: Kube, namespace: str, start_operator: StartOperator
) -> None:
    body = _zr("mid", "http://127.0.0.1:9")
    tiers = body["spec"]["tiers"]
    tiers.append({**tiers[0], "name": "large"})  # small, hosted, large
    body["spec"]["router"]["contexts"][0]["thresholds"] = [0.4, 0.8]
    start_operator({TICK_ENV: "1"})
    create_zr(kube, namespace, body)
    refused = wait_condition(kube, namespace, "mid", "SpecValid", "False")
    message = conditions(refused)["SpecValid"]["message"]
    assert message.startswith(
        "spec.tiers[1].external: with autoscaling or feedback enabled, external tiers come "
        "after every tier the operator runs"
    ), message
    wait_for(
        lambda: any(
            e["type"] == "Warning" and e["reason"] == "InvalidSpec"
            for e in events_for(kube, namespace, "mid")
        ),
        TIMEOUT,
        "a Warning Event InvalidSpec",
    )
    deps = kube.list(api_path("apps/v1", "deployments", namespace), f"{names.INSTANCE}=mid")
    assert deps["items"] == []
