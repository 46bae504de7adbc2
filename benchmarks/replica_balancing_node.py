"""The replica picker on the real node, through the entry Service: the CPU sample installed by the
chart (the operator as a pod), its `small` tier at two replicas, clients on this machine sending
to the entry Service's ClusterIP (kube-proxy spreads their connections over every pod's router),
each strategy of ``router.balancing`` set on the ZetaRouter in turn.

    scripts/with-root-mount.sh .venv/bin/python benchmarks/replica_balancing_node.py [--quick]

The workloads are those of ``benchmarks/replica_balancing.py`` (multi-turn conversations sharing
long system prompts; requests with no shared prefix), pinned to the `small` tier
(``X-Zeta-Tier``) so that every request is one the picker places. What differs from that
benchmark: the picks are made by three routers at once (one in each pod, each seeing only its own
requests) that reach the replicas by the tier's headless Service name, as on any cluster, and
the replicas are pods. Between strategies the benchmark waits until every router runs the
ZetaRouter's new routing file (``zeta_router_config_generation``).

Figures per strategy: TTFT p50/p99, requests/s, prompt tokens sent and computed (each small
pod's ``llamacpp:prompt_tokens_total``, read from the pod), and each small pod's share of the
requests (the routers' ``zeta_router_replica_requests_total``, summed over every router). Needs
what the real node needs (root, ``make prepare``) and its host-wide lock (waits for it). Never
fails on timings: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replica_balancing import (
    STRATEGIES,
    Result,
    _run,
    format_row,
    header,
    result_row,
    shared_jobs,
    unique_jobs,
)
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router.render.deployment import MODEL_PORT_NAME, ROUTER_ADMIN_PORT_NAME
from zeta_router_dev.cluster.node import RealNode, unavailable_reason
from zeta_router_dev.cluster.rollouts import NAME, Stack
from zeta_router_dev.cluster.workloads import helm, wait_until
from zeta_router_dev.images.build import ImageBuilder

Samples = list[tuple[dict[str, str], float]]


def _metrics(url: str) -> dict[str, Samples]:
    """A /metrics page's samples by sample name (counters with their ``_total``)."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, Samples] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _port(pod: dict[str, Any], name: str) -> int:
    for c in pod["spec"]["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    raise LookupError(f"pod {pod['metadata']['name']} has no port {name}")


def _ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


class Node:
    """The installed CPU sample, read from the apiserver and the pods themselves."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def pods(self) -> list[dict[str, Any]]:
        return [p for t in ("small", "large") for p in self.stack.pods(t) if _ready(p)]

    def small_model_urls(self) -> dict[str, str]:
        """Each ready small pod's model-server URL, by pod IP."""
        return {
            p["status"]["podIP"]: f"http://{p['status']['podIP']}:{_port(p, MODEL_PORT_NAME)}"
            for p in self.stack.pods("small")
            if _ready(p)
        }

    def router_metrics(self) -> list[dict[str, Samples]]:
        return [
            _metrics(f"http://{p['status']['podIP']}:{_port(p, ROUTER_ADMIN_PORT_NAME)}/metrics")
            for p in self.pods()
        ]

    def replica_requests(self) -> dict[str, float]:
        """Requests every router sent to each replica, by the replica's host (a pod IP)."""
        out: dict[str, float] = {}
        for metrics in self.router_metrics():
            for labels, value in metrics.get("zeta_router_replica_requests_total", []):
                host = labels.get("replica", "").split("//")[-1].split(":")[0]
                out[host] = out.get(host, 0.0) + value
        return out

    def computed_tokens(self) -> dict[str, float]:
        out = {}
        for ip, url in self.small_model_urls().items():
            samples = _metrics(url + "/metrics").get("llamacpp:prompt_tokens_total")
            out[ip] = sum(v for _, v in samples or [])
        return out

    def routers_at(self, generation: int) -> bool:
        for metrics in self.router_metrics():
            values = [v for _, v in metrics.get("zeta_router_config_generation", [])]
            if not values or values[0] < generation:
                return False
        return True

    def routing(self) -> dict[str, Any]:
        cm = self.stack.kube.get(
            api_path("v1", "configmaps", self.stack.namespace, names.routing_configmap_name(NAME))
        )
        doc: dict[str, Any] = yaml.safe_load(cm["data"]["routing.yaml"])
        return doc

    def set_strategy(self, strategy: str, timeout: float = 300) -> None:
        zr_path = api_path("zeta.ai/v1alpha1", "zetarouters", self.stack.namespace, NAME)
        self.stack.kube.patch(
            zr_path, {"spec": {"router": {"balancing": {"strategy": strategy}}}}, MERGE_PATCH
        )

        def generation_with_strategy() -> int | None:
            doc = self.routing()
            got = (doc.get("balancing") or {}).get("strategy", "prefix")
            return int(doc.get("generation", 0)) if got == strategy else None

        generation = wait_until(
            generation_with_strategy, timeout, f"the routing ConfigMap to say {strategy}"
        )
        wait_until(
            lambda: self.routers_at(generation),
            timeout,
            f"every router to run routing generation {generation}",
            interval=1.0,
        )


def run_one(node: Node, strategy: str, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    node.set_strategy(strategy)
    salt = f"node-{workload}-{strategy}-{time.monotonic_ns()}"
    jobs = shared_jobs(salt, args) if workload != "unique" else unique_jobs(salt, args)
    computed0, shares0 = node.computed_tokens(), node.replica_requests()
    res = Result()
    url = node.stack.entry_url + "/chat/completions"
    model = str(node.routing()["router"])  # the logical model name clients use
    pinned = {"X-Zeta-Tier": "small"}
    asyncio.run(_run(url, jobs, args.concurrency, res, model=model, headers=pinned))
    computed1, shares1 = node.computed_tokens(), node.replica_requests()
    ips = sorted(computed1)
    computed = sum(computed1[ip] - computed0.get(ip, 0.0) for ip in ips)
    shares = [shares1.get(ip, 0.0) - shares0.get(ip, 0.0) for ip in ips]
    return result_row(workload, strategy, res, computed, shares)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller workload (a smoke run)")
    parser.add_argument("--conversations", type=int, default=12)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--system-prompts", type=int, default=3)
    parser.add_argument(
        "--system-words", type=int, default=60,
        help="words per system prompt (the CPU sample's 2,048-token context is shared by its "
        "slots: keep conversations short)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=6, help="conversations at once")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--workloads", default="shared,unique", help="comma-separated subset")
    parser.add_argument("--strategies", default=" ".join(STRATEGIES), help="space-separated")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.turns, args.concurrency = 4, 2, 4
    reason = unavailable_reason()
    if reason is not None and "lock" not in reason:
        print(f"replica picker benchmark on the real node skipped: {reason}")
        return 0
    state_dir = Path(tempfile.mkdtemp(prefix="zeta-picker-")) / "node"
    node = RealNode(state_dir)
    info = node.up(timeout=600, lock_wait=600, images=ImageBuilder().build())
    kube = Kube.from_kubeconfig(info.kubeconfig)
    stack = Stack(
        kube,
        info.kubeconfig,
        node.layout.containerd_socket,
        namespace="zeta-picker",
        operator_namespace="zeta-picker-system",
        release="zeta-picker",
    )
    rows = []
    try:
        t0 = time.monotonic()
        stack.up()
        view = Node(stack)
        print(
            f"stack up in {time.monotonic() - t0:.0f} s: small at {len(view.small_model_urls())} "
            f"replicas, {len(view.pods())} routers; {args.conversations} conversations x "
            f"{args.turns} turns, {args.system_prompts} shared system prompts of "
            f"{args.system_words} words, {args.concurrency} at once, all pinned to small; load "
            f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        print(header(12), flush=True)
        for workload in [w for w in args.workloads.split(",") if w]:
            for strategy in args.strategies.split():
                row = run_one(view, strategy, workload, args)
                rows.append(row)
                print(format_row(row, 12), flush=True)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        try:
            helm(info.kubeconfig, "uninstall", stack.release, "--namespace",
                 stack.operator_namespace)  # fmt: skip
        except Exception as e:  # cleaning up must not hide the figures
            print(f"(helm uninstall: {e})", file=sys.stderr)
        for ns in (stack.namespace, stack.operator_namespace):
            with contextlib.suppress(ApiError):
                kube.delete(api_path("v1", "namespaces", None, ns))
        node.down()
        shutil.rmtree(state_dir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
