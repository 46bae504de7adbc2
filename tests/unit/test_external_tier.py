"""External tiers (an OpenAI-compatible provider as a tier): the API's checks, what is rendered
(and what never is: the key), the pod policy's Secret rule, and the router's pure parts
(failover order with overflow-only tiers, client-side limits, the headers sent, usage)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from support.routing_files import with_key_files
from zeta_router.api.models import SpecError, parse_zetarouter
from zeta_router.api.pod_policy import (
    EXTERNAL_URLS_ANNOTATION,
    USABLE_BY_ANNOTATION,
    PodPolicy,
    check_spec,
    referenced_secrets,
)
from zeta_router.api.routing import CONFIGMAP_KEY, RoutingExternal, RoutingTier
from zeta_router.render import names
from zeta_router.render.children import render
from zeta_router.render.deployment import MODEL_CONTAINER, ROUTER_CONTAINER
from zeta_router.router.config import (
    MAX_KEY_FILE_BYTES,
    ConfigError,
    compile_config,
    external_key,
    read_key_file,
)
from zeta_router.router.metrics import RouterMetrics
from zeta_router.router.ratelimit import RateLimiter
from zeta_router.router.relay import SseRewriter, rewrite_model, usage_of
from zeta_router.router.replicas import Replicas
from zeta_router.router.upstream import Upstreams, attempt_order, external_headers

KEY_SECRET = "provider-key"


def spec(**external: Any) -> dict[str, Any]:
    ext = {
        "baseUrl": "https://llm.example.com/v1",
        "model": "big-model",
        "apiKeySecretRef": {"name": KEY_SECRET, "key": "apiKey"},
        **external,
    }
    return {
        "tiers": [
            {"name": "small", "model": "m-7b", "engine": "llamacpp"},
            {"name": "large", "model": "m-14b", "engine": "llamacpp"},
            {"name": "hosted", "costWeight": 5, "external": ext},
        ]
    }


def errors(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        parse_zetarouter(doc)
    return str(err.value)


# ---- the API ------------------------------------------------------------------------------------


def test_an_external_tier_parses_with_its_defaults() -> None:
    s = parse_zetarouter(spec())
    hosted = s.tier("hosted")
    assert hosted.external is not None
    assert hosted.external.base_url == "https://llm.example.com"  # (/v1 is implied)
    assert hosted.served_name == "big-model"
    assert hosted.gpus_per_replica == 0
    assert not hosted.external.overflow_only
    assert [t.name for t in s.served_tiers] == ["small", "large"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "m"),
        ("image", "x"),
        ("replicas", {"min": 2}),
        ("resources", {"requests": {"cpu": "1"}}),
        ("modelCache", {"emptyDir": {}}),
        ("port", 9000),
        ("env", [{"name": "A", "value": "b"}]),
    ],
)
def test_model_server_fields_are_refused_on_an_external_tier(field: str, value: Any) -> None:
    doc = spec()
    doc["tiers"][2][field] = value
    assert errors(doc) == (
        f"spec.tiers[2].{field}: an external tier has no model server: remove this field (or "
        "external)"
    )


def test_http_needs_the_opt_in() -> None:
    assert "spec.tiers[2].external.baseUrl: http:// would send the API key in clear text" in (
        errors(spec(baseUrl="http://gateway.internal:8080"))
    )
    ok = parse_zetarouter(spec(baseUrl="http://gateway.internal:8080", allowInsecureHttp=True))
    assert ok.tiers[2].external is not None
    assert ok.tiers[2].external.base_url == "http://gateway.internal:8080"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://x", "pattern"),
        ("https://user:pw@x", "must not carry credentials"),
        ("https://x/v1?key=1", "must not have a query"),
    ],
)
def test_bad_base_urls(url: str, why: str) -> None:
    assert why in errors(spec(baseUrl=url)) or "must start with" in errors(spec(baseUrl=url))


def test_where_external_tiers_may_be() -> None:
    doc = spec()
    doc["tiers"] = [doc["tiers"][2]]
    assert "every tier is external" in errors(doc)
    doc = spec()
    doc["tiers"][0].pop("model")
    assert "spec.tiers[0].model: required (unless the tier is external)" in errors(doc)
    doc = spec()
    doc["autoscaling"] = {"enabled": True, "prometheus": {"url": "http://p:9090"}}
    assert parse_zetarouter(doc).autoscaling.enabled  # external tiers at the top: fine
    doc["tiers"] = [doc["tiers"][0], doc["tiers"][2], doc["tiers"][1]]
    assert "spec.tiers[1].external: with autoscaling or feedback enabled, external tiers" in (
        errors(doc)
    )
    doc = spec(limits={"requestsPerMinute": 0})
    assert "spec.tiers[2].external.limits.requestsPerMinute" in errors(doc)


# ---- rendering ----------------------------------------------------------------------------------


def rendered() -> list[dict[str, Any]]:
    out = render("chat", "ns", parse_zetarouter(spec(overflowOnly=True)))
    return out.children


def test_no_child_of_its_own_and_the_key_only_by_reference() -> None:
    children = rendered()
    named = {(c["kind"], c["metadata"]["name"]) for c in children}
    assert not [n for n in named if "hosted" in n[1]]
    assert ("Deployment", "chat-small") in named
    assert ("Deployment", "chat-large") in named

    (cm,) = [c for c in children if c["kind"] == "ConfigMap"]
    routing = yaml.safe_load(cm["data"][CONFIGMAP_KEY])
    hosted = routing["tiers"][2]
    assert hosted == {
        "name": "hosted",
        "url": "https://llm.example.com",
        "replicas": [],
        "servedModelName": "big-model",
        "engine": "external",
        "costWeight": 5.0,
        "external": {
            "apiKeyFile": "/var/run/zeta-router/external/hosted/api-key",
            "overflowOnly": True,
            "promptCostPer1kTokens": 0.0,
            "completionCostPer1kTokens": 0.0,
        },
    }
    volume = {
        "name": "external-key-hosted",
        "secret": {"secretName": KEY_SECRET, "items": [{"key": "apiKey", "path": "api-key"}]},
    }
    mount = {
        "name": "external-key-hosted",
        "mountPath": "/var/run/zeta-router/external/hosted",
        "readOnly": True,
    }
    for dep in (c for c in children if c["kind"] == "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert volume in pod["volumes"]
        containers = {c["name"]: c for c in pod["containers"]}
        assert mount in containers[ROUTER_CONTAINER]["volumeMounts"]
        # The model server neither mounts it nor gets it any other way.
        assert KEY_SECRET not in json.dumps(containers[MODEL_CONTAINER])
        assert "external-key-hosted" not in json.dumps(containers[MODEL_CONTAINER])
        # A file, not an environment variable: a key rotated in its Secret reaches the file.
        assert "env" not in containers[ROUTER_CONTAINER]
    # Only by reference: no child holds the Secret's name outside the pods' volumes.
    text = json.dumps([c for c in children if c["kind"] != "Deployment"])
    assert KEY_SECRET not in text


def test_key_file_names() -> None:
    assert names.external_key_file("gpt-4o") == "/var/run/zeta-router/external/gpt-4o/api-key"
    # The longest tier name still gives a valid volume name (a DNS label of at most 63).
    assert len(names.external_key_volume("t" * 40)) <= 63


# ---- the pod policy's Secret rule ------------------------------------------------------------


def test_the_key_secret_must_be_marked_for_the_router_and_the_url() -> None:
    doc = spec()
    assert referenced_secrets(doc) == [KEY_SECRET]
    parsed = parse_zetarouter(doc)
    to = {EXTERNAL_URLS_ANNOTATION: "https://llm.example.com/v1"}

    def refused(annotations: dict[str, str] | None, policy: PodPolicy | None = None) -> list[str]:
        found = check_spec("chat", parsed, policy or PodPolicy(), {KEY_SECRET: annotations})
        return [f"{v.path}: {v.message}" for v in found]

    assert refused({USABLE_BY_ANNOTATION: "chat", **to}) == []
    assert refused({USABLE_BY_ANNOTATION: "*", **to}) == []
    assert refused(to) == [
        f"spec.tiers[2].external.apiKeySecretRef: Secret {KEY_SECRET} is not marked for this "
        f"ZetaRouter (its annotation {USABLE_BY_ANNOTATION} must list 'chat' or '*')"
    ]
    assert len(refused(None)) == 1
    assert refused({}, PodPolicy(secret_refs="any")) == []
    assert len(refused({USABLE_BY_ANNOTATION: "*", **to}, PodPolicy(secret_refs="none"))) == 1


@pytest.mark.parametrize(
    ("listed", "refusal"),
    [
        ("https://llm.example.com/v1", None),
        # The same base URL, written otherwise; and among others (white space around).
        ("https://llm.example.com", None),
        ("https://llm.example.com/v1/", None),
        ("https://other.example.com/v1 , https://llm.example.com", None),
        (
            None,
            f"Secret {KEY_SECRET} does not say where its key may be sent (its annotation "
            f"{EXTERNAL_URLS_ANNOTATION} must list https://llm.example.com)",
        ),
        (
            "not a url, ftp://llm.example.com",
            f"Secret {KEY_SECRET} does not say where its key may be sent (its annotation "
            f"{EXTERNAL_URLS_ANNOTATION} must list https://llm.example.com)",
        ),
        # Another host, another scheme, another port, another path: each elsewhere.
        *(
            (
                url,
                f"Secret {KEY_SECRET} allows its key to be sent only to {url}, not "
                f"https://llm.example.com (its annotation {EXTERNAL_URLS_ANNOTATION})",
            )
            for url in (
                "https://llm.example.org",
                "http://llm.example.com",
                "https://llm.example.com:8443",
                "https://llm.example.com/openai",
            )
        ),
    ],
)
def test_the_key_goes_only_to_a_url_its_secret_lists(listed: str | None, refusal: str) -> None:
    annotations = {USABLE_BY_ANNOTATION: "chat"}
    if listed is not None:
        annotations[EXTERNAL_URLS_ANNOTATION] = listed
    found = check_spec("chat", parse_zetarouter(spec()), PodPolicy(), {KEY_SECRET: annotations})
    want = [] if refusal is None else [("spec.tiers[2].external.baseUrl", refusal)]
    assert [(v.path, v.message) for v in found] == want
    assert all(v.rule == "secret-ref" for v in found)


# ---- the router's pure parts -----------------------------------------------------------------


def test_overflow_only_tiers_are_never_first() -> None:
    assert attempt_order(1, 3, True) == [1, 2, 0]
    assert attempt_order(1, 3, True, frozenset({2})) == [1, 0, 2]
    assert attempt_order(2, 3, True, frozenset({2})) == [1, 0, 2]
    assert attempt_order(0, 3, True, frozenset({2})) == [0, 1, 2]
    assert attempt_order(2, 3, False, frozenset({2})) == [1]  # no failover: never reached
    assert attempt_order(0, 3, False, frozenset({2})) == [0]


def test_rate_limiter_windows() -> None:
    lim = RateLimiter(2, None)
    assert lim.refusal(0.0) is None
    assert lim.refusal(1.0) is None
    assert lim.refusal(2.0) == "client-side limit of 2 requests per minute reached"
    assert lim.refusal(60.5) is None  # the first one left the window
    tok = RateLimiter(None, 100)
    assert tok.refusal(0.0) is None
    tok.add_tokens(0.5, 100)
    assert tok.refusal(1.0) == "client-side limit of 100 tokens per minute reached"
    assert tok.refusal(60.6) is None
    assert RateLimiter.of(RoutingExternal(api_key_env="K")) is None


def test_headers_to_the_provider_carry_its_key_not_the_clients() -> None:
    sent = external_headers(
        {"Authorization": "Bearer client", "OpenAI-Organization": "o", "X-Request-Id": "r"}, "sk"
    )
    assert sent == {"X-Request-Id": "r", "Authorization": "Bearer sk"}


def routing() -> Any:
    out = render("chat", "ns", parse_zetarouter(spec(overflowOnly=True)))
    return out.routing


def test_the_router_reads_the_key_from_its_file(tmp_path: Path) -> None:
    cfg = with_key_files(routing(), tmp_path, "sk-secret")
    rt = compile_config(cfg, "small", environ={})
    hosted = rt.tier_by_name["hosted"]
    assert hosted.api_key == "sk-secret"  # (the file's line break removed)
    assert "sk-secret" not in repr(hosted)
    assert "sk-secret" not in repr(rt)
    assert rt.overflow == frozenset({2})
    (tmp_path / "hosted-api-key").unlink()
    with pytest.raises(ConfigError) as err:
        compile_config(cfg, "small")
    assert str(tmp_path / "hosted-api-key") in str(err.value)
    assert "cannot read" in str(err.value)


def test_a_hand_written_routing_file_may_name_a_variable() -> None:
    tier = RoutingTier.model_validate(
        {
            "name": "hosted",
            "url": "https://llm.example.com",
            "engine": "external",
            "external": {"apiKeyEnv": "PROVIDER_KEY"},
        }
    )
    assert external_key("hosted", tier.external, {"PROVIDER_KEY": " sk-env\n"}) == "sk-env"
    with pytest.raises(ConfigError, match="PROVIDER_KEY that should hold its API key"):
        external_key("hosted", tier.external, {})
    with pytest.raises(ConfigError, match="does not hold one API key") as err:
        external_key("hosted", tier.external, {"PROVIDER_KEY": "sk-a\nInjected: 1"})
    assert "sk-a" not in str(err.value)


@pytest.mark.parametrize(
    ("external", "why"),
    [
        ({}, "exactly one of apiKeyFile and apiKeyEnv"),
        ({"apiKeyEnv": "K", "apiKeyFile": "/run/key"}, "exactly one of apiKeyFile and apiKeyEnv"),
        ({"apiKeyFile": "relative/key"}, "external.apiKeyFile"),
        ({"apiKeyFile": "/run/key\n"}, "external.apiKeyFile"),
    ],
    ids=["neither", "both", "relative", "line-break"],
)
def test_a_routing_file_names_exactly_one_usable_key_source(
    external: dict[str, Any], why: str
) -> None:
    base = {"name": "x", "url": "https://p.example.com", "engine": "external"}
    with pytest.raises(ValidationError, match=why):
        RoutingTier.model_validate({**base, "external": external})


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"sk-one\nsk-two\n", "does not hold one API key"),
        (b"sk one", "does not hold one API key"),
        (b"sk-\xc3\xa9", "does not hold one API key"),
        (b"k" * (MAX_KEY_FILE_BYTES + 1), "larger than"),
    ],
    ids=["empty", "blank", "two-lines", "space", "not-ascii", "too-large"],
)
def test_a_key_file_that_cannot_be_used_is_refused_without_its_content(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "api-key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=why) as err:
        read_key_file("hosted", str(path))
    assert str(path) in str(err.value)
    if content.strip():
        assert content.split()[0][:6].decode(errors="replace") not in str(err.value)


def test_a_key_file_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "api-key"
    os.mkfifo(fifo)  # (a FIFO without a writer: a blocking open would never return)
    with pytest.raises(ConfigError, match="is not a regular file"):
        read_key_file("hosted", str(fifo))
    with pytest.raises(ConfigError, match=str(tmp_path)):
        read_key_file("hosted", str(tmp_path))  # (a folder: refused by the open itself)


class Sink:
    usage: tuple[int, int] | None = None


def test_usage_is_read_from_answers_and_streams() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4)
    assert usage_of({"usage": None}) is None
    assert usage_of({"usage": {"prompt_tokens": "3"}}) is None
    sink = Sink()
    body = {"model": "x", "usage": {"prompt_tokens": 5, "completion_tokens": 6}, "choices": []}
    rewrite_model(json.dumps(body).encode(), "mine", None, sink)
    assert sink.usage == (5, 6)
    sink = Sink()
    rw = SseRewriter("mine", None, sink)
    rw.feed(b'data: {"model":"x","choices":[{"delta":{"content":"a"}}]}\n\n')
    assert sink.usage is None
    rw.feed(b'data: {"model":"x","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n')
    assert sink.usage == (1, 2)


def test_a_copy_of_the_spec_is_not_changed_by_parsing() -> None:
    doc = spec()
    before = copy.deepcopy(doc)
    parse_zetarouter(doc)
    assert doc == before


def test_a_reload_keeps_the_window_unless_the_limits_change(tmp_path: Path) -> None:
    def runtime(rpm: int) -> Any:
        out = render("chat", "ns", parse_zetarouter(spec(limits={"requestsPerMinute": rpm})))
        return compile_config(with_key_files(out.routing, tmp_path), "small")

    async def t() -> None:
        up = Upstreams(runtime(1))
        try:
            hosted = up.replicas.config.tier_by_name["hosted"]
            lim = up.limiter(hosted)
            assert lim is not None
            assert lim.refusal(0.0) is None
            up.reconfigure(runtime(1))  # (a reload with the same limits)
            assert up.limiter(hosted) is lim
            up.reconfigure(runtime(2))
            fresh = up.limiter(runtime(2).tier_by_name["hosted"])
            assert fresh is not lim
            assert fresh is not None
            assert fresh.requests_per_minute == 2
            assert up.limiter(runtime(2).tier_by_name["small"]) is None
        finally:
            await up.close()

    asyncio.run(t())


def test_routing_file_external_tiers_have_no_replicas() -> None:
    base = {"name": "x", "url": "https://p.example.com", "engine": "external"}
    ext = {"apiKeyEnv": "K"}
    RoutingTier.model_validate({**base, "external": ext})
    for extra in ({"replicas": ["https://q.example.com"]}, {"engine": "vllm"}):
        with pytest.raises(ValueError, match="is external"):
            RoutingTier.model_validate({**base, **extra, "external": ext})


def test_no_load_gauges_are_read_from_a_provider(tmp_path: Path) -> None:
    doc = spec()
    cfg = render("chat", "ns", parse_zetarouter(doc)).routing
    tiers = list(cfg.tiers)
    tiers[0] = tiers[0].model_copy(
        update={"replicas": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}
    )
    cfg = cfg.model_copy(update={"tiers": tiers})
    rt = compile_config(with_key_files(cfg, tmp_path))
    fetched: list[str] = []

    async def fetch(url: str) -> str | None:
        fetched.append(url)
        return ""

    async def t() -> None:
        replicas = Replicas(rt, RouterMetrics(), frozenset())
        await replicas.read_loads(fetch)

    asyncio.run(t())
    assert "http://10.0.0.1:8000" in fetched
    assert not [u for u in fetched if "example.com" in u]
