"""Client connections against the router as a real process: slow and idle clients are cut off,
a connection cap refuses cleanly, malformed HTTP gets JSON and never reaches the logs as bytes,
and a drain takes what --drain-seconds says while /readyz tells the truth."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.deadlines import CONDITION
from support.fake_upstream import FakeUpstream, start_fake_upstream
from zeta_router_dev.local.router_proc import RouterProcess, start_router

CHAT_BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "fake.log")
    yield up
    up.stop()


def _connect(r: RouterProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", r.port), timeout=10)


def _read_all(s: socket.socket, deadline: float = 10.0) -> bytes:
    """Everything until the router closes the connection (or the deadline passes)."""
    s.settimeout(deadline)
    out = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def _status_and_json(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def _request(r: RouterProcess, body: bytes = CHAT_BODY) -> bytes:
    with _connect(r) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        return _read_all(s)


def test_idle_and_slow_clients_are_cut_off(upstream: FakeUpstream, tmp_path: Path) -> None:
    r = start_router(
        [
            *("--tier", f"small={upstream.url}"),
            *("--idle-timeout", "1", "--header-timeout", "1", "--body-timeout", "1"),
        ],
        tmp_path,
    )
    try:
        # A socket that sends nothing is closed, with nothing said.
        with _connect(r) as s:
            assert _read_all(s) == b""
        # Headers trickling in a byte at a time: 408 once they are late, then closed.
        with _connect(r) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            got = b""
            for _ in range(40):
                try:
                    s.sendall(b"X")
                except OSError:
                    break
                s.settimeout(0.25)
                try:
                    got += s.recv(65536)
                    if got:
                        break
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    break
            got += _read_all(s)
            status, body = _status_and_json(got)
            assert status == 408
            assert body["error"]["code"] == "request_timeout"  # type: ignore[index]
        # A body that stops arriving: 408 too.
        with _connect(r) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b'application/json\r\nContent-Length: 100\r\n\r\n{"messages"'
            )
            status, body = _status_and_json(_read_all(s))
            assert status == 408
            assert body["error"]["code"] == "request_timeout"  # type: ignore[index]
        for phase in ("idle", "headers", "body"):
            assert r.metric("zeta_router_client_timeouts_total", phase=phase) >= 1
        # And the router still serves.
        status, body = _status_and_json(_request(r))
        assert status == 200
    finally:
        assert r.stop() == 0


def test_a_connection_cap_refuses_cleanly(upstream: FakeUpstream, tmp_path: Path) -> None:
    r = start_router(["--tier", f"small={upstream.url}", "--max-connections", "4"], tmp_path)
    held = [_connect(r) for _ in range(4)]
    try:
        # Held connections are counted once the router has accepted them.
        deadline = time.monotonic() + CONDITION
        while r.metric("zeta_router_connections_open") < 4:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, body = _status_and_json(_request(r))
        assert status == 503
        assert body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        assert r.metric("zeta_router_connections_refused_total") == 1
        refused = [e for e in r.log_events() if e.get("event") == "connection_refused"]
        assert refused
        assert refused[0]["max_connections"] == 4
        held.pop().close()
        deadline = time.monotonic() + CONDITION
        while r.metric("zeta_router_connections_open") > 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, _ = _status_and_json(_request(r))
        assert status == 200
    finally:
        for s in held:
            s.close()
        assert r.stop() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\x01 /v1/models HTTP/1.1\r\nAuthorization: Bearer sk-secret-123\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer sk-secret-123\r\nBad Header\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x-sk-secret-123\r\n\r\n",
    ],
)
def test_malformed_http_gets_json_and_its_bytes_stay_out_of_the_logs(
    upstream: FakeUpstream, tmp_path: Path, raw: bytes
) -> None:
    r = start_router(["--tier", f"small={upstream.url}", "--log-level", "debug"], tmp_path)
    try:
        with _connect(r) as s:
            s.sendall(raw)
            status, body = _status_and_json(_read_all(s))
        assert status == 400
        assert body["error"]["code"] == "bad_http_request"  # type: ignore[index]
        assert "sk-secret" not in json.dumps(body)
        r.stop()
        log = r.log_path.read_text()
        assert "bad_http_request" in log
        assert "sk-secret" not in log
    finally:
        assert r.stop() == 0


def test_drain_takes_drain_seconds_and_readyz_says_so(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.control(chunks=1000, chunk_delay=0.1)  # a stream longer than the drain
    r = start_router(["--tier", f"small={upstream.url}", "--drain-seconds", "2"], tmp_path)
    with _connect(r) as s:
        body = json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": True})
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body.encode()
        )
        s.settimeout(10)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        r.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CONDITION
        while True:
            status, ready, _ = r.get("/readyz")
            if status == 503:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready["status"] == "draining"  # the admin port answers while draining
        with pytest.raises(ConnectionRefusedError):  # the client port takes no new connection
            _connect(r).close()
        assert r.process.wait(30) == 0
    events = {e.get("event"): e for e in r.log_events()}
    drained = events["drained"]
    assert drained["cancelled"] == 1
    # The router's own account of the drain: it waited for the deadline, then cancelled once
    # (how much longer it took depends on the machine: no upper bound here).
    assert float(drained["seconds"]) >= 2.0  # type: ignore[arg-type]
    assert "drain_deadline" in events
