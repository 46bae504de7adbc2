"""All children of one ZetaRouter, in one pure call.

:func:`render` is what the controller calls after parsing::

    spec = parse_zetarouter(body)                 # SpecError: invalid, change nothing
    status = parse_status(body)
    out = render(name, namespace, spec, status,
                 live_configmap=live_cm,            # the live <name>-routing, or None
                 replicas={"small": 2, "large": 1}, # chosen by the controller
                 router_image=operator_image)
    out.children        # ConfigMap, then per tier Deployment + Services (+ PodDisruptionBudget),
                        # then the entry Service
    out.status_fields   # thresholds, thresholdsSummary, routingGeneration for the status

Replica counts are an input: who owns them (the user within [min, max], or the control loop
through ``status.tiers[].desiredReplicas``) is the controller's decision. Thresholds come from
:func:`~zeta_router.render.configmap.effective_thresholds` (the loop's while it owns them).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeta_router.api import defaults
from zeta_router.api.models import ZetaRouterSpec, ZetaRouterStatus
from zeta_router.api.routing import LearnedCorrection, RoutingConfig
from zeta_router.render import names
from zeta_router.render.configmap import (
    build_configmap,
    build_routing_config,
    effective_thresholds,
    routing_generation,
    routing_status_fields,
)
from zeta_router.render.deployment import build_deployment
from zeta_router.render.disruption import build_pdb
from zeta_router.render.learned import effective_corrections
from zeta_router.render.services import (
    build_entry_service,
    build_tier_replicas_service,
    build_tier_service,
)


@dataclass(frozen=True)
class Rendered:
    """What a ZetaRouter's children should be."""

    children: list[dict[str, Any]]
    routing: RoutingConfig
    tier_deployments: dict[str, str]
    """Tier name -> Deployment name, in tier order (external tiers have none)."""
    status_fields: dict[str, Any] = field(default_factory=dict)
    """Status fields describing what was rendered (``thresholds``, ``thresholdsSummary``,
    ``routingGeneration``)."""


def initial_replicas(spec: ZetaRouterSpec) -> dict[str, int]:
    """Each tier's ``replicas.initial`` (resolved); external tiers have none."""
    return {t.name: t.replicas.start for t in spec.served_tiers}


def loop_desired_replicas(status: ZetaRouterStatus | None) -> dict[str, int]:
    """The control loop's choices recorded in ``status.tiers[].desiredReplicas``."""
    if status is None:
        return {}
    return {t.name: t.desired_replicas for t in status.tiers if t.desired_replicas is not None}


def build_children(
    name: str,
    spec: ZetaRouterSpec,
    routing: RoutingConfig,
    replicas: Mapping[str, int] | None = None,
    router_image: str = defaults.ROUTER_IMAGE,
    pdb_api_version: str = names.PDB.api_version,
) -> list[dict[str, Any]]:
    """Every child: the routing ConfigMap (holding ``routing``), then per tier its Deployment,
    its two Services and its PodDisruptionBudget (unless the tier turns it off), then the entry
    Service. A tier missing from ``replicas`` gets its initial count. An external tier has no
    child of its own (only its entry in the routing configuration)."""
    counts = {**initial_replicas(spec), **(replicas or {})}
    out = [build_configmap(name, routing)]
    for tier in spec.served_tiers:
        out.append(build_deployment(name, spec, tier, counts[tier.name], router_image))
        out.append(build_tier_service(name, tier, spec))
        out.append(build_tier_replicas_service(name, tier))
        if tier.disruption_budget.enabled:
            out.append(build_pdb(name, tier, counts[tier.name], pdb_api_version))
    out.append(build_entry_service(name, spec))
    return out


def render(
    name: str,
    namespace: str,
    spec: ZetaRouterSpec,
    status: ZetaRouterStatus | None = None,
    *,
    live_configmap: Mapping[str, Any] | None = None,
    replicas: Mapping[str, int] | None = None,
    router_image: str = defaults.ROUTER_IMAGE,
    learned: Mapping[str, LearnedCorrection] | None = None,
    pdb_api_version: str = names.PDB.api_version,
    asleep: Collection[str] = (),
    paused: Collection[str] = (),
) -> Rendered:
    """The children of ZetaRouter ``namespace/name`` (see the module docstring). ``learned``:
    the corrections in the learner's store (``render.learned.parse_model_store``).
    ``asleep``: the tiers the routers treat as asleep (``render.configmap.asleep_tiers``).
    ``paused``: the external tiers paused for their spend cap
    (``render.configmap.paused_tiers``)."""
    thresholds = effective_thresholds(spec, status)
    corrections = effective_corrections(spec, learned or {})
    config = build_routing_config(
        name, namespace, spec, thresholds, learned=corrections, asleep=asleep, paused=paused
    )
    last = status.routing_generation if status is not None else None
    config = config.model_copy(
        update={"generation": routing_generation(config, live_configmap, last)}
    )
    return Rendered(
        children=build_children(name, spec, config, replicas, router_image, pdb_api_version),
        routing=config,
        tier_deployments={t.name: names.tier_object_name(name, t.name) for t in spec.served_tiers},
        status_fields=routing_status_fields(config),
    )
