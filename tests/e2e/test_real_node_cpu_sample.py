"""The product on a real node, as a user runs it: the chart installs the operator as a pod (the
image built here), `manifests/samples/zetarouter-cpu.yaml` runs with the local model-server image,
a Prometheus discovers the pods from the apiserver through the chart's own monitors, and the
official openai client talks to the entry Service's ClusterIP from this machine.

Checked for real: both tiers' containers run and pass their startup, readiness and liveness
probes (the kubelet's own probe counters); answers come from both tiers, streamed too; the
scrape targets carry the labels of the label contract; the containers run as the rendered UIDs,
read-only where rendered, with no service-account token; and the control loop scales a tier from
those metrics, the new replica taking a share of the load.

The tests of this module share one install and run in order; the last one scales.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from support.cluster import apply, condition_is, events_for, wait_for
from support.deadlines import POD
from support.fixtures_node import RealNodeHandle
from support.node_install import module_install
from support.tools import run_tool
from zeta_router.autoscale.metrics import PrometheusSource, target_from
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router.render.deployment import MODEL_CONTAINER, ROUTER_CONTAINER
from zeta_router_dev.cluster.dns import lookup
from zeta_router_dev.cluster.node import NodeInfo
from zeta_router_dev.cluster.nodeconfig import BRIDGE_ADDRESS, CLUSTER_DOMAIN
from zeta_router_dev.cluster.workloads import (
    load_cpu_sample,
    localize_zetarouter,
    render_monitors,
    service_url,
    start_cluster_prometheus,
)
from zeta_router_dev.images.build import LLAMACPP_IMAGE, PROJECT_IMAGE, containerd_ref
from zeta_router_dev.local.prometheus import PrometheusServer

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]

PROMPT = "Write a short poem about the sea, in four lines."


@dataclass
class Stack:
    kube: Kube
    info: NodeInfo
    kubeconfig: Path
    namespace: str
    operator_namespace: str
    release: str
    name: str
    prometheus: PrometheusServer
    entry_url: str

    def pods(self, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.kube.list(
            api_path("v1", "pods", self.namespace), selector
        )["items"]
        return items

    def tier_pods(self, tier: str) -> list[dict[str, Any]]:
        return self.pods(f"app.kubernetes.io/instance={self.name},zeta.ai/tier={tier}")

    def zr(self) -> dict[str, Any]:
        return self.kube.get(api_path("zeta.ai/v1alpha1", "zetarouters", self.namespace, self.name))

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.entry_url}/v1", api_key="unused", max_retries=0, timeout=120
        )


@pytest.fixture(scope="module")
def stack(real_node: RealNodeHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    kube = real_node.kube
    with module_install(real_node, "zt-cpu") as install:
        namespace, operators, release = install.namespace, install.operators, install.release
        prometheus = start_cluster_prometheus(
            kube,
            real_node.info.server,
            real_node.info.ca_cert,
            tmp_path_factory.mktemp("prometheus"),
            render_monitors(release, operators, [namespace], "1s"),
            account_namespace=operators,
        )
        try:
            install.install_operator()
            sample = load_cpu_sample()
            name = sample["metadata"]["name"]
            zr = localize_zetarouter(sample, namespace=namespace, prometheus_url=prometheus.url)
            # The tests pin requests to a tier with X-Zeta-Tier, which routers refuse by default.
            zr["spec"]["router"]["allowForceTier"] = True
            apply(kube, zr)
            install.wait_for_zetarouter(name, "Ready", 300)
            yield Stack(
                kube,
                real_node.info,
                real_node.kubeconfig,
                namespace,
                operators,
                release,
                name,
                prometheus,
                service_url(kube, namespace, name),
            )
        finally:
            prometheus.stop()


def get_text(url: str, info: NodeInfo | None = None) -> str:
    request = urllib.request.Request(url)
    context = None
    if info is not None:
        request.add_header("Authorization", f"Bearer {info.admin_token}")
        context = ssl.create_default_context(cafile=str(info.ca_cert))
    with urllib.request.urlopen(request, timeout=10, context=context) as r:
        return str(r.read().decode())


def kubelet_probes(info: NodeInfo, namespace: str) -> dict[tuple[str, str, str], float]:
    """The kubelet's own count of successful probes: (pod, container, probe type) -> count
    (its metrics, through the apiserver's node proxy)."""
    text = get_text(f"{info.server}/api/v1/nodes/zeta-node/proxy/metrics/probes", info)
    out: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("prober_probe_total{") or f'namespace="{namespace}"' not in line:
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        clean = {k: v.strip('"') for k, v in labels.items()}
        if clean.get("result") == "successful":
            key = (clean["pod"], clean["container"], clean["probe_type"])
            out[key] = float(line.rsplit(" ", 1)[1])
    return out


def exec_in(stack: Stack, pod: str, container: str, script: str) -> str:
    proc = run_tool(
        "kubectl",
        [
            "--kubeconfig", str(stack.kubeconfig), "-n", stack.namespace, "exec", pod,
            "-c", container, "--", "sh", "-c", script,
        ],
        check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def test_both_tiers_run_real_containers_that_pass_their_probes(stack: Stack) -> None:
    deployments = {}
    for tier in ("small", "large"):
        dep = stack.kube.get(
            api_path("apps/v1", "deployments", stack.namespace, f"chat-cpu-{tier}")
        )
        deployments[tier] = dep
        (pod,) = stack.tier_pods(tier)
        assert pod["status"]["phase"] == "Running"
        assert condition_is(pod, "Ready", "True")
        statuses = {c["name"]: c for c in pod["status"]["containerStatuses"]}
        assert set(statuses) == {MODEL_CONTAINER, ROUTER_CONTAINER}
        for c in statuses.values():
            assert c["ready"] is True
            assert c["restartCount"] == 0
            assert c["containerID"].startswith("containerd://")
            assert "running" in c["state"]
        assert statuses[MODEL_CONTAINER]["image"] == containerd_ref(LLAMACPP_IMAGE)
        assert statuses[ROUTER_CONTAINER]["image"] == containerd_ref(PROJECT_IMAGE)

    # The kubelet ran every probe the operator rendered, against the containers, and they passed.
    expected = set()
    for tier, dep in deployments.items():
        (pod,) = stack.tier_pods(tier)
        for c in dep["spec"]["template"]["spec"]["containers"]:
            for key, kind in (
                ("startupProbe", "Startup"),
                ("readinessProbe", "Readiness"),
                ("livenessProbe", "Liveness"),
            ):
                if key in c:
                    expected.add((pod["metadata"]["name"], c["name"], kind))
    last: dict[tuple[str, str, str], float] = {}

    def all_probed() -> dict[tuple[str, str, str], float] | None:
        last.clear()
        last.update(kubelet_probes(stack.info, stack.namespace))
        return last if all(last.get(k, 0) >= 1 for k in expected) else None

    try:
        seen = wait_for(all_probed, POD, "a successful startup, readiness and liveness probe each")
    except AssertionError as e:
        raise AssertionError(f"{e}\nexpected {sorted(expected)}\nseen {last}") from None
    model_probes = {k for k in seen if k[1] == MODEL_CONTAINER}
    assert {k[2] for k in model_probes} == {"Startup", "Readiness", "Liveness"}


def replicas_resolved(stack: Stack, tier: str, count: int) -> list[str] | None:
    """The addresses the tier's replica name resolves to, once they are its ``count`` ready pods
    (what every router resolves to find the tier's replicas, docs/router.md): the headless
    Service's name, answered by the cluster DNS with the ready pods' addresses."""
    service = names.tier_replicas_service_name(stack.name, tier)
    ready = sorted(
        p["status"]["podIP"]
        for p in stack.tier_pods(tier)
        if not p["metadata"].get("deletionTimestamp")
        and condition_is(p, "Ready", "True")
        and p["status"].get("podIP")
    )
    found = sorted(
        lookup(f"{service}.{stack.namespace}.svc.{CLUSTER_DOMAIN}", BRIDGE_ADDRESS) or []
    )
    return found if len(ready) == count and found == ready else None


def test_a_tiers_replica_name_resolves_to_its_ready_pods(stack: Stack) -> None:
    found = wait_for(
        lambda: replicas_resolved(stack, "small", 1), POD, "the small tier's replica name"
    )
    assert all(ip.startswith("198.18.") for ip in found)  # pod addresses, not a ClusterIP


def test_the_openai_client_gets_answers_from_both_tiers_through_the_entry_service(
    stack: Stack,
) -> None:
    assert stack.entry_url.startswith("http://198.19.")  # a ClusterIP, through kube-proxy
    client = stack.client()
    answered: dict[str, int] = {}
    # The entry Service spreads requests over both tiers' pods; a router that gets a request
    # for the other tier forwards it to one of that tier's pods (its headless Service's DNS
    # name resolves to them; the tier's ClusterIP Service where it resolves to none).
    for tier in ("small", "large") * 3:
        raw = client.chat.completions.with_raw_response.create(
            model=stack.name,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=16,
            extra_headers={"X-Zeta-Tier": tier},
        )
        assert raw.headers["x-zeta-tier"] == tier
        completion = raw.parse()
        assert completion.choices[0].message.content
        answered[tier] = answered.get(tier, 0) + 1
    assert answered == {"small": 3, "large": 3}

    # Streaming: chunks arrive one by one, from the tier asked for.
    with client.chat.completions.with_streaming_response.create(
        model=stack.name,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=24,
        stream=True,
        extra_headers={"X-Zeta-Tier": "large"},
    ) as response:
        assert response.headers["x-zeta-tier"] == "large"
        chunks = [c for c in response.parse() if c.choices and c.choices[0].delta.content]
    assert len(chunks) > 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()

    # Without a forced tier the router scores the request and says which tier answered.
    raw = client.chat.completions.with_raw_response.create(
        model=stack.name, messages=[{"role": "user", "content": "Hi!"}], max_tokens=8
    )
    assert raw.headers["x-zeta-tier"] in ("small", "large")


def test_prometheus_discovers_the_pods_as_the_chart_monitors_say(stack: Stack) -> None:
    source = PrometheusSource(stack.prometheus.url, window_seconds=60, timeout_seconds=5)

    def active() -> list[dict[str, Any]] | None:
        data = json.loads(get_text(f"{stack.prometheus.url}/api/v1/targets?state=active"))
        targets: list[dict[str, Any]] = data["data"]["activeTargets"]
        pods = {
            p["metadata"]["name"] for p in stack.pods(f"app.kubernetes.io/instance={stack.name}")
        }
        ours = [
            t for t in targets
            if t["labels"].get("pod") in pods and t["health"] == "up"
        ]  # fmt: skip
        return ours if len(ours) == 2 * len(pods) else None

    targets = wait_for(active, POD, "a healthy target per pod and port (model, router)")
    for t in targets:
        labels = t["labels"]
        (pod,) = stack.pods(
            f"app.kubernetes.io/instance={stack.name},zeta.ai/tier={labels['zeta_ai_tier']}"
        )
        # The label contract of zeta_router.autoscale.metrics, from the chart's PodMonitor.
        assert labels["namespace"] == stack.namespace
        assert labels["pod"] == pod["metadata"]["name"]
        assert labels["app_kubernetes_io_instance"] == stack.name
        expected = "router" if labels["container"] == ROUTER_CONTAINER else "model-server"
        assert labels["app_kubernetes_io_component"] == expected
        assert t["scrapeUrl"].startswith(f"http://{pod['status']['podIP']}:")
    # The operator, through its metrics Service (the chart's ServiceMonitor).
    operator_up = wait_for(
        lambda: source.query(
            f'up{{namespace="{stack.operator_namespace}",endpoint="metrics"}} == 1'
        ),
        60,
        "the operator's metrics target",
    )
    assert operator_up[0]["metric"]["service"].endswith("-operator-metrics")

    # What the control loop reads: one ready replica per tier, series for both engines' names.
    target = target_from(
        stack.namespace, stack.name, [("small", "llamacpp"), ("large", "llamacpp")], ["default"]
    )
    snap = wait_for(
        lambda: (
            (s := source.snapshot(target)).available
            and s.tiers["small"].ready_replicas == 1
            and s.tiers["large"].ready_replicas == 1
            and s
        ),
        60,
        "a metrics snapshot with one ready replica per tier",
    )
    assert snap.tiers["large"].waiting == 0
    obj = stack.zr()
    wait_for(
        lambda: condition_is(stack.zr(), "MetricsAvailable", "True"),
        60,
        f"MetricsAvailable=True (status: {obj.get('status')})",
    )


TRY_WRITE_ROOT = (
    "(touch /.zeta-write-check 2>&1 && rm -f /.zeta-write-check && echo written) | head -n 1"
)
"""Try to create a file at the root of the container's filesystem; one line says how it went.
A mount table differs between kernels and chroots (a read-only root read `rw` in /proc/mounts
in a plain chroot): the attempt is what counts."""


def root_is_read_only(line: str) -> bool:
    """From the line of :data:`TRY_WRITE_ROOT`: the root refused the write as read-only (a
    read-only mount answers EROFS before any permission check; a writable root refuses a
    non-root user with "Permission denied" instead, or takes the file)."""
    return "Read-only file system" in line


def test_security_settings_are_real_in_the_containers(stack: Stack) -> None:
    for tier in ("small", "large"):
        (pod,) = stack.tier_pods(tier)
        name = pod["metadata"]["name"]
        assert pod["spec"]["automountServiceAccountToken"] is False
        for c in pod["spec"]["containers"]:
            ctx = c["securityContext"]
            out = exec_in(
                stack,
                name,
                c["name"],
                f"id -u; {TRY_WRITE_ROOT}; "
                "ls /var/run/secrets/kubernetes.io 2>&1; grep CapEff /proc/self/status",
            )
            uid, root_write, secrets, caps = out.strip().splitlines()[:4]
            assert int(uid) == ctx["runAsUser"], out
            assert root_is_read_only(root_write) == ctx.get("readOnlyRootFilesystem", False), out
            assert "No such file or directory" in secrets, out  # no token mounted
            assert caps.split()[1] == "0000000000000000", out  # every capability dropped
        # The router may write only where an emptyDir is mounted.
        out = exec_in(stack, name, ROUTER_CONTAINER, "touch /x 2>&1; touch /tmp/x && echo tmp-ok")
        assert "Read-only file system" in out
        assert "tmp-ok" in out

    # The operator's pod, from the chart: its own UID and read-only root; it needs its token.
    (op,) = stack.kube.list(
        api_path("v1", "pods", stack.operator_namespace), "app.kubernetes.io/component=operator"
    )["items"]
    proc = run_tool(
        "kubectl",
        [
            "--kubeconfig", str(stack.kubeconfig), "-n", stack.operator_namespace, "exec",
            op["metadata"]["name"], "--", "sh", "-c",
            f"id -u; {TRY_WRITE_ROOT}; ls /var/run/secrets/kubernetes.io/serviceaccount",
        ],
    )  # fmt: skip
    uid, root_write, *files = proc.stdout.strip().splitlines()
    assert int(uid) == 65532
    assert root_is_read_only(root_write), proc.stdout
    assert "token" in files


class Load:
    """Keeps ``concurrency`` requests for one tier in flight through the entry Service, each on
    a new connection, as from many clients: kube-proxy balances connections, not requests, so
    one client's kept-alive connections would stay on the pods that existed when it opened
    them."""

    def __init__(self, stack: Stack, tier: str, concurrency: int) -> None:
        self.client = openai.OpenAI(
            base_url=f"{stack.entry_url}/v1",
            api_key="unused",
            max_retries=0,
            timeout=120,
            default_headers={"Connection": "close"},
        )
        self.model = stack.name
        self.tier = tier
        self.stopped = threading.Event()
        self.errors: list[str] = []
        self.answered = 0
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": PROMPT}],
                    max_tokens=48,
                    extra_headers={"X-Zeta-Tier": self.tier},
                )
                self.answered += 1
            except openai.OpenAIError as e:
                self.errors.append(str(e))
                time.sleep(0.2)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(150)


def test_the_control_loop_scales_a_tier_and_the_new_replica_serves(stack: Stack) -> None:
    source = PrometheusSource(stack.prometheus.url, window_seconds=60, timeout_seconds=5)
    dep_path = api_path("apps/v1", "deployments", stack.namespace, "chat-cpu-large")
    assert stack.kube.get(dep_path)["spec"]["replicas"] == 1
    with Load(stack, "large", concurrency=6) as load:
        wait_for(
            lambda: stack.kube.get(dep_path)["spec"]["replicas"] == 2,
            180,
            "the control loop to scale the large tier to 2 (queue per replica over target)",
        )
        wait_for(
            lambda: (
                len([p for p in stack.tier_pods("large") if condition_is(p, "Ready", "True")]) == 2
            ),
            180,
            "the second large pod to pass its probes",
        )
        wait_for(
            lambda: replicas_resolved(stack, "large", 2),
            POD,
            "the large tier's replica name to resolve to both ready pods",
        )
        pods = {p["metadata"]["name"] for p in stack.tier_pods("large")}

        # Real capacity: both large pods answer part of the load (every router picks among the
        # tier's replicas), as their own llama.cpp counters in Prometheus show.
        def both_serving() -> dict[str, float] | None:
            rows = source.query(
                "sum by (pod) (increase(llamacpp:tokens_predicted_total"
                f'{{namespace="{stack.namespace}",zeta_ai_tier="large"}}[30s]))'
            )
            by_pod = {r["metric"]["pod"]: float(r["value"][1]) for r in rows}
            return by_pod if pods <= set(by_pod) and all(by_pod[p] > 0 for p in pods) else None

        wait_for(both_serving, POD, "both large pods to generate tokens")
    assert load.answered > 0
    # On a busy machine a queued request may time out (504); nothing else may fail.
    assert all("504" in e or "timed out" in e.lower() for e in load.errors), load.errors[:3]
    reasons = {e.get("reason") for e in events_for(stack.kube, stack.namespace, stack.name)}
    assert "ScaledUp" in reasons
    tiers = {t["name"]: t for t in stack.zr()["status"]["tiers"]}
    assert tiers["large"]["desiredReplicas"] == 2
