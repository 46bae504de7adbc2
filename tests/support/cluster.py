"""Helpers for tests against a real apiserver: waiting, applying manifests, reading
conditions and Events. The operator as a real subprocess is
`zeta_router_dev.local.operator_proc.OperatorProcess`."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from zeta_router.kube import ApiError, Kube, api_path

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# kind -> (apiVersion path prefix, plural, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("v1", "namespaces", False),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Secret": ("v1", "secrets", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Service": ("v1", "services", True),
    "Deployment": ("apps/v1", "deployments", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "CustomResourceDefinition": (
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        False,
    ),
    "ZetaRouter": ("zeta.ai/v1alpha1", "zetarouters", True),
}


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except ApiError as e:
            last = e
        if last and not isinstance(last, Exception):
            return cast(T, last)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def path_of(obj: Mapping[str, Any], namespace: str | None = None, name: bool = True) -> str:
    api_version, plural, namespaced = KINDS[str(obj["kind"])]
    meta = obj.get("metadata") or {}
    ns = (meta.get("namespace") or namespace) if namespaced else None
    return api_path(api_version, plural, ns, meta["name"] if name else None)


def apply(kube: Kube, obj: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """Create ``obj``, or replace it when it exists."""
    body = dict(obj)
    if namespace is not None and KINDS[str(body["kind"])][2]:
        body["metadata"] = {**body["metadata"], "namespace": namespace}
    try:
        return kube.create(path_of(body, namespace, name=False), body)
    except ApiError as e:
        if not e.conflict:
            raise
    # As client-go's RetryOnConflict: a controller (the operator adding its finalizer, say) may
    # write the object between our read and our replace; read again and retry.
    for attempt in range(5):
        live = kube.get(path_of(body, namespace))
        rv = live["metadata"]["resourceVersion"]
        body["metadata"] = {**body["metadata"], "resourceVersion": rv}
        try:
            return kube.replace(path_of(body, namespace), body)
        except ApiError as e:
            if not e.conflict or attempt == 4:
                raise
    raise AssertionError("unreachable")


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def condition_is(obj: Mapping[str, Any], kind: str, status: str) -> bool:
    c = conditions(obj).get(kind)
    return c is not None and c.get("status") == status


def events_for(
    kube: Kube, namespace: str, name: str, kind: str = "ZetaRouter"
) -> list[dict[str, Any]]:
    items = kube.list(api_path("v1", "events", namespace))["items"]
    return [
        e
        for e in items
        if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == kind
    ]


def children(kube: Kube, namespace: str, instance: str) -> dict[str, dict[str, dict[str, Any]]]:
    selector = f"app.kubernetes.io/managed-by=zeta-router,app.kubernetes.io/instance={instance}"
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in ("Deployment", "Service", "ConfigMap"):
        api_version, plural, _ = KINDS[kind]
        items = kube.list(api_path(api_version, plural, namespace), selector)["items"]
        out[kind] = {o["metadata"]["name"]: o for o in items}
    return out


def service_account_kubeconfig(kube: Kube, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``namespace/account`` (through a token Secret, which
    works on every Kubernetes version), so the operator runs with exactly its RBAC."""
    secret_name = f"{account}-token-test"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": secret_name,
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": account},
        },
    }
    apply(kube, secret)

    def token() -> str | None:
        data = kube.get(api_path("v1", "secrets", namespace, secret_name)).get("data") or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    tok = wait_for(token, 60, f"the token of service account {namespace}/{account}")
    cluster: dict[str, Any] = {"server": kube.server}
    if kube.ca_file:
        ca = Path(kube.ca_file).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    elif not kube.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": tok}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def unique_name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
