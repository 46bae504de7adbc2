"""The simulator: a request trace served by tiers of replicas, in simulated time.

Each replica runs up to ``concurrency`` requests at once; a request's time to first token is
its wait in the tier's queue plus its prefill (slower when the batch is fuller), and its decode
speed drops linearly with batch occupancy. Replicas take ``startup_seconds`` to become ready,
drain before they go, and cost their GPUs from creation to removal.

Every ``interval_seconds`` the simulator builds the same `MetricsSnapshot` the operator builds
from Prometheus (window rates, TTFT p90, queue, running, KV use, routing per context) and hands
it to a controller, which answers with replicas per tier and thresholds per context.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from zeta_router.autoscale.snapshot import (
    ContextSample,
    MetricsSnapshot,
    MetricsStatus,
    ScoreHistogram,
    TierSample,
)
from zeta_router.sim.scenario import Scenario, SimTier
from zeta_router.sim.trace import Trace

SCORE_BUCKETS = (*(round(0.05 * i, 2) for i in range(1, 20)), math.inf)
DRAIN_LIMIT_SECONDS = 3600.0


@dataclass(frozen=True)
class Control:
    replicas: Mapping[str, int]
    thresholds: Mapping[str, tuple[float, ...]]
    decisions: int = 0
    """Changes decided in this interval (for the report)."""
    paused: frozenset[str] | None = None
    """External tiers paused for their spend cap (None: unchanged)."""


class Controller(Protocol):
    name: str

    def start(self, scenario: Scenario) -> Control: ...

    def step(self, snapshot: MetricsSnapshot, now: float) -> Control: ...


@dataclass
class _Replica:
    ready_at: float
    active: int = 0
    draining: bool = False


@dataclass
class _Tier:
    spec: SimTier
    replicas: list[_Replica] = field(default_factory=list)
    queue: deque[int] = field(default_factory=deque)
    gpu_seconds: float = 0.0
    last_accounted: float = 0.0
    started: deque[tuple[float, float]] = field(default_factory=deque)
    """(first-token time, TTFT) of requests in the metrics window."""
    completed: deque[float] = field(default_factory=deque)
    asleep: bool = False
    """The routers' view (the routing config's ``asleep``): no request is sent here."""
    held: dict[int, None] = field(default_factory=dict)
    """Requests held for this tier while it wakes (whenAsleep wait), in arrival order."""
    wanting: deque[float] = field(default_factory=deque)
    """When requests wanted this tier while it slept (in the metrics window)."""
    wake_pending: bool = False
    notice_pending: bool = False
    refused: deque[float] = field(default_factory=deque)
    """When the tier refused a request for lack of capacity (in the metrics window)."""

    def account(self, now: float, until: float) -> None:
        t = min(now, until)
        if t > self.last_accounted:
            self.gpu_seconds += (
                len(self.replicas) * self.spec.gpus_per_replica * (t - self.last_accounted)
            )
            self.last_accounted = t

    def serving(self, now: float) -> list[_Replica]:
        return [r for r in self.replicas if r.ready_at <= now and not r.draining]


@dataclass
class TimelinePoint:
    time: float
    arrival_rate: float
    replicas: dict[str, int]
    ready: dict[str, int]
    thresholds: dict[str, list[float]]
    ttft_p90: dict[str, float | None]


@dataclass
class SimResult:
    controller: str
    trace: str
    requests: int
    gpu_hours: float
    gpu_hours_by_tier: dict[str, float]
    slo_attainment: float
    ttft_p50: float
    ttft_p90: float
    ttft_p99: float
    share_by_tier: dict[str, float]
    quality: float
    """Estimated share of correct answers (per-score quality model of each tier)."""
    decisions: int
    unserved: int
    timeline: list[TimelinePoint]
    asleep_hours: dict[str, float] = field(default_factory=dict)
    """Hours each tier that may sleep spent at zero replicas."""
    wakes: int = 0
    fallbacks: int = 0
    """Requests answered on another tier because theirs slept."""
    wake_to_answer: list[float] = field(default_factory=list)
    """Seconds from the first request wanting a sleeping tier to the routers sending it
    requests again (held ones first), per wake."""
    external_tier: str | None = None
    """The scenario's external tier (its share is in ``share_by_tier``, last), if any."""
    external_requests: int = 0
    """Requests the external tier answered (overflow)."""
    external_spend: float = 0.0
    """What they cost, in the prices' unit."""
    external_paused_hours: float = 0.0
    """Hours the external tier was paused for its spend cap."""

    def summary(self) -> dict[str, object]:
        return {
            "controller": self.controller,
            "trace": self.trace,
            "requests": self.requests,
            "gpuHours": round(self.gpu_hours, 3),
            "gpuHoursByTier": {k: round(v, 3) for k, v in self.gpu_hours_by_tier.items()},
            "sloAttainment": round(self.slo_attainment, 5),
            "ttftP50": round(self.ttft_p50, 4),
            "ttftP90": round(self.ttft_p90, 4),
            "ttftP99": round(self.ttft_p99, 4),
            "shareByTier": {k: round(v, 4) for k, v in self.share_by_tier.items()},
            "quality": round(self.quality, 5),
            "decisions": self.decisions,
            "unserved": self.unserved,
            "asleepHours": {k: round(v, 3) for k, v in self.asleep_hours.items()},
            "wakes": self.wakes,
            "fallbacks": self.fallbacks,
            "wakeToAnswerSeconds": [round(x, 1) for x in self.wake_to_answer],
            "externalTier": self.external_tier,
            "externalRequests": self.external_requests,
            "externalSpend": round(self.external_spend, 4),
            "externalPausedHours": round(self.external_paused_hours, 3),
        }


