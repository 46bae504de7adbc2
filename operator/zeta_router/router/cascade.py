"""A cascade context (``mode: cascade``, opt-in): the smallest tier answers first; when the
answer-side judge (``scoring.judge``, no model call) doubts that answer, the request goes to the
largest tier, whose answer the client gets.

Only non-streamed requests cascade: the small tier's answer must be whole to be judged, and a
non-streamed answer is already read whole before it is relayed (streamed requests of a cascade
context are routed by their score, as in ``route`` mode). The cost: an escalated request waits
for the small tier's whole answer before the large tier starts, and pays both calls. Every
judged request is counted (``zeta_router_cascade_total``), its doubt observed
(``zeta_router_cascade_doubt``), and, while its context learns, kept as a label for the
operator's learner (source ``cascade``). See docs/routing-quality.md, "The small tier's answer
as a signal", for when it pays.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from zeta_router.router.config import RuntimeConfig
from zeta_router.router.decision import Decision
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.shadow import answer_text
from zeta_router.scoring.features import request_text
from zeta_router.scoring.judge import default_judge

Forward = Callable[[Decision], Awaitable[tuple[web.StreamResponse, float]]]
OnJudged = Callable[[Decision, float], None]


def cascades(cfg: RuntimeConfig, d: Decision) -> bool:
    """Whether ``d`` goes through the cascade: a cascade context, a non-streamed request, not
    pinned to a tier, and a tier below the largest that its conversation may still use."""
    return d.context.cascade and not d.stream and not d.forced and d.floor < len(cfg.tiers) - 1


def doubt_of(body: dict[str, Any], answer: bytes) -> float | None:
    """The judge's doubt of a non-streamed answer to ``body`` (None: no answer text in it)."""
    try:
        text = answer_text(json.loads(answer))
    except ValueError:
        return None
    if text is None:
        return None
    return default_judge().doubt(request_text(body)[0], text)


async def cascade(
    cfg: RuntimeConfig,
    d: Decision,
    body: dict[str, Any],
    forward: Forward,
    metrics: RouterMetrics,
    on_judged: OnJudged,
) -> tuple[web.StreamResponse, float]:
    """The smallest tier's answer (the smallest its conversation may use: stickiness holds),
    or the largest tier's when the judge doubts it."""
    small, large = cfg.tiers[d.floor], cfg.tiers[-1]
    d.tier, d.decided = small.index, small.name
    response, overhead = await forward(d)
    context = d.context.name
    if response.status != 200 or d.served is not small or not isinstance(response, web.Response):
        return response, overhead  # the small tier failed and another answered (or none did)
    t0 = time.perf_counter()
    body_bytes = response.body if isinstance(response.body, bytes) else b""
    doubt = doubt_of(body, body_bytes)
    overhead += time.perf_counter() - t0
    if doubt is None:
        metrics.cascaded(context, "unjudged")
        return response, overhead
    metrics.observe(metrics.cascade_doubt, doubt, context)
    on_judged(d, doubt)
    if doubt < d.context.escalate_above:
        metrics.cascaded(context, "kept")
        return response, overhead
    kept = (d.tier, d.decided, d.served, d.request_id)
    d.tier, d.decided, d.served = large.index, large.name, None
    escalated, extra = await forward(d)
    overhead += extra
    if escalated.status == 200 and d.served is not None:
        metrics.cascaded(context, "escalated")
        return escalated, overhead
    # The large tier failed: the small tier's answer is better than an error.
    metrics.cascaded(context, "escalation_failed")
    d.tier, d.decided, d.served, d.request_id = kept
    return response, overhead
