"""The kubelet stand-in's decisions (pure)."""

from __future__ import annotations

from typing import Any

from zeta_router_dev.local.kubelet import Action, build_pod_status, plan, pod_ip_for, pod_is_ready

NODE = "n1"


def pod(
    node: str | None = None,
    phase: str = "Pending",
    ready: bool | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [{"name": "model", "image": "m"}, {"name": "router", "image": "r"}]},
        "status": {"phase": phase},
    }
    if node:
        p["spec"]["nodeName"] = node
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if ready is not None:
        p["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return p


def test_plan() -> None:
    assert plan(pod(), NODE, held=False) is Action.BIND
    assert plan(pod(NODE), NODE, held=False) is Action.START
    assert plan(pod(NODE, "Running", ready=True), NODE, held=False) is Action.NONE
    assert plan(pod(NODE, "Running", ready=True), NODE, held=True) is Action.START
    assert plan(pod(NODE, "Running", ready=False), NODE, held=True) is Action.NONE
    assert plan(pod("other"), NODE, held=False) is Action.NONE
    assert plan(pod(NODE, deleting=True), NODE, held=False) is Action.FINALIZE
    assert plan(pod("other", deleting=True), NODE, held=False) is Action.NONE


def test_status_reports_every_container_and_keeps_transition_times() -> None:
    first = build_pod_status(pod(NODE), ready=True, pod_ip="10.244.0.9", now="t1")
    assert first["phase"] == "Running"
    assert [c["name"] for c in first["containerStatuses"]] == ["model", "router"]
    assert all(c["ready"] for c in first["containerStatuses"])
    running = {**pod(NODE), "status": first}
    assert pod_is_ready(running)
    again = build_pod_status(running, ready=True, pod_ip="10.244.0.9", now="t2")
    ready = next(c for c in again["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "t1"
    held = build_pod_status(running, ready=False, pod_ip="10.244.0.9", now="t3")
    assert not pod_is_ready({**running, "status": held})


def test_pod_addresses_are_distinct_and_not_loopback() -> None:
    taken: set[str] = set()
    for i in range(200):
        ip = pod_ip_for(f"uid-{i}", taken)
        assert ip.startswith("10.244.")
        assert ip not in taken
        taken.add(ip)
