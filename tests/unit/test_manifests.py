"""manifests/ (the install without Helm) as `kubectl kustomize` renders it, with the kubectl that
`make tools` fetches; applying it to a cluster is in tests/cluster/test_manifests_apply.py."""

from __future__ import annotations

from typing import Any

import yaml

from support.cluster import REPO
from support.tools import run_tool

MANIFESTS = REPO / "manifests"


def rendered() -> list[dict[str, Any]]:
    out = run_tool("kubectl", ["kustomize", str(MANIFESTS)]).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_kustomization_renders_crds_rbac_peering_and_operator() -> None:
    docs = rendered()
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "ServiceAccount",
    ]
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"zetarouters.zeta.ai", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    # One source: the CRD is crds/zetarouter.yaml, not a copy.
    (zr,) = [d for d in docs if d["metadata"]["name"] == "zetarouters.zeta.ai"]
    assert zr == yaml.safe_load((REPO / "crds" / "zetarouter.yaml").read_text())
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "zeta-router:0.1.0"


def test_rbac_rules_are_not_repeated() -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "rbac.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    seen: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    key = (group, resource, verb)
                    assert key not in seen, f"{key} granted twice"
                    seen.add(key)
