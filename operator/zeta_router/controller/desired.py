"""What a ZetaRouter's children should be, given the object and its live children (pure).

The render functions (``zeta_router.render``) turn a parsed spec into manifests; this module
adds the controller's decisions around them: the replica count of each tier (see
``controller.replicas``: ``initial`` on creation, then the user's number within [min, max], or
the control loop's choice when it owns replicas). Thresholds (the spec's, or the loop's from the
status) and the routing ConfigMap's generation are decided by the render module itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeta_router.api import defaults
from zeta_router.api.models import SpecError, parse_status, parse_zetarouter
from zeta_router.api.routing import LearnedCorrection
from zeta_router.controller.replicas import ReplicaBounds, desired_replicas
from zeta_router.render import names
from zeta_router.render.children import loop_desired_replicas, render

TIER_LABEL = names.TIER

__all__ = ["TIER_LABEL", "Desired", "SpecError", "compute"]


@dataclass(frozen=True)
class Desired:
    children: list[dict[str, Any]]
    tier_deployments: dict[str, str]  # tier name -> Deployment name, in tier order
    routing_generation: int
    status_fields: dict[str, Any] = field(default_factory=dict)


def _live_replicas(deployment: Mapping[str, Any] | None) -> int | None:
    if deployment is None:
        return None
    value = (deployment.get("spec") or {}).get("replicas")
    return int(value) if value is not None else 1  # the apiserver's default


def compute(
    body: Mapping[str, Any],
    live_deployments: Mapping[str, Mapping[str, Any]],
    live_configmaps: Mapping[str, Mapping[str, Any]],
    router_image: str = defaults.ROUTER_IMAGE,
    learned: Mapping[str, LearnedCorrection] | None = None,
) -> Desired:
    """The children of ``body`` (a ZetaRouter object). ``live_*``: its live children of that
    kind by name. ``learned``: the learner's store (``render.learned.parse_model_store``).
    Raises :class:`SpecError` for a spec that cannot be used."""
    spec = parse_zetarouter(body)
    status = parse_status(body)
    meta = body["metadata"]
    name, namespace = str(meta["name"]), str(meta["namespace"])
    loop_choice = loop_desired_replicas(status)
    replicas = {
        t.name: desired_replicas(
            ReplicaBounds(t.replicas.min, t.replicas.maximum, t.replicas.start),
            _live_replicas(live_deployments.get(names.tier_object_name(name, t.name))),
            spec.loop_owns_replicas,
            loop_choice.get(t.name),
        )
        for t in spec.tiers
    }
    out = render(
        name,
        namespace,
        spec,
        status,
        live_configmap=live_configmaps.get(names.routing_configmap_name(name)),
        replicas=replicas,
        router_image=router_image,
        learned=learned,
    )
    return Desired(
        children=out.children,
        tier_deployments=out.tier_deployments,
        routing_generation=out.routing.generation,
        status_fields=out.status_fields,
    )
