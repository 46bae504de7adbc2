"""A cascade context in front of real llama.cpp servers: the smallest tier answers first, the
answer-side judge decides whether the largest tier answers instead; counted, and kept as labels
for the learner."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import openai
import pytest

from support.routing_files import FLAT_SCORER, routing_config, write_plain
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import start_router

pytestmark = pytest.mark.llama


def test_cascade_keeps_or_escalates_by_the_judge_and_streams_are_routed(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    cfg = routing_config(
        {n: s.url for n, s in llama_servers.items()},
        # The flat scorer gives 0.5: a cut point of 0.9 routes every request small.
        {"keep": [0.9], "escalate": [0.9], "route": [0.9]},
        scorer=FLAT_SCORER,
        learning={"contexts": ["escalate"]},
    )
    contexts = cfg["contexts"]
    # The judge's doubt is a probability in (0, 1): 1.0 never escalates, 0.0 always does.
    contexts[0] |= {"mode": "cascade", "escalateAbove": 1.0}
    contexts[1] |= {"mode": "cascade", "escalateAbove": 0.0}
    path = tmp_path / "routing.yaml"
    write_plain(path, cfg)
    r = start_router(["--config", str(path)], tmp_path)
    client = openai.OpenAI(base_url=r.base_url, api_key="unused", max_retries=0, timeout=120)
    msg: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples?"}
    ]

    def ask(context: str, **kw: object) -> openai.APIResponse[openai.types.chat.ChatCompletion]:
        return client.chat.completions.with_raw_response.create(
            model=f"assistant/{context}", messages=msg, max_tokens=8, **kw
        )

    try:
        kept = ask("keep")
        assert kept.headers["x-zeta-tier"] == "small"
        assert kept.parse().choices[0].message.content is not None
        assert r.metric("zeta_router_cascade_total", context="keep", outcome="kept") == 1

        escalated = ask("escalate")
        assert escalated.headers["x-zeta-tier"] == "large"
        assert escalated.parse().choices[0].message.content is not None
        assert r.metric("zeta_router_cascade_total", context="escalate", outcome="escalated") == 1
        assert r.metric("zeta_router_cascade_doubt_count", context="escalate") == 1
        # Both tiers answered the escalated request; the client got the large tier's answer.
        assert r.metric("zeta_router_upstream_duration_seconds_count", tier="small") == 2
        assert r.metric("zeta_router_upstream_duration_seconds_count", tier="large") == 1
        assert r.metric("zeta_router_requests_total", context="escalate", tier="large") == 1

        # A streamed request of a cascade context is routed by its score, not cascaded.
        stream = client.chat.completions.create(
            model="assistant/escalate", messages=msg, max_tokens=4, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) is not None
        assert r.metric("zeta_router_cascade_total", context="escalate") == 1
        # Counted when the handler returns, which may be just after the client read the end.
        streamed = r.settled_metric(
            "zeta_router_requests_total", 1, context="escalate", tier="small"
        )
        assert streamed == 1

        # A route context is untouched.
        assert ask("route").headers["x-zeta-tier"] == "small"
        assert r.metric("zeta_router_cascade_total", context="route") == 0

        # The escalated request's doubt is a label for the learner (source "cascade").
        deadline = time.monotonic() + 10
        labels: list[dict[str, object]] = []
        while time.monotonic() < deadline and not labels:
            with urllib.request.urlopen(r.admin_url + "/learning/samples", timeout=5) as resp:
                batch = json.loads(resp.read())
            labels = [x for x in batch.get("labels", []) if x.get("source") == "cascade"]
            time.sleep(0.2)
        assert len(labels) == 1
        assert labels[0]["context"] == "escalate"
        assert 0.5 <= float(labels[0]["value"]) <= 1.0  # type: ignore[arg-type]
    finally:
        assert r.stop() == 0
