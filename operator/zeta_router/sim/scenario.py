"""A simulation scenario: tiers (spec bounds + performance model + quality model), contexts,
and the autoscaling settings, as a YAML-loadable pydantic model with a realistic default.

The spec part maps onto the same `PolicyConfig` the operator builds from a ZetaRouter, so the
simulator exercises the operator's policy unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zeta_router.autoscale.policy import ContextPolicy, FeedbackPolicy, PolicyConfig, TierPolicy
from zeta_router.sim.trace import ContextMix


class ScenarioError(ValueError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimTier(_Model):
    """One tier: spec bounds, speed of one replica, start-up delay, and answer quality."""

    name: str
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=8, ge=1)
    initial_replicas: int = Field(default=1, ge=0)
    gpus_per_replica: float = Field(default=1.0, ge=0)
    engine: Literal["vllm", "llamacpp"] = "vllm"
    prefill_tokens_per_second: float = Field(default=5000.0, gt=0)
    decode_tokens_per_second: float = Field(
        default=40.0, gt=0, description="Per sequence, on an otherwise idle replica."
    )
    concurrency: int = Field(default=16, ge=1, description="Sequences one replica runs at once.")
    batch_slowdown: float = Field(
        default=0.5,
        ge=0,
        description="Decode speed lost at a full batch (0.5: half speed), linear in occupancy.",
    )
    startup_seconds: float = Field(default=120.0, ge=0)
    sleep_after_seconds: float | None = Field(
        default=None,
        gt=0,
        description="With min_replicas 0: idle time after which the tier sleeps at zero "
        "(replicas.sleepAfter). None: it never sleeps.",
    )
    quality_intercept: float = Field(default=0.9, ge=0, le=1)
    quality_slope: float = Field(
        default=0.3,
        ge=0,
        description="P(correct answer) = intercept - slope * score: harder requests fail more.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.sleep_after_seconds is not None and self.min_replicas > 0:
            raise ValueError(f"tier {self.name}: sleep_after_seconds needs min_replicas 0")
        if not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError(
                f"tier {self.name}: need min {self.min_replicas} <= initial "
                f"{self.initial_replicas} <= max {self.max_replicas}"
            )
        return self

    @property
    def may_sleep(self) -> bool:
        return self.sleep_after_seconds is not None

    def p_correct(self, score: float) -> float:
        return min(1.0, max(0.0, self.quality_intercept - self.quality_slope * score))


class SimExternal(_Model):
    """An external provider as an overflow-only tier (``tiers[].external`` with
    ``overflowOnly``): no replicas or GPUs, a fixed time to first token, a price per token, and
    a request only when every tier of the cluster refused it."""

    name: str = "hosted"
    ttft_seconds: float = Field(default=0.8, ge=0, description="The provider's TTFT.")
    prompt_cost_per_1k_tokens: float = Field(default=0.0, ge=0)
    completion_cost_per_1k_tokens: float = Field(default=0.0, ge=0)
    max_cost_per_hour: float | None = Field(
        default=None, gt=0, description="The spend cap (external.maxCostPerHour); None: none."
    )
    refuse_queue_per_replica: float = Field(
        default=8.0,
        gt=0,
        description="A tier of the cluster refuses a request (429, which fails over) once its "
        "queue holds this many per ready replica, or while it has none ready: the model "
        "servers' own queue bound. Only with an external tier; without one requests queue.",
    )
    quality_intercept: float = Field(default=0.92, ge=0, le=1)
    quality_slope: float = Field(default=0.15, ge=0)

    def p_correct(self, score: float) -> float:
        return min(1.0, max(0.0, self.quality_intercept - self.quality_slope * score))

    def cost(self, prompt_tokens: float, output_tokens: float) -> float:
        return (
            prompt_tokens * self.prompt_cost_per_1k_tokens
            + output_tokens * self.completion_cost_per_1k_tokens
        ) / 1000.0


class SimContext(_Model):
    name: str
    thresholds: list[float]
    lower: float = Field(default=0.0, ge=0, le=1)
    upper: float = Field(default=1.0, ge=0, le=1)
    weight: float = Field(default=1.0, gt=0, description="Share of the traffic (relative).")
    score_alpha: float = Field(default=2.0, gt=0)
    score_beta: float = Field(default=3.0, gt=0)


class Scenario(_Model):
    tiers: list[SimTier] = Field(min_length=1)
    contexts: list[SimContext] = Field(min_length=1)
    interval_seconds: float = Field(default=30.0, gt=0)
    metrics_window_seconds: float = Field(default=60.0, gt=0)
    target_queue_per_replica: float = Field(default=4.0, gt=0)
    target_ttft_p90_seconds: float = Field(default=2.0, gt=0)
    scale_down_delay_seconds: float = Field(default=300.0, ge=0)
    max_gpus: float | None = Field(default=None, gt=0)
    load_shift: bool = True
    shadow_sample_rate: float = Field(default=0.1, ge=0, le=1)
    feedback_enabled: bool = False
    target_large_share: float | None = Field(default=None, ge=0, le=1)
    quality_floor: float | None = Field(default=None, ge=0, le=1)
    threshold_step: float = Field(default=0.02, gt=0, le=0.5)
    feedback_min_samples: int = Field(default=200, ge=1)
    when_asleep: Literal["fallback", "wait"] = Field(
        default="fallback",
        description="What requests for a sleeping tier do (every context's whenAsleep).",
    )
    wait_seconds: float = Field(default=60.0, gt=0, description="whenAsleep wait: the bound.")
    wake_seconds: float = Field(
        default=2.0,
        ge=0,
        description="From the first request wanting a sleeping tier to the operator scaling it "
        "from zero (it reads the routers every 2s).",
    )
    external: SimExternal | None = Field(
        default=None,
        description="An external provider above the tiers, as overflow only (see SimExternal).",
    )
    wake_notice_seconds: float = Field(
        default=60.0,
        ge=0,
        description="From a woken tier's first ready replica to the routers sending it "
        "requests: the routing ConfigMap's update reaching the pods' mounted file (the "
        "kubelet's sync period, about a minute).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tier names {names}")
        for c in self.contexts:
            if len(c.thresholds) != len(self.tiers) - 1:
                raise ValueError(
                    f"context {c.name}: {len(self.tiers)} tiers need {len(self.tiers) - 1} "
                    f"thresholds, got {len(c.thresholds)}"
                )
            if any(b <= a for a, b in zip(c.thresholds, c.thresholds[1:], strict=False)):
                raise ValueError(f"context {c.name}: thresholds must strictly increase")
            if any(not c.lower <= t <= c.upper for t in c.thresholds):
                raise ValueError(f"context {c.name}: thresholds must lie in [lower, upper]")
        return self

    @property
    def slo_seconds(self) -> float:
        """A request meets the SLO when its TTFT is within the TTFT target."""
        return self.target_ttft_p90_seconds

    def policy_config(self) -> PolicyConfig:
        return PolicyConfig(
            tiers=tuple(
                TierPolicy(
                    t.name,
                    t.min_replicas,
                    t.max_replicas,
                    t.gpus_per_replica,
                    t.sleep_after_seconds,
                )
                for t in self.tiers
            ),
            contexts=tuple(
                ContextPolicy(c.name, tuple(c.thresholds), c.lower, c.upper) for c in self.contexts
            ),
            target_queue_per_replica=self.target_queue_per_replica,
            target_ttft_p90_seconds=self.target_ttft_p90_seconds,
            scale_down_delay_seconds=self.scale_down_delay_seconds,
            max_gpus=self.max_gpus,
            load_shift=self.load_shift,
            spend_caps=(
                {self.external.name: self.external.max_cost_per_hour}
                if self.external is not None and self.external.max_cost_per_hour is not None
                else {}
            ),
            feedback=FeedbackPolicy(
                enabled=self.feedback_enabled,
                target_large_share=self.target_large_share,
                quality_floor=self.quality_floor,
                threshold_step=self.threshold_step,
                min_samples=self.feedback_min_samples,
            ),
        )

    def context_mix(self) -> list[ContextMix]:
        return [ContextMix(c.name, c.weight, c.score_alpha, c.score_beta) for c in self.contexts]


def default_scenario() -> Scenario:
    """The canonical pair: a 7B and a 14B model on one GPU each (vLLM), two contexts.

    Speeds are round figures for one recent data-centre GPU; the quality model makes the small
    tier 11 points worse on average, most of it on high-score (hard) requests, like the
    weak/strong pair of the routing evaluation data (70.7 % vs 81.8 % on MMLU)."""
    return Scenario(
        tiers=[
            SimTier(
                name="small",
                min_replicas=1,
                max_replicas=8,
                initial_replicas=2,
                gpus_per_replica=1,
                prefill_tokens_per_second=6000,
                decode_tokens_per_second=50,
                concurrency=24,
                startup_seconds=120,
                quality_intercept=0.90,
                quality_slope=0.45,
            ),
            SimTier(
                name="large",
                min_replicas=1,
                max_replicas=8,
                initial_replicas=2,
                gpus_per_replica=1,
                prefill_tokens_per_second=3000,
                decode_tokens_per_second=30,
                concurrency=16,
                startup_seconds=180,
                quality_intercept=0.90,
                quality_slope=0.20,
            ),
        ],
        contexts=[
            SimContext(name="ZetaHRM", thresholds=[0.5], lower=0.35, upper=0.7, weight=0.6),
            SimContext(
                name="ZetaTRM",
                thresholds=[0.55],
                lower=0.4,
                upper=0.75,
                weight=0.4,
                score_alpha=2.5,
                score_beta=3.0,
            ),
        ],
    )


def load_scenario(path: Path) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping (tiers, contexts, ...)")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ScenarioError(f"{path}: {problems}") from None
