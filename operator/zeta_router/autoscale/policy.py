"""The control loop's decisions, as pure functions: (config, snapshot, state, now) -> decision.

Nothing here does I/O or reads a clock, so the kopf timer (`loop.py`) and the simulator
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
    same headroom, so a constant load settles and stays (no flapping).
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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from zeta_router.autoscale.snapshot import ContextSample, MetricsSnapshot, TierSample

MIN_THRESHOLD_GAP = 0.001
"""Smallest distance kept between two cut points of a context (they must strictly increase)."""

Direction = Literal["up", "down"]
ChangeKind = Literal["replicas", "thresholds"]


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TierPolicy:
    name: str
    min_replicas: int
    max_replicas: int
    gpus_per_replica: float = 1.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"tier {self.name!r}: replicas bounds [{self.min_replicas}, "
                f"{self.max_replicas}] are not a valid range"
            )
        if self.gpus_per_replica < 0:
            raise ValueError(f"tier {self.name!r}: gpus_per_replica must be >= 0")


@dataclass(frozen=True)
class ContextPolicy:
    name: str
    thresholds: tuple[float, ...]
    """The starting cut points (from the spec), one per tier boundary."""
    lower: float = 0.0
    upper: float = 1.0
    """Bounds every cut point of this context stays within."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower <= self.upper <= 1.0:
            raise ValueError(
                f"context {self.name!r}: bounds [{self.lower}, {self.upper}] must lie in [0, 1]"
            )


@dataclass(frozen=True)
class FeedbackPolicy:
    enabled: bool = False
    target_large_share: float | None = None
    quality_floor: float | None = None
    threshold_step: float = 0.02
    min_samples: int = 50
    quality_margin: float = 0.02
    """Thresholds are not raised while the quality signal is within this margin above the floor."""


@dataclass(frozen=True)
class PolicyConfig:
    tiers: tuple[TierPolicy, ...]
    contexts: tuple[ContextPolicy, ...]
    target_queue_per_replica: float = 4.0
    target_ttft_p90_seconds: float = 2.0
    scale_down_delay_seconds: float = 300.0
    max_gpus: float | None = None
    feedback: FeedbackPolicy = field(default_factory=FeedbackPolicy)
    load_shift: bool = True
    """Raise thresholds when a larger tier is saturated and cannot grow."""
    tolerance: float = 0.1
    low_water: float = 0.5
    headroom: float = 0.8
    max_scale_up_step: int | None = None
    """Most replicas added per interval; None = double (at least one)."""
    scale_down_step: int = 1
    kv_cache_limit: float = 0.9
    anticipation: float = 0.95
    """Scale up once the in-flight load per replica passes this share of the learned pressure
    point (before a queue forms); must be above ``headroom`` so up and down never overlap."""
    pressure_memory_seconds: float = 3600.0
    """How long a learned pressure point is trusted; after that scale-downs fall back to the
    KV-cache or queue-target checks."""
    metrics_window_seconds: float = 120.0
    """Window of the rate and TTFT queries: TTFT stays high for this long after a queue drained."""

    def __post_init__(self) -> None:
        if not self.tiers:
            raise ValueError("at least one tier is needed")
        if self.target_queue_per_replica <= 0 or self.target_ttft_p90_seconds <= 0:
            raise ValueError("targets must be > 0")
        if not 0 < self.low_water < 1 or not 0 < self.headroom <= 1:
            raise ValueError("low_water must be in (0, 1) and headroom in (0, 1]")
        if not self.headroom < self.anticipation <= 1:
            raise ValueError("anticipation must be in (headroom, 1]")
        for ctx in self.contexts:
            if len(ctx.thresholds) != len(self.tiers) - 1:
                raise ValueError(
                    f"context {ctx.name!r} has {len(ctx.thresholds)} thresholds for "
                    f"{len(self.tiers)} tiers"
                )

    @property
    def threshold_step(self) -> float:
        return self.feedback.threshold_step

    def tier(self, name: str) -> TierPolicy:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------
# State carried from one interval to the next


@dataclass(frozen=True)
class TierState:
    desired: int
    """Replicas currently asked for (the Deployment's spec.replicas)."""
    low_since: float | None = None
    pressure_load: float | None = None
    """In-flight requests per replica at which pressure was last seen."""
    pressure_seen_at: float | None = None
    queued_at: float | None = None
    """Last time the tier had a notable queue (its TTFT p90 lags that by a metrics window)."""


