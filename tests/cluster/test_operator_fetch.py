"""What the operator fetches from addresses a ZetaRouter names, against real local servers.

- A Prometheus URL that redirects to a second server holding a secret-looking body: the
  redirect is not followed (the second server counts no request) and nothing of either answer
  reaches the ``MetricsAvailable`` condition, an Event or the operator's log.
- A router whose admin port streams without end: the learner's read of it is cut off (by size
  and by its deadline), and meanwhile another ZetaRouter's learning and reconciliation go on.

The routers here are plain HTTP servers on 127.0.0.1 standing in for a hostile router image
(a fault a real router does not cause); pod addresses reach them through the learner's address
map (``ZETA_ROUTER_ROUTER_ADDRESSES``).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.cluster import conditions, events_for, wait_for
from support.fixtures_cluster import StartOperator
from support.zetarouters import TIMEOUT, create_zr, get_zr, patch_spec, sample
from zeta_router.autoscale.loop import TICK_ENV
from zeta_router.kube import Kube, api_path
from zeta_router.render import names
from zeta_router.scoring.samples import Batch
from zeta_router_dev.local.operator_proc import OperatorProcess

pytestmark = [pytest.mark.cluster]

SECRET = "AKIA-SECRET-LOOKING-0123456789-do-not-echo"


class _Server:
    """A threaded HTTP server on 127.0.0.1 answering with ``handler``; counts requests."""

    def __init__(self, handle: Any) -> None:
        outer = self
        self.hits = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.hits += 1
                handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send(h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, **headers: str) -> None:
    h.send_response(code)
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    started: list[_Server] = []
    yield started
    for s in started:
        s.stop()


@pytest.fixture
def fetch_operator(start_operator: StartOperator) -> OperatorProcess:
    return start_operator({TICK_ENV: "1"})


def _cpu_zr(name: str, **spec: Any) -> dict[str, Any]:
    body = sample(name)
    body["spec"]["tiers"] = [
        {
            "name": tier,
            "engine": "llamacpp",
            "model": "SmolLM2-135M-Instruct",
            "replicas": {"min": 1, "max": 1},
        }
        for tier in ("small", "large")
    ]
    body["spec"].update(spec)
    return body


def test_a_redirecting_prometheus_is_not_followed_and_nothing_is_echoed(
    kube: Kube, namespace: str, fetch_operator: OperatorProcess, servers: list[_Server]
) -> None:
    holder = _Server(lambda h: _send(h, 200, json.dumps({"token": SECRET}).encode()))
    servers.append(holder)
    redirect = _Server(
        lambda h: _send(
            h,
            302,
            f"moved, and here is {SECRET}".encode(),
            Location=f"{holder.url}/api/v1/query",
        )
    )
    servers.append(redirect)
    body = _cpu_zr("redirected")
    body["spec"]["autoscaling"] = {
        "enabled": True,
        "mode": "advisory",
        "interval": "2s",
        "prometheus": {"url": redirect.url},
    }
    create_zr(kube, namespace, body)

    def refused() -> dict[str, Any] | None:
        c = conditions(get_zr(kube, namespace, "redirected")).get("MetricsAvailable")
        return c if c is not None and c.get("status") == "False" else None

    cond = wait_for(refused, TIMEOUT, "MetricsAvailable=False")
    wait_for(lambda: redirect.hits >= 2, TIMEOUT, "a second interval")
    assert cond["reason"] == "PrometheusError"
    assert cond["message"].startswith(
        f"Prometheus at {redirect.url} answered HTTP 302 (a redirect; redirects are not followed)"
    )
    assert holder.hits == 0
    for event in events_for(kube, namespace, "redirected"):
        assert SECRET not in json.dumps(event)
    assert SECRET not in json.dumps(get_zr(kube, namespace, "redirected"))
    assert SECRET not in fetch_operator.log_path.read_text()


def _endless(h: http.server.BaseHTTPRequestHandler) -> None:
    """Answers 200 and streams chunks without end (until the reader goes)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b" " * 65536
    try:
        while True:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            h.wfile.flush()
    except OSError:
        return


def _drip(h: http.server.BaseHTTPRequestHandler) -> None:
    """Answers one byte a second, without end (a read timeout alone would never fire)."""
    h.send_response(200)
    h.send_header("Content-Length", str(10**9))
    h.end_headers()
    try:
        while True:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(1.0)
    except OSError:
        return


def _pod_ips(kube: Kube, namespace: str, name: str) -> list[str]:
    selector = ",".join(f"{k}={v}" for k, v in names.router_selector(name).items())
    pods = kube.list(api_path("v1", "pods", namespace), selector).get("items") or []
    return [str(p["status"]["podIP"]) for p in pods if (p.get("status") or {}).get("podIP")]


def _learning(interval: str = "5s") -> dict[str, Any]:
    return {"enabled": True, "mode": "advisory", "interval": interval, "minLabels": 100}


def test_a_router_that_streams_without_end_holds_up_nobody_else(
    kube: Kube,
    namespace: str,
    fetch_operator: OperatorProcess,
    servers: list[_Server],
    addresses: Path,
) -> None:
    endless = _Server(_endless)
    drip = _Server(_drip)
    good_batch = json.dumps(Batch("e1", 0, [], [], more=False).to_wire()).encode()
    good = _Server(lambda h: _send(h, 200, good_batch, Content_Type="application/json"))
    servers.extend([endless, drip, good])
    create_zr(kube, namespace, _cpu_zr("hostile", learning=_learning()))
    create_zr(kube, namespace, _cpu_zr("calm", learning=_learning()))

    def ips(name: str) -> list[str] | None:
        found = _pod_ips(kube, namespace, name)
        return found if len(found) == 2 else None

    hostile = wait_for(lambda: ips("hostile"), TIMEOUT, "the hostile ZetaRouter's pods")
    calm = wait_for(lambda: ips("calm"), TIMEOUT, "the calm ZetaRouter's pods")
    mapping = {hostile[0]: endless.address, hostile[1]: drip.address}
    mapping.update({ip: good.address for ip in calm})
    addresses.write_text(json.dumps(mapping))

    # The hostile routers are being read (and cut off: their ZetaRouter's interval ends).
    wait_for(lambda: endless.hits >= 1 and drip.hits >= 1, TIMEOUT, "the hostile routers read")

    def learning_of(name: str) -> dict[str, Any]:
        return dict((get_zr(kube, namespace, name).get("status") or {}).get("learning") or {})

    def calm_collected() -> str | None:
        got = learning_of("calm")
        return str(got["lastCollection"]) if got.get("routers") == "2/2" else None

    first = wait_for(calm_collected, TIMEOUT, "the calm ZetaRouter's routers read")
    # The calm one keeps learning while the hostile ones stream ...
    wait_for(
        lambda: (calm_collected() or first) > first, TIMEOUT, "another interval of the calm one"
    )
    # ... and is reconciled: a threshold change reaches its routing ConfigMap.
    router = get_zr(kube, namespace, "calm")["spec"]["router"]
    router["contexts"][0]["thresholds"] = [0.4242]
    patch_spec(kube, namespace, "calm", {"router": router})

    def reconciled() -> bool:
        cm = kube.get(api_path("v1", "configmaps", namespace, names.routing_configmap_name("calm")))
        return "0.4242" in json.dumps(cm["data"])

    wait_for(reconciled, TIMEOUT, "the calm ZetaRouter reconciled")
    # The hostile ZetaRouter's intervals end too (bounded), its routers counted unreached.
    wait_for(
        lambda: learning_of("hostile").get("routers") == "0/2",
        TIMEOUT,
        "the hostile ZetaRouter's interval to end",
    )
