"""Forwarding a decided request to its tier, on one of the tier's replicas (another one when
the first fails), failing over to the other tiers while nothing has reached the client, and the
answer when every tier failed.

Every way a tier can fail a request is a :class:`TierError` with one of
:data:`~zeta_router.router.upstream.FAILURE_REASONS`, whenever it happens (before the headers,
in the body, or as a body that is not what it says); :meth:`Forwarder._tier_failed` is the one
place that counts it, logs it and tells the circuit breaker. The breaker's claim is held in a
``with`` block, so no error or cancellation can leave it taken.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from zeta_router.router.breaker import Attempt
from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.decision import Decision
from zeta_router.router.errors import ApiError, error_response
from zeta_router.router.http1 import Response
from zeta_router.router.ids import Signer
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.picker import Pick, prefix_key
from zeta_router.router.relay import decision_headers, relay
from zeta_router.router.replicas import Replica
from zeta_router.router.sleep import awake_order, unpaused_order
from zeta_router.router.upstream import (
    FAILOVER_STATUSES,
    KEY_REFUSED_STATUSES,
    NOT_BREAKER_REASONS,
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
    ) -> tuple[web.StreamResponse, float]:
        """The response for the client (sent for a stream, to send otherwise) and the router's
        own time spent building payloads and rewriting the answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.source.timeouts.total_seconds  # the event loop's clock
        order = attempt_order(
            d.tier,
            len(cfg.tiers),
            cfg.source.failover and not d.forced,
            cfg.overflow if not d.forced else frozenset(),  # (a pinned tier is the client's)
        )
        if any(t.paused for t in cfg.tiers):
            order = unpaused_order(order, cfg, fallback=not d.forced)
        if cfg.tiers[d.tier].asleep:
            order = awake_order(order, cfg, fallback=not d.forced)
            d.asleep = cfg.tiers[d.tier].name
            self.metrics.asleep_fallbacks.labels(d.asleep).inc()
        elif any(t.asleep for t in cfg.tiers):
            order = awake_order(order, cfg)  # failover never goes to a sleeping tier either
        failures: list[tuple[Tier, TierError]] = []
        payloads: dict[str | None, bytes] = {}
        overhead = 0.0
        # Tiers skipped for an open breaker are tried last, as a last resort, once every other
        # one failed: a tier that has recovered since is better than an error for the client.
        queue = [(idx, False) for idx in order]
        skipped: list[int] = []
        key: int | None = None
        keyed = False  # the prompt prefix is hashed once, and only for a tier with replicas
        i = 0
        while i < len(queue):
            idx, last_resort = queue[i]
            i += 1
            tier = cfg.tiers[idx]
            if failures:
                prev, err = failures[-1]
                self.metrics.failover(prev.name, tier.name, err.reason)
            if loop.time() >= deadline:
                failures.append((tier, TierError("timeout", "no time left within totalSeconds")))
                continue
            breaker = self.upstreams.breaker(tier)
            attempt = breaker.attempt(time.monotonic())
            if attempt is None:
                if len(order) > 1 and not last_resort:
                    skip = TierError("circuit_open", "skipped: circuit breaker open")
                    self._tier_failed(d, tier, skip, None)
                    failures.append((tier, skip))
                    skipped.append(idx)
                    if i == len(queue):
                        queue += [(s, True) for s in skipped]
                    continue
                attempt = Attempt(breaker, None)  # no other choice left: try it anyway
            if tier.external is not None:
                limited = self._rate_limited(tier)
                if limited is not None:
                    self._tier_failed(d, tier, limited, attempt)
                    failures.append((tier, limited))
                    if i == len(queue) and skipped and not last_resort:
                        queue += [(s, True) for s in skipped]
                    continue
            t_build = time.perf_counter()
            payload = payloads.get(tier.model)
            if payload is None:
                payload = payloads[tier.model] = upstream_payload(body, tier.model)
            # The id this tier sees is the one the client gets if this tier answers.
            attempt_id = d.request_id = headers["X-Request-Id"] = d.sign(tier)
            if not keyed and self.upstreams.replicas.multiple(tier):
                keyed = True
                key = prefix_key(body, cfg.source.balancing.prefix_chars)
            overhead += time.perf_counter() - t_build
            d.usage = None  # (this attempt's answer's; a cascade forwards one decision twice)
            with attempt:
                try:
                    response, late, extra = await self._attempt(
                        request, cfg, d, tier, path, payload, headers, deadline, len(order) > 1, key
                    )
                except TierError as err:
                    d.request_id = ""  # (back to the id that names no tier)
                    self._tier_failed(d, tier, err, attempt, attempt_id)
                    failures.append((tier, err))
                    if i == len(queue) and skipped and not last_resort:
                        queue += [(s, True) for s in skipped]
                    continue
                d.served = tier
                if late is not None:  # the stream broke after it reached the client
                    self._tier_failed(d, tier, late, attempt, attempt_id)
                elif response.status < 500:
                    attempt.success()
                # (a 500 says nothing about the tier's health: no verdict)
            if d.usage is not None:
                self._count_usage(tier, d.usage)
            if response.status == 200 and late is None:
                self.on_answered(cfg, d, body, tier)
            return response, overhead + extra
        return self.all_failed(d, failures, loop.time() >= deadline), overhead

    def _rate_limited(self, tier: Tier) -> TierError | None:
        """An external tier's client-side limit, when it refuses this request (else the
        request is counted against it)."""
        limiter = self.upstreams.limiter(tier)
        why = limiter.refusal(time.monotonic()) if limiter is not None else None
        return None if why is None else TierError("rate_limited", why, 429)

    def _count_usage(self, tier: Tier, usage: tuple[int, int]) -> None:
        prompt, completion = usage
        ext = tier.external
        cost = 0.0
        if ext is not None:
            cost = (
                prompt * ext.prompt_cost_per_1k_tokens
                + completion * ext.completion_cost_per_1k_tokens
            ) / 1000.0
            limiter = self.upstreams.limiter(tier)
            if limiter is not None:
                limiter.add_tokens(time.monotonic(), prompt + completion)
        self.metrics.count_tokens(tier.name, prompt, completion, cost)

    async def _attempt(
        self,
        request: web.Request,
        cfg: RuntimeConfig,
        d: Decision,
        tier: Tier,
        path: str,
        payload: bytes,
        headers: dict[str, str],
        deadline: float,
        may_fail_over: bool,
        key: int | None,
    ) -> tuple[web.StreamResponse, TierError | None, float]:
        """One tier's try: a connection slot, then the request on one replica after another
        (at most balancing.replicaTries) until one answers; the last replica's failure is the
        tier's."""
        upstreams = self.upstreams
        replicas = upstreams.replicas
        loop = asyncio.get_running_loop()
        first_byte = min(upstreams.timeouts.first_byte_seconds, deadline - loop.time())
        slot = await upstreams.acquire(tier, first_byte)
        self.metrics.inflight_add(tier.name, 1)
        tries = cfg.source.balancing.replica_tries
        tried: list[str] = []
        fallback: Replica | None = None
        try:
            while True:
                if fallback is None:
                    chosen = replicas.choose(tier, key, tried, time.monotonic())
                    if chosen is None:
                        raise TierError("no_replica", "no replica of the tier left to try")
                    replica, why = chosen
                else:
                    replica, why = fallback, SERVICE
                tried.append(replica.url)
                count = len(replicas.of(tier).replicas)
                more = fallback is None and len(tried) < tries and len(tried) < count
                self.metrics.replica_request(tier.name, replica.url, why.reason)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug(
                        "replica picked",
                        extra={
                            "event": "replica_picked",
                            "request_id": d.request_id,
                            "tier": tier.name,
                            "replica": replica.url,
                            "reason": why.reason,
                            "try": len(tried),
                        },
                    )
                # The replica's speed, for the picker: only where there is a choice to make.
                began = time.perf_counter() if count > 1 else 0.0
                held = replicas.state(replica).load() + 1 if count > 1 else 0
                try:
                    result = await self._on_replica(
                        request,
                        d,
                        tier,
                        replica,
                        path,
                        payload,
                        headers,
                        deadline,
                        min(first_byte, deadline - loop.time()),
                        may_fail_over or more,
                    )
                except TierError as err:
                    self._replica_failed(tier, replica, err)
                    if loop.time() >= deadline:
                        raise
                    if not more:
                        fallback = service_fallback(tier, tried, err, fallback)
                        if fallback is None:
                            raise
                    continue
                if result[1] is not None:
                    self._replica_failed(tier, replica, result[1])
                elif result[0].status < 500:  # (as for the breaker: a 500 is no verdict)
                    took = time.perf_counter() - began if count > 1 else None
                    replicas.succeeded(replica, took, held)
                return result
        finally:
            self.metrics.inflight_add(tier.name, -1)
            slot.release()

    async def _on_replica(
        self,
        request: web.Request,
        d: Decision,
        tier: Tier,
        replica: Replica,
        path: str,
        payload: bytes,
        headers: dict[str, str],
        deadline: float,
        first_byte: float,
        may_move_on: bool,
    ) -> tuple[web.StreamResponse, TierError | None, float]:
        """The request on one replica, and the relay of its answer."""
        replicas = self.upstreams.replicas
        replicas.begin(replica)
        try:
            sent = time.perf_counter()
            # The first-byte time starts once the router has a connection slot: waiting for the
            # router's own pool is not the tier being slow.
            resp = await self.upstreams.open(tier, path, payload, headers, first_byte, replica)
            try:
                if resp.status in FAILOVER_STATUSES and may_move_on:
                    detail = await error_detail(resp, tier.external is None)
                    raise TierError(f"http_{resp.status}", detail, resp.status)
                if resp.status in KEY_REFUSED_STATUSES and tier.external is not None:
                    # The router's key, not the client's request: never the client's answer.
                    raise TierError("key_refused", f"HTTP {resp.status}", resp.status)
                return await relay(request, resp, d, tier, sent, deadline, self.metrics)
            finally:
                resp.close()
        finally:
            replicas.end(replica)

    def _replica_failed(self, tier: Tier, replica: Replica, err: TierError) -> None:
        self.metrics.replica_failure(tier.name, replica.url, err.reason)
        # Which replica failed, and how: the tier's error the client may get names only the tier.
        log.info(
            "replica failed",
            extra={
                "event": "replica_failed",
                "tier": tier.name,
                "replica": replica.url,
                "reason": err.reason,
                "detail": err.detail,
            },
        )
        if err.reason not in NOT_BREAKER_REASONS:
            self.upstreams.replicas.failed(tier, replica, time.monotonic())

    def _tier_failed(
        self,
        d: Decision,
        tier: Tier,
        err: TierError,
        attempt: Attempt | None,
        request_id: str | None = None,
    ) -> None:
        """Count, log and tell the breaker: the one place every tier failure goes through."""
        self.metrics.tier_failure(tier.name, err.reason)
        if attempt is not None:
            if err.reason in NOT_BREAKER_REASONS:
                attempt.release()
            else:
                attempt.failure(time.monotonic())
        if err.reason == "circuit_open":
            return  # not an event worth a log line per request
        log.warning(
            "tier failed",
            extra={
                "event": "tier_failed",
                "request_id": request_id or d.request_id,
                "tier": tier.name,
                "reason": err.reason,
                "detail": err.detail,
            },
        )

    def all_failed(
        self, d: Decision, failures: list[tuple[Tier, TierError]], out_of_time: bool
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
        timed_out = out_of_time or (len(failures) == 1 and failures[0][1].reason == "timeout")
        if statuses == {429}:
            status, code = 429, "tiers_overloaded"
            message = f"every tier is overloaded ({summary}); retry later"
        elif timed_out:
            status, code = 504, "upstream_timeout"
            message = f"no tier answered in time ({summary})"
        elif len(failures) == 1 and failures[0][1].reason in ("broken", "bad_response"):
            status, code = 502, "upstream_broken"
            message = f"tier {failures[0][0].name} gave a broken answer ({summary})"
        else:
            status, code = 503, "no_tier_available"
            message = f"no tier is available to serve this request ({summary}); retry later"
        err = ApiError(status, message, code=code, headers={"Retry-After": str(retry_after)})
        resp = error_response(err)
        decision_headers(resp, d, None)
        return resp


#: The pick of a tier's Service address after its known replicas could not be reached.
SERVICE = Pick(0, "service")


def service_fallback(
    tier: Tier, tried: Sequence[str], err: TierError, previous: Replica | None
) -> Replica | None:
    """The tier's Service address, for one last try, when no replica the router knows of
    could even be connected to (None: no such try). A router learns of a tier's new pods by
    name resolution, a second or more late (DNS caches too); during a rollout it may know only
    pods that are gone, while the tier's ClusterIP Service already leads to the new ones. Pure."""
    if previous is not None or not err.unreached or tier.url in tried or not tier.replicas:
        return None
    return Replica(tier.url)


async def error_detail(resp: Response, with_body: bool = True) -> str:
    """A short description of an error answer: its status and the start of its body (not for
    an external provider, whose errors may quote the router's API key)."""
    if not with_body:
        return f"HTTP {resp.status}"
    deadline = asyncio.get_running_loop().time() + 1.0
    try:
        text = (await resp.read(deadline, limit=2048)).decode("utf-8", "replace")
    except (OSError, TimeoutError):
        text = ""
    text = " ".join(text.split())[:200]
    return f"HTTP {resp.status}" + (f": {text}" if text else "")
