"""Every upstream failure is a tier failure, whenever it happens: before the headers, in the
body, or as a body that is not what it says. Non-streamed answers fail over while nothing has
reached the client; a stream that breaks or stops short ends with an OpenAI-style error event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_router_proxy import CHAT, chat, control, metric, run, stats

from zeta_router.router.app import Options, Router
from zeta_router.router.replicas import TierReplicas


@pytest.mark.parametrize(
    ("fault", "reason"),
    [({"body_fault": "break"}, "broken"), ({"body_fault": "garbage"}, "bad_response"),
     ({"body_fault": "html"}, "bad_response")],
)  # fmt: skip
def test_a_broken_non_streamed_answer_fails_over_and_opens_the_breaker(
    fault: dict[str, Any], reason: str
) -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, **fault)
        for i in range(3):
            r = await client.post(CHAT, json=chat(f"n{i}"))
            assert r.status == 200
            assert r.headers["x-zeta-tier"] == "large"
            assert (await r.json())["choices"][0]["message"]["content"] == f"echo: n{i}"
        labels = {"from": "small", "to": "large", "reason": reason}
        assert metric(router, "zeta_router_failovers_total", **labels) == 3
        assert metric(router, "zeta_router_tier_failures_total", tier="small", reason=reason) == 3
        # Three failures in a row: the breaker is open, small is not even tried.
        before = (await stats(small))["requests"]
        r = await client.post(CHAT, json=chat("skip"))
        assert r.headers["x-zeta-tier"] == "large"
        assert (await stats(small))["requests"] == before
        assert metric(router, "zeta_router_failovers_total", reason="circuit_open") == 1

    run(t, circuitBreaker={"failureThreshold": 3, "openSeconds": 60})


def test_a_broken_answer_of_the_only_tier_is_a_502() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, body_fault="break")
        r = await client.post(CHAT, json=chat())
        assert r.status == 502
        assert (await r.json())["error"]["code"] == "upstream_broken"
        assert r.headers["x-zeta-tier"] == "none"
        assert metric(router, "zeta_router_requests_total", tier="none", code="502") == 1

    run(t, failover=False)


def test_a_stream_without_its_terminator_ends_with_an_error_event() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=3, no_done=True)
        r = await client.post(CHAT, json=chat(stream=True))
        assert r.status == 200
        text = (await r.read()).decode()
        events = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
        assert len(events) == 4
        assert "[DONE]" not in events
        assert json.loads(events[-1])["error"]["code"] == "upstream_broken"
        assert metric(router, "zeta_router_tier_failures_total", reason="truncated") == 1

    run(t)


def test_a_stream_that_breaks_before_its_first_event_fails_over() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=3, abort_after=0)
        r = await client.post(CHAT, json=chat("s", stream=True))
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "large"
        events = [ln for ln in (await r.read()).decode().split("\n") if ln.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert metric(router, "zeta_router_tier_failures_total", tier="small") == 1

    run(t)


def test_a_slow_whole_answer_is_a_504_and_a_tier_failure() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, hang=True)
        r = await client.post(CHAT, json=chat())
        assert r.status == 504
        assert (await r.json())["error"]["code"] == "upstream_timeout"
        assert metric(router, "zeta_router_tier_failures_total", reason="timeout") >= 1
        assert metric(router, "zeta_router_requests_total", tier="none", code="504") == 1

    run(t, timeouts={"totalSeconds": 0.5, "firstByteSeconds": 10})


def test_a_tier_skipped_for_its_breaker_is_the_last_resort() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, status=503)
        r = await client.post(CHAT, json=chat())
        assert r.headers["x-zeta-tier"] == "large"  # small failed once: its breaker opens
        await control(small, status=200)  # small recovers, its breaker does not know yet
        await control(large, status=503)
        r = await client.post(CHAT, json=chat())
        # small was skipped, large failed: small is tried anyway rather than answering 503.
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "small"
        labels = {"from": "large", "to": "small", "reason": "http_503"}
        assert metric(router, "zeta_router_failovers_total", **labels) == 1
        r = await client.post(CHAT, json=chat())  # and its breaker closed on that answer
        assert r.headers["x-zeta-tier"] == "small"
        assert metric(router, "zeta_router_failovers_total", reason="circuit_open") == 1

    run(t, circuitBreaker={"failureThreshold": 1, "openSeconds": 60})


def test_waiting_for_a_connection_slot_is_not_the_tier_timing_out() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=40, chunk_delay=0.05)
        # The only connection this router may have to small is taken by a long stream...
        first = await client.post(CHAT, json=chat("long", stream=True))
        assert first.headers["x-zeta-tier"] == "small"
        # ...so the next request waits for it, gives up after firstByteSeconds and fails over,
        # without counting against small's breaker (which opens at the first failure here).
        r = await client.post(CHAT, json=chat("next"))
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "large"
        assert metric(router, "zeta_router_tier_failures_total", tier="small", reason="busy") == 1
        assert metric(router, "zeta_router_tier_failures_total", reason="timeout") == 0
        await first.read()
        up = router.upstreams
        assert up is not None
        assert not up.breaker(router.config.tiers[0]).probing
        r = await client.post(CHAT, json=chat("after"))
        assert r.headers["x-zeta-tier"] == "small"  # its breaker never opened

    run(
        t,
        options=Options(tier_connections=1),
        circuitBreaker={"failureThreshold": 1, "openSeconds": 60},
        timeouts={"firstByteSeconds": 0.5},
    )


def test_a_tier_with_no_replica_fails_over_without_an_exception() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        assert router.upstreams is not None
        router.upstreams.replicas.tiers["small"] = TierReplicas.of([])  # asleep, or all gone
        r = await client.post(CHAT, json=chat("nobody"))
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "large"
        labels = {"tier": "small", "reason": "no_replica"}
        assert metric(router, "zeta_router_tier_failures_total", **labels) == 1

    run(t)
