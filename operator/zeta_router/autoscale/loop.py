"""The control loop in the operator: a kopf timer that, for every ZetaRouter whose autoscaling or
feedback is enabled, reads its metrics from Prometheus every ``spec.autoscaling.interval``, asks
the policy (`zeta_router.autoscale.policy.decide`) what to do, and records or applies the answer.

- Status, in either mode: ``tiers[].desiredReplicas`` (with autoscaling), ``lastDecision``
  {time, action, reason}, ``loopState`` and the ``MetricsAvailable`` condition, merged through
  `zeta_router.controller.status` (the controller's conditions and fields are never
  overwritten). In ``apply`` mode also ``thresholds`` (what the routers will run).
- ``mode: apply``: the status is the record of what the loop chose, and the controller's render
  takes replicas and thresholds from it (so its drift repair keeps them); the loop then asks the
  controller to reconcile at once, which patches the Deployments and the routing ConfigMap
  (bumping its generation). Thresholds do not move again until every router reports that
  generation (``zeta_router_config_generation``).
- ``mode: advisory``: nothing is applied; the recommendation is in the status and the Events.
- Feedback without autoscaling moves thresholds only; replicas stay the user's.
- A Normal Event per change, and ``zeta_operator_decisions_total{kind,direction}``.
- No metrics (Prometheus unreachable, timing out, erroring, or no series): nothing changes,
  ``MetricsAvailable=False`` says why, and the next interval tries again.

The policy's memory between intervals (low-load clocks, pressure points, load-shift offsets,
the generation being waited for) is kept in memory and saved in ``status.loopState``, so a
restarted operator carries on. Without a saved state it is rebuilt from what runs: replicas
from the Deployments, thresholds from the routing ConfigMap (with feedback off, the part above
the spec's thresholds counts as load shift, so it is taken back when pressure is gone).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml
from prometheus_client import Counter

from zeta_router.api.models import SpecError, parse_zetarouter
from zeta_router.autoscale.config import LoopSettings, settings_from_spec
from zeta_router.autoscale.metrics import PrometheusSource
from zeta_router.autoscale.policy import (
    ContextState,
    Decision,
    PolicyState,
    decide,
)
from zeta_router.autoscale.snapshot import MetricsSnapshot, MetricsStatus
from zeta_router.controller.status import (
    GROUP,
    METRICS_AVAILABLE,
    PLURAL,
    VERSION,
    condition,
    find_condition,
    patch_status,
)
from zeta_router.kube import ApiError, Kube, api_path

if TYPE_CHECKING:
    import kopf

    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext
    from zeta_router.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

DECISIONS = Counter(
    "zeta_operator_decisions_total",
    "Changes decided by the control loop (applied, or recommended in advisory mode), by kind "
    "(replicas, thresholds) and direction (up, down).",
    ("kind", "direction"),
)
DEFAULT_TICK = 5.0
"""How often the timer wakes up; each ZetaRouter is handled at its own interval (so intervals
shorter than the tick run at the tick). Tests and the demo shorten it with the variable below."""
TICK_ENV = "ZETA_ROUTER_AUTOSCALE_TICK"
ROUTING_KEY = "routing.yaml"

_REASONS = {
    ("replicas", "up"): "ScaledUp",
    ("replicas", "down"): "ScaledDown",
    ("thresholds", "up"): "ThresholdsRaised",
    ("thresholds", "down"): "ThresholdsLowered",
}
_METRICS_REASONS = {
    MetricsStatus.UNREACHABLE: "PrometheusUnreachable",
    MetricsStatus.TIMEOUT: "PrometheusTimeout",
    MetricsStatus.NO_SERIES: "NoSeries",
    MetricsStatus.ERROR: "PrometheusError",
}

SourceFactory = Callable[[str, float, float, Mapping[str, str] | None], Any]
"""(url, window s, timeout s, headers) -> an object with ``snapshot(target) -> MetricsSnapshot``."""


def _prometheus_source(
    url: str, window: float, timeout: float, headers: Mapping[str, str] | None
) -> PrometheusSource:
    return PrometheusSource(url, window_seconds=window, timeout_seconds=timeout, headers=headers)


@dataclass
class _Memory:
    uid: str
    state: PolicyState | None = None
    due: float = 0.0
    last_summary: str | None = None
    sources: dict[tuple[str, float, float, tuple[tuple[str, str], ...]], Any] = field(
        default_factory=dict
    )


@dataclass(frozen=True)
class Running:
    """What runs now: Deployment replicas per tier and routing thresholds per context."""

    replicas: dict[str, int]
    thresholds: dict[str, tuple[float, ...]]
    generation: int | None


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ControlLoop:
    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        reconciler: Reconciler | None = None,
        source_factory: SourceFactory = _prometheus_source,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.events = events
        self.reconciler = reconciler
        self.source_factory = source_factory
        self.clock = clock
        self._memory: dict[tuple[str, str], _Memory] = {}
        self._lock = threading.Lock()

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._memory.pop((namespace, name), None)

    def _memory_for(self, namespace: str, name: str, uid: str) -> _Memory:
        with self._lock:
            mem = self._memory.get((namespace, name))
            if mem is None or mem.uid != uid:
                mem = self._memory[(namespace, name)] = _Memory(uid=uid)
            return mem

    # ---- the timer ----------------------------------------------------------------------------

    def tick(self, body: Mapping[str, Any]) -> Decision | None:
        """Called by the timer for every ZetaRouter; runs the loop when its interval is due."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            spec = parse_zetarouter(body)
        except SpecError as e:
            # The controller reports invalid specs (SpecValid=False); the loop just waits.
            log.debug("%s/%s: not running the control loop: %s", namespace, name, e)
            return None
        settings = settings_from_spec(namespace, name, spec)
        mem = self._memory_for(namespace, name, str(meta.get("uid") or ""))
        if not settings.enabled:
            mem.state = None
            self._mark_disabled(body)
            return None
        now = self.clock()
        if now < mem.due:
            return None
        mem.due = now + settings.interval_seconds
        return self.run_once(body, settings, mem, now)

    # ---- one interval -------------------------------------------------------------------------

    def run_once(
        self, body: Mapping[str, Any], settings: LoopSettings, mem: _Memory, now: float
    ) -> Decision | None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        running = self.read_running(namespace, name, settings)
        if running is None:
            log.info("%s/%s: children not there yet; control loop waits", namespace, name)
            return None
        policy = settings.policy
        if mem.state is None:
            mem.state = self.remembered_state(body) or self.rebuilt_state(settings, running)
        state = mem.state.with_current(policy, running.replicas, running.thresholds)
        snapshot = self.snapshot(namespace, settings, mem)
        decision = decide(policy, snapshot, state, now)
        if not settings.scales_replicas:
            # Feedback without autoscaling: thresholds only, replicas stay the user's.
            decision = replace(
                decision,
                replicas=dict(running.replicas),
                changes=tuple(c for c in decision.changes if c.kind != "replicas"),
            )
        next_state = decision.state
        if settings.applies:
            self._apply(body, settings, decision, snapshot, now, mem, next_state)
            if decision.thresholds_changed:
                generation = self.read_running(namespace, name, settings)
                after = generation.generation if generation is not None else None
                floor = (running.generation or 0) + 1
                next_state = next_state.awaiting(max(after or 0, floor))
                self._save_state(namespace, name, next_state)
        else:
            self._advise(body, settings, decision, snapshot, now, mem, next_state)
        mem.state = next_state
        for change in decision.changes:
            DECISIONS.labels(change.kind, change.direction).inc()
        if decision.changes:
            log.info(
                "%s/%s: %s%s",
                namespace,
                name,
                "" if settings.applies else "advisory: ",
                decision.summary,
            )
        return decision

    @staticmethod
    def remembered_state(body: Mapping[str, Any]) -> PolicyState | None:
        """The state the loop saved in ``status.loopState`` (None: none, or unreadable)."""
        raw = (body.get("status") or {}).get("loopState")
        if not isinstance(raw, Mapping):
            return None
        try:
            return PolicyState.from_dict(raw)
        except ValueError as e:
            log.warning("ignoring status.loopState: %s", e)
            return None

    def _save_state(self, namespace: str, name: str, state: PolicyState) -> None:
        patch_status(self.kube, namespace, name, fields={"loopState": state.to_dict()})

    def rebuilt_state(self, settings: LoopSettings, running: Running) -> PolicyState:
        """A state for a ZetaRouter the loop has no memory of (new, or after a restart)."""
        state = PolicyState.initial(settings.policy, running.replicas, running.thresholds)
        if settings.policy.feedback.enabled:
            return state
        contexts = dict(state.contexts)
        for ctx in settings.policy.contexts:
            now_cuts = running.thresholds.get(ctx.name)
            spec_cuts = settings.spec_thresholds.get(ctx.name)
            if now_cuts is None or spec_cuts is None or len(now_cuts) != len(spec_cuts):
                continue
            shift = tuple(max(0.0, n - s) for n, s in zip(now_cuts, spec_cuts, strict=True))
            if any(shift):
                contexts[ctx.name] = ContextState(base=spec_cuts, shift=shift)
        return PolicyState(tiers=state.tiers, contexts=contexts)

    def read_running(self, namespace: str, name: str, settings: LoopSettings) -> Running | None:
        replicas: dict[str, int] = {}
        for tier in settings.policy.tiers:
            dep = self.kube.get_or_none(
                api_path("apps/v1", "deployments", namespace, f"{name}-{tier.name}")
            )
            if dep is None:
                return None
            replicas[tier.name] = int((dep.get("spec") or {}).get("replicas") or 0)
        cm = self.kube.get_or_none(api_path("v1", "configmaps", namespace, f"{name}-routing"))
        if cm is None:
            return None
        thresholds: dict[str, tuple[float, ...]] = {}
        generation: int | None = None
        try:
            routing = yaml.safe_load((cm.get("data") or {}).get(ROUTING_KEY) or "") or {}
            generation = int(routing.get("generation", 0))
            for ctx in routing.get("contexts") or []:
                cuts = ctx.get("thresholds")
                if cuts is not None:
                    thresholds[str(ctx["name"])] = tuple(float(x) for x in cuts)
        except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError) as e:
            log.warning("%s/%s: unreadable routing ConfigMap: %s", namespace, name, e)
        return Running(replicas=replicas, thresholds=thresholds, generation=generation)

    def snapshot(self, namespace: str, settings: LoopSettings, mem: _Memory) -> MetricsSnapshot:
        if not settings.prometheus_url:
            return MetricsSnapshot.unavailable(
                MetricsStatus.ERROR, "spec.autoscaling.prometheus.url is not set"
            )
        try:
            headers = self._auth_headers(namespace, settings)
        except (ApiError, KeyError, ValueError) as e:
            return MetricsSnapshot.unavailable(
                MetricsStatus.ERROR, f"cannot read the Prometheus auth secret: {e}"
            )
        key = (
            settings.prometheus_url,
            settings.window_seconds,
            settings.prometheus_timeout,
            tuple(sorted((headers or {}).items())),
        )
        source = mem.sources.get(key)
        if source is None:
            mem.sources.clear()
            source = mem.sources[key] = self.source_factory(
                settings.prometheus_url,
                settings.window_seconds,
                settings.prometheus_timeout,
                headers,
            )
        result: MetricsSnapshot = source.snapshot(settings.target)
        return result

    def _auth_headers(self, namespace: str, settings: LoopSettings) -> dict[str, str] | None:
        ref = settings.auth_secret
        if ref is None:
            return None
        secret = self.kube.get(api_path("v1", "secrets", namespace, ref.name))
        data = secret.get("data") or {}
        if ref.key not in data:
            raise ValueError(f"secret {ref.name} has no key {ref.key!r}")
        token = base64.b64decode(data[ref.key]).decode().strip()
        return {"Authorization": f"Bearer {token}"}

    # ---- recording ----------------------------------------------------------------------------

    def _metrics_condition(self, snapshot: MetricsSnapshot, generation: int) -> dict[str, Any]:
        if snapshot.available:
            return condition(
                METRICS_AVAILABLE,
                True,
                "MetricsOK",
                f"metrics of {len(snapshot.tiers)} tier(s) read from Prometheus",
                generation,
            )
        return condition(
            METRICS_AVAILABLE,
            False,
            _METRICS_REASONS.get(snapshot.status, "PrometheusError"),
            f"{snapshot.message}; nothing changed, retrying next interval",
            generation,
        )

    def _last_decision(
        self, decision: Decision, now: float, mem: _Memory, advisory: bool
    ) -> dict[str, Any] | None:
        summary = ("advisory, not applied: " if advisory else "") + decision.summary
        if not decision.changes and summary == mem.last_summary:
            return None
        mem.last_summary = summary
        actions = sorted({f"{c.kind} {c.direction}" for c in decision.changes}) or ["none"]
        return {
            "time": _rfc3339(now),
            "action": ("recommend " if advisory else "") + ", ".join(actions),
            "reason": summary[:1024],
        }

    def _apply(
        self,
        body: Mapping[str, Any],
        settings: LoopSettings,
        decision: Decision,
        snapshot: MetricsSnapshot,
        now: float,
        mem: _Memory,
        state: PolicyState,
    ) -> None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation = int(meta.get("generation") or 0)
        fields: dict[str, Any] = {
            "thresholds": {k: list(v) for k, v in decision.thresholds.items()},
            # What the spec said when these were chosen: a later spec edit wins (see render).
            "thresholdsFrom": {k: list(v) for k, v in settings.spec_thresholds.items()},
            "loopState": state.to_dict(),
        }
        last = self._last_decision(decision, now, mem, advisory=False)
        if last is not None:
            fields["lastDecision"] = last
        patch_status(
            self.kube,
            namespace,
            name,
            fields=fields,
            conditions=[self._metrics_condition(snapshot, generation)],
            tiers=_desired(settings, decision),
        )
        if decision.changes and self.reconciler is not None:
            # The controller renders from the status just written: replicas and thresholds
            # reach the Deployments and the routing ConfigMap now, not at the next drift check.
            self.reconciler.reconcile_named(namespace, name, "autoscale")
        for change in decision.changes:
            self.events.normal(body, _REASONS[change.kind, change.direction], change.reason)

    def _advise(
        self,
        body: Mapping[str, Any],
        settings: LoopSettings,
        decision: Decision,
        snapshot: MetricsSnapshot,
        now: float,
        mem: _Memory,
        state: PolicyState,
    ) -> None:
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        fields: dict[str, Any] = {"loopState": state.to_dict()}
        last = self._last_decision(decision, now, mem, advisory=True)
        if last is not None:
            fields["lastDecision"] = last
        patch_status(
            self.kube,
            str(meta["namespace"]),
            str(meta["name"]),
            fields=fields,
            conditions=[self._metrics_condition(snapshot, generation)],
            tiers=_desired(settings, decision),
        )
        for change in decision.changes:
            self.events.normal(
                body,
                "Recommend" + _REASONS[change.kind, change.direction],
                f"{change.reason} (advisory mode: not applied)",
            )

    def _mark_disabled(self, body: Mapping[str, Any]) -> None:
        status = body.get("status") or {}
        cond = find_condition(status.get("conditions") or [], METRICS_AVAILABLE)
        if cond is None or cond.get("reason") == "AutoscalingDisabled":
            return
        meta = body["metadata"]
        patch_status(
            self.kube,
            str(meta["namespace"]),
            str(meta["name"]),
            conditions=[
                condition(
                    METRICS_AVAILABLE,
                    "Unknown",
                    "AutoscalingDisabled",
                    "spec.autoscaling.enabled is false: metrics are not read",
                    int(meta.get("generation") or 0),
                )
            ],
            current=body,
        )


def _desired(settings: LoopSettings, decision: Decision) -> dict[str, dict[str, Any]] | None:
    if not settings.scales_replicas:
        return None
    return {t: {"desiredReplicas": n} for t, n in decision.replicas.items()}


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Called by the controller (`zeta_router.controller.handlers`) to add the loop's timer."""
    import kopf

    tick = float(
        context.config.extra.get("autoscale_tick") or os.environ.get(TICK_ENV) or DEFAULT_TICK
    )
    loop = ControlLoop(context.kube, context.events, context.reconciler)

    def on_tick(body: kopf.Body, **_: Any) -> None:
        try:
            loop.tick(body)
        except ApiError as e:
            # Logged, not raised: kopf would retry at once; the next tick retries anyway.
            log.warning("%s/%s: control loop: %s", body.metadata.namespace, body.metadata.name, e)

    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        loop.forget(str(meta.get("namespace")), str(meta.get("name")))

    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="autoscale",
        interval=tick,
        initial_delay=tick,
        sharp=False,
    )(on_tick)
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry, id="autoscale-forget", optional=True)(
        on_delete
    )
