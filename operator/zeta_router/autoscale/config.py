"""From a validated ZetaRouter spec (`zeta_router.api.models.ZetaRouterSpec`) to the control
loop's settings: the policy configuration, which Prometheus to ask, how often, and what about.

Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from zeta_router.api.models import ZetaRouterSpec, duration_seconds
from zeta_router.autoscale.metrics import RouterTarget, TierTarget
from zeta_router.autoscale.policy import ContextPolicy, FeedbackPolicy, PolicyConfig, TierPolicy

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
    target: RouterTarget
    spec_thresholds: Mapping[str, tuple[float, ...]]

    @property
    def applies(self) -> bool:
        return self.mode == "apply"


def settings_from_spec(namespace: str, name: str, spec: ZetaRouterSpec) -> LoopSettings:
    auto = spec.autoscaling
    fb = spec.feedback
    interval = max(auto.interval_seconds, 1.0)
    window = max(MIN_WINDOW, 2 * interval)
    contexts = []
    spec_thresholds: dict[str, tuple[float, ...]] = {}
    for ctx in spec.contexts:
        cuts = tuple(ctx.thresholds or ())
        lower, upper = fb.bounds_for(ctx.name)
        contexts.append(ContextPolicy(ctx.name, cuts, lower, upper))
        spec_thresholds[ctx.name] = cuts
    policy = PolicyConfig(
        tiers=tuple(
            TierPolicy(
                t.name,
                t.replicas.min,
                t.replicas.maximum,
                t.gpus_per_replica,
                t.replicas.sleep_after_seconds if t.replicas.may_sleep else None,
            )
            for t in spec.tiers
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
            tiers=tuple(TierTarget(t.name, t.engine) for t in spec.tiers),
            contexts=tuple(c.name for c in contexts),
        ),
        spec_thresholds=spec_thresholds,
    )
