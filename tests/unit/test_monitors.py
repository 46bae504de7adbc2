"""Prometheus scrape configs from the chart's own monitors (rendered with helm), as the
Prometheus Operator generates them, and the same discovery served over HTTP SD for a Prometheus
built without Kubernetes discovery (Debian's)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from zeta_router.autoscale.metrics import (
    LABEL_COMPONENT,
    LABEL_NAMESPACE,
    LABEL_POD,
    LABEL_ROUTER,
    LABEL_TIER,
)
from zeta_router.render.deployment import ROUTER_ADMIN_PORT_NAME
from zeta_router_dev.cluster.workloads import render_monitors
from zeta_router_dev.local.kube_sd import (
    endpoints_target_groups,
    pod_target_groups,
    via_http_sd,
)
from zeta_router_dev.local.monitors import ApiAccess, relabeling, sanitize, scrape_configs

API = ApiAccess("https://198.18.0.1:6443", "/ca.crt", "/token")


def relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling (replace, keep, drop), enough to run the generated rules."""
    out = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        sources = rule.get("source_labels", [])
        value = rule.get("separator", ";").join(out.get(s, "") for s in sources)
        regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        match = regex.match(value)
        if action == "keep" and not match:
            return None
        if action == "drop" and match:
            return None
        if action == "replace" and match:
            result = match.expand(
                rule.get("replacement", "${1}").replace("${", "\\g<").replace("}", ">")
            )
            if result:
                out[rule["target_label"]] = result
            else:
                out.pop(rule["target_label"], None)
    return {k: v for k, v in out.items() if not k.startswith("__")}


