"""The model servers behind the router: a pool of keep-alive connections per replica (the lean
client of :mod:`.http1`), the tiers' replicas (:mod:`.replicas`), circuit breakers per tier,
the failover order, and health probes.

Nothing here decides where a request should go; it only knows how to reach a tier and how to
tell a tier that is down (refused connection, no first byte in time, 429/502/503/504) from one
that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zeta_router.api.routing import CircuitBreaker as BreakerSettings
from zeta_router.api.routing import Timeouts
from zeta_router.router.breaker import CircuitBreaker
from zeta_router.router.config import RuntimeConfig, Tier
from zeta_router.router.http1 import (
    ConnectError,
    ConnectTimeoutError,
    DisconnectedError,
    Pool,
    Response,
)
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.ratelimit import RateLimiter
from zeta_router.router.replicas import Replica, Replicas

log = logging.getLogger("zeta_router.router.upstream")

#: Statuses that mean "this tier cannot take the request now" rather than "the request is bad".
FAILOVER_STATUSES = frozenset({429, 502, 503, 504})
#: An external provider's answers that refuse the router's API key: a failure of the tier (its
#: configuration), never relayed to the client, who did not send that key.
KEY_REFUSED_STATUSES = frozenset({401, 403})
#: Of those, the ones that count against a tier's circuit breaker (429 is load, not breakage).
BREAKER_STATUSES = frozenset({502, 503, 504})

#: Every way a tier can fail a request: the ``reason`` label of the failure metrics, the
#: failover reasons of docs/router.md (a test compares the two).
FAILURE_REASONS: dict[str, str] = {
    "refused": "the connection was refused or could not be made",
    "timeout": "no response headers within firstByteSeconds, no connection within "
    "connectSeconds, or the answer did not finish within totalSeconds",
    "disconnected": "the connection was lost before the response headers",
    "error": "another HTTP client error before the response headers",
    "http_429": "the tier answered 429 (busy; not counted by the circuit breaker)",
    "http_502": "the tier answered 502",
    "http_503": "the tier answered 503",
    "http_504": "the tier answered 504",
    "broken": "the answer broke off after its headers (connection lost, bad chunking)",
    "bad_response": "a 200 answer that is not what its Content-Type says (not JSON, or an "
    "event stream without any event)",
    "truncated": "an event stream that ended without its data: [DONE] terminator",
    "busy": "every connection this router may open to the tier was in use for the whole wait "
    "(the router's own limit, --tier-connections; not counted by the circuit breaker)",
    "key_refused": "an external tier refused the router's API key (401 or 403)",
    "circuit_open": "skipped: the tier's circuit breaker is open",
    "rate_limited": "an external tier's client-side limit (requests or tokens per minute) is "
    "reached (not counted by the circuit breaker)",
    "no_replica": "the tier has no replica to try (none known, or every one already tried)",
}
#: Failures that say nothing about the tier's health: the breaker is left as it was.
NOT_BREAKER_REASONS = frozenset({"http_429", "busy", "circuit_open", "rate_limited"})


class TierError(Exception):
    """A tier could not take the request; ``reason`` (one of FAILURE_REASONS) is the metric
    label."""

    def __init__(
        self, reason: str, detail: str, status: int | None = None, *, unreached: bool = False
    ) -> None:
        assert reason in FAILURE_REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status
        # No connection was made: nobody saw the request, so sending it elsewhere is safe.
        self.unreached = unreached


def attempt_order(
    chosen: int, tiers: int, failover: bool, overflow: frozenset[int] = frozenset()
) -> list[int]:
    """The chosen tier, then each larger tier, then each smaller one (nearest first), once each.
    Overflow-only tiers (``overflow``) are never first: they move to the end of that order
    (and are left out without failover), so a request reaches them only once every other tier
    failed it."""
    if not failover and chosen not in overflow:
        return [chosen]
    order = [chosen, *range(chosen + 1, tiers), *range(chosen - 1, -1, -1)]
    if overflow:
        regular = [i for i in order if i not in overflow]
        if not failover:
            return regular[:1]
        order = regular + [i for i in order if i in overflow]
    return order


#: Client headers an external provider never gets: they belong to the client's own account
#: with whatever it meant to call, not to the router's account with the provider.
CLIENT_ACCOUNT_HEADERS = ("Authorization", "OpenAI-Organization", "OpenAI-Project")


def external_headers(headers: Mapping[str, str], api_key: str) -> dict[str, str]:
    """The headers sent to an external tier: the client's, without its credentials, with the
    router's API key."""
    out = {k: v for k, v in headers.items() if k not in CLIENT_ACCOUNT_HEADERS}
    out["Authorization"] = f"Bearer {api_key}"
    return out


