"""What the operator's watch of its children says, kept small: per child, its controller's uid
and its :func:`~.apply.fingerprint`, never the object.

The operator watches its children anyway (a deleted child is recreated at once, a Deployment's
readiness flows into the status). Kept here, that stream answers a drift check's question, "is
every child still as this operator last applied it, and is there no other?", without a request:
a check that finds nothing moved costs the apiserver nothing. Anything that moved (an edit of a
field we state changes a Service's or ConfigMap's resourceVersion, a Deployment's generation or
metadata), a child missing or one too many sends the check down the full path (list, render,
apply), which repairs as before. A stale view can only make a check do the full path once more.

A few bytes per child: memory stays flat as the fleet grows (a whole object would cost tens of
kilobytes each, thousands of times). A deleted ZetaRouter leaves nothing behind: the garbage
collector deletes its children, and their deletions in the watch empty its entry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zeta_router.controller.apply import controller_uid, fingerprint

#: A child as (kind, name).
ChildRef = tuple[str, str]


@dataclass(frozen=True)
class Settled:
    """A ZetaRouter as its last full reconciliation left it, when that went without error."""

    uid: str
    generation: int
    children: Mapping[ChildRef, str]  # the fingerprint of each child after the apply


class SeenChildren:
    """The fingerprints of every child in the watch, by the ZetaRouter that controls it.
    Thread-safe: fed from kopf's event handlers, read by drift checks on other threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (namespace, owner uid) -> (kind, name) -> fingerprint; and where each child is filed.
        self._by_owner: dict[tuple[str, str], dict[ChildRef, str]] = {}
        self._owner_of: dict[tuple[str, str, str], str] = {}

    def seen(self, kind: str, obj: Mapping[str, Any]) -> None:
        """A child as the watch delivered it (listed, added or modified)."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        uid = controller_uid(obj) or ""
        with self._lock:
            self._file(kind, namespace, name, uid, fingerprint(obj))

    def gone(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._file(kind, namespace, name, None, "")

    def _file(self, kind: str, namespace: str, name: str, uid: str | None, fp: str) -> None:
        where = (kind, namespace, name)
        before = self._owner_of.pop(where, None)
        if before is not None:
            children = self._by_owner.get((namespace, before))
            if children is not None:
                children.pop((kind, name), None)
                if not children:
                    del self._by_owner[(namespace, before)]
        if uid is None:
            return
        self._owner_of[where] = uid
        self._by_owner.setdefault((namespace, uid), {})[(kind, name)] = fp

    def of(self, namespace: str, uid: str) -> dict[ChildRef, str]:
        """The children the watch has seen of the ZetaRouter with ``uid``, with fingerprints."""
        with self._lock:
            return dict(self._by_owner.get((namespace, uid), {}))


def unchanged(
    settled: Settled | None, uid: str, generation: int, seen: Mapping[ChildRef, str]
) -> bool:
    """Whether a drift check may conclude that nothing drifted: the ZetaRouter is the one last
    reconciled, at the same generation, and the watch shows exactly the children that
    reconciliation left, each as it was. Pure."""
    return (
        settled is not None
        and settled.uid == uid
        and settled.generation == generation
        and dict(settled.children) == dict(seen)
    )
