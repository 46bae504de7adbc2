"""The status helpers shared by the controller and the control loop."""

from __future__ import annotations

from zeta_router.controller.status import (
    condition,
    merge_conditions,
    merge_tiers,
    status_changes,
)


def test_merge_keeps_other_writers_conditions_and_transition_times() -> None:
    existing = [
        {"type": "MetricsAvailable", "status": "True", "lastTransitionTime": "t0"},
        {"type": "Ready", "status": "False", "lastTransitionTime": "t0"},
        {"type": "SpecValid", "status": "True", "lastTransitionTime": "t0"},
    ]
    merged = merge_conditions(
        existing,
        [
            condition("Ready", True, "AllTiersReady", "2/2"),
            condition("SpecValid", True, "Valid", ""),
        ],
        now="t1",
    )
    by_type = {c["type"]: c for c in merged}
    assert by_type["MetricsAvailable"]["lastTransitionTime"] == "t0"
    assert by_type["Ready"] == {
        "type": "Ready",
        "status": "True",
        "reason": "AllTiersReady",
        "message": "2/2",
        "lastTransitionTime": "t1",
    }
    assert by_type["SpecValid"]["lastTransitionTime"] == "t0"  # status unchanged
    assert [c["type"] for c in merged] == ["SpecValid", "Ready", "MetricsAvailable"]


def test_merge_tiers_by_name_keeps_fields_of_the_other_writer() -> None:
    existing = [{"name": "small", "desiredReplicas": 3, "replicas": 1}]
    merged = merge_tiers(
        existing,
        {"small": {"replicas": 2, "readyReplicas": 2}, "large": {"replicas": 1}},
        order=["small", "large"],
    )
    assert merged == [
        {"name": "small", "desiredReplicas": 3, "replicas": 2, "readyReplicas": 2},
        {"name": "large", "replicas": 1},
    ]


def test_tiers_left_out_of_the_order_are_dropped() -> None:
    merged = merge_tiers([{"name": "old", "replicas": 1}], {}, order=["new"])
    assert merged == []


def test_status_changes_sets_and_removes_fields() -> None:
    new = status_changes(
        {"observedGeneration": 1, "lastDecision": {"action": "x"}},
        fields={"observedGeneration": 2, "lastDecision": None},
        now="t",
    )
    assert new == {"observedGeneration": 2}
