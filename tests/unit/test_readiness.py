"""From Deployments to Ready / Progressing / Degraded."""

from __future__ import annotations

from typing import Any

from zeta_router.controller.readiness import readiness_conditions, ready_summary, tier_state
from zeta_router.controller.rollout import TierRollout


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
    assert "tier large: being created" in c["Progressing"]["message"]


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


def test_progressing_names_the_tier_rolling_out_what_changed_and_who_waits() -> None:
    rolling = dep(desired=2, ready=2, updated=1, available=2, reason="ReplicaSetUpdated")
    rolling["status"]["replicas"] = 3  # one surge pod of the new template, two old ones
    small = tier_state("small", rolling, TierRollout("small", "current", "router image a -> b"))
    large = tier_state(
        "large", dep(), TierRollout("large", "hold", "router image a -> b", waiting_for="small")
    )
    c = conds([small, large])
    assert c["Progressing"]["status"] == "True"
    assert c["Progressing"]["reason"] == "RollingOut"
    message = c["Progressing"]["message"]
    rolling_says = "tier small: rolling out a new pod template (router image a -> b): 1/2 updated"
    assert rolling_says in message
    assert "tier large: new pod template (router image a -> b) waits until tier small" in message
    assert small.status_entry()["rollout"] == "RollingOut"
    assert large.status_entry()["rollout"] == "Waiting"
    assert c["Ready"]["status"] == "True"  # serving capacity was never lost


def test_pods_starting_without_a_new_template() -> None:
    scaling = dep(desired=3, ready=2, available=2, reason="ReplicaSetUpdated")
    c = conds([tier_state("small", scaling, TierRollout("small", "current"))])
    assert c["Progressing"]["reason"] == "PodsStarting"
    assert tier_state("small", scaling).status_entry()["rollout"] == "Current"
