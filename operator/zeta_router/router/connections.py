"""Client connections: how long a client may take, how many may be open, and what a client sees
when it is refused or sends something that is not HTTP.

:class:`Handler` is aiohttp's per-connection protocol with the router's rules added:

- **headers timeout**: once the first byte of a request arrives, its headers must be complete
  within ``header_seconds`` (a client that trickles header bytes gets a 408 and is closed);
- **idle timeout**: a connection with no request in progress (new, or kept alive after an
  answer) is closed after ``idle_seconds`` without a byte;
- **body timeout**: enforced where the body is read (``routes.read_body``: 408);
- **connection cap**: past ``max_connections`` open connections a new one gets a 503 JSON
  answer with ``Retry-After`` and is closed, counted and logged, before the process could run
  out of descriptors;
- **malformed HTTP** gets an OpenAI-style JSON error, and the log line names the error class,
  never the bytes received (they may hold credentials or prompts).

The listening socket is the router's own (``asyncio`` ``create_server`` with this protocol), so
that draining can stop accepting while the connections in use finish.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from zeta_router.router.errors import JSON_TYPE, error_body
from zeta_router.router.metrics import RouterMetrics

log = logging.getLogger("zeta_router.router.connections")

#: Descriptors kept for everything but client and tier connections (logs, files, the loop).
FD_RESERVE = 64
#: Refused connections kept open a moment (so the client reads the 503, not a reset).
REFUSED_LINGER_SECONDS = 0.5
MAX_LINGERING = 256
_REASONS = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


@dataclass(frozen=True)
class Limits:
    """Client-side limits of one listening port (command-line settings)."""

    header_seconds: float = 10.0
    body_seconds: float = 30.0
    idle_seconds: float = 75.0
    max_connections: int = 4096


def raw_response(status: int, message: str, code: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error answer with an OpenAI-style body that closes the connection,
    for moments when no request object exists (refusal, a header timeout)."""
    body = error_body(
        message,
        type_="invalid_request_error" if status < 500 else "service_unavailable",
        code=code,
    )
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        f"Content-Type: {JSON_TYPE}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def fd_budget(wanted: int, tiers: int, tier_connections: int) -> int:
    """Raise the soft descriptor limit as far as needed and allowed, and return how many client
    connections fit under it. Each client request holds at most one connection to a tier at a
    time, but a tier's pool keeps up to as many as were busy at once, so with ``c`` client
    connections up to ``min(c, tier_connections)`` per tier are counted, plus a reserve."""

    def fits(c: int, limit: int) -> bool:
        return c + tiers * min(c, tier_connections) + FD_RESERVE <= limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + tiers * min(wanted, tier_connections) + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or fits(wanted, soft):
        return wanted
    low, high = 1, wanted  # the largest c that fits (at least 1)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid, soft):
            low = mid
        else:
            high = mid - 1
    return low


class Guard:
    """What one listening port's connections share: the limits, the count of open connections
    and of requests in progress, when traffic last arrived (a draining router waits for it to
    stop: ``router.lifecycle``), and the metrics (None for the admin port)."""

    def __init__(self, limits: Limits, metrics: RouterMetrics | None, port: str) -> None:
        self.limits = limits
        self.metrics = metrics
        self.port = port
        self.open = 0
        self.busy = 0
        self.last_arrival = time.monotonic()
        self._idle = asyncio.Event()
        self._idle.set()
        self.lingering = 0
        self.refused = 0
        self._last_refusal_log = 0.0
        self._refused_since_log = 0

    def refuse(self) -> None:
        self.refused += 1
        self._refused_since_log += 1
        if self.metrics is not None:
            self.metrics.connections_refused.inc()
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:  # one line a second at most, with the count
            log.warning(
                "connection refused: too many open connections",
                extra={
                    "event": "connection_refused",
                    "port": self.port,
                    "open": self.open,
                    "max_connections": self.limits.max_connections,
                    "refused": self._refused_since_log,
                },
            )
            self._last_refusal_log = now
            self._refused_since_log = 0

    def timed_out(self, phase: str) -> None:
        if self.metrics is not None:
            self.metrics.client_timeout(phase)

    def arrived(self) -> None:
        self.last_arrival = time.monotonic()

    def set_busy(self, delta: int) -> None:
        self.busy += delta
        if self.busy:
            self._idle.clear()
        else:
            self._idle.set()

    async def wait_idle(self, seconds: float) -> bool:
        """Wait until no request is in progress; False if some still are after ``seconds``."""
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def changed(self, delta: int) -> None:
        self.open += delta
        if self.metrics is not None:
            self.metrics.connections_open.set(self.open)


