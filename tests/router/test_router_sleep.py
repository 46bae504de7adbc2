"""Requests for a tier asleep at zero replicas, in front of real llama.cpp servers: counted as
the signal that wakes it, answered on the nearest tier that has replicas (fallback, marked in a
header), or held until a reloaded config says the tier is awake (wait), then answered there."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from support.deadlines import CONDITION
from support.routing_files import routing_config, write_plain
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama


def _cfg(
    servers: dict[str, LlamaServer],
    generation: int,
    *,
    asleep: bool,
    context: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    # Cut point 0: every request is decided for the large tier.
    cfg = routing_config(
        {n: s.url for n, s in servers.items()}, {"default": [0.0]}, generation=generation, **extra
    )
    if asleep:
        cfg["tiers"][1]["asleep"] = True
    if context:
        cfg["contexts"][0].update(context)
    return cfg


def _ask(r: RouterProcess, **headers: str) -> tuple[int, dict[str, str]]:
    client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=120)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="assistant",
            messages=[{"role": "user", "content": "Hi there"}],
            max_tokens=2,
            extra_headers=headers or None,
        )
    except openai.APIStatusError as e:
        return e.status_code, dict(e.response.headers)
    return raw.http_response.status_code, dict(raw.headers)


def _wait_for(r: RouterProcess, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + CONDITION
    while time.monotonic() < deadline:
        if r.metric(name, **labels) == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}{labels} never reached {value} (now {r.metric(name, **labels)})")


def test_fallback_answers_on_the_nearest_awake_tier_and_counts_the_wake_request(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(llama_servers, 1, asleep=True))
    r = start_router(["--config", str(path), "--reload-interval", "0.2"], tmp_path)
    try:
        for n in (1, 2):
            status, headers = _ask(r)
            assert status == 200
            assert headers["x-zeta-tier"] == "small"
            assert headers["x-zeta-tier-asleep"] == "large"
            assert r.metric("zeta_router_wake_requests_total", tier="large") == n
            assert r.metric("zeta_router_asleep_fallbacks_total", tier="large") == n
        # Nothing was sent to the sleeping tier: no failure, no failover counted.
        assert r.metric("zeta_router_tier_failures_total") == 0
        assert r.metric("zeta_router_failovers_total") == 0
        assert r.metric("zeta_router_requests_total", tier="small", code="200") == 2

        write_plain(path, _cfg(llama_servers, 2, asleep=False))
        _wait_for(r, "zeta_router_config_generation", 2)
        status, headers = _ask(r)
        assert status == 200
        assert headers["x-zeta-tier"] == "large"
        assert "x-zeta-tier-asleep" not in headers
        assert r.metric("zeta_router_wake_requests_total", tier="large") == 2
    finally:
        assert r.stop() == 0


def test_wait_holds_the_request_until_the_tier_wakes_then_answers_there(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    # A bound far above anything the test waits for: the request is answered once woken.
    wait = {"whenAsleep": "wait", "waitSeconds": 600}
    write_plain(path, _cfg(llama_servers, 1, asleep=True, context=wait))
    r = start_router(["--config", str(path), "--reload-interval", "0.2"], tmp_path)
    try:
        result: list[tuple[int, dict[str, str]]] = []
        asker = threading.Thread(target=lambda: result.append(_ask(r)))
        asker.start()
        # Held: counted as wanting the tier, not answered.
        _wait_for(r, "zeta_router_wake_requests_total", 1, tier="large")
        assert not result
        write_plain(path, _cfg(llama_servers, 2, asleep=False, context=wait))
        asker.join(timeout=CONDITION)
        assert not asker.is_alive()
        ((status, headers),) = result
        assert status == 200
        assert headers["x-zeta-tier"] == "large"
        assert "x-zeta-tier-asleep" not in headers
        assert r.metric("zeta_router_asleep_fallbacks_total") == 0
    finally:
        assert r.stop() == 0


def test_wait_falls_back_at_its_bound(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    wait = {"whenAsleep": "wait", "waitSeconds": 0.2}
    write_plain(path, _cfg(llama_servers, 1, asleep=True, context=wait))
    r = start_router(["--config", str(path)], tmp_path)
    try:
        status, headers = _ask(r)
        assert status == 200
        assert headers["x-zeta-tier"] == "small"
        assert headers["x-zeta-tier-asleep"] == "large"
        assert r.metric("zeta_router_asleep_fallbacks_total", tier="large") == 1
    finally:
        assert r.stop() == 0


def test_a_request_pinned_to_a_sleeping_tier_gets_a_503_that_says_so(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    path = tmp_path / "routing.yaml"
    write_plain(path, _cfg(llama_servers, 1, asleep=True, allowForceTier=True))
    r = start_router(["--config", str(path)], tmp_path)
    try:
        client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(
                model="assistant",
                messages=[{"role": "user", "content": "Hi there"}],
                max_tokens=2,
                extra_headers={"X-Zeta-Tier": "large"},
            )
        assert e.value.status_code == 503
        assert e.value.code == "tier_asleep"
        assert e.value.response.headers["retry-after"] == "10"
        assert r.metric("zeta_router_wake_requests_total", tier="large") == 1
    finally:
        assert r.stop() == 0
