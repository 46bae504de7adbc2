"""Reconciliation of one ZetaRouter: parse, render, apply the children, write the status.

The kopf handlers (``controller.handlers``) and the control loop (``autoscale.loop``) only call
into :class:`Reconciler`. Everything that decides is pure and lives elsewhere
(``controller.desired``: what the children should be, the loop's choice included;
``controller.rollout``: which tier gets a new template now; ``controller.readiness``: the
conditions); this module does the I/O in between: one path lists, renders, applies (server-side,
``controller.apply``) and writes the status once.

Reconciliations of the same ZetaRouter never overlap: kopf serialises the handlers of one
object, but child events, the drift timer and the control loop arrive on other tasks, so a lock
per ZetaRouter orders them. Status refreshes caused by child events are coalesced: the first
Deployment event of a ZetaRouter schedules one refresh :data:`STATUS_COALESCE_SECONDS` later, and
the events until then (a rollout's, a burst's) are covered by it, not one refresh each.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import Counter, Histogram

from zeta_router.api.models import SpecError
from zeta_router.api.pod_policy import PolicyError, referenced_secrets
from zeta_router.controller import desired as desired_mod
from zeta_router.controller.apply import Applier, adopted, controller_uid, fingerprint, owner_view
from zeta_router.controller.desired import LoopChoice, RenderSettings
from zeta_router.controller.events import EventRecorder
from zeta_router.controller.readiness import (
    TierState,
    readiness_conditions,
    readiness_view,
    ready_summary,
    tier_state,
)
from zeta_router.controller.seen import SeenChildren, Settled, unchanged
from zeta_router.controller.status import (
    SPEC_VALID,
    condition,
    patch_status,
    zetarouter_path,
)
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router.render.learned import model_store_name, parse_model_store
from zeta_router.render.router_key import build_router_key_secret
from zeta_router.scoring.learned import LearnedCorrection

log = logging.getLogger(__name__)

#: How long a status refresh waits for more child events of the same ZetaRouter (seconds).
STATUS_COALESCE_SECONDS = 1.0
#: Threads for coalesced status refreshes (each is a few reads and at most one write).
STATUS_THREADS = 2

#: The triggers of kopf's own handlers of a ZetaRouter (a drift check waits for the first).
HANDLER_TRIGGERS = frozenset({"create", "update", "resume"})
#: How often a drift check makes sure the router key Secret still exists (seconds).
ROUTER_KEY_RECHECK = 600.0

RECONCILES = Counter(
    "zeta_operator_reconciles_total",
    "ZetaRouter reconciliations, by what triggered them and how they ended.",
    ["trigger", "result"],
)
RECONCILE_SECONDS = Histogram(
    "zeta_operator_reconcile_duration_seconds",
    "Time to reconcile one ZetaRouter.",
    ["trigger"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CHILD_CHANGES = Counter(
    "zeta_operator_child_changes_total",
    "Child objects created, changed or deleted by the operator.",
    ["kind", "action"],
)

Live = dict[str, dict[str, dict[str, Any]]]  # kind -> name -> object

# Event reason by trigger; other triggers (drift, child-deleted) repair. On resume (operator
# start), changes are those of a new operator release, or of edits made while it was down.
_EVENT_REASONS = {
    "create": "Created",
    "update": "Updated",
    "resume": "Updated",
    "autoscale": "Updated",
    "rollout": "Updated",
}


@dataclass
class Outcome:
    """What one reconciliation did (for logs, events and tests)."""

    valid: bool
    message: str = ""
    created: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    """Tiers that got a new pod template."""
    routing_generation: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.patched or self.deleted)


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {obj['metadata']['name']}"


Key = tuple[str, str]


class Coalescer:
    """Runs ``fn(key)`` once, ``delay`` seconds after the first of any number of pokes for the
    same ``key``; pokes meanwhile are covered by that run. One thread waits, a small pool runs.

    The delay is the same for every key, so keys fall due in the order they were first poked: a
    queue in that order, not a scan of every pending key at each poke (a burst pokes a thousand
    ZetaRouters at once)."""

    def __init__(self, delay: float, fn: Callable[[Key], None], threads: int = 1) -> None:
        self.delay = delay
        self._fn = fn
        self._pending: set[Key] = set()
        self._due: deque[tuple[float, Key]] = deque()
        self._cv = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="coalesced")
        self._thread: threading.Thread | None = None

    def poke(self, key: Key) -> None:
        with self._cv:
            if key in self._pending:
                return
            self._pending.add(key)
            self._due.append((time.monotonic() + self.delay, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="coalescer", daemon=True)
                self._thread.start()
            if len(self._due) == 1:
                self._cv.notify()  # the waiting thread had nothing due

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._due:
                    self._cv.wait()
                now = time.monotonic()
                ready = []
                while self._due and self._due[0][0] <= now:
                    ready.append(self._due.popleft()[1])
                if not ready:
                    self._cv.wait(self._due[0][0] - now)
                    continue
                self._pending.difference_update(ready)
            for k in ready:
                self._pool.submit(self._fn, k)


class Reconciler:
    def __init__(
        self, kube: Kube, events: EventRecorder, settings: RenderSettings | None = None
    ) -> None:
        self.kube = kube
        self.events = events
        self.settings = settings or RenderSettings()
        self.applier = Applier(kube)
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._refresher = Coalescer(STATUS_COALESCE_SECONDS, self._drain_dirty, STATUS_THREADS)
        # When each ZetaRouter's router key Secret was last known to exist: (uid, monotonic).
        self._key_seen: dict[tuple[str, str], tuple[str, float]] = {}
        self._key_get_forbidden = False
        #: The children as the operator's watch shows them (fed by the child event handlers).
        self.seen = SeenChildren()
        # Each ZetaRouter as its last full reconciliation without error left it.
        self._settled: dict[tuple[str, str], Settled] = {}
        # The ZetaRouters (by uid) whose create, update or resume handler has run in this process.
        self._handled: set[str] = set()
        # What the watch last showed of each tier Deployment's readiness, by (namespace, name):
        # keyed as SeenChildren is, so that a deletion the watch missed (a relist after its
        # resourceVersion expired) leaves an entry the next object of that name replaces.
        self._readiness: dict[tuple[str, str], tuple[Any, ...]] = {}

    # ---- serialisation ------------------------------------------------------------------------

    def _lock_for(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    @contextmanager
    def _exclusive(self, key: tuple[str, str]) -> Iterator[None]:
        lock = self._lock_for(key)
        with lock:
            yield
        self._drain_dirty(key)

    def _drain_dirty(self, key: tuple[str, str]) -> None:
        lock = self._lock_for(key)
        while True:
            with self._guard:
                if key not in self._dirty:
                    return
            if not lock.acquire(blocking=False):
                return  # the holder drains when it releases
            try:
                with self._guard:
                    if key not in self._dirty:
                        return
                    self._dirty.discard(key)
                self._refresh_status_locked(*key)
            except Exception as e:
                log.warning("status refresh of %s/%s failed: %s", key[0], key[1], e)
            finally:
                lock.release()

    def forget(self, namespace: str, name: str, uid: str) -> None:
        with self._guard:
            self._handled.discard(uid)
            self._locks.pop((namespace, name), None)
            self._dirty.discard((namespace, name))
            self._key_seen.pop((namespace, name), None)
            self._settled.pop((namespace, name), None)
        self.applier.forget(namespace, name)

    # ---- entry points -------------------------------------------------------------------------

    def reconcile(
        self, body: Mapping[str, Any], trigger: str, loop: LoopChoice | None = None
    ) -> Outcome:
        """Bring the children of ``body`` to what they should be and write the status.
        ``loop``: the control loop's choice of this interval, applied and recorded here."""
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        started = time.monotonic()
        result = "error"
        if trigger in HANDLER_TRIGGERS:
            with self._guard:
                self._handled.add(str(meta["uid"]))
        try:
            with self._exclusive(key):
                outcome = self._reconcile_locked(body, trigger, loop)
            result = (
                "ok"
                if outcome.valid and not outcome.errors
                else ("invalid" if not outcome.valid else "failed")
            )
            return outcome
        finally:
            RECONCILES.labels(trigger, result).inc()
            RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)

    def check_drift(self, body: Mapping[str, Any]) -> Outcome | None:
        """A drift check: nothing to do (None) when the watch shows every child as the last
        reconciliation left it and no other, and the router key is not due for its recheck;
        otherwise the full reconciliation, which repairs."""
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        uid = str(meta["uid"])
        generation = int(meta.get("generation") or 0)
        with self._guard:
            handled = uid in self._handled
        if not handled:
            # Its create (or, after a restart, resume) handler has not run yet: in a burst it
            # waits behind the others for one of kopf's workers, and kopf runs it (and retries
            # it) anyway. A full reconciliation here would list every child kind of the
            # namespace from etcd and apply them all, and the handler would then do it again.
            RECONCILES.labels("drift", "waiting").inc()
            return None
        if unchanged(self._settled.get(key), uid, generation, self.seen.of(key[0], uid)) and (
            not self._key_recheck_due(key, uid, time.monotonic())
            or self._router_key_still_there(body, key, uid)
        ):
            RECONCILES.labels("drift", "unchanged").inc()
            return None
        return self.reconcile(body, "drift")

    def _router_key_still_there(
        self, body: Mapping[str, Any], key: tuple[str, str], uid: str
    ) -> bool:
        """The router key's recheck as one read of its metadata, where that is allowed and
        enough: not when the spec names Secrets the pod policy looks at (the full path looks at
        them again, at the same pace). False: take the full path (it recreates a missing key).
        Otherwise each ZetaRouter's check would list every child kind from etcd every
        :data:`ROUTER_KEY_RECHECK` seconds, a cost that grows with the fleet."""
        if self._key_get_forbidden or (
            self.settings.pod_policy.reads_secrets and referenced_secrets(body)
        ):
            return False
        namespace, name = key
        try:
            self.kube.get_metadata(
                api_path("v1", "secrets", namespace, names.router_key_secret_name(name))
            )
        except ApiError as e:
            if e.status == 403:
                self._key_get_forbidden = True  # `get` on Secrets is not granted: never again
            return False
        self._key_seen[key] = (uid, time.monotonic())
        return True

    def reconcile_named(
        self, namespace: str, name: str, trigger: str, loop: LoopChoice | None = None
    ) -> Outcome | None:
        """Reconcile the ZetaRouter ``namespace/name`` as it is now (None: gone or deleting)."""
        body = self.kube.get_or_none(zetarouter_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return self.reconcile(body, trigger, loop)

    def deployment_moved(self, type: str | None, deployment: Mapping[str, Any]) -> bool:
        """Whether a watch event of a tier's Deployment changes what a status refresh reads of
        it (:func:`~.readiness.readiness_view`); remembered for the next event. A burst's
        Deployments are written several times each by their controller in their first seconds,
        and a refresh costs four reads from etcd. A creation (``ADDED``) calls for none: the
        reconciliation that applied it writes the status from what it applied, and the
        Deployment controller's first status write (it always makes one) is the next event."""
        meta = deployment.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        with self._guard:
            if type == "DELETED":
                self._readiness.pop(key, None)
                return False
            view = readiness_view(deployment)
            before = self._readiness.get(key)
            self._readiness[key] = view
        return type != "ADDED" and before != view

    def refresh_status(self, namespace: str, name: str) -> None:
        """Recompute the readiness part of the status from the Deployments, soon (coalesced);
        when a tier waiting for its new template may now have it, reconcile instead."""
        key = (namespace, name)
        with self._guard:
            self._dirty.add(key)
        self._refresher.poke(key)

    # ---- the work -----------------------------------------------------------------------------

    def child_kinds(self) -> tuple[names.ChildKind, ...]:
        """The kinds of children this operator makes (NetworkPolicies only when enabled;
        PodDisruptionBudgets at the API version the cluster serves)."""
        pdb = names.pdb_kind(self.settings.pdb_api_version)
        return tuple(
            pdb if k is names.PDB else k
            for k in names.CHILD_KINDS
            if self.settings.network_policy or k is not names.NETWORK_POLICY
        )

    def _list_children(self, namespace: str, name: str, uid: str) -> Live:
        """This ZetaRouter's children by kind and name (only those it controls).

        A consistent read (from etcd), not from the apiserver's watch cache: what a
        reconciliation reads it may write back (a Deployment's replicas while the control loop
        owns them), and a cache that lags the loop's last write by a moment would undo it. So
        does a status refresh: from a cache behind the reconciliation just done, it would write
        an older readiness over the newer one."""
        selector = names.children_selector(name)
        live: Live = {}
        for kind in self.child_kinds():
            items = self.kube.list(api_path(kind.api_version, kind.plural, namespace), selector)
            live[kind.kind] = {
                o["metadata"]["name"]: o
                for o in items.get("items") or []
                if controller_uid(o) == uid
            }
        return live

    def _get_tier_children(self, body: Mapping[str, Any], uid: str) -> Live:
        """The Deployments of the tiers of ``body`` (its spec's and its status's) and its routing
        ConfigMap, those it controls: what a status refresh reads. One read of each by name, from
        etcd (consistent, as :meth:`_list_children` says why): a list by label from etcd costs the
        apiserver every object of the kind in the namespace, and a burst refreshes each
        ZetaRouter of the namespace a few times."""
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        tiers = [
            t["name"]
            for t in ((body.get("spec") or {}).get("tiers") or [])
            if isinstance(t, Mapping) and isinstance(t.get("name"), str) and not t.get("external")
        ]
        tiers += [
            t["name"]
            for t in ((body.get("status") or {}).get("tiers") or [])
            if isinstance(t, Mapping) and isinstance(t.get("name"), str)
        ]
        wanted = {
            names.DEPLOYMENT: sorted({names.tier_object_name(name, t) for t in tiers}),
            names.CONFIGMAP: [names.routing_configmap_name(name)],
        }
        live: Live = {}
        for kind, object_names in wanted.items():
            live[kind.kind] = {}
            for object_name in object_names:
                obj = self.kube.get_or_none(
                    api_path(kind.api_version, kind.plural, namespace, object_name)
                )
                if obj is not None and controller_uid(obj) == uid:
                    live[kind.kind][object_name] = obj
        return live

    def _reconcile_locked(
        self, body: Mapping[str, Any], trigger: str, loop: LoopChoice | None
    ) -> Outcome:
        meta = body["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        generation = int(meta.get("generation") or 0)
        if meta.get("deletionTimestamp"):
            return Outcome(valid=True, message="being deleted")
        # A ZetaRouter being created has no children of its own yet (those of an earlier one of
        # the same name have another owner, and the applier looks before it creates): no list.
        live = (
            {k.kind: {} for k in self.child_kinds()}
            if trigger == "create"
            else self._list_children(namespace, name, uid)
        )
        try:
            want = desired_mod.compute(
                body,
                live[names.DEPLOYMENT.kind],
                live[names.CONFIGMAP.kind],
                self.settings,
                loop,
                learned=self._learned(body, namespace, name),
                secret_annotations=self._secret_annotations(body, namespace),
            )
        except PolicyError as e:
            return self._invalid(body, str(e), generation, "PolicyViolation", e.rules)
        except SpecError as e:
            return self._invalid(body, str(e), generation)

        outcome = Outcome(valid=True, routing_generation=want.routing_generation)
        owner = owner_view(body)
        self._ensure_router_key(namespace, name, uid, owner, outcome, trigger)
        applied: dict[str, dict[str, Any]] = {}
        wanted: set[tuple[str, str]] = set()
        for child in want.children:
            obj = adopted(child, owner)
            kind = str(obj["kind"])
            child_name = str(obj["metadata"]["name"])
            wanted.add((kind, child_name))
            try:
                result = self.applier.apply(obj, live.get(kind, {}).get(child_name))
            except ApiError as e:
                outcome.errors.append(f"{_ref(obj)}: {e.message or e.reason}")
                continue
            applied[f"{kind}/{child_name}"] = result.obj
            if result.created:
                outcome.created.append(_ref(obj))
                CHILD_CHANGES.labels(kind, "create").inc()
            elif result.changed:
                outcome.patched.append(f"{_ref(obj)} ({', '.join(result.changed[:6])})")
                CHILD_CHANGES.labels(kind, "patch").inc()
        for child_kind in self.child_kinds():
            for child_name, obj in live.get(child_kind.kind, {}).items():
                if (child_kind.kind, child_name) in wanted:
                    continue
                ref = f"{child_kind.kind} {child_name}"
                try:
                    self.applier.prune(child_kind, obj)
                    outcome.deleted.append(ref)
                    CHILD_CHANGES.labels(child_kind.kind, "delete").inc()
                except ApiError as e:
                    outcome.errors.append(f"deleting {ref}: {e.message}")

        tiers = []
        for tier, dep_name in want.tier_deployments.items():
            plan = want.rollout.get(tier)
            if plan is not None and plan.action == "update":
                outcome.released.append(tier)
            dep = applied.get(f"Deployment/{dep_name}") or live["Deployment"].get(dep_name)
            tiers.append(tier_state(tier, dep, plan))
        apply_error = "; ".join(outcome.errors) or None
        fields = dict(want.status_fields)
        conditions: list[Mapping[str, Any]] = []
        tier_fields: dict[str, dict[str, Any]] = {}
        if loop is not None:
            fields.update(loop.status_fields(want.routing_generation))
            conditions += loop.conditions
            for tier, n in (loop.replicas or {}).items():
                tier_fields[tier] = {"desiredReplicas": n}
            for tier, more in loop.tier_fields.items():
                tier_fields.setdefault(tier, {}).update(more)
        self._write_status(
            body, tiers, generation, fields, apply_error, True, conditions, tier_fields
        )
        self._post_events(body, trigger, outcome, want)
        if outcome.errors:
            self._settled.pop((namespace, name), None)
        else:
            kinds = {k.kind for k in self.child_kinds()}
            self._settled[(namespace, name)] = Settled(
                uid,
                generation,
                {
                    (kind, child): fingerprint(obj)
                    for ref, obj in applied.items()
                    for kind, _, child in [ref.partition("/")]
                    if kind in kinds
                },
            )
        if outcome.changed or outcome.errors:
            log.info(
                "%s/%s reconciled (%s): created=%s patched=%s deleted=%s errors=%s",
                namespace, name, trigger, outcome.created, outcome.patched, outcome.deleted,
                outcome.errors,
            )  # fmt: skip
        return outcome

    def _learned(
        self, body: Mapping[str, Any], namespace: str, name: str
    ) -> dict[str, LearnedCorrection]:
        """The learner's adopted corrections (read only while the ZetaRouter learns)."""
        learning = (body.get("spec") or {}).get("learning") or {}
        if not learning.get("enabled"):
            return {}
        return parse_model_store(
            self.kube.get_or_none(api_path("v1", "configmaps", namespace, model_store_name(name)))
        )

    def _secret_annotations(
        self, body: Mapping[str, Any], namespace: str
    ) -> dict[str, dict[str, str] | None]:
        """The annotations of the Secrets the spec names in env ``secretKeyRef``, for the pod
        policy: their metadata only (None: missing, or not readable with our rights)."""
        if not self.settings.pod_policy.reads_secrets:
            return {}
        out: dict[str, dict[str, str] | None] = {}
        for secret in referenced_secrets(body):
            try:
                meta = self.kube.get_metadata(api_path("v1", "secrets", namespace, secret))
            except ApiError as e:
                if not (e.not_found or e.status == 403):
                    raise
                out[secret] = None
                continue
            out[secret] = dict((meta.get("metadata") or {}).get("annotations") or {})
        return out

    def _invalid(
        self,
        body: Mapping[str, Any],
        message: str,
        generation: int,
        reason: str = "InvalidSpec",
        rules: list[str] | None = None,
    ) -> Outcome:
        """SpecValid=False and a Warning Event (``PolicyViolation`` naming the rules, for a
        spec the pod policy refuses); the children stay as they are."""
        meta = body["metadata"]
        self._settled.pop((str(meta["namespace"]), str(meta["name"])), None)
        log.warning("%s/%s: invalid spec: %s", meta["namespace"], meta["name"], message)
        patch_status(
            self.kube,
            str(meta["namespace"]),
            str(meta["name"]),
            fields={"observedGeneration": generation},
            conditions=[condition(SPEC_VALID, False, reason, message, generation)],
            current=body,
        )
        broken = f"policy rules {', '.join(rules)} broken: " if rules else ""
        self.events.warning(body, reason, f"{broken}{message} (children left unchanged)")
        return Outcome(valid=False, message=message)

    def _ensure_router_key(
        self,
        namespace: str,
        name: str,
        uid: str,
        owner: kopf.Body,
        outcome: Outcome,
        trigger: str,
    ) -> None:
        """Create the routers' signing key Secret once, before the pods that mount it. Only
        ``create`` (never applied): an existing Secret (ours, or one a user made to choose the
        key) is kept, so a reconcile never rotates the key. Once it is known to exist, only a
        create or resume (operator start) tries again, and other reconciliations (drift checks,
        spec changes) every :data:`ROUTER_KEY_RECHECK` seconds (a deleted key is put back then):
        the create is a write request even when it is refused."""
        now = time.monotonic()
        if not self._key_recheck_due((namespace, name), uid, now) and trigger not in (
            "create",
            "resume",
        ):
            return
        secret = adopted(
            build_router_key_secret(name, secrets.token_urlsafe(32), secrets.token_urlsafe(32)),
            owner,
        )
        try:
            self.kube.create(api_path("v1", "secrets", namespace), secret)
        except ApiError as e:
            if e.conflict:
                self._key_seen[(namespace, name)] = (uid, now)
            else:
                outcome.errors.append(f"{_ref(secret)}: {e.message or e.reason}")
            return
        self._key_seen[(namespace, name)] = (uid, now)
        outcome.created.append(_ref(secret))
        CHILD_CHANGES.labels("Secret", "create").inc()

    def _key_recheck_due(self, key: tuple[str, str], uid: str, now: float) -> bool:
        seen_uid, seen_at = self._key_seen.get(key, ("", -ROUTER_KEY_RECHECK))
        return seen_uid != uid or now - seen_at >= ROUTER_KEY_RECHECK

    def _write_status(
        self,
        body: Mapping[str, Any],
        tiers: list[TierState],
        generation: int | None,
        extra_fields: Mapping[str, Any],
        apply_error: str | None,
        spec_ok: bool,
        extra_conditions: list[Mapping[str, Any]] | None = None,
        tier_fields: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        meta = body["metadata"]
        conds: list[Mapping[str, Any]] = list(readiness_conditions(tiers, generation, apply_error))
        fields: dict[str, Any] = {"readySummary": ready_summary(tiers), **extra_fields}
        if spec_ok:
            conds.insert(0, condition(SPEC_VALID, True, "Valid", "spec accepted", generation))
            fields["observedGeneration"] = generation
        conds += extra_conditions or []
        entries = {t.name: t.status_entry() for t in tiers}
        for tier, more in (tier_fields or {}).items():
            entries.setdefault(tier, {}).update(more)
        patch_status(
            self.kube,
            meta["namespace"],
            meta["name"],
            fields=fields,
            conditions=conds,
            tiers=entries,
            tier_order=[t.name for t in tiers],
            current=body,
        )

    def _refresh_status_locked(self, namespace: str, name: str) -> None:
        body = self.kube.get_or_none(zetarouter_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        uid = str(body["metadata"]["uid"])
        status = body.get("status") or {}
        deployments = self._get_tier_children(body, uid)
        try:
            want = desired_mod.compute(
                body,
                deployments[names.DEPLOYMENT.kind],
                deployments[names.CONFIGMAP.kind],
                self.settings,
                secret_annotations=self._secret_annotations(body, namespace),
            )
        except SpecError:
            want = None
        actions = {p.action for p in want.rollout.values()} if want is not None else set()
        if "create" in actions:
            # A tier's Deployment is gone: put it back now.
            self._reconcile_locked(body, "child-deleted", None)
            return
        if "update" in actions:
            # The tier a new template waited for is settled: the next one gets its own.
            self._reconcile_locked(body, "rollout", None)
            return
        # The tiers as last reconciled (they stay while a new spec is invalid, and so do their
        # Deployments, whose readiness is still worth reporting).
        tier_names = [t["name"] for t in status.get("tiers") or [] if "name" in t]
        if not tier_names:
            return
        by_tier = {
            (d["metadata"].get("labels") or {}).get(names.TIER): d
            for d in deployments[names.DEPLOYMENT.kind].values()
        }
        plans = want.rollout if want is not None else {}
        tiers = [tier_state(t, by_tier.get(t), plans.get(t)) for t in tier_names]
        degraded = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Degraded"), None
        )
        apply_error = (
            str(degraded.get("message"))
            if degraded and degraded.get("reason") == "ApplyFailed"
            else None
        )
        self._write_status(
            body, tiers, status.get("observedGeneration"), {}, apply_error, spec_ok=False
        )

    def _post_events(
        self, body: Mapping[str, Any], trigger: str, outcome: Outcome, want: desired_mod.Desired
    ) -> None:
        parts = []
        if outcome.created:
            verb = "created" if trigger == "create" else "recreated"
            parts.append(f"{verb} {', '.join(outcome.created)}")
        reason = _EVENT_REASONS.get(trigger, "Repaired")
        if outcome.patched:
            verb = "put back" if reason == "Repaired" else "updated"
            parts.append(f"{verb} {', '.join(outcome.patched)}")
        if outcome.deleted:
            parts.append(f"removed {', '.join(outcome.deleted)}")
        if parts:
            touched = outcome.created + outcome.patched
            if any(ref.startswith("ConfigMap ") for ref in touched):
                parts.append(f"routing config generation {want.routing_generation}")
            self.events.normal(body, reason, "; ".join(parts))
        for tier in outcome.released:
            plan = want.rollout[tier]
            waiting = [t for t, p in want.rollout.items() if p.action == "hold"]
            then = f"; then: {', '.join(waiting)}" if waiting else ""
            self.events.normal(
                body, "RollingOut", f"tier {tier}: new pod template ({plan.change}){then}"
            )
        if outcome.errors:
            self.events.warning(body, "ApplyFailed", "; ".join(outcome.errors))
