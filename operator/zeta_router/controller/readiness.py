"""From the tiers' Deployments (and the rollout plan) to the ZetaRouter's per-tier status and its
``Ready``, ``Progressing`` and ``Degraded`` conditions (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zeta_router.controller.rollout import TierRollout, settled
from zeta_router.controller.status import DEGRADED, PROGRESSING, READY, Condition, condition
from zeta_router.render import names

# status.tiers[].rollout
CURRENT = "Current"
ROLLING_OUT = "RollingOut"
WAITING = "Waiting"


@dataclass(frozen=True)
class TierState:
    """What a tier's Deployment reports (zeros when it does not exist yet)."""

    name: str
    exists: bool
    desired: int
    replicas: int
    ready: int
    updated: int
    available: int
    rolled_out: bool  # the Deployment controller finished rolling out the current template
    failure: str | None  # ProgressDeadlineExceeded / ReplicaFailure message, if any
    plan: TierRollout | None = None

    @property
    def progressing(self) -> bool:
        """A rollout, a scale-up or pods (re)starting: not every wanted replica is available;
        or a new template is waiting for its turn."""
        return (
            not self.exists or not self.rolled_out or self.available < self.desired or self.waiting
        )

    @property
    def replacing(self) -> bool:
        """Pods of an older template are being replaced (as opposed to pods only starting)."""
        return self.exists and (self.updated < self.desired or self.replicas > self.updated)

    @property
    def waiting(self) -> bool:
        return self.plan is not None and self.plan.action == "hold"

    @property
    def down(self) -> bool:
        """Rolled out once, wants replicas, has none ready: the tier stopped serving."""
        return self.rolled_out and self.desired > 0 and self.ready == 0

    @property
    def rollout(self) -> str:
        if self.waiting:
            return WAITING
        if self.replacing or (self.plan is not None and self.plan.action == "update"):
            return ROLLING_OUT
        return CURRENT

    def status_entry(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "readyReplicas": self.ready,
            "updatedReplicas": self.updated,
            "rollout": self.rollout,
        }


def _deployment_condition(dep: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for c in (dep.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            cond: Mapping[str, Any] = c
            return cond
    return None


def tier_state(
    name: str, deployment: Mapping[str, Any] | None, plan: TierRollout | None = None
) -> TierState:
    if deployment is None:
        return TierState(name, False, 0, 0, 0, 0, 0, False, None, plan)
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(st.get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    seen = int(st.get("observedGeneration") or 0) >= int(
        (deployment.get("metadata") or {}).get("generation") or 0
    )
    progress = _deployment_condition(deployment, "Progressing")
    # The current template is rolled out when the newest ReplicaSet holds every replica, no old
    # ones remain, and the Deployment controller once saw them all available (its Progressing
    # reason keeps saying so afterwards, even if a pod later stops being ready).
    finished = (progress or {}).get("reason") == "NewReplicaSetAvailable" or (
        progress is None and available == updated
    )
    rolled_out = seen and updated == desired and replicas == updated and finished
    failure = None
    if progress is not None and progress.get("reason") == "ProgressDeadlineExceeded":
        failure = f"rollout stalled: {progress.get('message', '')}".strip()
    replica_failure = _deployment_condition(deployment, "ReplicaFailure")
    if replica_failure is not None and replica_failure.get("status") == "True":
        failure = f"cannot create pods: {replica_failure.get('message', '')}".strip()
    return TierState(
        name, True, desired, replicas, ready, updated, available, rolled_out, failure, plan
    )


def readiness_view(deployment: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a status refresh reads of a tier's Deployment: its :class:`TierState`, whether a
    tier waiting for it to settle may go on, and the annotations of ours that the status
    reports. Equal views: a refresh would write what the last one did. The Deployment
    controller writes a new Deployment's status several times in its first seconds (conditions'
    times and messages among them): only the events that change this view call for a refresh."""
    meta = deployment.get("metadata") or {}
    return (
        tier_state("", deployment),
        settled(deployment),
        tuple(sorted(names.own_keys(meta.get("annotations")).items())),
    )


def _progress_detail(t: TierState) -> str:
    if not t.exists:
        return f"tier {t.name}: being created"
    change = f" ({t.plan.change})" if t.plan is not None and t.plan.change else ""
    if t.waiting and t.plan is not None:
        return (
            f"tier {t.name}: new pod template{change} waits until tier {t.plan.waiting_for} "
            "is rolled out and ready (one tier at a time)"
        )
    counts = f"{t.updated}/{t.desired} updated, {t.available} available"
    if t.rollout == ROLLING_OUT:
        return f"tier {t.name}: rolling out a new pod template{change}: {counts}"
    return f"tier {t.name}: {t.available}/{t.desired} replicas available, pods starting"


def readiness_conditions(
    tiers: Sequence[TierState],
    observed_generation: int | None,
    apply_error: str | None = None,
) -> list[Condition]:
    """``Ready``: every tier has a ready replica. ``Progressing``: some tier is rolling out a
    new pod template (reason ``RollingOut``, with which tier, what changed and which tiers
    wait their turn) or has pods starting (``PodsStarting``). ``Degraded``: objects could not
    be applied, a rollout failed or cannot create pods, or a rolled-out tier has no ready
    replica left."""
    gen = observed_generation
    not_ready = [t for t in tiers if t.ready < 1]
    if not tiers:
        ready = condition(READY, False, "NoTiers", "no tiers", gen)
    elif not_ready:
        detail = ", ".join(f"{t.name} {t.ready}/{t.desired}" for t in not_ready)
        ready = condition(
            READY, False, "TiersNotReady", f"tiers without a ready replica: {detail}", gen
        )
    else:
        ready = condition(
            READY, True, "AllTiersReady", f"{len(tiers)}/{len(tiers)} tiers ready", gen
        )

    moving = [t for t in tiers if t.progressing]
    if moving:
        rolling = any(t.rollout != CURRENT for t in moving)
        progressing = condition(
            PROGRESSING,
            True,
            "RollingOut" if rolling else "PodsStarting",
            "; ".join(_progress_detail(t) for t in moving),
            gen,
        )
    else:
        progressing = condition(PROGRESSING, False, "RolledOut", "every tier is rolled out", gen)

    problems: list[str] = []
    if apply_error:
        problems.append(apply_error)
    problems += [f"tier {t.name}: {t.failure}" for t in tiers if t.failure]
    problems += [
        f"tier {t.name}: no ready replica (0/{t.desired})"
        for t in tiers
        if t.down and not t.failure
    ]
    if problems:
        reason = "ApplyFailed" if apply_error else "TiersUnhealthy"
        degraded = condition(DEGRADED, True, reason, "; ".join(problems), gen)
    else:
        degraded = condition(DEGRADED, False, "Healthy", "no problems", gen)
    return [ready, progressing, degraded]


def ready_summary(tiers: Sequence[TierState]) -> str:
    """``"2/2"``: tiers with a ready replica over all tiers (a printer column)."""
    return f"{sum(1 for t in tiers if t.ready > 0)}/{len(tiers)}"
