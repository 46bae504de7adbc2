"""A stopping pod's router, as the preStop hooks drive it: it stops being ready but keeps
accepting and serving (every answer saying ``Connection: close``) until no new connection or
request has arrived for its quiet period, or its drain timeout; it refuses drain requests from
outside the pod, releases the model server only after its own drain has ended and nothing is in
flight there any more, and finishes a stream after SIGTERM. In front of a real llama.cpp server,
and of the fake upstream where only the router's own behaviour matters.

No check depends on how fast the machine is: waits are conditions with deadlines, and the one
figure compared, the time from the last request to the drain's end, is at least the quiet
period by construction.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from support.fake_upstream import FakeUpstream, start_fake_upstream
from zeta_router.api.lifecycle import DRAIN_PATH, MODEL_IDLE_PATH, ROUTER_DRAIN_PATH
from zeta_router.api.routing import RoutingConfig, routing_yaml
from zeta_router_dev.local.llama import LlamaServer
from zeta_router_dev.local.router_proc import RouterProcess, start_router

LONG_ANSWER = "Write a long story about a lighthouse keeper, at least twenty sentences."


def config_file(path: Path, small: LlamaServer, large: LlamaServer) -> Path:
    config = RoutingConfig.model_validate(
        {
            "router": "zeta",
            "tiers": [
                {"name": "small", "url": small.url, "localUrl": small.url, "engine": "llamacpp"},
                {"name": "large", "url": large.url, "engine": "llamacpp"},
            ],
            # Every score is below 1: every request goes to the small tier, this pod's own.
            "contexts": [{"name": "default", "thresholds": [1.0]}],
            "defaultContext": "default",
        }
    )
    path.write_text(routing_yaml(config))
    return path


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "fake.log")
    yield up
    up.stop()


@pytest.fixture
def router(llama_tiers: dict[str, LlamaServer], tmp_path: Path) -> Iterator[RouterProcess]:
    cfg = config_file(tmp_path / "routing.yaml", llama_tiers["small"], llama_tiers["large"])
    r = start_router(
        # A short drain delay: the model-idle wait then meets the stream while it runs.
        ["--config", str(cfg), "--local-tier", "small", "--drain-delay", "0.2",
         "--drain-quiet", "0.2", "--drain-seconds", "120"],
        tmp_path,
    )  # fmt: skip
    yield r
    r.stop()


def request(
    url: str, method: str = "GET", source: str | None = None
) -> tuple[int, str, dict[str, str]]:
    """An HTTP request, optionally from a given local address (another loopback address stands
    for a peer outside the pod)."""
    host, port = url.removeprefix("http://").split("/", 1)[0].split(":")
    path = "/" + url.removeprefix("http://").split("/", 1)[1]
    sock = socket.create_connection(
        (host, int(port)), timeout=180, source_address=(source, 0) if source else None
    )
    try:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body.decode(errors="replace"), headers
    finally:
        sock.close()


def stream_in_background(
    router: RouterProcess, events: list[tuple[str, float]]
) -> threading.Thread:
    client = openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, timeout=300)
    result: dict[str, Any] = {}

    def run() -> None:
        finish = None
        text = ""
        for chunk in client.chat.completions.create(
            model="zeta",
            messages=[{"role": "user", "content": LONG_ANSWER}],
            max_tokens=120,
            stream=True,
        ):
            if chunk.choices:
                content = chunk.choices[0].delta.content or ""
                if content and not text:
                    events.append(("first-token", time.monotonic()))
                text += content
                finish = chunk.choices[0].finish_reason or finish
        result["finish"], result["text"] = finish, text
        events.append(("stream-end", time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.result = result  # type: ignore[attr-defined]
    thread.start()
    return thread


def wait_event(events: list[tuple[str, float]], name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(e == name for e, _ in events):
        assert time.monotonic() < deadline, f"no {name} within {timeout}s"
        time.sleep(0.05)


@pytest.mark.llama
def test_the_model_server_is_released_only_after_the_stream_to_it_ended(
    router: RouterProcess,
) -> None:
    events: list[tuple[str, float]] = []
    stream = stream_in_background(router, events)
    wait_event(events, "first-token")
    # The model container's preStop, on the admin port, as a kubelet before 1.23 asks for it
    # ("http://host:port/" + the path) when the path keeps its slash.
    status, body, _ = request(router.admin_url + "/" + MODEL_IDLE_PATH)
    events.append(("model-released", time.monotonic()))
    stream.join(300)
    assert status == 200, body
    assert '"idle": true' in body
    assert stream.result["finish"] is not None  # type: ignore[attr-defined]
    assert stream.result["text"].strip()  # type: ignore[attr-defined]
    order = [name for name, _ in sorted(events, key=lambda e: e[1])]
    assert order == ["first-token", "stream-end", "model-released"]


@pytest.mark.llama
def test_drain_stops_readiness_keeps_serving_and_is_refused_from_outside(
    router: RouterProcess,
) -> None:
    assert router.get("/readyz")[0] == 200
    # From another address than 127.0.0.1: the kubelet or a client, never the preStop hook.
    status, body, _ = request(router.admin_url + DRAIN_PATH, "POST", source="127.0.0.2")
    assert status == 403, body
    assert router.get("/readyz")[0] == 200
    drained = subprocess.run(
        [sys.executable, "-m", "zeta_router", "drain", "--port", str(router.admin_port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drained.returncode == 0, drained.stderr
    status, ready, _ = router.get("/readyz")
    assert status == 503
    assert ready["status"] == "draining"
    # Still serving, but every response tells the client to reconnect elsewhere.
    client = openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="zeta", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["connection"] == "close"


@pytest.mark.llama
def test_the_kubelets_http_hook_drains_from_the_node_address(router: RouterProcess) -> None:
    """The router container's preStop is the kubelet's GET, from the node's address (not
    127.0.0.1), answered once the drain has ended; kubelets before 1.23 ask for a doubled
    slash."""
    assert router.get("/readyz")[0] == 200
    status, body, _ = request(router.admin_url + "/" + ROUTER_DRAIN_PATH, "GET", source="127.0.0.2")
    assert status == 200, body
    assert '"status": "drained"' in body
    status, ready, _ = router.get("/readyz")
    assert status == 503
    assert ready["status"] == "draining"


@pytest.mark.llama
def test_sigterm_finishes_the_stream_in_flight(router: RouterProcess) -> None:
    events: list[tuple[str, float]] = []
    stream = stream_in_background(router, events)
    wait_event(events, "first-token")
    assert router.stop(timeout=180) == 0
    stream.join(60)
    assert stream.result["finish"] is not None  # type: ignore[attr-defined]
    # Gone now: no new connection is accepted, on either port.
    for url in (router.url + "/v1/models", router.admin_url + "/healthz"):
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=5)


def test_drain_without_a_router_is_not_an_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "zeta_router", "drain", "--port", str(free)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "nothing to drain" in done.stderr


# ---- the drain ends when traffic has stopped ---------------------------------------------------

QUIET = 8.0
"""The quiet period of the tests below: far longer than the gap between two requests sent back
to back, even on a loaded machine (the fake upstream answers at once)."""
CHAT = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def chat_request(keep_alive: bool) -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + (b"" if keep_alive else b"Connection: close\r\n")
        + b"Content-Length: " + str(len(CHAT)).encode() + b"\r\n\r\n" + CHAT
    )  # fmt: skip


def read_response(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """One whole response (Content-Length body) from ``sock``: its status and headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk, "the connection closed in the body"
        body += chunk
    return int(lines[0].split()[1]), headers


