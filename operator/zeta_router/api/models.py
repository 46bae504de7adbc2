"""The ZetaRouter custom resource (``zeta.ai/v1alpha1``): pydantic models of its spec and status.

These models are the single source of truth of the API: the CRD's OpenAPI schema
(``zeta_router.api.crd``) and the reference in ``docs/api.md`` (``zeta_router.api.reference``)
are generated from them. Field names are snake_case in Python and camelCase in YAML.

Public entry points:

- :func:`parse_zetarouter` ``(body_or_spec) -> ZetaRouterSpec``: a whole object (as kopf hands
  it over) or a bare spec, validated structurally and semantically, with every default resolved.
  Raises :class:`SpecError`, whose message names each problem by its field path, e.g.
  ``spec.tiers[1].replicas: min 3 > max 2``.
- :func:`parse_status` ``(body) -> ZetaRouterStatus``: the status, leniently (never raises).
- :class:`ZetaRouterSpec` / :class:`ZetaRouterStatus` and their parts.

Defaults that depend on other fields are resolved at parse time, so the parsed spec holds the
values the operator uses: ``replicas.max`` (= ``min``, at least 1), ``replicas.initial``
(= ``min``, at least 1, at most ``max``), the router's ``contexts`` (the built-in ``ZetaHRM``,
``ZetaTRM`` and ``default`` when none are listed), each context's ``thresholds`` (its built-in
reference, 0.5 otherwise, spread over the tier boundaries; see ``zeta_router.api.defaults``) and
``defaultContext`` (``default`` when such a context exists, else the first one). Defaults that
depend on the engine (image, resources) are exposed as properties of :class:`TierSpec`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import pairwise
from typing import Annotated, Any, Final, Literal, Self

from pydantic import Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from zeta_router.api import defaults
from zeta_router.api.fields import (
    CONTEXT_NAME,
    DNS_1035_LABEL,
    DNS_LABEL,
    DURATION,
    PATTERN_HELP,
    SHA256_HEX,
    EnvVar,
    FreeForm,
    LocalObjectReference,
    ProblemsError,
    ResourceRequirements,
    SecretKeyRef,
    SpecModel,
    Threshold,
    Toleration,
    duration_seconds,
    quantity_value,
)
from zeta_router.api.learning import LearningSpec, learning_problems
from zeta_router.api.routing import (
    DEFAULT_ESCALATE_ABOVE,
    Balancing,
    BaseUrl,
    CircuitBreaker,
    RoutingMode,
    Stickiness,
    Timeouts,
)
from zeta_router.api.status import (
    Condition,
    Decision,
    ExternalTierStatus,
    TierStatus,
    ZetaRouterStatus,
    parse_status,
)
from zeta_router.scoring.features import FEATURE_NAMES
from zeta_router.scoring.weights import ScorerWeights

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "AutoscalingSpec",
    "AutoscalingTargets",
    "Condition",
    "ContextSpec",
    "Decision",
    "EnvVar",
    "ExternalLimits",
    "ExternalSpec",
    "ExternalTierStatus",
    "FeedbackSpec",
    "LearningSpec",
    "LocalObjectReference",
    "PrometheusSpec",
    "ReplicaRange",
    "ResourceRequirements",
    "RouterSpec",
    "SecretKeyRef",
    "SpecError",
    "ThresholdBounds",
    "TierSpec",
    "TierStatus",
    "Toleration",
    "ZetaRouterSpec",
    "ZetaRouterStatus",
    "duration_seconds",
    "parse_status",
    "parse_zetarouter",
]
GROUP: Final = "zeta.ai"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ZetaRouter"
PLURAL: Final = "zetarouters"
SINGULAR: Final = "zetarouter"
SHORT_NAMES: Final = ("zr",)

MAX_TIERS: Final = 8
GPU_RESOURCE: Final = "nvidia.com/gpu"


class SpecError(ValueError):
    """A ZetaRouter spec that cannot be used. ``problems`` holds ``(field path, message)`` pairs;
    ``str(error)`` joins them as ``"spec.tiers[1].replicas: min 3 > max 2; ..."``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {message}" for path, message in problems))


# ---------------------------------------------------------------------------------------------
# Tiers


class ReplicaRange(SpecModel):
    """Replica bounds of a tier's Deployment."""

    min: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest replicas. The control loop never scales below it; without "
        "autoscaling the operator keeps a hand-set replica count at or above it.",
    )
    max: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Most replicas. Defaults to min (at least 1).",
    )
    initial: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Replicas the Deployment is created with. Defaults to min, at least 1 "
        "(and at most max).",
    )
    sleep_after: str | None = Field(
        default=None,
        pattern=DURATION,
        description="With min 0 and autoscaling in apply mode: how long the tier must go "
        "without a request (none answered, queued or wanted while asleep) before the control "
        f"loop takes it to zero replicas. Defaults to {defaults.SLEEP_AFTER}. Only for min 0.",
    )

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        problems: list[tuple[str, str]] = []
        if self.sleep_after is not None and self.min > 0:
            problems.append(("sleepAfter", f"a tier sleeps only with min 0 (min is {self.min})"))
        if self.max is not None and self.min > self.max:
            problems.append(("", f"min {self.min} > max {self.max}"))
        hi = self.max if self.max is not None else max(self.min, 1)
        if self.initial is not None and not self.min <= self.initial <= hi:
            problems.append(
                ("initial", f"{self.initial} is outside [min, max] = [{self.min}, {hi}]")
            )
        if problems:
            raise ProblemsError(problems)
        self.max = hi
        if self.initial is None:
            self.initial = min(max(self.min, 1), hi)
        return self

    @property
    def maximum(self) -> int:
        """``max`` once resolved (always set after validation)."""
        return self.max if self.max is not None else max(self.min, 1)

    @property
    def start(self) -> int:
        """``initial`` once resolved (always set after validation)."""
        return self.initial if self.initial is not None else min(max(self.min, 1), self.maximum)

    @property
    def may_sleep(self) -> bool:
        """The tier may be taken to zero replicas when idle (``min: 0``)."""
        return self.min == 0

    @property
    def sleep_after_seconds(self) -> float:
        return duration_seconds(self.sleep_after or defaults.SLEEP_AFTER)


