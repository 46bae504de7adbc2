"""The operator's bounded fetch against real servers on 127.0.0.1: no redirect followed, a total
deadline (a server sending a byte a second is cut off), a size bound, fixed messages (nothing of
an answer echoed; a closed port and a silent one read alike), the endpoint allow-list."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from zeta_router.autoscale.loop import ControlLoop
from zeta_router.autoscale.metrics import PrometheusSource, target_from
from zeta_router.autoscale.snapshot import MetricsStatus
from zeta_router.bounded_http import EndpointAllowList, FetchError, fetch
from zeta_router.learning import collect

SECRET = "AKIA-SECRET-LOOKING-0123456789-do-not-echo"
TARGET = target_from("prod", "assistant", [("small", "llamacpp")], ["default"])
Handle = Callable[[http.server.BaseHTTPRequestHandler], None]


class Server:
    def __init__(self, handle: Handle) -> None:
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handle], Server]]:
    started: list[Server] = []

    def start(handle: Handle) -> Server:
        s = Server(handle)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def send(h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, **headers: str) -> None:
    h.send_response(code)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def drip(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(10**9))
    h.end_headers()
    try:
        while True:
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.5)
    except OSError:
        return


def drip_headers(h: http.server.BaseHTTPRequestHandler) -> None:
    """Never finishes its headers."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    try:
        while True:
            h.wfile.write(b"X")
            h.wfile.flush()
            time.sleep(0.5)
    except OSError:
        return


def endless(h: http.server.BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"x" * 65536
    try:
        while True:
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        return


def prom_ok(h: http.server.BaseHTTPRequestHandler) -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": []}}
    send(h, 200, json.dumps(body).encode(), **{"Content-Type": "application/json"})


def test_a_redirect_is_not_followed_and_nothing_of_it_is_echoed(
    serve: Callable[[Handle], Server],
) -> None:
    holder = serve(lambda h: send(h, 200, json.dumps({"token": SECRET}).encode()))
    redirect = serve(lambda h: send(h, 302, SECRET.encode(), Location=f"{holder.url}/api/v1/query"))
    snap = PrometheusSource(redirect.url, timeout_seconds=2).snapshot(TARGET)
    assert snap.status is MetricsStatus.ERROR
    assert snap.message == (
        f"Prometheus at {redirect.url} answered HTTP 302 (a redirect; redirects are not followed)"
    )
    assert holder.hits == 0
    assert redirect.hits == 1
    condition = ControlLoop._metrics_condition(None, snap, 1)  # type: ignore[arg-type]
    assert SECRET not in json.dumps(condition)


def test_an_error_body_is_not_echoed(serve: Callable[[Handle], Server]) -> None:
    failing = serve(lambda h: send(h, 500, f"stack trace with {SECRET}".encode()))
    snap = PrometheusSource(failing.url, timeout_seconds=2).snapshot(TARGET)
    assert snap.message == f"Prometheus at {failing.url} answered HTTP 500"


def test_a_200_that_is_not_a_query_result_is_not_echoed(
    serve: Callable[[Handle], Server],
) -> None:
    odd = serve(lambda h: send(h, 200, f'{{"secret": "{SECRET}"}}'.encode()))
    snap = PrometheusSource(odd.url, timeout_seconds=2).snapshot(TARGET)
    assert snap.status is MetricsStatus.ERROR
    assert SECRET not in snap.message


def test_a_real_query_result_is_read(serve: Callable[[Handle], Server]) -> None:
    ok = serve(prom_ok)
    snap = PrometheusSource(ok.url, timeout_seconds=2).snapshot(TARGET)
    assert snap.status is MetricsStatus.NO_SERIES  # answered, with no targets
    assert ok.hits > 1


@pytest.mark.parametrize("handle", [drip, drip_headers], ids=["body", "headers"])
def test_a_server_sending_a_byte_at_a_time_is_cut_off(
    serve: Callable[[Handle], Server], handle: Handle
) -> None:
    slow = serve(handle)
    with pytest.raises(FetchError) as err:
        fetch(slow.url, deadline_seconds=1.5, max_bytes=1 << 20)
    assert err.value.kind == "unreachable"
    # And a Prometheus snapshot against it ends too (its queries share one budget).
    snap = PrometheusSource(slow.url, timeout_seconds=1).snapshot(TARGET)
    assert snap.status is MetricsStatus.UNREACHABLE


def test_an_endless_answer_is_cut_off_by_size(serve: Callable[[Handle], Server]) -> None:
    big = serve(endless)
    with pytest.raises(FetchError) as err:
        fetch(big.url, deadline_seconds=60, max_bytes=1 << 20)
    assert err.value.kind == "too-large"
    assert str(err.value) == f"answered more than {1 << 20} bytes"


def test_a_closed_port_and_a_silent_one_read_alike() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        errors = []
        for p in (closed, port):
            with pytest.raises(FetchError) as err:
                fetch(f"http://127.0.0.1:{p}/", deadline_seconds=0.5, max_bytes=1024)
            errors.append((err.value.kind, str(err.value)))
    assert errors[0] == errors[1]


def test_a_port_that_does_not_speak_http_reads_as_a_closed_one() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]

        def banner() -> None:
            conn, _ = srv.accept()
            conn.sendall(b"SSH-2.0-OpenSSH_9.0\r\n")
            conn.close()

        threading.Thread(target=banner, daemon=True).start()
        with pytest.raises(FetchError) as err:
            fetch(f"http://127.0.0.1:{port}/", deadline_seconds=2, max_bytes=1024)
    assert err.value.kind == "unreachable"


