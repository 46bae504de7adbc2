"""The kopf handlers: thin, each one call into the :class:`~.reconcile.Reconciler`.

They are registered into an explicit registry by :func:`build_registry` (not with module-level
decorators) because the drift interval and the other settings come from the command line.

Extension point for the control loop: if ``zeta_router.autoscale.loop`` exists and defines
``register(registry: kopf.OperatorRegistry, context: OperatorContext) -> None``, it is called
here, so its timer runs in the same operator, with the same Kube client, event recorder and
status helpers (``zeta_router.controller.status``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import random
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import kopf

from zeta_router.api.models import GROUP, PLURAL, VERSION
from zeta_router.controller.apply import owner_name
from zeta_router.controller.config import FINALIZER_PREFIX, OperatorConfig
from zeta_router.controller.events import EventRecorder
from zeta_router.controller.reconcile import Reconciler
from zeta_router.kube import ApiError, Kube, api_path, kopf_login
from zeta_router.render import names

log = logging.getLogger(__name__)

AUTOSCALE_LOOP_MODULE = "zeta_router.autoscale.loop"
LEARNING_LOOP_MODULE = "zeta_router.learning.loop"
#: Modules that add handlers of their own (the control loop, the learner).
EXTENSION_MODULES = (AUTOSCALE_LOOP_MODULE, LEARNING_LOOP_MODULE)
PEERING_API = "kopf.dev/v1"
#: Threads for drift checks: few, so that a fleet's checks never hold kopf's handler threads
#: (creates and updates go first), and a check is cheap when nothing drifted.
DRIFT_THREADS = 2
#: How long a drift check or a daemon may take to notice it is stopped before it is cancelled.
CANCELLATION_TIMEOUT = 5.0


def drift_phase(uid: str, interval: float) -> float:
    """Where in the drift interval this object's checks fall: spread evenly over the fleet, the
    same for one object across restarts (a hash of its uid), so that a fleet created at once is
    not checked all at once."""
    fraction = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
    return fraction * interval


class SpecDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation of the last handled spec, whose essence is built from a copy of only
    what it keeps. kopf's own build deep-copies the whole object, managedFields and status
    included, at every event of every ZetaRouter, and then drops all but the spec, labels and
    annotations: in a burst of 1,000 that copy was a sixth of the operator's CPU. The essence
    is the same (unit-tested against kopf's); with ``extra_fields`` (handlers on fields outside
    the spec, which we have none of) it is kopf's own build."""

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[str | tuple[str, ...] | list[str] | None] | None = None,
    ) -> kopf.BodyEssence:
        fields = list(extra_fields or ())
        if fields:
            return super().build(body=body, extra_fields=fields)
        meta = body.get("metadata") or {}
        slim = {k: v for k, v in body.items() if k not in ("metadata", "status")}
        # ownerReferences: kopf names its keys by them (for ReplicaSets of Deployments).
        slim["metadata"] = {
            k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta
        }
        return super().build(body=kopf.Body(cast(kopf.RawBody, slim)))


@dataclass(frozen=True)
class OperatorContext:
    """What handlers registered by other modules share with the controller."""

    config: OperatorConfig
    kube: Kube
    events: EventRecorder
    reconciler: Reconciler


