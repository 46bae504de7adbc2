"""Client-side limits of an external tier: requests and tokens in any 60 s, kept by each router
for itself (no shared store: N routers may send up to N times the limits).

A request is counted when it is sent; tokens when an answer reports its ``usage``. Past either
limit the tier refuses the request before anything is sent (``rate_limited``, a failover
reason that leaves the circuit breaker alone: a limit is load, not breakage).
"""

from __future__ import annotations

from collections import deque

from zeta_router.api.routing import RoutingExternal

WINDOW_SECONDS = 60.0


class RateLimiter:
    __slots__ = ("_requests", "_token_total", "_tokens", "requests_per_minute", "tokens_per_minute")

    def __init__(self, requests_per_minute: int | None, tokens_per_minute: int | None) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_total = 0

    @classmethod
    def of(cls, external: RoutingExternal | None) -> RateLimiter | None:
        """The limiter an external tier needs (None: no limit set)."""
        if external is None or (
            external.requests_per_minute is None and external.tokens_per_minute is None
        ):
            return None
        return cls(external.requests_per_minute, external.tokens_per_minute)

    def same_limits(self, external: RoutingExternal | None) -> bool:
        return external is not None and (
            external.requests_per_minute,
            external.tokens_per_minute,
        ) == (self.requests_per_minute, self.tokens_per_minute)

    def _trim(self, now: float) -> None:
        start = now - WINDOW_SECONDS
        while self._requests and self._requests[0] <= start:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= start:
            self._token_total -= self._tokens.popleft()[1]

    def refusal(self, now: float) -> str | None:
        """Why a request may not be sent now (None: it may, and is counted as sent)."""
        self._trim(now)
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        if rpm is not None and len(self._requests) >= rpm:
            return f"client-side limit of {rpm} requests per minute reached"
        if tpm is not None and self._token_total >= tpm:
            return f"client-side limit of {tpm} tokens per minute reached"
        self._requests.append(now)
        return None

    def add_tokens(self, now: float, tokens: int) -> None:
        if self.tokens_per_minute is None or tokens <= 0:
            return
        self._trim(now)
        self._tokens.append((now, tokens))
        self._token_total += tokens
