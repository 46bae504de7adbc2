"""The controller's decisions around render: replicas and the routing generation (pure)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeta_router.api.models import SpecError
from zeta_router.api.pod_policy import PodPolicy
from zeta_router.controller.desired import Desired, RenderSettings, compute
from zeta_router.render import names

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "zetarouter-7b-14b.yaml"


def body(**status: Any) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(SAMPLE.read_text()) if d and d["kind"] == "ZetaRouter"]
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": "chat", "namespace": "ns", "uid": "u", "generation": 1}
    if status:
        doc["status"] = status
    return doc


def by_name(d: Desired) -> dict[str, dict[str, Any]]:
    return {f"{c['kind']}/{c['metadata']['name']}": c for c in d.children}


def live_deployment(replicas: int) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}}


def test_new_router() -> None:
    d = compute(body(), {}, {})
    assert set(by_name(d)) == {
        "ConfigMap/chat-routing",
        "Deployment/chat-7b",
        "Service/chat-7b",
        "Service/chat-7b-replicas",
        "PodDisruptionBudget/chat-7b",
        "Deployment/chat-14b",
        "Service/chat-14b",
        "Service/chat-14b-replicas",
        "PodDisruptionBudget/chat-14b",
        "Service/chat",
    }
    assert d.tier_deployments == {"7b": "chat-7b", "14b": "chat-14b"}
    assert d.routing_generation == 1
    assert d.status_fields["routingGeneration"] == 1
    assert by_name(d)["Deployment/chat-7b"]["spec"]["replicas"] == 1  # initial
    # Its budget follows the replicas it gets: one replica, no eviction.
    assert by_name(d)["PodDisruptionBudget/chat-7b"]["spec"]["maxUnavailable"] == 0
    grown = compute(body(), {"chat-7b": live_deployment(3)}, {})
    assert by_name(grown)["PodDisruptionBudget/chat-7b"]["spec"]["maxUnavailable"] == 1
    old = compute(body(), {}, {}, RenderSettings(pdb_api_version="policy/v1beta1"))
    assert by_name(old)["PodDisruptionBudget/chat-7b"]["apiVersion"] == "policy/v1beta1"


@pytest.mark.parametrize(("live", "expected"), [(3, 3), (9, 4), (0, 1)])
def test_hand_set_replicas_are_kept_within_bounds(live: int, expected: int) -> None:
    d = compute(body(), {"chat-7b": live_deployment(live)}, {})
    assert by_name(d)["Deployment/chat-7b"]["spec"]["replicas"] == expected


def test_loop_choice_applies_only_in_apply_mode() -> None:
    b = body(tiers=[{"name": "7b", "desiredReplicas": 3}])
    b["spec"]["autoscaling"]["enabled"] = True
    d = compute(b, {"chat-7b": live_deployment(2)}, {})
    assert by_name(d)["Deployment/chat-7b"]["spec"]["replicas"] == 3
    b["spec"]["autoscaling"]["mode"] = "advisory"
    d = compute(b, {"chat-7b": live_deployment(2)}, {})
    assert by_name(d)["Deployment/chat-7b"]["spec"]["replicas"] == 2


def test_threshold_change_bumps_generation_and_keeps_pod_templates() -> None:
    first = compute(body(), {}, {})
    live_cm_map = {"chat-routing": by_name(first)["ConfigMap/chat-routing"]}
    same = compute(body(), {}, live_cm_map)
    assert same.routing_generation == first.routing_generation
    changed_body = body()
    changed_body["spec"]["router"]["contexts"][0]["thresholds"] = [0.45]
    changed = compute(changed_body, {}, live_cm_map)
    assert changed.routing_generation == first.routing_generation + 1
    for name in ("Deployment/chat-7b", "Deployment/chat-14b"):
        assert by_name(changed)[name] == by_name(first)[name]


def test_invalid_spec_raises() -> None:
    b = body()
    b["spec"]["tiers"][1]["replicas"] = {"min": 3, "max": 2}
    with pytest.raises(SpecError, match=r"spec\.tiers\[1\]\.replicas: min 3 > max 2"):
        compute(b, {}, {})


@pytest.mark.parametrize("sample", sorted((SAMPLE.parent).glob("*.yaml")), ids=lambda p: p.name)
def test_every_label_and_annotation_key_of_a_child_is_of_our_own_domains(sample: Path) -> None:
    # A child's fingerprint (what a drift check compares) keeps only keys of these domains, so
    # that another manager's key (the Deployment controller's revision) is not drift: a key of
    # ours outside them would have its edits missed until the next full reconciliation.
    (doc,) = [d for d in yaml.safe_load_all(sample.read_text()) if d and d["kind"] == "ZetaRouter"]
    doc["metadata"] = {"name": "chat", "namespace": "ns", "uid": "u", "generation": 1}
    # The installer's policy is not what is tested here: every Secret reference allowed.
    settings = RenderSettings(network_policy=True, pod_policy=PodPolicy(secret_refs="any"))
    d = compute(doc, {}, {}, settings)
    assert d.children
    for child in d.children:
        meta = child["metadata"]
        for key in [*(meta.get("labels") or {}), *(meta.get("annotations") or {})]:
            assert key.startswith(names.OWN_KEY_DOMAINS), (child["kind"], key)
