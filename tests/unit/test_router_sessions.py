import pytest

from zeta_router.router.breaker import CircuitBreaker, State
from zeta_router.router.stickiness import SessionStore
from zeta_router.router.ttlcache import TTLCache


def test_session_never_goes_to_a_smaller_tier_within_ttl() -> None:
    s = SessionStore(max_sessions=10, ttl_seconds=60)
    assert s.apply("alice", 1, now=0) == 1
    assert s.apply("alice", 0, now=10) == 1  # a simple follow-up stays on the larger tier
    assert s.apply("alice", 2, now=20) == 2  # going up is always allowed
    assert s.apply("alice", 0, now=30) == 2
    assert s.apply("bob", 0, now=30) == 0  # other sessions are independent


def test_session_floor_expires_after_ttl_and_use_refreshes_it() -> None:
    s = SessionStore(max_sessions=10, ttl_seconds=60)
    s.apply("alice", 1, now=0)
    assert s.apply("alice", 0, now=50) == 1  # refreshes: expires at 110 now
    assert s.apply("alice", 0, now=100) == 1
    assert s.apply("alice", 0, now=161) == 0


def test_requests_without_session_are_not_recorded() -> None:
    s = SessionStore(max_sessions=10, ttl_seconds=60)
    assert s.apply(None, 1, now=0) == 1
    assert s.apply("", 1, now=0) == 1
    assert len(s) == 0


def test_session_memory_is_bounded_lru() -> None:
    s = SessionStore(max_sessions=2, ttl_seconds=60)
    s.apply("a", 1, now=0)
    s.apply("b", 1, now=1)
    s.apply("a", 0, now=2)  # "a" is now the most recently used
    s.apply("c", 1, now=3)  # evicts "b"
    assert len(s) == 2
    assert s.apply("a", 0, now=4) == 1  # remembered
    assert s.apply("b", 0, now=5) == 0  # forgotten


def test_zero_sessions_disables_stickiness() -> None:
    s = SessionStore(max_sessions=0, ttl_seconds=60)
    s.apply("a", 1, now=0)
    assert s.apply("a", 0, now=1) == 0


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


def test_breaker_opens_after_consecutive_failures_and_probes_later() -> None:
    b = CircuitBreaker(failure_threshold=3, open_seconds=5)
    assert b.allow(0)
    b.failure(0)
    b.failure(0)
    assert b.state(0) is State.CLOSED
    assert b.allow(0)
    b.failure(1)
    assert b.state(1) is State.OPEN
    assert not b.allow(3)
    assert b.retry_in(3) == pytest.approx(3)
    # Half-open: exactly one probe goes through.
    assert b.state(6) is State.HALF_OPEN
    assert b.allow(6)
    assert not b.allow(6)
    b.failure(6)  # the probe failed: open again for a full period
    assert b.state(10) is State.OPEN
    assert b.allow(11.5)
    b.success()
    assert b.state(11.5) is State.CLOSED
    assert b.retry_in(11.5) == 0


def test_breaker_success_resets_the_failure_count() -> None:
    b = CircuitBreaker(failure_threshold=2, open_seconds=5)
    b.failure(0)
    b.success()
    b.failure(0)
    assert b.state(0) is State.CLOSED


def test_breaker_release_frees_the_probe_without_a_verdict() -> None:
    b = CircuitBreaker(failure_threshold=1, open_seconds=1)
    b.failure(0)
    assert b.allow(2)
    b.release()
    assert b.allow(2)


def test_breaker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker(0, 1)
