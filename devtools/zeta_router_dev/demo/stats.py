"""Pure aggregation for the demo: request records and cluster samples in, figures out. No I/O,
no clocks: times are seconds since the workload started, given by the caller."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

NO_TIER = "none"


@dataclass(frozen=True)
class RequestRecord:
    """One request the workload sent."""

    start: float
    """Seconds since the workload started."""
    latency: float
    """Seconds until the whole answer arrived (or the error)."""
    context: str
    level: str
    tier: str = NO_TIER
    """The tier that answered (the router's ``x-zeta-tier`` header); ``none`` on errors."""
    score: float | None = None
    ok: bool = True
    error: str = ""
    completion_tokens: int = 0
    router: int = 0
    """Which router (pod) the request went through."""

    @property
    def end(self) -> float:
        return self.start + self.latency


@dataclass(frozen=True)
class ClusterSample:
    """What the cluster said at one moment: replicas per tier, the routing thresholds."""

    time: float
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Desired replicas per tier (the Deployment's spec)."""
    ready: Mapping[str, int] = field(default_factory=dict)
    """Ready replicas per tier (the Deployment's status)."""
    thresholds: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Cut points per context, from the routing ConfigMap."""
    generation: int = 0
    conditions: Mapping[str, str] = field(default_factory=dict)
    """ZetaRouter condition type -> status (True/False/Unknown)."""
    last_decision: str = ""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics; None
    for no values."""
    if not values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class LatencyStats:
    count: int
    p50: float | None
    p90: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> LatencyStats:
        mean = sum(values) / len(values) if values else None
        return cls(len(values), percentile(values, 0.5), percentile(values, 0.9), mean)

    def to_json(self) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"count": self.count, "p50": r(self.p50), "p90": r(self.p90), "mean": r(self.mean)}


@dataclass(frozen=True)
class Aggregate:
    """Figures over a set of request records."""

    total: int
    ok: int
    errors: int
    by_tier: dict[str, int]
    """Answered requests per tier."""
    by_context_tier: dict[str, dict[str, int]]
    """Answered requests per context, then per tier."""
    by_level_tier: dict[str, dict[str, int]]
    latency: LatencyStats
    latency_by_tier: dict[str, LatencyStats]
    completion_tokens: int
    span: float
    """Seconds from the first request's start to the last one's end."""
    error_samples: tuple[str, ...] = ()

    @property
    def throughput(self) -> float:
        return self.ok / self.span if self.span > 0 else 0.0

    def share(self, tier: str) -> float:
        return self.by_tier.get(tier, 0) / self.ok if self.ok else 0.0


def aggregate(records: Iterable[RequestRecord], tiers: Sequence[str] = ()) -> Aggregate:
    """Counts and latencies of ``records``; ``tiers`` are listed even with no request."""
    recs = list(records)
    ok = [r for r in recs if r.ok]
    by_tier: dict[str, int] = dict.fromkeys(tiers, 0)
    by_ctx: dict[str, dict[str, int]] = {}
    by_level: dict[str, dict[str, int]] = {}
    lat_by_tier: dict[str, list[float]] = {t: [] for t in tiers}
    for r in ok:
        by_tier[r.tier] = by_tier.get(r.tier, 0) + 1
        ctx = by_ctx.setdefault(r.context, dict.fromkeys(tiers, 0))
        ctx[r.tier] = ctx.get(r.tier, 0) + 1
        lvl = by_level.setdefault(r.level, dict.fromkeys(tiers, 0))
        lvl[r.tier] = lvl.get(r.tier, 0) + 1
        lat_by_tier.setdefault(r.tier, []).append(r.latency)
    errors = [r.error for r in recs if not r.ok]
    span = (max(r.end for r in recs) - min(r.start for r in recs)) if recs else 0.0
    return Aggregate(
        total=len(recs),
        ok=len(ok),
        errors=len(errors),
        by_tier=by_tier,
        by_context_tier=by_ctx,
        by_level_tier=by_level,
        latency=LatencyStats.of([r.latency for r in ok]),
        latency_by_tier={t: LatencyStats.of(v) for t, v in lat_by_tier.items()},
        completion_tokens=sum(r.completion_tokens for r in ok),
        span=span,
        error_samples=tuple(dict.fromkeys(errors))[:5],
    )


def completions_per_interval(
    records: Iterable[RequestRecord], width: float, end: float | None = None
) -> tuple[list[float], dict[str, list[int]]]:
    """Answered requests per tier in consecutive intervals of ``width`` seconds (by the time
    each answer arrived): the interval starts, and one count per interval for each tier."""
    if width <= 0:
        raise ValueError("width must be positive")
    ok = [r for r in records if r.ok]
    last = end if end is not None else max((r.end for r in ok), default=0.0)
    n = max(1, math.ceil(last / width)) if last > 0 else 1
    starts = [i * width for i in range(n)]
    counts: dict[str, list[int]] = {}
    for r in ok:
        i = min(n - 1, max(0, int(r.end // width)))
        counts.setdefault(r.tier, [0] * n)[i] += 1
    return starts, dict(sorted(counts.items()))


def recent(records: Sequence[RequestRecord], now: float, window: float) -> list[RequestRecord]:
    """Records whose answer arrived in the last ``window`` seconds before ``now``."""
    return [r for r in records if now - window <= r.end <= now]
