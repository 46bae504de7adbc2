"""Load and shutdown against a fast local fake upstream (the router as a real process)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from support.deadlines import CONDITION
from support.fake_upstream import FakeUpstream, start_fake_upstream
from zeta_router_dev.local.router_proc import RouterProcess, start_router

REQUESTS = 2000
CONCURRENCY = 64


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "fake.log")
    yield up
    up.stop()


@pytest.mark.slow
def test_every_request_answered_exactly_once(upstream: FakeUpstream, tmp_path: Path) -> None:
    r = start_router(
        ["--tier", f"small={upstream.url}", "--tier", f"large={upstream.url}"], tmp_path
    )

    async def main() -> list[tuple[int, str, str]]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(REQUESTS):
            queue.put_nowait(i)
        results: list[tuple[int, str, str]] = []
        conn = aiohttp.TCPConnector(limit=CONCURRENCY)
        async with aiohttp.ClientSession(connector=conn) as s:

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    body = {"messages": [{"role": "user", "content": f"n-{i}"}]}
                    async with s.post(r.base_url + "/chat/completions", json=body) as resp:
                        data = await resp.json()
                        results.append(
                            (resp.status, f"n-{i}", data["choices"][0]["message"]["content"])
                        )

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return results

    try:
        results = asyncio.run(main())
        assert len(results) == REQUESTS
        assert all(status == 200 for status, _, _ in results)
        assert all(answer == f"echo: {nonce}" for _, nonce, answer in results)
        st = upstream.stats()
        assert st["requests"] == REQUESTS  # nothing retried, nothing lost
        assert sorted(st["nonces"]) == sorted(f"n-{i}" for i in range(REQUESTS))
        assert set(st["nonces"].values()) == {1}
        assert len(st["request_ids"]) == REQUESTS
        assert r.metric("zeta_router_requests_total", code="200") == REQUESTS
        assert r.metric("zeta_router_failovers_total") == 0
    finally:
        assert r.stop() == 0


def wait_draining(r: RouterProcess, timeout: float = CONDITION) -> None:
    """Return once the router reports draining (its admin port's readiness fails)."""
    deadline = time.monotonic() + timeout
    while r.get("/readyz")[0] != 503:
        assert time.monotonic() < deadline, f"the router did not start draining within {timeout}s"
        time.sleep(0.05)


def test_sigterm_drains_requests_in_flight(upstream: FakeUpstream, tmp_path: Path) -> None:
    # A stream long enough (6 s) to be in flight while the listener closes.
    upstream.control(chunks=60, chunk_delay=0.1)
    r = start_router(["--tier", f"small={upstream.url}", "--drain-seconds", "20"], tmp_path)

    async def main() -> tuple[list[str], bool]:
        async with aiohttp.ClientSession() as s:
            body = {"messages": [{"role": "user", "content": "x"}], "stream": True}
            async with s.post(r.base_url + "/chat/completions", json=body) as resp:
                lines = [(await resp.content.readline()).decode()]
                r.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(wait_draining, r)  # readiness fails first
                # No new connections once draining: wait for the refusal, with a deadline.
                refused = False
                deadline = time.monotonic() + CONDITION
                while not refused and time.monotonic() < deadline:
                    try:
                        async with aiohttp.ClientSession() as s2, s2.get(r.url + "/v1/models"):
                            await asyncio.sleep(0.1)
                    except aiohttp.ClientConnectorError:
                        refused = True
                async for line in resp.content:
                    lines.append(line.decode())
        return lines, refused

    lines, refused = asyncio.run(main())
    assert refused
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1].strip() == "data: [DONE]"
    assert len(data) == 61  # all 60 chunks and the end marker: nothing cut off
    assert json.loads(data[0][6:])["model"] == "zeta"  # standalone default name
    assert r.process.wait(20) == 0  # done once nothing is in flight, before the drain ends
    events = [e.get("event") for e in r.log_events()]
    assert "draining" in events
    assert events[-1] == "stopped"
