"""The control loop's metrics snapshot from a real Prometheus scraping a real router and two real
llama.cpp servers, under load sent with the official openai client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from support.fixtures_prometheus import StartPrometheus
from zeta_router.autoscale.metrics import PrometheusSource, RouterTarget, target_from
from zeta_router.autoscale.snapshot import MetricsSnapshot, MetricsStatus
from zeta_router.bounded_http import FetchError
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.prometheus import PrometheusServer, ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [pytest.mark.prometheus, pytest.mark.llama, pytest.mark.slow]

NAMESPACE, NAME = "team-a", "assistant"
TARGET = target_from(
    NAMESPACE, NAME, [("small", "llamacpp"), ("large", "llamacpp")], ["default", "ZetaHRM"]
)
PROMPT = "Write a short poem about the sea, in four lines."


def address(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture(scope="module")
def router(
    llama_servers: dict[str, LlamaServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterProcess]:
    small, large = llama_servers["small"], llama_servers["large"]
    r = start_router(
        [
            *("--tier", f"small={small.url}", "--tier", f"large={large.url}", "--name", "zeta"),
            "--allow-force-tier",  # the tests pin tiers
        ],
        tmp_path_factory.mktemp("router"),
    )
    yield r
    r.stop()


def scrape_targets(servers: dict[str, LlamaServer], router: RouterProcess) -> list[ScrapeTarget]:
    # As in the cluster: each tier's pod has the model server; the router sidecar sits in the
    # small tier's pod.
    return [
        ScrapeTarget(
            address(servers["small"].url),
            pod_labels(NAMESPACE, NAME, "small", "model-server", pod="assistant-small-0"),
        ),
        ScrapeTarget(
            address(servers["large"].url),
            pod_labels(NAMESPACE, NAME, "large", "model-server", pod="assistant-large-0"),
        ),
        ScrapeTarget(
            address(router.admin_url),
            pod_labels(NAMESPACE, NAME, "small", "router", pod="assistant-small-0"),
        ),
    ]


def wait_for(
    source: PrometheusSource,
    target: RouterTarget,
    ok: Callable[[MetricsSnapshot], bool],
    timeout: float = 30.0,
) -> MetricsSnapshot:
    deadline = time.monotonic() + timeout
    snap = source.snapshot(target)
    while not ok(snap) and time.monotonic() < deadline:
        time.sleep(0.5)
        snap = source.snapshot(target)
    assert ok(snap), snap
    return snap


def chat(client: openai.OpenAI, tier: str, context: str = "default") -> str:
    raw = client.chat.completions.with_raw_response.create(
        model="zeta",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=48,
        extra_headers={"X-Zeta-Tier": tier, "X-Zeta-Context": context},
    )
    return str(raw.headers["x-zeta-tier"])


@pytest.fixture
def prometheus(
    prometheus_factory: StartPrometheus,
    llama_servers: dict[str, LlamaServer],
    router: RouterProcess,
) -> PrometheusServer:
    return prometheus_factory(scrape_targets(llama_servers, router))


def test_snapshot_follows_the_load_sent(
    prometheus: PrometheusServer, router: RouterProcess
) -> None:
    source = PrometheusSource(prometheus.url, window_seconds=600, timeout_seconds=5)
    client = openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, timeout=120)
    # One request per tier first, so every series exists before the measured load.
    assert chat(client, "small") == "small"
    assert chat(client, "large") == "large"
    idle = wait_for(
        source,
        TARGET,
        lambda s: (
            s.available
            and s.tiers["small"].ready_replicas == 1
            and s.tiers["large"].ready_replicas == 1
            and s.tiers["large"].request_rate is not None
            and s.config_generation is not None
            # (a scrape taken while the first requests ran shows them until the next one)
            and s.tiers["large"].running == 0
        ),
    )
    assert idle.tiers["large"].waiting == 0
    assert idle.tiers["large"].running == 0

    # Six concurrent clients on the large tier (2 llama.cpp slots) and two on the small one,
    # kept sending until Prometheus has seen the large tier's slots busy and requests deferred:
    # a sample taken between two scrapes may miss a short queue, so the load lasts until it
    # is seen (or the deadline), instead of for a fixed number of requests.
    clients = {"small": 2, "large": 6}
    answered = {"small": 0, "large": 0}
    wrong: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client_loop(tier: str) -> None:
        while not stop.is_set():
            got = chat(client, tier)
            with lock:
                answered[tier] += 1
                if got != tier:
                    wrong.append(got)

    seen = {"running": 0.0, "waiting": 0.0}

    def queue_seen(snap: MetricsSnapshot) -> bool:
        if snap.available:
            seen["running"] = max(seen["running"], snap.tiers["large"].running or 0.0)
            seen["waiting"] = max(seen["waiting"], snap.tiers["large"].waiting or 0.0)
        return seen["running"] >= 1 and seen["waiting"] >= 1

    with ThreadPoolExecutor(max_workers=sum(clients.values())) as pool:
        futures = [pool.submit(client_loop, t) for t, n in clients.items() for _ in range(n)]
        try:
            wait_for(source, TARGET, queue_seen, timeout=180)
        finally:
            stop.set()
        for f in futures:
            f.result()
    assert not wrong, wrong
    # llama.cpp ran at most its two slots and deferred the rest, and the snapshot saw both.
    assert 1 <= seen["running"] <= 2
    assert seen["waiting"] >= 1

    # Totals in the window: the two warm-up requests + those above (increase() is
    # extrapolated by Prometheus, hence the tolerance).
    total = {tier: answered[tier] + 1 for tier in answered}
    after = wait_for(
        source,
        TARGET,
        lambda s: (
            s.available
            and s.tiers["large"].running == 0
            and s.contexts["default"].requests_by_tier["large"] >= total["large"] - 1.5
        ),
    )
    routed = after.contexts["default"].requests_by_tier
    for tier, n in total.items():
        assert routed[tier] == pytest.approx(n - 1, abs=1.5), routed  # the first is not counted
    assert after.contexts["ZetaHRM"].total == 0
    hist = after.contexts["default"].scores
    assert hist is not None
    assert hist.total == pytest.approx(sum(total.values()) - 2, abs=2)
    for tier in ("small", "large"):
        t = after.tiers[tier]
        assert t.request_rate is not None
        assert t.request_rate > 0
        assert t.ttft_p90_seconds is not None
        assert t.ttft_p90_seconds > 0
        assert t.waiting == 0
    # The large tier waited for free slots, the small one did not: its TTFT is worse.
    assert after.tiers["large"].ttft_p90_seconds > after.tiers["small"].ttft_p90_seconds


def test_unknown_router_gives_no_series_and_a_stopped_prometheus_is_unreachable(
    prometheus: PrometheusServer,
) -> None:
    source = PrometheusSource(prometheus.url, window_seconds=60, timeout_seconds=5)
    wait_for(source, TARGET, lambda s: s.available)
    other = target_from(NAMESPACE, "nobody", [("small", "llamacpp")], ["default"])
    snap = source.snapshot(other)
    assert snap.status is MetricsStatus.NO_SERIES
    assert "app_kubernetes_io_instance=nobody" in snap.message
    prometheus.stop()
    snap = source.snapshot(TARGET)
    assert snap.status is MetricsStatus.UNREACHABLE


def test_a_bad_query_is_an_error(prometheus: PrometheusServer) -> None:
    """Prometheus' 400 reaches the caller as its status code only: the error text of the
    answer (which would repeat the query) is not read into any message."""
    source = PrometheusSource(prometheus.url, timeout_seconds=5)

    with pytest.raises(FetchError) as err:
        source.query("sum by (")
    assert (err.value.kind, err.value.status) == ("status", 400)
    assert str(err.value) == "answered HTTP 400"


def test_scrape_targets_can_change_at_runtime(
    prometheus: PrometheusServer,
    llama_servers: dict[str, LlamaServer],
    router: RouterProcess,
) -> None:
    source = PrometheusSource(prometheus.url, window_seconds=60, timeout_seconds=5)
    wait_for(source, TARGET, lambda s: s.available and s.tiers["large"].ready_replicas == 1)
    # A second "replica" of the large tier (the same server scraped under another pod name).
    targets = scrape_targets(llama_servers, router)
    targets.append(
        ScrapeTarget(
            address(llama_servers["large"].url),
            pod_labels(NAMESPACE, NAME, "large", "model-server", pod="assistant-large-1"),
        )
    )
    prometheus.set_targets(targets)
    wait_for(source, TARGET, lambda s: s.available and s.tiers["large"].ready_replicas == 2)