Engine = Literal["vllm", "llamacpp"]
WhenAsleep = Literal["fallback", "wait"]
RolloutStrategy = Literal["Surge", "Replace"]

# vLLM's parallelism flags (long and short forms): one replica uses tp x pp x dp GPUs.
_VLLM_PARALLEL_FLAGS: Final[dict[str, str]] = {
    "--tensor-parallel-size": "tp",
    "-tp": "tp",
    "--pipeline-parallel-size": "pp",
    "-pp": "pp",
    "--data-parallel-size": "dp",
    "-dp": "dp",
}

# Flags the operator sets from other fields; also setting them in ``args`` would make the pod's
# probes, Services and routing config disagree with the server.
_OWNED_FLAGS: Final[dict[str, dict[str, str]]] = {
    "vllm": {
        "--model": "model",
        "--served-model-name": "servedModelName",
        "--port": "port",
    },
    "llamacpp": {
        "--model": "model",
        "-m": "model",
        "--hf-repo": "model",
        "-hf": "model",
        "-hfr": "model",
        "--alias": "servedModelName",
        "-a": "servedModelName",
        "--port": "port",
        "--host": "port",
        "--metrics": "port",
    },
}


class DisruptionBudget(SpecModel):
    """The tier's PodDisruptionBudget: how many of its pods voluntary disruptions (a node
    drain, the cluster autoscaler, an eviction) may take at once."""

    enabled: bool = Field(
        default=True,
        description="Give the tier a PodDisruptionBudget <router>-<tier> (the operator's, "
        "repaired like its other children). false: none (and an existing one is removed).",
    )
    max_unavailable: int = Field(
        default=defaults.PDB_MAX_UNAVAILABLE,
        ge=0,
        description="Pods of the tier an eviction may take at once, never the last one: the "
        "budget rendered is min(maxUnavailable, replicas - 1), so a one-replica tier refuses "
        "evictions (a drain waits until the tier has another replica). 0: refuse all.",
    )


class ExternalLimits(SpecModel):
    """Client-side limits of an external tier, kept by each router on its own (N routers may
    send up to N times these): past one, the tier counts as unavailable for the request, which
    fails over (reason rate_limited)."""

    requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Requests each router sends the provider in any 60 s; none: no limit.",
    )
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000_000,
        description="Tokens (prompt + completion, from the answers' usage) each router has "
        "had the provider process in any 60 s; once reached, no new request until the window "
        "moves on. None: no limit.",
    )


class ExternalSpec(SpecModel):
    """A tier served by an OpenAI-compatible provider outside the cluster: no Deployment, the
    routers send it requests with an API key from a Secret."""

    base_url: BaseUrl = Field(
        pattern=r"^https?://",
        max_length=2048,
        description="Base URL of the provider's OpenAI-compatible API, e.g. "
        "https://api.example.com/v1 (a trailing /v1 is implied). https only, unless "
        "allowInsecureHttp.",
    )
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow an http:// baseUrl: the API key then travels in clear text. Only "
        "for a provider reached over a network you trust (e.g. a gateway in the cluster).",
    )
    model: str = Field(
        min_length=1,
        max_length=512,
        description="Model name sent to the provider (the request's model is rewritten to it).",
    )
    api_key_secret_ref: SecretKeyRef = Field(
        description="Secret (and key, default 'token') holding the provider's API key, sent as "
        "Authorization: Bearer. The Secret must be annotated zeta.ai/usable-by with this "
        "ZetaRouter's name or '*', and zeta.ai/external-urls with the baseUrl (the pod "
        "policy's secret-ref rule: the Secret's owner says where the key may go); the key "
        "reaches only the router containers, as a file of a Secret volume that they re-read: "
        "a key changed in the Secret is used without restarting the pods.",
    )
    limits: ExternalLimits = Field(
        default_factory=ExternalLimits,
        description="Requests and tokens per minute each router may send the provider.",
    )
    overflow_only: bool = Field(
        default=False,
        description="Never a request's first choice: the tier is tried only after the "
        "cluster's tiers failed it (saturated, at zero replicas, down), as the last resort.",
    )
    prompt_cost_per_1k_tokens: float = Field(
        default=0.0,
        alias="promptCostPer1kTokens",
        ge=0.0,
        description="Price of 1000 prompt tokens (any currency unit, used for "
        "zeta_router_cost_total).",
    )
    completion_cost_per_1k_tokens: float = Field(
        default=0.0,
        alias="completionCostPer1kTokens",
        ge=0.0,
        description="Price of 1000 completion tokens (same unit).",
    )
    max_cost_per_hour: float | None = Field(
        default=None,
        alias="maxCostPerHour",
        gt=0.0,
        description="Spend cap, in the prices' currency unit per hour. The control loop "
        "estimates the tier's spend rate from the routers' zeta_router_cost_total (rate over "
        "its window x 3600) and, above the cap, pauses the tier: the routers send it nothing "
        "(requests that would go there are answered on the nearest tier that can; one pinned "
        "to it gets 503 tier_paused) until the estimate is back under 90% of the cap, after at "
        "least one window paused. Needs autoscaling (enabled, with prometheus.url). None: no "
        "cap.",
    )

    @model_validator(mode="after")
    def _check_scheme(self) -> Self:
        if self.base_url.startswith("http://") and not self.allow_insecure_http:
            raise ProblemsError(
                [
                    (
                        "baseUrl",
                        "http:// would send the API key in clear text; use https:// (or set "
                        "allowInsecureHttp: true for a network you trust)",
                    )
                ]
            )
        return self


#: Fields an external tier may set besides ``external`` (everything else is the model
#: server's, which it does not have).
_EXTERNAL_TIER_FIELDS: Final = frozenset({"name", "cost_weight", "external"})


