"""Which fields of a child object the operator owns, and whether a live object still has them
as rendered (pure).

The operator owns exactly what the render functions put in a child: its labels and annotations
(by key), owner references, and every field under the other top-level keys (``spec``, ``data``),
where lists are owned whole (a container list with an extra container is drift) and mapping
keys the render does not set are not ours (fields the apiserver defaults, or that other tools
add, are left alone). A JSON merge patch of the owned fields restores them and touches nothing
else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

_IGNORED_TOP = frozenset({"apiVersion", "kind", "metadata", "status"})
_OWNED_META = ("labels", "annotations", "ownerReferences")

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity (``"500m"``, ``"1Gi"``, ``2``) as a number, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY.match(value.strip())
    if m is None or m.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(m.group(1)) * _SUFFIX[m.group(2)]
    except InvalidOperation:
        return None


def _empty(value: object) -> bool:
    return value is None or value == {} or value == []


def _scalar_equal(want: object, have: object) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, bool) or isinstance(have, bool):
        return want == have and isinstance(want, bool) and isinstance(have, bool)
    # The apiserver canonicalises quantities ("0.5" -> "500m", 1 -> "1").
    a, b = parse_quantity(want), parse_quantity(have)
    return a is not None and a == b


def matches(want: object, have: object) -> bool:
    """Whether ``have`` (live) carries everything ``want`` (rendered) sets: mappings by their
    keys in ``want``, lists whole and in order, scalars equal (quantities by value). An empty
    value in ``want`` matches an absent one (the apiserver drops empty fields)."""
    if _empty(want):
        return _empty(have)
    if isinstance(want, Mapping):
        if not isinstance(have, Mapping):
            return False
        return all(matches(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            return False
        return all(matches(w, h) for w, h in zip(want, have, strict=True))
    return _scalar_equal(want, have)


def owned_fields(desired: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``desired`` the operator owns: what a merge patch should carry."""
    meta = desired.get("metadata") or {}
    owned: dict[str, Any] = {
        "metadata": {k: meta[k] for k in _OWNED_META if k in meta},
    }
    for key, value in desired.items():
        if key not in _IGNORED_TOP:
            owned[key] = value
    return owned


def drifted_paths(desired: Mapping[str, Any], live: Mapping[str, Any]) -> list[str]:
    """Dotted paths of owned fields whose live value differs (for messages and Events)."""
    out: list[str] = []

    def walk(want: object, have: object, path: str) -> None:
        if isinstance(want, Mapping) and not _empty(want) and isinstance(have, Mapping):
            for k, v in want.items():
                walk(v, have.get(k), f"{path}.{k}" if path else str(k))
            return
        if not matches(want, have):
            out.append(path or "<root>")

    walk(owned_fields(desired), live, "")
    return out


def needs_patch(desired: Mapping[str, Any], live: Mapping[str, Any]) -> bool:
    return not matches(owned_fields(desired), live)
