"""The control loop's metrics snapshot from a real Prometheus scraping a real router and two real
llama.cpp servers, under load sent with the official openai client."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from support.deadlines import CONDITION
from support.fixtures_prometheus import StartPrometheus
from zeta_router.autoscale.metrics import (
    PrometheusSource,
    RouterTarget,
    assemble,
    build_queries,
    selector,
    target_from,
)
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
    timeout: float = CONDITION,
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

    # Exact counts first: once Prometheus has scraped the router after the load, its latest
    # sample of each counter is what the router counted, and that is what the clients got
    # answered (+1: the warm-up request per tier).
    total = {tier: answered[tier] + 1 for tier in answered}
    assert router_count(router, "small") == total["small"]
    assert router_count(router, "large") == total["large"]
    requests = f'zeta_router_requests_total{{{selector(TARGET)},context="default",code=~"2.."}}'
    deadline = time.monotonic() + 60
    while True:
        at = time.time()
        latest = per_tier(query_at(prometheus.url, f"sum by (tier) ({requests})", at))
        if latest == {t: float(n) for t, n in total.items()}:
            break
        assert time.monotonic() < deadline, (latest, total)
        time.sleep(0.5)
    # The large tier's slots are free again in the latest scrape.
    wait_for(source, TARGET, lambda s: s.available and s.tiers["large"].running == 0, timeout=60)

    # The snapshot, evaluated at one instant, against what Prometheus computes from the same
    # samples at that instant: increase() extrapolates the first-to-last difference of the
    # samples in the window towards its edges, so it lies between that difference and the
    # difference scaled to the whole window (never the count itself: that depends on how the
    # scrapes fell, the cause of past failures).
    window = source.window_seconds
    results = {k: query_at(prometheus.url, q, at) for k, q in build_queries(TARGET, window).items()}
    after = assemble(TARGET, results)
    routed = after.contexts["default"].requests_by_tier
    for tier in ("small", "large"):
        samples = range_at(prometheus.url, f"sum by (tier) ({requests})", window, at)[tier]
        (t0, first), (t1, last) = samples[0], samples[-1]
        assert last == total[tier]
        delta = last - first
        assert delta > 0, samples
        assert delta - 1e-6 <= routed[tier] <= delta * window / (t1 - t0) + 1e-6, (samples, routed)
    assert after.contexts["ZetaHRM"].total == 0
    hist = after.contexts["default"].scores
    assert hist is not None
    assert hist.total > 0
    for tier in ("small", "large"):
        t = after.tiers[tier]
        assert t.request_rate is not None
        assert t.request_rate > 0
        assert t.ttft_p90_seconds is not None
        assert t.ttft_p90_seconds > 0
        assert t.waiting == 0


def router_count(router: RouterProcess, tier: str) -> float:
    """Requests the router answered (200) in the default context on ``tier``: its own counter,
    read from its /metrics."""
    return router.metric("zeta_router_requests_total", context="default", tier=tier, code="200")


def query_at(url: str, promql: str, at: float) -> list[dict[str, Any]]:
    """An instant query evaluated at ``at`` (Unix seconds): the same instant for every query."""
    params = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{params}", timeout=30) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def per_tier(result: list[dict[str, Any]]) -> dict[str, float]:
    return {item["metric"]["tier"]: float(item["value"][1]) for item in result}


def range_at(url: str, expr: str, window: float, at: float) -> dict[str, list[tuple[float, float]]]:
    """The raw samples of each tier's series of ``expr`` in the window ending at ``at``."""
    # A range selector applies to a series selector only: sum the tiers' series here.
    inner = expr.removeprefix("sum by (tier) (").removesuffix(")")
    result = query_at(url, f"{inner}[{round(window)}s]", at)
    by_time: dict[str, dict[float, float]] = {}
    for item in result:
        series = by_time.setdefault(item["metric"]["tier"], {})
        for stamp, value in item["values"]:
            series[float(stamp)] = series.get(float(stamp), 0.0) + float(value)
    return {tier: sorted(series.items()) for tier, series in by_time.items()}


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
