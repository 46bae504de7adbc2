"""The operator's credentials on the real apiserver: an exec credential plugin whose short-lived
tokens are really revoked keeps the operator (its own client and kopf's) reconciling long after
the first token died; and requests go through the CONNECT proxy that ``$HTTPS_PROXY`` names."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.config.kube_config import EXPIRY_SKEW_PREVENTION_DELAY

from support.cluster import REPO, load_yaml_docs, wait_for
from support.connect_proxy import ConnectProxy
from support.exec_plugin import MINTED_LABEL, REVOKE_AT, minting_plugin
from support.fixtures_cluster import ClusterHandle
from support.zetarouters import TIMEOUT, create_zr, patch_spec, sample, wait_children
from zeta_router.api.routing import CONFIGMAP_KEY
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("kubelet")]

TOKEN_LIFETIME = 10.0
"""Seconds after which the client is to renew a token (the plugin announces it valid for the
client's renewal margin plus this)."""
REVOKE_GRACE = 5.0
"""Seconds a token stays valid past that, for requests already under way; then it is deleted."""


def _operator_account() -> tuple[str, str]:
    docs = load_yaml_docs(REPO / "manifests" / "rbac.yaml")
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    return account["metadata"]["namespace"], account["metadata"]["name"]


def _kubeconfig(kube: Kube, user: dict[str, Any], path: Path) -> Path:
    cluster: dict[str, Any] = {"server": kube.server}
    if kube.ca_file:
        cluster["certificate-authority"] = kube.ca_file
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


class Revoker:
    """Deletes each minted token Secret once its revoke-at time passed: the apiserver then
    refuses that token, as a cloud provider's expired token is refused."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.revoked: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        path = api_path("v1", "secrets", self.namespace)
        while not self._stop.wait(0.5):
            try:
                for s in self.kube.list(path, label_selector=MINTED_LABEL)["items"]:
                    meta = s["metadata"]
                    if float(meta["annotations"][REVOKE_AT]) < time.time():
                        self.kube.delete(api_path("v1", "secrets", self.namespace, meta["name"]))
                        self.revoked.append(meta["name"])
            except ApiError:
                continue  # deleted meanwhile, or a busy apiserver: the next round

    def __enter__(self) -> Revoker:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        path = api_path("v1", "secrets", self.namespace)
        for s in self.kube.list(path, label_selector=MINTED_LABEL)["items"]:
            self.kube.delete(api_path("v1", "secrets", self.namespace, s["metadata"]["name"]))


@pytest.fixture
def exec_operator(
    kube: Kube,
    k8s: ClusterHandle,
    zr_crd: object,
    operator_kubeconfig: Path,  # the operator's RBAC, applied
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, Any, Revoker]]:
    sa_namespace, account = _operator_account()
    plugin = minting_plugin(
        tmp_path / "plugin",
        k8s.kubeconfig,
        sa_namespace,
        account,
        revoke_after=TOKEN_LIFETIME + REVOKE_GRACE,
        announced_lifetime=EXPIRY_SKEW_PREVENTION_DELAY.total_seconds() + TOKEN_LIFETIME,
    )
    cfg = _kubeconfig(kube, plugin.user(), tmp_path / "exec.kubeconfig")
    with Revoker(kube, sa_namespace) as revoker:
        proc = OperatorProcess(
            kubeconfig=cfg,
            namespaces=[namespace],
            log_path=tmp_path / "operator.log",
            drift_interval=3.0,
        ).start(timeout=120)
        try:
            yield proc, plugin, revoker
        finally:
            proc.stop()


def test_exec_plugin_tokens_keep_the_operator_reconciling_past_their_expiry(
    kube: Kube, namespace: str, exec_operator: tuple[OperatorProcess, Any, Revoker], tmp_path: Path
) -> None:
    proc, plugin, revoker = exec_operator
    zr = create_zr(kube, namespace, sample())
    wait_children(kube, namespace, zr)
    first_token = (tmp_path / "plugin" / "tokens").read_text().split()[0]

    # Well past the first token's death: two rounds of tokens revoked.
    wait_for(
        lambda: len(revoker.revoked) >= 2,
        3 * (TOKEN_LIFETIME + REVOKE_GRACE) + TIMEOUT,
        "two minted tokens revoked",
    )
    dead = Kube.from_kubeconfig(_kubeconfig(kube, {"token": first_token}, tmp_path / "dead"))
    with pytest.raises(ApiError) as refused:
        dead.get(api_path("v1", "namespaces", None, namespace))
    assert refused.value.status == 401

    # A change now is reconciled, with tokens minted after the first one was revoked.
    contexts = copy.deepcopy(zr["spec"]["router"]["contexts"])
    contexts[0]["thresholds"] = [round(x * 0.9 + 0.01, 4) for x in contexts[0]["thresholds"]]
    patch_spec(kube, namespace, "chat", {"router": {"contexts": contexts}})
    cm_path = api_path("v1", "configmaps", namespace, names.routing_configmap_name("chat"))

    def reconciled() -> bool:
        doc = yaml.safe_load(kube.get(cm_path)["data"][CONFIGMAP_KEY])
        ctx = next(c for c in doc["contexts"] if c["name"] == contexts[0]["name"])
        return bool(ctx["thresholds"] == contexts[0]["thresholds"])

    wait_for(reconciled, TIMEOUT, "the new thresholds in the routing ConfigMap")
    assert plugin.runs > 2, plugin.runs
    assert proc.proc is not None
    assert proc.proc.poll() is None
    log = proc.log_path.read_text()
    assert first_token not in log


def test_requests_go_through_the_https_proxy(
    k8s: ClusterHandle, kube: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        for var in ("NO_PROXY", "no_proxy", "https_proxy"):
            monkeypatch.delenv(var, raising=False)
        proxied = Kube.from_kubeconfig(k8s.kubeconfig)
        got = proxied.list(api_path("v1", "namespaces"))
        assert any(ns["metadata"]["name"] == "default" for ns in got["items"])
        apiserver = kube.server.split("://", 1)[1]
        assert proxy.connects
        assert set(proxy.connects) == {apiserver}
        assert not proxy.refused

        # $NO_PROXY naming the host bypasses it.
        before = len(proxy.connects)
        monkeypatch.setenv("NO_PROXY", apiserver.rsplit(":", 1)[0])
        Kube.from_kubeconfig(k8s.kubeconfig).get("/version")
        assert len(proxy.connects) == before


def test_the_operator_works_through_the_https_proxy(
    zr_crd: object, operator_kubeconfig: Path, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    # Both of the operator's clients are given the proxy: its own, and kopf (through login).
    with ConnectProxy() as proxy:
        proc = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            namespaces=[namespace],
            log_path=tmp_path / "operator.log",
            env={
                "HTTPS_PROXY": proxy.url,
                "https_proxy": proxy.url,
                "NO_PROXY": "",
                "no_proxy": "",
            },
        ).start(timeout=120)
        try:
            zr = create_zr(kube, namespace, sample())
            wait_children(kube, namespace, zr)
            # kopf's watches hold their tunnels open; the operator's own requests add more.
            assert len(proxy.connects) >= 2, proxy.connects
            assert set(proxy.connects) == {kube.server.split("://", 1)[1]}
        finally:
            proc.stop()
