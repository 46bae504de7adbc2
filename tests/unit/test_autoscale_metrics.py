"""From Prometheus answers to a snapshot: the queries follow the label contract, and every
missing piece stays unknown (None), never zero."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from zeta_router.autoscale.metrics import (
    PrometheusSource,
    assemble,
    build_queries,
    selector,
    target_from,
)
from zeta_router.autoscale.snapshot import MetricsStatus
from zeta_router_dev.local.prometheus import ScrapeTarget, build_config, pod_labels

TARGET = target_from(
    "prod", "assistant", [("small", "llamacpp"), ("large", "vllm")], ["ZetaHRM", "ZetaTRM"]
)


def sample(value: float | str, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [0, str(value)]}


def full_results() -> dict[str, list[dict[str, Any]]]:
    return {
        "targets": [sample(2, zeta_ai_tier="small"), sample(3, zeta_ai_tier="large")],
        "ready": [sample(2, zeta_ai_tier="small"), sample(2, zeta_ai_tier="large")],
        "llamacpp_waiting": [sample(1, zeta_ai_tier="small")],
        "llamacpp_running": [sample(3, zeta_ai_tier="small")],
        "vllm_waiting": [sample(9, zeta_ai_tier="large")],
        "vllm_running": [sample(40, zeta_ai_tier="large")],
        "vllm_kv": [sample(0.75, zeta_ai_tier="large")],
        "vllm_ttft_p90": [sample(1.5, zeta_ai_tier="large")],
        "router_ttft_p90": [sample(0.4, tier="small"), sample(2.0, tier="large")],
        "request_rate": [sample(3.5, tier="small"), sample(1.25, tier="large")],
        "context_requests": [
            sample(70, context="ZetaHRM", tier="small"),
            sample(30, context="ZetaHRM", tier="large"),
            sample(5, context="ZetaTRM", tier="none"),
        ],
        "context_scores": [
            sample(10, context="ZetaHRM", le="0.25"),
            sample(60, context="ZetaHRM", le="0.5"),
            sample(59.5, context="ZetaHRM", le="0.75"),  # extrapolation noise
            sample(100, context="ZetaHRM", le="+Inf"),
        ],
        "shadow_sum": [sample(18, context="ZetaHRM")],
        "shadow_count": [sample(20, context="ZetaHRM")],
        "feedback_sum": [sample(3, context="ZetaTRM")],
        "feedback_count": [sample(4, context="ZetaTRM")],
        "generation_min": [sample(7)],
        "routers": [sample(4)],
    }


def test_queries_select_by_the_label_contract() -> None:
    q = build_queries(TARGET, window_seconds=90)
    sel = 'namespace="prod",app_kubernetes_io_instance="assistant"'
    assert q["targets"] == (
        f'count by (zeta_ai_tier) (up{{{sel},app_kubernetes_io_component="model-server"}})'
    )
    assert q["vllm_waiting"] == f"sum by (zeta_ai_tier) (vllm:num_requests_waiting{{{sel}}})"
    assert "vllm:kv_cache_usage_perc" in q["vllm_kv"]
    assert "vllm:gpu_cache_usage_perc" in q["vllm_kv"]
    assert q["llamacpp_waiting"] == f"sum by (zeta_ai_tier) (llamacpp:requests_deferred{{{sel}}})"
    assert "[90s]" in q["router_ttft_p90"]
    assert 'tier!="large"' in q["feedback_sum"]
    only_llama = target_from("a", "b", [("x", "llamacpp")], ["c"])
    assert not [k for k in build_queries(only_llama, 60) if k.startswith("vllm")]
    assert "feedback_sum" not in build_queries(only_llama, 60)


def test_label_values_are_escaped() -> None:
    t = target_from('we"ird', "a\\b", [("x", "vllm")], [])
    assert selector(t) == 'namespace="we\\"ird",app_kubernetes_io_instance="a\\\\b"'


def test_assemble_maps_every_engine_and_context_signal() -> None:
    snap = assemble(TARGET, full_results())
    assert snap.available
    small, large = snap.tiers["small"], snap.tiers["large"]
    assert (small.ready_replicas, small.waiting, small.running) == (2, 1.0, 3.0)
    assert small.kv_cache_usage is None
    assert small.ttft_p90_seconds == 0.4  # llama.cpp: from the routers' upstream TTFT
    assert (large.waiting, large.running, large.kv_cache_usage) == (9.0, 40.0, 0.75)
    assert large.ttft_p90_seconds == 1.5  # vLLM: from the engine's own histogram
    assert (small.request_rate, large.request_rate) == (3.5, 1.25)
    hrm = snap.contexts["ZetaHRM"]
    assert hrm.requests_by_tier == {"small": 70.0, "large": 30.0}
    assert hrm.share("large") == pytest.approx(0.3)
    assert hrm.scores is not None
    assert hrm.scores.cumulative == (10.0, 60.0, 60.0, 100.0)
    assert hrm.scores.quantile(0.6) == pytest.approx(0.5)
    assert (hrm.quality, hrm.quality_samples) == (0.9, 20.0)
    trm = snap.contexts["ZetaTRM"]
    assert trm.total == 0  # tier "none" (errors) is not routing
    assert (trm.quality, trm.quality_samples) == (0.75, 4.0)
    assert snap.config_generation == 7


def test_missing_series_stay_unknown() -> None:
    results = full_results()
    del results["vllm_waiting"]
    results["vllm_ttft_p90"] = [sample("NaN", zeta_ai_tier="large")]
    results["request_rate"] = []
    snap = assemble(TARGET, results)
    large = snap.tiers["large"]
    assert large.waiting is None
    assert large.ttft_p90_seconds == 2.0  # falls back to the routers' view
    # Routers report but sent nothing to a tier: it served nothing (a real zero).
    assert large.request_rate == 0.0
    results["routers"] = []
    assert assemble(TARGET, results).tiers["large"].request_rate is None
    assert assemble(TARGET, results).config_generation == 7


def test_a_tier_without_targets_has_no_ready_replicas() -> None:
    results = full_results()
    results["targets"] = [sample(2, zeta_ai_tier="small")]
    results["ready"] = [sample(2, zeta_ai_tier="small")]
    assert assemble(TARGET, results).tiers["large"].ready_replicas == 0


def test_no_targets_at_all_is_no_series() -> None:
    snap = assemble(TARGET, {"targets": []})
    assert snap.status is MetricsStatus.NO_SERIES
    assert "app_kubernetes_io_instance=assistant" in snap.message


# ---- the client against real sockets (faults caused, not mocked) -----------------------------


def test_unreachable_prometheus() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port any more.
    snap = PrometheusSource(f"http://127.0.0.1:{port}", timeout_seconds=2).snapshot(TARGET)
    assert snap.status is MetricsStatus.UNREACHABLE
    assert snap.message == (
        f"Prometheus at http://127.0.0.1:{port} gave no HTTP answer in time "
        "(unreachable, refused, timed out or not HTTP)"
    )


def test_prometheus_that_never_answers_reads_as_unreachable() -> None:
    """A silent port and a closed one read alike: the status does not tell them apart."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # connections are queued, never answered
        port = s.getsockname()[1]
        source = PrometheusSource(f"http://127.0.0.1:{port}", timeout_seconds=0.5)
        snap = source.snapshot(TARGET)
    assert snap.status is MetricsStatus.UNREACHABLE
    assert snap.message == (
        f"Prometheus at http://127.0.0.1:{port} gave no HTTP answer in time "
        "(unreachable, refused, timed out or not HTTP)"
    )


