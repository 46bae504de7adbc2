"""Names, labels and selectors of a ZetaRouter's children (pure).

Names: ``<router>-<tier>`` for the per-tier Deployment and Service, ``<router>`` for the entry
Service, ``<router>-routing`` for the routing ConfigMap, ``<router>-router-key`` for the Secret
that signs the routers' request ids. Labels (every child and pod):
``app.kubernetes.io/name: zeta-router``, ``app.kubernetes.io/instance: <router>``,
``app.kubernetes.io/component: model-server|router``, ``app.kubernetes.io/managed-by:
zeta-router`` and, on per-tier objects, ``zeta.ai/tier: <tier>``.
"""

from __future__ import annotations

from typing import Final, Literal

NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "app.kubernetes.io/component"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
TIER: Final = "zeta.ai/tier"
APP: Final = "zeta-router"

CONFIG_DIR: Final = "/etc/zeta-router"
"""Where the routing ConfigMap is mounted (read-only) in every router container."""

ROUTER_KEY_DIR: Final = "/var/run/zeta-router/key"
"""Where the router key Secret is mounted (read-only) in every router container."""
ROUTER_KEY_FIELD: Final = "key"
"""The Secret's data key holding the key (one per line; the first signs)."""

Component = Literal["model-server", "router"]


def tier_object_name(router: str, tier: str) -> str:
    """Name of a tier's Deployment and Service."""
    return f"{router}-{tier}"


def entry_service_name(router: str) -> str:
    return router


def routing_configmap_name(router: str) -> str:
    return f"{router}-routing"


def router_key_secret_name(router: str) -> str:
    """The Secret holding the key that signs the routers' request ids and session tokens."""
    return f"{router}-router-key"


def labels(router: str, component: Component, tier: str | None = None) -> dict[str, str]:
    """The labels of a child (and of the pods of a tier's Deployment)."""
    out = {NAME: APP, INSTANCE: router, COMPONENT: component, MANAGED_BY: APP}
    if tier is not None:
        out[TIER] = tier
    return out


def router_selector(router: str) -> dict[str, str]:
    """Selects every pod of a ZetaRouter (all tiers): the entry Service's selector."""
    return {NAME: APP, INSTANCE: router}


def tier_selector(router: str, tier: str) -> dict[str, str]:
    """Selects the pods of one tier: the tier Deployment's (immutable) and Service's selector."""
    return {NAME: APP, INSTANCE: router, TIER: tier}


def children_selector(router: str) -> str:
    """Label selector (string form) listing every child of a ZetaRouter."""
    return f"{MANAGED_BY}={APP},{INSTANCE}={router}"
