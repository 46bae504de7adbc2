"""What runs on a real local node the way a user would run it on a cluster: the operator
installed by the Helm chart as a pod (with the locally built image), a ZetaRouter from the CPU
sample with the local model-server image, and a Prometheus that discovers pods from the apiserver
through the chart's own monitors (``zeta_router_dev.local.monitors``). Used by the tests and by
``zeta-router demo`` on a real node.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from zeta_router.kube import ApiError, Kube, api_path
from zeta_router_dev.cluster.binaries import find_tool
from zeta_router_dev.cluster.kubeconfig import build_kubeconfig, write_kubeconfig
from zeta_router_dev.cluster.nodeconfig import BRIDGE_ADDRESS
from zeta_router_dev.images.build import LLAMACPP_IMAGE, LLAMACPP_MODEL, PROJECT_IMAGE
from zeta_router_dev.local.kube_sd import KubeSdServer, via_http_sd
from zeta_router_dev.local.monitors import ApiAccess, monitors_in, scrape_configs
from zeta_router_dev.local.prometheus import (
    PrometheusServer,
    start_prometheus,
    supports_kubernetes_sd,
)

REPO: Final = Path(__file__).resolve().parents[3]
CHART: Final = REPO / "charts" / "zeta-router"
CPU_SAMPLE: Final = REPO / "manifests" / "samples" / "zetarouter-cpu.yaml"
PROMETHEUS_ACCOUNT: Final = "zeta-local-prometheus"


class WorkloadError(RuntimeError):
    """Something to run on the node could not be installed; the message says what and why."""


def helm(kubeconfig: Path, *args: str, timeout: float = 300) -> str:
    """Run the helm that `make tools` fetches against ``kubeconfig``; its output."""
    proc = subprocess.run(
        [str(find_tool("helm")), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise WorkloadError(f"helm {' '.join(args[:2])} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def operator_values(
    watch_namespaces: Sequence[str], peering: str, tick_seconds: float | None = 1.0
) -> list[str]:
    """``helm --set`` arguments: the local image (never pulled: it is in containerd), the
    watched namespaces, a peering object of its own (several installs may share a cluster),
    text logs, and a short control-loop tick."""
    repo, _, tag = PROJECT_IMAGE.partition(":")
    values = [
        f"image.repository={repo}",
        f"image.tag={tag}",
        "image.pullPolicy=Never",
        f"operator.peering.name={peering}",
        "operator.logFormat=text",
        "operator.driftInterval=5",
    ]
    values += [f"operator.watchNamespaces[{i}]={ns}" for i, ns in enumerate(watch_namespaces)]
    args = [arg for v in values for arg in ("--set", v)]
    if tick_seconds is not None:
        args += [
            "--set", "operator.extraEnv[0].name=ZETA_ROUTER_AUTOSCALE_TICK",
            "--set-string", f"operator.extraEnv[0].value={tick_seconds:g}",
        ]  # fmt: skip
    return args


def install_operator(
    kubeconfig: Path,
    release: str,
    namespace: str,
    watch_namespaces: Sequence[str],
    peering: str,
    timeout: float = 180,
) -> str:
    """``helm install`` the chart as a user would, and wait until the operator pod is Ready.
    The watched namespaces are created first when missing (the chart puts a peering object in
    each)."""
    kube = Kube.from_kubeconfig(kubeconfig)
    for ns in watch_namespaces:
        ensure_namespace(kube, ns)
    return helm(
        kubeconfig,
        "install", release, str(CHART),
        "--namespace", namespace, "--create-namespace",
        *operator_values(watch_namespaces, peering),
        "--wait", "--timeout", f"{int(timeout)}s",
        timeout=timeout + 60,
    )  # fmt: skip


def render_monitors(
    release: str, namespace: str, watch_namespaces: Sequence[str], interval: str
) -> list[dict[str, Any]]:
    """The chart's PodMonitor (every ZetaRouter pod, both ports) and the operator's
    ServiceMonitor, as ``helm template`` renders them for this install."""
    proc = subprocess.run(
        [
            str(find_tool("helm")), "template", release, str(CHART), "--namespace", namespace,
            "--set", "monitoring.podMonitor.enabled=true",
            "--set", "monitoring.serviceMonitor.enabled=true",
            "--set", "monitoring.serviceMonitor.zetaRouters=false",
            "--set", f"monitoring.interval={interval}",
            *[
                arg
                for i, ns in enumerate(watch_namespaces)
                for arg in ("--set", f"operator.watchNamespaces[{i}]={ns}")
            ],
        ],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise WorkloadError(f"helm template failed:\n{proc.stderr}")
    found = monitors_in(yaml.safe_load_all(proc.stdout))
    if not found:
        raise WorkloadError("the chart rendered no PodMonitor or ServiceMonitor")
    return [dict(m) for m in found]


def prometheus_token(kube: Kube, namespace: str) -> str:
    """A ServiceAccount for Prometheus' service discovery with only what it needs (read pods,
    Services, Endpoints), and its token."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": PROMETHEUS_ACCOUNT},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods", "services", "endpoints"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{PROMETHEUS_ACCOUNT}-{namespace}"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PROMETHEUS_ACCOUNT,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": PROMETHEUS_ACCOUNT, "namespace": namespace}
        ],
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": PROMETHEUS_ACCOUNT, "namespace": namespace},
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": f"{PROMETHEUS_ACCOUNT}-token",
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": PROMETHEUS_ACCOUNT},
        },
    }
    ensure_namespace(kube, namespace)
    for path, body in (
        (api_path("rbac.authorization.k8s.io/v1", "clusterroles"), role),
        (api_path("rbac.authorization.k8s.io/v1", "clusterrolebindings"), binding),
        (api_path("v1", "serviceaccounts", namespace), account),
        (api_path("v1", "secrets", namespace), secret),
    ):
        try:
            kube.create(path, body)
        except ApiError as e:
            if not e.conflict:
                raise
    secret_path = api_path("v1", "secrets", namespace, f"{PROMETHEUS_ACCOUNT}-token")

    def token() -> str | None:
        data = kube.get(secret_path).get("data") or {}
        return base64.b64decode(data["token"]).decode() if "token" in data else None

    return str(wait_until(token, 60, "Prometheus' service-account token"))


