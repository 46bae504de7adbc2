"""The request key rotates without a rollout: two router processes share a key file laid out
like a mounted Secret (the kubelet swaps it atomically), in front of real llama.cpp servers. A
thread sends requests to one router and posts each answer's feedback to the other, without
pause, while the key file goes through the documented steps (docs/router.md, "Rotating the
request key"): the new key added as a verifying key, then made the signing key, then the old
key dropped. No request and no feedback is refused at any point."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import pytest

from support.cluster import wait_for
from support.routing_files import ConfigMapDir
from zeta_router.router.ids import key_id
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = pytest.mark.llama

#: Most request/feedback rounds the load thread makes (it stops earlier when the test is done).
MAX_ROUNDS = 2000
DEADLINE = 60.0  # for each router to take a new key file: a loaded machine may take this long


class Load:
    """Bounded load from one thread: a request to router i, its feedback to router i + 1."""

    def __init__(self, routers: list[RouterProcess]) -> None:
        self.routers = routers
        self.stop = threading.Event()
        self.rounds = 0
        self.refused: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(MAX_ROUNDS):
                if self.stop.is_set():
                    return
                a, b = self.routers[i % 2], self.routers[(i + 1) % 2]
                resp = http.post(
                    a.base_url + "/chat/completions",
                    json={
                        "model": "zeta",
                        "messages": [{"role": "user", "content": f"Say hi {i}"}],
                        "max_tokens": 1,
                    },
                )
                if resp.status_code != 200:
                    self.refused.append(f"request {i}: {resp.status_code} {resp.text[:200]}")
                    continue
                rid = resp.headers["x-request-id"]
                fb = http.post(b.base_url + "/feedback", json={"request_id": rid, "score": 1})
                if fb.status_code // 100 != 2:
                    self.refused.append(f"feedback {i}: {fb.status_code} {fb.text[:200]}")
                self.rounds = i + 1


def _holds(r: RouterProcess, signing: bytes, verifying: list[bytes]) -> bool:
    if r.metric("zeta_router_request_keys", key_id=key_id(signing), role="sign") != 1:
        return False
    if r.metric("zeta_router_request_keys") != 1 + len(verifying):
        return False
    return all(
        r.metric("zeta_router_request_keys", key_id=key_id(k), role="verify") == 1
        for k in verifying
    )


def test_the_key_rotates_under_load_with_nothing_refused(
    llama_servers: dict[str, LlamaServer], tmp_path: Path
) -> None:
    old, new = os.urandom(32).hex().encode(), os.urandom(32).hex().encode()
    secret = ConfigMapDir(tmp_path / "router-key", filename="key")
    secret.write(old.decode() + "\n")
    small, large = llama_servers["small"], llama_servers["large"]
    args = [
        *("--tier", f"small={small.url}", "--tier", f"large={large.url}"),
        *("--request-key-file", str(secret.path), "--reload-interval", "0.2"),
    ]
    routers = [start_router(args, tmp_path), start_router(args, tmp_path)]
    load = Load(routers)
    try:
        assert all(_holds(r, old, []) for r in routers)
        load.thread.start()

        def rounds_past(n: int) -> bool:
            return load.rounds >= n or not load.thread.is_alive()

        wait_for(lambda: rounds_past(5), DEADLINE, "load under way")
        steps = [
            (old.decode() + "\n" + new.decode() + "\n", old, [new]),  # 1: new verifies
            (new.decode() + "\n" + old.decode() + "\n", new, [old]),  # 2: new signs
            (new.decode() + "\n", new, []),  # 3: old dropped
        ]
        for content, signing, verifying in steps:
            secret.write(content)
            for r in routers:
                wait_for(
                    lambda r=r, s=signing, v=verifying: _holds(r, s, v), DEADLINE, "the new keys"
                )
            # Traffic crosses the change before the next step (every id in flight by the
            # time of step 3 was signed with the new key).
            wait_for(lambda n=load.rounds: rounds_past(n + 4), DEADLINE, "load past the step")
        load.stop.set()
        load.thread.join(timeout=120)
        accepted = sum(r.metric("zeta_router_feedback_score_count") for r in routers)
    finally:
        load.stop.set()
        load.thread.join(timeout=120)
        for r in routers:
            assert r.stop() == 0
    assert load.refused == []
    assert load.rounds >= 17
    assert accepted == load.rounds
