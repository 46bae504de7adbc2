"""What the control loop knows about one ZetaRouter at one moment: a typed metrics snapshot.

`zeta_router.autoscale.metrics` fills it from Prometheus; the simulator fills it from its model of
the tiers. The policy reads nothing else, so both drive exactly the same decisions.

Every value is optional: ``None`` means "no data", which the policy treats as unknown (it never
scales down on unknown data), never as zero.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class MetricsStatus(enum.Enum):
    """Outcome of collecting a snapshot; anything but OK makes the loop hold still."""

    OK = "ok"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    """Kept for callers that report their own timeouts; the Prometheus source reports a
    timeout as UNREACHABLE, so that a user cannot tell a silent port from a closed one."""
    NO_SERIES = "no-series"
    ERROR = "error"
    REFUSED = "refused"
    """The credentials named for Prometheus may not be used (the operator's Secret policy)."""
    NOT_ALLOWED = "not-allowed"
    """The Prometheus URL is outside the allowed endpoints (``--prometheus-endpoint``)."""


@dataclass(frozen=True)
class TierSample:
    """Load of one tier, summed over its ready replicas (per-replica values are derived)."""

    name: str
    ready_replicas: int | None = None
    waiting: float | None = None
    """Requests queued in the model servers (vLLM waiting / llama.cpp deferred), all replicas."""
    running: float | None = None
    """Requests being processed (in a batch or a slot), all replicas."""
    kv_cache_usage: float | None = None
    """Mean KV-cache use in [0, 1] over the replicas (vLLM only)."""
    ttft_p90_seconds: float | None = None
    request_rate: float | None = None
    """Requests per second answered by the tier (0 is a real value: an idle tier)."""
    wanting: float | None = None
    """Requests that wanted the tier while it was asleep (the routers answered them elsewhere or
    held them), in the window; None: the routers reported none."""
    refused_rate: float | None = None
    """Requests per second the tier refused for lack of capacity (it answered 429, or every
    connection a router may open to it was busy): they went to another tier (an external
    overflow tier, often) or failed. Demand the tier did not see in its queue."""

    @property
    def demand_in_flight(self) -> float | None:
        """In-flight requests, plus what the refused ones would add at the tier's own pace
        (Little's law: in flight / answered per second is each request's time there)."""
        in_flight = self.in_flight
        refused, rate = self.refused_rate, self.request_rate
        if in_flight is None or not refused or not rate:
            return in_flight
        return in_flight * (1.0 + refused / rate)

    @property
    def in_flight(self) -> float | None:
        if self.waiting is None or self.running is None:
            return None
        return self.waiting + self.running

    @property
    def waiting_per_replica(self) -> float | None:
        if self.waiting is None or not self.ready_replicas:
            return None
        return self.waiting / self.ready_replicas

    @property
    def running_per_replica(self) -> float | None:
        if self.running is None or not self.ready_replicas:
            return None
        return self.running / self.ready_replicas


@dataclass(frozen=True)
class ScoreHistogram:
    """Decision scores seen in the window as a cumulative histogram (Prometheus ``le`` buckets)."""

    bounds: tuple[float, ...]
    """Bucket upper bounds, ascending; the last one may be +inf."""
    cumulative: tuple[float, ...]
    """Observations <= each bound (non-decreasing)."""

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.cumulative):
            raise ValueError("bounds and cumulative counts differ in length")
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("bucket bounds must be strictly increasing")

    @property
    def total(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    def quantile(self, q: float) -> float | None:
        """The score below which a share ``q`` of observations lie (linear within a bucket)."""
        total = self.total
        if total <= 0 or not 0.0 <= q <= 1.0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in zip(self.bounds, self.cumulative, strict=True):
            if count >= rank:
                upper = 1.0 if math.isinf(bound) else bound
                if count == lower_count:
                    return min(upper, 1.0)
                frac = (rank - lower_count) / (count - lower_count)
                return min(1.0, lower_bound + frac * (upper - lower_bound))
            lower_bound, lower_count = (1.0 if math.isinf(bound) else bound), count
        return min(lower_bound, 1.0)


@dataclass(frozen=True)
class ContextSample:
    """Routing of one context in the window."""

    name: str
    requests_by_tier: Mapping[str, float] = field(default_factory=dict)
    """Requests (count in the window) sent to each tier."""
    scores: ScoreHistogram | None = None
    quality: float | None = None
    """Mean quality signal in [0, 1] of requests kept on a smaller tier: shadow agreement with
    the next larger tier, or client feedback score when there is no shadow traffic."""
    quality_samples: float = 0.0

    @property
    def total(self) -> float:
        return float(sum(self.requests_by_tier.values()))

    def share(self, tier: str) -> float | None:
        total = self.total
        if total <= 0:
            return None
        return self.requests_by_tier.get(tier, 0.0) / total


@dataclass(frozen=True)
class MetricsSnapshot:
    status: MetricsStatus
    message: str = ""
    tiers: Mapping[str, TierSample] = field(default_factory=dict)
    contexts: Mapping[str, ContextSample] = field(default_factory=dict)
    config_generation: int | None = None
    """Lowest routing-config generation reported by the routers (None: none reported)."""
    spend_per_hour: Mapping[str, float] = field(default_factory=dict)
    """Estimated spend rate of each external tier (its cost counter's rate x 3600, in its
    prices' unit per hour); a tier absent: no data."""

    @property
    def available(self) -> bool:
        return self.status is MetricsStatus.OK

    @classmethod
    def unavailable(cls, status: MetricsStatus, message: str) -> MetricsSnapshot:
        if status is MetricsStatus.OK:
            raise ValueError("an unavailable snapshot needs a failure status")
        return cls(status=status, message=message)
