"""Running a comparison and presenting it: a text table, a JSON document and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zeta_router.plotting import pyplot
from zeta_router.sim.controllers import CONTROLLERS
from zeta_router.sim.engine import SimResult, simulate
from zeta_router.sim.scenario import Scenario
from zeta_router.sim.trace import Trace


def compare(
    scenario: Scenario, traces: Sequence[Trace], controllers: Sequence[str], seed: int = 0
) -> list[SimResult]:
    """Every controller on every trace (the same trace and seed for all of them)."""
    unknown = [c for c in controllers if c not in CONTROLLERS]
    if unknown:
        raise ValueError(f"unknown controller(s) {unknown}; choose from {sorted(CONTROLLERS)}")
    return [
        simulate(scenario, trace, CONTROLLERS[name](), seed=seed)
        for trace in traces
        for name in controllers
    ]


def format_table(results: Sequence[SimResult]) -> str:
    external = any(r.external_tier is not None for r in results)
    header = (
        f"{'trace':<10} {'controller':<12} {'requests':>9} {'GPU-h':>8} {'vs static':>9} "
        f"{'SLO':>8} {'TTFT p90':>9} {'large':>6} {'quality':>8} {'changes':>8}"
    )
    if external:
        header += f" {'external':>8} {'spend':>9}"
    lines = [header, "-" * len(header)]
    static = {r.trace: r.gpu_hours for r in results if r.controller == "static"}
    for r in results:
        base = static.get(r.trace)
        vs = f"{(r.gpu_hours / base - 1) * 100:+.1f}%" if base else "n/a"
        served = [t for t in r.share_by_tier if t != r.external_tier]
        large = r.share_by_tier[served[-1]]
        line = (
            f"{r.trace:<10} {r.controller:<12} {r.requests:>9} {r.gpu_hours:>8.2f} {vs:>9} "
            f"{r.slo_attainment * 100:>7.2f}% {r.ttft_p90:>8.2f}s {large * 100:>5.1f}% "
            f"{r.quality * 100:>7.2f}% {r.decisions:>8}"
        )
        if external:
            share = r.share_by_tier.get(r.external_tier or "", 0.0)
            line += f" {share * 100:>7.1f}% {r.external_spend:>9.2f}"
        lines.append(line)
    return "\n".join(lines)


def to_document(scenario: Scenario, results: Sequence[SimResult]) -> dict[str, Any]:
    return {
        "scenario": scenario.model_dump(mode="json"),
        "sloSeconds": scenario.slo_seconds,
        "results": [{**r.summary(), "timeline": [asdict(p) for p in r.timeline]} for r in results],
    }


def write_json(path: Path, scenario: Scenario, results: Sequence[SimResult]) -> None:
    path.write_text(json.dumps(to_document(scenario, results), indent=1) + "\n", encoding="utf-8")


def plot(path: Path, scenario: Scenario, results: Sequence[SimResult], trace: str) -> None:
    """One PNG per trace: arrival rate, GPUs in use per controller, thresholds of our policy."""
    plt = pyplot()

    runs = [r for r in results if r.trace == trace]
    if not runs:
        raise ValueError(f"no results for trace {trace!r}")
    gpus = {t.name: t.gpus_per_replica for t in scenario.tiers}
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    first = runs[0].timeline
    minutes = [p.time / 60 for p in first]
    axes[0].plot(minutes, [p.arrival_rate for p in first], color="black", linewidth=0.8)
    axes[0].set_ylabel("arrivals / s")
    axes[0].set_title(
        f"trace {trace}: GPU-hours and SLO attainment (TTFT <= {scenario.slo_seconds}s)"
    )
    for r in runs:
        label = f"{r.controller}: {r.gpu_hours:.1f} GPU-h, SLO {r.slo_attainment * 100:.1f}%"
        axes[1].plot(
            [p.time / 60 for p in r.timeline],
            [sum(n * gpus[t] for t, n in p.replicas.items()) for p in r.timeline],
            label=label,
            linewidth=1.0,
        )
        axes[2].plot(
            [p.time / 60 for p in r.timeline],
            [max((v or 0.0) for v in p.ttft_p90.values()) for p in r.timeline],
            label=r.controller,
            linewidth=0.8,
        )
    axes[1].set_ylabel("GPUs asked for")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].set_ylabel("worst tier TTFT p90 (s)")
    axes[2].set_yscale("symlog", linthresh=1.0)
    axes[2].axhline(scenario.slo_seconds, color="grey", linestyle="--", linewidth=0.8)
    axes[2].legend(loc="upper left", fontsize=8)
    ours = next((r for r in runs if r.controller == "zeta-router"), None)
    if ours is not None:
        for ctx in scenario.contexts:
            axes[3].plot(
                [p.time / 60 for p in ours.timeline],
                [p.thresholds[ctx.name][-1] for p in ours.timeline],
                label=f"{ctx.name} (top cut point)",
                linewidth=1.0,
            )
        axes[3].legend(loc="upper left", fontsize=8)
    axes[3].set_ylabel("threshold (zeta-router)")
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
