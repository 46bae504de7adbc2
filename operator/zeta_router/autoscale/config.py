"""From a validated ZetaRouter spec (`zeta_router.api.models.ZetaRouterSpec`) to the control
loop's settings: the policy configuration, which Prometheus to ask, how often, and what about.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from zeta_router.api.models import ZetaRouterSpec, duration_seconds
from zeta_router.autoscale.metrics import RouterTarget, TierTarget
from zeta_router.autoscale.policy import (
    MIN_THRESHOLD_GAP,
    ContextPolicy,
    FeedbackPolicy,
    PolicyConfig,
    TierPolicy,
)

MIN_WINDOW = 60.0
"""Shortest window of the rate and TTFT queries (a minute of samples)."""


@dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


@dataclass(frozen=True)
class LoopSettings:
    enabled: bool
    """The loop runs (autoscaling or feedback enabled)."""
    scales_replicas: bool
    """Autoscaling is enabled: the loop decides replicas (feedback alone only moves thresholds)."""
    mode: Literal["apply", "advisory"]
    interval_seconds: float
    window_seconds: float
    prometheus_url: str | None
    prometheus_timeout: float
    auth_secret: SecretRef | None
    policy: PolicyConfig
    """Over the tiers the operator runs only: external tiers have no replicas to scale."""
    target: RouterTarget
    spec_thresholds: Mapping[str, tuple[float, ...]]
    """Every cut point of each context as the spec sets them (external tiers' included)."""
    spend_caps: Mapping[str, float] = field(default_factory=dict)
    """``maxCostPerHour`` of each external tier that has one."""

    @property
    def applies(self) -> bool:
        return self.mode == "apply"

    def loop_cuts(self, cuts: Sequence[float]) -> tuple[float, ...]:
        """The cut points the loop moves: those between the tiers the operator runs (external
        tiers sit above them all, so these are the first ones)."""
        return tuple(cuts[: len(self.policy.tiers) - 1])

    def full_cuts(self, context: str, loop_cuts: Sequence[float]) -> list[float]:
        """The loop's cut points of ``context`` followed by the spec's cut points into the
        external tiers, which the loop never moves."""
        spec = self.spec_thresholds.get(context, ())
        return [*loop_cuts, *spec[len(self.policy.tiers) - 1 :]]


def settings_from_spec(namespace: str, name: str, spec: ZetaRouterSpec) -> LoopSettings:
    auto = spec.autoscaling
    fb = spec.feedback
    interval = max(auto.interval_seconds, 1.0)
    window = max(MIN_WINDOW, 2 * interval)
    served = spec.served_tiers  # external tiers, when any, come after all of these
    boundaries = len(served) - 1
    contexts = []
    spec_thresholds: dict[str, tuple[float, ...]] = {}
    for ctx in spec.contexts:
        cuts = tuple(ctx.thresholds or ())
        lower, upper = fb.bounds_for(ctx.name)
        if len(cuts) > boundaries and boundaries > 0:
            # The cut point into the first external tier stays as written: the loop's own stay
            # below it (and strictly increasing with it).
            upper = max(min(upper, cuts[boundaries] - MIN_THRESHOLD_GAP), cuts[boundaries - 1])
        contexts.append(ContextPolicy(ctx.name, cuts[: max(boundaries, 0)], lower, upper))
        spec_thresholds[ctx.name] = cuts
    caps = {
        t.name: t.external.max_cost_per_hour
        for t in spec.tiers
        if t.external is not None and t.external.max_cost_per_hour is not None
    }
    policy = PolicyConfig(
        tiers=tuple(
            TierPolicy(
                t.name,
                t.replicas.min,
                t.replicas.maximum,
                t.gpus_per_replica,
                t.replicas.sleep_after_seconds if t.replicas.may_sleep else None,
            )
            for t in served
        ),
        contexts=tuple(contexts),
        target_queue_per_replica=auto.targets.queue_per_replica,
        target_ttft_p90_seconds=auto.targets.ttft_p90_seconds,
        scale_down_delay_seconds=auto.scale_down_delay_seconds,
        max_gpus=None if auto.max_gpus is None else float(auto.max_gpus),
        # Shifting load is the coupling of routing with scaling: it needs the autoscaler.
        load_shift=auto.enabled,
        feedback=FeedbackPolicy(
            enabled=fb.enabled,
            target_large_share=fb.target_large_share,
            quality_floor=fb.quality_floor,
            threshold_step=fb.threshold_step,
            min_samples=fb.min_samples,
        ),
        metrics_window_seconds=window,
        spend_caps=caps,
    )
    ref = auto.prometheus.auth_secret_ref
    return LoopSettings(
        enabled=spec.loop_enabled,
        scales_replicas=auto.enabled,
        mode=auto.mode,
        interval_seconds=interval,
        window_seconds=window,
        prometheus_url=auto.prometheus.url,
        prometheus_timeout=duration_seconds(auto.prometheus.timeout),
        auth_secret=SecretRef(ref.name, ref.key) if ref is not None else None,
        policy=policy,
        target=RouterTarget(
            namespace=namespace,
            name=name,
            tiers=tuple(TierTarget(t.name, t.engine) for t in served),
            contexts=tuple(c.name for c in contexts),
            external=tuple(t.name for t in spec.tiers if t.external is not None),
        ),
        spec_thresholds=spec_thresholds,
        spend_caps=caps,
    )
