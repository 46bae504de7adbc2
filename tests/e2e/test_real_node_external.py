"""An external tier on a real node: the chart's operator (a pod), a ZetaRouter with a llama.cpp
tier and an external tier, and a pod playing the hosted provider (llama.cpp's server with
``--api-key``, which refuses a request without the key with 401, as hosted providers do) behind
a Service; the official openai client talks to the entry Service's ClusterIP from this machine.

Checked: the provider refuses a request that lacks the key, yet every request decided for the
external tier is answered by it (the routers read the key from the marked Secret, mounted as a
volume) with the model name the client used; the provider generated exactly the tokens the
client was told of (nothing else called it: no probe, no shadow copy); the cluster's tier
answers its own context; a key changed in the Secret reaches the routers with no pod restarted
(the provider refuses it, so requests fail over, until the key is back); with the provider
gone, requests for it fail over to the cluster's tier and none fails; the key is in no
ConfigMap, Event or status.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from support.cluster import apply, events_for, wait_for
from support.deadlines import POD
from support.fixtures_node import RealNodeHandle
from support.node_install import module_install
from zeta_router.api.pod_policy import EXTERNAL_URLS_ANNOTATION, USABLE_BY_ANNOTATION
from zeta_router.kube import Kube, api_path
from zeta_router_dev.cluster.nodeconfig import CLUSTER_DOMAIN
from zeta_router_dev.cluster.workloads import (
    load_cpu_sample,
    localize_zetarouter,
    service_url,
)
from zeta_router_dev.images.build import LLAMACPP_IMAGE, LLAMACPP_MODEL, containerd_ref

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.slow]

KEY = "sk-real-node-provider-7c41e9"
OTHER_KEY = "sk-real-node-rotated-30d8a2"
PROVIDER = "provider"
PROVIDER_MODEL = "provider-model"
PROVIDER_PORT = 8080
SECRET = "provider-key"


def provider_objects(namespace: str) -> list[dict[str, Any]]:
    """The provider: llama.cpp's server asking for the key (from the same Secret the routers
    get it from), one replica behind a ClusterIP Service."""
    labels = {"app.kubernetes.io/name": PROVIDER}
    container = {
        "name": "server",
        "image": containerd_ref(LLAMACPP_IMAGE),
        "imagePullPolicy": "Never",  # loaded into the node's containerd; no registry here
        "args": [
            "--model",
            LLAMACPP_MODEL,
            "--alias",
            PROVIDER_MODEL,
            "--host",
            "0.0.0.0",
            "--port",
            str(PROVIDER_PORT),
            "--metrics",
            "--threads",
            "1",
            "--ctx-size",
            "2048",
        ],
        "env": [
            {
                "name": "LLAMA_API_KEY",
                "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "token"}},
            }
        ],
        "ports": [{"name": "http", "containerPort": PROVIDER_PORT}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsUser": 1000,
            "runAsNonRoot": True,
        },
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": PROVIDER, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"automountServiceAccountToken": False, "containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": PROVIDER, "namespace": namespace, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": PROVIDER_PORT, "targetPort": "http"}],
            },
        },
    ]


def provider_base_url(namespace: str) -> str:
    return f"http://{PROVIDER}.{namespace}.svc.{CLUSTER_DOMAIN}:{PROVIDER_PORT}/v1"


def external_zetarouter(namespace: str) -> dict[str, Any]:
    """The CPU sample's small tier, then the provider as an external tier; context ``hosted``
    sends every request to the provider (cut point 0), ``cluster`` none (cut point 1)."""
    zr = localize_zetarouter(load_cpu_sample(), namespace=namespace)
    small = zr["spec"]["tiers"][0]
    small["replicas"] = {"min": 1, "max": 1}
    base_url = provider_base_url(namespace)
    zr["spec"]["tiers"] = [
        small,
        {
            "name": "hosted",
            "costWeight": 10,
            "external": {
                "baseUrl": base_url,
                "allowInsecureHttp": True,  # the provider is in the cluster's own network
                "model": PROVIDER_MODEL,
                "apiKeySecretRef": {"name": SECRET, "key": "token"},
                "promptCostPer1kTokens": 0.5,
                "completionCostPer1kTokens": 1.5,
            },
        },
    ]
    zr["spec"]["router"]["contexts"] = [
        {"name": "cluster", "thresholds": [1.0]},
        {"name": "hosted", "thresholds": [0.0]},
    ]
    zr["spec"]["router"]["defaultContext"] = "cluster"
    return zr


@dataclass
class Hosted:
    kube: Kube
    namespace: str
    name: str
    entry_url: str
    provider_url: str

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.entry_url}/v1", api_key="unused", max_retries=0, timeout=120
        )

    def provider_metric(self, name: str) -> float:
        request = urllib.request.Request(
            f"{self.provider_url}/metrics", headers={"Authorization": f"Bearer {KEY}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
        raise AssertionError(f"{name} not in the provider's metrics")


@pytest.fixture(scope="module")
def hosted(real_node: RealNodeHandle) -> Iterator[Hosted]:
    kube = real_node.kube
    with module_install(real_node, "zt-ext") as install:
        namespace = install.namespace
        install.install_operator()
        zr = external_zetarouter(namespace)
        name = zr["metadata"]["name"]
        kube.create(
            api_path("v1", "secrets", namespace),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": SECRET,
                    "annotations": {
                        USABLE_BY_ANNOTATION: name,
                        EXTERNAL_URLS_ANNOTATION: provider_base_url(namespace),
                    },
                },
                "stringData": {"token": KEY},
            },
        )
        for obj in provider_objects(namespace):
            apply(kube, obj)
        apply(kube, zr)
        install.wait_for_zetarouter(name, "Ready", POD)
        provider = api_path("apps/v1", "deployments", namespace, PROVIDER)
        install.wait(
            lambda: kube.get(provider).get("status", {}).get("readyReplicas") == 1,
            POD,
            "the provider's pod ready",
        )
        yield Hosted(
            kube,
            namespace,
            name,
            service_url(kube, namespace, name),
            service_url(kube, namespace, PROVIDER),
        )


def test_the_provider_refuses_a_request_without_the_key(hosted: Hosted) -> None:
    body = json.dumps(
        {"model": PROVIDER_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()
    for auth in ({}, {"Authorization": "Bearer not-the-key"}):
        request = urllib.request.Request(
            f"{hosted.provider_url}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", **auth},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 401


def test_the_external_tier_answers_with_the_key_and_the_cluster_tier_its_own(
    hosted: Hosted,
) -> None:
    client = hosted.client()
    before = hosted.provider_metric("llamacpp:tokens_predicted_total")
    told = 0
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(
            model=f"{hosted.name}/hosted",
            messages=[{"role": "user", "content": f"Say hello to number {i}."}],
            max_tokens=6,
        )
        assert raw.headers["x-zeta-tier"] == "hosted"
        answer = raw.parse()
        assert answer.model == f"{hosted.name}/hosted"  # the client's name, not the provider's
        assert answer.choices[0].message.content is not None
        assert answer.usage is not None
        told += answer.usage.completion_tokens
    # The provider generated what the client was told of, and nothing more.
    assert told > 0
    wait_for(
        lambda: hosted.provider_metric("llamacpp:tokens_predicted_total") - before == told,
        60,
        f"the provider's count of generated tokens to reach {told}",
    )

    raw = client.chat.completions.with_raw_response.create(
        model=f"{hosted.name}/cluster",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
    )
    assert raw.headers["x-zeta-tier"] == "small"
    assert hosted.provider_metric("llamacpp:tokens_predicted_total") - before == told


def router_pods(hosted: Hosted) -> dict[str, int]:
    """The ZetaRouter's pods (each carries a router): uid -> restarts of its router container."""
    pods = hosted.kube.list(
        api_path("v1", "pods", hosted.namespace),
        label_selector=f"app.kubernetes.io/instance={hosted.name}",
    )["items"]
    return {
        p["metadata"]["uid"]: sum(
            s.get("restartCount", 0)
            for s in p.get("status", {}).get("containerStatuses") or []
            if s["name"] == "router"
        )
        for p in pods
    }


