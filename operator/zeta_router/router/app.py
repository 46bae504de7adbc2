"""The router's state that outlives a request: the configuration in use, the upstream clients
and breakers, the key that signs request ids, shadow sampling and metrics.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.decision import Decision, decide
from zeta_router.router.errors import ApiError
from zeta_router.router.forward import Forwarder
from zeta_router.router.ids import InvalidTokenError, RequestInfo, Signer
from zeta_router.router.learning import RouterLearning
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.replicas import Replicas
from zeta_router.router.shadow import ShadowSampler
from zeta_router.router.ttlcache import TTLCache
from zeta_router.router.upstream import Upstreams
from zeta_router.scoring import features

log = logging.getLogger("zeta_router.router")
access_log = logging.getLogger("zeta_router.router.access")

#: How long after its answer a request id is accepted for feedback.
FEEDBACK_MAX_AGE_SECONDS = 24 * 3600.0
#: Ids issued this far in the future still count (clocks of replicas drift a little).
CLOCK_SKEW_SECONDS = 300.0
#: Feedback already recorded, per process, so that one id is not counted twice here.
FEEDBACK_SEEN = 100_000


@dataclass(frozen=True, slots=True)
class Feedback:
    """One accepted feedback post: what the request id says, and what the client said."""

    request: RequestInfo
    score: float
    label: str | None
    received_ms: int


#: Called with every accepted feedback (e.g. to keep a label for learning).
FeedbackSink = Callable[[Feedback], None]


@dataclass
class Options:
    """Process-level settings from the command line (not part of the routing file)."""

    log_prompts: bool = False
    access_log: bool = False
    shadow_log: Path | None = None
    shadow_log_max_bytes: int = 10 * 1024 * 1024
    seed: int | None = None
    #: Seconds a client has to send a request's whole body (after its headers).
    body_timeout: float = 30.0
    #: Connections this router may have open to each tier at once (requests beyond wait).
    tier_connections: int = 1024


class Router:
    def __init__(
        self,
        config: RuntimeConfig,
        options: Options | None = None,
        metrics: RouterMetrics | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.config = config
        self.signer = signer or Signer.random()
        self.options = options or Options()
        self.metrics = metrics or RouterMetrics()
        self.metrics.config_generation.set(config.generation)
        self.metrics.set_request_keys(self.signer.key_ids)
        self._export_thresholds(config)
        self.feedback_seen: TTLCache[bool] = TTLCache(FEEDBACK_SEEN, FEEDBACK_MAX_AGE_SECONDS)
        self.feedback_sinks: list[FeedbackSink] = []
        self.upstreams: Upstreams | None = None  # created on the running loop (startup)
        self.forwarder: Forwarder | None = None
        self._background: list[asyncio.Task[None]] = []
        self.draining = False
        self._random = random.Random(self.options.seed)
        self.learning = RouterLearning(self.metrics, self.options.seed)
        self.learning.configure(config)
        self.feedback_sinks.append(lambda event: self.learning.feedback(self.config, event))
        self.shadow = ShadowSampler(
            self.metrics,
            self.options.shadow_log,
            self.options.shadow_log_max_bytes,
            self.options.log_prompts,
            on_pair=self.learning.pair,
        )

    # -- configuration ---------------------------------------------------------------------

    def _export_thresholds(self, config: RuntimeConfig) -> None:
        self.metrics.set_thresholds(
            {c.name: list(c.selector.cuts) for c in config.contexts.values()},
            [t.name for t in config.tiers],
        )
        self.metrics.start_costs([t.name for t in config.tiers if t.external is not None])

    def set_config(self, config: RuntimeConfig) -> None:
        old = self.config
        self.config = config
        if self.upstreams is not None:
            self.upstreams.reconfigure(config)
        self.learning.configure(config)
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
        replicas = Replicas(self.config, self.metrics, seed=self.options.seed)
        # The first answer for the replicas' names before the first request: until a name
        # resolves it stands for itself (one replica), which would spoil the first picks.
        await replicas.resolve_all()
        self.upstreams = Upstreams(self.config, self.options.tier_connections, replicas)
        self.forwarder = Forwarder(self.upstreams, self.metrics, self.signer, self._answered)
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(replicas.resolve_loop()),
            loop.create_task(replicas.load_loop(self.upstreams.metrics_text)),
        ]

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        await self.shadow.stop()
        if self.upstreams is not None:
            await self.upstreams.close()

    # -- requests --------------------------------------------------------------------------

    def decide(self, request: web.Request, body: dict[str, Any], cfg: RuntimeConfig) -> Decision:
        now_ms = int(time.time() * 1000)
        return decide(request.headers, body, cfg, self.signer, self._random, now_ms)

    def _answered(self, cfg: RuntimeConfig, d: Decision, body: dict[str, Any], tier: Tier) -> None:
        """A tier answered ``d`` with 200: the learner's sample, and the shadow pair."""
        assert self.upstreams is not None
        self.learning.answered(d, body, tier)
        if d.shadow:
            self.shadow.start(self.upstreams, cfg, d, body, tier)

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

    def feedback(self, rid: str, score: float, label: str | None, now_ms: int) -> dict[str, Any]:
        """Record a client's score for an answered request. Whatever replica answered it, the
        id says what is needed (context, score, tiers, time): nothing is looked up."""
        try:
            info = self.signer.verify_request_id(rid)
        except InvalidTokenError as exc:
            raise ApiError(
                400,
                f"'request_id' is not a request id issued by this ZetaRouter ({exc}); use the "
                "x-request-id header of the answer",
                code="invalid_request_id",
                param="request_id",
            ) from None
        age = (now_ms - info.issued_ms) / 1000
        if age > FEEDBACK_MAX_AGE_SECONDS or age < -CLOCK_SKEW_SECONDS:
            raise ApiError(
                404,
                f"request {rid!r} is too old for feedback (ids are accepted for "
                f"{FEEDBACK_MAX_AGE_SECONDS:g}s after the answer)",
                code="request_expired",
                param="request_id",
            )
        if info.served is None:
            raise ApiError(
                400,
                "no tier answered that request, so there is no answer to score",
                code="request_not_answered",
                param="request_id",
            )
        key = info.request_key
        mono = time.monotonic()
        if self.feedback_seen.get(key, mono):
            raise ApiError(
                409,
                "feedback for that request was already recorded",
                code="feedback_duplicate",
                param="request_id",
            )
        self.feedback_seen.put(key, True, mono)
        self.metrics.observe(self.metrics.feedback_score, float(score), info.context, info.served)
        log.info(
            "feedback recorded",
            extra={
                "event": "feedback",
                "request_id": rid,
                "context": info.context,
                "tier": info.served,
                "decided_tier": info.decided,
                "routing_score": round(info.score, 4),
                "score": score,
                "label": label,
            },
        )
        event = Feedback(info, float(score), label, now_ms)
        for sink in self.feedback_sinks:
            try:
                sink(event)
            except Exception:  # one consumer's bug must not lose the client's feedback
                log.exception("feedback sink failed", extra={"event": "feedback_sink_failed"})
        return {
            "object": "feedback",
            "request_id": rid,
            "context": info.context,
            "tier": info.served,
            "decided_tier": info.decided,
            "score": score,
        }

    async def ready(self) -> tuple[bool, dict[str, bool], dict[str, str]]:
        """Whether a request would be served now: not draining, and at least one tier that
        answers its health endpoint and that its circuit breaker would let a request through
        to. Also each tier's verdict and its breaker's state."""
        if self.draining or self.upstreams is None:
            return False, {}, {}
        upstreams = self.upstreams
        tiers = self.config.tiers
        results = await asyncio.gather(*(upstreams.probe(t) for t in tiers))
        now = time.monotonic()
        breakers = {t.name: upstreams.breaker(t) for t in tiers}
        # With a single choice, requests go to it whatever its breaker says.
        single = len(tiers) == 1 or not self.config.source.failover
        states = {
            t.name: ok and (single or breakers[t.name].available(now))
            for t, ok in zip(tiers, results, strict=True)
        }
        return (
            any(states.values()),
            states,
            {name: b.state(now).value for name, b in breakers.items()},
        )

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
            "client_request_id": d.client_request_id,
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
