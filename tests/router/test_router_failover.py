"""Failover between real llama.cpp servers: one down, both down, back again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from support.deadlines import CONDITION
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import start_router

pytestmark = pytest.mark.llama

MSG: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


def _eventually(check: Callable[[], bool], timeout: float = CONDITION) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_failover_all_down_and_recovery(
    llama_tiers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    small, large = llama_tiers["small"], llama_tiers["large"]
    r = start_router(
        [
            "--tier",
            f"small={small.url}",
            "--tier",
            f"large={large.url}",
            "--breaker-open-seconds",
            "1",
            "--threshold",
            "default=1.0",
        ],  # everything decides small
        tmp_path,
    )
    client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=60)

    def ask() -> openai.APIResponse[openai.types.chat.ChatCompletion]:
        return client.chat.completions.with_raw_response.create(
            model="zeta", messages=MSG, max_tokens=2
        )

    try:
        assert ask().headers["x-zeta-tier"] == "small"

        small.stop()
        for _ in range(4):  # past the breaker's threshold: refused, then skipped
            resp = ask()
            assert resp.headers["x-zeta-tier"] == "large"
            assert resp.parse().choices[0].message.content is not None
        refused = r.metric("zeta_router_failovers_total", **{"from": "small", "to": "large"})
        assert refused >= 4
        assert r.metric("zeta_router_failovers_total", reason="refused") >= 1
        status, body, _ = r.get("/readyz")
        assert status == 200
        assert body["tiers"] == {"small": False, "large": True}

        large.stop()
        with pytest.raises(openai.APIStatusError) as err:
            ask()
        assert err.value.status_code == 503
        assert int(err.value.response.headers["Retry-After"]) >= 1
        assert err.value.body["code"] == "no_tier_available"  # type: ignore[index]
        assert r.metric("zeta_router_requests_total", tier="none", code="503") >= 1
        assert _eventually(lambda: r.get("/readyz")[0] == 503)  # probes are cached for 1 s

        small.restart()
        large.restart()
        deadline = time.monotonic() + CONDITION
        tier = None
        while time.monotonic() < deadline:
            try:
                tier = ask().headers["x-zeta-tier"]
                if tier == "small":
                    break
            except openai.APIStatusError:
                pass
            time.sleep(0.3)
        assert tier == "small"  # the breaker let a probe through and closed again
        assert _eventually(lambda: r.get("/readyz")[0] == 200)
    finally:
        assert r.stop() == 0
