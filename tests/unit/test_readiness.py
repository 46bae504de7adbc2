"""From Deployments to Ready / Progressing / Degraded."""

from __future__ import annotations

from typing import Any

from zeta_router.controller.readiness import readiness_conditions, ready_summary, tier_state


def dep(
    desired: int = 2,
    ready: int = 2,
    updated: int | None = None,
    available: int | None = None,
    reason: str = "NewReplicaSetAvailable",
    generation: int = 1,
    observed: int = 1,
) -> dict[str, Any]:
    upd = desired if updated is None else updated
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": upd,
            "updatedReplicas": upd,
            "readyReplicas": ready,
            "availableReplicas": ready if available is None else available,
            "conditions": [{"type": "Progressing", "status": "True", "reason": reason}],
        },
    }


def conds(tiers: list[Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in readiness_conditions(tiers, 3)}


def test_all_ready() -> None:
    c = conds([tier_state("small", dep()), tier_state("large", dep(desired=1, ready=1))])
    assert c["Ready"]["status"] == "True"
    assert c["Progressing"]["status"] == "False"
    assert c["Degraded"]["status"] == "False"
    assert c["Ready"]["observedGeneration"] == 3


def test_missing_deployment_is_not_ready_and_progressing() -> None:
    c = conds([tier_state("small", dep()), tier_state("large", None)])
    assert c["Ready"]["status"] == "False"
    assert "large 0/0" in c["Ready"]["message"]
    assert c["Progressing"]["status"] == "True"
    assert "large (not created yet)" in c["Progressing"]["message"]


def test_rollout_in_progress() -> None:
    starting = dep(ready=0, available=0, reason="ReplicaSetUpdated")
    c = conds([tier_state("small", starting)])
    assert c["Ready"]["status"] == "False"
    assert c["Progressing"]["status"] == "True"
    assert c["Degraded"]["status"] == "False"


def test_unseen_generation_is_progressing() -> None:
    c = conds([tier_state("small", dep(generation=2, observed=1))])
    assert c["Progressing"]["status"] == "True"


def test_rolled_out_tier_without_ready_replicas_is_degraded() -> None:
    c = conds([tier_state("small", dep(ready=0, available=0))])
    assert c["Degraded"]["status"] == "True"
    assert "small: no ready replica" in c["Degraded"]["message"]


def test_stalled_rollout_is_degraded() -> None:
    c = conds([tier_state("small", dep(ready=0, reason="ProgressDeadlineExceeded"))])
    assert c["Degraded"]["status"] == "True"
    assert "rollout stalled" in c["Degraded"]["message"]


def test_apply_error_is_degraded() -> None:
    c = {x["type"]: x for x in readiness_conditions([tier_state("s", dep())], 1, "boom")}
    assert c["Degraded"]["reason"] == "ApplyFailed"
    assert c["Degraded"]["message"] == "boom"


def test_ready_summary() -> None:
    assert ready_summary([tier_state("a", dep()), tier_state("b", dep(ready=0))]) == "1/2"
