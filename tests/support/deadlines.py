"""How long the tests let a condition take to come true. Sized for a two-core machine that other
work keeps busy (where an idle machine takes a fraction of it): deadlines, never waits, so a
check ends as soon as its condition holds and the size costs nothing when all goes well."""

from __future__ import annotations

from typing import Final

CONDITION: Final = 120.0
"""Something local to this machine: a router, the fake upstream, a llama.cpp server, a
Prometheus scrape, a log line or a metric."""
POD: Final = 600.0
"""Something in pods on the real node: a pod starting, an exec, a probe run in a pod."""
