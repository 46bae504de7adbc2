"""A real Prometheus (Debian's binary) per test, scraping what the test points it at."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from zeta_router_dev.local.prometheus import PrometheusServer, ScrapeTarget, start_prometheus

StartPrometheus = Callable[[Sequence[ScrapeTarget]], PrometheusServer]


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[StartPrometheus]:
    """Call it with scrape targets; every server it started is stopped (by PID) afterwards."""
    started: list[PrometheusServer] = []

    def start(targets: Sequence[ScrapeTarget]) -> PrometheusServer:
        data_dir = tmp_path / f"prometheus-{len(started)}"
        server = start_prometheus(targets, scrape_interval=1.0, data_dir=data_dir)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
