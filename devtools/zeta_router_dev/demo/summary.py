"""The end of a demo run: a summary (JSON for machines, text for people) and a PNG with four
panels (answered requests per tier over time, latency of each request, replicas per tier,
thresholds per context). ``build_summary`` and ``format_text`` are pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zeta_router.plotting import pyplot
from zeta_router_dev.demo.prompts import LEVELS
from zeta_router_dev.demo.stats import (
    ClusterSample,
    RequestRecord,
    aggregate,
    completions_per_interval,
)

SUMMARY_JSON = "summary.json"
SUMMARY_TEXT = "summary.txt"
PNG = "demo.png"
REQUESTS_JSONL = "requests.jsonl"


def _level_order(level: str) -> tuple[int, str]:
    return (LEVELS.index(level) if level in LEVELS else len(LEVELS), level)


def _round(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(v, digits)


def build_summary(
    records: Sequence[RequestRecord],
    samples: Sequence[ClusterSample],
    tiers: Sequence[str],
    *,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a run showed, as JSON-ready data; ``meta`` is merged in (router name,
    startup timings, processes, ...)."""
    agg = aggregate(records, tiers)
    first = samples[0] if samples else None
    last = samples[-1] if samples else None
    decisions: list[str] = []
    for s in samples:
        # "none: no change" is the loop saying it looked and left things alone.
        if not s.last_decision or s.last_decision.startswith("none:"):
            continue
        if not decisions or decisions[-1] != s.last_decision:
            decisions.append(s.last_decision)
    max_replicas = {t: max((s.replicas.get(t, 0) for s in samples), default=0) for t in tiers}
    summary: dict[str, Any] = {
        "requests": {
            "total": agg.total,
            "answered": agg.ok,
            "errors": agg.errors,
            "by_tier": agg.by_tier,
            "by_context": agg.by_context_tier,
            "by_difficulty": {
                lvl: agg.by_level_tier[lvl] for lvl in sorted(agg.by_level_tier, key=_level_order)
            },
            "throughput_rps": round(agg.throughput, 3),
            "completion_tokens": agg.completion_tokens,
            "error_samples": list(agg.error_samples),
        },
        "latency_s": {
            "all": agg.latency.to_json(),
            "by_tier": {t: s.to_json() for t, s in agg.latency_by_tier.items()},
        },
        "thresholds": {
            "start": dict(first.thresholds) if first else {},
            "end": dict(last.thresholds) if last else {},
        },
        "replicas": {
            "start": dict(first.replicas) if first else {},
            "end": dict(last.replicas) if last else {},
            "max": max_replicas,
        },
        "routing_generation": last.generation if last else 0,
        "conditions": dict(last.conditions) if last else {},
        "decisions": decisions,
    }
    summary.update(meta or {})
    return summary