class TierSpec(SpecModel):
    """One tier: a model served by a Deployment of model-server pods, each with a router sidecar
    (or, with external, by a provider outside the cluster)."""

    name: str = Field(
        pattern=DNS_LABEL,
        min_length=1,
        max_length=40,
        description="Tier name, a DNS label (e.g. small, large, 7b). Names the Deployment and "
        "Service <router>-<name>; '<router>-<name>' must fit in 63 characters.",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Model to serve (required unless external). vllm: a Hugging Face model "
        "id (Qwen/Qwen2.5-7B-Instruct) or a path in the container. llamacpp: a GGUF file path "
        "in the container (ending in .gguf or starting with /) or a Hugging Face repo "
        "(user/repo[:quant]) that llama-server downloads.",
    )
    served_model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Model name the server answers to (vLLM --served-model-name, llama.cpp "
        "--alias), sent upstream by the routers. Defaults to model.",
    )
    engine: Engine = Field(
        default="vllm",
        description="Model server: vllm (GPU pods, OpenAI-compatible vLLM server) or llamacpp "
        "(CPU pods, llama.cpp's llama-server).",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description=f"Model-server image. Defaults to {defaults.VLLM_IMAGE} (vllm) or "
        f"{defaults.LLAMACPP_IMAGE} (llamacpp); the image's entrypoint must be the server. The "
        "operator's pod policy may limit images to some prefixes (defaults included).",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Extra server arguments, appended after those the operator sets (model, "
        "served name, port), e.g. ['--max-model-len', '8192'].",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=100,
        description="Extra environment variables of the model server (a name set here replaces "
        "the operator's default of that name, e.g. HOME). By default valueFrom.secretKeyRef "
        "may name only Secrets annotated zeta.ai/usable-by with this ZetaRouter's name or '*' "
        "(the operator's pod policy).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Model-server resources. Default for vllm: limits {nvidia.com/gpu: 1}, "
        f"and a vllm tier that sets no CPU or memory gets requests of "
        f"{defaults.VLLM_CPU_PER_GPU} CPUs and {defaults.VLLM_MEMORY_PER_GPU_GI}Gi per GPU; for "
        "llamacpp: requests {cpu: '1', memory: 2Gi}.",
    )
    replicas: ReplicaRange = Field(
        default_factory=ReplicaRange, description="Replica bounds and the starting count."
    )
    disruption_budget: DisruptionBudget = Field(
        default_factory=DisruptionBudget,
        description="The tier's PodDisruptionBudget (default maxUnavailable 1, never the "
        "tier's last replica).",
    )
    port: int = Field(
        default=defaults.VLLM_PORT,
        ge=1,
        le=65535,
        description="Port of the model server's OpenAI-compatible API (and its /metrics and "
        "/health); the tier's Service exposes it. Must differ from the router's port.",
    )
    cost_weight: float = Field(
        default=1.0,
        gt=0.0,
        description="Relative cost of one request on this tier (e.g. 1 for the 7B and 2.2 for "
        "the 14B); reported to the routers and used in cost figures.",
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels the tier's pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=50, description="Tolerations of the tier's pods."
    )
    affinity: FreeForm | None = Field(
        default=None,
        description="Affinity of the tier's pods (nodeAffinity, podAffinity, podAntiAffinity), "
        "as in a Pod spec, e.g. to prefer nodes with a given GPU model.",
    )
    topology_spread_constraints: list[FreeForm] | None = Field(
        default=None,
        max_length=20,
        description="Topology spread constraints of the tier's pods, as in a Pod spec. "
        "Default: spread the tier's replicas over nodes where possible (maxSkew 1 on "
        "kubernetes.io/hostname, whenUnsatisfiable ScheduleAnyway), so that losing a node "
        "loses as few of them as possible. [] turns the default off.",
    )
    priority_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="PriorityClass of the tier's pods: a high one lets the scheduler preempt "
        "less important pods to place them (and keeps them from being preempted).",
    )
    rollout_strategy: RolloutStrategy = Field(
        default="Surge",
        description="How a new pod template (a new image, new arguments, an operator upgrade) "
        "replaces the tier's pods. Surge: a new pod starts first and an old one stops only when "
        "the new one is ready, so the tier never has fewer ready replicas; it needs room for one "
        "more replica (its GPUs) while it rolls, and without that room the new pod stays "
        "Pending and the rollout waits (the old pods keep serving; Degraded says the rollout "
        "stalled). Replace: an old pod stops first, then its replacement starts: no spare GPU "
        "needed, but the tier has one replica fewer while the new one loads its model, and a "
        "one-replica tier serves nothing meanwhile (routers send its requests to other tiers).",
    )
    readiness_probe: FreeForm | None = Field(
        default=None,
        description="Replaces the model server's readiness probe (default: GET /health on port "
        "every 10 s), as in a Pod spec.",
    )
    run_as_user: int = Field(
        default=1000,
        ge=0,
        description="UID the model server runs as. Non-zero: the pod runs as non-root "
        "(runAsNonRoot) with HOME on a writable volume. 0 only for images that cannot run "
        "as another user, and only where the operator's pod policy allows root.",
    )
    model_cache: FreeForm | None = Field(
        default=None,
        description="Volume source for the model server's writable home at /cache (downloaded "
        "weights, compile caches), e.g. {persistentVolumeClaim: {claimName: hf-cache}}. "
        "Default: an emptyDir (weights are downloaded again when a pod is replaced). The "
        "operator's pod policy lists the volume types allowed (by default "
        "persistentVolumeClaim, emptyDir and ephemeral; never hostPath).",
    )

    external: ExternalSpec | None = Field(
        default=None,
        description="An OpenAI-compatible provider outside the cluster serves this tier: no "
        "Deployment, Services or PodDisruptionBudget; the routers send it requests with the "
        "API key. Only name and costWeight may be set besides it. See docs/router.md, "
        "'External tiers'.",
    )

    @property
    def served_name(self) -> str:
        """The model name the server (or the external provider) answers to."""
        if self.external is not None:
            return self.external.model
        return self.served_model_name or self.model or ""

    @property
    def server_model(self) -> str:
        """``model`` of a tier with a model server (always set after validation)."""
        return self.model or ""

    @property
    def effective_image(self) -> str:
        if self.image:
            return self.image
        return defaults.VLLM_IMAGE if self.engine == "vllm" else defaults.LLAMACPP_IMAGE

    @property
    def effective_resources(self) -> ResourceRequirements:
        """The resources as given, else the engine's default; a vllm tier's CPU and memory
        requests default to a share per GPU when neither a request nor a limit sets them."""
        if self.engine != "vllm":
            if self.resources is not None:
                return self.resources
            return ResourceRequirements(requests={"cpu": "1", "memory": "2Gi"})
        res = self.resources or ResourceRequirements(limits={GPU_RESOURCE: 1})
        gpus = max(self.gpus_per_replica, 1)
        requests = dict(res.requests or {})
        limits = dict(res.limits or {})
        if "cpu" not in requests and "cpu" not in limits:
            requests["cpu"] = str(defaults.VLLM_CPU_PER_GPU * gpus)
        if "memory" not in requests and "memory" not in limits:
            requests["memory"] = f"{defaults.VLLM_MEMORY_PER_GPU_GI * gpus}Gi"
        return ResourceRequirements(requests=requests, limits=limits or None)

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica uses (its ``nvidia.com/gpu`` limit, else request; 0 without, and
        for an external tier)."""
        if self.external is not None:
            return 0
        res = self.resources or ResourceRequirements(limits={GPU_RESOURCE: 1})
        if self.engine != "vllm" and self.resources is None:
            return 0
        for part in (res.limits, res.requests):
            if part and GPU_RESOURCE in part:
                return int(quantity_value(part[GPU_RESOURCE]))
        return 0

    def parallelism(self) -> dict[str, int]:
        """vLLM's parallel sizes given in ``args`` (``tp``, ``pp``, ``dp``), as integers; a
        size that is not a positive integer is left out (the validator reports it)."""
        found: dict[str, int] = {}
        for flag, value in _flag_values(self.args):
            key = _VLLM_PARALLEL_FLAGS.get(flag)
            if key is not None and value is not None and value.isdigit() and int(value) > 0:
                found[key] = int(value)
        return found

    @property
    def tensor_parallel_size(self) -> int | None:
        """The ``--tensor-parallel-size`` a vllm tier runs with: as given in ``args``, else
        derived from the GPUs per replica (divided by the pipeline and data parallel sizes);
        ``None`` for llama.cpp and for a tier without GPUs."""
        if self.engine != "vllm" or self.gpus_per_replica == 0:
            return None
        given = self.parallelism()
        if "tp" in given:
            return given["tp"]
        rest = given.get("pp", 1) * given.get("dp", 1)
        return max(1, self.gpus_per_replica // rest)

    @model_validator(mode="after")
    def _check_args(self) -> Self:
        if self.external is not None:
            mixed = sorted(self.model_fields_set - _EXTERNAL_TIER_FIELDS)
            if mixed:
                raise ProblemsError(
                    [
                        (
                            to_camel(f),
                            "an external tier has no model server: remove this field (or external)",
                        )
                        for f in mixed
                    ]
                )
            return self
        if self.model is None:
            raise ProblemsError([("model", "required (unless the tier is external)")])
        owned = _OWNED_FLAGS[self.engine]
        problems = []
        for i, arg in enumerate(self.args):
            flag = arg.split("=", 1)[0]
            if flag in owned:
                problems.append(
                    (f"args[{i}]", f"{flag} is set by the operator from the tier's {owned[flag]}")
                )
        if self.engine == "vllm":
            problems += self._parallelism_problems()
        if problems:
            raise ProblemsError(problems)
        return self

    def _parallelism_problems(self) -> list[tuple[str, str]]:
        problems = []
        for flag, value in _flag_values(self.args):
            if flag in _VLLM_PARALLEL_FLAGS and not (value and value.isdigit() and int(value)):
                problems.append(("args", f"{flag} needs a positive integer (got {value!r})"))
        if problems:
            return problems
        sizes = self.parallelism()
        gpus = self.gpus_per_replica
        if not sizes or gpus == 0:
            return []
        product = sizes.get("tp", 1) * sizes.get("pp", 1) * sizes.get("dp", 1)
        if "tp" not in sizes and gpus % product == 0:
            return []  # the tensor parallel size is derived from what is left
        if product != gpus:
            shown = " x ".join(f"{k} {v}" for k, v in sizes.items())
            return [
                (
                    "args",
                    f"vLLM's parallel sizes ({shown}) use {product} GPU(s) per replica, but "
                    f"resources give each replica {gpus} ({GPU_RESOURCE}): make them agree",
                )
            ]
        return []


# ---------------------------------------------------------------------------------------------
# Router


class ContextSpec(SpecModel):
    """A routing context: its own cut points (and optionally its own scorer weights)."""

    name: str = Field(
        pattern=CONTEXT_NAME,
        min_length=1,
        max_length=63,
        description="Context name. Clients choose it with the header X-Zeta-Context or the model "
        "name <modelName>/<context>.",
    )
    thresholds: list[Threshold] | None = Field(
        default=None,
        max_length=MAX_TIERS - 1,
        description="One cut point per tier boundary (tiers - 1 values), strictly increasing, "
        "each in [0, 1]: a request whose score is at or above the k-th cut point goes past the "
        "k-th tier. Defaults to the built-in reference of the context (ZetaHRM 0.4, ZetaTRM 0.6, "
        "others 0.5), spread over the boundaries when there are more than two tiers.",
    )
    scorer: ScorerWeights | None = Field(
        default=None,
        description="This context's own scorer weights; defaults to the router's scorer.",
    )
    mode: RoutingMode = Field(
        default="route",
        description="route (default): each request goes to the tier its score and the cut "
        "points choose. cascade (opt-in): a non-streamed request goes to the smallest tier "
        "first; when an answer-side judge (no model call: the arithmetic the answer states, "
        "its final number, hedging, its length) doubts that answer, the request goes to the "
        "largest tier, whose answer the client gets. Escalated requests wait for both answers. "
        "Streamed requests are routed as in route mode. See docs/routing-quality.md.",
    )
    escalate_above: float = Field(
        default=DEFAULT_ESCALATE_ABOVE,
        ge=0.0,
        le=1.0,
        description="cascade: escalate when the judge's probability that the smallest tier's "
        "answer is wrong is at least this (higher: fewer escalations).",
    )
    when_asleep: WhenAsleep = Field(
        default="fallback",
        description="What a request does when the tier it should go to sleeps at zero "
        "replicas (replicas.min 0): fallback (default) answers at once on the nearest tier "
        "that has replicas (larger first) and says so in the X-Zeta-Tier-Asleep header; wait "
        "holds it up to waitSeconds while the tier wakes, then answers there, or falls back. "
        "Either way the request wakes the tier (docs/autoscaling.md, 'Sleep and wake').",
    )
    wait_seconds: float = Field(
        default=defaults.WAKE_WAIT_SECONDS,
        gt=0.0,
        le=600.0,
        description="whenAsleep wait: the longest a request is held for a waking tier before "
        "it falls back (timeouts.totalSeconds counts from then).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        t = self.thresholds or []
        if any(b <= a for a, b in pairwise(t)):
            raise ProblemsError([("thresholds", f"{t} are not strictly increasing")])
        return self


class RouterSpec(SpecModel):
    """The router sidecar (one in every model-server pod) and its routing configuration."""

    image: str | None = Field(
        default=None,
        min_length=1,
        description=f"Router image (entrypoint zeta-router). Defaults to the operator's own "
        f"release image ({defaults.ROUTER_IMAGE} unless the operator was told otherwise). The "
        "operator's pod policy may limit it to some prefixes.",
    )
    port: int = Field(
        default=defaults.ROUTER_PORT,
        ge=1,
        le=65535,
        description="Router port of the client API (/v1/...); the entry Service <router> "
        "exposes it.",
    )
    admin_port: int = Field(
        default=defaults.ROUTER_ADMIN_PORT,
        ge=1,
        le=65535,
        description="Router port of /healthz, /readyz (the probes), /metrics (the monitors) "
        "and the learner's samples; on no Service (the operator reaches it by pod IP).",
    )
    resources: ResourceRequirements | None = Field(
        default=None,
        description="Router container resources. Default: requests {cpu: 100m, memory: 128Mi}, "
        "limits {memory: 512Mi}.",
    )
    args: list[str] = Field(
        default_factory=list,
        max_length=50,
        description="Extra router arguments, e.g. ['--access-log', '--log-level', 'debug'] "
        "(see zeta-router router --help).",
    )
    model_name: str | None = Field(
        default=None,
        pattern=r"^[^/\s]+$",
        max_length=253,
        description="Logical model name clients send (and <modelName>/<context>). Defaults to "
        "the ZetaRouter's name.",
    )
    contexts: list[ContextSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="Routing contexts. Default: the built-in contexts ZetaHRM (0.4), ZetaTRM "
        "(0.6) and default (0.5).",
    )
    default_context: str | None = Field(
        default=None,
        description="Context of requests that name none. Defaults to 'default' when such a "
        "context exists, else the first context.",
    )
    scorer: ScorerWeights | None = Field(
        default=None,
        description="Scorer weights of contexts without their own; defaults to the weights "
        "packaged with the router.",
    )
    failover: bool = Field(
        default=True,
        description="When a tier fails (refused, timeout before the first byte, 502/503/504), "
        "retry the request on the next tier.",
    )
    allow_force_tier: bool = Field(
        default=False,
        description="Honour the X-Zeta-Tier request header, which pins a tier and bypasses "
        "routing and its cost control; off by default.",
    )
    force_tier_token_sha256: list[Annotated[str, Field(pattern=SHA256_HEX)]] = Field(
        default_factory=list,
        max_length=16,
        description="With allowForceTier, only requests whose X-Zeta-Tier-Token header hashes "
        '(SHA-256, lower-case hex) to one of these may pin a tier; e.g. `printf %s "$TOKEN" '
        "| sha256sum`. Empty: any client may.",
    )
    shadow_sample_rate: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of requests kept on a smaller tier that are also sent to the largest "
        "tier to measure agreement (the feedback loop's quality signal). 0 turns it off.",
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Upstream timeouts.")
    stickiness: Stickiness = Field(
        default_factory=Stickiness,
        description="Conversations never drop to a smaller tier than an earlier turn of theirs, "
        "on whichever router replica each turn lands.",
    )
    circuit_breaker: CircuitBreaker = Field(
        default_factory=CircuitBreaker, description="Per-tier circuit breaker of each router."
    )
    balancing: Balancing = Field(
        default_factory=Balancing,
        description="How each router picks one of a tier's replicas per request: prompt prefix "
        "affinity with bounded loads, least loaded, ejection of failing replicas "
        "(docs/router.md, 'Replicas of a tier').",
    )
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest request body accepted, in bytes."
    )
    drain_delay: str = Field(
        default=defaults.DRAIN_DELAY,
        pattern=DURATION,
        description="When a pod stops (scale-down, rollout, node drain), the least time its "
        "router keeps serving after it stopped being ready, while Services on every node stop "
        "sending it requests: what endpoint removal takes to reach every node when the pod "
        "sees too little traffic to tell. Raise it on large clusters with sparse traffic.",
    )
    drain_quiet_period: str = Field(
        default=defaults.DRAIN_QUIET_PERIOD,
        pattern=DURATION,
        description="A stopping pod keeps serving until no new connection or request has "
        "reached its router for this long (and drainDelay has passed); then its router stops "
        "accepting, finishes what is in flight, and its model server is stopped once it too "
        "has had no request for this long (other pods' routers send to it directly). "
        "Longer is safer where requests are far apart; each stopping pod takes about this "
        "much longer than endpoint removal takes.",
    )
    drain_timeout: str = Field(
        default=defaults.DRAIN_TIMEOUT,
        pattern=DURATION,
        description="The longest a stopping pod waits for its traffic to stop (drainDelay, "
        "drainQuietPeriod) before its router stops accepting anyway. The pods' termination "
        "grace period is this plus timeouts.totalSeconds plus a margin.",
    )

    @property
    def drain_delay_seconds(self) -> float:
        return duration_seconds(self.drain_delay)

    @property
    def drain_quiet_seconds(self) -> float:
        return duration_seconds(self.drain_quiet_period)

    @property
    def drain_timeout_seconds(self) -> float:
        return duration_seconds(self.drain_timeout)

    @model_validator(mode="after")
    def _check_drain(self) -> Self:
        problems = []
        for field_name, value in (
            ("drainDelay", self.drain_delay_seconds),
            ("drainQuietPeriod", self.drain_quiet_seconds),
        ):
            if value > self.drain_timeout_seconds:
                problems.append(
                    (field_name, f"{value:g}s is longer than drainTimeout "
                                 f"({self.drain_timeout_seconds:g}s), which bounds the drain")
                )  # fmt: skip
        if problems:
            raise ProblemsError(problems)
        return self


# ---------------------------------------------------------------------------------------------
# Control loop


class PrometheusSpec(SpecModel):
    """Where the control loop reads metrics."""

    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Prometheus base URL, e.g. http://prometheus-operated.monitoring:9090. "
        "Required when autoscaling or feedback is enabled.",
    )
    auth_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a bearer token for Prometheus (key defaults to 'token'). "
        "The operator sends a token only where the Secret allows: by default the Secret's "
        "annotation zeta.ai/prometheus-urls must list this url (the operator's "
        "--prometheus-secrets policy may instead require an allow-list, or forbid Secrets); "
        "otherwise MetricsAvailable=False (CredentialsRefused) names the rule and Prometheus "
        "is not queried.",
    )
    timeout: str = Field(
        default="10s", pattern=DURATION, description="Timeout of one Prometheus query."
    )

    @property
    def timeout_seconds(self) -> float:
        return duration_seconds(self.timeout)


class AutoscalingTargets(SpecModel):
    """What the control loop keeps each tier at."""

    queue_per_replica: float = Field(
        default=4.0,
        gt=0.0,
        description="Waiting requests per ready replica above which a tier scales up.",
    )
    ttft_p90_seconds: float = Field(
        default=2.0,
        gt=0.0,
        description="Time-to-first-token p90 SLO, in seconds; above it a tier scales up.",
    )


class AutoscalingSpec(SpecModel):
    """The control loop's replica and load-shifting decisions."""

    enabled: bool = Field(default=False, description="Run the control loop for replicas.")
    mode: Literal["apply", "advisory"] = Field(
        default="apply",
        description="apply: the loop sets replicas (and thresholds) itself; advisory: it only "
        "reports its decisions in the status and Events.",
    )
    prometheus: PrometheusSpec = Field(
        default_factory=PrometheusSpec, description="Where metrics are read."
    )
    interval: str = Field(
        default="30s", pattern=DURATION, description="How often the loop decides (at least 1s)."
    )
    targets: AutoscalingTargets = Field(
        default_factory=AutoscalingTargets, description="Per-tier targets."
    )
    scale_down_delay: str = Field(
        default="5m",
        pattern=DURATION,
        description="Sustained low load needed before a tier loses one replica.",
    )
    max_gpus: int | None = Field(
        default=None,
        ge=0,
        description="GPU budget across all tiers (replicas x GPUs per replica); none: no budget. "
        "When the largest tier is saturated and the budget is reached, thresholds rise to shift "
        "load to smaller tiers.",
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)

    @property
    def scale_down_delay_seconds(self) -> float:
        return duration_seconds(self.scale_down_delay)


