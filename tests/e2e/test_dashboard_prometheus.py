"""Every query of the Grafana dashboard, run by a real Prometheus (Debian's binary) scraping a
real router with the target labels of the label contract: each one parses, and the panels on the
router's configuration show its series."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.dashboard import load, queries, substitute, variable_queries
from support.deadlines import CONDITION
from support.fixtures_prometheus import StartPrometheus
from zeta_router_dev.local.prometheus import PrometheusServer, ScrapeTarget, pod_labels
from zeta_router_dev.local.router_proc import RouterProcess, start_router

pytestmark = [pytest.mark.prometheus]


def query(server: PrometheusServer, expr: str) -> dict[str, Any]:
    url = server.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body: dict[str, Any] = json.load(r)
    except urllib.error.HTTPError as e:  # 400 bad_data, 422 execution errors
        body = json.load(e)
    return body


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    # Nothing listens on the tier URLs: the router still loads its configuration and exports it.
    r = start_router(
        [
            "--tier", "small=http://127.0.0.1:9",
            "--tier", "large=http://127.0.0.1:9",
            "--threshold", "ZetaHRM=0.35",
        ],
        tmp_path_factory.mktemp("router"),
    )  # fmt: skip
    yield r
    r.stop()


@pytest.fixture
def prometheus(prometheus_factory: StartPrometheus, router: RouterProcess) -> PrometheusServer:
    labels = pod_labels("team-a", "chat", "small", "router")
    return prometheus_factory([ScrapeTarget(router.admin_url.removeprefix("http://"), labels)])


def wait_for_series(server: PrometheusServer, expr: str, timeout: float = CONDITION) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = query(server, expr)
        assert body["status"] == "success", body
        if body["data"]["result"] or time.monotonic() > deadline:
            result: list[Any] = body["data"]["result"]
            return result
        time.sleep(0.5)


def test_every_dashboard_query_parses(prometheus: PrometheusServer) -> None:
    dashboard = load()
    found = queries(dashboard)
    assert found
    for title, expr in found:
        body = query(prometheus, substitute(expr))
        assert body["status"] == "success", f"{title}: {expr}\n{body}"
    for q in variable_queries(dashboard):
        selector = q.removeprefix("label_values(").rsplit(",", 1)[0]
        if selector.startswith("zeta_"):
            body = query(prometheus, substitute(selector))
            assert body["status"] == "success", f"{q}\n{body}"


def test_a_malformed_query_is_reported_as_bad_data(prometheus: PrometheusServer) -> None:
    """The check above can fail: Prometheus refuses what does not parse."""
    body = query(prometheus, "sum by (tier (rate(zeta_router_requests_total[1m]))")
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"


def test_configuration_panels_show_the_routers_series(prometheus: PrometheusServer) -> None:
    exprs = {title: substitute(expr) for title, expr in queries(load())}
    thresholds = wait_for_series(prometheus, exprs["Thresholds"])
    cuts = {(s["metric"]["context"], s["metric"]["tier"]): float(s["value"][1]) for s in thresholds}
    assert cuts[("ZetaHRM", "large")] == pytest.approx(0.35)
    assert cuts[("default", "large")] == pytest.approx(0.5)
    (replicas,) = wait_for_series(prometheus, exprs["Replicas per tier"])
    assert replicas["metric"] == {"zeta_ai_tier": "small"}
    assert float(replicas["value"][1]) == 1


def test_label_contract_selectors_match(prometheus: PrometheusServer) -> None:
    """The dashboard's namespace/ZetaRouter filters use the target labels Prometheus has."""
    expr = 'zeta_router_config_generation{namespace=~"team-a",app_kubernetes_io_instance=~"chat"}'
    assert wait_for_series(prometheus, expr)
    other = 'zeta_router_config_generation{namespace=~"team-b"}'
    body = query(prometheus, other)
    assert body["status"] == "success"
    assert body["data"]["result"] == []
