"""The replica rules, per tier, and the bounds and GPU budget across tiers (pure); see the
package docstring for the rules in words."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from zeta_router.autoscale.policy.config import PolicyConfig, TierPolicy
from zeta_router.autoscale.policy.state import PolicyState, TierState
from zeta_router.autoscale.snapshot import TierSample


@dataclass(frozen=True)
class TierOutcome:
    wanted: int
    what: str | None
    """What the load said, e.g. "queue 9.5/replica > 4 target" (None: nothing to act on)."""
    pressure: bool
    low: bool
    """Scale-down conditions hold (projection included)."""
    light: bool
    """Queue and TTFT are below the low-water mark (no projection)."""
    state: TierState


def ceil_replicas(x: float) -> int:
    """Replicas for a ratio, robust to float noise and to absurd inputs."""
    return math.ceil(min(x, 1e6) - 1e-9)


def fmt(x: float) -> str:
    return f"{x:.3g}"


def fmt_thresholds(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def decide_tier(
    config: PolicyConfig,
    tier: TierPolicy,
    s: TierSample,
    ts: TierState,
    now: float,
    notes: list[str],
) -> TierOutcome:
    desired = ts.desired
    tq = config.target_queue_per_replica
    tt = config.target_ttft_p90_seconds
    ready = s.ready_replicas
    wpr = s.waiting_per_replica

    wanting = s.wanting or 0.0
    if desired == 0 and (
        wanting > 0 or (ready == 0 and ((s.request_rate or 0) > 0 or (s.waiting or 0) > 0))
    ):
        # A tier scaled to zero wakes up on any traffic it is asked to serve: requests the
        # routers had to answer elsewhere (or hold) while it slept, or any that reached it.
        what = (
            f"woken by {fmt(wanting)} requests wanting it while asleep"
            if wanting > 0
            else "requests waiting at 0 replicas"
        )
        return TierOutcome(
            max(1, tier.min_replicas),
            what,
            True,
            False,
            False,
            replace(ts, low_since=None, idle_since=None),
        )
    if tier.may_sleep:
        asleep = _sleep(tier, s, ts, now, notes)
        if isinstance(asleep, TierOutcome):
            return asleep
        ts = asleep

    # TTFT p90 lags a drained queue by a metrics window; remember when there last was one.
    queued_before = ts.queued_at
    queued_now = wpr is not None and wpr > tq * config.low_water
    if queued_now:
        ts = replace(ts, queued_at=now)
    ttft_stale = (
        not queued_now
        and queued_before is not None
        and now - queued_before < config.metrics_window_seconds
    )
    queue_pressure = wpr is not None and wpr > tq * (1 + config.tolerance)
    # Requests the tier refused (429, or the routers' connections to it busy) went elsewhere,
    # to an overflow tier often: demand its queue does not show.
    refuse_pressure = bool(s.refused_rate) and bool(ready)
    ttft_pressure = s.ttft_p90_seconds is not None and s.ttft_p90_seconds > tt * (
        1 + config.tolerance
    )
    if ttft_pressure and not queued_now and _lightly_loaded(config, s, ts, now):
        # Slow first tokens on idle replicas come from the prompts (long prefills), not from
        # load: more replicas would not make them faster.
        notes.append(
            f"tier {tier.name}: TTFT p90 {fmt(s.ttft_p90_seconds or 0.0)}s above target at light "
            "load (long prompts?); not scaling on it"
        )
        ttft_pressure = False
    if queue_pressure or ttft_pressure or refuse_pressure:
        return _scale_up(config, tier, s, ts, now, queue_pressure, ttft_pressure, ttft_stale, notes)
    near = _near_capacity(config, s, ts, now)
    if near is not None:
        needed, what = near
        step = config.max_scale_up_step
        limit = desired + (step if step is not None else max(1, desired))
        wanted = max(desired, min(needed, limit))
        return TierOutcome(wanted, what, True, False, False, replace(ts, low_since=None))

    light = _is_light(config, s)
    low, why_not = _is_low(config, tier, s, ts, now) if light else (False, None)
    if not low:
        if why_not:
            notes.append(f"tier {tier.name}: {why_not}")
        return TierOutcome(desired, None, False, False, light, replace(ts, low_since=None))

    low_since = ts.low_since if ts.low_since is not None else now
    held = now - low_since
    if held < config.scale_down_delay_seconds:
        notes.append(
            f"tier {tier.name}: low load for {held:.0f}s of {config.scale_down_delay_seconds:.0f}s"
            " before scaling down"
        )
        return TierOutcome(desired, None, False, True, True, replace(ts, low_since=low_since))
    wanted = max(_floor(tier), desired - config.scale_down_step)
    ttft = s.ttft_p90_seconds
    what = (
        f"low load for {held:.0f}s (queue {fmt(wpr or 0.0)}/replica, "
        + (f"TTFT p90 {fmt(ttft)}s" if ttft is not None else "no requests")
        + ")"
    )
    return TierOutcome(wanted, what, False, True, True, replace(ts, low_since=now))


def _floor(tier: TierPolicy) -> int:
    """The fewest replicas load may take a tier to: a tier that may sleep keeps one until its
    idle period says it sleeps (one rule takes it to zero, with its own clock)."""
    return max(tier.min_replicas, 1) if tier.may_sleep else tier.min_replicas


def idle(s: TierSample) -> bool | None:
    """Whether a tier saw no request at all in the window: none answered, queued, running or
    wanted while asleep. None: a load signal is missing (unknown is never idle)."""
    if s.request_rate is None or s.waiting is None or s.running is None:
        return None
    return s.request_rate == 0 and s.waiting + s.running == 0 and not s.wanting


def _sleep(
    tier: TierPolicy, s: TierSample, ts: TierState, now: float, notes: list[str]
) -> TierOutcome | TierState:
    """A tier that may sleep goes to zero after ``sleep_after_seconds`` without a request; the
    idle clock restarts on any request and on any missing signal (no metrics, no scale-down).
    Returns the outcome when it sleeps now, else its state with the idle clock updated."""
    if ts.desired == 0:
        return replace(ts, idle_since=None)
    quiet = idle(s)
    if not quiet:
        if quiet is None:
            notes.append(f"tier {tier.name}: load metrics missing; not putting it to sleep")
        return replace(ts, idle_since=None)
    since = ts.idle_since if ts.idle_since is not None else now
    held = now - since
    after = tier.sleep_after_seconds or 0.0
    if held < after:
        notes.append(f"tier {tier.name}: idle for {held:.0f}s of {after:.0f}s before sleeping")
        return replace(ts, idle_since=since)
    return TierOutcome(
        0,
        f"asleep: no request for {held:.0f}s (sleepAfter {after:.0f}s)",
        False,
        True,
        True,
        replace(ts, idle_since=None, low_since=None),
    )


def _is_light(config: PolicyConfig, s: TierSample) -> bool:
    """Queue and TTFT below the low-water mark, all signals present."""
    if s.ready_replicas is None or s.waiting is None or s.running is None:
        return False
    if s.refused_rate:
        return False  # refusing requests is no light load, whatever its queue says
    lw = config.low_water
    if s.ready_replicas > 0 and s.waiting / s.ready_replicas > config.target_queue_per_replica * lw:
        return False
    if s.ready_replicas == 0 and s.waiting > 0:
        return False
    if s.ttft_p90_seconds is None:
        # No latency series is fine only for a tier that served nothing.
        return s.request_rate == 0 and s.waiting + s.running == 0
    return s.ttft_p90_seconds <= config.target_ttft_p90_seconds * lw


def _scale_up(
    config: PolicyConfig,
    tier: TierPolicy,
    s: TierSample,
    ts: TierState,
    now: float,
    queue_pressure: bool,
    ttft_pressure: bool,
    ttft_stale: bool,
    notes: list[str],
) -> TierOutcome:
    desired = ts.desired
    tq = config.target_queue_per_replica
    tt = config.target_ttft_p90_seconds
    ready = s.ready_replicas or 0
    needed = desired
    reasons: list[str] = []
    new_ts = replace(ts, low_since=None)
    in_flight = s.in_flight
    demand = s.demand_in_flight
    if queue_pressure and ready > 0 and s.waiting is not None:
        wpr = s.waiting / ready
        running = s.running or 0.0
        if running / ready >= 0.5 and in_flight is not None:
            # A replica with a queue is saturated: what it runs is its capacity. Size the tier
            # so the whole load fits within the headroom of that capacity (the queue drains).
            capacity = running / ready
            load = demand if demand is not None else in_flight
            needed = max(needed, ceil_replicas(load / (capacity * config.headroom)))
            new_ts = replace(new_ts, pressure_load=capacity, pressure_seen_at=now)
        else:
            needed = max(needed, ceil_replicas(ready * wpr / tq))
        reasons.append(f"queue {fmt(wpr)}/replica > {fmt(tq)} target")
    refused = s.refused_rate or 0.0
    if refused > 0 and ready > 0:
        rate = s.request_rate or 0.0
        grow = ceil_replicas(ready * (rate + refused) / rate) if rate > 0 else ready + 1
        needed = max(needed, grow)
        reasons.append(f"{fmt(refused)}/s refused (429 or busy)")
    if ttft_pressure and s.ttft_p90_seconds is not None:
        ratio = s.ttft_p90_seconds / tt
        reasons.append(f"TTFT p90 {fmt(s.ttft_p90_seconds)}s > {fmt(tt)}s target")
        if ready < desired:
            # While replicas start, TTFT keeps climbing on the old count; sizing on it again
            # would overshoot, so only the queue (an absolute measure) may add more meanwhile.
            notes.append(f"tier {tier.name}: TTFT high while {desired - ready} replicas start")
        elif ttft_stale:
            # The window still holds requests that waited in a queue that has since drained.
            notes.append(f"tier {tier.name}: TTFT p90 still reflects a queue that just drained")
        elif ready > 0:
            needed = max(needed, ceil_replicas(ready * ratio), ready + 1)
            if not queue_pressure and in_flight is not None:
                new_ts = replace(new_ts, pressure_load=in_flight / ready, pressure_seen_at=now)
    step = config.max_scale_up_step
    limit = desired + (step if step is not None else max(1, desired))
    wanted = min(needed, limit)
    what = " and ".join(reasons)
    if wanted <= desired:
        if ready < desired:
            notes.append(f"tier {tier.name}: {what}; waiting for {desired - ready} starting")
        return TierOutcome(desired, what, True, False, False, new_ts)
    return TierOutcome(wanted, what, True, False, False, new_ts)


def _lightly_loaded(config: PolicyConfig, s: TierSample, ts: TierState, now: float) -> bool:
    ready = s.ready_replicas
    in_flight = s.in_flight
    if not ready or in_flight is None:
        return False
    per_replica = in_flight / ready
    if per_replica < 1.0:
        return True
    point = _pressure_point(config, ts, now)
    if point is not None:
        return per_replica < point * config.low_water
    return s.kv_cache_usage is not None and s.kv_cache_usage < config.low_water


def _near_capacity(
    config: PolicyConfig, s: TierSample, ts: TierState, now: float
) -> tuple[int, str] | None:
    """Scale up before a queue forms when the load nears a known capacity: the in-flight load
    per replica at which pressure was seen, or (vLLM) the KV-cache limit. Sized back to the
    headroom, which is also what a scale-down must leave, so the two never chase each other."""
    ready = s.ready_replicas
    in_flight = s.demand_in_flight
    if not ready or in_flight is None:
        return None
    point = _pressure_point(config, ts, now)
    if point is not None and in_flight / ready > point * config.anticipation:
        needed = ceil_replicas(in_flight / (point * config.headroom))
        return needed, (
            f"{fmt(in_flight / ready)} in flight per replica nears the {fmt(point)} "
            "at which pressure was seen"
        )
    if point is None and s.kv_cache_usage is not None and s.kv_cache_usage > config.kv_cache_limit:
        needed = ceil_replicas(ready * s.kv_cache_usage / (config.kv_cache_limit * config.headroom))
        return needed, f"KV cache {s.kv_cache_usage:.0%} > {config.kv_cache_limit:.0%}"
    return None


def _pressure_point(config: PolicyConfig, ts: TierState, now: float) -> float | None:
    if ts.pressure_load is None or ts.pressure_seen_at is None or ts.pressure_load <= 0:
        return None
    if now - ts.pressure_seen_at > config.pressure_memory_seconds:
        return None
    return ts.pressure_load


def _is_low(
    config: PolicyConfig, tier: TierPolicy, s: TierSample, ts: TierState, now: float
) -> tuple[bool, str | None]:
    """Whether a light-loaded tier could lose a step of replicas without coming under pressure."""
    desired = ts.desired
    if desired <= _floor(tier):
        return False, None
    if s.ready_replicas is None or s.waiting is None or s.running is None:
        return False, "load metrics missing; not scaling down"
    ready = s.ready_replicas
    in_flight = s.waiting + s.running
    if in_flight <= 0:
        return True, None
    after = min(ready, desired - config.scale_down_step)
    if after <= 0:
        return False, None
    projected = in_flight / after
    point = _pressure_point(config, ts, now)
    if point is not None:
        limit = point * config.headroom
        if projected <= limit:
            return True, None
        return False, (
            f"{fmt(projected)} in flight per replica on {after} replicas would exceed "
            f"{fmt(limit)} ({config.headroom:.0%} of the load that caused pressure)"
        )
    seen = ts.pressure_load
    if seen is not None and seen > 0 and projected >= seen:
        # A pressure point past its memory buys no headroom and no early scale-up any more,
        # but the load that caused pressure is still the one load known to cause it: no
        # scale-down goes back there. Without this, a point learned from TTFT expires while it
        # holds a replica, the checks below (which cannot foresee TTFT) take that replica from
        # the same load, and the pressure puts it back, every memory period.
        return False, (
            f"{fmt(projected)} in flight per replica on {after} replicas would be back at the "
            f"{fmt(seen)} at which pressure was seen"
        )
    if s.kv_cache_usage is not None and ready > 0:
        kv_after = s.kv_cache_usage * ready / after
        return kv_after <= config.kv_cache_limit * config.headroom, None
    # Nothing known about capacity: only shrink if even a fully queued load met the target.
    return projected <= config.target_queue_per_replica * config.headroom, None


def replicas_reason(
    config: PolicyConfig, tier: TierPolicy, old: int, new: int, out: TierOutcome
) -> str:
    if old > tier.max_replicas and new == tier.max_replicas:
        what = f"above max {tier.max_replicas}"
    elif old < tier.min_replicas and new == tier.min_replicas:
        what = f"below min {tier.min_replicas}"
    else:
        what = out.what or "over the GPU budget"
        if new != out.wanted:
            if new == tier.max_replicas and out.wanted > new:
                what += f" (capped at max {tier.max_replicas})"
            elif config.max_gpus is not None:
                what += f" (capped by GPU budget {fmt(config.max_gpus)})"
    return f"tier {tier.name}: {what}: {old} -> {new} replicas"


def apply_bounds_and_budget(
    config: PolicyConfig, state: PolicyState, outcomes: Mapping[str, TierOutcome]
) -> tuple[dict[str, int], set[str], list[str]]:
    """Clamp each tier to [min, max], then share the GPU budget smallest tier first.

    Returns granted replicas, the tiers that wanted more than they got (capped by max or
    budget), and notes."""
    notes: list[str] = []
    capped: set[str] = set()
    wanted: dict[str, int] = {}
    for t in config.tiers:
        w = min(max(outcomes[t.name].wanted, t.min_replicas), t.max_replicas)
        if outcomes[t.name].pressure and w >= t.max_replicas:
            capped.add(t.name)
        wanted[t.name] = w
    if config.max_gpus is None:
        return wanted, capped, notes

    budget = config.max_gpus
    floor_use = {
        t.name: min(wanted[t.name], max(state.tiers[t.name].desired, t.min_replicas))
        for t in config.tiers
    }
    granted = dict(floor_use)

    def used() -> float:
        return sum(granted[t.name] * t.gpus_per_replica for t in config.tiers)

    # What was already running is reduced only if the budget itself is exceeded
    # (e.g. maxGpus was lowered): largest tier first, never below min.
    for t in reversed(config.tiers):
        while used() > budget + 1e-9 and granted[t.name] > t.min_replicas:
            granted[t.name] -= 1
            capped.add(t.name)
    if used() > budget + 1e-9:
        notes.append(
            f"the tiers' minimum replicas need {fmt(used())} GPUs, more than maxGpus {fmt(budget)}"
        )
    # Scale-ups are granted smallest tier first, one replica at a time.
    for t in config.tiers:
        while granted[t.name] < wanted[t.name]:
            if used() + t.gpus_per_replica > budget + 1e-9:
                capped.add(t.name)
                notes.append(
                    f"tier {t.name}: wants {wanted[t.name]} replicas, GPU budget "
                    f"{fmt(budget)} allows {granted[t.name]}"
                )
                break
            granted[t.name] += 1
    return granted, capped, notes
