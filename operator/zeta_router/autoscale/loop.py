"""The control loop in the operator: a kopf daemon per ZetaRouter that, while its autoscaling or
feedback is enabled, reads its metrics from Prometheus every ``spec.autoscaling.interval``,
asks the policy (`zeta_router.autoscale.policy.decide`) what to do, and applies or reports the
answer. The daemon's own variables are the loop's memory of that object between intervals; it
ends with the object (or when this operator replica stands by).

Data flows one way: the loop decides; in ``apply`` mode a decision that changes something is
handed, as a :class:`~zeta_router.controller.desired.LoopChoice`, to the controller's
reconciliation, which renders the children with it, applies them and writes the status once
(the loop's fields included). Nothing is written first and read back.

- Status, in either mode: ``tiers[].desiredReplicas`` (with autoscaling), ``lastDecision``
  {time, action, reason}, ``loopState`` and the ``MetricsAvailable`` condition, merged through
  `zeta_router.controller.status` (the controller's conditions and fields are never
  overwritten). In ``apply`` mode also ``thresholds`` and ``thresholdsFrom``: the record of what
  the loop chose, from which the controller's drift repair renders between intervals.
  Thresholds do not move again until every router reports the routing generation that carries
  the last change (``zeta_router_config_generation``).
- External tiers: ``status.external`` holds each one's estimated spend per hour and whether it
  is paused for its ``maxCostPerHour`` (the policy's spend rule); a pause or resume is a change
  like any other (rendered into the routing ConfigMap's ``external.paused``, Events
  ``ExternalTierPaused`` / ``ExternalTierResumed``).
- ``mode: advisory``: nothing is applied; the recommendation is in the status and the Events.
- Feedback without autoscaling moves thresholds only; replicas stay the user's.
- A Normal Event per change, and ``zeta_operator_decisions_total{kind,direction}``; every
  interval that reads metrics counts in ``zeta_operator_loop_intervals_total{metrics}``.
- No metrics (Prometheus unreachable, timing out, erroring, or no series), or a credential the
  policy refuses (`zeta_router.autoscale.credentials`): nothing changes, ``MetricsAvailable=False``
  says why, and the next interval tries again.

The policy's memory (low-load clocks, pressure points, load-shift offsets, the generation being
waited for) is also saved in ``status.loopState``, so a restarted operator carries on. Without a
saved state it is rebuilt from what runs: replicas from the Deployments, thresholds from the
routing ConfigMap (with feedback off, the part above the spec's thresholds counts as load
shift, so it is taken back when pressure is gone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from zeta_router.api.models import GROUP, PLURAL, VERSION, SpecError, parse_zetarouter
from zeta_router.api.routing import configmap_routing
from zeta_router.autoscale import wake
from zeta_router.autoscale.config import LoopSettings, settings_from_spec
from zeta_router.autoscale.credentials import CredentialsRefusedError, SecretPolicy, read_token
from zeta_router.autoscale.metrics import PrometheusSource
from zeta_router.autoscale.policy import Change, ContextState, Decision, PolicyState, decide
from zeta_router.autoscale.snapshot import MetricsSnapshot, MetricsStatus
from zeta_router.bounded_http import EndpointAllowList
from zeta_router.controller.daemon import run_intervals
from zeta_router.controller.desired import LoopChoice
from zeta_router.controller.status import (
    METRICS_AVAILABLE,
    condition,
    find_condition,
    patch_status,
)
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names

if TYPE_CHECKING:
    import kopf

    from zeta_router.controller.events import EventRecorder
    from zeta_router.controller.handlers import OperatorContext
    from zeta_router.controller.reconcile import Reconciler

log = logging.getLogger(__name__)

DECISIONS = Counter(
    "zeta_operator_decisions_total",
    "Changes decided by the control loop (applied, or recommended in advisory mode), by kind "
    "(replicas, thresholds, spend: an external tier paused or resumed) and direction (up, down).",
    ("kind", "direction"),
)
INTERVALS = Counter(
    "zeta_operator_loop_intervals_total",
    "Control-loop intervals run, by what Prometheus gave (metrics: ok, or why not: unreachable, "
    "timeout, no-series, error, refused).",
    ("metrics",),
)
DEFAULT_TICK = 5.0
"""How long a ZetaRouter's daemon waits before its first interval, and between two looks at a
spec whose loop is disabled. Tests and the demo shorten it with the variable below."""
TICK_ENV = "ZETA_ROUTER_AUTOSCALE_TICK"
SECRETS_POLICY_SETTING = "prometheus_secrets"
"""``OperatorConfig.extra`` key: the credential policy (``--prometheus-secrets``)."""
SECRETS_ALLOWED_SETTING = "prometheus_secret_allow"
"""``OperatorConfig.extra`` key: allowed Secrets, one ``NAMESPACE/NAME=URL`` per line."""
ENDPOINTS_SETTING = "prometheus_endpoints"
"""``OperatorConfig.extra`` key: allowed Prometheus hosts and CIDRs, comma-separated
(``--prometheus-endpoint``; empty: any)."""

_REASONS = {
    ("replicas", "up"): "ScaledUp",
    ("replicas", "down"): "ScaledDown",
    ("thresholds", "up"): "ThresholdsRaised",
    ("thresholds", "down"): "ThresholdsLowered",
    ("spend", "down"): "ExternalTierPaused",
    ("spend", "up"): "ExternalTierResumed",
}
TIER_SLEPT = "TierSlept"
TIER_WOKEN = "TierWoken"

_METRICS_REASONS = {
    MetricsStatus.UNREACHABLE: "PrometheusUnreachable",
    MetricsStatus.TIMEOUT: "PrometheusTimeout",
    MetricsStatus.NO_SERIES: "NoSeries",
    MetricsStatus.ERROR: "PrometheusError",
    MetricsStatus.REFUSED: "CredentialsRefused",
    MetricsStatus.NOT_ALLOWED: "PrometheusNotAllowed",
}

SourceFactory = Callable[[str, float, float, Mapping[str, str] | None], Any]
"""(url, window s, timeout s, headers) -> an object with ``snapshot(target) -> MetricsSnapshot``."""


def prometheus_sources(allowed: EndpointAllowList) -> SourceFactory:
    """Prometheus sources that query only endpoints of ``allowed``."""

    def factory(
        url: str, window: float, timeout: float, headers: Mapping[str, str] | None
    ) -> PrometheusSource:
        return PrometheusSource(
            url, window_seconds=window, timeout_seconds=timeout, headers=headers, allowed=allowed
        )

    return factory


_prometheus_source = prometheus_sources(EndpointAllowList())


@dataclass
class Memory:
    """One ZetaRouter's loop between intervals (a daemon's local state)."""

    state: PolicyState | None = None
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
    """What every ZetaRouter's loop shares: clients, the controller, the credential policy."""

    def __init__(
        self,
        kube: Kube,
        events: EventRecorder,
        reconciler: Reconciler | None = None,
        source_factory: SourceFactory = _prometheus_source,
        clock: Callable[[], float] = time.time,
        secrets: SecretPolicy | None = None,
        tick: float = DEFAULT_TICK,
    ) -> None:
        self.kube = kube
        self.events = events
        self.reconciler = reconciler
        self.source_factory = source_factory
        self.clock = clock
        self.secrets = secrets or SecretPolicy()
        self.tick = tick

    # ---- the daemon ---------------------------------------------------------------------------

    async def run(self, body: Mapping[str, Any], stopped: kopf.DaemonStopped) -> None:
        """A ZetaRouter's daemon: one interval, then sleep until the next, until stopped.
        ``body`` is kopf's live view of the object (the latest spec and status)."""
        mem = Memory()
        await run_intervals(lambda: self.step_logged(body, mem), stopped, "autoscale")

    def step_logged(self, body: Mapping[str, Any], mem: Memory) -> float:
        try:
            return self.step(body, mem)
        except ApiError as e:
            # Logged, not raised: the next interval tries again.
            meta = body.get("metadata") or {}
            log.warning("%s/%s: control loop: %s", meta.get("namespace"), meta.get("name"), e)
            return self.tick

    def step(self, body: Mapping[str, Any], mem: Memory) -> float:
        """One look at the ZetaRouter; returns the seconds until the next."""
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return self.tick
        namespace, name = str(meta["namespace"]), str(meta["name"])
        try:
            spec = parse_zetarouter(body)
        except SpecError as e:
            # The controller reports invalid specs (SpecValid=False); the loop just waits.
            log.debug("%s/%s: not running the control loop: %s", namespace, name, e)
            return self.tick
        settings = settings_from_spec(namespace, name, spec)
        if not settings.enabled:
            mem.state = None
            self._mark_disabled(body)
            return self.tick
        self.run_once(body, settings, mem, self.clock())
        return settings.interval_seconds

    # ---- one interval -------------------------------------------------------------------------

    def run_once(
        self, body: Mapping[str, Any], settings: LoopSettings, mem: Memory, now: float
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
        snapshot = self.snapshot(body, settings, mem)
        INTERVALS.labels(snapshot.status.value).inc()
        decision = decide(policy, snapshot, state, now)
        if not settings.scales_replicas:
            # Feedback without autoscaling: thresholds only, replicas stay the user's.
            decision = replace(
                decision,
                replicas=dict(running.replicas),
                changes=tuple(c for c in decision.changes if c.kind != "replicas"),
            )
        if settings.applies:
            mem.state = self._apply(body, settings, decision, snapshot, now, mem, running)
        else:
            self._advise(body, settings, decision, snapshot, now, mem)
            mem.state = decision.state
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

    def rebuilt_state(self, settings: LoopSettings, running: Running) -> PolicyState:
        """A state for a ZetaRouter the loop has no memory of (new, or after a restart)."""
        state = PolicyState.initial(settings.policy, running.replicas, running.thresholds)
        if settings.policy.feedback.enabled:
            return state
        contexts = dict(state.contexts)
        for ctx in settings.policy.contexts:
            now_cuts = running.thresholds.get(ctx.name)
            spec_all = settings.spec_thresholds.get(ctx.name)
            spec_cuts = None if spec_all is None else settings.loop_cuts(spec_all)
            if now_cuts is None or spec_cuts is None or len(now_cuts) != len(spec_cuts):
                continue
            shift = tuple(max(0.0, n - s) for n, s in zip(now_cuts, spec_cuts, strict=True))
            if any(shift):
                contexts[ctx.name] = ContextState(base=spec_cuts, shift=shift)
        return PolicyState(tiers=state.tiers, contexts=contexts)

    def read_running(self, namespace: str, name: str, settings: LoopSettings) -> Running | None:
        replicas: dict[str, int] = {}
        dep = names.DEPLOYMENT
        for tier in settings.policy.tiers:
            obj = self.kube.get_or_none(
                api_path(
                    dep.api_version, dep.plural, namespace, names.tier_object_name(name, tier.name)
                )
            )
            if obj is None:
                return None
            replicas[tier.name] = int((obj.get("spec") or {}).get("replicas") or 0)
        cm = self.kube.get_or_none(
            api_path("v1", names.CONFIGMAP.plural, namespace, names.routing_configmap_name(name))
        )
        if cm is None:
            return None
        routing = configmap_routing(cm)
        if routing is None:
            log.warning("%s/%s: unreadable routing ConfigMap", namespace, name)
            return Running(replicas=replicas, thresholds={}, generation=None)
        return Running(
            replicas=replicas,
            # The cut points the loop moves (those into an external tier are the spec's).
            thresholds={c.name: settings.loop_cuts(c.thresholds) for c in routing.contexts},
            generation=routing.generation,
        )

    def _replicas_moved(
        self, namespace: str, name: str, settings: LoopSettings, running: Running
    ) -> bool:
        if not any(t.may_sleep for t in settings.policy.tiers):
            return False  # only the wake daemon scales a tier besides the loop
        now = self.read_running(namespace, name, settings)
        return now is None or now.replicas != running.replicas

    def snapshot(
        self, body: Mapping[str, Any], settings: LoopSettings, mem: Memory
    ) -> MetricsSnapshot:
        if not settings.prometheus_url:
            return MetricsSnapshot.unavailable(
                MetricsStatus.ERROR, "spec.autoscaling.prometheus.url is not set"
            )
        namespace = str(body["metadata"]["namespace"])
        try:
            headers = self._auth_headers(namespace, settings)
        except CredentialsRefusedError as e:
            self.events.warning(body, "CredentialsRefused", f"{e}; Prometheus not queried")
            return MetricsSnapshot.unavailable(MetricsStatus.REFUSED, str(e))
        except (ApiError, ValueError) as e:
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
        if result.status is MetricsStatus.NOT_ALLOWED:
            self.events.warning(body, "PrometheusNotAllowed", result.message)
        return result

    def _auth_headers(self, namespace: str, settings: LoopSettings) -> dict[str, str] | None:
        ref = settings.auth_secret
        if ref is None or settings.prometheus_url is None:
            return None
        token = read_token(
            self.kube, self.secrets, namespace, ref.name, ref.key, settings.prometheus_url
        )
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
        self, decision: Decision, now: float, mem: Memory, advisory: bool
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
        mem: Memory,
        running: Running,
    ) -> PolicyState:
        """Record the decision and, when it changes something, have the controller apply it.
        Returns the state to carry on with."""
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        generation = int(meta.get("generation") or 0)
        last = self._last_decision(decision, now, mem, advisory=False)
        chosen = {k: settings.full_cuts(k, v) for k, v in decision.thresholds.items()}
        started_from = {k: list(v) for k, v in settings.spec_thresholds.items()}
        external = external_status(settings, decision, now, body)

        def next_state(routing_generation: int | None) -> PolicyState:
            if not decision.thresholds_changed:
                return decision.state
            # Thresholds wait until every router runs the generation carrying this change.
            floor = (running.generation or 0) + 1
            return decision.state.awaiting(max(routing_generation or 0, floor))

        def status_fields(routing_generation: int | None) -> dict[str, Any]:
            fields: dict[str, Any] = {
                "thresholds": chosen,
                # What the spec said when these were chosen: a later spec edit wins (render).
                "thresholdsFrom": started_from,
                "loopState": next_state(routing_generation).to_dict(),
            }
            if external is not None:
                fields["external"] = external
            if last is not None:
                fields["lastDecision"] = last
            return fields

        metrics = self._metrics_condition(snapshot, generation)
        replicas = dict(decision.replicas) if settings.scales_replicas else None
        if decision.changes and self.reconciler is not None:
            choice = LoopChoice(
                replicas=replicas,
                thresholds=chosen,
                thresholds_from=started_from,
                status_fields=status_fields,
                conditions=(metrics,),
                tier_fields=sleep_fields(decision, now),
                external=external,
            )
            outcome = self.reconciler.reconcile(body, "autoscale", choice)
            routing_generation = outcome.routing_generation
        else:
            routing_generation = None
            if replicas is not None and self._replicas_moved(namespace, name, settings, running):
                # Something scaled a tier since this interval read the Deployments (the wake
                # daemon, from a sleeping tier): recording the older counts would undo it.
                replicas = None
            patch_status(
                self.kube,
                namespace,
                name,
                fields=status_fields(None),
                conditions=[metrics],
                tiers=_desired(replicas),
            )
        for change in decision.changes:
            self.events.normal(body, event_reason(change), change.reason)
        return next_state(routing_generation)

    def _advise(
        self,
        body: Mapping[str, Any],
        settings: LoopSettings,
        decision: Decision,
        snapshot: MetricsSnapshot,
        now: float,
        mem: Memory,
    ) -> None:
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        fields: dict[str, Any] = {"loopState": decision.state.to_dict()}
        external = external_status(settings, decision, now, body)
        if external is not None:
            fields["external"] = external
        last = self._last_decision(decision, now, mem, advisory=True)
        if last is not None:
            fields["lastDecision"] = last
        patch_status(
            self.kube,
            str(meta["namespace"]),
            str(meta["name"]),
            fields=fields,
            conditions=[self._metrics_condition(snapshot, generation)],
            tiers=_desired(dict(decision.replicas) if settings.scales_replicas else None),
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
            # No estimate, and nothing paused, without the loop (render unpauses at once).
            fields={"external": None},
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


def external_status(
    settings: LoopSettings, decision: Decision, now: float, body: Mapping[str, Any]
) -> list[dict[str, Any]] | None:
    """``status.external``: each external tier's estimated spend per hour, its cap, and whether
    (since when, why) it is paused. None: the ZetaRouter has no external tier."""
    if not settings.target.external:
        return None
    before = {
        str(e.get("name")): e
        for e in (body.get("status") or {}).get("external") or []
        if isinstance(e, Mapping)
    }
    reasons = {c.target: c.reason for c in decision.changes if c.kind == "spend"}
    out: list[dict[str, Any]] = []
    for tier in settings.target.external:
        entry: dict[str, Any] = {"name": tier, "paused": tier in decision.paused}
        rate = decision.spend_per_hour.get(tier)
        if rate is not None:
            entry["costPerHour"] = round(rate, 6)
        cap = settings.spend_caps.get(tier)
        if cap is not None:
            entry["maxCostPerHour"] = cap
        old = before.get(tier) or {}
        if tier in reasons:
            entry["since"] = _rfc3339(now)
            entry["reason"] = reasons[tier][:1024]
        elif bool(old.get("paused")) == entry["paused"]:
            for key in ("since", "reason"):
                if old.get(key) is not None:
                    entry[key] = old[key]
        out.append(entry)
    return out


def sleep_change(change: Change) -> str | None:
    """Asleep or Awake when a replicas change takes a tier to zero or from it, else None."""
    if change.kind != "replicas":
        return None
    if change.new == (0.0,):
        return "Asleep"
    if change.old == (0.0,):
        return "Awake"
    return None


def event_reason(change: Change) -> str:
    sleep = sleep_change(change)
    if sleep is not None:
        return TIER_SLEPT if sleep == "Asleep" else TIER_WOKEN
    return _REASONS[change.kind, change.direction]


def sleep_fields(decision: Decision, now: float) -> dict[str, dict[str, Any]]:
    """``status.tiers[].sleep`` of the tiers this decision puts to sleep or wakes."""
    out: dict[str, dict[str, Any]] = {}
    for change in decision.changes:
        state = sleep_change(change)
        if state is not None:
            out[change.target] = {
                "sleep": {"state": state, "since": _rfc3339(now), "reason": change.reason[:1024]}
            }
    return out


def _desired(replicas: Mapping[str, int] | None) -> dict[str, dict[str, Any]] | None:
    if replicas is None:
        return None
    return {t: {"desiredReplicas": n} for t, n in replicas.items()}


def register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None:
    """Called by the controller (`zeta_router.controller.handlers`) to add the loop's daemon."""
    import kopf

    tick = float(
        context.config.extra.get("autoscale_tick") or os.environ.get(TICK_ENV) or DEFAULT_TICK
    )
    extra = context.config.extra
    loop = ControlLoop(
        context.kube,
        context.events,
        context.reconciler,
        source_factory=prometheus_sources(
            EndpointAllowList.parse([extra.get(ENDPOINTS_SETTING) or ""])
        ),
        secrets=SecretPolicy.parse(
            extra.get(SECRETS_POLICY_SETTING) or "annotated",
            [s for s in (extra.get(SECRETS_ALLOWED_SETTING) or "").split("\n") if s],
        ),
        tick=tick,
    )

    async def daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        await loop.run(body, stopped)
        if (
            stopped.reason is not None
            and stopped.reason & kopf.DaemonStoppingReason.FILTERS_MISMATCH
        ):
            # Turned off: say so in the status once (the daemon runs only while it is on).
            await asyncio.to_thread(loop.step_logged, body, Memory())

    def wanted(spec: kopf.Spec, **_: Any) -> bool:
        return uses_control_loop(spec)

    wake.register(registry, context)
    kopf.daemon(
        GROUP,
        VERSION,
        PLURAL,
        registry=registry,
        id="autoscale",
        initial_delay=tick,
        cancellation_timeout=60.0,
        when=wanted,
    )(daemon)


def uses_control_loop(spec: Mapping[str, Any]) -> bool:
    """Whether a ZetaRouter's spec asks for the control loop (autoscaling or feedback): only
    those get its daemon. Read from the raw spec, so that an invalid one that asks for it still
    gets it (the loop then waits, and the controller reports the spec)."""
    return any(bool((spec.get(part) or {}).get("enabled")) for part in ("autoscaling", "feedback"))
