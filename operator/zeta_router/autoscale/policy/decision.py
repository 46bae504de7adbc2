"""What one interval decided: replicas, thresholds, the changes with their reasons, and the
next state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from zeta_router.autoscale.policy.config import ChangeKind, Direction
from zeta_router.autoscale.policy.state import PolicyState


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    target: str
    """Tier name (replicas, spend) or context name (thresholds)."""
    direction: Direction
    """spend: down pauses an external tier, up resumes it."""
    old: tuple[float, ...]
    new: tuple[float, ...]
    """spend: old is the estimated spend per hour, new the cap."""
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
    spend_per_hour: Mapping[str, float] = field(default_factory=dict)
    """External tiers' estimated spend per hour this interval (absent: no data)."""

    @property
    def paused(self) -> frozenset[str]:
        """External tiers paused for their spend cap."""
        return frozenset(self.state.paused)

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
