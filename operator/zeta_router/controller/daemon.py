"""The loop of each per-ZetaRouter daemon (the control loop, the wake watch, learning)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import kopf


async def run_intervals(
    step: Callable[[], float], stopped: kopf.DaemonStopped, thread_name: str
) -> None:
    """Run ``step`` (one interval; it returns the seconds until the next), then sleep that long,
    until kopf stops the daemon.

    The step blocks (Prometheus, the apiserver, the routers), so it runs in a thread of this
    daemon's own: a sync daemon would hold one of kopf's handler threads
    (``settings.execution.max_workers``) for its whole life, and a pool shared by all ZetaRouters
    could be filled by one whose Prometheus or routers answer slowly. The sleep holds no thread,
    so any number of ZetaRouters never starve the handlers' threads."""
    running = asyncio.get_running_loop()
    own = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
    try:
        while not stopped:
            delay = await running.run_in_executor(own, step)
            await stopped.wait(delay)
    finally:
        own.shutdown(wait=False)
