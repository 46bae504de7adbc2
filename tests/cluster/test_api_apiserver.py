"""The generated CRD and the rendered children against a real kube-apiserver (no operator).

- The samples are accepted and stored whole (the schema declares every field they use).
- Schema-invalid objects are rejected by the apiserver, naming the fields.
- The status subresource keeps every status field the models define.
- Every rendered child is accepted through server-side apply with the operator's field manager,
  and applying it again changes nothing (apiserver defaults never look like drift).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import REPO, load_yaml_docs
from zeta_router.api.models import parse_status, parse_zetarouter
from zeta_router.controller.apply import changed_paths
from zeta_router.controller.cli import pdb_api_version
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router.render.children import render
from zeta_router.render.networkpolicy import build_network_policy

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("zr_crd")]

SAMPLES = sorted((REPO / "manifests" / "samples").glob("zetarouter-*.yaml"))


def zr_path(namespace: str, name: str | None = None) -> str:
    return api_path("zeta.ai/v1alpha1", "zetarouters", namespace, name)


def sample(path: Path) -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_docs(path) if d.get("kind") == "ZetaRouter"]
    return doc


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_are_accepted_and_stored_whole(kube: Kube, namespace: str, path: Path) -> None:
    body = sample(path)
    created = kube.create(zr_path(namespace), body)
    assert created["spec"] == body["spec"]  # nothing pruned, nothing defaulted
    assert parse_zetarouter(created) == parse_zetarouter(body)


def test_schema_invalid_objects_are_rejected(kube: Kube, namespace: str) -> None:
    body = copy.deepcopy(sample(SAMPLES[0]))
    body["metadata"] = {"name": "bad"}
    tier = body["spec"]["tiers"][0]
    tier["engine"] = "tensorflow"
    tier["port"] = 70000
    tier["replicas"]["max"] = "many"
    tier["resources"]["limits"]["cpu"] = 0.5
    body["spec"]["router"]["shadowSampleRate"] = 1.5
    body["spec"]["router"]["contexts"][0]["thresholds"] = [1.2]
    body["spec"]["autoscaling"]["mode"] = "auto"
    with pytest.raises(ApiError) as info:
        kube.create(zr_path(namespace), body)
    assert info.value.status == 422
    message = info.value.message
    for field in (
        "spec.tiers.engine",
        "spec.tiers.port",
        "spec.tiers.replicas.max",
        "spec.tiers.resources.limits.cpu",
        "spec.router.shadowSampleRate",
        "spec.router.contexts.thresholds",
        "spec.autoscaling.mode",
    ):
        assert field in message, (field, message)
    with pytest.raises(ApiError) as info:
        kube.create(zr_path(namespace), {**body, "spec": {"tiers": []}})
    assert "spec.tiers" in info.value.message
    assert kube.get_or_none(zr_path(namespace, "bad")) is None


def test_status_subresource_keeps_every_status_field(kube: Kube, namespace: str) -> None:
    body = sample(SAMPLES[0])
    kube.create(zr_path(namespace), body)
    status = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "TiersNotReady", "message": "0/2",
             "lastTransitionTime": "2024-01-01T00:00:00Z", "observedGeneration": 1},
        ],
        "tiers": [{"name": "7b", "replicas": 1, "readyReplicas": 0, "desiredReplicas": 2}],
        "thresholds": {"ZetaHRM": [0.42], "default": [0.5]},
        "routingGeneration": 3,
        "readySummary": "0/2",
        "thresholdsSummary": "ZetaHRM=0.42 default=0.5",
        "lastDecision": {"time": "2024-01-01T00:00:00Z", "action": "none", "reason": "steady"},
        "loopState": {"tiers": {"7b": {"lowSince": 12.5}}},
    }  # fmt: skip
    name = body["metadata"]["name"]
    written = kube.patch(
        zr_path(namespace, name) + "/status",
        {"status": {**status, "notInTheSchema": 1}},
        MERGE_PATCH,
    )
    assert written["status"] == status
    assert parse_status(written).to_dict() == status


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_rendered_children_are_applied_and_a_second_apply_changes_nothing(
    kube: Kube, namespace: str, path: Path
) -> None:
    body = sample(path)
    # The PodDisruptionBudget's version is the one this cluster serves, as the operator asks.
    out = render(
        body["metadata"]["name"],
        namespace,
        parse_zetarouter(body),
        pdb_api_version=pdb_api_version(kube),
    )
    peer = {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}
    children = [*out.children, build_network_policy(body["metadata"]["name"], [peer])]
    for child in children:
        kind = names.child_kind(child["kind"])
        obj = {**child, "metadata": {**child["metadata"], "namespace": namespace}}
        where = api_path(child["apiVersion"], kind.plural, namespace, child["metadata"]["name"])
        first = kube.apply(where, obj, names.FIELD_MANAGER)
        again = kube.apply(where, obj, names.FIELD_MANAGER)
        # The apiserver's defaults are not ours and never look like drift: nothing is written
        # (a Deployment's status may move meanwhile: the controller-manager writes it).
        assert changed_paths(first, again, obj) == [], child["metadata"]["name"]
        (ours,) = [
            m for m in again["metadata"]["managedFields"] if m["manager"] == names.FIELD_MANAGER
        ]
        assert ours["operation"] == "Apply"
    cm = kube.get(api_path("v1", "configmaps", namespace, f"{body['metadata']['name']}-routing"))
    assert yaml.safe_load(cm["data"]["routing.yaml"])["generation"] == 1
