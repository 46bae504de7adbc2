"""A fleet split between operator replicas by namespace (docs/operator.md, "A large fleet").

Two operator processes against the real apiserver, with the RBAC we ship and peering on (as a
real install runs them), each serving its own namespaces: every ZetaRouter gets its children,
each from the replica that serves its namespace and never from the other, and neither replica
pauses for the other (kopf's peering is per namespace: replicas of different shards are not
peers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import zetarouters
from support.cluster import REPO, apply, load_yaml_docs, unique_name, wait_for
from support.fixtures_cluster import DRIFT_INTERVAL
from support.zetarouters import TIMEOUT, create_zr, sample
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]

ROUTERS_PER_SHARD = 3


def expected_names(body: dict[str, Any]) -> dict[str, set[str]]:
    name = body["metadata"]["name"]
    tiers = [t["name"] for t in body["spec"]["tiers"]]
    return {
        "Deployment": {f"{name}-{t}" for t in tiers},
        "Service": {name}
        | {f"{name}-{t}" for t in tiers}
        | {f"{name}-{t}-replicas" for t in tiers},
        "ConfigMap": {f"{name}-routing"},
    }


@pytest.fixture
def second_namespace(kube: Kube) -> Iterator[str]:
    name = unique_name("zt-shard-b")
    kube.create(api_path("v1", "namespaces"), {"metadata": {"name": name}})
    for doc in load_yaml_docs(REPO / "manifests" / "role.yaml"):
        apply(kube, doc, name)
    yield name
    try:
        kube.delete(api_path("v1", "namespaces", None, name))
    except ApiError as e:
        if not e.not_found:
            raise


def reconciled_namespaces(log: str) -> set[str]:
    """The namespaces of the ZetaRouters a replica's log says it reconciled."""
    return set(re.findall(r"([a-z0-9-]+)/[a-z0-9-]+ reconciled \(", log))


def test_namespaces_split_between_replicas_serve_each_router_once(
    kube: Kube,
    namespace: str,
    second_namespace: str,
    zr_crd: object,
    operator_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    for crd in load_yaml_docs(REPO / "manifests" / "peering.yaml"):
        apply(kube, crd)
    wait_for(
        lambda: kube.get_or_none(api_path("kopf.dev/v1", "kopfpeerings", namespace)) is not None,
        TIMEOUT,
        "the peering CRDs",
    )
    shards = [[namespace], [second_namespace]]
    replicas = [
        OperatorProcess(
            kubeconfig=operator_kubeconfig,
            namespaces=shard,
            log_path=tmp_path / f"operator-{i}.log",
            drift_interval=DRIFT_INTERVAL,
            standalone=False,
        )
        for i, shard in enumerate(shards)
    ]
    try:
        for proc in replicas:
            proc.start()
        routers = {
            ns: [create_zr(kube, ns, sample(f"r{i}")) for i in range(ROUTERS_PER_SHARD)]
            for ns in (namespace, second_namespace)
        }
        for ns, bodies in routers.items():
            for body in bodies:
                zetarouters.wait_children(kube, ns, body, expected_names(body))

        def log(i: int) -> str:
            return replicas[i].log_path.read_text(errors="replace")

        # Every ZetaRouter's create is logged by the replica of its shard.
        for i, shard in enumerate(shards):
            for ns in shard:
                for body in routers[ns]:
                    line = f"{ns}/{body['metadata']['name']} reconciled (create)"
                    wait_for(lambda i=i, line=line: line in log(i), TIMEOUT, line)
        # ...and nothing of the other shard, while both stay active.
        for i, shard in enumerate(shards):
            assert reconciled_namespaces(log(i)) <= set(shard), f"replica {i}"
            assert "Pausing operations in favour of" not in log(i)
    finally:
        for proc in replicas:
            proc.stop()
