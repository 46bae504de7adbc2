"""A stopping pod's lifecycle, without a clock: when a drain ends (pure), the drain settings,
the grace period, and reading a model server's in-flight gauges (the model-server preStop
waits on them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from zeta_router.api.lifecycle import (
    GRACE_MARGIN_SECONDS,
    DrainTiming,
    drain_ends_at,
    termination_grace_seconds,
)
from zeta_router.router.cli import drain_timing
from zeta_router.router.lifecycle import Lifecycle, ModelQuiet, in_flight, work_done

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting_total 99
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""
LLAMACPP = """\
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 0
llamacpp:requests_deferred 0
"""


def test_in_flight_sums_the_engines_gauges() -> None:
    assert in_flight(VLLM, "vllm") == 6.0
    assert in_flight(LLAMACPP, "llamacpp") == 0.0
    assert in_flight(LLAMACPP, "vllm") is None  # no gauge of that engine
    assert in_flight("", "llamacpp") is None
    assert in_flight("llamacpp:requests_processing NaN-ish\n", "llamacpp") is None


# ---- when a drain ends -------------------------------------------------------------------------

TIMING = DrainTiming(delay=5.0, quiet=3.0, timeout=60.0)


def test_a_drain_lasts_at_least_its_delay() -> None:
    # Nothing arrived since long before: the delay still covers endpoint removal.
    assert drain_ends_at(100.0, 10.0, TIMING) == 105.0
    # The last arrival just before the drain began counts from the beginning.
    assert drain_ends_at(100.0, 99.0, TIMING) == 105.0


def test_a_drain_lasts_until_traffic_has_been_quiet_for_the_quiet_period() -> None:
    assert drain_ends_at(100.0, 104.0, TIMING) == 107.0
    assert drain_ends_at(100.0, 130.5, TIMING) == 133.5


def test_a_drain_ends_at_its_timeout_whatever_still_arrives() -> None:
    assert drain_ends_at(100.0, 158.0, TIMING) == 160.0
    assert drain_ends_at(100.0, 1000.0, TIMING) == 160.0


def test_the_drain_settings_of_the_command_line() -> None:
    assert drain_timing(5, 3, None) == DrainTiming(5, 3, 60)
    assert drain_timing(0, 0, None).timeout == 60
    assert drain_timing(90, 3, None).timeout == 90  # by default never below what it bounds
    assert drain_timing(5, 3, 4) == DrainTiming(5, 3, 4)  # an explicit timeout wins
    with pytest.raises(SystemExit, match="must not be negative"):
        drain_timing(5, -1, None)


def test_the_grace_period_covers_the_longest_drain_and_the_longest_request() -> None:
    assert termination_grace_seconds(60.0, 600.0) == 60 + 600 + GRACE_MARGIN_SECONDS
    assert termination_grace_seconds(0.5, 0.2) == 1 + GRACE_MARGIN_SECONDS


# ---- the lifecycle's state, without a clock ----------------------------------------------------


@dataclass
class Quiet:
    """The client port of a router that received nothing since long ago."""

    last_arrival: float = 0.0
    busy: int = 0


@dataclass
class StubRouter:
    draining: bool = False
    config: Any = None


def test_a_drain_without_delay_or_quiet_period_ends_at_once() -> None:
    async def run() -> Lifecycle:
        lc = Lifecycle(StubRouter(), Quiet(), DrainTiming(0.0, 0.0, 0.0), drain_seconds=1.0)
        lc.begin_drain("test")
        lc.begin_drain("again")  # a second hook joins the drain under way
        async with asyncio.timeout(60):  # a deadline, never a wait
            await lc.drained()
        return lc

    lc = asyncio.run(run())
    assert lc.router.draining
    assert lc.drained_after is not None


def test_a_drain_with_traffic_still_arriving_has_not_ended() -> None:
    async def run() -> bool:
        # Traffic "arrives" forever after: the drain can end only at its (distant) timeout.
        traffic = Quiet(last_arrival=float("inf"))
        lc = Lifecycle(StubRouter(), traffic, DrainTiming(0.0, 1.0, 3600.0), drain_seconds=1.0)
        lc.begin_drain("test")
        for _ in range(10):
            await asyncio.sleep(0)
        ended = lc._drained.is_set()
        assert lc._watch is not None
        lc._watch.cancel()
        return ended

    assert asyncio.run(run()) is False


def test_sigterm_ends_a_drain_that_traffic_still_holds() -> None:
    async def run() -> bool:
        traffic = Quiet(last_arrival=float("inf"))
        lc = Lifecycle(StubRouter(), traffic, DrainTiming(0.0, 1.0, 3600.0), drain_seconds=1.0)
        lc.begin_drain("test")
        lc.end_drain()  # what the router does on SIGTERM
        async with asyncio.timeout(60):  # a deadline, never a wait
            await lc.drained()
        await asyncio.sleep(0)
        assert lc._watch is not None
        return lc._watch.cancelled()

    assert asyncio.run(run()) is True


# ---- when a stopping pod's model server may stop -----------------------------------------------


def test_work_done_reads_the_engines_counters() -> None:
    assert (
        work_done("llamacpp:n_decode_total 41\nllamacpp:requests_processing 0\n", "llamacpp") == 41
    )
    vllm = (
        'vllm:prompt_tokens_total{model_name="m"} 10\n'
        'vllm:generation_tokens_total{model_name="m"} 5\n'
    )
    assert work_done(vllm, "vllm") == 15
    assert work_done(LLAMACPP, "llamacpp") is None  # an older server without the counter


def test_the_model_server_stops_only_after_a_quiet_period_without_requests_or_work() -> None:
    state = ModelQuiet(quiet=3.0)
    assert not state.observe(0.0, 0, 100)
    assert not state.observe(0.5, 0, 100)  # idle, not for long enough yet
    # A request from another pod's router came and went between two reads: its work shows.
    assert not state.observe(1.0, 0, 107)
    assert not state.observe(3.5, 0, 107)
    assert state.observe(4.0, 0, 107)  # quiet since 1.0
    # A request held, or a read that failed, starts the quiet period again.
    state = ModelQuiet(quiet=1.0)
    assert not state.observe(0.0, 0, None)
    assert not state.observe(0.9, 2, None)
    assert not state.observe(1.0, 0, None)
    state.busy()
    assert not state.observe(1.5, 0, None)
    assert not state.observe(2.0, 0, None)
    assert state.observe(2.5, 0, None)


def test_without_a_quiet_period_two_idle_reads_suffice() -> None:
    state = ModelQuiet(quiet=0.0)
    assert not state.observe(0.0, 0, 5)
    assert state.observe(0.0, 0, 5)
