"""How a router in a ZetaRouter pod stops without losing a request (see
``zeta_router.api.lifecycle`` for the whole sequence and the grace period).

The endpoints are on the admin port (which keeps answering while the client port drains):

- ``GET /drain/router`` (the router container's preStop, an HTTP hook run by the kubelet; and
  ``POST /drain``, from 127.0.0.1 only, which ``zeta-router drain`` sends by hand from inside
  the pod): the router stops being ready (``/readyz`` answers 503) and every response from
  then on carries ``Connection: close``, so clients open their next connection through a
  Service, to a pod that stays; it keeps accepting and serving whatever arrives, and answers
  once the drain has ended: the drain delay has passed and no new connection or request has
  reached the client port for the quiet period (at most the drain timeout after it began).
  SIGTERM comes after that (the router then stops accepting and finishes what is in flight).
- ``GET /drain/model-idle`` (the model-server container's preStop, an HTTP hook run by the
  kubelet, in parallel with the router's): begins the drain too (the pod is stopping), and
  answers once it has ended, the client requests in flight have finished, and the model server
  of this pod has held no request and done no work for the quiet period (its own in-flight
  gauges and work counters, read from its ``/metrics`` on 127.0.0.1: requests from any router
  count, and other pods' routers still send it some until they learn of its removal), or
  cannot be reached any more, or the router's total request timeout has passed. It changes
  nothing the router container's own hook would not, so it needs no protection beyond a cap
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

from zeta_router.api.engines import IN_FLIGHT, WORK_DONE
from zeta_router.api.lifecycle import (
    DRAIN_PATH,
    MODEL_IDLE_PATH,
    ROUTER_DRAIN_PATH,
    DrainTiming,
    drain_ends_at,
)
from zeta_router.router.config import RuntimeConfig

log = logging.getLogger("zeta_router.router.lifecycle")

LOCAL_PEERS = frozenset({"127.0.0.1", "::1"})
POLL_SECONDS = 0.5
IDLE_POLLS = 2
"""Consecutive polls that must see the model server idle (a request may be on its way)."""
MAX_WAITERS = 4


def _metric_sum(metrics_text: str, wanted: tuple[str, ...]) -> float | None:
    """The sum of the samples of the metrics ``wanted`` in a Prometheus text (None: none)."""
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


def in_flight(metrics_text: str, engine: str) -> float | None:
    """Requests a model server holds, from its Prometheus text (None: no such gauge)."""
    return _metric_sum(metrics_text, IN_FLIGHT.get(engine, ()))


def work_done(metrics_text: str, engine: str) -> float | None:
    """A count that moves whenever the model server works (None: no such counter)."""
    return _metric_sum(metrics_text, WORK_DONE.get(engine, ()))


@dataclass
class ModelQuiet:
    """Whether a stopping pod's model server has been quiet long enough to stop: it held no
    request and did no work for ``quiet`` seconds, over at least :data:`IDLE_POLLS` reads.
    Other pods' routers send requests straight to it (it is a replica of its tier), and learn
    of its removal by name resolution, seconds late: while they still do, it keeps serving.
    Pure: the caller reads the clock and the metrics."""

    quiet: float
    since: float | None = None
    reads: int = 0
    work: float | None = None

    def observe(self, now: float, held: float | None, work: float | None) -> bool:
        moved = work is not None and self.work is not None and work != self.work
        self.work = work
        if held is None or held > 0:
            self.since, self.reads = None, 0
            return False
        if moved:  # a request came and went since the last read: quiet from now on
            self.since, self.reads = now, 1
            return False
        if self.since is None:
            self.since = now
        self.reads += 1
        return self.reads >= IDLE_POLLS and now - self.since >= self.quiet

    def busy(self) -> None:
        """A read that failed or came late: a busy server is not an idle one."""
        self.since, self.reads = None, 0


class Drainable(Protocol):
    """What the lifecycle needs of the router: its readiness switch and its configuration."""

    draining: bool

    @property
    def config(self) -> RuntimeConfig: ...


class Traffic(Protocol):
    """What the lifecycle needs of the client port (``connections.Guard``)."""

    @property
    def last_arrival(self) -> float:
        """``time.monotonic()`` of the last connection accepted or request begun."""

    @property
    def busy(self) -> int:
        """Requests being handled or answered."""


@dataclass
class Lifecycle:
    router: Drainable
    traffic: Traffic
    timing: DrainTiming
    drain_seconds: float
    local_tier: str | None = None
    draining_since: float | None = None
    drained_after: float | None = None
    """Seconds from the drain's beginning to its end, once it has ended."""
    waiters: int = field(default=0)
    _no_waiters: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _drained: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _watch: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._no_waiters.set()

    def begin_drain(self, why: str) -> None:
        if self.draining_since is not None:
            return
        self.draining_since = time.monotonic()
        self.router.draining = True
        self._watch = asyncio.get_running_loop().create_task(self._watch_traffic())
        log.info(
            "draining: not ready, connections closed after each response, serving until "
            "no new traffic arrives",
            extra={
                "event": "drain_begin",
                "why": why,
                "drain_delay": self.timing.delay,
                "quiet_seconds": self.timing.quiet,
                "drain_timeout": self.timing.timeout,
            },
        )

    def end_drain(self) -> None:
        """SIGTERM came (the kubelet stops waiting, or no hook ran): the router stops accepting
        now, so whatever waits for the drain's end goes on."""
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
            log.info(
                "drain ended: SIGTERM while traffic still arrived",
                extra={"event": "drain_end", "seconds": self._seconds_since_begin(),
                       "quiet_seconds": None, "timed_out": True},
            )  # fmt: skip
        self._drained.set()

    def _seconds_since_begin(self) -> float | None:
        if self.draining_since is None:
            return None
        return round(time.monotonic() - self.draining_since, 3)

    async def drained(self) -> None:
        """Return once the drain (begun) has ended."""
        await self._drained.wait()

    async def _watch_traffic(self) -> None:
        began = self.draining_since
        assert began is not None
        while True:
            now = time.monotonic()
            ends = drain_ends_at(began, self.traffic.last_arrival, self.timing)
            if now >= ends:
                break
            await asyncio.sleep(ends - now)
        self.drained_after = round(time.monotonic() - began, 3)
        quiet_for = time.monotonic() - max(began, self.traffic.last_arrival)
        log.info(
            "drain ended: no new traffic" if quiet_for >= self.timing.quiet
            else "drain ended: timeout reached while traffic still arrived",
            extra={
                "event": "drain_end",
                "seconds": self.drained_after,
                "quiet_seconds": round(quiet_for, 3),
                "timed_out": quiet_for < self.timing.quiet,
            },
        )  # fmt: skip
        self._drained.set()

    def install(self, app: web.Application, admin_app: web.Application | None = None) -> None:
        """The hooks' endpoints go on ``admin_app`` when the router has one (the port that
        keeps answering while the client port drains), else on ``app``; ``Connection: close``
        while draining applies to the client API."""
        hooks = admin_app if admin_app is not None else app
        hooks.router.add_post(DRAIN_PATH, self.handle_drain)
        hooks.router.add_get(ROUTER_DRAIN_PATH, self.handle_drain_hook)
        hooks.router.add_get(MODEL_IDLE_PATH, self.handle_model_idle)
        # What a kubelet before 1.23 asks for when a hook's path starts with a slash.
        hooks.router.add_get("/" + ROUTER_DRAIN_PATH, self.handle_drain_hook)
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
        return await self.handle_drain_hook(request)

    async def handle_drain_hook(self, request: web.Request) -> web.StreamResponse:
        """The router container's preStop (the kubelet's GET, from the node): whoever reaches the
        admin port could already start the drain through the model server's hook, so it is
        accepted from the same peers (the NetworkPolicy admits only scrapers and the operator)."""
        self.begin_drain("preStop")
        await self.drained()
        return web.json_response({"status": "drained", "drainedAfterSeconds": self.drained_after})

    async def handle_model_idle(self, request: web.Request) -> web.StreamResponse:
        if self.waiters >= MAX_WAITERS:
            return web.json_response(
                {"error": {"message": "too many waiters", "type": "rate_limit"}}, status=429
            )
        self.waiters += 1
        self._no_waiters.clear()
        started = time.monotonic()
        try:
            # The kubelet runs both containers' hooks at once: the pod is stopping either way.
            self.begin_drain("model-server preStop")
            await self.drained()
            deadline = time.monotonic() + self.drain_seconds
            idle = await self._wait_router_idle(deadline)
            idle = await self._wait_model_idle(deadline) and idle
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

    async def _wait_router_idle(self, deadline: float) -> bool:
        """True once no client request is in flight in this router (they may need the model
        server still: a stream being answered, a failover to the local tier)."""
        while self.traffic.busy > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    def _local_model(self) -> tuple[str, str] | None:
        if self.local_tier is None:
            return None
        for t in self.router.config.source.tiers:
            if t.name == self.local_tier:
                return (t.local_url or t.url).rstrip("/"), t.engine
        return None

    async def _wait_model_idle(self, deadline: float) -> bool:
        """True once the local model server has been quiet for the drain's quiet period (or is
        gone); False at the deadline."""
        local = self._local_model()
        if local is None:
            return True
        url, engine = local
        state = ModelQuiet(self.timing.quiet)
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(f"{url}/metrics") as resp:
                        status, text = resp.status, await resp.text()
                except aiohttp.ClientConnectorError:
                    return True  # nothing listens any more: nothing left to protect
                except (aiohttp.ClientError, TimeoutError):
                    state.busy()
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                held = in_flight(text, engine) if status == 200 else None
                if held is None:
                    return True  # no gauge to wait on: the drain delay was all we could do
                if state.observe(time.monotonic(), held, work_done(text, engine)):
                    return True
                await asyncio.sleep(POLL_SECONDS)
        return False
