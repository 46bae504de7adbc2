"""The spend cap of external tiers (pure): pause a tier whose estimated spend rate is above its
``maxCostPerHour``, resume it once the estimate is back under ``RESUME_SHARE`` of the cap and it
has been paused for at least a metrics window; see the package docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from zeta_router.autoscale.policy.config import PolicyConfig
from zeta_router.autoscale.policy.decision import Change
from zeta_router.autoscale.policy.replicas import fmt

RESUME_SHARE = 0.9
"""A paused tier resumes once its estimated spend per hour is under this share of its cap."""


@dataclass(frozen=True)
class SpendOutcome:
    paused: dict[str, float]
    """Paused external tiers and since when."""
    changes: list[Change]


def decide_spend(
    config: PolicyConfig,
    spend_per_hour: Mapping[str, float] | None,
    paused: Mapping[str, float],
    now: float,
    notes: list[str],
) -> SpendOutcome:
    """Which external tiers are paused after this interval. ``spend_per_hour``: the estimate
    per tier (None, or a tier absent: no data, which changes nothing, so a tier is never paused
    on no data and a paused one stays paused until data says it may resume). A tier paused
    whose cap is gone resumes at once."""
    spend = spend_per_hour or {}
    out = dict(paused)
    changes: list[Change] = []
    for tier in sorted(set(paused) - set(config.spend_caps)):
        del out[tier]
        changes.append(_change(tier, "up", 0.0, 0.0, f"tier {tier}: resumed: no spend cap"))
    window = config.metrics_window_seconds
    for tier, cap in config.spend_caps.items():
        rate = spend.get(tier)
        if rate is None:
            if tier in out:
                notes.append(f"tier {tier}: no spend estimate; staying paused")
            continue
        if tier not in out:
            if rate > cap:
                out[tier] = now
                changes.append(
                    _change(
                        tier,
                        "down",
                        rate,
                        cap,
                        f"tier {tier}: paused: spend {fmt(rate)}/h > maxCostPerHour {fmt(cap)}",
                    )
                )
            continue
        held = now - out[tier]
        if rate >= cap * RESUME_SHARE:
            notes.append(
                f"tier {tier}: paused, spend {fmt(rate)}/h not yet under "
                f"{fmt(cap * RESUME_SHARE)} ({RESUME_SHARE:.0%} of maxCostPerHour)"
            )
        elif held < window:
            notes.append(
                f"tier {tier}: paused for {held:.0f}s of the {window:.0f}s the estimate's "
                "window needs before resuming"
            )
        else:
            del out[tier]
            changes.append(
                _change(
                    tier,
                    "up",
                    rate,
                    cap,
                    f"tier {tier}: resumed: spend {fmt(rate)}/h < {fmt(cap * RESUME_SHARE)} "
                    f"({RESUME_SHARE:.0%} of maxCostPerHour {fmt(cap)})",
                )
            )
    return SpendOutcome(out, changes)


def _change(tier: str, direction: str, rate: float, cap: float, reason: str) -> Change:
    return Change(
        kind="spend",
        target=tier,
        direction="down" if direction == "down" else "up",
        old=(rate,),
        new=(cap,),
        reason=reason,
    )
