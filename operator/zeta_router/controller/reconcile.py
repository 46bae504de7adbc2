"""Reconciliation of one ZetaRouter: parse, render, apply the children, write the status.

The kopf handlers (``controller.handlers``) only call into :class:`Reconciler`. Everything that
decides is pure and lives elsewhere (``controller.desired``: what the children should be;
``controller.ownership``: whether a live child still matches; ``controller.readiness``: the
conditions); this module does the I/O in between.

Reconciliations of the same ZetaRouter never overlap: kopf serialises the handlers of one
object, but child events and the drift timer arrive on other tasks, so a lock per ZetaRouter
orders them. Status refreshes caused by child events are coalesced: a burst of Deployment
updates causes one refresh after the burst, not one per event.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Histogram

from zeta_router.api.models import SpecError
from zeta_router.controller import desired as desired_mod
from zeta_router.controller.events import EventRecorder
from zeta_router.controller.ownership import drifted_paths, needs_patch, owned_fields
from zeta_router.controller.readiness import (
    TierState,
    readiness_conditions,
    ready_summary,
    tier_state,
)
from zeta_router.controller.status import (
    API_VERSION,
    SPEC_VALID,
    condition,
    patch_status,
    zetarouter_path,
)
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path
from zeta_router.render.learned import model_store_name, parse_model_store
from zeta_router.render.router_key import build_router_key_secret
from zeta_router.scoring.learned import LearnedCorrection

log = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY_VALUE = "zeta-router"
KIND = "ZetaRouter"

# kind -> (apiVersion, plural); the kinds of children the operator creates.
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "ConfigMap": ("v1", "configmaps"),
}

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
    "Child objects created, patched or deleted by the operator.",
    ["kind", "action"],
)


@dataclass
class Outcome:
    """What one reconciliation did (for logs, events and tests)."""

    valid: bool
    message: str = ""
    created: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.patched or self.deleted)


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body.get("kind", KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            uid = ref.get("uid")
            return str(uid) if uid is not None else None
    return None


def owner_name(obj: Mapping[str, Any]) -> str | None:
    """The ZetaRouter that controls ``obj``, if one does."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == KIND:
            name = ref.get("name")
            return str(name) if name is not None else None
    return None


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')} {obj['metadata']['name']}"


