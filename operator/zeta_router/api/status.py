"""The ZetaRouter status: what the operator and its control loop observed and decided.

The status is written by the operator itself (see ``zeta_router.controller.status`` for the
merge rules); reading it is lenient: :func:`parse_status` never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from zeta_router.api.fields import FreeForm


class _Status(BaseModel):
    # Status is written by the operator itself; reading it must survive older or newer writers.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Condition(_Status):
    """A status condition (SpecValid, Ready, Progressing, Degraded, MetricsAvailable)."""

    type: str = Field(description="Condition type.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(default=None, description="One-word CamelCase reason.")
    message: str | None = Field(default=None, description="Human-readable details.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed from."
    )


class TierSleep(_Status):
    """When a tier that may sleep (replicas.min 0) last went to zero replicas or woke, and why."""

    state: Literal["Asleep", "Awake"] = Field(
        description="Asleep: at zero replicas (requests for it are answered per their "
        "context's whenAsleep, and wake it). Awake: woken (routers send it requests once a "
        "replica is ready)."
    )
    since: str | None = Field(default=None, description="When it changed (RFC 3339).")
    reason: str | None = Field(
        default=None, description="Why: the idle period it slept after, or what woke it."
    )


class TierStatus(_Status):
    """Observed state of one tier."""

    name: str = Field(description="Tier name.")
    replicas: int | None = Field(default=None, description="Replicas of the tier's Deployment.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas.")
    updated_replicas: int | None = Field(
        default=None, description="Replicas that run the tier's current pod template."
    )
    rollout: str | None = Field(
        default=None,
        description="Current: every pod runs the tier's current pod template. RollingOut: its "
        "pods are being replaced by pods of a new template. Waiting: a new template waits until "
        "the tier rolling out now is rolled out and ready (tiers change one at a time).",
    )
    desired_replicas: int | None = Field(
        default=None,
        description="Replicas the control loop chose (applied in apply mode, only reported in "
        "advisory mode).",
    )
    sleep: TierSleep | None = Field(
        default=None,
        description="Only for a tier that has slept: its last sleep or wake (Events TierSlept "
        "and TierWoken say the same).",
    )


class ExternalTierStatus(_Status):
    """An external tier's spend, as the control loop estimates it, and its pause."""

    name: str = Field(description="Tier name.")
    cost_per_hour: float | None = Field(
        default=None,
        description="Estimated spend per hour (the routers' zeta_router_cost_total, rate over "
        "the loop's window x 3600), in the tier's prices' unit; absent: no data.",
    )
    max_cost_per_hour: float | None = Field(
        default=None, description="The tier's spend cap (external.maxCostPerHour)."
    )
    paused: bool = Field(
        default=False,
        description="The routers send the tier nothing: its spend went over maxCostPerHour "
        "(Events ExternalTierPaused and ExternalTierResumed say when, with the figures).",
    )
    since: str | None = Field(
        default=None, description="When it was last paused or resumed (RFC 3339)."
    )
    reason: str | None = Field(default=None, description="Why, with the figures.")


class Decision(_Status):
    """The control loop's last decision."""

    time: str | None = Field(default=None, description="When it was made (RFC 3339).")
    action: str | None = Field(
        default=None, description="What changed, e.g. 'scale large 2->3' or 'none'."
    )
    reason: str | None = Field(default=None, description="Why, in one line.")


class ContextLearningStatus(_Status):
    """What the learner knows and did for one context."""

    name: str = Field(description="Context name.")
    source: str | None = Field(
        default=None,
        description="The model routers use: prior (no correction), learned (adopted from "
        "labels) or rolled-back (spec.learning.model is prior).",
    )
    model_id: str | None = Field(default=None, description="Id of the adopted correction.")
    labels: int | None = Field(default=None, description="Labels held for this context.")
    model_labels: int | None = Field(
        default=None, description="Labels the adopted correction was learned from."
    )
    apgr_before: float | None = Field(
        default=None, description="Held-out APGR of the model in use at the last refit."
    )
    apgr_after: float | None = Field(
        default=None, description="Held-out APGR of the candidate at the last refit."
    )
    held_out: int | None = Field(default=None, description="Labels held out at the last refit.")
    verdict: str | None = Field(
        default=None,
        description="Last refit: adopted, refused, recommended (advisory), or waiting.",
    )
    message: str | None = Field(default=None, description="Why, in one line.")
    last_refit: str | None = Field(default=None, description="When (RFC 3339).")
    adopted_at: str | None = Field(default=None, description="When the model was adopted.")


class LearningStatus(_Status):
    """The learner's state (``status.learning``)."""

    mode: str | None = Field(default=None, description="advisory or apply.")
    last_collection: str | None = Field(
        default=None, description="When labels were last collected (RFC 3339)."
    )
    routers: str | None = Field(
        default=None, description="Routers reached at the last collection, e.g. 3/3."
    )
    contexts: list[ContextLearningStatus] = Field(
        default_factory=list, description="Per learning context."
    )


class ZetaRouterStatus(_Status):
    """Observed state of a ZetaRouter, written by the operator and its control loop."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="SpecValid, Ready, Progressing, Degraded (operator) and MetricsAvailable "
        "(control loop).",
    )
    tiers: list[TierStatus] = Field(default_factory=list, description="Per-tier state.")
    thresholds: dict[str, list[float]] | None = Field(
        default=None,
        description="Cut points per context that the routers are running now (set by the "
        "control loop in apply mode, else the spec's).",
    )
    thresholds_from: dict[str, list[float]] | None = Field(
        default=None,
        description="The spec's cut points per context when the control loop chose "
        "thresholds. A context whose spec thresholds have changed since runs the spec's new "
        "values, and the loop carries on from them.",
    )
    routing_generation: int | None = Field(
        default=None, description="generation of the routing ConfigMap's configuration."
    )
    ready_summary: str | None = Field(
        default=None, description="Tiers with a ready replica over all tiers, e.g. 2/2."
    )
    thresholds_summary: str | None = Field(
        default=None, description="The thresholds in one line, e.g. ZetaHRM=0.4 default=0.5."
    )
    external: list[ExternalTierStatus] | None = Field(
        default=None,
        description="External tiers, while the control loop runs: estimated spend per hour "
        "and whether each is paused for its spend cap.",
    )
    last_decision: Decision | None = Field(
        default=None, description="The control loop's last decision."
    )
    loop_state: FreeForm | None = Field(
        default=None,
        description="The control loop's memory between intervals (internal; free-form).",
    )
    learning: LearningStatus | None = Field(
        default=None, description="What the learner knows and did, per context."
    )


def parse_status(body: Mapping[str, Any]) -> ZetaRouterStatus:
    """The status of a ZetaRouter object; an unreadable status reads as empty (never raises),
    and unreadable parts (a malformed condition or tier entry) are dropped."""
    raw = body.get("status")
    if not isinstance(raw, Mapping):
        return ZetaRouterStatus()
    try:
        return ZetaRouterStatus.model_validate(dict(raw))
    except ValidationError:
        pass
    cleaned: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            ZetaRouterStatus.model_validate({key: value})
        except ValidationError:
            if isinstance(value, list):
                item_model = _STATUS_LISTS.get(str(key))
                if item_model is not None:
                    cleaned[key] = [v for v in value if _valid(item_model, v)]
            continue
        cleaned[key] = value
    return ZetaRouterStatus.model_validate(cleaned)


_STATUS_LISTS: dict[str, type[_Status]] = {"conditions": Condition, "tiers": TierStatus}


def _valid(model: type[_Status], value: object) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True
