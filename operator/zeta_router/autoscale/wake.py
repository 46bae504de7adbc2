"""Waking a sleeping tier within seconds of a request that wants it.

While a tier sleeps, every request the routers decide for it is answered elsewhere or held
(``router.sleep``), and counted in each router's ``zeta_router_wake_requests_total{tier}``. The
control loop sees that count through Prometheus, a scrape and an interval late; this daemon
reads it straight from every router's admin port (the pods the learner reads, through the same
bounded fetch) every ``WAKE_POLL_SECONDS`` while a tier of the ZetaRouter is at zero, and as soon
as the count of a sleeping tier grows, has the controller scale the tier from zero (as the
control loop would: ``status.tiers[].desiredReplicas``, the Deployment, ``status.tiers[].sleep``,
a ``TierWoken`` Event).

A daemon runs only for a ZetaRouter whose control loop owns replicas and which has a tier that
may sleep; while none of its tiers sleeps it only looks at the status (no request anywhere).
The first reading of a router is its baseline: only requests counted after it wake a tier.

The same daemon ends a wake: a woken tier stays marked asleep in the routing config until it has
a ready replica, and a replica becoming ready changes no child, so when the status first shows
one it has the children rendered again (once per wake).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from zeta_router.api.models import (
    GROUP,
    PLURAL,
    VERSION,
    SpecError,
    TierSpec,
    parse_zetarouter,
)
from zeta_router.api.routing import configmap_routing
from zeta_router.bounded_http import FetchError
from zeta_router.bounded_http import fetch as bounded_fetch
from zeta_router.controller.daemon import run_intervals
from zeta_router.controller.desired import LoopChoice
from zeta_router.controller.routers import list_routers
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names

if TYPE_CHECKING:
    import kopf

    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext
    from zeta_router.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

WAKE_METRIC = "zeta_router_wake_requests_total"
METRICS_PATH = "/metrics"
WAKE_POLL_SECONDS = 2.0
"""How often the routers are read while a tier sleeps (the wake takes at most about this)."""
WAKE_POLL_ENV = "ZETA_ROUTER_WAKE_POLL"
IDLE_SECONDS = 5.0
"""How often a ZetaRouter with no sleeping tier looks at its status again."""
FETCH_SECONDS = 2.0
MAX_METRICS_BYTES = 4 * 1024 * 1024

WAKES = Counter(
    "zeta_operator_wakes_total",
    "Tiers scaled from zero by the operator on the routers' count of requests wanting them, "
    "read from their admin ports.",
)


def wake_counts(text: str) -> dict[str, float]:
    """``zeta_router_wake_requests_total`` per tier in a router's /metrics text (pure); what
    cannot be parsed counts as nothing."""
    out: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == WAKE_METRIC and "tier" in sample.labels:
                    tier = sample.labels["tier"]
                    out[tier] = out.get(tier, 0.0) + float(sample.value)
    except (ValueError, TypeError):
        return {}
    return out


def increases(
    before: Mapping[str, Mapping[str, float]], now: Mapping[str, Mapping[str, float]]
) -> dict[str, float]:
    """Requests counted per tier between two readings of the routers (by pod), pure. A router
    read for the first time gives its baseline (nothing); a counter that went down (the router
    restarted) counts from zero."""
    out: dict[str, float] = {}
    for pod, counts in now.items():
        old = before.get(pod)
        if old is None:
            continue
        for tier, value in counts.items():
            prev = old.get(tier, 0.0)
            grown = value - prev if value >= prev else value
            if grown > 0:
                out[tier] = out.get(tier, 0.0) + grown
    return out


def sleeping_candidates(body: Mapping[str, Any], may_sleep: set[str]) -> list[str]:
    """Tiers that may sleep and that the status says are at zero (pure; the Deployment has the
    last word, see :meth:`Waker.asleep`)."""
    out = []
    for entry in (body.get("status") or {}).get("tiers") or []:
        name = entry.get("name")
        if name not in may_sleep:
            continue
        desired = entry.get("desiredReplicas")
        if desired == 0 or (desired is None and entry.get("replicas") == 0):
            out.append(str(name))
    return out


def wants_waker(spec: Mapping[str, Any]) -> bool:
    """Whether a ZetaRouter's raw spec may have a sleeping tier for the operator to wake:
    autoscaling on in apply mode and a tier with ``replicas.min: 0``."""
    auto = spec.get("autoscaling") or {}
    if not auto.get("enabled") or (auto.get("mode") or "apply") != "apply":
        return False
    return any(((t or {}).get("replicas") or {}).get("min") == 0 for t in spec.get("tiers") or [])


@dataclass
class WakeMemory:
    seen: dict[str, dict[str, float]] = field(default_factory=dict)
    """The last reading of each router (pod name -> count per tier)."""
    awake: set[str] = field(default_factory=set)
    """Tiers seen ready and no longer marked asleep in the routing config (until they sleep)."""


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Waker:
    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        reconciler: Reconciler | None,
        poll: float = WAKE_POLL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.events = events
        self.reconciler = reconciler
        self.poll = poll
        self.clock = clock

    async def run(self, body: Mapping[str, Any], stopped: kopf.DaemonStopped) -> None:
        mem = WakeMemory()
        await run_intervals(lambda: self.step_logged(body, mem), stopped, "wake")

    def step_logged(self, body: Mapping[str, Any], mem: WakeMemory) -> float:
        try:
            return self.step(body, mem)
        except ApiError as e:
            meta = body.get("metadata") or {}
            log.warning("%s/%s: wake: %s", meta.get("namespace"), meta.get("name"), e)
            return self.poll

    def step(self, body: Mapping[str, Any], mem: WakeMemory) -> float:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return IDLE_SECONDS
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            spec = parse_zetarouter(body)
        except SpecError:
            return IDLE_SECONDS
        may_sleep = {t.name for t in spec.tiers if t.replicas.may_sleep}
        if not spec.loop_owns_replicas or not may_sleep:
            return IDLE_SECONDS
        waking = self.unmark_ready(body, namespace, name, may_sleep, mem)
        asleep = self.asleep(namespace, name, sleeping_candidates(body, may_sleep))
        if not asleep:
            mem.seen.clear()  # the next sleep starts from fresh baselines
            return self.poll if waking else IDLE_SECONDS
        now_counts: dict[str, dict[str, float]] = {}
        for endpoint in list_routers(self.kube, namespace, name, spec.router.admin_port):
            try:
                answer = bounded_fetch(
                    endpoint.url + METRICS_PATH,
                    deadline_seconds=FETCH_SECONDS,
                    max_bytes=MAX_METRICS_BYTES,
                )
            except FetchError as e:
                log.debug("%s/%s: router %s: %s", namespace, name, endpoint.pod, e.describe())
                if endpoint.pod in mem.seen:
                    now_counts[endpoint.pod] = mem.seen[endpoint.pod]
                continue
            now_counts[endpoint.pod] = wake_counts(answer.body.decode("utf-8", "replace"))
        grown = increases(mem.seen, now_counts)
        mem.seen = now_counts
        woken = {t: n for t, n in grown.items() if t in asleep}
        if woken:
            self.wake(body, spec.tiers, woken)
        return self.poll

    def unmark_ready(
        self,
        body: Mapping[str, Any],
        namespace: str,
        name: str,
        may_sleep: set[str],
        mem: WakeMemory,
    ) -> bool:
        """A tier that may sleep stays marked asleep in the routing config until it has a ready
        replica (``render.configmap.asleep_tiers``); readiness alone changes no child, so once
        the status shows one, render the children again. Returns whether a tier is still
        waking (ready, the config not yet seen unmarked)."""
        waking = False
        for entry in (body.get("status") or {}).get("tiers") or []:
            tier = entry.get("name")
            if tier not in may_sleep:
                continue
            if entry.get("desiredReplicas") == 0 or not entry.get("readyReplicas"):
                mem.awake.discard(tier)
                continue
            if tier in mem.awake:
                continue
            if tier in self.marked_asleep(namespace, name):
                waking = True
                if self.reconciler is not None:
                    self.reconciler.reconcile_named(namespace, name, "tier-ready")
            else:
                mem.awake.add(tier)
        return waking

    def marked_asleep(self, namespace: str, name: str) -> set[str]:
        cm = self.kube.get_or_none(
            api_path("v1", names.CONFIGMAP.plural, namespace, names.routing_configmap_name(name))
        )
        routing = configmap_routing(cm) if cm is not None else None
        if routing is None:
            return set()
        return {t.name for t in routing.tiers if t.asleep}

    def asleep(self, namespace: str, name: str, candidates: list[str]) -> set[str]:
        """The candidates whose Deployment asks for zero replicas."""
        out = set()
        dep = names.DEPLOYMENT
        for tier in candidates:
            obj = self.kube.get_or_none(
                api_path(dep.api_version, dep.plural, namespace, names.tier_object_name(name, tier))
            )
            if obj is not None and int((obj.get("spec") or {}).get("replicas") or 0) == 0:
                out.add(tier)
        return out

    def wake(
        self, body: Mapping[str, Any], tiers: Sequence[TierSpec], woken: Mapping[str, float]
    ) -> None:
        now = self.clock()
        mins = {t.name: t.replicas.min for t in tiers}
        replicas = {t: max(1, mins.get(t, 0)) for t in woken}
        reasons = {
            t: f"tier {t}: woken by {n:g} requests wanting it while asleep (read from the "
            f"routers' admin port): 0 -> {replicas[t]} replicas"
            for t, n in woken.items()
        }
        decision = {
            "time": _rfc3339(now),
            "action": "replicas up",
            "reason": "; ".join(reasons.values())[:1024],
        }
        choice = LoopChoice(
            replicas=replicas,
            thresholds=None,
            thresholds_from={},
            status_fields=lambda _generation: {"lastDecision": decision},
            tier_fields={
                t: {"sleep": {"state": "Awake", "since": _rfc3339(now), "reason": reasons[t]}}
                for t in woken
            },
        )
        if self.reconciler is not None:
            self.reconciler.reconcile(body, "wake", choice)
        for t in woken:
            WAKES.inc()
            self.events.normal(body, "TierWoken", reasons[t])
        meta = body["metadata"]
        log.info("%s/%s: %s", meta["namespace"], meta["name"], "; ".join(reasons.values()))


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Add the wake daemon (called by the control loop's ``register``)."""
    import kopf

    poll = float(
        context.config.extra.get("wake_poll") or os.environ.get(WAKE_POLL_ENV) or WAKE_POLL_SECONDS
    )
    waker = Waker(context.kube, context.events, context.reconciler, poll=poll)

    async def daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await waker.run(body, stopped)

    def wanted(spec: kopf.Spec, **_: Any) -> bool:
        return wants_waker(spec)

    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="wake",
        cancellation_timeout=10.0,
        when=wanted,
    )(daemon)
