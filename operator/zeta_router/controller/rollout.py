"""Which tiers get a new pod template now, and which keep theirs for the time being (pure).

A change of the pod template rolls a tier's pods. When one change touches several tiers (an
operator upgrade changes the router image of every tier), rolling them all at once could leave
the ZetaRouter with fewer serving replicas than it needs, all at the same moment. So templates
change one tier at a time, smallest tier first: a tier gets its new template only when every
other tier is *settled* (each of its pods runs its current template and all are available),
and no other tier got a new template in the same reconciliation. A tier not yet created, or
whose rollout is the one in progress, is never held.

A held tier is still applied (drift repair, replicas, labels, strategy): only its
``spec.template`` stays what it is, exactly as the operator last applied it, which is read
back from the Deployment's ``managedFields`` (the fields our field manager owns), so the apply
changes nothing in it and takes no field set by someone else.

Which template a Deployment runs is known from its ``zeta.ai/template-hash`` annotation, set by
the renderer next to ``zeta.ai/template-parts`` (digests of the model-server container, the
router container and the rest of the pod), from which :func:`change_summary` says what a rollout
changes ("router image zeta-router:0.1.0 -> zeta-router:0.2.0").
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from zeta_router.render import names
from zeta_router.render.deployment import MODEL_CONTAINER, ROUTER_CONTAINER

Action = Literal["create", "current", "update", "hold"]

_PARTS = {"model": "model-server container", "router": "router container", "pod": "pod settings"}


@dataclass(frozen=True)
class TierRollout:
    """The template decision for one tier."""

    tier: str
    action: Action
    """create: the Deployment is new; current: it has the desired template; update: it gets the
    new template now; hold: it keeps its template until ``waiting_for`` is settled."""
    change: str = ""
    """What the new template changes (update, hold; and current while that rollout runs)."""
    waiting_for: str | None = None


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def settled(deployment: Mapping[str, Any]) -> bool:
    """Every pod of the Deployment runs its current template, none is left over, and all its
    replicas are available (what `kubectl rollout status` waits for)."""
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    generation = int((deployment.get("metadata") or {}).get("generation") or 0)
    return (
        int(st.get("observedGeneration") or 0) >= generation
        and int(st.get("updatedReplicas") or 0) == want
        and int(st.get("replicas") or 0) == want
        and int(st.get("availableReplicas") or 0) == want
    )


def _parts(value: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (value or "").split(","):
        key, _, digest = item.partition("=")
        if key and digest:
            out[key] = digest
    return out


def _images(deployment: Mapping[str, Any] | None) -> dict[str, str]:
    spec = (((deployment or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    return {str(c.get("name")): str(c.get("image")) for c in spec.get("containers") or []}


def change_summary(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> str:
    """What going from ``live``'s template to ``desired``'s changes, in a few words."""
    old_parts = _parts(annotations_of(live).get(names.TEMPLATE_PARTS))
    new_parts = _parts(annotations_of(desired).get(names.TEMPLATE_PARTS))
    old_images, new_images = _images(live), _images(desired)
    said: list[str] = []
    for container, label in ((ROUTER_CONTAINER, "router"), (MODEL_CONTAINER, "model-server")):
        before, after = old_images.get(container), new_images.get(container)
        if before and after and before != after:
            said.append(f"{label} image {before} -> {after}")
    if not old_parts:
        # Rendered by an operator release that did not record the parts.
        return "; ".join(said) or "rendered by a new operator release"
    for key, label in _PARTS.items():
        if old_parts.get(key) != new_parts.get(key):
            owner = {"model": MODEL_CONTAINER, "router": ROUTER_CONTAINER}.get(key)
            if owner and old_images.get(owner) != new_images.get(owner):
                continue  # already said by its image
            said.append(f"{label} changed")
    return "; ".join(said) or "pod template changed"


def plan(
    tiers: Sequence[str],
    desired: Mapping[str, Mapping[str, Any]],
    live: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, TierRollout]:
    """The template decision for each tier (in ``tiers`` order, smallest first).

    ``desired``: each tier's rendered Deployment; ``live``: its live Deployment (None: none)."""
    out: dict[str, TierRollout] = {}
    for tier in tiers:
        dep = live.get(tier)
        want = desired[tier]
        if dep is None:
            out[tier] = TierRollout(tier, "create")
            continue
        live_hash = annotations_of(dep).get(names.TEMPLATE_HASH)
        if live_hash == annotations_of(want).get(names.TEMPLATE_HASH):
            out[tier] = TierRollout(
                tier, "current", annotations_of(dep).get(names.TEMPLATE_CHANGE, "")
            )
            continue
        change = change_summary(dep, want)
        blocker = next((t for t in tiers if t != tier and _busy(t, out, live)), None)
        if blocker is None:
            out[tier] = TierRollout(tier, "update", change)
        else:
            out[tier] = TierRollout(tier, "hold", change, waiting_for=blocker)
    return out