def test_a_key_rotated_in_its_secret_reaches_the_routers_without_a_restart(
    hosted: Hosted,
) -> None:
    kube, ns = hosted.kube, hosted.namespace
    pods = router_pods(hosted)
    assert pods
    secret = api_path("v1", "secrets", ns, SECRET)
    client = hosted.client()

    def answered_by(tier: str) -> bool:
        raw = client.chat.completions.with_raw_response.create(
            model=f"{hosted.name}/hosted",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=4,
        )
        assert raw.parse().choices[0].message.content is not None  # (answered either way)
        return raw.headers["x-zeta-tier"] == tier

    def set_key(key: str) -> None:
        kube.patch(secret, {"data": {"token": base64.b64encode(key.encode()).decode()}})

    # The routers get another key; the provider keeps the one it read at its start. Once the
    # kubelet has updated the mounted Secret, the routers send the new key, the provider refuses
    # it (401: key_refused), and the requests fail over to the cluster's tier.
    set_key(OTHER_KEY)
    try:
        wait_for(lambda: answered_by("small"), POD, "the routers sending the rotated key")
    finally:
        set_key(KEY)
    # Back to the provider's key: the routers follow it again.
    wait_for(lambda: answered_by("hosted"), POD, "the routers sending the provider's key again")
    # Neither change restarted a pod or a router.
    assert router_pods(hosted) == pods


def test_with_the_provider_gone_its_requests_fail_over_and_none_fails(hosted: Hosted) -> None:
    kube, ns = hosted.kube, hosted.namespace
    kube.patch(
        api_path("apps/v1", "deployments", ns, PROVIDER),
        {"spec": {"replicas": 0}},
    )
    endpoints = api_path("v1", "endpoints", ns, PROVIDER)
    wait_for(
        lambda: not any(s.get("addresses") for s in kube.get(endpoints).get("subsets") or []),
        POD,
        "the provider's Service without endpoints",
    )
    client = hosted.client()
    tiers = []
    # Until kube-proxy has the empty Service, a request may still reach the stopping provider
    # and be answered there; every request is answered either way.
    deadline = time.monotonic() + POD
    while time.monotonic() < deadline and tiers[-2:] != ["small", "small"]:
        raw = client.chat.completions.with_raw_response.create(
            model=f"{hosted.name}/hosted",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=4,
        )
        assert raw.parse().choices[0].message.content is not None
        tiers.append(raw.headers["x-zeta-tier"])
    assert tiers[-2:] == ["small", "small"], tiers


def test_the_key_is_in_no_configmap_event_or_status(hosted: Hosted) -> None:
    kube, ns = hosted.kube, hosted.namespace
    configmaps = kube.list(api_path("v1", "configmaps", ns))["items"]
    assert configmaps
    for key in (KEY, OTHER_KEY):
        assert all(key not in json.dumps(cm.get("data") or {}) for cm in configmaps)
        assert key not in json.dumps(events_for(kube, ns, hosted.name))
        zr = kube.get(api_path("zeta.ai/v1alpha1", "zetarouters", ns, hosted.name))
        assert key not in json.dumps(zr.get("status") or {})
