"""Sleep and wake in the simulator: a tier with min 0 sleeps through a quiet spell, requests
that want it meanwhile are answered by the other tier (fallback) or held until it wakes
(wait), and each wakes it."""

from __future__ import annotations

from zeta_router.sim.controllers import PolicyController
from zeta_router.sim.engine import simulate
from zeta_router.sim.scenario import Scenario, SimContext, SimTier
from zeta_router.sim.trace import Trace, day_envelope, day_with_night


def _scenario(**kw: object) -> Scenario:
    return Scenario(
        tiers=[
            SimTier(name="small", min_replicas=1, max_replicas=2, startup_seconds=10),
            SimTier(
                name="large",
                min_replicas=0,
                max_replicas=2,
                startup_seconds=30,
                sleep_after_seconds=120,
            ),
        ],
        contexts=[SimContext(name="c", thresholds=[0.5])],
        interval_seconds=10,
        metrics_window_seconds=20,
        wake_seconds=2,
        wake_notice_seconds=5,
        **kw,  # type: ignore[arg-type]
    )


def _trace() -> Trace:
    # Large-tier requests (score 0.9) early on, a quiet hour, one more at t=4000, and small
    # ones after it (until the wake is over).
    arrival = [1.0, 2.0, 3.0, 4000.0, 4001.0, 4100.0]
    return Trace(
        arrival=arrival,
        context=["c"] * 6,
        prompt_tokens=[100] * 6,
        output_tokens=[10] * 6,
        score=[0.9, 0.9, 0.9, 0.9, 0.1, 0.1],
        name="gap",
    )


def test_fallback_answers_on_the_small_tier_and_wakes_the_large_one() -> None:
    r = simulate(_scenario(), _trace(), PolicyController())
    assert r.unserved == 0
    assert r.asleep_hours["large"] > 0.9  # asleep through most of the quiet hour
    assert r.wakes == 1
    assert r.fallbacks == 1
    assert r.share_by_tier == {"small": 0.5, "large": 0.5}
    (wake,) = r.wake_to_answer
    assert wake == 2 + 30 + 5  # signal, start-up, routers told


def test_wait_holds_the_request_and_answers_on_the_woken_tier() -> None:
    r = simulate(_scenario(when_asleep="wait", wait_seconds=600), _trace(), PolicyController())
    assert r.unserved == 0
    assert (r.wakes, r.fallbacks) == (1, 0)
    assert r.share_by_tier == {"small": 2 / 6, "large": 4 / 6}
    assert r.wake_to_answer == [37.0]


def test_wait_falls_back_at_its_bound() -> None:
    r = simulate(_scenario(when_asleep="wait", wait_seconds=10), _trace(), PolicyController())
    assert (r.wakes, r.fallbacks) == (1, 1)
    assert r.share_by_tier == {"small": 0.5, "large": 0.5}


def test_day_with_night_keeps_the_day_and_thins_the_night() -> None:
    hour = Trace(
        arrival=[float(t) for t in range(3600)],
        context=["c"] * 3600,
        prompt_tokens=[1] * 3600,
        output_tokens=[1] * 3600,
        score=[0.5] * 3600,
        name="hour",
    )
    day = day_with_night(hour, night_share=0.0, seed=3)
    assert day.name == "hour-day"
    noon = sum(1 for t in day.arrival if 12 * 3600 <= t < 13 * 3600)
    night = sum(1 for t in day.arrival if 0 <= t < 6 * 3600)
    assert noon == 3600
    assert night == 0
    import numpy as np

    env = day_envelope(np.array([0.0, 7.5 * 3600, 12 * 3600, 20 * 3600]), 0.01)
    assert list(env) == [0.01, 0.5, 1.0, 0.5]
