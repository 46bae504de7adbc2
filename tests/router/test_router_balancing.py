"""A tier with two real llama.cpp replicas behind the router: requests that share a prompt
prefix meet on one replica whichever router takes them; a replica that goes away mid-load
loses no request; a replica added to the tier gets requests; a replica that answers 5xx or
hangs is ejected and its requests are answered by the other one."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from support.fake_upstream import start_fake_upstream
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.prometheus import free_port
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama

#: Generous for a loaded two-core machine: these waits are for conditions, not timings.
DEADLINE = 60.0


def _client(router: RouterProcess) -> openai.OpenAI:
    http = httpx.Client(timeout=120)
    return openai.OpenAI(
        base_url=router.base_url, api_key="unused", max_retries=0, http_client=http
    )


def _ask(client: openai.OpenAI, system: str, *turns: str) -> int:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": system}
    ]
    for i, t in enumerate(turns):
        if i:
            messages.append({"role": "assistant", "content": "Noted."})
        messages.append({"role": "user", "content": t})
    reply = client.chat.completions.with_raw_response.create(
        model="zeta", messages=messages, max_tokens=4, temperature=0
    )
    return reply.status_code


def _picks(router: RouterProcess) -> dict[str, float]:
    """Requests per replica so far (every reason)."""
    with urllib.request.urlopen(router.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("zeta_router_replica_requests_total{"):
            labels, _, value = line.rpartition(" ")
            replica = labels.split('replica="', 1)[1].split('"', 1)[0]
            out[replica] = out.get(replica, 0.0) + float(value)
    return out


def _metric_sum(router: RouterProcess, prefix: str) -> float:
    with urllib.request.urlopen(router.admin_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(prefix)
    )


def _new_pick(before: dict[str, float], after: dict[str, float]) -> set[str]:
    return {k for k, v in after.items() if v > before.get(k, 0.0)}


def _eventually(check: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_a_conversation_stays_on_one_replica_whichever_router_takes_its_turns(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    a, b = llama_servers["small"], llama_servers["large"]
    # The two routers list the replicas in a different order: they still agree.
    one = start_router(["--tier", f"small={a.url},{b.url}"], tmp_path)
    two = start_router(["--tier", f"small={b.url},{a.url}"], tmp_path)
    try:
        c1, c2 = _client(one), _client(two)
        for i in range(6):
            system = f"You answer questions about topic number {i}. Be brief."
            before = _picks(one), _picks(two)
            assert _ask(c1, system, f"First question {i}?") == 200
            assert _ask(c2, system, f"First question {i}?", "And a second one?") == 200
            assert _ask(c1, system, f"First question {i}?", "And a second one?", "Third?") == 200
            picked = _new_pick(before[0], _picks(one)) | _new_pick(before[1], _picks(two))
            assert len(picked) == 1, f"conversation {i} was answered by {picked}"
    finally:
        assert one.stop() == 0
        assert two.stop() == 0


def test_a_replica_that_goes_away_mid_load_loses_no_request(
    llama_tiers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    a, b = llama_tiers["small"], llama_tiers["large"]
    router = start_router(["--tier", f"small={a.url},{b.url}"], tmp_path)
    try:
        client = _client(router)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(_ask, client, f"Conversation {i}: be brief.", f"Question {i}?")
                for i in range(16)
            ]
            # Once both replicas have requests in progress, one goes away.
            assert _eventually(lambda: len(_picks(router)) == 2)
            b.stop()
            statuses = [f.result() for f in futures]
        assert statuses == [200] * 16
        # Later requests go to the replica that is left.
        before = _picks(router)
        for i in range(4):
            assert _ask(client, f"Later {i}: be brief.", "Hello?") == 200
        assert _new_pick(before, _picks(router)) <= {a.url, b.url}
        assert _picks(router)[a.url] - before.get(a.url, 0.0) == 4
    finally:
        assert router.stop() == 0


def test_a_replica_added_to_the_tier_gets_requests(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    a, b = llama_servers["small"], llama_servers["large"]
    config = tmp_path / "routing.yaml"

    def write(*replicas: str) -> None:
        listed = ", ".join(f"'{r}'" for r in replicas)
        config.write_text(
            f"tiers: [{{name: small, url: '{a.url}', replicas: [{listed}]}}]\n"
            "contexts: [{name: default, thresholds: []}]\ndefaultContext: default\n"
        )

    write(a.url)
    router = start_router(["--config", str(config)], tmp_path)
    try:
        client = _client(router)
        for i in range(3):
            assert _ask(client, f"Before {i}.", "Hi?") == 200
        assert set(_picks(router)) == {a.url}
        write(a.url, b.url)
        asked = iter(range(1000))
        assert _eventually(
            lambda: _ask(client, f"After {next(asked)}.", "Hi?") == 200 and b.url in _picks(router)
        )
    finally:
        assert router.stop() == 0


@pytest.mark.parametrize("fault", ["http_503", "hang"])
def test_a_failing_replica_is_ejected_and_the_other_answers(
    llama_servers: dict[str, LlamaServer], tmp_path: Path, fault: str
) -> None:
    good = llama_servers["small"]
    # A replica that answers 503 or never answers: faults a real server cannot be made to show.
    bad = start_fake_upstream(tmp_path / "fake.log")
    if fault == "hang":
        bad.control(hang=True)
    else:
        bad.control(status=503)
    router = start_router(
        [
            *("--tier", f"small={good.url},{bad.url}"),
            *("--first-byte-timeout", "5", "--balancing-option", "ejectionSeconds=600"),
        ],
        tmp_path,
    )
    try:
        client = _client(router)
        # Different conversations until one was picked for the failing replica.
        asked = iter(range(1000))
        assert _eventually(
            lambda: (
                _ask(client, f"Conversation {next(asked)}.", "Hi?") == 200
                and bad.stats()["requests"] >= 1
            ),
            timeout=3 * DEADLINE,
        )
        assert _metric_sum(router, "zeta_router_replica_ejections_total{") == 1
        # Ejected: every request goes to the other replica now, and is answered.
        statuses = [_ask(client, f"Later {i}.", "Hi?") for i in range(6)]
        assert statuses == [200] * 6
        assert bad.stats()["requests"] == 1
        # Its failure was the replica's, not the tier's: no tier failure, no failover.
        assert _metric_sum(router, "zeta_router_tier_failures_total{") == 0
    finally:
        assert router.stop() == 0
        bad.stop()


def test_a_tier_whose_known_replicas_cannot_be_reached_is_tried_through_its_service(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    # During a rollout a router may know only pods that are gone (it learns of new ones by name
    # resolution, late); the tier's Service already leads to the new ones.
    service = llama_servers["small"]
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = tmp_path / "routing.yaml"
    config.write_text(
        f"tiers: [{{name: small, url: '{service.url}', replicas: ['{gone}']}}]\n"
        "contexts: [{name: default, thresholds: []}]\ndefaultContext: default\n"
    )
    router = start_router(["--config", str(config)], tmp_path)
    try:
        client = _client(router)
        for i in range(3):
            assert _ask(client, f"Gone {i}.", "Hi?") == 200
        picks = _picks(router)
        assert picks.get(service.url) == 3, picks
        assert picks.get(gone, 0.0) >= 1, picks  # it was tried first, and failed to connect
    finally:
        assert router.stop() == 0
