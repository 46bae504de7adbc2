"""Pure aggregation of the demo: percentiles, counts per tier/context, time buckets."""

from __future__ import annotations

import pytest

from zeta_router_dev.demo.stats import (
    NO_TIER,
    RequestRecord,
    aggregate,
    completions_per_interval,
    percentile,
    recent,
)

TIERS = ("small", "large")


def rec(start: float, latency: float, context: str, tier: str, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        start=start,
        latency=latency,
        context=context,
        level="easy" if tier == "small" else "hard",
        tier=tier if ok else NO_TIER,
        ok=ok,
        error="" if ok else "HTTP 504 upstream timeout",
        completion_tokens=10 if ok else 0,
    )


def test_percentile_interpolates_between_order_statistics() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.9) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9) == pytest.approx(
        9.1
    )
    assert percentile([1.0, 2.0], 0.0) == 1.0
    assert percentile([1.0, 2.0], 1.0) == 2.0
    with pytest.raises(ValueError, match="quantile"):
        percentile([1.0], 1.5)


def test_aggregate_counts_answered_requests_per_tier_and_context() -> None:
    records = [
        rec(0.0, 1.0, "ZetaHRM", "small"),
        rec(0.5, 3.0, "ZetaHRM", "large"),
        rec(1.0, 2.0, "ZetaTRM", "small"),
        rec(2.0, 5.0, "ZetaTRM", "small", ok=False),
    ]
    agg = aggregate(records, TIERS)
    assert (agg.total, agg.ok, agg.errors) == (4, 3, 1)
    assert agg.by_tier == {"small": 2, "large": 1}
    assert agg.by_context_tier == {
        "ZetaHRM": {"small": 1, "large": 1},
        "ZetaTRM": {"small": 1, "large": 0},
    }
    assert agg.by_level_tier["hard"] == {"small": 0, "large": 1}
    assert agg.latency_by_tier["small"].p50 == pytest.approx(1.5)
    assert agg.latency_by_tier["large"].count == 1
    # Errors do not count in latencies or per-tier figures, but do in the span.
    assert agg.latency.count == 3
    assert agg.span == pytest.approx(7.0)
    assert agg.throughput == pytest.approx(3 / 7.0)
    assert agg.share("small") == pytest.approx(2 / 3)
    assert agg.completion_tokens == 30
    assert agg.error_samples == ("HTTP 504 upstream timeout",)


def test_aggregate_of_nothing_lists_the_tiers_with_zero() -> None:
    agg = aggregate([], TIERS)
    assert agg.by_tier == {"small": 0, "large": 0}
    assert agg.latency.p50 is None
    assert agg.throughput == 0.0
    assert agg.share("large") == 0.0


def test_completions_per_interval_buckets_by_answer_time() -> None:
    records = [
        rec(0.0, 1.0, "ZetaHRM", "small"),  # ends at 1
        rec(0.0, 4.5, "ZetaHRM", "large"),  # ends at 4.5
        rec(3.0, 2.5, "ZetaTRM", "small"),  # ends at 5.5
        rec(3.0, 1.0, "ZetaTRM", "small", ok=False),
    ]
    starts, counts = completions_per_interval(records, 2.0, end=6.0)
    assert starts == [0.0, 2.0, 4.0]
    assert counts == {"large": [0, 0, 1], "small": [1, 0, 1]}
    with pytest.raises(ValueError, match="positive"):
        completions_per_interval(records, 0)


def test_recent_keeps_answers_inside_the_window() -> None:
    records = [rec(0.0, 1.0, "ZetaHRM", "small"), rec(5.0, 4.0, "ZetaHRM", "large")]
    assert [r.tier for r in recent(records, now=10.0, window=5.0)] == ["large"]
    assert recent(records, now=20.0, window=5.0) == []
