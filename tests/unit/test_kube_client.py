"""The Kubernetes facade over the official client, against a local HTTP server that plays the
apiserver: retries (429 with Retry-After, 5xx of reads, reset connections), pagination,
transport errors as ApiError, and what the kubeconfig says (several files, contexts, exec
plugins run again after expiry, impersonation, proxies), without a cluster."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from support.exec_plugin import exec_plugin
from zeta_router.kube import (
    ApiError,
    CredentialsError,
    Kube,
    TransportError,
    api_path,
    kopf_login,
    proxy_for,
)

Reply = tuple[int, dict[str, str], Any]


@dataclass
class FakeApiserver:
    """Answers each request with ``script(method, path, query)``; records what came in."""

    script: Callable[[str, str, dict[str, list[str]]], Reply | None]
    requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = field(
        default_factory=list
    )
    url: str = ""


@pytest.fixture
def apiserver() -> Iterator[FakeApiserver]:
    fake = FakeApiserver(lambda m, p, q: (200, {}, {}))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append((self.command, parts.path, query, headers))
            reply = fake.script(self.command, parts.path, query)
            if reply is None:  # drop the connection without an answer (a reset keep-alive)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            status, headers, body = reply
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_PATCH(self) -> None:
            self._answer()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _kubeconfig(
    path: Path,
    server: str,
    user: dict[str, Any],
    context: str = "c",
    namespace: str = "ns1",
    **cluster: Any,
) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": f"k-{context}", "cluster": {"server": server, **cluster}}],
        "users": [{"name": f"u-{context}", "user": user}],
        "contexts": [
            {
                "name": context,
                "context": {
                    "cluster": f"k-{context}",
                    "user": f"u-{context}",
                    "namespace": namespace,
                },
            }
        ],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class Sleeps(list[float]):
    """Stands in for time.sleep: records the waits the client asked for."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _kube(apiserver: FakeApiserver, tmp_path: Path, sleeps: Sleeps | None = None) -> Kube:
    cfg = _kubeconfig(tmp_path / "config", apiserver.url, {"token": "sekret-token"})
    kube = Kube.from_kubeconfig(cfg)
    if sleeps is not None:
        kube._sleep = sleeps
    return kube


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)


# ---- retries ----------------------------------------------------------------------------------


