"""Three router processes behind a round-robin front (as a Service spreads connections over a
ZetaRouter's pods), in front of real llama.cpp servers: a conversation keeps its tier whichever
replica takes each turn, session tokens work on every replica, and feedback on any replica is
accepted for answers of another."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from support.round_robin import RoundRobin
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama

REPLICAS = 3
SHORT = "Thanks. And in one word?"
LONG = (
    "Prove that the square root of 2 is irrational, step by step, and explain why the proof by "
    "contradiction works. Then derive a closed form for 1^2 + 2^2 + ... + n^2 and prove it by "
    "induction, showing each step with $\\sum_{k=1}^{n} k^2$; finally analyze the complexity of "
    "checking the formula with a Python loop and compare it with the closed form."
)


@pytest.fixture(scope="module")
def replicas(
    llama_servers: dict[str, LlamaServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[RouterProcess], RoundRobin]]:
    small, large = llama_servers["small"], llama_servers["large"]
    work = tmp_path_factory.mktemp("replicas")
    key = work / "router-key"
    key.write_text(os.urandom(32).hex() + "\n")
    args = [
        *("--tier", f"small={small.url}", "--tier", f"large={large.url}"),
        *("--request-key-file", str(key)),
    ]
    routers: list[RouterProcess] = []
    try:
        for _ in range(REPLICAS):
            routers.append(start_router(args, work))
        front = RoundRobin([("127.0.0.1", r.port) for r in routers])
        yield routers, front
        front.close()
    finally:
        for r in routers:
            assert r.stop() == 0


def _client(front: RoundRobin) -> openai.OpenAI:
    # A connection per request, so that each request goes to the next replica.
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    return openai.OpenAI(
        base_url=front.url + "/v1", api_key="unused", max_retries=0, http_client=http
    )


def _served(routers: list[RouterProcess]) -> list[float]:
    return [r.metric("zeta_router_requests_total", code="200") for r in routers]


def test_a_conversation_keeps_its_tier_on_every_replica(
    replicas: tuple[list[RouterProcess], RoundRobin],
) -> None:
    routers, front = replicas
    client = _client(front)
    before = _served(routers)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": LONG}
    ]
    tiers = []
    for _ in range(2 * REPLICAS):
        raw = client.chat.completions.with_raw_response.create(
            model="zeta", messages=messages, max_tokens=4
        )
        tiers.append(raw.headers["x-zeta-tier"])
        answer = raw.parse().choices[0].message.content or ""
        messages = [
            *messages,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": SHORT},
        ]
    assert tiers == ["large"] * (2 * REPLICAS)
    # Every replica took turns of it.
    assert all(a - b == 2 for a, b in zip(_served(routers), before, strict=True))
    # The same short turn on its own would have gone small.
    alone = client.chat.completions.with_raw_response.create(
        model="zeta", messages=[{"role": "user", "content": SHORT}], max_tokens=2
    )
    assert alone.headers["x-zeta-tier"] == "small"


def test_session_tokens_hold_on_every_replica(
    replicas: tuple[list[RouterProcess], RoundRobin],
) -> None:
    _, front = replicas
    client = _client(front)
    first = client.completions.with_raw_response.create(
        model="zeta", prompt=LONG, max_tokens=2, extra_headers={"X-Zeta-Session": "new"}
    )
    assert first.headers["x-zeta-tier"] == "large"
    token = first.headers["x-zeta-session"]
    for _ in range(REPLICAS):
        raw = client.completions.with_raw_response.create(
            model="zeta", prompt=SHORT, max_tokens=2, extra_headers={"X-Zeta-Session": token}
        )
        assert raw.headers["x-zeta-tier"] == "large"
        token = raw.headers["x-zeta-session"]


def test_feedback_is_accepted_by_replicas_that_did_not_answer(
    replicas: tuple[list[RouterProcess], RoundRobin], tmp_path: Path
) -> None:
    routers, front = replicas
    client = _client(front)
    before = [r.metric("zeta_router_feedback_score_count") for r in routers]
    answered = []
    for i in range(REPLICAS):
        raw = client.chat.completions.with_raw_response.create(
            model="zeta", messages=[{"role": "user", "content": f"Say {i}."}], max_tokens=2
        )
        answered.append((raw.headers["x-request-id"], raw.headers["x-zeta-tier"]))
    # Request i was answered by replica i (mod 3) and its feedback goes to the next one.
    for rid, tier in answered:
        fb = client.post(
            "/feedback", body={"request_id": rid, "score": 0.5}, cast_to=httpx.Response
        )
        assert fb.status_code == 200
        assert fb.json()["tier"] == tier
    after = [r.metric("zeta_router_feedback_score_count") for r in routers]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0] * REPLICAS
    # A forged id is refused by every replica.
    rid = answered[0][0]
    forged = rid[:-2] + ("AA" if not rid.endswith("AA") else "BB")
    for _ in range(REPLICAS):
        with pytest.raises(openai.BadRequestError) as err:
            client.post("/feedback", body={"request_id": forged, "score": 1}, cast_to=object)
        assert err.value.body["code"] == "invalid_request_id"  # type: ignore[index]
