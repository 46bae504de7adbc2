"""The control loop's decisions, as pure functions: (config, snapshot, state, now) -> decision.

Modules, each readable alone: ``config`` (what the spec says), ``state`` (what is carried
between intervals, and the cut-point arithmetic), ``replicas`` and ``thresholds`` (the rules),
``decision`` (the result); :func:`decide` runs one interval.

Nothing here does I/O or reads a clock, so the control loop (`loop.py`) and the simulator
(`zeta_router.sim`) drive exactly the same code, and every rule is unit-testable.

Rules, per interval:

Replicas, per tier (smallest first):
  * pressure = waiting requests per ready replica above ``target_queue * (1 + tolerance)``, or
    TTFT p90 above ``target_ttft * (1 + tolerance)``. Under queue pressure a replica is
    saturated, so its running requests are its capacity ``c`` (remembered as the tier's
    *pressure point*), and the tier is sized to ``ceil(in_flight / (headroom * c))``; TTFT
    pressure asks for ``ceil(ready * ttft / target)``. Scale-ups are bounded (at most double,
    at least one) and counted from the replicas already asked for, so replicas that are still
    starting are not asked for twice.
  * refused requests: a tier that refused requests for lack of capacity (429, or the routers'
    connections to it busy; they went to another tier, an external overflow tier often) is
    under pressure and never lightly loaded; it is sized for its answered plus refused rate,
    and queue-pressure sizing counts the refused requests in its in-flight load (Little's law).
  * near capacity: before a queue forms, in-flight load per replica above ``anticipation`` of
    the pressure point (or, for vLLM with no pressure point yet, KV-cache use above its limit)
    scales up the same way.
  * TTFT that more replicas would not fix is not acted on: slow first tokens on idle replicas
    (long prompts), and the p90 of a window that still holds a queue that has since drained.
  * low load = queue and TTFT below ``low_water`` of their targets, and the load projected on one
    replica fewer stays below ``headroom`` of the pressure point (or, before any pressure was
    seen, of the KV-cache limit, or of the queue target if every in-flight request were queued).
    A tier scales down by one step only after ``scale_down_delay`` of uninterrupted low load, and
    each further step waits a full delay again. Scale-up sizing and the scale-down check use the
    same headroom, so a constant load settles and stays (no flapping). A pressure point older
    than ``pressure_memory_seconds`` no longer anticipates or keeps headroom, but no scale-down
    goes back to the load per replica at which it was seen.
  * sleep (tiers with ``min_replicas`` 0 and a ``sleep_after``): a tier that saw no request at
    all (none answered, queued, running, or wanted while asleep) for ``sleep_after`` goes to
    zero replicas; any request, and any missing signal, restarts that idle clock. A tier at
    zero wakes (to max(1, min)) on any request it is asked to serve, above all the routers'
    count of requests that wanted it while it slept (answered elsewhere, or held).
  * missing data (no snapshot, no series for a signal) never scales down and resets the
    low-load clock. Bounds from the spec ([min, max] and the GPU budget) are always enforced.
  * the GPU budget (``max_gpus``) is shared smallest tier first: a scale-up that would exceed it
    is cut, and a tier over budget is reduced from the largest tier down.

Thresholds, per context (one cut point per tier boundary):
  * load shift: when a tier above a boundary is under pressure and cannot grow (at its max or
    cut by the budget) while the tier below is not under pressure, that boundary is raised by
    ``threshold_step`` in every context so more requests stay on the smaller tier; when the
    pressure is gone (the tier is lightly loaded, or it has room to grow again) the shift is
    taken back one step at a time.
  * feedback (when enabled): the cut points move toward the score quantile that sends
    ``target_large_share`` of the context's requests to the largest tier (from the decision-score
    histogram, or the sign of the observed share error without one); if the observed quality of
    requests kept on smaller tiers is below ``quality_floor`` the thresholds are lowered. Steps
    are bounded by ``threshold_step``; nothing moves without ``min_samples`` requests.
  * thresholds stay within the context's bounds and strictly increasing, and do not move again
    until the routers report the config generation that carries the previous change.

External tiers (a provider outside the cluster) are not in ``config.tiers``: they have no
replicas, hold no GPUs of the budget and never sleep, and sit above every tier of ``tiers``, so
the cut points here are those between the tiers the operator runs (the ones into an external
tier stay as the spec writes them). Their spend, per interval:
  * a tier with a cap (``spend_caps``) whose estimated spend per hour is above it is paused (the
    routers send it nothing); a paused tier resumes once the estimate is under ``RESUME_SHARE``
    of the cap and it has been paused for at least a metrics window (so the estimate covers the
    pause). No estimate changes nothing: never paused on no data, and a paused tier stays so.
"""