def pod(name: str, tier: str, ip: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": f"uid-{name}",
            "labels": {
                "app.kubernetes.io/name": "zeta-router",
                "app.kubernetes.io/instance": "chat",
                "app.kubernetes.io/component": "model-server",
                "app.kubernetes.io/managed-by": "zeta-router",
                "zeta.ai/tier": tier,
            },
            "ownerReferences": [{"kind": "ReplicaSet", "name": "rs", "controller": True}],
        },
        "spec": {
            "nodeName": "zeta-node",
            "containers": [
                {
                    "name": "model",
                    "image": "m",
                    "ports": [{"name": "model", "containerPort": 8000}],
                },
                {
                    "name": "router",
                    "image": "r",
                    "ports": [
                        {"name": "router", "containerPort": 8080},
                        {"name": ROUTER_ADMIN_PORT_NAME, "containerPort": 8081},
                    ],
                },
            ],
        },
        "status": {
            "podIP": ip,
            "hostIP": "198.18.0.1",
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


@pytest.fixture(scope="module")
def monitors() -> list[dict[str, Any]]:
    return render_monitors("zr", "zeta-system", ["team-a"], "2s")


def test_the_chart_renders_a_pod_monitor_and_the_operators_service_monitor(
    monitors: list[dict[str, Any]],
) -> None:
    assert sorted(m["kind"] for m in monitors) == ["PodMonitor", "ServiceMonitor"]
    jobs = scrape_configs(monitors, API)
    names = [j["job_name"] for j in jobs]
    assert names == [
        "podMonitor/zeta-system/zr-zeta-router-zetarouters/0",
        "podMonitor/zeta-system/zr-zeta-router-zetarouters/1",
        "serviceMonitor/zeta-system/zr-zeta-router-operator/0",
    ]
    sd = jobs[0]["kubernetes_sd_configs"][0]
    assert sd["role"] == "pod"
    assert sd["namespaces"] == {"names": ["team-a"]}
    assert sd["bearer_token_file"] == "/token"
    assert jobs[0]["scrape_interval"] == "2s"
    assert jobs[2]["kubernetes_sd_configs"][0]["role"] == "endpoints"
    assert jobs[2]["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["zeta-system"]}


def test_pods_get_the_label_contract_through_the_monitors_relabelling(
    monitors: list[dict[str, Any]],
) -> None:
    jobs = scrape_configs(monitors, API)
    groups = pod_target_groups([pod("chat-small-1", "small", "198.18.0.7")])
    seen = {}
    for job in jobs[:2]:
        for group in groups:
            labels = relabel(
                job["relabel_configs"], {"__address__": group["targets"][0], **group["labels"]}
            )
            if labels is not None:
                seen[(job["job_name"][-1], group["targets"][0])] = labels
    # Endpoint 0 keeps the model port, endpoint 1 the router's admin port (the client port has
    # no /metrics): one target each.
    assert set(seen) == {("0", "198.18.0.7:8000"), ("1", "198.18.0.7:8081")}
    model, router = seen[("0", "198.18.0.7:8000")], seen[("1", "198.18.0.7:8081")]
    for labels in (model, router):
        assert labels[LABEL_NAMESPACE] == "team-a"
        assert labels[LABEL_POD] == "chat-small-1"
        assert labels[LABEL_ROUTER] == "chat"
        assert labels[LABEL_TIER] == "small"
    assert model[LABEL_COMPONENT] == "model-server"
    assert router[LABEL_COMPONENT] == "router"  # the PodMonitor's relabelling for this port
    # A finished pod is not scraped; neither is a pod of another application.
    done = pod_target_groups([pod("old", "small", "198.18.0.8", phase="Succeeded")])
    assert relabel(jobs[0]["relabel_configs"], {**done[0]["labels"]}) is None
    other = pod("other", "small", "198.18.0.9")
    other["metadata"]["labels"]["app.kubernetes.io/name"] = "something-else"
    (g, *_) = pod_target_groups([other])
    assert relabel(jobs[0]["relabel_configs"], dict(g["labels"])) is None


def test_the_operator_through_its_metrics_service(monitors: list[dict[str, Any]]) -> None:
    job = scrape_configs(monitors, API)[2]
    op = pod("zr-op-1", "x", "198.18.0.3")
    op["metadata"]["namespace"] = "zeta-system"
    op["spec"]["containers"] = [
        {"name": "operator", "image": "z", "ports": [{"name": "metrics", "containerPort": 9090}]}
    ]
    selector = next(m for m in monitors if m["kind"] == "ServiceMonitor")["spec"]["selector"]
    service = {"metadata": {"name": "zr-op-metrics", "namespace": "zeta-system",
                            "labels": selector["matchLabels"]}}  # fmt: skip
    endpoints = {
        "metadata": {"name": "zr-op-metrics", "namespace": "zeta-system"},
        "subsets": [
            {
                "addresses": [
                    {"ip": "198.18.0.3", "targetRef": {"kind": "Pod", "name": "zr-op-1"}}
                ],
                "ports": [{"name": "metrics", "port": 9090, "protocol": "TCP"}],
            }
        ],
    }
    (group,) = endpoints_target_groups(
        [endpoints],
        {("zeta-system", "zr-op-metrics"): service},
        {("zeta-system", "zr-op-1"): op},
    )
    assert group["targets"] == ["198.18.0.3:9090"]
    labels = relabel(job["relabel_configs"], dict(group["labels"]))
    assert labels is not None
    assert labels["service"] == "zr-op-metrics"
    assert labels["pod"] == "zr-op-1"
    assert labels["container"] == "operator"
    assert labels["endpoint"] == "metrics"
    assert labels["job"] == "zr-op-metrics"


def test_http_sd_replaces_only_the_discovery() -> None:
    jobs = [{"job_name": "j", "kubernetes_sd_configs": [
        {"role": "pod", "namespaces": {"names": ["a", "b"]}, "api_server": "x"}
    ], "relabel_configs": [{"action": "keep"}]}]  # fmt: skip
    (job,) = via_http_sd(jobs, "http://127.0.0.1:9", refresh="2s")
    assert "kubernetes_sd_configs" not in job
    assert job["http_sd_configs"] == [
        {"url": "http://127.0.0.1:9/sd?role=pod&namespace=a&namespace=b", "refresh_interval": "2s"}
    ]
    assert job["relabel_configs"] == [{"action": "keep"}]


def test_names_and_relabel_fields() -> None:
    assert sanitize("app.kubernetes.io/instance") == "app_kubernetes_io_instance"
    assert relabeling({"sourceLabels": ["a"], "targetLabel": "b", "action": "Replace"}) == {
        "source_labels": ["a"],
        "target_label": "b",
        "action": "replace",
    }
