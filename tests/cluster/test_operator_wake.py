"""Sleep and wake against a real apiserver: a spec whose every tier may sleep is refused, and
the operator wakes a tier at zero replicas on requests that wanted it, read from a real
router's admin port (a router process on 127.0.0.1 standing in for the pod's sidecar, reached
through the learner's address map), with Prometheus unreachable: the wake does not wait for a
scrape."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from support.cluster import conditions, events_for, wait_for
from support.fixtures_cluster import StartOperator
from support.routing_files import routing_config, write_plain
from support.zetarouters import TIMEOUT, create_zr, get_zr, sample, wait_condition
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.autoscale.wake import WAKE_POLL_ENV
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.operator_proc import OperatorProcess
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def wake_operator(start_operator: StartOperator) -> OperatorProcess:
    return start_operator({TICK_ENV: "1", WAKE_POLL_ENV: "0.5"})


def _zr(name: str, small_min: int = 1) -> dict[str, Any]:
    body = sample(name)
    body["spec"]["tiers"] = [
        {
            "name": "small",
            "engine": "llamacpp",
            "model": "SmolLM2-135M-Instruct",
            "replicas": {"min": small_min, "max": 1},
        },
        {
            "name": "large",
            "engine": "llamacpp",
            "model": "SmolLM2-135M-Instruct",
            "replicas": {"min": 0, "max": 1, "initial": 0, "sleepAfter": "1h"},
        },
    ]
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "interval": "1s",
        # Nothing listens there: the control loop holds, only the wake path can act.
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "1s"},
    }
    return body


def _reasons(kube: Kube, namespace: str, name: str) -> set[tuple[str, str]]:
    return {(e["type"], e["reason"]) for e in events_for(kube, namespace, name)}


def test_every_tier_asleep_is_refused_with_a_clear_message(
    kube: Kube, namespace: str, wake_operator: OperatorProcess
) -> None:
    create_zr(kube, namespace, _zr("sleepy", small_min=0))
    invalid = wait_condition(kube, namespace, "sleepy", "SpecValid", "False")
    message = conditions(invalid)["SpecValid"]["message"]
    assert "spec.tiers: every tier has replicas.min 0" in message, message
    assert "at least one tier must keep min >= 1" in message, message
    wait_for(
        lambda: ("Warning", "InvalidSpec") in _reasons(kube, namespace, "sleepy"),
        TIMEOUT,
        "a Warning Event InvalidSpec",
    )
    deps = kube.list(api_path("apps/v1", "deployments", namespace), f"{names.INSTANCE}=sleepy")
    assert deps["items"] == []


def _router(tmp_path: Path) -> RouterProcess:
    # Both tiers point at closed ports: only the count of wanting requests matters here.
    cfg = routing_config(
        {"small": "http://127.0.0.1:9", "large": "http://127.0.0.1:9"},
        {"default": [0.0]},
        allowForceTier=True,
    )
    cfg["tiers"][1]["asleep"] = True
    path = tmp_path / "routing.yaml"
    write_plain(path, cfg)
    return start_router(["--config", str(path)], tmp_path)


def _want_large(r: RouterProcess) -> None:
    client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=2,
            extra_headers={"X-Zeta-Tier": "large"},
        )
    assert e.value.code == "tier_asleep"


def test_requests_wanting_a_sleeping_tier_wake_it_through_the_admin_port(
    kube: Kube, namespace: str, wake_operator: OperatorProcess, addresses: Path, tmp_path: Path
) -> None:
    create_zr(kube, namespace, _zr("wake"))
    dep_path = api_path(
        "apps/v1", "deployments", namespace, names.tier_object_name("wake", "large")
    )
    cm_path = api_path("v1", "configmaps", namespace, names.routing_configmap_name("wake"))

    def small_pod_ip() -> str | None:
        selector = ",".join(f"{k}={v}" for k, v in names.router_selector("wake").items())
        pods = kube.list(api_path("v1", "pods", namespace), selector).get("items") or []
        ips = [str(p["status"]["podIP"]) for p in pods if (p.get("status") or {}).get("podIP")]
        return ips[0] if len(ips) == 1 else None

    ip = wait_for(small_pod_ip, TIMEOUT, "the small tier's pod")
    # Asleep from the start: zero replicas, and the routers are told so.
    large = wait_for(lambda: kube.get_or_none(dep_path), TIMEOUT, "the large tier's Deployment")
    assert large["spec"]["replicas"] == 0
    wait_for(
        lambda: "asleep: true" in kube.get(cm_path)["data"]["routing.yaml"],
        TIMEOUT,
        "the routing config marking large asleep",
    )
    router = _router(tmp_path)
    try:
        addresses.write_text(json.dumps({ip: router.admin_url.removeprefix("http://")}))

        def woken() -> bool:
            # One request at a time until the operator acts: the first reading of a router is
            # its baseline, so requests counted before it cannot wake the tier.
            if kube.get(dep_path)["spec"]["replicas"] == 1:
                return True
            _want_large(router)
            time.sleep(0.2)
            return False

        wait_for(woken, TIMEOUT, "the operator to scale the large tier from zero")
        assert router.metric("zeta_router_wake_requests_total", tier="large") >= 1
    finally:
        assert router.stop() == 0

    wait_for(
        lambda: ("Normal", "TierWoken") in _reasons(kube, namespace, "wake"),
        TIMEOUT,
        "a TierWoken Event",
    )
    (event,) = [e for e in events_for(kube, namespace, "wake") if e["reason"] == "TierWoken"]
    assert "woken by" in event["message"], event["message"]
    assert "requests wanting it while asleep" in event["message"], event["message"]

    def large_status() -> dict[str, Any] | None:
        tiers = (get_zr(kube, namespace, "wake").get("status") or {}).get("tiers") or []
        found = [t for t in tiers if t["name"] == "large" and t.get("sleep")]
        return found[0] if found else None

    status = wait_for(large_status, TIMEOUT, "status.tiers[large].sleep")
    assert status["desiredReplicas"] == 1
    assert status["sleep"]["state"] == "Awake"
    # Once its replica is ready, the routers may send it requests again.
    wait_for(
        lambda: "asleep: true" not in kube.get(cm_path)["data"]["routing.yaml"],
        TIMEOUT,
        "the routing config marking large awake once ready",
    )
