"""A real Prometheus server on this machine (Debian's ``prometheus`` binary) for tests and the
demo, scraping local processes with the same target labels the cluster's scrape config sets.

    server = start_prometheus([
        ScrapeTarget("127.0.0.1:8001", pod_labels("default", "assistant", "small", "model-server")),
        ScrapeTarget("127.0.0.1:8002", pod_labels("default", "assistant", "small", "router")),
    ])
    ...  # query server.url
    server.set_targets([...])  # rewrite the config and reload it
    server.stop()

It binds 127.0.0.1 on a free port, keeps its data in a temporary directory (removed on stop
unless one was given), scrapes every second by default, and is stopped by PID. The label
contract (``pod_labels``) is documented in docs/autoscaling.md; `zeta_router.autoscale.metrics`
queries by it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from zeta_router.autoscale.metrics import (
    LABEL_COMPONENT,
    LABEL_NAMESPACE,
    LABEL_POD,
    LABEL_ROUTER,
    LABEL_TIER,
)
from zeta_router_dev.local.llama import set_parent_death_signal

DEBIAN_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus could not be found or started (the message says why and what to do)."""


@dataclass(frozen=True)
class ScrapeTarget:
    address: str
    """host:port of a /metrics endpoint."""
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/metrics"


def pod_labels(
    namespace: str, router: str, tier: str, component: str, pod: str | None = None
) -> dict[str, str]:
    """The target labels a pod of a ZetaRouter carries after relabelling (the label contract)."""
    return {
        LABEL_NAMESPACE: namespace,
        LABEL_POD: pod or f"{router}-{tier}-0",
        LABEL_ROUTER: router,
        LABEL_TIER: tier,
        LABEL_COMPONENT: component,
    }


def build_config(
    targets: Sequence[ScrapeTarget],
    scrape_interval: float = 1.0,
    job: str = "zeta-router",
    jobs: Sequence[Mapping[str, object]] = (),
) -> dict[str, object]:
    """A Prometheus config with one static job per metrics path (labels go on each target),
    followed by ``jobs`` as given (e.g. Kubernetes service discovery from the chart's monitors,
    ``zeta_router_dev.local.monitors``)."""
    interval = f"{max(scrape_interval, 0.1):g}s"
    by_path: dict[str, list[dict[str, object]]] = {}
    for t in targets:
        by_path.setdefault(t.metrics_path, []).append(
            {"targets": [t.address], "labels": dict(t.labels)}
        )
    static_jobs: list[dict[str, object]] = [
        {
            "job_name": job if i == 0 else f"{job}-{i}",
            "metrics_path": path,
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "static_configs": statics,
        }
        for i, (path, statics) in enumerate(sorted(by_path.items()))
    ]
    static_jobs.extend(dict(j) for j in jobs)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": static_jobs,
    }


def find_binary() -> str:
    found = shutil.which("prometheus") or (
        DEBIAN_BINARY if os.access(DEBIAN_BINARY, os.X_OK) else None
    )
    if found is None:
        raise PrometheusError(
            "the prometheus binary is not installed: run `make system-deps` "
            "(scripts/install-system-deps.sh installs Debian's prometheus package)"
        )
    return found


def supports_kubernetes_sd(binary: str | None = None) -> bool:
    """Whether this machine's Prometheus has Kubernetes service discovery (Debian's build does
    not), asked of its ``promtool``."""
    exe = binary or find_binary()
    promtool = Path(exe).with_name("promtool")
    if not promtool.exists():
        found = shutil.which("promtool")
        if found is None:
            return False
        promtool = Path(found)
    config = {
        "scrape_configs": [
            {"job_name": "probe", "kubernetes_sd_configs": [{"role": "pod"}]},
        ]
    }
    with tempfile.TemporaryDirectory(prefix="zeta-promtool-") as d:
        path = Path(d) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        proc = subprocess.run(
            [str(promtool), "check", "config", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    return proc.returncode == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class PrometheusServer:
    port: int
    process: subprocess.Popen[bytes]
    config_path: Path
    data_dir: Path
    log_path: Path
    scrape_interval: float
    owns_data_dir: bool = False
    host: str = "127.0.0.1"
    jobs: tuple[Mapping[str, object], ...] = ()
    """Scrape jobs kept as given across :meth:`set_targets`."""
    companions: list[Callable[[], None]] = field(default_factory=list)
    """Stopped with the server (e.g. the service discovery it reads)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def ready(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=timeout) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def set_targets(self, targets: Sequence[ScrapeTarget]) -> None:
        """Rewrite the scrape config and make the running server load it."""
        self.config_path.write_text(
            yaml.safe_dump(
                build_config(targets, self.scrape_interval, jobs=self.jobs), sort_keys=False
            )
        )
        request = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as r:
            if r.status != 200:  # pragma: no cover - Prometheus answers 200 or an HTTP error
                raise PrometheusError(f"reload answered {r.status}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit in time; remove an owned data dir."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        for stop in self.companions:
            stop()
        self.companions.clear()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_prometheus(
    targets: Sequence[ScrapeTarget],
    *,
    scrape_interval: float = 1.0,
    data_dir: Path | None = None,
    port: int = 0,
    startup_timeout: float = 30.0,
    binary: str | None = None,
    die_with_parent: bool = False,
    host: str = "127.0.0.1",
    jobs: Sequence[Mapping[str, object]] = (),
) -> PrometheusServer:
    """Start Prometheus on ``host`` (127.0.0.1 by default; a real node's bridge address lets
    pods reach it) and return once it reports ready. ``jobs``: more scrape jobs, as given.

    ``port=0`` picks a free port (asked of the OS just before the start; retried if another
    process takes it in between). ``data_dir`` defaults to a new temporary directory that
    `PrometheusServer.stop` removes; the config file and log live in it. With
    ``die_with_parent`` the server gets SIGTERM when the thread that started it exits.
    """
    exe = binary or find_binary()
    owns = data_dir is None
    directory = data_dir or Path(tempfile.mkdtemp(prefix="zeta-prometheus-"))
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "prometheus.yml"
    config_path.write_text(
        yaml.safe_dump(build_config(targets, scrape_interval, jobs=jobs), sort_keys=False)
    )
    log_path = directory / "prometheus.log"
    attempts = 3 if port == 0 else 1
    last_error = ""
    for _ in range(attempts):
        chosen = port or free_port(host)
        server = _launch(
            exe,
            chosen,
            config_path,
            directory,
            log_path,
            scrape_interval,
            owns,
            die_with_parent,
            host,
        )
        server.jobs = tuple(jobs)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and server.alive():
            if server.ready(timeout=1.0):
                return server
            time.sleep(0.1)
        last_error = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        exited = server.process.poll()
        server.owns_data_dir = False
        server.stop()
        if exited is None or "address already in use" not in last_error:
            break
    if owns:
        shutil.rmtree(directory, ignore_errors=True)
    raise PrometheusError(
        f"prometheus did not become ready within {startup_timeout:g}s; log:\n{last_error}"
    )


def _launch(
    exe: str,
    port: int,
    config_path: Path,
    data_dir: Path,
    log_path: Path,
    scrape_interval: float,
    owns: bool,
    die_with_parent: bool = False,
    host: str = "127.0.0.1",
) -> PrometheusServer:
    cmd = [
        exe,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir / 'tsdb'}",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=set_parent_death_signal if die_with_parent else None,
        )
    return PrometheusServer(
        port=port,
        process=proc,
        config_path=config_path,
        data_dir=data_dir,
        log_path=log_path,
        scrape_interval=scrape_interval,
        owns_data_dir=owns,
        host=host,
    )
