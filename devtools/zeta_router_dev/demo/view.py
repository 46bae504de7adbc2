"""The live terminal view (rich): one pure function from the demo's figures to a renderable,
redrawn a few times a second by ``rich.live.Live``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from zeta_router_dev.demo.prompts import LEVELS
from zeta_router_dev.demo.stats import Aggregate, ClusterSample


@dataclass(frozen=True)
class ViewState:
    elapsed: float
    duration: float | None
    """None: runs until Ctrl-C."""
    tiers: Sequence[str]
    total: Aggregate
    recent: Aggregate
    """The last ``recent_window`` seconds."""
    recent_window: float
    sample: ClusterSample | None
    title: str = "zeta-router demo"
    endpoints: Mapping[str, str] = field(default_factory=dict)
    in_flight: int = 0
    note: str = ""


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def clock(value: float) -> str:
    v = max(0, int(value))
    return f"{v // 60:02d}:{v % 60:02d}"


def _flag(conditions: Mapping[str, str], kind: str) -> Text:
    status = conditions.get(kind)
    if status == "True":
        return Text(f"{kind} ✓", style="green")
    if status == "False":
        return Text(f"{kind} ✗", style="red")
    return Text(f"{kind} ?", style="dim")


def tier_table(state: ViewState) -> Table:
    t = Table(
        box=box.SIMPLE_HEAD, expand=True, title="tiers", title_justify="left", title_style="bold"
    )
    for col in ("tier", "replicas", "requests", "share", "p50", "p90"):
        t.add_column(col, justify="left" if col == "tier" else "right")
    t.add_column(f"last {state.recent_window:g} s", justify="right")
    sample = state.sample
    for tier in state.tiers:
        if sample is not None and tier in sample.replicas:
            replicas = f"{sample.ready.get(tier, 0)}/{sample.replicas[tier]}"
        else:
            replicas = "-"
        lat = state.total.latency_by_tier.get(tier)
        t.add_row(
            tier,
            replicas,
            str(state.total.by_tier.get(tier, 0)),
            f"{state.total.share(tier):.0%}",
            seconds(lat.p50 if lat else None),
            seconds(lat.p90 if lat else None),
            str(state.recent.by_tier.get(tier, 0)),
        )
    return t


def context_table(state: ViewState) -> Table:
    t = Table(
        box=box.SIMPLE_HEAD, expand=True, title="contexts", title_justify="left", title_style="bold"
    )
    t.add_column("context")
    t.add_column("threshold", justify="right")
    for tier in state.tiers:
        t.add_column(f"→ {tier}", justify="right")
    thresholds = state.sample.thresholds if state.sample is not None else {}
    # Contexts with traffic; before any, every context the routers know.
    names = sorted(state.total.by_context_tier or thresholds)
    for ctx in names:
        counts = state.total.by_context_tier.get(ctx, {})
        cuts = thresholds.get(ctx)
        t.add_row(
            ctx,
            ", ".join(f"{c:.2f}" for c in cuts) if cuts else "-",
            *(str(counts.get(tier, 0)) for tier in state.tiers),
        )
    return t


def level_table(state: ViewState) -> Table:
    t = Table(
        box=box.SIMPLE_HEAD,
        expand=True,
        title="by difficulty",
        title_justify="left",
        title_style="bold",
    )
    t.add_column("prompts")
    for tier in state.tiers:
        t.add_column(f"→ {tier}", justify="right")
    for level in LEVELS:
        counts = state.total.by_level_tier.get(level, {})
        t.add_row(level, *(str(counts.get(tier, 0)) for tier in state.tiers))
    return t


def render(state: ViewState) -> RenderableType:
    total = state.total
    head = Text()
    limit = f" / {clock(state.duration)}" if state.duration else ""
    head.append(f"{clock(state.elapsed)}{limit}  ", style="bold")
    head.append(
        f"{total.ok} answered, {total.errors} errors, {total.throughput:.2f} req/s, "
        f"{state.in_flight} in flight, p50 {seconds(total.latency.p50)}, "
        f"p90 {seconds(total.latency.p90)}"
    )
    flags = Text("  ")
    conditions = state.sample.conditions if state.sample is not None else {}
    for kind in ("Ready", "MetricsAvailable"):
        flags.append_text(_flag(conditions, kind))
        flags.append("  ")
    if state.sample is not None:
        flags.append(f"routing generation {state.sample.generation}", style="dim")
    side_by_side = Table.grid(expand=True, padding=(0, 2))
    side_by_side.add_column(ratio=3)
    side_by_side.add_column(ratio=2)
    side_by_side.add_row(context_table(state), level_table(state))
    lines: list[RenderableType] = [head, flags, tier_table(state), side_by_side]
    decision = state.sample.last_decision if state.sample is not None else ""
    if len(decision) > 240:
        decision = decision[:239] + "…"
    lines.append(Text(f"control loop: {decision or 'no decision yet'}", style="cyan"))
    if total.error_samples:
        lines.append(Text(f"last error: {total.error_samples[-1]}", style="red"))
    for name, url in state.endpoints.items():
        lines.append(Text(f"{name}: {url}", style="dim"))
    if state.note:
        lines.append(Text(state.note, style="yellow"))
    return Panel(Group(*lines), title=state.title, border_style="blue")


def headless_line(state: ViewState) -> str:
    """One line of progress for --headless runs."""
    by_tier = ", ".join(f"{t} {state.total.by_tier.get(t, 0)}" for t in state.tiers)
    replicas = ""
    if state.sample is not None and state.sample.replicas:
        replicas = " replicas " + ", ".join(
            f"{t} {state.sample.replicas.get(t, 0)}" for t in state.tiers
        )
    return (
        f"[{clock(state.elapsed)}] answered {state.total.ok} ({by_tier}), "
        f"errors {state.total.errors}, p50 {seconds(state.total.latency.p50)}{replicas}"
    )