@dataclass(frozen=True)
class ContextState:
    base: tuple[float, ...]
    """Cut points chosen by feedback (the spec's thresholds when feedback is off)."""
    shift: tuple[float, ...]
    """Load-shift offset added to each cut point (>= 0)."""


@dataclass(frozen=True)
class PolicyState:
    tiers: Mapping[str, TierState]
    contexts: Mapping[str, ContextState]
    awaiting_generation: int | None = None
    """Routing-config generation that carries the last threshold change, until routers run it."""

    @classmethod
    def initial(
        cls,
        config: PolicyConfig,
        replicas: Mapping[str, int] | None = None,
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> PolicyState:
        """A fresh state: replicas as given (else each tier's min), thresholds as given (else
        the spec's), nothing remembered."""
        replicas = replicas or {}
        thresholds = thresholds or {}
        return cls(
            tiers={
                t.name: TierState(desired=replicas.get(t.name, t.min_replicas))
                for t in config.tiers
            },
            contexts={
                c.name: ContextState(
                    base=tuple(thresholds.get(c.name, c.thresholds)),
                    shift=tuple(0.0 for _ in c.thresholds),
                )
                for c in config.contexts
            },
        )

    def with_current(
        self,
        config: PolicyConfig,
        replicas: Mapping[str, int],
        thresholds: Mapping[str, Sequence[float]] | None = None,
    ) -> PolicyState:
        """This state re-synced to what actually runs: tiers or contexts added to the spec get
        fresh entries, removed ones are dropped, and given values replace the remembered ones.
        A context whose running thresholds differ from base + shift is re-based on them."""
        tiers: dict[str, TierState] = {}
        for t in config.tiers:
            prev = self.tiers.get(t.name) or TierState(desired=t.min_replicas)
            tiers[t.name] = replace(prev, desired=replicas.get(t.name, prev.desired))
        contexts: dict[str, ContextState] = {}
        for c in config.contexts:
            prev_ctx = self.contexts.get(c.name)
            running = None if thresholds is None else thresholds.get(c.name)
            if prev_ctx is None or len(prev_ctx.base) != len(c.thresholds):
                base = tuple(running) if running is not None else c.thresholds
                contexts[c.name] = ContextState(base=base, shift=tuple(0.0 for _ in base))
            elif running is not None and not _close(
                tuple(running), effective_thresholds(c, prev_ctx)
            ):
                contexts[c.name] = ContextState(
                    base=tuple(running), shift=tuple(0.0 for _ in running)
                )
            else:
                contexts[c.name] = prev_ctx
        return PolicyState(
            tiers=tiers, contexts=contexts, awaiting_generation=self.awaiting_generation
        )

    def awaiting(self, generation: int | None) -> PolicyState:
        return replace(self, awaiting_generation=generation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (the operator keeps it in an annotation between intervals)."""
        return {
            "tiers": {
                name: {
                    "desired": s.desired,
                    "lowSince": s.low_since,
                    "pressureLoad": s.pressure_load,
                    "pressureSeenAt": s.pressure_seen_at,
                    "queuedAt": s.queued_at,
                }
                for name, s in self.tiers.items()
            },
            "contexts": {
                name: {"base": list(s.base), "shift": list(s.shift)}
                for name, s in self.contexts.items()
            },
            "awaitingGeneration": self.awaiting_generation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyState:
        """Inverse of `to_dict`; raises ValueError on anything malformed."""
        try:
            tiers = {
                str(name): TierState(
                    desired=int(v["desired"]),
                    low_since=_opt_float(v.get("lowSince")),
                    pressure_load=_opt_float(v.get("pressureLoad")),
                    pressure_seen_at=_opt_float(v.get("pressureSeenAt")),
                    queued_at=_opt_float(v.get("queuedAt")),
                )
                for name, v in dict(data.get("tiers", {})).items()
            }
            contexts = {
                str(name): ContextState(
                    base=tuple(float(x) for x in v["base"]),
                    shift=tuple(float(x) for x in v["shift"]),
                )
                for name, v in dict(data.get("contexts", {})).items()
            }
            gen = data.get("awaitingGeneration")
            return cls(
                tiers=tiers,
                contexts=contexts,
                awaiting_generation=None if gen is None else int(gen),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed autoscaler state: {exc!r}") from exc


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


# ---------------------------------------------------------------------------------------------
# Decision


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    target: str
    """Tier name (replicas) or context name (thresholds)."""
    direction: Direction
    old: tuple[float, ...]
    new: tuple[float, ...]
    reason: str


@dataclass(frozen=True)
class Decision:
    replicas: Mapping[str, int]
    thresholds: Mapping[str, tuple[float, ...]]
    changes: tuple[Change, ...]
    notes: tuple[str, ...]
    """Why nothing changed where something might have (one line each)."""
    state: PolicyState
    metrics_available: bool

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def thresholds_changed(self) -> bool:
        return any(c.kind == "thresholds" for c in self.changes)

    @property
    def replicas_changed(self) -> bool:
        return any(c.kind == "replicas" for c in self.changes)

    @property
    def summary(self) -> str:
        """One line for status.lastDecision and logs."""
        if self.changes:
            return "; ".join(c.reason for c in self.changes)
        if self.notes:
            return "no change: " + "; ".join(self.notes)
        return "no change"


# ---------------------------------------------------------------------------------------------
# The policy


@dataclass(frozen=True)
class _TierOutcome:
    wanted: int
    what: str | None
    """What the load said, e.g. "queue 9.5/replica > 4 target" (None: nothing to act on)."""
    pressure: bool
    low: bool
    """Scale-down conditions hold (projection included)."""
    light: bool
    """Queue and TTFT are below the low-water mark (no projection)."""
    state: TierState


def decide(
    config: PolicyConfig, snapshot: MetricsSnapshot, state: PolicyState, now: float
) -> Decision:
    """One interval of the control loop. Pure: the same inputs always give the same decision."""
    state = _complete_state(config, state)
    notes: list[str] = []
    outcomes: dict[str, _TierOutcome] = {}
    for tier in config.tiers:
        tstate = state.tiers[tier.name]
        if not snapshot.available:
            outcomes[tier.name] = _TierOutcome(
                tstate.desired, None, False, False, False, replace(tstate, low_since=None)
            )
            continue
        sample = snapshot.tiers.get(tier.name) or TierSample(name=tier.name)
        outcomes[tier.name] = _decide_tier(config, tier, sample, tstate, now, notes)
    if not snapshot.available:
        notes.append(f"metrics unavailable ({snapshot.status.value}: {snapshot.message}); holding")

    granted, capped, budget_notes = _apply_bounds_and_budget(config, state, outcomes)
    notes.extend(budget_notes)

    changes: list[Change] = []
    new_tiers: dict[str, TierState] = {}
    for tier in config.tiers:
        out = outcomes[tier.name]
        old = state.tiers[tier.name].desired
        new = granted[tier.name]
        tstate = replace(out.state, desired=new)
        if new != old:
            reason = _replicas_reason(config, tier, old, new, out)
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

    new_contexts, threshold_changes, awaiting = _decide_thresholds(
        config, snapshot, state, outcomes, granted, capped, notes
    )
    changes.extend(threshold_changes)
    next_state = PolicyState(tiers=new_tiers, contexts=new_contexts, awaiting_generation=awaiting)
    return Decision(
        replicas=granted,
        thresholds={c.name: effective_thresholds(c, new_contexts[c.name]) for c in config.contexts},
        changes=tuple(changes),
        notes=tuple(notes),
        state=next_state,
        metrics_available=snapshot.available,
    )


def _complete_state(config: PolicyConfig, state: PolicyState) -> PolicyState:
    if all(t.name in state.tiers for t in config.tiers) and all(
        c.name in state.contexts and len(state.contexts[c.name].base) == len(c.thresholds)
        for c in config.contexts
    ):
        return state
    return state.with_current(config, {})


def _ceil(x: float) -> int:
    """Replicas for a ratio, robust to float noise and to absurd inputs."""
    return math.ceil(min(x, 1e6) - 1e-9)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _fmt_thresholds(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _decide_tier(
    config: PolicyConfig,
    tier: TierPolicy,
    s: TierSample,
    ts: TierState,
    now: float,
    notes: list[str],
) -> _TierOutcome:
    desired = ts.desired
    tq = config.target_queue_per_replica
    tt = config.target_ttft_p90_seconds
    ready = s.ready_replicas
    wpr = s.waiting_per_replica

    if ready == 0 and desired == 0 and ((s.request_rate or 0) > 0 or (s.waiting or 0) > 0):
        # A tier scaled to zero wakes up on any traffic it is asked to serve.
        return _TierOutcome(
            max(1, tier.min_replicas),
            "requests waiting at 0 replicas",
            True,
            False,
            False,
            replace(ts, low_since=None),
        )

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
    ttft_pressure = s.ttft_p90_seconds is not None and s.ttft_p90_seconds > tt * (
        1 + config.tolerance
    )
    if ttft_pressure and not queued_now and _lightly_loaded(config, s, ts, now):
        # Slow first tokens on idle replicas come from the prompts (long prefills), not from
        # load: more replicas would not make them faster.
        notes.append(
            f"tier {tier.name}: TTFT p90 {_fmt(s.ttft_p90_seconds or 0.0)}s above target at light "
            "load (long prompts?); not scaling on it"
        )
        ttft_pressure = False
    if queue_pressure or ttft_pressure:
        return _scale_up(config, tier, s, ts, now, queue_pressure, ttft_pressure, ttft_stale, notes)
    near = _near_capacity(config, s, ts, now)
    if near is not None:
        needed, what = near
        step = config.max_scale_up_step
        limit = desired + (step if step is not None else max(1, desired))
        wanted = max(desired, min(needed, limit))
        return _TierOutcome(wanted, what, True, False, False, replace(ts, low_since=None))

    light = _is_light(config, s)
    low, why_not = _is_low(config, tier, s, ts, now) if light else (False, None)
    if not low:
        if why_not:
            notes.append(f"tier {tier.name}: {why_not}")
        return _TierOutcome(desired, None, False, False, light, replace(ts, low_since=None))

    low_since = ts.low_since if ts.low_since is not None else now
    held = now - low_since
    if held < config.scale_down_delay_seconds:
        notes.append(
            f"tier {tier.name}: low load for {held:.0f}s of {config.scale_down_delay_seconds:.0f}s"
            " before scaling down"
        )
        return _TierOutcome(desired, None, False, True, True, replace(ts, low_since=low_since))
    wanted = max(tier.min_replicas, desired - config.scale_down_step)
    ttft = s.ttft_p90_seconds
    what = (
        f"low load for {held:.0f}s (queue {_fmt(wpr or 0.0)}/replica, "
        + (f"TTFT p90 {_fmt(ttft)}s" if ttft is not None else "no requests")
        + ")"
    )
    return _TierOutcome(wanted, what, False, True, True, replace(ts, low_since=now))


def _is_light(config: PolicyConfig, s: TierSample) -> bool:
    """Queue and TTFT below the low-water mark, all signals present."""
    if s.ready_replicas is None or s.waiting is None or s.running is None:
        return False
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
) -> _TierOutcome:
    desired = ts.desired
    tq = config.target_queue_per_replica
    tt = config.target_ttft_p90_seconds
    ready = s.ready_replicas or 0
    needed = desired
    reasons: list[str] = []
    new_ts = replace(ts, low_since=None)
    in_flight = s.in_flight
    if queue_pressure and ready > 0 and s.waiting is not None:
        wpr = s.waiting / ready
        running = s.running or 0.0
        if running / ready >= 0.5 and in_flight is not None:
            # A replica with a queue is saturated: what it runs is its capacity. Size the tier
            # so the whole load fits within the headroom of that capacity (the queue drains).
            capacity = running / ready
            needed = max(needed, _ceil(in_flight / (capacity * config.headroom)))
            new_ts = replace(new_ts, pressure_load=capacity, pressure_seen_at=now)
        else:
            needed = max(needed, _ceil(ready * wpr / tq))
        reasons.append(f"queue {_fmt(wpr)}/replica > {_fmt(tq)} target")
    if ttft_pressure and s.ttft_p90_seconds is not None:
        ratio = s.ttft_p90_seconds / tt
        reasons.append(f"TTFT p90 {_fmt(s.ttft_p90_seconds)}s > {_fmt(tt)}s target")
        if ready < desired:
            # While replicas start, TTFT keeps climbing on the old count; sizing on it again
            # would overshoot, so only the queue (an absolute measure) may add more meanwhile.
            notes.append(f"tier {tier.name}: TTFT high while {desired - ready} replicas start")
        elif ttft_stale:
            # The window still holds requests that waited in a queue that has since drained.
            notes.append(f"tier {tier.name}: TTFT p90 still reflects a queue that just drained")
        elif ready > 0:
            needed = max(needed, _ceil(ready * ratio), ready + 1)
            if not queue_pressure and in_flight is not None:
                new_ts = replace(new_ts, pressure_load=in_flight / ready, pressure_seen_at=now)
    step = config.max_scale_up_step
    limit = desired + (step if step is not None else max(1, desired))
    wanted = min(needed, limit)
    what = " and ".join(reasons)
    if wanted <= desired:
        if ready < desired:
            notes.append(f"tier {tier.name}: {what}; waiting for {desired - ready} starting")
        return _TierOutcome(desired, what, True, False, False, new_ts)
    return _TierOutcome(wanted, what, True, False, False, new_ts)


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
    in_flight = s.in_flight
    if not ready or in_flight is None:
        return None
    point = _pressure_point(config, ts, now)
    if point is not None and in_flight / ready > point * config.anticipation:
        needed = _ceil(in_flight / (point * config.headroom))
        return needed, (
            f"{_fmt(in_flight / ready)} in flight per replica nears the {_fmt(point)} "
            "at which pressure was seen"
        )
    if point is None and s.kv_cache_usage is not None and s.kv_cache_usage > config.kv_cache_limit:
        needed = _ceil(ready * s.kv_cache_usage / (config.kv_cache_limit * config.headroom))
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
    if desired <= tier.min_replicas:
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
            f"{_fmt(projected)} in flight per replica on {after} replicas would exceed "
            f"{_fmt(limit)} ({config.headroom:.0%} of the load that caused pressure)"
        )
    if s.kv_cache_usage is not None and ready > 0:
        kv_after = s.kv_cache_usage * ready / after
        return kv_after <= config.kv_cache_limit * config.headroom, None
    # Nothing known about capacity: only shrink if even a fully queued load met the target.
    return projected <= config.target_queue_per_replica * config.headroom, None


def _replicas_reason(
    config: PolicyConfig, tier: TierPolicy, old: int, new: int, out: _TierOutcome
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
                what += f" (capped by GPU budget {_fmt(config.max_gpus)})"
    return f"tier {tier.name}: {what}: {old} -> {new} replicas"


def _apply_bounds_and_budget(
    config: PolicyConfig, state: PolicyState, outcomes: Mapping[str, _TierOutcome]
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
            f"the tiers' minimum replicas need {_fmt(used())} GPUs, more than maxGpus "
            f"{_fmt(budget)}"
        )
    # Scale-ups are granted smallest tier first, one replica at a time.
    for t in config.tiers:
        while granted[t.name] < wanted[t.name]:
            if used() + t.gpus_per_replica > budget + 1e-9:
                capped.add(t.name)
                notes.append(
                    f"tier {t.name}: wants {wanted[t.name]} replicas, GPU budget "
                    f"{_fmt(budget)} allows {granted[t.name]}"
                )
                break
            granted[t.name] += 1
    return granted, capped, notes


def effective_thresholds(ctx: ContextPolicy, s: ContextState) -> tuple[float, ...]:
    """base + shift, within the context's bounds, strictly increasing."""
    return _normalise(ctx, [b + d for b, d in zip(s.base, s.shift, strict=True)])


def _normalise(ctx: ContextPolicy, values: Sequence[float]) -> tuple[float, ...]:
    out = [min(max(round(v, 6), ctx.lower), ctx.upper) for v in values]
    if not out:
        return ()
    # Strictly increasing: push up from the bottom, then back down from the top under the upper
    # bound (bounds narrower than the gaps need are refused by the API's validation).
    for i in range(1, len(out)):
        out[i] = max(out[i], round(out[i - 1] + MIN_THRESHOLD_GAP, 6))
    out[-1] = min(out[-1], ctx.upper)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], round(out[i + 1] - MIN_THRESHOLD_GAP, 6))
    return tuple(min(max(v, ctx.lower, 0.0), ctx.upper, 1.0) for v in out)


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def _decide_thresholds(
    config: PolicyConfig,
    snapshot: MetricsSnapshot,
    state: PolicyState,
    outcomes: Mapping[str, _TierOutcome],
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
                f"quality {_fmt(sample.quality or 0.0)} < floor {_fmt(fb.quality_floor or 0.0)} "
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
        new_cs = ContextState(base=_normalise(ctx, new_cs.base), shift=new_cs.shift)
        new_eff = effective_thresholds(ctx, new_cs)
        contexts[ctx.name] = new_cs
        if not _close(new_eff, old_eff):
            direction: Direction = "up" if sum(new_eff) > sum(old_eff) else "down"
            changes.append(
                Change(
                    kind="thresholds",
                    target=ctx.name,
                    direction=direction,
                    old=old_eff,
                    new=new_eff,
                    reason=f"context {ctx.name}: {'; '.join(why) or 'bounds'}: "
                    f"thresholds {_fmt_thresholds(old_eff)} -> {_fmt_thresholds(new_eff)}",
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