def start_cluster_prometheus(
    kube: Kube,
    server: str,
    ca_cert: Path,
    workdir: Path,
    monitors: Sequence[Mapping[str, Any]],
    account_namespace: str,
    scrape_interval: float = 1.0,
    die_with_parent: bool = False,
) -> PrometheusServer:
    """Prometheus on the node's bridge address (pods, the operator included, reach it there),
    discovering and scraping pods as ``monitors`` say."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = prometheus_token(kube, account_namespace)
    token_file = workdir / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    access = ApiAccess(server, str(ca_cert), str(token_file))
    jobs = scrape_configs(monitors, access, interval=f"{scrape_interval:g}s")
    sd: KubeSdServer | None = None
    if not supports_kubernetes_sd():
        # Debian's Prometheus lacks Kubernetes discovery: the same discovery, with the same
        # identity, served over HTTP SD; the monitors' relabelling runs unchanged.
        sd_kubeconfig = write_kubeconfig(
            workdir / "sd.kubeconfig", build_kubeconfig(server, ca_cert.read_bytes(), token)
        )
        sd = KubeSdServer(Kube.from_kubeconfig(sd_kubeconfig)).start()
        jobs = via_http_sd(jobs, sd.url, refresh=f"{scrape_interval:g}s")
    try:
        prometheus = start_prometheus(
            [],
            scrape_interval=scrape_interval,
            data_dir=workdir / "data",
            host=BRIDGE_ADDRESS,
            jobs=jobs,
            die_with_parent=die_with_parent,
        )
    except BaseException:
        if sd is not None:
            sd.stop()
        raise
    if sd is not None:
        prometheus.companions.append(sd.stop)
    return prometheus


def localize_zetarouter(
    doc: Mapping[str, Any],
    *,
    namespace: str,
    prometheus_url: str | None = None,
    cpu_request: str = "100m",
    memory_request: str = "256Mi",
    memory_limit: str = "1Gi",
) -> dict[str, Any]:
    """A ZetaRouter (the CPU sample, say) made to run here: every llama.cpp tier serves the
    local image's model (no download: the node has no registry and no model hub), one CPU
    thread and requests a 2-core node can hold; with ``prometheus_url`` the control loop is on,
    reading that Prometheus, on a short interval."""
    out = copy.deepcopy(dict(doc))
    out["metadata"] = {**out.get("metadata", {}), "namespace": namespace}
    for tier in out["spec"]["tiers"]:
        if tier.get("engine") != "llamacpp":
            continue
        tier["image"] = LLAMACPP_IMAGE
        tier["model"] = LLAMACPP_MODEL
        args = list(tier.get("args") or [])
        tier["args"] = _with_flag(_with_flag(args, "--threads", "1"), "--ctx-size", "2048")
        tier["resources"] = {
            "requests": {"cpu": cpu_request, "memory": memory_request},
            "limits": {"memory": memory_limit},
        }
    router = out["spec"].setdefault("router", {})
    router["resources"] = {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    if prometheus_url is not None:
        out["spec"]["autoscaling"] = {
            "enabled": True,
            "mode": "apply",
            "prometheus": {"url": prometheus_url, "timeout": "3s"},
            "interval": "2s",
            # llama.cpp on one CPU thread is slow to first token: scale on queues.
            "targets": {"queuePerReplica": 1, "ttftP90Seconds": 60},
            "scaleDownDelay": "1h",
        }
    return out


def _with_flag(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def load_cpu_sample() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CPU_SAMPLE.read_text())
    return doc


def ensure_namespace(kube: Kube, name: str) -> None:
    try:
        kube.create(
            api_path("v1", "namespaces"),
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    except ApiError as e:
        if not e.conflict:
            raise


def service_url(kube: Kube, namespace: str, name: str, port_name: str | None = None) -> str:
    """``http://<ClusterIP>:<port>`` of a Service (reachable from this machine through
    kube-proxy's rules)."""
    svc = kube.get(api_path("v1", "services", namespace, name))
    ports = svc["spec"]["ports"]
    port = next((p for p in ports if port_name is None or p.get("name") == port_name), ports[0])
    return f"http://{svc['spec']['clusterIP']}:{port['port']}"


def wait_until(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll ``probe`` until it returns something truthy; :class:`WorkloadError` after
    ``timeout`` seconds, with the last value or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (ApiError, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            raise WorkloadError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def debug_dump(kube: Kube, namespace: str) -> str:
    """Pods and recent events of a namespace, for failure messages."""
    lines = []
    with_events = kube.list(api_path("v1", "events", namespace)).get("items", [])
    for pod in kube.list(api_path("v1", "pods", namespace)).get("items", []):
        st = pod.get("status") or {}
        containers = [
            (c.get("name"), c.get("ready"), c.get("state"))
            for c in st.get("containerStatuses") or []
        ]
        lines.append(f"pod {pod['metadata']['name']}: {st.get('phase')} {json.dumps(containers)}")
    for ev in with_events[-15:]:
        lines.append(f"event {ev.get('reason')}: {ev.get('message')}")
    return "\n".join(lines)
