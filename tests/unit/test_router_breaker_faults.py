"""The circuit breaker's bookkeeping survives anything: an exception or a cancellation thrown
in at every point where the forwarding path waits leaves every breaker sound (no probe left
claimed), the in-flight gauges at zero, the request counted once, and the next request
answered.

The forwarding coroutine is driven by :class:`Inject`, which passes every suspension through to
the event loop except the k-th, where it cancels the future waited on (as a task's
cancellation does) and throws the fault in instead; k runs from 0 until a request completes
without reaching it, so every suspension point of each scenario is hit, with warm connections
and with new ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_router_proxy import CHAT, chat, control, metric, run

from zeta_router.router.app import Router
from zeta_router.router.breaker import State


class Inject:
    def __init__(
        self, coro: Coroutine[Any, Any, Any], k: int, fault: Callable[[], BaseException]
    ) -> None:
        self.coro, self.k, self.fault = coro, k, fault
        self.injected = False

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self.coro.__await__()
        n = 0
        value: Any = None
        throw: BaseException | None = None
        while True:
            try:
                yielded = it.throw(throw) if throw is not None else it.send(value)
            except StopIteration as stop:
                return stop.value
            throw, value = None, None
            if n == self.k:
                self.injected = True
                throw = self.fault()
                # What a task's cancellation does to the future it waits on: without it, an
                # abandoned socket wait would stay registered with the event loop.
                if isinstance(yielded, asyncio.Future):
                    yielded.cancel()
            else:
                try:
                    value = yield yielded
                except BaseException as e:  # a real cancellation from outside: pass it on
                    throw = e
            n += 1


FAULTS: dict[str, Callable[[], BaseException]] = {
    "exception": lambda: RuntimeError("injected"),
    "cancellation": asyncio.CancelledError,
}
SCENARIOS: dict[str, tuple[dict[str, Any], bool]] = {
    "answer": ({}, False),
    "stream": ({"chunks": 4}, True),
    "error status, failover": ({"status": 503}, False),
    "broken body, failover": ({"body_fault": "break"}, False),
    "stream without terminator": ({"chunks": 2, "no_done": True}, True),
}


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("pool", ["warm", "cold"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_faults_at_every_await_leave_the_breakers_sound(
    fault: str, scenario: str, pool: str
) -> None:
    settings, stream = SCENARIOS[scenario]
    # cold: the tiers close every connection, so each request also connects (more awaits).
    settings = {**settings, "close_connections": pool == "cold"}

    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, **settings)
        up = router.upstreams
        fwd = router.forwarder
        assert up is not None
        assert fwd is not None
        tiers = router.config.tier_by_name
        original = fwd.forward
        k = 0
        while True:
            # small half-open (the request will be its probe), large closed.
            up._breakers.clear()
            long_ago = time.monotonic() - 100
            opened = up.breaker(tiers["small"]).attempt(long_ago)
            assert opened is not None
            opened.failure(long_ago)
            assert up.breaker(tiers["small"]).state(time.monotonic()) is State.HALF_OPEN
            inject: list[Inject] = []

            def forward(*args: Any, k: int = k, inject: list[Inject] = inject) -> Awaitable[Any]:
                inject.append(Inject(original(*args), k, FAULTS[fault]))
                return inject[-1]

            fwd.forward = forward  # type: ignore[method-assign]
            counted = metric(router, "zeta_router_requests_total")
            try:
                r = await client.post(CHAT, json=chat(f"k{k}", stream=stream))
                await r.read()
            except (TimeoutError, aiohttp.ClientError):
                pass  # the injected fault cut the connection
            fwd.forward = original  # type: ignore[method-assign]
            await _until(
                lambda n=counted: metric(router, "zeta_router_requests_total") == n + 1,
                f"the request at k={k} counted once",
            )
            await _until(
                lambda: all(metric(router, "zeta_router_inflight", tier=t) == 0 for t in tiers),
                f"nothing left in flight at k={k}",
            )
            for name, b in up.breakers().items():
                assert not b.probing, f"{name}'s probe still claimed after a fault at k={k}"
            # The next request is answered (by small if its breaker let it, else by large).
            await control(small, status=200, body_fault=None, no_done=False)
            r = await client.post(CHAT, json=chat("after"))
            assert r.status == 200, f"after a fault at k={k}: {await r.text()}"
            await control(small, **settings)
            if not inject[0].injected:
                break  # the request ran to its end: every suspension point was hit
            k += 1
        assert k >= 1  # at least one await was reached (a warm answer waits only once)

    run(t, circuitBreaker={"failureThreshold": 1, "openSeconds": 5})
