"""Feedback on any replica: the request id carries what a router needs (signed), so a replica
that never saw the request accepts feedback for it, and nobody can forge one."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from support.inprocess import fake_server, router_client, server_url
from support.routing_files import FLAT_SCORER, routing_config
from zeta_router.router.app import FEEDBACK_MAX_AGE_SECONDS, Feedback, Router
from zeta_router.router.errors import ApiError
from zeta_router.router.ids import Signer

CHAT = "/v1/chat/completions"
KEY = b"k" * 32


def _cfg(small: str, large: str) -> dict[str, Any]:
    return routing_config(
        {"small": small, "large": large},
        {"default": [0.6], "ZetaHRM": [0.3]},
        scorer=FLAT_SCORER,
    )


def test_another_replica_accepts_feedback_and_a_foreign_key_does_not() -> None:
    async def main() -> None:
        async with fake_server() as up:
            cfg = _cfg(server_url(up), server_url(up))
            async with (
                router_client(cfg, signer=Signer([KEY])) as (a, _),
                router_client(cfg, signer=Signer([KEY])) as (b, router_b),
                router_client(cfg) as (c, _),  # its own random key
            ):
                got: list[Feedback] = []
                router_b.feedback_sinks.append(got.append)
                r = await a.post(
                    CHAT,
                    json={"messages": [{"role": "user", "content": "hi"}]},
                    headers={"X-Zeta-Context": "ZetaHRM"},
                )
                rid = r.headers["x-request-id"]
                fb = {"request_id": rid, "score": 0.75, "label": "good"}
                r = await b.post("/v1/feedback", json=fb)
                assert r.status == 200
                body = await r.json()
                assert body == {
                    "object": "feedback",
                    "request_id": rid,
                    "context": "ZetaHRM",
                    "tier": "large",
                    "decided_tier": "large",
                    "score": 0.75,
                }
                assert len(got) == 1
                assert got[0].request.score == 0.5
                assert got[0].label == "good"
                # Posted twice to the same replica: counted once.
                r = await b.post("/v1/feedback", json=fb)
                assert r.status == 409
                assert (await r.json())["error"]["code"] == "feedback_duplicate"
                assert len(got) == 1
                # A router with another key has no way to trust the id.
                r = await c.post("/v1/feedback", json=fb)
                assert r.status == 400
                assert (await r.json())["error"]["code"] == "invalid_request_id"

    asyncio.run(main())


def test_feedback_for_an_unanswered_or_old_request_is_refused() -> None:
    async def main() -> None:
        dead = "http://127.0.0.1:9"
        async with router_client(_cfg(dead, dead), signer=Signer([KEY])) as (client, router):
            r = await client.post(CHAT, json={"messages": [{"role": "user", "content": "x"}]})
            assert r.status == 503
            rid = r.headers["x-request-id"]
            r = await client.post("/v1/feedback", json={"request_id": rid, "score": 1})
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "request_not_answered"
            _old_id_is_refused(router)

    asyncio.run(main())


def _old_id_is_refused(router: Router) -> None:
    from zeta_router.router.ids import RequestInfo

    issued = int(time.time() * 1000)
    rid = router.signer.request_id(
        RequestInfo(bytes(8), issued, 1, 0.5, "default", "small", "small")
    )
    later = issued + int(FEEDBACK_MAX_AGE_SECONDS * 1000) + 1
    with pytest.raises(ApiError) as err:
        router.feedback(rid, 0.5, None, later)
    assert (err.value.status, err.value.code) == (404, "request_expired")
    assert router.feedback(rid, 0.5, None, issued + 1000)["tier"] == "small"
