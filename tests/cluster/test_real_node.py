"""The real local node itself (`zeta-router cluster up --node real`): pods run from the images
built here, reach the apiserver and Services by their cluster DNS names, `kubectl exec` and
`logs` work through the apiserver, one real node per machine, and `cluster down` leaves the
machine as it was, even after the kubelet was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.cluster import condition_is, unique_name, wait_for
from support.fixtures_node import POD_DEADLINE, NodeSession, RealNodeHandle
from support.tools import run_tool
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.cluster import lock
from zeta_router_dev.cluster.controlplane import kubernetes_service_ip
from zeta_router_dev.cluster.hostchanges import host_snapshot
from zeta_router_dev.cluster.node import RealNode
from zeta_router_dev.cluster.nodeconfig import BRIDGE, BRIDGE_ADDRESS, NODE_NAME, RUN_DIR
from zeta_router_dev.cluster.workloads import ensure_namespace
from zeta_router_dev.images.build import PROJECT_IMAGE

pytestmark = [pytest.mark.node, pytest.mark.cluster]

# Run in a pod: resolve a Service by its cluster DNS name and call it, and the apiserver through
# the `kubernetes` Service with the pod's own CA bundle (its certificate must name them). Each
# call's timeout is a deadline sized for a loaded machine.
PROBE = """
import json, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
api = "https://kubernetes.default.svc.cluster.local"
version = json.load(urllib.request.urlopen(api + "/version", context=ctx, timeout=60))
short = json.load(urllib.request.urlopen("https://kubernetes.default.svc/version",
                                         context=ctx, timeout=60))
