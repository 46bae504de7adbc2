"""Each tier's PodDisruptionBudget on the real apiserver: created at the API version the cluster
serves (policy/v1beta1 on the local 1.20 control plane), owned by the ZetaRouter, following the
tier's replicas, repaired when edited and recreated when deleted, removed when a tier turns it
off. (The eviction it refuses is tested on the real node: tests/e2e/test_real_node_pdb.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from support.cluster import wait_for
from support.fixtures_cluster import DRIFT_INTERVAL
from support.zetarouters import TIMEOUT, create_zr, get_zr, patch_spec, sample
from zeta_router.controller.cli import pdb_api_version
from zeta_router.kube import MERGE_PATCH, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]


def test_every_tier_gets_an_owned_repaired_budget(
    kube: Kube, namespace: str, operator: OperatorProcess
) -> None:
    version = pdb_api_version(kube)
    kind = names.pdb_kind(version)
    body = sample()
    body["spec"]["tiers"][0]["replicas"] = {"min": 1, "max": 3, "initial": 1}
    body["spec"]["tiers"][1]["replicas"] = {"min": 2, "max": 3, "initial": 2}
    zr = create_zr(kube, namespace, body)
    small, large = (t["name"] for t in body["spec"]["tiers"])

    def path(tier: str) -> str:
        return api_path(version, kind.plural, namespace, names.tier_object_name("chat", tier))

    def pdb(tier: str) -> dict[str, Any] | None:
        return kube.get_or_none(path(tier))

    first = wait_for(lambda: pdb(small) and pdb(large), TIMEOUT, "a budget per tier")
    assert first is not None
    uid = zr["metadata"]["uid"]
    for tier, allowed in ((small, 0), (large, 1)):
        obj = pdb(tier)
        assert obj is not None
        assert obj["apiVersion"] == version
        (ref,) = obj["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == ("ZetaRouter", uid, True)
        # One replica: no eviction at all; two: one at a time.
        assert obj["spec"]["maxUnavailable"] == allowed
        assert obj["spec"]["selector"]["matchLabels"] == names.tier_selector("chat", tier)

    # Edited by someone: put back. Deleted: recreated.
    kube.patch(path(large), {"spec": {"maxUnavailable": 2}}, MERGE_PATCH)
    old_uid = pdb(small)["metadata"]["uid"]  # type: ignore[index]
    kube.delete(path(small))

    def repaired() -> bool:
        got_large, got_small = pdb(large), pdb(small)
        return (
            got_large is not None
            and got_large["spec"]["maxUnavailable"] == 1
            and got_small is not None
            and got_small["metadata"]["uid"] != old_uid
        )

    wait_for(repaired, 2 * DRIFT_INTERVAL + TIMEOUT, "the budgets repaired")

    # The small tier grows to three replicas: its budget allows one eviction now.
    tiers = get_zr(kube, namespace, "chat")["spec"]["tiers"]
    tiers[0]["replicas"] = {"min": 3, "max": 3, "initial": 3}
    tiers[1]["disruptionBudget"] = {"enabled": False}
    patch_spec(kube, namespace, "chat", {"tiers": tiers})

    def followed() -> bool:
        got = pdb(small)
        return got is not None and got["spec"]["maxUnavailable"] == 1 and pdb(large) is None

    wait_for(followed, 2 * DRIFT_INTERVAL + TIMEOUT, "the budget to follow the spec")
