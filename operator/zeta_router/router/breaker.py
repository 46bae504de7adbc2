"""Per-tier circuit breaker.

Closed: requests flow; ``failure_threshold`` consecutive failures open it. Open: the tier is
skipped until ``open_seconds`` have passed. Half-open: exactly one request (the probe) is let
through; its success closes the breaker, its failure opens it again for another period.
Time is passed in by the caller, so the logic is pure and tested without sleeping.
"""

from __future__ import annotations

from enum import Enum


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = ("_failures", "_opened_at", "_probing", "failure_threshold", "open_seconds")

    def __init__(self, failure_threshold: int = 3, open_seconds: float = 5.0) -> None:
        if failure_threshold < 1 or open_seconds <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_seconds > 0")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    def state(self, now: float) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if now - self._opened_at < self.open_seconds:
            return State.OPEN
        return State.HALF_OPEN

    def allow(self, now: float) -> bool:
        """Whether a request may go to this tier now; in half-open state this claims the probe."""
        st = self.state(now)
        if st is State.CLOSED:
            return True
        if st is State.OPEN or self._probing:
            return False
        self._probing = True
        return True

    def retry_in(self, now: float) -> float:
        """Seconds until the tier may be tried again (0 when it may be tried now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - now)

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self, now: float) -> None:
        self._probing = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = now

    def release(self) -> None:
        """The request that claimed the probe ended without a verdict (e.g. client went away)."""
        self._probing = False
