"""Table-driven tests of the control loop's pure policy: one case per rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zeta_router.autoscale.policy import (
    ContextPolicy,
    ContextState,
    Decision,
    FeedbackPolicy,
    PolicyConfig,
    PolicyState,
    TierPolicy,
    TierState,
    decide,
)
from zeta_router.autoscale.snapshot import (
    ContextSample,
    MetricsSnapshot,
    MetricsStatus,
    ScoreHistogram,
    TierSample,
)


def config(**kw: object) -> PolicyConfig:
    base: dict[str, object] = {
        "tiers": (
            TierPolicy("small", 1, 6, gpus_per_replica=1),
            TierPolicy("large", 1, 4, gpus_per_replica=2),
        ),
        "contexts": (ContextPolicy("ZetaHRM", (0.5,), lower=0.3, upper=0.7),),
        "target_queue_per_replica": 4.0,
        "target_ttft_p90_seconds": 2.0,
        "scale_down_delay_seconds": 300.0,
    }
    base.update(kw)
    return PolicyConfig(**base)  # type: ignore[arg-type]


def tier(name: str, ready: int = 2, **kw: object) -> TierSample:
    values: dict[str, object] = {
        "ready_replicas": ready,
        "waiting": 0.0,
        "running": 2.0 * ready,
        "ttft_p90_seconds": 1.5,
        "request_rate": 3.0,
    }
    values.update(kw)
    return TierSample(name=name, **values)  # type: ignore[arg-type]


def snap(
    small: TierSample | None = None,
    large: TierSample | None = None,
    contexts: dict[str, ContextSample] | None = None,
    generation: int | None = 1,
) -> MetricsSnapshot:
    tiers = {t.name: t for t in (small or tier("small"), large or tier("large"))}
    return MetricsSnapshot(
        status=MetricsStatus.OK,
        tiers=tiers,
        contexts=contexts or {},
        config_generation=generation,
    )


def state(
    cfg: PolicyConfig, small: int = 2, large: int = 2, **tier_state: TierState
) -> PolicyState:
    st = PolicyState.initial(cfg, {"small": small, "large": large})
    if tier_state:
        st = replace(st, tiers={**st.tiers, **tier_state})
    return st


def replica_change(d: Decision, name: str) -> str:
    (change,) = [c for c in d.changes if c.kind == "replicas" and c.target == name]
    return change.reason


# ---- scaling up ------------------------------------------------------------------------------


def test_queue_pressure_sizes_from_measured_capacity() -> None:
    cfg = config()
    # 2 replicas each running 4 (saturated) with 19 queued: 27 in flight / (4 + 4) -> 4 replicas.
    d = decide(cfg, snap(large=tier("large", waiting=19.0, running=8.0)), state(cfg), now=0)
    assert d.replicas == {"small": 2, "large": 4}
    assert replica_change(d, "large") == (
        "tier large: queue 9.5/replica > 4 target: 2 -> 4 replicas"
    )
    # Pressure point: the measured capacity of a saturated replica.
    assert d.state.tiers["large"].pressure_load == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("ttft", "ready", "desired", "expected"),
    [
        (3.0, 2, 2, 3),  # 1.5x the target -> 1.5x replicas
        (2.1, 2, 2, 2),  # inside the tolerance band: no change
        (9.0, 2, 2, 4),  # far above: bounded to doubling
        (9.0, 2, 4, 4),  # replicas still starting: not asked for twice
    ],
)
def test_ttft_pressure(ttft: float, ready: int, desired: int, expected: int) -> None:
    cfg = config()
    d = decide(
        cfg,
        snap(large=tier("large", ready=ready, ttft_p90_seconds=ttft)),
        state(cfg, large=desired),
        now=0,
    )
    assert d.replicas["large"] == expected


def test_scale_up_step_is_bounded_by_config() -> None:
    cfg = config(max_scale_up_step=1)
    d = decide(cfg, snap(large=tier("large", waiting=40.0, running=8.0)), state(cfg), now=0)
    assert d.replicas["large"] == 3


def test_scale_up_is_clamped_to_max_and_reason_says_so() -> None:
    cfg = config()
    d = decide(
        cfg, snap(large=tier("large", ready=3, waiting=60.0, running=12.0)), state(cfg, large=3), 0
    )
    assert d.replicas["large"] == 4
    assert "capped at max 4" in replica_change(d, "large")


def test_scale_from_zero_on_waiting_requests() -> None:
    cfg = config(tiers=(TierPolicy("small", 0, 3), TierPolicy("large", 0, 3)))
    d = decide(
        cfg,
        snap(large=tier("large", ready=0, waiting=1.0, running=0.0, ttft_p90_seconds=None)),
        state(cfg, large=0),
        now=0,
    )
    assert d.replicas["large"] == 1


# ---- scaling down ----------------------------------------------------------------------------

IDLE_LARGE = tier("large", ready=3, waiting=0.0, running=1.0, ttft_p90_seconds=0.4)


def test_scale_down_only_after_sustained_low_load_one_step_at_a_time() -> None:
    cfg = config()
    st = state(cfg, large=3)
    d0 = decide(cfg, snap(large=IDLE_LARGE), st, now=1000)
    assert d0.replicas["large"] == 3
    assert any("low load for 0s of 300s" in n for n in d0.notes)
    d1 = decide(cfg, snap(large=IDLE_LARGE), d0.state, now=1299)
    assert d1.replicas["large"] == 3
    d2 = decide(cfg, snap(large=IDLE_LARGE), d1.state, now=1300)
    assert d2.replicas["large"] == 2
    assert replica_change(d2, "large").startswith("tier large: low load for 300s")
    # The next step needs another full delay, measured from this one.
    low_again = replace(IDLE_LARGE, ready_replicas=2)
    d3 = decide(cfg, snap(large=low_again), d2.state, now=1301)
    assert d3.replicas["large"] == 2
    d4 = decide(cfg, snap(large=low_again), d3.state, now=1600)
    assert d4.replicas["large"] == 1


def test_a_busy_interval_resets_the_low_load_clock() -> None:
    cfg = config()
    d0 = decide(cfg, snap(large=IDLE_LARGE), state(cfg, large=3), now=0)
    busy = replace(IDLE_LARGE, ttft_p90_seconds=1.8)
    d1 = decide(cfg, snap(large=busy), d0.state, now=200)
    assert d1.state.tiers["large"].low_since is None
    d2 = decide(cfg, snap(large=IDLE_LARGE), d1.state, now=400)
    assert d2.replicas["large"] == 3


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        (replace(IDLE_LARGE, waiting=3.0 * 3), "queue above low water"),
        (replace(IDLE_LARGE, ttft_p90_seconds=1.2), "TTFT above low water"),
        (replace(IDLE_LARGE, waiting=None), "queue series missing"),
        (replace(IDLE_LARGE, running=None), "running series missing"),
        (replace(IDLE_LARGE, ready_replicas=None), "ready replicas unknown"),
        (replace(IDLE_LARGE, ttft_p90_seconds=None), "TTFT missing while serving"),
    ],
)
def test_no_scale_down(sample: TierSample, why: str) -> None:
    cfg = config()
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": TierState(3, low_since=-10_000)})
    d = decide(cfg, snap(large=sample), st, now=0)
    assert d.replicas["large"] == 3, why
    assert d.state.tiers["large"].low_since is None, why


def test_idle_tier_without_latency_series_scales_down() -> None:
    cfg = config()
    idle = tier("large", ready=3, waiting=0.0, running=0.0, ttft_p90_seconds=None, request_rate=0)
    st = replace(state(cfg, large=3), tiers={**state(cfg).tiers, "large": TierState(3, 0.0)})
    d = decide(cfg, snap(large=idle), st, now=300)
    assert d.replicas["large"] == 2
    assert "no requests" in replica_change(d, "large")


def test_scale_down_checked_against_the_load_that_caused_pressure() -> None:
    cfg = config()
    # Pressure appeared at 5 in flight per replica; 12 in flight on 2 replicas would be 6 > 4.
    remembered = TierState(3, low_since=0.0, pressure_load=5.0, pressure_seen_at=0.0)
    light = tier("large", ready=3, waiting=0.0, running=12.0, ttft_p90_seconds=0.5)
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": remembered})
    d = decide(cfg, snap(large=light), st, now=1000)
    assert d.replicas["large"] == 3
    assert any("would exceed 4" in n for n in d.notes)
    # 7 in flight -> 3.5 per replica on 2: fits under 80% of 5.
    d = decide(cfg, snap(large=replace(light, running=7.0)), st, now=1000)
    assert d.replicas["large"] == 2


def test_no_scale_down_back_to_the_load_of_an_expired_pressure_point() -> None:
    cfg = config(target_queue_per_replica=10.0)
    # TTFT pressure at 6 in flight on one replica; two replicas have carried the same 6 since.
    learned = TierState(2, low_since=0.0, pressure_load=6.0, pressure_seen_at=0.0)
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": learned})
    light = tier("large", ready=2, waiting=0.0, running=6.0, ttft_p90_seconds=0.8)
    later = cfg.pressure_memory_seconds + 30
    # Past its memory, the queue check alone (6 <= 0.8 * 10) would take the replica from the
    # load that needed it, and the pressure would put it back: a flap every hour.
    d = decide(cfg, snap(large=light), st, now=later)
    assert d.replicas["large"] == 2
    assert any("would be back at the 6 at which pressure was seen" in n for n in d.notes)
    # The expired point keeps no headroom: 5 on one replica, below the 6 (not below 80 % of
    # it), may go; while the point was trusted it could not.
    lighter = replace(light, running=5.0)
    assert decide(cfg, snap(large=lighter), st, now=later).replicas["large"] == 1
    assert decide(cfg, snap(large=lighter), st, now=60).replicas["large"] == 2


def test_without_capacity_knowledge_scale_down_assumes_everything_queues() -> None:
    cfg = config()
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": TierState(3, low_since=0.0)})
    busy = tier("large", ready=3, waiting=0.0, running=9.0, ttft_p90_seconds=0.5)
    # 9 in flight on 2 replicas = 4.5 > 0.8 * 4 queue target.
    assert decide(cfg, snap(large=busy), st, now=1000).replicas["large"] == 3
    # vLLM's KV-cache use says how full the replicas are: 0.3 * 3/2 = 0.45 <= 0.72.
    kv = replace(busy, kv_cache_usage=0.3)
    assert decide(cfg, snap(large=kv), st, now=1000).replicas["large"] == 2


def test_never_below_min() -> None:
    cfg = config()
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": TierState(1, low_since=0.0)})
    idle = tier("large", ready=1, waiting=0.0, running=0.0, ttft_p90_seconds=0.1)
    assert decide(cfg, snap(large=idle), st, now=10_000).replicas["large"] == 1


# ---- missing data and spec bounds ------------------------------------------------------------


@pytest.mark.parametrize("status", [s for s in MetricsStatus if s is not MetricsStatus.OK])
def test_unavailable_metrics_hold_everything(status: MetricsStatus) -> None:
    cfg = config()
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": TierState(3, low_since=0.0)})
    d = decide(cfg, MetricsSnapshot.unavailable(status, "boom"), st, now=10_000)
    assert d.replicas == {"small": 2, "large": 3}
    assert not d.changes
    assert not d.metrics_available
    assert d.state.tiers["large"].low_since is None
    assert f"metrics unavailable ({status.value}: boom)" in d.summary


def test_spec_bounds_apply_even_without_metrics() -> None:
    cfg = config()
    st = state(cfg, small=9, large=2)
    d = decide(cfg, MetricsSnapshot.unavailable(MetricsStatus.TIMEOUT, "t"), st, now=0)
    assert d.replicas["small"] == 6
    assert replica_change(d, "small") == "tier small: above max 6: 9 -> 6 replicas"


def test_budget_lowered_below_current_use_trims_largest_tier_first() -> None:
    cfg = config(max_gpus=5)
    d = decide(cfg, MetricsSnapshot.unavailable(MetricsStatus.TIMEOUT, "t"), state(cfg, 1, 3), 0)
    assert d.replicas == {"small": 1, "large": 2}


# ---- GPU budget and load shift ---------------------------------------------------------------


def test_budget_caps_scale_up_and_shifts_load_to_the_smaller_tier() -> None:
    cfg = config(max_gpus=6)
    d = decide(
        cfg,
        snap(small=tier("small"), large=tier("large", waiting=19.0, running=8.0)),
        state(cfg),
        now=0,
    )
    # 2 small (2 GPUs) + 2 large (4 GPUs) = budget; the large tier cannot grow.
    assert d.replicas == {"small": 2, "large": 2}
    assert any("GPU budget 6 allows 2" in n for n in d.notes)
    assert d.thresholds["ZetaHRM"] == (0.52,)
    (change,) = d.changes
    assert change.kind == "thresholds"
    assert change.direction == "up"
    assert "tier large saturated and cannot grow" in change.reason
    assert change.reason.endswith("thresholds 0.50 -> 0.52")


def test_budget_is_shared_smallest_tier_first() -> None:
    cfg = config(max_gpus=8)
    both_busy = snap(
        small=tier("small", waiting=30.0, running=4.0),
        large=tier("large", waiting=19.0, running=8.0),
    )
    d = decide(cfg, both_busy, state(cfg), now=0)
    assert d.replicas["small"] == 4
    assert d.replicas["large"] == 2
    assert "capped by GPU budget" not in d.summary  # large kept its count; no change line


def test_shift_at_max_replicas_and_taken_back_when_pressure_is_gone() -> None:
    cfg = config()
    st = state(cfg, large=4)
    hot = tier("large", ready=4, waiting=40.0, running=16.0)
    d1 = decide(cfg, snap(large=hot), st, now=0)
    assert d1.thresholds["ZetaHRM"] == (0.52,)
    d2 = decide(cfg, snap(large=hot), d1.state, now=30)
    assert d2.thresholds["ZetaHRM"] == (0.54,)
    # Pressure relieved but still busy at max: hold the shift.
    warm = tier("large", ready=4, waiting=0.0, running=14.0, ttft_p90_seconds=1.5)
    d3 = decide(cfg, snap(large=warm), d2.state, now=60)
    assert d3.thresholds["ZetaHRM"] == (0.54,)
    # Light load: give it back one step per interval.
    cool = tier("large", ready=4, waiting=0.0, running=4.0, ttft_p90_seconds=0.5)
    d4 = decide(cfg, snap(large=cool), d3.state, now=90)
    assert d4.thresholds["ZetaHRM"] == (0.52,)
    assert "pressure on tier large gone" in d4.summary
    d5 = decide(cfg, snap(large=cool), d4.state, now=120)
    assert d5.thresholds["ZetaHRM"] == (0.5,)
    d6 = decide(cfg, snap(large=cool), d5.state, now=150)
    assert not [c for c in d6.changes if c.kind == "thresholds"]


def test_shift_stops_at_the_context_upper_bound() -> None:
    cfg = config()
    st = replace(state(cfg, large=4), contexts={"ZetaHRM": ContextState((0.5,), (0.19,))})
    hot = tier("large", ready=4, waiting=40.0, running=16.0)
    d = decide(cfg, snap(large=hot), st, now=0)
    assert d.thresholds["ZetaHRM"] == (0.7,)
    d = decide(cfg, snap(large=hot), d.state, now=30)
    assert d.thresholds["ZetaHRM"] == (0.7,)
    assert not [c for c in d.changes if c.kind == "thresholds"]


def test_load_shift_can_be_switched_off() -> None:
    cfg = config(load_shift=False)
    hot = tier("large", ready=4, waiting=40.0, running=16.0)
    d = decide(cfg, snap(large=hot), state(cfg, large=4), now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)


# ---- feedback --------------------------------------------------------------------------------


def hist(scores_below: dict[float, float]) -> ScoreHistogram:
    bounds = tuple(sorted(scores_below))
    return ScoreHistogram(bounds=bounds, cumulative=tuple(scores_below[b] for b in bounds))


UNIFORM_1000 = hist({i / 10: i * 100.0 for i in range(1, 11)})


def fb_config(**kw: object) -> PolicyConfig:
    fb = FeedbackPolicy(enabled=True, threshold_step=0.05, min_samples=100, **kw)  # type: ignore[arg-type]
    return config(feedback=fb, contexts=(ContextPolicy("ZetaHRM", (0.5,), 0.1, 0.9),))


def ctx(large: float, small: float, **kw: object) -> dict[str, ContextSample]:
    return {
        "ZetaHRM": ContextSample(
            "ZetaHRM",
            requests_by_tier={"small": small, "large": large},
            **kw,  # type: ignore[arg-type]
        )
    }


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.3, (0.55,)),  # quantile 0.7: step-bounded move up
        (0.46, (0.54,)),  # quantile 0.54: within one step, goes exactly there
        (0.49, (0.5,)),  # 0.51 is under half a step away: no churn
        (0.8, (0.45,)),  # quantile 0.2: step-bounded move down
    ],
)
def test_feedback_moves_toward_the_score_quantile(target: float, expected: tuple[float]) -> None:
    cfg = fb_config(target_large_share=target)
    samples = ctx(large=500, small=500, scores=UNIFORM_1000)
    d = decide(cfg, snap(contexts=samples), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == pytest.approx(expected)


def test_feedback_without_histogram_follows_the_share_error() -> None:
    cfg = fb_config(target_large_share=0.3)
    d = decide(cfg, snap(contexts=ctx(large=400, small=600)), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == pytest.approx((0.55,))
    assert "large-tier share 40%, target 30%" in d.summary
    d = decide(cfg, snap(contexts=ctx(large=310, small=690)), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == pytest.approx((0.5,))


def test_feedback_needs_enough_samples() -> None:
    cfg = fb_config(target_large_share=0.3)
    d = decide(cfg, snap(contexts=ctx(large=40, small=20, scores=None)), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)
    assert any("60 requests < 100 needed" in n for n in d.notes)


def test_quality_floor_lowers_thresholds_even_against_the_share_target() -> None:
    cfg = fb_config(target_large_share=0.1, quality_floor=0.8)
    samples = ctx(large=500, small=500, scores=UNIFORM_1000, quality=0.7, quality_samples=200)
    d = decide(cfg, snap(contexts=samples), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == pytest.approx((0.45,))
    assert "quality 0.7 < floor 0.8" in d.summary


def test_quality_near_floor_blocks_raising() -> None:
    cfg = fb_config(target_large_share=0.1, quality_floor=0.8)
    samples = ctx(large=500, small=500, scores=UNIFORM_1000, quality=0.81, quality_samples=200)
    d = decide(cfg, snap(contexts=samples), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)


def test_quality_floor_needs_enough_quality_samples() -> None:
    cfg = fb_config(quality_floor=0.8)
    samples = ctx(large=500, small=500, quality=0.2, quality_samples=10)
    d = decide(cfg, snap(contexts=samples), state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)


def test_quality_floor_also_blocks_load_shift() -> None:
    cfg = fb_config(quality_floor=0.8)
    hot = tier("large", ready=4, waiting=40.0, running=16.0)
    samples = ctx(large=500, small=500, quality=0.79, quality_samples=500)
    d = decide(cfg, snap(large=hot, contexts=samples), state(cfg, large=4), now=0)
    assert d.thresholds["ZetaHRM"] == pytest.approx((0.45,))


def test_feedback_stays_within_bounds() -> None:
    cfg = fb_config(target_large_share=0.01)
    st = replace(state(cfg), contexts={"ZetaHRM": ContextState((0.88,), (0.0,))})
    d = decide(cfg, snap(contexts=ctx(500, 500, scores=UNIFORM_1000)), st, now=0)
    assert d.thresholds["ZetaHRM"] == (0.9,)


# ---- config generation -----------------------------------------------------------------------


def test_thresholds_wait_for_routers_to_run_the_last_change() -> None:
    cfg = config()
    hot = tier("large", ready=4, waiting=40.0, running=16.0)
    st = state(cfg, large=4).awaiting(7)
    d = decide(cfg, snap(large=hot, generation=6), st, now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)
    assert any("routers run config generation 6, waiting for 7" in n for n in d.notes)
    assert d.state.awaiting_generation == 7
    d = decide(cfg, snap(large=hot, generation=None), st, now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)
    d = decide(cfg, snap(large=hot, generation=7), st, now=0)
    assert d.thresholds["ZetaHRM"] == (0.52,)
    assert d.state.awaiting_generation is None


# ---- more tiers, state, summary --------------------------------------------------------------


def test_three_tiers_keep_cut_points_strictly_increasing() -> None:
    cfg = PolicyConfig(
        tiers=(TierPolicy("s", 1, 2), TierPolicy("m", 1, 2), TierPolicy("l", 1, 2)),
        contexts=(ContextPolicy("c", (0.6, 0.69), lower=0.2, upper=0.7),),
    )
    hot = {
        "s": TierSample("s", 1, 0.0, 1.0, None, 0.5, 1.0),
        "m": TierSample("m", 2, 40.0, 8.0, None, 5.0, 1.0),
        "l": TierSample("l", 2, 40.0, 8.0, None, 5.0, 1.0),
    }
    st = PolicyState.initial(cfg, {"s": 1, "m": 2, "l": 2})
    d = decide(cfg, MetricsSnapshot(MetricsStatus.OK, tiers=hot, config_generation=0), st, 0)
    t = d.thresholds["c"]
    assert 0.2 <= t[0] < t[1] <= 0.7


def test_state_round_trips_through_json_form() -> None:
    cfg = config()
    d = decide(cfg, snap(large=tier("large", waiting=19.0, running=8.0)), state(cfg), now=5)
    st = d.state.awaiting(3)
    assert PolicyState.from_dict(st.to_dict()) == st
    with pytest.raises(ValueError, match="malformed autoscaler state"):
        PolicyState.from_dict({"tiers": {"large": {"lowSince": 1}}})


def test_with_current_rebases_on_thresholds_changed_by_hand() -> None:
    cfg = config()
    st = replace(state(cfg), contexts={"ZetaHRM": ContextState((0.5,), (0.04,))})
    same = st.with_current(cfg, {"small": 3}, {"ZetaHRM": [0.54]})
    assert same.contexts["ZetaHRM"] == ContextState((0.5,), (0.04,))
    assert same.tiers["small"].desired == 3
    moved = st.with_current(cfg, {}, {"ZetaHRM": [0.6]})
    assert moved.contexts["ZetaHRM"] == ContextState((0.6,), (0.0,))


def test_quiet_summary_explains_why_nothing_changed() -> None:
    cfg = config()
    d = decide(cfg, snap(), state(cfg), now=0)
    assert not d.changed
    assert d.summary.startswith("no change")


def test_config_rejects_threshold_count_mismatch() -> None:
    with pytest.raises(ValueError, match="has 2 thresholds for 2 tiers"):
        config(contexts=(ContextPolicy("x", (0.2, 0.4)),))


# ---- anticipation and stale latency ----------------------------------------------------------


def test_scale_up_before_a_queue_forms_near_the_learned_capacity() -> None:
    cfg = config()
    learned = TierState(2, pressure_load=8.0, pressure_seen_at=0.0)
    st = replace(state(cfg), tiers={**state(cfg).tiers, "large": learned})
    # 7.7 in flight per replica > 95 % of 8: sized to 15.4 / (0.8 * 8) -> 3 replicas.
    near = tier("large", ready=2, waiting=0.0, running=15.4, ttft_p90_seconds=1.0)
    d = decide(cfg, snap(large=near), st, now=60)
    assert d.replicas["large"] == 3
    assert "nears the 8 at which pressure was seen" in replica_change(d, "large")
    below = replace(near, running=15.0)  # 7.5 per replica: under 95 % of 8
    assert decide(cfg, snap(large=below), st, now=60).replicas["large"] == 2
    # A pressure point older than the memory is not trusted any more.
    assert decide(cfg, snap(large=near), st, now=10_000).replicas["large"] == 2


def test_kv_cache_near_full_scales_up_without_a_queue() -> None:
    cfg = config()
    full = tier("large", ready=2, waiting=0.0, running=40.0, ttft_p90_seconds=1.0)
    d = decide(cfg, snap(large=replace(full, kv_cache_usage=0.95)), state(cfg), now=0)
    assert d.replicas["large"] == 3
    assert "KV cache 95% > 90%" in replica_change(d, "large")
    assert decide(cfg, snap(large=full), state(cfg), now=0).replicas["large"] == 2


def test_ttft_of_a_queue_that_just_drained_does_not_scale_up_again() -> None:
    cfg = config(metrics_window_seconds=120)
    queued = tier("large", ready=2, waiting=40.0, running=8.0, ttft_p90_seconds=30.0)
    d1 = decide(cfg, snap(large=queued), state(cfg, large=2), now=0)
    assert d1.replicas["large"] == 4
    # The queue is gone (the new replicas took it); the window's p90 still holds its waits.
    drained = tier("large", ready=4, waiting=0.0, running=12.0, ttft_p90_seconds=30.0)
    d2 = decide(cfg, snap(large=drained), d1.state, now=60)
    assert d2.replicas["large"] == 4
    assert any("reflects a queue that just drained" in n for n in d2.notes)
    # A window after the queue, high latency is the tier's own again and counts.
    st = replace(
        d2.state, tiers={**d2.state.tiers, "large": replace(d2.state.tiers["large"], desired=2)}
    )
    d3 = decide(cfg, snap(large=replace(drained, ready_replicas=2)), st, now=130)
    assert d3.replicas["large"] == 4
    assert "TTFT p90 30s > 2s target" in replica_change(d3, "large")


def test_no_load_shift_onto_a_smaller_tier_that_is_itself_under_pressure() -> None:
    cfg = config(max_gpus=6)
    both_hot = snap(
        small=tier("small", waiting=30.0, running=8.0),
        large=tier("large", waiting=19.0, running=8.0),
    )
    d = decide(cfg, both_hot, state(cfg), now=0)
    assert d.thresholds["ZetaHRM"] == (0.5,)


@pytest.mark.parametrize(
    "sample",
    [
        tier("large", ready=2, waiting=0.0, running=1.0, ttft_p90_seconds=5.0),
        tier("large", ready=2, waiting=0.0, running=6.0, ttft_p90_seconds=5.0, kv_cache_usage=0.2),
    ],
)
def test_slow_first_tokens_on_idle_replicas_do_not_scale_up(sample: TierSample) -> None:
    cfg = config()
    d = decide(cfg, snap(large=sample), state(cfg), now=0)
    assert d.replicas["large"] == 2
    assert any("above target at light load" in n for n in d.notes)
