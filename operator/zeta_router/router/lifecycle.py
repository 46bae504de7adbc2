"""How a router in a ZetaRouter pod stops without losing a request (see
``zeta_router.api.lifecycle`` for the whole sequence and the grace period).

Both endpoints are on the admin port (which keeps answering while the client port drains):

- ``POST /drain`` (from 127.0.0.1 only: the ``zeta-router drain`` preStop hook of the router
  container): the router stops being ready (``/readyz`` answers 503) and every response from
  then on carries ``Connection: close``, so clients open their next connection to a pod that
  is still in the Services; it keeps serving whatever arrives, and answers once the drain delay
  has passed since the drain began. SIGTERM comes after that (the router then stops accepting
  and finishes what is in flight).
- ``GET /drain/model-idle`` (the model-server container's preStop, an HTTP hook run by the
  kubelet): answers once the drain delay has passed since the call and the model server of
  this pod holds no request (its own in-flight gauges, read from its ``/metrics`` on
  127.0.0.1: requests from any router count), or cannot be reached any more, or the router's
  total request timeout has passed. It changes nothing, so it needs no protection beyond a cap
  on how many may wait at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp import web

from zeta_router.api.engines import IN_FLIGHT
from zeta_router.api.lifecycle import DRAIN_PATH, MODEL_IDLE_PATH
from zeta_router.router.config import RuntimeConfig

log = logging.getLogger("zeta_router.router.lifecycle")

LOCAL_PEERS = frozenset({"127.0.0.1", "::1"})
POLL_SECONDS = 0.5
IDLE_POLLS = 2
"""Consecutive polls that must see the model server idle (a request may be on its way)."""
MAX_WAITERS = 4


def in_flight(metrics_text: str, engine: str) -> float | None:
    """Requests a model server holds, from its Prometheus text (None: no such gauge)."""
    wanted = IN_FLIGHT.get(engine, ())
    total: float | None = None
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            try:
                value = float(line.rsplit(" ", 1)[-1])
            except ValueError:
                continue
            total = (total or 0.0) + value
    return total


class Drainable(Protocol):
    """What the lifecycle needs of the router: its readiness switch and its configuration."""

    draining: bool

    @property
    def config(self) -> RuntimeConfig: ...


@dataclass
class Lifecycle:
    router: Drainable
    drain_delay: float
    drain_seconds: float
    local_tier: str | None = None
    draining_since: float | None = None
    waiters: int = field(default=0)
    _no_waiters: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self._no_waiters.set()

    def begin_drain(self, why: str) -> None:
        if self.draining_since is None:
            self.draining_since = time.monotonic()
            self.router.draining = True
            log.info(
                "draining: not ready, connections closed after each response",
                extra={"event": "drain_begin", "why": why, "drain_delay": self.drain_delay},
            )

    def install(self, app: web.Application, admin_app: web.Application | None = None) -> None:
        """The hooks' endpoints go on ``admin_app`` when the router has one (the port that
        keeps answering while the client port drains), else on ``app``; ``Connection: close``
        while draining applies to the client API."""
        hooks = admin_app if admin_app is not None else app
        hooks.router.add_post(DRAIN_PATH, self.handle_drain)
        hooks.router.add_get(MODEL_IDLE_PATH, self.handle_model_idle)
        # What a kubelet before 1.23 asks for when a hook's path starts with a slash.
        hooks.router.add_get("/" + MODEL_IDLE_PATH, self.handle_model_idle)
        app.on_response_prepare.append(self._close_when_draining)

    async def released(self) -> None:
        """Return once no model-server preStop is waiting here: the router must outlive them,
        or the kubelet would stop the model server at once."""
        await self._no_waiters.wait()

    async def _close_when_draining(
        self, request: web.Request, response: web.StreamResponse
    ) -> None:
        if self.draining_since is not None:
            response.force_close()
            # Said too: this hook runs after the headers were derived from keep-alive.
            response.headers["Connection"] = "close"

    async def handle_drain(self, request: web.Request) -> web.StreamResponse:
        if request.remote not in LOCAL_PEERS:
            return web.json_response(
                {"error": {"message": "drain is accepted from inside the pod only",
                           "type": "forbidden"}},
                status=403,
            )  # fmt: skip
        self.begin_drain("preStop")
        assert self.draining_since is not None
        left = self.drain_delay - (time.monotonic() - self.draining_since)
        if left > 0:
            await asyncio.sleep(left)
        return web.json_response({"status": "draining", "drainDelay": self.drain_delay})

    async def handle_model_idle(self, request: web.Request) -> web.StreamResponse:
        if self.waiters >= MAX_WAITERS:
            return web.json_response(
                {"error": {"message": "too many waiters", "type": "rate_limit"}}, status=429
            )
        self.waiters += 1
        self._no_waiters.clear()
        started = time.monotonic()
        try:
            await asyncio.sleep(self.drain_delay)
            idle = await self._wait_model_idle(started + self.drain_delay + self.drain_seconds)
        finally:
            self.waiters -= 1
            if self.waiters == 0:
                self._no_waiters.set()
        waited = round(time.monotonic() - started, 3)
        log.info(
            "model server released",
            extra={"event": "model_idle", "idle": idle, "waited_seconds": waited},
        )
        return web.json_response({"idle": idle, "waitedSeconds": waited})

    def _local_model(self) -> tuple[str, str] | None:
        if self.local_tier is None:
            return None
        for t in self.router.config.source.tiers:
            if t.name == self.local_tier:
                return (t.local_url or t.url).rstrip("/"), t.engine
        return None

    async def _wait_model_idle(self, deadline: float) -> bool:
        """True once the local model server is idle (or gone); False at the deadline."""
        local = self._local_model()
        if local is None:
            return True
        url, engine = local
        quiet = 0
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{url}/metrics") as resp:
                        status, text = resp.status, await resp.text()
                except aiohttp.ClientConnectorError:
                    return True  # nothing listens any more: nothing left to protect
                except (aiohttp.ClientError, TimeoutError):
                    # A busy server answers its metrics late: busy is not idle.
                    quiet = 0
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                held = in_flight(text, engine) if status == 200 else None
                if held is None:
                    return True  # no gauge to wait on: the drain delay was all we could do
                quiet = quiet + 1 if held <= 0 else 0
                if quiet >= IDLE_POLLS:
                    return True
                await asyncio.sleep(POLL_SECONDS)
        return False
