"""The routing configuration: what the operator writes into the `<name>-routing` ConfigMap and
what every router sidecar reads (and hot-reloads) from its mounted file.

This model is the single contract between the operator (render) and the router. It is
serialised as YAML under the ConfigMap key ``routing.yaml`` with camelCase field names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from zeta_router.api.fields import SHA256_HEX
from zeta_router.scoring import ngrams
from zeta_router.scoring.learned import LearnedCorrection
from zeta_router.scoring.weights import ScorerWeights

CONFIGMAP_KEY = "routing.yaml"
#: ``engine`` of an external tier in the routing file: no model server whose gauges to read.
EXTERNAL_ENGINE = "external"

__all__ = [
    "CONFIGMAP_KEY",
    "EXTERNAL_ENGINE",
    "LearnedCorrection",
    "RoutingConfig",
    "RoutingExternal",
    "ScorerWeights",
    "configmap_routing",
    "parse_routing_yaml",
    "routing_yaml",
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def base_url(url: str) -> str:
    """The base URL of an OpenAI-compatible server, or ValueError saying why ``url`` cannot be
    used: ``http://h:8000/v1/`` and ``http://h:8000`` are the same server. Checked wherever a
    tier URL enters (flags, routing file, the operator's rendering), so that a URL the HTTP
    client could not use is refused at start or reload, never found out by a request."""
    if not isinstance(url, str):
        raise ValueError(f"a tier URL must be a string, not {type(url).__name__}")
    url = url.strip().rstrip("/")
    url = url.removesuffix("/v1")
    if any(c.isspace() or c == "," for c in url):
        raise ValueError(
            f"tier URL {url!r} holds a comma or a space; give each replica's URL separately"
        )
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"tier URL {url!r} must start with http:// or https://")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"tier URL {url!r} is not usable: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"tier URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"tier URL {url!r} must not carry credentials")
    if parts.query or parts.fragment:
        raise ValueError(f"tier URL {url!r} must not have a query or a fragment")
    if port == 0:
        raise ValueError(f"tier URL {url!r} has port 0")
    return url


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


BaseUrl = Annotated[str, AfterValidator(base_url)]
"""A tier URL, normalised by :func:`base_url`."""


class RoutingExternal(_Model):
    """What the routers need of an external tier (an OpenAI-compatible provider): never the
    API key itself, only the file (or the environment variable) that holds it."""

    api_key_file: str | None = Field(
        default=None,
        pattern=r"^/[^\x00-\x1f]*$",
        max_length=1024,
        description="File holding the API key (sent as Authorization: Bearer), re-read while "
        "the router runs: a mounted Secret, which the kubelet updates in place, rotates the "
        "key without a restart. What the operator writes.",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="Environment variable of the router holding the API key instead (read at "
        "start and at each reload of the routing file): for a router run by hand.",
    )
    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    overflow_only: bool = False
    prompt_cost_per_1k_tokens: float = Field(default=0.0, ge=0.0, alias="promptCostPer1kTokens")
    completion_cost_per_1k_tokens: float = Field(
        default=0.0, ge=0.0, alias="completionCostPer1kTokens"
    )
    # Absent unless paused, so routing files without a spend cap stay as they were.
    paused: Literal[True] | None = Field(
        default=None,
        description="Paused by the control loop for the tier's spend cap (maxCostPerHour): no "
        "request is sent there; a request that wants it is answered on the nearest tier "
        "that can, one pinned to it gets 503 tier_paused.",
    )

    @model_validator(mode="after")
    def _check_key_source(self) -> Self:
        if (self.api_key_file is None) == (self.api_key_env is None):
            raise ValueError("an external tier names exactly one of apiKeyFile and apiKeyEnv")
        return self


class RoutingTier(_Model):
    name: str
    url: BaseUrl = Field(
        description="Base URL of the tier's OpenAI-compatible server (its Service): the one "
        "replica used when ``replicas`` gives none."
    )
    local_url: BaseUrl | None = Field(
        default=None,
        description="URL of the tier's server inside its own pod (localhost); a router started "
        "with --local-tier NAME falls back to it for its own tier when ``replicas`` gives none.",
    )
    replicas: list[BaseUrl] = Field(
        default_factory=list,
        max_length=256,
        description="Where the tier's replicas are: base URLs, each an address or a name "
        "resolved every balancing.resolveSeconds to all of its addresses (a headless Service: "
        "its ready pods). Empty: the tier is ``url`` alone.",
    )
    served_model_name: str | None = None
    engine: str = "vllm"
    cost_weight: float = Field(default=1.0, gt=0)
    external: RoutingExternal | None = Field(
        default=None,
        description="The tier is an external provider at ``url`` (no replicas, no metrics "
        "read, no health probe); absent for the tiers the operator runs.",
    )
    # Absent unless the tier sleeps, so routing files of tiers that never sleep stay as they were.
    asleep: Literal[True] | None = Field(
        default=None,
        description="The tier sleeps at zero replicas (or is waking and has no ready replica "
        "yet): no request is sent there; each one that wants it is counted "
        "(zeta_router_wake_requests_total), which wakes it, and is answered per its context's "
        "whenAsleep.",
    )

    @model_validator(mode="after")
    def _check_external(self) -> Self:
        if self.external is not None and (
            self.replicas or self.local_url or self.engine != EXTERNAL_ENGINE
        ):
            raise ValueError(
                f"tier {self.name!r} is external: it has no replicas or localUrl, and its "
                f"engine is {EXTERNAL_ENGINE!r}"
            )
        return self


#: How a context sends requests to tiers: by the prompt's score, or small tier first.
ROUTING_MODES: tuple[str, ...] = ("route", "cascade")
RoutingMode = Literal["route", "cascade"]
#: Default probability of a wrong small-tier answer at which a cascade escalates.
DEFAULT_ESCALATE_ABOVE = 0.5


class RoutingContext(_Model):
    name: str
    thresholds: list[Annotated[float, Field(ge=0.0, le=1.0)]]
    scorer: ScorerWeights | None = None
    learned: LearnedCorrection | None = Field(
        default=None,
        description="Correction added to the scorer's logit (learned by the operator).",
    )
    # Both absent unless a context cascades, so routing files of contexts that do not stay as
    # they were (and routers that predate the cascade keep reading them).
    mode: RoutingMode | None = Field(
        default=None,
        description="route (absent): by the request's score and the thresholds. cascade: "
        "non-streamed requests go to the smallest tier first, and to the largest when the "
        "answer-side judge doubts that answer (streamed ones are routed).",
    )
    escalate_above: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="cascade: escalate when the judge's probability that the smallest tier's "
        f"answer is wrong is at least this (absent: {DEFAULT_ESCALATE_ABOVE}).",
    )
    # Both absent for the default (fallback), as above.
    when_asleep: Literal["wait"] | None = Field(
        default=None,
        description="fallback (absent): a request whose tier sleeps is answered at once on the "
        "nearest tier that has replicas. wait: it is held up to waitSeconds while the tier "
        "wakes, then answered there, or falls back.",
    )
    wait_seconds: float | None = Field(
        default=None, gt=0.0, le=600.0, description="wait: the longest a request is held."
    )


class RoutingLearning(_Model):
    """What the routers do for the operator's learner (present while it learns): keep a
    bounded sample of hashed requests of the learning contexts, and turn feedback and shadow
    pairs into labels for them."""

    contexts: list[str] = Field(description="Contexts whose requests are sampled.")
    sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    max_samples: int = Field(default=20_000, ge=1)
    sample_ttl_seconds: float = Field(default=6 * 3600.0, gt=0)
    hash_bits: int = Field(default=ngrams.DEFAULT_BITS, ge=ngrams.MIN_BITS, le=ngrams.MAX_BITS)
    feedback_labels: bool = True
    shadow_judge: Literal["agreement", "largest-tier"] | None = Field(
        default=None, description="How shadow pairs become labels; none: they do not."
    )
    judge_prompt: str | None = Field(
        default=None, description="The largest-tier judge's prompt (default: the built-in one)."
    )


class Timeouts(_Model):
    connect_seconds: float = Field(
        default=2.0, gt=0, description="Time to connect to a tier's server."
    )
    first_byte_seconds: float = Field(
        default=60.0, gt=0, description="Time until a tier's first response byte."
    )
    total_seconds: float = Field(default=600.0, gt=0, description="Time for a whole request.")


class Stickiness(_Model):
    """A conversation never drops to a smaller tier: routers keep no memory of sessions, so
    every replica agrees; the floor comes from the earlier turns the request carries and from
    a signed session token (``x-zeta-session``) the client sends back."""

    ttl_seconds: float = Field(
        default=1800.0,
        ge=0,
        description="How long a session token keeps its floor after the answer that issued it.",
    )
    max_sessions: int = Field(
        default=100_000,
        ge=0,
        description="0 turns stickiness off; any other value leaves it on (routers keep no "
        "per-session memory, so the value is not a limit).",
    )


class CircuitBreaker(_Model):
    """Per-tier breaker: after ``failure_threshold`` consecutive failures (refused connection,
    timeout before the first byte, 502/503/504) the tier is skipped for ``open_seconds``, then
    one probe request is let through; a success closes it again."""

    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive failures that open the breaker."
    )
    open_seconds: float = Field(
        default=5.0, gt=0, description="How long an open breaker skips the tier."
    )


class Balancing(_Model):
    """How a router spreads a tier's requests over the tier's replicas (see docs/router.md)."""

    strategy: Literal["prefix", "least-loaded", "round-robin", "random"] = Field(
        default="prefix",
        description="prefix: requests whose prompts begin alike go to one replica (consistent "
        "hashing with bounded loads), so its prompt cache is reused; least-loaded: the replica "
        "with the fewest requests in progress; round-robin and random: for comparison.",
    )
    prefix_chars: int = Field(
        default=512,
        ge=16,
        le=1 << 20,
        description="How many characters of the prompt's beginning (system prompt, then the "
        "conversation's first turns) choose the replica.",
    )
    load_factor: float = Field(
        default=1.25,
        ge=1.0,
        le=10.0,
        description="Bounded loads: a replica takes a request of its prefix only while its "
        "load is below loadFactor times the tier's mean load (plus one); else the next replica "
        "on the ring.",
    )
    ejection_failures: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Consecutive failures (refused, timeout, 502/503/504, broken answer) after "
        "which a replica gets no request for ejectionSeconds.",
    )
    ejection_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="How long an ejected replica is left out."
    )
    replica_tries: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Replicas of one tier a request may try before the tier counts as failed "
        "(and the request moves to another tier).",
    )
    resolve_seconds: float = Field(
        default=1.0,
        ge=0.1,
        le=300.0,
        description="How often replica names (a headless Service) are resolved again.",
    )
    metrics_seconds: float = Field(
        default=1.0,
        ge=0.0,
        le=300.0,
        description="How often each replica's own load metrics (requests running and waiting) "
        "are read from its /metrics; 0: never (only this router's own requests count).",
    )


class RoutingConfig(_Model):
    generation: int = Field(default=0, ge=0)
    router: str = Field(default="zeta", description="Logical model name clients use.")
    tiers: list[RoutingTier] = Field(min_length=1)
    contexts: list[RoutingContext] = Field(min_length=1)
    default_context: str
    failover: bool = True
    allow_force_tier: bool = False
    force_tier_token_sha256: list[Annotated[str, Field(pattern=SHA256_HEX)]] = Field(
        default_factory=list,
        max_length=16,
        description="With allowForceTier: SHA-256 (hex) of the X-Zeta-Tier-Token values that "
        "may pin a tier; empty: any client may.",
    )
    shadow_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    stickiness: Stickiness = Field(default_factory=Stickiness)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    balancing: Balancing = Field(default_factory=Balancing)
    scorer: ScorerWeights | None = Field(
        default=None, description="Default weights for contexts without their own."
    )
    learning: RoutingLearning | None = Field(
        default=None, description="Sampling and labelling for the learner; none: off."
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        tier_names = [t.name for t in self.tiers]
        if len(set(tier_names)) != len(tier_names):
            raise ValueError(f"duplicate tier names in {tier_names}")
        ctx_names = [c.name for c in self.contexts]
        if len(set(ctx_names)) != len(ctx_names):
            raise ValueError(f"duplicate context names in {ctx_names}")
        if self.default_context not in ctx_names:
            raise ValueError(
                f"defaultContext {self.default_context!r} is not one of the contexts {ctx_names}"
            )
        for ctx in self.contexts:
            if len(ctx.thresholds) != len(self.tiers) - 1:
                raise ValueError(
                    f"context {ctx.name!r} has {len(ctx.thresholds)} thresholds; "
                    f"{len(self.tiers)} tiers need {len(self.tiers) - 1}"
                )
            if any(b <= a for a, b in zip(ctx.thresholds, ctx.thresholds[1:], strict=False)):
                raise ValueError(
                    f"context {ctx.name!r} thresholds {ctx.thresholds} are not strictly increasing"
                )
        return self


# libyaml's parser and emitter where PyYAML has them (its wheels do): the same documents, four
# to eight times faster. The operator renders and parses routing files at every reconciliation
# and status refresh; in a burst of a thousand ZetaRouters the pure-Python parser took a tenth
# of its CPU and the emitter a twentieth. Both emitters write the same text (the same
# algorithm), except that for a mapping key of over 128 characters libyaml may choose the
# explicit ``? key`` form: the same document either way.
_FAST_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FAST_SAFE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def routing_yaml(config: RoutingConfig) -> str:
    """The ``routing.yaml`` text of a configuration (camelCase, stable order)."""
    data = config.model_dump(by_alias=True, exclude_none=True, mode="json")
    return yaml.dump(
        data, Dumper=_FAST_SAFE_DUMPER, sort_keys=False, default_flow_style=False, width=1 << 16
    )


def parse_routing_yaml(text: str) -> RoutingConfig | None:
    """A ``routing.yaml`` text as a configuration; ``None`` when it is not a valid one."""
    try:
        return RoutingConfig.model_validate(yaml.load(text, Loader=_FAST_SAFE_LOADER))
    except (yaml.YAMLError, ValidationError, TypeError, ValueError):
        return None


def configmap_routing(configmap: Mapping[str, Any] | None) -> RoutingConfig | None:
    """The configuration held by a live routing ConfigMap (``None``: absent or not valid)."""
    if configmap is None:
        return None
    text = (configmap.get("data") or {}).get(CONFIGMAP_KEY)
    return parse_routing_yaml(text) if isinstance(text, str) else None
