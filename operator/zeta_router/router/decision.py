"""The routing decision: from a request's headers and body and the configuration in use to a
context, a score and a tier (and whether to shadow-sample it).

Nothing here does I/O or awaits: a decision is computed in one go, and every way it can fail is
an :class:`ApiError` for the client (unknown context, unknown or forbidden tier).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeta_router.router.config import Context, RuntimeConfig, Tier
from zeta_router.router.errors import ApiError
from zeta_router.router.stickiness import SessionStore
from zeta_router.scoring import features


@dataclass(slots=True)
class Decision:
    request_id: str
    context: Context
    score: float
    tier: int  # index into config.tiers
    forced: bool
    requested_model: str
    stream: bool
    shadow: bool = False
    shadow_text: list[str] = field(default_factory=list)
    served: Tier | None = None


def decide(
    headers: Mapping[str, str],
    body: dict[str, Any],
    cfg: RuntimeConfig,
    sessions: SessionStore,
    rand: random.Random,
    now: float,
) -> Decision:
    requested = body.get("model") or cfg.router_name
    context = context_for(headers, requested, cfg)
    score = context.scorer.score(features.extract(body))
    tier = context.selector.select(score)
    forced_name = headers.get("X-Zeta-Tier")
    forced = forced_name is not None
    if forced_name is not None:
        if not cfg.source.allow_force_tier:
            raise ApiError(
                403,
                "forcing a tier with X-Zeta-Tier is disabled by the routing config "
                "(allowForceTier: false)",
                code="force_tier_disabled",
                param="X-Zeta-Tier",
            )
        forced_tier = cfg.tier_by_name.get(forced_name.strip())
        if forced_tier is None:
            raise ApiError(
                400,
                f"unknown tier {forced_name!r} in X-Zeta-Tier; tiers: "
                + ", ".join(t.name for t in cfg.tiers),
                code="unknown_tier",
                param="X-Zeta-Tier",
            )
        tier = forced_tier.index
    else:
        session = headers.get("X-Zeta-Session") or body.get("user")
        # A session's floor may predate a reload that removed tiers.
        tier = min(sessions.apply(session, tier, now), len(cfg.tiers) - 1)
    shadow = (
        not forced
        and cfg.source.shadow_sample_rate > 0.0
        and tier < len(cfg.tiers) - 1
        and rand.random() < cfg.source.shadow_sample_rate
    )
    return Decision(
        request_id=request_id(headers),
        context=context,
        score=score,
        tier=tier,
        forced=forced,
        requested_model=requested,
        stream=body.get("stream") is True,
        shadow=shadow,
    )


def context_for(headers: Mapping[str, str], model: str, cfg: RuntimeConfig) -> Context:
    """The request's context: header ``X-Zeta-Context``, else ``<router>/<context>`` as the
    model name, else the default context."""
    name = headers.get("X-Zeta-Context")
    param = "X-Zeta-Context"
    if name is None:
        prefix = cfg.router_name + "/"
        if model.startswith(prefix):
            name, param = model[len(prefix) :], "model"
        else:
            return cfg.contexts[cfg.default_context]
    ctx = cfg.contexts.get(name.strip())
    if ctx is None:
        raise ApiError(
            400,
            f"unknown context {name!r}; valid contexts: " + ", ".join(cfg.contexts),
            code="unknown_context",
            param=param,
        )
    return ctx


def request_id(headers: Mapping[str, str]) -> str:
    rid = headers.get("X-Request-Id", "")
    if 0 < len(rid) <= 128 and rid.isprintable() and rid.isascii():
        return rid
    return uuid.uuid4().hex
