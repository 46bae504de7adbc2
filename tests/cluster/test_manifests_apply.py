"""The install without Helm: `kubectl apply -k manifests/` and the samples, into a real apiserver
(the local control plane, or $KUBECONFIG), with the kubectl that `make tools` fetches."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import REPO, wait_for
from support.fixtures_cluster import ClusterHandle
from support.tools import run_tool
from zeta_router.kube import ApiError, Kube, api_path

pytestmark = [pytest.mark.cluster]

MANIFESTS = REPO / "manifests"
SAMPLES = sorted((MANIFESTS / "samples").glob("*.yaml"))
OPERATOR_NS = "zeta-router-system"
OPERATOR = "zeta-router-operator"


def kubectl(k8s: ClusterHandle, *args: str, check: bool = True) -> tuple[int, str]:
    proc = run_tool("kubectl", ["--kubeconfig", str(k8s.kubeconfig), *args], check=check)
    return proc.returncode, proc.stdout + proc.stderr


def rendered() -> list[dict[str, Any]]:
    out = run_tool("kubectl", ["kustomize", str(MANIFESTS)]).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture
def applied(k8s: ClusterHandle, kube: Kube) -> Iterator[None]:
    # The namespace, ServiceAccount and RBAC are the ones the operator tests use too (same
    # content): only the operator Deployment is removed afterwards.
    yield
    try:
        kube.delete(api_path("apps/v1", "deployments", OPERATOR_NS, OPERATOR))
    except ApiError as e:
        if not e.not_found:
            raise


def test_apply_k_manifests(k8s: ClusterHandle, kube: Kube, applied: None) -> None:
    _, out = kubectl(k8s, "apply", "-k", str(MANIFESTS))
    for doc in rendered():
        kind, name = doc["kind"].lower(), re.escape(doc["metadata"]["name"])
        line = rf"^{kind}(\.[a-z0-9.]+)?/{name} (created|configured|unchanged)$"
        assert re.search(line, out, re.M), f"{kind}/{name} not applied:\n{out}"
    crds = "customresourcedefinitions"
    for path in (
        api_path("apiextensions.k8s.io/v1", crds, None, "zetarouters.zeta.ai"),
        api_path("apiextensions.k8s.io/v1", crds, None, "clusterkopfpeerings.kopf.dev"),
        api_path("v1", "namespaces", None, OPERATOR_NS),
        api_path("v1", "serviceaccounts", OPERATOR_NS, OPERATOR),
        api_path("rbac.authorization.k8s.io/v1", "clusterroles", None, f"{OPERATOR}-read"),
        api_path("rbac.authorization.k8s.io/v1", "clusterrolebindings", None, f"{OPERATOR}-read"),
        api_path("rbac.authorization.k8s.io/v1", "roles", OPERATOR_NS, OPERATOR),
        api_path("rbac.authorization.k8s.io/v1", "rolebindings", OPERATOR_NS, OPERATOR),
        api_path("apps/v1", "deployments", OPERATOR_NS, OPERATOR),
    ):  # fmt: skip
        assert kube.get(path)["metadata"]["name"], path

    def pods() -> list[dict[str, Any]]:
        selector = "app.kubernetes.io/name=zeta-router,app.kubernetes.io/component=operator"
        items = kube.list(api_path("v1", "pods", OPERATOR_NS), selector)["items"]
        return items if len(items) == 2 else []

    for pod in wait_for(pods, 60, "the two operator pods of manifests/operator.yaml"):
        assert pod["spec"]["serviceAccountName"] == OPERATOR
    # Applying again changes nothing, and the apiserver accepts it all (server-side dry run).
    _, out = kubectl(k8s, "apply", "-k", str(MANIFESTS))
    assert "deployment.apps/zeta-router-operator unchanged" in out, out
    _, out = kubectl(k8s, "apply", "-k", str(MANIFESTS), "--dry-run=server")
    assert "deployment.apps/zeta-router-operator unchanged (server dry run)" in out, out
    # The cluster-scope opt-in as its comment says to apply it (server-side dry runs).
    opt_in = MANIFESTS / "cluster-scope.yaml"
    _, out = kubectl(k8s, "apply", "-f", str(opt_in), "--dry-run=server")
    assert "clusterrole.rbac.authorization.k8s.io/zeta-router-operator created" in out, out
    (patch,) = re.findall(r"-p \\\n#\s+'(.*)'", opt_in.read_text())
    _, out = kubectl(
        k8s, "-n", OPERATOR_NS, "patch", "deployment", OPERATOR, "--type=json", "-p", patch,
        "--dry-run=server", "-o", "jsonpath={.spec.template.spec.containers[0].args[1]}",
    )  # fmt: skip
    assert out == "--all-namespaces", out


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_samples_are_accepted(
    k8s: ClusterHandle, kube: Kube, zr_crd: object, namespace: str, sample: Path
) -> None:
    _, out = kubectl(k8s, "apply", "-n", namespace, "-f", str(sample))
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    assert f"zetarouter.zeta.ai/{name} created" in out, out
    live = kube.get(api_path("zeta.ai/v1alpha1", "zetarouters", namespace, name))
    spec = yaml.safe_load(sample.read_text())["spec"]
    # Nothing the sample sets was pruned by the CRD's schema.
    assert [t["name"] for t in live["spec"]["tiers"]] == [t["name"] for t in spec["tiers"]]
    assert live["spec"]["tiers"][0]["model"] == spec["tiers"][0]["model"]
    assert live["spec"]["tiers"][0]["resources"] == spec["tiers"][0]["resources"]
    _, out = kubectl(k8s, "get", "zr", "-n", namespace)
    assert name in out


def test_the_crd_schema_rejects_a_broken_sample(
    k8s: ClusterHandle, zr_crd: object, namespace: str, tmp_path: Path
) -> None:
    """The samples' check above can fail: the apiserver refuses what the schema does not allow."""
    doc = yaml.safe_load(SAMPLES[0].read_text())
    doc["spec"]["tiers"][0]["engine"] = "tpu"
    doc["spec"]["router"]["shadowSampleRate"] = 2
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    code, out = kubectl(
        k8s, "apply", "--dry-run=server", "-n", namespace, "-f", str(broken), check=False
    )
    assert code != 0
    assert "spec.tiers[0].engine" in out or "spec.tiers.engine" in out, out
    assert "shadowSampleRate" in out, out
