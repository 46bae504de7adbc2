"""An external provider as the overflow tier, in the simulator: GPU-hours, external spend, SLO
attainment and estimated quality for a static deployment and the control loop, without an
external tier, with one, and with one under a spend cap (external.maxCostPerHour).

The external tier is overflow only: a request reaches it when every tier of the cluster refused
it (their model servers' queue bound reached, ``SimExternal.refuse_queue_per_replica`` per
ready replica, or no replica ready); it answers at a fixed TTFT at its price per token. The
loop pauses it above its cap and resumes it under 90 % of the cap after a window
(``autoscale.policy.spend``, the code the operator runs).

Trace: a day with a night built from an hour of bursty traffic (``sim.trace.day_with_night``
over a generated ``burst`` hour: --burst-factor x the rate for 5 minutes every 30), the shape
where a provider helps most (bursts shorter than a replica's start-up). Figures only; nothing
here passes or fails.

    .venv/bin/python benchmarks/external_overflow_sim.py [--rate 4] [--cap 2] [--refuse-queue 8]
"""

from __future__ import annotations

import argparse
import time

from zeta_router.sim.controllers import PolicyController, StaticController
from zeta_router.sim.engine import Controller, SimResult, simulate
from zeta_router.sim.scenario import Scenario, SimExternal, default_scenario
from zeta_router.sim.trace import PatternSpec, day_with_night, generate

# Prices per 1000 tokens of a hosted large model (any currency unit).
PROMPT_PRICE = 0.003
COMPLETION_PRICE = 0.015


def runs(
    scenario: Scenario, cap: float, refuse_queue: float
) -> list[tuple[str, Scenario, Controller]]:
    def policy(name: str) -> PolicyController:
        c = PolicyController()
        c.name = name
        return c

    def static(name: str) -> StaticController:
        c = StaticController()
        c.name = name
        return c

    external = SimExternal(
        prompt_cost_per_1k_tokens=PROMPT_PRICE,
        completion_cost_per_1k_tokens=COMPLETION_PRICE,
        refuse_queue_per_replica=refuse_queue,
    )
    with_ext = scenario.model_copy(update={"external": external})
    capped = scenario.model_copy(
        update={"external": external.model_copy(update={"max_cost_per_hour": cap})}
    )
    return [
        ("static", scenario, static("static")),
        ("static + external", with_ext, static("static + external")),
        ("loop", scenario, policy("loop")),
        ("loop + external", with_ext, policy("loop + external")),
        (f"loop + ext, cap {cap:g}/h", capped, policy("loop + external, capped")),
    ]


def row(name: str, r: SimResult) -> str:
    return (
        f"{name:<22} {r.gpu_hours:8.1f} {r.slo_attainment:8.2%} {r.ttft_p99:8.2f} "
        f"{r.quality:8.2%} {r.share_by_tier.get('hosted', 0.0):8.2%} "
        f"{r.external_spend:9.2f} {r.external_paused_hours:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s of the hour")
    parser.add_argument("--burst-factor", type=float, default=3.0)
    parser.add_argument("--night-share", type=float, default=0.002)
    parser.add_argument("--cap", type=float, default=2.0, help="maxCostPerHour of the capped run")
    parser.add_argument(
        "--refuse-queue",
        type=float,
        default=8.0,
        help="queued requests per ready replica past which a tier of the cluster refuses (429)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    scenario = default_scenario()
    hour = generate(
        PatternSpec(
            "burst", duration_seconds=3600.0, mean_rate=args.rate, burst_factor=args.burst_factor
        ),
        scenario.context_mix(),
        seed=args.seed,
    )
    day = day_with_night(hour, args.night_share, seed=args.seed)
    ext = SimExternal(refuse_queue_per_replica=args.refuse_queue)
    print(
        f"scenario: small 1-8, large 1-8, 1 GPU each (static: 8 + 8); TTFT SLO "
        f"{scenario.slo_seconds:g}s; start-up {scenario.tiers[0].startup_seconds:g}s / "
        f"{scenario.tiers[1].startup_seconds:g}s; external: overflow only, TTFT "
        f"{ext.ttft_seconds:g}s, prices {PROMPT_PRICE:g} / {COMPLETION_PRICE:g} per 1000 "
        f"prompt / completion tokens, cluster tiers refuse past {ext.refuse_queue_per_replica:g} "
        "queued per ready replica"
    )
    rate = len(day) / max(day.duration, 1.0)
    print(
        f"\ntrace {day.name}: {len(day)} requests over {day.duration / 3600:.1f} h "
        f"({rate:.2f}/s mean)"
    )
    print(
        f"{'run':<22} {'GPU-h':>8} {'SLO':>8} {'p99 s':>8} {'quality':>8} {'external':>8} "
        f"{'spend':>9} {'paused':>7}"
    )
    for name, sc, controller in runs(scenario, args.cap, args.refuse_queue):
        started = time.perf_counter()
        result = simulate(sc, day, controller, seed=args.seed)
        print(row(name, result), f"  ({time.perf_counter() - started:.0f}s)", flush=True)
    print(
        "\nGPU-h: all tiers; SLO: share of requests with TTFT within the SLO; quality: estimated "
        "share of correct answers; external: share answered by the provider; spend: what they "
        "cost over the day; paused: hours the provider was paused for its cap."
    )


if __name__ == "__main__":
    main()