@pytest.fixture
def failing_http() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status":"error","error":"overloaded"}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_error_answer(failing_http: str) -> None:
    snap = PrometheusSource(failing_http, timeout_seconds=2).snapshot(TARGET)
    assert snap.status is MetricsStatus.ERROR
    assert snap.message == f"Prometheus at {failing_http} answered HTTP 503"
    assert "overloaded" not in snap.message


# ---- the local Prometheus config -------------------------------------------------------------


def test_scrape_config_carries_the_contract_labels() -> None:
    labels = pod_labels("prod", "assistant", "small", "router")
    cfg = build_config(
        [
            ScrapeTarget("127.0.0.1:1", labels),
            ScrapeTarget("127.0.0.1:2", pod_labels("prod", "assistant", "small", "model-server")),
            ScrapeTarget("127.0.0.1:3", {"job_kind": "operator"}, metrics_path="/m"),
        ],
        scrape_interval=0.5,
    )
    jobs = cfg["scrape_configs"]
    assert isinstance(jobs, list)
    assert [j["metrics_path"] for j in jobs] == ["/m", "/metrics"]
    assert jobs[1]["scrape_interval"] == "0.5s"
    assert jobs[1]["static_configs"][0] == {
        "targets": ["127.0.0.1:1"],
        "labels": {
            "namespace": "prod",
            "pod": "assistant-small-0",
            "app_kubernetes_io_instance": "assistant",
            "zeta_ai_tier": "small",
            "app_kubernetes_io_component": "router",
        },
    }