def test_429_is_retried_after_the_servers_retry_after(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    answers = iter(
        [
            (429, {"Retry-After": "3"}, {"kind": "Status", "reason": "TooManyRequests"}),
            (429, {"Retry-After": "1"}, {"kind": "Status", "reason": "TooManyRequests"}),
            (200, {}, {"kind": "ConfigMap", "metadata": {"name": "x"}}),
        ]
    )
    apiserver.script = lambda m, p, q: next(answers)
    sleeps = Sleeps()
    kube = _kube(apiserver, tmp_path, sleeps)
    # A write: 429 means the apiserver did not process it, so even a create is sent again.
    got = kube.create(api_path("v1", "configmaps", "ns"), {"metadata": {"name": "x"}})
    assert got["metadata"]["name"] == "x"
    assert sleeps == [3.0, 1.0]
    assert [r[0] for r in apiserver.requests] == ["POST"] * 3
    assert apiserver.requests[0][3]["authorization"] == "Bearer sekret-token"
    assert apiserver.requests[0][3]["user-agent"].startswith("zeta-router/")


def test_5xx_is_retried_for_reads_only(apiserver: FakeApiserver, tmp_path: Path) -> None:
    answers = iter([(503, {}, {"message": "etcd"}), (200, {}, {"kind": "Pod"})])
    apiserver.script = lambda m, p, q: next(answers) if m == "GET" else (500, {}, {"message": "x"})
    sleeps = Sleeps()
    kube = _kube(apiserver, tmp_path, sleeps)
    assert kube.get(api_path("v1", "pods", "ns", "p"))["kind"] == "Pod"
    assert len(sleeps) == 1
    with pytest.raises(ApiError) as e:
        kube.create(api_path("v1", "pods", "ns"), {"metadata": {"name": "p"}})
    assert e.value.status == 500
    assert [r[0] for r in apiserver.requests].count("POST") == 1


def test_retries_give_up_with_the_last_error(apiserver: FakeApiserver, tmp_path: Path) -> None:
    apiserver.script = lambda m, p, q: (429, {"Retry-After": "1"}, {"message": "busy"})
    sleeps = Sleeps()
    with pytest.raises(ApiError) as e:
        _kube(apiserver, tmp_path, sleeps).get("/api/v1/namespaces")
    assert e.value.status == 429
    assert len(apiserver.requests) == len(sleeps) + 1 > 2


def test_a_reset_connection_is_retried_for_reads_and_raised_as_transport_error(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    resets = iter([None])
    apiserver.script = lambda m, p, q: next(resets, (200, {}, {"ok": True}))
    sleeps = Sleeps()
    kube = _kube(apiserver, tmp_path, sleeps)
    assert kube.get("/api/v1/namespaces/x") == {"ok": True}
    assert sleeps
    assert len(sleeps) == 1
    # A create whose connection broke after sending may have been done: not repeated, and the
    # error is the facade's own (an ApiError), never a urllib3 exception.
    apiserver.script = lambda m, p, q: None
    apiserver.requests.clear()
    with pytest.raises(TransportError) as e:
        kube.create(api_path("v1", "configmaps", "ns"), {"metadata": {"name": "x"}})
    assert isinstance(e.value, ApiError)
    assert e.value.status == 0
    assert len(apiserver.requests) == 1


def test_an_unreachable_apiserver_is_a_transport_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cfg = _kubeconfig(tmp_path / "config", f"http://127.0.0.1:{port}", {"token": "t"})
    kube = Kube.from_kubeconfig(cfg)
    sleeps = Sleeps()
    kube._sleep = sleeps
    with pytest.raises(TransportError):
        # Never connected, so even a create is tried again.
        kube.create(api_path("v1", "configmaps", "ns"), {"metadata": {"name": "x"}})
    assert len(sleeps) > 1


# ---- pagination -------------------------------------------------------------------------------


def test_list_follows_continue_tokens(apiserver: FakeApiserver, tmp_path: Path) -> None:
    pages = {
        None: ([1, 2], "t1"),
        "t1": ([3, 4], "t2"),
        "t2": ([5], None),
    }

    def script(method: str, path: str, query: dict[str, list[str]]) -> Reply:
        token = query.get("continue", [None])[0]
        items, nxt = pages[token]
        meta: dict[str, Any] = {"resourceVersion": "42"}
        if nxt:
            meta["continue"] = nxt
            meta["remainingItemCount"] = 1
        return 200, {}, {"kind": "PodList", "metadata": meta, "items": [{"n": i} for i in items]}

    apiserver.script = script
    got = _kube(apiserver, tmp_path).list(api_path("v1", "pods", "ns"), label_selector="a=b")
    assert [i["n"] for i in got["items"]] == [1, 2, 3, 4, 5]
    assert got["metadata"] == {"resourceVersion": "42"}
    assert len(apiserver.requests) == 3
    for _, _, query, _ in apiserver.requests:
        assert query["limit"] == ["500"]
        assert query["labelSelector"] == ["a=b"]


def test_an_expired_continue_token_lists_again_whole(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    def script(method: str, path: str, query: dict[str, list[str]]) -> Reply:
        if "continue" in query:
            return 410, {}, {"kind": "Status", "reason": "Expired", "code": 410}
        if "limit" in query:
            return 200, {}, {"metadata": {"continue": "t1"}, "items": [{"n": 1}]}
        return 200, {}, {"metadata": {}, "items": [{"n": 1}, {"n": 2}]}

    apiserver.script = script
    got = _kube(apiserver, tmp_path).list(api_path("v1", "pods", "ns"))
    assert [i["n"] for i in got["items"]] == [1, 2]


# ---- credentials ------------------------------------------------------------------------------


def test_several_kubeconfig_files_and_a_chosen_context(
    apiserver: FakeApiserver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _kubeconfig(tmp_path / "a", apiserver.url, {"token": "token-a"}, context="a")
    second = _kubeconfig(
        tmp_path / "b", apiserver.url, {"token": "token-b"}, context="b", namespace="ns-b"
    )
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(second)]))
    default = Kube.from_kubeconfig()
    chosen = Kube.from_kubeconfig(context="b")
    default.get("/version")
    chosen.get("/version")
    assert [r[3]["authorization"] for r in apiserver.requests] == [
        "Bearer token-a",
        "Bearer token-b",
    ]
    assert (default.default_namespace, chosen.default_namespace) == ("ns1", "ns-b")
    with pytest.raises(CredentialsError, match="'nope' is not defined"):
        Kube.from_kubeconfig(context="nope")


def test_no_credentials_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CredentialsError, match="no Kubernetes credentials"):
        Kube.from_kubeconfig()
    with pytest.raises(CredentialsError, match="not found"):
        Kube.from_kubeconfig(tmp_path / "absent")


