import asyncio
from typing import Any

import pytest

from support.routing_files import routing_config
from zeta_router.api.routing import RoutingConfig
from zeta_router.router.breaker import Attempt, CircuitBreaker, State
from zeta_router.router.config import RuntimeConfig, compile_config
from zeta_router.router.ids import Signer
from zeta_router.router.stickiness import (
    MAX_EARLIER_TURNS,
    conversation_floor,
    earlier_turns,
    session_floor,
    session_token,
)
from zeta_router.router.ttlcache import TTLCache
from zeta_router.scoring import features

URL = "http://127.0.0.1:9"


def _config(cut: float = 0.5, tiers: tuple[str, ...] = ("small", "large")) -> RuntimeConfig:
    cfg = routing_config(
        {t: URL for t in tiers}, {"default": [cut + i * 0.01 for i in range(len(tiers) - 1)]}
    )
    return compile_config(RoutingConfig.model_validate(cfg))


HARD = (
    "Prove that the square root of 2 is irrational, step by step, then derive a closed form "
    "for the sum of the first n squares and prove it by induction; explain why."
)


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def test_earlier_turns_are_the_prefixes_an_assistant_answered() -> None:
    msgs = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a2"},
        {"role": "user", "content": "u3"},
    ]
    assert earlier_turns(msgs) == [msgs[:4], msgs[:2]]
    assert earlier_turns(msgs[:2]) == []


def test_a_conversation_keeps_the_tier_its_earlier_turns_needed() -> None:
    cfg = _config()
    ctx = cfg.contexts["default"]
    hard_alone = ctx.selector.select(ctx.scorer.score(features.extract(_chat(("user", HARD)))))
    easy_alone = ctx.selector.select(ctx.scorer.score(features.extract(_chat(("user", "ok")))))
    assert (hard_alone, easy_alone) == (1, 0)
    follow_up = _chat(("user", HARD), ("assistant", "..."), ("user", "thanks"))
    assert conversation_floor(follow_up, ctx, 0, 1) == 1
    # Without the answered turn (no assistant message yet) nothing is earlier.
    assert conversation_floor(_chat(("user", "thanks")), ctx, 0, 1) == 0
    # An easy conversation stays where its own decision puts it.
    easy = _chat(("user", "hi"), ("assistant", "hello"), ("user", "thanks"))
    assert conversation_floor(easy, ctx, 0, 1) == 0


def test_only_the_most_recent_earlier_turns_are_scored() -> None:
    turns: list[tuple[str, str]] = [("user", HARD), ("assistant", "x")]
    for i in range(MAX_EARLIER_TURNS):
        turns += [("user", f"ok {i}"), ("assistant", "x")]
    turns.append(("user", "ok"))
    earlier = earlier_turns(_chat(*turns)["messages"])
    assert len(earlier) == MAX_EARLIER_TURNS
    assert earlier[0][-1]["content"] == f"ok {MAX_EARLIER_TURNS - 1}"  # most recent first
    # (Each prefix still holds the first turn: the scorer reads the whole conversation.)


def test_session_tokens_carry_the_floor_until_they_expire() -> None:
    cfg = _config()
    signer = Signer([b"k" * 32])
    token = session_token(signer, "large", now_ms=1_000, ttl_seconds=60)
    assert session_floor(token, signer, cfg, now_ms=2_000) == 1
    assert session_floor(token, signer, cfg, now_ms=61_000) == 0  # expired
    # Another ZetaRouter's key, garbage, a request id, or a tier that is gone: no floor.
    assert session_floor(token, Signer([b"x" * 32]), cfg, now_ms=2_000) == 0
    assert session_floor("conversation-42", signer, cfg, now_ms=2_000) == 0
    assert session_floor(None, signer, cfg, now_ms=2_000) == 0
    gone = session_token(signer, "huge", now_ms=1_000, ttl_seconds=60)
    assert session_floor(gone, signer, cfg, now_ms=2_000) == 0


def test_resize_keeps_most_recent() -> None:
    c: TTLCache[int] = TTLCache(3, 10)
    for i, k in enumerate("abc"):
        c.put(k, i, now=0)
    c.resize(1, 10)
    assert len(c) == 1
    assert c.get("c", now=1) == 2
    assert c.get("a", now=1) is None


def test_ttlcache_rejects_negative_limits() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        TTLCache(-1, 10)


def _fail(b: CircuitBreaker, now: float) -> None:
    a = b.attempt(now)
    assert a is not None
    with a:
        a.failure(now)


def test_breaker_opens_after_consecutive_failures_and_probes_later() -> None:
    b = CircuitBreaker(failure_threshold=3, open_seconds=5)
    _fail(b, 0)
    _fail(b, 0)
    assert b.state(0) is State.CLOSED
    assert b.attempt(0) is not None
    _fail(b, 1)
    assert b.state(1) is State.OPEN
    assert b.attempt(3) is None
    assert b.retry_in(3) == pytest.approx(3)
    # Half-open: exactly one probe goes through.
    assert b.state(6) is State.HALF_OPEN
    probe = b.attempt(6)
    assert probe is not None
    assert probe.is_probe
    assert b.attempt(6) is None
    assert not b.available(6)
    probe.failure(6)  # the probe failed: open again for a full period
    assert b.state(10) is State.OPEN
    probe = b.attempt(11.5)
    assert probe is not None
    probe.success()
    assert b.state(11.5) is State.CLOSED
    assert b.retry_in(11.5) == 0


def test_breaker_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=2, open_seconds=5)
    _fail(b, 0)
    a = b.attempt(0)
    assert a is not None
    a.success()
    _fail(b, 0)
    assert b.state(0) is State.CLOSED


def test_leaving_an_attempt_without_a_verdict_frees_the_probe() -> None:
    b = CircuitBreaker(failure_threshold=1, open_seconds=1)
    _fail(b, 0)
    for exc in (RuntimeError("boom"), asyncio.CancelledError()):
        probe = b.attempt(2)
        assert probe is not None
        assert probe.is_probe

        def use(p: Attempt = probe, e: BaseException = exc) -> None:
            with p:
                assert b.probing
                raise e

        with pytest.raises(type(exc)):
            use()
        assert not b.probing
    # Only the first verdict of an attempt counts.
    probe = b.attempt(2)
    assert probe is not None
    probe.failure(2)
    probe.success()
    assert b.state(2.5) is State.OPEN


def test_a_long_probe_does_not_block_the_tier_and_a_stale_one_frees_nothing() -> None:
    b = CircuitBreaker(failure_threshold=1, open_seconds=5)
    _fail(b, 0)
    long_probe = b.attempt(5)
    assert long_probe is not None
    assert b.attempt(9) is None  # probing
    newer = b.attempt(10)  # the first probe has run for open_seconds: another one may go
    assert newer is not None
    long_probe.release()
    assert b.probing  # the stale probe's release leaves the newer one claimed
    assert b.attempt(10) is None
    newer.success()
    assert b.state(10) is State.CLOSED


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0, 1)
