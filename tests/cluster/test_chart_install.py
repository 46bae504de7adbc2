"""`helm install` and `helm uninstall` of the chart into a real apiserver (the local control plane,
or $KUBECONFIG), with the helm and kubectl that `make tools` fetches.

Monitors stay off: the Prometheus Operator's CRDs are not installed there. The operator's pods
are created by the Deployment (they stay Pending without a kubelet). The RBAC the chart grants is
checked by asking the apiserver what the operator's ServiceAccount may do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.chart import CHART
from support.cluster import unique_name, wait_for
from support.fixtures_cluster import ClusterHandle
from support.tools import run_tool
from zeta_router.kube import ApiError, Kube, api_path

pytestmark = [pytest.mark.cluster]


def helm(k8s: ClusterHandle, *args: str, check: bool = True) -> str:
    return run_tool(
        "helm", [*args, "--kubeconfig", str(k8s.kubeconfig)], check=check, timeout=300
    ).stdout


def can_i(k8s: ClusterHandle, account: str, verb: str, resource: str, namespace: str) -> bool:
    proc = run_tool(
        "kubectl",
        [
            "--kubeconfig", str(k8s.kubeconfig),
            "auth", "can-i", verb, resource, "-n", namespace, "--as", account,
        ],
        check=False,
    )  # fmt: skip
    answer = proc.stdout.strip()
    assert answer in {"yes", "no"}, proc.stdout + proc.stderr
    return answer == "yes"


def get_or_none(kube: Kube, path: str) -> dict[str, Any] | None:
    try:
        return kube.get(path)
    except ApiError as e:
        if e.not_found:
            return None
        raise


def gone(kube: Kube, path: str) -> bool:
    return get_or_none(kube, path) is None


def crd_path(name: str) -> str:
    return api_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)


@pytest.fixture
def release(k8s: ClusterHandle, kube: Kube, namespace: str) -> Iterator[tuple[str, str, list[str]]]:
    """A release name and namespace; whatever is installed under it is uninstalled after."""
    name = unique_name("zr")
    installed: list[str] = []
    yield name, namespace, installed
    for ns in installed:
        helm(k8s, "uninstall", name, "--namespace", ns, check=False)


def test_install_and_uninstall_cluster_scope(
    k8s: ClusterHandle, kube: Kube, release: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    name, ns, installed = release
    peering = unique_name("zr-peering")
    out = helm(
        k8s, "install", name, str(CHART), "--namespace", ns,
        "--set", f"operator.peering.name={peering}",
        "--set", "networkPolicy.enabled=true",
        "--set", "dashboard.enabled=true",
    )  # fmt: skip
    installed.append(ns)
    assert "kubectl get zr" in out  # NOTES.txt tells the next step
    assert "manifests/samples/" in out
    fullname = f"{name}-zeta-router"
    operator = f"{fullname}-operator"
    sa = f"system:serviceaccount:{ns}:{operator}"

    # The CRDs from the chart's crds/, and every templated object.
    for crd in ("zetarouters.zeta.ai", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        assert get_or_none(kube, crd_path(crd)), crd
    expected = [
        api_path("apps/v1", "deployments", ns, operator),
        api_path("v1", "serviceaccounts", ns, operator),
        api_path("v1", "services", ns, f"{operator}-metrics"),
        api_path("v1", "configmaps", ns, f"{fullname}-dashboard"),
        api_path("networking.k8s.io/v1", "networkpolicies", ns, operator),
        api_path("rbac.authorization.k8s.io/v1", "clusterroles", None, operator),
        api_path("rbac.authorization.k8s.io/v1", "clusterrolebindings", None, operator),
        api_path("kopf.dev/v1", "clusterkopfpeerings", None, peering),
    ]
    for path in expected:
        assert get_or_none(kube, path), path

    def pods() -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=operator"
        items: list[dict[str, Any]] = kube.list(api_path("v1", "pods", ns), selector)["items"]
        return items

    (pod,) = wait_for(pods, 60, f"the pod of deployment {ns}/{operator}")
    assert pod["spec"]["serviceAccountName"] == operator
    assert pod["spec"]["containers"][0]["image"] == "zeta-router:0.1.0"

    # Cluster scope: the operator may manage ZetaRouters and their children anywhere, and
    # nothing more than it needs.
    assert can_i(k8s, sa, "patch", "zetarouters.zeta.ai", "default")
    assert can_i(k8s, sa, "create", "deployments.apps", "kube-public")
    assert can_i(k8s, sa, "get", "secrets", "default")
    assert can_i(k8s, sa, "create", "secrets", "default")  # each ZetaRouter's router key
    assert not can_i(k8s, sa, "list", "secrets", "default")
    # networkPolicy.enabled: a NetworkPolicy per ZetaRouter, so the operator may manage them.
    assert can_i(k8s, sa, "create", "networkpolicies.networking.k8s.io", "default")
    assert not can_i(k8s, sa, "patch", "secrets", "default")
    assert not can_i(k8s, sa, "update", "deployments.apps", "default")
    assert not can_i(k8s, sa, "delete", "zetarouters.zeta.ai", "default")
    assert not can_i(k8s, sa, "create", "pods", "default")

    assert name in helm(k8s, "list", "--namespace", ns, "--short")
    helm(k8s, "uninstall", name, "--namespace", ns)
    installed.remove(ns)
    for path in expected:
        wait_for(lambda p=path: gone(kube, p), 60, f"{path} to be deleted")
    # CRDs stay (Helm never deletes them): ZetaRouters outlive the operator's release.
    assert get_or_none(kube, crd_path("zetarouters.zeta.ai"))


def test_install_namespace_scope(
    k8s: ClusterHandle, kube: Kube, release: tuple[str, str, list[str]]
) -> None:
    name, ns, installed = release
    helm(
        k8s, "install", name, str(CHART), "--namespace", ns,
        "--set", "rbac.scope=namespace", "--set", "rbac.clusterRead=false",
        "--set", "replicaCount=2",
        "--set", "prometheusAuth.policy=allowList",
        "--set", f"prometheusAuth.allowedSecrets[0].namespace={ns}",
        "--set", "prometheusAuth.allowedSecrets[0].name=prometheus-auth",
        "--set", "prometheusAuth.allowedSecrets[0].url=http://prometheus.monitoring:9090",
    )  # fmt: skip
    installed.append(ns)
    operator = f"{name}-zeta-router-operator"
    sa = f"system:serviceaccount:{ns}:{operator}"
    dep = kube.get(api_path("apps/v1", "deployments", ns, operator))
    assert dep["spec"]["replicas"] == 2
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={ns}" in args
    assert get_or_none(kube, api_path("kopf.dev/v1", "kopfpeerings", ns, "zeta-router"))
    assert get_or_none(kube, api_path("rbac.authorization.k8s.io/v1", "roles", ns, operator))
    assert (
        get_or_none(kube, api_path("rbac.authorization.k8s.io/v1", "clusterroles", None, operator))
        is None
    )
    # Rights in its own namespace only.
    assert can_i(k8s, sa, "patch", "zetarouters.zeta.ai", ns)
    assert can_i(k8s, sa, "create", "configmaps", ns)
    assert not can_i(k8s, sa, "patch", "zetarouters.zeta.ai", "default")
    assert not can_i(k8s, sa, "create", "configmaps", "default")
    assert not can_i(k8s, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", ns)
    # Secrets: the one on the allow-list, nothing else.
    assert can_i(k8s, sa, "get", "secrets/prometheus-auth", ns)
    assert not can_i(k8s, sa, "get", "secrets/another", ns)
    assert not can_i(k8s, sa, "list", "secrets", ns)
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--prometheus-secrets=allow-list" in args


def test_install_refuses_bad_values_before_touching_the_cluster(
    k8s: ClusterHandle, kube: Kube, release: tuple[str, str, list[str]]
) -> None:
    name, ns, _ = release
    proc = run_tool(
        "helm",
        [
            "install", name, str(CHART), "--namespace", ns, "--kubeconfig", str(k8s.kubeconfig),
            "--set", "rbac.scope=global",
        ],
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "at '/rbac/scope'" in proc.stderr
    operator = f"{name}-zeta-router-operator"
    assert get_or_none(kube, api_path("apps/v1", "deployments", ns, operator)) is None
