"""The Grafana dashboard names only metrics zeta-router exports, and shows what it should.
(Its queries are parsed by a real Prometheus in tests/e2e/test_dashboard_prometheus.py.)"""

from __future__ import annotations

import re

import pytest

from support.dashboard import load, metric_names, panels, queries, substitute, variable_queries
from zeta_router_dev.observability import exported_series, router_metrics


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("rate(a_total[5m])", {"a_total"}),
        ('sum by (tier, le) (rate(x_bucket{namespace=~"n", tier!="by"}[1m]))', {"x_bucket"}),
        ("vllm:num_requests_waiting or llamacpp:requests_deferred", {"vllm:num_requests_waiting",
                                                                      "llamacpp:requests_deferred"}),
        ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[1m]))) > 1e3", {"h_bucket"}),
        ("a / on (pod) group_left (tier) b offset 5m", {"a", "b"}),
    ],
)  # fmt: skip
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_series()
    dashboard = load()
    found = queries(dashboard)
    assert len(found) >= 20
    for title, expr in found:
        names = metric_names(substitute(expr))
        assert names, f"{title}: {expr} selects no metric"
        unknown = names - exported
        assert not unknown, f"{title}: {sorted(unknown)} are not exported by zeta-router"
    for query in variable_queries(dashboard):
        m = re.fullmatch(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)", query)
        assert m, query
        assert metric_names(m.group("selector") or "") <= exported, query


def test_the_names_come_from_the_exporting_code() -> None:
    """exported_series reads the router's registry: a name it does not define is not there."""
    exported = exported_series()
    assert "zeta_router_requests_total" in exported
    assert "zeta_router_decision_score_bucket" in exported
    assert "zeta_router_threshold" in exported
    assert "zeta_operator_decisions_total" in exported
    assert "zeta_operator_loop_intervals_total" in exported
    assert "vllm:num_requests_waiting" in exported
    assert "zeta_router_requests" not in exported
    assert "zeta_router_decision_score" not in exported  # a histogram has no bare series
    assert {f.name for f in router_metrics()} >= {
        "zeta_router_failovers_total",
        "zeta_router_shadow_agreement",
    }


def test_the_dashboard_covers_what_operators_watch() -> None:
    dashboard = load()
    by_metric: dict[str, list[str]] = {}
    for title, expr in queries(dashboard):
        for name in metric_names(substitute(expr)):
            by_metric.setdefault(name, []).append(title)
    for needed in (
        "zeta_router_requests_total",  # requests per tier and context
        "zeta_router_decision_score_bucket",  # decision-score distribution
        "zeta_router_threshold",  # thresholds over time
        "zeta_router_config_generation",  # replicas (one router per pod)
        "zeta_router_upstream_ttft_seconds_bucket",  # TTFT per tier
        "vllm:time_to_first_token_seconds_bucket",
        "zeta_router_failovers_total",
        "zeta_router_shadow_agreement_sum",
        "zeta_router_shadow_agreement_count",
        "vllm:num_requests_waiting",
        "llamacpp:requests_deferred",
        "zeta_operator_decisions_total",
    ):
        assert needed in by_metric, needed
    heatmaps = [p for p in panels(dashboard) if p.get("type") == "heatmap"]
    assert any(
        "zeta_router_decision_score_bucket" in t["expr"] for p in heatmaps for t in p["targets"]
    )


def test_dashboard_identity_and_variables() -> None:
    dashboard = load()
    assert dashboard["uid"] == "zeta-router"
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "namespace", "zetarouter", "context"]
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for p in panels(dashboard):
        if p.get("type") != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p.get("description"), p["title"]


def test_install_docs_list_every_metric_with_its_labels() -> None:
    from support.dashboard import REPO
    from zeta_router_dev.observability import operator_metrics

    text = (REPO / "docs" / "install.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): line
        for line in text.splitlines()
        if line.startswith("| `zeta_")
    }
    families = router_metrics() + operator_metrics()
    assert set(rows) == {f.name for f in families}
    for fam in families:
        row = rows[fam.name]
        assert f"| {fam.type} |" in row, fam.name
        for label in fam.labels:
            assert f"`{label}`" in row, (fam.name, label)
