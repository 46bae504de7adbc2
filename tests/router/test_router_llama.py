"""The router in front of two real llama.cpp servers, driven with the official openai client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from support.deadlines import CONDITION
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama

SHORT = "What is the capital of France?"
LONG = (
    "I need three things, answered step by step.\n"
    "1. Prove that the square root of 2 is irrational, and explain why the proof by "
    "contradiction works.\n"
    "2. Derive a closed form for the sum 1^2 + 2^2 + ... + n^2 and prove it by induction; "
    "show each step of the derivation with $\\sum_{k=1}^{n} k^2$.\n"
    "3. Write a Python function that checks the formula for n up to 1000:\n"
    "```python\ndef check(n):\n    return sum(k * k for k in range(1, n + 1)) == "
    "n * (n + 1) * (2 * n + 1) // 6\n```\n"
    "then analyze its time complexity and compare it with the closed form. Why is the closed "
    "form faster, and how would you prove the loop computes the same value?"
)


@pytest.fixture(scope="module")
def router(
    llama_servers: dict[str, LlamaServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    small, large = llama_servers["small"], llama_servers["large"]
    r = start_router(
        [
            *("--tier", f"small={small.url}", "--tier", f"large={large.url}/v1", "--name", "zeta"),
            "--allow-force-tier",
        ],
        tmp_path_factory.mktemp("router"),
    )
    yield r
    assert r.stop() == 0


@pytest.fixture
def client(router: RouterProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, timeout=60)


def test_chat_non_streaming_with_decision_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="zeta", messages=[{"role": "user", "content": SHORT}], max_tokens=8
    )
    assert raw.headers["x-zeta-tier"] in ("small", "large")
    assert raw.headers["x-zeta-context"] == "default"
    assert 0.0 <= float(raw.headers["x-zeta-score"]) <= 1.0
    assert raw.headers["x-request-id"]
    done = raw.parse()
    assert done.model == "zeta"
    assert done.choices[0].message.content
    assert done.usage is not None
    assert done.usage.completion_tokens <= 8


def test_chat_streaming(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="zeta/ZetaTRM",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
        )
    )
    assert len(chunks) >= 3  # arrived as a stream of events, not one body
    assert {c.model for c in chunks} == {"zeta/ZetaTRM"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()


def test_completions_streaming_and_not(client: openai.OpenAI) -> None:
    done = client.completions.create(model="zeta", prompt="The capital of France is", max_tokens=4)
    assert done.model == "zeta"
    assert done.choices[0].text
    chunks = list(
        client.completions.create(model="zeta", prompt="One, two,", max_tokens=4, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_models_lists_router_and_contexts(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["zeta", "zeta/ZetaHRM", "zeta/ZetaTRM", "zeta/default"]


@pytest.mark.parametrize("context", ["default", "ZetaHRM", "ZetaTRM"])
def test_short_prompt_goes_small_and_long_reasoning_prompt_goes_large(
    client: openai.OpenAI, context: str
) -> None:
    """With the shipped default weights and the built-in thresholds."""
    short = client.chat.completions.with_raw_response.create(
        model=f"zeta/{context}", messages=[{"role": "user", "content": SHORT}], max_tokens=2
    )
    long = client.chat.completions.with_raw_response.create(
        model=f"zeta/{context}", messages=[{"role": "user", "content": LONG}], max_tokens=2
    )
    assert short.headers["x-zeta-tier"] == "small", short.headers["x-zeta-score"]
    assert long.headers["x-zeta-tier"] == "large", long.headers["x-zeta-score"]
    assert float(long.headers["x-zeta-score"]) > float(short.headers["x-zeta-score"])


def test_forced_tier_and_conversation_stickiness(client: openai.OpenAI) -> None:
    msgs: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": SHORT}]
    forced = client.chat.completions.with_raw_response.create(
        model="zeta", messages=msgs, max_tokens=2, extra_headers={"X-Zeta-Tier": "large"}
    )
    assert forced.headers["x-zeta-tier"] == "large"
    first = client.chat.completions.with_raw_response.create(
        model="zeta", messages=[{"role": "user", "content": LONG}], max_tokens=2
    )
    assert first.headers["x-zeta-tier"] == "large"
    follow_up = client.chat.completions.with_raw_response.create(
        model="zeta",
        messages=[
            {"role": "user", "content": LONG},
            {"role": "assistant", "content": first.parse().choices[0].message.content or ""},
            *msgs,
        ],
        max_tokens=2,
    )
    assert follow_up.headers["x-zeta-tier"] == "large"  # never back to small in a conversation


def test_metrics_move_and_feedback(client: openai.OpenAI, router: RouterProcess) -> None:
    before_req = router.metric("zeta_router_requests_total", context="ZetaHRM", code="200")
    before_ttft = router.metric("zeta_router_upstream_ttft_seconds_count")
    before_score = router.metric("zeta_router_decision_score_count", context="ZetaHRM")
    raw = client.chat.completions.with_raw_response.create(
        model="zeta",
        messages=[{"role": "user", "content": SHORT}],
        max_tokens=2,
        extra_headers={"X-Zeta-Context": "ZetaHRM"},
    )
    tier = raw.headers["x-zeta-tier"]
    assert router.metric("zeta_router_requests_total", context="ZetaHRM", code="200") == (
        before_req + 1
    )
    assert router.metric("zeta_router_upstream_ttft_seconds_count") == before_ttft + 1
    assert router.metric("zeta_router_decision_score_count", context="ZetaHRM") == (
        before_score + 1
    )
    assert router.metric("zeta_router_overhead_seconds_count") >= 1
    assert router.metric("zeta_router_inflight", tier=tier) == 0
    status, body, _ = router.get("/readyz")
    assert status == 200
    assert body["tiers"] == {"small": True, "large": True}

    fb = client.post(
        "/feedback",
        body={"request_id": raw.headers["x-request-id"], "score": 0.9},
        cast_to=object,
    )
    assert fb["tier"] == tier  # type: ignore[index]
    assert router.metric("zeta_router_feedback_score_count", context="ZetaHRM", tier=tier) == 1


def test_shadow_sampling_against_the_larger_tier(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    small, large = llama_servers["small"], llama_servers["large"]
    log = tmp_path / "shadow.jsonl"
    r = start_router(
        [
            *("--tier", f"small={small.url}", "--tier", f"large={large.url}"),
            *("--shadow-sample-rate", "1", "--shadow-log", str(log)),
        ],
        tmp_path,
    )
    try:
        c = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="zeta", messages=[{"role": "user", "content": SHORT}], max_tokens=6
        )
        assert raw.headers["x-zeta-tier"] == "small"
        # The shadow request runs after the answer: wait for its record and its metric.
        deadline = time.monotonic() + CONDITION
        while time.monotonic() < deadline and not (
            log.exists()
            and log.read_text().strip()
            and r.metric("zeta_router_shadow_agreement_count", context="default") == 1
        ):
            time.sleep(0.1)
        assert r.metric("zeta_router_shadow_agreement_count", context="default") == 1
        record = log.read_text().splitlines()[0]
        assert raw.headers["x-request-id"] in record
        assert '"shadow_tier": "large"' in record
        assert SHORT not in record  # prompts stay out of logs by default
    finally:
        assert r.stop() == 0