def test_an_exec_plugin_runs_again_once_its_token_expired(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    plugin = exec_plugin(tmp_path / "short", lifetime=-60)  # expired on arrival
    kube = Kube.from_kubeconfig(_kubeconfig(tmp_path / "config", apiserver.url, plugin.user()))
    kube.get("/version")
    kube.get("/version")
    tokens = [r[3]["authorization"] for r in apiserver.requests]
    assert len(set(tokens)) == 2, tokens
    assert plugin.runs >= 3  # at load, then before each request

    # A token that is still valid is reused.
    plugin = exec_plugin(tmp_path / "long", lifetime=3600)
    kube = Kube.from_kubeconfig(_kubeconfig(tmp_path / "config2", apiserver.url, plugin.user()))
    kube.get("/version")
    kube.get("/version")
    assert plugin.runs == 1


def test_a_failing_exec_plugin_is_a_credentials_error(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    exec_cfg = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "/bin/false"}
    with pytest.raises(CredentialsError):
        Kube.from_kubeconfig(_kubeconfig(tmp_path / "config", apiserver.url, {"exec": exec_cfg}))


def test_impersonation_is_sent_as_headers(apiserver: FakeApiserver, tmp_path: Path) -> None:
    user = {
        "token": "t",
        "as": "jane",
        "as-groups": ["devs"],
        "as-uid": "1234",
        "as-user-extra": {"scopes": ["view"]},
    }
    kube = Kube.from_kubeconfig(_kubeconfig(tmp_path / "config", apiserver.url, user))
    kube.get("/version")
    headers = apiserver.requests[0][3]
    assert headers["impersonate-user"] == "jane"
    assert headers["impersonate-group"] == "devs"
    assert headers["impersonate-uid"] == "1234"
    assert headers["impersonate-extra-scopes"] == "view"
    # kopf's watch client cannot impersonate: the operator refuses rather than split identities.
    import kopf

    with pytest.raises(kopf.LoginError, match="impersonation"):
        kopf_login(tmp_path / "config")


def test_kopf_logs_in_as_the_same_identity(apiserver: FakeApiserver, tmp_path: Path) -> None:
    plugin = exec_plugin(tmp_path / "plugin", lifetime=3600)
    cfg = _kubeconfig(tmp_path / "config", apiserver.url, plugin.user())
    first = kopf_login(cfg)
    again = kopf_login(cfg)  # kopf asks again after a 401: the plugin runs afresh
    assert (first.server, first.scheme, first.token) == (apiserver.url, "Bearer", "token-1")
    assert again.token == "token-2"
    assert first.default_namespace == "ns1"


def test_credentials_are_never_in_a_repr(apiserver: FakeApiserver, tmp_path: Path) -> None:
    apiserver.script = lambda m, p, q: (403, {}, {"reason": "Forbidden", "message": "no"})
    kube = _kube(apiserver, tmp_path)
    with pytest.raises(ApiError) as e:
        kube.get("/api/v1/secrets")
    assert "sekret-token" not in repr(kube)
    assert "sekret-token" not in f"{e.value} {e.value!r} {e.value.body} {e.value.headers}"


def test_proxy_choice_follows_kubectl(monkeypatch: pytest.MonkeyPatch) -> None:
    server = "https://api.example.test:6443"
    assert proxy_for(server) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert proxy_for(server) == "http://proxy.test:3128"
    assert proxy_for(server, "http://cluster-proxy.test:8080") == "http://cluster-proxy.test:8080"
    monkeypatch.setenv("NO_PROXY", ".example.test,10.0.0.0/8")
    assert proxy_for(server) is None
    assert proxy_for("https://other.test") == "http://proxy.test:3128"
    assert proxy_for("https://10.1.2.3:6443") is None
    assert proxy_for("https://192.168.1.1:6443") == "http://proxy.test:3128"


def test_proxy_url_of_the_kubeconfig_reaches_the_client(
    apiserver: FakeApiserver, tmp_path: Path
) -> None:
    cfg = _kubeconfig(
        tmp_path / "config",
        "https://api.example.test:6443",
        {"token": "t"},
        **{"proxy-url": apiserver.url, "insecure-skip-tls-verify": True},
    )
    kube = Kube.from_kubeconfig(cfg)
    assert kube.configuration.proxy == apiserver.url
    assert kopf_login(cfg).proxy_url == apiserver.url
