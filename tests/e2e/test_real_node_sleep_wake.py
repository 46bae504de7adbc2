"""A tier asleep at zero woken by traffic, on a real node: the chart's operator (a pod), the CPU
sample with its large tier at ``replicas.min: 0`` (sleepAfter 30s), real llama.cpp containers,
a Prometheus discovering the pods, and the official openai client on the entry Service.

Checked: the idle large tier goes to zero (TierSlept) and its routers are told; requests decided
for it are then all answered (by the small tier, marked X-Zeta-Tier-Asleep) while they wake it
(TierWoken); the woken tier answers once its replica is ready and the routers reloaded; idle
again, it goes back to zero. The time from the first request to the first answer on the woken
tier is printed (a figure, not a pass condition).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from support.cluster import apply, events_for, wait_for
from support.fixtures_node import RealNodeHandle
from support.node_install import module_install
from zeta_router.kube import Kube, api_path
from zeta_router_dev.cluster.workloads import (
    load_cpu_sample,
    localize_zetarouter,
    render_monitors,
    service_url,
    start_cluster_prometheus,
)

pytestmark = [pytest.mark.node, pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.slow]

#: Deadline of each step on a loaded 2-core machine (the kubelet syncs a ConfigMap volume
#: within about a minute); nothing waits for it.
STEP = 420.0


@dataclass
class Sleepy:
    kube: Kube
    namespace: str
    name: str
    entry_url: str

    def replicas(self, tier: str) -> int:
        dep = self.kube.get(
            api_path("apps/v1", "deployments", self.namespace, f"{self.name}-{tier}")
        )
        return int(dep["spec"]["replicas"])

    def reasons(self) -> list[str]:
        return [str(e.get("reason")) for e in events_for(self.kube, self.namespace, self.name)]


@pytest.fixture(scope="module")
def sleepy(real_node: RealNodeHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sleepy]:
    kube = real_node.kube
    with module_install(real_node, "zt-sleep") as install:
        namespace = install.namespace
        prometheus = start_cluster_prometheus(
            kube,
            real_node.info.server,
            real_node.info.ca_cert,
            tmp_path_factory.mktemp("prometheus"),
            render_monitors(install.release, install.operators, [namespace], "1s"),
            account_namespace=install.operators,
        )
        try:
            install.install_operator()
            sample = load_cpu_sample()
            name = sample["metadata"]["name"]
            zr: dict[str, Any] = localize_zetarouter(
                sample, namespace=namespace, prometheus_url=prometheus.url
            )
            large = zr["spec"]["tiers"][1]
            large["replicas"] = {"min": 0, "max": 1, "initial": 1, "sleepAfter": "30s"}
            zr["spec"]["tiers"][0]["replicas"] = {"min": 1, "max": 1}
            # Cut point 0: every request is decided for the large tier; fallback is the default.
            zr["spec"]["router"]["contexts"] = [{"name": "default", "thresholds": [0.0]}]
            zr["spec"]["router"]["defaultContext"] = "default"
            apply(kube, zr)
            install.wait_for_zetarouter(name, "SpecValid", 300)
            yield Sleepy(kube, namespace, name, service_url(kube, namespace, name))
        finally:
            prometheus.stop()


def test_a_sleeping_tier_is_woken_by_traffic_with_no_failed_request(sleepy: Sleepy) -> None:
    s = sleepy
    # Idle: the large tier sleeps.
    wait_for(lambda: s.replicas("large") == 0, STEP, "the large tier asleep")
    wait_for(lambda: "TierSlept" in s.reasons(), STEP, "a TierSlept Event")
    client = openai.OpenAI(base_url=f"{s.entry_url}/v1", api_key="unused", max_retries=0)

    def ask() -> tuple[str, str | None]:
        raw = client.chat.completions.with_raw_response.create(
            model="chat-cpu",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=4,
            timeout=120,
        )
        return raw.headers["x-zeta-tier"], raw.headers.get("x-zeta-tier-asleep")

    # Until the routers have the config that says it sleeps, a request may still be tried on
    # the large tier and fail over; wait for the first answer that says so (it wakes the tier).
    failures: list[str] = []
    served: list[tuple[str, str | None]] = []
    first: float | None = None

    def marked() -> bool:
        nonlocal first
        try:
            answer = ask()
        except openai.OpenAIError as e:
            failures.append(str(e))
            return False
        served.append(answer)
        if answer == ("small", "large"):
            first = time.monotonic()
            return True
        time.sleep(1.0)
        return False

    wait_for(marked, STEP, "an answer marked X-Zeta-Tier-Asleep: large")
    assert first is not None
    answered_by_large: float | None = None
    deadline = time.monotonic() + STEP
    while answered_by_large is None and time.monotonic() < deadline:
        try:
            tier, asleep = ask()
        except openai.OpenAIError as e:
            failures.append(str(e))
            continue
        served.append((tier, asleep))
        if tier == "large":
            answered_by_large = time.monotonic()
    assert answered_by_large is not None, f"never answered by large: {served[-5:]}"
    print(
        f"\nreal node wake: {answered_by_large - first:.1f}s from the first request wanting the "
        f"sleeping tier to its first answer there; {len(served)} requests, "
        f"{len(failures)} failed"
    )
    assert failures == []
    assert all(a == "large" for t, a in served if t == "small" and a is not None)
    wait_for(lambda: "TierWoken" in s.reasons(), STEP, "a TierWoken Event")
    # Idle again: back to zero after the idle period.
    wait_for(lambda: s.replicas("large") == 0, STEP, "the large tier asleep again")
