"""Forwarding a decided request to its tier, failing over to the others while nothing has
reached the client, and the answer when every tier failed.

Every way a tier can fail a request before its answer is relayed is handled in
:meth:`Forwarder.forward`, with the circuit breaker's bookkeeping next to it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.decision import Decision, sign
from zeta_router.router.errors import ApiError, error_response
from zeta_router.router.ids import Signer
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.relay import decision_headers, relay
from zeta_router.router.upstream import (
    BREAKER_STATUSES,
    FAILOVER_STATUSES,
    TierError,
    Upstreams,
    attempt_order,
    upstream_payload,
)

log = logging.getLogger("zeta_router.router")

#: Called once a tier's answer was relayed with status 200 (shadow sampling hooks in here).
OnAnswered = Callable[[RuntimeConfig, Decision, dict[str, Any], Tier], None]


class Forwarder:
    def __init__(
        self,
        upstreams: Upstreams,
        metrics: RouterMetrics,
        signer: Signer,
        on_answered: OnAnswered,
    ) -> None:
        self.upstreams = upstreams
        self.metrics = metrics
        self.signer = signer
        self.on_answered = on_answered

    async def forward(
        self,
        request: web.Request,
        cfg: RuntimeConfig,
        d: Decision,
        body: dict[str, Any],
        path: str,
        headers: dict[str, str],
        overhead: float,
    ) -> tuple[web.StreamResponse, float]:
        upstreams = self.upstreams
        order = attempt_order(d.tier, len(cfg.tiers), cfg.source.failover and not d.forced)
        failures: list[tuple[Tier, TierError]] = []
        prev: tuple[Tier, str] | None = None
        payloads: dict[str | None, bytes] = {}
        for idx in order:
            tier = cfg.tiers[idx]
            breaker = upstreams.breaker(tier)
            if prev is not None:
                self.metrics.failover(prev[0].name, tier.name, prev[1])
            if len(order) > 1 and not breaker.allow(time.monotonic()):
                failure = TierError("circuit_open", "skipped: circuit breaker open")
                failures.append((tier, failure))
                prev = (tier, failure.reason)
                continue
            t_build = time.perf_counter()
            payload = payloads.get(tier.model)
            if payload is None:
                payload = payloads[tier.model] = upstream_payload(body, tier.model)
            # The id this tier sees is the one the client gets if this tier answers.
            attempt_id = headers["X-Request-Id"] = sign(self.signer, cfg, d, tier)
            overhead += time.perf_counter() - t_build
            self.metrics.inflight_add(tier.name, 1)
            sent = time.perf_counter()
            try:
                try:
                    resp = await upstreams.open(tier, path, payload, headers)
                except TierError as f:
                    breaker.failure(time.monotonic())
                    failures.append((tier, f))
                    prev = (tier, f.reason)
                    log_tier_failure(attempt_id, tier, f)
                    continue
                except BaseException:
                    breaker.release()
                    raise
                if resp.status in FAILOVER_STATUSES and len(order) > 1:
                    detail = await error_detail(resp)
                    if resp.status in BREAKER_STATUSES:
                        breaker.failure(time.monotonic())
                    else:
                        breaker.release()
                    err = TierError(f"http_{resp.status}", detail, resp.status)
                    failures.append((tier, err))
                    prev = (tier, err.reason)
                    log_tier_failure(attempt_id, tier, err)
                    continue
                if resp.status < 500:
                    breaker.success()
                else:
                    breaker.release()
                d.served = tier
                d.request_id = attempt_id
                response, extra = await relay(request, resp, cfg, d, tier, sent, self.metrics)
                if d.shadow and response.status == 200:
                    self.on_answered(cfg, d, body, tier)
                return response, overhead + extra
            finally:
                self.metrics.inflight_add(tier.name, -1)
        return self.all_failed(cfg, d, failures), overhead

    def all_failed(
        self, cfg: RuntimeConfig, d: Decision, failures: list[tuple[Tier, TierError]]
    ) -> web.Response:
        now = time.monotonic()
        waits = [self.upstreams.breaker(t).retry_in(now) for t, _ in failures]
        retry_after = max(1, math.ceil(min(waits, default=1.0)))
        summary = "; ".join(f"{t.name}: {f.detail}" for t, f in failures)
        log.error(
            "no tier could serve the request",
            extra={"event": "all_tiers_failed", "request_id": d.request_id, "failures": summary},
        )
        statuses = {f.status for _, f in failures}
        if statuses == {429}:
            status, code = 429, "tiers_overloaded"
            message = f"every tier is overloaded ({summary}); retry later"
        elif len(failures) == 1 and failures[0][1].reason == "timeout":
            status, code = 504, "upstream_timeout"
            message = f"tier {failures[0][0].name} did not answer in time ({summary})"
        else:
            status, code = 503, "no_tier_available"
            message = f"no tier is available to serve this request ({summary}); retry later"
        err = ApiError(status, message, code=code, headers={"Retry-After": str(retry_after)})
        resp = error_response(err)
        decision_headers(resp, d, None)
        return resp


async def error_detail(resp: aiohttp.ClientResponse) -> str:
    try:
        async with asyncio.timeout(1.0):
            text = (await resp.content.read(2048)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError):
        text = ""
    finally:
        resp.close()
    text = " ".join(text.split())[:200]
    return f"HTTP {resp.status}" + (f": {text}" if text else "")


def log_tier_failure(request_id: str, tier: Tier, err: TierError) -> None:
    log.warning(
        "tier failed",
        extra={
            "event": "tier_failed",
            "request_id": request_id,
            "tier": tier.name,
            "reason": err.reason,
            "detail": err.detail,
        },
    )
