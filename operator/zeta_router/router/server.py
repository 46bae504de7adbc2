"""Running the router: event loop, the two listening ports (the client API, and the admin port
with health and metrics), config watcher, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from zeta_router.api.lifecycle import DrainTiming
from zeta_router.router.app import Router
from zeta_router.router.connections import Guard, Limits, Listener
from zeta_router.router.lifecycle import Lifecycle
from zeta_router.router.reload import ConfigWatcher, KeyWatcher
from zeta_router.router.routes import build_admin_app, build_app

log = logging.getLogger("zeta_router.router.server")

#: The admin port is for the kubelet and Prometheus: a few connections suffice.
ADMIN_LIMITS = Limits(header_seconds=10.0, body_seconds=10.0, idle_seconds=75.0, max_connections=64)
#: Outside a pod (no preStop hook): a drain asked for ends at once.
NO_DRAIN_DELAY = DrainTiming(delay=0.0, quiet=0.0, timeout=0.0)
#: After the drain deadline, how long cancelled requests get to unwind.
CANCEL_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class Address:
    host: str
    port: int


async def serve(
    router: Router,
    *,
    client: Address,
    admin: Address,
    limits: Limits | None = None,
    watcher: ConfigWatcher | None = None,
    key_watcher: KeyWatcher | None = None,
    drain_seconds: float = 30.0,
    drain: DrainTiming = NO_DRAIN_DELAY,
    local_tier: str | None = None,
    on_listening: Callable[[int, int], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting clients, let requests in flight
    finish for up to ``drain_seconds`` (``/readyz`` answers 503 meanwhile), cancel what is left,
    and stop. SIGHUP re-reads the config file and the request key file at once. In a pod, the
    preStop hooks begin the drain earlier, on the admin port, and end it once traffic has stopped
    arriving (``zeta_router.router.lifecycle``; ``drain``), and the router outlives the model
    server's preStop that waits on it."""
    limits = limits or Limits()
    app, admin_app = build_app(router), build_admin_app(router)
    guard = Guard(limits, router.metrics, "api")
    lifecycle = Lifecycle(router, guard, drain, drain_seconds, local_tier)
    lifecycle.install(app, admin_app)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=CANCEL_GRACE_SECONDS)
    admin_runner = web.AppRunner(
        admin_app, handler_cancellation=True, shutdown_timeout=CANCEL_GRACE_SECONDS
    )
    await runner.setup()
    await admin_runner.setup()
    listener = Listener(runner, guard)
    admin_listener = Listener(admin_runner, Guard(ADMIN_LIMITS, None, "admin"))
    try:
        port = await listener.start(client.host, client.port)
        admin_port = await admin_listener.start(admin.host, admin.port)
    except OSError as exc:
        listener.stop_accepting()
        await admin_runner.cleanup()
        await runner.cleanup()
        raise SystemExit(f"zeta-router router: cannot listen: {exc}") from None
    cfg = router.config
    log.info(
        "router listening",
        extra={
            "event": "listening",
            "host": client.host,
            "port": port,
            "admin_host": admin.host,
            "admin_port": admin_port,
            "generation": cfg.generation,
            "tiers": {t.name: t.url for t in cfg.tiers},
            "contexts": {c.name: list(c.selector.cuts) for c in cfg.contexts.values()},
            "default_context": cfg.default_context,
            "limits": {
                "header_seconds": limits.header_seconds,
                "body_seconds": limits.body_seconds,
                "idle_seconds": limits.idle_seconds,
                "max_connections": limits.max_connections,
            },
        },
    )
    if on_listening is not None:
        on_listening(port, admin_port)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def _stop(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig)
    watch_tasks = []
    if watcher is not None or key_watcher is not None:

        def check_now() -> None:
            for w in (watcher, key_watcher):
                if w is not None:
                    w.check_now()

        loop.add_signal_handler(signal.SIGHUP, check_now)
    for w in (watcher, key_watcher):
        if w is not None:
            watch_tasks.append(loop.create_task(w.run()))
    try:
        await stop.wait()
    finally:
        lifecycle.end_drain()
        await _drain(router, listener, drain_seconds, received[0] if received else None)
        for task in watch_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        # A model server's preStop may still wait on the admin port for its last requests.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain.timeout + drain_seconds):
                await lifecycle.released()
        admin_listener.stop_accepting()
        await admin_runner.cleanup()
        log.info("router stopped", extra={"event": "stopped"})


async def _drain(
    router: Router, listener: Listener, drain_seconds: float, signal_name: str | None
) -> None:
    """Stop accepting clients, close idle connections, wait for the requests in flight until
    the deadline, then cancel those left. The admin port keeps answering (``/readyz``: 503).

    In a pod this comes after the preStop drain, once no connection or request has arrived
    for the quiet period: the listening socket's backlog is empty (closing it resets what it
    holds) and no connection was accepted so recently that its request may still be on the
    way (closing an idle connection drops a request that crosses the close)."""
    started = time.monotonic()
    router.draining = True
    listener.stop_accepting()
    log.info(
        "draining: no new connections, waiting for requests in flight",
        extra={
            "event": "draining",
            "signal": signal_name,
            "drain_seconds": drain_seconds,
            "in_flight": listener.guard.busy,
        },
    )
    for conn in listener.connections():
        conn.close()  # idle keep-alive connections close now, busy ones after their answer
    # Client requests only: a model-server preStop waiting on the admin port is no request.
    await listener.guard.wait_idle(started + drain_seconds - time.monotonic())
    left = listener.guard.busy
    if left:
        log.warning(
            "drain deadline reached: cancelling the requests still in flight",
            extra={"event": "drain_deadline", "cancelled": left},
        )
        for conn in listener.connections():
            conn.force_close()
            if conn.transport is not None:
                conn.transport.close()  # the handler is cancelled as its connection goes
        await listener.guard.wait_idle(CANCEL_GRACE_SECONDS)
    log.info(
        "drained",
        extra={
            "event": "drained",
            "seconds": round(time.monotonic() - started, 3),
            "cancelled": left,
        },
    )


def new_event_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """uvloop when installed (measured: see benchmarks/router_overhead.py), else asyncio's."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
