"""Names, labels, selectors and kinds of a ZetaRouter's children (pure): the one place these
facts live; the controller, the control loop, the tests and the development tooling import them.

Names: ``<router>-<tier>`` for the per-tier Deployment, Service and PodDisruptionBudget,
``<router>-<tier>-replicas`` for the tier's headless Service (:func:`tier_replicas_service_name`),
``<router>`` for the entry Service and the NetworkPolicy, ``<router>-routing`` for the routing
ConfigMap, ``<router>-router-key`` for the Secret that signs the routers' request ids. Labels (every
child and pod): ``app.kubernetes.io/name: zeta-router``, ``app.kubernetes.io/instance:
<router>``, ``app.kubernetes.io/component: model-server|router|replicas``,
``app.kubernetes.io/managed-by: zeta-router`` and, on per-tier objects, ``zeta.ai/tier: <tier>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "app.kubernetes.io/component"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
TIER: Final = "zeta.ai/tier"
APP: Final = "zeta-router"
MANAGED_BY_VALUE: Final = APP
"""Value of ``app.kubernetes.io/managed-by`` on every child."""
FIELD_MANAGER: Final = "zeta-router"
"""The operator's server-side apply field manager: ``managedFields`` entries of this manager
are the fields of a child the operator owns."""

OWN_KEY_DOMAINS: Final = ("zeta.ai/", "app.kubernetes.io/")
"""The domains of every label and annotation key the operator writes in a child's metadata
(tested over every child of every sample). Keys of other domains are other managers': the
Deployment controller's ``deployment.kubernetes.io/revision``, written just after each create, a
GitOps tool's. An apply leaves them as they are, so a change of one is not drift."""


def own_keys(values: Mapping[str, str] | None) -> dict[str, str]:
    """The entries of a labels or annotations map whose keys are in :data:`OWN_KEY_DOMAINS`."""
    return {k: v for k, v in (values or {}).items() if k.startswith(OWN_KEY_DOMAINS)}


TEMPLATE_HASH: Final = "zeta.ai/template-hash"
"""Deployment annotation: digest of the pod template the operator rendered for the tier."""
TEMPLATE_PARTS: Final = "zeta.ai/template-parts"
"""Deployment annotation: digests of the template's parts (``model``, ``router``, ``pod``), so
a rollout can say what changed."""
TEMPLATE_CHANGE: Final = "zeta.ai/template-change"
"""Deployment annotation: what its last template change changed, in words (set by the
controller when it gives the tier a new template)."""

CONFIG_DIR: Final = "/etc/zeta-router"
"""Where the routing ConfigMap is mounted (read-only) in every router container."""

ROUTER_KEY_DIR: Final = "/var/run/zeta-router/key"
"""Where the router key Secret is mounted (read-only) in every router container."""
ROUTER_KEY_FIELD: Final = "key"
"""The Secret's data key holding the key (one per line; the first signs)."""
NGRAM_KEY_FIELD: Final = "ngram-key"
"""The Secret's data key holding the secret of the hashed n-grams of learning samples (a
Secret without it: the first request key stands in)."""

EXTERNAL_KEY_DIR: Final = "/var/run/zeta-router/external"
"""Where each external tier's API key Secret is mounted (read-only) in every router container,
one folder per tier: a file the kubelet updates in place when the Secret changes, which the
routers re-read (an environment variable would keep the old key until the pod restarts)."""
EXTERNAL_KEY_FILE: Final = "api-key"
"""The file, in a tier's folder under :data:`EXTERNAL_KEY_DIR`, holding its API key."""


def external_key_volume(tier: str) -> str:
    """The pod volume of external tier ``tier``'s API key Secret (tier names are DNS labels of
    at most 40 characters, so this stays within a volume name's 63)."""
    return f"external-key-{tier}"


def external_key_dir(tier: str) -> str:
    """Where external tier ``tier``'s key Secret is mounted in the router containers."""
    return f"{EXTERNAL_KEY_DIR}/{tier}"


def external_key_file(tier: str) -> str:
    """The file holding external tier ``tier``'s API key in the router containers (named in
    the routing file; the key itself never is)."""
    return f"{external_key_dir(tier)}/{EXTERNAL_KEY_FILE}"


Component = Literal["model-server", "router", "replicas"]
"""``replicas``: a tier's headless Service. Not ``model-server``, so that the monitors that
select the tier Services by component do not scrape every model server a second time through
it."""


def tier_object_name(router: str, tier: str) -> str:
    """Name of a tier's Deployment, Service and PodDisruptionBudget."""
    return f"{router}-{tier}"


def tier_replicas_service_name(router: str, tier: str) -> str:
    """Name of a tier's headless Service, whose DNS name resolves to the tier's ready pods (the
    routers' replica list). ``<router>-<tier>-replicas``, or where that would pass 63
    characters its first 54 and a digest (the same for every reader)."""
    full = f"{tier_object_name(router, tier)}-replicas"
    if len(full) <= 63:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full[:54].rstrip('-')}-{digest}"


def entry_service_name(router: str) -> str:
    return router


def network_policy_name(router: str) -> str:
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
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={router}"


MANAGED_SELECTOR: Final = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
"""Label selector (string form) of every object the operator manages, all ZetaRouters."""


@dataclass(frozen=True)
class ChildKind:
    """A kind of child object and where the API serves it."""

    kind: str
    api_version: str
    plural: str


DEPLOYMENT: Final = ChildKind("Deployment", "apps/v1", "deployments")
SERVICE: Final = ChildKind("Service", "v1", "services")
CONFIGMAP: Final = ChildKind("ConfigMap", "v1", "configmaps")
NETWORK_POLICY: Final = ChildKind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies")
PDB: Final = ChildKind("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets")
"""A tier's PodDisruptionBudget, at ``policy/v1`` (Kubernetes 1.21+); a cluster that serves only
``policy/v1beta1`` (1.20 and older) gets :data:`PDB_V1BETA1` (the controller asks discovery)."""
PDB_V1BETA1: Final = ChildKind("PodDisruptionBudget", "policy/v1beta1", "poddisruptionbudgets")
CHILD_KINDS: Final = (DEPLOYMENT, SERVICE, CONFIGMAP, NETWORK_POLICY, PDB)
"""Every kind of child a ZetaRouter may have."""


def pdb_kind(api_version: str) -> ChildKind:
    """The PodDisruptionBudget kind at ``api_version`` (``policy/v1`` or ``policy/v1beta1``)."""
    return PDB_V1BETA1 if api_version == PDB_V1BETA1.api_version else PDB


def child_kind(kind: str) -> ChildKind:
    for k in CHILD_KINDS:
        if k.kind == kind:
            return k
    raise KeyError(f"{kind} is not a kind of ZetaRouter child")
