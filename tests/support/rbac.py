"""What the operator's ServiceAccount may do: the one documented list (docs/security.md carries
it as tables, which a unit test checks against this). The chart, manifests/ and the rights the
apiserver reports after an install are all checked against it.

``when`` names the chart setting a grant depends on (``""``: always):

- ``secrets-get``: ``prometheusAuth.policy: annotated`` or ``podPolicy.secretRefs: marked`` (the
  defaults): the operator reads Secrets by name (never lists them).
- ``network-policy``: ``networkPolicy.enabled`` and ``networkPolicy.zetaRouters``.
- ``cluster-read``: ``rbac.clusterRead`` (default true), for the cluster-wide grants.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Triple = tuple[str, str, str]  # (apiGroup, resource, verb)

CHILD_VERBS = ("get", "list", "watch", "create", "patch", "delete")


@dataclass(frozen=True)
class Grant:
    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    when: str = ""

    def triples(self) -> set[Triple]:
        return {(self.group, r, v) for r in self.resources for v in self.verbs}


NAMESPACED: tuple[Grant, ...] = (
    Grant(
        "zeta.ai",
        ("zetarouters",),
        ("get", "list", "watch", "patch"),
        "the resource it serves; kopf's bookkeeping annotations",
    ),
    Grant("zeta.ai", ("zetarouters/status",), ("patch",), "conditions and decisions"),
    Grant(
        "zeta.ai",
        ("zetarouters/finalizers",),
        ("update",),
        "owner references with blockOwnerDeletion (OpenShift)",
    ),
    Grant("apps", ("deployments",), CHILD_VERBS, "children: a Deployment per tier"),
    Grant(
        "",
        ("services", "configmaps"),
        CHILD_VERBS,
        "children: Services, the routing ConfigMap, the learner's store",
    ),
    Grant(
        "policy", ("poddisruptionbudgets",), CHILD_VERBS, "children: a PodDisruptionBudget per tier"
    ),
    Grant(
        "networking.k8s.io",
        ("networkpolicies",),
        CHILD_VERBS,
        "children: a NetworkPolicy per ZetaRouter",
        "network-policy",
    ),
    Grant("", ("secrets",), ("create",), "the routers' signing key `<name>-router-key`, once"),
    Grant(
        "",
        ("secrets",),
        ("get",),
        "metadata of Secrets named by env secretKeyRef; annotated Prometheus credentials; the "
        "n-gram key in the ZetaRouter's own `<name>-router-key` (the learner, for a cold-start "
        "file)",
        "secrets-get",
    ),
    Grant("", ("events",), ("create", "patch"), "Events on ZetaRouters"),
    Grant("", ("pods",), ("list",), "the learner finds its routers' pods"),
    Grant(
        "kopf.dev",
        ("kopfpeerings",),
        ("get", "list", "watch", "patch", "create"),
        "kopf peering between replicas",
    ),
)

CLUSTER_WIDE: tuple[Grant, ...] = (
    Grant("apiextensions.k8s.io", ("customresourcedefinitions",), ("get", "list", "watch"),
          "kopf notices CRD upgrades", "cluster-read"),
    Grant("", ("namespaces",), ("get", "list", "watch"),
          "kopf notices served namespaces that come and go", "cluster-read"),
)  # fmt: skip


def expand(grants: Iterable[Grant], conditions: Iterable[str]) -> set[Triple]:
    on = set(conditions) | {""}
    return {t for g in grants if g.when in on for t in g.triples()}


def chart_conditions(values: Mapping[str, Any]) -> set[str]:
    """The ``when`` conditions the chart's values turn on."""
    out = set()
    if (
        values["prometheusAuth"]["policy"] == "annotated"
        or values["podPolicy"]["secretRefs"] == "marked"
    ):
        out.add("secrets-get")
    net = values["networkPolicy"]
    if net["enabled"] and net["zetaRouters"]:
        out.add("network-policy")
    if values["rbac"]["clusterRead"]:
        out.add("cluster-read")
    return out


def rule_triples(rules: Iterable[Mapping[str, Any]]) -> set[Triple]:
    """(group, resource, verb) of RBAC rules (resourceNames ignored: see the caller)."""
    return {
        (group, resource, verb)
        for r in rules
        for group in r.get("apiGroups") or []
        for resource in r.get("resources") or []
        for verb in r.get("verbs") or []
    }


_WHEN = {
    "": "always",
    "secrets-get": "`prometheusAuth.policy: annotated` or `podPolicy.secretRefs: marked` "
    "(both defaults)",
    "network-policy": "`networkPolicy.enabled` and `networkPolicy.zetaRouters`",
    "cluster-read": "`rbac.clusterRead` (default true)",
}


def grants_table(grants: Iterable[Grant]) -> str:
    """The Markdown table docs/security.md carries for ``grants``."""
    lines = ["| API group | resources | verbs | when | why |", "|---|---|---|---|---|"]
    for g in grants:
        resources = ", ".join(f"`{r}`" for r in g.resources)
        lines.append(
            f"| `{g.group or 'core'}` | {resources} | {', '.join(g.verbs)} | {_WHEN[g.when]} "
            f"| {g.why} |"
        )
    return "\n".join(lines) + "\n"


def rules_table() -> str:
    """The table of the pod policy's rules docs/security.md carries."""
    from zeta_router.api.pod_policy import RULES

    lines = ["| rule | what it refuses | flag | chart value | default |", "|---|---|---|---|---|"]
    for r in RULES:
        flag = r.flag if r.flag.startswith("(") else f"`{r.flag}`"
        value = r.value if r.value.startswith("(") else f"`{r.value}`"
        lines.append(f"| `{r.id}` | {r.summary} | {flag} | {value} | {r.default} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(rules_table())
    print(grants_table(NAMESPACED))
    print(grants_table(CLUSTER_WIDE))
