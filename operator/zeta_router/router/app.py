"""The router's state that outlives a request: the configuration in use, the upstream clients
and breakers, sessions, recent requests (for feedback), shadow sampling and metrics.

What a request goes through lives elsewhere, one module per step: :mod:`.decision` (headers,
body, config -> context, score, tier), :mod:`.forward` (to the tier, with failover),
:mod:`.relay` (the answer back to the client), :mod:`.shadow` (sampling), and :mod:`.routes`
(the HTTP endpoints, which tie the steps together).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.decision import Decision, decide
from zeta_router.router.errors import ApiError
from zeta_router.router.forward import Forwarder
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.shadow import ShadowSampler
from zeta_router.router.stickiness import SessionStore
from zeta_router.router.ttlcache import TTLCache
from zeta_router.router.upstream import Upstreams
from zeta_router.scoring import features

log = logging.getLogger("zeta_router.router")
access_log = logging.getLogger("zeta_router.router.access")

RECENT_REQUESTS = 100_000
RECENT_TTL_SECONDS = 3600.0


@dataclass
class Options:
    """Process-level settings from the command line (not part of the routing file)."""

    log_prompts: bool = False
    access_log: bool = False
    shadow_log: Path | None = None
    shadow_log_max_bytes: int = 10 * 1024 * 1024
    seed: int | None = None


class Router:
    def __init__(
        self,
        config: RuntimeConfig,
        options: Options | None = None,
        metrics: RouterMetrics | None = None,
    ) -> None:
        self.config = config
        self.options = options or Options()
        self.metrics = metrics or RouterMetrics()
        self.metrics.config_generation.set(config.generation)
        self._export_thresholds(config)
        st = config.source.stickiness
        self.sessions = SessionStore(st.max_sessions, st.ttl_seconds)
        self.recent: TTLCache[tuple[str, str]] = TTLCache(RECENT_REQUESTS, RECENT_TTL_SECONDS)
        self.upstreams: Upstreams | None = None  # created on the running loop (startup)
        self.forwarder: Forwarder | None = None
        self.draining = False
        self._random = random.Random(self.options.seed)
        self.shadow = ShadowSampler(
            self.metrics,
            self.options.shadow_log,
            self.options.shadow_log_max_bytes,
            self.options.log_prompts,
        )

    # -- configuration ---------------------------------------------------------------------

    def _export_thresholds(self, config: RuntimeConfig) -> None:
        self.metrics.set_thresholds(
            {c.name: list(c.selector.cuts) for c in config.contexts.values()},
            [t.name for t in config.tiers],
        )

    def set_config(self, config: RuntimeConfig) -> None:
        old = self.config
        self.config = config
        st = config.source.stickiness
        self.sessions.resize(st.max_sessions, st.ttl_seconds)
        if self.upstreams is not None:
            self.upstreams.reconfigure(config)
        self.metrics.config_generation.set(config.generation)
        self._export_thresholds(config)
        log.info(
            "routing config applied",
            extra={
                "event": "config_applied",
                "generation": config.generation,
                "previous_generation": old.generation,
                "tiers": [t.name for t in config.tiers],
                "thresholds": {c.name: list(c.selector.cuts) for c in config.contexts.values()},
            },
        )

    def config_error(self, reason: str) -> None:
        self.metrics.config_errors.inc()
        log.error(
            "routing config rejected; keeping the last good one",
            extra={
                "event": "config_rejected",
                "reason": reason,
                "generation": self.config.generation,
            },
        )

    async def start(self) -> None:
        self.upstreams = Upstreams(self.config)
        self.forwarder = Forwarder(self.upstreams, self.metrics, self._answered)

    async def stop(self) -> None:
        await self.shadow.stop()
        if self.upstreams is not None:
            await self.upstreams.close()

    # -- requests --------------------------------------------------------------------------

    def decide(self, request: web.Request, body: dict[str, Any], cfg: RuntimeConfig) -> Decision:
        return decide(request.headers, body, cfg, self.sessions, self._random, time.monotonic())

    def _answered(self, cfg: RuntimeConfig, d: Decision, body: dict[str, Any], tier: Tier) -> None:
        assert self.upstreams is not None
        self.shadow.start(self.upstreams, cfg, d, body, tier)

    def finished(self, d: Decision) -> None:
        """Remember an answered request for feedback."""
        if d.served is not None:
            self.recent.put(d.request_id, (d.context.name, d.served.name), time.monotonic())

    def models(self) -> dict[str, Any]:
        cfg = self.config
        created = 0
        ids = [cfg.router_name] + [f"{cfg.router_name}/{c}" for c in cfg.contexts]
        return {
            "object": "list",
            "data": [
                {"id": i, "object": "model", "created": created, "owned_by": "zeta-router"}
                for i in ids
            ],
        }

    def feedback(self, rid: str, score: float, label: str | None) -> dict[str, Any]:
        known = self.recent.get(rid, time.monotonic())
        if known is None:
            raise ApiError(
                404,
                f"no recent request with id {rid!r} (ids are kept for {RECENT_TTL_SECONDS:g}s)",
                code="request_not_found",
                param="request_id",
            )
        context, tier = known
        self.metrics.observe(self.metrics.feedback_score, float(score), context, tier)
        log.info(
            "feedback recorded",
            extra={
                "event": "feedback",
                "request_id": rid,
                "context": context,
                "tier": tier,
                "score": score,
                "label": label,
            },
        )
        return {
            "object": "feedback",
            "request_id": rid,
            "context": context,
            "tier": tier,
            "score": score,
        }

    async def ready(self) -> tuple[bool, dict[str, bool]]:
        if self.draining or self.upstreams is None:
            return False, {}
        tiers = self.config.tiers
        results = await asyncio.gather(*(self.upstreams.probe(t) for t in tiers))
        states = {t.name: ok for t, ok in zip(tiers, results, strict=True)}
        return any(results), states

    def access(
        self,
        request: web.Request,
        d: Decision,
        body: dict[str, Any],
        code: int,
        t0: float,
    ) -> None:
        extra: dict[str, Any] = {
            "event": "request",
            "request_id": d.request_id,
            "path": request.path,
            "status": code,
            "context": d.context.name,
            "score": round(d.score, 4),
            "decided_tier": self.config.tiers[d.tier].name
            if d.tier < len(self.config.tiers)
            else None,
            "tier": d.served.name if d.served else None,
            "stream": d.stream,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 2),
        }
        if self.options.log_prompts:
            extra["prompt"] = features.request_text(body)[0]
        access_log.info("request", extra=extra)