class Reconciler:
    def __init__(self, kube: Kube, events: EventRecorder, router_image: str) -> None:
        self.kube = kube
        self.events = events
        self.router_image = router_image
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._dirty: set[tuple[str, str]] = set()

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

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)
            self._dirty.discard((namespace, name))

    # ---- entry points -------------------------------------------------------------------------

    def reconcile(self, body: Mapping[str, Any], trigger: str) -> Outcome:
        meta = body["metadata"]
        key = (str(meta["namespace"]), str(meta["name"]))
        started = time.monotonic()
        result = "error"
        try:
            with self._exclusive(key):
                outcome = self._reconcile_locked(body, trigger)
            result = (
                "ok"
                if outcome.valid and not outcome.errors
                else ("invalid" if not outcome.valid else "failed")
            )
            return outcome
        finally:
            RECONCILES.labels(trigger, result).inc()
            RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - started)

    def reconcile_named(self, namespace: str, name: str, trigger: str) -> Outcome | None:
        """Reconcile the ZetaRouter ``namespace/name`` as it is now (None: gone or deleting)."""
        body = self.kube.get_or_none(zetarouter_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        return self.reconcile(body, trigger)

    def refresh_status(self, namespace: str, name: str) -> None:
        """Recompute the readiness part of the status from the Deployments (coalesced)."""
        key = (namespace, name)
        with self._guard:
            self._dirty.add(key)
        self._drain_dirty(key)

    # ---- the work -----------------------------------------------------------------------------

    def _list_children(self, namespace: str, name: str) -> dict[str, dict[str, dict[str, Any]]]:
        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={name}"
        live: dict[str, dict[str, dict[str, Any]]] = {}
        for kind, (api_version, plural) in CHILD_KINDS.items():
            items = self.kube.list(api_path(api_version, plural, namespace), selector).get("items")
            live[kind] = {o["metadata"]["name"]: o for o in items or []}
        return live

    def _reconcile_locked(self, body: Mapping[str, Any], trigger: str) -> Outcome:
        meta = body["metadata"]
        namespace, name, uid = str(meta["namespace"]), str(meta["name"]), str(meta["uid"])
        generation = int(meta.get("generation") or 0)
        if meta.get("deletionTimestamp"):
            return Outcome(valid=True, message="being deleted")
        live = self._list_children(namespace, name)
        owned_live = {
            kind: {n: o for n, o in objs.items() if controller_uid(o) == uid}
            for kind, objs in live.items()
        }
        try:
            want = desired_mod.compute(
                body,
                owned_live["Deployment"],
                owned_live["ConfigMap"],
                self.router_image,
                learned=self._learned(body, namespace, name),
            )
        except SpecError as e:
            message = str(e)
            log.warning("%s/%s: invalid spec: %s", namespace, name, message)
            patch_status(
                self.kube,
                namespace,
                name,
                fields={"observedGeneration": generation},
                conditions=[condition(SPEC_VALID, False, "InvalidSpec", message, generation)],
                current=body,
            )
            self.events.warning(body, "InvalidSpec", f"{message} (children left unchanged)")
            return Outcome(valid=False, message=message)

        outcome = Outcome(valid=True)
        owner = owner_reference(body)
        self._create_router_key(namespace, name, owner, outcome)
        applied: dict[str, dict[str, Any]] = {}
        wanted_names: dict[str, set[str]] = {kind: set() for kind in CHILD_KINDS}
        for child in want.children:
            obj = _with_owner(child, namespace, owner)
            kind = str(obj["kind"])
            wanted_names.setdefault(kind, set()).add(obj["metadata"]["name"])
            current = owned_live.get(kind, {}).get(obj["metadata"]["name"])
            try:
                applied[f"{kind}/{obj['metadata']['name']}"] = self._apply(
                    obj, current, uid, outcome
                )
            except ApiError as e:
                outcome.errors.append(f"{_ref(obj)}: {e.message or e.reason}")
        for kind, objs in owned_live.items():
            for child_name, obj in objs.items():
                if child_name not in wanted_names.get(kind, set()):
                    self._prune(kind, obj, outcome)

        deployments = {
            o["metadata"]["name"]: o for k, o in applied.items() if k.startswith("Deployment/")
        }
        tiers = [
            tier_state(tier, deployments.get(dep_name))
            for tier, dep_name in want.tier_deployments.items()
        ]
        apply_error = "; ".join(outcome.errors) or None
        self._write_status(body, tiers, generation, want.status_fields, apply_error, spec_ok=True)
        self._post_events(body, trigger, outcome, want)
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

    def _apply(
        self,
        obj: dict[str, Any],
        current: Mapping[str, Any] | None,
        uid: str,
        outcome: Outcome,
    ) -> dict[str, Any]:
        kind = str(obj["kind"])
        api_version, plural = CHILD_KINDS[kind]
        ns, child = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if current is None:
            try:
                created = self.kube.create(api_path(api_version, plural, ns), obj)
                outcome.created.append(_ref(obj))
                CHILD_CHANGES.labels(kind, "create").inc()
                return created
            except ApiError as e:
                if not e.conflict:
                    raise
                existing = self.kube.get_or_none(api_path(api_version, plural, ns, child))
                if existing is None:
                    raise
                owner = controller_uid(existing)
                if owner != uid:
                    # Not ours: an object of a deleted ZetaRouter of the same name still being
                    # garbage-collected, or one somebody else made. Never take it over.
                    why = (
                        "belongs to an earlier ZetaRouter of this name and is being removed"
                        if owner_name(existing) == obj["metadata"]["ownerReferences"][0]["name"]
                        else "exists and is not managed by this ZetaRouter"
                    )
                    raise ApiError(409, "AlreadyExists", f"{_ref(obj)} {why}") from e
                current = existing
        if not needs_patch(obj, current):
            return dict(current)
        paths = drifted_paths(obj, current)
        patched = self.kube.patch(
            api_path(api_version, plural, ns, child), owned_fields(obj), MERGE_PATCH
        )
        outcome.patched.append(f"{_ref(obj)} ({', '.join(paths[:6])})")
        CHILD_CHANGES.labels(kind, "patch").inc()
        return patched

    def _create_router_key(
        self, namespace: str, name: str, owner: dict[str, Any], outcome: Outcome
    ) -> None:
        """Create the routers' signing key Secret once, before the pods that mount it. Only
        ``create``: an existing Secret (ours, or one a user made to choose the key) is kept, so
        a reconcile never rotates the key and the operator never reads Secrets."""
        secret = _with_owner(
            build_router_key_secret(name, secrets.token_urlsafe(32)), namespace, owner
        )
        try:
            self.kube.create(api_path("v1", "secrets", namespace), secret)
        except ApiError as e:
            if not e.conflict:
                outcome.errors.append(f"{_ref(secret)}: {e.message or e.reason}")
            return
        outcome.created.append(_ref(secret))
        CHILD_CHANGES.labels("Secret", "create").inc()

    def _prune(self, kind: str, obj: Mapping[str, Any], outcome: Outcome) -> None:
        api_version, plural = CHILD_KINDS[kind]
        meta = obj["metadata"]
        try:
            self.kube.delete(
                api_path(api_version, plural, meta["namespace"], meta["name"]),
                {"preconditions": {"uid": meta["uid"]}, "propagationPolicy": "Background"},
            )
            outcome.deleted.append(f"{kind} {meta['name']}")
            CHILD_CHANGES.labels(kind, "delete").inc()
        except ApiError as e:
            if not e.not_found:
                outcome.errors.append(f"deleting {kind} {meta['name']}: {e.message}")

    def _write_status(
        self,
        body: Mapping[str, Any],
        tiers: list[TierState],
        generation: int | None,
        extra_fields: Mapping[str, Any],
        apply_error: str | None,
        spec_ok: bool,
    ) -> None:
        meta = body["metadata"]
        conds = readiness_conditions(tiers, generation, apply_error)
        fields: dict[str, Any] = {"readySummary": ready_summary(tiers), **extra_fields}
        if spec_ok:
            conds.insert(0, condition(SPEC_VALID, True, "Valid", "spec accepted", generation))
            fields["observedGeneration"] = generation
        patch_status(
            self.kube,
            meta["namespace"],
            meta["name"],
            fields=fields,
            conditions=conds,
            tiers={t.name: t.status_entry() for t in tiers},
            tier_order=[t.name for t in tiers],
            current=body,
        )

    def _refresh_status_locked(self, namespace: str, name: str) -> None:
        body = self.kube.get_or_none(zetarouter_path(namespace, name))
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        # The tiers as last reconciled (they stay while a new spec is invalid, and so do their
        # Deployments, whose readiness is still worth reporting).
        tier_names = [t["name"] for t in status.get("tiers") or [] if "name" in t]
        if not tier_names:
            return
        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={name}"
        items = self.kube.list(api_path("apps/v1", "deployments", namespace), selector)["items"]
        uid = body["metadata"]["uid"]
        by_tier = {
            (d["metadata"].get("labels") or {}).get(desired_mod.TIER_LABEL): d
            for d in items
            if controller_uid(d) == uid
        }
        tiers = [tier_state(t, by_tier.get(t)) for t in tier_names]
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
        if outcome.patched:
            verb = "updated" if trigger in ("create", "update") else "put back"
            parts.append(f"{verb} {', '.join(outcome.patched)}")
        if outcome.deleted:
            parts.append(f"removed {', '.join(outcome.deleted)}")
        if parts:
            reason = {"create": "Created", "update": "Updated"}.get(trigger, "Repaired")
            touched = outcome.created + outcome.patched
            if any(ref.startswith("ConfigMap ") for ref in touched):
                parts.append(f"routing config generation {want.routing_generation}")
            self.events.normal(body, reason, "; ".join(parts))
        if outcome.errors:
            self.events.warning(body, "ApplyFailed", "; ".join(outcome.errors))


def _with_owner(child: Mapping[str, Any], namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    obj = dict(child)
    meta = dict(obj.get("metadata") or {})
    meta["namespace"] = namespace
    meta["ownerReferences"] = [owner]
    labels = dict(meta.get("labels") or {})
    # The operator finds its children by these two labels; render sets them, this makes sure.
    labels.setdefault(MANAGED_BY, MANAGED_BY_VALUE)
    labels.setdefault(INSTANCE, owner["name"])
    meta["labels"] = labels
    obj["metadata"] = meta
    return obj