def format_text(summary: Mapping[str, Any]) -> str:
    """The summary for people (what the demo prints at the end)."""
    req = summary["requests"]
    lat = summary["latency_s"]
    lines = [
        f"zeta-router demo: {summary.get('router', '?')} in {summary.get('namespace', '?')}",
        f"  workload: {summary.get('duration_s', 0):.0f} s, {req['answered']} answered, "
        f"{req['errors']} errors, {req['throughput_rps']:.2f} req/s, "
        f"{req['completion_tokens']} tokens generated",
    ]
    if summary.get("node"):
        lines.append(f"  node: {summary['node']}")
    if summary.get("startup_s") is not None:
        lines.append(f"  startup: {summary['startup_s']:.1f} s")

    def fmt(stats: Mapping[str, Any]) -> str:
        def one(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f} s"

        return f"p50 {one(stats.get('p50'))}, p90 {one(stats.get('p90'))}"

    lines.append(f"  latency: {fmt(lat['all'])}")
    lines.append("  per tier:")
    for tier, count in req["by_tier"].items():
        share = count / req["answered"] if req["answered"] else 0.0
        t_lat = lat["by_tier"].get(tier, {})
        lines.append(f"    {tier:<8} {count:>5} requests ({share:.0%}), {fmt(t_lat)}")
    lines.append("  per context (requests per tier; thresholds at start -> end):")
    start = summary["thresholds"]["start"]
    end = summary["thresholds"]["end"]
    for ctx, counts in sorted(req["by_context"].items()):
        per = ", ".join(f"{t} {n}" for t, n in counts.items())
        cut = f"{_cuts(start.get(ctx))} -> {_cuts(end.get(ctx))}"
        lines.append(f"    {ctx:<8} {per}; thresholds {cut}")
    lines.append("  per difficulty:")
    for level, counts in req["by_difficulty"].items():
        lines.append(f"    {level:<8} " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    rep = summary["replicas"]
    lines.append(
        "  replicas (start -> end, max): "
        + ", ".join(
            f"{t} {rep['start'].get(t, '-')} -> {rep['end'].get(t, '-')} ({rep['max'][t]})"
            for t in rep["max"]
        )
    )
    if summary["decisions"]:
        lines.append("  control loop decisions:")
        lines += [f"    {d}" for d in summary["decisions"][-8:]]
    if req["error_samples"]:
        lines.append("  errors (first kinds):")
        lines += [f"    {e}" for e in req["error_samples"]]
    files = summary.get("files") or {}
    if files:
        lines.append("  files: " + ", ".join(str(v) for v in files.values()))
    return "\n".join(lines) + "\n"


def _cuts(cuts: Sequence[float] | None) -> str:
    return "-" if not cuts else "/".join(f"{c:.2f}" for c in cuts)


def write_png(
    records: Sequence[RequestRecord],
    samples: Sequence[ClusterSample],
    tiers: Sequence[str],
    path: Path,
    title: str = "zeta-router demo",
) -> Path:
    """The run as a 2x2 figure (matplotlib, Agg backend: no display needed)."""
    plt = pyplot()

    agg = aggregate(records, tiers)
    end = max([r.end for r in records] + [s.time for s in samples] + [1.0])
    width = max(2.0, end / 30)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), constrained_layout=True)
    colors = {t: f"C{i}" for i, t in enumerate(tiers)}

    ax = axes[0][0]
    starts, counts = completions_per_interval(records, width, end)
    bottom = [0] * len(starts)
    for tier in tiers:
        values = counts.get(tier, [0] * len(starts))
        ax.bar(
            starts,
            values,
            width=width * 0.9,
            bottom=bottom,
            align="edge",
            color=colors[tier],
            label=f"{tier} ({agg.by_tier.get(tier, 0)})",
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_title(f"answered requests per {width:.0f} s, by tier")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper left")

    ax = axes[0][1]
    for tier in tiers:
        pts = [(r.end, r.latency) for r in records if r.ok and r.tier == tier]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=10, color=colors[tier], label=tier)
    failed = [(r.end, r.latency) for r in records if not r.ok]
    if failed:
        ax.scatter(*zip(*failed, strict=True), s=14, marker="x", color="red", label="error")
    ax.set_title(f"latency per request (p50 {_fmt(agg.latency.p50)}, p90 {_fmt(agg.latency.p90)})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("seconds")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")

    ax = axes[1][0]
    times = [s.time for s in samples]
    for tier in tiers:
        ys = [s.replicas.get(tier, 0) for s in samples]
        if times:
            ax.step(times, ys, where="post", color=colors[tier], label=f"{tier} desired")
    ax.set_title("replicas per tier (Deployments)")
    ax.set_xlabel("seconds")
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")

    ax = axes[1][1]
    contexts = sorted({c for s in samples for c in s.thresholds})
    for i, ctx in enumerate(contexts):
        pts = [(s.time, s.thresholds[ctx][0]) for s in samples if s.thresholds.get(ctx)]
        if pts:
            ax.step(
                [p[0] for p in pts],
                [p[1] for p in pts],
                where="post",
                color=f"C{i + len(tiers)}",
                label=ctx,
            )
    ax.set_title("threshold per context (routing ConfigMap)")
    ax.set_xlabel("seconds")
    ax.set_ylim(0, 1)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")

    fig.suptitle(
        f"{title}: {agg.ok} requests, "
        + ", ".join(f"{t} {agg.by_tier.get(t, 0)}" for t in tiers)
        + f", {agg.errors} errors"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def write_outputs(
    output: Path,
    summary: dict[str, Any],
    records: Sequence[RequestRecord],
    samples: Sequence[ClusterSample],
    tiers: Sequence[str],
) -> dict[str, Path]:
    """Write summary.json, summary.txt, requests.jsonl and demo.png under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": output / SUMMARY_JSON,
        "text": output / SUMMARY_TEXT,
        "png": output / PNG,
        "requests": output / REQUESTS_JSONL,
    }
    summary["files"] = {k: str(v) for k, v in paths.items()}
    write_png(
        records,
        samples,
        tiers,
        paths["png"],
        title=f"zeta-router demo ({summary.get('router', '')})",
    )
    with paths["requests"].open("w") as f:
        for r in records:
            f.write(json.dumps(_record_json(r)) + "\n")
    paths["text"].write_text(format_text(summary))
    paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def _record_json(r: RequestRecord) -> dict[str, Any]:
    return {
        "start": _round(r.start),
        "latency": _round(r.latency),
        "context": r.context,
        "difficulty": r.level,
        "tier": r.tier,
        "score": _round(r.score),
        "ok": r.ok,
        "error": r.error or None,
        "completion_tokens": r.completion_tokens,
        "router": r.router,
    }