web = urllib.request.urlopen("http://web." + NS + ".svc:8080/", timeout=60).read().decode()
print(json.dumps({
    "kubernetes": socket.gethostbyname("kubernetes.default.svc.cluster.local"),
    "version": version["gitVersion"], "short": short["gitVersion"], "web": web.strip(),
}))
"""


def kubectl(node: RealNodeHandle, *args: str, check: bool = True) -> str:
    return run_tool("kubectl", ["--kubeconfig", str(node.kubeconfig), *args], check=check).stdout


def pod(name: str, namespace: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": PROJECT_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    **extra,
                }
            ],
        },
    }


@pytest.fixture
def scratch(real_node: RealNodeHandle) -> Any:
    kube = real_node.kube
    ns = unique_name("zt-node")
    ensure_namespace(kube, ns)  # the tests create pods directly: they need its token first
    yield ns
    try:
        kube.delete(api_path("v1", "namespaces", None, ns))
    except ApiError as e:
        if not e.not_found:
            raise


def test_pods_reach_services_and_the_apiserver_by_their_cluster_names(
    real_node: RealNodeHandle, scratch: str
) -> None:
    kube = real_node.kube
    node = kube.get(api_path("v1", "nodes", None, NODE_NAME))
    assert condition_is(node, "Ready", "True")
    assert {"type": "InternalIP", "address": BRIDGE_ADDRESS} in node["status"]["addresses"]
    # The `kubernetes` Service has the apiserver's bridge address as its endpoint.
    ep = kube.get(api_path("v1", "endpoints", "default", "kubernetes"))
    assert ep["subsets"][0]["addresses"][0]["ip"] == BRIDGE_ADDRESS

    web = pod(
        "web", scratch, ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    )  # fmt: skip
    kube.create(api_path("v1", "pods", scratch), web)
    kube.create(
        api_path("v1", "services", scratch),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": scratch},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": "http"}]},
        },
    )
    client = pod("client", scratch, ["sleep", "3600"])
    kube.create(api_path("v1", "pods", scratch), client)
    for name in ("web", "client"):
        wait_for(
            lambda n=name: condition_is(
                kube.get(api_path("v1", "pods", scratch, n)), "Ready", "True"
            ),
            POD_DEADLINE,
            f"pod {name} Ready",
        )
    # kubectl exec goes apiserver -> kubelet (client certificate) -> containerd -> the container.
    out = wait_for(
        lambda: kubectl(
            real_node, "-n", scratch, "exec", "client", "--", "python3", "-c",
            f"NS = {scratch!r}\n{PROBE}", check=False,
        ).strip(),
        POD_DEADLINE,
        "the probe to run in the pod",
    )  # fmt: skip
    seen = json.loads(out.splitlines()[-1])
    assert seen["kubernetes"] == kubernetes_service_ip()
    assert seen["version"] == seen["short"] == "v1.20.2"
    assert "passwd" in seen["web"]  # the directory listing of /etc, from the other pod
    web_pod = kube.get(api_path("v1", "pods", scratch, "web"))
    logs = kubectl(real_node, "-n", scratch, "logs", "web")
    assert '"GET / HTTP/1.1" 200' in logs
    assert web_pod["status"]["podIP"].startswith("198.18.0.")


def test_status_reports_the_node_and_a_second_node_is_refused(
    real_node: RealNodeHandle, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zeta_router", "cluster", *args],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip

    status = cli("status", "--state-dir", str(real_node.node.state_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"node {NODE_NAME} Ready" in status.stdout
    for component in ("kubelet", "containerd", "kube-proxy", "kube-scheduler", "cluster-dns"):
        assert any(
            line.split()[0] == component and "running" in line
            for line in status.stdout.splitlines()
            if line.strip()
        ), status.stdout

    other = tmp_path / "other"
    second = cli("up", "--node", "real", "--state-dir", str(other))
    assert second.returncode == 1
    assert str(lock.LOCK_PATH) in second.stderr
    assert str(real_node.node.state_dir) in second.stderr  # who holds it
    assert "zeta-router cluster down" in second.stderr
    assert not (other / "host.json").exists()  # nothing was recorded, nothing changed
    assert condition_is(
        real_node.kube.get(api_path("v1", "nodes", None, NODE_NAME)), "Ready", "True"
    )


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(snapshot, sort_keys=True))


@pytest.mark.node_exclusive
def test_the_session_node_went_down_cleanly_and_down_after_a_killed_kubelet_restores_all(
    node_session: NodeSession, node_tmp: Path
) -> None:
    # The session's node, if it ran, was brought down the normal way: nothing is left.
    node_session.release()
    if node_session.before is not None:
        assert comparable(host_snapshot(node_session.owned_dirs())) == comparable(
            node_session.before
        )
    images = node_session.images()
    node = RealNode(node_tmp / "node")
    owned = [node.state_dir, RUN_DIR]
    # Hold the lock across the whole sequence: nobody else's node may start in between.
    with lock.held(wait=600, note=str(node.state_dir)):
        before = host_snapshot(owned)
        info = node.up(timeout=300, images=images, take_lock=False)
        kube = Kube.from_kubeconfig(info.kubeconfig)
        # Something to clean up: a pod with a network namespace, veth, CNI chains, mounts.
        kube.create(api_path("v1", "pods", "default"), pod("victim", "default", ["sleep", "600"]))
        wait_for(
            lambda: condition_is(
                kube.get(api_path("v1", "pods", "default", "victim")), "Ready", "True"
            ),
            POD_DEADLINE,
            "the pod to run",
        )
        during = host_snapshot(owned)
        assert BRIDGE in during["links"]
        assert any(c.startswith("-N KUBE-") for c in during["iptables"]["iptables/nat"])
        assert during["mounts"]
        state = node.state()
        assert state is not None
        kubelet = state.processes["kubelet"]
        os.kill(kubelet.pid, signal.SIGKILL)
        wait_for(lambda: not kubelet.alive(), 60, "the kubelet to die")
        stopped = node.down()
        assert "kubelet" not in stopped  # it was already dead
        assert "containerd" in stopped
        after = host_snapshot(owned)
        assert comparable(after) == comparable(before)
        for rec in state.processes.values():
            assert not rec.alive(), rec.name
        assert not node.state_dir.exists()
        assert not RUN_DIR.exists()
    # The lock is free again (unless a process this test runs under holds it: `flock LOCK make
    # test`).
    assert lock.holder() is None or lock.held_by_ancestor()
