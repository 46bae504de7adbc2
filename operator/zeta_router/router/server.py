"""Running the router: event loop, listening socket, config watcher, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from zeta_router.router.app import Router
from zeta_router.router.lifecycle import Lifecycle
from zeta_router.router.reload import ConfigWatcher
from zeta_router.router.routes import build_app

log = logging.getLogger("zeta_router.router.server")


async def serve(
    router: Router,
    *,
    host: str,
    port: int,
    watcher: ConfigWatcher | None = None,
    drain_seconds: float = 30.0,
    drain_delay: float = 0.0,
    local_tier: str | None = None,
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish for up
    to ``drain_seconds`` before closing. SIGHUP re-reads the config file at once. In a pod, the
    preStop hooks drain first (``zeta_router.router.lifecycle``; ``drain_delay``)."""
    app = build_app(router)
    Lifecycle(router, drain_delay, drain_seconds, local_tier).install(app)
    runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=drain_seconds, access_log=None
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"zeta-router router: cannot listen on {host}:{port}: {exc}") from None
    bound_port = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound_port = int(addr[1])
            break
    cfg = router.config
    log.info(
        "router listening",
        extra={
            "event": "listening",
            "host": host,
            "port": bound_port,
            "generation": cfg.generation,
            "tiers": {t.name: t.url for t in cfg.tiers},
            "contexts": {c.name: list(c.selector.cuts) for c in cfg.contexts.values()},
            "default_context": cfg.default_context,
        },
    )
    if on_listening is not None:
        on_listening(host, bound_port)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def _stop(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, sig)
    watch_task = None
    if watcher is not None:
        loop.add_signal_handler(signal.SIGHUP, watcher.check_now)
        watch_task = loop.create_task(watcher.run())
    try:
        await stop.wait()
    finally:
        router.draining = True
        log.info(
            "draining: no new connections, waiting for requests in flight",
            extra={
                "event": "draining",
                "signal": received[0] if received else None,
                "drain_seconds": drain_seconds,
            },
        )
        if watch_task is not None:
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("router stopped", extra={"event": "stopped"})


def new_event_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """uvloop when installed (measured: see benchmarks/router_overhead.py), else asyncio's."""
    if kind == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
