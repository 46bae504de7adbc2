"""Conversation stickiness: a session never goes back to a smaller tier within the TTL.

A session is keyed by the ``X-Zeta-Session`` header, else the OpenAI ``user`` field. The store
keeps, per session, the largest tier index it was routed to; each request of the session is
sent to at least that tier, and using the session refreshes its TTL (sliding window).
"""

from __future__ import annotations

from zeta_router.router.ttlcache import TTLCache


class SessionStore:
    __slots__ = ("_cache",)

    def __init__(self, max_sessions: int, ttl_seconds: float) -> None:
        self._cache: TTLCache[int] = TTLCache(max_sessions, ttl_seconds)

    def __len__(self) -> int:
        return len(self._cache)

    def apply(self, session: str | None, tier: int, now: float) -> int:
        """The tier to use for a request of ``session`` whose own decision is ``tier``; records
        the result so that later requests of the session do not go lower."""
        if not session:
            return tier
        floor = self._cache.get(session, now)
        if floor is not None and floor > tier:
            tier = floor
        self._cache.put(session, tier, now)
        return tier

    def resize(self, max_sessions: int, ttl_seconds: float) -> None:
        self._cache.resize(max_sessions, ttl_seconds)
