"""Presenting routing-quality figures: a plain-text table and a PNG plot of PGR."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from zeta_router.plotting import pyplot
from zeta_router.quality.metrics import Curve, Summary


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def table(summaries: Sequence[Summary]) -> str:
    """One row per scorer: APGR, CPT at each level, accuracy at each strong share."""
    if not summaries:
        return ""
    levels = list(summaries[0].cpt)
    shares = list(summaries[0].accuracy_at)
    header = (
        ["scorer", "APGR"]
        + [f"CPT({100 * lvl:g}%)" for lvl in levels]
        + [f"acc@{100 * s:g}%" for s in shares]
    )
    rows = [
        [s.name, f"{s.apgr:.3f}"]
        + [_pct(s.cpt[lvl]) for lvl in levels]
        + [_pct(s.accuracy_at[sh]) for sh in shares]
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def plot(curves: Mapping[str, Curve], path: Path, title: str) -> None:
    """PGR against strong-call share, one line per scorer, written as a PNG."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=120)
    try:
        for name, c in curves.items():
            style = {"random": ":", "oracle": "--"}.get(name, "-")
            ax.plot(100 * c.x, c.pgr, style, label=f"{name} (APGR {c.apgr():.3f})", linewidth=1.6)
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.axhline(0.5, color="grey", linewidth=0.4, linestyle=":")
        ax.set_xlabel("strong (large-tier) calls, % of prompts")
        ax.set_ylabel("performance gap recovered (PGR)")
        ax.set_xlim(0, 100)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
