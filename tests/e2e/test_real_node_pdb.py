"""A tier's PodDisruptionBudget on a real node: the chart installs the operator as a pod, the CPU
sample runs with one replica per tier, and an eviction of a tier's only pod (what `kubectl
drain` and the cluster autoscaler do) is refused with 429 by the budget the operator rendered;
the pod keeps running."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.cluster import apply, wait_for
from support.fixtures_node import RealNodeHandle
from support.node_install import module_install
from zeta_router.controller.cli import pdb_api_version
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.cluster.workloads import (
    load_cpu_sample,
    localize_zetarouter,
)

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def one_replica_tiers(real_node: RealNodeHandle) -> Iterator[tuple[Kube, str, dict[str, Any]]]:
    kube = real_node.kube
    with module_install(real_node, "zt-pdb") as install:
        install.install_operator()
        zr = localize_zetarouter(load_cpu_sample(), namespace=install.namespace)
        for tier in zr["spec"]["tiers"]:
            tier["replicas"] = {"min": 1, "max": 1}
        apply(kube, zr)
        install.wait_for_zetarouter(zr["metadata"]["name"], "Ready", 300)
        yield kube, install.namespace, zr


def test_the_eviction_of_a_tiers_last_replica_is_refused(
    one_replica_tiers: tuple[Kube, str, dict[str, Any]],
) -> None:
    kube, namespace, zr = one_replica_tiers
    name = zr["metadata"]["name"]
    tier = zr["spec"]["tiers"][0]["name"]
    version = pdb_api_version(kube)
    pdb_path = api_path(version, names.PDB.plural, namespace, names.tier_object_name(name, tier))

    def settled() -> dict[str, Any] | None:
        pdb = kube.get_or_none(pdb_path)
        if pdb is None:
            return None
        status = pdb.get("status") or {}
        observed = status.get("observedGeneration") == pdb["metadata"].get("generation")
        return pdb if observed and status.get("currentHealthy") == 1 else None

    pdb = wait_for(settled, 120, "the disruption controller to count the tier's pod")
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["status"]["disruptionsAllowed"] == 0
    (ref,) = pdb["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"]) == ("ZetaRouter", name)

    selector = ",".join(f"{k}={v}" for k, v in names.tier_selector(name, tier).items())
    (pod,) = kube.list(api_path("v1", "pods", namespace), selector)["items"]
    pod_name = pod["metadata"]["name"]
    eviction = {
        "apiVersion": version,
        "kind": "Eviction",
        "metadata": {"name": pod_name, "namespace": namespace},
    }
    with pytest.raises(ApiError) as refused:
        kube.create(f"{api_path('v1', 'pods', namespace, pod_name)}/eviction", eviction)
    assert refused.value.status == 429, refused.value
    still = kube.get(api_path("v1", "pods", namespace, pod_name))
    assert still["metadata"]["uid"] == pod["metadata"]["uid"]
    assert not still["metadata"].get("deletionTimestamp")
