"""The model servers behind the router: one pooled HTTP client per tier, circuit breakers, the
failover order, and health probes.

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

import aiohttp

from zeta_router.api.routing import CircuitBreaker as BreakerSettings
from zeta_router.api.routing import Timeouts
from zeta_router.router.breaker import CircuitBreaker
from zeta_router.router.config import RuntimeConfig, Tier

log = logging.getLogger("zeta_router.router.upstream")

#: Statuses that mean "this tier cannot take the request now" rather than "the request is bad".
FAILOVER_STATUSES = frozenset({429, 502, 503, 504})
#: Of those, the ones that count against a tier's circuit breaker (429 is load, not breakage).
BREAKER_STATUSES = frozenset({502, 503, 504})


class TierError(Exception):
    """A tier could not take the request; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = status


def attempt_order(chosen: int, tiers: int, failover: bool) -> list[int]:
    """The chosen tier, then each larger tier, then each smaller one (nearest first), once each."""
    if not failover:
        return [chosen]
    return [chosen, *range(chosen + 1, tiers), *range(chosen - 1, -1, -1)]


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
    def __init__(self, config: RuntimeConfig) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._probes: dict[str, _Probe] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.timeouts: Timeouts = config.source.timeouts
        self._breaker_settings: BreakerSettings = config.source.circuit_breaker
        self.reconfigure(config)

    # -- configuration ---------------------------------------------------------------------

    def reconfigure(self, config: RuntimeConfig) -> None:
        """Adopt a new configuration: new tiers get a client and a breaker; clients of URLs no
        longer used are closed once requests still using them have had time to finish."""
        timeouts, settings = config.source.timeouts, config.source.circuit_breaker
        if timeouts != self.timeouts:
            # The connect timeout lives in the session, so sessions are rebuilt (gracefully).
            self._retire(list(self._sessions))
        self.timeouts = timeouts
        urls = {t.url for t in config.tiers}
        self._retire([u for u in self._sessions if u not in urls])
        if settings != self._breaker_settings:
            self._breakers.clear()
        self._breaker_settings = settings
        for name in [n for n in self._breakers if n not in config.tier_by_name]:
            del self._breakers[name]

    def _retire(self, urls: list[str]) -> None:
        for url in urls:
            session = self._sessions.pop(url)
            task = asyncio.get_running_loop().create_task(
                self._close_later(session, self.timeouts.total_seconds)
            )
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close_later(session: aiohttp.ClientSession, delay: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(delay)
        await session.close()

    def session(self, tier: Tier) -> aiohttp.ClientSession:
        s = self._sessions.get(tier.url)
        if s is None or s.closed:
            t = self.timeouts
            s = aiohttp.ClientSession(
                base_url=None,
                connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=30.0),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=t.connect_seconds, sock_connect=t.connect_seconds
                ),
                # Ask for identity encoding: the router rewrites bodies and must see plain bytes.
                skip_auto_headers=("Accept-Encoding", "User-Agent"),
                auto_decompress=False,
            )
            self._sessions[tier.url] = s
        return s

    def breaker(self, tier: Tier) -> CircuitBreaker:
        b = self._breakers.get(tier.name)
        if b is None:
            st = self._breaker_settings
            b = self._breakers[tier.name] = CircuitBreaker(st.failure_threshold, st.open_seconds)
        return b

    # -- requests --------------------------------------------------------------------------

    async def open(
        self, tier: Tier, path: str, payload: bytes, headers: Mapping[str, str]
    ) -> aiohttp.ClientResponse:
        """Send a request and return once the response headers are in, or raise
        :class:`TierError`. A 429/502/503/504 answer is returned; the caller decides."""
        session = self.session(tier)
        try:
            async with asyncio.timeout(self.timeouts.first_byte_seconds):
                return await session.post(tier.url + path, data=payload, headers=headers)
        except aiohttp.ClientConnectorError as exc:
            raise TierError("refused", f"cannot connect: {exc.os_error}") from None
        except TimeoutError:
            raise TierError(
                "timeout", f"no response within {self.timeouts.first_byte_seconds:g}s"
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise TierError("disconnected", f"connection lost: {exc}") from None
        except aiohttp.ClientError as exc:
            raise TierError("error", f"{type(exc).__name__}: {exc}") from None

    # -- health ----------------------------------------------------------------------------

    async def probe(self, tier: Tier, max_age: float = 1.0) -> bool:
        """Whether the tier answers its health endpoint (cached for ``max_age`` seconds)."""
        now = time.monotonic()
        cached = self._probes.get(tier.name)
        if cached is not None and now - cached.at < max_age:
            return cached.ok
        ok = await self._probe(tier)
        self._probes[tier.name] = _Probe(time.monotonic(), ok)
        return ok

    async def _probe(self, tier: Tier) -> bool:
        session = self.session(tier)
        timeout = aiohttp.ClientTimeout(total=max(self.timeouts.connect_seconds, 1.0))
        # llama.cpp and vLLM answer /health; other OpenAI-compatible servers at least /v1/models.
        for path in ("/health", "/v1/models"):
            try:
                async with session.get(tier.url + path, timeout=timeout) as resp:
                    if 200 <= resp.status < 300:
                        return True
                    if resp.status != 404:
                        return False
            except (aiohttp.ClientError, TimeoutError):
                return False
        return False

    async def close(self) -> None:
        for task in list(self._closing):
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()
