"""Samples what the cluster says about the demo's ZetaRouter, once a second, in a thread:
replicas per tier (its Deployments), the thresholds the routers run (its routing ConfigMap),
its conditions and the control loop's last decision (its status)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zeta_router.api.routing import configmap_routing
from zeta_router.controller.status import zetarouter_path
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router_dev.demo.stats import ClusterSample


def sample_from(
    time_s: float,
    tiers: Sequence[str],
    deployments: Mapping[str, Mapping[str, Any] | None],
    configmap: Mapping[str, Any] | None,
    zetarouter: Mapping[str, Any] | None,
) -> ClusterSample:
    """A sample from the objects as the API returns them (pure; a missing object is None)."""
    replicas: dict[str, int] = {}
    ready: dict[str, int] = {}
    for tier in tiers:
        dep = deployments.get(tier)
        if dep is None:
            continue
        replicas[tier] = int((dep.get("spec") or {}).get("replicas") or 0)
        ready[tier] = int((dep.get("status") or {}).get("readyReplicas") or 0)
    thresholds: dict[str, list[float]] = {}
    generation = 0
    routing = configmap_routing(configmap)
    if routing is not None:
        generation = routing.generation
        thresholds = {c.name: list(c.thresholds) for c in routing.contexts}
    status = (zetarouter or {}).get("status") or {}
    conditions = {str(c.get("type")): str(c.get("status")) for c in status.get("conditions") or []}
    decision = status.get("lastDecision") or {}
    last = ""
    if decision.get("action"):
        last = f"{decision.get('action')}: {decision.get('reason') or ''}".strip()
    return ClusterSample(
        time=time_s,
        replicas=replicas,
        ready=ready,
        thresholds=thresholds,
        generation=generation,
        conditions=conditions,
        last_decision=last,
    )


class Sampler:
    """Polls the cluster every ``interval`` seconds until stopped; ``clock`` gives the sample
    times (the workload's clock, so samples and requests share one time axis)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        tiers: Sequence[str],
        clock: Callable[[], float],
        interval: float = 1.0,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.tiers = tuple(tiers)
        self.clock = clock
        self.interval = interval
        self._samples: list[ClusterSample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-sampler", daemon=True)

    def _get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(path)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    def sample_once(self) -> ClusterSample:
        ns, name = self.namespace, self.name
        dep = names.DEPLOYMENT
        deployments = {
            t: self._get(api_path(dep.api_version, dep.plural, ns, names.tier_object_name(name, t)))
            for t in self.tiers
        }
        cm = self._get(api_path("v1", "configmaps", ns, names.routing_configmap_name(name)))
        zr = self._get(zetarouter_path(ns, name))
        sample = sample_from(self.clock(), self.tiers, deployments, cm, zr)
        with self._lock:
            self._samples.append(sample)
        return sample

    def samples(self) -> list[ClusterSample]:
        with self._lock:
            return list(self._samples)

    def latest(self) -> ClusterSample | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            # The apiserver may be busy or going away: the next round tries again.
            with contextlib.suppress(Exception):
                self.sample_once()
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
