"""What a ZetaRouter's children should be, given the object, its live children, the operator's
settings and, when the control loop has just decided, its choice (pure).

The render functions (``zeta_router.render``) turn a parsed spec into manifests; this module
adds the controller's decisions around them:

- the replica count of each tier (``controller.replicas``: ``initial`` on creation, then the
  user's number within [min, max], or the control loop's choice when it owns replicas);
- the thresholds: the control loop's (``status.thresholds``, or a :class:`LoopChoice` made just
  now), or the spec's (decided by ``render.configmap.effective_thresholds``);
- which tiers get a new pod template now and which keep theirs until the tier rolling out is
  settled (``controller.rollout``);
- whether the ZetaRouter gets a NetworkPolicy (an operator setting);
- whether the installer's pod policy (``api.pod_policy``) allows it at all: a ZetaRouter that
  breaks it raises :class:`~zeta_router.api.pod_policy.PolicyError` (a :class:`SpecError`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zeta_router.api import defaults
from zeta_router.api.models import (
    ExternalTierStatus,
    SpecError,
    TierStatus,
    ZetaRouterStatus,
    parse_status,
    parse_zetarouter,
)
from zeta_router.api.pod_policy import PodPolicy, PolicyError, enforce
from zeta_router.api.routing import LearnedCorrection
from zeta_router.controller import rollout
from zeta_router.controller.replicas import ReplicaBounds, desired_replicas
from zeta_router.render import names
from zeta_router.render.children import loop_desired_replicas, render
from zeta_router.render.configmap import asleep_tiers, paused_tiers
from zeta_router.render.networkpolicy import build_network_policy

__all__ = ["Desired", "LoopChoice", "PolicyError", "RenderSettings", "SpecError", "compute"]


@dataclass(frozen=True)
class RenderSettings:
    """The operator's settings that shape every ZetaRouter's children."""

    router_image: str = defaults.ROUTER_IMAGE
    network_policy: bool = False
    """Render a NetworkPolicy per ZetaRouter (only its own routers, and ``scrapers``, reach the
    model servers)."""
    scrapers: tuple[Mapping[str, Any], ...] = ()
    """NetworkPolicy peers that scrape metrics (the chart's ``networkPolicy.metricsFrom``)."""
    operators: tuple[Mapping[str, Any], ...] = ()
    """NetworkPolicy peers of the operator's own pods (its learner reads the routers' admin
    port)."""
    pdb_api_version: str = names.PDB.api_version
    """The PodDisruptionBudget API the cluster serves (``policy/v1``, or ``policy/v1beta1`` on
    Kubernetes 1.20 and older; the reconciler asks discovery)."""
    pod_policy: PodPolicy = field(default_factory=PodPolicy)
    """What a ZetaRouter may put into pods (the installer's policy)."""


@dataclass(frozen=True)
class LoopChoice:
    """What the control loop chose this interval, for the reconciliation that applies it."""

    replicas: Mapping[str, int] | None
    """Replicas per tier; None when the loop does not own replicas."""
    thresholds: Mapping[str, Sequence[float]] | None
    """Cut points per context; None when the loop does not own thresholds."""
    thresholds_from: Mapping[str, Sequence[float]]
    """The spec's cut points the choice started from (``status.thresholdsFrom``)."""
    status_fields: Callable[[int], dict[str, Any]]
    """The loop's status fields, given the routing generation that was rendered."""
    conditions: tuple[Mapping[str, Any], ...] = ()
    tier_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """More status fields per tier (e.g. ``sleep``), written with ``desiredReplicas``."""
    external: Sequence[Mapping[str, Any]] | None = None
    """``status.external`` as the loop records it (external tiers' spend, which are paused)."""


@dataclass(frozen=True)
class Desired:
    children: list[dict[str, Any]]
    tier_deployments: dict[str, str]  # tier name -> Deployment name, in tier order
    routing_generation: int
    status_fields: dict[str, Any] = field(default_factory=dict)
    rollout: dict[str, rollout.TierRollout] = field(default_factory=dict)


def _live_replicas(deployment: Mapping[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    value = (deployment.get("spec") or {}).get("replicas")
    return int(value) if value is not None else 1  # the apiserver's default


def _ready_replicas(deployment: Mapping[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    return int((deployment.get("status") or {}).get("readyReplicas") or 0)


def with_loop_choice(status: ZetaRouterStatus, choice: LoopChoice | None) -> ZetaRouterStatus:
    """``status`` as it will be once ``choice`` is recorded (what render reads of the loop)."""
    if choice is None:
        return status
    update: dict[str, Any] = {}
    if choice.external is not None:
        update["external"] = [ExternalTierStatus.model_validate(e) for e in choice.external]
    if choice.thresholds is not None:
        update["thresholds"] = {k: list(v) for k, v in choice.thresholds.items()}
        update["thresholds_from"] = {k: list(v) for k, v in choice.thresholds_from.items()}
    if choice.replicas is not None:
        tiers = {t.name: t for t in status.tiers}
        for name, n in choice.replicas.items():
            old = tiers.get(name) or TierStatus(name=name)
            tiers[name] = old.model_copy(update={"desired_replicas": n})
        update["tiers"] = list(tiers.values())
    return status.model_copy(update=update)


def compute(
    body: Mapping[str, Any],
    live_deployments: Mapping[str, Mapping[str, Any]],
    live_configmaps: Mapping[str, Mapping[str, Any]],
    settings: RenderSettings | None = None,
    loop: LoopChoice | None = None,
    learned: Mapping[str, LearnedCorrection] | None = None,
    secret_annotations: Mapping[str, Mapping[str, str] | None] | None = None,
) -> Desired:
    """The children of ``body`` (a ZetaRouter object). ``live_*``: its live children of that
    kind by name. ``learned``: the learner's store (``render.learned.parse_model_store``).
    ``secret_annotations``: the annotations of the Secrets the spec names
    (``api.pod_policy.referenced_secrets``; None: not found or unreadable), for the pod policy.
    Raises :class:`SpecError` for a spec that cannot be used, :class:`PolicyError` for one the
    pod policy refuses."""
    cfg = settings or RenderSettings()
    spec = parse_zetarouter(body)
    status = with_loop_choice(parse_status(body), loop)
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    loop_replicas = loop_desired_replicas(status)
    replicas = {
        t.name: desired_replicas(
            ReplicaBounds(t.replicas.min, t.replicas.maximum, t.replicas.start),
            _live_replicas(live_deployments.get(names.tier_object_name(name, t.name))),
            spec.loop_owns_replicas,
            loop_replicas.get(t.name),
        )
        for t in spec.served_tiers
    }
    ready = {
        t.name: _ready_replicas(live_deployments.get(names.tier_object_name(name, t.name)))
        for t in spec.tiers
    }
    out = render(
        name,
        namespace,
        spec,
        status,
        live_configmap=live_configmaps.get(names.routing_configmap_name(name)),
        replicas=replicas,
        router_image=cfg.router_image,
        learned=learned,
        pdb_api_version=cfg.pdb_api_version,
        asleep=asleep_tiers(spec, replicas, ready),
        paused=paused_tiers(spec, status),
    )
    enforce(name, spec, out.children, cfg.pod_policy, secret_annotations or {})
    children = list(out.children)
    if cfg.network_policy:
        children.append(build_network_policy(name, cfg.scrapers, cfg.operators))

    # One tier's template at a time (see controller.rollout).
    index = {c["metadata"]["name"]: i for i, c in enumerate(children) if c["kind"] == "Deployment"}
    wanted = {tier: children[index[dep]] for tier, dep in out.tier_deployments.items()}
    live = {tier: live_deployments.get(dep) for tier, dep in out.tier_deployments.items()}
    plan = rollout.plan(list(out.tier_deployments), wanted, live)
    for tier, decision in plan.items():
        i = index[out.tier_deployments[tier]]
        live_dep = live[tier]
        if decision.action == "hold" and live_dep is not None:
            children[i] = rollout.held(children[i], live_dep, names.FIELD_MANAGER)
        elif decision.change:
            children[i] = rollout.with_change_note(children[i], decision.change)
    return Desired(
        children=children,
        tier_deployments=out.tier_deployments,
        routing_generation=out.routing.generation,
        status_fields=out.status_fields,
        rollout=plan,
    )
