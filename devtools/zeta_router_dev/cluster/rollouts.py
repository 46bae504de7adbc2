"""Day-2 checks on a real node, under client load through the entry Service: a tier template
change, an operator upgrade (a new router image in every tier), a scale-down and pod deletions
with streamed answers in flight. Each returns what the clients saw (requests answered, failed,
truncated) and what the operator did (which tier rolled when). Used by
``benchmarks/rollout_under_load.py`` (figures) and ``tests/e2e/test_real_node_rollouts.py``
(zero failed and zero truncated, as counts).

The stack is what a user runs: the chart installs the operator as a pod from the image built
here, the CPU sample runs with the local model-server image, and the clients are the official
``openai`` client on this machine talking to the entry Service's ClusterIP.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeta_router.api.models import API_VERSION, PLURAL
from zeta_router.controller.status import zetarouter_path
from zeta_router.kube import MERGE_PATCH, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.cluster.binaries import find_tool
from zeta_router_dev.cluster.workloads import (
    ensure_namespace,
    helm,
    install_operator,
    load_cpu_sample,
    localize_zetarouter,
    service_url,
    wait_until,
)
from zeta_router_dev.images.build import PROJECT_IMAGE, containerd_ref
from zeta_router_dev.steady_load import LoadReport, LongStreams, SteadyLoad

NAME = "chat-cpu"
TIERS = ("small", "large")
UPGRADED_TAG = "-upgraded"


@dataclass
class Outcome:
    """One scenario: what the clients saw and what the operator did."""

    name: str
    clients: LoadReport
    seconds: float
    rollouts: list[tuple[float, str]] = field(default_factory=list)
    """(seconds from the start, Event message) of each RollingOut Event."""
    drains: list[dict[str, Any]] = field(default_factory=list)
    """The ``drain_end`` log line of each stopping pod's router (as far as it was read)."""
    failures: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(pod, log line) of each replica or tier failure a router logged (as far as read)."""

    def summary(self) -> str:
        order = "; ".join(f"+{t:.0f}s {m}" for t, m in self.rollouts) or "no rollout"
        text = f"{self.name} ({self.seconds:.0f} s): {self.clients.summary()}\n  rollouts: {order}"
        if self.drains:
            text += "\n  drains: " + "; ".join(
                f"{d['seconds']:.1f} s"
                + (
                    f", last arrival at +{d['seconds'] - d['quiet_seconds']:.1f} s"
                    if d.get("quiet_seconds") is not None
                    else ""
                )
                + (" (timed out)" if d.get("timed_out") else "")
                for d in self.drains
            )
        for pod, e in self.failures:
            text += (
                f"\n  {e.get('ts', '')} {pod}: {e.get('event')} {e.get('tier', '')} "
                f"{e.get('replica', '')} {e.get('reason', '')} "
                f"{e.get('detail') or e.get('failures') or ''}"
            )
        return text


#: Router log events that say a request did not go where it was sent.
FAILURE_EVENTS = frozenset({"replica_failed", "all_tiers_failed"})


class DrainWatch:
    """Reads the router log of every pod that stops while it runs (``kubectl logs``, once a
    second until the pod is gone) and keeps each ``drain_end`` line: how long the drain took
    and when the last connection or request arrived (endpoint removal, as the pod saw it).
    Also keeps every pod's failure lines (:data:`FAILURE_EVENTS`): those of the pods that stay
    are read when the watch ends."""

    def __init__(self, kubeconfig: Path, kube: Kube, namespace: str) -> None:
        self.kubeconfig, self.kube, self.namespace = kubeconfig, kube, namespace
        self.drains: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, list[dict[str, Any]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-watch", daemon=True)

    def __enter__(self) -> DrainWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        with contextlib.suppress(Exception):  # figures only
            for pod in self.kube.list(api_path("v1", "pods", self.namespace))["items"]:
                self._read(pod["metadata"]["name"])

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # figures only: a missed read is a gap
                for pod in self.kube.list(api_path("v1", "pods", self.namespace))["items"]:
                    name = pod["metadata"]["name"]
                    if pod["metadata"].get("deletionTimestamp") and name not in self.drains:
                        self._read(name)

    def _read(self, pod: str) -> None:
        proc = subprocess.run(
            [str(find_tool("kubectl")), "--kubeconfig", str(self.kubeconfig), "-n",
             self.namespace, "logs", pod, "-c", "router"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        failures = []
        for line in proc.stdout.splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "drain_end":
                    self.drains[pod] = event
                if isinstance(event, dict) and event.get("event") in FAILURE_EVENTS:
                    failures.append(event)
        if failures:
            self.failures[pod] = failures


@dataclass
class Stack:
    kube: Kube
    kubeconfig: Path
    containerd_socket: Path
    namespace: str = "zeta-day2"
    operator_namespace: str = "zeta-day2-system"
    release: str = "zeta-day2"
    tagged: list[str] = field(default_factory=list)

    @property
    def entry_url(self) -> str:
        return service_url(self.kube, self.namespace, names.entry_service_name(NAME)) + "/v1"

    def zr(self) -> dict[str, Any]:
        return self.kube.get(zetarouter_path(self.namespace, NAME))

    def deployment(self, tier: str) -> dict[str, Any]:
        dep = names.DEPLOYMENT
        return self.kube.get(
            api_path(
                dep.api_version, dep.plural, self.namespace, names.tier_object_name(NAME, tier)
            )
        )

    def pods(self, tier: str) -> list[dict[str, Any]]:
        selector = f"{names.INSTANCE}={NAME},{names.TIER}={tier}"
        items: list[dict[str, Any]] = self.kube.list(
            api_path("v1", "pods", self.namespace), selector
        )["items"]
        return items

    # ---- setting up ---------------------------------------------------------------------------

    def up(self, timeout: float = 600) -> None:
        """Install the operator (the chart, as a pod) and the CPU sample; wait until it serves."""
        ensure_namespace(self.kube, self.namespace)
        install_operator(
            self.kubeconfig, self.release, self.operator_namespace, [self.namespace], self.release
        )
        body = localize_zetarouter(load_cpu_sample(), namespace=self.namespace)
        for tier in body["spec"]["tiers"]:
            tier["replicas"] = {"min": 1, "max": 2, "initial": 2 if tier["name"] == "small" else 1}
        # Streams are pinned to the tier a check is about (the X-Zeta-Tier header).
        body["spec"]["router"]["allowForceTier"] = True
        self.kube.create(api_path(API_VERSION, PLURAL, self.namespace), body)
        self.wait_settled(timeout)

    def settled(self) -> bool:
        zr = self.zr()
        conds = {c["type"]: c for c in (zr.get("status") or {}).get("conditions") or []}
        st = zr.get("status") or {}
        return (
            st.get("observedGeneration") == zr["metadata"]["generation"]
            and conds.get("Ready", {}).get("status") == "True"
            and conds.get("Progressing", {}).get("status") == "False"
            and all(t.get("rollout") == "Current" for t in st.get("tiers") or [])
        )

    def wait_settled(self, timeout: float = 600) -> None:
        wait_until(self.settled, timeout, f"ZetaRouter {NAME} to be rolled out and ready")

    def rolling_out_events(self, since: float) -> list[tuple[float, str]]:
        """RollingOut Events posted since ``since`` (a time.time()), oldest first."""
        out = []
        for e in self.kube.list(api_path("v1", "events", self.namespace))["items"]:
            if e.get("reason") != "RollingOut" or e["involvedObject"].get("name") != NAME:
                continue
            stamp = calendar.timegm(time.strptime(e["lastTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
            if stamp >= int(since):
                out.append((stamp - since, str(e["message"])))
        return sorted(out)

    # ---- the checks ---------------------------------------------------------------------------

    def under_load(
        self, name: str, change: Callable[[], None], clients: int = 3, timeout: float = 900
    ) -> Outcome:
        """Steady load through the entry Service while ``change`` happens and the ZetaRouter
        rolls it out to the end."""
        started = time.time()
        # A third of the requests routed as the router decides, a third pinned to each tier: both
        # tiers carry load while they roll.
        load = SteadyLoad(self.entry_url, NAME, clients=clients, pinned=(None, *TIERS)).start()
        # The load is flowing (requests answered) before anything changes ...
        load.wait_answered(2 * len(load.pinned))
        with DrainWatch(self.kubeconfig, self.kube, self.namespace) as drains:
            change()
            wait_until(lambda: not self.settled(), 60, "the change to start rolling out")
            self.wait_settled(timeout)
            load.wait_answered(2 * len(load.pinned))  # ... and still flowing after
            report = load.stop()
        return Outcome(
            name,
            report,
            time.time() - started,
            self.rolling_out_events(started),
            list(drains.drains.values()),
            [(pod, e) for pod, events in drains.failures.items() for e in events],
        )

    def template_change(self) -> Outcome:
        """Every tier's model-server arguments change: a new pod template in each tier."""

        def change() -> None:
            tiers = self.zr()["spec"]["tiers"]
            for t in tiers:
                args = list(t.get("args") or [])
                i = args.index("--ctx-size")
                args[i + 1] = "1536" if args[i + 1] != "1536" else "2048"
                t["args"] = args
            self.kube.patch(
                zetarouter_path(self.namespace, NAME), {"spec": {"tiers": tiers}}, MERGE_PATCH
            )

        return self.under_load("tier template change (both tiers)", change)

    def operator_upgrade(self, suffix: str = UPGRADED_TAG) -> Outcome:
        """``helm upgrade`` to a new operator image (the same build under a new tag, the tag of
        the build + ``suffix``, so nothing else differs): the operator pod is replaced, and
        since the router sidecar runs the operator's image, every tier's router container
        changes too. Repeated upgrades need a new ``suffix`` each."""
        repo, _, tag = PROJECT_IMAGE.partition(":")
        new_tag = tag + suffix
        self.tag_image(PROJECT_IMAGE, f"{repo}:{new_tag}")

        def upgrade() -> None:
            helm(
                self.kubeconfig, "upgrade", self.release, str(_chart()),
                "--namespace", self.operator_namespace, "--reuse-values",
                "--set", f"image.tag={new_tag}", "--wait",
            )  # fmt: skip

        return self.under_load("operator upgrade (new image, new router image)", upgrade)

    def scale_down_with_streams(self, tier: str = "small", streams: int = 4) -> Outcome:
        """Streams pinned to ``tier`` in flight, then the tier goes from 2 replicas to 1."""
        self._scale(tier, 2)
        started = time.time()
        running = LongStreams(self.entry_url, NAME, count=streams, headers={"X-Zeta-Tier": tier})
        running.wait_started()
        self._scale(tier, 1)
        report = running.join()
        wait_until(lambda: len(self.pods(tier)) == 1, 900, f"tier {tier} down to one pod")
        return Outcome(f"scale-down of tier {tier} 2 -> 1, {streams} streams in flight", report,
                       time.time() - started)  # fmt: skip

    def delete_pods_with_streams(self, streams: int = 4) -> Outcome:
        """Streams pinned to each tier in flight, then one pod of each tier is deleted."""
        started = time.time()
        running = [
            LongStreams(self.entry_url, NAME, count=streams // 2, headers={"X-Zeta-Tier": t})
            for t in TIERS
        ]
        for r in running:
            r.wait_started()
        for tier in TIERS:
            pod = self.pods(tier)[0]
            self.kube.delete(api_path("v1", "pods", self.namespace, pod["metadata"]["name"]))
        report = LoadReport()
        for r in running:
            report.add(r.join())
        report.seconds = time.time() - started
        self.wait_settled()
        return Outcome(f"deletion of a pod of each tier, {streams} streams in flight", report,
                       time.time() - started)  # fmt: skip

    # ---- helpers ------------------------------------------------------------------------------

    def _scale(self, tier: str, replicas: int) -> None:
        dep = names.DEPLOYMENT
        path = api_path(
            dep.api_version, dep.plural, self.namespace, names.tier_object_name(NAME, tier)
        )
        self.kube.patch(path + "/scale", {"spec": {"replicas": replicas}}, MERGE_PATCH)

        def ready() -> bool:
            st = self.deployment(tier).get("status") or {}
            return st.get("readyReplicas") == replicas and st.get("replicas") == replicas

        if replicas > 1:
            wait_until(ready, 600, f"tier {tier} at {replicas} ready replicas")

    def tag_image(self, source: str, target: str) -> None:
        """Give an image already in the node's containerd a second name."""
        self._ctr("tag", "--force", containerd_ref(source), containerd_ref(target))
        if target not in self.tagged:
            self.tagged.append(target)

    def remove_tags(self) -> None:
        """Drop the names :meth:`tag_image` added (the image itself stays)."""
        for name in self.tagged:
            self._ctr("rm", containerd_ref(name))
        self.tagged.clear()

    def _ctr(self, *args: str) -> None:
        proc = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", *args],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"ctr images {args[0]} failed: {proc.stderr.strip()}")


def _chart() -> Path:
    from zeta_router_dev.cluster.workloads import CHART

    return CHART