def upstream_payload(body: dict[str, Any], model: str | None) -> bytes:
    """The request body as sent to a tier: the client's, with the tier's model name (or none)."""
    out = dict(body)
    if model is None:
        out.pop("model", None)
    else:
        out["model"] = model
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(slots=True)
class _Probe:
    at: float
    ok: bool


class Upstreams:
    def __init__(
        self,
        config: RuntimeConfig,
        tier_connections: int = 1024,
        replicas: Replicas | None = None,
    ) -> None:
        self.replicas = replicas or Replicas(config, RouterMetrics())
        self.replicas.on_change = self.prune
        self._pools: dict[str, Pool] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._probes: dict[str, _Probe] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.tier_connections = tier_connections
        self.timeouts: Timeouts = config.source.timeouts
        self._breaker_settings: BreakerSettings = config.source.circuit_breaker
        self.reconfigure(config)

    # -- configuration ---------------------------------------------------------------------

    def reconfigure(self, config: RuntimeConfig) -> None:
        """Adopt a new configuration: new tiers get a client and a breaker; clients of URLs no
        longer used are closed once requests still using them have had time to finish."""
        timeouts, settings = config.source.timeouts, config.source.circuit_breaker
        if timeouts != self.timeouts:
            # The connect timeout lives in the pool, so pools are rebuilt (gracefully).
            self._retire(list(self._pools))
        self.timeouts = timeouts
        self.replicas.reconfigure(config)
        self.prune()
        if settings != self._breaker_settings:
            self._breakers.clear()
        self._breaker_settings = settings
        for name in [n for n in self._breakers if n not in config.tier_by_name]:
            del self._breakers[name]
        for name in [n for n in self._slots if n not in config.tier_by_name]:
            del self._slots[name]
        for name, limiter in list(self._limiters.items()):
            tier = config.tier_by_name.get(name)
            if tier is None or not limiter.same_limits(tier.external):
                del self._limiters[name]  # (new limits start with an empty window)

    def prune(self) -> None:
        """Retire the pools of replicas no longer known."""
        urls = self.replicas.urls()
        self._retire([u for u in self._pools if u not in urls])

    def _retire(self, urls: list[str]) -> None:
        for url in urls:
            pool = self._pools.pop(url)
            task = asyncio.get_running_loop().create_task(
                self._close_later(pool, self.timeouts.total_seconds)
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_later(pool: Pool, delay: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(delay)
        await pool.close()

    def pool(self, url: str) -> Pool:
        """The keep-alive connections to one replica. No limit here: the router bounds its
        connections per tier itself (acquire()), so that waiting for one is never mistaken
        for the tier being slow."""
        p = self._pools.get(url)
        if p is None:
            p = self._pools[url] = Pool(
                url, self.timeouts.connect_seconds, known=self.replicas.known_addresses
            )
        return p

    def breaker(self, tier: Tier) -> CircuitBreaker:
        b = self._breakers.get(tier.name)
        if b is None:
            st = self._breaker_settings
            b = self._breakers[tier.name] = CircuitBreaker(st.failure_threshold, st.open_seconds)
        return b

    def limiter(self, tier: Tier) -> RateLimiter | None:
        """The client-side limits of an external tier (None: none set)."""
        if tier.external is None:
            return None
        lim = self._limiters.get(tier.name)
        if lim is None:
            lim = RateLimiter.of(tier.external)
            if lim is None:
                return None
            self._limiters[tier.name] = lim
        return lim

    def breakers(self) -> dict[str, CircuitBreaker]:
        return dict(self._breakers)

    # -- requests --------------------------------------------------------------------------

    def _semaphore(self, tier: Tier) -> asyncio.Semaphore:
        sem = self._slots.get(tier.name)
        if sem is None:
            sem = self._slots[tier.name] = asyncio.Semaphore(self.tier_connections)
        return sem

    async def acquire(self, tier: Tier, wait: float) -> asyncio.Semaphore:
        """Take one of the connections this router may have open to ``tier``, waiting at most
        ``wait`` seconds; the caller releases the returned semaphore. Raises TierError("busy")."""
        sem = self._semaphore(tier)
        if sem.locked():
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    await sem.acquire()
            except TimeoutError:
                raise TierError(
                    "busy",
                    f"all {self.tier_connections} connections to the tier were in use for "
                    f"{wait:.3g}s",
                ) from None
        else:
            await sem.acquire()  # free: returns without waiting
        return sem

    async def open(
        self,
        tier: Tier,
        path: str,
        payload: bytes,
        headers: Mapping[str, str],
        within: float | None = None,
        replica: Replica | None = None,
    ) -> Response:
        """Send a request to ``replica`` of ``tier`` (default: the least loaded) and return
        once the response headers are in (``within`` seconds, default firstByteSeconds), or
        raise :class:`TierError`. A 429/502/503/504 answer is returned; the caller decides."""
        if replica is None:
            chosen = self.replicas.choose(tier, None, (), time.monotonic())
            if chosen is None:
                raise TierError("no_replica", "the tier has no replica")
            replica = chosen[0]
        try:
            pool = self.pool(replica.url)
        except ValueError as exc:  # (URLs are checked where they enter: a last guard)
            raise TierError("error", f"unusable replica URL: {exc}") from None
        wait = self.timeouts.first_byte_seconds if within is None else max(0.0, within)
        if tier.api_key is not None:
            headers = external_headers(headers, tier.api_key)
        try:
            return await pool.request("POST", path, headers, payload, pool.loop.time() + wait)
        except ConnectTimeoutError as exc:
            raise TierError("timeout", f"cannot connect: {exc}", unreached=True) from None
        except ConnectError as exc:
            raise TierError("refused", f"cannot connect: {exc}", unreached=True) from None
        except TimeoutError:
            raise TierError("timeout", f"no response within {wait:.3g}s") from None
        except DisconnectedError as exc:
            raise TierError("disconnected", f"connection lost: {exc}") from None
        except OSError as exc:
            raise TierError("error", f"{type(exc).__name__}: {exc}") from None

    # -- health ----------------------------------------------------------------------------

    async def probe(self, tier: Tier, max_age: float = 1.0) -> bool:
        """Whether a replica of the tier answers its health endpoint (each replica's verdict
        cached for ``max_age`` seconds). An external tier is not probed (its health endpoint,
        if any, wants the key; probes would spend its limits): it counts as up, and its
        circuit breaker tells when it is not."""
        if tier.external is not None:
            return True
        replicas = self.replicas.of(tier).replicas
        results = await asyncio.gather(*(self._probe_cached(r.url, max_age) for r in replicas))
        return any(results)

    async def _probe_cached(self, url: str, max_age: float) -> bool:
        now = time.monotonic()
        cached = self._probes.get(url)
        if cached is not None and now - cached.at < max_age:
            return cached.ok
        ok = await self._probe(url)
        self._probes[url] = _Probe(time.monotonic(), ok)
        if len(self._probes) > 4 * max(1, len(self._pools)) + 64:  # forget replicas long gone
            known = self.replicas.urls()
            for u in [u for u in self._probes if u not in known]:
                del self._probes[u]
        return ok

    async def metrics_text(self, url: str) -> str | None:
        """A replica's /metrics (its own load gauges), or None when it does not answer."""
        try:
            pool = self.pool(url)
            deadline = pool.loop.time() + max(self.timeouts.connect_seconds, 1.0)
            resp = await pool.request("GET", "/metrics", {}, b"", deadline)
            async with resp:
                body = await resp.read(deadline, limit=1 << 20)
                return body.decode("utf-8", "replace") if resp.status == 200 else None
        except (OSError, TimeoutError, ValueError):
            return None

    async def _probe(self, url: str) -> bool:
        try:
            pool = self.pool(url)
        except ValueError:
            return False
        deadline = pool.loop.time() + max(self.timeouts.connect_seconds, 1.0)
        # llama.cpp and vLLM answer /health; other OpenAI-compatible servers at least /v1/models.
        for path in ("/health", "/v1/models"):
            try:
                resp = await pool.request("GET", path, {}, b"", deadline)
                async with resp:
                    await resp.read(deadline)
                    if 200 <= resp.status < 300:
                        return True
                    if resp.status != 404:
                        return False
            except (OSError, TimeoutError):
                return False
        return False

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for p in self._pools.values():
            await p.close()
        self._pools.clear()
