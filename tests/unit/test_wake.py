"""The wake path's pure parts: reading the routers' count of requests wanting a sleeping tier,
which tiers sleep, which ZetaRouters get the wake daemon, and the Events and status of a sleep
or a wake."""

from __future__ import annotations

from typing import Any

import pytest

from zeta_router.autoscale.loop import event_reason, sleep_fields
from zeta_router.autoscale.policy import Change, Decision, PolicyState
from zeta_router.autoscale.wake import (
    increases,
    sleeping_candidates,
    wake_counts,
    wants_waker,
)
from zeta_router.router.metrics import RouterMetrics


def test_wake_counts_read_a_real_routers_metrics_text() -> None:
    from prometheus_client import generate_latest

    m = RouterMetrics()
    m.wake_requests.labels("large").inc(3)
    m.wake_requests.labels("medium").inc()
    m.asleep_fallbacks.labels("large").inc(3)
    text = generate_latest(m.registry).decode()
    assert wake_counts(text) == {"large": 3.0, "medium": 1.0}
    assert wake_counts(generate_latest(RouterMetrics().registry).decode()) == {}


@pytest.mark.parametrize(
    "text", ["", "garbage {{{", 'zeta_router_wake_requests_total{tier="x"} nan?']
)
def test_wake_counts_of_junk_is_nothing(text: str) -> None:
    assert wake_counts(text) == {}


def test_increases_start_from_a_baseline_and_survive_a_restart() -> None:
    assert increases({}, {"p1": {"large": 5.0}}) == {}  # first reading: baseline only
    before = {"p1": {"large": 5.0}, "p2": {"large": 1.0}}
    now = {"p1": {"large": 7.0}, "p2": {"large": 1.0}, "p3": {"large": 9.0}}
    assert increases(before, now) == {"large": 2.0}
    assert increases({"p1": {"large": 5.0}}, {"p1": {"large": 2.0}}) == {"large": 2.0}
    assert increases({"p1": {"large": 5.0}}, {"p1": {"large": 5.0}}) == {}


def test_sleeping_candidates_come_from_the_status() -> None:
    body: dict[str, Any] = {
        "status": {
            "tiers": [
                {"name": "small", "desiredReplicas": 0},  # may not sleep: never a candidate
                {"name": "large", "desiredReplicas": 0},
                {"name": "xl", "replicas": 0},
                {"name": "xxl", "desiredReplicas": 1, "replicas": 0},  # woken, starting
            ]
        }
    }
    assert sleeping_candidates(body, {"large", "xl", "xxl"}) == ["large", "xl"]
    assert sleeping_candidates({}, {"large"}) == []


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ({"autoscaling": {"enabled": True}, "tiers": [{}, {"replicas": {"min": 0}}]}, True),
        ({"autoscaling": {"enabled": True}, "tiers": [{}, {"replicas": {"min": 1}}]}, False),
        ({"autoscaling": {"enabled": False}, "tiers": [{"replicas": {"min": 0}}]}, False),
        (
            {
                "autoscaling": {"enabled": True, "mode": "advisory"},
                "tiers": [{"replicas": {"min": 0}}],
            },
            False,
        ),
        ({}, False),
    ],
)
def test_only_zetarouters_whose_tiers_may_sleep_get_the_wake_daemon(
    spec: dict[str, Any], wanted: bool
) -> None:
    assert wants_waker(spec) is wanted


def _decision(*changes: Change) -> Decision:
    return Decision(
        replicas={},
        thresholds={},
        changes=changes,
        notes=(),
        state=PolicyState(tiers={}, contexts={}),
        metrics_available=True,
    )


def test_sleep_and_wake_have_their_own_events_and_status() -> None:
    slept = Change("replicas", "large", "down", (1.0,), (0.0,), "tier large: asleep: ...")
    woken = Change("replicas", "large", "up", (0.0,), (1.0,), "tier large: woken by 2 ...")
    down = Change("replicas", "large", "down", (2.0,), (1.0,), "low load")
    assert (event_reason(slept), event_reason(woken), event_reason(down)) == (
        "TierSlept",
        "TierWoken",
        "ScaledDown",
    )
    fields = sleep_fields(_decision(slept, down), 0.0)
    assert fields == {
        "large": {
            "sleep": {
                "state": "Asleep",
                "since": "1970-01-01T00:00:00Z",
                "reason": "tier large: asleep: ...",
            }
        }
    }
    assert sleep_fields(_decision(woken), 0.0)["large"]["sleep"]["state"] == "Awake"
    assert sleep_fields(_decision(down), 0.0) == {}


def _runtime(asleep: tuple[bool, ...]) -> Any:
    from zeta_router.api.routing import RoutingConfig
    from zeta_router.router.config import compile_config

    tiers = [
        {"name": f"t{i}", "url": f"http://127.0.0.1:{9000 + i}", **({"asleep": True} if a else {})}
        for i, a in enumerate(asleep)
    ]
    cuts = [round((i + 1) / len(asleep), 3) for i in range(len(asleep) - 1)]
    return compile_config(
        RoutingConfig.model_validate(
            {
                "tiers": tiers,
                "contexts": [{"name": "default", "thresholds": cuts}],
                "defaultContext": "default",
            }
        )
    )


def test_awake_order_leaves_sleeping_tiers_out_and_falls_back_without_failover() -> None:
    from zeta_router.router.errors import ApiError
    from zeta_router.router.sleep import awake_order
    from zeta_router.router.upstream import attempt_order

    cfg = _runtime((False, True, False))
    assert awake_order(attempt_order(1, 3, True), cfg) == [2, 0]
    # Failover off: the nearest awake tier still answers (larger first) ...
    assert awake_order(attempt_order(1, 3, False), cfg) == [2]
    assert awake_order([2], _runtime((False, False, True))) == [1]
    # ... but never for a request pinned to the sleeping tier.
    with pytest.raises(ApiError) as e:
        awake_order([1], cfg, fallback=False)
    assert (e.value.status, e.value.code) == (503, "tier_asleep")
    # A sleeping tier is never a failover target either.
    assert awake_order(attempt_order(0, 3, True), cfg) == [0, 2]
