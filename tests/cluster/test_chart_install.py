"""`helm install` and `helm uninstall` of the chart, with the helm and kubectl that `make tools`
fetches: on the real local node, where the operator runs as a pod from the image built here and
reconciles a ZetaRouter into running tiers; and on the stand-in control plane (or $KUBECONFIG)
for what needs no container (namespace scope, bad values).

Monitors stay off: the Prometheus Operator's CRDs are not installed there. The RBAC the chart
grants is checked by asking the apiserver what the operator's ServiceAccount may do: after a
default install, nothing beyond the documented list (tests/support/rbac.py, docs/security.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import rbac
from support.chart import CHART, VALUES
from support.cluster import (
    condition_is,
    service_account_kubeconfig,
    unique_name,
    wait_for,
)
from support.fixtures_cluster import ClusterHandle
from support.fixtures_node import RealNodeHandle
from support.tools import run_tool
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.cluster.workloads import load_cpu_sample, localize_zetarouter
from zeta_router_dev.images.build import PROJECT_IMAGE

pytestmark = [pytest.mark.cluster]


def helm(k8s: ClusterHandle, *args: str, check: bool = True) -> str:
    return run_tool(
        "helm", [*args, "--kubeconfig", str(k8s.kubeconfig)], check=check, timeout=300
    ).stdout


def can_i(kubeconfig: Path, account: str, verb: str, resource: str, namespace: str) -> bool:
    proc = run_tool(
        "kubectl",
        [
            "--kubeconfig", str(kubeconfig),
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


@pytest.fixture
def real_release(real_node: RealNodeHandle) -> Iterator[tuple[str, str, list[str]]]:
    """A release name and namespace on the real node; uninstalled and deleted after."""
    name, ns = unique_name("zr"), unique_name("zt-chart")
    installed: list[str] = []
    yield name, ns, installed
    for namespace in installed:
        run_tool(
            "helm",
            [
                "uninstall",
                name,
                "--namespace",
                namespace,
                "--kubeconfig",
                str(real_node.kubeconfig),
            ],
            check=False,
        )
    for namespace in (ns, f"{ns}-app"):
        with contextlib.suppress(ApiError):
            real_node.kube.delete(api_path("v1", "namespaces", None, namespace))


@pytest.mark.node
def test_install_runs_the_operator_as_a_pod_that_reconciles_and_uninstall_removes_it(
    real_node: RealNodeHandle, real_release: tuple[str, str, list[str]]
) -> None:
    kube = real_node.kube
    name, ns, installed = real_release
    peering = unique_name("zr-peering")
    out = run_tool(
        "helm",
        [
            "install", name, str(CHART), "--namespace", ns, "--create-namespace",
            "--kubeconfig", str(real_node.kubeconfig),
            "--set", "rbac.scope=cluster",
            "--set", f"operator.peering.name={peering}",
            "--set", "networkPolicy.enabled=true",
            "--set", "dashboard.enabled=true",
        ],
        timeout=300,
    ).stdout  # fmt: skip
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

    # The chart's defaults as they are: the image zeta-router:<appVersion>, present in the
    # node's containerd (built by `make images`), so nothing is pulled.
    (pod,) = wait_for(
        lambda: [p for p in pods() if condition_is(p, "Ready", "True")],
        120,
        f"the operator pod of deployment {ns}/{operator} to run",
    )
    assert pod["spec"]["serviceAccountName"] == operator
    assert pod["spec"]["containers"][0]["image"] == PROJECT_IMAGE
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")

    # The operator in its pod reaches the apiserver (through the `kubernetes` Service) and
    # reconciles a ZetaRouter of any namespace into running tiers.
    app = f"{ns}-app"
    zr = localize_zetarouter(load_cpu_sample(), namespace=app)
    kube.create(
        api_path("v1", "namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": app}},
    )
    kube.create(api_path("zeta.ai/v1alpha1", "zetarouters", app), zr)
    zr_path = api_path("zeta.ai/v1alpha1", "zetarouters", app, zr["metadata"]["name"])
    wait_for(lambda: condition_is(kube.get(zr_path), "Ready", "True"), 180, "the ZetaRouter Ready")
    tiers = kube.list(api_path("apps/v1", "deployments", app))["items"]
    assert {d["status"].get("readyReplicas") for d in tiers} == {1}

    # Cluster scope (opted into above): the operator may manage ZetaRouters and their children
    # anywhere, and nothing more than it needs.
    assert can_i(real_node.kubeconfig, sa, "patch", "zetarouters.zeta.ai", "default")
    assert can_i(real_node.kubeconfig, sa, "create", "deployments.apps", "kube-public")
    assert can_i(real_node.kubeconfig, sa, "get", "secrets", "default")
    assert can_i(real_node.kubeconfig, sa, "create", "secrets", "default")  # the router key
    assert not can_i(real_node.kubeconfig, sa, "list", "secrets", "default")
    # networkPolicy.enabled: a NetworkPolicy per ZetaRouter, so the operator may manage them.
    assert can_i(real_node.kubeconfig, sa, "create", "networkpolicies.networking.k8s.io", "default")
    assert not can_i(real_node.kubeconfig, sa, "patch", "secrets", "default")
    assert not can_i(real_node.kubeconfig, sa, "update", "deployments.apps", "default")
    assert not can_i(real_node.kubeconfig, sa, "delete", "zetarouters.zeta.ai", "default")
    assert not can_i(real_node.kubeconfig, sa, "create", "pods", "default")

    helm_args = ["--namespace", ns, "--kubeconfig", str(real_node.kubeconfig)]
    assert name in run_tool("helm", ["list", "--short", *helm_args]).stdout
    run_tool("helm", ["uninstall", name, *helm_args])
    installed.remove(ns)
    for path in expected:
        wait_for(lambda p=path: gone(kube, p), 60, f"{path} to be deleted")
    wait_for(lambda: not pods(), 90, "the operator pod to be gone")
    # CRDs stay (Helm never deletes them): ZetaRouters outlive the operator's release.
    assert get_or_none(kube, crd_path("zetarouters.zeta.ai"))
    assert get_or_none(kube, zr_path)


def rules_review(kube: Kube, namespace: str) -> set[rbac.Triple]:
    """What the client's own identity may do in ``namespace``, as the apiserver says
    (SelfSubjectRulesReview), as (group, resource, verb); rules limited to resourceNames come
    back as (group, "resource/<names>", verb)."""
    review = kube.create(
        api_path("authorization.k8s.io/v1", "selfsubjectrulesreviews"),
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        },
    )
    status = review["status"]
    assert not status.get("incomplete"), status
    out: set[rbac.Triple] = set()
    for rule in status.get("resourceRules") or []:
        names = rule.get("resourceNames")
        resources = [f"{r}/{','.join(sorted(names))}" if names else r for r in rule["resources"]]
        out |= rbac.rule_triples([{**rule, "resources": resources}])
    return out


def allowed(
    kube: Kube, user: str, verb: str, resource: str, namespace: str, group: str = ""
) -> bool:
    """A SubjectAccessReview (asked with admin rights) for a service account ``user``."""
    account_ns = user.split(":")[2]
    review = kube.create(
        api_path("authorization.k8s.io/v1", "subjectaccessreviews"),
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{account_ns}",
                    "system:authenticated",
                ],
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


def test_default_install_grants_only_the_documented_list(
    k8s: ClusterHandle, kube: Kube, release: tuple[str, str, list[str]], tmp_path: Path
) -> None:
    """A default `helm install` is namespace-scoped: what the apiserver says the operator's
    ServiceAccount may do is the documented list in its namespace, the cluster-wide reads
    elsewhere, and nothing more (what any authenticated account may do aside)."""
    name, ns, installed = release
    helm(k8s, "install", name, str(CHART), "--namespace", ns)
    installed.append(ns)
    operator = f"{name}-zeta-router-operator"
    sa = f"system:serviceaccount:{ns}:{operator}"
    args = kube.get(api_path("apps/v1", "deployments", ns, operator))["spec"]["template"]["spec"][
        "containers"
    ][0]["args"]
    assert f"--namespace={ns}" in args
    assert "--all-namespaces" not in args

    # What every account may do (discovery, self reviews): an account bound to nothing.
    kube.create(
        api_path("v1", "serviceaccounts", ns),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}},
    )
    nobody = Kube.from_kubeconfig(
        service_account_kubeconfig(kube, ns, "nobody", tmp_path / "nobody.kubeconfig")
    )
    me = Kube.from_kubeconfig(
        service_account_kubeconfig(kube, ns, operator, tmp_path / "operator.kubeconfig")
    )
    on = rbac.chart_conditions(yaml.safe_load(VALUES.read_text()))
    cluster_wide = rbac.expand(rbac.CLUSTER_WIDE, on)
    served = rbac.expand(rbac.NAMESPACED, on) | cluster_wide
    other = unique_name("zt-other")
    kube.create(
        api_path("v1", "namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}},
    )
    try:
        for namespace, documented in (
            (ns, served),
            ("kube-system", cluster_wide),
            ("default", cluster_wide),
            (other, cluster_wide),
        ):
            extra = rules_review(me, namespace) - rules_review(nobody, namespace)
            assert extra == documented, (
                f"in {namespace}: beyond the documented list: {sorted(extra - documented)}; "
                f"missing: {sorted(documented - extra)}"
            )
    finally:
        kube.delete(api_path("v1", "namespaces", None, other))

    # The findings of a security review, asked one by one.
    for verb in ("get", "list", "create"):
        assert not allowed(kube, sa, verb, "secrets", "kube-system"), verb
    assert not allowed(kube, sa, "list", "secrets", ns)
    assert allowed(kube, sa, "get", "secrets", ns)  # metadata of the Secrets a spec names
    assert allowed(kube, sa, "create", "secrets", ns)  # the routers' key
    for namespace in ("kube-system", "default"):
        assert not allowed(kube, sa, "create", "deployments", namespace, "apps")
        assert not allowed(kube, sa, "patch", "services", namespace)
        assert not allowed(kube, sa, "list", "pods", namespace)
    assert not allowed(kube, sa, "create", "pods", ns)
    assert not allowed(kube, sa, "update", "deployments", ns, "apps")
    assert allowed(kube, sa, "patch", "deployments", ns, "apps")
    assert allowed(kube, sa, "create", "poddisruptionbudgets", ns, "policy")
    # No ClusterRole of the release grants Secrets or any write.
    for role in kube.list(api_path("rbac.authorization.k8s.io/v1", "clusterroles"))["items"]:
        if (role["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") != name:
            continue
        triples = rbac.rule_triples(role.get("rules") or [])
        assert {v for _, _, v in triples} <= {"get", "list", "watch"}, role["metadata"]["name"]
        assert not any(r == "secrets" for _, r, _ in triples)


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
        # No Secret in pods' environment: the pod policy reads no Secret's metadata either.
        "--set", "podPolicy.secretRefs=none",
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
    assert can_i(k8s.kubeconfig, sa, "patch", "zetarouters.zeta.ai", ns)
    assert can_i(k8s.kubeconfig, sa, "create", "configmaps", ns)
    assert not can_i(k8s.kubeconfig, sa, "patch", "zetarouters.zeta.ai", "default")
    assert not can_i(k8s.kubeconfig, sa, "create", "configmaps", "default")
    assert not can_i(
        k8s.kubeconfig, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", ns
    )
    # Secrets: the one on the allow-list, nothing else.
    assert can_i(k8s.kubeconfig, sa, "get", "secrets/prometheus-auth", ns)
    assert not can_i(k8s.kubeconfig, sa, "get", "secrets/another", ns)
    assert not can_i(k8s.kubeconfig, sa, "list", "secrets", ns)
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
