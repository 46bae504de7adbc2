"""External tiers (an OpenAI-compatible provider as a tier): the API's checks, what is rendered
(and what never is: the key), the pod policy's Secret rule, and the router's pure parts
(failover order with overflow-only tiers, client-side limits, the headers sent, usage)."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
import yaml

from zeta_router.api.models import SpecError, parse_zetarouter
from zeta_router.api.pod_policy import (
    USABLE_BY_ANNOTATION,
    PodPolicy,
    check_spec,
    referenced_secrets,
)
from zeta_router.api.routing import CONFIGMAP_KEY, RoutingExternal, RoutingTier
from zeta_router.render import names
from zeta_router.render.children import render
from zeta_router.render.deployment import MODEL_CONTAINER, ROUTER_CONTAINER
from zeta_router.router.config import ConfigError, compile_config
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
            "apiKeyEnv": "ZETA_EXTERNAL_KEY_HOSTED",
            "overflowOnly": True,
            "promptCostPer1kTokens": 0.0,
            "completionCostPer1kTokens": 0.0,
        },
    }
    want = {
        "name": names.external_key_env("hosted"),
        "valueFrom": {"secretKeyRef": {"name": KEY_SECRET, "key": "apiKey"}},
    }
    for dep in (c for c in children if c["kind"] == "Deployment"):
        containers = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
        assert containers[ROUTER_CONTAINER]["env"] == [want]
        assert want not in containers[MODEL_CONTAINER].get("env", [])
    # Only by reference: no child holds the Secret's name outside a secretKeyRef.
    text = json.dumps([c for c in children if c["kind"] != "Deployment"])
    assert KEY_SECRET not in text


def test_key_env_names() -> None:
    assert names.external_key_env("gpt-4o") == "ZETA_EXTERNAL_KEY_GPT_4O"


# ---- the pod policy's Secret rule ------------------------------------------------------------


def test_the_key_secret_must_be_marked_for_the_router() -> None:
    doc = spec()
    assert referenced_secrets(doc) == [KEY_SECRET]
    parsed = parse_zetarouter(doc)

    def refused(annotations: dict[str, str] | None, policy: PodPolicy | None = None) -> list[str]:
        found = check_spec("chat", parsed, policy or PodPolicy(), {KEY_SECRET: annotations})
        return [f"{v.path}: {v.message}" for v in found]

    assert refused({USABLE_BY_ANNOTATION: "chat"}) == []
    assert refused({USABLE_BY_ANNOTATION: "*"}) == []
    assert refused({}) == [
        f"spec.tiers[2].external.apiKeySecretRef: Secret {KEY_SECRET} is not marked for this "
        f"ZetaRouter (its annotation {USABLE_BY_ANNOTATION} must list 'chat' or '*')"
    ]
    assert len(refused(None)) == 1
    assert refused({}, PodPolicy(secret_refs="any")) == []
    assert len(refused({USABLE_BY_ANNOTATION: "*"}, PodPolicy(secret_refs="none"))) == 1


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


def test_the_router_reads_the_key_from_its_environment() -> None:
    cfg = routing()
    rt = compile_config(cfg, "small", environ={"ZETA_EXTERNAL_KEY_HOSTED": "sk-secret"})
    hosted = rt.tier_by_name["hosted"]
    assert hosted.api_key == "sk-secret"
    assert "sk-secret" not in repr(hosted)
    assert "sk-secret" not in repr(rt)
    assert rt.overflow == frozenset({2})
    with pytest.raises(ConfigError) as err:
        compile_config(cfg, "small", environ={})
    assert "ZETA_EXTERNAL_KEY_HOSTED" in str(err.value)


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


def test_a_reload_keeps_the_window_unless_the_limits_change() -> None:
    env = {"ZETA_EXTERNAL_KEY_HOSTED": "sk"}

    def runtime(rpm: int) -> Any:
        out = render("chat", "ns", parse_zetarouter(spec(limits={"requestsPerMinute": rpm})))
        return compile_config(out.routing, "small", environ=env)

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


def test_no_load_gauges_are_read_from_a_provider() -> None:
    doc = spec()
    cfg = render("chat", "ns", parse_zetarouter(doc)).routing
    tiers = list(cfg.tiers)
    tiers[0] = tiers[0].model_copy(
        update={"replicas": ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]}
    )
    cfg = cfg.model_copy(update={"tiers": tiers})
    rt = compile_config(cfg, environ={"ZETA_EXTERNAL_KEY_HOSTED": "sk"})
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