class Handler(RequestHandler):
    """aiohttp's connection protocol, with the limits of :class:`Guard` (see the module)."""

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.refused = False
        self.finishing = False  # answered outside a request (408): input is dropped now
        self.active = False  # a request is being handled or answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._transport: asyncio.Transport | None = None

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have its methods)
        transport = cast(asyncio.Transport, base)
        self._transport = transport
        guard = self.guard
        guard.arrived()
        if guard.open >= guard.limits.max_connections:
            self.refused = True
            guard.refuse()
            guard.lingering += 1
            self._answer_and_close(
                transport,
                raw_response(
                    503,
                    "the router has too many open connections; retry shortly",
                    "too_many_connections",
                    retry_after=1,
                ),
            )
            return
        guard.changed(+1)
        super().connection_made(transport)
        self._arm("idle", guard.limits.idle_seconds)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self.refused:
            self.guard.lingering = max(0, self.guard.lingering - 1)
            return
        self._set_active(False)
        self.guard.changed(-1)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused or self.finishing:
            return  # read and dropped: the answer is on its way
        if not self.active and self._timer_kind != "headers":
            # The first byte of a request: its headers must follow in time.
            self._arm("headers", self.guard.limits.header_seconds)
        super().data_received(data)

    # -- requests (called by the routes' middleware, and by aiohttp when an answer is sent) --

    def request_started(self) -> None:
        self.guard.arrived()
        self._set_active(True)
        self._disarm()

    def log_access(self, request: Any, response: Any, time: float | None) -> None:
        # aiohttp calls this once an answer is completely written: the connection is idle.
        self._set_active(False)
        self._arm("idle", self.guard.limits.idle_seconds)
        super().log_access(request, response, time)

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            self.guard.set_busy(1 if active else -1)

    # -- timers ------------------------------------------------------------------------------

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._timer_kind = kind
        self._timer = self._loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_kind = ""

    def _expired(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, ""
        transport = self._transport
        if self.active or transport is None or transport.is_closing():
            return
        self.guard.timed_out(kind)
        if kind == "headers":
            self.finishing = True
            self._answer_and_close(
                transport,
                raw_response(
                    408,
                    f"the request headers did not arrive within "
                    f"{self.guard.limits.header_seconds:g}s",
                    "request_timeout",
                ),
            )
        else:
            transport.close()

    def _answer_and_close(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Send ``answer`` and close so that the client reads it: half-close first and drop
        what still arrives for a moment (closing with unread input would send a reset, which
        can destroy the answer in flight)."""
        transport.write(answer)
        if self.guard.lingering > MAX_LINGERING or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._loop.call_later(REFUSED_LINGER_SECONDS, transport.close)

    # -- errors ------------------------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """What aiohttp answers for a request it cannot parse (or an error past the routes):
        OpenAI-style JSON, and a log line without the bytes received."""
        if status >= 500:
            log.error(
                "error outside the request handlers",
                exc_info=exc,
                extra={"event": "internal_error", "status": status},
            )
            body = error_body("internal router error", type_="server_error", code="internal_error")
        else:
            log.info(
                "malformed HTTP request",
                extra={
                    "event": "bad_http_request",
                    "status": status,
                    "error": type(exc).__name__ if exc is not None else None,
                    "port": self.guard.port,
                },
            )
            body = error_body(
                f"malformed HTTP request ({type(exc).__name__ if exc else 'unreadable'})",
                type_="invalid_request_error",
                code="bad_http_request",
            )
        resp = web.Response(status=status, body=body, content_type=JSON_TYPE)
        resp.force_close()
        return resp


class Listener:
    """A listening socket whose connections are :class:`Handler`\\ s of ``runner``'s app."""

    def __init__(self, runner: web.AppRunner, guard: Guard, **handler_args: Any) -> None:
        self.runner = runner
        self.guard = guard
        self.handler_args = handler_args
        self.server: asyncio.Server | None = None

    def _protocol(self) -> Handler:
        manager = self.runner.server
        assert manager is not None, "runner not set up"
        return Handler(
            manager,
            self.guard,
            loop=asyncio.get_running_loop(),
            # aiohttp's own idle close only as a backstop: the timers above decide, and its
            # timer (armed at connect, not reset by incoming bytes) must not cut a request
            # whose headers are still within their time.
            keepalive_timeout=self.guard.limits.idle_seconds + self.guard.limits.header_seconds,
            access_log=None,
            **self.handler_args,
        )

    async def start(self, host: str, port: int, backlog: int = 2048) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._protocol, host, port, backlog=backlog, reuse_address=True
        )
        return int(self.server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        if self.server is not None:
            self.server.close()

    def connections(self) -> list[RequestHandler]:
        manager = self.runner.server
        return list(manager.connections) if manager is not None else []
