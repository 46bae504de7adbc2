"""An external tier against a real apiserver and the operator as a real process with the RBAC
we ship: the sample with an external overflow tier is refused while the key's Secret is not
marked for it, then while it is not marked for the provider's URL (SpecValid=False, no
children), then gets no Deployment or Service for that tier, its routers mount the key's
Secret, and the key is in no ConfigMap, status or Event; pointed at another URL afterwards, it
is refused again with its routing file unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from support import zetarouters
from support.cluster import REPO, children, conditions, events_for, load_yaml_docs, wait_for
from support.zetarouters import TIMEOUT, create_zr, get_zr, wait_condition
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.kube import MERGE_PATCH, Kube, api_path
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]

SAMPLE = REPO / "manifests" / "samples" / "zetarouter-external-overflow.yaml"
KEY = "sk-cluster-test-5e1d9b7c3a"


def external_sample(name: str) -> dict[str, Any]:
    (doc,) = [d for d in load_yaml_docs(SAMPLE) if d.get("kind") == "ZetaRouter"]
    doc = copy.deepcopy(doc)
    doc["metadata"] = {"name": name}
    return doc


def test_external_tier_key_by_reference_only(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    body = external_sample("ovf")
    ref = body["spec"]["tiers"][2]["external"]["apiKeySecretRef"]
    kube.create(
        api_path("v1", "secrets", namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": ref["name"]},
            "stringData": {ref["key"]: KEY},
        },
    )
    create_zr(kube, namespace, body)
    refused = wait_condition(kube, namespace, "ovf", "SpecValid", "False")
    message = conditions(refused)["SpecValid"]["message"]
    assert message.startswith(
        f"spec.tiers[2].external.apiKeySecretRef: Secret {ref['name']} is not marked for this "
        "ZetaRouter"
    ), message
    assert all(not objs for objs in children(kube, namespace, "ovf").values())

    # The Secret's owner marks it for the ZetaRouter, but not yet for the provider's URL.
    secret = api_path("v1", "secrets", namespace, ref["name"])
    kube.patch(secret, {"metadata": {"annotations": {"zeta.ai/usable-by": "ovf"}}}, MERGE_PATCH)

    def refused_for_the_url() -> str | None:
        message = str(conditions(get_zr(kube, namespace, "ovf"))["SpecValid"].get("message"))
        return message if message.startswith("spec.tiers[2].external.baseUrl") else None

    message = wait_for(refused_for_the_url, TIMEOUT, "SpecValid=False for the baseUrl")
    assert (
        f"Secret {ref['name']} does not say where its key may be sent (its annotation "
        "zeta.ai/external-urls must list https://llm.example.com)"
    ) in message
    assert all(not objs for objs in children(kube, namespace, "ovf").values())
    # And for the URL: the next reconciliation accepts the ZetaRouter.
    urls = {"zeta.ai/external-urls": "https://llm.example.com/v1"}
    kube.patch(secret, {"metadata": {"annotations": urls}}, MERGE_PATCH)
    wait_condition(kube, namespace, "ovf", "SpecValid", "True")
    served = ["small", "large"]  # no child for the external tier "hosted"
    have = zetarouters.wait_children(
        kube,
        namespace,
        body,
        {
            "Deployment": {f"ovf-{t}" for t in served},
            "Service": {"ovf"}
            | {f"ovf-{t}" for t in served}
            | {f"ovf-{t}-replicas" for t in served},
            "ConfigMap": {"ovf-routing"},
        },
    )
    for name, dep in have["Deployment"].items():
        pod = dep["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["external-key-hosted"]["secret"] == {
            "secretName": ref["name"],
            "items": [{"key": ref["key"], "path": "api-key"}],
            "defaultMode": 420,  # (the apiserver's default)
        }, name
        containers = {c["name"]: c for c in pod["containers"]}
        mounts = {m["name"]: m for m in containers["router"]["volumeMounts"]}
        assert mounts["external-key-hosted"]["mountPath"] == "/var/run/zeta-router/external/hosted"
        assert mounts["external-key-hosted"]["readOnly"] is True
        assert "external-key-hosted" not in json.dumps(containers["model"]), name
        assert ref["name"] not in json.dumps(containers), name

    cm = have["ConfigMap"]["ovf-routing"]
    hosted = yaml.safe_load(cm["data"][CONFIGMAP_KEY])["tiers"][2]
    assert hosted["url"] == "https://llm.example.com"
    assert hosted["servedModelName"] == "provider-model-name"
    assert hosted["external"]["apiKeyFile"] == "/var/run/zeta-router/external/hosted/api-key"
    assert hosted["external"]["overflowOnly"] is True

    # The status lists the tiers the operator runs (an external tier has no Deployment).
    def status_tiers() -> list[str] | None:
        tiers = [t.get("name") for t in get_zr(kube, namespace, "ovf")["status"].get("tiers", [])]
        return tiers if tiers == served else None

    wait_for(status_tiers, TIMEOUT, "status.tiers of the tiers the operator runs")
    # The key itself: nowhere the operator writes.
    zr = get_zr(kube, namespace, "ovf")
    written = json.dumps([cm, have, zr, events_for(kube, namespace, "ovf")])
    assert KEY not in written
    assert KEY not in operator.log_path.read_text(errors="replace")

    # Whoever may edit the ZetaRouter points the tier elsewhere: refused, and the routers keep
    # the URL the Secret allows (the routing file unchanged).
    kube.patch(
        api_path("zeta.ai/v1alpha1", "zetarouters", namespace, "ovf"),
        {"spec": {"tiers": [*body["spec"]["tiers"][:2], elsewhere(body["spec"]["tiers"][2])]}},
        MERGE_PATCH,
    )
    message = wait_for(refused_for_the_url, TIMEOUT, "SpecValid=False for another baseUrl")
    assert "allows its key to be sent only to https://llm.example.com, not " in message, message
    assert "https://collector.example.net" in message
    routing = kube.get(api_path("v1", "configmaps", namespace, "ovf-routing"))
    assert routing["data"] == cm["data"]


def elsewhere(tier: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(tier)
    out["external"]["baseUrl"] = "https://collector.example.net/v1"
    return out