def served_on_a_new_connection(r: RouterProcess) -> dict[str, str]:
    """A request on a new connection (never refused), answered 200; its headers."""
    with socket.create_connection(("127.0.0.1", r.port), timeout=60) as sock:
        sock.sendall(chat_request(keep_alive=True))
        status, headers = read_response(sock)
    assert status == 200, headers
    return headers


def start_drain_hook(r: RouterProcess) -> subprocess.Popen[str]:
    """The router container's preStop hook, running."""
    return subprocess.Popen(
        [sys.executable, "-m", "zeta_router", "drain", "--port", str(r.admin_port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def test_a_drain_serves_whatever_arrives_and_ends_once_traffic_has_stopped(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    r = start_router(
        ["--tier", f"small={upstream.url}", "--drain-delay", "0", "--drain-quiet", str(QUIET),
         "--drain-timeout", "3600"],
        tmp_path,
    )  # fmt: skip
    try:
        # A keep-alive connection, idle when the drain begins.
        kept = socket.create_connection(("127.0.0.1", r.port), timeout=60)
        kept.sendall(chat_request(keep_alive=True))
        status, headers = read_response(kept)
        assert status == 200
        assert headers.get("connection") != "close", headers

        hook = start_drain_hook(r)
        model_idle: dict[str, Any] = {}
        released = threading.Thread(
            target=lambda: model_idle.update(
                answer=request(r.admin_url + MODEL_IDLE_PATH), at=time.monotonic()
            ),
            daemon=True,
        )
        released.start()
        wait_until(lambda: r.get("/readyz")[0] == 503, "the router to stop being ready")

        # The kept connection is still served, and told to reconnect.
        kept.sendall(chat_request(keep_alive=True))
        status, headers = read_response(kept)
        assert status == 200
        assert headers["connection"] == "close", headers
        assert kept.recv(1) == b""  # then closed by the router
        kept.close()
        # New connections (a kube-proxy that has not learnt of the removal yet) are accepted
        # and served, and the drain goes on while they arrive.
        for _ in range(10):
            last_sent = time.monotonic()
            assert served_on_a_new_connection(r)["connection"] == "close"
            assert hook.poll() is None, "the drain ended while requests still arrived"
            assert released.is_alive(), "the model server was released during the drain"

        # Traffic stops: the drain ends, at least the quiet period after the last request.
        wait_until(lambda: hook.poll() is not None, "the preStop hook to return")
        assert time.monotonic() - last_sent >= QUIET
        assert hook.returncode == 0, hook.communicate()
        # The model server is released only after the router's drain has ended.
        released.join(120)
        assert not released.is_alive()
        status, body, _ = model_idle["answer"]
        assert status == 200
        assert '"idle": true' in body, body

        # Until SIGTERM a late request is still served, never refused.
        assert served_on_a_new_connection(r)["connection"] == "close"
        assert r.stop() == 0
    finally:
        r.stop()
    events = [e for e in r.log_events() if e.get("event") in ("drain_begin", "drain_end")]
    assert [e["event"] for e in events] == ["drain_begin", "drain_end"], events
    assert events[1]["timed_out"] is False
    assert float(events[1]["quiet_seconds"]) >= QUIET  # type: ignore[arg-type]


def test_a_drain_ends_at_its_timeout_when_traffic_never_stops(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    r = start_router(
        ["--tier", f"small={upstream.url}", "--drain-delay", "0", "--drain-quiet", "3600",
         "--drain-timeout", "3"],
        tmp_path,
    )  # fmt: skip
    try:
        hook = start_drain_hook(r)
        wait_until(lambda: r.get("/readyz")[0] == 503, "the router to stop being ready")
        served = 0
        deadline = time.monotonic() + 120
        while hook.poll() is None:  # requests keep arriving until the hook returns
            assert time.monotonic() < deadline, "the drain did not end at its timeout"
            served_on_a_new_connection(r)
            served += 1
        assert hook.returncode == 0, hook.communicate()
        assert served > 0
        assert r.stop() == 0
    finally:
        r.stop()
    (end,) = [e for e in r.log_events() if e.get("event") == "drain_end"]
    assert end["timed_out"] is True