# Event kinds, ordered so that at equal times completions free slots before anything else.
_DONE, _READY, _TICK, _WAKE, _NOTICE, _EXPIRE = 0, 1, 2, 3, 4, 5


class Simulation:
    def __init__(
        self, scenario: Scenario, trace: Trace, controller: Controller, seed: int = 0
    ) -> None:
        unknown = sorted(set(trace.context) - {c.name for c in scenario.contexts})
        if unknown:
            raise ValueError(
                f"trace uses context(s) {unknown} the scenario does not define "
                f"({[c.name for c in scenario.contexts]})"
            )
        self.scenario = scenario
        self.trace = trace
        self.controller = controller
        self.rng = random.Random(seed)
        self.tiers = [_Tier(spec=t) for t in scenario.tiers]
        self.tier_index = {t.name: i for i, t in enumerate(scenario.tiers)}
        self.thresholds: dict[str, tuple[float, ...]] = {}
        self.events: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self.generation = 0
        n = len(trace)
        self.ttft = [math.nan] * n
        self.tier_of = [-1] * n
        self.routed: deque[tuple[float, str, int, float, float | None]] = deque()
        """(time, context, tier, score, shadow agreement or None) in the metrics window."""
        self.decisions = 0
        self.timeline: list[TimelinePoint] = []
        self.wakes = 0
        self.fallbacks = 0
        self.asleep_since: dict[int, float] = {}
        self.asleep_seconds = [0.0] * len(self.tiers)
        self.first_wanting: dict[int, float] = {}
        self.wake_to_answer: list[float] = []
        self.external = scenario.external
        self.external_index = len(self.tiers)
        """``tier_of`` of a request the external tier answered."""
        self.external_paused = False
        self.external_paused_since: float | None = None
        self.external_paused_seconds = 0.0
        self.external_spent: deque[tuple[float, float]] = deque()
        """(time, cost) of the external tier's answers in the metrics window."""
        self.external_spend = 0.0
        self.external_requests = 0

    # ---- event plumbing

    def _push(self, time: float, kind: int, a: int = 0, b: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self.events, (time, kind, self._seq, a, b))

    # ---- serving

    def _start(self, tier_i: int, replica: _Replica, req: int, now: float) -> None:
        tier = self.tiers[tier_i]
        spec = tier.spec
        occupancy = replica.active / spec.concurrency
        prefill = self.trace.prompt_tokens[req] / spec.prefill_tokens_per_second
        # Prefill competes with the running batch; decode slows as the batch fills.
        prefill *= 1.0 + 2.0 * occupancy
        speed = spec.decode_tokens_per_second * (1.0 - spec.batch_slowdown * occupancy)
        ttft = (now - self.trace.arrival[req]) + prefill
        finish = now + prefill + self.trace.output_tokens[req] / speed
        replica.active += 1
        self.ttft[req] = ttft
        tier.started.append((now + prefill, ttft))
        self._push(finish, _DONE, tier_i, id(replica))

    def _dispatch(self, tier_i: int, now: float) -> None:
        tier = self.tiers[tier_i]
        cap = tier.spec.concurrency
        while tier.queue:
            free = [r for r in tier.serving(now) if r.active < cap]
            if not free:
                return
            replica = min(free, key=lambda r: r.active)
            self._start(tier_i, replica, tier.queue.popleft(), now)

    def _route(self, req: int, now: float) -> None:
        ctx = self.trace.context[req]
        score = self.trace.score[req]
        tier_i = bisect_right(self.thresholds[ctx], score)
        if self.tiers[tier_i].asleep:
            tier_i = self._asleep(tier_i, req, now)
            if tier_i < 0:
                return  # held while the tier wakes
        if self.external is not None and self._refuses(tier_i, now):
            # The model servers refuse past their queue bound: failover, larger tiers first,
            # then the external tier as the last resort (unless it is paused).
            n = len(self.tiers)
            for i in [*range(tier_i + 1, n), *range(tier_i - 1, -1, -1)]:
                if not self.tiers[i].asleep and not self._refuses(i, now):
                    tier_i = i
                    break
            else:
                if not self.external_paused:
                    self._overflow(req, now)
                    return
        self._enqueue(tier_i, req, now)

    def _refuses(self, tier_i: int, now: float) -> bool:
        """A tier of the cluster refuses a request (429): its queue is at its bound (counted,
        as the routers' zeta_router_tier_failures_total{reason="http_429"})."""
        assert self.external is not None
        tier = self.tiers[tier_i]
        ready = len(tier.serving(now))
        bound = self.external.refuse_queue_per_replica * ready
        if ready == 0 or len(tier.queue) < bound:
            return ready == 0
        tier.refused.append(now)
        return True

    def _overflow(self, req: int, now: float) -> None:
        """The external tier answers: its own TTFT, its price."""
        ext = self.external
        assert ext is not None
        self.tier_of[req] = self.external_index
        self.ttft[req] = ext.ttft_seconds
        cost = ext.cost(self.trace.prompt_tokens[req], self.trace.output_tokens[req])
        self.external_spend += cost
        self.external_requests += 1
        self.external_spent.append((now, cost))

    def _set_paused(self, paused: bool, now: float) -> None:
        if paused == self.external_paused:
            return
        self.external_paused = paused
        if paused:
            self.external_paused_since = now
        else:
            self.external_paused_seconds += now - (self.external_paused_since or now)
            self.external_paused_since = None

    def _asleep(self, tier_i: int, req: int, now: float) -> int:
        """A request for a sleeping tier: counted (it wakes the tier, ``wake_seconds`` later),
        then held (wait: returns -1) or answered by the nearest awake tier (its index)."""
        tier = self.tiers[tier_i]
        tier.wanting.append(now)
        self.first_wanting.setdefault(tier_i, now)
        if not tier.wake_pending and not any(not r.draining for r in tier.replicas):
            tier.wake_pending = True
            self._push(now + self.scenario.wake_seconds, _WAKE, tier_i)
        if self.scenario.when_asleep == "wait":
            tier.held[req] = None
            self._push(now + self.scenario.wait_seconds, _EXPIRE, tier_i, req)
            return -1
        return self._fallback(tier_i)

    def _fallback(self, tier_i: int) -> int:
        """The nearest awake tier, larger first (as failover goes); the tier itself if none."""
        n = len(self.tiers)
        order: list[int] = [*range(tier_i + 1, n), *range(tier_i - 1, -1, -1)]
        for i in order:
            if not self.tiers[i].asleep:
                self.fallbacks += 1
                return i
        return tier_i

    def _enqueue(self, tier_i: int, req: int, now: float) -> None:
        ctx = self.trace.context[req]
        score = self.trace.score[req]
        self.tier_of[req] = tier_i
        agreement = None
        if tier_i < len(self.tiers) - 1 and self.rng.random() < self.scenario.shadow_sample_rate:
            small, big = self.tiers[tier_i].spec, self.tiers[tier_i + 1].spec
            agreement = 1.0 - max(0.0, big.p_correct(score) - small.p_correct(score))
        self.routed.append((now, ctx, tier_i, score, agreement))
        tier = self.tiers[tier_i]
        tier.queue.append(req)
        self._dispatch(tier_i, now)

    def _wake(self, tier_i: int, now: float) -> None:
        tier = self.tiers[tier_i]
        tier.wake_pending = False
        if any(not r.draining for r in tier.replicas):
            return
        self.wakes += 1
        wake = getattr(self.controller, "wake", None)
        control = wake(tier.spec.name, now) if wake is not None else None
        if control is not None:
            self._apply(control, now)
        else:
            self._scale(tier_i, max(1, tier.spec.min_replicas), now)

    def _ready(self, tier_i: int, now: float) -> None:
        tier = self.tiers[tier_i]
        if tier.asleep and not tier.notice_pending and tier.serving(now):
            tier.notice_pending = True
            self._push(now + self.scenario.wake_notice_seconds, _NOTICE, tier_i)
        self._dispatch(tier_i, now)

    def _notice(self, tier_i: int, now: float) -> None:
        """The routers learn the woken tier is awake: held requests go to it."""
        tier = self.tiers[tier_i]
        tier.notice_pending = False
        if not tier.serving(now):
            return
        self._set_asleep(tier_i, False, now)
        wanted_at = self.first_wanting.pop(tier_i, None)
        if wanted_at is not None:
            self.wake_to_answer.append(now - wanted_at)
        held = list(tier.held)
        tier.held.clear()
        for req in held:
            self._enqueue(tier_i, req, now)

    def _expire(self, tier_i: int, req: int, now: float) -> None:
        tier = self.tiers[tier_i]
        if req in tier.held:
            del tier.held[req]
            self._enqueue(self._fallback(tier_i), req, now)

    def _set_asleep(self, tier_i: int, asleep: bool, now: float) -> None:
        tier = self.tiers[tier_i]
        if asleep == tier.asleep:
            return
        tier.asleep = asleep
        if asleep:
            self.asleep_since[tier_i] = now
        else:
            since = self.asleep_since.pop(tier_i, now)
            self.asleep_seconds[tier_i] += now - since

    def _finish(self, tier_i: int, replica_id: int, now: float) -> None:
        tier = self.tiers[tier_i]
        for r in tier.replicas:
            if id(r) == replica_id:
                r.active -= 1
                if r.draining and r.active == 0:
                    tier.account(now, self.trace.duration)
                    tier.replicas.remove(r)
                break
        tier.completed.append(now)
        self._dispatch(tier_i, now)

    # ---- scaling

    def _scale(self, tier_i: int, target: int, now: float) -> None:
        tier = self.tiers[tier_i]
        tier.account(now, self.trace.duration)
        live = [r for r in tier.replicas if not r.draining]
        if target > len(live):
            # Warm replicas that are draining come back first.
            for r in tier.replicas:
                if r.draining and len(live) < target:
                    r.draining = False
                    live.append(r)
            while len(live) < target:
                r = _Replica(ready_at=now + tier.spec.startup_seconds)
                tier.replicas.append(r)
                live.append(r)
                self._push(r.ready_at, _READY, tier_i)
        elif target < len(live):
            if target == 0 and tier.spec.may_sleep:
                self._set_asleep(tier_i, True, now)
            # Replicas still starting go first, then the least busy ready ones drain.
            live.sort(key=lambda r: (r.ready_at <= now, r.active))
            for r in live[: len(live) - target]:
                if r.ready_at > now or r.active == 0:
                    tier.replicas.remove(r)
                else:
                    r.draining = True
        self._dispatch(tier_i, now)

    def _apply(self, control: Control, now: float) -> None:
        for name, n in control.replicas.items():
            self._scale(self.tier_index[name], n, now)
        new = {k: tuple(v) for k, v in control.thresholds.items()}
        if self.thresholds and new and new != self.thresholds:
            self.generation += 1
        self.thresholds.update(new)
        self.decisions += control.decisions
        if control.paused is not None and self.external is not None:
            self._set_paused(self.external.name in control.paused, now)

    # ---- metrics

    def _snapshot(self, now: float) -> MetricsSnapshot:
        window = self.scenario.metrics_window_seconds
        horizon = now - window
        tiers: dict[str, TierSample] = {}
        for tier in self.tiers:
            while tier.started and tier.started[0][0] < horizon:
                tier.started.popleft()
            while tier.completed and tier.completed[0] < horizon:
                tier.completed.popleft()
            while tier.wanting and tier.wanting[0] < horizon:
                tier.wanting.popleft()
            while tier.refused and tier.refused[0] < horizon:
                tier.refused.popleft()
            serving = [r for r in tier.replicas if r.ready_at <= now]
            ready = sum(1 for r in serving if not r.draining)
            running = float(sum(r.active for r in serving))
            ttfts = sorted(t for first, t in tier.started if first <= now)
            p90 = ttfts[min(len(ttfts) - 1, int(0.9 * len(ttfts)))] if ttfts else None
            kv = None
            if tier.spec.engine == "vllm" and ready:
                kv = min(1.0, running / (tier.spec.concurrency * ready))
            tiers[tier.spec.name] = TierSample(
                name=tier.spec.name,
                ready_replicas=ready,
                waiting=float(len(tier.queue)),
                running=running,
                kv_cache_usage=kv,
                ttft_p90_seconds=p90,
                request_rate=len(tier.completed) / window,
                wanting=float(len(tier.wanting)) if tier.spec.may_sleep else None,
                refused_rate=len(tier.refused) / window if self.external is not None else None,
            )
        while self.routed and self.routed[0][0] < horizon:
            self.routed.popleft()
        contexts: dict[str, ContextSample] = {}
        for c in self.scenario.contexts:
            by_tier = dict.fromkeys((t.name for t in self.scenario.tiers), 0.0)
            counts = [0.0] * len(SCORE_BUCKETS)
            agree_sum, agree_n = 0.0, 0
            for _, ctx, tier_i, score, agreement in self.routed:
                if ctx != c.name:
                    continue
                by_tier[self.scenario.tiers[tier_i].name] += 1
                counts[bisect_right(SCORE_BUCKETS[:-1], score - 1e-12)] += 1
                if agreement is not None:
                    agree_sum += agreement
                    agree_n += 1
            cumulative = []
            total = 0.0
            for x in counts:
                total += x
                cumulative.append(total)
            contexts[c.name] = ContextSample(
                name=c.name,
                requests_by_tier=by_tier,
                scores=ScoreHistogram(SCORE_BUCKETS, tuple(cumulative)),
                quality=agree_sum / agree_n if agree_n else None,
                quality_samples=float(agree_n),
            )
        spend: dict[str, float] = {}
        if self.external is not None:
            while self.external_spent and self.external_spent[0][0] < horizon:
                self.external_spent.popleft()
            spend[self.external.name] = sum(c for _, c in self.external_spent) / window * 3600.0
        return MetricsSnapshot(
            status=MetricsStatus.OK,
            tiers=tiers,
            contexts=contexts,
            config_generation=self.generation,
            spend_per_hour=spend,
        )

    # ---- main loop

    def run(self) -> SimResult:
        control = self.controller.start(self.scenario)
        self._apply(control, 0.0)
        # Replicas asked for at the start are already serving when the trace begins.
        for tier in self.tiers:
            for r in tier.replicas:
                r.ready_at = 0.0
        interval = self.scenario.interval_seconds
        self._push(interval, _TICK)
        arrivals = self.trace.arrival
        n = len(arrivals)
        next_req = 0
        end = self.trace.duration
        last_arrival_window: deque[float] = deque()
        while True:
            next_arrival = arrivals[next_req] if next_req < n else math.inf
            if self.events and self.events[0][0] <= next_arrival:
                time, kind, _, a, b = heapq.heappop(self.events)
                if kind == _DONE:
                    self._finish(a, b, time)
                elif kind == _READY:
                    self._ready(a, time)
                elif kind == _WAKE:
                    self._wake(a, time)
                elif kind == _NOTICE:
                    self._notice(a, time)
                elif kind == _EXPIRE:
                    self._expire(a, b, time)
                else:
                    while last_arrival_window and last_arrival_window[0] < time - interval:
                        last_arrival_window.popleft()
                    snapshot = self._snapshot(time)
                    self._record(time, len(last_arrival_window) / interval, snapshot)
                    if next_req >= n and self._idle():
                        break
                    if time > end + DRAIN_LIMIT_SECONDS:
                        break
                    self._apply(self.controller.step(snapshot, time), time)
                    self._push(time + interval, _TICK)
            elif next_req < n:
                self._route(next_req, next_arrival)
                last_arrival_window.append(next_arrival)
                next_req += 1
            else:  # pragma: no cover - the tick event always exists
                break
        for tier in self.tiers:
            tier.account(end, end)
        for tier_i, since in list(self.asleep_since.items()):
            self.asleep_seconds[tier_i] += max(0.0, end - since)
        if self.external_paused_since is not None:
            self.external_paused_seconds += max(0.0, end - self.external_paused_since)
        return self._result()

    def _idle(self) -> bool:
        return all(
            not t.queue and not t.held and all(r.active == 0 for r in t.replicas)
            for t in self.tiers
        )

    def _record(self, now: float, rate: float, snapshot: MetricsSnapshot) -> None:
        self.timeline.append(
            TimelinePoint(
                time=now,
                arrival_rate=rate,
                replicas={
                    t.spec.name: sum(1 for r in t.replicas if not r.draining) for t in self.tiers
                },
                ready={name: s.ready_replicas or 0 for name, s in snapshot.tiers.items()},
                thresholds={k: list(v) for k, v in self.thresholds.items()},
                ttft_p90={name: s.ttft_p90_seconds for name, s in snapshot.tiers.items()},
            )
        )

    def _result(self) -> SimResult:
        n = len(self.trace)
        slo = self.scenario.slo_seconds
        served = [t for t in self.ttft if not math.isnan(t)]
        unserved = n - len(served)
        met = sum(1 for t in served if t <= slo)
        ordered = sorted(served) or [math.nan]

        def pct(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        specs = self.scenario.tiers
        counts = [0] * (len(specs) + 1)
        quality = 0.0
        for req, routed in enumerate(self.tier_of):
            tier_i = routed if routed >= 0 else len(specs) - 1  # (never routed: as before)
            counts[tier_i] += 1
            score = self.trace.score[req]
            if tier_i == self.external_index and self.external is not None:
                quality += self.external.p_correct(score)
            else:
                quality += specs[tier_i].p_correct(score)
        shares = {s.name: counts[i] / n if n else 0.0 for i, s in enumerate(specs)}
        if self.external is not None:
            shares[self.external.name] = counts[self.external_index] / n if n else 0.0
        return SimResult(
            controller=self.controller.name,
            trace=self.trace.name,
            requests=n,
            gpu_hours=sum(t.gpu_seconds for t in self.tiers) / 3600.0,
            gpu_hours_by_tier={t.spec.name: t.gpu_seconds / 3600.0 for t in self.tiers},
            slo_attainment=met / n if n else 1.0,
            ttft_p50=pct(0.5),
            ttft_p90=pct(0.9),
            ttft_p99=pct(0.99),
            share_by_tier=shares,
            quality=quality / n if n else 0.0,
            decisions=self.decisions,
            unserved=unserved,
            timeline=self.timeline,
            asleep_hours={
                t.spec.name: self.asleep_seconds[i] / 3600.0
                for i, t in enumerate(self.tiers)
                if t.spec.may_sleep
            },
            wakes=self.wakes,
            fallbacks=self.fallbacks,
            wake_to_answer=self.wake_to_answer,
            external_tier=self.external.name if self.external is not None else None,
            external_requests=self.external_requests,
            external_spend=self.external_spend,
            external_paused_hours=self.external_paused_seconds / 3600.0,
        )


def simulate(scenario: Scenario, trace: Trace, controller: Controller, seed: int = 0) -> SimResult:
    return Simulation(scenario, trace, controller, seed).run()
