"""Fixtures for tests against a real Kubernetes apiserver.

- ``k8s``: the cluster for the whole session: ``$KUBECONFIG`` when set (a kind cluster, say),
  otherwise the local control plane started with the same code as `zeta-router cluster up`, in a
  temporary state directory, stopped at the end.
- ``kube``: a JSON client with admin rights.
- ``kubelet``: the kubelet stand-in (a child process) for the session; pods in namespaces
  labelled ``zeta.ai/kubelet-hold=true`` run but stay unready.
- ``zr_crd``: the ZetaRouter CRD from ``crds/zetarouter.yaml``, installed and established.
- ``operator_kubeconfig``: credentials of the operator's ServiceAccount from
  ``manifests/rbac.yaml``, so the operator under test has exactly the rights we ship.
- ``namespace``: a fresh namespace per test (deleted afterwards, without waiting), served by
  that ServiceAccount as the default install serves a namespace: with the Role and RoleBinding
  of ``manifests/role.yaml`` bound there, nothing more.
- ``operator``: ``zeta-router operator`` serving that namespace as a real subprocess, with a
  short drift interval; the test may stop, kill or restart it.
- ``addresses`` and ``start_operator``: for tests whose operator reads routers' admin ports
  (learning, wake, fetch limits). The stand-in kubelet's pod addresses lead nowhere, so the
  operator finds each pod's router through the ``addresses`` file (pod IP -> admin address) the
  test writes; ``start_operator(env)`` starts it like ``operator`` with that file and any
  further environment (shorter loop intervals), stopped at the end of the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cluster import (
    REPO,
    apply,
    load_yaml_docs,
    service_account_kubeconfig,
    unique_name,
    wait_for,
)
from zeta_router.controller.routers import ADDRESSES_ENV
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.local.operator_proc import OperatorProcess

DRIFT_INTERVAL = 3.0

# start_operator's value: start the operator with this further environment.
StartOperator = Callable[[dict[str, str]], OperatorProcess]


@dataclass(frozen=True)
class ClusterHandle:
    kubeconfig: Path
    local: bool  # started by the fixture (else: $KUBECONFIG)
    workdir: Path


@pytest.fixture(scope="session")
def k8s(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    workdir = tmp_path_factory.mktemp("k8s")
    external = os.environ.get("KUBECONFIG")
    if external:
        yield ClusterHandle(Path(external.split(os.pathsep)[0]), local=False, workdir=workdir)
        return
    from zeta_router_dev.cluster.binaries import MissingBinaryError
    from zeta_router_dev.cluster.controlplane import ControlPlaneError, LocalControlPlane

    plane = LocalControlPlane(workdir / "control-plane")
    try:
        state = plane.up(timeout=180)
    except (MissingBinaryError, ControlPlaneError) as e:
        pytest.fail(f"cannot start the local control plane (run `make prepare`): {e}")
    try:
        yield ClusterHandle(state.kubeconfig, local=True, workdir=workdir)
    finally:
        plane.down(keep_files=False)


@pytest.fixture(scope="session")
def kube(k8s: ClusterHandle) -> Kube:
    return Kube.from_kubeconfig(k8s.kubeconfig)


@pytest.fixture(scope="session")
def kubelet(k8s: ClusterHandle) -> Iterator[None]:
    from zeta_router_dev.local.kubelet import KubeletProcess

    proc = KubeletProcess(
        k8s.kubeconfig,
        k8s.workdir / "kubelet.log",
        node_name=unique_name("zeta-test-node"),
        delete_node_on_exit=True,
    ).start()
    yield
    proc.stop()


@pytest.fixture(scope="session")
def zr_crd(kube: Kube) -> dict[str, object]:
    crd_path = REPO / "crds" / "zetarouter.yaml"
    (crd,) = load_yaml_docs(crd_path)
    apply(kube, crd)
    name = crd["metadata"]["name"]

    def established() -> bool:
        live = kube.get(
            api_path("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)
        )
        conds = {c["type"]: c["status"] for c in (live.get("status") or {}).get("conditions") or []}
        return conds.get("Established") == "True"

    wait_for(established, 60, f"CRD {name} to be established")
    return crd


@pytest.fixture(scope="session")
def operator_kubeconfig(kube: Kube, k8s: ClusterHandle) -> Path:
    docs = load_yaml_docs(REPO / "manifests" / "rbac.yaml")
    namespaces = {d["metadata"]["namespace"] for d in docs if d["kind"] == "ServiceAccount"}
    for ns in namespaces:
        apply(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for doc in docs:
        apply(kube, doc)
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    return service_account_kubeconfig(
        kube,
        account["metadata"]["namespace"],
        account["metadata"]["name"],
        k8s.workdir / "operator.kubeconfig",
    )


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40]
    name = unique_name(f"zt-{base.strip('-')}")
    kube.create(
        api_path("v1", "namespaces"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    for doc in load_yaml_docs(REPO / "manifests" / "role.yaml"):
        apply(kube, doc, name)
    yield name
    try:
        kube.delete(api_path("v1", "namespaces", None, name))
    except ApiError as e:
        if not e.not_found:
            raise


@pytest.fixture
def operator(
    zr_crd: object,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        kubeconfig=operator_kubeconfig,
        namespaces=[namespace],
        log_path=tmp_path / "operator.log",
        drift_interval=DRIFT_INTERVAL,
    ).start()
    yield proc
    proc.stop()


@pytest.fixture
def addresses(tmp_path: Path) -> Path:
    path = tmp_path / "router-addresses.json"
    path.write_text("{}")
    return path


@pytest.fixture
def start_operator(
    zr_crd: object,
    kubelet: None,
    operator_kubeconfig: Path,
    namespace: str,
    tmp_path: Path,
    addresses: Path,
) -> Iterator[StartOperator]:
    started: list[OperatorProcess] = []

    def start(env: dict[str, str]) -> OperatorProcess:
        proc = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            namespaces=[namespace],
            log_path=tmp_path / "operator.log",
            drift_interval=DRIFT_INTERVAL,
            env={ADDRESSES_ENV: str(addresses), **env},
        ).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
