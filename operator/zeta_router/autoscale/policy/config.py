"""The policy's configuration: tiers' replica bounds, contexts' cut points and bounds, feedback
settings and the tuning constants (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

MIN_THRESHOLD_GAP = 0.001
"""Smallest distance kept between two cut points of a context (they must strictly increase)."""

Direction = Literal["up", "down"]
ChangeKind = Literal["replicas", "thresholds", "spend"]


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TierPolicy:
    name: str
    min_replicas: int
    max_replicas: int
    gpus_per_replica: float = 1.0
    sleep_after_seconds: float | None = None
    """With ``min_replicas`` 0: how long the tier must see no request at all (answered, queued,
    running or wanted while asleep) before it goes to zero. None: it never sleeps."""

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < self.min_replicas:
            raise ValueError(
                f"tier {self.name!r}: replicas bounds [{self.min_replicas}, "
                f"{self.max_replicas}] are not a valid range"
            )
        if self.sleep_after_seconds is not None and (
            self.min_replicas > 0 or self.sleep_after_seconds <= 0
        ):
            raise ValueError(
                f"tier {self.name!r}: sleep_after_seconds needs min_replicas 0 and a positive "
                "period"
            )

    @property
    def may_sleep(self) -> bool:
        return self.sleep_after_seconds is not None
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
    """How long a learned pressure point is trusted; after that it no longer anticipates
    (scale-up before a queue) or keeps headroom, and scale-downs fall back to the KV-cache or
    queue-target checks, except that none goes back to the load at which pressure was seen."""
    metrics_window_seconds: float = 120.0
    """Window of the rate and TTFT queries: TTFT stays high for this long after a queue drained."""
    spend_caps: Mapping[str, float] = field(default_factory=dict)
    """Spend cap per hour of external tiers (``maxCostPerHour``), by tier name. External tiers
    are not in ``tiers``: the loop scales none of them."""

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