from __future__ import annotations

from dataclasses import replace

from zeta_router.autoscale.policy.config import (
    MIN_THRESHOLD_GAP,
    ChangeKind,
    ContextPolicy,
    Direction,
    FeedbackPolicy,
    PolicyConfig,
    TierPolicy,
)
from zeta_router.autoscale.policy.decision import Change, Decision
from zeta_router.autoscale.policy.replicas import (
    TierOutcome,
    apply_bounds_and_budget,
    decide_tier,
    replicas_reason,
)
from zeta_router.autoscale.policy.spend import RESUME_SHARE, decide_spend
from zeta_router.autoscale.policy.state import (
    ContextState,
    PolicyState,
    TierState,
    effective_thresholds,
)
from zeta_router.autoscale.policy.thresholds import decide_thresholds
from zeta_router.autoscale.snapshot import MetricsSnapshot, TierSample

__all__ = [
    "MIN_THRESHOLD_GAP",
    "RESUME_SHARE",
    "Change",
    "ChangeKind",
    "ContextPolicy",
    "ContextState",
    "Decision",
    "Direction",
    "FeedbackPolicy",
    "PolicyConfig",
    "PolicyState",
    "TierPolicy",
    "TierState",
    "decide",
    "effective_thresholds",
]


def decide(
    config: PolicyConfig, snapshot: MetricsSnapshot, state: PolicyState, now: float
) -> Decision:
    """One interval of the control loop. Pure: the same inputs always give the same decision."""
    state = _complete_state(config, state)
    notes: list[str] = []
    outcomes: dict[str, TierOutcome] = {}
    for tier in config.tiers:
        tstate = state.tiers[tier.name]
        if not snapshot.available:
            outcomes[tier.name] = TierOutcome(
                tstate.desired,
                None,
                False,
                False,
                False,
                replace(tstate, low_since=None, idle_since=None),
            )
            continue
        sample = snapshot.tiers.get(tier.name) or TierSample(name=tier.name)
        outcomes[tier.name] = decide_tier(config, tier, sample, tstate, now, notes)
    if not snapshot.available:
        notes.append(f"metrics unavailable ({snapshot.status.value}: {snapshot.message}); holding")

    granted, capped, budget_notes = apply_bounds_and_budget(config, state, outcomes)
    notes.extend(budget_notes)

    changes: list[Change] = []
    new_tiers: dict[str, TierState] = {}
    for tier in config.tiers:
        out = outcomes[tier.name]
        old = state.tiers[tier.name].desired
        new = granted[tier.name]
        tstate = replace(out.state, desired=new)
        if new != old:
            reason = replicas_reason(config, tier, old, new, out)
            changes.append(
                Change(
                    kind="replicas",
                    target=tier.name,
                    direction="up" if new > old else "down",
                    old=(float(old),),
                    new=(float(new),),
                    reason=reason,
                )
            )
            if new < old:
                tstate = replace(tstate, low_since=now)
        new_tiers[tier.name] = tstate

    new_contexts, threshold_changes, awaiting = decide_thresholds(
        config, snapshot, state, outcomes, granted, capped, notes
    )
    changes.extend(threshold_changes)
    spend_per_hour = snapshot.spend_per_hour if snapshot.available else None
    spend = decide_spend(config, spend_per_hour, state.paused, now, notes)
    changes.extend(spend.changes)
    next_state = PolicyState(
        tiers=new_tiers,
        contexts=new_contexts,
        awaiting_generation=awaiting,
        paused=spend.paused,
    )
    return Decision(
        replicas=granted,
        thresholds={c.name: effective_thresholds(c, new_contexts[c.name]) for c in config.contexts},
        changes=tuple(changes),
        notes=tuple(notes),
        state=next_state,
        metrics_available=snapshot.available,
        spend_per_hour=dict(spend_per_hour or {}),
    )


def _complete_state(config: PolicyConfig, state: PolicyState) -> PolicyState:
    if all(t.name in state.tiers for t in config.tiers) and all(
        c.name in state.contexts and len(state.contexts[c.name].base) == len(c.thresholds)
        for c in config.contexts
    ):
        return state
    return state.with_current(config, {})
