"""The autoscaling policy against a static deployment and a fixed-threshold queue autoscaler,
in the simulator, on the three generated traces (steady, diurnal, burst).

Prints GPU-hours, SLO attainment (share of requests with TTFT within the target), the large
tier's share and the estimated answer quality side by side, then how our policy compares with
the aims (at least 25 % fewer GPU-hours than static, fewer than the fixed-threshold autoscaler,
at equal or better SLO attainment than it). Figures only; nothing here passes or fails.

    .venv/bin/python benchmarks/policy_sim.py [--duration 7200] [--rate 10] [--output DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from zeta_router.sim.report import compare, format_table, plot, write_json
from zeta_router.sim.scenario import Scenario, default_scenario
from zeta_router.sim.trace import PATTERNS, PatternSpec, generate


def static_gpus(scenario: Scenario) -> float:
    return sum(t.max_replicas * t.gpus_per_replica for t in scenario.tiers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=7200.0, help="steady and burst")
    parser.add_argument("--day", type=float, default=86400.0, help="diurnal trace length")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--budget", type=float, default=10.0, help="maxGpus for the budget run")
    parser.add_argument("--output", type=Path, help="also write results.json and PNGs here")
    args = parser.parse_args()

    scenario = default_scenario()
    traces = [
        generate(
            PatternSpec(
                p,
                duration_seconds=args.day if p == "diurnal" else args.duration,
                mean_rate=args.rate,
            ),
            scenario.context_mix(),
            seed=args.seed,
        )
        for p in PATTERNS
    ]
    started = time.perf_counter()
    results = compare(scenario, traces, ["zeta-router", "static", "hpa-queue"], seed=args.seed)
    elapsed = time.perf_counter() - started
    tiers = ", ".join(
        f"{t.name} {t.min_replicas}-{t.max_replicas} x {t.gpus_per_replica:g} GPU"
        for t in scenario.tiers
    )
    print(
        f"scenario: {tiers}; TTFT SLO {scenario.slo_seconds}s; {args.rate:g} req/s mean; "
        f"steady and burst {args.duration / 3600:g} h, diurnal {args.day / 3600:g} h"
    )
    print(format_table(results))
    print()
    for trace in traces:
        by = {r.controller: r for r in results if r.trace == trace.name}
        ours, static, hpa = by["zeta-router"], by["static"], by["hpa-queue"]
        saving = 1 - ours.gpu_hours / static.gpu_hours
        vs_hpa = 1 - ours.gpu_hours / hpa.gpu_hours
        print(
            f"{trace.name:<8} GPU-hours {saving * 100:5.1f}% below static (aim >= 25%), "
            f"{vs_hpa * 100:5.1f}% below hpa-queue (aim > 0); SLO "
            f"{ours.slo_attainment * 100:.2f}% vs hpa-queue {hpa.slo_attainment * 100:.2f}% "
            f"(aim >=), static {static.slo_attainment * 100:.2f}%; quality "
            f"{(ours.quality - static.quality) * 100:+.2f} points vs fixed thresholds"
        )
    print(f"\nsimulated {sum(r.requests for r in results)} requests in {elapsed:.1f}s")

    # The budget coupling: burst trace under a GPU budget, with and without shifting load.
    burst = next(t for t in traces if t.name == "burst")
    print(f"\nburst under maxGpus {args.budget:g} (static would need {static_gpus(scenario):g}):")
    for shift in (True, False):
        limited = scenario.model_copy(update={"max_gpus": args.budget, "load_shift": shift})
        (r,) = compare(limited, [burst], ["zeta-router"], seed=args.seed)
        large = r.share_by_tier[scenario.tiers[-1].name]
        print(
            f"  load shift {'on ' if shift else 'off'}: {r.gpu_hours:6.2f} GPU-h, SLO "
            f"{r.slo_attainment * 100:.2f}%, large share {large * 100:.1f}%, quality "
            f"{r.quality * 100:.2f}%"
        )
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        write_json(args.output / "results.json", scenario, results)
        for trace in traces:
            plot(args.output / f"policy-sim-{trace.name}.png", scenario, results, trace.name)
        print(f"wrote {args.output}/results.json and plots")


if __name__ == "__main__":
    main()
