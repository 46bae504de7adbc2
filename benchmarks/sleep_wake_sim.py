"""Tiers that sleep at zero and wake on demand, in the simulator: GPU-hours, SLO attainment and
estimated answer quality for a static deployment, today's control loop (every tier keeps a
replica) and sleep/wake (the large tier at replicas.min 0, sleepAfter 10m) with each
whenAsleep policy: fallback, and wait with a 60s and a 300s bound.

Traces: an hour of traffic (the Azure LLM inference trace with --azure, the conversation CSV
of Azure/AzurePublicDataset; else a generated steady hour at --rate), and a day-long trace with
a night built from it (``sim.trace.day_with_night``: that hour repeated over 24 h and thinned to
a working-day shape, ramps 06-09 and 18-22, the night keeping --night-share of the rate).
Figures only; nothing here passes or fails.

    .venv/bin/python benchmarks/sleep_wake_sim.py [--rate 4] [--night-share 0.002] [--azure CSV]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from zeta_router.sim.controllers import PolicyController, StaticController
from zeta_router.sim.engine import Controller, SimResult, simulate
from zeta_router.sim.scenario import Scenario, default_scenario
from zeta_router.sim.trace import PatternSpec, Trace, day_with_night, generate, load_azure_csv

SLEEP_AFTER = 600.0


def sleeping(scenario: Scenario, **settings: object) -> Scenario:
    """``scenario`` with its largest tier at min 0, sleeping after SLEEP_AFTER."""
    tiers = list(scenario.tiers)
    tiers[-1] = tiers[-1].model_copy(update={"min_replicas": 0, "sleep_after_seconds": SLEEP_AFTER})
    return scenario.model_copy(update={"tiers": tiers, **settings})


def runs(scenario: Scenario) -> list[tuple[str, Scenario, Controller]]:
    def policy(name: str) -> PolicyController:
        c = PolicyController()
        c.name = name
        return c

    return [
        ("static", scenario, StaticController()),
        ("loop (min 1)", scenario, policy("loop (min 1)")),
        ("sleep, fallback", sleeping(scenario), policy("sleep, fallback")),
        (
            "sleep, wait 60s",
            sleeping(scenario, when_asleep="wait", wait_seconds=60.0),
            policy("sleep, wait 60s"),
        ),
        (
            "sleep, wait 300s",
            sleeping(scenario, when_asleep="wait", wait_seconds=300.0),
            policy("sleep, wait 300s"),
        ),
    ]


def row(name: str, r: SimResult) -> str:
    asleep = sum(r.asleep_hours.values())
    waits = r.wake_to_answer
    wake = f"{statistics.median(waits):6.0f}" if waits else "     -"
    return (
        f"{name:<17} {r.gpu_hours:8.1f} {r.gpu_hours_by_tier.get('large', 0.0):8.1f} "
        f"{r.slo_attainment:7.2%} {r.ttft_p99:7.2f} {r.quality:7.2%} "
        f"{r.share_by_tier.get('large', 0.0):7.2%} {asleep:6.1f} {r.wakes:5d} "
        f"{r.fallbacks:9d} {wake}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s of the steady hour")
    parser.add_argument("--night-share", type=float, default=0.002)
    parser.add_argument("--azure", type=Path, help="AzureLLMInferenceTrace_conv.csv")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    scenario = default_scenario()
    if args.azure is not None:
        hour = load_azure_csv(args.azure, scenario.context_mix(), seed=args.seed)
    else:
        hour = generate(
            PatternSpec("steady", duration_seconds=3600.0, mean_rate=args.rate),
            scenario.context_mix(),
            seed=args.seed,
        )
    day = day_with_night(hour, args.night_share, seed=args.seed)
    traces: list[Trace] = [hour, day]
    large = scenario.tiers[-1]
    print(
        f"scenario: small 1-8, large 1-8 (sleep: 0-8, sleepAfter {SLEEP_AFTER:g}s), 1 GPU each; "
        f"TTFT SLO {scenario.slo_seconds:g}s; large start-up {large.startup_seconds:g}s; "
        f"wake signal {scenario.wake_seconds:g}s; routers told "
        f"{scenario.wake_notice_seconds:g}s after the first ready replica"
    )
    for trace in traces:
        rate = len(trace) / max(trace.duration, 1.0)
        print(f"\ntrace {trace.name}: {len(trace)} requests over {trace.duration / 3600:.1f} h "
              f"({rate:.2f}/s mean)")  # fmt: skip
        print(
            f"{'run':<17} {'GPU-h':>8} {'large':>8} {'SLO':>7} {'p99 s':>7} {'quality':>7} "
            f"{'large %':>7} {'asleep':>6} {'wakes':>5} {'fallbacks':>9} {'wake s':>6}"
        )
        for name, sc, controller in runs(scenario):
            started = time.perf_counter()
            result = simulate(sc, trace, controller, seed=args.seed)
            print(row(name, result), f"  ({time.perf_counter() - started:.0f}s)", flush=True)
    print(
        "\nGPU-h: all tiers (large: the large tier alone); SLO: share of requests with TTFT "
        "within the SLO; quality: estimated share of correct answers; asleep: hours the large "
        "tier spent at zero; wake s: median seconds from the first request wanting the sleeping "
        "tier to the routers sending it requests again."
    )


if __name__ == "__main__":
    main()
