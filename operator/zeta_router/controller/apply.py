"""Applying a ZetaRouter's children: server-side apply with the operator's own field manager.

Each child is applied whole, as rendered, every reconciliation: the apiserver merges it with
what is there, changes only the fields our field manager (``zeta-router``) states, and takes
back (``force``) any of them someone else changed. Fields other managers set and we do not (an
annotation added by a GitOps tool, a label by a policy engine, defaults of the apiserver) are
theirs and stay. A field we stop rendering is removed, since we were its only manager. Nothing
here compares objects by hand: what is ours is what ``managedFields`` says.

Ownership: ``kopf.adopt`` puts the ZetaRouter's owner reference (controller, blocking owner
deletion) on every child, and the namespace. The ZetaRouter's own labels are not copied.

Never taken over: an object of the same name that this ZetaRouter does not control (another
ZetaRouter's, a deleted one's being garbage-collected, or one somebody made) is refused, with
the reason, and left as it is.

An apply that changes nothing writes nothing (the apiserver compares), but still costs a
request; a child that has not changed since our last apply of the same intent is skipped, at no
cost (the reconciliation lists the children anyway). "Not changed" is its :func:`fingerprint`:
the ``resourceVersion``, except for objects with a ``generation`` (Deployments), whose status is
written all the time by their controller: there, the generation (moved by any change of the
spec) and the metadata (of the labels and annotations, the keys of our own domains). So drift
in anything we state is still seen, and repaired, at the next check; a Deployment's readiness
changing costs no apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from zeta_router.api.models import API_VERSION, KIND
from zeta_router.kube import ApiError, Kube, api_path
from zeta_router.render import names
from zeta_router.render.deployment import digest


@dataclass(frozen=True)
class Applied:
    """The result of applying one child."""

    obj: dict[str, Any]
    created: bool = False
    changed: list[str] = field(default_factory=list)
    """Dotted paths of fields the apply changed (empty: nothing changed)."""


def fingerprint(obj: Mapping[str, Any]) -> str:
    """What of a live child must not move for our last apply to still hold (see the module).
    Of the labels and annotations, only the keys of our own domains: the Deployment controller
    writes ``deployment.kubernetes.io/revision`` just after each create, and counted, it sent
    every new ZetaRouter's first drift check down the full path (a list of each child kind of
    the namespace, from etcd, and an apply of each Deployment that changed nothing)."""
    meta = obj.get("metadata") or {}
    if not meta.get("generation"):
        return f"rv:{meta.get('resourceVersion')}"
    return digest(
        {
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "labels": names.own_keys(meta.get("labels")),
            "annotations": names.own_keys(meta.get("annotations")),
            "ownerReferences": meta.get("ownerReferences"),
        }
    )


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


def owner_view(body: Mapping[str, Any]) -> kopf.Body:
    """The ZetaRouter as an owner: identity only (its labels are not copied to children)."""
    meta = body["metadata"]
    return kopf.Body(
        {
            "apiVersion": body.get("apiVersion", API_VERSION),
            "kind": body.get("kind", KIND),
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
        }
    )


def adopted(child: Mapping[str, Any], owner: kopf.Body) -> dict[str, Any]:
    """A copy of ``child`` owned by ``owner`` (in its namespace, with its owner reference)."""
    obj = dict(child)
    obj["metadata"] = dict(child.get("metadata") or {})
    kopf.adopt(obj, owner=owner)
    return obj


def changed_paths(
    before: Mapping[str, Any], after: Mapping[str, Any], intent: Mapping[str, Any], limit: int = 8
) -> list[str]:
    """Where ``after`` differs from ``before`` among the fields ``intent`` states (for Events
    and logs: what an apply changed; fields of other managers, written meanwhile, are not
    ours to report). At most ``limit`` dotted paths."""
    out: list[str] = []

    def walk(want: Any, a: Any, b: Any, path: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(want, Mapping) and want and isinstance(a, Mapping) and isinstance(b, Mapping):
            for key, sub in want.items():
                walk(sub, a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
            return
        out.append(path or "<root>")

    for key, sub in intent.items():
        if key in ("apiVersion", "kind", "status"):
            continue
        walk(sub, before.get(key), after.get(key), key)
    return out


class Applier:
    """Applies children with the operator's field manager. Thread-safe enough: its memory of
    applied versions only saves requests (a stale entry costs one more apply)."""

    def __init__(self, kube: Kube, field_manager: str = names.FIELD_MANAGER) -> None:
        self.kube = kube
        self.field_manager = field_manager
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}

    def apply(self, child: Mapping[str, Any], live: Mapping[str, Any] | None) -> Applied:
        """Apply ``child`` (adopted already); ``live``: the object as last listed, when it is
        one of ours. Raises :class:`ApiError` (a refusal is a 409 saying why)."""
        kind = names.child_kind(str(child["kind"]))
        meta = child["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        # The child's own apiVersion: a kind may be served at another version than the one
        # names lists (PodDisruptionBudgets on clusters older than policy/v1).
        path = api_path(
            str(child.get("apiVersion") or kind.api_version), kind.plural, namespace, name
        )
        key = (kind.kind, namespace, name)
        intent = digest(child)
        if live is not None:
            seen = self._applied.get(key)
            if seen == (fingerprint(live), intent):
                return Applied(dict(live))
        else:
            live = self._check_not_taken(child, path)
        result = self.kube.apply(path, child, self.field_manager)
        self._applied[key] = (fingerprint(result), intent)
        if live is None:
            return Applied(result, created=True)
        if result["metadata"].get("resourceVersion") == live["metadata"].get("resourceVersion"):
            return Applied(result)
        # A newer version may differ only in its status (a Deployment's, written meanwhile).
        return Applied(result, changed=changed_paths(live, result, child))

    def _check_not_taken(self, child: Mapping[str, Any], path: str) -> dict[str, Any] | None:
        """The live object at ``path`` if it is ours (e.g. our labels were removed), None when
        there is none; raises when it belongs to someone else."""
        existing = self.kube.get_or_none(path)
        if existing is None:
            return None
        ours = (child["metadata"].get("ownerReferences") or [{}])[0]
        if controller_uid(existing) == ours.get("uid"):
            return existing
        why = (
            "belongs to an earlier ZetaRouter of this name and is being removed"
            if owner_name(existing) == ours.get("name")
            else "exists and is not managed by this ZetaRouter"
        )
        raise ApiError(409, "AlreadyExists", f"{child['kind']} {child['metadata']['name']} {why}")

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of the children of ZetaRouter ``namespace/name`` (and of
        any other whose children's names start the same: they only cost one more apply)."""
        for key in [k for k in self._applied if k[1] == namespace and k[2].startswith(name)]:
            self._applied.pop(key, None)

    def prune(self, kind: names.ChildKind, obj: Mapping[str, Any]) -> None:
        """Delete a child that is no longer wanted (if it is still the object we listed)."""
        meta = obj["metadata"]
        try:
            self.kube.delete(
                api_path(kind.api_version, kind.plural, meta["namespace"], meta["name"]),
                {"preconditions": {"uid": meta["uid"]}, "propagationPolicy": "Background"},
            )
        except ApiError as e:
            if not e.not_found:
                raise
        self._applied.pop((kind.kind, str(meta["namespace"]), str(meta["name"])), None)
