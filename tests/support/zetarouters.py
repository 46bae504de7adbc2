"""Helpers for tests that drive the operator through ZetaRouters on a real apiserver: the GPU
sample as a body, creating, patching and reading ZetaRouters, waiting for children and
conditions, holding pods unready (the kubelet stand-in's namespace label)."""

from __future__ import annotations

import copy
from typing import Any

from support.cluster import REPO, children, condition_is, load_yaml_docs, wait_for
from zeta_router.controller.status import zetarouter_path
from zeta_router.kube import MERGE_PATCH, Kube, api_path
from zeta_router.render import names

SAMPLE = REPO / "manifests" / "samples" / "zetarouter-7b-14b.yaml"
TIMEOUT = 60.0  # a deadline: a busy machine may take this long; nothing waits for it
HOLD_LABEL = "zeta.ai/kubelet-hold"


def sample(name: str = "chat") -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_docs(SAMPLE) if d.get("kind") == "ZetaRouter"]
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name}
    return doc


def create_zr(kube: Kube, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return kube.create(zetarouter_path(namespace, body["metadata"]["name"]).rsplit("/", 1)[0], body)


def get_zr(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return kube.get(zetarouter_path(namespace, name))


def patch_spec(kube: Kube, namespace: str, name: str, spec_patch: dict[str, Any]) -> None:
    kube.patch(zetarouter_path(namespace, name), {"spec": spec_patch}, MERGE_PATCH)


def expected_names(body: dict[str, Any]) -> dict[str, set[str]]:
    name = body["metadata"]["name"]
    tiers = [t["name"] for t in body["spec"]["tiers"]]
    return {
        "Deployment": {names.tier_object_name(name, t) for t in tiers},
        "Service": {names.entry_service_name(name)}
        | {names.tier_object_name(name, t) for t in tiers}
        | {names.tier_replicas_service_name(name, t) for t in tiers},
        "ConfigMap": {names.routing_configmap_name(name)},
    }


def wait_children(
    kube: Kube, namespace: str, body: dict[str, Any], want: dict[str, set[str]] | None = None
) -> dict[str, Any]:
    """The ZetaRouter's children once they are exactly ``want`` (default: its expected names)."""
    want = want if want is not None else expected_names(body)

    def present() -> dict[str, Any] | None:
        have = children(kube, namespace, body["metadata"]["name"])
        return have if {k: set(v) for k, v in have.items()} == want else None

    result: dict[str, Any] = wait_for(present, TIMEOUT, f"children {want}")
    return result


def wait_condition(
    kube: Kube, namespace: str, name: str, kind: str, status: str, timeout: float = TIMEOUT
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        zr = get_zr(kube, namespace, name)
        return zr if condition_is(zr, kind, status) else None

    result: dict[str, Any] = wait_for(check, timeout, f"{kind}={status} on {namespace}/{name}")
    return result


def hold_new_pods(kube: Kube, namespace: str, hold: bool) -> None:
    """While held, pods in ``namespace`` that are not Ready yet stay unready (the kubelet
    stand-in); those that serve keep serving."""
    kube.patch(
        api_path("v1", "namespaces", None, namespace),
        {"metadata": {"labels": {HOLD_LABEL: "new" if hold else None}}},
        MERGE_PATCH,
    )