def _busy(
    tier: str, decided: Mapping[str, TierRollout], live: Mapping[str, Mapping[str, Any] | None]
) -> bool:
    """Another tier must wait for ``tier``: it gets a new template now, or it is not settled."""
    if tier in decided and decided[tier].action == "update":
        return True
    dep = live.get(tier)
    return dep is not None and not settled(dep)


# ---- the template a held tier keeps -------------------------------------------------------------


def _project(value: Any, fields: Mapping[str, Any]) -> Any:
    """``value`` reduced to the fields of a ``managedFields`` ``fieldsV1`` tree."""
    if not fields:
        return copy.deepcopy(value)  # a leaf: the whole value is owned
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = _project(value[key[2:]], sub)
        return out
    if isinstance(value, list):
        keep: list[Any] = []
        for item in value:
            for key, sub in fields.items():
                if _list_key_matches(key, item):
                    keep.append(_project(item, sub) if key.startswith("k:") else item)
                    break
        return keep
    return copy.deepcopy(value)


def _list_key_matches(key: str, item: Any) -> bool:
    try:
        if key.startswith("k:"):
            wanted = json.loads(key[2:])
            return isinstance(item, Mapping) and all(item.get(k) == v for k, v in wanted.items())
        if key.startswith("v:"):
            return bool(json.loads(key[2:]) == item)
    except ValueError:
        return False
    return False


def applied_template(deployment: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    """The pod template of a live Deployment as ``field_manager`` last applied it: the live
    template reduced to the fields that manager owns. A Deployment the manager never applied
    (made by an earlier release, with other means) gives its live template whole."""
    template = dict((deployment.get("spec") or {}).get("template") or {})
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == field_manager and entry.get("operation") == "Apply":
            fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {}).get("f:template")
            if fields:
                projected: dict[str, Any] = _project(template, fields)
                return projected
    return copy.deepcopy(template)


def held(desired: Mapping[str, Any], live: Mapping[str, Any], field_manager: str) -> dict[str, Any]:
    """``desired`` with the template (and the annotations describing it) of ``live``."""
    out = copy.deepcopy(dict(desired))
    out["spec"]["template"] = applied_template(live, field_manager)
    meta = out["metadata"]
    kept = dict(meta.get("annotations") or {})
    for key in (names.TEMPLATE_HASH, names.TEMPLATE_PARTS, names.TEMPLATE_CHANGE):
        kept.pop(key, None)
        if key in annotations_of(live):
            kept[key] = annotations_of(live)[key]
    meta["annotations"] = kept
    return out


def with_change_note(desired: Mapping[str, Any], change: str) -> dict[str, Any]:
    """``desired`` with the ``zeta.ai/template-change`` annotation saying ``change``."""
    out = dict(desired)
    meta = dict(out["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), names.TEMPLATE_CHANGE: change}
    out["metadata"] = meta
    return out
