"""manifests/ (the install without Helm) as `kubectl kustomize` renders it, with the kubectl that
`make tools` fetches; applying it to a cluster is in tests/cluster/test_manifests_apply.py."""

from __future__ import annotations

from typing import Any

import pytest
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
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert crds == {"zetarouters.zeta.ai", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    # One source: the CRD is crds/zetarouter.yaml, not a copy.
    (zr,) = [d for d in docs if d["metadata"]["name"] == "zetarouters.zeta.ai"]
    assert zr == yaml.safe_load((REPO / "crds" / "zetarouter.yaml").read_text())
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "zeta-router:0.1.0"


def test_default_install_serves_its_own_namespace_with_a_role_there() -> None:
    docs = rendered()
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    # args[1]: what manifests/cluster-scope.yaml tells to replace with --all-namespaces.
    assert args[:2] == ["operator", "--namespace=zeta-router-system"]
    assert "--all-namespaces" not in args
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "zeta-router-system"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert {v for r in cluster_role["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
    assert not any("secrets" in r["resources"] for r in cluster_role["rules"])
    opt_in = (MANIFESTS / "cluster-scope.yaml").read_text()
    assert '"path": "/spec/template/spec/containers/0/args/1"' in opt_in


@pytest.mark.parametrize("file", ["rbac.yaml", "role.yaml", "cluster-scope.yaml"])
def test_rbac_rules_are_not_repeated(file: str) -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / file).read_text()) if d]
    (role,) = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    seen: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    key = (group, resource, verb)
                    assert key not in seen, f"{key} granted twice"
                    seen.add(key)