class ThresholdBounds(SpecModel):
    """Range the control loop may move a context's cut points in."""

    context: str = Field(min_length=1, description="Context name.")
    min: Threshold = Field(default=0.0, description="Lowest cut point allowed.")
    max: Threshold = Field(default=1.0, description="Highest cut point allowed.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.min > self.max:
            raise ProblemsError([("", f"min {self.min} > max {self.max}")])
        return self


class FeedbackSpec(SpecModel):
    """Threshold tuning from quality feedback (shadow agreement, /v1/feedback scores)."""

    enabled: bool = Field(default=False, description="Let the loop move thresholds.")
    target_large_share: Threshold | None = Field(
        default=None,
        description="Share of each context's requests to send to the largest tier.",
    )
    quality_floor: Threshold | None = Field(
        default=None,
        description="Lowest acceptable quality signal of requests kept on smaller tiers; below "
        "it thresholds are lowered.",
    )
    threshold_step: float = Field(
        default=0.02, gt=0.0, le=0.5, description="Largest move of a cut point per interval."
    )
    min_samples: int = Field(
        default=50, ge=1, description="Requests a context needs in an interval before it moves."
    )
    bounds: list[ThresholdBounds] = Field(
        default_factory=list,
        max_length=32,
        description="Per-context range of the cut points; contexts not listed: [0, 1]. Each "
        "range must contain the context's thresholds.",
    )

    def bounds_for(self, context: str) -> tuple[float, float]:
        for b in self.bounds:
            if b.context == context:
                return b.min, b.max
        return 0.0, 1.0


# ---------------------------------------------------------------------------------------------
# The spec


class ZetaRouterSpec(SpecModel):
    """A ladder of LLM tiers (smallest first) behind one OpenAI-compatible endpoint."""

    tiers: list[TierSpec] = Field(
        min_length=1,
        max_length=MAX_TIERS,
        description="Model tiers, smallest (cheapest) first; normally two, e.g. a 7B and a 14B.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=20,
        description="Secrets for pulling the images of every pod of this ZetaRouter (model "
        "servers and routers), as in a Pod spec, e.g. [{name: regcred}].",
    )
    router: RouterSpec = Field(
        default_factory=RouterSpec, description="Router sidecar and routing contexts."
    )
    autoscaling: AutoscalingSpec = Field(
        default_factory=AutoscalingSpec,
        description="Replica autoscaling and load shifting from Prometheus metrics.",
    )
    feedback: FeedbackSpec = Field(
        default_factory=FeedbackSpec, description="Threshold tuning from quality feedback."
    )
    learning: LearningSpec = Field(
        default_factory=LearningSpec,
        description="Learn each context's traffic: a correction of the routing score, refitted "
        "from outcome labels and adopted only when it routes recent labels better.",
    )

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Self:
        problems = _semantic_problems(self)
        if problems:
            raise ProblemsError(problems)
        return self

    # -- who owns what (see the BRIEF's ownership rule) --

    @property
    def loop_enabled(self) -> bool:
        """The control loop runs for this ZetaRouter (for replicas, thresholds or both)."""
        return self.autoscaling.enabled or self.feedback.enabled

    @property
    def loop_owns_replicas(self) -> bool:
        """Replicas come from the loop (``status.tiers[].desiredReplicas``)."""
        return self.autoscaling.enabled and self.autoscaling.mode == "apply"

    @property
    def loop_owns_thresholds(self) -> bool:
        """Thresholds come from the loop (``status.thresholds``): load shifting or feedback, in
        apply mode."""
        return self.loop_enabled and self.autoscaling.mode == "apply"

    @property
    def served_tiers(self) -> list[TierSpec]:
        """The tiers the operator runs (a Deployment each): every tier but the external ones."""
        return [t for t in self.tiers if t.external is None]

    def tier(self, name: str) -> TierSpec:
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def contexts(self) -> list[ContextSpec]:
        """The routing contexts, resolved (never empty after validation)."""
        return list(self.router.contexts or [])

    @property
    def default_context(self) -> str:
        return self.router.default_context or defaults.BUILTIN_DEFAULT_CONTEXT

    def spec_thresholds(self) -> dict[str, list[float]]:
        """Cut points per context as the spec sets them (defaults resolved)."""
        return {c.name: list(c.thresholds or []) for c in self.contexts}


def _flag_values(args: list[str]) -> list[tuple[str, str | None]]:
    """``(flag, value)`` for each flag in a command line (``--x=1`` or ``--x 1``)."""
    out: list[tuple[str, str | None]] = []
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            continue
        flag, sep, value = arg.partition("=")
        if sep:
            out.append((flag, value))
        else:
            nxt = args[i + 1] if i + 1 < len(args) else None
            out.append((flag, nxt if nxt is not None and not nxt.startswith("-") else None))
    return out


def _duplicates(names: list[str], path: str) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    out = []
    for i, n in enumerate(names):
        if n in seen:
            out.append((path.format(i), f"duplicate name {n!r} (also spec.{path.format(seen[n])})"))
        else:
            seen[n] = i
    return out


def _cut_points(k: int) -> str:
    return f"{k} cut point given" if k == 1 else f"{k} cut points given"


def _semantic_problems(spec: ZetaRouterSpec) -> list[tuple[str, str]]:
    """Cross-field checks; resolves the router's context defaults on ``spec`` when they pass."""
    problems: list[tuple[str, str]] = []
    n = len(spec.tiers)
    problems += _duplicates([t.name for t in spec.tiers], "tiers[{}].name")
    problems += _external_problems(spec)
    for i, t in enumerate(spec.tiers):
        if t.external is not None:
            continue
        if t.port == spec.router.port:
            problems.append(
                (
                    f"tiers[{i}].port",
                    f"{t.port} is also the router's port (router.port); the model server and "
                    "the router share the pod",
                )
            )
        if t.port == spec.router.admin_port:
            problems.append(
                (
                    f"tiers[{i}].port",
                    f"{t.port} is also the router's admin port (router.adminPort); the model "
                    "server and the router share the pod",
                )
            )
    if spec.router.admin_port == spec.router.port:
        problems.append(
            ("router.adminPort", f"{spec.router.port} is also router.port; they must differ")
        )

    router = spec.router
    if router.contexts is None:
        contexts = [
            ContextSpec(name=c, thresholds=defaults.default_thresholds(c, n))
            for c in defaults.BUILTIN_CONTEXTS
        ]
    else:
        contexts = router.contexts
    names = [c.name for c in contexts]
    problems += _duplicates(names, "router.contexts[{}].name")
    for i, c in enumerate(contexts):
        if c.thresholds is None:
            c.thresholds = defaults.default_thresholds(c.name, n)
        elif len(c.thresholds) != n - 1:
            want = f"{n} tiers need exactly {n - 1}" if n != 2 else "2 tiers need exactly 1"
            problems.append(
                (
                    f"router.contexts[{i}].thresholds",
                    f"{_cut_points(len(c.thresholds))}, but {want}",
                )
            )
    default_context = router.default_context
    if default_context is None:
        default_context = defaults.BUILTIN_DEFAULT_CONTEXT if "default" in names else names[0]
    elif default_context not in names:
        problems.append(
            (
                "router.defaultContext",
                f"{default_context!r} is not a context (contexts: {', '.join(names)})",
            )
        )
    problems += _scorer_problems(router.scorer, "router.scorer")
    for i, c in enumerate(contexts):
        problems += _scorer_problems(c.scorer, f"router.contexts[{i}].scorer")

    served = [t for t in spec.tiers if t.external is None]
    if served and all(t.replicas.may_sleep for t in served):
        problems.append(
            (
                "tiers",
                "every tier has replicas.min 0, but the routers run in the tiers' pods: at least "
                "one tier must keep min >= 1 so that the entry Service always has a router "
                "(let the larger tiers sleep, not the one that carries the routers)",
            )
        )

    loop = spec.autoscaling
    if (loop.enabled or spec.feedback.enabled) and not loop.prometheus.url:
        problems.append(
            ("autoscaling.prometheus.url", "required when autoscaling or feedback is enabled")
        )
    if duration_seconds(loop.interval) < 1.0:
        problems.append(("autoscaling.interval", f"{loop.interval} is shorter than 1s"))
    if duration_seconds(loop.prometheus.timeout) <= 0.0:
        problems.append(("autoscaling.prometheus.timeout", "must be longer than 0s"))
    if loop.max_gpus is not None:
        need = sum(t.replicas.min * t.gpus_per_replica for t in spec.tiers)
        if need > loop.max_gpus:
            problems.append(
                (
                    "autoscaling.maxGpus",
                    f"{loop.max_gpus} is below the {need} GPUs the tiers' minimum replicas need",
                )
            )

    fb = spec.feedback
    if fb.enabled and fb.target_large_share is None and fb.quality_floor is None:
        problems.append(("feedback", "enabled without targetLargeShare or qualityFloor"))
    if fb.enabled and n < 2:
        problems.append(("feedback.enabled", "needs at least two tiers"))
    by_name = {c.name: c for c in contexts}
    problems += _duplicates([b.context for b in fb.bounds], "feedback.bounds[{}].context")
    for i, b in enumerate(fb.bounds):
        ctx = by_name.get(b.context)
        if ctx is None:
            problems.append(
                (
                    f"feedback.bounds[{i}].context",
                    f"{b.context!r} is not a context (contexts: {', '.join(names)})",
                )
            )
        elif ctx.thresholds and any(not b.min <= x <= b.max for x in ctx.thresholds):
            problems.append(
                (
                    f"feedback.bounds[{i}]",
                    f"[{b.min}, {b.max}] does not contain the thresholds {ctx.thresholds} of "
                    f"context {b.context!r}",
                )
            )

    problems += learning_problems(spec.learning, names, router.shadow_sample_rate, n)

    if not problems:
        router.contexts = contexts
        router.default_context = default_context
    return problems


def _external_problems(spec: ZetaRouterSpec) -> list[tuple[str, str]]:
    """Where external tiers may be: routers live in the pods of the tiers the operator runs, so
    one such tier is needed. With the control loop, external tiers sit above every tier the
    operator runs: the loop moves the cut points between the tiers it scales and leaves those
    into an external tier as written, which only means something at the top of the ladder."""
    external = [i for i, t in enumerate(spec.tiers) if t.external is not None]
    if not external:
        return []
    if len(external) == len(spec.tiers):
        return [
            (
                "tiers",
                "every tier is external, but the routers run in the pods of a tier with a "
                "model server: add one",
            )
        ]
    problems = []
    if spec.loop_enabled:
        first_served_above = [
            i for i in external if any(t.external is None for t in spec.tiers[i + 1 :])
        ]
        for i in first_served_above:
            problems.append(
                (
                    f"tiers[{i}].external",
                    "with autoscaling or feedback enabled, external tiers come after every "
                    "tier the operator runs (the control loop moves the cut points between "
                    "those and keeps the ones into an external tier as written): move this "
                    "tier to the end of the list",
                )
            )
    if spec.feedback.enabled and len(spec.tiers) - len(external) < 2:
        problems.append(
            (
                "feedback.enabled",
                "needs at least two tiers the operator runs (external tiers do not count: "
                "feedback moves only the cut points between the tiers the cluster serves)",
            )
        )
    loop = spec.autoscaling
    for i in external:
        ext = spec.tiers[i].external
        if ext is not None and ext.max_cost_per_hour is not None and not loop.prometheus.url:
            problems.append(
                (
                    f"tiers[{i}].external.maxCostPerHour",
                    "needs autoscaling.prometheus.url (the spend is estimated from the "
                    "routers' zeta_router_cost_total) and autoscaling.enabled",
                )
            )
        elif ext is not None and ext.max_cost_per_hour is not None and not loop.enabled:
            problems.append(
                (
                    f"tiers[{i}].external.maxCostPerHour",
                    "needs autoscaling.enabled (the control loop watches the spend)",
                )
            )
    return problems


def _scorer_problems(scorer: ScorerWeights | None, path: str) -> list[tuple[str, str]]:
    if scorer is None or not scorer.weights:
        return []
    unknown = sorted(set(scorer.weights) - set(FEATURE_NAMES))
    if not unknown:
        return []
    return [
        (
            f"{path}.weights",
            f"unknown feature(s) {', '.join(unknown)} (known: {', '.join(FEATURE_NAMES)})",
        )
    ]


# ---------------------------------------------------------------------------------------------
# Status


# ---------------------------------------------------------------------------------------------
# Parsing


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p).replace(".[", "[")


