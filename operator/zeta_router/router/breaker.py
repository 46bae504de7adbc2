"""Per-tier circuit breaker.

Closed: requests flow; ``failure_threshold`` consecutive failures open it. Open: the tier is
skipped until ``open_seconds`` have passed. Half-open: exactly one request (the probe) is let
through; its success closes the breaker, its failure opens it again for another period.

Every request that goes to a tier holds a :class:`Attempt`, taken with :meth:`attempt` and used
as a context manager: whatever ends the request (a verdict, an exception, a cancellation), the
``with`` block's exit gives the probe back, so no path can leave the tier half-open with its
probe claimed forever. A probe that runs longer than ``open_seconds`` (a long stream) no longer
blocks the tier: the next request becomes a probe too.

Time is passed in by the caller, so the logic is pure and tested without sleeping.
"""

from __future__ import annotations

from enum import Enum
from types import TracebackType


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    __slots__ = (
        "_failures",
        "_opened_at",
        "_probe",
        "_probe_at",
        "_probes",
        "failure_threshold",
        "open_seconds",
    )

    def __init__(self, failure_threshold: int = 3, open_seconds: float = 5.0) -> None:
        if failure_threshold < 1 or open_seconds <= 0:
            raise ValueError("failure_threshold must be >= 1 and open_seconds > 0")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._failures = 0
        self._opened_at: float | None = None
        self._probes = 0  # numbers the probes, so that a stale one cannot free a newer one
        self._probe: int | None = None  # the probe in flight
        self._probe_at = 0.0

    def state(self, now: float) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if now - self._opened_at < self.open_seconds:
            return State.OPEN
        return State.HALF_OPEN

    @property
    def probing(self) -> bool:
        """Whether a half-open probe is claimed and not yet given back."""
        return self._probe is not None

    def available(self, now: float) -> bool:
        """Whether a request would be let through now (without claiming anything)."""
        st = self.state(now)
        if st is State.CLOSED:
            return True
        if st is State.OPEN:
            return False
        return self._probe is None or now - self._probe_at >= self.open_seconds

    def attempt(self, now: float) -> Attempt | None:
        """An attempt to use the tier now, or None when the breaker says skip it. In half-open
        state the attempt is the probe."""
        if not self.available(now):
            return None
        probe = None
        if self.state(now) is State.HALF_OPEN:
            self._probes += 1
            probe = self._probe = self._probes
            self._probe_at = now
        return Attempt(self, probe)

    def retry_in(self, now: float) -> float:
        """Seconds until the tier may be tried again (0 when it may be tried now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_seconds - now)

    # -- verdicts (through an Attempt) -----------------------------------------------------

    def _success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe = None

    def _failure(self, now: float) -> None:
        self._probe = None
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = now

    def _release(self, probe: int | None) -> None:
        if probe is not None and probe == self._probe:
            self._probe = None


class Attempt:
    """One request's use of a tier: at most one verdict counts, and leaving the ``with`` block
    without one (an error, a cancellation, an answer that says nothing about the tier's health)
    gives the probe back."""

    __slots__ = ("_breaker", "_done", "_probe")

    def __init__(self, breaker: CircuitBreaker, probe: int | None) -> None:
        self._breaker = breaker
        self._probe = probe
        self._done = False

    @property
    def is_probe(self) -> bool:
        return self._probe is not None

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._success()

    def failure(self, now: float) -> None:
        if not self._done:
            self._done = True
            self._breaker._failure(now)

    def release(self) -> None:
        """End without a verdict (the client went away, the tier answered 429 or 500)."""
        if not self._done:
            self._done = True
            self._breaker._release(self._probe)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
