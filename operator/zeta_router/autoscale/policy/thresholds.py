"""The threshold rules, per context: load shift and quality feedback (pure); see the package
docstring for the rules in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from zeta_router.autoscale.policy.config import ContextPolicy, Direction, PolicyConfig
from zeta_router.autoscale.policy.decision import Change
from zeta_router.autoscale.policy.replicas import TierOutcome, fmt, fmt_thresholds
from zeta_router.autoscale.policy.state import (
    ContextState,
    PolicyState,
    close,
    effective_thresholds,
    normalise,
)
from zeta_router.autoscale.snapshot import ContextSample, MetricsSnapshot


def decide_thresholds(
    config: PolicyConfig,
    snapshot: MetricsSnapshot,
    state: PolicyState,
    outcomes: Mapping[str, TierOutcome],
    granted: Mapping[str, int],
    capped: set[str],
    notes: list[str],
) -> tuple[dict[str, ContextState], list[Change], int | None]:
    contexts = dict(state.contexts)
    awaiting = state.awaiting_generation
    if len(config.tiers) < 2 or not config.contexts:
        return contexts, [], awaiting
    if not snapshot.available:
        return contexts, [], awaiting
    if awaiting is not None:
        reported = snapshot.config_generation
        if reported is None or reported < awaiting:
            notes.append(
                f"thresholds held: routers run config generation {reported}, waiting for {awaiting}"
            )
            return contexts, [], awaiting
        awaiting = None

    step = config.threshold_step
    boundaries = len(config.tiers) - 1
    raise_b: list[bool] = []
    lower_b: list[bool] = []
    budget_room = None
    if config.max_gpus is not None:
        budget_room = config.max_gpus - sum(
            granted[t.name] * t.gpus_per_replica for t in config.tiers
        )
    for b in range(boundaries):
        above = config.tiers[b + 1]
        out = outcomes[above.name]
        below = outcomes[config.tiers[b].name]
        # Shifting load only helps if the smaller tier can take it.
        raise_b.append(
            config.load_shift and out.pressure and above.name in capped and not below.pressure
        )
        can_grow = granted[above.name] < above.max_replicas and (
            budget_room is None or budget_room >= above.gpus_per_replica
        )
        lower_b.append(not out.pressure and (out.light or can_grow))

    changes: list[Change] = []
    fb = config.feedback
    for ctx in config.contexts:
        cs = contexts[ctx.name]
        sample = snapshot.contexts.get(ctx.name)
        old_eff = effective_thresholds(ctx, cs)
        base = list(cs.base)
        shift = list(cs.shift)
        why: list[str] = []

        quality_low = False
        quality_near_floor = False
        if (
            fb.enabled
            and fb.quality_floor is not None
            and sample is not None
            and sample.quality is not None
            and sample.quality_samples >= fb.min_samples
        ):
            quality_low = sample.quality < fb.quality_floor
            quality_near_floor = sample.quality < fb.quality_floor + fb.quality_margin

        # Load shift, per boundary.
        for b in range(boundaries):
            room = ctx.upper - base[b]
            shift[b] = min(shift[b], max(room, 0.0))
            if raise_b[b] and not quality_near_floor and shift[b] < room - 1e-9:
                shift[b] = min(shift[b] + step, room)
                why.append(
                    f"tier {config.tiers[b + 1].name} saturated and cannot grow: shift load to "
                    f"tier {config.tiers[b].name}"
                )
            elif lower_b[b] and shift[b] > 0:
                shift[b] = max(0.0, shift[b] - step)
                why.append(f"pressure on tier {config.tiers[b + 1].name} gone: take back shift")

        if quality_low and sample is not None:
            # The floor wins over everything: give back shifted load first, then lower base.
            if any(d > 0 for d in shift):
                shift = [max(0.0, d - step) for d in shift]
            else:
                base = [v - step for v in base]
            why = [
                f"quality {fmt(sample.quality or 0.0)} < floor {fmt(fb.quality_floor or 0.0)} "
                "on smaller tiers"
            ]
        elif fb.enabled and fb.target_large_share is not None and sample is not None:
            delta, reason = _feedback_delta(config, ctx, sample, base, shift, quality_near_floor)
            if delta:
                base = [v + delta for v in base]
                why.append(reason)
            elif reason:
                notes.append(f"context {ctx.name}: {reason}")

        new_cs = ContextState(base=tuple(base), shift=tuple(shift))
        # Keep base within bounds so shift and feedback stay meaningful.
        new_cs = ContextState(base=normalise(ctx, new_cs.base), shift=new_cs.shift)
        new_eff = effective_thresholds(ctx, new_cs)
        contexts[ctx.name] = new_cs
        if not close(new_eff, old_eff):
            direction: Direction = "up" if sum(new_eff) > sum(old_eff) else "down"
            changes.append(
                Change(
                    kind="thresholds",
                    target=ctx.name,
                    direction=direction,
                    old=old_eff,
                    new=new_eff,
                    reason=f"context {ctx.name}: {'; '.join(why) or 'bounds'}: "
                    f"thresholds {fmt_thresholds(old_eff)} -> {fmt_thresholds(new_eff)}",
                )
            )
    return contexts, changes, awaiting


def _feedback_delta(
    config: PolicyConfig,
    ctx: ContextPolicy,
    sample: ContextSample,
    base: Sequence[float],
    shift: Sequence[float],
    quality_near_floor: bool,
) -> tuple[float, str]:
    """How far to move every cut point of a context toward its target large-tier share."""
    fb = config.feedback
    target = fb.target_large_share
    assert target is not None
    step = fb.threshold_step
    if sample.total < fb.min_samples:
        return 0.0, f"{sample.total:.0f} requests < {fb.min_samples} needed for feedback"
    largest = config.tiers[-1].name
    share = sample.share(largest)
    top = base[-1]
    want: float | None = None
    if sample.scores is not None and sample.scores.total >= fb.min_samples:
        want = sample.scores.quantile(1.0 - target)
    if want is not None:
        gap = want - top
        if abs(gap) < step / 2:
            return 0.0, ""
        delta = max(-step, min(step, gap))
    else:
        if any(d > 0 for d in shift) or share is None:
            # The observed share includes the load shift; only the score quantile can say where
            # the unshifted cut point belongs.
            return 0.0, ""
        err = share - target
        if abs(err) < 0.02:
            return 0.0, ""
        delta = step if err > 0 else -step
    if delta > 0 and quality_near_floor:
        return 0.0, "quality near its floor; not raising thresholds"
    new_top = min(max(top + delta, ctx.lower), ctx.upper)
    if abs(new_top - top) < 1e-9:
        return 0.0, ""
    shown = f"{share:.0%}" if share is not None else "n/a"
    return new_top - top, f"large-tier share {shown}, target {target:.0%}"
