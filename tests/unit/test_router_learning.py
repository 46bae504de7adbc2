"""The router's part of learning, in process: hashed samples of answered requests, labels from
feedback posted to any replica, and from shadow pairs judged by agreement or by the largest
tier; the operator's join of what two replicas hold."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from support.inprocess import admin_client, fake_server, router_client, server_url
from support.routing_files import FLAT_SCORER, routing_config
from zeta_router.router.app import Router
from zeta_router.router.ids import Signer
from zeta_router.scoring.samples import Batch, Joiner

CHAT = "/v1/chat/completions"
KEY = b"k" * 32
PROMPT = "Which statute of limitations applies to this contract claim?"


def cfg(small: str, large: str, **learning: Any) -> dict[str, Any]:
    out = routing_config(
        {"small": small, "large": large}, {"default": [0.6], "ZetaHRM": [0.3]}, scorer=FLAT_SCORER
    )
    out["learning"] = {"contexts": ["default"], **learning}
    return out


async def settled(router: Router, samples: int, labels: int) -> Batch:
    """The store once it holds this many samples and labels (they are added off the request's
    path), within a deadline."""
    store = router.learning.store
    assert store is not None
    deadline = asyncio.get_running_loop().time() + 10
    for _ in range(100_000):
        if store.counts == (samples, labels) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    assert store.counts == (samples, labels)
    batch = router.learning.batch(0)
    assert batch is not None
    return batch


def test_samples_are_hashed_and_feedback_on_another_replica_labels_them() -> None:
    async def main() -> None:
        async with fake_server() as up:
            c = cfg(server_url(up), server_url(up))
            async with (
                router_client(c, signer=Signer([KEY])) as (a, router_a),
                router_client(c, signer=Signer([KEY])) as (b, router_b),
            ):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.status == 200
                assert r.headers["x-zeta-tier"] == "small"  # flat scorer 0.5 < 0.6
                rid = r.headers["x-request-id"]
                key = Signer([KEY]).verify_request_id(rid).request_key
                batch = await settled(router_a, 1, 0)
                sample = batch.samples[0]
                assert (sample.key, sample.context, sample.tier) == (key, "default", "small")
                assert sample.indices.size > 10
                assert "statute" not in str(batch.to_wire())  # only numbers travel
                # A context that does not learn keeps nothing: after one request there and
                # one in a learning context, there are two samples, not three.
                for context in ("ZetaHRM", "default"):
                    r = await a.post(
                        CHAT,
                        json={"messages": [{"role": "user", "content": PROMPT}]},
                        headers={"X-Zeta-Context": context},
                    )
                    assert r.status == 200
                batch = await settled(router_a, 2, 0)
                assert [s.context for s in batch.samples] == ["default", "default"]
                # Feedback to the other replica: a label there (gain 1 - score: 0.75).
                r = await b.post("/v1/feedback", json={"request_id": rid, "score": 0.25})
                assert r.status == 200
                labels = (await settled(router_b, 0, 1)).labels
                assert [(lab.key, lab.value, lab.source) for lab in labels] == [
                    (key, 0.875, "feedback")
                ]
                # The operator joins what the two replicas hold.
                j = Joiner(max_labels=10, ttl_seconds=3600)
                j.ingest("b", labels_only(router_b), 0.0)
                j.ingest("a", router_a.learning.batch(0) or empty(), 0.0)
                assert j.labelled("default").y.tolist() == [0.875]
                assert j.pending == (1, 0)  # the second sample waits for a label

    asyncio.run(main())


def labels_only(router: Router) -> Batch:
    batch = router.learning.batch(0)
    assert batch is not None
    return batch


def empty() -> Batch:
    return Batch("none", 0, [], [], False)


def test_feedback_on_the_largest_tier_is_no_label_and_learning_off_keeps_nothing() -> None:
    async def main() -> None:
        async with fake_server() as up:
            c = cfg(server_url(up), server_url(up))
            c["contexts"][0]["thresholds"] = [0.1]  # everything to the large tier
            async with router_client(c, signer=Signer([KEY])) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.headers["x-zeta-tier"] == "large"
                r = await a.post(
                    "/v1/feedback", json={"request_id": r.headers["x-request-id"], "score": 0.0}
                )
                assert r.status == 200
                batch = await settled(router, 1, 0)
                assert batch.labels == []
            off = cfg(server_url(up), server_url(up))
            del off["learning"]
            async with router_client(off) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.status == 200
                assert router.learning.store is None
                assert router.learning.batch(0) is None

    asyncio.run(main())


@pytest.mark.parametrize(
    ("judge", "answer", "value", "source"),
    [
        ("agreement", None, 1.0, "agreement"),  # the echo of another tier differs: no overlap
        ("largest-tier", "YES", 0.5, "judge"),
        ("largest-tier", "NO", 1.0, "judge"),
    ],
)
def test_shadow_pairs_become_labels(
    judge: str, answer: str | None, value: float, source: str
) -> None:
    async def main() -> None:
        async with fake_server() as small, fake_server() as large:
            # Answers: the small tier echoes, the large one says `answer` (the judge too).
            if answer is not None:
                await control(large, answer=answer)
            else:
                await control(small, answer="alpha beta gamma delta epsilon")
                await control(large, answer="one two three four five six")
            c = cfg(server_url(small), server_url(large), shadowJudge=judge)
            c["shadowSampleRate"] = 1.0
            async with router_client(c, signer=Signer([KEY])) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.headers["x-zeta-tier"] == "small"
                batch = await settled(router, 1, 1)
                (lab,) = batch.labels
                assert (lab.value, lab.source) == (value, source)
                assert lab.key == batch.samples[0].key
                if judge == "largest-tier":
                    text = router.metrics.render().decode()
                    verdict = "yes" if answer == "YES" else "no"
                    assert f'zeta_router_judge_verdicts_total{{verdict="{verdict}"}} 1.0' in text

    asyncio.run(main())


def test_answers_of_the_largest_tier_are_paired_with_the_tier_below_while_judging() -> None:
    async def main() -> None:
        async with fake_server() as small, fake_server() as large:
            await control(large, answer="NO")
            c = cfg(server_url(small), server_url(large), shadowJudge="largest-tier")
            c["shadowSampleRate"] = 1.0
            c["contexts"][0]["thresholds"] = [0.1]  # to the large tier
            async with router_client(c, signer=Signer([KEY])) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.headers["x-zeta-tier"] == "large"
                batch = await settled(router, 1, 1)
                assert batch.samples[0].tier == "large"
                assert batch.labels[0].value == 1.0  # the judge says the small answer falls short
            # Without the learner judging pairs, the largest tier's answers are not shadowed.
            small_seen = (await stats(small))["requests"]
            assert small_seen >= 1  # the pair above
            c2 = cfg(server_url(small), server_url(large))
            c2["shadowSampleRate"] = 1.0
            c2["contexts"][0]["thresholds"] = [0.1]
            async with router_client(c2, signer=Signer([KEY])) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.status == 200
                # A shadow request starts before the answer is returned, or not at all: either
                # it would still be in flight, or the small tier would have seen it.
                assert router.shadow.in_flight == 0
                assert (await stats(small))["requests"] == small_seen

    asyncio.run(main())


async def control(server: Any, **settings: Any) -> None:
    async with server_session() as s:
        r = await s.post(str(server.make_url("/_control")), json=settings)
        assert r.status == 200


async def stats(server: Any) -> dict[str, Any]:
    async with server_session() as s:
        r = await s.get(str(server.make_url("/_stats")))
        out: dict[str, Any] = await r.json()
        return out


def server_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession()


def test_the_admin_port_serves_the_store_a_page_at_a_time() -> None:
    async def main() -> None:
        async with fake_server() as up:
            c = cfg(server_url(up), server_url(up))
            async with (
                router_client(c, signer=Signer([KEY])) as (client, router),
                admin_client(router) as admin,
            ):
                for i in range(3):
                    r = await client.post(
                        CHAT, json={"messages": [{"role": "user", "content": f"{PROMPT} {i}"}]}
                    )
                    assert r.status == 200
                await settled(router, 3, 0)
                r = await admin.get("/learning/samples", params={"after": "0", "limit": "2"})
                assert r.status == 200
                page, problems = Batch.from_wire(await r.json())
                assert problems == []
                assert (len(page.samples), page.more) == (2, True)
                r = await admin.get("/learning/samples", params={"after": str(page.next)})
                rest, _ = Batch.from_wire(await r.json())
                assert (len(rest.samples), rest.more) == (1, False)
                for bad in ({"after": "-1"}, {"limit": "0"}, {"limit": "x"}):
                    r = await admin.get("/learning/samples", params=bad)
                    assert r.status == 400
                    assert (await r.json())["error"]["code"] == "invalid_value"
                # The client port does not serve it.
                r = await client.get("/learning/samples")
                assert r.status == 404
            off = cfg(server_url(up), server_url(up))
            del off["learning"]
            async with router_client(off) as (_, router), admin_client(router) as admin:
                r = await admin.get("/learning/samples")
                assert r.status == 404
                assert (await r.json())["error"]["code"] == "learning_off"

    asyncio.run(main())


def test_a_judge_answer_past_its_bound_is_no_verdict() -> None:
    """The largest tier answers the judge with more than JUDGE_ANSWER_MAX_BYTES: the router reads
    no further than the bound, and the pair gets no label (counted as a failed verdict)."""
    from zeta_router.router.learning import JUDGE_ANSWER_MAX_BYTES

    async def main() -> None:
        async with fake_server() as small, fake_server() as large:
            await control(large, answer="YES " * (JUDGE_ANSWER_MAX_BYTES // 4 + 10))
            c = cfg(server_url(small), server_url(large), shadowJudge="largest-tier")
            c["shadowSampleRate"] = 1.0
            async with router_client(c, signer=Signer([KEY])) as (a, router):
                r = await a.post(CHAT, json={"messages": [{"role": "user", "content": PROMPT}]})
                assert r.headers["x-zeta-tier"] == "small"

                failed = 'verdict="failed"} 1.0'
                deadline = asyncio.get_running_loop().time() + 30
                for _ in range(100_000):
                    text = router.metrics.render().decode()
                    if failed in text or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.05)
                assert failed in router.metrics.render().decode()
                batch = router.learning.batch(0)
                assert batch is not None
                assert batch.labels == []

    asyncio.run(main())
