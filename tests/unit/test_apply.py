"""The pure parts of applying children: ownership through kopf.adopt, and what an apply changed
(only among the fields we state). The apply itself is tested against the apiserver."""

from __future__ import annotations

from typing import Any

from zeta_router.controller.apply import (
    adopted,
    changed_paths,
    controller_uid,
    fingerprint,
    owner_view,
)
from zeta_router.render import names

ZR = {
    "apiVersion": "zeta.ai/v1alpha1",
    "kind": "ZetaRouter",
    "metadata": {
        "name": "chat",
        "namespace": "team-a",
        "uid": "u-1",
        "labels": {"argocd.argoproj.io/instance": "apps", "team": "a"},
    },
}


def test_children_are_adopted_with_a_controller_reference_and_no_owner_labels() -> None:
    child: dict[str, Any] = {"kind": "Service", "metadata": {"name": "chat", "labels": {"x": "1"}}}
    obj = adopted(child, owner_view(ZR))
    assert obj["metadata"]["namespace"] == "team-a"
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref == {
        "apiVersion": "zeta.ai/v1alpha1",
        "kind": "ZetaRouter",
        "name": "chat",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert controller_uid(obj) == "u-1"
    # The ZetaRouter's own labels (a GitOps tool's tracking label, say) stay on it.
    assert obj["metadata"]["labels"] == {"x": "1"}
    assert "ownerReferences" not in child["metadata"]  # the input is not modified


def test_changed_paths_name_only_fields_we_state() -> None:
    intent = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"x": 1}}}
    before = {
        "metadata": {"labels": {"a": "0"}, "annotations": {"rev": "1"}, "resourceVersion": "1"},
        "spec": {"replicas": 1, "template": {"x": 1}, "paused": False},
        "status": {"replicas": 1},
    }
    after = {
        "metadata": {"labels": {"a": "1"}, "annotations": {"rev": "2"}, "resourceVersion": "2"},
        "spec": {"replicas": 2, "template": {"x": 1}, "paused": True},
        "status": {"replicas": 2},
    }
    assert changed_paths(before, after, intent) == ["metadata.labels.a", "spec.replicas"]
    assert changed_paths(after, after, intent) == []


def test_a_deployment_status_write_keeps_its_fingerprint_and_drift_moves_it() -> None:
    dep: dict[str, Any] = {
        "metadata": {
            "uid": "d-1",
            "generation": 3,
            "resourceVersion": "10",
            "labels": {names.INSTANCE: "chat"},
            "annotations": {names.TEMPLATE_HASH: "h"},
        },
        "status": {"readyReplicas": 0},
    }
    status_only = {**dep, "metadata": {**dep["metadata"], "resourceVersion": "11"}}
    status_only["status"] = {"readyReplicas": 1}
    assert fingerprint(status_only) == fingerprint(dep)  # readiness costs no apply
    spec_edit = {**dep, "metadata": {**dep["metadata"], "generation": 4}}
    label_edit = {**dep, "metadata": {**dep["metadata"], "labels": {names.INSTANCE: "other"}}}
    label_gone = {**dep, "metadata": {**dep["metadata"], "labels": {}}}
    ours_edited = {
        **dep,
        "metadata": {**dep["metadata"], "annotations": {names.TEMPLATE_HASH: "x"}},
    }
    assert fingerprint(spec_edit) != fingerprint(dep)
    assert fingerprint(label_edit) != fingerprint(dep)
    assert fingerprint(label_gone) != fingerprint(dep)
    assert fingerprint(ours_edited) != fingerprint(dep)
    # Keys of other managers are theirs: an apply would not touch them, so they are not drift.
    revised = {
        **dep,
        "metadata": {
            **dep["metadata"],
            "annotations": {names.TEMPLATE_HASH: "h", "deployment.kubernetes.io/revision": "1"},
            "labels": {names.INSTANCE: "chat", "team": "a"},
        },
    }
    assert fingerprint(revised) == fingerprint(dep)


def test_objects_without_a_generation_are_fingerprinted_by_resource_version() -> None:
    cm = {"metadata": {"uid": "c-1", "resourceVersion": "5"}, "data": {"k": "v"}}
    edited = {"metadata": {"uid": "c-1", "resourceVersion": "6"}, "data": {"k": "w"}}
    assert fingerprint(cm) != fingerprint(edited)
