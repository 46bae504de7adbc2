"""The control loop's sleep and wake rules (pure): a tier with min 0 goes to zero after its idle
period, never on missing metrics, and wakes on any request that wanted it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zeta_router.api.models import ZetaRouterSpec, parse_zetarouter
from zeta_router.api.routing import routing_yaml
from zeta_router.autoscale.policy import (
    ContextPolicy,
    PolicyConfig,
    PolicyState,
    TierPolicy,
    TierState,
    decide,
)
from zeta_router.autoscale.snapshot import MetricsSnapshot, MetricsStatus, TierSample
from zeta_router.render.configmap import asleep_tiers, build_routing_config

SLEEP_AFTER = 600.0


def config() -> PolicyConfig:
    return PolicyConfig(
        tiers=(
            TierPolicy("small", 1, 4),
            TierPolicy("large", 0, 2, gpus_per_replica=2, sleep_after_seconds=SLEEP_AFTER),
        ),
        contexts=(ContextPolicy("default", (0.5,)),),
    )


def busy_small() -> TierSample:
    return TierSample(
        "small", ready_replicas=1, waiting=0.0, running=1.0, ttft_p90_seconds=0.5, request_rate=2.0
    )


def idle_large(ready: int = 1, **kw: object) -> TierSample:
    values: dict[str, object] = {
        "ready_replicas": ready,
        "waiting": 0.0,
        "running": 0.0,
        "request_rate": 0.0,
    }
    values.update(kw)
    return TierSample("large", **values)  # type: ignore[arg-type]


def snap(large: TierSample) -> MetricsSnapshot:
    return MetricsSnapshot(status=MetricsStatus.OK, tiers={"small": busy_small(), "large": large})


def start(large: int = 1, **large_state: object) -> PolicyState:
    cfg = config()
    st = PolicyState.initial(cfg, {"small": 1, "large": large})
    tiers = dict(st.tiers)
    tiers["large"] = replace(tiers["large"], **large_state)  # type: ignore[arg-type]
    return replace(st, tiers=tiers)


def test_idle_tier_sleeps_after_its_idle_period_and_not_before() -> None:
    cfg = config()
    st = start()
    d = decide(cfg, snap(idle_large()), st, now=1000.0)
    assert d.replicas["large"] == 1
    assert d.state.tiers["large"].idle_since == 1000.0
    assert any("idle for 0s of 600s" in n for n in d.notes)
    d = decide(cfg, snap(idle_large()), d.state, now=1000.0 + SLEEP_AFTER - 1)
    assert d.replicas["large"] == 1
    d = decide(cfg, snap(idle_large()), d.state, now=1000.0 + SLEEP_AFTER)
    assert d.replicas["large"] == 0
    (change,) = d.changes
    assert change.direction == "down"
    assert "asleep: no request for 600s" in change.reason
    assert change.reason.endswith("1 -> 0 replicas")
    # Asleep and still idle: it stays at zero.
    d = decide(cfg, snap(idle_large(ready=0)), d.state, now=5000.0)
    assert d.replicas["large"] == 0
    assert not d.changes


@pytest.mark.parametrize(
    "busy",
    [
        {"request_rate": 0.01},
        {"running": 1.0},
        {"waiting": 1.0},
        {"wanting": 1.0},
    ],
)
def test_any_request_restarts_the_idle_clock(busy: dict[str, float]) -> None:
    cfg = config()
    st = start(idle_since=0.0)
    d = decide(cfg, snap(idle_large(**busy)), st, now=SLEEP_AFTER * 2)
    assert d.replicas["large"] == 1
    assert d.state.tiers["large"].idle_since is None


@pytest.mark.parametrize(
    "missing",
    [{"request_rate": None}, {"running": None}, {"waiting": None}],
)
def test_missing_signals_never_put_a_tier_to_sleep(missing: dict[str, None]) -> None:
    cfg = config()
    st = start(idle_since=0.0)
    d = decide(cfg, snap(idle_large(**missing)), st, now=SLEEP_AFTER * 2)
    assert d.replicas["large"] == 1
    assert d.state.tiers["large"].idle_since is None
    assert any("load metrics missing; not putting it to sleep" in n for n in d.notes)


def test_no_metrics_at_all_holds_and_restarts_the_idle_clock() -> None:
    cfg = config()
    st = start(idle_since=0.0)
    d = decide(
        cfg,
        MetricsSnapshot.unavailable(MetricsStatus.UNREACHABLE, "down"),
        st,
        now=SLEEP_AFTER * 2,
    )
    assert d.replicas["large"] == 1
    assert d.state.tiers["large"].idle_since is None


def test_wanting_requests_wake_a_sleeping_tier_at_once() -> None:
    cfg = config()
    st = start(large=0)
    d = decide(cfg, snap(idle_large(ready=0, wanting=3.0)), st, now=10.0)
    assert d.replicas["large"] == 1
    (change,) = d.changes
    assert change.direction == "up"
    assert "woken by 3 requests wanting it while asleep" in change.reason


def test_wake_does_not_need_the_tiers_own_series() -> None:
    # A tier at zero has no scrape target: its load series are absent, not zero.
    cfg = config()
    st = start(large=0)
    large = TierSample("large", ready_replicas=None, wanting=1.0)
    d = decide(cfg, snap(large), st, now=10.0)
    assert d.replicas["large"] == 1


def test_a_woken_tier_does_not_sleep_again_before_a_full_idle_period() -> None:
    """No flapping: after a wake the idle clock starts from nothing."""
    cfg = config()
    st = start(large=0)
    d = decide(cfg, snap(idle_large(ready=0, wanting=1.0)), st, now=0.0)
    assert d.replicas["large"] == 1
    now = 30.0
    while now < SLEEP_AFTER:
        d = decide(cfg, snap(idle_large()), d.state, now=now)
        assert d.replicas["large"] == 1
        now += 30.0
    d = decide(cfg, snap(idle_large()), d.state, now=now + 30.0)
    assert d.replicas["large"] == 0


def test_a_tier_with_min_above_zero_never_sleeps() -> None:
    cfg = config()
    st = start(idle_since=0.0)
    small = TierSample("small", ready_replicas=1, waiting=0.0, running=0.0, request_rate=0.0)
    d = decide(
        cfg,
        MetricsSnapshot(status=MetricsStatus.OK, tiers={"small": small, "large": idle_large()}),
        st,
        now=SLEEP_AFTER * 10,
    )
    assert d.replicas["small"] == 1


def test_sleep_after_needs_min_zero() -> None:
    with pytest.raises(ValueError, match="sleep_after_seconds needs min_replicas 0"):
        TierPolicy("large", 1, 2, sleep_after_seconds=60.0)


def test_idle_since_survives_the_status_round_trip() -> None:
    st = start(idle_since=12.5)
    again = PolicyState.from_dict(st.to_dict())
    assert again.tiers["large"] == TierState(desired=1, idle_since=12.5)


def _spec() -> ZetaRouterSpec:
    return parse_zetarouter(
        {
            "tiers": [
                {"name": "small", "model": "s"},
                {"name": "large", "model": "l", "replicas": {"min": 0, "max": 2}},
            ],
            "router": {"contexts": [{"name": "default", "whenAsleep": "wait", "waitSeconds": 20}]},
            "autoscaling": {"enabled": True, "prometheus": {"url": "http://prometheus:9090"}},
        }
    )


@pytest.mark.parametrize(
    ("replicas", "ready", "asleep"),
    [
        ({"small": 1, "large": 0}, {"small": 1, "large": 0}, {"large"}),
        # woken, no ready replica yet: still asleep for the routers
        ({"small": 1, "large": 1}, {"small": 1, "large": 0}, {"large"}),
        ({"small": 1, "large": 1}, {"small": 1, "large": None}, {"large"}),
        ({"small": 1, "large": 1}, {"small": 1, "large": 1}, set()),
        # a tier that may not sleep is never marked, ready or not
        ({"small": 1, "large": 1}, {"small": 0, "large": 1}, set()),
    ],
)
def test_asleep_tiers(
    replicas: dict[str, int], ready: dict[str, int | None], asleep: set[str]
) -> None:
    assert asleep_tiers(_spec(), replicas, ready) == asleep


def test_no_tier_is_marked_asleep_unless_the_loop_owns_replicas() -> None:
    spec = _spec().model_copy(
        update={"autoscaling": _spec().autoscaling.model_copy(update={"mode": "advisory"})}
    )
    assert asleep_tiers(spec, {"small": 1, "large": 0}, {"small": 1, "large": 0}) == set()


def test_routing_config_marks_sleeping_tiers_and_waiting_contexts() -> None:
    cfg = build_routing_config("zr", "ns", _spec(), asleep={"large"})
    small, large = cfg.tiers
    assert (small.asleep, large.asleep) == (None, True)
    (ctx,) = cfg.contexts
    assert (ctx.when_asleep, ctx.wait_seconds) == ("wait", 20.0)
    text = routing_yaml(cfg)
    assert "asleep: true" in text
    assert "whenAsleep: wait" in text
    # Nothing asleep: no tier is marked.
    plain = routing_yaml(build_routing_config("zr", "ns", _spec().model_copy()))
    assert "asleep: true" not in plain