def test_the_learner_reads_a_router_with_the_same_bounds(
    serve: Callable[[Handle], Server],
) -> None:
    big = serve(endless)
    endpoint = collect.RouterEndpoint(pod="p", url=big.url)
    with pytest.raises(collect.CollectError) as err:
        collect.fetch(endpoint, 0, deadline_seconds=30, max_bytes=1 << 20)
    assert err.value.too_large
    redirect = serve(lambda h: send(h, 307, SECRET.encode(), Location=big.url))
    with pytest.raises(collect.CollectError) as err:
        collect.fetch(collect.RouterEndpoint("q", redirect.url), 0)
    assert str(err.value) == (
        "q: /learning/samples answered HTTP 307 (a redirect; redirects are not followed)"
    )
    assert big.hits == 1


@pytest.mark.parametrize(
    ("entries", "url", "allowed"),
    [
        ([], "http://anything:9090", True),
        (["prometheus.monitoring.svc"], "http://prometheus.monitoring.svc:9090", True),
        (["prometheus.monitoring.svc"], "http://PROMETHEUS.monitoring.svc.:9090/x", True),
        (["prometheus.monitoring.svc"], "http://evil.example:9090", False),
        (["10.0.0.0/8"], "http://10.1.2.3:9090", True),
        (["10.0.0.0/8"], "http://169.254.169.254/latest", False),
        (["10.0.0.0/8, 127.0.0.1"], "http://127.0.0.1:1", True),
        (["127.0.0.0/8"], "http://localhost:9090", True),
        (["fd00::/8"], "http://[fd00::1]:9090", True),
    ],
)
def test_the_allow_list(entries: list[str], url: str, allowed: bool) -> None:
    assert EndpointAllowList.parse(entries).allows(url) is allowed


@pytest.mark.parametrize("bad", ["10.0.0.0/99", "user@host", "http://x"])
def test_a_bad_allow_list_entry_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        EndpointAllowList.parse([bad])


def test_a_prometheus_outside_the_allow_list_is_not_contacted(
    serve: Callable[[Handle], Server],
) -> None:
    ok = serve(prom_ok)
    allowed = EndpointAllowList.parse(["10.0.0.0/8"])
    snap = PrometheusSource(ok.url, timeout_seconds=2, allowed=allowed).snapshot(TARGET)
    assert snap.status is MetricsStatus.NOT_ALLOWED
    assert ok.hits == 0
