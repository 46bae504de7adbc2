"""Tiers asleep at zero replicas, as the router handles them.

The operator marks a tier ``asleep`` in the routing config while it has no replica asked for, or
none ready yet after a wake (``render.configmap.asleep_tiers``). No request is sent there. Each
request whose decided tier sleeps is counted in ``zeta_router_wake_requests_total{tier}``: the
operator reads that count from every router's admin port (and the control loop from
Prometheus) and scales the tier from zero. The request itself is answered per its context's
``whenAsleep``: at once on the nearest tier that has replicas (fallback, the default: larger
first, as failover goes), or held up to ``waitSeconds`` until a reloaded config says the tier
is awake, then answered there (or, at the bound, by fallback). Either way the answer carries
``X-Zeta-Tier-Asleep: <tier>`` when it did not come from the tier it wanted.

Pure except :func:`wait_awake`, which only reads the current config while it sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.errors import ApiError

#: Response header naming the sleeping tier a request wanted (answered on another one).
ASLEEP_HEADER = "x-zeta-tier-asleep"
#: How often a held request looks at the current config (a reload swaps it).
POLL_SECONDS = 0.1
#: Retry-After of a request pinned to a sleeping tier (it is waking meanwhile).
RETRY_AFTER_SECONDS = 10
#: Retry-After of a request pinned to a paused external tier (it stays paused a window at least).
PAUSED_RETRY_AFTER_SECONDS = 60


def asleep_tier(cfg: RuntimeConfig, index: int) -> Tier | None:
    tier = cfg.tiers[index]
    return tier if tier.asleep else None


def _order_without(
    order: Sequence[int], cfg: RuntimeConfig, fallback: bool, kept: list[int]
) -> list[int]:
    """``kept`` (``order`` less the tiers left out), or when that is empty and ``fallback``
    holds, the nearest tier to the decided one (larger first) that is neither asleep nor
    paused; empty when there is none."""
    if kept or not fallback or not order:
        return kept
    chosen, n = order[0], len(cfg.tiers)
    nearest = [*range(chosen + 1, n), *range(chosen - 1, -1, -1)]
    return [i for i in nearest if not cfg.tiers[i].asleep and not cfg.tiers[i].paused][:1]


def awake_order(order: Sequence[int], cfg: RuntimeConfig, fallback: bool = True) -> list[int]:
    """The attempt order without sleeping tiers. When that leaves none because the decided tier
    (``order[0]``) sleeps and failover is off, the nearest awake tier (larger first) answers
    instead: a sleeping tier did not fail, the request just has no replica there (unless
    ``fallback`` is False: a request pinned to the tier). :class:`ApiError` (503) when no tier
    is left."""
    out = _order_without(order, cfg, fallback, [i for i in order if not cfg.tiers[i].asleep])
    if not out:
        names = ", ".join(cfg.tiers[i].name for i in order)
        raise ApiError(
            503,
            f"tier {names} is asleep at zero replicas and is waking up; retry shortly",
            code="tier_asleep",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return out


def unpaused_order(order: Sequence[int], cfg: RuntimeConfig, fallback: bool = True) -> list[int]:
    """The attempt order without external tiers paused for their spend cap (the control loop
    marks them; see docs/autoscaling.md). When that leaves none and ``fallback`` holds, the
    nearest tier that is neither paused nor asleep (larger first) answers instead; a request
    pinned to a paused tier (``fallback`` False) gets :class:`ApiError` 503 ``tier_paused``."""
    out = _order_without(order, cfg, fallback, [i for i in order if not cfg.tiers[i].paused])
    if not out:
        names = ", ".join(cfg.tiers[i].name for i in order)
        raise ApiError(
            503,
            f"tier {names} is paused: its estimated spend is over its maxCostPerHour; retry "
            "later, or without X-Zeta-Tier",
            code="tier_paused",
            headers={"Retry-After": str(PAUSED_RETRY_AFTER_SECONDS)},
        )
    return out


def same_tiers(a: RuntimeConfig, b: RuntimeConfig) -> bool:
    """Whether a decision made with ``a`` (a tier index) means the same tier in ``b``."""
    return [t.name for t in a.tiers] == [t.name for t in b.tiers]


async def wait_awake(
    current: Callable[[], RuntimeConfig], tier: str, seconds: float
) -> RuntimeConfig | None:
    """The first current config in which ``tier`` is awake, looked at every
    :data:`POLL_SECONDS` for up to ``seconds``; None when it still sleeps then (or is gone)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        cfg = current()
        t = cfg.tier_by_name.get(tier)
        if t is None:
            return None
        if not t.asleep:
            return cfg
        left = deadline - loop.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(POLL_SECONDS, left))
