"""The drift check's view of the children, from the operator's watch: what it keeps, and when
it lets a check conclude that nothing drifted."""

from __future__ import annotations

from typing import Any

from zeta_router.controller.apply import fingerprint
from zeta_router.controller.seen import SeenChildren, Settled, unchanged


def child(name: str, owner: str | None, rv: str, generation: int | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": rv}
    if generation is not None:
        meta["generation"] = generation
    if owner is not None:
        meta["ownerReferences"] = [{"controller": True, "uid": owner, "kind": "ZetaRouter"}]
    return {"metadata": meta, "status": {"readyReplicas": int(rv)}}


def test_children_are_filed_by_their_controller_and_follow_the_watch() -> None:
    seen = SeenChildren()
    svc = child("chat-small", "u1", "10")
    seen.seen("Service", svc)
    seen.seen("Deployment", child("chat-small", "u1", "11", generation=1))
    seen.seen("Service", child("other", "u2", "12"))
    assert set(seen.of("ns", "u1")) == {("Service", "chat-small"), ("Deployment", "chat-small")}
    assert seen.of("ns", "u1")[("Service", "chat-small")] == fingerprint(svc)
    # Its controller changes (a ZetaRouter deleted and made again): filed under the new one.
    seen.seen("Service", child("chat-small", "u3", "13"))
    assert set(seen.of("ns", "u1")) == {("Deployment", "chat-small")}
    assert set(seen.of("ns", "u3")) == {("Service", "chat-small")}
    seen.gone("Deployment", "ns", "chat-small")
    assert seen.of("ns", "u1") == {}
    # Other namespaces are other children.
    assert seen.of("elsewhere", "u2") == {}
    # A deleted ZetaRouter's children are deleted by the garbage collector: their deletions
    # empty its entry, so nothing else needs forgetting.
    seen.gone("Service", "ns", "other")
    assert seen.of("ns", "u2") == {}


def test_a_deployments_status_is_not_drift_but_its_spec_and_metadata_are() -> None:
    seen = SeenChildren()
    dep = child("chat-small", "u1", "20", generation=3)
    settled = Settled("u1", 7, {("Deployment", "chat-small"): fingerprint(dep)})
    seen.seen("Deployment", dep)
    assert unchanged(settled, "u1", 7, seen.of("ns", "u1"))
    # Its controller writes the status: a new resourceVersion, the same generation.
    seen.seen("Deployment", child("chat-small", "u1", "21", generation=3))
    assert unchanged(settled, "u1", 7, seen.of("ns", "u1"))
    # Someone edits its spec: a new generation.
    seen.seen("Deployment", child("chat-small", "u1", "22", generation=4))
    assert not unchanged(settled, "u1", 7, seen.of("ns", "u1"))


def test_nothing_drifted_only_when_the_watch_shows_exactly_what_was_left() -> None:
    a, b = child("a", "u1", "1"), child("b", "u1", "2")
    settled = Settled(
        "u1", 2, {("Service", "a"): fingerprint(a), ("ConfigMap", "b"): fingerprint(b)}
    )
    view = {("Service", "a"): fingerprint(a), ("ConfigMap", "b"): fingerprint(b)}
    assert unchanged(settled, "u1", 2, view)
    assert not unchanged(None, "u1", 2, view)  # never reconciled without error
    assert not unchanged(settled, "u2", 2, view)  # another ZetaRouter of the same name
    assert not unchanged(settled, "u1", 3, view)  # a new spec
    missing = {("Service", "a"): fingerprint(a)}
    assert not unchanged(settled, "u1", 2, missing)  # deleted, or not seen yet
    extra = {**view, ("Service", "c"): "rv:9"}
    assert not unchanged(settled, "u1", 2, extra)  # one too many
    edited = {**view, ("Service", "a"): "rv:3"}
    assert not unchanged(settled, "u1", 2, edited)  # written since
