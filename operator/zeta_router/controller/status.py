"""The ZetaRouter status, shared by its two writers.

The controller writes the conditions ``SpecValid``, ``Ready``, ``Progressing`` and ``Degraded``,
``observedGeneration`` and ``tiers[].replicas/readyReplicas``; the control loop
(``zeta_router.autoscale.loop``) writes ``MetricsAvailable``, ``tiers[].desiredReplicas``,
``thresholds`` and ``lastDecision``. Neither overwrites the other's part: conditions are merged by
``type`` and tiers by ``name`` (:func:`merge_conditions`, :func:`merge_tiers`), and
:func:`patch_status` does the read-merge-write with the object's ``resourceVersion`` as a
precondition, retrying on a conflict, so concurrent writers never lose each other's fields.

Everything here except :func:`patch_status` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from zeta_router.api.models import API_VERSION, PLURAL
from zeta_router.kube import MERGE_PATCH, ApiError, Kube, api_path

SPEC_VALID = "SpecValid"
READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
METRICS_AVAILABLE = "MetricsAvailable"
# The order conditions are listed in (kubectl describe, the docs); unknown types go last.
CONDITION_ORDER = (SPEC_VALID, READY, PROGRESSING, DEGRADED, METRICS_AVAILABLE)

Condition = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    observed_generation: int | None = None,
) -> Condition:
    """A condition without ``lastTransitionTime``; :func:`merge_conditions` sets it."""
    value = ("True" if status else "False") if isinstance(status, bool) else status
    cond: Condition = {"type": type_, "status": value, "reason": reason, "message": message}
    if observed_generation is not None:
        cond["observedGeneration"] = observed_generation
    return cond


def find_condition(conditions: Iterable[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Iterable[Mapping[str, Any]],
    now: str,
) -> list[Condition]:
    """``existing`` with each of ``updates`` replacing the condition of the same type.
    ``lastTransitionTime`` moves to ``now`` only when a condition's status changes."""
    merged: dict[str, Condition] = {str(c.get("type")): dict(c) for c in existing or ()}
    for upd in updates:
        kind = str(upd["type"])
        old = merged.get(kind)
        new = dict(upd)
        if old is not None and old.get("status") == new.get("status"):
            new["lastTransitionTime"] = old.get("lastTransitionTime") or now
        else:
            new["lastTransitionTime"] = now
        merged[kind] = new

    def order(c: Condition) -> tuple[int, str]:
        kind = str(c.get("type"))
        rank = CONDITION_ORDER.index(kind) if kind in CONDITION_ORDER else len(CONDITION_ORDER)
        return rank, kind

    return sorted(merged.values(), key=order)


def merge_tiers(
    existing: Sequence[Mapping[str, Any]] | None,
    updates: Mapping[str, Mapping[str, Any]],
    order: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-tier status entries merged by ``name``: fields in ``updates[name]`` replace those of
    the existing entry (a ``None`` value removes the field), other fields stay. With ``order``
    (the spec's tier names), tiers no longer in the spec are dropped and the list follows it."""
    merged: dict[str, dict[str, Any]] = {str(t.get("name")): dict(t) for t in existing or ()}
    for name, fields in updates.items():
        entry = merged.setdefault(name, {"name": name})
        for key, value in fields.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
    if order is None:
        return list(merged.values())
    return [merged[n] for n in order if n in merged]


def status_changes(
    current: Mapping[str, Any],
    fields: Mapping[str, Any] | None = None,
    conditions: Iterable[Mapping[str, Any]] = (),
    tiers: Mapping[str, Mapping[str, Any]] | None = None,
    tier_order: Sequence[str] | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The new status (pure): ``current`` with ``fields`` set (``None`` removes a field),
    ``conditions`` merged by type and ``tiers`` merged by name."""
    stamp = now or now_rfc3339()
    new = dict(current)
    for key, value in (fields or {}).items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    conds = list(conditions)
    if conds:
        new["conditions"] = merge_conditions(current.get("conditions"), conds, stamp)
    if tiers is not None or tier_order is not None:
        new["tiers"] = merge_tiers(current.get("tiers"), tiers or {}, tier_order)
    return new


def _same_ignoring_times(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(s)
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions") or []
        ]
        return out

    return strip(a) == strip(b)


def zetarouter_path(namespace: str, name: str, subresource: str | None = None) -> str:
    return api_path(API_VERSION, PLURAL, namespace, name, subresource)


def patch_status(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    fields: Mapping[str, Any] | None = None,
    conditions: Iterable[Mapping[str, Any]] = (),
    tiers: Mapping[str, Mapping[str, Any]] | None = None,
    tier_order: Sequence[str] | None = None,
    current: Mapping[str, Any] | None = None,
    retries: int = 5,
) -> dict[str, Any] | None:
    """Merge the given parts into the ZetaRouter's status and write it, unless nothing changes.

    ``current`` (the object as last seen, e.g. a kopf ``body``) saves one read; on a conflict the
    object is read again and the merge redone. Returns the written object, the unchanged one, or
    ``None`` when the ZetaRouter no longer exists.
    """
    conds = list(conditions)
    obj: Mapping[str, Any] | None = current
    for _attempt in range(retries):
        if obj is None:
            try:
                obj = kube.get(zetarouter_path(namespace, name))
            except ApiError as e:
                if e.not_found:
                    return None
                raise
        old_status: Mapping[str, Any] = obj.get("status") or {}
        new_status = status_changes(old_status, fields, conds, tiers, tier_order)
        if _same_ignoring_times(old_status, new_status):
            return dict(obj)
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": _replace_removed(old_status, new_status),
        }
        try:
            return kube.patch(zetarouter_path(namespace, name, "status"), body, MERGE_PATCH)
        except ApiError as e:
            if e.not_found:
                return None
            if not e.conflict:
                raise
            obj = None  # somebody else wrote meanwhile: read, merge again
    raise ApiError(409, "Conflict", f"status of {namespace}/{name} kept changing; gave up")


def _replace_removed(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    # In a JSON merge patch a missing key means "keep": removed keys must be sent as null.
    body: dict[str, Any] = dict(new)
    for key in old:
        if key not in new:
            body[key] = None
    return body
