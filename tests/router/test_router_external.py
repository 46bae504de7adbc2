"""An external tier (an OpenAI-compatible provider) behind the router as a real process, against
a real local HTTP server playing the provider: it checks the API key and counts calls.

The key reaches the router only through the file (a mounted Secret, rotated in place while the
router runs) or the environment variable the routing file names; the provider gets it as a
bearer token (never the client's own Authorization), with the model
rewritten to the provider's name. The tier fails over to and from the cluster's tiers, an
overflow-only tier is never a first choice, client-side limits send requests elsewhere once
reached, usage feeds the token and cost counters, and the key appears in no log line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import wait_for
from support.fake_upstream import FakeUpstream, start_fake_upstream
from support.routing_files import EXTERNAL_KEY_ENV as KEY_ENV
from support.routing_files import ConfigMapDir, external_routing
from zeta_router_dev.cluster import pki
from zeta_router_dev.local.router_proc import RouterProcess, start_router

KEY = "sk-test-3f9a1c0e7b2d4e6f8a0b"
NEW_KEY = "sk-test-rotated-5d2e8b71c4a9"
PROVIDER_MODEL = "provider-large-model"
USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}


@pytest.fixture
def cluster_tier(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "cluster-tier.log")
    yield up
    up.stop()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[FakeUpstream]:
    up = start_fake_upstream(tmp_path / "provider.log")
    up.control(api_key=KEY, usage=USAGE)
    yield up
    up.stop()


def _routing(
    cluster: FakeUpstream,
    provider: FakeUpstream,
    *,
    to_external: bool,
    overflow_only: bool = False,
    limits: dict[str, int] | None = None,
) -> dict[str, Any]:
    return external_routing(
        cluster.url,
        provider.url,
        PROVIDER_MODEL,
        to_external=to_external,
        overflow_only=overflow_only,
        limits=limits,
        circuitBreaker={"failureThreshold": 100, "openSeconds": 1},
    )


def _start(
    tmp_path: Path,
    cfg: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    key: str | None = KEY,
    trust: Path | None = None,
) -> RouterProcess:
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if key is None:
        monkeypatch.delenv(KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV, key)  # (the router process inherits it)
    if trust is not None:  # the CA bundle OpenSSL's default verify paths read
        monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    return start_router(["--config", str(path), "--access-log", "--log-level", "debug"], tmp_path)


def _chat(
    r: RouterProcess, *, stream: bool = False, usage: bool = False
) -> tuple[int, dict[str, str], bytes]:
    body: dict[str, Any] = {
        "model": "assistant",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    req = urllib.request.Request(
        r.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        # The client's own credentials: for the cluster's tiers, never for the provider.
        headers={"Content-Type": "application/json", "Authorization": "Bearer client-own"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _no_key_in_logs(r: RouterProcess) -> None:
    text = r.log_path.read_text(errors="replace")
    assert text, "the router logged nothing"
    assert KEY not in text


def test_key_sent_model_rewritten_usage_counted(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = _start(tmp_path, _routing(cluster_tier, provider, to_external=True), monkeypatch)
    try:
        status, headers, body = _chat(r)
        assert status == 200, body
        assert headers["x-zeta-tier"] == "hosted"
        assert json.loads(body)["model"] == "assistant"  # the client's name, not the provider's
        status, headers, body = _chat(r, stream=True, usage=True)
        assert status == 200
        assert headers["x-zeta-tier"] == "hosted"
        assert b'"usage"' in body
        assert b"data: [DONE]" in body

        stats = provider.stats()
        assert stats["authorized"] == 2
        assert stats["unauthorized"] == 0
        assert stats["models"] == {PROVIDER_MODEL: 2}
        assert cluster_tier.stats()["requests"] == 0
        # Both answers reported 12 + 8 tokens; prices 0.5 and 1.5 per 1000. (The stream's are
        # counted once it has been sent, which may be just after the client read its end.)
        prompt = r.settled_metric("zeta_router_tokens_total", 24, tier="hosted", kind="prompt")
        assert prompt == 24
        assert r.metric("zeta_router_tokens_total", tier="hosted", kind="completion") == 16
        cost = r.metric("zeta_router_cost_total", tier="hosted")
        assert cost == pytest.approx(2 * (12 * 0.5 + 8 * 1.5) / 1000)
        # Not probed (it would want the key): counted up while its breaker is closed.
        status, ready, _ = r.get("/readyz")
        assert status == 200
        assert ready["tiers"] == {"small": True, "hosted": True}
        assert provider.stats()["requests"] == 2
    finally:
        r.stop()
    _no_key_in_logs(r)


def test_a_key_rotated_in_its_mounted_secret_is_used_without_a_restart(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The key file laid out as the kubelet mounts a Secret: api-key -> ..data/api-key.
    secret = ConfigMapDir(tmp_path / "secret", filename="api-key")
    secret.write(KEY + "\n")
    cfg = external_routing(
        cluster_tier.url,
        provider.url,
        PROVIDER_MODEL,
        to_external=True,
        key_file=secret.path,
        circuitBreaker={"failureThreshold": 100, "openSeconds": 1},
    )
    r = _start(tmp_path, cfg, monkeypatch, key=None)  # (no variable: the file only)
    try:
        status, headers, body = _chat(r)
        assert status == 200, body
        assert headers["x-zeta-tier"] == "hosted"
        # The provider takes only the new key from now on; the Secret volume is swapped to it.
        provider.control(api_key=NEW_KEY)
        secret.write(NEW_KEY + "\n")

        def answered_by_the_provider() -> bool:
            status, headers, _ = _chat(r)
            assert status == 200  # (refused for the old key: answered by the cluster's tier)
            return headers["x-zeta-tier"] == "hosted"

        wait_for(answered_by_the_provider, 30, "a request answered with the new key")
        assert r.process.poll() is None  # the same process: no restart
        assert provider.stats()["authorized"] >= 2
        loaded = [e for e in r.log_events() if e.get("event") == "external_keys_loaded"]
        assert [e["tiers"] for e in loaded] == [["hosted"]]
        # A file that cannot be used leaves the new key in use, and says so once.
        secret.write("")
        wait_for(
            lambda: r.metric("zeta_router_config_errors_total") == 1, 30, "the empty file refused"
        )
        status, headers, body = _chat(r)
        assert (status, headers["x-zeta-tier"]) == (200, "hosted"), body
    finally:
        r.stop()
    text = r.log_path.read_text(errors="replace")
    assert KEY not in text
    assert NEW_KEY not in text


def test_failover_to_and_from_the_external_tier(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = _start(tmp_path, _routing(cluster_tier, provider, to_external=False), monkeypatch)
    try:
        cluster_tier.control(status=503)
        status, headers, body = _chat(r)
        assert status == 200, body
        assert headers["x-zeta-tier"] == "hosted"
        assert r.metric("zeta_router_failovers_total", to="hosted", reason="http_503") == 1
        assert provider.stats()["authorized"] == 1
    finally:
        r.stop()

    # The other way: the provider fails, the cluster's tier answers.
    cluster_tier.control(status=200)
    provider.control(status=503)
    r = _start(tmp_path, _routing(cluster_tier, provider, to_external=True), monkeypatch)
    try:
        status, headers, body = _chat(r)
        assert status == 200, body
        assert headers["x-zeta-tier"] == "small"
        assert r.metric("zeta_router_failovers_total", to="small", reason="http_503") == 1
        # The cluster's tier got the client's own credentials, as before external tiers.
        assert "Authorization" in cluster_tier.stats()["headers_seen"]
    finally:
        r.stop()
    _no_key_in_logs(r)


def test_overflow_only_is_never_the_first_choice(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every request scores for the external tier, which is overflow only: the cluster answers.
    cfg = _routing(cluster_tier, provider, to_external=True, overflow_only=True)
    r = _start(tmp_path, cfg, monkeypatch)
    try:
        for _ in range(3):
            status, headers, _ = _chat(r)
            assert status == 200
            assert headers["x-zeta-tier"] == "small"
        assert provider.stats()["requests"] == 0
        # Saturated (429) cluster tier: now the overflow tier answers.
        cluster_tier.control(status=429)
        status, headers, body = _chat(r)
        assert status == 200, body
        assert headers["x-zeta-tier"] == "hosted"
        assert provider.stats()["authorized"] == 1
    finally:
        r.stop()
    _no_key_in_logs(r)


def test_client_side_limits_fail_over(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _routing(cluster_tier, provider, to_external=True, limits={"requestsPerMinute": 2})
    r = _start(tmp_path, cfg, monkeypatch)
    try:
        served = [_chat(r)[1]["x-zeta-tier"] for _ in range(4)]
        assert served == ["hosted", "hosted", "small", "small"]
        assert provider.stats()["requests"] == 2
        assert (
            r.metric("zeta_router_tier_failures_total", tier="hosted", reason="rate_limited") == 2
        )
        # Only the cluster's tier left, and it fails: the client hears of both.
        cluster_tier.control(status=503)
        status, _, body = _chat(r)
        assert status == 503
        assert b"requests per minute" in body
    finally:
        r.stop()

    # Tokens: one answer of 20 tokens uses up a limit of 20.
    cluster_tier.control(status=200)
    provider.control(requests=0)
    cfg = _routing(cluster_tier, provider, to_external=True, limits={"tokensPerMinute": 20})
    r = _start(tmp_path, cfg, monkeypatch)
    try:
        served = [_chat(r)[1]["x-zeta-tier"] for _ in range(3)]
        assert served == ["hosted", "small", "small"]
        assert provider.stats()["requests"] == 1
    finally:
        r.stop()
    _no_key_in_logs(r)


def test_wrong_or_missing_key(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _routing(cluster_tier, provider, to_external=True)
    # A router without the variable refuses the configuration, naming the variable only.
    with pytest.raises(RuntimeError, match=KEY_ENV):
        _start(tmp_path, cfg, monkeypatch, key=None)
    # A wrong key: the provider's 401 is the tier's failure (the client did not send that key):
    # the request fails over, and with no tier left the client never sees the provider's answer.
    r = _start(tmp_path, cfg, monkeypatch, key="sk-wrong")
    try:
        status, headers, _ = _chat(r)
        assert status == 200
        assert headers["x-zeta-tier"] == "small"
        assert r.metric("zeta_router_tier_failures_total", reason="key_refused") == 1
        cluster_tier.control(status=503)
        status, _, body = _chat(r)
        assert status == 503
        assert b"invalid API key" not in body
        assert b"HTTP 401" in body
        assert provider.stats()["unauthorized"] == 2
    finally:
        r.stop()


def test_https_to_the_provider(
    tmp_path: Path, cluster_tier: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router's own client speaks TLS to the provider, checking its certificate: a
    provider whose certificate the router does not trust never sees the request (or the key),
    and the request fails over."""
    certs = pki.generate(tmp_path / "pki")  # a CA and a certificate for 127.0.0.1
    tls = (certs.serving_cert, certs.serving_key, certs.ca_cert)
    provider = start_fake_upstream(tmp_path / "tls-provider.log", tls=tls)
    try:
        provider.control(api_key=KEY, usage=USAGE)
        assert provider.url.startswith("https://")
        cfg = _routing(cluster_tier, provider, to_external=True)
        r = _start(tmp_path, cfg, monkeypatch, trust=certs.ca_cert)
        try:
            status, headers, body = _chat(r)
            assert status == 200, body
            assert headers["x-zeta-tier"] == "hosted"
            assert provider.stats()["authorized"] == 1
        finally:
            r.stop()
        _no_key_in_logs(r)

        monkeypatch.delenv("SSL_CERT_FILE")  # the system's CAs only: not this one
        r = _start(tmp_path, cfg, monkeypatch)
        try:
            status, headers, _ = _chat(r)
            assert status == 200
            assert headers["x-zeta-tier"] == "small"
            assert r.metric("zeta_router_tier_failures_total", tier="hosted", reason="refused") == 1
            assert provider.stats()["requests"] == 1  # (the first router's only)
        finally:
            r.stop()
        _no_key_in_logs(r)
    finally:
        provider.stop()


def test_a_paused_tier_gets_nothing_and_a_pinned_request_a_clear_error(
    tmp_path: Path,
    cluster_tier: FakeUpstream,
    provider: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The control loop paused hosted for its spend cap: requests scored for it go to small.
    cfg = _routing(cluster_tier, provider, to_external=True)
    cfg["tiers"][1]["external"]["paused"] = True
    cfg["allowForceTier"] = True
    r = _start(tmp_path, cfg, monkeypatch)
    try:
        for _ in range(2):
            status, headers, body = _chat(r)
            assert status == 200, body
            assert headers["x-zeta-tier"] == "small"
        req = urllib.request.Request(
            r.url + "/v1/chat/completions",
            data=json.dumps(
                {"model": "assistant", "messages": [{"role": "user", "content": "hello"}]}
            ).encode(),
            headers={"Content-Type": "application/json", "X-Zeta-Tier": "hosted"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=60)
        assert err.value.code == 503
        assert err.value.headers["Retry-After"] == "60"
        error = json.loads(err.value.read())["error"]
        assert error["code"] == "tier_paused"
        assert "maxCostPerHour" in error["message"]
        assert provider.stats()["requests"] == 0
    finally:
        r.stop()
    _no_key_in_logs(r)
