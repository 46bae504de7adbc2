"""How many replicas each tier's Deployment should have (pure).

- A Deployment being created starts at the tier's ``replicas.initial``.
- Afterwards the count belongs to whoever scales the tier: with autoscaling in ``apply`` mode,
  the control loop, whose choice is recorded in ``status.tiers[].desiredReplicas``; otherwise
  the user (``kubectl scale``, GitOps), whose number is kept as long as it is within
  ``[replicas.min, replicas.max]`` and clamped into it otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaBounds:
    min: int
    max: int
    initial: int


def clamp(value: int, bounds: ReplicaBounds) -> int:
    return max(bounds.min, min(bounds.max, value))


def desired_replicas(
    bounds: ReplicaBounds,
    live: int | None,
    loop_owns_replicas: bool,
    loop_desired: int | None,
) -> int:
    """``live``: the Deployment's current ``spec.replicas`` (``None`` when it does not exist);
    ``loop_owns_replicas``: autoscaling is enabled in apply mode; ``loop_desired``: the loop's
    recorded choice for the tier, if any."""
    if loop_owns_replicas and loop_desired is not None:
        return clamp(loop_desired, bounds)
    if live is None:
        return clamp(bounds.initial, bounds)
    return clamp(live, bounds)