def _short(value: object) -> str | None:
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        return repr(value)
    return None


def _problems_of(error: ValidationError, root: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for e in error.errors():
        path = _join(root, _loc_path(tuple(e["loc"])))
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, ProblemsError):
            out += [(_join(path, rel), msg) for rel, msg in cause.problems]
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        pattern = (e.get("ctx") or {}).get("pattern")
        if e["type"] == "string_pattern_mismatch" and pattern in PATTERN_HELP:
            msg = PATTERN_HELP[str(pattern)]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif (
            e["type"] not in ("missing", "value_error")
            and (shown := _short(e.get("input"))) is not None
        ):
            msg += f" (got {shown})"
        out.append((path, msg))
    return out


def _name_problems(name: object, spec: ZetaRouterSpec) -> list[tuple[str, str]]:
    if not isinstance(name, str) or not re.fullmatch(DNS_1035_LABEL, name) or len(name) > 63:
        return [
            (
                "metadata.name",
                f"{name!r} must be a DNS-1035 label (lowercase letters, digits and '-', starting "
                "with a letter, at most 63 characters): it names the entry Service",
            )
        ]
    return [
        (
            f"spec.tiers[{i}].name",
            f"Service name {name}-{t.name!r} would be longer than 63 characters",
        )
        for i, t in enumerate(spec.tiers)
        if len(name) + 1 + len(t.name) > 63
    ]


def parse_zetarouter(body_or_spec: Mapping[str, Any]) -> ZetaRouterSpec:
    """Validate a ZetaRouter and return its spec with every default resolved.

    ``body_or_spec`` is a whole object (with ``spec``; its ``metadata.name``, when present, is
    checked too, since it names the children) or a bare spec. Raises :class:`SpecError` naming
    every problem by its path (``spec.tiers[1].replicas: min 3 > max 2``); nothing else escapes.
    """
    is_body = "spec" in body_or_spec or "metadata" in body_or_spec or "kind" in body_or_spec
    raw = body_or_spec.get("spec") if is_body else body_or_spec
    if not isinstance(raw, Mapping):
        raise SpecError([("spec", "missing or not an object")])
    try:
        spec = ZetaRouterSpec.model_validate(dict(raw))
    except ValidationError as e:
        raise SpecError(_problems_of(e, "spec")) from None
    meta = body_or_spec.get("metadata") if is_body else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if name is not None:
        problems = _name_problems(name, spec)
        if problems:
            raise SpecError(problems)
    return spec
