"""The request path end to end in one process: the router in front of fake upstreams that
show the faults on demand (error statuses, slow answers, broken streams)."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from support.inprocess import admin_client, fake_server, router_client, server_url
from support.routing_files import FLAT_SCORER, routing_config
from zeta_router.router.app import Options, Router

CHAT = "/v1/chat/completions"


def metric(router: Router, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(router.metrics.render().decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


async def control(up: TestServer, **settings: Any) -> None:
    async with aiohttp.ClientSession() as s, s.post(server_url(up) + "/_control", json=settings):
        pass


async def stats(up: TestServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(server_url(up) + "/_stats") as r:
        data: dict[str, Any] = await r.json()
        return data


Env = tuple[TestClient[Any, Any], Router, TestServer, TestServer]


@asynccontextmanager
async def env(
    thresholds: dict[str, list[float]] | None = None,
    options: Options | None = None,
    small_url: str | None = None,
    **extra: Any,
) -> AsyncIterator[Env]:
    async with fake_server() as small, fake_server() as large:
        cfg = routing_config(
            {"small": small_url or server_url(small), "large": server_url(large)},
            thresholds or {"default": [0.6], "ZetaHRM": [0.3]},  # flat score 0.5
            scorer=FLAT_SCORER,
            **extra,
        )
        cfg["tiers"][1]["servedModelName"] = "big-model"
        async with router_client(cfg, options) as (client, router):
            yield client, router, small, large


def run(test: Callable[..., Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        async with env(**kw) as e:
            await test(*e)

    asyncio.run(main())


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


def test_decision_headers_context_and_model_rewrite() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        r = await client.post(CHAT, json=chat("a", model="whatever"))
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "small"
        assert r.headers["x-zeta-context"] == "default"
        assert r.headers["x-zeta-score"] == "0.5000"
        info = router.signer.verify_request_id(r.headers["x-request-id"])
        assert (info.context, info.decided, info.served) == ("default", "small", "small")
        assert info.score == 0.5
        assert (await r.json())["model"] == "whatever"  # the name the client asked for

        r = await client.post(CHAT, json=chat("b", model="assistant/ZetaHRM"))
        assert r.headers["x-zeta-tier"] == "large"
        assert r.headers["x-zeta-context"] == "ZetaHRM"
        assert (await r.json())["model"] == "assistant/ZetaHRM"

        h = {"X-Zeta-Context": "ZetaHRM", "X-Client-Request-Id": "my-id-1"}
        r = await client.post(CHAT, json=chat("c"), headers=h)
        assert r.headers["x-zeta-tier"] == "large"
        assert r.headers["x-client-request-id"] == "my-id-1"
        assert (await r.json())["model"] == "assistant"  # no model asked: the router's name

        # Upstream got its served model name, or no model at all; the request id the client
        # got, and the client's own id.
        assert (await stats(large))["models"] == {"big-model": 2}
        assert (await stats(small))["models"] == {"None": 1}
        assert r.headers["x-request-id"] in (await stats(large))["request_ids"]
        assert (await stats(large))["client_request_ids"] == {"my-id-1": 1}

    run(t)


def test_streaming_passes_events_through_with_model_rewritten() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=5)
        r = await client.post(CHAT, json=chat("s", stream=True, model="assistant"))
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["x-zeta-tier"] == "small"
        raw = (await r.read()).decode()
        events = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        parsed = [json.loads(e) for e in events[:-1]]
        assert len(parsed) == 5
        assert {p["model"] for p in parsed} == {"assistant"}
        assert "".join(p["choices"][0]["delta"]["content"] for p in parsed) == "echo: s 1 2 3 4"
        assert metric(router, "zeta_router_upstream_ttft_seconds_count", tier="small") == 1

    run(t)


def test_forced_tier_and_stickiness() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Tier": "large"})
        assert r.headers["x-zeta-tier"] == "large"
        assert "x-zeta-session" not in r.headers  # no session asked for
        # A conversation whose first turn went large (ZetaHRM) stays large in the default
        # context, because the request carries that turn.
        h = {"X-Zeta-Context": "ZetaHRM"}
        first = [{"role": "user", "content": "q1"}]
        r = await client.post(CHAT, json={"messages": first}, headers=h)
        assert r.headers["x-zeta-tier"] == "large"
        turn2 = [*first, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]
        r = await client.post(CHAT, json={"messages": turn2}, headers=h)
        assert r.headers["x-zeta-tier"] == "large"
        r = await client.post(CHAT, json={"messages": turn2})  # default context: small...
        assert r.headers["x-zeta-tier"] == "small"  # ...its earlier turn is small there too
        r = await client.post(CHAT, json=chat())
        assert r.headers["x-zeta-tier"] == "small"  # no conversation: its own decision

        # A session token: X-Zeta-Session starts a session, x-zeta-session continues it.
        r = await client.post(CHAT, json=chat(), headers={**h, "X-Zeta-Session": "start"})
        assert r.headers["x-zeta-tier"] == "large"
        token = r.headers["x-zeta-session"]
        r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Session": token})
        assert r.headers["x-zeta-tier"] == "large"
        assert router.signer.verify_request_id(r.headers["x-request-id"]).sticky
        r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Session": "start"})
        assert r.headers["x-zeta-tier"] == "small"  # not a token: a new session
        # The OpenAI "user" field identifies a user, not a session: no stickiness from it.
        await client.post(CHAT, json=chat(user="u1"), headers=h)
        r = await client.post(CHAT, json=chat(user="u1"))
        assert r.headers["x-zeta-tier"] == "small"

    run(t, allowForceTier=True)


def test_feedback_is_recorded_against_the_serving_tier() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Context": "ZetaHRM"})
        rid = r.headers["x-request-id"]
        r = await client.post(
            "/v1/feedback", json={"request_id": rid, "score": 0.25, "label": "meh"}
        )
        assert r.status == 200
        body = await r.json()
        assert body["context"] == "ZetaHRM"
        assert body["tier"] == "large"
        assert (
            metric(router, "zeta_router_feedback_score_sum", context="ZetaHRM", tier="large")
            == 0.25
        )

    run(t)


def test_failover_on_503_then_429_and_circuit_breaker() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, status=503)
        for i in range(3):
            r = await client.post(CHAT, json=chat(f"n{i}"))
            assert r.status == 200
            assert r.headers["x-zeta-tier"] == "large"
        assert metric(router, "zeta_router_failovers_total", reason="http_503") == 3
        # Three consecutive failures opened small's breaker: it is skipped, not even tried.
        before = (await stats(small))["requests"]
        r = await client.post(CHAT, json=chat("skip"))
        assert r.headers["x-zeta-tier"] == "large"
        assert (await stats(small))["requests"] == before
        assert metric(router, "zeta_router_failovers_total", reason="circuit_open") == 1
        # 429 from large (chosen for ZetaHRM) fails over to small... whose breaker is open,
        # so everything is down: 503 with Retry-After.
        await control(large, status=429)
        r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Context": "ZetaHRM"})
        assert r.status == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "no_tier_available"
        assert metric(router, "zeta_router_requests_total", tier="none", code="503") == 1

    run(t, circuitBreaker={"failureThreshold": 3, "openSeconds": 60})


def test_all_tiers_overloaded_is_429() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, status=429)
        await control(large, status=429)
        r = await client.post(CHAT, json=chat())
        assert r.status == 429
        assert "Retry-After" in r.headers
        assert (await r.json())["error"]["code"] == "tiers_overloaded"

    run(t)


def test_refused_connection_fails_over_and_all_down_is_503() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        r = await client.post(CHAT, json=chat())
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "large"
        labels = {"from": "small", "to": "large", "reason": "refused"}
        assert metric(router, "zeta_router_failovers_total", **labels) == 1
        async with admin_client(router) as admin:
            r = await admin.get("/readyz")
            body = await r.json()
        assert r.status == 200
        assert body["tiers"] == {"small": False, "large": True}

    run(t, small_url=closed_port_url())


def test_first_byte_timeout_fails_over() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, delay=3.0)
        r = await client.post(CHAT, json=chat())
        assert r.status == 200
        assert r.headers["x-zeta-tier"] == "large"
        assert metric(router, "zeta_router_failovers_total", reason="timeout") == 1

    run(t, timeouts={"firstByteSeconds": 0.3})


def test_no_failover_without_failover_or_when_forced() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, status=503)
        r = await client.post(CHAT, json=chat())
        assert r.status == 503  # the tier's own answer, passed through
        assert (await stats(large))["requests"] == 0

    run(t, failover=False)


def test_a_stream_that_breaks_after_bytes_ends_with_an_error_event() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=5, abort_after=2)
        r = await client.post(CHAT, json=chat(stream=True))
        assert r.status == 200
        events = [
            line[6:] for line in (await r.read()).decode().split("\n") if line.startswith("data: ")
        ]
        assert len(events) == 3  # two chunks, then the error; no [DONE]
        error = json.loads(events[-1])["error"]
        assert error["code"] == "upstream_broken"
        assert error["type"] == "server_error"
        assert (await stats(large))["requests"] == 0  # never retried once bytes were sent
        assert metric(router, "zeta_router_tier_failures_total", tier="small", reason="broken") == 1
        assert metric(router, "zeta_router_requests_total", tier="small", code="200") == 1

    run(t)


def test_client_disconnect_cancels_the_upstream_request() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, chunks=100, chunk_delay=0.05)
        r = await client.post(CHAT, json=chat(stream=True))
        await r.content.readline()
        r.close()  # the client goes away mid-stream
        for _ in range(100):
            st = await stats(small)
            if st["cancelled"] == 1:
                break
            await asyncio.sleep(0.05)
        assert st["cancelled"] == 1
        assert st["completed"] == 0
        assert metric(router, "zeta_router_inflight", tier="small") == 0

    run(t)


def test_shadow_sampling_records_agreement(tmp_path: Path) -> None:
    log = tmp_path / "shadow.jsonl"

    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        await control(small, answer="Paris")
        await control(large, answer="paris.")
        r = await client.post(CHAT, json=chat("capital of France?"))
        assert r.headers["x-zeta-tier"] == "small"
        await control(small, answer="The answer is forty two because of reasons")
        await control(large, answer="It is forty two")
        r = await client.post(CHAT, json=chat("meaning?", stream=True))
        await r.read()
        for _ in range(100):
            if metric(router, "zeta_router_shadow_agreement_count", context="default") == 2:
                break
            await asyncio.sleep(0.05)
        assert metric(router, "zeta_router_shadow_agreement_count", context="default") == 2
        records = [json.loads(line) for line in log.read_text().splitlines()]
        assert [r["method"] for r in records] == ["exact", "f1"]
        assert records[0]["agreement"] == 1.0
        assert 0 < records[1]["agreement"] < 1
        assert "prompt" not in records[0]  # prompts are not logged by default
        # The large tier got the shadow copies, never streamed.
        assert (await stats(large))["requests"] == 2

    run(t, options=Options(shadow_log=log, seed=1), shadowSampleRate=1.0)


def test_models_on_the_client_port_health_and_metrics_on_the_admin_port() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        r = await client.get("/v1/models")
        ids = [m["id"] for m in (await r.json())["data"]]
        assert ids == ["assistant", "assistant/default", "assistant/ZetaHRM"]
        # Clients of the API port cannot read metrics or health.
        for path in ("/metrics", "/healthz", "/readyz"):
            r = await client.get(path)
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with admin_client(router) as admin:
            assert (await admin.get("/healthz")).status == 200
            assert (await admin.get("/readyz")).status == 200
            r = await admin.get("/metrics")
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "zeta_router_config_generation 1.0" in await r.text()
            assert (await admin.post(CHAT, json=chat())).status == 404  # and no API there

    run(t)


def test_not_ready_when_no_tier_answers() -> None:
    async def main() -> None:
        cfg = routing_config(
            {"small": closed_port_url(), "large": closed_port_url()}, scorer=FLAT_SCORER
        )
        async with router_client(cfg) as (_, router), admin_client(router) as admin:
            r = await admin.get("/readyz")
            assert r.status == 503
            body = await r.json()
            assert body["tiers"] == {"small": False, "large": False}
            assert body["status"] == "not ready"

    asyncio.run(main())


def test_ready_only_while_a_breaker_would_let_a_request_through() -> None:
    async def t(
        client: TestClient[Any, Any], router: Router, small: TestServer, large: TestServer
    ) -> None:
        async with admin_client(router) as admin:
            assert (await admin.get("/readyz")).status == 200
            await control(small, status=503)
            await control(large, status=503)
            r = await client.post(CHAT, json=chat())  # both tiers fail: both breakers open
            assert r.status == 503
            # Both tiers still answer /health...
            await control(small, status=200)
            await control(large, status=200)
            # ...but no request would be sent to either before the breakers' time is up.
            r = await admin.get("/readyz")
            assert r.status == 503
            body = await r.json()
            assert body["tiers"] == {"small": False, "large": False}
            assert body["breakers"] == {"small": "open", "large": "open"}

    run(t, circuitBreaker={"failureThreshold": 1, "openSeconds": 60})


def test_reload_that_removes_tiers_keeps_sticky_sessions_in_range() -> None:
    from zeta_router.api.routing import RoutingConfig
    from zeta_router.router.config import compile_config

    async def main() -> None:
        async with fake_server() as up:
            url = server_url(up)
            three = routing_config(
                {"s": url, "m": url, "l": url}, {"default": [0.1, 0.2]}, scorer=FLAT_SCORER
            )
            async with router_client(three) as (client, router):
                r = await client.post(CHAT, json=chat(), headers={"X-Zeta-Session": "new"})
                assert r.headers["x-zeta-tier"] == "l"
                h = {"X-Zeta-Session": r.headers["x-zeta-session"]}
                two = routing_config(
                    {"s": url, "m": url}, {"default": [0.9]}, scorer=FLAT_SCORER, generation=2
                )
                router.set_config(compile_config(RoutingConfig.model_validate(two)))
                r = await client.post(CHAT, json=chat(), headers=h)
                assert r.status == 200
                assert r.headers["x-zeta-tier"] == "s"  # tier "l" is gone: no floor from it
                assert metric(router, "zeta_router_config_generation") == 2

    asyncio.run(main())
