"""A tier's PodDisruptionBudget ``<router>-<tier>`` (pure).

Voluntary disruptions (``kubectl drain``, the cluster autoscaler removing a node, anything that
evicts through the Eviction API) may take at most ``spec.tiers[].disruptionBudget
.maxUnavailable`` pods of the tier at once (default 1), and never its last one: the budget
rendered is ``min(maxUnavailable, replicas - 1)``, so a tier of one replica refuses evictions
(the apiserver answers 429) until it has another. The replica count is the one the controller
applies to the tier's Deployment, so the budget follows scaling.

The API version is an input: ``policy/v1`` where the cluster serves it (Kubernetes 1.21 and
later; 1.25 removed ``policy/v1beta1``), ``policy/v1beta1`` on older clusters. Both have the
same fields for what is rendered here.
"""

from __future__ import annotations

from typing import Any

from zeta_router.api.models import TierSpec
from zeta_router.render import names


def budget(tier: TierSpec, replicas: int) -> int:
    """The ``maxUnavailable`` rendered for a tier of ``replicas`` pods."""
    return max(0, min(tier.disruption_budget.max_unavailable, replicas - 1))


def build_pdb(
    name: str, tier: TierSpec, replicas: int, api_version: str = names.PDB.api_version
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": names.PDB.kind,
        "metadata": {
            "name": names.tier_object_name(name, tier.name),
            "labels": names.labels(name, "model-server", tier.name),
        },
        "spec": {
            "maxUnavailable": budget(tier, replicas),
            "selector": {"matchLabels": names.tier_selector(name, tier.name)},
        },
    }