def build_registry(ctx: OperatorContext) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    cfg = ctx.config
    reconciler = ctx.reconciler
    zr = (GROUP, VERSION, PLURAL)
    child_kinds = reconciler.child_kinds()

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # All kopf settings in one place.
        settings.persistence.finalizer = f"{FINALIZER_PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix=FINALIZER_PREFIX
        )
        settings.persistence.diffbase_storage = SpecDiffBaseStorage(
            prefix=FINALIZER_PREFIX, key="last-handled-configuration"
        )
        settings.peering.name = cfg.peering_name
        settings.peering.priority = (
            cfg.priority if cfg.priority is not None else random.randint(1, 1_000_000)
        )
        settings.peering.standalone = cfg.standalone
        settings.peering.clusterwide = cfg.clusterwide
        # Our own Events carry the reconciliation's story; kopf's only its failures.
        settings.posting.level = logging.WARNING
        settings.posting.reporting_component = "zeta-router-operator"
        settings.posting.event_name_prefix = "zeta-router-"
        settings.execution.max_workers = cfg.workers
        # kopf starts a worker per object with pending events; after a burst (hundreds of
        # children created at once) unbounded workers hold every body at the same time, and
        # Python's heap stays at that peak. A bound keeps memory flat at little cost in speed.
        # A worker lingers for idle_timeout waiting for more events of its object: short, so
        # that slots free up quickly during a burst.
        settings.queueing.worker_limit = 8 * cfg.workers
        settings.queueing.idle_timeout = 0.5
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 10
        settings.networking.request_timeout = 60
        # Only our children are watched, filtered by the apiserver, not in the operator.
        for kind in child_kinds:
            settings.watching.label_selectors[kind.api_version, kind.plural] = (
                names.MANAGED_SELECTOR
            )

    kopf.on.startup(registry=registry)(configure)

    def ensure_peering(**_: Any) -> None:
        if not cfg.standalone:
            _ensure_peering_objects(ctx.kube, cfg)

    kopf.on.startup(registry=registry, id="peering")(ensure_peering)

    # A registry of our own starts without kopf's default login handlers: kopf logs in with the
    # same credentials as our own client, through the same loader (kopf_login). kopf calls it
    # again on a 401, so an expired exec-plugin or OIDC token is renewed for the watches too.
    def login(**_: Any) -> Any:
        return kopf_login(cfg.kubeconfig, cfg.context)

    kopf.on.login(registry=registry)(login)

    def on_create(body: kopf.Body, **_: Any) -> None:
        reconciler.reconcile(body, "create")

    def on_update(body: kopf.Body, **_: Any) -> None:
        reconciler.reconcile(body, "update")

    def on_resume(body: kopf.Body, **_: Any) -> None:
        reconciler.reconcile(body, "resume")

    drift_pool = ThreadPoolExecutor(max_workers=DRIFT_THREADS, thread_name_prefix="drift")

    def drift_check(body: kopf.Body) -> None:
        meta = body.metadata
        try:
            reconciler.check_drift(body)
        except Exception as e:  # logged, not raised: the next interval checks again
            log.warning("%s/%s: drift check failed: %s", meta.namespace, meta.name, e)

    async def drift(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        # A daemon that sleeps on its stop flag and waits for its check in a small pool of its
        # own: stopping (at exit, on deletion) is immediate, and a check in flight is left to
        # finish on its thread rather than holding the operator's shutdown.
        running = asyncio.get_running_loop()
        await stopped.wait(
            cfg.drift_interval + drift_phase(str(body.metadata.uid), cfg.drift_interval)
        )
        while not stopped:
            await running.run_in_executor(drift_pool, drift_check, body)
            await stopped.wait(cfg.drift_interval)

    def on_delete(meta: kopf.Meta, **_: Any) -> None:
        reconciler.forget(str(meta.get("namespace")), str(meta.get("name")), meta.uid)

    kopf.on.create(*zr, registry=registry, id="reconcile")(on_create)
    kopf.on.update(*zr, registry=registry, id="reconcile")(on_update)
    kopf.on.resume(*zr, registry=registry, id="reconcile")(on_resume)
    # Optional: cleanup of in-memory state only, so kopf adds no finalizer for it.
    kopf.on.delete(*zr, registry=registry, id="forget", optional=True)(on_delete)
    kopf.daemon(*zr, registry=registry, id="drift", cancellation_timeout=CANCELLATION_TIMEOUT)(
        drift
    )

    async def on_child_event(kind: str, type: str | None, body: kopf.Body) -> None:
        # On the event loop, not on kopf's handler threads: what most events cost is a
        # dictionary entry and a poke, and waiting for a thread behind the creates of a burst
        # would keep kopf's per-object queues, each event a whole object, growing meanwhile.
        namespace = body.metadata.namespace
        if namespace is None:
            return
        # What the drift checks compare with (type None: the initial listing).
        if type == "DELETED":
            reconciler.seen.gone(kind, namespace, str(body.metadata.name))
        else:
            reconciler.seen.seen(kind, body)
        owner = owner_name(body)
        if owner is None:
            return
        # Of a Deployment: does this event change what a status refresh would read of it?
        moved = kind == names.DEPLOYMENT.kind and reconciler.deployment_moved(type, body)
        if type == "DELETED":
            # Deleted by someone (or by the garbage collector after the ZetaRouter went away,
            # which reconcile_named sees and skips): put it back now, not at the next drift check.
            await asyncio.get_running_loop().run_in_executor(
                None, reconciler.reconcile_named, namespace, owner, "child-deleted"
            )
        elif type is not None and moved:
            # Readiness changes flow into the ZetaRouter's status promptly. (type None: the
            # initial listing, after which the resume handlers reconcile anyway.)
            reconciler.refresh_status(namespace, owner)

    for kind in child_kinds:

        async def on_event(
            type: str | None, body: kopf.Body, _kind: str = kind.kind, **_: Any
        ) -> None:
            await on_child_event(_kind, type, body)

        kopf.on.event(
            kind.api_version,
            kind.plural,
            registry=registry,
            id=f"child-{kind.plural}",
            labels={names.MANAGED_BY: names.MANAGED_BY_VALUE},
        )(on_event)

    def liveness(**_: Any) -> dict[str, Any]:
        return {"drift_interval": cfg.drift_interval}

    kopf.on.probe(registry=registry, id="operator")(liveness)

    _register_extensions(registry, ctx)
    return registry


def _ensure_peering_objects(kube: Kube, cfg: OperatorConfig) -> None:
    """Create the kopf peering object(s) if the peering CRDs are installed and the objects are
    not: without them, replicas would not see each other and would all work at once."""
    targets: list[tuple[str, str, str | None]]
    if cfg.clusterwide:
        targets = [(api_path(PEERING_API, "clusterkopfpeerings"), "ClusterKopfPeering", None)]
    else:
        targets = [
            (api_path(PEERING_API, "kopfpeerings", ns), "KopfPeering", ns)
            for ns in cfg.namespaces
            if not any(c in ns for c in "*?[!")  # patterns: no single namespace to put it in
        ]
    for path, kind, ns in targets:
        meta: dict[str, str] = {"name": cfg.peering_name}
        if ns is not None:
            meta["namespace"] = ns
        try:
            kube.create(path, {"apiVersion": PEERING_API, "kind": kind, "metadata": meta})
            log.info("created %s %s", kind, cfg.peering_name)
        except ApiError as e:
            if e.conflict:
                continue
            if e.not_found:
                log.warning(
                    "kopf peering CRDs are not installed (manifests/peering.yaml): "
                    "running standalone; do not run several replicas"
                )
                return
            log.warning("cannot create %s %s: %s", kind, cfg.peering_name, e)


def _register_extensions(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise  # the module exists but one of its imports is missing: a real error
            log.info("no %s module: the operator runs without it", name)
            continue
        register = getattr(module, "register", None)
        if register is None:
            log.warning("%s has no register(registry, context); not registered", name)
            continue
        register(registry, ctx)
